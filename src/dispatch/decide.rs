//! What a provider's answer means for a batch: the one pure function that turns the taxonomy of
//! providers/PROVIDERS.md into a [`Decision`]. No I/O and no state: the core applies it.

use std::collections::HashSet;

use tokio::time::Duration;

use crate::backoff::Backoff;
use crate::coalesce::PendingItem;
use crate::provider::ProviderError;

/// Consecutive failed calls (across batches, with no success between) after which failures are
/// read as the provider's, not the batch's: the provider backs off as a whole and no batch is
/// blamed (split or counted towards `max_attempts`).
pub const OUTAGE_STREAK: u32 = 3;

/// The retry settings a decision needs (from the provider's config).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// From `retry_base_ms`, doubling per consecutive failure with jitter, up to `retry_max_ms`:
    /// the longest any wait may be, a provider's own `Retry-After` included.
    pub backoff: Backoff,
    /// Failed calls an item may have alone before it is dead-lettered.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// Capped exponential backoff for the `n`-th consecutive failure (n ≥ 1), with jitter
    /// (50–100 % of the step) so that replicas and lanes do not retry in lockstep.
    pub fn backoff(&self, n: u32) -> Duration {
        self.backoff.jittered(n)
    }

    /// A provider-given wait, bounded: never beyond `retry_max_ms`.
    pub fn clamp(&self, wait: Duration) -> Duration {
        self.backoff.clamp(wait)
    }
}

/// How the provider has fared, as seen by the core when a call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Consecutive failed calls, this one included.
    pub streak: u32,
    /// Whether the provider accepted other calls since an item of this batch first failed: then
    /// the batch, not the provider, is at fault.
    pub others_succeeded: bool,
}

impl Health {
    /// Whether a transient failure is the batch's fault: few failures in a row, or the provider
    /// kept accepting other calls while this batch failed. When every call fails (an outage) no
    /// batch is blamed, so an outage splits nothing and dead-letters nothing.
    pub fn blames_batch(&self) -> bool {
        self.streak < OUTAGE_STREAK || self.others_succeeded
    }
}

/// What to do with a batch after the provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The provider took it: every waiter is done.
    Accepted,
    /// Nothing wrong with the batch: the whole provider waits `wait`; the batch goes back whole.
    ProviderBackoff { wait: Duration },
    /// A transient failure blamed on a batch of several: retry its halves (the culprit, if any,
    /// ends up alone).
    Bisect,
    /// A transient failure of one item: retry it alone after `wait`.
    RetryAlone { wait: Duration },
    /// Dead-letter the whole batch with this code (`provider_failed`, `item_too_large`,
    /// `provider_rejected`, `host_refused`).
    DeadLetter { error: &'static str },
    /// Dead-letter the items the provider named; the rest is retried.
    DeadLetterNamed { names: HashSet<String> },
    /// Refused without naming the culprit: split by host, then in halves.
    Isolate,
    /// Too many items for the provider: calls of at most `cap` items from now on.
    Shrink { cap: usize },
    /// The provider's quota for this kind is spent: park the kind.
    QuotaExhausted,
    /// The account's credentials or permissions were refused: stop calls, probe later.
    AuthStop,
}

/// The decision for `batch` after `answer`. `health` counts this call when it failed.
pub fn decide(
    answer: Result<(), &ProviderError>,
    batch: &[PendingItem],
    health: Health,
    policy: &RetryPolicy,
) -> Decision {
    let Err(error) = answer else {
        return Decision::Accepted;
    };
    let n = batch.len();
    match error {
        ProviderError::RateLimited { retry_after, .. } => Decision::ProviderBackoff {
            wait: retry_after.map_or_else(|| policy.backoff(health.streak), |w| policy.clamp(w)),
        },
        ProviderError::Transient { .. } if !health.blames_batch() => Decision::ProviderBackoff {
            wait: policy.backoff(health.streak + 1 - OUTAGE_STREAK),
        },
        ProviderError::Transient { .. } if n > 1 => Decision::Bisect,
        ProviderError::Transient { .. } => {
            let alone = batch.first().map_or(0, |i| i.alone) + 1;
            if alone >= policy.max_attempts {
                Decision::DeadLetter {
                    error: "provider_failed",
                }
            } else {
                Decision::RetryAlone {
                    wait: policy.backoff(alone),
                }
            }
        }
        ProviderError::QuotaExhausted { .. } => Decision::QuotaExhausted,
        ProviderError::BatchTooLarge { .. } if n <= 1 => Decision::DeadLetter {
            error: "item_too_large",
        },
        ProviderError::BatchTooLarge { .. } => Decision::Shrink { cap: n / 2 },
        ProviderError::InvalidItems {
            items: Some(named), ..
        } if batch
            .iter()
            .any(|i| named.iter().any(|k| k == i.key.as_str())) =>
        {
            Decision::DeadLetterNamed {
                names: named.iter().cloned().collect(),
            }
        }
        ProviderError::InvalidItems { .. } if n <= 1 => Decision::DeadLetter {
            error: "provider_rejected",
        },
        ProviderError::InvalidItems { .. } => Decision::Isolate,
        ProviderError::HostRefused { .. } if hosts(batch) <= 1 => Decision::DeadLetter {
            error: "host_refused",
        },
        ProviderError::HostRefused { .. } => Decision::Isolate,
        ProviderError::Auth { .. } => Decision::AuthStop,
    }
}

/// The host part of a cache key (`https://host/...`), for grouping refused batches.
pub fn host_of(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// Distinct hosts in a batch.
fn hosts(batch: &[PendingItem]) -> usize {
    let set: HashSet<&str> = batch.iter().map(|i| host_of(i.key.as_str())).collect();
    set.len()
}
