//! Admission of a formed batch: one Redis script grants the call in the cluster-wide rate windows
//! and reserves each class's quota; what is not granted goes back, and a spent class parks.

use tokio::time::{Duration, Instant};
use tracing::{info, warn};

use super::core::later;
use super::{Admit, Armed, Dispatcher, QUOTA_RETRY};
use crate::coalesce::PendingItem;
use crate::event::Priority;
use crate::provider::Kind;
use crate::quota::{Admission, Want, bulk_limit, unix_now};

impl Dispatcher {
    /// Asks the admission script for a batch (interactive items first, as [`Core::next`] forms
    /// it): one script checks the cluster-wide rate windows and grants each class its part of the
    /// quota; what is not granted is given back, a class that got nothing parks (bulk alone when
    /// only its share is spent), and a full cluster-wide window makes the batch wait.
    pub(super) async fn admit(
        &mut self,
        lane: usize,
        mut items: Vec<PendingItem>,
        now: Instant,
    ) -> Admit {
        let kind = self.core.lanes[lane].key.kind.quota_kind();
        let limit = self.limit(kind);
        let c = &self.p.limits;
        let interactive = items
            .iter()
            .take_while(|i| i.priority == Priority::Interactive)
            .count();
        let want = Want {
            interactive: interactive as u64,
            bulk: (items.len() - interactive) as u64,
            bulk_limit: bulk_limit(limit, c.interactive_reserve),
        };
        let now_unix = unix_now();
        let policy = c.quota_policy();
        let admitted = self
            .p
            .quota
            .admit(
                &mut self.p.shared_rate,
                &c.name,
                kind,
                limit,
                want,
                now_unix,
                policy,
            )
            .await;
        let r = match admitted {
            Err(e) => {
                self.p.metrics.quota_errors.inc();
                warn!(provider = %c.name, error = %e, "cannot reach Redis for a call grant; holding calls (fail closed)");
                self.core.restore(lane, items, now);
                self.core.hold(later(now, QUOTA_RETRY));
                return Admit::Next;
            }
            Ok(Admission::Wait(wait)) => {
                // Other replicas took the window (or the provider asked everyone to wait): try
                // again when it frees, with a little jitter so replicas do not ask in lockstep.
                let jitter = Duration::from_micros(rand::random::<u64>() % 5_000);
                let at = later(later(now, wait), jitter);
                self.shared_ready_at = Some(at);
                self.core.restore(lane, items, now);
                self.rate_waiting_since.get_or_insert(now);
                self.wake(at);
                return Admit::Wait;
            }
            Ok(Admission::Reserved(r)) => r,
        };
        let q = kind.index();
        self.m.quota_used[q].set(r.used.min(i64::MAX as u64) as i64);
        let reserve_left = limit.saturating_sub(r.used.max(want.bulk_limit));
        self.m.quota_reserve_left[q].set(reserve_left.min(i64::MAX as u64) as i64);
        let until = r.free_at.max(now_unix + 1);
        let granted_i = r.granted - r.granted_bulk;
        if granted_i == 0 && want.interactive > 0 {
            self.park(kind, Priority::Interactive, until, now, now_unix);
        }
        if r.granted_bulk == 0 && want.bulk > 0 {
            self.park(kind, Priority::Bulk, until, now, now_unix);
        }
        if r.granted == 0 {
            self.core.restore(lane, items, now);
            return Admit::Next;
        }
        // Keep the granted head of each class; give the rest back.
        let mut bulk = items.split_off(interactive);
        let rest_bulk = bulk.split_off(r.granted_bulk as usize);
        let mut rest = items.split_off(granted_i as usize);
        rest.extend(rest_bulk);
        items.extend(bulk);
        if !rest.is_empty() {
            self.core.give_back(lane, rest, now);
        }
        Admit::Send(Armed {
            lane,
            items,
            reservation: r,
        })
    }

    /// Parks a class of a quota kind (its lanes' items of that class move to the parking queue
    /// on the next pump).
    pub(super) fn park(
        &mut self,
        kind: Kind,
        priority: Priority,
        until: i64,
        now: Instant,
        now_unix: i64,
    ) {
        if !self.core.park_class(kind, priority, until, now, now_unix) {
            return;
        }
        let at = chrono::DateTime::from_timestamp(until, 0).map(|d| d.to_rfc3339());
        let window = self.p.limits.quota_window().as_str();
        let provider = &self.p.limits.name;
        match priority {
            Priority::Interactive => {
                warn!(%provider, kind = %kind, until = at.as_deref().unwrap_or("?"), window,
                "quota spent: this kind is parked until quota comes back; its items move to the parking queue")
            }
            Priority::Bulk => {
                info!(%provider, kind = %kind, until = at.as_deref().unwrap_or("?"), window,
                reserve = self.p.limits.interactive_reserve,
                "bulk share of the quota spent: bulk items of this kind wait in the bulk parking queue; interactive items keep flowing")
            }
        }
    }

    /// Parks every class of a quota kind (the provider says the quota is spent).
    pub(super) fn park_all(&mut self, kind: Kind, until: i64, now: Instant, now_unix: i64) {
        if !self.core.park(kind, until, now, now_unix) {
            return;
        }
        let at = chrono::DateTime::from_timestamp(until, 0).map(|d| d.to_rfc3339());
        warn!(provider = %self.p.limits.name, kind = %kind, until = at.as_deref().unwrap_or("?"),
            window = self.p.limits.quota_window().as_str(),
            "the provider says the quota is spent: this kind is parked until quota comes back; its items move to the parking queue");
    }
}
