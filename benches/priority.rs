//! Priority classes and directory escalation, end to end against the local RabbitMQ and Redis
//! and the built-in emulator (issue 11). Numbers, not pass/fail.
//!
//! 1. `latency`: a 100,000-URL bulk backlog (100 events of 1,000 on the bulk queue) is purged
//!    (its 8,000-unit share of Tencent's default 10,000 a day at `interactive_reserve = 0.2`) and
//!    parked (the other 92,000) while one interactive event of 2 URLs arrives every 50 ms on the
//!    main queue; prints p50/p99/max of interactive publish → accepted by the provider.
//! 2. `units`: quota units spent per distinct key for 100,000 bulk URLs under 50 directories,
//!    with `dir_escalation = 100` and Tencent's default limits (the escalation trace: only a
//!    directory replacing more than 10,000 / 100 URLs saves quota) and without escalation, with
//!    room for every URL (the plain trace).
//!
//! Run: `cargo bench --bench priority`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use purge_worker::config::{Config, RawConfig};
use purge_worker::emulator::{EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig};
use purge_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const BULK: usize = 100_000;
const INTERACTIVE_EVENTS: usize = 100;
const GIVE_UP: Duration = Duration::from_secs(300);

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

struct Run {
    queue: String,
    bulk: String,
    prefix: String,
}

impl Run {
    fn new(name: &str) -> Run {
        let id = format!("{}-{}", std::process::id(), now_ms() as u64);
        Run {
            queue: format!("bench.{name}.{id}"),
            bulk: format!("bench.{name}.{id}.bulk"),
            prefix: format!("purge-bench-{name}-{id}"),
        }
    }

    fn config(&self, emu: &Emulator, provider: &str, domain: &str) -> anyhow::Result<Config> {
        let text = format!(
            r#"
[amqp]
url = "{AMQP_URL}"
queue = "{q}"
dead_letter_queue = "{q}.dead"
bulk_queue = "{b}"
[redis]
url = "{REDIS_URL}"
key_prefix = "{p}"
[http]
listen = "127.0.0.1:0"
[batching]
max_linger_ms = 200
[[providers]]
name = "bench"
kind = "tencent-v3"
endpoint = "{e}"
secret_id = "{EMULATOR_SECRET_ID}"
secret_key = "{EMULATOR_SECRET_KEY}"
{provider}
  [[providers.domains]]
  host = "www.example.com"
  {domain}
"#,
            q = self.queue,
            b = self.bulk,
            p = self.prefix,
            e = emu.endpoint(),
        );
        let raw: RawConfig = toml::from_str(&text)?;
        Ok(Config::from_raw(raw)?)
    }

    async fn cleanup(&self, conn: &Connection) {
        if let Ok(ch) = conn.create_channel().await {
            for q in [
                self.queue.clone(),
                format!("{}.dead", self.queue),
                self.bulk.clone(),
                format!("{}.parked.bench", self.queue),
                format!("{}.parked.bench", self.bulk),
            ] {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        if let Ok(client) = redis::Client::open(REDIS_URL)
            && let Ok(mut c) = client.get_multiplexed_async_connection().await
        {
            for kind in ["url", "dir"] {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}:quota:bench:{kind}:*", self.prefix))
                    .query_async(&mut c)
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                }
            }
        }
    }
}

/// Publishes JSON events to `queue` with confirms; returns each event's publish time (ms).
async fn publish(
    conn: &Connection,
    queue: &str,
    events: &[serde_json::Value],
) -> anyhow::Result<Vec<f64>> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let mut times = Vec::with_capacity(events.len());
    for e in events {
        times.push(now_ms());
        let body = serde_json::to_vec(e)?;
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            props.clone(),
        )
        .await?
        .await?;
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(times)
}

fn bulk_events(dirs: usize) -> Vec<serde_json::Value> {
    let urls: Vec<String> = (0..BULK)
        .map(|i| format!("https://www.example.com/cat/{}/item-{i}.html", i % dirs))
        .collect();
    urls.chunks(1000)
        .map(|c| serde_json::json!({ "urls": c, "source": "reindex" }))
        .collect()
}

async fn wait_acks(worker: &Worker, n: u64) -> anyhow::Result<()> {
    let acks = worker.metrics.acks.with_label_values(&["ok"]);
    let start = std::time::Instant::now();
    while acks.get() < n {
        anyhow::ensure!(start.elapsed() < GIVE_UP, "only {} of {n} acks", acks.get());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(conn: &Connection) -> anyhow::Result<()> {
    let emu = Emulator::start("127.0.0.1:0".parse()?, EmulatorConfig::default()).await?;
    let run = Run::new("priority");
    let config = run.config(&emu, "interactive_reserve = 0.2", "")?;
    let stop = CancellationToken::new();
    publish(conn, &run.bulk, &bulk_events(50)).await?;
    let worker = Worker::start(config, stop.clone()).await?;
    let mut sent: HashMap<String, f64> = HashMap::new();
    for e in 0..INTERACTIVE_EVENTS {
        let urls = [
            format!("https://www.example.com/news/{e}-a.html"),
            format!("https://www.example.com/news/{e}-b.html"),
        ];
        let at = publish(conn, &run.queue, &[serde_json::json!({ "urls": urls })]).await?[0];
        for u in urls {
            sent.insert(u, at);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_acks(&worker, (BULK / 1000 + INTERACTIVE_EVENTS) as u64).await?;
    let mut seen: HashMap<String, f64> = HashMap::new();
    let calls = emu.accepted();
    for c in &calls {
        for it in &c.items {
            seen.entry(it.clone()).or_insert(c.at_ms);
        }
    }
    let mut lat: Vec<f64> = sent
        .iter()
        .map(|(u, at)| seen.get(u).map_or(f64::INFINITY, |s| s - at))
        .collect();
    lat.sort_by(f64::total_cmp);
    let purged: usize = calls.iter().map(|c| c.items.len()).sum();
    let parked = worker
        .metrics
        .parked_items
        .with_label_values(&["bench", "url", "bulk"])
        .get();
    println!(
        "latency: interactive publish→accepted over {} URLs while {BULK} bulk URLs were purged ({} units in all) and parked ({parked}): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        lat.len(),
        purged,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    stop.cancel();
    worker.wait().await?;
    run.cleanup(conn).await;
    Ok(())
}

async fn units(conn: &Connection, escalate: bool) -> anyhow::Result<()> {
    let emu = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig {
            urls_per_day: 1_000_000,
            requests_per_second: 1000,
            ..Default::default()
        },
    )
    .await?;
    let run = Run::new(if escalate { "escalation" } else { "plain" });
    let domain = if escalate { "dir_escalation = 100" } else { "" };
    // The escalation trace keeps Tencent's default 10,000 URLs / 100 directories a day (so a
    // directory must replace more than 100 URLs); the plain trace gets room for every URL.
    let provider = if escalate {
        "requests_per_second = 200\nrequests_per_minute = 12000"
    } else {
        "urls_per_day = 1000000\nrequests_per_second = 200\nrequests_per_minute = 12000"
    };
    let config = run.config(&emu, provider, domain)?;
    publish(conn, &run.bulk, &bulk_events(50)).await?;
    let stop = CancellationToken::new();
    let start = std::time::Instant::now();
    let worker = Worker::start(config, stop.clone()).await?;
    wait_acks(&worker, (BULK / 1000) as u64).await?;
    let took = start.elapsed();
    let calls = emu.accepted();
    let (mut url_units, mut dir_units) = (0, 0);
    for c in &calls {
        if c.action == "PurgePathCache" {
            dir_units += c.items.len();
        } else {
            url_units += c.items.len();
        }
    }
    println!(
        "units ({}): {dir_units} directory + {url_units} URL units for {BULK} distinct keys = {:.4} units/key, {} calls, {:.2} s",
        if escalate {
            "escalation trace"
        } else {
            "plain trace"
        },
        (dir_units + url_units) as f64 / BULK as f64,
        calls.len(),
        took.as_secs_f64()
    );
    stop.cancel();
    worker.wait().await?;
    run.cleanup(conn).await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("RabbitMQ on 127.0.0.1:5672")?;
    latency(&conn).await?;
    units(&conn, true).await?;
    units(&conn, false).await?;
    Ok(())
}
