//! Shutdown that always works.
//!
//! - `graceful_drain_acks_everything_it_purged` — property: a drain acks every delivery it purged
//!   before the channel closes. Fault: items are pending (a 5 s linger) when shutdown is
//!   requested. Pass: the worker exits cleanly, 0 messages are left in the purge queue, and after
//!   a second worker has run on the same queue every key was purged exactly once across both runs.
//! - `a_dead_dispatcher_fails_readiness_and_ends_the_worker` — property: a stage that dies is
//!   never a silent wedge. Fault: the provider client panics inside its call (as an arithmetic
//!   overflow on hostile input would), which takes its dispatcher down; a second provider's call
//!   hangs, so the drain runs into its deadline. Pass: `/readyz` turns 503
//!   naming the dispatcher within 10 s, `Worker::wait` returns an error naming it within the drain
//!   bound (`drain_timeout` + 5 s) although no shutdown was requested, and the event is back in
//!   the queue (unacked, so the broker redelivers it).
//! - `sigterm_with_a_closed_log_pipe_drains_and_exits_0` — property: a signal is never lost to
//!   logging. Fault: the real binary's stdout and stderr go into one pipe whose reader (`head -n 1`)
//!   exits after the first line, as with `run 2>&1 | head` or a `tee` killed by the same Ctrl-C.
//!   Pass: after SIGTERM the process exits 0 within the drain bound and the purge queue is empty.
//! - `a_second_sigterm_stops_at_once` — property: a second signal is never ignored. Fault: the
//!   same closed pipe, and a provider call that hangs (the emulator answers after 30 s), so the
//!   drain would wait its full 20 s. Pass: a second SIGTERM, sent once the first has cancelled the
//!   consumer, ends the process within 5 s with exit 1, and the unpurged event is back in the
//!   queue.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use purge_worker::emulator::{EmulatorConfig, Faults};
use tokio::time::Instant;

use crate::support::*;
use purge_worker::config::Config;
use purge_worker::emulator::Emulator;
use purge_worker::provider::{Batch, Capabilities, Kind, Provider, PurgeFuture};
use purge_worker::worker::build_provider;
use serde_json::json;

/// Events published (one URL each, so one delivery per key).
const EVENTS: usize = 20;

fn provider(emu: &Emulator) -> ProviderSpec {
    ProviderSpec {
        name: "cdn".into(),
        endpoint: emu.endpoint(),
        extra: String::new(),
        domains: vec![("www.example.com".into(), false)],
    }
}

/// How often each key was purged.
fn purge_counts(emu: &Emulator) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for key in purged(emu) {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_acks_everything_it_purged() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("drain-ack").await;
    let lingering = env.config(
        &[provider(&emu)],
        "max_linger_ms = 5000\ndrain_timeout_ms = 5000",
    );
    let urls: Vec<String> = (0..EVENTS)
        .map(|i| format!("https://www.example.com/drain/{i}"))
        .collect();
    for u in &urls {
        env.publish_json(&json!({ "urls": [u] })).await;
    }

    let first = Running::start(lingering).await;
    let pending = || {
        first
            .worker
            .metrics
            .pending
            .with_label_values(&["cdn", "url"])
            .get()
    };
    wait_until("every item pending in the worker", TIMEOUT, || async {
        pending() == EVENTS as i64
    })
    .await;
    assert!(emu.accepted().is_empty(), "nothing purged before the stop");
    first.stop().await;
    assert_eq!(
        purge_counts(&emu).len(),
        EVENTS,
        "the drain purged every key"
    );
    assert_eq!(
        env.ready(&env.queue).await,
        0,
        "every purged delivery was acked before the channel closed"
    );

    // A second run on the same queue: anything left unacked would be purged again before the
    // sentinel (same lane, older items first).
    let quick = env.config(&[provider(&emu)], "max_linger_ms = 50");
    let second = Running::start(quick).await;
    let sentinel = "https://www.example.com/drain/sentinel".to_string();
    env.publish_json(&json!({ "urls": [sentinel] })).await;
    wait_until("the sentinel purged by the second run", TIMEOUT, || async {
        purged(&emu).contains(&sentinel)
    })
    .await;
    second.stop().await;
    let mut counts = purge_counts(&emu);
    assert_eq!(counts.remove(&sentinel), Some(1));
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "purged more than once: {twice:?}");
    assert_eq!(counts.len(), EVENTS);
    assert_eq!(env.ready(&env.queue).await, 0);
    env.cleanup().await;
    emu.shutdown().await;
}

/// A provider client whose every call panics (`panics`) or never ends; it describes itself as
/// the configured provider does.
#[derive(Debug)]
struct Broken {
    real: Arc<dyn Provider>,
    panics: bool,
}

impl Broken {
    fn client(config: &Config, provider: usize, panics: bool) -> Arc<dyn Provider> {
        let real = build_provider(&config.providers[provider]).expect("provider client");
        Arc::new(Broken { real, panics })
    }
}

impl Provider for Broken {
    fn capabilities(&self) -> Capabilities {
        self.real.capabilities()
    }
    fn action(&self, kind: Kind) -> &'static str {
        self.real.action(kind)
    }
    fn purge<'a>(&'a self, _batch: &'a Batch) -> PurgeFuture<'a> {
        let panics = self.panics;
        Box::pin(async move {
            assert!(!panics, "injected provider panic");
            std::future::pending().await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dispatcher_fails_readiness_and_ends_the_worker() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("dead-stage").await;
    // A second provider whose call hangs keeps the drain busy until `drain_timeout`, so the
    // red /readyz is observable before the worker is gone.
    let hanging = ProviderSpec {
        name: "hangs".into(),
        domains: vec![("slow.example.com".into(), false)],
        ..provider(&emu)
    };
    let config = env.config(
        &[provider(&emu), hanging],
        "max_linger_ms = 50\ndrain_timeout_ms = 2000",
    );
    let clients = vec![
        Broken::client(&config, 0, true),
        Broken::client(&config, 1, false),
    ];
    let running = Running::start_with_providers(config, clients).await;
    env.publish_json(
        &json!({ "urls": ["https://www.example.com/dies", "https://slow.example.com/hangs"] }),
    )
    .await;

    let url = format!("http://{}/readyz", running.worker.http_addr);
    wait_until("/readyz turns 503", Duration::from_secs(10), || {
        let url = url.clone();
        async move { matches!(reqwest::get(&url).await, Ok(r) if r.status() == 503) }
    })
    .await;
    let body = reqwest::get(&url)
        .await
        .expect("readyz")
        .text()
        .await
        .expect("readyz body");
    assert!(body.contains("dispatcher cdn"), "names the stage: {body}");

    let bound = Duration::from_millis(2000) + Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(bound, running.worker.wait())
        .await
        .expect("the worker ends by itself within the drain bound");
    let err = result.expect_err("a dead stage is an error (exit 1)");
    assert!(format!("{err:#}").contains("dispatcher cdn"), "{err:#}");
    println!(
        "worker ended {:?} after /readyz turned red: {err:#}",
        started.elapsed()
    );
    assert!(
        !running.shutdown.is_cancelled(),
        "no shutdown was requested"
    );
    wait_until("the event back in the queue", TIMEOUT, || async {
        env.ready(&env.queue).await == 1
    })
    .await;
    env.cleanup().await;
    emu.shutdown().await;
}

/// A child process killed (and reaped) when the test ends, so a failing test leaves none behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The binary running `run --config FILE` with stdout and stderr in one pipe read by
/// `head -n 1`; returns once `head` has exited, so every later log write meets a closed pipe.
async fn run_into_closed_pipe(config: &Path) -> Reaped {
    let mut head = Command::new("head")
        .args(["-n", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn head");
    let out: OwnedFd = head.stdin.take().expect("head's stdin").into();
    let err = out.try_clone().expect("dup the pipe");
    let worker = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn purge-worker");
    let worker = Reaped(worker);
    let mut head = Reaped(head);
    let exited = exit_within(&mut head.0, TIMEOUT).await;
    assert!(exited.is_some(), "head read its line and exited");
    worker
}

/// Waits for `child` to exit, at most `bound`; `None` if it is still running then.
async fn exit_within(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
}

/// A free local port for the child's HTTP endpoint (so the test can probe `/readyz`).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A `purge-worker run` child whose logs go into a closed pipe, ready, with its test env.
struct ChildRun {
    emu: Emulator,
    env: TestEnv,
    child: Reaped,
    _dir: tempfile::TempDir,
}

impl ChildRun {
    /// Starts the child (HTTP on a free port, so `/readyz` can be probed) and waits until ready.
    async fn start(name: &str, emu: EmulatorConfig, extra: &str, batching: &str) -> ChildRun {
        let emu = emulator(emu).await;
        let mut env = TestEnv::new(name).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let spec = ProviderSpec {
            extra: extra.into(),
            ..provider(&emu)
        };
        let toml = env.config_toml(&[spec], batching).replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let path = dir.path().join("purge-worker.toml");
        std::fs::write(&path, toml).expect("write config");
        let child = run_into_closed_pipe(&path).await;
        let url = format!("http://127.0.0.1:{port}/readyz");
        wait_until("the child worker is ready", TIMEOUT, || {
            let url = url.clone();
            async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
        })
        .await;
        ChildRun {
            emu,
            env,
            child,
            _dir: dir,
        }
    }

    /// Sends SIGTERM and waits, at most `bound`, for the exit: its status and how long it took.
    async fn terminate(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        sigterm(&self.child.0);
        let started = Instant::now();
        let status = exit_within(&mut self.child.0, bound).await;
        let status =
            status.unwrap_or_else(|| panic!("the worker still runs {bound:?} after SIGTERM"));
        (status, started.elapsed())
    }

    async fn cleanup(self) {
        self.env.cleanup().await;
        self.emu.shutdown().await;
    }
}

/// Consumers on the purge queue.
async fn consumers(env: &TestEnv) -> u32 {
    let ch = env.conn.create_channel().await.expect("channel");
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(env.queue.as_str().into(), opts, FieldTable::default())
        .await
        .expect("passive declare");
    let _ = ch.close(200, "ok".into()).await;
    q.consumer_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_closed_log_pipe_drains_and_exits_0() {
    let batching = "max_linger_ms = 50\ndrain_timeout_ms = 5000";
    let mut run = ChildRun::start("closed-pipe", Default::default(), "", batching).await;
    let url = "https://www.example.com/closed-pipe".to_string();
    run.env.publish_json(&json!({ "urls": [url] })).await;
    wait_until("the event purged", TIMEOUT, || async {
        purged(&run.emu).contains(&url)
    })
    .await;

    // The drain bound: drain_timeout, the 5 s grace, and 2 s for the process itself.
    let (status, took) = run.terminate(Duration::from_secs(5 + 5 + 2)).await;
    println!("SIGTERM with a closed log pipe: {status} after {took:?}");
    assert_eq!(status.code(), Some(0), "a drained SIGTERM exits 0");
    assert_eq!(
        run.env.ready(&run.env.queue).await,
        0,
        "everything was acked"
    );
    run.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_stops_at_once() {
    let slow = EmulatorConfig {
        faults: Faults {
            latency: Duration::from_secs(30),
            ..Default::default()
        },
        ..Default::default()
    };
    let batching = "max_linger_ms = 50\ndrain_timeout_ms = 20000";
    let mut run = ChildRun::start(
        "second-sigterm",
        slow,
        "request_timeout_ms = 60000",
        batching,
    )
    .await;
    run.env
        .publish_json(&json!({ "urls": ["https://www.example.com/hangs"] }))
        .await;
    wait_until("the call in flight", TIMEOUT, || async {
        !run.emu.accepted().is_empty()
    })
    .await;

    sigterm(&run.child.0);
    wait_until(
        "the first SIGTERM cancelled the consumer",
        TIMEOUT,
        || async { consumers(&run.env).await == 0 },
    )
    .await;
    let running = run.child.0.try_wait().expect("try_wait").is_none();
    assert!(running, "still draining the hanging call");
    let (status, took) = run.terminate(Duration::from_secs(5)).await;
    println!("second SIGTERM: {status} after {took:?}");
    assert_eq!(
        status.code(),
        Some(1),
        "a cut-short drain is not a clean exit"
    );
    wait_until("the unpurged event back in the queue", TIMEOUT, || async {
        run.env.ready(&run.env.queue).await == 1
    })
    .await;
    run.cleanup().await;
}
