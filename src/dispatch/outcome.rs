//! What each provider answer means for the items: the one place the taxonomy of
//! providers/PROVIDERS.md turns into actions (ack, retry, back off, park, split, dead-letter, stop).

use std::collections::HashSet;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use rand::Rng;
use tokio::time::{Duration, Instant};
use tracing::{debug, error, warn};

use super::{AUTH_PROBE_INTERVAL, Dispatcher};
use crate::amqp::PublishError;
use crate::coalesce::PendingItem;
use crate::dead_letter::DeadLetter;
use crate::event::Event;
use crate::ledger::DeliveryId;
use crate::provider::{ProviderError, Receipt};
use crate::quota::{QuotaPolicy, Reservation, unix_now};

/// Items per parked message.
const PARK_CHUNK: usize = 1000;
/// Pause between attempts to publish a dead letter while the broker refuses it.
const REPUBLISH_PAUSE: Duration = Duration::from_secs(1);

/// A finished background task of a dispatcher.
pub(super) enum Outcome {
    Call {
        lane: usize,
        items: Vec<PendingItem>,
        isolating: bool,
        reservation: Reservation,
        result: Result<Receipt, ProviderError>,
        elapsed: Duration,
    },
    Parked {
        lane: usize,
        parked: usize,
        failed: Vec<PendingItem>,
        error: Option<PublishError>,
    },
    DeadLettered {
        lane: usize,
        count: usize,
    },
}

fn waiters(items: &[PendingItem]) -> Vec<DeliveryId> {
    items.iter().flat_map(|i| i.waiters()).collect()
}

/// The host part of a cache key (`https://host/...`), for grouping refused batches.
fn host_of(key: &str) -> &str {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl Dispatcher {
    pub(super) async fn handle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Call {
                lane,
                items,
                isolating,
                reservation,
                result,
                elapsed,
            } => {
                self.calls_in_flight -= 1;
                self.lanes[lane].in_flight -= items.len();
                self.handle_call(lane, items, isolating, reservation, result, elapsed)
                    .await;
            }
            Outcome::Parked {
                lane,
                parked,
                failed,
                error,
            } => {
                let l = &mut self.lanes[lane];
                l.parking = false;
                l.in_flight -= parked + failed.len();
                self.p
                    .metrics
                    .parked_items
                    .with_label_values(&[&self.p.config.name, l.key.kind.as_str()])
                    .inc_by(parked as u64);
                if let Some(e) = error {
                    warn!(provider = %self.p.config.name, items = failed.len(), error = %e,
                        "could not move items to the parking queue; they stay unacked and are retried");
                    l.put_back(failed, false);
                    let at = Instant::now() + REPUBLISH_PAUSE;
                    self.backoff_until = Some(self.backoff_until.map_or(at, |b| b.max(at)));
                }
            }
            Outcome::DeadLettered { lane, count } => {
                self.lanes[lane].in_flight -= count;
            }
        }
    }

    async fn handle_call(
        &mut self,
        lane: usize,
        mut items: Vec<PendingItem>,
        isolating: bool,
        reservation: Reservation,
        result: Result<Receipt, ProviderError>,
        elapsed: Duration,
    ) {
        let name = self.p.config.name.clone();
        let kind = self.lanes[lane].key.kind;
        let action = self.p.provider.action(kind);
        let m = self.p.metrics.clone();
        m.api_duration
            .with_label_values(&[&name, action])
            .observe(elapsed.as_secs_f64());
        let n = items.len();
        let error = match result {
            Ok(receipt) => {
                m.api_requests
                    .with_label_values(&[&name, action, "ok"])
                    .inc();
                m.items
                    .with_label_values(&[&name, kind.as_str(), "submitted"])
                    .inc_by(n as u64);
                debug!(provider = %name, action, items = n, task_id = %receipt.task_id, "purge accepted");
                self.failures = 0;
                if self.stopped {
                    self.resume_after_auth();
                }
                self.p.ledger.done(waiters(&items)).await;
                return;
            }
            Err(e) => e,
        };
        m.api_requests
            .with_label_values(&[&name, action, error.result_label()])
            .inc();
        let refund = !matches!(
            error,
            ProviderError::Transient {
                maybe_applied: true,
                ..
            } | ProviderError::QuotaExhausted { .. }
        );
        if refund && let Err(e) = self.p.quota.refund(&reservation, n as u64).await {
            warn!(provider = %name, error = %e, "quota refund failed; today's count stays higher than used");
        }
        let now = Instant::now();
        match error {
            ProviderError::RateLimited { code, retry_after } => {
                m.retries.with_label_values(&[&name, "rate_limited"]).inc();
                let wait = retry_after.unwrap_or_else(|| self.next_backoff());
                warn!(provider = %name, code, wait_ms = wait.as_millis() as u64, "provider rate limited us; backing off");
                self.backoff_until = Some(now + wait);
                self.lanes[lane].put_back(items, isolating);
            }
            ProviderError::Transient { code, message, .. } => {
                m.retries.with_label_values(&[&name, "transient"]).inc();
                for it in &mut items {
                    it.attempts += 1;
                }
                let wait = self.next_backoff();
                warn!(provider = %name, code, message = %message, attempt = items[0].attempts,
                    wait_ms = wait.as_millis() as u64, "transient provider failure; retrying");
                self.backoff_until = Some(now + wait);
                self.lanes[lane].put_back(items, isolating);
            }
            ProviderError::QuotaExhausted { code } => {
                let c = &self.p.config;
                let limit = self.lanes[lane].daily_limit;
                let policy = QuotaPolicy::of(c);
                let now_unix = unix_now();
                let until = match self
                    .p
                    .quota
                    .exhaust(&c.name, kind.quota_kind(), limit, now_unix, policy)
                    .await
                {
                    Ok(usage) => usage.free_at.max(now_unix + 1),
                    Err(e) => {
                        warn!(provider = %name, error = %e, "could not record the provider's quota exhaustion in Redis");
                        policy.next_reset(now_unix)
                    }
                };
                warn!(provider = %name, code, "provider says today's quota is spent");
                self.lanes[lane].put_back(items, isolating);
                self.park(lane, until);
            }
            ProviderError::BatchTooLarge { code } => {
                m.retries
                    .with_label_values(&[&name, "batch_too_large"])
                    .inc();
                let cap = (n / 2).max(1);
                warn!(provider = %name, code, items = n, new_cap = cap, "batch too large for the provider; splitting");
                self.lanes[lane].cap = cap;
                self.lanes[lane].put_back_split(items, cap, isolating);
            }
            ProviderError::InvalidItems {
                code,
                message,
                items: named,
            } => {
                let named: Option<HashSet<String>> = named.map(|v| v.into_iter().collect());
                let (bad, good): (Vec<_>, Vec<_>) = match &named {
                    Some(set) if items.iter().any(|i| set.contains(i.key.as_str())) => items
                        .into_iter()
                        .partition(|i| set.contains(i.key.as_str())),
                    _ if n == 1 => (items, Vec::new()),
                    _ => {
                        m.retries.with_label_values(&[&name, "isolate"]).inc();
                        self.isolate(lane, items);
                        return;
                    }
                };
                self.lanes[lane].put_back(good, isolating);
                self.dead_letter(lane, bad, &code, &message);
            }
            ProviderError::Auth { code, message } => {
                m.auth_failures.with_label_values(&[&name]).inc();
                error!(provider = %name, code, message = %message,
                    "provider refused our credentials: calls to this provider are STOPPED (nothing is acked or dropped); check secret_id/secret_key, permissions and the clock; retrying one call every {}s",
                    AUTH_PROBE_INTERVAL.as_secs());
                if !self.stopped {
                    self.stopped = true;
                    m.provider_stopped.with_label_values(&[&name]).set(1);
                    self.p.readiness.provider_stopped(true);
                }
                self.stopped_until = Some(now + AUTH_PROBE_INTERVAL);
                self.lanes[lane].put_back(items, isolating);
            }
        }
    }

    fn resume_after_auth(&mut self) {
        self.stopped = false;
        self.stopped_until = None;
        self.p
            .metrics
            .provider_stopped
            .with_label_values(&[&self.p.config.name])
            .set(0);
        self.p.readiness.provider_stopped(false);
        tracing::info!(provider = %self.p.config.name, "provider accepts our credentials again; calls resume");
    }

    /// Splits a refused batch to find the offending items: by host first (a host the account does
    /// not serve is the usual cause), then in halves. Each part is retried on its own.
    fn isolate(&mut self, lane: usize, items: Vec<PendingItem>) {
        let hosts: Vec<String> = {
            let mut h: Vec<String> = items
                .iter()
                .map(|i| host_of(i.key.as_str()).to_string())
                .collect();
            h.sort();
            h.dedup();
            h
        };
        if hosts.len() > 1 {
            let mut groups: Vec<Vec<PendingItem>> = (0..hosts.len()).map(|_| Vec::new()).collect();
            for it in items {
                let g = hosts
                    .binary_search_by(|h| h.as_str().cmp(host_of(it.key.as_str())))
                    .unwrap_or(0);
                groups[g].push(it);
            }
            for g in groups.into_iter().rev() {
                self.lanes[lane].put_back(g, true);
            }
        } else {
            let half = items.len().div_ceil(2);
            self.lanes[lane].put_back_split(items, half, true);
        }
    }

    /// Capped exponential backoff with jitter (50–100 % of the step).
    fn next_backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let c = &self.p.config;
        let exp = c
            .retry_base
            .saturating_mul(1u32 << self.failures.saturating_sub(1).min(20));
        let step = exp.min(c.retry_max);
        let jitter = rand::rng().random_range(0.5..=1.0);
        step.mul_f64(jitter)
    }

    /// Publishes one dead-letter record per refused item (each keeps its own event id), retrying
    /// until the broker confirms, then completes the items.
    fn dead_letter(&mut self, lane: usize, items: Vec<PendingItem>, code: &str, message: &str) {
        if items.is_empty() {
            return;
        }
        let key = self.lanes[lane].key.clone();
        let name = self.p.config.name.clone();
        let m = self.p.metrics.clone();
        m.items
            .with_label_values(&[&name, key.kind.as_str(), "failed"])
            .inc_by(items.len() as u64);
        for it in &items {
            warn!(provider = %name, code, item = %it.key, event_id = it.origin.id.as_deref(),
                event_source = it.origin.source.as_deref(), "provider refused the item; dead-lettering it");
        }
        let records: Vec<_> = items
            .iter()
            .map(|it| {
                DeadLetter::for_provider(
                    &name,
                    &key,
                    &[it.key.to_string()],
                    &it.origin,
                    code,
                    message,
                )
                .to_message()
            })
            .collect();
        self.lanes[lane].in_flight += items.len();
        let (publisher, ledger, queue) = (
            self.p.publisher.clone(),
            self.p.ledger.clone(),
            self.p.dead_letter_queue.clone(),
        );
        self.tasks.spawn(async move {
            for (body, props) in records {
                while let Err(e) = publisher.publish(&queue, &body, props.clone()).await {
                    warn!(error = %e, "dead-letter publish failed; retrying");
                    tokio::time::sleep(REPUBLISH_PAUSE).await;
                }
                m.dead_letters
                    .with_label_values(&["provider_rejected"])
                    .inc();
            }
            ledger.done(waiters(&items)).await;
            Outcome::DeadLettered {
                lane,
                count: items.len(),
            }
        });
    }

    /// Moves everything waiting in a parked lane to the provider's parking queue, as purge events
    /// that expire back into the purge queue at the reset; acks them once confirmed.
    pub(super) fn spawn_park(&mut self, lane: usize, until: i64, now_unix: i64) {
        let l = &mut self.lanes[lane];
        let items = l.take_all();
        if items.is_empty() {
            return;
        }
        l.parking = true;
        l.in_flight += items.len();
        let key = l.key.clone();
        // One extra second so our own clock has certainly passed the reset when they return.
        let ttl_ms = ((until - now_unix).max(0) as u64 + 1) * 1000;
        let mut headers = FieldTable::default();
        headers.insert("x-purge-parked-until".into(), AMQPValue::LongLongInt(until));
        headers.insert(
            "x-purge-provider".into(),
            AMQPValue::LongString(LongString::from(self.p.config.name.clone())),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_expiration(ttl_ms.to_string().into())
            .with_headers(headers);
        let (publisher, ledger, queue) = (
            self.p.publisher.clone(),
            self.p.ledger.clone(),
            self.p.parking_queue.clone(),
        );
        self.tasks.spawn(async move {
            let mut rest = items;
            let mut parked = 0;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(PARK_CHUNK));
                let chunk = std::mem::replace(&mut rest, tail);
                let keys: Vec<String> = chunk.iter().map(|i| i.key.to_string()).collect();
                let event = Event::of_kind(
                    key.kind,
                    key.flush,
                    keys,
                    key.headers(),
                    None,
                    Some("purge-worker:parked".into()),
                );
                let body = serde_json::to_vec(&event).unwrap_or_default();
                if let Err(e) = publisher.publish(&queue, &body, props.clone()).await {
                    let mut failed = chunk;
                    failed.extend(rest);
                    return Outcome::Parked {
                        lane,
                        parked,
                        failed,
                        error: Some(e),
                    };
                }
                parked += chunk.len();
                ledger.done(waiters(&chunk)).await;
            }
            Outcome::Parked {
                lane,
                parked,
                failed: Vec::new(),
                error: None,
            }
        });
    }
}
