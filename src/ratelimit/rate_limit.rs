//! `rate_limits` entries: `"300/5m"` means at most 300 calls in any sliding 5 minutes.

use std::time::Duration;

use super::MAX_RATE_WINDOW_SECS;

/// "At most `limit` calls in any sliding window of `window`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Parses `"300/5m"`, `"20/s"`, `"1200/1m"`, `"100/10s"`, `"5000/1h"`. The count is 1 to
    /// 4294967295 and the window 1 s to [`MAX_RATE_WINDOW_SECS`]; anything else is refused before
    /// any arithmetic can overflow.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (count, window) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not of the form COUNT/WINDOW such as \"300/5m\""))?;
        let count = count.trim();
        let limit: u32 = count.parse().map_err(|_| {
            format!(
                "`{count}` in `{s}` is not a whole number from 1 to {}",
                u32::MAX
            )
        })?;
        if limit == 0 {
            return Err(format!("`{s}` allows no calls at all"));
        }
        let window = window.trim();
        let unit_at = window
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| format!("`{window}` in `{s}` has no unit (s, m or h)"))?;
        let (n, unit) = window.split_at(unit_at);
        let too_long = || {
            format!(
                "the window of `{s}` is out of range: must be between 1s and {MAX_RATE_WINDOW_SECS}s (7 days)"
            )
        };
        let n: u64 = if n.is_empty() {
            1
        } else {
            n.parse().map_err(|_| too_long())?
        };
        let unit_secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(format!("unit `{unit}` in `{s}` is not s, m or h")),
        };
        let secs = n
            .checked_mul(unit_secs)
            .filter(|&secs| secs <= MAX_RATE_WINDOW_SECS)
            .ok_or_else(too_long)?;
        if secs == 0 {
            return Err(format!("`{s}` has an empty window"));
        }
        Ok(RateLimit {
            limit,
            window: Duration::from_secs(secs),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn huge_windows_and_counts_are_refused_not_overflowed() {
        for s in [
            "1/99999999999999999999h",
            "1/18446744073709551615h",
            "1/5124095576030432h",
            "1/169h",
            "99999999999/s",
        ] {
            let e = RateLimit::parse(s).unwrap_err();
            assert!(
                e.contains("range") || e.contains("whole number"),
                "{s}: {e}"
            );
        }
        assert_eq!(
            RateLimit::parse("1/168h").unwrap().window,
            Duration::from_secs(MAX_RATE_WINDOW_SECS)
        );
        assert!(RateLimit::parse("1/1000000000000d").is_err());
    }
}
