//! One task per provider: coalesce items into lanes, pace calls, reserve quota, submit, and decide
//! what every provider answer means for the items (see `outcome`).
//!
//! Flush policy (DESIGN): a lane's batch leaves when it is full or its oldest item has lingered
//! `max_linger`, and only when the rate limiter grants a call and the quota reservation succeeds.
//! While the limiter is the bottleneck, batches fill up by themselves.

mod outcome;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant, sleep_until};
use tracing::{info, warn};

use crate::amqp::Publisher;
use crate::cache_key::CacheKey;
use crate::coalesce::{HeaderSet, Lane, LaneKey, Origin, PendingItem};
use crate::config::{ProviderConfig, QuotaWindow};
use crate::http::Readiness;
use crate::ledger::{DeliveryId, LedgerHandle};
use crate::metrics::Metrics;
use crate::provider::{Batch, FlushType, Kind, Provider};
use crate::quota::{QuotaPolicy, QuotaStore, unix_now};
use crate::ratelimit::MultiWindow;

use outcome::Outcome;

/// How long calls stay stopped after an authentication failure before one probe call is tried.
pub const AUTH_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Input messages taken at once before batches are formed (bounds the time between pumps).
const MAX_DRAIN_PER_PUMP: usize = 4096;
/// Pause after Redis failed to answer a reservation (no call is made without one: fail closed).
const QUOTA_RETRY: Duration = Duration::from_secs(1);

/// One item handed from the consumer to a provider's dispatcher.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub delivery: DeliveryId,
    pub kind: Kind,
    pub flush: FlushType,
    /// Request headers of file purges (wangsu); `None` for none.
    pub headers: HeaderSet,
    pub key: CacheKey,
    pub received: Instant,
    pub origin: Arc<Origin>,
}

/// Everything a dispatcher needs, injected.
#[derive(Clone)]
pub struct DispatcherParts {
    pub config: ProviderConfig,
    pub provider: Arc<dyn Provider>,
    pub quota: QuotaStore,
    pub ledger: LedgerHandle,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    pub linger: Duration,
    pub drain_timeout: Duration,
    /// Where quota-parked items wait for the reset.
    pub parking_queue: String,
    pub dead_letter_queue: String,
}

/// Starts a provider's dispatcher. It runs until `input` is closed (shutdown), then drains:
/// flushes everything it can without waiting for the linger, within `drain_timeout`.
pub fn spawn(
    parts: DispatcherParts,
    input: mpsc::Receiver<Vec<Incoming>>,
) -> tokio::task::JoinHandle<()> {
    let limiter = MultiWindow::new(&parts.config.rate_limits);
    let mut actions = vec![
        parts.provider.action(Kind::Url),
        parts.provider.action(Kind::Dir),
    ];
    if parts.provider.capabilities().regex {
        actions.push(parts.provider.action(Kind::Regex));
    }
    parts.metrics.init_provider(&parts.config.name, &actions);
    for (kind, limit) in [
        (Kind::Url, parts.config.urls_per_day),
        (Kind::Dir, parts.config.dirs_per_day),
    ] {
        parts
            .metrics
            .quota_limit
            .with_label_values(&[&parts.config.name, kind.as_str()])
            .set(limit as i64);
    }
    let d = Dispatcher {
        p: parts,
        lanes: Vec::new(),
        limiter,
        tasks: JoinSet::new(),
        calls_in_flight: 0,
        backoff_until: None,
        failures: 0,
        stopped: false,
        stopped_until: None,
        wake_at: None,
        rate_waiting_since: None,
        draining: false,
    };
    let span = tracing::info_span!("dispatcher", provider = %d.p.config.name, kind = d.p.config.kind.as_str());
    tokio::spawn(tracing::Instrument::instrument(d.run(input), span))
}

struct Dispatcher {
    p: DispatcherParts,
    lanes: Vec<Lane>,
    limiter: MultiWindow,
    /// Provider calls, parking publishes and dead-letter publishes under way.
    tasks: JoinSet<Outcome>,
    calls_in_flight: usize,
    /// No calls before this (rate-limited or failing provider).
    backoff_until: Option<Instant>,
    /// Consecutive transient failures (the backoff exponent).
    failures: u32,
    /// Calls stopped after an authentication failure.
    stopped: bool,
    stopped_until: Option<Instant>,
    wake_at: Option<Instant>,
    rate_waiting_since: Option<Instant>,
    draining: bool,
}

impl Dispatcher {
    async fn run(mut self, mut input: mpsc::Receiver<Vec<Incoming>>) {
        let mut input_open = true;
        let mut deadline: Option<Instant> = None;
        loop {
            self.pump(Instant::now()).await;
            self.update_gauges();
            if !input_open && self.is_idle() {
                break;
            }
            let wake = self.wake_at;
            tokio::select! {
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => match joined {
                    Ok(outcome) => self.handle(outcome).await,
                    // A panicked call takes the dispatcher down with it: carrying on would lose
                    // the call's items from the in-flight accounting (lanes and ledger never
                    // hear of them again); dying lets the supervisor exit the process and the
                    // broker redeliver them.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => warn!(provider = %self.p.config.name, error = %e, "dispatcher task failed"),
                },
                msg = input.recv(), if input_open => match msg {
                    Some(items) => {
                        self.add(items);
                        // Take everything already waiting before forming batches: pumping after
                        // each message would send a backlog whose linger has passed one item at a
                        // time instead of in full batches.
                        for _ in 0..MAX_DRAIN_PER_PUMP {
                            match input.try_recv() {
                                Ok(more) => self.add(more),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        input_open = false;
                        self.draining = true;
                        deadline = Some(Instant::now() + self.p.drain_timeout);
                    }
                },
                _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
                _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    let left: usize = self.lanes.iter().map(|l| l.waiting() + l.in_flight).sum();
                    warn!(provider = %self.p.config.name, items = left,
                        "drain deadline reached; unfinished items stay unacked and will be redelivered");
                    break;
                }
            }
        }
        self.update_gauges();
    }

    fn is_idle(&self) -> bool {
        self.tasks.is_empty() && self.lanes.iter().all(|l| l.waiting() == 0)
    }

    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn lane_index(&mut self, key: LaneKey) -> usize {
        if let Some(i) = self.lanes.iter().position(|l| l.key == key) {
            return i;
        }
        let c = &self.p.config;
        let (cap, limit) = (c.per_call(key.kind), c.per_day(key.kind));
        let lane = Lane::new(key, cap, limit);
        // Header sets come from events, so without reuse every distinct set ever seen would keep
        // a lane for the life of the process. An idle header lane holds nothing and no task
        // refers to it (every task keeps `in_flight` above zero until its outcome is handled),
        // so its slot can take the new key without disturbing any other lane's index.
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

    fn add(&mut self, items: Vec<Incoming>) {
        let url_flush = self.p.provider.capabilities().url_flush_type;
        let dir_flush = self.p.provider.dir_flush_type();
        for it in items {
            // The flush type only splits lanes where the provider honours it for that kind.
            let honoured = match it.kind {
                Kind::Url => url_flush,
                Kind::Dir | Kind::Regex => dir_flush,
            };
            let flush = if !honoured {
                FlushType::Flush
            } else {
                it.flush
            };
            let i = self.lane_index(LaneKey {
                kind: it.kind,
                flush,
                headers: it.headers,
            });
            if !self.lanes[i].add(it.key, it.delivery, &it.origin, it.received) {
                self.p
                    .metrics
                    .items
                    .with_label_values(&[&self.p.config.name, it.kind.as_str(), "deduplicated"])
                    .inc();
            }
        }
    }

    /// Forms and sends every batch that is due and allowed now; sets `wake_at` for the rest.
    async fn pump(&mut self, now: Instant) {
        self.wake_at = None;
        let now_unix = unix_now();
        for i in 0..self.lanes.len() {
            if let Some(until) = self.lanes[i].parked_until {
                if now_unix >= until {
                    self.unpark(i);
                } else {
                    if !self.lanes[i].parking && self.lanes[i].waiting() > 0 {
                        self.spawn_park(i, until, now_unix);
                    }
                    let left = Duration::from_secs((until - now_unix).max(1) as u64);
                    self.wake(now + left);
                }
            }
        }
        if let Some(t) = self.stopped_until {
            if now < t {
                self.wake(t);
                return;
            }
            // Probing after an auth failure: one call at a time.
            if self.stopped && self.calls_in_flight > 0 {
                return;
            }
        }
        if let Some(t) = self.backoff_until {
            if now < t {
                self.wake(t);
                return;
            }
            self.backoff_until = None;
        }
        loop {
            if self.calls_in_flight >= self.p.config.max_in_flight
                || (self.stopped && self.calls_in_flight > 0)
            {
                return;
            }
            let mut best: Option<(usize, Instant)> = None;
            let mut next_due: Option<Instant> = None;
            for (i, lane) in self.lanes.iter().enumerate() {
                if lane.parked_until.is_some() {
                    continue;
                }
                let Some(due) = lane.due_at(self.p.linger) else {
                    continue;
                };
                if due <= now || self.draining {
                    if best.is_none_or(|(_, d)| due < d) {
                        best = Some((i, due));
                    }
                } else {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                }
            }
            if let Some(due) = next_due {
                self.wake(due);
            }
            let Some((i, _)) = best else { return };
            if let Err(wait) = self.limiter.try_acquire() {
                self.rate_waiting_since.get_or_insert(now);
                self.wake(now + wait);
                return;
            }
            if let Some(since) = self.rate_waiting_since.take() {
                self.p
                    .metrics
                    .rate_limit_wait
                    .with_label_values(&[&self.p.config.name])
                    .inc_by(now.saturating_duration_since(since).as_secs_f64());
            }
            let Some(batch) = self.lanes[i].take() else {
                continue;
            };
            // Regex purges spend the directory allowance.
            let kind = self.lanes[i].key.kind.quota_kind();
            let limit = self.lanes[i].daily_limit;
            let c = &self.p.config;
            let want = batch.items.len() as u64;
            let reserved = self
                .p
                .quota
                .reserve(&c.name, kind, limit, want, now_unix, QuotaPolicy::of(c))
                .await;
            match reserved {
                Err(e) => {
                    self.p.metrics.quota_errors.inc();
                    warn!(provider = %c.name, error = %e, "cannot reserve quota in Redis; holding calls (fail closed)");
                    self.lanes[i].put_back(batch.items, batch.isolating);
                    self.backoff_until = Some(now + QUOTA_RETRY);
                    self.wake(now + QUOTA_RETRY);
                    return;
                }
                Ok(r) => {
                    self.p
                        .metrics
                        .quota_used
                        .with_label_values(&[&c.name, kind.as_str()])
                        .set(r.used as i64);
                    if r.granted == 0 {
                        self.lanes[i].put_back(batch.items, batch.isolating);
                        self.park(i, r.free_at.max(now_unix + 1));
                        if let Some(until) = self.lanes[i].parked_until {
                            self.spawn_park(i, until, now_unix);
                        }
                        continue;
                    }
                    let mut items = batch.items;
                    if r.granted < want {
                        let rest = items.split_off(r.granted as usize);
                        self.lanes[i].put_back(rest, batch.isolating);
                    }
                    self.submit(i, items, batch.isolating, r, now);
                }
            }
        }
    }

    fn submit(
        &mut self,
        lane: usize,
        items: Vec<PendingItem>,
        isolating: bool,
        reservation: crate::quota::Reservation,
        now: Instant,
    ) {
        let key = self.lanes[lane].key.clone();
        let name = &self.p.config.name;
        let m = &self.p.metrics;
        m.batch_size
            .with_label_values(&[name, key.kind.as_str()])
            .observe(items.len() as f64);
        let latency = m
            .event_to_submit
            .with_label_values(&[name, key.kind.as_str()]);
        for it in &items {
            latency.observe(now.saturating_duration_since(it.since).as_secs_f64());
        }
        let batch = Batch {
            kind: key.kind,
            flush_type: key.flush,
            items: items.iter().map(|it| it.key.as_str().to_string()).collect(),
            headers: key.headers().to_vec(),
        };
        self.lanes[lane].in_flight += items.len();
        self.calls_in_flight += 1;
        let provider = self.p.provider.clone();
        self.tasks.spawn(async move {
            let start = Instant::now();
            let result = provider.purge(&batch).await;
            Outcome::Call {
                lane,
                items,
                isolating,
                reservation,
                result,
                elapsed: start.elapsed(),
            }
        });
    }

    /// Marks a lane parked until `until` (Unix time): the provider-local day's end, or when the
    /// rolling window's oldest spending stops counting.
    fn park(&mut self, lane: usize, until: i64) {
        let l = &mut self.lanes[lane];
        if l.parked_until != Some(until) {
            l.parked_until = Some(until);
            self.p
                .metrics
                .parked_until
                .with_label_values(&[&self.p.config.name, l.key.kind.as_str()])
                .set(until);
            let at = chrono::DateTime::from_timestamp(until, 0).map(|d| d.to_rfc3339());
            warn!(provider = %self.p.config.name, kind = %l.key.kind, flush = l.key.flush.as_str(),
                until = at.as_deref().unwrap_or("?"),
                window = self.p.config.quota_window.as_str(),
                "daily quota spent: lane parked until quota comes back; its items move to the parking queue");
        }
    }

    fn unpark(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        l.parked_until = None;
        self.p
            .metrics
            .parked_until
            .with_label_values(&[&self.p.config.name, l.key.kind.as_str()])
            .set(0);
        info!(provider = %self.p.config.name, kind = %l.key.kind, "quota day reset: lane resumes");
    }

    fn update_gauges(&self) {
        let name = &self.p.config.name;
        let now = Instant::now();
        let now_unix = unix_now();
        for kind in Kind::ALL {
            let lanes = || self.lanes.iter().filter(move |l| l.key.kind == kind);
            let n: usize = lanes().map(|l| l.waiting() + l.in_flight).sum();
            let m = &self.p.metrics;
            m.pending
                .with_label_values(&[name, kind.as_str()])
                .set(n as i64);
            let cap = lanes()
                .map(|l| l.cap)
                .max()
                .unwrap_or(self.p.config.per_call(kind));
            m.batch_limit
                .with_label_values(&[name, kind.as_str()])
                .set(cap as i64);
            let oldest = lanes().filter_map(Lane::oldest_since).min();
            m.oldest_pending
                .with_label_values(&[name, kind.as_str()])
                .set(oldest.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()));
            // A calendar day always has a reset ahead; a rolling window frees up when a parked
            // lane's `parked_until` comes (nothing to wait for otherwise).
            let reset = match self.p.config.quota_window {
                QuotaWindow::Day => Some(QuotaPolicy::of(&self.p.config).next_reset(now_unix)),
                QuotaWindow::Rolling24h => lanes().filter_map(|l| l.parked_until).max(),
            };
            m.quota_reset
                .with_label_values(&[name, kind.as_str()])
                .set(reset.map_or(0, |t| (t - now_unix).max(0)) as f64);
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}
