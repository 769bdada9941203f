//! Lanes, dedupe of pending keys, and batch formation (DESIGN "Flush policy").
//!
//! A lane holds the items of one provider that are interchangeable in a call (same kind and flush
//! type). A key already pending in its lane is not added twice: the new delivery joins the waiters
//! of the pending item. Once an item is taken into a batch it leaves `pending`, so an event for
//! the same key arriving after the batch was sent is purged again — dedupe never swallows a newer
//! change. Batches put back after a failure wait in `retry`, ahead of fresh items, and dedupe
//! covers them too.
//!
//! Priority (CONTRACT §3): each lane keeps interactive and bulk items apart. Interactive items go
//! first into every batch and bulk items fill what is left; a key waiting as bulk that an
//! interactive event asks for becomes interactive. Directory escalation ([`escalate`]) replaces
//! many pending bulk URLs under one directory by one directory item that every one of their
//! deliveries waits on.

use std::sync::Arc;

use tokio::time::{Duration, Instant};

pub use self::item::{HeaderSet, LaneKey, Origin, PendingItem, waiters_of};
use self::queue::{PendingQueue, RetryBatch, RetryPool};
use crate::cache_key::CacheKey;
use crate::event::Priority;
use crate::ledger::DeliveryId;

/// One lane's state.
#[derive(Debug)]
pub struct Lane {
    pub key: LaneKey,
    /// Pending items by class ([`Priority::index`]).
    pending: [PendingQueue; 2],
    retry: RetryPool,
    /// Items per call; halves when the provider says a batch was too large and grows back after
    /// full batches are accepted again, up to `max_cap`.
    pub cap: usize,
    /// The provider's per-call limit for this lane's kind.
    pub max_cap: usize,
    /// Items taken out of the lane and not yet settled: in a call, or in a dead-letter or parking
    /// publish (for the pending gauge, and so a busy lane is never recycled).
    pub in_flight: usize,
    /// A parking publish for this lane's items of each class is under way.
    pub parking: [bool; 2],
    /// Pending bulk items whose domain escalates (`dir_escalation > 0`).
    escalable: usize,
    /// Escalable items arrived since the last escalation scan.
    escalation_due: bool,
}

/// What a batch may hold: the classes whose quota gate is open.
pub type Allowed = [bool; 2];

/// Both classes allowed.
pub const ALL_CLASSES: Allowed = [true, true];

impl Lane {
    /// A new empty lane whose calls take at most `cap` items.
    pub fn new(key: LaneKey, cap: usize) -> Lane {
        let cap = cap.max(1);
        Lane {
            key,
            pending: Default::default(),
            retry: RetryPool::default(),
            cap,
            max_cap: cap,
            in_flight: 0,
            parking: [false; 2],
            escalable: 0,
            escalation_due: false,
        }
    }

    /// Nothing waiting, in flight or being parked: the lane holds no state worth keeping.
    pub fn is_idle(&self) -> bool {
        self.waiting() == 0 && self.in_flight == 0 && !self.parking.iter().any(|p| *p)
    }

    /// Items waiting (not in flight).
    pub fn waiting(&self) -> usize {
        self.pending[0].len() + self.pending[1].len() + self.retry.len
    }

    /// Items of one class waiting.
    pub fn waiting_of(&self, priority: Priority) -> usize {
        self.pending[priority.index()].len()
            + self
                .retry
                .items
                .values()
                .filter(|i| i.priority == priority)
                .count()
    }

    /// Whether an interactive item waits (pending or for a retry).
    pub fn has_interactive(&self) -> bool {
        !self.pending[0].is_empty()
            || self
                .retry
                .items
                .values()
                .any(|i| i.priority == Priority::Interactive)
    }

    /// When the oldest waiting item (pending or put back for retry) was first requested.
    pub fn oldest_since(&self) -> Option<Instant> {
        let retry = self.retry.items.values().map(|i| i.since).min();
        let pending = self
            .pending
            .iter()
            .filter_map(|p| p.front().map(|i| i.since));
        retry.into_iter().chain(pending).min()
    }

    /// Adds an interactive request that never escalates; see [`Lane::add_item`].
    pub fn add(
        &mut self,
        key: CacheKey,
        delivery: DeliveryId,
        origin: &Arc<Origin>,
        now: Instant,
    ) -> bool {
        self.add_item(key, delivery, origin, now, Priority::Interactive, 0)
    }

    /// Adds a request; returns `false` when it joined an item already waiting (deduplicated),
    /// whether pending or waiting for a retry. An interactive request for a key waiting as bulk
    /// makes the item interactive.
    pub fn add_item(
        &mut self,
        key: CacheKey,
        delivery: DeliveryId,
        origin: &Arc<Origin>,
        now: Instant,
        priority: Priority,
        escalate: u32,
    ) -> bool {
        if let Some(item) = self.retry.items.get_mut(&key) {
            item.more.push(delivery);
            item.priority = item.priority.min(priority);
            return false;
        }
        if let Some(item) = self.pending[0].get_mut(&key) {
            item.more.push(delivery);
            return false;
        }
        if let Some(item) = self.pending[1].get_mut(&key) {
            item.more.push(delivery);
            if priority == Priority::Interactive {
                self.upgrade(&key);
            }
            return false;
        }
        let mut item = PendingItem::new(key, delivery, origin.clone(), now);
        item.priority = priority;
        item.escalate = escalate;
        self.push(item);
        true
    }

    /// Moves a bulk pending item to the interactive queue.
    fn upgrade(&mut self, key: &CacheKey) {
        if let Some(mut item) = self.take_bulk(key) {
            item.priority = Priority::Interactive;
            // Its key is in neither queue now, so this cannot fail.
            let _ = self.pending[0].push_back(item);
        }
    }

    /// Removes one bulk pending item.
    fn take_bulk(&mut self, key: &CacheKey) -> Option<PendingItem> {
        let item = self.pending[1].remove(key)?;
        if item.escalate > 0 {
            self.escalable -= 1;
        }
        Some(item)
    }

    /// Appends a new item (its key is pending nowhere).
    fn push(&mut self, item: PendingItem) {
        let bulk_escalable = item.priority == Priority::Bulk && item.escalate > 0;
        if self.pending[item.priority.index()].push_back(item).is_ok() && bulk_escalable {
            self.escalable += 1;
            self.escalation_due = true;
        }
    }

    /// When the lane should flush, for the `allowed` classes: a retry batch at its
    /// `not_before`; a full pending batch at once; otherwise when the oldest pending item has
    /// lingered (at once when `draining`). While URLs that may escalate wait, a full batch waits
    /// for the linger as well, so a burst is seen whole before its directories are chosen.
    /// `None` when nothing waits.
    pub fn due_at(&self, linger: Duration, draining: bool, allowed: Allowed) -> Option<Instant> {
        let retry = self
            .retry
            .batches
            .iter()
            .filter(|b| self.batch_allowed(b, allowed))
            .map(|b| b.not_before)
            .min();
        let [i, b] = &self.pending;
        let fresh = i.len() + if allowed[1] { b.len() } else { 0 };
        let full = i.len() >= self.cap || (fresh >= self.cap && self.escalable == 0);
        let pending = (0..2)
            .filter(|c| allowed[*c])
            .filter_map(|c| self.pending[c].front())
            .map(|oldest| {
                if full || draining {
                    oldest.since
                } else {
                    oldest.since.checked_add(linger).unwrap_or(oldest.since)
                }
            })
            .min();
        retry.into_iter().chain(pending).min()
    }

    fn batch_allowed(&self, b: &RetryBatch, allowed: Allowed) -> bool {
        b.keys.iter().any(|k| {
            self.retry
                .items
                .get(k)
                .is_some_and(|i| allowed[i.priority.index()])
        })
    }

    /// Takes the next batch of the `allowed` classes, interactive items first: the first due
    /// retry batch that holds an interactive item, else a fresh batch of interactive items topped
    /// up with bulk ones, else the first due retry batch, else bulk items; up to the cap.
    pub fn take(&mut self, now: Instant) -> Option<Vec<PendingItem>> {
        self.take_allowed(now, ALL_CLASSES)
    }

    /// [`Lane::take`] of the `allowed` classes only.
    pub fn take_allowed(&mut self, now: Instant, allowed: Allowed) -> Option<Vec<PendingItem>> {
        let due = |b: &RetryBatch| b.not_before <= now;
        let items = &self.retry.items;
        let interactive_retry = self.retry.batches.iter().position(|b| {
            due(b)
                && b.keys.iter().any(|k| {
                    items
                        .get(k)
                        .is_some_and(|i| i.priority == Priority::Interactive)
                })
        });
        if let Some(at) = interactive_retry.filter(|_| allowed[0]) {
            return Some(self.take_retry(at, allowed));
        }
        if allowed[0] && !self.pending[0].is_empty() {
            let mut out = self.pending[0].take_front(self.cap);
            if allowed[1] && out.len() < self.cap {
                let more = self.cap - out.len();
                out.extend(self.take_bulk_front(more));
            }
            return Some(out);
        }
        let bulk_retry = self
            .retry
            .batches
            .iter()
            .position(|b| due(b) && self.batch_allowed(b, allowed));
        if let Some(at) = bulk_retry {
            return Some(self.take_retry(at, allowed));
        }
        if allowed[1] && !self.pending[1].is_empty() {
            return Some(self.take_bulk_front(self.cap));
        }
        None
    }

    fn take_bulk_front(&mut self, n: usize) -> Vec<PendingItem> {
        let out = self.pending[1].take_front(n);
        self.escalable -= out.iter().filter(|i| i.escalate > 0).count();
        out
    }

    /// Takes retry batch `at` (trimmed to the cap), interactive items first; items of a class
    /// not allowed stay in the pool as a batch of their own.
    fn take_retry(&mut self, at: usize, allowed: Allowed) -> Vec<PendingItem> {
        let r = &mut self.retry;
        let Some(mut b) = r.batches.remove(at) else {
            return Vec::new();
        };
        let (mut keys, held): (Vec<CacheKey>, Vec<CacheKey>) = b
            .keys
            .drain(..)
            .partition(|k| r.items.get(k).is_some_and(|i| allowed[i.priority.index()]));
        if keys.len() > self.cap {
            let rest = keys.split_off(self.cap);
            r.batches.insert(
                at,
                RetryBatch {
                    keys: rest,
                    not_before: b.not_before,
                    fill: b.fill,
                },
            );
        }
        if !held.is_empty() {
            r.batches.insert(
                at,
                RetryBatch {
                    keys: held,
                    not_before: b.not_before,
                    fill: b.fill,
                },
            );
        }
        let mut items: Vec<PendingItem> = keys.iter().filter_map(|k| r.items.remove(k)).collect();
        r.len -= items.len();
        if b.fill {
            if allowed[0] && items.len() < self.cap {
                let more = self.cap - items.len();
                items.extend(self.pending[0].take_front(more));
            }
            if allowed[1] && items.len() < self.cap {
                let more = self.cap - items.len();
                items.extend(self.take_bulk_front(more));
            }
        }
        items.sort_by_key(|i| i.priority);
        items
    }

    /// Takes everything waiting (to park it).
    pub fn take_all(&mut self) -> Vec<PendingItem> {
        let mut all = self.take_all_of(Priority::Interactive);
        all.extend(self.take_all_of(Priority::Bulk));
        all
    }

    /// Takes every waiting item of one class (to park it).
    pub fn take_all_of(&mut self, priority: Priority) -> Vec<PendingItem> {
        let r = &mut self.retry;
        let mut all = Vec::new();
        for b in &mut r.batches {
            b.keys.retain(|k| match r.items.get(k) {
                Some(i) if i.priority == priority => {
                    all.extend(r.items.remove(k));
                    false
                }
                _ => true,
            });
        }
        r.batches.retain(|b| !b.keys.is_empty());
        r.len = r.items.len();
        match priority {
            Priority::Interactive => {
                let n = self.pending[0].len();
                all.extend(self.pending[0].take_front(n));
            }
            Priority::Bulk => {
                let n = self.pending[1].len();
                all.extend(self.take_bulk_front(n));
            }
        }
        all
    }

    /// Puts items back to be sent again from `not_before` on, as one retry batch behind those
    /// already waiting (a batch that failed goes behind the others, so one failing batch cannot
    /// keep the front). An item whose key was requested again meanwhile is merged into the new
    /// pending copy: one purge after now covers both.
    pub fn retry(&mut self, items: Vec<PendingItem>, not_before: Instant) {
        let mut keys = Vec::with_capacity(items.len());
        for it in items {
            let Some(it) = self.merge_pending(it) else {
                continue;
            };
            keys.push(it.key.clone());
            self.retry.len += 1;
            self.retry.items.insert(it.key.clone(), it);
        }
        if !keys.is_empty() {
            self.retry.batches.push_back(RetryBatch {
                keys,
                not_before,
                fill: false,
            });
        }
    }

    /// Returns items taken by [`Lane::take`] that were never sent (no quota, no rate permit yet),
    /// first in line, due at once, as one batch that is topped up with pending items (interactive
    /// first) when it goes, so waiting for the limiter never makes a call emptier. An item whose
    /// key was requested again meanwhile is merged into the pending copy.
    pub fn restore(&mut self, items: Vec<PendingItem>, now: Instant) {
        let mut keys = Vec::with_capacity(items.len());
        for it in items {
            let Some(it) = self.merge_pending(it) else {
                continue;
            };
            keys.push(it.key.clone());
            self.retry.len += 1;
            self.retry.items.insert(it.key.clone(), it);
        }
        if !keys.is_empty() {
            self.retry.batches.push_front(RetryBatch {
                keys,
                not_before: now,
                fill: true,
            });
        }
    }

    /// Merges `it` into the pending copy of its key, if there is one (upgrading a bulk copy
    /// when `it` is interactive); gives it back otherwise.
    fn merge_pending(&mut self, it: PendingItem) -> Option<PendingItem> {
        if let Some(p) = self.pending[0].get_mut(&it.key) {
            p.absorb(it);
            return None;
        }
        if self.pending[1].contains(&it.key) {
            let interactive = it.priority == Priority::Interactive;
            let key = it.key.clone();
            if let Some(p) = self.pending[1].get_mut(&key) {
                p.absorb(it);
            }
            if interactive {
                self.upgrade(&key);
            }
            return None;
        }
        Some(it)
    }

    /// Replaces pending bulk URLs by directory purges: while some directory (never the host root)
    /// holds at least its domain's `dir_escalation` and `min_urls` of them, the deepest such
    /// directory becomes one item that every delivery of its URLs waits on. Runs only when
    /// escalable URLs arrived since the last time. Returns the directory items and how many URLs
    /// each replaced.
    pub fn escalate(&mut self, min_urls: u64) -> Vec<(PendingItem, usize)> {
        let mut out = Vec::new();
        if !std::mem::take(&mut self.escalation_due) || self.escalable == 0 {
            return out;
        }
        loop {
            let eligible = self.pending[1].iter().filter(|i| i.escalate > 0);
            let Some((dir, _)) = escalate::choose(eligible, min_urls) else {
                break;
            };
            let dir = dir.to_string();
            let under: Vec<CacheKey> = self.pending[1]
                .iter()
                .filter(|i| i.escalate > 0 && i.key.as_str().starts_with(&dir))
                .map(|i| i.key.clone())
                .collect();
            let mut items = under.iter().filter_map(|k| self.take_bulk(k));
            let Some(first) = items.next() else {
                break;
            };
            let mut item = PendingItem::new(
                CacheKey::from_normalized(&dir),
                first.first,
                first.origin.clone(),
                first.since,
            );
            item.priority = Priority::Bulk;
            item.more = first.more;
            let mut n = 1;
            for it in items {
                item.absorb(it);
                n += 1;
            }
            out.push((item, n));
        }
        out
    }

    /// Adds an item formed elsewhere (a directory that replaces escalated URLs), merging it into
    /// a waiting copy of its key.
    pub fn insert(&mut self, item: PendingItem) {
        if let Some(r) = self.retry.items.get_mut(&item.key) {
            r.absorb(item);
            return;
        }
        if let Some(it) = self.merge_pending(item) {
            self.push(it);
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
        for p in &mut self.pending {
            p.retain(|it| it.retain_waiters(&live));
        }
        self.escalable = self.pending[1].iter().filter(|i| i.escalate > 0).count();
        before - self.waiting()
    }
}

pub mod escalate;
mod item;
mod queue;
#[cfg(test)]
mod tests;
