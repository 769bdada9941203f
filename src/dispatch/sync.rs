//! The ledger follows the provider: at start and every `quota_sync_interval_ms`,
//! the dispatcher reads the provider's own quota figure ([`Provider::quota`]) and raises the
//! Redis counter of each quota kind to `max(counter, provider's used + our calls in flight)`
//! ([`QuotaStore::raise`]); it never goes down. Other tools (the console, tccli, another team's
//! script) spend the same account's quota, and the counter holds the window's total use of both
//! classes, so a raise shrinks the bulk share with no other change. When the config leaves a
//! daily limit at its default and the provider names a different `Total`, that total becomes the
//! limit this dispatcher reserves against.
//!
//! "In flight" is what this dispatcher has reserved and not yet heard back about (armed batches
//! and calls under way) when the answer arrives: the provider has not counted those yet. A call
//! the provider counted just before answering is then counted twice, once, for one sync (the
//! safe side); other replicas' calls in flight are not known here, so a raise can fall short by
//! those (the provider's refusal still parks the lane).
//!
//! [`Provider::quota`]: crate::provider::Provider::quota
//! [`QuotaStore::raise`]: crate::quota::QuotaStore::raise

use tokio::time::{Duration, Instant};
use tracing::{info, warn};

use super::{Dispatcher, Outcome, later};
use crate::metrics::QuotaQueryMetrics;
use crate::provider::{Kind, ProviderError, ProviderQuota};
use crate::quota::unix_now;

/// How the ledger follows the provider's own quota figures: the provider's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSync {
    /// How often the provider's figures are read (`quota_sync_interval_ms`); also at start.
    pub interval: Duration,
    /// By quota kind (url, dir): the config leaves the daily limit at its default, so a `Total`
    /// the provider names is adopted as the limit.
    pub adopt_total: [bool; 2],
}

impl Default for QuotaSync {
    fn default() -> Self {
        QuotaSync {
            interval: Duration::from_secs(300),
            adopt_total: [true; 2],
        }
    }
}

/// Wait before the next try after a failed query (at most the interval).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The dispatcher's sync state.
pub(super) struct SyncState {
    /// When the next query is due (`None`: the API has no quota call).
    pub next_at: Option<Instant>,
    /// A query is under way.
    pub busy: bool,
    /// Units of calls sent and not yet answered, by quota kind.
    pub in_flight: [u64; 2],
    /// The limit reserved against, by quota kind: the configured one or the adopted `Total`.
    pub limits: [u64; 2],
    /// The query's call metrics (`None`: the API has no quota call).
    metrics: Option<QuotaQueryMetrics>,
}

impl SyncState {
    /// `metrics` are the query's, when the API has one.
    pub(super) fn new(metrics: Option<QuotaQueryMetrics>, limits: [u64; 2]) -> Self {
        SyncState {
            next_at: metrics.as_ref().map(|_| Instant::now()),
            busy: false,
            in_flight: [0; 2],
            limits,
            metrics,
        }
    }

    /// When the loop must wake for the next query.
    pub(super) fn wake_at(&self) -> Option<Instant> {
        self.next_at.filter(|_| !self.busy)
    }
}

impl Dispatcher {
    /// Starts the provider's quota query when due and none is under way (never while draining).
    pub(super) fn maybe_sync(&mut self) {
        let Some(at) = self.sync.next_at else { return };
        if self.sync.busy || self.core.draining || Instant::now() < at {
            return;
        }
        self.sync.busy = true;
        let provider = self.p.provider.clone();
        let metrics = self.sync.metrics.clone();
        self.tasks.spawn(async move {
            let start = Instant::now();
            let result = match provider.quota() {
                Some(query) => query.await,
                None => Err(ProviderError::InvalidItems {
                    code: "QuotaUnsupported".into(),
                    message: "this API has no quota query".into(),
                    items: None,
                }),
            };
            if let Some(m) = metrics {
                m.duration.observe(start.elapsed().as_secs_f64());
                let label = result
                    .as_ref()
                    .map_or_else(ProviderError::result_label, |_| "ok");
                m.api(label).inc();
            }
            Outcome::Quota(result)
        });
    }

    /// The limit of a quota kind reserved against now.
    pub(super) fn limit(&self, kind: Kind) -> u64 {
        self.sync.limits[kind.quota_kind().index()]
    }

    /// Applies a quota answer: adopts a changed `Total`, raises the counters, sets the drift.
    pub(super) async fn synced(&mut self, result: Result<ProviderQuota, ProviderError>) {
        self.sync.busy = false;
        let interval = self.p.limits.quota_sync.interval;
        let name = self.p.limits.name.clone();
        let figures = match result {
            Ok(f) => f,
            Err(e) => {
                warn!(provider = %name, code = e.code(), error = %e,
                    "cannot read the provider's quota figures; the ledger keeps its own count");
                self.sync.next_at = Some(later(Instant::now(), interval.min(RETRY_AFTER_FAILURE)));
                return;
            }
        };
        let mut failed = false;
        for kind in [Kind::Url, Kind::Dir] {
            let Some(figure) = figures.figure(kind) else {
                continue;
            };
            let q = kind.index();
            if let Some(total) = figure.total
                && self.p.limits.quota_sync.adopt_total[q]
                && total != self.sync.limits[q]
            {
                info!(provider = %name, kind = %kind, from = self.sync.limits[q], to = total,
                    "the provider names a different daily quota; adopting it (the config leaves this limit at its default)");
                self.sync.limits[q] = total;
                self.m.quota_limit[q].set(total.min(i64::MAX as u64) as i64);
            }
            let limit = self.sync.limits[q];
            let provider_used = figure.used(limit);
            let armed = self
                .armed
                .as_ref()
                .filter(|a| self.core.lanes[a.lane].key.kind.quota_kind() == kind)
                .map_or(0, |a| a.items.len() as u64);
            let in_flight = self.sync.in_flight[q].saturating_add(armed);
            let target = provider_used.saturating_add(in_flight);
            let policy = self.p.limits.quota_policy();
            match self
                .p
                .quota
                .raise(&name, kind, target, unix_now(), policy)
                .await
            {
                Ok(r) => {
                    let ours = r.before.saturating_sub(in_flight);
                    let drift = i128::from(provider_used) - i128::from(ours);
                    self.m.quota_drift[q]
                        .set(drift.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64);
                    self.m.quota_used[q].set(r.after.min(i64::MAX as u64) as i64);
                    if r.after > r.before {
                        info!(provider = %name, kind = %kind, provider_used, in_flight,
                            ledger = r.before, raised_to = r.after, limit,
                            "the provider counts more spent than the ledger (other tools spend this account): the ledger follows");
                    }
                }
                Err(e) => {
                    self.p.metrics.quota_errors.inc();
                    warn!(provider = %name, error = %e, "cannot raise the quota counter to the provider's figure");
                    failed = true;
                }
            }
        }
        let wait = if failed {
            interval.min(RETRY_AFTER_FAILURE)
        } else {
            interval
        };
        self.sync.next_at = Some(later(Instant::now(), wait));
    }
}
