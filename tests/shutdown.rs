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

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use purge_worker::emulator::Emulator;
use purge_worker::provider::{Batch, Capabilities, Kind, Provider, PurgeFuture};
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

/// A provider client whose every call panics (`Panicking(true)`) or never ends (`false`).
#[derive(Debug)]
struct Panicking(bool);

impl Provider for Panicking {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            url_flush_type: false,
            wildcards: false,
            regex: false,
            headers: false,
        }
    }
    fn action(&self, _kind: Kind) -> &'static str {
        "PurgeUrlsCache"
    }
    fn purge<'a>(&'a self, _batch: &'a Batch) -> PurgeFuture<'a> {
        let panics = self.0;
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
    let clients: Vec<Arc<dyn Provider>> =
        vec![Arc::new(Panicking(true)), Arc::new(Panicking(false))];
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
