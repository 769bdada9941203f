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

use crate::provider::Kind;

mod admit;
pub use admit::Admission;

const SECS_PER_DAY: i64 = 86_400;
/// Bucket width of the rolling window.
pub const ROLLING_BUCKET_SECS: i64 = 300;

/// Rolling reserve over a hash of bucket-start → count: drop buckets that no longer count, grant
/// min(want, limit - sum), add it to the current bucket. Returns {granted, used, bucket, free_at}
/// where free_at is when the oldest counted bucket stops counting (now when none counts).
const ROLLING_RESERVE_LUA: &str = r#"
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local b = tonumber(ARGV[4])
local w = tonumber(ARGV[5])
local horizon = now - w - b
local used = 0
local oldest = nil
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local start = tonumber(all[i])
  local n = tonumber(all[i + 1])
  if start <= horizon or n <= 0 then
    redis.call('HDEL', KEYS[1], all[i])
  else
    used = used + n
    if oldest == nil or start < oldest then oldest = start end
  end
end
local grant = math.min(want, limit - used)
if grant < 0 then grant = 0 end
local cur = now - (now % b)
if grant > 0 then
  redis.call('HINCRBY', KEYS[1], cur, grant)
  used = used + grant
  if oldest == nil or cur < oldest then oldest = cur end
  redis.call('EXPIRE', KEYS[1], w + 2 * b)
end
local free_at = now
if oldest ~= nil then free_at = oldest + b + w end
return {grant, used, cur, free_at}
"#;

/// Rolling refund: give back up to n from the reservation's bucket, never below zero.
const ROLLING_REFUND_LUA: &str = r#"
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local r = math.min(tonumber(ARGV[2]), n)
if r > 0 then n = redis.call('HINCRBY', KEYS[1], ARGV[1], -r) end
return n
"#;

/// How a provider counts its daily allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaWindow {
    /// A calendar day that starts at `quota_utc_offset` midnight (Tencent).
    Day,
    /// Any 24 hours (Wangsu): what was spent comes back 24 hours later.
    Rolling24h,
}

impl QuotaWindow {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaWindow::Day => "day",
            QuotaWindow::Rolling24h => "rolling-24h",
        }
    }

    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(QuotaWindow::Day),
            "rolling-24h" => Some(QuotaWindow::Rolling24h),
            _ => None,
        }
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

/// Atomic reserve: grant min(want, limit - used), never below zero. Returns {granted, used}.
const RESERVE_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local grant = math.min(want, limit - used)
if grant < 0 then grant = 0 end
if grant > 0 then
  used = redis.call('INCRBY', KEYS[1], grant)
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
end
return {grant, used}
"#;

/// Refund: give back up to n, never below zero. Returns the new count.
const REFUND_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.min(tonumber(ARGV[1]), used)
if n > 0 then used = redis.call('DECRBY', KEYS[1], n) end
return used
"#;

/// Raise the counter to the limit (the provider said the day's quota is gone, whatever we counted).
const EXHAUST_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if used < limit then
  redis.call('SET', KEYS[1], limit)
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
  used = limit
end
return used
"#;

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
    /// Items granted (≤ asked).
    pub granted: u64,
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
    admit: admit::AdmitScripts,
}

impl std::fmt::Debug for QuotaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl QuotaStore {
    /// Connects lazily: Redis being down at start-up is a readiness problem, not a crash. The
    /// connection manager reconnects by itself; each command fails fast (2 s) while Redis is away.
    pub fn connect(url: &str, key_prefix: &str) -> Result<QuotaStore, QuotaError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.get_connection_manager_lazy(config)?;
        Ok(QuotaStore {
            conn,
            prefix: key_prefix.to_string(),
            reserve: Script::new(RESERVE_LUA),
            refund: Script::new(REFUND_LUA),
            exhaust: Script::new(EXHAUST_LUA),
            rolling_reserve: Script::new(ROLLING_RESERVE_LUA),
            rolling_refund: Script::new(ROLLING_REFUND_LUA),
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
        want: u64,
        now_unix: i64,
    ) -> Result<Reservation, QuotaError> {
        let key = self.rolling_key(provider, kind);
        let (granted, used, bucket, free_at): (u64, u64, i64, i64) = self
            .rolling_reserve
            .key(&key)
            .arg(limit)
            .arg(want)
            .arg(now_unix)
            .arg(ROLLING_BUCKET_SECS)
            .arg(SECS_PER_DAY)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Reservation {
            granted,
            used,
            free_at,
            key,
            bucket: Some(bucket),
        })
    }

    /// Reserves up to `want` items of the window's `limit`.
    pub async fn reserve(
        &self,
        provider: &str,
        kind: Kind,
        limit: u64,
        want: u64,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Reservation, QuotaError> {
        if policy.window == QuotaWindow::Rolling24h {
            return self.rolling(provider, kind, limit, want, now_unix).await;
        }
        let offset = policy.utc_offset_secs;
        let key = self.key(provider, kind, day_of(now_unix, offset));
        let free_at = next_reset(now_unix, offset);
        let (granted, used): (u64, u64) = self
            .reserve
            .key(&key)
            .arg(limit)
            .arg(want)
            .arg(free_at + SECS_PER_DAY)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Reservation {
            granted,
            used,
            free_at,
            key,
            bucket: None,
        })
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
            let r = self.rolling(provider, kind, limit, limit, now_unix).await?;
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
            let r = self.rolling(provider, kind, 0, 0, now_unix).await?;
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
