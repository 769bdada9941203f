//! The daily quota in Redis: reserve before a call, refund when the call certainly did not happen.
//!
//! Two ways of counting a day ([`QuotaWindow`]):
//!
//! - **Calendar day** (Tencent): one counter per provider × kind × provider-local day,
//!   `{key_prefix}:quota:{provider}:{kind}:{YYYY-MM-DD}`. Keys expire a day after their day ends,
//!   so they never vanish while still counting.
//! - **Rolling 24 hours** (Wangsu): one hash per provider × kind,
//!   `{key_prefix}:quota:{provider}:{kind}:rolling`, counting reservations in 5-minute buckets.
//!   A bucket counts until 24 hours after it *ends*, so what is counted is never less than what
//!   the provider counts in any 24 hours (freeing is at most 5 minutes late, never early).
//!
//! Reserving is one Lua script (read, cap, increment, set expiry) so concurrent workers can never
//! together exceed the limit. A partial grant is normal: the caller submits what fits and parks
//! the rest until the reservation's `free_at`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use self::lua::{
    EXHAUST_LUA, RAISE_LUA, REFUND_LUA, RESERVE_LUA, ROLLING_RAISE_LUA, ROLLING_REFUND_LUA,
    ROLLING_RESERVE_LUA,
};
use crate::purge::Kind;

mod lua;

mod admit;
pub use admit::Admission;

mod raise;
pub use raise::Raised;

/// The largest count a raise sets (2^53: Lua's numbers are doubles, exact up to there).
const MAX_COUNT: u64 = 1 << 53;

const SECS_PER_DAY: i64 = 86_400;
/// Bucket width of the rolling window.
pub const ROLLING_BUCKET_SECS: i64 = 300;

/// How a provider counts its daily allowance. The config spelling (`day`, `rolling-24h`) is what
/// [`QuotaWindow::as_str`] gives and [`str::parse`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString)]
pub enum QuotaWindow {
    /// A calendar day that starts at `quota_utc_offset` midnight (Tencent).
    #[strum(serialize = "day")]
    Day,
    /// Any 24 hours (Wangsu): what was spent comes back 24 hours later.
    #[strum(serialize = "rolling-24h")]
    Rolling24h,
}

impl QuotaWindow {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How a provider's allowance is counted: the window and, for calendar days, the day boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaPolicy {
    pub window: QuotaWindow,
    /// Seconds east of UTC of the day boundary (calendar days only).
    pub utc_offset_secs: i32,
}

impl QuotaPolicy {
    /// When a calendar day's quota resets (for a rolling window: 24 hours from now at the latest).
    pub fn next_reset(&self, now_unix: i64) -> i64 {
        match self.window {
            QuotaWindow::Day => next_reset(now_unix, self.utc_offset_secs),
            QuotaWindow::Rolling24h => now_unix + SECS_PER_DAY + ROLLING_BUCKET_SECS,
        }
    }
}

/// What is spent and when some of it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    /// Unix time when the quota resets (calendar day) or its oldest spending stops counting
    /// (rolling window; `now` when nothing counts).
    pub free_at: i64,
}

/// What one call asks of a window, by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Interactive items: granted up to the whole limit.
    pub interactive: u64,
    /// Bulk items: granted only while the window's total use stays within `bulk_limit`.
    pub bulk: u64,
    /// [`bulk_limit`] of the window's limit and the provider's reserve.
    pub bulk_limit: u64,
}

impl Want {
    /// Interactive items only.
    pub fn interactive(n: u64) -> Want {
        Want {
            interactive: n,
            bulk: 0,
            bulk_limit: 0,
        }
    }
}

/// The part of a window's `limit` bulk items may bring the total use to: `limit × (1 − reserve)`,
/// rounded down, in integer arithmetic (the reserve is taken in parts per million, so 0.2 of
/// 10,000 is exactly 2,000 whatever the float says).
pub fn bulk_limit(limit: u64, reserve: f64) -> u64 {
    let ppm = if reserve.is_finite() {
        (reserve.clamp(0.0, 1.0) * 1e6).round() as u128
    } else {
        0
    };
    let kept = (u128::from(limit) * ppm).div_ceil(1_000_000);
    limit.saturating_sub(kept.min(u128::from(limit)) as u64)
}

/// Failures talking to Redis. The dispatcher fails closed on them: no reservation, no call.
#[derive(Debug, thiserror::Error)]
#[error("Redis quota operation failed: {0}")]
pub struct QuotaError(#[from] redis::RedisError);

/// The provider-local day number (days since 1970-01-01 in that offset) of a Unix time.
pub fn day_of(now_unix: i64, utc_offset_secs: i32) -> i64 {
    (now_unix + utc_offset_secs as i64).div_euclid(SECS_PER_DAY)
}

/// The Unix time at which the provider-local day containing `now_unix` ends.
pub fn next_reset(now_unix: i64, utc_offset_secs: i32) -> i64 {
    (day_of(now_unix, utc_offset_secs) + 1) * SECS_PER_DAY - utc_offset_secs as i64
}

/// `YYYY-MM-DD` of a day number.
pub fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * SECS_PER_DAY, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{day}"))
}

/// Seconds since the Unix epoch from the system clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A successful reservation: how much was granted and the counter it lives in (so a refund after
/// midnight goes back to the right day, or bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Items granted (≤ asked), both classes: the interactive ones first.
    pub granted: u64,
    /// Of `granted`, the bulk items.
    pub granted_bulk: u64,
    /// The window's count after this reservation.
    pub used: u64,
    /// When quota comes back (see [`Usage::free_at`]).
    pub free_at: i64,
    key: String,
    /// The rolling window's bucket; `None` for a calendar-day counter.
    bucket: Option<i64>,
}

/// Handle to the quota counters; cheap to clone.
#[derive(Clone)]
pub struct QuotaStore {
    conn: ConnectionManager,
    prefix: String,
    reserve: Script,
    refund: Script,
    exhaust: Script,
    rolling_reserve: Script,
    rolling_refund: Script,
    raise: Script,
    rolling_raise: Script,
    admit: admit::AdmitScripts,
}

impl std::fmt::Debug for QuotaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A reconnecting Redis connection, opened lazily (Redis being down at start-up is a readiness
/// problem, not a crash); each command fails fast (2 s) while Redis is away. Every Redis user of
/// the worker connects through this.
pub fn connect_lazy(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    client.get_connection_manager_lazy(config)
}

impl QuotaStore {
    /// Connects lazily: Redis being down at start-up is a readiness problem, not a crash. The
    /// connection manager reconnects by itself; each command fails fast (2 s) while Redis is away.
    pub fn connect(url: &str, key_prefix: &str) -> Result<QuotaStore, QuotaError> {
        let conn = connect_lazy(url)?;
        Ok(QuotaStore {
            conn,
            prefix: key_prefix.to_string(),
            reserve: Script::new(RESERVE_LUA),
            refund: Script::new(REFUND_LUA),
            exhaust: Script::new(EXHAUST_LUA),
            rolling_reserve: Script::new(ROLLING_RESERVE_LUA),
            rolling_refund: Script::new(ROLLING_REFUND_LUA),
            raise: Script::new(RAISE_LUA),
            rolling_raise: Script::new(ROLLING_RAISE_LUA),
            admit: admit::AdmitScripts::new(),
        })
    }

    /// The counter key for a provider, kind and day.
    pub fn key(&self, provider: &str, kind: Kind, day: i64) -> String {
        format!(
            "{}:quota:{}:{}:{}",
            self.prefix,
            provider,
            kind,
            day_label(day)
        )
    }

    /// The rolling window's hash key for a provider and kind.
    pub fn rolling_key(&self, provider: &str, kind: Kind) -> String {
        format!("{}:quota:{}:{}:rolling", self.prefix, provider, kind)
    }

    async fn rolling(
        &self,
        provider: &str,
        kind: Kind,
        limit: u64,
        want: Want,
        now_unix: i64,
    ) -> Result<Reservation, QuotaError> {
        let key = self.rolling_key(provider, kind);
        let (interactive, bulk, used, bucket, free_at): (u64, u64, u64, i64, i64) = self
            .rolling_reserve
            .key(&key)
            .arg(limit)
            .arg(want.interactive)
            .arg(want.bulk)
            .arg(want.bulk_limit.min(limit))
            .arg(now_unix)
            .arg(ROLLING_BUCKET_SECS)
            .arg(SECS_PER_DAY)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Reservation {
            granted: interactive + bulk,
            granted_bulk: bulk,
            used,
            free_at,
            key,
            bucket: Some(bucket),
        })
    }

    /// Reserves up to `want` interactive items of the window's `limit`.
    pub async fn reserve(
        &self,
        provider: &str,
        kind: Kind,
        limit: u64,
        want: u64,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Reservation, QuotaError> {
        let want = Want {
            interactive: want,
            bulk: 0,
            bulk_limit: limit,
        };
        self.reserve_classes(provider, kind, limit, want, now_unix, policy)
            .await
    }

    /// Reserves for one call of both classes in one script: interactive items up to the window's
    /// `limit`, then bulk items while the window's total use stays within `want.bulk_limit`.
    pub async fn reserve_classes(
        &self,
        provider: &str,
        kind: Kind,
        limit: u64,
        want: Want,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Reservation, QuotaError> {
        if policy.window == QuotaWindow::Rolling24h {
            return self.rolling(provider, kind, limit, want, now_unix).await;
        }
        let offset = policy.utc_offset_secs;
        let key = self.key(provider, kind, day_of(now_unix, offset));
        let free_at = next_reset(now_unix, offset);
        let (interactive, bulk, used): (u64, u64, u64) = self
            .reserve
            .key(&key)
            .arg(limit)
            .arg(want.interactive)
            .arg(want.bulk)
            .arg(want.bulk_limit.min(limit))
            .arg(free_at + SECS_PER_DAY)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Reservation {
            granted: interactive + bulk,
            granted_bulk: bulk,
            used,
            free_at,
            key,
            bucket: None,
        })
    }

    /// What bulk items may still take of the window now: `bulk_limit(limit, reserve)` minus the
    /// window's total use (never below zero). For previews (`plan`) and dashboards; the reserve
    /// itself is always decided by the reservation script.
    pub async fn bulk_left(
        &self,
        provider: &str,
        kind: Kind,
        limit: u64,
        reserve: f64,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<u64, QuotaError> {
        let used = self.used(provider, kind, now_unix, policy).await?.used;
        Ok(bulk_limit(limit, reserve).saturating_sub(used))
    }

    /// Gives back `n` items of a reservation whose call certainly did not happen.
    pub async fn refund(&self, reservation: &Reservation, n: u64) -> Result<u64, QuotaError> {
        let mut conn = self.conn.clone();
        Ok(match reservation.bucket {
            Some(bucket) => {
                self.rolling_refund
                    .key(&reservation.key)
                    .arg(bucket)
                    .arg(n)
                    .invoke_async(&mut conn)
                    .await?
            }
            None => {
                self.refund
                    .key(&reservation.key)
                    .arg(n)
                    .invoke_async(&mut conn)
                    .await?
            }
        })
    }

    /// Marks the window's quota as spent after the provider said so.
    pub async fn exhaust(
        &self,
        provider: &str,
        kind: Kind,
        limit: u64,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Usage, QuotaError> {
        if policy.window == QuotaWindow::Rolling24h {
            // Taking whatever is left marks the window full until its oldest spending expires.
            let r = self
                .rolling(provider, kind, limit, Want::interactive(limit), now_unix)
                .await?;
            return Ok(Usage {
                used: r.used,
                free_at: r.free_at,
            });
        }
        let offset = policy.utc_offset_secs;
        let key = self.key(provider, kind, day_of(now_unix, offset));
        let free_at = next_reset(now_unix, offset);
        let used = self
            .exhaust
            .key(&key)
            .arg(limit)
            .arg(free_at + SECS_PER_DAY)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Usage { used, free_at })
    }

    /// The window's count now (0 when nothing was reserved yet).
    pub async fn used(
        &self,
        provider: &str,
        kind: Kind,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Usage, QuotaError> {
        if policy.window == QuotaWindow::Rolling24h {
            let r = self
                .rolling(provider, kind, 0, Want::interactive(0), now_unix)
                .await?;
            return Ok(Usage {
                used: r.used,
                free_at: r.free_at,
            });
        }
        let offset = policy.utc_offset_secs;
        let key = self.key(provider, kind, day_of(now_unix, offset));
        let v: Option<u64> = self.conn.clone().get(&key).await?;
        Ok(Usage {
            used: v.unwrap_or(0),
            free_at: next_reset(now_unix, offset),
        })
    }

    /// Deletes every quota counter of `provider` that can still exist: both kinds' rolling
    /// windows and calendar-day counters from two days before to one day after today (a day's
    /// key expires a day after the day ends, and the range also covers a changed
    /// `quota_utc_offset`). Exact keys, one `DEL`: no scan over a shared Redis. Returns how many
    /// keys existed.
    pub async fn reset(&self, provider: &str, now_unix: i64) -> Result<u64, QuotaError> {
        let today = day_of(now_unix, 0);
        let mut keys = Vec::new();
        for kind in [Kind::Url, Kind::Dir] {
            keys.push(self.rolling_key(provider, kind));
            keys.extend((today - 2..=today + 1).map(|day| self.key(provider, kind, day)));
        }
        Ok(self.conn.clone().del(&keys).await?)
    }

    /// `PING` with a short timeout, for `/readyz`.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), ping).await,
            Ok(Ok(_))
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bulk_limit_keeps_the_reserve_exactly() {
        assert_eq!(bulk_limit(2000, 0.25), 1500);
        assert_eq!(bulk_limit(10_000, 0.2), 8000);
        assert_eq!(bulk_limit(100, 0.2), 80);
        assert_eq!(bulk_limit(7, 0.2), 5, "the reserve rounds up, bulk down");
        assert_eq!(bulk_limit(1000, 0.0), 1000);
        assert_eq!(bulk_limit(1000, 0.9), 100);
        assert_eq!(bulk_limit(0, 0.2), 0);
        assert_eq!(bulk_limit(u64::MAX, 0.5), u64::MAX / 2);
        assert_eq!(bulk_limit(1000, f64::NAN), 1000);
        // 0.1 + 0.2 is not 0.3 in floats; parts per million are.
        assert_eq!(bulk_limit(10, 0.1 + 0.2), 7);
    }

    #[test]
    fn day_boundaries_follow_the_offset() {
        // 2023-11-14T17:00:00Z is 01:00 on the 15th in UTC+8.
        let t = 1_699_981_200;
        assert_eq!(day_label(day_of(t, 8 * 3600)), "2023-11-15");
        assert_eq!(day_label(day_of(t, 0)), "2023-11-14");
        // The UTC+8 day ends at 16:00Z.
        assert_eq!(next_reset(t, 8 * 3600), 1_700_064_000);
        // 15:59:59Z is still the 14th in UTC+8; the reset is one second later.
        assert_eq!(next_reset(t - 3601, 8 * 3600), 1_699_977_600);
        assert_eq!(next_reset(t - 3600, 8 * 3600), 1_700_064_000);
        // Negative offsets and times just before a boundary.
        assert_eq!(day_of(-1, 0), -1);
        assert_eq!(next_reset(86_399, 0), 86_400);
    }
}
