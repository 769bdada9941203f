//! Lanes, dedupe of pending keys, and batch formation (DESIGN "Flush policy").
//!
//! A lane holds the items of one provider that are interchangeable in a call (same kind and flush
//! type). A key already pending in its lane is not added twice: the new delivery joins the waiters
//! of the pending item. Once an item is taken into a batch it leaves `pending`, so an event for
//! the same key arriving after the batch was sent is purged again — dedupe never swallows a newer
//! change. Batches put back after a failure wait in `retry`, ahead of fresh items, and dedupe
//! covers them too.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use crate::cache_key::CacheKey;
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
        }
    }

    /// Takes over the waiters of another copy of the same key (the earlier arrival time counts).
    fn absorb(&mut self, other: PendingItem) {
        self.more.push(other.first);
        self.more.extend(other.more);
        self.since = self.since.min(other.since);
    }

    /// Keeps only the waiters for which `live` holds; `false` when none is left.
    fn retain_waiters(&mut self, live: &impl Fn(DeliveryId) -> bool) -> bool {
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

/// Pending items in arrival order, with O(1) dedupe lookup and O(batch) removal from the front
/// (an `IndexMap` drain would re-index the whole backlog on every batch).
#[derive(Debug, Default)]
struct PendingQueue {
    items: VecDeque<PendingItem>,
    /// Sequence number of `items[0]`; `items[i]` has sequence `head + i`.
    head: u64,
    /// Cache key → sequence number of its pending item. foldhash: keys are our own normalized
    /// URLs on a hot path, and HashDoS resistance is kept by its per-process random seed.
    index: HashMap<CacheKey, u64, foldhash::fast::RandomState>,
}

impl PendingQueue {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes the `n` oldest items (n ≤ len).
    fn take_front(&mut self, n: usize) -> Vec<PendingItem> {
        let out: Vec<PendingItem> = self.items.drain(..n).collect();
        self.head += n as u64;
        for it in &out {
            self.index.remove(&it.key);
        }
        out
    }
}

/// Every delivery waiting on any of `items`, one entry per request (what the ledger completes).
pub fn waiters_of(items: &[PendingItem]) -> Vec<DeliveryId> {
    items.iter().flat_map(|i| i.waiters()).collect()
}

/// Items put back after a failed call: they wait in `retry` (ahead of fresh items) and stay
/// findable by key, so a new request for a key that waits for its retry joins it instead of
/// spending quota on a second copy.
#[derive(Debug, Default)]
struct RetryPool {
    /// Batches in the order they were put back, each with the earliest instant it may be sent.
    batches: VecDeque<RetryBatch>,
    /// Every item of `batches`, by key.
    items: HashMap<CacheKey, PendingItem, foldhash::fast::RandomState>,
    /// Items in `items` (the sum of the batches' lengths).
    len: usize,
}

/// Keys of one retry batch and when it may go.
#[derive(Debug)]
struct RetryBatch {
    keys: Vec<CacheKey>,
    not_before: Instant,
    /// Taken and given back unsent (no rate permit or quota yet): when it goes, it is topped up
    /// with pending items, so waiting for the limiter never makes a call emptier. Batches put
    /// back after a failure are never topped up: their split isolates a culprit.
    fill: bool,
}

/// One lane's state.
#[derive(Debug)]
pub struct Lane {
    pub key: LaneKey,
    pending: PendingQueue,
    retry: RetryPool,
    /// Items per call; halves when the provider says a batch was too large and grows back after
    /// full batches are accepted again, up to `max_cap`.
    pub cap: usize,
    /// The provider's per-call limit for this lane's kind.
    pub max_cap: usize,
    /// Items taken out of the lane and not yet settled: in a call, or in a dead-letter or parking
    /// publish (for the pending gauge, and so a busy lane is never recycled).
    pub in_flight: usize,
    /// A parking publish for this lane is under way.
    pub parking: bool,
}

impl Lane {
    /// A new empty lane whose calls take at most `cap` items.
    pub fn new(key: LaneKey, cap: usize) -> Lane {
        let cap = cap.max(1);
        Lane {
            key,
            pending: PendingQueue::default(),
            retry: RetryPool::default(),
            cap,
            max_cap: cap,
            in_flight: 0,
            parking: false,
        }
    }

    /// Nothing waiting, in flight or being parked: the lane holds no state worth keeping.
    pub fn is_idle(&self) -> bool {
        self.waiting() == 0 && self.in_flight == 0 && !self.parking
    }

    /// Items waiting (not in flight).
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.retry.len
    }

    /// When the oldest waiting item (pending or put back for retry) was first requested.
    pub fn oldest_since(&self) -> Option<Instant> {
        let retry = self.retry.items.values().map(|i| i.since).min();
        let pending = self.pending.items.front().map(|i| i.since);
        match (retry, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Adds a request; returns `false` when it joined an item already waiting (deduplicated),
    /// whether pending or waiting for a retry.
    pub fn add(
        &mut self,
        key: CacheKey,
        delivery: DeliveryId,
        origin: &Arc<Origin>,
        now: Instant,
    ) -> bool {
        if let Some(item) = self.retry.items.get_mut(&key) {
            item.more.push(delivery);
            return false;
        }
        let p = &mut self.pending;
        match p.index.entry(key) {
            Entry::Occupied(e) => {
                let at = (*e.get() - p.head) as usize;
                p.items[at].more.push(delivery);
                false
            }
            Entry::Vacant(e) => {
                let key = e.key().clone();
                e.insert(p.head + p.items.len() as u64);
                p.items
                    .push_back(PendingItem::new(key, delivery, origin.clone(), now));
                true
            }
        }
    }

    /// When the lane should flush: a retry batch at its `not_before`; a full pending batch at
    /// once; otherwise when the oldest pending item has lingered (at once when `draining`).
    /// `None` when nothing waits.
    pub fn due_at(&self, linger: Duration, draining: bool) -> Option<Instant> {
        let retry = self.retry.batches.iter().map(|b| b.not_before).min();
        let pending = self.pending.items.front().map(|oldest| {
            if self.pending.len() >= self.cap || draining {
                oldest.since
            } else {
                oldest.since.checked_add(linger).unwrap_or(oldest.since)
            }
        });
        match (retry, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the next batch: the first retry batch whose time has come (trimmed to the cap),
    /// else up to `cap` of the oldest pending items.
    pub fn take(&mut self, now: Instant) -> Option<Vec<PendingItem>> {
        let r = &mut self.retry;
        if let Some(at) = r.batches.iter().position(|b| b.not_before <= now) {
            let mut b = r.batches.remove(at)?;
            if b.keys.len() > self.cap {
                let rest = b.keys.split_off(self.cap);
                r.batches.insert(
                    at,
                    RetryBatch {
                        keys: rest,
                        not_before: b.not_before,
                        fill: b.fill,
                    },
                );
            }
            let mut items: Vec<PendingItem> =
                b.keys.iter().filter_map(|k| r.items.remove(k)).collect();
            r.len -= items.len();
            if b.fill && items.len() < self.cap {
                let more = (self.cap - items.len()).min(self.pending.len());
                items.extend(self.pending.take_front(more));
            }
            return Some(items);
        }
        if self.pending.is_empty() {
            return None;
        }
        let n = self.cap.min(self.pending.len());
        Some(self.pending.take_front(n))
    }

    /// Takes everything waiting (to park it).
    pub fn take_all(&mut self) -> Vec<PendingItem> {
        let r = &mut self.retry;
        let mut all: Vec<PendingItem> = r
            .batches
            .drain(..)
            .flat_map(|b| b.keys)
            .filter_map(|k| r.items.remove(&k))
            .collect();
        r.len = 0;
        let n = self.pending.len();
        all.extend(self.pending.take_front(n));
        all
    }

    /// Puts items back to be sent again from `not_before` on, as one retry batch behind those
    /// already waiting (a batch that failed goes behind the others, so one failing batch cannot
    /// keep the front). An item whose key was requested again meanwhile is merged into the new
    /// pending copy: one purge after now covers both.
    pub fn retry(&mut self, items: Vec<PendingItem>, not_before: Instant) {
        self.put(items, not_before, false);
    }

    /// Returns items taken by [`Lane::take`] that were never sent (no quota, no rate permit yet),
    /// first in line, due at once.
    pub fn restore(&mut self, items: Vec<PendingItem>, now: Instant) {
        self.put(items, now, true);
    }

    fn put(&mut self, items: Vec<PendingItem>, not_before: Instant, front: bool) {
        let mut keys = Vec::with_capacity(items.len());
        for it in items {
            if let Some(&seq) = self.pending.index.get(&it.key) {
                let at = (seq - self.pending.head) as usize;
                self.pending.items[at].absorb(it);
                continue;
            }
            keys.push(it.key.clone());
            self.retry.len += 1;
            self.retry.items.insert(it.key.clone(), it);
        }
        if keys.is_empty() {
            return;
        }
        let b = RetryBatch {
            keys,
            not_before,
            fill: front,
        };
        if front {
            self.retry.batches.push_front(b);
        } else {
            self.retry.batches.push_back(b);
        }
    }

    /// Drops waiters for which `live` is false (deliveries of a dead channel: the broker
    /// redelivers them), and items left with no waiter. Returns the items dropped. O(items): run
    /// only when a channel died.
    pub fn prune(&mut self, live: impl Fn(DeliveryId) -> bool) -> usize {
        let before = self.waiting();
        let r = &mut self.retry;
        r.items.retain(|_, it| it.retain_waiters(&live));
        let items = &r.items;
        for b in &mut r.batches {
            b.keys.retain(|k| items.contains_key(k));
        }
        r.batches.retain(|b| !b.keys.is_empty());
        r.len = r.items.len();
        let p = &mut self.pending;
        let kept: VecDeque<PendingItem> = p
            .items
            .drain(..)
            .filter_map(|mut it| it.retain_waiters(&live).then_some(it))
            .collect();
        p.items = kept;
        p.index.clear();
        for (i, it) in p.items.iter().enumerate() {
            p.index.insert(it.key.clone(), p.head + i as u64);
        }
        before - self.waiting()
    }
}

#[cfg(test)]
mod tests;
