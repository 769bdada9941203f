//! Cluster bench: several worker replicas sharing one queue and one Redis.
//!
//! a. Budget use: 10 provider accounts (own SecretId, own host, own `requests_per_second` from 4 to
//!    13) served by 3 replicas with a backlog larger than they can purge in `CLUSTER_SECS`.
//!    Prints accepted calls per second ÷ the sum of the accounts' budgets over the steady part of
//!    the run (goal ≥ 0.95), the largest 1 s window of each account against its limit, and Redis
//!    script calls per provider call (`INFO commandstats`, so run it alone).
//! b. Limiter latency: the admission script (3 windows + a calendar-day quota), called back to back
//!    on an idle account: p50 and p99 of one call.
//! c. Duplicates across replicas: a CMS-like trace (hot keys repeated across events) purged by one
//!    replica and then by three, with the same deliveries in flight (prefetch 1200 in all); quota
//!    units spent by each, and their ratio.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379. Knobs (env): `CLUSTER_SECS`
//! (default 20), `CLUSTER_REPLICAS` (3). Run: `cargo bench --bench cluster`.

use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use purge_worker::config::{Config, RawConfig};
use purge_worker::emulator::{
    EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig, RecordedCall,
};
use purge_worker::provider::Kind;
use purge_worker::quota::{Admission, QuotaPolicy, QuotaStore, QuotaWindow, Want, unix_now};
use purge_worker::ratelimit::RateLimit;
use purge_worker::ratelimit::shared::SharedRate;
use purge_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const ACCOUNTS: usize = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn unique(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("pwbench-{name}-{t}")
}

/// One run's names; everything under them is removed afterwards.
struct Run {
    queue: String,
    prefix: String,
    providers: Vec<String>,
    /// Per replica.
    prefetch: usize,
}

impl Run {
    fn new(name: &str) -> Run {
        let base = unique(name);
        Run {
            queue: format!("{base}.q"),
            prefix: base,
            providers: Vec::new(),
            prefetch: 1000,
        }
    }

    /// A config with one `[[providers]]` table per `(name, secret_id, secret_key, host, extra)`.
    fn config(&mut self, emu: &Emulator, providers: &[[String; 5]]) -> Config {
        let mut t = format!(
            "[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{}\"\ndead_letter_queue = \"{}.dead\"\n\
             prefetch = {}\n[redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[batching]\nmax_linger_ms = 200\n",
            self.queue, self.queue, self.prefetch, self.prefix
        );
        for [name, id, key, host, extra] in providers {
            self.providers.push(name.clone());
            t.push_str(&format!(
                "[[providers]]\nname = \"{name}\"\nkind = \"tencent-v3\"\nendpoint = \"{}\"\n\
                 secret_id = \"{id}\"\nsecret_key = \"{key}\"\n{extra}\n\
                 [[providers.domains]]\nhost = \"{host}\"\n",
                emu.endpoint()
            ));
        }
        let raw: RawConfig = toml::from_str(&t).expect("bench config parses");
        Config::from_raw(raw).expect("bench config is valid")
    }

    async fn cleanup(&self, conn: &Connection) {
        if let Ok(ch) = conn.create_channel().await {
            let mut queues = vec![self.queue.clone(), format!("{}.dead", self.queue)];
            queues.extend(
                self.providers
                    .iter()
                    .map(|p| format!("{}.parked.{p}", self.queue)),
            );
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        if let Ok(client) = redis::Client::open(REDIS_URL)
            && let Ok(mut c) = client.get_multiplexed_async_connection().await
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
            }
        }
    }
}

/// Publishes one JSON event per URL chunk, confirmed.
async fn publish(conn: &Connection, queue: &str, events: &[Vec<String>]) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut pending = Vec::new();
    for urls in events {
        let body = serde_json::to_vec(&serde_json::json!({ "urls": urls }))?;
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await?;
        pending.push(confirm);
        if pending.len() >= 500 {
            for c in pending.drain(..) {
                c.await?;
            }
        }
    }
    for c in pending {
        c.await?;
    }
    Ok(())
}

async fn start(config: &Config, n: usize) -> anyhow::Result<Vec<(Worker, CancellationToken)>> {
    let mut replicas = Vec::new();
    for _ in 0..n {
        let stop = CancellationToken::new();
        let w = Worker::start(config.clone(), stop.clone()).await?;
        replicas.push((w, stop));
    }
    // Until every replica consumes, so the broker spreads the messages.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(replicas)
}

async fn stop(replicas: Vec<(Worker, CancellationToken)>) {
    for (w, stop) in replicas {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), w.wait()).await;
    }
}

fn max_in_window(times: &[f64], window_ms: f64) -> usize {
    let (mut worst, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] > window_ms {
            lo += 1;
        }
        worst = worst.max(hi - lo + 1);
    }
    worst
}

async fn script_calls() -> anyhow::Result<u64> {
    let client = redis::Client::open(REDIS_URL)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut c)
        .await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

async fn budget_use(conn: &Connection, secs: u64, replicas: usize) -> anyhow::Result<()> {
    let accounts: Vec<(String, String)> = (0..ACCOUNTS)
        .map(|i| (format!("AKIDBENCH{i:02}"), format!("key-AKIDBENCH{i:02}")))
        .collect();
    let emu = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig {
            accounts: accounts.clone(),
            requests_per_second: 1000,
            urls_per_day: 1_000_000_000,
            ..Default::default()
        },
    )
    .await?;
    let mut run = Run::new("cluster");
    let rps: Vec<u64> = (0..ACCOUNTS as u64).map(|i| 4 + i).collect();
    let per_call = 10;
    let providers: Vec<_> = (0..ACCOUNTS)
        .map(|i| {
            [
                format!("acct{i}"),
                accounts[i].0.clone(),
                accounts[i].1.clone(),
                format!("a{i}.example.com"),
                format!(
                    "requests_per_second = {}\nurls_per_call = {per_call}",
                    rps[i]
                ),
            ]
        })
        .collect();
    let config = run.config(&emu, &providers);
    let workers = start(&config, replicas).await?;
    // 1.5 × what the budgets allow in `secs`, so every account has a backlog to the end.
    let mut events = Vec::new();
    for (i, r) in rps.iter().enumerate() {
        let calls = (*r * secs * 3 / 2) as usize;
        for c in 0..calls {
            events.push(
                (0..per_call)
                    .map(|k| format!("https://a{i}.example.com/{c}/{k}"))
                    .collect(),
            );
        }
    }
    let scripts_before = script_calls().await?;
    let t0 = now_ms();
    publish(conn, &run.queue, &events).await?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let t1 = now_ms();
    let scripts = script_calls().await? - scripts_before;
    stop(workers).await;
    let calls: Vec<RecordedCall> = emu.accepted();
    // The steady part: after the first 2 s (publishing and start-up), until the end.
    let (from, to) = (t0 + 2000.0, t1);
    let steady = calls
        .iter()
        .filter(|c| c.at_ms >= from && c.at_ms < to)
        .count();
    let budget: u64 = rps.iter().sum();
    let ratio = steady as f64 / ((to - from) / 1000.0) / budget as f64;
    println!(
        "a. {ACCOUNTS} accounts × {replicas} replicas, {secs} s: {steady} calls in the steady \
         {:.1} s; calls/s ÷ budget ({budget}/s) = {ratio:.3} (goal ≥ 0.95)",
        (to - from) / 1000.0
    );
    let mut over = 0;
    for (i, (id, _)) in accounts.iter().enumerate() {
        let mut t: Vec<f64> = calls
            .iter()
            .filter(|c| &c.secret_id == id)
            .map(|c| c.at_ms)
            .collect();
        t.sort_by(f64::total_cmp);
        let worst = max_in_window(&t, 1000.0);
        if worst as u64 > rps[i] {
            over += 1;
        }
        print!("acct{i}: {worst}/{} ", rps[i]);
    }
    println!("\n   accounts over their limit in some 1 s window: {over}");
    println!(
        "   Redis script calls per accepted call: {:.2} ({scripts} scripts, {} calls; includes \
         denied asks and quota refunds)",
        scripts as f64 / calls.len().max(1) as f64,
        calls.len()
    );
    run.cleanup(conn).await;
    emu.shutdown().await;
    Ok(())
}

async fn latency() -> anyhow::Result<()> {
    let prefix = unique("latency");
    let quota = QuotaStore::connect(REDIS_URL, &prefix)?;
    let limits =
        ["1000/1s", "50000/1m", "1000000/1h"].map(|s| RateLimit::parse(s).expect("rate limit"));
    let mut rate = SharedRate::new(&prefix, "lat", &limits, true);
    let policy = QuotaPolicy {
        window: QuotaWindow::Day,
        utc_offset_secs: 8 * 3600,
    };
    let mut times = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let a = quota
            .admit(
                &mut rate,
                "lat",
                Kind::Url,
                1_000_000,
                Want::interactive(10),
                unix_now(),
                policy,
            )
            .await?;
        times.push(t.elapsed());
        if let Admission::Wait(w) = a {
            tokio::time::sleep(w).await;
        }
    }
    times.sort();
    let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "b. admission script (3 windows + day quota), {} calls: p50 {:?}, p99 {:?}",
        times.len(),
        q(0.5),
        q(0.99)
    );
    let client = redis::Client::open(REDIS_URL)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await?;
    }
    Ok(())
}

/// A CMS-like trace: 3,000 events of 4 URLs; one in four URLs is one of 50 hot pages (home, section
/// fronts) that many events repeat; the rest are article pages, some repeated by later edits.
fn cms_trace() -> Vec<Vec<String>> {
    (0..3000u64)
        .map(|e| {
            (0..4u64)
                .map(|k| {
                    let n = e * 4 + k;
                    let path = if k == 0 {
                        format!("front/{}", (e * 7) % 50)
                    } else {
                        format!("article/{}", (n * 2654435761) % 6000)
                    };
                    format!("https://cms.example.com/{path}")
                })
                .collect()
        })
        .collect()
}

async fn duplicates(conn: &Connection, replicas: usize) -> anyhow::Result<usize> {
    let emu = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig {
            requests_per_second: 1000,
            urls_per_day: 1_000_000_000,
            ..Default::default()
        },
    )
    .await?;
    let mut run = Run::new("dups");
    // The same deliveries in flight in all, so only where duplicates land differs.
    run.prefetch = 1200 / replicas;
    let config = run.config(
        &emu,
        &[[
            "cms".into(),
            EMULATOR_SECRET_ID.into(),
            EMULATOR_SECRET_KEY.into(),
            "cms.example.com".into(),
            "requests_per_second = 10\nurls_per_call = 100".into(),
        ]],
    );
    let trace = cms_trace();
    let workers = start(&config, replicas).await?;
    publish(conn, &run.queue, &trace).await?;
    let acked = |ws: &[(Worker, CancellationToken)]| {
        ws.iter()
            .map(|(w, _)| w.metrics.acks.with_label_values(&["ok"]).get())
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked(&workers) < trace.len() as u64 {
        anyhow::ensure!(Instant::now() < deadline, "trace not purged in 300 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(workers).await;
    let units: usize = emu.accepted().iter().map(|c| c.items.len()).sum();
    run.cleanup(conn).await;
    emu.shutdown().await;
    Ok(units)
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let secs = env_or("CLUSTER_SECS", 20);
    let replicas = env_or("CLUSTER_REPLICAS", 3) as usize;
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ on 127.0.0.1:5672")?;
    budget_use(&conn, secs, replicas).await?;
    latency().await?;
    let distinct: std::collections::HashSet<String> = cms_trace().into_iter().flatten().collect();
    let one = duplicates(&conn, 1).await?;
    let many = duplicates(&conn, replicas).await?;
    println!(
        "c. CMS trace ({} events, {} distinct keys): quota units with 1 replica {one}, with \
         {replicas} replicas {many}: ratio {:.3}",
        cms_trace().len(),
        distinct.len(),
        many as f64 / one.max(1) as f64
    );
    Ok(())
}
