//! `explain` latency bench (issue 13, goal: p99 ≤ 100 ms over 10,000 keys).
//!
//! Writes the lineage of 10,000 cache keys into Redis under a fresh key prefix the way the
//! worker does (`lineage::pipeline`: 10 events and 2 calls per key, task records with a state
//! and a prefetch, 25 keys per task), then times `Explainer::explain` — URL normalization,
//! both lists, the task records — for 2,000 keys picked at random, one after another, and
//! prints p50/p99/max and the `MEMORY USAGE` of one key's lists. Deletes its keys afterwards.
//!
//! Needs Redis on 127.0.0.1:6379. Knobs (env): `EXPLAIN_KEYS` (10000), `EXPLAIN_QUERIES`
//! (2000). Run: `cargo bench --bench explain`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use purge_worker::cache_key::CacheKey;
use purge_worker::coalesce::Origin;
use purge_worker::config::{Config, RawConfig};
use purge_worker::tracking::explain::Explainer;
use purge_worker::tracking::lineage::{
    self, CallEntry, LineageKeys, Note, PrefetchEntry, WriterSettings,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn url(i: usize) -> String {
    format!("https://www.example.com/articles/{i}/index.html")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = env_usize("EXPLAIN_KEYS", 10_000);
    let queries = env_usize("EXPLAIN_QUERIES", 2_000);
    let prefix = format!("bench-explain-{}", std::process::id());
    let toml = format!(
        "[redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{prefix}\"\n\
         [[providers]]\nname = \"cdn\"\nkind = \"tencent-v3\"\nsecret_id = \"AKID\"\nsecret_key = \"k\"\n\
         [[providers.domains]]\nhost = \"www.example.com\"\n"
    );
    let config = Config::from_raw(toml::from_str::<RawConfig>(&toml)?)?;
    let keys = LineageKeys::new(&prefix);
    let settings = WriterSettings {
        ttl: Duration::from_secs(3600),
        events_per_key: 10,
    };
    let client = redis::Client::open(REDIS_URL)?;
    let mut conn = client
        .get_connection_manager()
        .await
        .context("Redis on 127.0.0.1:6379")?;

    let t0 = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    for start in (0..n).step_by(250) {
        let mut notes = Vec::new();
        let batch: Vec<usize> = (start..(start + 250).min(n)).collect();
        for e in 0..10 {
            notes.push(Note::Event {
                origin: Arc::new(Origin {
                    id: Some(format!("event-{start}-{e}")),
                    source: Some("cms-publisher".into()),
                }),
                at: now + e,
                keys: batch
                    .iter()
                    .map(|&i| CacheKey::from_normalized(&url(i)))
                    .collect(),
            });
        }
        for chunk in batch.chunks(25) {
            for attempt in 0..2u8 {
                let task = format!("task-{}-{attempt}", chunk[0]);
                notes.push(Note::Call {
                    call: CallEntry {
                        provider: "cdn".into(),
                        task: task.clone(),
                        attempt,
                        at: now,
                    },
                    keys: chunk.iter().map(|&i| url(i)).collect(),
                });
                notes.push(Note::Finished {
                    provider: "cdn".into(),
                    task: task.clone(),
                    state: if attempt == 0 { "fail" } else { "done" },
                    words: if attempt == 0 { "fail" } else { "done" }.into(),
                    at: now + 2000,
                });
                notes.push(Note::Prefetch {
                    provider: "cdn".into(),
                    task,
                    entry: PrefetchEntry {
                        result: "submitted".into(),
                        id: Some("prefetch-1".into()),
                        urls: chunk.len(),
                        at: now + 2100,
                    },
                });
            }
        }
        let () = lineage::pipeline(&keys, &settings, &notes)
            .query_async(&mut conn)
            .await?;
    }
    println!("wrote the lineage of {n} keys in {:.2?}", t0.elapsed());

    let explainer = Explainer::connect(config.redis.url.expose(), config.explain_sources())?;
    // Warm the connection.
    explainer.explain(&url(0)).await?;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut times = Vec::with_capacity(queries);
    for _ in 0..queries {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = (rng % n as u64) as usize;
        let t = Instant::now();
        let e = explainer.explain(&url(i)).await?;
        times.push(t.elapsed());
        anyhow::ensure!(e.events.len() == 10 && e.calls.len() == 2, "key {i}: {e:?}");
    }
    times.sort();
    let q = |f: f64| times[((times.len() as f64 * f).ceil() as usize).saturating_sub(1)];
    let mem: u64 = {
        let mut total = 0;
        for k in [keys.events(&url(0)), keys.calls(&url(0))] {
            let m: u64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            total += m;
        }
        total
    };
    println!(
        "explain over {n} keys, {queries} queries: p50 {:.2?}, p99 {:.2?}, max {:.2?} (goal p99 <= 100 ms); lineage of one key: {mem} bytes",
        q(0.5),
        q(0.99),
        q(1.0)
    );

    // Clean up: every key under the prefix.
    let pattern = format!("{prefix}:*");
    let found: Vec<String> = {
        let mut out = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            out.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        out
    };
    for chunk in found.chunks(500) {
        let _: i64 = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await?;
    }
    anyhow::ensure!(q(0.99) <= Duration::from_millis(100), "p99 over the goal");
    Ok(())
}
