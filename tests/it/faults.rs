//! Provider faults are retried with bounded, backed-off attempts and lose nothing.
//!
//! Fault: the emulator fails the first 5 purge calls (InternalError) and rate-limits every 3rd
//! (RequestLimitExceeded). Pass: every key is purged, nothing is dead-lettered, every message is
//! acked, and the number of refused calls stays within a fixed bound (no retry storm).

use std::collections::BTreeSet;

use crate::support::*;
use purge_worker::emulator::{EmulatorConfig, Faults};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_and_rate_limits_are_retried_until_everything_is_purged() {
    let emu = emulator(EmulatorConfig {
        faults: Faults {
            fail_first: 5,
            rate_limit_every: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("faults").await;
    let config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: "urls_per_call = 10\nretry_base_ms = 20\nretry_max_ms = 200".into(),
            domains: vec![("www.example.com".into(), false)],
        }],
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
    assert_eq!(
        got,
        urls.iter().cloned().collect::<BTreeSet<_>>(),
        "every key purged"
    );
    let accepted = emu.accepted().len();
    let refused = emu.rejected();
    assert!(refused.iter().any(|r| r.code == "InternalError"));
    assert!(
        refused
            .iter()
            .any(|r| r.code.starts_with("RequestLimitExceeded"))
    );
    // 6 batches of 10 need 6 accepted calls; 5 failures plus roughly every 3rd call refused.
    assert!(accepted <= 8, "few extra accepted calls: {accepted}");
    assert!(
        refused.len() <= 5 + (5 + accepted + 3) / 2,
        "bounded retries: {} refused",
        refused.len()
    );
    let m = w.metrics().await;
    assert!(
        m.contains("purge_retries_total{provider=\"cdn\",reason=\"transient\"} 5"),
        "{m}"
    );
    w.stop().await;
    assert_eq!(env.ready(&env.dlq).await, 0, "nothing dead-lettered");
    assert_eq!(env.ready(&env.queue).await, 0);
    env.cleanup().await;
    emu.shutdown().await;
}
