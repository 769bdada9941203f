//! Pause and resume of one provider across replicas.
//!
//! Property: `pause` stops every call to that provider on every replica within a second, while
//! the other provider on the same queue keeps flowing; its items wait durably (acked, in the
//! paused queue), `/readyz` stays green, and `resume` drains the backlog; nothing is lost.
//! Setup: two workers on one queue and Redis prefix, providers `a` and `b` (own emulators), a
//! publisher sending events for both all along. Fault: `a` is paused mid-stream. Pass: 2 s after
//! the pause, `a`'s emulator sees no call for 1.5 s more on either replica while `b`'s keeps
//! getting calls; both replicas report `purge_paused{provider="a"} 1` and `status` shows them
//! paused; after `resume`, every URL published for `a` and `b` is purged, and the paused queue
//! ends empty. The pause latency (pause written → both replicas paused) is printed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use purge_worker::control::{ControlStore, Pause};
use purge_worker::quota::unix_now;
use serde_json::json;

fn spec(name: &str, emu: &purge_worker::emulator::Emulator) -> ProviderSpec {
    ProviderSpec {
        name: name.into(),
        endpoint: emu.endpoint(),
        extra: String::new(),
        domains: vec![(format!("{name}.example.com"), false)],
    }
}

fn paused_gauge(w: &Running) -> i64 {
    w.worker.metrics.ops.paused.with_label_values(&["a"]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_stops_one_provider_on_every_replica_and_resume_drains_it() {
    let emu_a = emulator(Default::default()).await;
    let emu_b = emulator(Default::default()).await;
    let mut env = TestEnv::new("pause").await;
    let config = env.config(
        &[spec("a", &emu_a), spec("b", &emu_b)],
        "max_linger_ms = 50",
    );
    let w1 = Running::start(config.clone()).await;
    let w2 = Running::start(config).await;
    let store = ControlStore::connect(REDIS_URL, &env.prefix).unwrap();

    // A publisher for both providers, all along.
    let published: Arc<Mutex<(Vec<String>, Vec<String>)>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let feeder = {
        let (published, stop) = (published.clone(), stop.clone());
        let env_conn = TestEnv::new("pause-feed").await;
        let queue = env.queue.clone();
        tokio::spawn(async move {
            let mut env_conn = env_conn;
            env_conn.queue = queue;
            let mut i = 0;
            while !stop.is_cancelled() {
                let (a, b) = (
                    format!("https://a.example.com/p/{i}"),
                    format!("https://b.example.com/p/{i}"),
                );
                env_conn.publish_json(&json!({ "urls": [a, b] })).await;
                {
                    let mut p = published.lock().unwrap();
                    p.0.push(a);
                    p.1.push(b);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Not this test's queue to delete: the feeder only borrowed the name.
            env_conn.queue = format!("{}.none", env_conn.queue);
            env_conn.cleanup().await;
        })
    };
    wait_until("both providers get calls", TIMEOUT, || async {
        !emu_a.accepted().is_empty() && !emu_b.accepted().is_empty()
    })
    .await;

    let t0 = Instant::now();
    store
        .pause(
            "a",
            &Pause {
                reason: "test migration".into(),
                since: unix_now(),
                by: "tester".into(),
            },
        )
        .await
        .unwrap();
    wait_until("both replicas paused", TIMEOUT, || async {
        paused_gauge(&w1) == 1 && paused_gauge(&w2) == 1
    })
    .await;
    let latency = t0.elapsed();
    println!("pause latency (flag written -> both replicas paused): {latency:?}");
    assert!(
        latency < Duration::from_secs(1),
        "paused within 1 s: {latency:?}"
    );

    tokio::time::sleep_until((t0 + Duration::from_secs(2)).into()).await;
    let (a_calls, b_calls) = (emu_a.accepted().len(), emu_b.accepted().len());
    let b_items_before = purged(&emu_b).len();
    wait_until("b keeps flowing while a is paused", TIMEOUT, || async {
        purged(&emu_b).len() > b_items_before + 20
    })
    .await;
    tokio::time::sleep_until((t0 + Duration::from_millis(3500)).into()).await;
    assert_eq!(
        emu_a.accepted().len(),
        a_calls,
        "no call to the paused provider from 2 s after the pause on either replica"
    );
    assert!(
        emu_b.accepted().len() > b_calls,
        "the other provider keeps flowing"
    );
    for w in [&w1, &w2] {
        let r = reqwest::get(format!("http://{}/readyz", w.worker.http_addr))
            .await
            .unwrap();
        assert!(r.status().is_success(), "a pause keeps /readyz green");
        let m = w.metrics().await;
        assert_eq!(metric(&m, "purge_paused{provider=\"a\"}"), 1.0);
        assert_eq!(metric(&m, "purge_paused{provider=\"b\"}"), 0.0);
    }
    wait_until("status shows both replicas paused", TIMEOUT, || async {
        let s = store.statuses("a").await.unwrap();
        s.len() == 2 && s.iter().all(|r| r.state == "paused")
    })
    .await;
    assert!(
        env.ready(&env.paused("a")).await > 0,
        "a's items wait in its paused queue"
    );

    stop.cancel();
    feeder.await.unwrap();
    let (a_urls, b_urls) = published.lock().unwrap().clone();
    store.resume("a").await.unwrap();
    let want_a: BTreeSet<String> = a_urls.into_iter().collect();
    let want_b: BTreeSet<String> = b_urls.into_iter().collect();
    wait_until("every URL of both providers purged", TIMEOUT, || async {
        let a: BTreeSet<String> = purged(&emu_a).into_iter().collect();
        let b: BTreeSet<String> = purged(&emu_b).into_iter().collect();
        a == want_a && b == want_b
    })
    .await;
    wait_until("the paused queue is released", TIMEOUT, || async {
        env.ready(&env.paused("a")).await == 0
    })
    .await;
    for w in [&w1, &w2] {
        assert_eq!(paused_gauge(w), 0);
    }
    w1.stop().await;
    w2.stop().await;
    env.cleanup().await;
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(args)
        .env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "info")
        .env("USER", "sre-on-call")
        .output()
        .expect("run purge-worker")
}

/// The commands: `pause`/`resume` of an unknown provider exit 2 naming the known ones; a pause
/// shows in `status` with its reason and who; both land in the audit trail (log and Redis) with
/// who and why.
#[tokio::test]
async fn pause_resume_and_status_commands_with_audit_trail() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("pause-cli").await;
    let toml = env.config_toml(&[spec("a", &emu)], "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let c = path.to_str().unwrap();

    for cmd in ["pause", "resume"] {
        let o = cli(&[cmd, "nope", "--config", c]);
        assert_eq!(o.status.code(), Some(2), "{cmd} of an unknown provider");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("unknown provider `nope`") && err.contains("a"),
            "{err}"
        );
    }
    let o = cli(&[
        "pause",
        "a",
        "--reason",
        "db migration INC-1",
        "--config",
        c,
    ]);
    assert!(o.status.success(), "{o:?}");
    let log = String::from_utf8_lossy(&o.stdout);
    assert!(
        log.contains("sre-on-call") && log.contains("db migration INC-1"),
        "audit log line: {log}"
    );
    let o = cli(&["status", "--config", c]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("a: paused since") && s.contains("sre-on-call: db migration INC-1"),
        "{s}"
    );
    let o = cli(&["resume", "a", "--reason", "migration done", "--config", c]);
    assert!(o.status.success(), "{o:?}");
    let o = cli(&["status", "--json", "--config", c]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "running");

    let store = ControlStore::connect(REDIS_URL, &env.prefix).unwrap();
    let trail = store.audit_tail(10).await.unwrap();
    let seen: Vec<(&str, &str, &str)> = trail
        .iter()
        .map(|e| (e.action.as_str(), e.who.as_str(), e.why.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("pause", "sre-on-call", "db migration INC-1"),
            ("resume", "sre-on-call", "migration done")
        ]
    );
    env.cleanup().await;
}
