//! Directory escalation: one directory purge instead of hundreds of URL units.
//!
//! Setup: `www.example.com` with `dir_escalation = 100` (default Tencent limits: 10,000 URLs and
//! 100 directories a day, so only a directory holding more than 100 URLs saves quota). Load: a
//! backlog of 3,000 bulk URLs under 6 directories waiting on the bulk queue when the worker
//! starts. Pass: at most 6 directory units and at most 5 % of the URLs as URL units are spent;
//! every message is acked (the directory purges cover their URLs' deliveries);
//! `purge_escalations_total` counts the escalations; and an editorial URL under one of those
//! directories published after the directory purge was sent is purged again, as a URL.

use std::collections::HashSet;

use crate::support::*;
use purge_worker::emulator::EmulatorConfig;
use serde_json::json;

const URLS: usize = 3000;
const DIRS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_urls_under_a_directory_are_purged_as_that_directory() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut env = TestEnv::new("escalation").await;
    let toml = env.config_toml(&[example_provider(&emu)], "max_linger_ms = 300");
    // The last table of the TOML is the provider's domain rule.
    let config = config_from_toml(&format!("{toml}dir_escalation = 100\n"));
    let urls: Vec<String> = (0..URLS)
        .map(|i| format!("https://www.example.com/cat/{}/item-{i}.html", i % DIRS))
        .collect();
    for chunk in urls.chunks(100) {
        env.publish_bulk(&json!({ "urls": chunk, "source": "reindex" }))
            .await;
    }
    let w = Running::start(config).await;
    wait_until("every bulk message acked", TIMEOUT, || async {
        w.acked() == (URLS / 100) as u64
    })
    .await;
    let calls = emu.accepted();
    let dirs: Vec<&String> = calls
        .iter()
        .filter(|c| c.action == "PurgePathCache")
        .flat_map(|c| &c.items)
        .collect();
    let set: HashSet<&str> = urls.iter().map(String::as_str).collect();
    let url_units = calls
        .iter()
        .filter(|c| c.action == "PurgeUrlsCache")
        .flat_map(|c| &c.items)
        .filter(|i| set.contains(i.as_str()))
        .count();
    assert!(
        !dirs.is_empty() && dirs.len() <= DIRS,
        "directory units: {dirs:?}"
    );
    assert!(
        url_units * 20 <= URLS,
        "{url_units} URL units for {URLS} URLs (at most 5 %)"
    );
    for d in &dirs {
        assert!(
            d.starts_with("https://www.example.com/cat/") && d.ends_with('/') && d.len() > 28,
            "a directory below the host root and /cat/: {d}"
        );
    }
    let m = w.metrics().await;
    assert_eq!(
        metric(&m, "purge_escalations_total{provider=\"cdn\"}"),
        dirs.len() as f64
    );

    // The directory purge was sent; a later change under it is purged again.
    let late = "https://www.example.com/cat/0/item-0.html";
    env.publish_json(&json!({ "urls": [late], "source": "cms" }))
        .await;
    wait_until("the late URL purged as a URL", TIMEOUT, || async {
        emu.accepted()
            .iter()
            .skip(calls.len())
            .any(|c| c.action == "PurgeUrlsCache" && c.items.iter().any(|i| i == late))
    })
    .await;
    eprintln!(
        "escalation: {} directory units + {url_units} URL units for {URLS} distinct keys = {:.4} units/key",
        dirs.len(),
        (dirs.len() + url_units) as f64 / URLS as f64
    );
    w.stop().await;
    env.cleanup().await;
}
