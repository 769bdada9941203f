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
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

mod rate_limit;
pub mod shared;
pub use rate_limit::RateLimit;

/// Longest `rate_limits` window: seven days. Daily allowances have their own keys; the limiter's
/// period (window / count) then stays far inside governor's nanosecond arithmetic.
pub const MAX_RATE_WINDOW_SECS: u64 = 7 * 24 * 3600;

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
pub struct MultiWindow<C: Clock = TokioClock> {
    clock: C,
    limiters: Vec<Limiter<C>>,
    /// The longest window period: after a grant, no permit comes sooner.
    period: Duration,
    /// When the next permit can come, as far as we know (a hint; governor decides).
    ready_at: Option<C::Instant>,
}

impl<C: Clock> std::fmt::Debug for MultiWindow<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MultiWindow({} windows)", self.limiters.len())
    }
}

/// A point in time of [`TokioClock`]: tokio's `Instant`, so the limiter and the dispatcher read one
/// clock and tests with paused tokio time drive both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(pub tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, other: Nanos) -> TokioInstant {
        let d = Duration::from(other);
        // Saturate rather than panic: a limiter period is bounded by config validation, but an
        // Instant far in the future is still better than a dead dispatcher.
        TokioInstant(self.0.checked_add(d).unwrap_or(self.0))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// governor's [`Clock`] over `tokio::time::Instant` (paused time in tests moves it too).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

impl MultiWindow<TokioClock> {
    /// Limiters on tokio's clock (the dispatcher's clock).
    pub fn new(limits: &[RateLimit]) -> Self {
        Self::with_clock(limits, TokioClock)
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
        let period = sorted
            .iter()
            .map(|l| derive_quota(l).replenish_interval())
            .max()
            .unwrap_or_default();
        MultiWindow {
            clock,
            limiters,
            period,
            ready_at: None,
        }
    }

    /// Takes one call permit from every window, or says how long to wait before trying again.
    pub fn try_acquire(&mut self) -> Result<(), Duration> {
        let now = self.clock.now();
        for limiter in &self.limiters {
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(now);
                self.set_ready_at(now + Nanos::from(wait));
                return Err(wait);
            }
        }
        self.set_ready_at(now + Nanos::from(self.period));
        Ok(())
    }

    /// The earliest a permit may come (none taken yet: `None`). Lets the caller form a batch only
    /// when a permit is near, so batches keep filling while the limiter is the bottleneck.
    pub fn ready_at(&self) -> Option<C::Instant> {
        self.ready_at
    }

    fn set_ready_at(&mut self, at: C::Instant) {
        self.ready_at = Some(at);
    }
}

/// One provider's windows shared by the stages that spend its call budget (the dispatcher, and
/// the tracker where status queries count against it). Each caller holds the lock for one
/// non-blocking check only.
#[derive(Debug, Clone)]
pub struct SharedWindows(std::sync::Arc<std::sync::Mutex<MultiWindow>>);

impl SharedWindows {
    /// Limiters for `limits` on tokio's clock.
    pub fn new(limits: &[RateLimit]) -> Self {
        SharedWindows(std::sync::Arc::new(std::sync::Mutex::new(
            MultiWindow::new(limits),
        )))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MultiWindow> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`MultiWindow::try_acquire`].
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.lock().try_acquire()
    }

    /// [`MultiWindow::ready_at`].
    pub fn ready_at(&self) -> Option<TokioInstant> {
        self.lock().ready_at()
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
        let mut mw = MultiWindow::with_clock(limits, clock.clone());
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
    /// The dispatcher's limiter runs on tokio's clock: under paused time it refuses, says how long
    /// to wait, and grants again exactly when that much (virtual) time has passed.
    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_drives_the_limiter_under_paused_time() {
        let mut mw = MultiWindow::new(&[RateLimit {
            limit: 10,
            window: Duration::from_secs(1),
        }]);
        assert!(mw.try_acquire().is_ok());
        let wait = mw.try_acquire().unwrap_err();
        assert!(
            wait > Duration::from_millis(100) && wait < Duration::from_millis(110),
            "{wait:?}"
        );
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        assert!(mw.try_acquire().is_err(), "granted early");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(mw.try_acquire().is_ok());
        // An hour of greedy calls in virtual time: never more than 10 in any second.
        let mut times = Vec::new();
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(3600) {
            match mw.try_acquire() {
                Ok(()) => times.push(start.elapsed().as_nanos()),
                Err(w) => tokio::time::advance(w).await,
            }
        }
        assert!(max_in_window(&times, Duration::from_secs(1)) <= 10);
        assert!(times.len() >= 34_000, "{}", times.len());
    }

    #[test]
    fn wangsu_defaults_never_empty_the_customer_bucket() {
        let d = crate::provider::wangsu::DEFAULTS;
        let mut limits = vec![
            RateLimit {
                limit: d.requests_per_second,
                window: Duration::from_secs(1),
            },
            RateLimit {
                limit: d.requests_per_minute,
                window: Duration::from_secs(60),
            },
        ];
        limits.extend(d.rate_limits.iter().map(|s| RateLimit::parse(s).unwrap()));
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
