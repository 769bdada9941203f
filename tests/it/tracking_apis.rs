//! Task tracking on the other two APIs: tencent-v2 (`GetCdnRefreshLog`) and Wangsu
//! (`GET /cdn/purges/{id}`, which spends the one API budget shared with purges).
//!
//! Setup: per API, 100 URLs in 10 events, `urls_per_call = 25`, a 2 s task delay, no failures.
//! Pass: every task ends done at the emulator, the tracker observes time to fresh for every key
//! (one observation per key of a done task) and leaves nothing pending in Redis, and every task was
//! asked about at least once. Prints status calls per purge call for the closing figures.

use std::time::Duration;

use crate::support::*;
use purge_worker::emulator::{EmulatorConfig, Phase, TaskModel};
use serde_json::json;

async fn follow(kind: &str) -> (usize, usize) {
    let emu = emulator(EmulatorConfig {
        tasks: TaskModel {
            delay: Duration::from_secs(2),
            fail_every: 0,
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new(&format!("tracking-{kind}")).await;
    let mut spec = example_provider(&emu);
    spec.extra = format!("{}urls_per_call = 25\n", kind_lines(kind));
    let config = env.config(
        &[spec],
        "max_linger_ms = 100\n[tracking]\npoll_interval_ms = 500\nlease_ms = 2000\n",
    );
    let w = Running::start(config).await;
    let urls: Vec<String> = (0..100)
        .map(|i| format!("https://www.example.com/{kind}/{i}"))
        .collect();
    for chunk in urls.chunks(10) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
    wait_until("every key seen fresh", TIMEOUT, || async {
        w.worker
            .metrics
            .time_to_fresh
            .with_label_values(&["cdn", "url"])
            .get_sample_count()
            == 100
    })
    .await;
    let tasks = emu.tasks();
    assert!(!tasks.is_empty());
    assert!(tasks.iter().all(|t| t.outcome == Phase::Done));
    let status = emu.status_calls();
    for t in &tasks {
        assert!(
            status.iter().any(|c| c.items.contains(&t.id)),
            "task {} was asked about",
            t.id
        );
    }
    let purges = emu.accepted().len();
    w.stop().await;
    env.cleanup().await;
    (status.len(), purges)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_v2_and_wangsu_tasks_are_followed_to_done() {
    for kind in ["tencent-v2", "wangsu"] {
        let (status, purges) = follow(kind).await;
        println!(
            "{kind}: {status} status calls for {purges} purge calls ({:.2} per call)",
            status as f64 / purges.max(1) as f64
        );
    }
}
