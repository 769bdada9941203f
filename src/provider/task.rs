//! What the tracker needs from a provider besides the purge call: the state of a purge task
//! (Tencent 3.0 `DescribePurgeTasks`, 2.0 `GetCdnRefreshLog`, Wangsu `GET /cdn/purges/{id}`) and a
//! prefetch of URLs whose purge is done (Tencent `PushUrlsCache`, Wangsu `POST /cdn/prefetches`).
//! Like the purge call, each is one request through `provider::http`, and the provider only
//! classifies its answer.

use std::future::Future;
use std::pin::Pin;

use super::{Kind, ProviderError};

/// A task's state, in our terms (the `state` label of `purge_tasks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Not finished yet (Tencent `process`, v2 `0`, Wangsu `waiting`/`inprogress`).
    Running,
    /// Finished successfully everywhere (Tencent `done`, v2 `1`, Wangsu `finished` at 100 %).
    Done,
    /// Finished, but not everywhere (Tencent `fail`, v2 negative, Wangsu `finished` under 100 %).
    Failed,
}

impl TaskState {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }

    /// Every state, in label order.
    pub const ALL: [TaskState; 3] = [TaskState::Running, TaskState::Done, TaskState::Failed];
}

/// Which task to ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// The id from the purge's [`super::Receipt`].
    pub task_id: String,
    /// The kind of the batch (some APIs keep URL and directory tasks apart).
    pub kind: Kind,
    /// How many items the task covered (an upper bound for the answer's length).
    pub items: usize,
}

/// What the provider says about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    pub state: TaskState,
    /// The state in the provider's own words (`process`, `done`, `fail`; `status 1`; `finished
    /// 80%`), bounded, for `explain` and dead-letter records.
    pub words: String,
    /// The items the provider names as failed (Tencent: per URL); empty when it names none
    /// (Wangsu: the whole task counts).
    pub failed: Vec<String>,
}

/// Longest provider wording kept (a hostile answer cannot grow a Redis record).
pub const MAX_WORDS: usize = 64;

impl TaskReport {
    /// A report with `words` cut to [`MAX_WORDS`].
    pub fn new(state: TaskState, words: &str, failed: Vec<String>) -> Self {
        let mut words = words.to_string();
        if words.len() > MAX_WORDS {
            let mut end = MAX_WORDS;
            while !words.is_char_boundary(end) {
                end -= 1;
            }
            words.truncate(end);
        }
        TaskReport {
            state,
            words,
            failed,
        }
    }
}

/// The boxed future of a status query.
pub type StatusFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TaskReport, ProviderError>> + Send + 'a>>;
/// The boxed future of a prefetch submission (the provider's prefetch id on success).
pub type PrefetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<String, ProviderError>> + Send + 'a>>;

/// The refusal of an API without the asked-for call.
pub(crate) fn unsupported(what: &str) -> ProviderError {
    ProviderError::InvalidItems {
        code: "Unsupported".into(),
        message: format!("this provider client has no {what}"),
        items: None,
    }
}
