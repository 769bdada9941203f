//! One task per provider: the I/O shell around the pure [`core`]. The core holds lanes and gates
//! and decides what every provider answer means ([`decide`]); the shell only asks the quota, the
//! rate limiter and the provider, and publishes dead letters and parked items.
//!
//! Flush policy (DESIGN): a lane's batch leaves when it is full or its oldest item has lingered
//! `max_linger`, and only when (1) the in-process pacer (governor) has a permit near, (2) one Redis
//! script ([`QuotaStore::admit`]) grants the call in every cluster-wide rate window and reserves
//! its quota, in one round trip, and (3) governor grants the permit, with nothing between that
//! grant and the send, so a slow Redis answer cannot squeeze this replica's sends closer than
//! governor spaces them. governor paces each replica burst-free and keeps it from asking Redis for
//! grants it could not use; the script is the authority across replicas.

mod admit;
mod answer;
mod control;
mod core;
mod decide;
mod limits;
mod publish;
mod sync;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant, sleep_until};
use tracing::{info, warn};

use crate::amqp::Publisher;
use crate::cache_key::CacheKey;
use crate::coalesce::{HeaderSet, Origin, PendingItem, escalate};
use crate::event::Priority;
use crate::http::Readiness;
use crate::ledger::{DeliveryId, LedgerHandle, Sessions};
use crate::metrics::{Metrics, ProviderMetrics};
use crate::provider::{Batch, FlushType, Kind, Provider, ProviderError, ProviderQuota, Receipt};
use crate::quota::QuotaWindow;
use crate::quota::{QuotaStore, Reservation, bulk_limit, unix_now};
use crate::ratelimit::SharedWindows;
use crate::ratelimit::shared::SharedRate;

pub use self::control::{Control, DispatchState};
pub use self::core::AUTH_PROBE_INTERVAL;
use self::core::{Core, Next, Settings, later};
use self::decide::RetryPolicy;
pub use self::limits::Limits;
pub use self::sync::QuotaSync;

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
    /// The event's class.
    pub priority: Priority,
    /// The domain's `dir_escalation` for file purges (0 = never).
    pub escalate: u32,
}

/// Everything a dispatcher needs, injected.
#[derive(Clone)]
pub struct DispatcherParts {
    pub limits: Limits,
    pub provider: Arc<dyn Provider>,
    pub quota: QuotaStore,
    pub ledger: LedgerHandle,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    /// Which consumer channel is live: items only dead deliveries wait for are dropped.
    pub sessions: Sessions,
    pub linger: Duration,
    pub drain_timeout: Duration,
    /// Where quota-parked items wait for the reset.
    pub parking_queue: String,
    /// Where bulk items over their share wait (it returns them to the bulk queue).
    pub bulk_parking_queue: String,
    /// Where items wait while an operator has paused the provider.
    pub paused_queue: String,
    pub dead_letter_queue: String,
    /// The provider's in-process call pacer (shared with the tracker where status calls spend
    /// it); the cluster-wide windows are `shared_rate`.
    pub limiter: SharedWindows,
    /// Where accepted calls go to be followed to completion (`tracking`); `None`: not tracked.
    pub tracker: Option<crate::tracking::TrackerHandle>,
    /// The provider's cluster-wide rate windows (shared by every replica on the same Redis).
    pub shared_rate: SharedRate,
    /// The operator's pause and release, as read from Redis.
    pub control: watch::Receiver<Control>,
    /// Where this dispatcher reports its state (for `status` and releasing paused items).
    pub state: watch::Sender<DispatchState>,
}

/// What an admission asked of the pump.
enum Admit {
    /// Granted: send it now.
    Send(Armed),
    /// Nothing to send from this batch (parked, or Redis unreachable): look at the next one.
    Next,
    /// The cluster-wide windows are full: wait (the wake-up is set).
    Wait,
}

/// A finished background task of a dispatcher.
enum Outcome {
    Call {
        lane: usize,
        items: Vec<PendingItem>,
        reservation: Reservation,
        result: Result<Receipt, ProviderError>,
        elapsed: Duration,
    },
    /// A dead-letter or parking publish: `done` items settled, `failed` ones go back.
    Published {
        lane: usize,
        done: usize,
        /// The class of a parking publish; `None` for dead letters.
        parking: Option<Priority>,
        /// A move to the paused queue (counted in `pause_parking` until it ends).
        pause: bool,
        failed: Vec<PendingItem>,
    },
    /// The provider's own quota figures ([`sync`]).
    Quota(Result<ProviderQuota, ProviderError>),
}

/// A batch granted by the admission script, with its quota reserved, waiting only for the
/// in-process permit.
struct Armed {
    lane: usize,
    items: Vec<PendingItem>,
    reservation: Reservation,
}

/// The kinds a provider takes (regex only where supported): the only `kind` labels it exports.
fn kinds(provider: &dyn Provider) -> &'static [Kind] {
    if provider.capabilities().regex {
        &Kind::ALL
    } else {
        &[Kind::Url, Kind::Dir]
    }
}

/// Starts a provider's dispatcher. It runs until `input` is closed (shutdown), then drains:
/// flushes everything it can without waiting for the linger, within `drain_timeout`.
pub fn spawn(
    parts: DispatcherParts,
    input: mpsc::Receiver<Vec<Incoming>>,
) -> tokio::task::JoinHandle<()> {
    let limiter = parts.limiter.clone();
    let kinds = kinds(parts.provider.as_ref());
    let provider = parts.provider.clone();
    let m = parts
        .metrics
        .provider(&parts.limits.name, kinds, |k| provider.action(k));
    for ((gauge, reserve), limit) in m
        .quota_limit
        .iter()
        .zip(&m.quota_reserve_left)
        .zip([parts.limits.urls_per_day, parts.limits.dirs_per_day])
    {
        gauge.set(limit.min(i64::MAX as u64) as i64);
        // Until the first reservation reads the window: the whole reserve.
        let kept = limit - bulk_limit(limit, parts.limits.interactive_reserve);
        reserve.set(kept.min(i64::MAX as u64) as i64);
    }
    let c = &parts.limits;
    let caps = parts.provider.capabilities();
    let settings = Settings {
        linger: parts.linger,
        retry: RetryPolicy {
            backoff: c.retry,
            max_attempts: c.max_attempts,
        },
        max_in_flight: c.max_in_flight,
        per_call: Kind::ALL.map(|k| c.per_call(k)),
        url_flush: caps.url_flush_type,
        dir_flush: caps.dir_flush_type,
        escalation_min_urls: c
            .escalates
            .then(|| escalate::min_urls(c.urls_per_day, c.dirs_per_day))
            .flatten(),
    };
    let sync = sync::SyncState::new(
        parts
            .provider
            .quota_action()
            .map(|action| parts.metrics.quota_query(&parts.limits.name, action)),
        [parts.limits.urls_per_day, parts.limits.dirs_per_day],
    );
    let d = Dispatcher {
        sync,
        epoch: parts.sessions.epoch(),
        p: parts,
        m,
        core: Core::new(settings),
        limiter,
        tasks: JoinSet::new(),
        armed: None,
        shared_ready_at: None,
        wake_at: None,
        rate_waiting_since: None,
        escalations: 0,
        release: None,
        pause_parking: 0,
    };
    let span = tracing::info_span!("dispatcher", provider = %d.p.limits.name, kind = d.p.limits.kind.as_str());
    tokio::spawn(tracing::Instrument::instrument(d.run(input), span))
}

struct Dispatcher {
    p: DispatcherParts,
    /// This provider's metric handles, resolved once.
    m: ProviderMetrics,
    core: Core,
    limiter: SharedWindows,
    /// Provider calls, parking publishes and dead-letter publishes under way.
    tasks: JoinSet<Outcome>,
    armed: Option<Armed>,
    /// When the cluster-wide windows (or a provider's not-before) said the next call may go.
    shared_ready_at: Option<Instant>,
    wake_at: Option<Instant>,
    rate_waiting_since: Option<Instant>,
    /// The consumer epoch the lanes were last pruned for.
    epoch: u64,
    /// The core's escalation count already exported.
    escalations: u64,
    /// The operator's release counter last seen (`None` before the first read).
    release: Option<u64>,
    /// Items in moves to the paused queue under way.
    pause_parking: usize,
    /// Following the provider's own quota figures.
    sync: sync::SyncState,
}

impl Dispatcher {
    async fn run(mut self, mut input: mpsc::Receiver<Vec<Incoming>>) {
        let mut input_open = true;
        let mut deadline: Option<Instant> = None;
        let mut control = self.p.control.clone();
        let mut control_open = true;
        loop {
            self.pump().await;
            self.maybe_sync();
            self.update_gauges();
            self.publish_state();
            if !input_open && self.core.is_idle() && self.armed.is_none() {
                break;
            }
            let wake = self.wake_at;
            let sync_at = self.sync.wake_at().filter(|_| input_open);
            tokio::select! {
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => match joined {
                    Ok(outcome) => self.handle(outcome).await,
                    // A call or publish task that panicked took items with it, so the in-flight
                    // accounting can no longer be trusted: die, so the supervisor ends the
                    // process and the broker redelivers what was not acked.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => warn!(provider = %self.p.limits.name, error = %e, "dispatcher task failed"),
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
                        self.core.draining = true;
                        deadline = Some(later(Instant::now(), self.p.drain_timeout));
                    }
                },
                changed = control.changed(), if control_open => match changed {
                    Ok(()) => {
                        let c = *control.borrow_and_update();
                        self.apply_control(c).await;
                    }
                    // The watcher ended (shutdown): keep the last state.
                    Err(_) => control_open = false,
                },
                _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
                _ = sleep_until(sync_at.unwrap_or_else(far_future)), if sync_at.is_some() => {}
                _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                    warn!(provider = %self.p.limits.name, items = self.core.items(),
                        "drain deadline reached; unfinished items stay unacked and will be redelivered");
                    break;
                }
            }
        }
        if let Some(a) = self.armed.take() {
            self.refund(&a.reservation, a.items.len()).await;
        }
        self.update_gauges();
    }

    fn wake(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn add(&mut self, items: Vec<Incoming>) {
        let dups = self.core.add(items);
        for (kind, by_class) in Kind::ALL.into_iter().zip(dups) {
            for (counter, n) in self
                .m
                .kind(kind)
                .iter()
                .flat_map(|m| m.deduplicated.iter().zip(by_class))
            {
                if n > 0 {
                    counter.inc_by(n);
                }
            }
        }
    }

    /// Sends every batch that is due and allowed now; sets `wake_at` for the rest.
    async fn pump(&mut self) {
        self.wake_at = None;
        let epoch = self.p.sessions.epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            let sessions = self.p.sessions.clone();
            let dropped = self.core.prune(|d| sessions.is_live(d));
            if dropped > 0 {
                info!(provider = %self.p.limits.name, items = dropped,
                    "dropped items only deliveries of a lost channel waited for; the broker redelivers them");
            }
        }
        loop {
            for (lane, priority, items, why) in self.core.take_parkable() {
                self.spawn_park(lane, priority, items, why);
            }
            let now = Instant::now();
            if let Some(a) = self.armed.take() {
                match self.limiter.try_acquire() {
                    Ok(()) => self.send(a, now),
                    Err(wait) => {
                        self.armed = Some(a);
                        self.wake(later(now, wait));
                        return;
                    }
                }
            }
            let next = self.core.next(now);
            if self.core.escalations > self.escalations {
                self.m
                    .escalations
                    .inc_by(self.core.escalations - self.escalations);
                self.escalations = self.core.escalations;
            }
            let (lane, items) = match next {
                Next::Wait(at) => {
                    if let Some(at) = at {
                        self.wake(at);
                    }
                    return;
                }
                Next::Send { lane, items } => (lane, items),
            };
            // Form the batch only when a permit is near: while the limiter is the bottleneck,
            // batches keep filling.
            let local = self.limiter.ready_at().map(|t| t.0);
            if let Some(at) = local.max(self.shared_ready_at).filter(|at| *at > now) {
                self.core.restore(lane, items, now);
                self.rate_waiting_since.get_or_insert(now);
                self.wake(at);
                return;
            }
            let armed = match self.admit(lane, items, now).await {
                Admit::Send(armed) => armed,
                Admit::Next => continue,
                Admit::Wait => return,
            };
            // The in-process permit comes last, with nothing between it and the send: a slow
            // Redis answer cannot squeeze this replica's sends closer than governor spaces them.
            let now = Instant::now();
            match self.limiter.try_acquire() {
                Ok(()) => self.send(armed, now),
                Err(wait) => {
                    self.armed = Some(armed);
                    self.wake(later(now, wait));
                    return;
                }
            }
        }
    }

    /// Sends an armed batch: the in-process permit was just granted.
    fn send(&mut self, a: Armed, now: Instant) {
        if let Some(since) = self.rate_waiting_since.take() {
            self.m
                .rate_limit_wait
                .inc_by(now.saturating_duration_since(since).as_secs_f64());
        }
        let key = self.core.lanes[a.lane].key.clone();
        if let Some(m) = self.m.kind(key.kind) {
            m.batch_size.observe(a.items.len() as f64);
            for it in &a.items {
                m.event_to_submit[it.priority.index()]
                    .observe(now.saturating_duration_since(it.since).as_secs_f64());
            }
        }
        let batch = Batch {
            kind: key.kind,
            flush_type: key.flush,
            items: a
                .items
                .iter()
                .map(|it| it.key.as_str().to_string())
                .collect(),
            headers: key.headers().to_vec(),
        };
        self.sync.in_flight[key.kind.quota_kind().index()] += a.items.len() as u64;
        let provider = self.p.provider.clone();
        self.tasks.spawn(async move {
            let start = Instant::now();
            let result = provider.purge(&batch).await;
            Outcome::Call {
                lane: a.lane,
                items: a.items,
                reservation: a.reservation,
                result,
                elapsed: start.elapsed(),
            }
        });
    }

    fn update_gauges(&self) {
        let now = Instant::now();
        let now_unix = unix_now();
        for (kind, m) in self.m.kinds() {
            let lanes = || self.core.lanes.iter().filter(move |l| l.key.kind == kind);
            let armed = self
                .armed
                .as_ref()
                .filter(|a| self.core.lanes[a.lane].key.kind == kind)
                .map_or(0, |a| a.items.len());
            let n: usize = lanes().map(|l| l.waiting() + l.in_flight).sum::<usize>() + armed;
            m.pending.set(n as i64);
            let cap = lanes()
                .map(|l| l.cap)
                .max()
                .unwrap_or(self.p.limits.per_call(kind));
            m.batch_limit.set(cap as i64);
            let oldest = lanes().filter_map(|l| l.oldest_since()).min();
            m.oldest_pending
                .set(oldest.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()));
            // A calendar day always has a reset ahead; a rolling window frees up when a parked
            // kind's `until` comes (nothing to wait for otherwise).
            let reset = match self.p.limits.quota_window() {
                QuotaWindow::Day => Some(self.p.limits.quota_policy().next_reset(now_unix)),
                QuotaWindow::Rolling24h => self.core.parked_until_unix(kind),
            };
            m.quota_reset
                .set(reset.map_or(0, |t| t.saturating_sub(now_unix).max(0)) as f64);
            m.parked_until
                .set(self.core.parked_until_unix(kind).unwrap_or(0));
        }
    }
}

fn far_future() -> Instant {
    later(Instant::now(), Duration::from_secs(86_400 * 365))
}
