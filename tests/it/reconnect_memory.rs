//! Memory stays bounded by prefetch across broker reconnects while a provider is stopped.
//!
//! Setup: prefetch 20, 100 one-URL events, and a provider whose credentials are refused, so every
//! item stays pending (calls stopped, one probe a minute). The worker reaches RabbitMQ through a
//! relay. Fault: the relay cuts the connection 10 times; each time the broker redelivers the same
//! 20 unacked messages on the new channel. Without channel sessions, every dead delivery would stay
//! in the ledger and in the items' waiter lists forever. Pass: after every reconnect the worker
//! holds exactly `prefetch` deliveries (`purge_unacked_deliveries`) and at most that many pending
//! items, and nothing is acked or dead-lettered.

use std::net::SocketAddr;

use crate::support::relay::Relay;
use crate::support::*;
use purge_worker::config::Secret;
use purge_worker::emulator::{EMULATOR_SECRET_ID, EmulatorConfig};
use serde_json::json;

const PREFETCH: u16 = 20;
const CUTS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_never_grow_what_a_stopped_provider_holds() {
    let emu = emulator(EmulatorConfig::default()).await;
    let broker: SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let relay = Relay::start(broker).await.expect("relay binds");
    let mut env = TestEnv::new("reconnect-mem").await;
    let mut config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: format!(
                "kind = \"tencent-v3\"\nsecret_id = \"{EMULATOR_SECRET_ID}\"\nsecret_key = \"not-the-key\"\n"
            ),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 20",
    );
    config.amqp.prefetch = PREFETCH;
    // Ten reconnects in seconds rather than minutes.
    config.amqp.reconnect = purge_worker::backoff::Backoff::new(
        purge_worker::amqp::RECONNECT_FIRST_PAUSE,
        std::time::Duration::from_millis(1000),
    )
    .expect("a valid backoff");
    config.amqp.url = Secret::new(format!(
        "amqp://guest:guest@{}/%2f?heartbeat=10",
        relay.addr()
    ));
    for i in 0..100 {
        env.publish_json(&json!({ "urls": [format!("https://www.example.com/m/{i}")] }))
            .await;
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = purge_worker::worker::Worker::start(config, shutdown.clone())
        .await
        .expect("worker starts");
    let url = format!("http://{}/metrics", worker.http_addr);
    let scrape = || async {
        reqwest::get(&url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body")
    };
    let unacked = "purge_unacked_deliveries";
    let accepted = "purge_events_total{outcome=\"accepted\"}";
    wait_until(
        "the provider stopped with a full prefetch",
        TIMEOUT,
        || async {
            let m = scrape().await;
            metric(&m, "purge_provider_stopped{provider=\"cdn\"}") == 1.0
                && metric(&m, unacked) == f64::from(PREFETCH)
        },
    )
    .await;
    for cut in 1..=CUTS {
        let before = metric(&scrape().await, accepted);
        let forwarded = relay.forwarded();
        assert!(relay.cut() >= 1, "cut {cut}: an open connection to cut");
        wait_until(
            "reconnected and the prefetch redelivered",
            TIMEOUT,
            || async {
                relay.forwarded() > forwarded
                    && metric(&scrape().await, accepted) >= before + f64::from(PREFETCH)
            },
        )
        .await;
        let m = scrape().await;
        let held = metric(&m, unacked);
        let pending = metric(&m, "purge_pending_items{kind=\"url\",provider=\"cdn\"}");
        eprintln!("cut {cut}: {held} deliveries held, {pending} items pending");
        assert_eq!(held, f64::from(PREFETCH), "cut {cut}: deliveries held");
        assert!(
            pending <= f64::from(PREFETCH),
            "cut {cut}: {pending} items pending"
        );
    }
    assert!(emu.accepted().is_empty());
    assert_eq!(env.ready(&env.dlq).await, 0, "nothing dead-lettered");
    shutdown.cancel();
    let _ = tokio::time::timeout(TIMEOUT, worker.wait()).await;
    env.cleanup().await;
}
