//! The lineage of cache keys, for `explain` (CONTRACT §1): which events asked for a key, which
//! calls (tasks) covered it, and what became of each task at the CDN.
//!
//! Redis layout, under the key prefix:
//!
//! - `{prefix}:lineage:key:{h}:e` — list, newest first, of the last `lineage_events_per_key`
//!   events that asked for the key (`{"id","source","at"}`, id and source cut to
//!   [`MAX_FIELD`] bytes); `{h}` is the first 16 bytes of the key's SHA-256 in hex, so a long
//!   URL does not make a long Redis key;
//! - `{prefix}:lineage:key:{h}:c` — list, newest first, of the last `lineage_events_per_key`
//!   calls that covered it (`{"provider","task","attempt","at"}`);
//! - `{prefix}:lineage:task:{provider}:{task}` — hash, one per task (shared by all its keys):
//!   `state` (`done` | `fail`), `words` (the provider's), `finished` (Unix ms), `prefetch` (JSON).
//!
//! Every key expires `lineage_ttl_hours` after its last write. Bytes per cache key (measured
//! with `MEMORY USAGE` in `tests/it/explain.rs`, with every field at its bound and 10 entries
//! per list): at most [`MAX_BYTES_PER_KEY`]; a task record is shared by all the keys of its call.
//!
//! Writes are cheap and never in a purge's way: the consumer and the tracker hand notes over
//! with `try_send` ([`LineageHandle`]), one writer task pipelines them to Redis in batches, and
//! whatever cannot be written (channel full, Redis down) is counted in
//! `purge_lineage_write_failures_total{reason}` and dropped — the purge goes on regardless.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::cache_key::CacheKey;
use crate::coalesce::Origin;
use crate::metrics::LineageMetrics;

/// Longest event id, event source or task id kept (bytes).
pub const MAX_FIELD: usize = 128;
/// The measured bound of one cache key's two lists (see the module docs).
pub const MAX_BYTES_PER_KEY: u64 = 8 * 1024;
/// Notes buffered between the stages and the writer; beyond that they are dropped and counted.
pub const CHANNEL: usize = 8192;
/// Notes written in one pipeline at most.
const BATCH: usize = 256;

/// One event that asked for a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEntry {
    pub id: Option<String>,
    pub source: Option<String>,
    /// Unix ms the worker received it.
    pub at: i64,
}

/// One call that covered a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEntry {
    pub provider: String,
    pub task: String,
    /// 0 for the first call, 1 for the re-purge of a failed task.
    pub attempt: u8,
    /// Unix ms the provider accepted the call.
    pub at: i64,
}

/// A prefetch after a task was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchEntry {
    /// `submitted`, or why not: `quota`, `rate_limited`, `error`.
    pub result: String,
    /// The provider's prefetch id when submitted.
    pub id: Option<String>,
    /// URLs of the task prefetched (or not).
    pub urls: usize,
    /// Unix ms.
    pub at: i64,
}

/// What is known of a task's end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEntry {
    /// `done` or `fail`; `None` while unfinished (`process`).
    pub state: Option<String>,
    /// The provider's own words.
    pub words: Option<String>,
    /// Unix ms the worker saw it final.
    pub finished: Option<i64>,
    pub prefetch: Option<PrefetchEntry>,
}

/// One note for the writer.
#[derive(Debug, Clone)]
pub enum Note {
    /// An event asked for `keys`.
    Event {
        origin: Arc<Origin>,
        at: i64,
        keys: Vec<CacheKey>,
    },
    /// A call covered `keys`.
    Call { call: CallEntry, keys: Vec<String> },
    /// A task ended: `state` is `done` or `fail`.
    Finished {
        provider: String,
        task: String,
        state: &'static str,
        words: String,
        at: i64,
    },
    /// A prefetch after `task` was done.
    Prefetch {
        provider: String,
        task: String,
        entry: PrefetchEntry,
    },
}

/// Cuts `s` to [`MAX_FIELD`] bytes on a character boundary.
pub fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Where the lineage of keys lives; cheap to clone.
#[derive(Debug, Clone)]
pub struct LineageKeys {
    prefix: String,
}

impl LineageKeys {
    pub fn new(prefix: &str) -> Self {
        LineageKeys {
            prefix: prefix.to_string(),
        }
    }

    fn base(&self, cache_key: &str) -> String {
        let digest = Sha256::digest(cache_key.as_bytes());
        format!("{}:lineage:key:{}", self.prefix, hex::encode(&digest[..16]))
    }

    /// The events list of a cache key.
    pub fn events(&self, cache_key: &str) -> String {
        format!("{}:e", self.base(cache_key))
    }

    /// The calls list of a cache key.
    pub fn calls(&self, cache_key: &str) -> String {
        format!("{}:c", self.base(cache_key))
    }

    /// The record of a task.
    pub fn task(&self, provider: &str, task: &str) -> String {
        format!("{}:lineage:task:{provider}:{}", self.prefix, bounded(task))
    }
}

/// The stages' end of the writer's channel; cheap to clone. A handle that was never connected
/// to a writer ([`LineageHandle::disabled`]) drops every note.
#[derive(Debug, Clone)]
pub struct LineageHandle {
    tx: Option<mpsc::Sender<Note>>,
    metrics: Option<LineageMetrics>,
}

impl LineageHandle {
    /// A handle that records nothing (tests of other stages).
    pub fn disabled() -> Self {
        LineageHandle {
            tx: None,
            metrics: None,
        }
    }

    /// Hands a note over without waiting; a full channel drops it (counted as `busy`).
    pub fn note(&self, note: Note) {
        if let Some(tx) = &self.tx
            && tx.try_send(note).is_err()
            && let Some(m) = &self.metrics
        {
            m.failed("busy", 1);
        }
    }
}

/// The writer's settings.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub ttl: Duration,
    pub events_per_key: usize,
}

/// Starts the writer; it ends when every handle is dropped (after writing what it holds).
pub fn spawn_writer(
    conn: ConnectionManager,
    keys: LineageKeys,
    settings: WriterSettings,
    metrics: LineageMetrics,
) -> (LineageHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let handle = LineageHandle {
        tx: Some(tx),
        metrics: Some(metrics.clone()),
    };
    let task = tokio::spawn(write_loop(conn, keys, settings, metrics, rx));
    (handle, task)
}

async fn write_loop(
    mut conn: ConnectionManager,
    keys: LineageKeys,
    settings: WriterSettings,
    metrics: LineageMetrics,
    mut rx: mpsc::Receiver<Note>,
) {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        buf.clear();
        if rx.recv_many(&mut buf, BATCH).await == 0 {
            return;
        }
        let pipe = pipeline(&keys, &settings, &buf);
        let r: Result<(), redis::RedisError> = pipe.query_async(&mut conn).await;
        if let Err(e) = r {
            metrics.failed("redis", buf.len() as u64);
            tracing::debug!(error = %e, notes = buf.len(), "lineage not written (explain will not show it)");
        }
    }
}

/// The commands of `notes`, pipelined (not atomic: each list is trimmed and its TTL renewed).
pub fn pipeline(keys: &LineageKeys, s: &WriterSettings, notes: &[Note]) -> redis::Pipeline {
    let ttl = s.ttl.as_secs() as i64;
    let last = s.events_per_key.max(1) as isize - 1;
    let mut pipe = redis::pipe();
    let push = |pipe: &mut redis::Pipeline, list: String, json: &str| {
        pipe.lpush(&list, json)
            .ignore()
            .ltrim(&list, 0, last)
            .ignore()
            .expire(&list, ttl)
            .ignore();
    };
    for note in notes {
        match note {
            Note::Event {
                origin,
                at,
                keys: k,
            } => {
                let e = EventEntry {
                    id: origin.id.as_deref().map(bounded),
                    source: origin.source.as_deref().map(bounded),
                    at: *at,
                };
                let json = serde_json::to_string(&e).unwrap_or_default();
                for key in k {
                    push(&mut pipe, keys.events(key.as_str()), &json);
                }
            }
            Note::Call { call, keys: k } => {
                let json = serde_json::to_string(&CallEntry {
                    provider: call.provider.clone(),
                    task: bounded(&call.task),
                    attempt: call.attempt,
                    at: call.at,
                })
                .unwrap_or_default();
                for key in k {
                    push(&mut pipe, keys.calls(key), &json);
                }
            }
            Note::Finished {
                provider,
                task,
                state,
                words,
                at,
            } => {
                let k = keys.task(provider, task);
                pipe.hset_multiple(
                    &k,
                    &[
                        ("state", state.to_string()),
                        ("words", bounded(words)),
                        ("finished", at.to_string()),
                    ],
                )
                .ignore()
                .expire(&k, ttl)
                .ignore();
            }
            Note::Prefetch {
                provider,
                task,
                entry,
            } => {
                let k = keys.task(provider, task);
                let json = serde_json::to_string(entry).unwrap_or_default();
                pipe.hset(&k, "prefetch", json)
                    .ignore()
                    .expire(&k, ttl)
                    .ignore();
            }
        }
    }
    pipe
}

/// What Redis holds about one cache key: events and calls newest first, each call with its
/// task's record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub events: Vec<EventEntry>,
    pub calls: Vec<(CallEntry, TaskEntry)>,
}

/// Reads the history of `cache_key` (two round trips: the lists, then the task records).
pub async fn read(
    conn: &mut ConnectionManager,
    keys: &LineageKeys,
    cache_key: &str,
) -> Result<History, redis::RedisError> {
    let (events, calls): (Vec<String>, Vec<String>) = redis::pipe()
        .lrange(keys.events(cache_key), 0, -1)
        .lrange(keys.calls(cache_key), 0, -1)
        .query_async(conn)
        .await?;
    let events = events
        .iter()
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    let calls: Vec<CallEntry> = calls
        .iter()
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    let mut pipe = redis::pipe();
    for c in &calls {
        pipe.hgetall(keys.task(&c.provider, &c.task));
    }
    let records: Vec<std::collections::HashMap<String, String>> = if calls.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(conn).await?
    };
    let calls = calls
        .into_iter()
        .zip(records)
        .map(|(c, r)| {
            let t = TaskEntry {
                state: r.get("state").cloned(),
                words: r.get("words").cloned(),
                finished: r.get("finished").and_then(|f| f.parse().ok()),
                prefetch: r.get("prefetch").and_then(|p| serde_json::from_str(p).ok()),
            };
            (c, t)
        })
        .collect();
    Ok(History { events, calls })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_cut_on_a_character_boundary() {
        let s = "é".repeat(MAX_FIELD);
        let b = bounded(&s);
        assert!(b.len() <= MAX_FIELD && b.len() >= MAX_FIELD - 1);
        assert!(b.chars().all(|c| c == 'é'));
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn key_names_are_short_whatever_the_url() {
        let k = LineageKeys::new("p");
        let long = format!("https://www.example.com/{}", "a".repeat(4000));
        assert_eq!(k.events(&long).len(), "p:lineage:key::e".len() + 32);
        assert_ne!(k.events(&long), k.events("https://www.example.com/b"));
        assert_eq!(
            k.task("cdn", &"t".repeat(1000)).len(),
            "p:lineage:task:cdn:".len() + MAX_FIELD
        );
    }
}
