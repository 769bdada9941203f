//! Supervision of the stage tasks (consumer, dispatchers, ledger, queue-depth poller).
//!
//! A stage that panics, or returns while the worker is still meant to run, would otherwise leave
//! the process up with a dead stage: deliveries whose items went to a dead dispatcher are never
//! acked, and `/readyz` would stay green. Instead the first such end turns `/readyz` red, logs one
//! ERROR naming the stage, and cancels [`Supervisor::stop`] so the other stages drain; the worker
//! then reports the failure and the process exits 1. Whatever was not acked is redelivered by the
//! broker once the connection closes.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::http::Readiness;

/// Watches every stage task; cheap to clone.
#[derive(Clone)]
pub(super) struct Supervisor {
    /// The watchers; closed once every stage is spawned, so the worker can wait for them all.
    tracker: TaskTracker,
    /// Cancelled when shutdown is requested or a stage failed: what the consumer and the pollers
    /// stop on. A child of the caller's shutdown token, so a failure never cancels the caller's.
    stop: CancellationToken,
    /// Names of the stages that ended unexpectedly, in order.
    failures: Arc<Mutex<Vec<String>>>,
    readiness: Arc<Readiness>,
}

impl Supervisor {
    pub(super) fn new(shutdown: &CancellationToken, readiness: Arc<Readiness>) -> Supervisor {
        Supervisor {
            tracker: TaskTracker::new(),
            stop: shutdown.child_token(),
            failures: Arc::default(),
            readiness,
        }
    }

    /// The token stages stop on (shutdown requested, or another stage failed).
    pub(super) fn stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Watches `task` as `stage`: its value when it ended as expected (after [`Self::stop`]),
    /// `None` when it panicked. A stage that returns before the stop counts as failed too (its
    /// value is still handed back, e.g. a connection to close).
    pub(super) fn watch<T: Send + 'static>(
        &self,
        stage: String,
        task: JoinHandle<T>,
    ) -> JoinHandle<Option<T>> {
        let s = self.clone();
        self.tracker.spawn(async move {
            match task.await {
                Ok(value) => {
                    if !s.stop.is_cancelled() {
                        s.fail(&stage, "returned before shutdown was requested");
                    }
                    Some(value)
                }
                Err(e) => {
                    s.fail(
                        &stage,
                        if e.is_panic() {
                            "panicked"
                        } else {
                            "was cancelled"
                        },
                    );
                    None
                }
            }
        })
    }

    fn fail(&self, stage: &str, how: &str) {
        self.readiness.stage_failed(stage);
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(stage.to_string());
        error!(
            stage,
            "stage {how}; /readyz is failing, draining and exiting with an error"
        );
        self.stop.cancel();
    }

    /// Waits for every watcher to finish (each ends when its stage does).
    pub(super) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// `Err` naming every failed stage, if any failed.
    pub(super) fn result(&self) -> anyhow::Result<()> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("stage(s) ended unexpectedly: {}", failures.join(", "))
        }
    }
}
