//! The v2 API's limits and bookkeeping: seen Nonces, the per-minute rate window and the daily
//! quotas.
//!
//! Pure and synchronous like the API 3.0 state: every method takes `now_ms`, so the replay
//! window, the sliding minute and the UTC+8 day boundary are tested with exact times.

use std::collections::HashMap;

use super::super::state::{DayQuotas, RateWindows};
use super::V2Refusal;
use crate::provider::Kind;

/// How far `Timestamp` may be from server time (PROVIDERS.md §2.2: about 2 hours, error 4500).
pub(crate) const MAX_SKEW_SECS: i64 = 2 * 3600;
/// The sliding rate-limit window.
const RATE_WINDOW_MS: i64 = 60_000;
/// Nonce bookkeeping is pruned when it grows past this (and then past twice its size).
const NONCE_PRUNE_AT: usize = 1024;

/// The v2 API's limits (PROVIDERS.md §2.2). Quotas and the rate window are per SecretId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Limits {
    /// Most `urls.N` in one RefreshCdnUrl call (Tencent: 1000); more → `4000`/22043.
    pub urls_per_call: usize,
    /// Most `dirs.N` in one RefreshCdnDir call (Tencent: 20); more → `4000`/22045.
    pub dirs_per_call: usize,
    /// URL refreshes per account per UTC+8 day (Tencent: 10 000); more → `4000`/22044.
    pub urls_per_day: u64,
    /// Directory refreshes per account per UTC+8 day (Tencent: 100); more → `4000`/22046.
    pub dirs_per_day: u64,
    /// Calls per account in any sliding minute (seed 002: 10 000; a later revision says 1200);
    /// more → `4400`.
    pub requests_per_minute: u32,
}

impl Default for V2Limits {
    fn default() -> Self {
        V2Limits {
            urls_per_call: 1000,
            dirs_per_call: 20,
            urls_per_day: 10_000,
            dirs_per_day: 100,
            requests_per_minute: 10_000,
        }
    }
}

/// Nonces seen, rate windows and quotas of the v2 API.
#[derive(Debug, Default)]
pub(crate) struct V2State {
    /// `(SecretId, Nonce)` → the request's Timestamp; remembered while a request with that
    /// Timestamp could still pass the skew check.
    nonces: HashMap<(String, u64), i64>,
    next_prune: usize,
    /// Per account: arrival times (ms) of calls admitted by the rate limit in the last minute.
    windows: RateWindows,
    usage: DayQuotas,
}

impl V2State {
    /// Checks `Timestamp` against server time and remembers the Nonce; a Nonce seen before for
    /// the account, or a Timestamp more than [`MAX_SKEW_SECS`] off, is a replay (`4500`).
    pub(crate) fn check_replay(
        &mut self,
        account: &str,
        nonce: u64,
        timestamp: i64,
        now_ms: i64,
    ) -> Result<(), V2Refusal> {
        let now = now_ms.div_euclid(1000);
        let skew = timestamp.saturating_sub(now);
        if skew.unsigned_abs() > MAX_SKEW_SECS.unsigned_abs() {
            return Err(V2Refusal::common(
                4500,
                "InvalidParameter.Timestamp",
                format!("Timestamp is {skew} s from server time (allowed ±{MAX_SKEW_SECS} s)"),
            ));
        }
        if self.nonces.len() >= self.next_prune.max(NONCE_PRUNE_AT) {
            self.nonces
                .retain(|_, ts| ts.saturating_add(MAX_SKEW_SECS) >= now);
            self.next_prune = self.nonces.len() * 2;
        }
        let key = (account.to_string(), nonce);
        if self.nonces.contains_key(&key) {
            return Err(V2Refusal::common(
                4500,
                "InvalidParameter.Nonce",
                format!("Nonce {nonce} was already used (replay)"),
            ));
        }
        self.nonces.insert(key, timestamp);
        Ok(())
    }

    /// Admits a call under the per-account sliding-minute limit (`4400` when full). Refused
    /// calls do not occupy the window, so a throttled client recovers once it slows down.
    pub(crate) fn admit(
        &mut self,
        limits: &V2Limits,
        account: &str,
        now_ms: i64,
    ) -> Result<(), V2Refusal> {
        if !self
            .windows
            .admit(account, limits.requests_per_minute, RATE_WINDOW_MS, now_ms)
        {
            return Err(rate_limited(format!(
                "request rate exceeded: at most {} calls per minute",
                limits.requests_per_minute
            )));
        }
        Ok(())
    }

    /// Spends `n` of today's quota, or refuses the whole call if fewer are left: the API does
    /// not partially accept a batch.
    pub(crate) fn take_quota(
        &mut self,
        account: &str,
        kind: Kind,
        n: u64,
        limit: u64,
        now_ms: i64,
    ) -> Result<(), V2Refusal> {
        self.usage
            .take(account, kind, n, limit, now_ms)
            .map_err(|left| {
                let (business, what) = match kind {
                    Kind::Url => (22044, "URL刷新数目超出单日限额"),
                    Kind::Dir | Kind::Regex => (22046, "目录刷新数目超出单日限额"),
                };
                V2Refusal::business(
                    business,
                    format!("{what} ({n} requested, {left} of {limit} left today)"),
                )
            })
    }
}

/// The API's rate-limit answer, for the limit and for the injected fault alike.
pub(crate) fn rate_limited(message: String) -> V2Refusal {
    V2Refusal::common(4400, "RequestLimitExceeded", message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn nonces_are_single_use_per_account_and_timestamps_must_be_close() {
        let mut s = V2State::default();
        let ts = T0 / 1000;
        assert_eq!(s.check_replay("a", 1, ts, T0), Ok(()));
        assert_eq!(s.check_replay("a", 1, ts, T0).unwrap_err().code, 4500);
        assert_eq!(s.check_replay("b", 1, ts, T0), Ok(()), "per account");
        assert_eq!(s.check_replay("a", 2, ts - 7200, T0), Ok(()));
        assert_eq!(s.check_replay("a", 3, ts + 7200, T0), Ok(()));
        assert_eq!(
            s.check_replay("a", 4, ts - 7201, T0).unwrap_err().code,
            4500
        );
        assert_eq!(
            s.check_replay("a", 5, ts + 7201, T0).unwrap_err().code,
            4500
        );
        assert_eq!(s.check_replay("a", 6, i64::MIN, T0).unwrap_err().code, 4500);
    }

    #[test]
    fn old_nonces_are_forgotten_once_their_timestamp_has_expired() {
        let mut s = V2State::default();
        let ts = T0 / 1000;
        for n in 0..NONCE_PRUNE_AT as u64 {
            s.check_replay("a", n, ts, T0).unwrap();
        }
        // Three hours later the old Timestamps cannot pass the skew check any more.
        let later = T0 + 3 * 3600 * 1000;
        s.check_replay("a", 1_000_000, later / 1000, later).unwrap();
        assert_eq!(s.nonces.len(), 1);
        assert_eq!(s.check_replay("a", 0, later / 1000, later), Ok(()));
    }

    #[test]
    fn rate_limit_is_a_sliding_minute_per_account() {
        let limits = V2Limits {
            requests_per_minute: 2,
            ..V2Limits::default()
        };
        let mut s = V2State::default();
        assert_eq!(s.admit(&limits, "a", 0), Ok(()));
        assert_eq!(s.admit(&limits, "a", 30_000), Ok(()));
        assert_eq!(s.admit(&limits, "a", 59_999).unwrap_err().code, 4400);
        assert_eq!(s.admit(&limits, "b", 59_999), Ok(()));
        assert_eq!(s.admit(&limits, "a", 60_000), Ok(()));
        assert!(s.admit(&limits, "a", 60_001).is_err());
    }

    #[test]
    fn quota_refuses_whole_calls_and_resets_at_beijing_midnight() {
        let mut s = V2State::default();
        // 2023-11-14T15:59:59Z is 23:59:59 in Beijing.
        let before = 1_699_977_599_000;
        let after = before + 1000;
        assert_eq!(s.take_quota("a", Kind::Url, 8, 10, before), Ok(()));
        let e = s.take_quota("a", Kind::Url, 3, 10, before).unwrap_err();
        assert_eq!((e.code, e.business), (4000, Some(22044)));
        assert_eq!(s.take_quota("a", Kind::Url, 2, 10, before), Ok(()));
        let e = s.take_quota("a", Kind::Dir, 6, 5, before).unwrap_err();
        assert_eq!(e.business, Some(22046));
        assert_eq!(s.take_quota("a", Kind::Url, 10, 10, after), Ok(()));
    }
}
