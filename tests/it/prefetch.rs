//! Prefetch after purge (`prefetch_after_purge = true` on the domain).
//!
//! Setup: the emulator's tencent-v3 API with a 1 s task delay and a prefetch allowance of 30
//! URLs a day; the worker's `prefetch_per_day = 30`; 50 URLs in 5 calls (`urls_per_call = 10`),
//! plus 5 URLs of a host without the option. Pass: every prefetched URL reached the emulator
//! after the task that purged it was done (the emulator's own order per URL), no more than 30
//! were prefetched and none was refused by the emulator (the ledger stops first), the rest are
//! counted as `quota` in `purge_prefetches_total`, the other host is never prefetched, and
//! `explain` shows the prefetch.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;
use purge_worker::config::{Config, RawConfig};
use purge_worker::emulator::{EmulatorConfig, PrefetchLimits, TaskModel};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_only_after_the_purge_is_done_and_within_its_quota() {
    let emu = emulator(EmulatorConfig {
        tasks: TaskModel {
            delay: Duration::from_secs(1),
            fail_every: 0,
        },
        prefetch: PrefetchLimits {
            tencent_per_day: 30,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("prefetch").await;
    let mut spec = example_provider(&emu);
    spec.extra = "urls_per_call = 10\nprefetch_per_day = 30\n".into();
    spec.domains.push(("static.example.com".into(), false));
    let toml = env
        .config_toml(
            &[spec],
            "max_linger_ms = 100\n[tracking]\npoll_interval_ms = 300\nlease_ms = 2000\n",
        )
        .replacen(
            "host = \"www.example.com\"\nignore_query = false\n",
            "host = \"www.example.com\"\nignore_query = false\nprefetch_after_purge = true\n",
            1,
        );
    assert!(toml.contains("prefetch_after_purge = true"));
    let config =
        Config::from_raw(toml::from_str::<RawConfig>(&toml).expect("toml")).expect("valid");
    let r = Running::start(config).await;

    let urls: Vec<String> = (0..50)
        .map(|i| format!("https://www.example.com/p/{i}"))
        .collect();
    for chunk in urls.chunks(10) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
    let other: Vec<String> = (0..5)
        .map(|i| format!("https://static.example.com/s/{i}"))
        .collect();
    env.publish_json(&json!({ "urls": other })).await;

    let counted = |r: &Running, result: &str| {
        r.worker
            .metrics
            .prefetches
            .with_label_values(&["cdn", result])
            .get()
    };
    wait_until(
        "every purged URL prefetched or refused for quota",
        TIMEOUT,
        || {
            let r = &r;
            async move { counted(r, "submitted") + counted(r, "quota") >= 50 }
        },
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    // When each URL's purge was done, by the emulator's clock.
    let mut done_at: BTreeMap<String, i64> = BTreeMap::new();
    for t in emu.tasks() {
        assert!(t.phase(now) != purge_worker::emulator::Phase::Fail);
        for i in &t.items {
            done_at.entry(i.clone()).or_insert(t.finish_ms);
        }
    }
    let prefetches = emu.prefetches();
    let mut prefetched = 0;
    for call in &prefetches {
        for u in &call.items {
            prefetched += 1;
            assert!(
                !u.contains("static.example.com"),
                "{u}: its domain did not ask"
            );
            let done = done_at.get(u).copied().unwrap_or(i64::MAX);
            assert!(
                call.at_ms >= done,
                "{u} prefetched at {} before its purge was done at {done}",
                call.at_ms
            );
        }
    }
    assert_eq!(prefetched, 30, "exactly the quota, never over it");
    assert_eq!(counted(&r, "submitted"), 30);
    assert_eq!(counted(&r, "quota"), 20);
    assert_eq!(counted(&r, "error"), 0, "the emulator refused none");

    let first = prefetches[0].items[0].clone();
    let at = url::Url::parse_with_params(
        &format!("http://{}/explain", r.worker.http_addr),
        &[("url", first.as_str())],
    )
    .expect("url");
    wait_until("explain shows the prefetch", TIMEOUT, || {
        let at = at.clone();
        async move {
            let Ok(resp) = reqwest::get(at).await else {
                return false;
            };
            let v: serde_json::Value =
                serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or_default();
            v["calls"][0]["state"] == "done" && v["calls"][0]["prefetch"]["result"] == "submitted"
        }
    })
    .await;
    eprintln!(
        "prefetch: {} calls, {prefetched} URLs prefetched, {} refused by the ledger",
        prefetches.len(),
        counted(&r, "quota")
    );
    r.stop().await;
    env.cleanup().await;
}
