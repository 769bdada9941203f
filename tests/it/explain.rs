//! `explain`: the purge history of one cache key.
//!
//! Setup: the emulator's tencent-v3 API with a 300 ms task delay; three events (ids ev-1..3,
//! source `cms`) ask for the same URL. Pass: `purge-worker explain --config FILE URL` (the
//! binary) and `GET /explain?url=` show the 3 events, the covering task (the emulator's id) and
//! `done` with its finish time; a URL nothing asked for prints "no purge recorded" with exit 0;
//! a bad URL is a 400 (HTTP) and exit 2 (CLI). Bound: one key's lineage lists, every field at
//! its bound and the lists full, stay within `lineage::MAX_BYTES_PER_KEY` (`MEMORY USAGE`).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use purge_worker::cache_key::CacheKey;
use purge_worker::coalesce::Origin;
use purge_worker::config::{Config, RawConfig};
use purge_worker::emulator::{EmulatorConfig, TaskModel};
use purge_worker::tracking::lineage::{
    self, CallEntry, LineageKeys, MAX_BYTES_PER_KEY, MAX_FIELD, Note, WriterSettings,
};
use serde_json::json;

const TRACKING: &str = "max_linger_ms = 300\n[tracking]\npoll_interval_ms = 200\nlease_ms = 2000\n";

fn explain_cli(config: &std::path::Path, url: &str, json: bool) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_purge-worker"));
    c.arg("explain").arg("--config").arg(config).arg(url);
    if json {
        c.arg("--json");
    }
    let o = c
        .env("RUST_LOG", "warn")
        .output()
        .expect("run purge-worker explain");
    (
        o.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

async fn explain_http(r: &Running, url: &str) -> (u16, serde_json::Value) {
    let at = url::Url::parse_with_params(
        &format!("http://{}/explain", r.worker.http_addr),
        &[("url", url)],
    )
    .expect("explain url");
    let resp = reqwest::get(at).await.expect("GET /explain");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_events_the_covering_task_and_done() {
    let emu = emulator(EmulatorConfig {
        tasks: TaskModel {
            delay: Duration::from_millis(300),
            fail_every: 0,
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("explain").await;
    let toml = env.config_toml(&[example_provider(&emu)], TRACKING);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purge-worker.toml");
    std::fs::write(&path, &toml).expect("write config");
    let config =
        Config::from_raw(toml::from_str::<RawConfig>(&toml).expect("toml")).expect("valid");
    let r = Running::start(config).await;

    let url = "https://WWW.example.com/news/explained";
    for i in 1..=3 {
        env.publish_json(&json!({ "id": format!("ev-{i}"), "source": "cms", "urls": [url] }))
            .await;
    }
    let done = wait_until("the covering task seen done", TIMEOUT, || {
        let r = &r;
        async move {
            let (s, v) = explain_http(r, url).await;
            s == 200
                && v["events"].as_array().map_or(0, Vec::len) == 3
                && v["calls"][0]["state"] == "done"
        }
    });
    done.await;
    let (status, v) = explain_http(&r, url).await;
    assert_eq!(status, 200);
    assert_eq!(v["cache_key"], "https://www.example.com/news/explained");
    assert_eq!(v["provider"], "cdn");
    assert_eq!(v["recorded"], true);
    let ids: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["ev-3", "ev-2", "ev-1"], "newest first");
    assert!(v["events"][0]["source"] == "cms");
    let task = v["calls"][0]["task_id"].as_str().unwrap().to_string();
    let tasks = emu.tasks();
    let covering = tasks
        .iter()
        .find(|t| t.id == task)
        .expect("the task id is the emulator's");
    assert!(
        covering
            .items
            .contains(&"https://www.example.com/news/explained".to_string())
    );
    assert!(v["calls"][0]["finished_at"].is_string());

    let (code, out) = explain_cli(&path, url, false);
    assert_eq!(code, Some(0), "{out}");
    for needle in ["ev-1", "ev-2", "ev-3", "cms", task.as_str(), "done"] {
        assert!(out.contains(needle), "`{needle}` in:\n{out}");
    }
    let (code, out) = explain_cli(&path, url, true);
    assert_eq!(code, Some(0), "{out}");
    let cli: serde_json::Value = serde_json::from_str(&out).expect("--json is JSON");
    assert_eq!(cli["calls"][0]["task_id"], task.as_str());

    let (code, out) = explain_cli(&path, "https://www.example.com/never-purged", false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no purge recorded"), "{out}");
    let (status, v) = explain_http(&r, "https://www.example.com/never-purged").await;
    assert_eq!((status, v["recorded"].clone()), (200, json!(false)));

    let (status, v) = explain_http(&r, "ftp://www.example.com/x").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].is_string());
    let (code, out) = explain_cli(&path, "https://unknown.example.org/x", false);
    assert_eq!(code, Some(2), "{out}");

    r.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_lineage_stays_within_its_byte_bound() {
    let env = TestEnv::new("lineage-bytes").await;
    let keys = LineageKeys::new(&env.prefix);
    let settings = WriterSettings {
        ttl: Duration::from_secs(3600),
        events_per_key: 10,
    };
    let url = format!("https://www.example.com/{}", "p".repeat(200));
    let long = "x".repeat(MAX_FIELD * 3);
    let mut notes = Vec::new();
    for i in 0..25 {
        notes.push(Note::Event {
            origin: Arc::new(Origin {
                id: Some(format!("{i}{long}")),
                source: Some(long.clone()),
            }),
            at: 1_700_000_000_000 + i,
            keys: vec![CacheKey::from_normalized(&url)],
        });
        notes.push(Note::Call {
            call: CallEntry {
                provider: "tencent-main-provider-name".into(),
                task: format!("{i}{long}"),
                attempt: 1,
                at: 1_700_000_000_000 + i,
            },
            keys: vec![url.clone()],
        });
    }
    let client = redis::Client::open(REDIS_URL).expect("redis url");
    let mut c = client.get_connection_manager().await.expect("redis");
    let () = lineage::pipeline(&keys, &settings, &notes)
        .query_async(&mut c)
        .await
        .expect("write");
    let mut bytes = 0u64;
    for k in [keys.events(&url), keys.calls(&url)] {
        let n: u64 = redis::cmd("LLEN")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(n, 10, "at most lineage_events_per_key entries");
        let ttl: i64 = redis::cmd("TTL").arg(&k).query_async(&mut c).await.unwrap();
        assert!(ttl > 0 && ttl <= 3600);
        let m: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&k)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut c)
            .await
            .unwrap();
        bytes += m;
    }
    let h = lineage::read(&mut c, &keys, &url).await.expect("read");
    assert_eq!(h.events.len(), 10);
    assert!(h.events[0].id.as_ref().unwrap().len() <= MAX_FIELD);
    eprintln!("lineage bytes per cache key (10 events + 10 calls, fields at their bound): {bytes}");
    assert!(bytes <= MAX_BYTES_PER_KEY, "{bytes} bytes");
    env.cleanup().await;
}

/// Redis gone: notes are dropped and counted (`redis`), a full channel counts `busy`, and
/// handing a note over never waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_that_cannot_be_written_is_counted_never_waited_for() {
    let metrics = purge_worker::metrics::Metrics::new();
    let client = redis::Client::open("redis://127.0.0.1:1/0").expect("url");
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(0);
    let conn = client.get_connection_manager_lazy(cfg).expect("lazy");
    let (handle, _task) = lineage::spawn_writer(
        conn,
        LineageKeys::new("nowhere"),
        WriterSettings {
            ttl: Duration::from_secs(60),
            events_per_key: 10,
        },
        metrics.lineage(),
    );
    let started = std::time::Instant::now();
    let n = lineage::CHANNEL * 2;
    for i in 0..n {
        handle.note(Note::Event {
            origin: Arc::new(Origin::default()),
            at: i as i64,
            keys: vec![CacheKey::from_normalized("https://www.example.com/a")],
        });
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "note() never waits"
    );
    let failed = |reason: &str| {
        metrics
            .lineage_write_failures
            .with_label_values(&[reason])
            .get()
    };
    wait_until("the failed write counted", TIMEOUT, || async {
        failed("redis") >= 1
    })
    .await;
    assert!(failed("busy") >= 1, "a full channel is counted");
}
