//! The operator's side of a dispatcher: pause and resume, a release of parked quota, and the
//! state it reports for `status` (through [`crate::control::watcher`]).

use tokio::time::Instant;
use tracing::{info, warn};

use super::Dispatcher;
use crate::provider::Kind;

/// What the operator asks of one provider, as every replica reads it from Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// The provider is paused: no calls, waiting items move to its paused queue.
    pub paused: bool,
    /// Bumped by `parked release`: parked quota gates open at once (a raised quota).
    pub release: u64,
}

/// What a dispatcher reports about its provider, for `status` and the release of paused items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchState {
    pub paused: bool,
    pub auth_stopped: bool,
    /// Unix seconds until which url and dir quota is parked.
    pub parked_until: [Option<i64>; 2],
    /// Items waiting or in flight here.
    pub pending: u64,
    /// Items whose move to the paused queue is under way: the paused queue is released only
    /// once this is 0, so no item lands there after the release.
    pub pause_parking: u64,
}

impl Dispatcher {
    /// Applies the operator's latest [`Control`].
    pub(super) async fn apply_control(&mut self, c: Control) {
        let name = self.p.limits.name.clone();
        if self.core.set_paused(c.paused) {
            self.m.paused.set(i64::from(c.paused));
            if c.paused {
                if let Some(a) = self.armed.take() {
                    // A reserved batch waiting for its permit goes back (and its quota with it).
                    self.refund(&a.reservation, a.items.len()).await;
                    self.core.restore(a.lane, a.items, Instant::now());
                }
                warn!(provider = %name, items = self.core.items(),
                    "paused by an operator: no calls; waiting items move to the paused queue until resume");
            } else {
                info!(provider = %name, "resumed by an operator: calls flow again");
            }
        }
        // The first value read is the state at start, not a new request.
        let earlier = self.release.replace(c.release);
        if earlier.is_some_and(|r| r != c.release) && self.core.unpark_all() {
            info!(provider = %name,
                "parked quota released by an operator: parked kinds flow again (quota is checked as usual)");
        }
    }

    /// Publishes this dispatcher's state when it changed.
    pub(super) fn publish_state(&self) {
        let s = DispatchState {
            paused: self.core.paused(),
            auth_stopped: self.core.auth_stopped(),
            parked_until: [Kind::Url, Kind::Dir].map(|k| self.core.parked_until_unix(k)),
            pending: (self.core.items() + self.armed.as_ref().map_or(0, |a| a.items.len())) as u64,
            pause_parking: self.pause_parking as u64,
        };
        self.p.state.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }
}
