//! The legacy Tencent Cloud API 2.0 provider (`kind = "tencent-v2"`) end to end: the real local
//! RabbitMQ and Redis, the worker in process, the emulator's `/v2/index.php` on an ephemeral port.
//!
//! Properties, one test each:
//! 1. a CMS-like burst purges exactly the expected keys with the minimum number of RefreshCdnUrl
//!    / RefreshCdnDir calls the lanes allow;
//! 2. an item the API refuses as "no such host" (4000/9110, the whole call, item unnamed) is
//!    isolated by splitting and dead-lettered alone while the rest purges;
//! 3. the API's daily-quota refusal (4000/22044) parks the lane until the UTC+8 reset, losing
//!    nothing, while another provider keeps flowing;
//! 4. injected internal errors (6000) and rate limits (4400) are retried, each attempt re-signed
//!    with a fresh Nonce, until every key is purged;
//! 5. one worker with a tencent-v3 and a tencent-v2 provider sends each host to its own API.
//!
//! Pass criteria are in each test; every wait is bounded by `TIMEOUT`.

use std::collections::BTreeSet;

use crate::support::*;
use lapin::options::BasicGetOptions;
use purge_worker::emulator::{Emulator, EmulatorConfig, Faults, V2Limits};
use purge_worker::quota::{next_reset, unix_now};
use serde_json::json;

/// A `tencent-v2` provider on `emu` with extra TOML lines.
fn v2_spec(name: &str, emu: &Emulator, extra: &str, domains: &[(&str, bool)]) -> ProviderSpec {
    ProviderSpec {
        name: name.into(),
        endpoint: emu.endpoint(),
        extra: format!("{}{extra}", kind_lines("tencent-v2")),
        domains: domains.iter().map(|(h, q)| (h.to_string(), *q)).collect(),
    }
}

fn items_of(emu: &Emulator, action: &str) -> Vec<Vec<String>> {
    emu.accepted()
        .into_iter()
        .filter(|c| c.action == action)
        .map(|c| c.items)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cms_burst_becomes_the_fewest_refresh_calls() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("v2burst").await;
    let spec = v2_spec(
        "cdn",
        &emu,
        "",
        &[
            ("www.example.com", true),
            ("static.example.com", false),
            ("*.news.example.com", false),
        ],
    );
    let config = env.config(&[spec], "max_linger_ms = 300");
    // Published before the worker starts, so the whole burst is inside one linger window.
    let events = [
        json!({"urls": ["https://WWW.Example.com/a.html?utm_source=x", "https://www.example.com:443/a.html"], "id": "e1"}),
        json!({"urls": ["https://www.example.com/a.html?utm_campaign=y#top", "http://static.example.com:80/app.js?v=2"]}),
        json!({"urls": ["http://static.example.com/app.js?v=2", "http://STATIC.example.com/app.js?v=3"]}),
        json!({"dirs": ["https://www.example.com/news/"], "flush_type": "delete"}),
        json!({"dirs": ["https://WWW.EXAMPLE.COM:443/news/"], "flush_type": "delete"}),
        json!({"dirs": ["https://www.example.com/news/", "https://www.example.com/blog/"]}),
    ];
    for e in &events {
        env.publish_json(e).await;
    }
    env.publish_raw(
        b"https://a.news.example.com/x\n\nhttps://A.NEWS.example.com/x#frag\r\n",
        Some("text/plain"),
    )
    .await;
    let published = events.len() as u64 + 1;

    let w = Running::start(config).await;
    wait_until("every message acked", TIMEOUT, || async {
        w.acked() == published
    })
    .await;

    let urls = set(&[
        "https://www.example.com/a.html",
        "http://static.example.com/app.js?v=2",
        "http://static.example.com/app.js?v=3",
        "https://a.news.example.com/x",
    ]);
    // RefreshCdnDir has no FlushType: `delete` and `flush` directories are the same purge, so
    // `news/` asked for with both is one item, in one directory call.
    let dirs = set(&[
        "https://www.example.com/news/",
        "https://www.example.com/blog/",
    ]);
    // One call per lane (the API takes 1000 URLs / 20 dirs per call).
    let minimum = urls.len().div_ceil(1000) + dirs.len().div_ceil(20);
    let calls = emu.accepted();
    println!("calls made {}, minimum {minimum}", calls.len());
    assert_eq!(calls.len(), minimum, "{calls:#?}");
    let url_calls = items_of(&emu, "RefreshCdnUrl");
    assert_eq!(url_calls.len(), 1);
    assert_eq!(url_calls[0].iter().cloned().collect::<BTreeSet<_>>(), urls);
    let dir_calls: Vec<BTreeSet<String>> = items_of(&emu, "RefreshCdnDir")
        .into_iter()
        .map(|c| c.into_iter().collect())
        .collect();
    assert_eq!(dir_calls, vec![dirs]);
    let total: usize = calls.iter().map(|c| c.items.len()).sum();
    assert_eq!(total, 6, "no key was sent twice");
    assert!(calls.iter().all(|c| c.flush_type.is_none()));
    assert!(emu.rejected().is_empty(), "{:?}", emu.rejected());

    // Requested again after its purge was sent: purged again.
    env.publish_json(&json!({"urls": ["https://www.example.com/a.html?utm_source=z"]}))
        .await;
    wait_until("the repeat is acked", TIMEOUT, || async {
        w.acked() == published + 1
    })
    .await;
    let calls = emu.accepted();
    assert_eq!(calls.len(), minimum + 1);
    assert_eq!(calls[minimum].items, ["https://www.example.com/a.html"]);
    let m = w.metrics().await;
    let ok = "purge_api_requests_total{action=\"RefreshCdnUrl\",provider=\"cdn\",result=\"ok\"} 2";
    assert!(m.contains(ok), "missing {ok}");
    w.stop().await;
    assert_eq!(env.ready(&env.queue).await, 0, "everything was acked");
    assert_eq!(env.ready(&env.dlq).await, 0, "nothing was dead-lettered");
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_isolated_and_dead_lettered_alone() {
    let bad = "https://www.example.com/bad.html";
    let emu = emulator_rejecting(bad).await;
    let mut env = TestEnv::new("v2isolate").await;
    let spec = v2_spec("cdn", &emu, "", &[("www.example.com", false)]);
    let config = env.config(&[spec], "max_linger_ms = 200");
    let good: Vec<String> = (0..7)
        .map(|i| format!("https://www.example.com/ok/{i}.html"))
        .collect();
    let mut all = good.clone();
    all.insert(3, bad.to_string());
    env.publish_json(&json!({"urls": all, "id": "with-bad-url"}))
        .await;

    let w = Running::start(config).await;
    wait_until("the message is acked", TIMEOUT, || async { w.acked() == 1 }).await;
    let got: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(got, good.iter().cloned().collect::<BTreeSet<_>>());
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead.len(), 1, "only the bad URL: {dead:?}");
    let (body, code) = &dead[0];
    assert_eq!(code.as_deref(), Some("provider_rejected"));
    assert_eq!(body["provider_code"], "4000.9110");
    assert_eq!(body["event"]["urls"], json!([bad]));
    assert_eq!(body["event"]["id"], "with-bad-url");
    let rejected = emu.rejected();
    assert!(
        rejected.iter().all(|r| r.code == "4000.9110"),
        "{rejected:?}"
    );
    // Bisection: 8 → 4 → 2 → 1 costs a bounded number of refused calls.
    assert!(rejected.len() <= 4, "{rejected:?}");
    w.stop().await;
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apis_quota_refusal_parks_the_lane_until_the_reset() {
    // The worker believes in 10 000 URLs a day; the API allows 100. Its 4000/22044 refusal is
    // what parks the lane.
    let emu_a = emulator(EmulatorConfig {
        tencent_v2: V2Limits {
            urls_per_day: 100,
            ..V2Limits::default()
        },
        ..Default::default()
    })
    .await;
    let emu_b = emulator(Default::default()).await;
    let mut env = TestEnv::new("v2quota").await;
    let config = env.config(
        &[
            v2_spec(
                "a",
                &emu_a,
                "urls_per_call = 100",
                &[("a.example.com", false)],
            ),
            v2_spec("b", &emu_b, "", &[("b.example.com", false)]),
        ],
        "max_linger_ms = 200",
    );
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
    let w = Running::start(config).await;
    wait_until("all 13 messages acked", TIMEOUT, || async {
        w.acked() == 13
    })
    .await;

    let a_done = purged(&emu_a);
    assert_eq!(a_done.len(), 100, "exactly the API's quota was purged");
    let refusals = emu_a.rejected();
    assert!(!refusals.is_empty());
    assert!(
        refusals.iter().all(|r| r.code == "4000.22044"),
        "{refusals:?}"
    );
    // Once parked the lane stops calling: at most the calls already in flight were refused.
    assert!(refusals.len() <= 2, "{refusals:?}");
    let b_done: BTreeSet<String> = purged(&emu_b).into_iter().collect();
    assert_eq!(b_done, b_urls.iter().cloned().collect::<BTreeSet<_>>());

    let parking = env.parking("a");
    let ch = env.conn.create_channel().await.expect("channel");
    let mut parked = BTreeSet::new();
    let reset_ms = next_reset(unix_now(), 8 * 3600) * 1000;
    while let Some(msg) = ch
        .basic_get(parking.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic_get")
    {
        let ttl: i64 = msg
            .delivery
            .properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse().ok())
            .expect("parked messages expire");
        let now_ms = unix_now() * 1000;
        assert!(
            (now_ms + ttl - reset_ms).abs() < 5_000,
            "expires at the UTC+8 day reset"
        );
        let ev: serde_json::Value = serde_json::from_slice(&msg.delivery.data).expect("json");
        for u in ev["urls"].as_array().expect("urls") {
            parked.insert(u.as_str().expect("string").to_string());
        }
    }
    assert_eq!(parked.len(), 200, "the rest is parked, not lost");
    let all: BTreeSet<String> = a_done.into_iter().chain(parked).collect();
    assert_eq!(all, a_urls.iter().cloned().collect::<BTreeSet<_>>());
    let m = w.metrics().await;
    for line in [
        "purge_parked_items_total{kind=\"url\",priority=\"interactive\",provider=\"a\"} 200",
        "purge_api_requests_total{action=\"RefreshCdnUrl\",provider=\"a\",result=\"quota_exceeded\"}",
    ] {
        assert!(m.contains(line), "missing {line}");
    }
    w.stop().await;
    assert_eq!(env.ready(&env.queue).await, 0, "nothing left unacked");
    env.cleanup().await;
    emu_a.shutdown().await;
    emu_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_and_rate_limits_are_retried_until_everything_is_purged() {
    let emu = emulator(EmulatorConfig {
        faults: Faults {
            fail_first: 5,
            rate_limit_every: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("v2faults").await;
    let extra = "signature_method = \"HmacSHA256\"\nurls_per_call = 10\nretry_base_ms = 20\nretry_max_ms = 200";
    let config = env.config(
        &[v2_spec("cdn", &emu, extra, &[("www.example.com", false)])],
        "max_linger_ms = 50",
    );
    let urls: Vec<String> = (0..60)
        .map(|i| format!("https://www.example.com/f/{i}"))
        .collect();
    for chunk in urls.chunks(6) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
    let w = Running::start(config).await;
    wait_until("every message acked", TIMEOUT, || async { w.acked() == 10 }).await;

    let got: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(got, urls.iter().cloned().collect::<BTreeSet<_>>());
    let accepted = emu.accepted().len();
    let refused = emu.rejected();
    assert!(refused.iter().any(|r| r.code == "6000"), "{refused:?}");
    assert!(refused.iter().any(|r| r.code == "4400"), "{refused:?}");
    assert!(
        refused.iter().all(|r| r.code == "6000" || r.code == "4400"),
        "a retry never replays a Nonce (no 4500): {refused:?}"
    );
    assert!(accepted <= 8, "few extra accepted calls: {accepted}");
    assert!(
        refused.len() <= 5 + (5 + accepted + 3) / 2,
        "bounded retries: {} refused",
        refused.len()
    );
    let m = w.metrics().await;
    let transient = "purge_retries_total{provider=\"cdn\",reason=\"transient\"} 5";
    assert!(m.contains(transient), "missing {transient}");
    w.stop().await;
    assert_eq!(env.ready(&env.dlq).await, 0, "nothing dead-lettered");
    assert_eq!(env.ready(&env.queue).await, 0);
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_and_v2_providers_in_one_worker_each_get_their_own_hosts() {
    // One emulator serves both APIs with the same account.
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("v2mixed").await;
    let v3 = ProviderSpec {
        name: "new".into(),
        endpoint: emu.endpoint(),
        extra: String::new(),
        domains: vec![("v3.example.com".into(), false)],
    };
    let v2 = v2_spec(
        "legacy",
        &emu,
        "http_method = \"GET\"\nsignature_method = \"HmacSHA256\"",
        &[("v2.example.com", false)],
    );
    let config = env.config(&[v3, v2], "max_linger_ms = 200");
    env.publish_json(&json!({"urls": [
        "https://v3.example.com/a", "https://v2.example.com/a",
        "https://v3.example.com/b", "https://v2.example.com/b",
    ]}))
    .await;
    env.publish_json(&json!({"dirs": ["https://v2.example.com/d/", "https://v3.example.com/d/"]}))
        .await;
    let w = Running::start(config).await;
    wait_until("both messages acked", TIMEOUT, || async { w.acked() == 2 }).await;

    let calls = emu.accepted();
    println!("calls made {}, minimum 4", calls.len());
    assert_eq!(
        calls.len(),
        4,
        "one URL and one directory call per API: {calls:#?}"
    );
    for c in &calls {
        let host = match c.action.as_str() {
            "PurgeUrlsCache" | "PurgePathCache" => "https://v3.example.com/",
            "RefreshCdnUrl" | "RefreshCdnDir" => "https://v2.example.com/",
            other => panic!("unexpected action {other}"),
        };
        assert!(c.items.iter().all(|i| i.starts_with(host)), "{c:?}");
    }
    let flat = |action: &str| -> BTreeSet<String> {
        items_of(&emu, action).into_iter().flatten().collect()
    };
    assert_eq!(
        flat("PurgeUrlsCache"),
        set(&["https://v3.example.com/a", "https://v3.example.com/b"])
    );
    assert_eq!(
        flat("RefreshCdnUrl"),
        set(&["https://v2.example.com/a", "https://v2.example.com/b"])
    );
    assert_eq!(flat("PurgePathCache"), set(&["https://v3.example.com/d/"]));
    assert_eq!(flat("RefreshCdnDir"), set(&["https://v2.example.com/d/"]));
    assert!(emu.rejected().is_empty(), "{:?}", emu.rejected());
    w.stop().await;
    assert_eq!(env.ready(&env.queue).await, 0);
    assert_eq!(env.ready(&env.dlq).await, 0);
    env.cleanup().await;
    emu.shutdown().await;
}
