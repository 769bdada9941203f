//! Handles of the tracking metrics, resolved once per provider: `purge_time_to_fresh_seconds`,
//! `purge_tasks`, `purge_task_polls_total`.

use prometheus::{Histogram, IntCounter, IntGauge};

use super::Metrics;
use crate::provider::{Kind, TaskState};

/// `result` labels of `purge_task_polls_total`.
pub const POLL_RESULTS: [&str; 6] = [
    "running",
    "done",
    "failed",
    "rate_limited",
    "error",
    "expired",
];

/// `result` labels of `purge_prefetches_total`.
pub const PREFETCH_RESULTS: [&str; 4] = ["submitted", "quota", "rate_limited", "error"];

/// One provider's tracking metrics.
#[derive(Clone)]
pub struct TrackerMetrics {
    /// Per kind; `None` for kinds the provider cannot take (no series is exported for them).
    time_to_fresh: [Option<Histogram>; 3],
    tasks: [IntGauge; 3],
    polls: [IntCounter; 6],
    prefetches: [IntCounter; 4],
    /// `purge_dead_letters_total{error="purge_failed_at_cdn"}`.
    failed_at_cdn: IntCounter,
}

/// `purge_lineage_write_failures_total` handles.
#[derive(Debug, Clone)]
pub struct LineageMetrics {
    busy: IntCounter,
    redis: IntCounter,
}

impl LineageMetrics {
    /// Counts `n` notes not written for `reason` (`busy` or `redis`).
    pub fn failed(&self, reason: &str, n: u64) {
        if reason == "busy" {
            self.busy.inc_by(n);
        } else {
            self.redis.inc_by(n);
        }
    }
}

impl TrackerMetrics {
    /// Observes one key's time to fresh.
    pub fn fresh(&self, kind: Kind, secs: f64) {
        if let Some(h) = &self.time_to_fresh[kind.index()] {
            h.observe(secs);
        }
    }

    /// Sets the cluster-wide task count of a state.
    pub fn tasks(&self, state: TaskState, n: u64) {
        let i = TaskState::ALL.iter().position(|s| *s == state).unwrap_or(0);
        self.tasks[i].set(n.min(i64::MAX as u64) as i64);
    }

    /// Counts one status query by its result (one of [`POLL_RESULTS`]).
    pub fn poll(&self, result: &str) {
        let i = POLL_RESULTS.iter().position(|r| *r == result).unwrap_or(4);
        self.polls[i].inc();
    }

    /// Counts `urls` prefetched (or not) by result (one of [`PREFETCH_RESULTS`]).
    pub fn prefetch(&self, result: &str, urls: u64) {
        let i = PREFETCH_RESULTS
            .iter()
            .position(|r| *r == result)
            .unwrap_or(3);
        self.prefetches[i].inc_by(urls);
    }

    /// Counts one `purge_failed_at_cdn` dead letter.
    pub fn dead_lettered(&self) {
        self.failed_at_cdn.inc();
    }
}

impl Metrics {
    /// The tracking handles of provider `name` taking `kinds` (every series created up front).
    pub fn tracker(&self, name: &str, kinds: &[Kind]) -> TrackerMetrics {
        TrackerMetrics {
            time_to_fresh: Kind::ALL.map(|k| {
                kinds
                    .contains(&k)
                    .then(|| self.time_to_fresh.with_label_values(&[name, k.as_str()]))
            }),
            tasks: TaskState::ALL.map(|s| self.tasks.with_label_values(&[name, s.as_str()])),
            polls: POLL_RESULTS.map(|r| self.task_polls.with_label_values(&[name, r])),
            prefetches: PREFETCH_RESULTS.map(|r| self.prefetches.with_label_values(&[name, r])),
            failed_at_cdn: self
                .dead_letters
                .with_label_values(&[crate::tracking::FAILED_AT_CDN]),
        }
    }

    /// The lineage writer's handles.
    pub fn lineage(&self) -> LineageMetrics {
        LineageMetrics {
            busy: self.lineage_write_failures.with_label_values(&["busy"]),
            redis: self.lineage_write_failures.with_label_values(&["redis"]),
        }
    }
}
