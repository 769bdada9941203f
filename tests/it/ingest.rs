//! The HTTP ingest (`POST /v1/purges`, CONTRACT §6).
//!
//! Property: a request is answered 202 only once the broker confirmed its event, and then the
//! event is purged (or its bad items dead-lettered) like one published over AMQP; everything else
//! gets its code: 400 listing the problems (undecodable, or no valid item), 401 (no or a wrong
//! token), 413 (over `max_event_bytes`), 503 (broker unreachable, through a relay that is cut and
//! refuses). Pass: every code as stated; a 202 carries the event's id (one is generated when
//! missing); a burst of concurrent requests: every URL answered 202 is purged, none lost; the
//! metrics count each code.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crate::support::relay::Relay;
use crate::support::*;
use purge_worker::config::{Config, Secret};
use purge_worker::ingest::Settings;
use serde_json::{Value, json};

const TOKEN: &str = "tok-cms-0123456789abcdef";

fn with_ingest(mut config: Config) -> Config {
    config.ingest = Settings::new(Some("127.0.0.1:0"), Some(&format!("cms:{TOKEN}"))).unwrap();
    config
}

async fn post(
    addr: SocketAddr,
    token: Option<&str>,
    ct: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/purges"))
        .header("content-type", ct)
        .body(body);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = r.send().await.expect("ingest answers");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post_json(addr: SocketAddr, v: &Value) -> (u16, Value) {
    post(
        addr,
        Some(TOKEN),
        "application/json",
        serde_json::to_vec(v).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_its_code_and_accepted_events_are_purged() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("ingest").await;
    let config = with_ingest(env.config(
        &[example_provider(&emu)],
        "max_linger_ms = 50\nmax_event_bytes = 2000",
    ));
    let w = Running::start(config).await;
    let addr = w.worker.ingest_addr.expect("ingest is on");

    // Valid, with and without an id.
    let (code, v) = post_json(
        addr,
        &json!({ "urls": ["https://www.example.com/a"], "id": "cms-1" }),
    )
    .await;
    assert_eq!((code, v["id"].as_str()), (202, Some("cms-1")), "{v}");
    let (code, v) = post(
        addr,
        Some(TOKEN),
        "text/plain",
        "https://www.example.com/b\n",
    )
    .await;
    assert_eq!(code, 202, "{v}");
    assert!(
        v["id"].as_str().is_some_and(|id| id.starts_with("http-")),
        "an id is generated: {v}"
    );
    // Some valid items: accepted, the bad one dead-lettered by the consumer as over AMQP.
    let (code, v) = post_json(
        addr,
        &json!({ "urls": ["https://www.example.com/c", "https://nowhere.example.org/x"] }),
    )
    .await;
    assert_eq!(
        (code, v["items"].as_u64(), v["refused"].as_u64()),
        (202, Some(1), Some(1)),
        "{v}"
    );

    // Invalid: undecodable, and no valid item.
    let (code, v) = post(addr, Some(TOKEN), "application/json", "{nope").await;
    assert_eq!(
        (code, v["error"].as_str()),
        (400, Some("invalid_json")),
        "{v}"
    );
    let (code, v) = post_json(
        addr,
        &json!({ "urls": ["ftp://www.example.com/x", "https://nowhere.example.org/y"] }),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(2),
        "every problem listed: {v}"
    );
    // Oversized, unauthenticated, wrong token.
    let big = json!({ "urls": [format!("https://www.example.com/{}", "x".repeat(2100))] });
    assert_eq!(post_json(addr, &big).await.0, 413);
    let body = serde_json::to_vec(&json!({ "urls": ["https://www.example.com/z"] })).unwrap();
    assert_eq!(
        post(addr, None, "application/json", body.clone()).await.0,
        401
    );
    assert_eq!(
        post(
            addr,
            Some("tok-cms-0123456789abcdeX"),
            "application/json",
            body
        )
        .await
        .0,
        401
    );

    wait_until("accepted events purged", TIMEOUT, || async {
        let p: BTreeSet<String> = purged(&emu).into_iter().collect();
        ["a", "b", "c"]
            .iter()
            .all(|k| p.contains(&format!("https://www.example.com/{k}")))
    })
    .await;
    wait_until("the bad item dead-lettered", TIMEOUT, || async {
        env.ready(&env.dlq).await == 1
    })
    .await;
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead[0].1.as_deref(), Some("unknown_host"));
    assert!(
        !purged(&emu).iter().any(|u| u.ends_with("/z")),
        "nothing unauthenticated was published"
    );
    let m = w.metrics().await;
    for (code, n) in [("202", 3.0), ("400", 2.0), ("401", 2.0), ("413", 1.0)] {
        assert_eq!(
            metric(
                &m,
                &format!("purge_ingest_requests_total{{code=\"{code}\"}}")
            ),
            n,
            "{code}"
        );
    }
    assert_eq!(
        metric(&m, "purge_ingest_request_duration_seconds_count"),
        8.0
    );
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_loses_nothing_and_a_broker_outage_is_503() {
    let emu = emulator(Default::default()).await;
    let relay = Relay::start("127.0.0.1:5672".parse().unwrap())
        .await
        .unwrap();
    let mut env = TestEnv::new("ingest-count").await;
    let mut config = with_ingest(env.config(&[example_provider(&emu)], "max_linger_ms = 50"));
    config.amqp.url = Secret::new(format!(
        "amqp://guest:guest@{}/%2f?heartbeat=10",
        relay.addr()
    ));
    let w = Running::start(config).await;
    let addr = w.worker.ingest_addr.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        tasks.spawn(async move {
            let u = format!("https://www.example.com/burst/{i}");
            (post_json(addr, &json!({ "urls": [u.clone()] })).await.0, u)
        });
    }
    let mut accepted = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let (code, u) = r.unwrap();
        assert_eq!(code, 202, "{u}");
        accepted.insert(u);
    }
    wait_until("every 202 purged", TIMEOUT, || async {
        let p: BTreeSet<String> = purged(&emu).into_iter().collect();
        accepted.is_subset(&p)
    })
    .await;

    // The broker becomes unreachable: 503, and nothing is acknowledged.
    relay.set_refuse(true);
    relay.cut();
    let url = format!("http://{}/readyz", w.worker.http_addr);
    wait_until("the worker sees the broker gone", TIMEOUT, || async {
        matches!(reqwest::get(&url).await, Ok(r) if r.status().as_u16() == 503)
    })
    .await;
    let (code, v) = post_json(
        addr,
        &json!({ "urls": ["https://www.example.com/during-outage"] }),
    )
    .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (503, Some("broker_unavailable")),
        "{v}"
    );
    relay.set_refuse(false);
    wait_until(
        "ingest accepts again after the broker is back",
        TIMEOUT,
        || async {
            post_json(addr, &json!({ "urls": ["https://www.example.com/after"] }))
                .await
                .0
                == 202
        },
    )
    .await;
    w.stop().await;
    env.cleanup().await;
}
