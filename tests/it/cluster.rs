//! Several replicas on one queue hold one account's limits together.
//!
//! Setup: three workers (in-process, each with its own dispatcher, pacer, Redis and AMQP
//! connections, like three pods; the kill test uses three `purge-worker` processes) share one
//! purge queue, one Redis and one `key_prefix`, against one emulator account. The emulator admits
//! far more than the configured limits, so the assertions are on its arrival times: no window
//! (closed, the strictest reading) holds more calls than the configured limit.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::private_redis::PrivateRedis;
use crate::support::*;
use purge_worker::config::{Config, Secret};
use purge_worker::emulator::{Emulator, EmulatorConfig, Faults};
use purge_worker::quota::{day_label, day_of, unix_now};
use serde_json::json;

const REPLICAS: usize = 3;

/// An emulator that would take 100 calls/s and 100 000 URLs a day: the worker's limits decide.
async fn roomy_emulator(faults: Faults) -> Emulator {
    emulator(EmulatorConfig {
        requests_per_second: 100,
        urls_per_day: 100_000,
        faults,
        ..Default::default()
    })
    .await
}

fn spec(emu: &Emulator, extra: &str) -> ProviderSpec {
    ProviderSpec {
        extra: extra.into(),
        ..example_provider(emu)
    }
}

fn urls(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("https://www.example.com/{tag}/{i}"))
        .collect()
}

async fn publish(env: &TestEnv, urls: &[String], per_event: usize) {
    for chunk in urls.chunks(per_event) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
}

async fn start_replicas(config: &Config) -> Vec<Running> {
    let mut replicas = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        replicas.push(Running::start(config.clone()).await);
    }
    replicas
}

/// Arrival times (ms) of the accepted calls, ascending.
fn arrivals(emu: &Emulator) -> Vec<f64> {
    let mut t: Vec<f64> = emu.accepted().iter().map(|c| c.at_ms).collect();
    t.sort_by(f64::total_cmp);
    t
}

async fn all_purged(emu: &Emulator, expected: &BTreeSet<String>, within: Duration) {
    wait_until("every key purged", within, || async {
        purged(emu).into_iter().collect::<BTreeSet<_>>() == *expected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_hold_one_accounts_rate_and_count_its_quota_once() {
    const RPS: usize = 10;
    let emu = roomy_emulator(Faults::default()).await;
    let mut env = TestEnv::new("cluster-rate").await;
    let config = env.config(
        &[spec(
            &emu,
            &format!("requests_per_second = {RPS}\nurls_per_call = 25"),
        )],
        "max_linger_ms = 100",
    );
    let replicas = start_replicas(&config).await;
    let keys = urls("c", 6000);
    let started = std::time::Instant::now();
    publish(&env, &keys, 50).await;
    all_purged(
        &emu,
        &keys.iter().cloned().collect(),
        Duration::from_secs(120),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let times = arrivals(&emu);
    let worst = max_in_window(&times, 1000.0);
    let span = (times[times.len() - 1] - times[0]) / 1000.0;
    println!(
        "{} calls from {REPLICAS} replicas in {secs:.1} s; largest 1 s window {worst}; \
         budget use {:.2} over the calls' span",
        times.len(),
        (times.len() - 1) as f64 / (span * RPS as f64)
    );
    assert!(worst <= RPS, "{worst} calls in one second");
    assert!(emu.rejected().is_empty(), "{:?}", emu.rejected());
    // The shared quota counter is exactly what the provider accepted: every replica counted once.
    let accepted: usize = emu.accepted().iter().map(|c| c.items.len()).sum();
    let key = format!(
        "{}:quota:cdn:url:{}",
        env.prefix,
        day_label(day_of(unix_now(), 8 * 3600))
    );
    let counter: u64 = redis_get(&key).await;
    assert_eq!(counter as usize, accepted);
    for r in replicas {
        r.stop().await;
    }
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_windows_hold_across_replicas() {
    let emu = roomy_emulator(Faults::default()).await;
    let mut env = TestEnv::new("cluster-windows").await;
    let config = env.config(
        &[spec(
            &emu,
            "requests_per_second = 4\nrate_limits = [\"6/3s\", \"10/8s\"]\nurls_per_call = 1",
        )],
        "max_linger_ms = 0",
    );
    let keys = urls("w", 16);
    let replicas = start_replicas(&config).await;
    publish(&env, &keys, 1).await;
    all_purged(&emu, &keys.iter().cloned().collect(), TIMEOUT).await;
    let times = arrivals(&emu);
    let worst: Vec<usize> = [1000.0, 3000.0, 8000.0]
        .iter()
        .map(|w| max_in_window(&times, *w))
        .collect();
    println!("largest 1 s / 3 s / 8 s windows: {worst:?} (limits 4 / 6 / 10)");
    assert!(
        worst[0] <= 4 && worst[1] <= 6 && worst[2] <= 10,
        "{worst:?}"
    );
    for r in replicas {
        r.stop().await;
    }
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answer_at_one_replica_holds_them_all() {
    let emu = roomy_emulator(Faults::default()).await;
    let mut env = TestEnv::new("cluster-429").await;
    let config = env.config(
        &[spec(&emu, "requests_per_second = 10\nurls_per_call = 1")],
        "max_linger_ms = 0",
    );
    let replicas = start_replicas(&config).await;
    // A warm-up call, so every replica is past its start before the 429 comes.
    publish(&env, &urls("warm", 3), 1).await;
    wait_until("the warm-up purged", TIMEOUT, || async {
        purged(&emu).len() == 3
    })
    .await;
    emu.set_faults(Faults {
        gateway_429: 1,
        gateway_retry_after: "2".into(),
        ..Default::default()
    });
    let keys = urls("r", 40);
    publish(&env, &keys, 1).await;
    let mut expected: BTreeSet<String> = keys.iter().cloned().collect();
    expected.extend(urls("warm", 3));
    all_purged(&emu, &expected, TIMEOUT).await;
    let at = emu.rejected()[0].at_ms;
    // Calls granted before the answer came back may still arrive; none may start later.
    let during: Vec<f64> = arrivals(&emu)
        .into_iter()
        .map(|t| t - at)
        .filter(|d| (200.0..1950.0).contains(d))
        .collect();
    let all: Vec<f64> = arrivals(&emu).into_iter().map(|t| t - at).collect();
    println!("calls 0.2-1.95 s after the 429: {during:?}; all, relative: {all:?}");
    assert!(
        during.is_empty(),
        "calls during the shared wait: {during:?}"
    );
    for r in replicas {
        r.stop().await;
    }
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_replica_calls_while_redis_is_down_and_all_resume() {
    let emu = roomy_emulator(Faults::default()).await;
    let mut redis = PrivateRedis::start().await;
    let mut env = TestEnv::new("cluster-redis").await;
    let mut config = env.config(
        &[spec(&emu, "requests_per_second = 5\nurls_per_call = 5")],
        "max_linger_ms = 50",
    );
    config.redis.url = Secret::new(redis.url());
    let replicas = start_replicas(&config).await;
    let keys = urls("d", 400);
    publish(&env, &keys, 5).await;
    wait_until("some calls made", TIMEOUT, || async {
        emu.accepted().len() >= 10
    })
    .await;
    redis.kill();
    let down_ms = now_ms();
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself
    let up_ms = now_ms();
    let during: Vec<f64> = arrivals(&emu)
        .into_iter()
        .filter(|t| *t > down_ms + 500.0 && *t < up_ms)
        .collect();
    assert!(during.is_empty(), "{} calls without Redis", during.len());
    redis.restart().await;
    all_purged(
        &emu,
        &keys.iter().cloned().collect(),
        Duration::from_secs(90),
    )
    .await;
    for r in replicas {
        r.stop().await;
    }
    env.cleanup().await;
    emu.shutdown().await;
}

/// A `purge-worker run` child, SIGKILLed on drop so a failing test leaves no replica behind.
struct Replica(Option<Child>);

impl Replica {
    fn start(config: &std::path::Path) -> Replica {
        let child = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn purge-worker");
        Replica(Some(child))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status of the drain.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().expect("running");
        let term = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(term.success());
        tokio::task::spawn_blocking(move || c.wait())
            .await
            .expect("join")
            .expect("wait")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_stream_loses_nothing_and_the_limit_holds() {
    const RPS: usize = 10;
    let emu = roomy_emulator(Faults::default()).await;
    let mut env = TestEnv::new("cluster-kill").await;
    let toml = env.config_toml(
        &[spec(
            &emu,
            &format!("requests_per_second = {RPS}\nurls_per_call = 25"),
        )],
        "max_linger_ms = 100\ndrain_timeout_ms = 5000",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purge-worker.toml");
    std::fs::write(&path, toml).expect("write config");
    let mut children: Vec<Replica> = (0..REPLICAS).map(|_| Replica::start(&path)).collect();
    // Published once all three consume, so the broker spreads the messages over them.
    wait_until("three consumers", TIMEOUT, || async {
        env.consumers(&env.queue).await == REPLICAS as u32
    })
    .await;
    let keys = urls("k", 2000);
    publish(&env, &keys, 25).await;
    wait_until("calls under way", TIMEOUT, || async {
        emu.accepted().len() >= 15
    })
    .await;
    children[0].kill();
    all_purged(
        &emu,
        &keys.iter().cloned().collect(),
        Duration::from_secs(90),
    )
    .await;
    let worst = max_in_window(&arrivals(&emu), 1000.0);
    println!("largest 1 s window with a replica killed: {worst}");
    assert!(worst <= RPS, "{worst} calls in one second");
    wait_until("the purge queue is empty", TIMEOUT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;
    for c in children.into_iter().skip(1) {
        assert_eq!(
            c.terminate().await.code(),
            Some(0),
            "SIGTERM drains and exits 0"
        );
    }
    assert_eq!(env.ready(&env.queue).await, 0, "everything was acked");
    env.cleanup().await;
    emu.shutdown().await;
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

async fn redis_get(key: &str) -> u64 {
    let client = redis::Client::open(REDIS_URL).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<u64>>(&mut c)
        .await
        .expect("GET")
        .unwrap_or(0)
}

/// Upgrading from a single replica keeps the day's spend: the quota counters keep their keys
/// (`{key_prefix}:quota:{provider}:{kind}:{provider-local day}`, written out here as the earlier
/// version wrote them), so what was spent before the upgrade still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_spent_before_an_upgrade_still_counts_across_replicas() {
    let emu = roomy_emulator(Faults::default()).await;
    let mut env = TestEnv::new("cluster-upgrade").await;
    let config = env.config(
        &[spec(&emu, "urls_per_day = 100\nurls_per_call = 5")],
        "max_linger_ms = 20",
    );
    let day = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8"))
        .format("%Y-%m-%d");
    let key = format!("{}:quota:cdn:url:{day}", env.prefix);
    redis_set(&key, 95).await;
    let replicas = start_replicas(&config).await;
    let keys = urls("u", 20);
    publish(&env, &keys, 1).await;
    wait_until("every event acked (purged or parked)", TIMEOUT, || async {
        replicas.iter().map(Running::acked).sum::<u64>() == 20
    })
    .await;
    let accepted: usize = emu.accepted().iter().map(|c| c.items.len()).sum();
    assert_eq!(accepted, 5, "only what was left of the day's 100");
    assert_eq!(redis_get(&key).await, 100);
    for r in replicas {
        r.stop().await;
    }
    env.cleanup().await;
    emu.shutdown().await;
}

async fn redis_set(key: &str, value: u64) {
    let client = redis::Client::open(REDIS_URL).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut c)
        .await
        .expect("SET");
}
