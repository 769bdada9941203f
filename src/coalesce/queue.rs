//! The two containers of a lane: pending items in arrival order (one queue per priority class)
//! and items put back for a retry.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::PendingItem;
use crate::cache_key::CacheKey;

/// Sequence number of the first slot of a fresh queue.
const FIRST_SEQ: u64 = 0;

/// Pending items in arrival order, with O(1) dedupe lookup, O(batch) removal from the front (an
/// `IndexMap` drain would re-index the whole backlog on every batch) and O(1) removal of one key
/// anywhere (a bulk item upgraded to interactive, URLs escalated to their directory), which
/// leaves an empty slot that the front removal skips.
#[derive(Debug)]
pub(super) struct PendingQueue {
    slots: VecDeque<Option<PendingItem>>,
    /// Sequence number of `slots[0]`; `slots[i]` has sequence `head + i`.
    head: u64,
    /// Live items (slots that are not empty).
    live: usize,
    /// Cache key → sequence number of its pending item. foldhash: keys are our own normalized
    /// URLs on a hot path, and HashDoS resistance is kept by its per-process random seed.
    index: HashMap<CacheKey, u64, foldhash::fast::RandomState>,
}

impl Default for PendingQueue {
    fn default() -> Self {
        PendingQueue {
            slots: VecDeque::new(),
            head: FIRST_SEQ,
            live: 0,
            index: HashMap::default(),
        }
    }
}

impl PendingQueue {
    pub(super) fn len(&self) -> usize {
        self.live
    }

    pub(super) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The oldest item (the front slot is never empty).
    pub(super) fn front(&self) -> Option<&PendingItem> {
        self.slots.front().and_then(Option::as_ref)
    }

    pub(super) fn contains(&self, key: &CacheKey) -> bool {
        self.index.contains_key(key)
    }

    pub(super) fn get_mut(&mut self, key: &CacheKey) -> Option<&mut PendingItem> {
        let seq = *self.index.get(key)?;
        self.slots[(seq - self.head) as usize].as_mut()
    }

    /// Appends a new item; `false` (and the item untouched) when its key is already pending.
    pub(super) fn push_back(&mut self, item: PendingItem) -> Result<(), PendingItem> {
        match self.index.entry(item.key.clone()) {
            Entry::Occupied(_) => Err(item),
            Entry::Vacant(e) => {
                e.insert(self.head + self.slots.len() as u64);
                self.slots.push_back(Some(item));
                self.live += 1;
                Ok(())
            }
        }
    }

    /// Removes one key wherever it is.
    pub(super) fn remove(&mut self, key: &CacheKey) -> Option<PendingItem> {
        let seq = self.index.remove(key)?;
        let item = self.slots[(seq - self.head) as usize].take();
        self.live -= 1;
        self.trim();
        item
    }

    /// Drops empty slots at the front, so `front` is the oldest live item.
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.head += 1;
        }
    }

    /// Removes the `n` oldest items (fewer when fewer are pending).
    pub(super) fn take_front(&mut self, n: usize) -> Vec<PendingItem> {
        let mut out = Vec::with_capacity(n.min(self.live));
        while out.len() < n {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            self.head += 1;
            if let Some(it) = slot {
                self.index.remove(&it.key);
                out.push(it);
            }
        }
        self.live -= out.len();
        self.trim();
        out
    }

    /// Every live item, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &PendingItem> {
        self.slots.iter().flatten()
    }

    /// Keeps the items `keep` says yes to (mutably, so it can drop waiters), compacting the
    /// queue. O(items).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut PendingItem) -> bool) {
        let kept: VecDeque<Option<PendingItem>> = self
            .slots
            .drain(..)
            .flatten()
            .filter_map(|mut it| keep(&mut it).then_some(Some(it)))
            .collect();
        self.slots = kept;
        self.live = self.slots.len();
        self.index.clear();
        for (i, it) in self.slots.iter().flatten().enumerate() {
            self.index.insert(it.key.clone(), self.head + i as u64);
        }
    }
}

/// Items put back after a failed call: they wait in `retry` (ahead of fresh items) and stay
/// findable by key, so a new request for a key that waits for its retry joins it instead of
/// spending quota on a second copy.
#[derive(Debug, Default)]
pub(super) struct RetryPool {
    /// Batches in the order they were put back, each with the earliest instant it may be sent.
    pub(super) batches: VecDeque<RetryBatch>,
    /// Every item of `batches`, by key.
    pub(super) items: HashMap<CacheKey, PendingItem, foldhash::fast::RandomState>,
    /// Items in `items` (the sum of the batches' lengths).
    pub(super) len: usize,
}

/// Keys of one retry batch and when it may go.
#[derive(Debug)]
pub(super) struct RetryBatch {
    pub(super) keys: Vec<CacheKey>,
    pub(super) not_before: Instant,
    /// Taken and given back unsent (no rate permit or quota yet): when it goes, it is topped up
    /// with pending items, so waiting for the limiter never makes a call emptier. Batches put
    /// back after a failure are never topped up: their split isolates a culprit.
    pub(super) fill: bool,
}
