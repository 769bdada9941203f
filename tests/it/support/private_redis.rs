//! A private `redis-server` for tests that stop and restart Redis (the shared one stays up).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// How long a fresh redis-server may take to answer.
const STARTUP: Duration = Duration::from_secs(10);

/// A private `redis-server` child on a fixed port; SIGKILLed on drop so it never outlives the
/// test.
pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts redis-server on a free port and waits until it answers.
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = PrivateRedis {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on the same port, empty, and waits until it answers PING.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("/usr/bin/redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/bin/redis-server");
        self.child = Some(child);
        let url = self.url();
        wait_until("the private redis-server answers", STARTUP, || {
            let url = url.clone();
            async move { get(&url, "PING").await.is_some() }
        })
        .await;
    }

    /// SIGKILL, no shutdown: clients see the connection reset mid-command.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One Redis command with one optional argument, with a short timeout; `None` on any failure.
pub async fn get(url: &str, cmd: &str) -> Option<redis::Value> {
    let q = async {
        let client = redis::Client::open(url).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let mut parts = cmd.split(' ');
        let mut command = redis::cmd(parts.next()?);
        for a in parts {
            command.arg(a);
        }
        command.query_async::<redis::Value>(&mut c).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(1), q)
        .await
        .ok()
        .flatten()
}
