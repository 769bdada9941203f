//! End-to-end ingest bench (DESIGN "Performance stance": the pipeline near the raw rate at which
//! RabbitMQ delivers and takes acks on the same machine). One process, one broker, one run:
//!
//! a. raw: publish N single-URL events into a fresh queue (confirmed, pipelined), then consume them
//!    with a bare lapin consumer (same prefetch as the worker, manual ack, one ack per delivery)
//!    and time first delivery → N-th ack sent. Twice: acking inline in the consume loop
//!    (`rate_raw`, the reference of the ratio), and from a separate ack task, the way the worker
//!    splits consumer and ledger (a stricter reference, printed alongside);
//! b. worker: publish the same N events into another fresh queue, start an in-process emulator
//!    with its limits lifted and a `Worker` pointed at it, and time `Worker::start` → N acks;
//! c. print both rates, their ratio (goal ≥ 0.9), provider calls, mean batch size and memory.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest) and Redis on 127.0.0.1:6379. Knobs (env):
//! `INGEST_MESSAGES` (default 100000; 2000 for a smoke test), `INGEST_PREFETCH` (1000),
//! `INGEST_LINGER_MS` (50), `INGEST_MAX_IN_FLIGHT` (8), `INGEST_URLS_PER_CALL` (1000),
//! `INGEST_CONFIRM_WINDOW` (1000), `INGEST_SKIP_RAW=1` (worker only, for profiling), `RUST_LOG`
//! (worker logs; default warn).
//!
//! Run: `cargo bench --bench ingest`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use purge_worker::config::Config;
use purge_worker::emulator::{
    EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig, RecordedCall,
};
use purge_worker::worker::Worker;
use tokio::sync::mpsc;
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
    urls_per_call: usize,
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
            urls_per_call: env_or("INGEST_URLS_PER_CALL", 1000)?,
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
    /// One fresh queue per raw ack mode.
    raw_queue: String,
    raw_task_queue: String,
    worker_queue: String,
    dead_letter_queue: String,
    parking_queue: String,
    bulk_queue: String,
    bulk_parking_queue: String,
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
            raw_task_queue: format!("bench.ingest.{id}.raw-task"),
            dead_letter_queue: format!("{worker_queue}.dead"),
            parking_queue: format!("{worker_queue}.parked.{PROVIDER}"),
            bulk_queue: format!("{worker_queue}.bulk"),
            bulk_parking_queue: format!("{worker_queue}.bulk.parked.{PROVIDER}"),
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

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// Context switches (voluntary + involuntary) of every thread of this process so far. Threads
/// that ended are not counted, which is fine between two readings of a long-lived runtime.
fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches:")
                || line.starts_with("nonvoluntary_ctxt_switches:")
            {
                total += line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// CPU time and context switches at one instant.
type Usage = (Option<Duration>, Option<u64>);

fn usage() -> Usage {
    (cpu_time(), context_switches())
}

/// `"<ms> ms CPU, <µs>/msg, <n> context switches/msg"` between `before` and now.
fn usage_since(before: Usage, n: usize) -> String {
    let (cpu, switches) = usage();
    let cpu = match (before.0, cpu) {
        (Some(b), Some(a)) => {
            let d = a.saturating_sub(b);
            format!(
                "{} ms CPU in this process, {:.1} us/msg",
                d.as_millis(),
                d.as_secs_f64() * 1e6 / n as f64
            )
        }
        _ => "CPU n/a".into(),
    };
    match (before.1, switches) {
        (Some(b), Some(a)) => format!(
            "{cpu}, {:.2} context switches/msg",
            a.saturating_sub(b) as f64 / n as f64
        ),
        _ => cpu,
    }
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

/// How the bare consumer acks. Either way every delivery gets its own `basic.ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckMode {
    /// `delivery.ack(..).await` in the consume loop: receiving waits for every ack.
    Inline,
    /// The consume loop hands each acker to one ack task (the worker's consumer/ledger split), so
    /// receiving and acking overlap.
    Task,
}

/// The physical limit: a bare consumer acking every delivery individually; time from the first
/// delivery until the `n`-th ack was sent.
async fn consume_raw(
    conn: &Connection,
    queue: &str,
    n: usize,
    prefetch: u16,
    mode: AckMode,
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
    let (tx, mut rx) = mpsc::channel::<Acker>(usize::from(prefetch));
    let acks = tokio::spawn(async move {
        let mut acked = 0usize;
        while let Some(acker) = rx.recv().await {
            ensure!(
                acker.ack(BasicAckOptions::default()).await?,
                "raw consumer: ack not sent"
            );
            acked += 1;
        }
        Ok::<_, anyhow::Error>(acked)
    });
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + GIVE_UP;
    for received in 0..n {
        let delivery = match tokio::time::timeout_at(deadline, consumer.next()).await {
            Err(_) => bail!("raw consumer: only {received} of {n} received after {GIVE_UP:?}"),
            Ok(None) => bail!("raw consumer: the broker cancelled the consumer"),
            Ok(Some(d)) => d?,
        };
        first.get_or_insert_with(Instant::now);
        match mode {
            AckMode::Inline => ensure!(
                delivery.ack(BasicAckOptions::default()).await?,
                "raw consumer: ack not sent"
            ),
            AckMode::Task => tx
                .send(delivery.acker)
                .await
                .map_err(|_| anyhow::anyhow!("raw consumer: the ack task ended early"))?,
        }
    }
    drop(tx);
    let acked = acks.await??;
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());
    ensure!(
        acked == if mode == AckMode::Task { n } else { 0 },
        "raw consumer: {acked} acks from the ack task"
    );
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
bulk_queue = "{bulk}"

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
urls_per_call = {urls_per_call}
urls_per_day = {HUGE_QUOTA}
dirs_per_day = {HUGE_QUOTA}
max_in_flight = {max_in_flight}
  [[providers.domains]]
  host = "{HOST}"
"#,
        queue = names.worker_queue,
        dlq = names.dead_letter_queue,
        bulk = names.bulk_queue,
        prefetch = s.prefetch,
        prefix = names.key_prefix,
        linger = s.linger_ms,
        endpoint = emulator.endpoint(),
        max_in_flight = s.max_in_flight,
        urls_per_call = s.urls_per_call,
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
    /// Time between polls in which no ack was sent, after the first ack.
    stalled: Duration,
    /// Mean provider call duration and mean receipt-to-submit latency, from the worker's metrics.
    mean_call: Option<Duration>,
    mean_to_submit: Option<Duration>,
    /// CPU and context switches from `Worker::start` until the last ack (before shutdown, while
    /// the worker's threads are still alive to be counted).
    usage: String,
}

/// The mean of a histogram, if it has samples.
fn hist_mean(h: &prometheus::Histogram) -> Option<Duration> {
    let n = h.get_sample_count();
    (n > 0).then(|| Duration::from_secs_f64(h.get_sample_sum() / n as f64))
}

async fn run_worker(
    s: &Settings,
    names: &Names,
    conn: &Connection,
    emulator: &Emulator,
) -> anyhow::Result<WorkerRun> {
    let config = worker_config(s, names, emulator)?;
    let shutdown = CancellationToken::new();
    let before = usage();
    let start = Instant::now();
    let worker = Worker::start(config, shutdown.clone()).await?;
    let acks = worker.metrics.acks.with_label_values(&["ok"]);
    let target = s.messages as u64;
    let mut first_ack = None;
    let mut max_rss = proc_status_kib("VmRSS:");
    let (mut last, mut last_at, mut stalled) = (0, start, Duration::ZERO);
    let done = loop {
        let n = acks.get();
        if n > 0 && first_ack.is_none() {
            first_ack = Some(start.elapsed());
        }
        let now = Instant::now();
        if n == last && n > 0 {
            stalled += now - last_at;
        }
        (last, last_at) = (n, now);
        if n >= target {
            break Ok((start.elapsed(), usage_since(before, s.messages)));
        }
        if start.elapsed() > GIVE_UP {
            break Err(anyhow::anyhow!(
                "worker: only {n} of {target} acked after {GIVE_UP:?}"
            ));
        }
        max_rss = max_rss.max(proc_status_kib("VmRSS:"));
        tokio::time::sleep(POLL).await;
    };
    let action = "PurgeUrlsCache";
    let mean_call = hist_mean(
        &worker
            .metrics
            .api_duration
            .with_label_values(&[PROVIDER, action]),
    );
    let mean_to_submit = hist_mean(
        &worker
            .metrics
            .event_to_submit
            .with_label_values(&[PROVIDER, "url"]),
    );
    let left = ready(conn, &names.worker_queue).await;
    shutdown.cancel();
    let stopped = worker.wait().await;
    let (elapsed, usage) = done?;
    stopped.context("worker shutdown")?;
    let left = left?;
    ensure!(left == 0, "worker queue still holds {left} messages");
    Ok(WorkerRun {
        elapsed,
        first_ack,
        calls: emulator.accepted(),
        max_rss_kib: max_rss,
        stalled,
        mean_call,
        mean_to_submit,
        usage,
    })
}

async fn cleanup(conn: &Connection, names: &Names) {
    match conn.create_channel().await {
        Ok(ch) => {
            for q in [
                &names.raw_queue,
                &names.raw_task_queue,
                &names.worker_queue,
                &names.dead_letter_queue,
                &names.parking_queue,
                &names.bulk_queue,
                &names.bulk_parking_queue,
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
         urls_per_call {}, confirm window {}",
        s.prefetch, s.linger_ms, s.max_in_flight, s.urls_per_call, s.confirm_window
    );

    // a. The physical limit, with inline acks (as specified) and with an ack task.
    let mut raw = Vec::new();
    if s.skip_raw {
        println!("raw:    skipped (INGEST_SKIP_RAW)");
    } else {
        for (mode, queue) in [
            (AckMode::Inline, &names.raw_queue),
            (AckMode::Task, &names.raw_task_queue),
        ] {
            let published = publish(conn, queue, n, s.confirm_window).await?;
            let before = usage();
            let t = consume_raw(conn, queue, n, s.prefetch, mode).await?;
            let rate = n as f64 / t.as_secs_f64();
            println!(
                "raw:    {mode:?} acks: published {n} at {published:.0} msg/s (confirmed); consumed + acked in {:.3} s -> {rate:.0} msg/s ({})",
                t.as_secs_f64(),
                usage_since(before, n)
            );
            raw.push((mode, rate));
        }
    }
    let hwm_after_raw = proc_status_kib("VmHWM:");

    // b. The worker.
    let published = publish(conn, &names.worker_queue, n, s.confirm_window).await?;
    println!("worker: published {n} in a fresh queue at {published:.0} msg/s (confirmed)");
    let emulator = Emulator::start(
        "127.0.0.1:0".parse()?,
        EmulatorConfig {
            urls_per_call: s.urls_per_call.max(1000),
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
        "worker: acked {n} in {:.3} s from Worker::start (first ack after {}) -> rate_worker = {rate_worker:.0} msg/s ({}, emulator included)",
        run.elapsed.as_secs_f64(),
        run.first_ack
            .map_or_else(|| "n/a".into(), |d| format!("{} ms", d.as_millis())),
        run.usage,
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
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "n/a".into(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
        )
    };
    println!(
        "worker: mean provider call {}, mean receipt-to-submit {}, no ack progress for {} ms in total (polled every {} ms)",
        ms(run.mean_call),
        ms(run.mean_to_submit),
        run.stalled.as_millis(),
        POLL.as_millis()
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
    match raw.as_slice() {
        [(_, inline), (_, task)] => {
            let ratio = rate_worker / inline;
            println!(
                "RESULT: rate_raw = {inline:.0} msg/s, rate_worker = {rate_worker:.0} msg/s, ratio = {ratio:.3} (goal >= 0.9){}",
                if ratio >= 0.9 {
                    ""
                } else {
                    "  ** BELOW GOAL **"
                }
            );
            println!(
                "        (raw with an ack task = {task:.0} msg/s; rate_worker / that = {:.3})",
                rate_worker / task
            );
        }
        _ => println!("RESULT: rate_worker = {rate_worker:.0} msg/s (raw skipped)"),
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
