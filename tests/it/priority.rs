//! Editors never wait behind a re-index: priority classes and the interactive reserve.
//!
//! Setup: one provider at 2,000 URLs/day (worker and emulator alike) with `interactive_reserve =
//! 0.25`, 100 URLs per call and 5 calls/s, so the bulk share (1,500) takes about 3 s of calls.
//! Load: a re-index of 4,000 URLs on the bulk queue, and while it runs 60 editorial URLs in 30
//! events on the main queue, one event every 100 ms. Pass: every editorial URL reaches the
//! provider within 3 s of its publish; bulk spends between 1,350 and 1,500 units, never more;
//! the provider never refuses for quota and never sees more than 2,000 URLs; every bulk URL not
//! purged waits durably in the bulk parking queue (marked bulk), none in the interactive one;
//! every message is acked.

use std::collections::{HashMap, HashSet};

use crate::support::*;
use purge_worker::emulator::EmulatorConfig;
use serde_json::json;

const BULK: usize = 4000;
const EDITORIAL_EVENTS: usize = 30;

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_never_delays_editors_and_never_spends_the_reserve() {
    let emu = emulator(EmulatorConfig {
        urls_per_day: 2000,
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("priority").await;
    let mut spec = example_provider(&emu);
    spec.extra = "urls_per_day = 2000\ninteractive_reserve = 0.25\nurls_per_call = 100\n\
                  requests_per_second = 5\nrequests_per_minute = 300"
        .into();
    let config = env.config(&[spec], "max_linger_ms = 100");
    let w = Running::start(config).await;
    let bulk: Vec<String> = (0..BULK)
        .map(|i| format!("https://www.example.com/reindex/{i}.html"))
        .collect();
    for chunk in bulk.chunks(100) {
        env.publish_bulk(&json!({ "urls": chunk, "source": "reindex" }))
            .await;
    }
    let mut published: HashMap<String, f64> = HashMap::new();
    for e in 0..EDITORIAL_EVENTS {
        let urls = [
            format!("https://www.example.com/news/{e}-a.html"),
            format!("https://www.example.com/news/{e}-b.html"),
        ];
        let at = now_ms();
        env.publish_json(&json!({ "urls": urls, "source": "cms" }))
            .await;
        for u in urls {
            published.insert(u, at);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let messages = (BULK / 100 + EDITORIAL_EVENTS) as u64;
    wait_until("every message acked", TIMEOUT, || async {
        w.acked() == messages
    })
    .await;

    let calls = emu.accepted();
    let mut first_seen: HashMap<&str, f64> = HashMap::new();
    for c in &calls {
        for it in &c.items {
            first_seen.entry(it.as_str()).or_insert(c.at_ms);
        }
    }
    let mut worst = 0.0f64;
    for (u, at) in &published {
        let seen = first_seen
            .get(u.as_str())
            .unwrap_or_else(|| panic!("editorial URL {u} never purged"));
        worst = worst.max(seen - at);
    }
    assert!(worst <= 3000.0, "an editorial URL waited {worst:.0} ms");
    let bulk_set: HashSet<&str> = bulk.iter().map(String::as_str).collect();
    let bulk_spent: usize = calls
        .iter()
        .flat_map(|c| &c.items)
        .filter(|i| bulk_set.contains(i.as_str()))
        .count();
    assert!(
        (1350..=1500).contains(&bulk_spent),
        "bulk spent {bulk_spent} units (share 1,500 of 2,000)"
    );
    let total: usize = calls.iter().map(|c| c.items.len()).sum();
    assert!(total <= 2000, "{total} URLs sent against a quota of 2,000");
    assert!(
        emu.rejected().iter().all(|r| !r.code.contains("Limit")),
        "the provider refused for quota: {:?}",
        emu.rejected()
    );

    // What bulk did not purge waits durably, as bulk, and returns to the bulk queue.
    let parked = env.drain(&env.bulk_parking("cdn")).await;
    let mut waiting = 0;
    for (body, _) in &parked {
        assert_eq!(body["priority"], "bulk", "parked bulk comes back as bulk");
        waiting += body["urls"].as_array().map_or(0, Vec::len);
    }
    assert_eq!(
        waiting,
        BULK - bulk_spent,
        "every bulk URL not purged is parked"
    );
    assert_eq!(
        env.ready(&env.parking("cdn")).await,
        0,
        "no interactive item parked"
    );
    let m = w.metrics().await;
    assert!(
        metric(
            &m,
            "purge_items_total{kind=\"url\",outcome=\"submitted\",priority=\"interactive\",provider=\"cdn\"}"
        ) >= 60.0
    );
    assert_eq!(
        metric(
            &m,
            "purge_quota_reserve_left{kind=\"url\",provider=\"cdn\"}"
        ),
        (2000 - total.max(1500)) as f64
    );
    eprintln!(
        "priority: worst editorial publish→purge {worst:.0} ms; bulk spent {bulk_spent}; total {total}"
    );
    w.stop().await;
    env.cleanup().await;
}
