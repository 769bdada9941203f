//! The Wangsu API's bookkeeping: the customer's token bucket, the rolling 24-hour purge quotas
//! per target, AK/SK signatures seen (replay protection) and the purge tasks.
//!
//! Pure and synchronous like the Tencent side: every method takes `now_ms`, so refill and the
//! rolling window are tested with exact times.

use std::collections::{HashMap, VecDeque};

use super::super::WangsuRequest;

/// The rolling quota window: what was spent comes back 24 hours later.
pub(crate) const QUOTA_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The customer's API token bucket (PROVIDERS.md §3.4): starts full at `burst`, refills at
/// `rate_per_min`, one token per call whatever the call's outcome.
#[derive(Debug, Default)]
struct TokenBucket {
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` until the first call (a full bucket).
    last_ms: Option<i64>,
}

impl TokenBucket {
    fn refill(&mut self, rate_per_min: u32, burst: u32, now_ms: i64) {
        let burst = f64::from(burst);
        self.tokens = match self.last_ms {
            None => burst,
            Some(last) => {
                let elapsed = (now_ms - last).max(0) as f64;
                (self.tokens + elapsed * f64::from(rate_per_min) / 60_000.0).min(burst)
            }
        };
        self.last_ms = Some(self.last_ms.map_or(now_ms, |l| l.max(now_ms)));
    }
}

/// Which rolling quota an entry spends: regex patterns count as directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum QuotaClass {
    Files,
    Dirs,
}

/// An accepted purge, for `GET /cdn/purges/{id}`.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) request: WangsuRequest,
    pub(crate) submitted_ms: i64,
    pub(crate) api_request_id: String,
}

/// Everything the Wangsu side changes while the emulator runs. One emulated customer: every
/// configured account shares the bucket and the quotas, as Wangsu's accounts of one customer do.
#[derive(Debug, Default)]
pub(crate) struct WangsuState {
    bucket: TokenBucket,
    /// Per (target, class): `(at_ms, entries)` of accepted purges in the last 24 hours.
    usage: HashMap<(String, QuotaClass), VecDeque<(i64, u64)>>,
    /// AK/SK signatures of accepted-auth POSTs and when they were first seen.
    seen_signatures: HashMap<String, i64>,
    tasks: HashMap<String, Task>,
}

impl WangsuState {
    /// Takes one token for an authenticated call. `Ok(tokens left)`, or `Err(seconds until a
    /// token is back)` (at least 1) when the bucket is empty; a refused call takes nothing.
    pub(crate) fn take_token(
        &mut self,
        rate_per_min: u32,
        burst: u32,
        now_ms: i64,
    ) -> Result<u32, u64> {
        self.bucket.refill(rate_per_min, burst, now_ms);
        if self.bucket.tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
            return Ok(self.bucket.tokens.floor() as u32);
        }
        if rate_per_min == 0 {
            return Err(60);
        }
        let missing_ms = (1.0 - self.bucket.tokens) * 60_000.0 / f64::from(rate_per_min);
        Err(((missing_ms / 1000.0).ceil() as u64).max(1))
    }

    /// Remembers an AK/SK signature; `false` when it was already used within `window_ms` (a
    /// replay). Old entries are forgotten on the way.
    pub(crate) fn first_use(&mut self, signature: &str, window_ms: i64, now_ms: i64) -> bool {
        self.seen_signatures
            .retain(|_, &mut seen| seen > now_ms - window_ms);
        if self.seen_signatures.contains_key(signature) {
            return false;
        }
        self.seen_signatures.insert(signature.to_string(), now_ms);
        true
    }

    fn window(
        &mut self,
        target: &str,
        class: QuotaClass,
        now_ms: i64,
    ) -> &mut VecDeque<(i64, u64)> {
        let window = self.usage.entry((target.to_string(), class)).or_default();
        while window
            .front()
            .is_some_and(|&(at, _)| at <= now_ms - QUOTA_WINDOW_MS)
        {
            window.pop_front();
        }
        window
    }

    /// What is left of `limit` for `target` and `class` over the last 24 hours.
    pub(crate) fn quota_left(
        &mut self,
        target: &str,
        class: QuotaClass,
        limit: u64,
        now_ms: i64,
    ) -> u64 {
        let used: u64 = self
            .window(target, class, now_ms)
            .iter()
            .map(|&(_, n)| n)
            .sum();
        limit.saturating_sub(used)
    }

    /// Spends `files` and `dirs` entries of `target`'s rolling quotas, or nothing at all when
    /// either does not fit (the whole call is refused). `Err` says which and how much is left.
    pub(crate) fn take_quota(
        &mut self,
        target: &str,
        (files, files_limit): (u64, u64),
        (dirs, dirs_limit): (u64, u64),
        now_ms: i64,
    ) -> Result<(), String> {
        for (class, n, limit, what) in [
            (QuotaClass::Files, files, files_limit, "file"),
            (QuotaClass::Dirs, dirs, dirs_limit, "directory/regex"),
        ] {
            let left = self.quota_left(target, class, limit, now_ms);
            if n > left {
                return Err(format!(
                    "The {what} purge quota of the '{target}' environment is exhausted: {n} entries requested, {left} of {limit} left in the last 24 hours."
                ));
            }
        }
        for (class, n) in [(QuotaClass::Files, files), (QuotaClass::Dirs, dirs)] {
            if n > 0 {
                self.window(target, class, now_ms).push_back((now_ms, n));
            }
        }
        Ok(())
    }

    /// Spends `n` entries of `target`'s rolling quota of `kind` from outside the API (another
    /// tool of the same customer).
    pub(crate) fn spend_elsewhere(
        &mut self,
        target: &str,
        kind: crate::provider::Kind,
        n: u64,
        now_ms: i64,
    ) {
        let class = match kind {
            crate::provider::Kind::Url => QuotaClass::Files,
            _ => QuotaClass::Dirs,
        };
        if n > 0 {
            self.window(target, class, now_ms).push_back((now_ms, n));
        }
    }

    /// Stores an accepted purge under its id.
    pub(crate) fn add_task(&mut self, task: Task) {
        self.tasks.insert(task.request.purge_id.clone(), task);
    }

    /// The purge with this id.
    pub(crate) fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn bucket_starts_full_refills_at_the_rate_and_names_the_wait() {
        let mut s = WangsuState::default();
        // 30/min = one token per 2 s; burst 3.
        assert_eq!(s.take_token(30, 3, 0), Ok(2));
        assert_eq!(s.take_token(30, 3, 0), Ok(1));
        assert_eq!(s.take_token(30, 3, 0), Ok(0));
        assert_eq!(s.take_token(30, 3, 0), Err(2));
        assert_eq!(
            s.take_token(30, 3, 1_500),
            Err(1),
            "0.75 token: 0.5 s → 1 s"
        );
        assert_eq!(s.take_token(30, 3, 2_000), Ok(0));
        // Refill never exceeds the burst.
        assert_eq!(s.take_token(30, 3, 3_600_000), Ok(2));
        assert_eq!(s.take_token(0, 3, 3_600_000), Ok(1));
    }

    #[test]
    fn signatures_are_refused_when_replayed_inside_the_window() {
        let mut s = WangsuState::default();
        assert!(s.first_use("sig", 300_000, 0));
        assert!(!s.first_use("sig", 300_000, 299_999));
        assert!(s.first_use("other", 300_000, 1));
        assert!(
            s.first_use("sig", 300_000, 300_000),
            "forgotten after the window"
        );
    }

    #[test]
    fn quotas_roll_over_24_hours_per_target_and_refuse_whole_calls() {
        let mut s = WangsuState::default();
        assert_eq!(s.take_quota("production", (4, 5), (1, 2), 0), Ok(()));
        let e = s
            .take_quota("production", (2, 5), (0, 2), 1000)
            .unwrap_err();
        assert!(e.contains("1 of 5 left"), "{e}");
        // The dirs part fits, the file part does not: nothing is spent.
        assert_eq!(s.quota_left("production", QuotaClass::Dirs, 2, 1000), 1);
        assert!(s.take_quota("production", (0, 5), (2, 2), 1000).is_err());
        assert_eq!(s.take_quota("staging", (5, 5), (2, 2), 1000), Ok(()));
        assert_eq!(s.take_quota("production", (1, 5), (1, 2), 2000), Ok(()));
        assert_eq!(s.quota_left("production", QuotaClass::Files, 5, 2000), 0);
        // The first purge (at 0) comes back at 24 h, the one at 2000 two seconds later.
        assert_eq!(
            s.quota_left("production", QuotaClass::Files, 5, QUOTA_WINDOW_MS),
            4
        );
        assert_eq!(
            s.quota_left("production", QuotaClass::Files, 5, QUOTA_WINDOW_MS + 2000),
            5
        );
    }
}
