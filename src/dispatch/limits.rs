//! What a dispatcher needs of its provider: the limits it paces, batches and spends by. Its own
//! type, so the dispatcher depends on no configuration format; `config` assembles it from a
//! `[[providers]]` table (`ProviderConfig::dispatch_limits` in `config`).

use crate::backoff::Backoff;
use crate::provider::api::ProviderKind;
use crate::purge::Kind;
use crate::quota::{QuotaPolicy, QuotaWindow};

/// One provider's limits, as the dispatcher reads them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Used in metric labels, logs, Redis keys and the parking queue names.
    pub name: String,
    /// The API family (logs).
    pub kind: ProviderKind,
    pub urls_per_call: usize,
    pub dirs_per_call: usize,
    pub regex_per_call: usize,
    pub urls_per_day: u64,
    pub dirs_per_day: u64,
    /// How the allowance is counted (calendar day at an offset, or rolling 24 hours).
    pub quota: QuotaPolicy,
    /// Retries of failed calls.
    pub retry: Backoff,
    pub max_in_flight: usize,
    /// Failed calls an item may have alone before it is dead-lettered (`provider_failed`).
    pub max_attempts: u32,
    /// Share of every quota window bulk items never spend.
    pub interactive_reserve: f64,
    /// Whether any of its domains escalates bulk URLs to directory purges.
    pub escalates: bool,
    /// How the ledger follows the provider's own quota figures.
    pub quota_sync: super::QuotaSync,
}

impl Limits {
    /// Items of `kind` per call.
    pub fn per_call(&self, kind: Kind) -> usize {
        match kind {
            Kind::Url => self.urls_per_call,
            Kind::Dir => self.dirs_per_call,
            Kind::Regex => self.regex_per_call,
        }
    }

    /// The allowance `kind` spends: regex purges spend the directory one.
    pub fn per_day(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Url => self.urls_per_day,
            Kind::Dir | Kind::Regex => self.dirs_per_day,
        }
    }

    /// How the allowance is counted (for the quota store).
    pub fn quota_policy(&self) -> QuotaPolicy {
        self.quota
    }

    /// Calendar day or rolling 24 hours.
    pub fn quota_window(&self) -> QuotaWindow {
        self.quota.window
    }
}
