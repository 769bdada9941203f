//! Wangsu CDN Pro end to end, on the real RabbitMQ and Redis with the emulator as the CDN.
//!
//! - A burst of files (no headers and two header sets), wildcard dirs (flush and delete) and regex
//!   patterns is purged in exactly the minimum calls, header sets never mixed.
//! - A URL the CDN refuses is dead-lettered alone, with the provider's code; the rest is purged.
//! - A worker with all three kinds routes each host to its API, and a wildcard dir for a Tencent
//!   host is dead-lettered with a reason.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use purge_worker::emulator::{EmulatorConfig, RecordedCall};
use purge_worker::provider::Header;
use serde_json::json;

/// Wangsu with limits lifted, so the burst test measures batching, not pacing.
fn fast_wangsu() -> String {
    format!(
        "{}requests_per_second = 20\nrequests_per_minute = 1200\nrate_limits = []\n",
        kind_lines("wangsu")
    )
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

/// (lists, headers, action) of a recorded Wangsu call, for order-independent comparison.
type CallShape = (String, Vec<String>, Vec<Header>, String);

fn shape(c: &RecordedCall) -> CallShape {
    let w = c
        .wangsu
        .as_ref()
        .expect("a wangsu call records its request");
    let (list, mut items) = if !w.file_urls.is_empty() {
        ("files", w.file_urls.clone())
    } else if !w.dir_urls.is_empty() {
        ("dirs", w.dir_urls.clone())
    } else {
        ("regex", w.regex_patterns.clone())
    };
    assert_eq!(
        [&w.file_urls, &w.dir_urls, &w.regex_patterns]
            .iter()
            .filter(|l| !l.is_empty())
            .count(),
        1,
        "the worker never mixes lists in one call: {w:?}"
    );
    items.sort();
    (
        list.to_string(),
        items,
        w.file_headers.clone(),
        w.action.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_files_headers_wildcards_and_regex_takes_the_fewest_calls() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut env = TestEnv::new("wangsu-burst").await;
    let config = env.config(
        &[ProviderSpec {
            name: "ws".into(),
            endpoint: emu.endpoint(),
            extra: fast_wangsu(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 300",
    );
    let mobile = json!([{"name": "X-Device", "value": "mobile"}]);
    let lang = json!([{"name": "Accept-Language", "value": "en"}, {"name": "X-Device", "value": "mobile"}]);
    let events = [
        json!({"urls": ["https://www.example.com/a.js", "https://WWW.example.com/b.js"]}),
        json!({"urls": ["https://www.example.com/a.js#x", "https://www.example.com/c[1].js"]}),
        json!({"urls": ["https://www.example.com/a.js"], "headers": mobile}),
        json!({"urls": ["https://www.example.com/a.js", "https://www.example.com/d.js"], "headers": lang}),
        json!({"urls": ["https://www.example.com/d.js"], "headers": [{"name": "x-device", "value": "mobile"}, {"name": "accept-language", "value": "en"}]}),
        json!({"dirs": ["https://www.example.com/img/**", "https://www.example.com/css/*.css"]}),
        json!({"dirs": ["https://www.example.com/img/**"], "flush_type": "delete"}),
        json!({"dirs": ["https://www.example.com:443/img/**"]}),
        // The duplicate comes first: two patterns fill a regex call (2 per call), and a full
        // lane leaves at once, so a duplicate arriving after that would rightly be sent again.
        json!({"regex": ["https://www.example.com/news/.*\\.(jpg|png)"]}),
        json!({"regex": ["https://www.example.com/news/.*\\.(jpg|png)", "any://www.example.com/v[0-9]+/app\\.js"]}),
    ];
    for e in &events {
        env.publish_json(e).await;
    }
    let w = Running::start(config).await;
    wait_until("every message acked", TIMEOUT, || async {
        w.acked() == events.len() as u64
    })
    .await;

    let calls = emu.accepted();
    let mut got: Vec<CallShape> = calls.iter().map(shape).collect();
    got.sort();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut want: Vec<CallShape> = vec![
        (
            "files".into(),
            s(&[
                "https://www.example.com/a.js",
                "https://www.example.com/b.js",
                "https://www.example.com/c%5B1%5D.js",
            ]),
            vec![],
            "invalidate".into(),
        ),
        (
            "files".into(),
            s(&["https://www.example.com/a.js"]),
            vec![header("x-device", "mobile")],
            "invalidate".into(),
        ),
        (
            "files".into(),
            s(&[
                "https://www.example.com/a.js",
                "https://www.example.com/d.js",
            ]),
            vec![
                header("accept-language", "en"),
                header("x-device", "mobile"),
            ],
            "invalidate".into(),
        ),
        (
            "dirs".into(),
            s(&[
                "https://www.example.com/css/*.css",
                "https://www.example.com/img/**",
            ]),
            vec![],
            "invalidate".into(),
        ),
        (
            "dirs".into(),
            s(&["https://www.example.com/img/**"]),
            vec![],
            "delete".into(),
        ),
        (
            "regex".into(),
            s(&[
                "any://www.example.com/v[0-9]+/app\\.js",
                "https://www.example.com/news/.*\\.(jpg|png)",
            ]),
            vec![],
            "invalidate".into(),
        ),
    ];
    want.sort();
    println!(
        "wangsu burst: calls made {}, minimum {} (3 header sets of files, 2 dir actions, 1 regex)",
        calls.len(),
        want.len()
    );
    assert_eq!(got, want);
    assert!(
        calls
            .iter()
            .all(|c| c.wangsu.as_ref().is_some_and(|w| w.target == "production")),
        "target defaults to production"
    );
    // A new header set after the burst: an idle header lane is recycled for it, and the call
    // carries the new set, not the lane's old one.
    env.publish_json(&json!({"urls": ["https://www.example.com/a.js"], "headers": [{"name": "X-Device", "value": "tablet"}]}))
        .await;
    wait_until("the late event acked", TIMEOUT, || async {
        w.acked() == events.len() as u64 + 1
    })
    .await;
    let last = emu.accepted().pop().expect("a call");
    assert_eq!(
        shape(&last),
        (
            "files".into(),
            s(&["https://www.example.com/a.js"]),
            vec![header("x-device", "tablet")],
            "invalidate".into()
        )
    );
    w.stop().await;
    assert_eq!(env.ready(&env.dlq).await, 0, "nothing was dead-lettered");
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_url_is_dead_lettered_alone() {
    let bad = "https://www.example.com/not-deployed.js";
    let emu = emulator_rejecting(bad).await;
    let mut env = TestEnv::new("wangsu-invalid").await;
    let config = env.config(
        &[ProviderSpec {
            name: "ws".into(),
            endpoint: emu.endpoint(),
            extra: fast_wangsu(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 200",
    );
    let good: Vec<String> = (0..5)
        .map(|i| format!("https://www.example.com/{i}.js"))
        .collect();
    let mut urls = good.clone();
    urls.insert(2, bad.to_string());
    env.publish_json(&json!({"urls": urls, "id": "cms-9", "source": "cms"}))
        .await;
    let w = Running::start(config).await;
    wait_until("the message acked", TIMEOUT, || async { w.acked() == 1 }).await;

    let purged: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(purged, good.iter().cloned().collect::<BTreeSet<_>>());
    let refused = emu.rejected();
    println!(
        "wangsu refusal: {} refused call(s), {} accepted",
        refused.len(),
        emu.accepted().len()
    );
    assert_eq!(
        refused.len(),
        1,
        "the CDN names the URL, so no splitting: {refused:?}"
    );
    assert_eq!(refused[0].code, "InvalidPurgeUrl");
    w.stop().await;
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (record, code) = &dead[0];
    assert_eq!(code.as_deref(), Some("provider_rejected"));
    assert_eq!(record["provider_code"], "InvalidPurgeUrl");
    assert_eq!(record["event"]["urls"], json!([bad]));
    assert_eq!(record["event"]["id"], "cms-9");
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_routes_each_host_to_its_api() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut env = TestEnv::new("three-kinds").await;
    let spec = |name: &str, extra: String, host: &str| ProviderSpec {
        name: name.into(),
        endpoint: emu.endpoint(),
        extra,
        domains: vec![(host.into(), false)],
    };
    let config = env.config(
        &[
            spec("tc3", kind_lines("tencent-v3"), "v3.example.com"),
            spec("tc2", kind_lines("tencent-v2"), "v2.example.com"),
            spec("ws", fast_wangsu(), "ws.example.com"),
        ],
        "max_linger_ms = 200",
    );
    env.publish_json(&json!({
        "urls": ["https://v3.example.com/a", "https://v2.example.com/a", "https://ws.example.com/a"],
        "dirs": ["https://v3.example.com/d/", "https://v2.example.com/d/", "https://ws.example.com/d/*",
                 "https://v3.example.com/img/**"],
        "regex": ["https://v2.example.com/.*\\.png"],
        "id": "mixed"
    }))
    .await;
    let w = Running::start(config).await;
    wait_until("the message acked", TIMEOUT, || async { w.acked() == 1 }).await;

    let mut by_action: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in emu.accepted() {
        by_action.entry(c.action).or_default().extend(c.items);
    }
    let set = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    let want: BTreeMap<String, BTreeSet<String>> = [
        ("PurgeUrlsCache", set(&["https://v3.example.com/a"])),
        ("PurgePathCache", set(&["https://v3.example.com/d/"])),
        ("RefreshCdnUrl", set(&["https://v2.example.com/a"])),
        ("RefreshCdnDir", set(&["https://v2.example.com/d/"])),
        (
            "CreatePurge",
            set(&["https://ws.example.com/a", "https://ws.example.com/d/*"]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(by_action, want);
    w.stop().await;
    let mut dead: Vec<(String, serde_json::Value)> = env
        .drain(&env.dlq)
        .await
        .into_iter()
        .map(|(body, code)| (code.unwrap_or_default(), body))
        .collect();
    dead.sort_by(|a, b| a.0.cmp(&b.0));
    let codes: Vec<&str> = dead.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, ["regex_unsupported", "wildcard_unsupported"]);
    let wildcard = &dead[1].1;
    assert_eq!(
        wildcard["event"]["dirs"],
        json!(["https://v3.example.com/img/**"])
    );
    let reason = wildcard["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("wangsu") && reason.contains("tencent-v3"),
        "the reason names the limitation: {reason}"
    );
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_retry_after_is_honoured() {
    // The customer's bucket: 3 calls of burst, then one per second. The worker is configured
    // faster than that (20/s), so only the provider's 429 can slow it down.
    let emu = emulator(EmulatorConfig {
        wangsu: purge_worker::emulator::WangsuLimits {
            api_rate_per_min: 60,
            api_burst: 3,
            ..Default::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut env = TestEnv::new("wangsu-429").await;
    let config = env.config(
        &[ProviderSpec {
            name: "ws".into(),
            endpoint: emu.endpoint(),
            extra: format!("{}urls_per_call = 1\nmax_in_flight = 1\n", fast_wangsu()),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 0",
    );
    let urls: Vec<String> = (0..8)
        .map(|i| format!("https://www.example.com/{i}.css"))
        .collect();
    env.publish_json(&json!({ "urls": urls })).await;
    let w = Running::start(config).await;
    wait_until("the message acked", TIMEOUT, || async { w.acked() == 1 }).await;
    w.stop().await;

    let purged: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(purged, urls.iter().cloned().collect::<BTreeSet<_>>());
    let refused = emu.rejected();
    assert!(
        refused.len() >= 2 && refused.iter().all(|r| r.code == "TooManyRequests"),
        "the bucket must have run dry: {refused:?}"
    );
    // At 60/min the emulator answers `x-rate-limit-retry-after-seconds: 1`: after each 429 the
    // next call (accepted or refused) may only come once that second has passed.
    let mut times: Vec<(f64, bool)> = emu
        .accepted()
        .iter()
        .map(|c| (c.at_ms, false))
        .chain(refused.iter().map(|r| (r.at_ms, true)))
        .collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let gaps: Vec<f64> = times
        .windows(2)
        .filter(|w| w[0].1)
        .map(|w| w[1].0 - w[0].0)
        .collect();
    println!(
        "wangsu 429: {} refused, gaps after each 429 (ms): {gaps:?}",
        refused.len()
    );
    assert!(
        gaps.iter().all(|&g| g >= 990.0),
        "a call came before the retry-after expired: {gaps:?}"
    );
    env.cleanup().await;
    emu.shutdown().await;
}

/// A Wangsu task that ends under 100 % is purged again with its `fileHeaders`; when that fails
/// too, the keys are dead-lettered as `purge_failed_at_cdn` (and counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_purged_again_with_its_file_headers() {
    let emu = emulator(EmulatorConfig {
        tasks: purge_worker::emulator::TaskModel {
            delay: std::time::Duration::from_millis(200),
            fail_every: 1,
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("wangsu-repurge").await;
    let config = env.config(
        &[ProviderSpec {
            name: "ws".into(),
            endpoint: emu.endpoint(),
            extra: fast_wangsu(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 100\n[tracking]\npoll_interval_ms = 200\nlease_ms = 2000\n",
    );
    let w = Running::start(config).await;
    env.publish_json(&json!({"urls": ["https://www.example.com/h.js"], "headers": [{"name": "X-Device", "value": "mobile"}]}))
        .await;
    wait_until("purged twice, then dead-lettered", TIMEOUT, || {
        let env = &env;
        let emu = &emu;
        async move { emu.accepted().len() >= 2 && env.ready(&env.dlq).await >= 1 }
    })
    .await;
    let calls = emu.accepted();
    assert_eq!(calls.len(), 2, "one re-purge only");
    for c in &calls {
        assert_eq!(
            shape(c).2,
            vec![header("x-device", "mobile")],
            "the re-purge carries the task's fileHeaders"
        );
    }
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.as_deref(), Some("purge_failed_at_cdn"));
    assert_eq!(
        w.worker
            .metrics
            .dead_letters
            .with_label_values(&["purge_failed_at_cdn"])
            .get(),
        1
    );
    w.stop().await;
    env.cleanup().await;
    emu.shutdown().await;
}
