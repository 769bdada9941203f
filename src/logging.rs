//! Log output that can neither panic nor block the process.
//!
//! Logs go to stdout, which is often a pipe (`run 2>&1 | tee run.log`). When its reader goes away
//! (tee killed by the same Ctrl-C), every write fails with a broken pipe, and tracing's fallback
//! of reporting that on stderr panics when stderr is the same pipe: a signal handler that logged
//! first never got to cancel. When the reader is alive but stops reading, writes block. So the
//! subscriber only queues each formatted line into a bounded channel (dropping the line when it
//! is full) and one plain thread writes them out; once a write fails it stops writing for good
//! and discards the rest. A closed or stalled stdout costs log lines, never the worker.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines queued for the writer thread before new ones are dropped.
const QUEUED_LINES: usize = 8192;

enum Msg {
    Line(Vec<u8>),
    /// Answered once every line queued before it was written (or discarded).
    Flush(SyncSender<()>),
}

/// Where the subscriber writes: a handle on the writer thread's queue; cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Msg>,
}

impl LogSink {
    /// Starts the writer thread over stdout.
    pub fn stdout() -> std::io::Result<LogSink> {
        LogSink::spawn(std::io::stdout())
    }

    /// Starts the writer thread over `out`.
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<LogSink> {
        let (tx, rx) = sync_channel(QUEUED_LINES);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_lines(out, rx))?;
        Ok(LogSink { tx })
    }

    /// Waits, at most `within`, until every line logged so far was written: before the process
    /// exits, so its last lines are not lost, yet a stalled stdout cannot hold the exit.
    pub fn flush(&self, within: Duration) {
        let (done, wait) = sync_channel(1);
        if self.tx.try_send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(within);
        }
    }
}

fn write_lines(mut out: impl Write, rx: Receiver<Msg>) {
    let mut open = true;
    for msg in rx {
        match msg {
            Msg::Line(line) if open => {
                // A failed write (broken pipe, closed fd) ends the output; the worker goes on.
                open = out.write_all(&line).and_then(|()| out.flush()).is_ok();
            }
            Msg::Line(_) => {}
            Msg::Flush(done) => {
                let _ = done.try_send(());
            }
        }
    }
}

/// One event's writer: the subscriber formats an event fully, then writes it here at once.
pub struct LineWriter<'a>(&'a SyncSender<Msg>);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A full queue (stdout stalled) or a gone writer drops the line: never block, never fail.
        let _ = self.0.try_send(Msg::Line(buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.tx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that records lines and fails (like a broken pipe) after `ok` writes.
    #[derive(Clone)]
    struct Failing {
        lines: Arc<Mutex<Vec<Vec<u8>>>>,
        ok: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut lines = self.lines.lock().unwrap();
            if lines.len() >= self.ok {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            lines.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_pipe_drops_lines_and_never_fails_the_logger() {
        let out = Failing {
            lines: Arc::default(),
            ok: 2,
        };
        let sink = LogSink::spawn(out.clone()).unwrap();
        for i in 0..5 {
            let mut w = sink.make_writer();
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        sink.flush(Duration::from_secs(5));
        let lines = out.lines.lock().unwrap().clone();
        assert_eq!(lines, [b"line 0\n".to_vec(), b"line 1\n".to_vec()]);
    }

    #[test]
    fn a_stalled_output_never_blocks_a_log_write() {
        // A writer thread that never drains: the queue fills and further lines are dropped.
        let (tx, _rx) = sync_channel(1);
        let sink = LogSink { tx };
        let mut w = sink.make_writer();
        for _ in 0..3 {
            w.write_all(b"x\n").unwrap();
        }
        sink.flush(Duration::from_millis(10));
    }
}
