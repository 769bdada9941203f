//! No single answer or item can stall a provider (CONTRACT §4), end to end on the real broker
//! and Redis against the emulator.
//!
//! - Poisoned URLs: 1000 URLs in one event, 2 of which make every call that holds them fail with
//!   a transient code, at 10 calls/s. Pass: the 998 good ones are purged, each poisoned one is
//!   dead-lettered alone as `provider_failed` with the provider's last code, and the message is
//!   acked; the calls made and the times are printed.
//! - A gateway's 429 with `Retry-After: 10000000000000000000`: the wait is clamped to
//!   `retry_max_ms`, the purge goes through and the worker stays ready.
//! - An item refused as too large even alone is dead-lettered `item_too_large`; the rest flows.
//! - A host the key may not purge is dead-lettered `host_refused`; the provider is not stopped.

use std::collections::BTreeSet;
use std::time::Instant;

use crate::support::*;
use purge_worker::emulator::{EmulatorConfig, Faults};
use serde_json::json;

fn spec(emu: &purge_worker::emulator::Emulator, extra: &str, hosts: &[&str]) -> ProviderSpec {
    ProviderSpec {
        name: "cdn".into(),
        endpoint: emu.endpoint(),
        extra: extra.into(),
        domains: hosts.iter().map(|h| (h.to_string(), false)).collect(),
    }
}

/// Dead letters of the test, as (error code, provider_code, item).
async fn dead_letters(env: &TestEnv) -> Vec<(String, String, String)> {
    env.drain(&env.dlq)
        .await
        .into_iter()
        .map(|(body, code)| {
            let item = body["event"]["urls"][0].as_str().unwrap_or("").to_string();
            let provider_code = body["provider_code"].as_str().unwrap_or("").to_string();
            (code.unwrap_or_default(), provider_code, item)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_poisoned_urls_never_hold_up_998_good_ones() {
    let urls: Vec<String> = (0..1000)
        .map(|i| format!("https://www.example.com/p/{i}"))
        .collect();
    let poison = [urls[123].clone(), urls[877].clone()];
    let emu = emulator(EmulatorConfig {
        requests_per_second: 10,
        faults: Faults {
            failing_urls: poison.iter().cloned().collect(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("poison").await;
    let config = env.config(
        &[spec(
            &emu,
            "requests_per_second = 10\nretry_base_ms = 200\nretry_max_ms = 5000",
            &["www.example.com"],
        )],
        "max_linger_ms = 50",
    );
    env.publish_json(&json!({ "urls": urls, "id": "bulk-1" }))
        .await;
    let started = Instant::now();
    let w = Running::start(config).await;
    let good: BTreeSet<String> = urls
        .iter()
        .filter(|u| !poison.contains(u))
        .cloned()
        .collect();
    wait_until("998 good urls purged", TIMEOUT, || async {
        purged(&emu).into_iter().collect::<BTreeSet<_>>() == good
    })
    .await;
    let good_secs = started.elapsed().as_secs_f64();
    wait_until("the message acked", TIMEOUT, || async { w.acked() == 1 }).await;
    let dead_secs = started.elapsed().as_secs_f64();
    let calls = emu.accepted().len() + emu.rejected().len();
    eprintln!(
        "poison: 998 good purged after {good_secs:.2} s, both poisoned dead-lettered after {dead_secs:.2} s, \
         {calls} calls ({} accepted; minimum 1 call, or 3 with the poisoned ones alone)",
        emu.accepted().len()
    );
    let mut dead = dead_letters(&env).await;
    dead.sort();
    assert_eq!(
        dead,
        poison
            .iter()
            .map(|u| (
                "provider_failed".to_string(),
                "InternalError.CdnSystemError".to_string(),
                u.clone()
            ))
            .collect::<Vec<_>>()
    );
    assert!(calls <= 60, "{calls} calls");
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_clamped_and_the_worker_keeps_purging() {
    let emu = emulator(EmulatorConfig {
        faults: Faults {
            gateway_429: 1,
            gateway_retry_after: "10000000000000000000".into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("retry-after").await;
    let config = env.config(
        &[spec(&emu, "retry_max_ms = 1000", &["www.example.com"])],
        "max_linger_ms = 20",
    );
    let w = Running::start(config).await;
    let started = Instant::now();
    env.publish_json(&json!({ "urls": ["https://www.example.com/a"] }))
        .await;
    wait_until("purged after the clamped wait", TIMEOUT, || async {
        purged(&emu) == ["https://www.example.com/a"]
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert!(secs < 10.0, "waited {secs:.1} s");
    assert!(w.metrics().await.contains("result=\"rate_limited\"} 1"));
    let ready = reqwest::get(format!("http://{}/readyz", w.worker.http_addr))
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
    // Still purging afterwards.
    env.publish_json(&json!({ "urls": ["https://www.example.com/b"] }))
        .await;
    wait_until("a later purge", TIMEOUT, || async {
        purged(&emu).len() == 2
    })
    .await;
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_too_large_alone_and_a_refused_host_are_dead_lettered_and_the_rest_flows() {
    let big = "https://www.example.com/huge".to_string();
    let emu = emulator(EmulatorConfig {
        faults: Faults {
            oversize_urls: [big.clone()].into(),
            unauthorized_hosts: ["img.example.com".to_string()].into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("too-large").await;
    let config = env.config(
        &[spec(&emu, "", &["www.example.com", "img.example.com"])],
        "max_linger_ms = 50",
    );
    let mut urls: Vec<String> = (0..6)
        .map(|i| format!("https://www.example.com/ok/{i}"))
        .collect();
    urls.push(big.clone());
    urls.push("https://img.example.com/1.png".into());
    env.publish_json(&json!({ "urls": urls, "id": "mixed" }))
        .await;
    let w = Running::start(config).await;
    wait_until("the message acked", TIMEOUT, || async { w.acked() == 1 }).await;
    let got: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(got, urls[..6].iter().cloned().collect::<BTreeSet<_>>());
    let mut dead = dead_letters(&env).await;
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (
                "host_refused".to_string(),
                "UnauthorizedOperation.CdnHostUnauthorized".to_string(),
                "https://img.example.com/1.png".to_string()
            ),
            (
                "item_too_large".to_string(),
                "LimitExceeded.CdnPurgeUrlExceedBatchLimit".to_string(),
                big
            ),
        ]
    );
    let m = w.metrics().await;
    assert!(
        m.contains("purge_provider_stopped{provider=\"cdn\"} 0"),
        "{m}"
    );
    // The cap shrank for the oversize item and grows back with full batches.
    let more: Vec<String> = (0..40)
        .map(|i| format!("https://www.example.com/more/{i}"))
        .collect();
    env.publish_json(&json!({ "urls": more })).await;
    wait_until("the second message acked", TIMEOUT, || async {
        w.acked() == 2
    })
    .await;
    w.stop().await;
    env.cleanup().await;
}
