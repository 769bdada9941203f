//! The dispatcher's pure core: lanes, gates and what every provider answer does to them. No I/O:
//! the shell (`dispatch.rs`) asks it for the next batch, and tells it what the limiter, the quota
//! and the provider said. Time comes in as arguments, so tests drive hours of retries, backoffs,
//! parking and resets under paused tokio time in milliseconds.

use tokio::time::{Duration, Instant};
use tracing::info;

use super::Incoming;
use super::decide::{self, Decision, Health, RetryPolicy};
use crate::coalesce::{Allowed, Lane, LaneKey, PendingItem};
use crate::event::Priority;
use crate::ledger::DeliveryId;
use crate::metrics::RetryReason;
use crate::provider::{FlushType, Kind, ProviderError};

/// How long calls stay stopped after an authentication failure before one probe call is tried.
pub const AUTH_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// The longest a lane is parked in one go; quota windows end within a day, so a longer park can
/// only come from a bad answer or clock, and is re-checked after this.
const MAX_PARK: Duration = Duration::from_secs(2 * 86_400);

/// `now + d` that can never panic: an instant past what the clock can represent is "far away".
pub fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(MAX_PARK))
        .unwrap_or(now)
}

/// Whether calls may go now: for the whole provider, and for each quota kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Calls may go.
    Open,
    /// Rate limited, or failing across batches: no call before `until`.
    Backoff { until: Instant },
    /// Credentials refused: from `probe_at`, one call at a time probes whether they work again.
    AuthStopped { probe_at: Instant },
    /// The quota of this kind is spent until `until` (`until_unix` in Unix seconds).
    Parked { until: Instant, until_unix: i64 },
}

impl Gate {
    /// `Ok` when a call may go now; otherwise when to look again (`None`: when a call returns).
    pub fn admits(&self, now: Instant, calls: usize) -> Result<(), Option<Instant>> {
        match *self {
            Gate::Open => Ok(()),
            Gate::Backoff { until } | Gate::Parked { until, .. } if now < until => Err(Some(until)),
            Gate::Backoff { .. } | Gate::Parked { .. } => Ok(()),
            Gate::AuthStopped { probe_at } if now < probe_at => Err(Some(probe_at)),
            Gate::AuthStopped { .. } if calls > 0 => Err(None),
            Gate::AuthStopped { .. } => Ok(()),
        }
    }
}

/// What the core needs of the provider's config and capabilities.
#[derive(Debug, Clone)]
pub struct Settings {
    pub linger: Duration,
    pub retry: RetryPolicy,
    pub max_in_flight: usize,
    /// Items per call by kind ([`Kind::ALL`] order).
    pub per_call: [usize; 3],
    /// Whether file and directory purges honour the flush type (else they share one lane).
    pub url_flush: bool,
    pub dir_flush: bool,
    /// The fewest URLs one directory purge must replace to save quota
    /// ([`crate::coalesce::escalate::min_urls`]); `None`: never escalate.
    pub escalation_min_urls: Option<u64>,
}

/// The next step the shell should take.
#[derive(Debug)]
pub enum Next {
    /// Send these items of `lane` (after reserving quota and taking a rate permit).
    Send {
        lane: usize,
        items: Vec<PendingItem>,
    },
    /// Nothing to send now; look again at this instant (`None`: when something happens).
    Wait(Option<Instant>),
}

/// Work for the shell after a provider answer.
#[derive(Debug)]
pub enum Effect {
    /// These deliveries' items are done (ledger).
    Done(Vec<DeliveryId>),
    /// Publish dead-letter records for `items` of `lane`, then [`Core::settled`] them.
    DeadLetter {
        lane: usize,
        items: Vec<PendingItem>,
        error: &'static str,
        code: String,
        message: String,
    },
    /// Items were put back for another attempt, and why (`purge_retries_total`).
    Retried(RetryReason),
    /// The provider says the quota of this kind is spent: record it, then [`Core::park`].
    QuotaExhausted {
        kind: Kind,
    },
    /// Calls stopped for bad credentials (first refusal) or resumed (first success after).
    AuthStopped,
    AuthResumed,
}

/// One provider's dispatch state.
#[derive(Debug)]
pub struct Core {
    pub settings: Settings,
    pub lanes: Vec<Lane>,
    /// The whole provider's gate (never `Parked`).
    pub gate: Gate,
    /// Per quota kind (url, dir) and class (interactive, bulk): `Open` or `Parked`. Bulk parks
    /// when its share of the window is spent, while interactive items keep flowing.
    pub quota_gates: [[Gate; 2]; 2],
    /// Directory escalations so far (the shell exports the count).
    pub escalations: u64,
    /// Calls taken and not yet answered (including one waiting for its rate permit).
    pub calls: usize,
    /// Consecutive failed calls.
    streak: u32,
    /// Accepted calls so far (items remember the count when they first failed).
    successes: u64,
    /// Flush without waiting for the linger (shutdown).
    pub draining: bool,
}

fn quota_index(kind: Kind) -> usize {
    match kind.quota_kind() {
        Kind::Url => 0,
        _ => 1,
    }
}

impl Core {
    /// An empty core.
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            lanes: Vec::new(),
            gate: Gate::Open,
            quota_gates: [[Gate::Open; 2]; 2],
            escalations: 0,
            calls: 0,
            streak: 0,
            successes: 0,
            draining: false,
        }
    }

    /// Whether nothing waits and nothing is under way.
    pub fn is_idle(&self) -> bool {
        self.calls == 0 && self.lanes.iter().all(Lane::is_idle)
    }

    /// Whether calls are stopped for bad credentials.
    pub fn auth_stopped(&self) -> bool {
        matches!(self.gate, Gate::AuthStopped { .. })
    }

    /// Items waiting or under way.
    pub fn items(&self) -> usize {
        self.lanes.iter().map(|l| l.waiting() + l.in_flight).sum()
    }

    fn lane_index(&mut self, key: LaneKey) -> usize {
        if let Some(i) = self.lanes.iter().position(|l| l.key == key) {
            return i;
        }
        let lane = Lane::new(key.clone(), self.settings.per_call[key.kind.index()]);
        // Header sets come from events, so without reuse every distinct set ever seen would keep
        // a lane for the life of the process. An idle header lane holds nothing and nothing
        // refers to it (every call and publish keeps `in_flight` above zero until settled), so
        // its slot can take the new key without disturbing any other lane's index.
        if let Some(i) = self
            .lanes
            .iter()
            .position(|l| l.key.headers.is_some() && l.is_idle())
        {
            self.lanes[i] = lane;
            return i;
        }
        self.lanes.push(lane);
        self.lanes.len() - 1
    }

    /// Adds items; returns how many joined an item already waiting, by kind and class.
    pub fn add(&mut self, items: Vec<Incoming>) -> [[u64; 2]; 3] {
        let mut deduplicated = [[0; 2]; 3];
        for it in items {
            // The flush type only splits lanes where the provider honours it for that kind.
            let honoured = match it.kind {
                Kind::Url => self.settings.url_flush,
                Kind::Dir | Kind::Regex => self.settings.dir_flush,
            };
            let flush = if honoured { it.flush } else { FlushType::Flush };
            let i = self.lane_index(LaneKey {
                kind: it.kind,
                flush,
                headers: it.headers,
            });
            let escalate = if self.settings.escalation_min_urls.is_some() {
                it.escalate
            } else {
                0
            };
            let lane = &mut self.lanes[i];
            if !lane.add_item(
                it.key,
                it.delivery,
                &it.origin,
                it.received,
                it.priority,
                escalate,
            ) {
                deduplicated[it.kind.index()][it.priority.index()] += 1;
            }
        }
        deduplicated
    }

    /// Drops waiters that `live` rejects (deliveries of a dead channel); returns items dropped.
    pub fn prune(&mut self, live: impl Fn(DeliveryId) -> bool) -> usize {
        self.lanes.iter_mut().map(|l| l.prune(&live)).sum()
    }

    /// The next batch that is due and allowed now, or when to look again.
    pub fn next(&mut self, now: Instant) -> Next {
        if let Err(at) = self.gate.admits(now, self.calls) {
            return Next::Wait(at);
        }
        if matches!(self.gate, Gate::Backoff { .. }) {
            self.gate = Gate::Open;
        }
        if self.calls >= self.settings.max_in_flight {
            return Next::Wait(None);
        }
        for g in self.quota_gates.iter_mut().flatten() {
            if let Gate::Parked { until, .. } = *g
                && now >= until
            {
                *g = Gate::Open;
                info!("quota window reset: parked items of this kind flow again");
            }
        }
        self.escalate(now);
        // Lanes with interactive items first, then the earliest due.
        let mut best: Option<(usize, bool, Instant)> = None;
        let mut wake: Option<Instant> = None;
        let mut soon = |at: Instant| wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        for (i, lane) in self.lanes.iter().enumerate() {
            let gates = self.quota_gates[quota_index(lane.key.kind)];
            let allowed = allowed(&gates);
            for g in gates {
                if let Gate::Parked { until, .. } = g {
                    soon(until);
                }
            }
            if allowed == [false, false] {
                continue;
            }
            let Some(due) = lane.due_at(self.settings.linger, self.draining, allowed) else {
                continue;
            };
            if due <= now {
                let interactive = allowed[0] && lane.has_interactive();
                let better = best.is_none_or(|(_, bi, d)| {
                    (interactive && !bi) || (interactive == bi && due < d)
                });
                if better {
                    best = Some((i, interactive, due));
                }
            } else {
                soon(due);
            }
        }
        let Some((i, _, _)) = best else {
            return Next::Wait(wake);
        };
        let allowed = allowed(&self.quota_gates[quota_index(self.lanes[i].key.kind)]);
        let Some(items) = self.lanes[i].take_allowed(now, allowed) else {
            return Next::Wait(wake);
        };
        self.lanes[i].in_flight += items.len();
        self.calls += 1;
        Next::Send { lane: i, items }
    }

    /// Directory escalation of the URL lanes that are due: their pending bulk URLs under a
    /// directory that holds enough of them are replaced by one directory item in the matching
    /// directory lane (it spends directory quota under the same reserve rule, as bulk).
    fn escalate(&mut self, now: Instant) {
        let Some(min_urls) = self.settings.escalation_min_urls else {
            return;
        };
        let [url_gates, dir_gates] = self.quota_gates;
        if !allowed(&url_gates)[1] || !allowed(&dir_gates)[1] {
            return;
        }
        let mut formed = Vec::new();
        for lane in &mut self.lanes {
            if lane.key.kind != Kind::Url || lane.key.headers.is_some() {
                continue;
            }
            let due = lane.due_at(self.settings.linger, self.draining, [false, true]);
            if due.is_some_and(|d| d <= now) {
                formed.extend(lane.escalate(min_urls));
            }
        }
        if formed.is_empty() {
            return;
        }
        let dir = self.lane_index(LaneKey {
            kind: Kind::Dir,
            flush: FlushType::Flush,
            headers: None,
        });
        for (item, urls) in formed {
            info!(directory = %item.key, urls_replaced = urls,
                "escalated pending bulk URLs to one directory purge");
            self.escalations += 1;
            self.lanes[dir].insert(item);
        }
    }

    /// Gives back items taken by [`Core::next`] that were not sent (no quota or no rate permit
    /// yet): first in line again.
    pub fn restore(&mut self, lane: usize, items: Vec<PendingItem>, now: Instant) {
        self.calls -= 1;
        self.lanes[lane].in_flight -= items.len();
        self.lanes[lane].restore(items, now);
    }

    /// Gives back the part of a taken batch that got no quota (the granted part is still sent).
    pub fn give_back(&mut self, lane: usize, items: Vec<PendingItem>, now: Instant) {
        self.lanes[lane].in_flight -= items.len();
        self.lanes[lane].restore(items, now);
    }

    /// The Unix time until which a quota kind is parked for every class.
    pub fn parked_until_unix(&self, kind: Kind) -> Option<i64> {
        self.parked_until_class(kind, Priority::Interactive)
    }

    /// The Unix time until which one class of a quota kind is parked.
    pub fn parked_until_class(&self, kind: Kind, priority: Priority) -> Option<i64> {
        match self.quota_gates[quota_index(kind)][priority.index()] {
            Gate::Parked { until_unix, .. } => Some(until_unix),
            _ => None,
        }
    }

    /// Holds every call until `until` (e.g. Redis did not answer a reservation: fail closed).
    pub fn hold(&mut self, until: Instant) {
        let until = match self.gate {
            Gate::Backoff { until: u } => u.max(until),
            Gate::AuthStopped { .. } => return,
            _ => until,
        };
        self.gate = Gate::Backoff { until };
    }

    /// Parks a quota kind, every class, until `until_unix` (Unix seconds; `now_unix` is the same
    /// instant as `now`). Returns true when the kind was not parked until then already.
    pub fn park(&mut self, kind: Kind, until_unix: i64, now: Instant, now_unix: i64) -> bool {
        let bulk = self.park_class(kind, Priority::Bulk, until_unix, now, now_unix);
        self.park_class(kind, Priority::Interactive, until_unix, now, now_unix) || bulk
    }

    /// Parks one class of a quota kind (bulk when its share is spent, while interactive items of
    /// the kind keep flowing). Returns true when it was not parked until then already.
    pub fn park_class(
        &mut self,
        kind: Kind,
        priority: Priority,
        until_unix: i64,
        now: Instant,
        now_unix: i64,
    ) -> bool {
        let secs = until_unix
            .saturating_sub(now_unix)
            .clamp(1, MAX_PARK.as_secs() as i64);
        let gate = &mut self.quota_gates[quota_index(kind)][priority.index()];
        if matches!(*gate, Gate::Parked { until_unix: u, .. } if u == until_unix) {
            return false;
        }
        *gate = Gate::Parked {
            until: later(now, Duration::from_secs(secs as u64)),
            until_unix,
        };
        true
    }

    /// Lanes with items of a parked class to move to the parking queue: takes them (the lane
    /// counts them in flight until [`Core::settled`]) and returns (lane, class, items,
    /// until_unix).
    pub fn take_parkable(&mut self) -> Vec<(usize, Priority, Vec<PendingItem>, i64)> {
        let mut out = Vec::new();
        for (i, lane) in self.lanes.iter_mut().enumerate() {
            for priority in Priority::ALL {
                let gate = self.quota_gates[quota_index(lane.key.kind)][priority.index()];
                let Gate::Parked { until_unix, .. } = gate else {
                    continue;
                };
                if lane.parking[priority.index()] || lane.waiting_of(priority) == 0 {
                    continue;
                }
                let items = lane.take_all_of(priority);
                lane.parking[priority.index()] = true;
                lane.in_flight += items.len();
                out.push((i, priority, items, until_unix));
            }
        }
        out
    }

    /// A dead-letter or parking publish (`parking`: of which class) of `n` items of `lane`
    /// finished; `failed` items (a parking publish the broker refused) go back to wait.
    pub fn settled(
        &mut self,
        lane: usize,
        n: usize,
        parking: Option<Priority>,
        failed: Vec<PendingItem>,
        now: Instant,
    ) {
        let l = &mut self.lanes[lane];
        l.in_flight -= n + failed.len();
        if let Some(p) = parking {
            l.parking[p.index()] = false;
        }
        l.restore(failed, now);
    }
}

/// The classes a kind's gates let through now (a parked gate past its time is reopened by
/// [`Core::next`] before this is asked).
fn allowed(gates: &[Gate; 2]) -> Allowed {
    gates.map(|g| !matches!(g, Gate::Parked { .. }))
}

/// Splits a refused batch to find the offending items: by host first (a host the account does
/// not serve is the usual cause), then in halves.
fn isolate(mut items: Vec<PendingItem>) -> Vec<Vec<PendingItem>> {
    items.sort_by(|a, b| decide::host_of(a.key.as_str()).cmp(decide::host_of(b.key.as_str())));
    let mut groups: Vec<Vec<PendingItem>> = Vec::new();
    for it in items {
        match groups.last_mut() {
            Some(g) if decide::host_of(g[0].key.as_str()) == decide::host_of(it.key.as_str()) => {
                g.push(it)
            }
            _ => groups.push(vec![it]),
        }
    }
    if groups.len() > 1 {
        return groups;
    }
    let mut all = groups.pop().unwrap_or_default();
    let rest = all.split_off(all.len().div_ceil(2));
    vec![all, rest]
}

mod finish;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_priority;
