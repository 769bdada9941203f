//! Operator control shared by every replica through Redis: pause flags, release signals, each
//! replica's view of its providers (for `status`), and the audit trail of operator actions.
//!
//! Keys, all under `redis.key_prefix`:
//! - `{prefix}:pause:{provider}`: JSON [`Pause`] while the provider is paused; absent otherwise.
//! - `{prefix}:release:{provider}`: a counter `parked release` increments; a replica that sees it
//!   change opens its parked quota gates for that provider (a raised quota is used at once).
//! - `{prefix}:status:{provider}:{replica}`: JSON [`ReplicaState`], rewritten every
//!   [`STATUS_EVERY`] with a TTL of [`STATUS_TTL`], so a replica that is gone drops out.
//! - `{prefix}:audit`: a Redis stream (capped at [`AUDIT_MAX`] entries) of [`AuditEntry`]s.
//!
//! The state is decided by the server: a pause is one `SET`, a resume one `DEL`, and every
//! replica reads the flags of its providers in one `MGET` every [`POLL_EVERY`], so a pause takes
//! effect everywhere within that period plus one dispatcher pump.

pub mod watcher;

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tracing::info;

/// How often each replica reads the pause flags and release counters.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often each replica writes its providers' state.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How long a replica's state stays visible without a rewrite.
pub const STATUS_TTL: Duration = Duration::from_secs(10);
/// Entries kept in the audit stream (older ones are trimmed; the log keeps every line).
pub const AUDIT_MAX: usize = 10_000;
/// Longest reason kept (bytes, cut at a character boundary): it is shown by `status` and logged.
pub const MAX_REASON: usize = 500;

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
#[error("Redis: {0}")]
pub struct ControlError(#[from] redis::RedisError);

/// Why and since when a provider is paused, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub reason: String,
    /// Unix seconds.
    pub since: i64,
    /// The OS user or token name that paused it.
    pub by: String,
}

/// One replica's view of one provider, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// The replica (host and process).
    pub replica: String,
    /// `running`, `paused` or `auth_stopped`.
    pub state: String,
    /// Unix seconds until which url (first) and dir (second) quota is parked, when it is.
    pub parked_until: [Option<i64>; 2],
    /// Items waiting or in flight on this replica.
    pub pending: u64,
    /// Unix seconds of this write.
    pub updated: i64,
}

/// One audited operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `pause`, `resume`, `dlq_replay`, `parked_release`, `ingest`...
    pub action: String,
    /// The OS user or token name.
    pub who: String,
    pub why: String,
    /// What it applied to (a provider, a code filter).
    pub target: String,
    /// What it did, in numbers ("released 120 messages").
    pub outcome: String,
    /// Unix seconds.
    pub at: i64,
}

/// The operator running a command: `$USER`, else `$LOGNAME`, else `$USERNAME`, else `unknown`.
pub fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// A name for this process among the replicas: host, pid and a random suffix.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{}-{}-{:04x}",
        crate::cache_key::clip(&host, 64),
        std::process::id(),
        rand::random::<u16>()
    )
}

/// `reason` cut to [`MAX_REASON`] bytes.
pub fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

/// Handle to the control keys; cheap to clone.
#[derive(Clone)]
pub struct ControlStore {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for ControlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl ControlStore {
    /// Connects lazily (Redis may come later); each command fails fast (2 s) while it is away.
    pub fn connect(url: &str, key_prefix: &str) -> Result<ControlStore, ControlError> {
        Ok(ControlStore {
            conn: crate::quota::connect_lazy(url)?,
            prefix: key_prefix.to_string(),
        })
    }

    fn pause_key(&self, provider: &str) -> String {
        format!("{}:pause:{provider}", self.prefix)
    }

    fn release_key(&self, provider: &str) -> String {
        format!("{}:release:{provider}", self.prefix)
    }

    fn status_key(&self, provider: &str, replica: &str) -> String {
        format!("{}:status:{provider}:{replica}", self.prefix)
    }

    fn audit_key(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    /// Pauses `provider` (replacing an earlier pause's reason); returns the earlier pause.
    pub async fn pause(
        &self,
        provider: &str,
        pause: &Pause,
    ) -> Result<Option<Pause>, ControlError> {
        let json = serde_json::to_string(pause).unwrap_or_default();
        let old: Option<String> = redis::cmd("SET")
            .arg(self.pause_key(provider))
            .arg(json)
            .arg("GET")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(old.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Resumes `provider`; returns the pause it ended (`None`: it was not paused).
    pub async fn resume(&self, provider: &str) -> Result<Option<Pause>, ControlError> {
        let old: Option<String> = redis::cmd("GETDEL")
            .arg(self.pause_key(provider))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(old.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Signals every replica to open `provider`'s parked quota gates; returns the new counter.
    pub async fn signal_release(&self, provider: &str) -> Result<u64, ControlError> {
        Ok(self
            .conn
            .clone()
            .incr(self.release_key(provider), 1)
            .await?)
    }

    /// The pause flag and release counter of each provider, in one round trip. A pause flag
    /// that does not parse still counts as a pause (fail safe: an operator asked for one).
    pub async fn read(
        &self,
        providers: &[String],
    ) -> Result<Vec<(Option<Pause>, u64)>, ControlError> {
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = providers
            .iter()
            .flat_map(|p| [self.pause_key(p), self.release_key(p)])
            .collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(values
            .chunks(2)
            .map(|pair| {
                let pause = pair[0].as_deref().map(|s| {
                    serde_json::from_str(s).unwrap_or_else(|_| Pause {
                        reason: "(unreadable pause record)".into(),
                        since: 0,
                        by: "unknown".into(),
                    })
                });
                let release = pair
                    .get(1)
                    .and_then(|v| v.as_deref())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                (pause, release)
            })
            .collect())
    }

    /// Writes this replica's state of each provider with the TTL, in one pipeline.
    pub async fn write_status(
        &self,
        states: &[(String, ReplicaState)],
    ) -> Result<(), ControlError> {
        let mut pipe = redis::pipe();
        for (provider, s) in states {
            let json = serde_json::to_string(s).unwrap_or_default();
            pipe.set_ex(
                self.status_key(provider, &s.replica),
                json,
                STATUS_TTL.as_secs(),
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Every live replica's state of `provider` (a `SCAN` over this provider's status keys).
    pub async fn statuses(&self, provider: &str) -> Result<Vec<ReplicaState>, ControlError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:status:{provider}:*", self.prefix);
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        // Bounded: a SCAN pass ends when the cursor is back at 0; the cap guards a broken server.
        for _ in 0..10_000 {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut out: Vec<ReplicaState> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        out.sort_by(|a, b| a.replica.cmp(&b.replica));
        Ok(out)
    }

    /// Logs an operator action (target `audit`) and appends it to the audit stream. The log
    /// line is written first, so a Redis failure never loses the record of what was done.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), ControlError> {
        info!(target: "audit", action = %entry.action, who = %entry.who, why = %entry.why,
            on = %entry.target, outcome = %entry.outcome, "operator action");
        let json = serde_json::to_string(entry).unwrap_or_default();
        redis::cmd("XADD")
            .arg(self.audit_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(AUDIT_MAX)
            .arg("*")
            .arg("entry")
            .arg(json)
            .query_async::<String>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The last `n` audit entries, oldest first.
    pub async fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, ControlError> {
        let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.audit_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(n)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut out: Vec<AuditEntry> = raw
            .into_iter()
            .filter_map(|(_, fields)| {
                fields
                    .into_iter()
                    .find(|(k, _)| k == "entry")
                    .and_then(|(_, v)| serde_json::from_str(&v).ok())
            })
            .collect();
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded_at_a_character_boundary() {
        let long = "停".repeat(400);
        let r = bounded_reason(&long);
        assert!(r.len() <= MAX_REASON && r.len() > MAX_REASON - 3);
        assert!(long.starts_with(&r));
        assert_eq!(bounded_reason("migration"), "migration");
    }

    #[test]
    fn replica_ids_differ_between_handles() {
        let (a, b) = (replica_id(), replica_id());
        assert!(a.contains(&std::process::id().to_string()));
        // 1 in 65536 to collide; two tries make a flaky failure vanishingly rare.
        assert!(a != b || replica_id() != a);
    }
}
