//! One provider's metric handles, resolved once when its dispatcher starts: the hot path only
//! touches atomics, never hashes label strings. Only the kinds the provider takes get series, so
//! a Tencent provider exports no `kind="regex"`.

use prometheus::{Counter, Gauge, Histogram, IntCounter, IntGauge};

use super::Metrics;
use crate::event::Priority;
use crate::provider::Kind;

/// `purge_api_requests_total` results, in label order.
const API_RESULTS: [&str; 5] = [
    "ok",
    "rate_limited",
    "quota_exceeded",
    "retryable_error",
    "permanent_error",
];

/// Why a batch was put back for another attempt (`purge_retries_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum RetryReason {
    RateLimited,
    Transient,
    BatchTooLarge,
    Isolate,
}

impl RetryReason {
    const ALL: [RetryReason; 4] = [
        RetryReason::RateLimited,
        RetryReason::Transient,
        RetryReason::BatchTooLarge,
        RetryReason::Isolate,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The series of one provider and kind.
#[derive(Clone)]
pub struct KindMetrics {
    /// By class ([`Priority::index`]), like every array here.
    pub submitted: [IntCounter; 2],
    pub deduplicated: [IntCounter; 2],
    pub failed: [IntCounter; 2],
    pub batch_size: Histogram,
    pub event_to_submit: [Histogram; 2],
    pub pending: IntGauge,
    pub oldest_pending: Gauge,
    pub quota_reset: Gauge,
    pub batch_limit: IntGauge,
    pub parked_until: IntGauge,
    pub parked_items: [IntCounter; 2],
    /// `purge_api_requests_total` of this kind's action, by result ([`API_RESULTS`] order).
    api: [IntCounter; 5],
    pub api_duration: Histogram,
}

impl KindMetrics {
    /// The `purge_api_requests_total` counter for a result label (`ok`, or
    /// `ProviderError::result_label`).
    pub fn api(&self, result: &str) -> &IntCounter {
        let i = API_RESULTS.iter().position(|r| *r == result).unwrap_or(4);
        &self.api[i]
    }
}

/// Every series of one provider.
#[derive(Clone)]
pub struct ProviderMetrics {
    kinds: [Option<KindMetrics>; 3],
    /// `purge_quota_used` / `purge_quota_limit` by quota kind (url, dir).
    pub quota_used: [IntGauge; 2],
    pub quota_limit: [IntGauge; 2],
    /// `purge_quota_reserve_left` by quota kind (url, dir).
    pub quota_reserve_left: [IntGauge; 2],
    /// `purge_quota_drift` by quota kind (url, dir).
    pub quota_drift: [IntGauge; 2],
    /// `purge_escalations_total`.
    pub escalations: IntCounter,
    retries: [IntCounter; 4],
    pub auth_failures: IntCounter,
    pub stopped: IntGauge,
    /// `purge_paused{provider}`.
    pub paused: IntGauge,
    pub rate_limit_wait: Counter,
}

impl ProviderMetrics {
    /// The series of `kind`; `None` for a kind the provider does not take (never routed to it).
    pub fn kind(&self, kind: Kind) -> Option<&KindMetrics> {
        self.kinds[kind.index()].as_ref()
    }

    /// The kinds that have series.
    pub fn kinds(&self) -> impl Iterator<Item = (Kind, &KindMetrics)> {
        Kind::ALL
            .into_iter()
            .filter_map(|k| self.kind(k).map(|m| (k, m)))
    }

    /// `purge_retries_total{reason}`.
    pub fn retried(&self, reason: RetryReason) {
        self.retries[reason as usize].inc();
    }
}

impl Metrics {
    /// Resolves the handles of provider `name` for `kinds`, whose calls are named by `action`.
    /// Creates every series up front, so dashboards show zeros rather than gaps.
    pub fn provider(
        &self,
        name: &str,
        kinds: &[Kind],
        action: impl Fn(Kind) -> &'static str,
    ) -> ProviderMetrics {
        let kind = |k: Kind| {
            let l = [name, k.as_str()];
            let action = action(k);
            let items = |outcome: &str| {
                Priority::ALL.map(|p| {
                    self.items
                        .with_label_values(&[name, k.as_str(), outcome, p.as_str()])
                })
            };
            // Refused by validation are counted under provider="none"; the series exists anyway.
            items("rejected");
            KindMetrics {
                submitted: items("submitted"),
                deduplicated: items("deduplicated"),
                failed: items("failed"),
                batch_size: self.batch_size.with_label_values(&l),
                event_to_submit: Priority::ALL.map(|p| {
                    self.event_to_submit
                        .with_label_values(&[name, k.as_str(), p.as_str()])
                }),
                pending: self.pending.with_label_values(&l),
                oldest_pending: self.oldest_pending.with_label_values(&l),
                quota_reset: self.quota_reset.with_label_values(&l),
                batch_limit: self.batch_limit.with_label_values(&l),
                parked_until: self.parked_until.with_label_values(&l),
                parked_items: Priority::ALL.map(|p| {
                    self.parked_items
                        .with_label_values(&[name, k.as_str(), p.as_str()])
                }),
                api: API_RESULTS.map(|r| self.api_requests.with_label_values(&[name, action, r])),
                api_duration: self.api_duration.with_label_values(&[name, action]),
            }
        };
        let quota = |v: &prometheus::IntGaugeVec| {
            [Kind::Url, Kind::Dir].map(|k| v.with_label_values(&[name, k.as_str()]))
        };
        ProviderMetrics {
            kinds: Kind::ALL.map(|k| kinds.contains(&k).then(|| kind(k))),
            quota_used: quota(&self.quota_used),
            quota_limit: quota(&self.quota_limit),
            quota_reserve_left: quota(&self.quota_reserve_left),
            quota_drift: quota(&self.quota_drift),
            escalations: self.escalations.with_label_values(&[name]),
            retries: RetryReason::ALL.map(|r| self.retries.with_label_values(&[name, r.as_str()])),
            auth_failures: self.auth_failures.with_label_values(&[name]),
            stopped: self.provider_stopped.with_label_values(&[name]),
            paused: self.ops.paused.with_label_values(&[name]),
            rate_limit_wait: self.rate_limit_wait.with_label_values(&[name]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_reasons_keep_their_label_values() {
        let labels: Vec<&str> = RetryReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["rate_limited", "transient", "batch_too_large", "isolate"]
        );
    }
}

/// The series of a provider's quota query (`purge_api_requests_total` and
/// `purge_api_request_duration_seconds` with the query's `action`).
#[derive(Clone)]
pub struct QuotaQueryMetrics {
    api: [IntCounter; 5],
    pub duration: Histogram,
}

impl QuotaQueryMetrics {
    /// `purge_api_requests_total` of the query by result label (unknown labels count as
    /// `permanent_error`).
    pub fn api(&self, result: &str) -> &IntCounter {
        let i = API_RESULTS.iter().position(|r| *r == result).unwrap_or(4);
        &self.api[i]
    }
}

impl Metrics {
    /// Resolves the quota query's handles of provider `name`, whose query is named `action`.
    pub fn quota_query(&self, name: &str, action: &str) -> QuotaQueryMetrics {
        QuotaQueryMetrics {
            api: API_RESULTS.map(|r| self.api_requests.with_label_values(&[name, action, r])),
            duration: self.api_duration.with_label_values(&[name, action]),
        }
    }
}
