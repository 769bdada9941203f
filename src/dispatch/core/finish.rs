//! The core's half of a provider answer: apply [`decide`](super::decide::decide)'s decision to the
//! batch, the lane and the gates, and say what the shell must do about it.

use tokio::time::{Duration, Instant};
use tracing::{error, warn};

use super::*;

/// The provider's code and message of a refusal, for logs and dead-letter records.
fn code_and_message(e: &ProviderError) -> (String, String) {
    match e {
        ProviderError::Transient { code, message, .. }
        | ProviderError::InvalidItems { code, message, .. }
        | ProviderError::HostRefused { code, message }
        | ProviderError::Auth { code, message } => (code.clone(), message.clone()),
        other => (other.code().to_string(), other.to_string()),
    }
}

impl Core {
    /// Applies the provider's answer to a call of `items` from `lane`.
    pub fn finish(
        &mut self,
        lane: usize,
        items: Vec<PendingItem>,
        answer: Result<(), &ProviderError>,
        now: Instant,
    ) -> Vec<Effect> {
        self.calls -= 1;
        self.lanes[lane].in_flight -= items.len();
        match answer {
            Ok(()) => self.accepted(lane, items),
            Err(e) => self.refused(lane, items, e, now),
        }
    }

    fn accepted(&mut self, lane: usize, items: Vec<PendingItem>) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.streak = 0;
        self.successes += 1;
        if self.auth_stopped() {
            effects.push(Effect::AuthResumed);
        }
        self.gate = Gate::Open;
        let l = &mut self.lanes[lane];
        // A cap shrunk by a (maybe temporary) "too large" grows back with full batches.
        if items.len() >= l.cap && l.cap < l.max_cap {
            l.cap = (l.cap * 2).min(l.max_cap);
        }
        effects.push(Effect::Done(crate::coalesce::waiters_of(&items)));
        effects
    }

    fn refused(
        &mut self,
        lane: usize,
        mut items: Vec<PendingItem>,
        e: &ProviderError,
        now: Instant,
    ) -> Vec<Effect> {
        if matches!(
            e,
            ProviderError::Transient { .. } | ProviderError::RateLimited { .. }
        ) {
            self.streak = self.streak.saturating_add(1);
        }
        let health = Health {
            streak: self.streak,
            others_succeeded: items
                .iter()
                .any(|i| i.failed_at.is_some_and(|s| self.successes > s)),
        };
        let decision = decide::decide(Err(e), &items, health, &self.settings.retry);
        if matches!(e, ProviderError::Transient { .. }) {
            for it in &mut items {
                it.attempts = it.attempts.saturating_add(1);
                it.failed_at.get_or_insert(self.successes);
            }
        }
        let (code, message) = code_and_message(e);
        let reason = match e {
            ProviderError::RateLimited { .. } => RetryReason::RateLimited,
            _ => RetryReason::Transient,
        };
        let mut effects = match &decision {
            Decision::ProviderBackoff { .. } | Decision::Bisect | Decision::RetryAlone { .. } => {
                vec![Effect::Retried(reason)]
            }
            Decision::Isolate => vec![Effect::Retried(RetryReason::Isolate)],
            Decision::Shrink { .. } => vec![Effect::Retried(RetryReason::BatchTooLarge)],
            _ => Vec::new(),
        };
        effects.extend(self.apply(lane, items, decision, code, message, now));
        effects
    }

    fn apply(
        &mut self,
        lane: usize,
        mut items: Vec<PendingItem>,
        decision: Decision,
        code: String,
        message: String,
        now: Instant,
    ) -> Vec<Effect> {
        let n = items.len();
        let l = &mut self.lanes[lane];
        match decision {
            Decision::Accepted => Vec::new(),
            Decision::ProviderBackoff { wait } => {
                warn!(
                    code,
                    items = n,
                    streak = self.streak,
                    wait_ms = wait.as_millis() as u64,
                    "provider rate limited us or failed across batches; the provider backs off"
                );
                l.retry(items, now);
                self.back_off(later(now, wait));
                Vec::new()
            }
            Decision::Bisect => {
                warn!(code, message = %message, items = n, "transient failure of one batch while others succeed; retrying its halves");
                let rest = items.split_off(n.div_ceil(2));
                l.retry(items, now);
                l.retry(rest, now);
                Vec::new()
            }
            Decision::RetryAlone { wait } => {
                self.retry_alone(lane, items, &code, &message, wait, now);
                Vec::new()
            }
            Decision::DeadLetter { error } => self.dead_letter(lane, items, error, code, message),
            Decision::DeadLetterNamed { names } => {
                let (bad, good): (Vec<_>, Vec<_>) = items
                    .into_iter()
                    .partition(|i| names.contains(i.key.as_str()));
                l.retry(good, now);
                self.dead_letter(lane, bad, "provider_rejected", code, message)
            }
            Decision::Isolate => {
                warn!(
                    code,
                    items = n,
                    "provider refused the batch without naming the culprit; splitting it to find it"
                );
                for part in isolate(items) {
                    l.retry(part, now);
                }
                Vec::new()
            }
            Decision::Shrink { cap } => {
                warn!(
                    code,
                    items = n,
                    new_cap = cap,
                    "batch too large for the provider; splitting"
                );
                l.cap = cap.max(1);
                while items.len() > l.cap {
                    let rest = items.split_off(l.cap);
                    l.retry(std::mem::replace(&mut items, rest), now);
                }
                l.retry(items, now);
                Vec::new()
            }
            Decision::QuotaExhausted => {
                warn!(code, "provider says the quota is spent");
                l.retry(items, now);
                vec![Effect::QuotaExhausted { kind: l.key.kind }]
            }
            Decision::AuthStop => {
                l.retry(items, now);
                self.auth_stop(&code, &message, now)
            }
        }
    }

    /// The whole provider waits until `until` (never shortening a wait, never lifting an auth stop).
    fn back_off(&mut self, until: Instant) {
        self.gate = match self.gate {
            Gate::Backoff { until: u } => Gate::Backoff {
                until: u.max(until),
            },
            Gate::AuthStopped { .. } => self.gate,
            _ => Gate::Backoff { until },
        };
    }

    fn retry_alone(
        &mut self,
        lane: usize,
        mut items: Vec<PendingItem>,
        code: &str,
        message: &str,
        wait: Duration,
        now: Instant,
    ) {
        for it in &mut items {
            it.alone = it.alone.saturating_add(1);
        }
        if let Some(it) = items.first() {
            warn!(code, message = %message, item = %it.key, attempt = it.alone,
                wait_ms = wait.as_millis() as u64, "transient failure of an item alone; retrying it");
        }
        self.lanes[lane].retry(items, later(now, wait));
    }

    fn dead_letter(
        &mut self,
        lane: usize,
        items: Vec<PendingItem>,
        error: &'static str,
        code: String,
        message: String,
    ) -> Vec<Effect> {
        self.lanes[lane].in_flight += items.len();
        vec![Effect::DeadLetter {
            lane,
            items,
            error,
            code,
            message,
        }]
    }

    fn auth_stop(&mut self, code: &str, message: &str, now: Instant) -> Vec<Effect> {
        error!(code, message = %message,
            "provider refused our credentials: calls to this provider are STOPPED (nothing is acked or dropped); check the credentials, permissions and the clock; retrying one call every {}s",
            AUTH_PROBE_INTERVAL.as_secs());
        let first = !self.auth_stopped();
        self.gate = Gate::AuthStopped {
            probe_at: later(now, AUTH_PROBE_INTERVAL),
        };
        if first {
            vec![Effect::AuthStopped]
        } else {
            Vec::new()
        }
    }
}
