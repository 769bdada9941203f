//! The ledger follows the provider (issue 11 §4).
//!
//! Setup: the emulator's account has already spent 9,000 of its 10,000 URLs today "elsewhere"
//! (another tool of the same account: `Emulator::spend_elsewhere`), which the worker's Redis
//! ledger knows nothing about. Pass: after the start-up sync (`purge_quota_drift` shows 9,000)
//! the worker purges at most 1,000 of 1,500 published URLs, sends nothing the provider refuses
//! for the day limit (the ledger knew), and parks the other 500 durably. The same for Wangsu's
//! rolling window through `purgeTokens`. The raise script never lowers a counter.

use std::collections::BTreeSet;

use crate::support::*;
use purge_worker::emulator::{EMULATOR_SECRET_ID, EmulatorConfig};
use purge_worker::provider::Kind;
use purge_worker::quota::{QuotaPolicy, QuotaStore, QuotaWindow, unix_now};
use serde_json::json;

/// Publishes `n` URLs of `host` in events of 100 and waits until every event is acked; returns
/// the URLs.
async fn publish_and_settle(env: &TestEnv, w: &Running, host: &str, n: usize) -> Vec<String> {
    let urls: Vec<String> = (0..n).map(|i| format!("https://{host}/s/{i}")).collect();
    for chunk in urls.chunks(100) {
        env.publish_json(&json!({ "urls": chunk, "source": "sync-test" }))
            .await;
    }
    let events = n.div_ceil(100) as u64;
    wait_until("every event acked", TIMEOUT, || async {
        w.acked() == events
    })
    .await;
    urls
}

/// URLs in the messages of a parking queue.
async fn parked_urls(env: &TestEnv, queue: &str) -> BTreeSet<String> {
    env.drain(queue)
        .await
        .into_iter()
        .flat_map(|(ev, _)| {
            ev["urls"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_elsewhere_is_followed_and_the_worker_purges_only_what_is_left() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.spend_elsewhere(EMULATOR_SECRET_ID, Kind::Url, 9_000);
    let mut env = TestEnv::new("quota-sync").await;
    let config = env.config(&[example_provider(&emu)], "max_linger_ms = 100");
    let w = Running::start(config).await;
    let drift = "purge_quota_drift{kind=\"url\",provider=\"cdn\"}";
    wait_until("the start-up sync sees the spend", TIMEOUT, || async {
        metric(&w.metrics().await, drift) == 9_000.0
    })
    .await;

    let urls = publish_and_settle(&env, &w, "www.example.com", 1_500).await;
    let done = purged(&emu);
    assert!(done.len() <= 1_000, "{} purged past the quota", done.len());
    assert_eq!(done.len(), 1_000, "what was left of the day was used");
    assert!(
        emu.rejected().iter().all(|r| !r.code.contains("DayLimit")),
        "the ledger knew: nothing was sent for the provider to refuse"
    );
    let parked = parked_urls(&env, &env.parking("cdn")).await;
    assert_eq!(parked.len(), 500, "the rest waits durably");
    let all: BTreeSet<String> = done.into_iter().chain(parked).collect();
    assert_eq!(all, urls.into_iter().collect::<BTreeSet<_>>());
    let m = w.metrics().await;
    assert_eq!(
        metric(&m, "purge_quota_used{kind=\"url\",provider=\"cdn\"}"),
        10_000.0
    );
    assert_eq!(
        metric(&m, "purge_quota_drift{kind=\"dir\",provider=\"cdn\"}"),
        0.0
    );
    assert!(
        metric(
            &m,
            "purge_api_requests_total{action=\"DescribePurgeQuota\",provider=\"cdn\",result=\"ok\"}"
        ) >= 1.0,
        "the quota query is counted like every call: {m}"
    );
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_total_is_adopted_when_the_limit_is_left_at_its_default() {
    // The account was granted 1,200 URLs a day (the provider's Total), the config says nothing.
    let emu = emulator(EmulatorConfig {
        urls_per_day: 1_200,
        ..Default::default()
    })
    .await;
    emu.spend_elsewhere(EMULATOR_SECRET_ID, Kind::Url, 1_000);
    let mut env = TestEnv::new("quota-sync-total").await;
    let config = env.config(&[example_provider(&emu)], "max_linger_ms = 100");
    let w = Running::start(config).await;
    wait_until(
        "the limit follows the provider's Total",
        TIMEOUT,
        || async {
            metric(
                &w.metrics().await,
                "purge_quota_limit{kind=\"url\",provider=\"cdn\"}",
            ) == 1_200.0
        },
    )
    .await;
    publish_and_settle(&env, &w, "www.example.com", 300).await;
    assert_eq!(purged(&emu).len(), 200, "1,200 − 1,000 spent elsewhere");
    assert!(emu.rejected().iter().all(|r| !r.code.contains("DayLimit")));
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wangsu_purge_tokens_are_followed_over_the_rolling_window() {
    let emu = emulator(EmulatorConfig::default()).await;
    emu.wangsu_spend_elsewhere("production", Kind::Url, 4_600);
    let mut env = TestEnv::new("quota-sync-wangsu").await;
    let spec = ProviderSpec {
        name: "ws".into(),
        endpoint: emu.endpoint(),
        extra: format!(
            "{}requests_per_second = 20\nrequests_per_minute = 600\nrate_limits = []\n",
            kind_lines("wangsu")
        ),
        domains: vec![("ws.example.com".into(), false)],
    };
    let config = env.config(&[spec], "max_linger_ms = 100");
    let w = Running::start(config).await;
    wait_until("the start-up sync sees the spend", TIMEOUT, || async {
        metric(
            &w.metrics().await,
            "purge_quota_drift{kind=\"url\",provider=\"ws\"}",
        ) == 4_600.0
    })
    .await;
    publish_and_settle(&env, &w, "ws.example.com", 600).await;
    let done = purged(&emu);
    assert_eq!(
        done.len(),
        400,
        "5,000 − 4,600 spent elsewhere in the last 24 hours"
    );
    assert!(
        emu.rejected().iter().all(|r| !r.code.contains("Quota")),
        "nothing was sent for the provider to refuse"
    );
    assert_eq!(parked_urls(&env, &env.parking("ws")).await.len(), 200);
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_raise_script_never_lowers_a_counter() {
    let prefix = unique("raise");
    let store = QuotaStore::connect(REDIS_URL, &prefix).unwrap();
    let now = unix_now();
    for window in [QuotaWindow::Day, QuotaWindow::Rolling24h] {
        let policy = QuotaPolicy {
            window,
            utc_offset_secs: 8 * 3600,
        };
        let r = store.raise("p", Kind::Url, 700, now, policy).await.unwrap();
        assert_eq!((r.before, r.after), (0, 700), "{window:?}");
        let r = store.raise("p", Kind::Url, 300, now, policy).await.unwrap();
        assert_eq!(
            (r.before, r.after),
            (700, 700),
            "never goes down ({window:?})"
        );
        // Reservations add to a raised counter, and the raise counts them.
        let got = store
            .reserve("p", Kind::Url, 1_000, 500, now, policy)
            .await
            .unwrap();
        assert_eq!((got.granted, got.used), (300, 1_000), "{window:?}");
        let r = store.raise("p", Kind::Url, 900, now, policy).await.unwrap();
        assert_eq!((r.before, r.after), (1_000, 1_000), "{window:?}");
        let r = store
            .raise("p", Kind::Url, u64::MAX, now, policy)
            .await
            .unwrap();
        assert_eq!(
            r.after,
            1 << 53,
            "bounded where Lua numbers are exact ({window:?})"
        );
        // The dir counter is its own.
        assert_eq!(
            store.used("p", Kind::Dir, now, policy).await.unwrap().used,
            0
        );
        store.reset("p", now).await.unwrap();
    }
}

/// `purge-worker check` on `toml_text`: exit code and stdout + stderr.
fn check(toml_text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purge-worker.toml");
    std::fs::write(&path, toml_text).expect("write config");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run purge-worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

fn one_provider(kind: &str, lines: &str) -> String {
    format!(
        "[[providers]]\nname = \"p\"\n{}{lines}\n[[providers.domains]]\nhost = \"www.example.com\"\n",
        kind_lines(kind)
    )
}

#[test]
fn check_says_how_each_provider_follows_its_quota() {
    let (code, text) = check(&one_provider(
        "tencent-v3",
        "quota_area = \"overseas\"\nurls_per_day = 500",
    ));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "quota sync: DescribePurgeQuota (area overseas) at start and every 300000 ms"
        ),
        "{text}"
    );
    assert!(
        text.contains("urls_per_day as configured, dirs_per_day follows the provider's Total"),
        "{text}"
    );
    let (code, text) = check(&one_provider("tencent-v2", ""));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("quota sync: none: API 2.0 has no quota query"),
        "{text}"
    );
    let (code, text) = check(&one_provider("wangsu", "quota_sync_interval_ms = 60000"));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("quota sync: purgeTokens (target production) at start and every 60000 ms"),
        "{text}"
    );

    let (code, text) = check(&one_provider("tencent-v3", "quota_area = \"moon\""));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("quota_area") && text.contains("\"mainland\" or \"overseas\""),
        "{text}"
    );
    let (code, text) = check(&one_provider("wangsu", "quota_area = \"mainland\""));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("is a tencent-v3 setting"), "{text}");
    let (code, text) = check(&one_provider("tencent-v3", "quota_sync_interval_ms = 10"));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("quota_sync_interval_ms") && text.contains("between 1000 and 86400000"),
        "{text}"
    );
}
