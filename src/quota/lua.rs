//! The quota scripts. Each runs atomically in Redis (read, decide, increment, expire in one step),
//! so concurrent workers can never together exceed a limit, and one script decides both classes'
//! grants of a call.
//!
//! The counters hold the window's *total* use, every class together. Bulk items are granted only
//! while that total stays within the bulk limit (`limit × (1 − interactive_reserve)`, computed by
//! the caller): so anything that raises the total (the provider's own figure, spend from other
//! tools) shrinks the bulk share with no further bookkeeping.

/// Calendar-day reserve for both classes. ARGV: limit, want_interactive, want_bulk, bulk_limit,
/// expire_at. Interactive items are granted first, up to the limit; bulk items then up to the
/// bulk limit of the total (interactive grant included). Returns {granted_i, granted_b, used}.
pub(super) const RESERVE_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
local want_i = tonumber(ARGV[2])
local want_b = tonumber(ARGV[3])
local bulk_limit = tonumber(ARGV[4])
local gi = math.min(want_i, limit - used)
if gi < 0 then gi = 0 end
local gb = math.min(want_b, bulk_limit - used - gi)
if gb < 0 then gb = 0 end
if gi + gb > 0 then
  used = redis.call('INCRBY', KEYS[1], gi + gb)
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
end
return {gi, gb, used}
"#;

/// Rolling reserve over a hash of bucket-start → count: drop buckets that no longer count, then
/// grant like [`RESERVE_LUA`] against their sum and add the grant to the current bucket. ARGV:
/// limit, want_interactive, want_bulk, bulk_limit, now, bucket width, window. Returns
/// {granted_i, granted_b, used, bucket, free_at} where free_at is when the oldest counted bucket
/// stops counting (now when none counts).
pub(super) const ROLLING_RESERVE_LUA: &str = r#"
local limit = tonumber(ARGV[1])
local want_i = tonumber(ARGV[2])
local want_b = tonumber(ARGV[3])
local bulk_limit = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local b = tonumber(ARGV[6])
local w = tonumber(ARGV[7])
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
local gi = math.min(want_i, limit - used)
if gi < 0 then gi = 0 end
local gb = math.min(want_b, bulk_limit - used - gi)
if gb < 0 then gb = 0 end
local grant = gi + gb
local cur = now - (now % b)
if grant > 0 then
  redis.call('HINCRBY', KEYS[1], cur, grant)
  used = used + grant
  if oldest == nil or cur < oldest then oldest = cur end
  redis.call('EXPIRE', KEYS[1], w + 2 * b)
end
local free_at = now
if oldest ~= nil then free_at = oldest + b + w end
return {gi, gb, used, cur, free_at}
"#;

/// Rolling refund: give back up to n from the reservation's bucket, never below zero.
pub(super) const ROLLING_REFUND_LUA: &str = r#"
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local r = math.min(tonumber(ARGV[2]), n)
if r > 0 then n = redis.call('HINCRBY', KEYS[1], ARGV[1], -r) end
return n
"#;

/// Refund: give back up to n, never below zero. Returns the new count.
pub(super) const REFUND_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.min(tonumber(ARGV[1]), used)
if n > 0 then used = redis.call('DECRBY', KEYS[1], n) end
return used
"#;

/// Raise the counter to the limit (the provider said the day's quota is gone, whatever we counted).
pub(super) const EXHAUST_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if used < limit then
  redis.call('SET', KEYS[1], limit)
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
  used = limit
end
return used
"#;

/// Raise a calendar-day counter to at least ARGV[1] (the provider's own figure plus what is in
/// flight); it never goes down. ARGV: target, expire_at. Returns {before, after}.
pub(super) const RAISE_LUA: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local target = tonumber(ARGV[1])
local before = used
if target > used then
  redis.call('SET', KEYS[1], target)
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
  used = target
end
return {before, used}
"#;

/// Raise a rolling window's sum to at least ARGV[1]: buckets that no longer count are dropped as
/// in [`ROLLING_RESERVE_LUA`], and the difference goes into the current bucket, so it stops
/// counting 24 hours from now (the latest the provider's own spending can stop counting). It
/// never goes down. ARGV: target, now, bucket width, window. Returns {before, after}.
pub(super) const ROLLING_RAISE_LUA: &str = r#"
local target = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
local w = tonumber(ARGV[4])
local horizon = now - w - b
local used = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local start = tonumber(all[i])
  local n = tonumber(all[i + 1])
  if start <= horizon or n <= 0 then
    redis.call('HDEL', KEYS[1], all[i])
  else
    used = used + n
  end
end
local before = used
if target > used then
  local cur = now - (now % b)
  redis.call('HINCRBY', KEYS[1], cur, target - used)
  redis.call('EXPIRE', KEYS[1], w + 2 * b)
  used = target
end
return {before, used}
"#;
