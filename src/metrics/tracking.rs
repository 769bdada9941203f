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

/// One provider's tracking metrics.
#[derive(Clone)]
pub struct TrackerMetrics {
    /// Per kind; `None` for kinds the provider cannot take (no series is exported for them).
    time_to_fresh: [Option<Histogram>; 3],
    tasks: [IntGauge; 3],
    polls: [IntCounter; 6],
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
        }
    }
}
