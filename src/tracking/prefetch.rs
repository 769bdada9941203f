//! Prefetch after purge (opt-in per domain, `prefetch_after_purge = true`): once the tracker
//! sees a URL task done, the URLs of the task whose domain asks for it are prefetched (Tencent
//! `PushUrlsCache`, Wangsu `POST /cdn/prefetches`). Never before the purge is done: a prefetch
//! then would warm the stale copy. Prefetches spend a quota ledger of their own in Redis
//! (`{prefix}:quota:{provider}:prefetch:url:…`; `prefetch_per_day`, Tencent per UTC+8 day,
//! Wangsu per rolling 24 hours) and a rate budget of their own (Wangsu: the one API budget).

use std::time::Duration;

use super::lineage::{Note, PrefetchEntry};
use super::run::TrackerParts;
use super::store::TrackedTask;
use super::unix_ms;
use crate::provider::{Kind, ProviderError};
use crate::quota::{QuotaPolicy, unix_now};
use crate::ratelimit::SharedWindows;
use crate::routing::Router;

/// Longest wait for a prefetch rate permit before that prefetch is given up.
const PERMIT_WAIT_MAX: Duration = Duration::from_secs(10);

/// What a tracker needs to prefetch; `None` in [`TrackerParts::prefetch`] when no domain of the
/// provider asks for prefetches.
#[derive(Clone)]
pub struct PrefetchParts {
    /// The routing table, to find each URL's domain rule.
    pub router: std::sync::Arc<Router>,
    /// This provider's index in the configuration (a URL routed elsewhere is not ours).
    pub index: usize,
    /// The prefetch call budget.
    pub limiter: SharedWindows,
    /// URLs per day (or rolling 24 hours) of the prefetch ledger.
    pub per_day: u64,
    pub policy: QuotaPolicy,
}

/// The ledger name of a provider's prefetches.
pub fn ledger_name(provider: &str) -> String {
    format!("{provider}:prefetch")
}

/// Whether `key`'s domain asks for a prefetch on provider `index`.
fn wanted(router: &Router, index: usize, key: &str) -> bool {
    let Ok(url) = url::Url::parse(key) else {
        return false;
    };
    url.host_str()
        .and_then(|h| router.route(h))
        .is_some_and(|r| r.provider == index && r.prefetch)
}

/// Prefetches what `task` (seen done) covered where its domain asks for it.
pub async fn after_done(p: &TrackerParts, task: &TrackedTask) {
    let Some(pf) = &p.prefetch else { return };
    if task.kind != Kind::Url.as_str() {
        return;
    }
    let urls: Vec<String> = task
        .keys
        .iter()
        .filter(|(k, _)| wanted(&pf.router, pf.index, k))
        .map(|(k, _)| k.clone())
        .collect();
    if urls.is_empty() {
        return;
    }
    let per_call = p.provider.prefetch_per_call().max(1);
    for chunk in urls.chunks(per_call) {
        let (result, id) = submit(p, pf, chunk).await;
        p.metrics.prefetch(result, chunk.len() as u64);
        p.lineage.note(Note::Prefetch {
            provider: p.name.clone(),
            task: task.id.clone(),
            entry: PrefetchEntry {
                result: result.into(),
                id,
                urls: chunk.len(),
                at: unix_ms(),
            },
        });
    }
}

/// One prefetch call of `urls` within the ledger and the budget: `(result, prefetch id)`.
async fn submit(
    p: &TrackerParts,
    pf: &PrefetchParts,
    urls: &[String],
) -> (&'static str, Option<String>) {
    let want = urls.len() as u64;
    let ledger = ledger_name(&p.name);
    let r = match p
        .quota
        .reserve(&ledger, Kind::Url, pf.per_day, want, unix_now(), pf.policy)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reserve prefetch quota in Redis; not prefetched");
            return ("error", None);
        }
    };
    if r.granted < want {
        if r.granted > 0 {
            let _ = p.quota.refund(&r, r.granted).await;
        }
        tracing::info!(
            urls = want,
            "prefetch quota used up (prefetch_per_day); not prefetched"
        );
        return ("quota", None);
    }
    let deadline = tokio::time::Instant::now() + PERMIT_WAIT_MAX;
    while let Err(wait) = pf.limiter.try_acquire() {
        if tokio::time::Instant::now() + wait > deadline {
            let _ = p.quota.refund(&r, want).await;
            return ("rate_limited", None);
        }
        tokio::time::sleep(wait).await;
    }
    match p.provider.prefetch(urls).await {
        Ok(id) => (
            "submitted",
            Some(super::lineage::bounded(&id)).filter(|s| !s.is_empty()),
        ),
        Err(e) => {
            let maybe = matches!(
                e,
                ProviderError::Transient {
                    maybe_applied: true,
                    ..
                }
            );
            if !maybe {
                let _ = p.quota.refund(&r, want).await;
            }
            tracing::warn!(code = e.code(), error = %e, urls = want, "prefetch refused");
            match e {
                ProviderError::RateLimited { .. } => ("rate_limited", None),
                ProviderError::QuotaExhausted { .. } => ("quota", None),
                _ => ("error", None),
            }
        }
    }
}
