//! Queue depth and readiness in `/metrics`, against the real local RabbitMQ and Redis.
//!
//! - `dead_letter_depth_follows_the_queue_across_a_broker_cut` — property: the worker reports the
//!   ready messages of its purge and dead-letter queues as `purge_queue_messages{queue}`, and its
//!   `/readyz` checks as `purge_ready{dependency}`, through the consumer's own connection, and
//!   keeps doing so after that connection is rebuilt. Fault: the worker reaches RabbitMQ through
//!   a [`Relay`]; three undecodable events are dead-lettered, then the relay refuses connections
//!   and cuts the open one while a fourth is published. Pass: the gauges read dead_letter = 3 and
//!   purge = 0 with every `purge_ready` at 1; during the outage the depth series are absent (not
//!   stale) and `purge_ready{dependency="amqp"}` is 0; after the port reopens, dead_letter = 4
//!   (the broker's own count) and amqp is 1 again — all within bounded waits.
//! - `poller_reopens_its_channel_after_a_missing_queue` — property: a passive declare of a missing
//!   queue closes the poller's channel (AMQP 404), and the poller recovers by opening a new one.
//!   Fault: the dead-letter queue does not exist when polling starts. Pass: the purge count keeps
//!   following the queue (2, then 3 — a read that needs a fresh channel), the dead-letter series
//!   stays absent while the queue is missing and appears (= 1) once it is declared and fed, the
//!   connection survives, and detaching the connection removes both series.

use std::sync::Arc;
use std::time::Duration;

use crate::support::relay::Relay;
use crate::support::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use purge_worker::config::Secret;
use purge_worker::metrics::Metrics;
use purge_worker::queue_depth::{self, ConnectionSlot};
use tokio_util::sync::CancellationToken;

/// The value of one series in a Prometheus text exposition (`None` when absent).
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}

const DEAD: &str = "purge_queue_messages{queue=\"dead_letter\"}";
const PURGE: &str = "purge_queue_messages{queue=\"purge\"}";
const AMQP_READY: &str = "purge_ready{dependency=\"amqp\"}";

/// Waits until `/metrics` has `name` at `value` (`None`: the series is absent).
async fn wait_series(w: &Running, name: &str, value: Option<f64>, what: &str) {
    wait_until(what, TIMEOUT, || async {
        series(&w.metrics().await, name) == value
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_depth_follows_the_queue_across_a_broker_cut() {
    let emu = emulator(Default::default()).await;
    let relay = Relay::start("127.0.0.1:5672".parse().expect("addr"))
        .await
        .expect("relay binds");
    let mut env = TestEnv::new("qdepth").await;
    let mut config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: String::new(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 100",
    );
    config.amqp.url = Secret::new(format!(
        "amqp://guest:guest@{}/%2f?heartbeat=10",
        relay.addr()
    ));
    let w = Running::start(config).await;
    assert_eq!(
        relay.open_connections(),
        1,
        "the poller shares the worker's connection"
    );
    for _ in 0..3 {
        env.publish_raw(b"{\"urls\": [", Some("application/json"))
            .await;
    }
    wait_series(&w, DEAD, Some(3.0), "dead_letter depth = 3").await;
    let m = w.metrics().await;
    assert_eq!(series(&m, PURGE), Some(0.0), "the purge queue is drained");
    for dependency in ["amqp", "redis", "providers"] {
        let name = format!("purge_ready{{dependency=\"{dependency}\"}}");
        assert_eq!(series(&m, &name), Some(1.0), "{name} while /readyz is 200");
    }
    assert_eq!(env.ready(&env.dlq).await, 3, "the broker agrees");

    relay.set_refuse(true);
    assert!(relay.cut() >= 1, "an open connection to cut");
    wait_series(
        &w,
        AMQP_READY,
        Some(0.0),
        "amqp not ready during the outage",
    )
    .await;
    wait_series(&w, DEAD, None, "no stale depth during the outage").await;
    assert_eq!(series(&w.metrics().await, PURGE), None);
    env.publish_raw(b"not json either", Some("application/json"))
        .await;

    relay.set_refuse(false);
    wait_series(&w, AMQP_READY, Some(1.0), "amqp ready after the outage").await;
    wait_series(
        &w,
        DEAD,
        Some(4.0),
        "dead_letter depth = 4 after the reconnect",
    )
    .await;
    assert_eq!(env.ready(&env.dlq).await, 4, "the broker agrees");
    // The two depths are sampled one after the other every few seconds: the purge queue's
    // sample may predate the consumer taking the event, so wait for the next one.
    wait_series(&w, PURGE, Some(0.0), "purge depth = 0 after the reconnect").await;

    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_reopens_its_channel_after_a_missing_queue() {
    let mut env = TestEnv::new("qdepth-missing").await;
    let config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: "http://127.0.0.1:9/".parse().expect("url"),
            extra: String::new(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "",
    );
    // Two messages in the purge queue (declared by the publish); no dead-letter queue yet.
    for _ in 0..2 {
        env.publish_raw(b"x", Some("text/plain")).await;
    }
    let conn = Arc::new(
        Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ on 127.0.0.1:5672 is reachable"),
    );
    let metrics = Metrics::new();
    let slot = ConnectionSlot::default();
    let stop = CancellationToken::new();
    let poller = queue_depth::spawn_every(
        Duration::from_millis(100),
        &config.amqp,
        &slot,
        metrics.clone(),
        stop.clone(),
    );
    slot.attach(&conn);
    let gauge = |role: &str| {
        series(
            &metrics.render(),
            &format!("purge_queue_messages{{queue=\"{role}\"}}"),
        )
    };

    wait_until("purge depth = 2", TIMEOUT, || async {
        gauge("purge") == Some(2.0)
    })
    .await;
    assert_eq!(gauge("dead_letter"), None, "a missing queue has no depth");
    // Each round reads the purge queue after the dead-letter 404 closed the channel.
    env.publish_raw(b"x", Some("text/plain")).await;
    wait_until("purge depth = 3 on a new channel", TIMEOUT, || async {
        gauge("purge") == Some(3.0)
    })
    .await;
    assert_eq!(gauge("dead_letter"), None);
    assert!(
        conn.status().connected(),
        "a 404 closes a channel, not the connection"
    );

    // Declared, with one message in it.
    let ch = env.conn.create_channel().await.expect("channel");
    ch.queue_declare(
        env.dlq.as_str().into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .expect("declare the dead-letter queue");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let confirm = ch
        .basic_publish(
            "".into(),
            env.dlq.as_str().into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    let _ = ch.close(200, "ok".into()).await;
    wait_until("dead_letter depth = 1 once declared", TIMEOUT, || async {
        gauge("dead_letter") == Some(1.0)
    })
    .await;

    slot.detach();
    wait_until("no depth without a connection", TIMEOUT, || async {
        gauge("purge").is_none() && gauge("dead_letter").is_none()
    })
    .await;
    slot.attach(&conn);
    wait_until("depth again on the connection", TIMEOUT, || async {
        gauge("purge") == Some(3.0) && gauge("dead_letter") == Some(1.0)
    })
    .await;

    stop.cancel();
    tokio::time::timeout(TIMEOUT, poller)
        .await
        .expect("the poller stops on cancel")
        .expect("the poller does not panic");
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}
