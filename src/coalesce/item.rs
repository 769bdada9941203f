//! What a lane holds: pending items (a cache key and the deliveries waiting on it) and the key
//! that makes items interchangeable in one call.

use std::sync::Arc;

use tokio::time::Instant;

use crate::cache_key::CacheKey;
use crate::event::Priority;
use crate::ledger::DeliveryId;
use crate::provider::{FlushType, Header, Kind};

/// Request headers shared by file purges (wangsu `fileHeaders`); `None` for none, so the common
/// case costs no allocation. Compared and hashed by content.
pub type HeaderSet = Option<Arc<[Header]>>;

/// The interchangeability class of items within one provider: kind, flush type and, for file
/// purges, the request headers (items with different headers never share a call).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LaneKey {
    pub kind: Kind,
    pub flush: FlushType,
    pub headers: HeaderSet,
}

impl LaneKey {
    /// The lane's request headers (empty for most lanes).
    pub fn headers(&self) -> &[Header] {
        self.headers.as_deref().unwrap_or(&[])
    }
}

/// Where an item came from, for logs and dead-letter records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub id: Option<String>,
    pub source: Option<String>,
}

/// One pending cache key and every delivery waiting for it.
#[derive(Debug, Clone)]
pub struct PendingItem {
    pub key: CacheKey,
    /// The first waiting delivery (every item has one; kept inline to avoid an allocation).
    pub first: DeliveryId,
    /// Further deliveries that asked for the same key while it was pending.
    pub more: Vec<DeliveryId>,
    /// When the first request for this key was received (linger and latency are measured from it).
    pub since: Instant,
    /// The first request's event, for dead-letter records.
    pub origin: Arc<Origin>,
    /// Failed calls that held this item (alone or with others).
    pub attempts: u32,
    /// Failed calls that held this item alone: at `max_attempts` it is dead-lettered.
    pub alone: u32,
    /// The provider's count of accepted calls when this item first failed: a failure after
    /// other calls were accepted since is the item's fault, not the provider's.
    pub failed_at: Option<u64>,
    /// Interactive or bulk; an interactive request for the same key upgrades a bulk item.
    pub priority: Priority,
    /// The domain's `dir_escalation` (0 = never escalated).
    pub escalate: u32,
}

impl PendingItem {
    /// A new item with one waiting delivery.
    pub fn new(key: CacheKey, delivery: DeliveryId, origin: Arc<Origin>, now: Instant) -> Self {
        PendingItem {
            key,
            first: delivery,
            more: Vec::new(),
            since: now,
            origin,
            attempts: 0,
            alone: 0,
            failed_at: None,
            priority: Priority::Interactive,
            escalate: 0,
        }
    }

    /// Takes over the waiters of another copy of the same key (the earlier arrival time and the
    /// higher class count).
    pub(super) fn absorb(&mut self, other: PendingItem) {
        self.more.push(other.first);
        self.more.extend(other.more);
        self.since = self.since.min(other.since);
        self.priority = self.priority.min(other.priority);
    }

    /// Keeps only the waiters for which `live` holds; `false` when none is left.
    pub(super) fn retain_waiters(&mut self, live: &impl Fn(DeliveryId) -> bool) -> bool {
        self.more.retain(|d| live(*d));
        if live(self.first) {
            return true;
        }
        match self.more.pop() {
            Some(d) => {
                self.first = d;
                true
            }
            None => false,
        }
    }

    /// Every waiting delivery (one entry per request, duplicates included).
    pub fn waiters(&self) -> impl Iterator<Item = DeliveryId> + '_ {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

/// Every delivery waiting on any of `items`, one entry per request (what the ledger completes).
pub fn waiters_of(items: &[PendingItem]) -> Vec<DeliveryId> {
    items.iter().flat_map(|i| i.waiters()).collect()
}
