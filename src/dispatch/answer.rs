//! What the shell does with a finished task: a provider's answer (metrics, refund, then the core's
//! decision and its effects), or a finished dead-letter or parking publish.

use tokio::time::{Duration, Instant};
use tracing::{info, warn};

use super::core::{Effect, Gate, later};
use super::{Dispatcher, Outcome, publish};
use crate::coalesce::PendingItem;
use crate::provider::{ProviderError, Receipt};
use crate::quota::{Reservation, unix_now};

impl Dispatcher {
    pub(super) async fn refund(&self, reservation: &Reservation, n: usize) {
        if let Err(e) = self.p.quota.refund(reservation, n as u64).await {
            warn!(provider = %self.p.limits.name, error = %e, "quota refund failed; the window's count stays higher than used");
        }
    }

    pub(super) async fn handle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Call {
                lane,
                items,
                reservation,
                result,
                elapsed,
            } => {
                let q = self.core.lanes[lane].key.kind.quota_kind().index();
                self.sync.in_flight[q] = self.sync.in_flight[q].saturating_sub(items.len() as u64);
                self.handle_call(lane, items, reservation, result, elapsed)
                    .await
            }
            Outcome::Quota(result) => self.synced(result).await,
            Outcome::Published {
                lane,
                done,
                parking,
                pause,
                failed,
            } => {
                if pause {
                    self.pause_parking -= done + failed.len();
                }
                if let Some(p) = parking
                    && let Some(m) = self.m.kind(self.core.lanes[lane].key.kind)
                {
                    m.parked_items[p.index()].inc_by(done as u64);
                }
                let now = Instant::now();
                if !failed.is_empty() {
                    self.core.hold(later(now, publish::REPUBLISH_PAUSE));
                }
                self.core.settled(lane, done, parking, failed, now);
            }
        }
    }

    async fn handle_call(
        &mut self,
        lane: usize,
        items: Vec<PendingItem>,
        reservation: Reservation,
        result: Result<Receipt, ProviderError>,
        elapsed: Duration,
    ) {
        let name = self.p.limits.name.clone();
        let kind = self.core.lanes[lane].key.kind;
        let action = self.p.provider.action(kind);
        let n = items.len();
        let label = result
            .as_ref()
            .map_or_else(ProviderError::result_label, |_| "ok");
        if let Some(m) = self.m.kind(kind) {
            m.api_duration.observe(elapsed.as_secs_f64());
            m.api(label).inc();
            if result.is_ok() {
                for it in &items {
                    m.submitted[it.priority.index()].inc();
                }
            }
        }
        match &result {
            Ok(receipt) => {
                info!(provider = %name, action, items = n, task_id = %receipt.task_id, "purge accepted");
                if let Some(tracker) = &self.p.tracker {
                    let key = &self.core.lanes[lane].key;
                    tracker.accepted(receipt, key.kind, key.flush, key.headers(), &items);
                }
            }
            Err(e) => {
                if matches!(e, ProviderError::Auth { .. }) {
                    self.m.auth_failures.inc();
                }
                // A call that may have been applied, or that the provider counted against a spent
                // quota, keeps its reservation.
                let keep = matches!(
                    e,
                    ProviderError::Transient {
                        maybe_applied: true,
                        ..
                    } | ProviderError::QuotaExhausted { .. }
                );
                if !keep {
                    self.refund(&reservation, n).await;
                }
            }
        }
        let rate_limited = matches!(result, Err(ProviderError::RateLimited { .. }));
        let now = Instant::now();
        let effects = self
            .core
            .finish(lane, items, result.as_ref().map(|_| ()), now);
        if rate_limited && let Gate::Backoff { until } = self.core.gate {
            self.share_backoff(until.saturating_duration_since(now))
                .await;
        }
        for effect in effects {
            self.apply(effect).await;
        }
    }

    /// A rate-limit answer makes every replica wait as long as this one, so that replicas do not
    /// take turns hitting the provider's limit.
    async fn share_backoff(&self, wait: Duration) {
        if let Err(e) = self.p.quota.hold_provider(&self.p.shared_rate, wait).await {
            warn!(provider = %self.p.limits.name, error = %e,
                "could not share the provider's rate-limit answer with other replicas");
        }
    }

    async fn apply(&mut self, effect: Effect) {
        let name = self.p.limits.name.clone();
        match effect {
            Effect::Done(waiters) => self.p.ledger.done(waiters).await,
            Effect::DeadLetter {
                lane,
                items,
                error,
                code,
                message,
            } => self.spawn_dead_letter(lane, items, error, &code, &message),
            Effect::QuotaExhausted { kind } => {
                let c = &self.p.limits;
                let policy = c.quota_policy();
                let now_unix = unix_now();
                let until = match self
                    .p
                    .quota
                    .exhaust(
                        &c.name,
                        kind.quota_kind(),
                        c.per_day(kind),
                        now_unix,
                        policy,
                    )
                    .await
                {
                    Ok(usage) => usage.free_at.max(now_unix + 1),
                    Err(e) => {
                        warn!(provider = %name, error = %e, "could not record the provider's quota exhaustion in Redis");
                        policy.next_reset(now_unix)
                    }
                };
                self.park_all(kind.quota_kind(), until, Instant::now(), now_unix);
            }
            Effect::Retried(reason) => self.m.retried(reason),
            Effect::AuthStopped => {
                self.m.stopped.set(1);
                self.p.readiness.provider_stopped(true);
            }
            Effect::AuthResumed => {
                self.m.stopped.set(0);
                self.p.readiness.provider_stopped(false);
                info!(provider = %name, "provider accepts our credentials again; calls resume");
            }
        }
    }
}
