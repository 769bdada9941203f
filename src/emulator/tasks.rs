//! Purge tasks and prefetches as the emulated CDNs run them: every accepted purge call becomes a
//! task that is `process` for [`TaskModel::delay`] and then `done`, or `fail` for a deterministic
//! share ([`TaskModel::fail_every`]: every Nth task of the emulator, counted across the APIs).
//! Status queries and prefetch submissions are recorded, so tests assert on what the CDN saw
//! (how often it was asked, and whether a prefetch came before its purge was done).
//!
//! Pure and synchronous like the rest of the state: every method takes `now_ms`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How emulated purge tasks progress. The default finishes every task at once, successfully.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskModel {
    /// Time a task stays `process` before it reaches its final state.
    pub delay: Duration,
    /// Every Nth task (1-based, in acceptance order across all APIs) ends `fail`; 0 = none.
    pub fail_every: u32,
}

/// The prefetch allowances of the emulated accounts (field-notes-2: Tencent 1,000 URLs per day
/// per region; Wangsu `prefetchQuota` 5,000 per rolling 24 hours).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchLimits {
    /// Tencent `PushUrlsCache` URLs per UTC+8 day (mainland).
    pub tencent_per_day: u64,
    /// Tencent: most URLs in one `PushUrlsCache` call (500).
    pub tencent_per_call: usize,
    /// Wangsu `POST /cdn/prefetches` URLs per rolling 24 hours.
    pub wangsu_per_24h: u64,
}

impl Default for PrefetchLimits {
    fn default() -> Self {
        PrefetchLimits {
            tencent_per_day: 1000,
            tencent_per_call: 500,
            wangsu_per_24h: 5000,
        }
    }
}

/// A task's state in the emulator's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Process,
    Done,
    Fail,
}

/// One purge task, as `GET /_emulator/tasks` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The id the API answered (TaskId, task_id/log_id, purge id).
    pub id: String,
    /// `tencent-v3`, `tencent-v2` or `wangsu`.
    pub api: String,
    /// What the call purged, in request order.
    pub items: Vec<String>,
    /// Unix ms when the call was accepted.
    pub created_ms: i64,
    /// Unix ms when the task reaches its final state.
    pub finish_ms: i64,
    /// The final state (`done` or `fail`).
    pub outcome: Phase,
    /// Status queries that named this task.
    pub polls: u32,
}

impl TaskRecord {
    /// The state at `now_ms`.
    pub fn phase(&self, now_ms: i64) -> Phase {
        if now_ms < self.finish_ms {
            Phase::Process
        } else {
            self.outcome
        }
    }
}

/// One status query or prefetch submission that reached the emulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCall {
    /// `DescribePurgeTasks`, `GetCdnRefreshLog`, `GetPurge`, `PushUrlsCache`, `CreatePrefetch`.
    pub action: String,
    /// Unix ms of arrival.
    pub at_ms: i64,
    /// The task asked about, or the URLs prefetched.
    pub items: Vec<String>,
}

/// Most tasks remembered: older ones are forgotten first (the real APIs keep 30 days).
const MAX_TASKS: usize = 100_000;

/// The tasks, the status queries and the prefetches of every emulated API.
#[derive(Debug, Default)]
pub(crate) struct TaskBook {
    tasks: HashMap<String, TaskRecord>,
    order: VecDeque<String>,
    accepted: u64,
    status_calls: Vec<ApiCall>,
    prefetches: Vec<ApiCall>,
    /// Wangsu prefetch use: `(at_ms, urls)` in the last 24 hours.
    wangsu_prefetch: VecDeque<(i64, u64)>,
}

impl TaskBook {
    /// Registers the task of an accepted purge call.
    pub(crate) fn add(
        &mut self,
        model: &TaskModel,
        id: &str,
        api: &str,
        items: Vec<String>,
        now_ms: i64,
    ) {
        self.accepted += 1;
        let every = u64::from(model.fail_every);
        let outcome = if every > 0 && self.accepted.is_multiple_of(every) {
            Phase::Fail
        } else {
            Phase::Done
        };
        let delay = i64::try_from(model.delay.as_millis()).unwrap_or(i64::MAX);
        let record = TaskRecord {
            id: id.to_string(),
            api: api.to_string(),
            items,
            created_ms: now_ms,
            finish_ms: now_ms.saturating_add(delay),
            outcome,
            polls: 0,
        };
        if self.order.len() >= MAX_TASKS
            && let Some(old) = self.order.pop_front()
        {
            self.tasks.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.tasks.insert(id.to_string(), record);
    }

    /// A status query about `id` (recorded whether or not the task exists).
    pub(crate) fn query(&mut self, action: &str, id: &str, now_ms: i64) -> Option<&TaskRecord> {
        self.status_calls.push(ApiCall {
            action: action.to_string(),
            at_ms: now_ms,
            items: vec![id.to_string()],
        });
        let task = self.tasks.get_mut(id)?;
        task.polls += 1;
        Some(task)
    }

    /// Records a status query that named no single task (a list call).
    pub(crate) fn record_status_call(&mut self, action: &str, now_ms: i64) {
        self.status_calls.push(ApiCall {
            action: action.to_string(),
            at_ms: now_ms,
            items: Vec::new(),
        });
    }

    /// Every task, in acceptance order.
    pub(crate) fn tasks(&self) -> Vec<TaskRecord> {
        self.order
            .iter()
            .filter_map(|id| self.tasks.get(id).cloned())
            .collect()
    }

    /// The tasks of one API, for list calls.
    pub(crate) fn of_api<'a>(&'a self, api: &'a str) -> impl Iterator<Item = &'a TaskRecord> + 'a {
        self.order
            .iter()
            .filter_map(|id| self.tasks.get(id))
            .filter(move |t| t.api == api)
    }

    /// Status queries, in arrival order.
    pub(crate) fn status_calls(&self) -> Vec<ApiCall> {
        self.status_calls.clone()
    }

    /// Prefetch submissions, in arrival order.
    pub(crate) fn prefetches(&self) -> Vec<ApiCall> {
        self.prefetches.clone()
    }

    /// Records an accepted prefetch.
    pub(crate) fn record_prefetch(&mut self, action: &str, urls: Vec<String>, now_ms: i64) {
        self.prefetches.push(ApiCall {
            action: action.to_string(),
            at_ms: now_ms,
            items: urls,
        });
    }

    /// Spends `n` of Wangsu's rolling prefetch allowance, or `Err(left)` (nothing spent).
    pub(crate) fn take_wangsu_prefetch(
        &mut self,
        n: u64,
        limit: u64,
        now_ms: i64,
    ) -> Result<(), u64> {
        while self
            .wangsu_prefetch
            .front()
            .is_some_and(|&(at, _)| at <= now_ms - 24 * 3600 * 1000)
        {
            self.wangsu_prefetch.pop_front();
        }
        let used: u64 = self.wangsu_prefetch.iter().map(|&(_, n)| n).sum();
        let left = limit.saturating_sub(used);
        if n > left {
            return Err(left);
        }
        self.wangsu_prefetch.push_back((now_ms, n));
        Ok(())
    }

    /// What is left of Wangsu's rolling prefetch allowance.
    pub(crate) fn wangsu_prefetch_left(&self, limit: u64, now_ms: i64) -> u64 {
        let used: u64 = self
            .wangsu_prefetch
            .iter()
            .filter(|&&(at, _)| at > now_ms - 24 * 3600 * 1000)
            .map(|&(_, n)| n)
            .sum();
        limit.saturating_sub(used)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn tasks_process_then_finish_and_every_nth_fails() {
        let model = TaskModel {
            delay: Duration::from_millis(2000),
            fail_every: 4,
        };
        let mut book = TaskBook::default();
        for i in 0..8 {
            book.add(
                &model,
                &format!("t{i}"),
                "tencent-v3",
                vec![format!("u{i}")],
                1000,
            );
        }
        let t = book.tasks();
        assert_eq!(t.len(), 8);
        assert!(t.iter().all(|t| t.phase(2999) == Phase::Process));
        let outcomes: Vec<Phase> = t.iter().map(|t| t.phase(3000)).collect();
        use Phase::{Done, Fail};
        assert_eq!(outcomes, [Done, Done, Done, Fail, Done, Done, Done, Fail]);
        assert_eq!(
            book.query("DescribePurgeTasks", "t3", 3000).unwrap().polls,
            1
        );
        assert!(book.query("DescribePurgeTasks", "nope", 3000).is_none());
        assert_eq!(book.status_calls().len(), 2);
    }

    #[test]
    fn wangsu_prefetch_quota_rolls_and_refuses_whole_calls() {
        let mut book = TaskBook::default();
        assert_eq!(book.take_wangsu_prefetch(4, 5, 0), Ok(()));
        assert_eq!(book.take_wangsu_prefetch(2, 5, 10), Err(1));
        assert_eq!(book.wangsu_prefetch_left(5, 10), 1);
        assert_eq!(book.take_wangsu_prefetch(2, 5, 24 * 3600 * 1000), Ok(()));
    }
}
