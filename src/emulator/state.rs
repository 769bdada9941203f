//! The emulator's bookkeeping: rate windows, injected faults, daily quotas and the call records.
//!
//! Pure and synchronous: every method takes `now_ms` instead of reading a clock, so the limits
//! (sliding windows, the UTC+8 day boundary) are tested with exact times, and the HTTP layer holds
//! the lock only for one call to these methods, never across an await.

use std::collections::{HashMap, VecDeque};

use super::tasks::TaskBook;
use super::{EmulatorConfig, Faults, RecordedCall, RejectedCall};
use crate::provider::Kind;

/// Tencent's quota day starts at 00:00 Beijing time (UTC+8), PROVIDERS.md §1.3.
pub(crate) const QUOTA_UTC_OFFSET_SECS: i64 = 8 * 3600;
/// The sliding rate-limit window.
const RATE_WINDOW_MS: i64 = 1000;

/// Why a call is refused: a real Tencent error code and an English message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// A code from Tencent's documented list, so the client classifies it as it would the real
    /// answer.
    pub code: &'static str,
    /// Human-readable detail; clients must not depend on it.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// A failure [`Faults`] injects into one call, with a message for the error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InjectedFault {
    /// `fail_first`: answer the API's internal/server error.
    Internal(String),
    /// `rate_limit_every`: answer the API's rate-limit error.
    RateLimited(String),
}

/// One account's use of one kind's daily quota.
#[derive(Debug, Clone, Copy, Default)]
struct DayUsage {
    day: i64,
    used: u64,
}

/// Per-account sliding rate windows: the arrival times (ms) of calls admitted in the last
/// window. Shared by the Tencent APIs (3.0 per second, 2.0 per minute).
#[derive(Debug, Default)]
pub(crate) struct RateWindows(HashMap<String, VecDeque<i64>>);

impl RateWindows {
    /// Admits a call if the account has fewer than `limit` admitted calls in the `window_ms`
    /// before `now_ms`. Refused calls do not occupy the window, so a throttled client recovers
    /// once it slows down.
    pub(crate) fn admit(&mut self, account: &str, limit: u32, window_ms: i64, now_ms: i64) -> bool {
        let window = self.0.entry(account.to_string()).or_default();
        while window.front().is_some_and(|&t| t <= now_ms - window_ms) {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return false;
        }
        window.push_back(now_ms);
        true
    }
}

/// Per-account, per-kind daily quotas on the UTC+8 day. Shared by the Tencent APIs.
#[derive(Debug, Default)]
pub(crate) struct DayQuotas(HashMap<(String, Kind), DayUsage>);

impl DayQuotas {
    /// What is left of `limit` today for this account and kind.
    pub(crate) fn available(&self, account: &str, kind: Kind, limit: u64, now_ms: i64) -> u64 {
        let today = quota_day(now_ms);
        let used = self
            .0
            .get(&(account.to_string(), kind))
            .filter(|u| u.day == today)
            .map_or(0, |u| u.used);
        limit.saturating_sub(used)
    }

    /// Spends `n` of today's quota, or refuses the whole call with what is left (Tencent does
    /// not partially accept a batch).
    pub(crate) fn take(
        &mut self,
        account: &str,
        kind: Kind,
        n: u64,
        limit: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        let today = quota_day(now_ms);
        let usage = self.0.entry((account.to_string(), kind)).or_default();
        if usage.day != today {
            *usage = DayUsage {
                day: today,
                used: 0,
            };
        }
        let left = limit.saturating_sub(usage.used);
        if n > left {
            return Err(left);
        }
        usage.used += n;
        Ok(())
    }
}

/// Everything that changes while the emulator runs.
#[derive(Debug, Default)]
pub(crate) struct State {
    faults: Faults,
    /// Purge calls that passed auth and the rate limit since the faults were last set; the
    /// `fail_first` and `rate_limit_every` faults count these.
    fault_calls: u64,
    /// Per account: arrival times (ms) of purge calls admitted by the rate limit in the last
    /// second.
    windows: RateWindows,
    usage: DayQuotas,
    accepted: Vec<RecordedCall>,
    rejected: Vec<RejectedCall>,
    /// Purge tasks, status queries and prefetches of every API.
    pub(crate) tasks: TaskBook,
}

/// The quota day (days since the epoch, UTC+8) containing `now_ms`.
pub(crate) fn quota_day(now_ms: i64) -> i64 {
    (now_ms.div_euclid(1000) + QUOTA_UTC_OFFSET_SECS).div_euclid(86_400)
}

impl State {
    /// Starts with the configured faults.
    pub(crate) fn new(faults: Faults) -> Self {
        State {
            faults,
            ..State::default()
        }
    }

    /// Replaces the faults and restarts their call count, so `fail_first` means "the next N".
    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        self.fault_calls = 0;
    }

    /// The extra answer delay currently configured.
    pub(crate) fn latency(&self) -> std::time::Duration {
        self.faults.latency
    }

    /// Admits an authenticated purge call, or refuses it for the rate limit or an injected fault.
    /// Only calls that pass the rate limit occupy the window, so a throttled client recovers
    /// once it slows down.
    pub(crate) fn admit(
        &mut self,
        config: &EmulatorConfig,
        account: &str,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        if !self
            .windows
            .admit(account, config.requests_per_second, RATE_WINDOW_MS, now_ms)
        {
            return Err(Refusal::new(
                "RequestLimitExceeded",
                format!(
                    "request rate exceeded: at most {} purge calls per second",
                    config.requests_per_second
                ),
            ));
        }
        match self.next_fault() {
            None => Ok(()),
            Some(InjectedFault::Internal(message)) => Err(Refusal::new("InternalError", message)),
            Some(InjectedFault::RateLimited(message)) => {
                Err(Refusal::new("RequestLimitExceeded", message))
            }
        }
    }

    /// Admits a call of an action with its own per-second limit (Tencent 3.0: every action has
    /// its own 20 req/s, 228/31719), without counting it towards the purge faults.
    pub(crate) fn admit_action(
        &mut self,
        config: &EmulatorConfig,
        account: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let key = format!("{account}/{action}");
        if self
            .windows
            .admit(&key, config.requests_per_second, RATE_WINDOW_MS, now_ms)
        {
            Ok(())
        } else {
            Err(Refusal::new(
                "RequestLimitExceeded",
                format!(
                    "request rate exceeded: at most {} {action} calls per second",
                    config.requests_per_second
                ),
            ))
        }
    }

    /// Spends `n` of the account's daily prefetch allowance, or `Err(left)`.
    pub(crate) fn take_push_quota(
        &mut self,
        account: &str,
        n: u64,
        limit: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        self.usage
            .take(&format!("{account}/push"), Kind::Url, n, limit, now_ms)
    }

    /// Counts one purge call that passed auth and the API's own rate limit, and says which
    /// injected fault (if any) it meets. Every emulated API calls this once per such call and
    /// answers the fault in its own error shape.
    pub(crate) fn next_fault(&mut self) -> Option<InjectedFault> {
        self.fault_calls += 1;
        let n = self.fault_calls;
        if n <= u64::from(self.faults.fail_first) {
            return Some(InjectedFault::Internal(format!(
                "injected fault: internal error (call {n} of fail_first)"
            )));
        }
        let every = u64::from(self.faults.rate_limit_every);
        if every > 0 && n.is_multiple_of(every) {
            return Some(InjectedFault::RateLimited(format!(
                "injected fault: every {every}th call is rate limited"
            )));
        }
        None
    }

    /// The refusal the item faults give a Tencent 3.0 batch (`failing_urls`, `oversize_urls`,
    /// `unauthorized_hosts`), if any.
    pub(crate) fn item_fault(&self, items: &[String]) -> Option<Refusal> {
        let f = &self.faults;
        if let Some(i) = items.iter().find(|i| f.failing_urls.contains(*i)) {
            return Some(Refusal::new(
                "InternalError.CdnSystemError",
                format!("injected fault: calls with {i} always fail"),
            ));
        }
        if items.iter().any(|i| f.oversize_urls.contains(i)) {
            return Some(Refusal::new(
                "LimitExceeded.CdnPurgeUrlExceedBatchLimit",
                "injected fault: the batch is too large",
            ));
        }
        let host = |i: &String| {
            let rest = i.split_once("://").map_or(i.as_str(), |(_, r)| r);
            rest.split('/').next().unwrap_or(rest).to_string()
        };
        if let Some(h) = items
            .iter()
            .map(host)
            .find(|h| f.unauthorized_hosts.contains(h))
        {
            return Some(Refusal::new(
                "UnauthorizedOperation.CdnHostUnauthorized",
                format!("injected fault: host {h} is not authorised for this key"),
            ));
        }
        None
    }

    /// Counts down `gateway_429`: `Some(retry_after)` when this call gets the gateway's 429.
    pub(crate) fn gateway_429(&mut self) -> Option<String> {
        if self.faults.gateway_429 == 0 {
            return None;
        }
        self.faults.gateway_429 -= 1;
        Some(self.faults.gateway_retry_after.clone())
    }

    /// The first item of `items` the faults declare invalid.
    pub(crate) fn invalid_item<'a>(&self, items: &'a [String]) -> Option<&'a str> {
        items
            .iter()
            .find(|i| self.faults.invalid_urls.contains(*i))
            .map(String::as_str)
    }

    /// What is left of `limit` today for this account and kind.
    pub(crate) fn available(&self, account: &str, kind: Kind, limit: u64, now_ms: i64) -> u64 {
        self.usage.available(account, kind, limit, now_ms)
    }

    /// Spends up to `n` of today's quota as another tool of the same account would (the console,
    /// tccli): what the worker's ledger does not know about until it reads the provider's figure.
    pub(crate) fn spend_elsewhere(&mut self, account: &str, kind: Kind, n: u64, now_ms: i64) {
        let left = self.usage.available(account, kind, u64::MAX, now_ms);
        let _ = self
            .usage
            .take(account, kind, n.min(left), u64::MAX, now_ms);
    }

    /// Spends `n` of today's quota, or refuses the whole call if fewer are left (Tencent does
    /// not partially accept a batch).
    pub(crate) fn take_quota(
        &mut self,
        account: &str,
        kind: Kind,
        n: u64,
        limit: u64,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        self.usage
            .take(account, kind, n, limit, now_ms)
            .map_err(|left| {
                let code = match kind {
                    Kind::Url => "LimitExceeded.CdnPurgeUrlExceedDayLimit",
                    Kind::Dir | Kind::Regex => "LimitExceeded.CdnPurgePathExceedDayLimit",
                };
                Refusal::new(
                    code,
                    format!(
                        "daily {kind} purge quota exceeded: {n} requested, {left} of {limit} left today"
                    ),
                )
            })
    }

    /// Records an accepted purge call.
    pub(crate) fn record_accepted(&mut self, call: RecordedCall) {
        self.accepted.push(call);
    }

    /// Records a refused call.
    pub(crate) fn record_rejected(&mut self, call: RejectedCall) {
        self.rejected.push(call);
    }

    /// Accepted purge calls, in arrival order.
    pub(crate) fn accepted(&self) -> Vec<RecordedCall> {
        self.accepted.clone()
    }

    /// Refused calls, in arrival order.
    pub(crate) fn rejected(&self) -> Vec<RejectedCall> {
        self.rejected.clone()
    }

    /// Forgets the records (not the quotas or rate windows: those model the provider).
    pub(crate) fn clear_records(&mut self) {
        self.accepted.clear();
        self.rejected.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    fn config(rps: u32) -> EmulatorConfig {
        EmulatorConfig {
            requests_per_second: rps,
            ..EmulatorConfig::default()
        }
    }

    #[test]
    fn rate_limit_is_a_sliding_one_second_window_per_account() {
        let c = config(3);
        let mut s = State::default();
        for t in [0, 100, 200] {
            assert_eq!(s.admit(&c, "a", t), Ok(()));
        }
        assert_eq!(
            s.admit(&c, "a", 999).unwrap_err().code,
            "RequestLimitExceeded"
        );
        assert_eq!(s.admit(&c, "b", 999), Ok(()), "accounts are independent");
        // The call at 0 leaves the window at 1000; the refused one at 999 never entered it.
        assert_eq!(s.admit(&c, "a", 1000), Ok(()));
        assert!(s.admit(&c, "a", 1050).is_err());
        assert_eq!(s.admit(&c, "a", 1100), Ok(()));
    }

    #[test]
    fn faults_count_admitted_calls_from_when_they_were_set() {
        let c = config(1000);
        let mut s = State::new(Faults {
            fail_first: 2,
            rate_limit_every: 3,
            ..Faults::default()
        });
        let codes: Vec<_> = (0..7)
            .map(|t| s.admit(&c, "a", t).err().map(|r| r.code))
            .collect();
        assert_eq!(
            codes,
            [
                Some("InternalError"),
                Some("InternalError"),
                Some("RequestLimitExceeded"),
                None,
                None,
                Some("RequestLimitExceeded"),
                None
            ]
        );
        s.set_faults(Faults {
            fail_first: 1,
            ..Faults::default()
        });
        assert_eq!(s.admit(&c, "a", 10).unwrap_err().code, "InternalError");
        assert_eq!(s.admit(&c, "a", 11), Ok(()));
    }

    #[test]
    fn quota_refuses_whole_calls_and_resets_at_beijing_midnight() {
        let mut s = State::default();
        // 2023-11-14T15:59:59Z is 23:59:59 in Beijing; one second later is a new quota day.
        let before = 1_699_977_599_000;
        let after = before + 1000;
        assert_ne!(quota_day(before), quota_day(after));
        assert_eq!(s.take_quota("a", Kind::Url, 8, 10, before), Ok(()));
        let e = s.take_quota("a", Kind::Url, 3, 10, before).unwrap_err();
        assert_eq!(e.code, "LimitExceeded.CdnPurgeUrlExceedDayLimit");
        assert_eq!(
            s.available("a", Kind::Url, 10, before),
            2,
            "refused calls spend nothing"
        );
        assert_eq!(
            s.available("a", Kind::Dir, 5, before),
            5,
            "kinds are separate"
        );
        assert_eq!(
            s.take_quota("a", Kind::Dir, 6, 5, before).unwrap_err().code,
            "LimitExceeded.CdnPurgePathExceedDayLimit"
        );
        assert_eq!(s.available("a", Kind::Url, 10, after), 10);
        assert_eq!(s.take_quota("a", Kind::Url, 10, 10, after), Ok(()));
    }
}
