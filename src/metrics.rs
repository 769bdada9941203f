//! Every metric the worker exports, declared in one place (CONTRACT §5 plus operational extras).
//!
//! A [`Metrics`] owns its own `Registry` (never the process-global one), so tests run several
//! workers in one process without clashes. Label values are bounded sets: provider names from the
//! config, kinds, actions, result classes, our own error codes, queue roles and readiness
//! dependencies — never a URL, host, queue name or event id.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Provider calls: 5 ms (emulator on loopback) to 60 s (a slow API near its timeout).
const API_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Items per call: 1 (one change) to 1000 (a full PurgeUrlsCache call).
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
/// Event → submit: the linger (default 0.5 s) dominates when idle; minutes under a backlog.
const EVENT_TO_SUBMIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Handles to every metric; cheap to clone (the handles are `Arc`s inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `purge_events_total{outcome}`: deliveries decoded (accepted) or dead-lettered whole.
    pub events: IntCounterVec,
    /// `purge_items_total{provider,kind,outcome,priority}`: submitted | deduplicated | rejected |
    /// failed; priority = interactive | bulk.
    pub items: IntCounterVec,
    /// `purge_api_requests_total{provider,action,result}`.
    pub api_requests: IntCounterVec,
    /// `purge_api_request_duration_seconds{provider,action}`.
    pub api_duration: HistogramVec,
    /// `purge_batch_size{provider,kind}`: items per provider call.
    pub batch_size: HistogramVec,
    /// `purge_event_to_submit_seconds{provider,kind,priority}`: from delivery receipt to the call.
    pub event_to_submit: HistogramVec,
    /// `purge_pending_items{provider,kind}`: items waiting (incl. in flight) per provider.
    pub pending: IntGaugeVec,
    /// `purge_quota_used{provider,kind}` today, as reserved in Redis.
    pub quota_used: IntGaugeVec,
    /// `purge_quota_limit{provider,kind}` per day.
    pub quota_limit: IntGaugeVec,
    /// `purge_dead_letters_total{error}`: items and events published to the dead-letter queue.
    pub dead_letters: IntCounterVec,
    /// `purge_parked_items_total{provider,kind,priority}`: items moved to a parking queue.
    pub parked_items: IntCounterVec,
    /// `purge_lane_parked_until_seconds{provider,kind}`: Unix time the lane's quota resets, 0
    /// while not parked.
    pub parked_until: IntGaugeVec,
    /// `purge_retries_total{provider,reason}`: batches put back for another attempt.
    pub retries: IntCounterVec,
    /// `purge_auth_failures_total{provider}`.
    pub auth_failures: IntCounterVec,
    /// `purge_provider_stopped{provider}`: 1 while calls are stopped after an auth failure.
    pub provider_stopped: IntGaugeVec,
    /// `purge_rate_limit_wait_seconds_total{provider}`: time batches waited for the limiter.
    pub rate_limit_wait: prometheus::CounterVec,
    /// `purge_acks_total{result}`: ok | lost (lapin returned false: the channel died; the broker
    /// redelivers) | error.
    pub acks: IntCounterVec,
    /// `purge_unacked_deliveries`: deliveries held (bounded by prefetch).
    pub unacked: IntGauge,
    /// `purge_amqp_reconnects_total`.
    pub reconnects: IntCounter,
    /// `purge_quota_errors_total`: Redis failures while reserving (calls withheld: fail closed).
    pub quota_errors: IntCounter,
    /// `purge_escalations_total{provider}`: directory purges that replaced pending bulk URLs.
    pub escalations: IntCounterVec,
    /// `purge_quota_reserve_left{provider,kind}`: what is left of the interactive reserve in the
    /// current window (`limit − max(used, bulk limit)`), as of the last reservation.
    pub quota_reserve_left: IntGaugeVec,
    /// `purge_quota_drift{provider,kind}`: at the last quota sync, the provider's own figure of
    /// the window's use minus ours (positive: other tools spent the account's quota).
    pub quota_drift: IntGaugeVec,
    /// `purge_build_info{version}` = 1.
    pub build_info: IntGaugeVec,
    /// `purge_amqp_publish_seconds`: dead-letter and parking publishes, confirm included.
    pub publish_duration: Histogram,
    /// `purge_queue_messages{queue}`: ready messages in the purge queue (`queue="purge"`), the bulk
    /// queue (`queue="bulk"`) and the dead-letter queue (`queue="dead_letter"`), from a passive declare every few seconds
    /// (`queue_depth`). The label is the queue's role, not its name, so it stays bounded. A series
    /// is absent while it cannot be read (RabbitMQ down, queue missing) rather than stale.
    pub queue_messages: IntGaugeVec,
    /// `purge_oldest_pending_seconds{provider,kind}` (kind = url | dir | regex): age of the oldest
    /// item waiting in a lane, 0 when none waits. Set by the dispatcher.
    pub oldest_pending: GaugeVec,
    /// `purge_quota_reset_seconds{provider,kind}` (kind = url | dir | regex): seconds until the
    /// provider's quota window resets or frees up. Set by the dispatcher.
    pub quota_reset: GaugeVec,
    /// `purge_batch_limit{provider,kind}`: the per-call cap batches of that kind are formed
    /// against (`urls_per_call` and friends, or less after the provider said a batch was too
    /// large). Set by the dispatcher.
    pub batch_limit: IntGaugeVec,
    /// `purge_ready{dependency}` (dependency = amqp | redis | providers | stages): 1 while that
    /// `/readyz` check passes (`providers`: no provider stopped after an auth failure; `stages`:
    /// every stage task still running). Set by
    /// `http::Readiness` whenever an input changes, so "not ready" can be alerted on from metrics.
    pub ready: IntGaugeVec,
    /// Pause and HTTP ingest metrics ([`ops`]).
    pub ops: OpsMetrics,
    /// `purge_time_to_fresh_seconds{provider,kind}`: per cache key, from the earliest event
    /// waiting on it to the worker seeing its purge task done.
    pub time_to_fresh: HistogramVec,
    /// `purge_tasks{provider,state}` (running | done | failed): cluster-wide, read with `max by`.
    pub tasks: IntGaugeVec,
    /// `purge_task_polls_total{provider,result}`: task status queries.
    pub task_polls: IntCounterVec,
    /// `purge_prefetches_total{provider,result}`: URLs prefetched after their purge was done
    /// (`submitted`), or not (`quota`, `rate_limited`, `error`).
    pub prefetches: IntCounterVec,
    /// `purge_lineage_write_failures_total{reason}`: lineage notes not written (`busy`: the
    /// writer's channel was full; `redis`: the write failed). The purges went on regardless.
    pub lineage_write_failures: IntCounterVec,
}

/// `purge_queue_messages` label for the purge queue.
pub const QUEUE_PURGE: &str = "purge";
/// `purge_queue_messages` label for the bulk queue.
pub const QUEUE_BULK: &str = "bulk";
/// `purge_queue_messages` label for the dead-letter queue.
pub const QUEUE_DEAD_LETTER: &str = "dead_letter";
/// `purge_ready` label: connected to RabbitMQ.
pub const READY_AMQP: &str = "amqp";
/// `purge_ready` label: Redis answers.
pub const READY_REDIS: &str = "redis";
/// `purge_ready` label: no provider has stopped calls after an authentication failure.
pub const READY_PROVIDERS: &str = "providers";
/// `purge_ready` label: no stage task (dispatcher, ledger, consumer) has ended unexpectedly.
pub const READY_STAGES: &str = "stages";

pub mod ops;
mod provider;
pub use ops::OpsMetrics;
mod tracking;
pub use provider::{KindMetrics, ProviderMetrics, QuotaQueryMetrics, RetryReason};
pub use tracking::{LineageMetrics, POLL_RESULTS, PREFETCH_RESULTS, TrackerMetrics};

/// Time to fresh: seconds (emulator) to an hour (a slow CDN; Tencent documents ~5 minutes).
const TIME_TO_FRESH_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(c.clone()))
        .expect("metric registered once in a fresh registry");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(g.clone()))
        .expect("metric registered once in a fresh registry");
    g
}

fn float_gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(g.clone()))
        .expect("metric registered once in a fresh registry");
    g
}

fn histogram(reg: &Registry, name: &str, help: &str, labels: &[&str], b: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(b.to_vec()), labels)
        .expect("valid metric definition");
    reg.register(Box::new(h.clone()))
        .expect("metric registered once in a fresh registry");
    h
}

impl Metrics {
    /// A fresh registry with every metric registered.
    // The `expect`s above only fire on a programming error in the definitions (a bad name or a
    // duplicate), which the unit test below catches.
    #[allow(clippy::missing_panics_doc)]
    pub fn new() -> Metrics {
        let r = Registry::new();
        let pk = &["provider", "kind"];
        let rate_limit_wait = prometheus::CounterVec::new(
            Opts::new(
                "purge_rate_limit_wait_seconds_total",
                "Seconds ready batches waited for the provider's rate limiter.",
            ),
            &["provider"],
        )
        .expect("valid metric definition");
        r.register(Box::new(rate_limit_wait.clone()))
            .expect("metric registered once");
        let unacked = IntGauge::new(
            "purge_unacked_deliveries",
            "Deliveries received and not yet acked (bounded by amqp.prefetch).",
        )
        .expect("valid metric definition");
        r.register(Box::new(unacked.clone()))
            .expect("metric registered once");
        let reconnects = IntCounter::new(
            "purge_amqp_reconnects_total",
            "Times the RabbitMQ connection was rebuilt after being lost.",
        )
        .expect("valid metric definition");
        r.register(Box::new(reconnects.clone()))
            .expect("metric registered once");
        let quota_errors = IntCounter::new(
            "purge_quota_errors_total",
            "Redis failures while reserving quota; no call is made without a reservation.",
        )
        .expect("valid metric definition");
        r.register(Box::new(quota_errors.clone()))
            .expect("metric registered once");
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "purge_amqp_publish_seconds",
                "Dead-letter and parking publishes, until the broker confirmed them.",
            )
            .buckets(API_DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        r.register(Box::new(publish_duration.clone()))
            .expect("metric registered once");

        let m = Metrics {
            events: counter(
                &r,
                "purge_events_total",
                "Purge events received, by outcome.",
                &["outcome"],
            ),
            items: counter(
                &r,
                "purge_items_total",
                "Purge items by provider, kind, outcome and priority.",
                &["provider", "kind", "outcome", "priority"],
            ),
            api_requests: counter(
                &r,
                "purge_api_requests_total",
                "Provider API calls by action and result class.",
                &["provider", "action", "result"],
            ),
            api_duration: histogram(
                &r,
                "purge_api_request_duration_seconds",
                "Provider API call latency.",
                &["provider", "action"],
                API_DURATION_BUCKETS,
            ),
            batch_size: histogram(
                &r,
                "purge_batch_size",
                "Items per provider call.",
                pk,
                BATCH_SIZE_BUCKETS,
            ),
            event_to_submit: histogram(
                &r,
                "purge_event_to_submit_seconds",
                "Time from receiving an item's event to submitting it to the provider.",
                &["provider", "kind", "priority"],
                EVENT_TO_SUBMIT_BUCKETS,
            ),
            pending: gauge(
                &r,
                "purge_pending_items",
                "Items waiting for a provider call, in flight included.",
                pk,
            ),
            quota_used: gauge(
                &r,
                "purge_quota_used",
                "Daily quota reserved today (provider-local day).",
                pk,
            ),
            quota_limit: gauge(
                &r,
                "purge_quota_limit",
                "Daily quota per provider and kind.",
                pk,
            ),
            dead_letters: counter(
                &r,
                "purge_dead_letters_total",
                "Dead-letter records published, by error code.",
                &["error"],
            ),
            parked_items: counter(
                &r,
                "purge_parked_items_total",
                "Items moved to a parking queue to wait for their quota (or bulk share) to come back.",
                &["provider", "kind", "priority"],
            ),
            parked_until: gauge(
                &r,
                "purge_lane_parked_until_seconds",
                "Unix time at which a quota-parked lane resumes; 0 while not parked.",
                pk,
            ),
            retries: counter(
                &r,
                "purge_retries_total",
                "Batches put back for another attempt, by reason.",
                &["provider", "reason"],
            ),
            auth_failures: counter(
                &r,
                "purge_auth_failures_total",
                "Provider calls refused for credentials, permissions or clock skew.",
                &["provider"],
            ),
            provider_stopped: gauge(
                &r,
                "purge_provider_stopped",
                "1 while calls to a provider are stopped after an authentication failure.",
                &["provider"],
            ),
            rate_limit_wait,
            acks: counter(
                &r,
                "purge_acks_total",
                "Delivery acks by result.",
                &["result"],
            ),
            unacked,
            reconnects,
            quota_errors,
            escalations: counter(
                &r,
                "purge_escalations_total",
                "Directory purges that replaced pending bulk URLs (dir_escalation).",
                &["provider"],
            ),
            quota_reserve_left: gauge(
                &r,
                "purge_quota_reserve_left",
                "Units of the interactive reserve left in the current quota window.",
                &["provider", "kind"],
            ),
            quota_drift: gauge(
                &r,
                "purge_quota_drift",
                "At the last quota sync: the provider's own use of the window minus the ledger's.",
                &["provider", "kind"],
            ),
            build_info: gauge(
                &r,
                "purge_build_info",
                "Build information; always 1.",
                &["version"],
            ),
            publish_duration,
            queue_messages: gauge(
                &r,
                "purge_queue_messages",
                "Ready messages in the purge, bulk and dead-letter queues (passive declare), by role.",
                &["queue"],
            ),
            oldest_pending: float_gauge(
                &r,
                "purge_oldest_pending_seconds",
                "Age of the oldest item waiting in a lane; 0 when none waits.",
                pk,
            ),
            quota_reset: float_gauge(
                &r,
                "purge_quota_reset_seconds",
                "Seconds until the provider's quota window resets or frees up.",
                pk,
            ),
            batch_limit: gauge(
                &r,
                "purge_batch_limit",
                "Items per call that batches are formed against (the per-call cap, lowered after a batch-too-large answer).",
                pk,
            ),
            ready: gauge(
                &r,
                "purge_ready",
                "1 while a /readyz check passes: amqp connected, redis answering, no provider stopped.",
                &["dependency"],
            ),
            ops: OpsMetrics::register(&r),
            time_to_fresh: histogram(
                &r,
                "purge_time_to_fresh_seconds",
                "Per cache key: from the earliest event waiting on it to its purge task seen done at the CDN.",
                pk,
                TIME_TO_FRESH_BUCKETS,
            ),
            tasks: gauge(
                &r,
                "purge_tasks",
                "Purge tasks by state, cluster-wide (running: pending in Redis; done/failed: totals). Read with max by.",
                &["provider", "state"],
            ),
            task_polls: counter(
                &r,
                "purge_task_polls_total",
                "Purge task status queries by result.",
                &["provider", "result"],
            ),
            prefetches: counter(
                &r,
                "purge_prefetches_total",
                "URLs prefetched after their purge task was done (submitted), or not (quota, rate_limited, error).",
                &["provider", "result"],
            ),
            lineage_write_failures: counter(
                &r,
                "purge_lineage_write_failures_total",
                "Lineage notes for explain not written (busy: writer channel full; redis: write failed); purges are unaffected.",
                &["reason"],
            ),
            registry: r,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for outcome in ["accepted", "rejected"] {
            m.events.with_label_values(&[outcome]);
        }
        // Not ready until the checks say so (`http::Readiness` sets them); `providers` and
        // `stages` start ok.
        for dependency in [READY_AMQP, READY_REDIS] {
            m.ready.with_label_values(&[dependency]).set(0);
        }
        for dependency in [READY_PROVIDERS, READY_STAGES] {
            m.ready.with_label_values(&[dependency]).set(1);
        }
        m
    }

    /// `purge_events_total{outcome}` (accepted | rejected).
    pub fn event(&self, outcome: &str) {
        self.events.with_label_values(&[outcome]).inc();
    }

    /// An item refused by validation:
    /// `purge_items_total{provider="none",kind,outcome="rejected",priority}`.
    pub fn rejected_item(&self, kind: crate::provider::Kind, priority: crate::event::Priority) {
        self.items
            .with_label_values(&["none", kind.as_str(), "rejected", priority.as_str()])
            .inc();
    }

    /// `purge_dead_letters_total{error}` (our own bounded codes).
    pub fn dead_lettered(&self, error: &str) {
        self.dead_letters.with_label_values(&[error]).inc();
    }

    /// `purge_acks_total{result}` (ok | lost | error).
    pub fn acked(&self, result: &str) {
        self.acks.with_label_values(&[result]).inc();
    }

    /// `purge_ready{dependency}`.
    pub fn set_ready(&self, dependency: &str, ready: bool) {
        self.ready
            .with_label_values(&[dependency])
            .set(i64::from(ready));
    }

    /// The `purge_queue_messages{queue}` gauge of a queue role.
    pub fn queue_messages(&self, role: &str) -> IntGauge {
        self.queue_messages.with_label_values(&[role])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format except on invalid metric families,
        // which `new` never registers.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
