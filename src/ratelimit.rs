//! Call pacing per provider: every configured window holds in every sliding window.
//!
//! governor implements GCRA, not a window counter: `Quota::per_second(20)` admits a burst of 20 and
//! then one call every 50 ms, i.e. up to 39 calls in the first second. So each `(limit, window)` is
//! turned into a burst-free quota (burst 1) with period `window / limit` stretched by
//! [`SAFETY_MARGIN`]: consecutive calls are then at least one period apart, so any `limit + 1`
//! calls span more than `window` (by `limit × margin × period`, which absorbs scheduling and
//! network jitter between our decision and the provider's arrival time), while the sustained rate
//! stays at 1/(1 + margin) ≈ 97 % of the limit.
//!
//! Several windows are combined by checking each limiter in order, shortest window first, and
//! sending only when all agree in the same pass; a pass that fails part-way has consumed cells of
//! the earlier limiters, which only ever makes pacing stricter, never looser. One dispatcher task
//! owns the limiter, so there is no contention and no starvation.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::RateLimit;

/// Relative stretch of every period (3 %): ~30 ms of arrival jitter tolerated per second of window.
pub const SAFETY_MARGIN: f64 = 0.03;

/// The burst-free governor quota for one window.
pub fn derive_quota(limit: &RateLimit) -> Quota {
    let period = limit.window.as_secs_f64() / limit.limit as f64 * (1.0 + SAFETY_MARGIN);
    let period = Duration::from_secs_f64(period).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("period is at least one nanosecond") // invariant: clamped just above
        .allow_burst(NonZeroU32::MIN)
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// All windows of one provider.
pub struct MultiWindow<C: Clock = DefaultClock> {
    clock: C,
    limiters: Vec<Limiter<C>>,
}

impl<C: Clock> std::fmt::Debug for MultiWindow<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultiWindow({} windows)", self.limiters.len())
    }
}

impl MultiWindow<DefaultClock> {
    /// Limiters on the real clock.
    pub fn new(limits: &[RateLimit]) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> MultiWindow<C> {
    /// Limiters on an injected clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(limits: &[RateLimit], clock: C) -> Self {
        let mut sorted = limits.to_vec();
        sorted.sort_by_key(|l| l.window);
        let limiters = sorted
            .iter()
            .map(|l| RateLimiter::direct_with_clock(derive_quota(l), clock.clone()))
            .collect();
        MultiWindow { clock, limiters }
    }

    /// Takes one call permit from every window, or says how long to wait before trying again.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        for limiter in &self.limiters {
            if let Err(not_until) = limiter.check() {
                return Err(not_until.wait_time_from(self.clock.now()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    /// Drives a greedy caller (tries at `poll` intervals, as soon as allowed) for `total` and
    /// returns the permit times in nanoseconds.
    fn greedy(limits: &[RateLimit], poll: Duration, total: Duration) -> Vec<u128> {
        let clock = FakeRelativeClock::default();
        let mw = MultiWindow::with_clock(limits, clock.clone());
        let mut now = Duration::ZERO;
        let mut times = Vec::new();
        while now < total {
            match mw.try_acquire() {
                Ok(()) => times.push(now.as_nanos()),
                Err(wait) => {
                    let step = wait.max(poll);
                    clock.advance(step);
                    now += step;
                    continue;
                }
            }
            clock.advance(poll);
            now += poll;
        }
        times
    }

    /// The most permits in any closed window of `window` (closed is the strictest reading).
    fn max_in_window(times: &[u128], window: Duration) -> usize {
        let w = window.as_nanos();
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] > w {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn no_window_is_ever_exceeded_and_the_budget_is_used() {
        let cases = [
            vec![RateLimit {
                limit: 5,
                window: Duration::from_secs(1),
            }],
            vec![
                RateLimit {
                    limit: 20,
                    window: Duration::from_secs(1),
                },
                RateLimit {
                    limit: 10_000,
                    window: Duration::from_secs(60),
                },
            ],
            vec![
                RateLimit {
                    limit: 100,
                    window: Duration::from_secs(1),
                },
                RateLimit {
                    limit: 300,
                    window: Duration::from_secs(300),
                },
            ],
            vec![RateLimit {
                limit: 1,
                window: Duration::from_secs(1),
            }],
        ];
        for limits in cases {
            for poll in [Duration::from_micros(100), Duration::from_millis(7)] {
                let total = Duration::from_secs(900);
                let times = greedy(&limits, poll, total);
                for l in &limits {
                    let max = max_in_window(&times, l.window);
                    assert!(
                        max <= l.limit as usize,
                        "{limits:?} poll {poll:?}: {max} in {:?}",
                        l.window
                    );
                }
                // The binding window's budget is at least 90 % used.
                let allowed = limits
                    .iter()
                    .map(|l| total.as_secs_f64() / l.window.as_secs_f64() * l.limit as f64)
                    .fold(f64::INFINITY, f64::min);
                let used = times.len() as f64 / allowed;
                assert!(
                    used >= 0.9,
                    "{limits:?} poll {poll:?}: only {used:.3} of the budget used"
                );
            }
        }
    }

    /// Wangsu's defaults (2/s, 60/min, 150/5m) hold every window and never empty the provider's
    /// token bucket (60 tokens refilled at 30/min, failed calls included).
    #[test]
    fn wangsu_defaults_never_empty_the_customer_bucket() {
        let raw: crate::config::RawConfig = toml::from_str(
            "[[providers]]\nname = \"ws\"\nkind = \"wangsu\"\nusername = \"u\"\napi_key = \"k\"\n\
             [[providers.domains]]\nhost = \"*\"\n",
        )
        .unwrap();
        let limits = crate::config::Config::from_raw(raw).unwrap().providers[0]
            .rate_limits
            .clone();
        assert!(
            limits
                .iter()
                .any(|l| l.window == Duration::from_secs(300) && l.limit == 150)
        );
        let total = Duration::from_secs(1800);
        let times = greedy(&limits, Duration::from_millis(7), total);
        for l in &limits {
            assert!(max_in_window(&times, l.window) <= l.limit as usize, "{l:?}");
        }
        let (mut tokens, mut last) = (60.0_f64, 0_u128);
        for &t in &times {
            tokens = (tokens + (t - last) as f64 / 2e9).min(60.0);
            last = t;
            tokens -= 1.0;
            assert!(tokens >= 0.0, "bucket empty at {} s", t / 1_000_000_000);
        }
        // 30 minutes at the bucket's refill rate is 900 calls; the pacing uses at least 90 %.
        assert!(times.len() >= 810, "{} calls in 30 min", times.len());
    }
}
