//! Operator-path bench: the HTTP ingest under load, and a dead-letter replay.
//!
//! a. ingest: a `Worker` with `http.ingest_listen` on loopback (the emulator as CDN, limits
//!    lifted, so the worker also consumes and purges what is ingested), and `OPS_CLIENTS`
//!    concurrent Rust clients (reqwest, keep-alive) posting single-URL events for `OPS_SECS`
//!    seconds. Each request is answered 202 only after the broker's publisher confirm. Prints
//!    requests/s, p50/p99/max latency and the non-202 count.
//! b. replay: `OPS_RECORDS` dead-letter records (provider_rejected, one URL each) published to a
//!    fresh DLQ, then `dlq replay` in-process (confirmed republish, ack after confirm); prints
//!    records/s.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379. Knobs (env): `OPS_SECS`
//! (default 30), `OPS_CLIENTS` (64), `OPS_RECORDS` (50000). Run: `cargo bench --bench ops`.

use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use purge_worker::coalesce::{LaneKey, Origin};
use purge_worker::commands::dlq::{DlqAction, DlqArgs, ReplayArgs};
use purge_worker::commands::pause::Common;
use purge_worker::config::{Config, RawConfig};
use purge_worker::dead_letter::DeadLetter;
use purge_worker::emulator::{EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig};
use purge_worker::provider::{FlushType, Kind};
use purge_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const TOKEN: &str = "bench-token-0123456789abcdef";
const HUGE: u64 = 1_000_000_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn config_text(base: &str, emulator: &Emulator) -> String {
    format!(
        r#"
[amqp]
url = "{AMQP_URL}"
queue = "{base}.q"
dead_letter_queue = "{base}.dead"
[redis]
url = "{REDIS_URL}"
key_prefix = "{base}"
[http]
listen = "127.0.0.1:0"
[batching]
max_linger_ms = 50
[[providers]]
name = "bench"
kind = "tencent-v3"
endpoint = "{endpoint}"
secret_id = "{EMULATOR_SECRET_ID}"
secret_key = "{EMULATOR_SECRET_KEY}"
requests_per_second = 1000000
requests_per_minute = 60000000
urls_per_day = {HUGE}
dirs_per_day = {HUGE}
  [[providers.domains]]
  host = "bench.example.com"
"#,
        endpoint = emulator.endpoint()
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn ingest(base: &str, emulator: &Emulator) -> anyhow::Result<()> {
    let (secs, clients) = (env_or("OPS_SECS", 30u64), env_or("OPS_CLIENTS", 64usize));
    let raw: RawConfig = toml::from_str(&config_text(base, emulator))?;
    let mut config = Config::from_raw(raw)?;
    config.ingest =
        purge_worker::ingest::Settings::new(Some("127.0.0.1:0"), Some(&format!("bench:{TOKEN}")))
            .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.reason))?;
    let shutdown = CancellationToken::new();
    let worker = Worker::start(config, shutdown.clone()).await?;
    let addr = worker.ingest_addr.context("ingest on")?;
    let ready = format!("http://{}/readyz", worker.http_addr);
    let until = Instant::now() + Duration::from_secs(30);
    while !matches!(reqwest::get(&ready).await, Ok(r) if r.status().is_success()) {
        anyhow::ensure!(Instant::now() < until, "worker not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = client.clone();
        tasks.spawn(async move {
            let (mut lat, mut bad, mut i) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < end {
                let body = format!(r#"{{"urls":["https://bench.example.com/{c}/{i}"]}}"#);
                i += 1;
                let t = Instant::now();
                let r = client
                    .post(format!("http://{addr}/v1/purges"))
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => bad += 1,
                }
            }
            (lat, bad)
        });
    }
    let started = Instant::now();
    let (mut lat, mut bad) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (l, b) = r?;
        lat.extend(l);
        bad += b;
    }
    let elapsed = started.elapsed();
    lat.sort_unstable();
    println!(
        "ingest: {} accepted in {:.1} s = {:.0} req/s with publisher confirms ({clients} clients); p50 {:?}, p99 {:?}, max {:?}; non-202: {bad}",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    shutdown.cancel();
    worker.wait().await?;
    Ok(())
}

async fn replay(base: &str, emulator: &Emulator, conn: &Connection) -> anyhow::Result<()> {
    let n = env_or("OPS_RECORDS", 50_000usize);
    let dlq = format!("{base}.dead");
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        dlq.as_str().into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let lane = LaneKey {
        kind: Kind::Url,
        flush: FlushType::Flush,
        headers: None,
    };
    let mut pending = Vec::new();
    for i in 0..n {
        let d = DeadLetter::for_provider(
            "bench",
            &lane,
            &[format!("https://bench.example.com/r/{i}")],
            &Origin::default(),
            "InvalidParameter",
            "bench",
        );
        let (body, props) = d.to_message();
        pending.push(
            ch.basic_publish(
                "".into(),
                dlq.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await?,
        );
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.toml");
    std::fs::write(&path, config_text(base, emulator))?;
    let t = Instant::now();
    purge_worker::commands::dlq::run(DlqArgs {
        action: DlqAction::Replay(ReplayArgs {
            code: None,
            dry_run: false,
            reason: Some("bench".into()),
            common: Common {
                config: Some(path),
                key_prefix: None,
            },
        }),
    })
    .await?;
    let e = t.elapsed();
    println!(
        "dlq replay: {n} records in {:.2} s = {:.0} records/s (confirmed republish, ack after confirm)",
        e.as_secs_f64(),
        n as f64 / e.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let base = format!("pwbench-ops-{}", std::process::id());
    let emulator = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig {
            urls_per_day: HUGE,
            paths_per_day: HUGE,
            requests_per_second: 1_000_000,
            ..EmulatorConfig::default()
        },
    )
    .await?;
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    let result = async {
        ingest(&base, &emulator).await?;
        replay(&base, &emulator, &conn).await
    }
    .await;
    if let Ok(ch) = conn.create_channel().await {
        for q in [
            format!("{base}.q"),
            format!("{base}.dead"),
            format!("{base}.q.parked.bench"),
            format!("{base}.q.paused.bench"),
        ] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    if let Ok(client) = redis::Client::open(REDIS_URL)
        && let Ok(mut c) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{base}:*"))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
        }
    }
    let _ = conn.close(200, "bench done".into()).await;
    emulator.shutdown().await;
    result
}
