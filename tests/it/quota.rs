//! Quota exhaustion parks the lane, not the worker.
//!
//! Setup: provider `a` at 100 URLs/day (emulator and config), provider `b` unlimited by comparison.
//! Fault: 300 URLs published for `a`, 10 for `b`. Pass: exactly 100 of `a`'s URLs reach the
//! emulator, never more; the other 200 are moved durably to `a`'s parking queue (with an expiry
//! that returns them to the purge queue at the provider's day reset) and every message is acked
//! (none left unacked waiting for the reset); `b`'s lane keeps flowing; metrics show the lane
//! parked until the reset; and a parked message that expires is routed back into the purge queue
//! and purged (the reset path, with a 50 ms expiry instead of midnight).

use std::collections::BTreeSet;

use crate::support::*;
use lapin::options::BasicGetOptions;
use purge_worker::emulator::EmulatorConfig;
use purge_worker::quota::{next_reset, unix_now};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exhaustion_parks_the_lane_and_other_providers_keep_flowing() {
    let emu_a = emulator(EmulatorConfig {
        urls_per_day: 100,
        ..Default::default()
    })
    .await;
    let emu_b = emulator(Default::default()).await;
    let mut env = TestEnv::new("quota").await;
    let config = env.config(
        &[
            ProviderSpec {
                name: "a".into(),
                endpoint: emu_a.endpoint(),
                extra: "urls_per_day = 100".into(),
                domains: vec![("a.example.com".into(), false)],
            },
            ProviderSpec {
                name: "b".into(),
                endpoint: emu_b.endpoint(),
                extra: String::new(),
                domains: vec![("b.example.com".into(), false)],
            },
        ],
        "max_linger_ms = 200",
    );
    let w = Running::start(config).await;
    let a_urls: Vec<String> = (0..300)
        .map(|i| format!("https://a.example.com/p/{i}"))
        .collect();
    for chunk in a_urls.chunks(100) {
        env.publish_json(&json!({ "urls": chunk, "source": "reindex" }))
            .await;
    }
    let b_urls: Vec<String> = (0..10)
        .map(|i| format!("https://b.example.com/p/{i}"))
        .collect();
    for u in &b_urls {
        env.publish_json(&json!({ "urls": [u] })).await;
    }
    wait_until("all 13 messages acked", TIMEOUT, || async {
        w.acked() == 13
    })
    .await;

    let a_done = purged(&emu_a);
    assert_eq!(a_done.len(), 100, "exactly the quota was purged");
    assert!(
        emu_a
            .rejected()
            .iter()
            .all(|r| !r.code.contains("DayLimit")),
        "nothing sent past the quota"
    );
    let b_done: BTreeSet<String> = purged(&emu_b).into_iter().collect();
    assert_eq!(
        b_done,
        b_urls.iter().cloned().collect::<BTreeSet<_>>(),
        "provider b kept flowing"
    );

    // The other 200 wait durably in the parking queue, each message expiring at the reset.
    let parking = env.parking("a");
    let ch = env.conn.create_channel().await.unwrap();
    let mut parked = BTreeSet::new();
    let now_ms = unix_now() * 1000;
    let reset_ms = next_reset(unix_now(), 8 * 3600) * 1000;
    while let Some(msg) = ch
        .basic_get(parking.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let ttl: i64 = msg
            .delivery
            .properties
            .expiration()
            .as_ref()
            .map(|e| e.as_str().parse().unwrap())
            .expect("parked messages expire");
        assert!(
            (now_ms + ttl - reset_ms).abs() < 5_000,
            "expires at the UTC+8 day reset"
        );
        let ev: serde_json::Value = serde_json::from_slice(&msg.delivery.data).unwrap();
        for u in ev["urls"].as_array().unwrap() {
            parked.insert(u.as_str().unwrap().to_string());
        }
    }
    assert_eq!(parked.len(), 200, "the rest is parked, not lost");
    let all: BTreeSet<String> = a_done.into_iter().chain(parked).collect();
    assert_eq!(all, a_urls.iter().cloned().collect::<BTreeSet<_>>());

    // The parking queue's expiry route really returns messages to the purge queue: a parked
    // message that expires now (here after 50 ms instead of at midnight) is purged by the worker.
    let back = "https://b.example.com/returned-from-parking";
    let body =
        serde_json::to_vec(&json!({ "urls": [back], "source": "purge-worker:parked" })).unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "".into(),
        parking.as_str().into(),
        Default::default(),
        &body,
        lapin::BasicProperties::default()
            .with_expiration("50".into())
            .with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    wait_until("the expired parked message is purged", TIMEOUT, || async {
        purged(&emu_b).iter().any(|u| u == back)
    })
    .await;

    let m = w.metrics().await;
    assert!(
        m.contains(
            "purge_parked_items_total{kind=\"url\",priority=\"interactive\",provider=\"a\"} 200"
        ),
        "{m}"
    );
    assert!(
        m.contains("purge_quota_used{kind=\"url\",provider=\"a\"} 100"),
        "{m}"
    );
    let parked_until = format!(
        "purge_lane_parked_until_seconds{{kind=\"url\",provider=\"a\"}} {}",
        reset_ms / 1000
    );
    assert!(m.contains(&parked_until), "{m}");
    w.stop().await;
    assert_eq!(
        env.ready(&env.queue).await,
        0,
        "nothing left unacked or unconsumed"
    );
    env.cleanup().await;
    emu_a.shutdown().await;
    emu_b.shutdown().await;
}
