//! End-to-end ingest bench (DESIGN "Performance stance": the pipeline near the raw rate at which
//! RabbitMQ delivers and takes acks on the same machine). One process, one broker, one run:
//!
//! a. raw: publish N single-URL events into a fresh queue (confirmed, pipelined), then consume them
//!    with a bare lapin consumer (same prefetch as the worker, manual ack, one ack per delivery)
//!    and time first delivery → N-th ack sent;
//! b. worker: publish the same N events into another fresh queue, start an in-process emulator
//!    with its limits lifted and a `Worker` pointed at it, and time `Worker::start` → N acks;
//! c. print both rates, their ratio (goal ≥ 0.9), provider calls, mean batch size and memory.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and Redis on 127.0.0.1:6379. Knobs (env):
//! `INGEST_MESSAGES` (default 100000; 2000 for a smoke test), `INGEST_PREFETCH` (1000),
//! `INGEST_LINGER_MS` (50), `INGEST_MAX_IN_FLIGHT` (8), `INGEST_CONFIRM_WINDOW` (1000),
//! `INGEST_SKIP_RAW=1` (worker only, for profiling), `RUST_LOG` (worker logs; default warn).
//!
//! Run: `cargo bench --bench ingest`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use purge_worker::config::Config;
use purge_worker::emulator::{
    EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig, RecordedCall,
};
use purge_worker::worker::Worker;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
const HOST: &str = "bench.example.com";
const PROVIDER: &str = "bench";
/// How often the worker's ack counter is read.
const POLL: Duration = Duration::from_millis(20);
/// Give up on the worker after this long.
const GIVE_UP: Duration = Duration::from_secs(600);
/// "Unlimited" daily quotas (kept well inside what Lua's doubles represent exactly).
const HUGE_QUOTA: u64 = 1_000_000_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    messages: usize,
    prefetch: u16,
    linger_ms: u64,
    max_in_flight: usize,
    confirm_window: usize,
    skip_raw: bool,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let s = Settings {
            messages: env_or("INGEST_MESSAGES", 100_000)?,
            prefetch: env_or("INGEST_PREFETCH", 1000)?,
            linger_ms: env_or("INGEST_LINGER_MS", 50)?,
            max_in_flight: env_or("INGEST_MAX_IN_FLIGHT", 8)?,
            confirm_window: env_or("INGEST_CONFIRM_WINDOW", 1000)?,
            skip_raw: env_or("INGEST_SKIP_RAW", 0u8)? != 0,
        };
        ensure!(s.messages > 0, "INGEST_MESSAGES must be at least 1");
        ensure!(s.prefetch > 0, "INGEST_PREFETCH must be at least 1");
        ensure!(
            s.confirm_window > 0,
            "INGEST_CONFIRM_WINDOW must be at least 1"
        );
        Ok(s)
    }
}

/// Names unique to this run, so concurrent runs and leftovers never collide.
struct Names {
    raw_queue: String,
    worker_queue: String,
    dead_letter_queue: String,
    parking_queue: String,
    key_prefix: String,
}

impl Names {
    fn new() -> Names {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}-{nanos}", std::process::id());
        let worker_queue = format!("bench.ingest.{id}.worker");
        Names {
            raw_queue: format!("bench.ingest.{id}.raw"),
            dead_letter_queue: format!("{worker_queue}.dead"),
            parking_queue: format!("{worker_queue}.parked.{PROVIDER}"),
            worker_queue,
            key_prefix: format!("purge-bench-{id}"),
        }
    }
}

fn body(i: usize) -> Vec<u8> {
    format!(r#"{{"urls":["https://{HOST}/p/{i}"]}}"#).into_bytes()
}

/// A kernel memory figure of this process in KiB (`VmHWM` = peak RSS, `VmRSS` = current).
fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

async fn declare(ch: &Channel, queue: &str) -> anyhow::Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .with_context(|| format!("declaring queue {queue}"))?;
    Ok(())
}

/// Messages ready in `queue` (not counting unacked ones).
async fn ready(conn: &Connection, queue: &str) -> anyhow::Result<u32> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("queue {queue} is gone"))?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(q.message_count())
}

/// Publishes `n` persistent JSON events with publisher confirms, at most `window` unconfirmed.
async fn publish(conn: &Connection, queue: &str, n: usize, window: usize) -> anyhow::Result<f64> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    declare(&ch, queue).await?;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(window);
    let settle = |c: Confirmation| match c {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        other => Err(anyhow::anyhow!("publish not confirmed: {other:?}")),
    };
    for i in 0..n {
        if pending.len() >= window
            && let Some(confirm) = pending.pop_front()
        {
            settle(confirm.await?)?;
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i),
                props.clone(),
            )
            .await?;
        pending.push_back(confirm);
    }
    for confirm in pending {
        settle(confirm.await?)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = ch.close(200, "ok".into()).await;
    Ok(n as f64 / secs)
}

/// The physical limit: a bare consumer acking every delivery individually.
async fn consume_raw(
    conn: &Connection,
    queue: &str,
    n: usize,
    prefetch: u16,
) -> anyhow::Result<Duration> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut first: Option<Instant> = None;
    let mut acked = 0usize;
    let deadline = Instant::now() + GIVE_UP;
    while acked < n {
        let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
            Err(_) => bail!("raw consumer: only {acked} of {n} acked after {GIVE_UP:?}"),
            Ok(None) => bail!("raw consumer: the broker cancelled the consumer"),
            Ok(Some(d)) => d?,
        };
        first.get_or_insert_with(Instant::now);
        ensure!(
            delivery.ack(BasicAckOptions::default()).await?,
            "raw consumer: ack not sent"
        );
        acked += 1;
    }
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());
    ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(elapsed)
}

fn worker_config(s: &Settings, names: &Names, emulator: &Emulator) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[amqp]
url = "{AMQP_URL}"
queue = "{queue}"
dead_letter_queue = "{dlq}"
prefetch = {prefetch}

[redis]
url = "{REDIS_URL}"
key_prefix = "{prefix}"

[http]
listen = "127.0.0.1:0"

[batching]
max_linger_ms = {linger}

[[providers]]
name = "{PROVIDER}"
kind = "tencent-v3"
endpoint = "{endpoint}"
secret_id = "{EMULATOR_SECRET_ID}"
secret_key = "{EMULATOR_SECRET_KEY}"
requests_per_second = 1000000
requests_per_minute = 60000000
urls_per_call = 1000
urls_per_day = {HUGE_QUOTA}
dirs_per_day = {HUGE_QUOTA}
max_in_flight = {max_in_flight}
  [[providers.domains]]
  host = "{HOST}"
"#,
        queue = names.worker_queue,
        dlq = names.dead_letter_queue,
        prefetch = s.prefetch,
        prefix = names.key_prefix,
        linger = s.linger_ms,
        endpoint = emulator.endpoint(),
        max_in_flight = s.max_in_flight,
    );
    let raw = toml::from_str(&text).context("bench config TOML")?;
    Config::from_raw(raw).context("bench config")
}

struct WorkerRun {
    elapsed: Duration,
    /// From `Worker::start` until the first ack was seen (connect, topology, first batch).
    first_ack: Option<Duration>,
    calls: Vec<RecordedCall>,
    max_rss_kib: Option<u64>,
}

async fn run_worker(
    s: &Settings,
    names: &Names,
    conn: &Connection,
    emulator: &Emulator,
) -> anyhow::Result<WorkerRun> {
    let config = worker_config(s, names, emulator)?;
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let worker = Worker::start(config, shutdown.clone()).await?;
    let acks = worker.metrics.acks.with_label_values(&["ok"]);
    let target = s.messages as u64;
    let mut first_ack = None;
    let mut max_rss = proc_status_kib("VmRSS:");
    let done = loop {
        let n = acks.get();
        if n > 0 && first_ack.is_none() {
            first_ack = Some(start.elapsed());
        }
        if n >= target {
            break Ok(start.elapsed());
        }
        if start.elapsed() > GIVE_UP {
            break Err(anyhow::anyhow!(
                "worker: only {n} of {target} acked after {GIVE_UP:?}"
            ));
        }
        max_rss = max_rss.max(proc_status_kib("VmRSS:"));
        tokio::time::sleep(POLL).await;
    };
    let left = ready(conn, &names.worker_queue).await;
    shutdown.cancel();
    let stopped = worker.wait().await;
    let elapsed = done?;
    stopped.context("worker shutdown")?;
    let left = left?;
    ensure!(left == 0, "worker queue still holds {left} messages");
    Ok(WorkerRun {
        elapsed,
        first_ack,
        calls: emulator.accepted(),
        max_rss_kib: max_rss,
    })
}

async fn cleanup(conn: &Connection, names: &Names) {
    match conn.create_channel().await {
        Ok(ch) => {
            for q in [
                &names.raw_queue,
                &names.worker_queue,
                &names.dead_letter_queue,
                &names.parking_queue,
            ] {
                // A missing queue is fine (a failed run); the channel survives a delete of one.
                if let Err(e) = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await
                {
                    eprintln!("cleanup: deleting queue {q}: {e}");
                }
            }
            let _ = ch.close(200, "ok".into()).await;
        }
        Err(e) => eprintln!("cleanup: no channel: {e}"),
    }
    if let Err(e) = delete_redis_keys(&format!("{}:*", names.key_prefix)).await {
        eprintln!("cleanup: Redis keys {}:*: {e}", names.key_prefix);
    }
}

/// SCAN + DEL of every key matching `pattern`; returns how many were deleted.
async fn delete_redis_keys(pattern: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(REDIS_URL)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL").arg(&keys).query_async(&mut con).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

async fn bench(s: &Settings, names: &Names, conn: &Connection) -> anyhow::Result<()> {
    let n = s.messages;
    println!(
        "ingest bench: {n} single-URL events, prefetch {}, max_linger_ms {}, max_in_flight {}, \
         urls_per_call 1000, confirm window {}",
        s.prefetch, s.linger_ms, s.max_in_flight, s.confirm_window
    );

    // a. The physical limit.
    let rate_raw = if s.skip_raw {
        println!("raw:    skipped (INGEST_SKIP_RAW)");
        None
    } else {
        let published = publish(conn, &names.raw_queue, n, s.confirm_window).await?;
        println!("raw:    published {n} in a fresh queue at {published:.0} msg/s (confirmed)");
        let t = consume_raw(conn, &names.raw_queue, n, s.prefetch).await?;
        let rate = n as f64 / t.as_secs_f64();
        println!(
            "raw:    consumed + acked {n} in {:.3} s -> rate_raw = {rate:.0} msg/s",
            t.as_secs_f64()
        );
        Some(rate)
    };
    let hwm_after_raw = proc_status_kib("VmHWM:");

    // b. The worker.
    let published = publish(conn, &names.worker_queue, n, s.confirm_window).await?;
    println!("worker: published {n} in a fresh queue at {published:.0} msg/s (confirmed)");
    let emulator = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig {
            urls_per_call: 1000,
            urls_per_day: HUGE_QUOTA,
            paths_per_day: HUGE_QUOTA,
            requests_per_second: 1_000_000,
            ..EmulatorConfig::default()
        },
    )
    .await
    .context("starting the emulator")?;
    let run = run_worker(s, names, conn, &emulator).await;
    let rejected = emulator.rejected().len();
    emulator.shutdown().await;
    let run = run?;
    let rate_worker = n as f64 / run.elapsed.as_secs_f64();
    println!(
        "worker: acked {n} in {:.3} s from Worker::start (first ack after {}) -> rate_worker = {rate_worker:.0} msg/s",
        run.elapsed.as_secs_f64(),
        run.first_ack
            .map_or_else(|| "n/a".into(), |d| format!("{} ms", d.as_millis())),
    );

    // What reached the "CDN".
    let calls = run.calls.len();
    let items: usize = run.calls.iter().map(|c| c.items.len()).sum();
    let distinct: HashSet<&str> = run
        .calls
        .iter()
        .flat_map(|c| c.items.iter().map(String::as_str))
        .collect();
    let expected: HashSet<String> = (0..n).map(|i| format!("https://{HOST}/p/{i}")).collect();
    let missing = expected
        .iter()
        .filter(|u| !distinct.contains(u.as_str()))
        .count();
    let (min_batch, max_batch) = run
        .calls
        .iter()
        .map(|c| c.items.len())
        .fold((usize::MAX, 0), |(lo, hi), k| (lo.min(k), hi.max(k)));
    println!(
        "worker: {calls} provider calls ({rejected} refused), {items} URLs, {} distinct, mean batch {:.1} (min {}, max {max_batch})",
        distinct.len(),
        items as f64 / calls.max(1) as f64,
        if calls == 0 { 0 } else { min_batch },
    );
    ensure!(
        missing == 0 && distinct.len() == n,
        "the emulator saw {} distinct URLs, {missing} of the {n} expected missing",
        distinct.len()
    );

    // c. The verdict.
    println!(
        "memory: peak RSS (VmHWM) {} after raw phase, {} at end; max VmRSS sampled during worker run {}",
        mib(hwm_after_raw),
        mib(proc_status_kib("VmHWM:")),
        mib(run.max_rss_kib),
    );
    match rate_raw {
        Some(raw) => {
            let ratio = rate_worker / raw;
            println!(
                "RESULT: rate_raw = {raw:.0} msg/s, rate_worker = {rate_worker:.0} msg/s, ratio = {ratio:.3} (goal >= 0.9){}",
                if ratio >= 0.9 { "" } else { "  ** BELOW GOAL **" }
            );
        }
        None => println!("RESULT: rate_worker = {rate_worker:.0} msg/s (raw skipped)"),
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let s = Settings::from_env()?;
    let names = Names::new();
    let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ at 127.0.0.1:5672")?;
    let result = bench(&s, &names, &conn).await;
    cleanup(&conn, &names).await;
    let _ = conn.close(200, "bench done".into()).await;
    result
}
