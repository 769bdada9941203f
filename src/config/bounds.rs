//! Upper bounds of numeric config values. Every number in the file meets `Instant` arithmetic,
//! an allocation, a semaphore or a Redis script somewhere, so each is refused outside a range the
//! worker can handle (exit 2, naming the key and the range) instead of overflowing at run time.

use std::fmt::Display;
use std::time::Duration;

use super::{ConfigError, invalid};

/// Longest value of any `*_ms` key: one day. Linger, drain, retry and timeout durations beyond a
/// day are mistakes (a unit slip), and a day added to any `Instant` can never overflow.
pub const MAX_DURATION_MS: u64 = 24 * 3600 * 1000;
pub use crate::ratelimit::MAX_RATE_WINDOW_SECS;
/// Most items per call (`*_per_call`): far above any API's batch limit, and small enough that a
/// batch's buffers are sized without risk.
pub const MAX_PER_CALL: usize = 100_000;
/// Most items per day (`*_per_day`): exact in the doubles Redis scripts compute with (2^53),
/// with room for sums.
pub const MAX_PER_DAY: u64 = 1_000_000_000_000;
/// Most calls in flight per provider (`max_in_flight`).
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Most `max_attempts`: an item's retries alone must end somewhere.
pub const MAX_ATTEMPTS: u32 = 1000;
/// Largest `batching.max_event_bytes`: RabbitMQ's own hard ceiling on a message (512 MiB).
pub const MAX_EVENT_BYTES: usize = 512 << 20;
/// `quota_sync_interval_ms` unless configured (5 minutes).
pub const DEFAULT_QUOTA_SYNC_INTERVAL_MS: u64 = 300_000;
/// Shortest `quota_sync_interval_ms`: the quota query spends the API's rate budget too.
pub const MIN_QUOTA_SYNC_INTERVAL_MS: u64 = 1_000;

/// `value` (or `default` when unset) if it lies in `min..=max`, else an error naming `key` and
/// the allowed range.
pub(super) fn in_range<T: PartialOrd + Display + Copy>(
    key: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(invalid(
            key,
            format!("{v} is out of range: must be between {min} and {max}"),
        ));
    }
    Ok(v)
}

/// A `*_ms` key as a duration of at least `min_ms` and at most [`MAX_DURATION_MS`] (one day).
pub(super) fn millis(
    key: &str,
    value: Option<u64>,
    default: u64,
    min_ms: u64,
) -> Result<Duration, ConfigError> {
    in_range(key, value, default, min_ms, MAX_DURATION_MS)
        .map(Duration::from_millis)
        .map_err(|e| match e {
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key,
                reason: format!("{reason} (milliseconds, at most one day)"),
            },
            other => other,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_the_key_and_the_range() {
        let e = millis("batching.max_linger_ms", Some(u64::MAX), 500, 0).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("batching.max_linger_ms"), "{text}");
        assert!(text.contains("between 0 and 86400000"), "{text}");
        assert_eq!(
            millis("x", None, 500, 0).unwrap(),
            Duration::from_millis(500)
        );
        assert!(millis("x", Some(0), 500, 1).is_err());
        assert_eq!(in_range("k", Some(7usize), 1, 1, 10).unwrap(), 7);
        assert!(in_range("k", Some(11usize), 1, 1, 10).is_err());
    }
}
