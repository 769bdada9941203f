//! The Prometheus tools the deploy checks run: `promtool`, and a real `prometheus` server on a free
//! port with its own storage directory (so a system Prometheus on :9090, such as the one the Debian
//! package may start, is neither used nor disturbed), killed and removed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Where the Debian package `prometheus` installs its binaries, if they are not on `PATH`.
const FALLBACK_DIR: &str = "/usr/bin";
/// Bound on Prometheus becoming ready to serve queries.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of a required tool; panics with how to install it when it is missing.
#[track_caller]
pub fn tool(name: &str, package: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from(FALLBACK_DIR)])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: install the Debian package `{package}` \
             (`apt-get install -y --no-install-recommends {package}`; `bash .ci/run` does this)"
        )
    })
}

/// Runs `promtool ARGS` from the repository root and returns its output; panics with the output
/// when it fails.
#[track_caller]
pub fn promtool(args: &[&str]) -> String {
    let out = Command::new(tool("promtool", "prometheus"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`promtool {}` failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// Waits until the Prometheus `child` at `url` serves queries; the error says why not.
async fn wait_ready(child: &mut Child, http: &reqwest::Client, url: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let ready = format!("{url}/-/ready");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("prometheus exited ({status})"));
        }
        if matches!(http.get(&ready).send().await, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("prometheus not ready after {START_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Prometheus server started by the test.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (the replicas) every second as one job
    /// `purge-worker`, evaluating `rules` every second, and waits until it serves queries.
    pub async fn start(targets: &[SocketAddr], rules: &Path) -> Prometheus {
        let target = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let binary = tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: purge-worker\n    static_configs:\n      - targets: [{target}]\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let log_path = dir.path().join("prometheus.log");
        // A port picked free can be taken by another process before Prometheus binds it: then
        // Prometheus exits, and another port is tried.
        for attempt in 1.. {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus starts");
            let url = format!("http://127.0.0.1:{port}");
            match wait_ready(&mut child, &http, &url).await {
                Ok(()) => {
                    return Prometheus {
                        child,
                        url,
                        dir,
                        http,
                    };
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if attempt < 3 && log.contains("address already in use") {
                        continue;
                    }
                    panic!("{e}:\n{log}");
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Prometheus's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.url), params)
            .map_err(|e| e.to_string())?;
        let text = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?
            .text()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// Evaluates `query` now: the result series, or the error (a parse error included).
    pub async fn query(&self, query: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", query)]).await?;
        match (data["resultType"].as_str(), &data["result"]) {
            (Some("vector" | "matrix"), Value::Array(series)) => Ok(series.clone()),
            // A scalar or string result: one value.
            (_, other) => Ok(vec![other.clone()]),
        }
    }

    /// The first value of `query`'s first series, as a number.
    pub async fn value(&self, query: &str) -> Option<f64> {
        let series = self.query(query).await.ok()?;
        series.first()?.get("value")?.get(1)?.as_str()?.parse().ok()
    }

    /// Active alerts (pending or firing): `(alertname, state)`.
    pub async fn alerts(&self) -> Vec<(String, String)> {
        let Ok(data) = self.api("/api/v1/alerts", &[]).await else {
            return Vec::new();
        };
        data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .map(|a| {
                        (
                            a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                            a["state"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
