//! The ledger follows the provider: raising a window's counter to the provider's own figure.
//!
//! The counters hold the window's total use of both classes, so raising one shrinks the bulk
//! share (and then the interactive reserve) with no other change. A raise never lowers a
//! counter: the provider's figure can lag our own reservations, and giving quota back on its
//! word could overspend.

use super::{
    Kind, QuotaError, QuotaPolicy, QuotaStore, QuotaWindow, ROLLING_BUCKET_SECS, SECS_PER_DAY,
    day_of, next_reset,
};

/// What a raise found and left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The window's count before.
    pub before: u64,
    /// The window's count after: `max(before, target)`.
    pub after: u64,
}

impl QuotaStore {
    /// Sets the window's count of `kind` to `max(count, target)` in one script. For a rolling
    /// window the difference goes into the current bucket.
    pub async fn raise(
        &self,
        provider: &str,
        kind: Kind,
        target: u64,
        now_unix: i64,
        policy: QuotaPolicy,
    ) -> Result<Raised, QuotaError> {
        // Lua numbers are doubles: keep the target where they are exact.
        let target = target.min(super::MAX_COUNT);
        let mut conn = self.conn.clone();
        let (before, after): (u64, u64) = match policy.window {
            QuotaWindow::Rolling24h => {
                self.rolling_raise
                    .key(self.rolling_key(provider, kind))
                    .arg(target)
                    .arg(now_unix)
                    .arg(ROLLING_BUCKET_SECS)
                    .arg(SECS_PER_DAY)
                    .invoke_async(&mut conn)
                    .await?
            }
            QuotaWindow::Day => {
                let offset = policy.utc_offset_secs;
                let key = self.key(provider, kind, day_of(now_unix, offset));
                self.raise
                    .key(key)
                    .arg(target)
                    .arg(next_reset(now_unix, offset) + SECS_PER_DAY)
                    .invoke_async(&mut conn)
                    .await?
            }
        };
        Ok(Raised { before, after })
    }
}
