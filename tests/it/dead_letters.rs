//! Dead letters always get through: a record is capped in size, and a publish channel the broker
//! closes is reopened without a reconnect.
//!
//! Property 1 (size cap): with `amqp.dead_letter_max_bytes` set small, an event far over it is
//! dead-lettered as a clipped record (a prefix, the original's size and sha256, `replayable`
//! false) that fits the cap, and a normal bad event published after it is dead-lettered whole.
//! Property 2 (closed channel): the broker closes the publisher's channel (406 for a property it
//! refuses); the publisher reopens it by itself, so the next dead letter is delivered on the
//! same connection. Pass: both records arrive in the dead-letter queue, repeatedly.

use std::sync::Arc;

use crate::support::*;
use lapin::BasicProperties;
use purge_worker::amqp::Publisher;
use purge_worker::dead_letter::DeadLetter;
use purge_worker::event::EventError;
use purge_worker::metrics::Metrics;
use serde_json::json;
use sha2::{Digest, Sha256};

const CAP: usize = 8192;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_event_is_dead_lettered_clipped_and_the_next_one_whole() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("dlcap").await;
    let mut config = env.config(&[example_provider(&emu)], "max_linger_ms = 50");
    config.amqp.dead_letter_max_bytes = CAP;
    // Not JSON, so it is dead-lettered as `invalid_json` with the whole body as its event; the
    // quotes double under JSON escaping.
    let big: String = std::iter::once('{')
        .chain((0..200_000).map(|i| if i % 7 == 0 { '"' } else { 'x' }))
        .collect();
    env.publish_raw(big.as_bytes(), Some("application/json"))
        .await;
    env.publish_json(&json!({"urls": ["ftp://www.example.com/after"], "id": "after-1"}))
        .await;

    let w = Running::start(config).await;
    wait_until("both messages acked", TIMEOUT, || async { w.acked() == 2 }).await;
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead.len(), 2, "{dead:?}");

    let (clipped, code) = &dead[0];
    assert_eq!(code.as_deref(), Some("invalid_json"));
    assert_eq!(clipped["replayable"], false);
    let c = &clipped["clipped"];
    assert_eq!(c["size_bytes"], big.len(), "{c}");
    assert_eq!(c["sha256"], hex::encode(Sha256::digest(big.as_bytes())));
    let prefix = clipped["event"]
        .as_str()
        .expect("the event is a string prefix");
    assert!(
        big.starts_with(prefix) && prefix.len() > 1000,
        "{}",
        prefix.len()
    );
    let size = serde_json::to_vec(clipped).expect("json").len();
    assert!(size <= CAP, "record of {size} bytes over the cap {CAP}");

    let (whole, code) = &dead[1];
    assert_eq!(code.as_deref(), Some("unsupported_scheme"));
    assert_eq!(whole["event"]["id"], "after-1");
    assert!(whole.get("clipped").is_none() && whole["replayable"] == true);
    assert!(whole["id"].as_str().is_some_and(|id| id.starts_with("dl-")));
    assert_eq!(whole["priority"], "interactive");
    w.stop().await;
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_channel_the_broker_closed_is_reopened() {
    let env = TestEnv::new("dlreopen").await;
    let conn = Arc::new(
        purge_worker::amqp::connect(AMQP_URL, "dead-letter-test")
            .await
            .expect("connect"),
    );
    purge_worker::amqp::ensure_queue(&conn, &env.dlq)
        .await
        .expect("declare the dead-letter queue");
    let publisher = Publisher::new(Metrics::new());
    publisher.attach(&conn).await.expect("attach");
    let record = DeadLetter::for_event(&EventError::InvalidJson("x".into()), b"{nope");
    let (body, props) = record.to_message();

    for round in 0..3 {
        // RabbitMQ refuses a non-numeric expiration with 406 PRECONDITION_FAILED, closing the
        // channel (not the connection).
        let refused = BasicProperties::default().with_expiration("soon".into());
        let started = std::time::Instant::now();
        let e = publisher.publish(&env.dlq, b"{}", refused).await;
        assert!(e.is_err(), "round {round}: the broker refuses the publish");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "fails fast"
        );
        tokio::time::timeout(TIMEOUT, publisher.publish(&env.dlq, &body, props.clone()))
            .await
            .expect("bounded")
            .unwrap_or_else(|e| panic!("round {round}: the next dead letter is delivered: {e}"));
    }
    assert!(conn.status().connected(), "no reconnect was needed");
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(
        dead.iter()
            .all(|(_, code)| code.as_deref() == Some("invalid_json"))
    );
    publisher.close().await;
    let _ = conn.close(200, "bye".into()).await;
    env.cleanup().await;
}
