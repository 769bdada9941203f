//! The cluster-wide rate windows: every process that shares a Redis and `key_prefix` asks one
//! Lua script before each call, so a provider's windows hold across replicas.
//!
//! Each window is an exact sliding log, a sorted set of the grants of the last `window`
//! (scored by the Redis server's clock, `TIME`, never a client's). A grant is given only when every
//! window has room, all or nothing, and each window is stretched by [`super::SAFETY_MARGIN`] like
//! the in-process pacer's plus [`GRANT_JITTER`], so the jitter between a grant and the provider
//! seeing the call (a Redis reply, a scheduler delay on another replica) cannot put `limit + 1`
//! calls into one window of the provider. A 1 s window is held as 1.05 s: 95 % of the budget. A per-provider "not before" key carries a
//! provider's `429` or `Retry-After` to every replica.
//!
//! This module only names the keys and builds the arguments; [`crate::quota`] runs the script
//! together with the quota reservation, so a call costs one round trip.
//!
//! Costs: one round trip per call (with the quota reservation); per window a sorted set of at most
//! `limit` members of about 40 bytes, expiring one window after the last grant.

use std::time::Duration;

use super::{RateLimit, SAFETY_MARGIN};

/// The rate part of the admission script. Expects `KEYS[1]` = the not-before key,
/// `KEYS[2..n+1]` the window keys, `ARGV[1]` = n, `ARGV[2]` = a member prefix unique to this
/// call, `ARGV[3..2n+2]` = pairs (limit, stretched window in µs); the rest of `KEYS` and `ARGV`
/// belong to the function `quota(KEYS, ARGV)` defined before it, which returns a table whose first
/// two elements are what it granted (interactive, bulk). Returns `{-1, wait_ms}` when a window (or the not-before) says wait,
/// otherwise `quota`'s own answer, having recorded the call in every window if it granted anything.
pub const ADMIT_RATE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local nb = tonumber(redis.call('GET', KEYS[1]) or '0')
if nb > now then return {-1, math.ceil((nb - now) / 1000)} end
local wait = 0
for i = 1, n do
  local key = KEYS[i + 1]
  local limit = tonumber(ARGV[1 + 2 * i])
  local w = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - w)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local due = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local free = tonumber(due[2]) + w - now
    if free > wait then wait = free end
  end
end
if wait > 0 then return {-1, math.ceil(wait / 1000)} end
local qk = {}
for i = n + 2, #KEYS do qk[#qk + 1] = KEYS[i] end
local qa = {}
for i = 3 + 2 * n, #ARGV do qa[#qa + 1] = ARGV[i] end
local r = quota(qk, qa)
if tonumber(r[1]) + tonumber(r[2]) > 0 then
  for i = 1, n do
    local w = tonumber(ARGV[2 + 2 * i])
    redis.call('ZADD', KEYS[i + 1], now, ARGV[2] .. ':' .. t[1] .. '.' .. t[2])
    redis.call('PEXPIRE', KEYS[i + 1], math.ceil(w / 1000) + 1000)
  end
end
return r
"#;

/// Raises a provider's not-before to `TIME + ARGV[1]` ms (never lowers it).
pub const HOLD_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + tonumber(ARGV[1]) * 1000
local nb = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_us > nb then
  redis.call('SET', KEYS[1], string.format('%.0f', until_us), 'PX', tonumber(ARGV[1]) + 1000)
end
return 0
"#;

/// Absolute stretch of every shared window, on top of the relative margin: replicas add a Redis
/// round trip between the grant and the send, which does not shrink with the window.
pub const GRANT_JITTER: Duration = Duration::from_millis(20);

/// The longest not-before one replica can impose on the others (a day, like `Retry-After`).
pub const MAX_HOLD: Duration = Duration::from_secs(86_400);

/// One provider's shared windows: the keys and arguments of its admission calls.
#[derive(Debug, Clone)]
pub struct SharedRate {
    not_before: String,
    windows: Vec<(String, u64, u64)>,
    /// Unique per process; with `calls` it makes every sorted-set member unique.
    replica: u64,
    calls: u64,
}

impl SharedRate {
    /// The windows of `provider` under `key_prefix`. `enabled = false` keeps only the not-before
    /// key's name and checks no window (a single replica that paces in-process only).
    pub fn new(key_prefix: &str, provider: &str, limits: &[RateLimit], enabled: bool) -> Self {
        let windows = if enabled {
            limits
                .iter()
                .map(|l| {
                    let window = l.window.as_secs_f64() * (1.0 + SAFETY_MARGIN);
                    let window_us = (window * 1e6).ceil() as u64 + GRANT_JITTER.as_micros() as u64;
                    let key = format!(
                        "{key_prefix}:rate:{provider}:{}/{}ms",
                        l.limit,
                        l.window.as_millis()
                    );
                    (key, l.limit as u64, window_us)
                })
                .collect()
        } else {
            Vec::new()
        };
        SharedRate {
            not_before: format!("{key_prefix}:rate:{provider}:not-before"),
            windows,
            replica: rand::random(),
            calls: 0,
        }
    }

    /// Whether any window is shared.
    pub fn enabled(&self) -> bool {
        !self.windows.is_empty()
    }

    /// The not-before key (every replica of the provider reads it).
    pub fn not_before_key(&self) -> &str {
        &self.not_before
    }

    /// Keys and arguments for one admission: the rate part, before the quota script's own.
    pub fn next_call(&mut self) -> (Vec<String>, Vec<String>) {
        self.calls = self.calls.wrapping_add(1);
        let mut keys = Vec::with_capacity(self.windows.len() + 1);
        keys.push(self.not_before.clone());
        let mut args = Vec::with_capacity(2 * self.windows.len() + 2);
        args.push(self.windows.len().to_string());
        args.push(format!("{:x}-{:x}", self.replica, self.calls));
        for (key, limit, window_us) in &self.windows {
            keys.push(key.clone());
            args.push(limit.to_string());
            args.push(window_us.to_string());
        }
        (keys, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_stretched_and_named_by_their_limit() {
        let limits = [
            RateLimit {
                limit: 10,
                window: Duration::from_secs(1),
            },
            RateLimit {
                limit: 300,
                window: Duration::from_secs(300),
            },
        ];
        let mut r = SharedRate::new("p", "cdn", &limits, true);
        let (keys, args) = r.next_call();
        assert_eq!(
            keys,
            [
                "p:rate:cdn:not-before",
                "p:rate:cdn:10/1000ms",
                "p:rate:cdn:300/300000ms"
            ]
        );
        assert_eq!(args[0], "2");
        assert_eq!(&args[2..], ["10", "1050000", "300", "309020000"]);
        let (_, again) = r.next_call();
        assert_ne!(args[1], again[1], "every call has its own member");
        let off = SharedRate::new("p", "cdn", &limits, false);
        assert!(!off.enabled());
    }
}
