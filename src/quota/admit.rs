//! Admission of one call in one round trip: the cluster-wide rate windows and the provider's
//! shared not-before ([`crate::ratelimit::shared`]) and the quota reservation, in one script.
//!
//! The quota scripts run unchanged inside it, as a Lua function whose `KEYS` and `ARGV` are the
//! rest of the call's: a call is recorded in the rate windows only when the quota granted
//! something, and quota is reserved only when every window has room.

use std::time::Duration;

use redis::Script;

use super::{
    Kind, QuotaError, QuotaPolicy, QuotaStore, QuotaWindow, RESERVE_LUA, ROLLING_BUCKET_SECS,
    ROLLING_RESERVE_LUA, Reservation, SECS_PER_DAY, Want, day_of, next_reset,
};
use crate::ratelimit::shared::{ADMIT_RATE_LUA, HOLD_LUA, MAX_HOLD, SharedRate};

/// What the admission script decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every window had room; the quota granted `reservation.granted` (0: the window is spent).
    Reserved(Reservation),
    /// A rate window (counted over every replica) or the provider's not-before says wait.
    Wait(Duration),
}

/// The admission scripts: the quota reserve of each window kind wrapped under the rate part.
#[derive(Clone)]
pub(super) struct AdmitScripts {
    day: Script,
    rolling: Script,
    hold: Script,
}

impl AdmitScripts {
    pub(super) fn new() -> Self {
        let wrap = |quota: &str| {
            Script::new(&format!(
                "local function quota(KEYS, ARGV)\n{quota}\nend\n{ADMIT_RATE_LUA}"
            ))
        };
        AdmitScripts {
            day: wrap(RESERVE_LUA),
            rolling: wrap(ROLLING_RESERVE_LUA),
            hold: Script::new(HOLD_LUA),
        }
    }
}

impl QuotaStore {
    /// Asks for a call permit in every shared window of the provider and, in the same atomic
    /// step, reserves what it can of `want` in the quota window of `limit`, exactly as
    /// [`QuotaStore::reserve_classes`] does (interactive first, bulk within its share).
    #[allow(clippy::too_many_arguments)] // the same inputs as `reserve`, plus the windows
    pub async fn admit(
        &self,
        rate: &mut SharedRate,
        provider: &str,
        kind: Kind,
        limit: u64,
        want: Want,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Admission, QuotaError> {
        let classes = [
            limit.to_string(),
            want.interactive.to_string(),
            want.bulk.to_string(),
            want.bulk_limit.min(limit).to_string(),
        ];
        let (mut keys, mut args) = rate.next_call();
        let (script, key, free_at) = match policy.window {
            QuotaWindow::Rolling24h => {
                let key = self.rolling_key(provider, kind);
                args.extend(classes);
                args.extend([
                    now_unix.to_string(),
                    ROLLING_BUCKET_SECS.to_string(),
                    SECS_PER_DAY.to_string(),
                ]);
                (&self.admit.rolling, key, None)
            }
            QuotaWindow::Day => {
                let offset = policy.utc_offset_secs;
                let key = self.key(provider, kind, day_of(now_unix, offset));
                let free_at = next_reset(now_unix, offset);
                args.extend(classes);
                args.push((free_at + SECS_PER_DAY).to_string());
                (&self.admit.day, key, Some(free_at))
            }
        };
        keys.push(key.clone());
        let mut call = script.prepare_invoke();
        call.key(keys).arg(args);
        let answer: Vec<i64> = call.invoke_async(&mut self.conn.clone()).await?;
        let at = |i: usize| answer.get(i).copied().unwrap_or(0);
        if at(0) < 0 {
            return Ok(Admission::Wait(Duration::from_millis(at(1).max(1) as u64)));
        }
        let unit = |i: usize| at(i).max(0) as u64;
        let (interactive, bulk, used) = (unit(0), unit(1), unit(2));
        Ok(Admission::Reserved(Reservation {
            granted: interactive + bulk,
            granted_bulk: bulk,
            used,
            free_at: free_at.unwrap_or_else(|| at(4)),
            key,
            bucket: free_at.is_none().then(|| at(3)),
        }))
    }

    /// Makes every replica wait `wait` (at most [`MAX_HOLD`]) before its next call to the
    /// provider: what a `429` or `Retry-After` told one of them.
    pub async fn hold_provider(&self, rate: &SharedRate, wait: Duration) -> Result<(), QuotaError> {
        let ms = wait.min(MAX_HOLD).as_millis().max(1) as u64;
        self.admit
            .hold
            .key(rate.not_before_key())
            .arg(ms)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
