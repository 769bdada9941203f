//! The worker's control stage: reads the pause flags and release counters of its providers from
//! Redis every [`POLL_EVERY`] and hands them to the dispatchers; writes each provider's state
//! for `status` every [`STATUS_EVERY`]; and releases a provider's paused queue back to the purge
//! queue once the provider runs and its dispatcher has no move to the paused queue under way
//! (so nothing lands there after the release). Every replica releases after its own moves, so an
//! item a replica parked just before it saw the resume is released by that same replica.

use std::sync::Arc;

use lapin::Connection;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{ControlStore, POLL_EVERY, ReplicaState, STATUS_EVERY};
use crate::amqp::AmqpConfig;
use crate::amqp::Publisher;
use crate::dispatch::{Control, DispatchState};
use crate::quota::unix_now;

/// Pause before a failed release of a paused queue is tried again.
const RELEASE_RETRY: Duration = Duration::from_secs(2);

/// One provider as the watcher sees it.
pub struct Watched {
    pub name: String,
    /// Where the dispatcher reads the operator's [`Control`].
    pub control: watch::Sender<Control>,
    /// Where the dispatcher reports its state.
    pub state: watch::Receiver<DispatchState>,
    /// The provider's paused queue.
    pub paused_queue: String,
}

/// Everything the control stage needs, injected.
pub struct Watcher {
    pub store: ControlStore,
    pub replica: String,
    pub providers: Vec<Watched>,
    pub amqp: AmqpConfig,
    pub publisher: Publisher,
    /// The consumer's current connection (none while reconnecting).
    pub connection: watch::Receiver<Option<Arc<Connection>>>,
}

impl Watcher {
    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let names: Vec<String> = self.providers.iter().map(|p| p.name.clone()).collect();
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut next_status = Instant::now();
        let mut first = true;
        let mut redis_failing = false;
        // A release is due at start too: a resume may have come while no replica ran.
        let mut due = vec![true; self.providers.len()];
        let mut not_before = vec![Instant::now(); self.providers.len()];
        let mut releases: JoinSet<(usize, bool)> = JoinSet::new();
        let mut releasing = vec![false; self.providers.len()];
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = poll.tick() => {}
                Some(joined) = releases.join_next(), if !releases.is_empty() => {
                    if let Ok((i, ok)) = joined {
                        releasing[i] = false;
                        if !ok {
                            due[i] = true;
                            not_before[i] = Instant::now() + RELEASE_RETRY;
                        }
                    }
                    continue;
                }
            }
            match self.store.read(&names).await {
                Ok(flags) => {
                    if redis_failing {
                        info!("pause flags readable again");
                        redis_failing = false;
                    }
                    for (i, (p, (pause, release))) in self.providers.iter().zip(flags).enumerate() {
                        let c = Control {
                            paused: pause.is_some(),
                            release,
                        };
                        let was_paused = p.control.borrow().paused;
                        if was_paused && !c.paused {
                            due[i] = true;
                        }
                        // The first read always reaches the dispatcher: it marks the starting
                        // release counter as seen.
                        p.control.send_if_modified(|old| {
                            let changed = first || *old != c;
                            *old = c;
                            changed
                        });
                    }
                    first = false;
                }
                Err(e) => {
                    // The last state read stays in force (a paused provider stays paused).
                    if !redis_failing {
                        warn!(error = %e, "cannot read pause flags from Redis; keeping the last state");
                        redis_failing = true;
                    }
                }
            }
            let now = Instant::now();
            for (i, p) in self.providers.iter().enumerate() {
                let s = *p.state.borrow();
                let running = !p.control.borrow().paused && !s.paused;
                if !(due[i]
                    && running
                    && s.pause_parking == 0
                    && !releasing[i]
                    && now >= not_before[i])
                {
                    continue;
                }
                let Some(conn) = self.connection.borrow().clone() else {
                    continue;
                };
                due[i] = false;
                releasing[i] = true;
                let (publisher, amqp, queue, name) = (
                    self.publisher.clone(),
                    self.amqp.clone(),
                    p.paused_queue.clone(),
                    p.name.clone(),
                );
                releases.spawn(async move {
                    match crate::relay::release(&conn, &publisher, &amqp, &queue).await {
                        Ok(m) => {
                            if m.moved > 0 {
                                info!(provider = %name, messages = m.moved,
                                    "released the paused queue back to the purge queue");
                            }
                            (i, true)
                        }
                        Err(e) => {
                            warn!(provider = %name, error = %e, "releasing the paused queue failed; retrying");
                            (i, false)
                        }
                    }
                });
            }
            if now >= next_status {
                next_status = now + STATUS_EVERY;
                self.write_status().await;
            }
        }
        releases.shutdown().await;
    }

    async fn write_status(&self) {
        let now = unix_now();
        let states: Vec<(String, ReplicaState)> = self
            .providers
            .iter()
            .map(|p| {
                let s = *p.state.borrow();
                let state = if s.paused || p.control.borrow().paused {
                    "paused"
                } else if s.auth_stopped {
                    "auth_stopped"
                } else {
                    "running"
                };
                (
                    p.name.clone(),
                    ReplicaState {
                        replica: self.replica.clone(),
                        state: state.into(),
                        parked_until: s.parked_until,
                        pending: s.pending,
                        updated: now,
                    },
                )
            })
            .collect();
        if let Err(e) = self.store.write_status(&states).await {
            tracing::debug!(error = %e, "cannot write this replica's status to Redis");
        }
    }
}
