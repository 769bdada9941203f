//! Follows every accepted purge call to completion at the CDN (DESIGN "Tracking is a stage of its
//! own"): the dispatcher hands each accepted [`Receipt`] with the cache keys it covered and the
//! arrival of the earliest event waiting on each ([`TrackerHandle::accepted`]); a tracker per
//! provider ([`spawn`]) keeps them in Redis ([`store`]), asks the provider about each task until
//! it is final within the rate budget, observes `purge_time_to_fresh_seconds`, purges the keys
//! of a failed task once more, and dead-letters them (`purge_failed_at_cdn`) if that fails too.
//!
//! Restarts and replicas: the pending tasks live in Redis, bounded ([`Settings::max_pending`])
//! and with a TTL; a replica claims due tasks with a lease (their due time moves past the lease,
//! by the server's clock), so one replica at a time asks about a task, and only the replica
//! whose `ZREM` removed a finished task records it: counts are never multiplied by replicas.
//! A replica killed mid-poll leaves its claims to come due again when the lease runs out.

pub mod explain;
pub mod lineage;
mod prefetch;
mod run;
pub mod store;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::coalesce::PendingItem;
use crate::event::Priority;
use crate::provider::{FlushType, Header, Kind, Receipt};

pub use run::{FAILED_AT_CDN, PrefetchParts, TrackerParts, spawn};

/// Default `tracking.poll_interval_ms`.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 2000;
/// Default `tracking.lineage_ttl_hours` (7 days).
pub const DEFAULT_LINEAGE_TTL_HOURS: u64 = 168;
/// Default `tracking.lineage_events_per_key`.
pub const DEFAULT_LINEAGE_EVENTS_PER_KEY: usize = 10;
/// Default `tracking.lease_ms`: how long a claimed task is another replica's to leave alone.
pub const DEFAULT_LEASE_MS: u64 = 30_000;
/// Default `tracking.max_pending`: tasks tracked per provider at once (about 1 KiB each with
/// 25 URLs; 100,000 of them are ~100 MB of Redis at worst).
pub const DEFAULT_MAX_PENDING: u64 = 100_000;
/// How long a task is asked about before the tracker gives up (the APIs keep records 30 days;
/// Tencent documents ~5 minutes network-wide).
pub const MAX_TASK_AGE: Duration = Duration::from_secs(24 * 3600);
/// Accepted calls buffered between a dispatcher and its tracker; when full, the call is not
/// tracked (it was purged; only its confirmation is lost) and a warning says so.
pub const CHANNEL: usize = 4096;

/// The tracker's settings (`[tracking]`), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How often an unfinished task is asked about.
    pub poll_interval: Duration,
    /// How long lineage of a key is kept.
    pub lineage_ttl: Duration,
    /// Most events kept per key.
    pub lineage_events_per_key: usize,
    /// The claim lease.
    pub lease: Duration,
    /// Most tasks pending per provider.
    pub max_pending: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_millis(DEFAULT_POLL_INTERVAL_MS),
            lineage_ttl: Duration::from_secs(DEFAULT_LINEAGE_TTL_HOURS * 3600),
            lineage_events_per_key: DEFAULT_LINEAGE_EVENTS_PER_KEY,
            lease: Duration::from_millis(DEFAULT_LEASE_MS),
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

impl Settings {
    /// Validates the raw values (`None` = default); `Err((key, reason))` names the bad key.
    pub fn from_raw(
        poll_interval_ms: Option<u64>,
        lineage_ttl_hours: Option<u64>,
        lineage_events_per_key: Option<usize>,
        lease_ms: Option<u64>,
        max_pending: Option<u64>,
    ) -> Result<Settings, (&'static str, String)> {
        let poll = poll_interval_ms.unwrap_or(DEFAULT_POLL_INTERVAL_MS);
        if !(100..=3_600_000).contains(&poll) {
            return Err((
                "tracking.poll_interval_ms",
                format!("{poll} is outside 100..=3600000"),
            ));
        }
        let ttl = lineage_ttl_hours.unwrap_or(DEFAULT_LINEAGE_TTL_HOURS);
        if !(1..=24 * 90).contains(&ttl) {
            return Err((
                "tracking.lineage_ttl_hours",
                format!("{ttl} is outside 1..=2160"),
            ));
        }
        let events = lineage_events_per_key.unwrap_or(DEFAULT_LINEAGE_EVENTS_PER_KEY);
        if !(1..=100).contains(&events) {
            return Err((
                "tracking.lineage_events_per_key",
                format!("{events} is outside 1..=100"),
            ));
        }
        let lease = lease_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !(1000..=3_600_000).contains(&lease) {
            return Err((
                "tracking.lease_ms",
                format!("{lease} is outside 1000..=3600000"),
            ));
        }
        let max_pending = max_pending.unwrap_or(DEFAULT_MAX_PENDING);
        if !(1..=10_000_000).contains(&max_pending) {
            return Err((
                "tracking.max_pending",
                format!("{max_pending} is outside 1..=10000000"),
            ));
        }
        Ok(Settings {
            poll_interval: Duration::from_millis(poll),
            lineage_ttl: Duration::from_secs(ttl * 3600),
            lineage_events_per_key: events,
            lease: Duration::from_millis(lease),
            max_pending,
        })
    }
}

/// One accepted call, as the dispatcher hands it over.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub task_id: String,
    pub kind: Kind,
    pub flush: FlushType,
    /// The lane's request headers (Wangsu `fileHeaders`), sent again with a re-purge.
    pub headers: Vec<Header>,
    /// `(cache key, Unix ms of the earliest event waiting on it)`.
    pub keys: Vec<(String, i64)>,
    /// Unix ms of acceptance.
    pub at_ms: i64,
    /// Every item of the call was bulk.
    pub bulk: bool,
}

/// The dispatcher's end of a tracker's channel; cheap to clone.
#[derive(Debug, Clone)]
pub struct TrackerHandle {
    tx: mpsc::Sender<Accepted>,
    provider: String,
}

impl TrackerHandle {
    /// A handle and the tracker's receiving end.
    pub fn channel(provider: &str) -> (TrackerHandle, mpsc::Receiver<Accepted>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        (
            TrackerHandle {
                tx,
                provider: provider.to_string(),
            },
            rx,
        )
    }

    /// Hands an accepted call over without waiting (the dispatcher never blocks on tracking).
    pub fn accepted(
        &self,
        receipt: &Receipt,
        kind: Kind,
        flush: FlushType,
        headers: &[Header],
        items: &[PendingItem],
    ) {
        let now = Instant::now();
        let now_ms = unix_ms();
        let keys = items
            .iter()
            .map(|it| {
                let age = now.saturating_duration_since(it.since).as_millis() as i64;
                (it.key.as_str().to_string(), now_ms - age)
            })
            .collect();
        let accepted = Accepted {
            task_id: receipt.task_id.clone(),
            kind,
            flush,
            headers: headers.to_vec(),
            keys,
            at_ms: now_ms,
            bulk: items.iter().all(|it| it.priority == Priority::Bulk),
        };
        if self.tx.try_send(accepted).is_err() {
            tracing::warn!(provider = %self.provider, task_id = %receipt.task_id,
                "tracker busy or stopped: this purge call is not followed to completion");
        }
    }
}

/// Unix time in milliseconds.
pub fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
