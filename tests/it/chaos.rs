//! Infrastructure faults under load: the worker's RabbitMQ connection is cut mid-stream, and its
//! Redis is killed and restarted. Both tests run the real worker in-process against the local
//! broker and an in-process emulator; each fault is injected from outside the worker (a TCP relay,
//! a private `redis-server` child), never through its code.
//!
//! - `broker_connection_cut_mid_stream_loses_nothing` — property: at-least-once delivery across
//!   connection loss, honest readiness, and a drain that still works afterwards. Fault: the
//!   worker reaches RabbitMQ only through a [`Relay`] (the test publishes directly); 600 URLs are
//!   paced at 5 calls/s of 20, and three times mid-stream the relay closes its port (connects are
//!   refused, as while a broker is stopped) and cuts the worker's open connection; 20 more URLs
//!   are published during each outage. Pass: `/readyz` turns non-200 within 10 s of each cut;
//!   within 10 s of the port reopening the worker is connected again, `/readyz` is 200 and acks
//!   resume; every published key is purged (the emulator's items ⊇ the published set, nothing
//!   unexpected); nothing is dead-lettered; the worker stops within 25 s after the reconnects,
//!   leaving the purge queue empty. Duplicates, lost acks and `purge_amqp_reconnects_total` are
//!   reported, not bounded (at-least-once). Not covered here: acking before purging (the worker's
//!   memory survives a cut; `crash` kills the process for that).
//! - `redis_restart_fails_closed_and_recovers` — property: no provider call without a quota
//!   reservation, and automatic recovery. Fault: the worker's private Redis is SIGKILLed while a
//!   batch waits, then restarted empty on the same port. Pass: while Redis is down the worker
//!   tries to reserve (`purge_quota_errors_total` rises) yet the emulator receives no call, and
//!   `/readyz` is non-200; after the restart the batch is purged, `/readyz` is 200 again, the new
//!   Redis counter equals the URLs purged after the restart, every message is acked and the
//!   queue is empty after the stop.
//!
//! A failing run still stops its worker and removes its queues and Redis keys ([`guarded`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crate::support::private_redis::{PrivateRedis, get};
use crate::support::relay::Relay;
use crate::support::*;
use futures_lite::FutureExt;
use purge_worker::config::Secret;
use purge_worker::emulator::{EmulatorConfig, RecordedCall};
use purge_worker::quota::{day_label, day_of, unix_now};
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The bound on a fault becoming visible on `/readyz`.
const DETECT: Duration = Duration::from_secs(10);
/// The bound on recovering once the fault has ended.
const RECOVER: Duration = Duration::from_secs(15);
/// The bound on reconnecting and acking again once the broker is reachable: lapin's reconnect
/// backoff is capped at 10 s (`amqp::connect`).
const RESUME: Duration = Duration::from_secs(10);
/// The bound on a stop (the drain timeout is 10 s).
const STOP: Duration = Duration::from_secs(25);

/// The status of the worker's `/readyz` (`None` when it does not answer within 2 s).
async fn readyz(w: &Running) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let url = format!("http://{}/readyz", w.worker.http_addr);
    client
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Items of the accepted calls from index `from` on.
fn items_from(calls: &[RecordedCall], from: usize) -> Vec<String> {
    calls
        .iter()
        .skip(from)
        .flat_map(|c| c.items.iter().cloned())
        .collect()
}

#[track_caller]
fn assert_superset(purged: &[String], published: &[String], what: &str) {
    let got: BTreeSet<&String> = purged.iter().collect();
    let missing: Vec<&String> = published.iter().filter(|u| !got.contains(u)).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} published keys never purged, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Stops the worker within [`STOP`]: the drain must work after the faults.
async fn stop(w: Running) {
    tokio::time::timeout(STOP, w.stop())
        .await
        .expect("the worker stops within the bound after the faults");
}

/// Runs a test body, then — passed or failed — stops the worker tied to `guard` (see
/// [`stop_with`]) and removes the test's queues and keys, so a failing run leaves neither a queue
/// full of messages on the shared broker nor a worker redeclaring it; then re-raises the failure.
async fn guarded(env: TestEnv, body: impl AsyncFnOnce(&TestEnv, &CancellationToken)) {
    let guard = CancellationToken::new();
    let outcome = AssertUnwindSafe(body(&env, &guard)).catch_unwind().await;
    guard.cancel();
    env.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Shuts `w` down when `guard` is cancelled (a no-op after [`stop`]).
fn stop_with(guard: &CancellationToken, w: &Running) {
    let (guard, shutdown) = (guard.clone(), w.shutdown.clone());
    tokio::spawn(async move {
        guard.cancelled().await;
        shutdown.cancel();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connection_cut_mid_stream_loses_nothing() {
    const CUTS: usize = 3;
    let emu = emulator(EmulatorConfig::default()).await;
    let broker: SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let relay = Relay::start(broker).await.expect("relay binds");
    let mut env = TestEnv::new("chaos-amqp").await;
    let mut config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            // 30 calls at 5/s: the stream lasts several seconds, so every cut lands mid-stream.
            extra: "requests_per_second = 5\nurls_per_call = 20".into(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 100",
    );
    config.amqp.url = Secret::new(format!(
        "amqp://guest:guest@{}/%2f?heartbeat=10",
        relay.addr()
    ));
    let urls: Vec<String> = (0..600)
        .map(|i| format!("https://www.example.com/chaos/{i}"))
        .collect();

    guarded(env, async |env, guard| {
        // Published directly to the broker (not through the relay), before the worker starts.
        for chunk in urls.chunks(5) {
            env.publish_json(&json!({ "urls": chunk })).await;
        }
        let w = Running::start(config).await;
        stop_with(guard, &w);
        assert_eq!(
            relay.open_connections(),
            1,
            "the worker connects through the relay"
        );

        let mut expected = urls.clone();
        let mut progress_at = 1;
        for cut in 1..=CUTS {
            wait_until("purge calls before the cut", TIMEOUT, || async {
                emu.accepted().len() >= progress_at
            })
            .await;
            let done: BTreeSet<String> = purged(&emu).into_iter().collect();
            assert!(
                done.len() < urls.len(),
                "cut {cut} lands mid-stream ({} of {} purged)",
                done.len(),
                urls.len()
            );
            relay.set_refuse(true);
            let cut_at = Instant::now();
            assert!(relay.cut() >= 1, "cut {cut}: an open connection to cut");
            wait_until(
                "/readyz non-200 while the broker is unreachable",
                DETECT,
                || async { readyz(&w).await != Some(200) },
            )
            .await;
            let detected = cut_at.elapsed();
            // Published while the worker is cut off: only a worker that consumes again after the
            // reconnect can purge these.
            let during: Vec<String> = (0..20)
                .map(|i| format!("https://www.example.com/chaos/during-{cut}/{i}"))
                .collect();
            for chunk in during.chunks(5) {
                env.publish_json(&json!({ "urls": chunk })).await;
            }
            expected.extend(during);
            let (forwarded, acked) = (relay.forwarded(), w.acked());
            relay.set_refuse(false);
            let open_at = Instant::now();
            wait_until("reconnected and /readyz 200", RESUME, || async {
                relay.forwarded() > forwarded
                    && relay.open_connections() >= 1
                    && readyz(&w).await == Some(200)
            })
            .await;
            let reconnected = open_at.elapsed();
            wait_until("acks resume after the reconnect", RESUME, || async {
                w.acked() > acked
            })
            .await;
            eprintln!(
                "cut {cut}: not ready {detected:?} after the cut; reconnected {reconnected:?} \
                 and acking again {:?} after the broker became reachable",
                open_at.elapsed(),
            );
            // The next cut waits for two more accepted calls: consumption made progress.
            progress_at = emu.accepted().len() + 2;
        }

        let settling = Instant::now();
        wait_until("every published key purged", TIMEOUT, || async {
            let got: BTreeSet<String> = purged(&emu).into_iter().collect();
            expected.iter().all(|u| got.contains(u))
        })
        .await;
        wait_until(
            "every delivery settled, nothing waiting",
            TIMEOUT,
            || async {
                let m = w.metrics().await;
                metric(&m, "purge_unacked_deliveries") == 0.0
                    && metric(&m, "purge_pending_items{kind=\"url\",provider=\"cdn\"}") == 0.0
                    && env.ready(&env.queue).await == 0
            },
        )
        .await;
        eprintln!("settled {:?} after the last reconnect", settling.elapsed());
        assert_eq!(readyz(&w).await, Some(200), "ready after the faults");

        let all = purged(&emu);
        assert_superset(&all, &expected, "after the cuts");
        let unique: BTreeSet<&String> = all.iter().collect();
        let published: BTreeSet<&String> = expected.iter().collect();
        assert!(unique.is_subset(&published), "nothing unexpected purged");
        let m = w.metrics().await;
        eprintln!(
            "purged {} items for {} keys: {} duplicates; acks ok={} lost={} error={}; \
             purge_amqp_reconnects_total={}; relay connections forwarded={}",
            all.len(),
            unique.len(),
            all.len() - unique.len(),
            metric(&m, "purge_acks_total{result=\"ok\"}"),
            metric(&m, "purge_acks_total{result=\"lost\"}"),
            metric(&m, "purge_acks_total{result=\"error\"}"),
            metric(&m, "purge_amqp_reconnects_total"),
            relay.forwarded()
        );

        stop(w).await;
        assert_eq!(env.ready(&env.dlq).await, 0, "nothing dead-lettered");
        assert_eq!(
            env.ready(&env.queue).await,
            0,
            "the purge queue is empty after the stop (nothing left unacked)"
        );
    })
    .await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_fails_closed_and_recovers() {
    let mut redis = PrivateRedis::start().await;
    let emu = emulator(EmulatorConfig::default()).await;
    let mut env = TestEnv::new("chaos-redis").await;
    let mut config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: String::new(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 50",
    );
    config.redis.url = Secret::new(redis.url());
    let first: Vec<String> = (0..50)
        .map(|i| format!("https://www.example.com/before/{i}"))
        .collect();
    let second: Vec<String> = (0..50)
        .map(|i| format!("https://www.example.com/after/{i}"))
        .collect();

    guarded(env, async |env, guard| {
        let w = Running::start(config).await;
        stop_with(guard, &w);
        for chunk in first.chunks(10) {
            env.publish_json(&json!({ "urls": chunk })).await;
        }
        wait_until("the first batch is purged and acked", TIMEOUT, || async {
            w.acked() == 5
        })
        .await;
        assert_superset(&purged(&emu), &first, "first batch");

        redis.kill();
        let killed_at = Instant::now();
        let calls_before = emu.accepted().len();
        for chunk in second.chunks(10) {
            env.publish_json(&json!({ "urls": chunk })).await;
        }
        // Fail closed: the worker tries to reserve and fails twice (so it retried after its
        // hold), and never calls the provider meanwhile.
        wait_until(
            "two failed quota reservations while Redis is down",
            RECOVER,
            || async {
                assert_eq!(
                    emu.accepted().len(),
                    calls_before,
                    "a purge call was made without a quota reservation (fail open)"
                );
                metric(&w.metrics().await, "purge_quota_errors_total") >= 2.0
            },
        )
        .await;
        let tried = killed_at.elapsed();
        wait_until("/readyz non-200 while Redis is down", DETECT, || async {
            readyz(&w).await != Some(200)
        })
        .await;
        assert_eq!(
            emu.accepted().len(),
            calls_before,
            "no purge call while Redis is down"
        );
        assert_eq!(w.acked(), 5, "nothing of the second batch acked while held");
        let m = w.metrics().await;
        eprintln!(
            "Redis down: 2 failed reservations {tried:?} and not ready {:?} after the kill; \
             {} items held, no call",
            killed_at.elapsed(),
            metric(&m, "purge_pending_items{kind=\"url\",provider=\"cdn\"}")
        );

        redis.restart().await;
        let restart_day = day_of(unix_now(), 8 * 3600);
        let up_at = Instant::now();
        wait_until("the second batch is purged and acked", RECOVER, || async {
            w.acked() == 10
        })
        .await;
        let resumed = up_at.elapsed();
        wait_until("/readyz 200 after the restart", RECOVER, || async {
            readyz(&w).await == Some(200)
        })
        .await;
        let calls = emu.accepted();
        let after = items_from(&calls, calls_before);
        assert_superset(&after, &second, "second batch after the restart");

        // The new Redis started empty: its counters hold exactly what was reserved since, which
        // must equal what reached the provider (no reservation lost or counted twice). Summed
        // over the UTC+8 days since the restart, in case the test straddles midnight there.
        let days: BTreeSet<i64> = [restart_day, day_of(unix_now(), 8 * 3600)].into();
        let mut counted = 0;
        for day in days {
            let key = format!("{}:quota:cdn:url:{}", env.prefix, day_label(day));
            counted += match get(&redis.url(), &format!("GET {key}")).await {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b)
                    .parse::<usize>()
                    .unwrap_or_else(|e| panic!("quota counter {key}: {e}")),
                Some(redis::Value::Nil) => 0,
                other => panic!("quota counter {key} unreadable: {other:?}"),
            };
        }
        assert_eq!(
            counted,
            after.len(),
            "the restarted Redis counts exactly the URLs purged since"
        );
        eprintln!(
            "Redis back: purged {resumed:?} and ready {:?} after the restart; counter = {} = \
             URLs purged since; {} quota errors in total",
            up_at.elapsed(),
            after.len(),
            metric(&w.metrics().await, "purge_quota_errors_total")
        );

        stop(w).await;
        assert_eq!(env.ready(&env.dlq).await, 0, "nothing dead-lettered");
        assert_eq!(env.ready(&env.queue).await, 0, "queue empty after the stop");
    })
    .await;
    emu.shutdown().await;
}
