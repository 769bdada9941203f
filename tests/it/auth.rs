//! An authentication failure stops calls to that provider and fails /readyz, without acking or
//! dropping anything; other providers keep flowing.
//!
//! Fault: provider `bad` signs with a SecretKey the emulator does not know
//! (AuthFailure.SignatureFailure). Pass: after its first refused call no further call to `bad`'s
//! endpoint is made during a bounded observation window (stopped, one probe a minute); /readyz
//! answers 503 naming the stopped provider; `purge_auth_failures_total` and
//! `purge_provider_stopped` show it; provider `ok` still purges; after shutdown the `bad` event is
//! back in the queue (never acked), and nothing was dead-lettered.

use std::time::Duration;

use crate::support::*;
use purge_worker::config::Secret;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_stops_the_provider_and_fails_readiness_without_losing_anything() {
    let emu_bad = emulator(Default::default()).await;
    let emu_ok = emulator(Default::default()).await;
    let mut env = TestEnv::new("auth").await;
    let mut config = env.config(
        &[
            ProviderSpec {
                name: "bad".into(),
                endpoint: emu_bad.endpoint(),
                extra: String::new(),
                domains: vec![("bad.example.com".into(), false)],
            },
            ProviderSpec {
                name: "ok".into(),
                endpoint: emu_ok.endpoint(),
                extra: String::new(),
                domains: vec![("ok.example.com".into(), false)],
            },
        ],
        "max_linger_ms = 50\ndrain_timeout_ms = 500",
    );
    config.providers[0].secret_key = Secret::new("not-the-emulator-key");
    let w = Running::start(config).await;
    env.publish_json(
        &json!({"urls": ["https://bad.example.com/a", "https://bad.example.com/b"], "id": "b1"}),
    )
    .await;
    wait_until("the refused call", TIMEOUT, || async {
        !emu_bad.rejected().is_empty()
    })
    .await;
    let readyz = format!("http://{}/readyz", w.worker.http_addr);
    wait_until("/readyz fails", TIMEOUT, || async {
        reqwest::get(&readyz)
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
            == 503
    })
    .await;
    let body = reqwest::get(&readyz).await.unwrap().text().await.unwrap();
    assert!(body.contains("authentication"), "{body}");
    assert_eq!(emu_bad.rejected()[0].code, "AuthFailure.SignatureFailure");

    // Other providers keep flowing while `bad` is stopped.
    env.publish_json(&json!({"urls": ["https://ok.example.com/x"]}))
        .await;
    wait_until("provider ok purges", TIMEOUT, || async {
        purged(&emu_ok).len() == 1
    })
    .await;
    wait_until("the ok event is acked", TIMEOUT, || async {
        w.acked() == 1
    })
    .await;
    // Stopped: no retry storm against the refusing provider. (An observation window: the property
    // is that nothing happens, so there is no condition to await.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        emu_bad.rejected().len(),
        1,
        "calls stopped after the auth failure"
    );
    assert!(emu_bad.accepted().is_empty());

    let m = w.metrics().await;
    assert!(
        m.contains("purge_auth_failures_total{provider=\"bad\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("purge_provider_stopped{provider=\"bad\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("purge_pending_items{kind=\"url\",provider=\"bad\"} 2"),
        "{m}"
    );
    w.stop().await;
    assert_eq!(
        env.ready(&env.queue).await,
        1,
        "the refused event was not acked: it is redelivered"
    );
    assert_eq!(env.ready(&env.dlq).await, 0, "and not dead-lettered");
    env.cleanup().await;
    emu_bad.shutdown().await;
    emu_ok.shutdown().await;
}
