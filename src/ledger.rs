//! The ledger: for each unacked delivery, how many of its items are still outstanding.
//!
//! A delivery is acked exactly when its last item is done — accepted by the provider, or handed
//! durably (publisher-confirmed) to the dead-letter or parking queue. Duplicates ride on the item
//! already pending: the pending item lists every delivery waiting on it, and its completion
//! decrements each of them (see `coalesce`).
//!
//! Acks are sent one delivery at a time, never with `multiple = true`: deliveries complete out of
//! order, and lapin does not track which ackers a multiple-ack covered, so a later single ack of a
//! covered tag would be a double ack that makes the broker close the channel (406) and redeliver
//! everything on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lapin::Acker;
use lapin::options::BasicAckOptions;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// Longest wait for one ack to be handed to the connection.
pub const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Identifies a delivery inside this process (not the AMQP delivery tag, which restarts on every
/// channel).
pub type DeliveryId = u64;

/// Bits of a [`DeliveryId`] that number deliveries within one session; the bits above hold the
/// session's epoch.
const SEQ_BITS: u32 = 40;

/// Which consumer session is live. Every delivery id carries the epoch of the channel it came on;
/// when the channel dies, the epoch moves on and every earlier delivery is dead: its ack can never
/// be sent and the broker redelivers it, so the dispatchers drop its waiters (no quota spent on a
/// copy the redelivery brings again) and the ledger forgets it (memory stays bounded by prefetch
/// across reconnects). Cheap to clone; shared by the consumer, the ledger and the dispatchers.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<AtomicU64>);

impl Sessions {
    /// The live epoch.
    pub fn epoch(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Ends the live session (or starts a new one): every delivery issued so far is dead from now
    /// on. Returns the new epoch.
    pub fn advance(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The id of delivery `seq` of session `epoch`.
    pub fn id(epoch: u64, seq: u64) -> DeliveryId {
        (epoch << SEQ_BITS) | (seq & ((1 << SEQ_BITS) - 1))
    }

    /// The epoch a delivery id belongs to.
    pub fn epoch_of(id: DeliveryId) -> u64 {
        id >> SEQ_BITS
    }

    /// Whether `id` came on the live session's channel.
    pub fn is_live(&self, id: DeliveryId) -> bool {
        Self::epoch_of(id) == self.epoch()
    }
}

/// The pure bookkeeping, generic over what acking means, so it can be tested exhaustively.
#[derive(Debug)]
pub struct Ledger<A> {
    entries: HashMap<DeliveryId, (u32, A)>,
}

impl<A> Default for Ledger<A> {
    fn default() -> Self {
        Ledger {
            entries: HashMap::new(),
        }
    }
}

impl<A> Ledger<A> {
    /// Starts tracking a delivery with `outstanding` items; returns the acker at once when there
    /// is nothing to wait for.
    pub fn register(&mut self, id: DeliveryId, outstanding: u32, acker: A) -> Option<A> {
        if outstanding == 0 {
            return Some(acker);
        }
        self.entries.insert(id, (outstanding, acker));
        None
    }

    /// One item of `id` is done; returns the acker when it was the last one. Unknown ids (already
    /// acked, or from before a rebuild) are ignored.
    pub fn complete(&mut self, id: DeliveryId) -> Option<A> {
        let entry = self.entries.get_mut(&id)?;
        entry.0 -= 1;
        if entry.0 == 0 {
            self.entries.remove(&id).map(|(_, a)| a)
        } else {
            None
        }
    }

    /// Forgets every delivery that `live` rejects (its channel died); returns how many.
    pub fn retain_live(&mut self, live: impl Fn(DeliveryId) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|id, _| live(*id));
        before - self.entries.len()
    }

    /// Deliveries still waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Messages to the ledger task. One channel carries both, so a `Register` sent before the items
/// go to the dispatchers is always seen before their `Done`.
#[derive(Debug)]
pub enum LedgerMsg {
    /// A delivery whose `outstanding` valid items were handed to the dispatchers.
    Register {
        id: DeliveryId,
        outstanding: u32,
        acker: Acker,
    },
    /// One item done per listed id (an id may appear several times).
    Done(Vec<DeliveryId>),
}

/// Sender side of the ledger task; cheap to clone.
#[derive(Debug, Clone)]
pub struct LedgerHandle {
    tx: mpsc::Sender<LedgerMsg>,
}

impl LedgerHandle {
    /// Registers a delivery (waits if the ledger is behind: that is backpressure on consuming).
    pub async fn register(&self, id: DeliveryId, outstanding: u32, acker: Acker) {
        let _ = self
            .tx
            .send(LedgerMsg::Register {
                id,
                outstanding,
                acker,
            })
            .await;
    }

    /// Reports items done.
    pub async fn done(&self, ids: Vec<DeliveryId>) {
        if !ids.is_empty() {
            let _ = self.tx.send(LedgerMsg::Done(ids)).await;
        }
    }
}

/// Acks one delivery and records the outcome. `Ok(false)` means lapin could not send the ack
/// because the delivery's channel died: the broker will redeliver it, and we purge it again.
///
/// The ack is bounded by [`ACK_TIMEOUT`]: after a connection cut an ack on the dead channel was
/// seen never to complete, and since acks are sent one at a time that would freeze every later
/// one. A timed-out ack counts as lost: the broker redelivers the message.
pub async fn ack(acker: &Acker, metrics: &Metrics) {
    metrics.unacked.dec();
    let sent = tokio::time::timeout(ACK_TIMEOUT, acker.ack(BasicAckOptions::default())).await;
    let Ok(sent) = sent else {
        metrics.acked("lost");
        warn!("ack timed out (connection lost?); the broker will redeliver the message");
        return;
    };
    match sent {
        Ok(true) => metrics.acked("ok"),
        Ok(false) => {
            metrics.acked("lost");
            debug!("ack not sent: the delivery's channel is gone; the broker will redeliver it");
        }
        Err(e) => {
            metrics.acked("error");
            warn!(error = %e, "ack failed; the broker will redeliver the message");
        }
    }
}

/// Starts the ledger task. It ends when every sender is dropped and the queue is drained; what is
/// still outstanding then is simply not acked (the broker requeues it when the channel closes).
pub fn spawn(metrics: Metrics, capacity: usize) -> (LedgerHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(capacity);
    let task = tokio::spawn(async move {
        let mut ledger: Ledger<Acker> = Ledger::default();
        let mut epoch = 0;
        while let Some(msg) = rx.recv().await {
            match msg {
                LedgerMsg::Register {
                    id,
                    outstanding,
                    acker,
                } => {
                    // The first delivery of a new session: the older ones can never be acked.
                    let e = Sessions::epoch_of(id);
                    if e != epoch {
                        epoch = e;
                        let dead = ledger.retain_live(|d| Sessions::epoch_of(d) == e);
                        metrics.unacked.sub(dead as i64);
                        if dead > 0 {
                            debug!(
                                deliveries = dead,
                                "forgot deliveries of a dead channel; the broker redelivers them"
                            );
                        }
                    }
                    if let Some(a) = ledger.register(id, outstanding, acker) {
                        ack(&a, &metrics).await;
                    }
                }
                LedgerMsg::Done(ids) => {
                    for id in ids {
                        if let Some(a) = ledger.complete(id) {
                            ack(&a, &metrics).await;
                        }
                    }
                }
            }
        }
        if !ledger.is_empty() {
            debug!(
                deliveries = ledger.len(),
                "ledger closed with deliveries outstanding; they will be redelivered"
            );
        }
    });
    (LedgerHandle { tx }, task)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn acks_exactly_when_the_last_item_completes_in_any_order() {
        // Three deliveries; delivery 2 has a duplicate item (two completions for it).
        let orders: [&[DeliveryId]; 4] = [
            &[1, 2, 2, 3, 3, 3],
            &[3, 3, 2, 1, 3, 2],
            &[2, 3, 1, 3, 2, 3],
            &[3, 2, 3, 2, 3, 1],
        ];
        for order in orders {
            let mut l = Ledger::default();
            assert_eq!(l.register(1, 1, "a1"), None);
            assert_eq!(l.register(2, 2, "a2"), None);
            assert_eq!(l.register(3, 3, "a3"), None);
            let mut remaining = [0u32, 1, 2, 3];
            let mut acked = Vec::new();
            for &id in order {
                remaining[id as usize] -= 1;
                let got = l.complete(id);
                assert_eq!(
                    got.is_some(),
                    remaining[id as usize] == 0,
                    "order {order:?}"
                );
                acked.extend(got);
            }
            acked.sort();
            assert_eq!(acked, ["a1", "a2", "a3"]);
            assert!(l.is_empty());
            // Late completions (e.g. after a rebuild) are ignored, never a double ack.
            assert_eq!(l.complete(1), None);
        }
    }

    #[test]
    fn delivery_ids_carry_their_session_and_dead_ones_are_forgotten() {
        let s = Sessions::default();
        let e1 = s.advance();
        let a = Sessions::id(e1, 7);
        assert!(s.is_live(a));
        let mut l = Ledger::default();
        l.register(a, 2, "a");
        let e2 = s.advance();
        assert!(!s.is_live(a), "the old channel died");
        let b = Sessions::id(e2, 7);
        assert_ne!(a, b, "same sequence number, another session");
        l.register(b, 1, "b");
        assert_eq!(l.retain_live(|d| s.is_live(d)), 1);
        assert_eq!(
            l.complete(a),
            None,
            "late completions of dead deliveries are ignored"
        );
        assert_eq!(l.complete(b), Some("b"));
    }

    #[test]
    fn nothing_outstanding_acks_at_once() {
        let mut l = Ledger::default();
        assert_eq!(l.register(9, 0, "a"), Some("a"));
        assert!(l.is_empty());
    }
}
