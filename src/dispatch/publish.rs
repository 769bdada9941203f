//! The dispatcher's publishes: dead letters for items the provider will never take, and parked
//! items that wait in the parking queue for their quota to come back. Each runs as a task of the
//! dispatcher and reports back as [`Outcome::Published`].

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::time::Duration;
use tracing::warn;

use super::core::ParkFor;
use super::{Dispatcher, Outcome};
use crate::cache_key::clip;
use crate::coalesce::{PendingItem, waiters_of};
use crate::dead_letter::DeadLetter;
use crate::event::{Event, Priority};
use crate::quota::unix_now;

/// Items per parked message.
const PARK_CHUNK: usize = 1000;
/// Pause between attempts to publish a dead letter while the broker refuses it, and before
/// parking is tried again after a refused parking publish.
pub(super) const REPUBLISH_PAUSE: Duration = Duration::from_secs(1);

/// The record's sentence for each dead-letter code the dispatcher uses.
fn reason(provider: &str, error: &str, it: &PendingItem, code: &str, message: &str) -> String {
    let message = clip(message, 300);
    match error {
        "provider_failed" => format!(
            "provider `{provider}` kept failing on this item: {} calls with it alone failed ({} in all); last answer {code}: {message}",
            it.alone.saturating_add(1),
            it.attempts
        ),
        "item_too_large" => format!(
            "provider `{provider}` refuses this item as too large even alone ({code}): {message}"
        ),
        "host_refused" => format!(
            "provider `{provider}` refused the item's host ({code}): {message}; other hosts are unaffected"
        ),
        _ => format!("provider `{provider}` refused 1 item: {code}: {message}"),
    }
}

impl Dispatcher {
    /// Publishes one dead-letter record per item (each keeps its own event id), retrying until the
    /// broker confirms, then completes the items.
    pub(super) fn spawn_dead_letter(
        &mut self,
        lane: usize,
        items: Vec<PendingItem>,
        error: &'static str,
        code: &str,
        message: &str,
    ) {
        if items.is_empty() {
            return;
        }
        let key = self.core.lanes[lane].key.clone();
        let name = self.p.limits.name.clone();
        if let Some(m) = self.m.kind(key.kind) {
            for it in &items {
                m.failed[it.priority.index()].inc();
            }
        }
        let m = self.p.metrics.clone();
        let records: Vec<_> = items
            .iter()
            .map(|it| {
                warn!(provider = %name, error, code, item = %it.key, event_id = it.origin.id.as_deref(),
                    event_source = it.origin.source.as_deref(), "dead-lettering an item the provider will not take");
                let mut dl = DeadLetter::for_provider(
                    &name,
                    &key,
                    &[it.key.to_string()],
                    &it.origin,
                    code,
                    message,
                );
                dl.error = error.to_string();
                dl.reason = reason(&name, error, it, code, message);
                dl.to_message()
            })
            .collect();
        let (publisher, ledger, queue) = (
            self.p.publisher.clone(),
            self.p.ledger.clone(),
            self.p.dead_letter_queue.clone(),
        );
        self.tasks.spawn(async move {
            for (body, props) in records {
                // No cap on these attempts on purpose: the item's only other place is to stay
                // unacked, and the broker redelivers it if the connection is lost for good.
                while let Err(e) = publisher.publish(&queue, &body, props.clone()).await {
                    warn!(error = %e, "dead-letter publish failed; retrying");
                    tokio::time::sleep(REPUBLISH_PAUSE).await;
                }
                m.dead_lettered(error);
            }
            ledger.done(waiters_of(&items)).await;
            Outcome::Published {
                lane,
                done: items.len(),
                parking: None,
                pause: false,
                failed: Vec::new(),
            }
        });
    }

    /// Moves items of a parked kind and class to the provider's parking queue of that class, as
    /// purge events that expire back into the purge queue (bulk: the bulk queue, and marked
    /// bulk) at the reset, or the items of a paused provider to its paused queue (no expiry:
    /// `resume` releases them); completes them once confirmed.
    pub(super) fn spawn_park(
        &mut self,
        lane: usize,
        priority: Priority,
        items: Vec<PendingItem>,
        why: ParkFor,
    ) {
        let key = self.core.lanes[lane].key.clone();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-purge-provider".into(),
            AMQPValue::LongString(LongString::from(self.p.limits.name.clone())),
        );
        headers.insert(
            "x-purge-priority".into(),
            AMQPValue::LongString(LongString::from(priority.as_str())),
        );
        let mut props = BasicProperties::default().with_content_type("application/json".into());
        let pause = why == ParkFor::Pause;
        let queue = match why {
            ParkFor::Quota { until_unix: until } => {
                // One extra second so our own clock has certainly passed the reset when they
                // return.
                let ttl_ms =
                    (until.saturating_sub(unix_now()).max(0) as u64).saturating_add(1) * 1000;
                headers.insert("x-purge-parked-until".into(), AMQPValue::LongLongInt(until));
                props = props.with_expiration(ttl_ms.to_string().into());
                match priority {
                    Priority::Interactive => self.p.parking_queue.clone(),
                    Priority::Bulk => self.p.bulk_parking_queue.clone(),
                }
            }
            ParkFor::Pause => {
                self.pause_parking += items.len();
                headers.insert("x-purge-paused".into(), AMQPValue::Boolean(true));
                self.p.paused_queue.clone()
            }
        };
        let props = props.with_headers(headers);
        let (publisher, ledger) = (self.p.publisher.clone(), self.p.ledger.clone());
        self.tasks.spawn(async move {
            let mut rest = items;
            let mut parked = 0;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(PARK_CHUNK));
                let chunk = std::mem::replace(&mut rest, tail);
                let keys: Vec<String> = chunk.iter().map(|i| i.key.to_string()).collect();
                let mut event = Event::of_kind(
                    key.kind,
                    key.flush,
                    keys,
                    key.headers(),
                    None,
                    Some("purge-worker:parked".into()),
                );
                event.priority = priority;
                let body = serde_json::to_vec(&event).unwrap_or_default();
                if let Err(e) = publisher.publish(&queue, &body, props.clone()).await {
                    let mut failed = chunk;
                    failed.extend(rest);
                    warn!(items = failed.len(), error = %e,
                        "could not move items to the parking queue; they stay unacked and are retried");
                    return Outcome::Published {
                        lane,
                        done: parked,
                        parking: Some(priority),
                        pause,
                        failed,
                    };
                }
                parked += chunk.len();
                ledger.done(waiters_of(&chunk)).await;
            }
            Outcome::Published {
                lane,
                done: parked,
                parking: Some(priority),
                pause,
                failed: Vec::new(),
            }
        });
    }
}
