//! Metrics of the operator features: pause (`purge_paused`) and the HTTP ingest
//! (`purge_ingest_requests_total`, `purge_ingest_request_duration_seconds`).

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Ingest requests: a confirmed publish on loopback takes about a millisecond; a broker under
/// load or far away, up to the confirm timeout.
const INGEST_DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The HTTP status codes the ingest answers with (the only `code` label values).
pub const INGEST_CODES: [u16; 7] = [202, 400, 401, 404, 413, 415, 503];

/// Handles of the operator metrics.
#[derive(Clone)]
pub struct OpsMetrics {
    /// `purge_paused{provider}`: 1 while an operator has paused the provider.
    pub paused: IntGaugeVec,
    /// `purge_ingest_requests_total{code}`: ingest requests by HTTP status.
    ingest_requests: IntCounterVec,
    /// `purge_ingest_request_duration_seconds`: from the request to the answer (the broker's
    /// confirm included for a 202).
    pub ingest_duration: Histogram,
}

impl OpsMetrics {
    pub(super) fn register(r: &Registry) -> OpsMetrics {
        let paused = IntGaugeVec::new(
            Opts::new(
                "purge_paused",
                "1 while an operator has paused the provider (purge-worker pause).",
            ),
            &["provider"],
        )
        .expect("valid metric definition");
        let ingest_requests = IntCounterVec::new(
            Opts::new(
                "purge_ingest_requests_total",
                "HTTP ingest requests (POST /v1/purges) by response status.",
            ),
            &["code"],
        )
        .expect("valid metric definition");
        let ingest_duration = Histogram::with_opts(
            HistogramOpts::new(
                "purge_ingest_request_duration_seconds",
                "HTTP ingest request duration, the broker's publish confirm included.",
            )
            .buckets(INGEST_DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        r.register(Box::new(paused.clone()))
            .expect("metric registered once");
        r.register(Box::new(ingest_requests.clone()))
            .expect("metric registered once");
        r.register(Box::new(ingest_duration.clone()))
            .expect("metric registered once");
        let m = OpsMetrics {
            paused,
            ingest_requests,
            ingest_duration,
        };
        // Every code's series exists from the start (zeros rather than gaps on dashboards).
        m.ingest_counters();
        m
    }

    /// The `purge_ingest_requests_total` counter of each code in [`INGEST_CODES`], resolved once.
    pub fn ingest_counters(&self) -> [IntCounter; 7] {
        INGEST_CODES.map(|c| self.ingest_requests.with_label_values(&[&c.to_string()]))
    }
}
