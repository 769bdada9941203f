//! Lanes, dedupe of pending keys, and batch formation (DESIGN "Flush policy").
//!
//! A lane holds the items of one provider that are interchangeable in a call (same kind and flush
//! type). A key already pending in its lane is not added twice: the new delivery joins the waiters
//! of the pending item. Once an item is taken into a batch it leaves `pending`, so an event for
//! the same key arriving after the batch was sent is purged again — dedupe never swallows a newer
//! change. Batches put back after a failure wait in `retry`, ahead of fresh items.

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
    /// Failed attempts so far.
    pub attempts: u32,
}

impl PendingItem {
    /// Every waiting delivery (one entry per request, duplicates included).
    pub fn waiters(&self) -> impl Iterator<Item = DeliveryId> + '_ {
        std::iter::once(self.first).chain(self.more.iter().copied())
    }
}

/// A batch put back for another attempt.
#[derive(Debug, Clone)]
pub struct RetryBatch {
    pub items: Vec<PendingItem>,
    /// Part of a split that isolates items the provider refused: a refused batch of one is
    /// dead-lettered, a larger one is split again.
    pub isolating: bool,
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

/// One lane's state.
#[derive(Debug)]
pub struct Lane {
    pub key: LaneKey,
    pending: PendingQueue,
    retry: VecDeque<RetryBatch>,
    /// Items per call; shrinks when the provider says a batch was too large.
    pub cap: usize,
    /// Daily quota of this kind.
    pub daily_limit: u64,
    /// Unix time until which the lane's quota is spent.
    pub parked_until: Option<i64>,
    /// Items in calls or publishes not yet answered (for the pending gauge).
    pub in_flight: usize,
    /// A parking publish for this lane is under way.
    pub parking: bool,
}

impl Lane {
    /// A new empty lane.
    pub fn new(key: LaneKey, cap: usize, daily_limit: u64) -> Lane {
        Lane {
            key,
            pending: PendingQueue::default(),
            retry: VecDeque::new(),
            cap: cap.max(1),
            daily_limit,
            parked_until: None,
            in_flight: 0,
            parking: false,
        }
    }

    /// Nothing waiting, in flight or being parked, and not parked: the lane holds no state worth
    /// keeping.
    pub fn is_idle(&self) -> bool {
        self.waiting() == 0 && self.in_flight == 0 && !self.parking && self.parked_until.is_none()
    }

    /// Items waiting (not in flight).
    pub fn waiting(&self) -> usize {
        self.pending.len() + self.retry.iter().map(|b| b.items.len()).sum::<usize>()
    }

    /// When the oldest waiting item (pending or put back for retry) was first requested.
    pub fn oldest_since(&self) -> Option<Instant> {
        let retry = self
            .retry
            .iter()
            .flat_map(|b| b.items.iter().map(|i| i.since))
            .min();
        let pending = self.pending.items.front().map(|i| i.since);
        match (retry, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Adds a request; returns `false` when it joined an item already pending (deduplicated).
    pub fn add(
        &mut self,
        key: CacheKey,
        delivery: DeliveryId,
        origin: &Arc<Origin>,
        now: Instant,
    ) -> bool {
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
                p.items.push_back(PendingItem {
                    key,
                    first: delivery,
                    more: Vec::new(),
                    since: now,
                    origin: origin.clone(),
                    attempts: 0,
                });
                true
            }
        }
    }

    /// When the lane should flush: at once if a retry batch waits or a full batch is pending,
    /// otherwise when the oldest pending item has lingered long enough. `None` when empty.
    pub fn due_at(&self, linger: Duration) -> Option<Instant> {
        if let Some(b) = self.retry.front() {
            return Some(
                b.items
                    .first()
                    .map(|i| i.since)
                    .unwrap_or_else(Instant::now),
            );
        }
        let oldest = self.pending.items.front()?;
        if self.pending.len() >= self.cap {
            Some(oldest.since)
        } else {
            Some(oldest.since + linger)
        }
    }

    /// Takes the next batch: a retry batch first (trimmed to the cap), else up to `cap` of the
    /// oldest pending items.
    pub fn take(&mut self) -> Option<RetryBatch> {
        if let Some(mut b) = self.retry.pop_front() {
            if b.items.len() > self.cap {
                let rest = b.items.split_off(self.cap);
                self.retry.push_front(RetryBatch {
                    items: rest,
                    isolating: b.isolating,
                });
            }
            return Some(b);
        }
        if self.pending.is_empty() {
            return None;
        }
        let n = self.cap.min(self.pending.len());
        let items = self.pending.take_front(n);
        Some(RetryBatch {
            items,
            isolating: false,
        })
    }

    /// Takes everything waiting (to park it or at shutdown).
    pub fn take_all(&mut self) -> Vec<PendingItem> {
        let mut all: Vec<PendingItem> = self.retry.drain(..).flat_map(|b| b.items).collect();
        let n = self.pending.len();
        all.extend(self.pending.take_front(n));
        all
    }

    /// Puts a batch back, ahead of fresh items.
    pub fn put_back(&mut self, items: Vec<PendingItem>, isolating: bool) {
        if !items.is_empty() {
            self.retry.push_front(RetryBatch { items, isolating });
        }
    }

    /// Puts back a batch as several retry batches of at most `size` items, in order.
    pub fn put_back_split(&mut self, mut items: Vec<PendingItem>, size: usize, isolating: bool) {
        let size = size.max(1);
        let mut chunks = Vec::new();
        while items.len() > size {
            let rest = items.split_off(size);
            chunks.push(std::mem::replace(&mut items, rest));
        }
        chunks.push(items);
        for chunk in chunks.into_iter().rev() {
            self.put_back(chunk, isolating);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cache_key::CacheKey;

    fn key(s: &str) -> CacheKey {
        CacheKey::from_normalized(s)
    }

    #[tokio::test(start_paused = true)]
    async fn dedupes_pending_keys_and_batches_by_cap_and_linger() {
        let linger = Duration::from_millis(500);
        let o = Arc::new(Origin::default());
        let mut lane = Lane::new(
            LaneKey {
                kind: Kind::Url,
                flush: FlushType::Flush,
                headers: None,
            },
            3,
            100,
        );
        let t0 = Instant::now();
        assert!(lane.add(key("https://a/1"), 1, &o, t0));
        assert!(
            !lane.add(key("https://a/1"), 2, &o, t0),
            "duplicate joins the pending item"
        );
        assert_eq!(lane.due_at(linger), Some(t0 + linger));
        assert!(lane.add(key("https://a/2"), 3, &o, t0));
        assert!(lane.add(key("https://a/3"), 4, &o, t0));
        assert_eq!(lane.due_at(linger), Some(t0), "a full batch is due at once");
        let b = lane.take().unwrap();
        assert_eq!(b.items.len(), 3);
        assert_eq!(b.items[0].waiters().collect::<Vec<_>>(), vec![1, 2]);
        // After the batch left, the same key is pending again (purged again).
        assert!(lane.add(key("https://a/1"), 5, &o, t0));
        lane.put_back(b.items, false);
        assert_eq!(lane.take().unwrap().items.len(), 3, "retries go first");
        assert_eq!(lane.take().unwrap().items[0].first, 5);
        assert!(lane.take().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn split_put_back_keeps_order_and_size() {
        let o = Arc::new(Origin::default());
        let mut lane = Lane::new(
            LaneKey {
                kind: Kind::Dir,
                flush: FlushType::Delete,
                headers: None,
            },
            10,
            100,
        );
        let now = Instant::now();
        for i in 0..7 {
            lane.add(key(&format!("https://a/{i}/")), i, &o, now);
        }
        let b = lane.take().unwrap();
        lane.put_back_split(b.items, 3, true);
        let sizes: Vec<usize> = std::iter::from_fn(|| lane.take())
            .map(|b| b.items.len())
            .collect();
        assert_eq!(sizes, vec![3, 3, 1]);
    }
    #[tokio::test(start_paused = true)]
    async fn dedupe_stays_exact_after_partial_takes() {
        let o = Arc::new(Origin::default());
        let mut lane = Lane::new(
            LaneKey {
                kind: Kind::Url,
                flush: FlushType::Flush,
                headers: None,
            },
            2,
            100,
        );
        let now = Instant::now();
        for i in 0..5u64 {
            assert!(lane.add(key(&format!("https://a/{i}")), i, &o, now));
        }
        assert_eq!(lane.take().unwrap().items.len(), 2); // 0 and 1 leave
        assert!(
            !lane.add(key("https://a/3"), 30, &o, now),
            "3 is still pending"
        );
        assert!(
            lane.add(key("https://a/0"), 40, &o, now),
            "0 was sent: pending again"
        );
        let order: Vec<Vec<u64>> = std::iter::from_fn(|| lane.take())
            .flat_map(|b| b.items)
            .map(|i| i.waiters().collect())
            .collect();
        assert_eq!(order, vec![vec![2], vec![3, 30], vec![4], vec![40]]);
        assert_eq!(lane.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_is_idle_only_when_it_holds_nothing() {
        let o = Arc::new(Origin::default());
        let headers: HeaderSet = Some(Arc::from(vec![Header {
            name: "x-device".into(),
            value: "mobile".into(),
        }]));
        let mut lane = Lane::new(
            LaneKey {
                kind: Kind::Url,
                flush: FlushType::Flush,
                headers,
            },
            10,
            100,
        );
        assert!(lane.is_idle());
        lane.add(key("https://a/1"), 1, &o, Instant::now());
        assert!(!lane.is_idle(), "waiting");
        let b = lane.take().unwrap();
        lane.in_flight += b.items.len();
        assert!(!lane.is_idle(), "in flight");
        lane.in_flight -= b.items.len();
        assert!(lane.is_idle());
        lane.parking = true;
        assert!(!lane.is_idle(), "being parked");
        lane.parking = false;
        lane.parked_until = Some(1);
        assert!(!lane.is_idle(), "parked");
    }
}
