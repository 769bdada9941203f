//! Shutdown that always works.
//!
//! - `graceful_drain_acks_everything_it_purged` — property: a drain acks every delivery it purged
//!   before the channel closes. Fault: items are pending (a 5 s linger) when shutdown is
//!   requested. Pass: the worker exits cleanly, 0 messages are left in the purge queue, and after
//!   a second worker has run on the same queue every key was purged exactly once across both runs.

mod support;

use std::collections::BTreeMap;

use purge_worker::emulator::Emulator;
use serde_json::json;
use support::*;

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
