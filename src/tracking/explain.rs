//! `purge-worker explain URL` and `GET /explain?url=`: the URL normalized exactly as the worker
//! does (cache key and routing, the domain's `ignore_query`), and what [`super::lineage`] holds
//! about that key — the events that asked for it, the calls that covered it, each task's state
//! in the provider's words (`done`, `fail`, `process`) and when it finished, and the prefetch.

use std::fmt::Write as _;
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Serialize;

use super::lineage::{self, LineageKeys};
use crate::cache_key::{self, ItemError};
use crate::routing::Router;

/// Why a URL cannot be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Not a URL the worker would purge (the same refusal the worker gives).
    #[error("{0}")]
    BadUrl(#[from] ItemError),
    #[error("cannot read the lineage from Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// One event, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub id: Option<String>,
    pub source: Option<String>,
    /// RFC 3339, UTC.
    pub received_at: String,
}

/// A prefetch, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct PrefetchView {
    pub result: String,
    pub id: Option<String>,
    pub urls: usize,
    pub at: String,
}

/// One call and its task, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub provider: String,
    pub task_id: String,
    /// 0: the first call; 1: the re-purge of a failed task.
    pub attempt: u8,
    pub submitted_at: String,
    /// `done`, `fail`, or `process` while the worker has not seen it final.
    pub state: String,
    /// The provider's own words, when it answered.
    pub provider_words: Option<String>,
    pub finished_at: Option<String>,
    pub prefetch: Option<PrefetchView>,
}

/// The answer of `explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub url: String,
    pub cache_key: String,
    pub provider: String,
    /// Whether anything is known of this key (within `tracking.lineage_ttl_hours`).
    pub recorded: bool,
    /// Newest first.
    pub events: Vec<EventView>,
    /// Newest first.
    pub calls: Vec<CallView>,
    pub lineage_ttl_hours: u64,
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Reads lineage for URLs; cheap to clone.
#[derive(Clone)]
pub struct Explainer {
    router: Router,
    providers: Vec<String>,
    keys: LineageKeys,
    conn: ConnectionManager,
    ttl_hours: u64,
}

/// What an [`Explainer`] reads: the worker's routing (to form cache keys as it does), its
/// providers' names in routing order, the Redis key prefix and how long lineage is kept.
#[derive(Debug, Clone)]
pub struct Sources {
    pub router: Router,
    pub providers: Vec<String>,
    pub key_prefix: String,
    pub lineage_ttl: Duration,
}

impl std::fmt::Debug for Explainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Explainer").finish_non_exhaustive()
    }
}

impl Explainer {
    /// Reads the lineage `sources` describe from the Redis at `redis_url` (connects lazily).
    pub fn connect(redis_url: &str, sources: Sources) -> Result<Explainer, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        let c = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        Ok(Explainer {
            router: sources.router,
            providers: sources.providers,
            keys: LineageKeys::new(&sources.key_prefix),
            conn: client.get_connection_manager_lazy(c)?,
            ttl_hours: sources.lineage_ttl.as_secs() / 3600,
        })
    }

    /// The history of `url`'s cache key.
    pub async fn explain(&self, url: &str) -> Result<Explanation, ExplainError> {
        let (route, key) = cache_key::normalize(url, &self.router)?;
        let h = lineage::read(&mut self.conn.clone(), &self.keys, key.as_str()).await?;
        let events = h
            .events
            .into_iter()
            .map(|e| EventView {
                id: e.id,
                source: e.source,
                received_at: time(e.at),
            })
            .collect::<Vec<_>>();
        let calls = h
            .calls
            .into_iter()
            .map(|(c, t)| CallView {
                provider: c.provider,
                task_id: c.task,
                attempt: c.attempt,
                submitted_at: time(c.at),
                state: t.state.unwrap_or_else(|| "process".into()),
                provider_words: t.words,
                finished_at: t.finished.map(time),
                prefetch: t.prefetch.map(|p| PrefetchView {
                    result: p.result,
                    id: p.id,
                    urls: p.urls,
                    at: time(p.at),
                }),
            })
            .collect::<Vec<_>>();
        Ok(Explanation {
            url: url.to_string(),
            cache_key: key.as_str().to_string(),
            provider: self
                .providers
                .get(route.provider)
                .cloned()
                .unwrap_or_default(),
            recorded: !events.is_empty() || !calls.is_empty(),
            events,
            calls,
            lineage_ttl_hours: self.ttl_hours,
        })
    }
}

/// The text `explain` prints.
pub fn render(e: &Explanation) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cache key {} (provider {})", e.cache_key, e.provider);
    if !e.recorded {
        let _ = writeln!(
            s,
            "no purge recorded for this cache key in the last {} hours (tracking.lineage_ttl_hours)",
            e.lineage_ttl_hours
        );
        return s;
    }
    let _ = writeln!(
        s,
        "events that asked for it ({}, newest first):",
        e.events.len()
    );
    for ev in &e.events {
        let _ = writeln!(
            s,
            "  {}  id={}  source={}",
            ev.received_at,
            ev.id.as_deref().unwrap_or("-"),
            ev.source.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        s,
        "calls that covered it ({}, newest first):",
        e.calls.len()
    );
    for c in &e.calls {
        let again = if c.attempt > 0 { " (purged again)" } else { "" };
        let _ = write!(
            s,
            "  {}  provider {} task {}{again}: {}",
            c.submitted_at, c.provider, c.task_id, c.state
        );
        if let Some(w) = c.provider_words.as_deref().filter(|w| *w != c.state) {
            let _ = write!(s, " (provider: {w})");
        }
        if let Some(f) = &c.finished_at {
            let _ = write!(s, ", finished {f}");
        }
        let _ = writeln!(s);
        if let Some(p) = &c.prefetch {
            let _ = writeln!(
                s,
                "    prefetch {} at {} ({} urls{})",
                p.result,
                p.at,
                p.urls,
                p.id.as_deref()
                    .map(|i| format!(", id {i}"))
                    .unwrap_or_default()
            );
        }
    }
    s
}
