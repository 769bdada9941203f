//! [`Backoff`]: the one capped exponential backoff, validated once. The provider retry path
//! (`retry_base_ms`, `retry_max_ms`, with jitter) and the RabbitMQ reconnect path (0.5 s up to
//! `amqp.reconnect_max_ms`) both use it.

use std::time::Duration;

use rand::Rng;

/// Pauses that start at `base`, double per consecutive failure and never exceed `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

/// Why a [`Backoff`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("the first pause must be at least 1 ms")]
    BaseTooShort,
    #[error("the longest pause must be at least the first")]
    MaxBelowBase,
    #[error("the longest pause must be at most one day")]
    MaxTooLong,
}

impl Backoff {
    /// Longest pause any backoff may have: a day added to any `Instant` cannot overflow.
    pub const LONGEST: Duration = Duration::from_secs(24 * 3600);

    /// A backoff from `base` up to `max`: 1 ms ≤ `base` ≤ `max` ≤ [`Backoff::LONGEST`].
    pub fn new(base: Duration, max: Duration) -> Result<Backoff, BackoffError> {
        if base < Duration::from_millis(1) {
            return Err(BackoffError::BaseTooShort);
        }
        if max < base {
            return Err(BackoffError::MaxBelowBase);
        }
        if max > Self::LONGEST {
            return Err(BackoffError::MaxTooLong);
        }
        Ok(Backoff { base, max })
    }

    /// The first pause.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest pause.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The pause after the `n`-th consecutive failure (n ≥ 1; 0 counts as 1): `base · 2^(n-1)`,
    /// at most `max`.
    pub fn step(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << n.saturating_sub(1).min(20));
        exp.min(self.max)
    }

    /// [`Backoff::step`] with jitter (50–100 % of the step), so that replicas and lanes do not
    /// retry in lockstep.
    pub fn jittered(&self, n: u32) -> Duration {
        self.step(n).mul_f64(rand::rng().random_range(0.5..=1.0))
    }

    /// A wait given from outside (a provider's `Retry-After`), bounded: never beyond `max`.
    pub fn clamp(&self, wait: Duration) -> Duration {
        wait.min(self.max)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_base_up_to_max() {
        let b = Backoff::new(500 * MS, 30_000 * MS).unwrap();
        let steps: Vec<u128> = (1..=8).map(|n| b.step(n).as_millis()).collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(b.step(0), 500 * MS);
        assert_eq!(b.step(u32::MAX), 30_000 * MS);
        for n in [1, 3, 40] {
            let j = b.jittered(n);
            assert!(j <= b.step(n) && j >= b.step(n) / 2, "{n}: {j:?}");
        }
        assert_eq!(b.clamp(Duration::from_secs(3600)), 30_000 * MS);
        assert_eq!(b.clamp(MS), MS);
    }

    #[test]
    fn refuses_what_cannot_be_a_backoff() {
        assert_eq!(
            Backoff::new(Duration::ZERO, MS),
            Err(BackoffError::BaseTooShort)
        );
        assert_eq!(Backoff::new(2 * MS, MS), Err(BackoffError::MaxBelowBase));
        assert_eq!(
            Backoff::new(MS, Backoff::LONGEST + MS),
            Err(BackoffError::MaxTooLong)
        );
        let huge = Backoff::new(Backoff::LONGEST, Backoff::LONGEST).unwrap();
        assert_eq!(huge.step(30), Backoff::LONGEST);
    }
}
