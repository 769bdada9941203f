//! The tracker task of one provider: take accepted calls into the store, claim due tasks, ask
//! the provider within its budget, and act on final states.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lineage::{CallEntry, LineageHandle, Note};
pub use super::prefetch::PrefetchParts;
use super::store::{TaskStore, TrackedTask};
use super::{Accepted, MAX_TASK_AGE, Settings, unix_ms};
use crate::amqp::Publisher;
use crate::coalesce::{LaneKey, Origin};
use crate::dead_letter::DeadLetter;
use crate::metrics::TrackerMetrics;
use crate::provider::{
    Batch, FlushType, Kind, Provider, ProviderError, TaskQuery, TaskReport, TaskState,
};
use crate::quota::{Admission, QuotaPolicy, QuotaStore, Want, bulk_limit, unix_now};
use crate::ratelimit::SharedWindows;
use crate::ratelimit::shared::SharedRate;

/// Tasks claimed at once.
const CLAIM_BATCH: usize = 64;
/// Pause after Redis failed.
const REDIS_RETRY: Duration = Duration::from_secs(1);
/// Longest wait for a rate permit before a re-purge gives up for now (it is asked again).
const PERMIT_WAIT_MAX: Duration = Duration::from_secs(30);
/// The dead-letter code of keys whose purge failed at the CDN twice.
pub const FAILED_AT_CDN: &str = "purge_failed_at_cdn";

/// Everything a tracker needs, injected.
#[derive(Clone)]
pub struct TrackerParts {
    pub name: String,
    pub provider: Arc<dyn Provider>,
    pub settings: Settings,
    pub store: TaskStore,
    /// The purge budget (re-purges, and status calls where the provider shares it).
    pub purge_limiter: SharedWindows,
    /// The status calls' own budget where the provider has one.
    pub status_limiter: SharedWindows,
    pub quota: QuotaStore,
    /// The provider's cluster-wide rate windows: a re-purge is admitted by the same script as the
    /// dispatcher's calls (windows and quota in one step). Its own instance, so its call ids are
    /// its own.
    pub shared_rate: Arc<tokio::sync::Mutex<SharedRate>>,
    /// Daily limits per quota kind (url, dir) and how they are counted, for re-purges.
    pub quota_limits: [u64; 2],
    pub quota_policy: QuotaPolicy,
    /// Share of every quota window a re-purge of bulk items never spends.
    pub interactive_reserve: f64,
    pub metrics: TrackerMetrics,
    pub publisher: Publisher,
    pub dead_letter_queue: String,
    /// Where calls and task ends are noted for `explain`.
    pub lineage: LineageHandle,
    /// Prefetch after purge, when a domain of the provider asks for it.
    pub prefetch: Option<PrefetchParts>,
}

/// Starts the tracker; it runs until `stop`, then stores what is still in its channel.
pub fn spawn(
    parts: TrackerParts,
    rx: mpsc::Receiver<Accepted>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("tracker", provider = %parts.name);
    tokio::spawn(tracing::Instrument::instrument(run(parts, rx, stop), span))
}

fn parse_kind(s: &str) -> Kind {
    match s {
        "dir" => Kind::Dir,
        "regex" => Kind::Regex,
        _ => Kind::Url,
    }
}

async fn run(p: TrackerParts, mut rx: mpsc::Receiver<Accepted>, stop: CancellationToken) {
    let tick =
        (p.settings.poll_interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(a) => add(&p, a, 0).await,
                None => break,
            },
            _ = interval.tick() => poll_due(&p, &stop).await,
            () = stop.cancelled() => break,
        }
    }
    // What the dispatchers handed over before the stop is stored for the next run.
    rx.close();
    while let Ok(a) = rx.try_recv() {
        add(&p, a, 0).await;
    }
}

async fn add(p: &TrackerParts, a: Accepted, attempt: u8) {
    if a.task_id.is_empty() {
        // The API gave no id (v2 RefreshCdnDir may not): nothing to ask about.
        return;
    }
    p.lineage.note(Note::Call {
        call: CallEntry {
            provider: p.name.clone(),
            task: a.task_id.clone(),
            attempt,
            at: a.at_ms,
        },
        keys: a.keys.iter().map(|(k, _)| k.clone()).collect(),
    });
    let task = TrackedTask {
        id: a.task_id,
        kind: a.kind.as_str().into(),
        flush: a.flush.as_str().into(),
        attempt,
        submitted_ms: a.at_ms,
        keys: a.keys,
        headers: a.headers,
        bulk: a.bulk,
    };
    match p
        .store
        .add(&task, p.settings.poll_interval, p.settings.max_pending)
        .await
    {
        Ok(true) => {}
        Ok(false) => warn!(task_id = %task.id, max = p.settings.max_pending,
            "tracking.max_pending tasks are pending: this purge is not followed to completion"),
        Err(e) => {
            warn!(task_id = %task.id, error = %e, "cannot store the purge task in Redis; it is not followed to completion")
        }
    }
}

/// Takes a status permit, or says how long to wait.
fn status_permit(p: &TrackerParts) -> Result<(), Duration> {
    if p.provider.status_shares_purge_budget() {
        p.purge_limiter.try_acquire()
    } else {
        p.status_limiter.try_acquire()
    }
}

async fn poll_due(p: &TrackerParts, stop: &CancellationToken) {
    let tasks = match p.store.claim(CLAIM_BATCH, p.settings.lease).await {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "cannot claim purge tasks in Redis");
            tokio::time::sleep(REDIS_RETRY).await;
            return;
        }
    };
    for task in tasks {
        if stop.is_cancelled() {
            // Claimed but not asked: due again when the lease runs out.
            break;
        }
        if let Err(wait) = status_permit(p) {
            let _ = p.store.reschedule(&task.id, wait).await;
            continue;
        }
        poll_one(p, task).await;
    }
    if let Ok((running, done, failed)) = p.store.counts().await {
        p.metrics.tasks(TaskState::Running, running);
        p.metrics.tasks(TaskState::Done, done);
        p.metrics.tasks(TaskState::Failed, failed);
    }
}

async fn poll_one(p: &TrackerParts, task: TrackedTask) {
    let query = TaskQuery {
        task_id: task.id.clone(),
        kind: parse_kind(&task.kind),
        items: task.keys.len(),
    };
    let age = Duration::from_millis((unix_ms() - task.submitted_ms).max(0) as u64);
    match p.provider.task_status(&query).await {
        Ok(report) => match report.state {
            TaskState::Running if age > MAX_TASK_AGE => {
                p.metrics.poll("expired");
                if p.store.finish(&task.id, "expired").await.unwrap_or(false) {
                    warn!(task_id = %task.id, "purge task still unfinished after a day; no longer asked about");
                }
            }
            TaskState::Running => {
                p.metrics.poll("running");
                let _ = p.store.reschedule(&task.id, p.settings.poll_interval).await;
            }
            TaskState::Done => {
                p.metrics.poll("done");
                if p.store.finish(&task.id, "done").await.unwrap_or(false) {
                    let now = unix_ms();
                    let kind = parse_kind(&task.kind);
                    for (_, since) in &task.keys {
                        p.metrics.fresh(kind, (now - since).max(0) as f64 / 1000.0);
                    }
                    note_finished(p, &task, "done", &report.words, now);
                    super::prefetch::after_done(p, &task).await;
                }
            }
            TaskState::Failed => {
                p.metrics.poll("failed");
                if p.store.finish(&task.id, "failed").await.unwrap_or(false) {
                    note_finished(p, &task, "fail", &report.words, unix_ms());
                    failed(p, task, report).await;
                }
            }
        },
        Err(ProviderError::RateLimited { retry_after, .. }) => {
            p.metrics.poll("rate_limited");
            let wait = retry_after.unwrap_or(p.settings.poll_interval * 2);
            let _ = p
                .store
                .reschedule(&task.id, wait.min(Duration::from_secs(300)))
                .await;
        }
        Err(e) => {
            p.metrics.poll("error");
            if age > MAX_TASK_AGE {
                let _ = p.store.finish(&task.id, "expired").await;
                return;
            }
            warn!(task_id = %task.id, code = e.code(), "purge task status query failed; asking again later");
            let _ = p
                .store
                .reschedule(&task.id, p.settings.poll_interval * 2)
                .await;
        }
    }
}

/// Notes a task's end for `explain` (`done` or `fail`, as Tencent words it).
fn note_finished(p: &TrackerParts, task: &TrackedTask, state: &'static str, words: &str, at: i64) {
    p.lineage.note(Note::Finished {
        provider: p.name.clone(),
        task: task.id.clone(),
        state,
        words: words.to_string(),
        at,
    });
}

/// A failed task: its keys are purged once more (the URLs the provider names as failed, else
/// the whole task), or dead-lettered when this was already the second try.
async fn failed(p: &TrackerParts, task: TrackedTask, report: TaskReport) {
    let keys: Vec<(String, i64)> = if report.failed.is_empty() {
        task.keys.clone()
    } else {
        task.keys
            .iter()
            .filter(|(k, _)| report.failed.contains(k))
            .cloned()
            .collect()
    };
    let keys = if keys.is_empty() {
        task.keys.clone()
    } else {
        keys
    };
    let detail = format!("task {} ended `{}` at the CDN", task.id, report.words);
    if task.attempt >= 1 {
        dead_letter(
            p,
            &task,
            &keys,
            &report.words,
            &format!("{detail} (already purged again once)"),
        )
        .await;
        return;
    }
    let kind = parse_kind(&task.kind);
    let flush = task.flush.parse::<FlushType>().unwrap_or_default();
    match repurge(p, kind, flush, &task.headers, task.bulk, &keys).await {
        Ok(task_id) => {
            info!(failed_task = %task.id, task_id = %task_id, keys = keys.len(), "purge failed at the CDN; purged again");
            let a = Accepted {
                task_id,
                kind,
                flush,
                headers: task.headers.clone(),
                keys,
                at_ms: unix_ms(),
                bulk: task.bulk,
            };
            add(p, a, 1).await;
        }
        Err(why) => {
            dead_letter(
                p,
                &task,
                &keys,
                &report.words,
                &format!("{detail}; purging again failed: {why}"),
            )
            .await
        }
    }
}

async fn repurge(
    p: &TrackerParts,
    kind: Kind,
    flush: FlushType,
    headers: &[crate::provider::Header],
    bulk: bool,
    keys: &[(String, i64)],
) -> Result<String, String> {
    let qk = kind.quota_kind();
    let n = keys.len() as u64;
    let limit = p.quota_limits[qk.index()];
    // A re-purge keeps the class of its call: bulk items stay within their share of the window.
    let want = if bulk {
        Want {
            interactive: 0,
            bulk: n,
            bulk_limit: bulk_limit(limit, p.interactive_reserve),
        }
    } else {
        Want::interactive(n)
    };
    let deadline = tokio::time::Instant::now() + PERMIT_WAIT_MAX;
    let r = loop {
        let admitted = {
            let mut rate = p.shared_rate.lock().await;
            p.quota
                .admit(
                    &mut rate,
                    &p.name,
                    qk,
                    limit,
                    want,
                    unix_now(),
                    p.quota_policy,
                )
                .await
                .map_err(|e| format!("cannot reserve quota: {e}"))?
        };
        match admitted {
            Admission::Reserved(r) => break r,
            Admission::Wait(wait) => {
                if tokio::time::Instant::now() + wait > deadline {
                    return Err("no rate permit for the second purge".into());
                }
                tokio::time::sleep(wait).await;
            }
        }
    };
    if r.granted < n {
        if r.granted > 0 {
            let _ = p.quota.refund(&r, r.granted).await;
        }
        return Err("no quota left for the second purge".into());
    }
    let want = n;
    // The in-process pacer last, as the dispatcher takes it.
    while let Err(wait) = p.purge_limiter.try_acquire() {
        if tokio::time::Instant::now() + wait > deadline {
            let _ = p.quota.refund(&r, want).await;
            return Err("no rate permit for the second purge".into());
        }
        tokio::time::sleep(wait).await;
    }
    let batch = Batch {
        kind,
        flush_type: flush,
        items: keys.iter().map(|(k, _)| k.clone()).collect(),
        headers: headers.to_vec(),
    };
    match p.provider.purge(&batch).await {
        Ok(receipt) => Ok(receipt.task_id),
        Err(e) => {
            if !matches!(
                e,
                ProviderError::Transient {
                    maybe_applied: true,
                    ..
                }
            ) {
                let _ = p.quota.refund(&r, want).await;
            }
            Err(format!("{}: {e}", e.code()))
        }
    }
}

async fn dead_letter(
    p: &TrackerParts,
    task: &TrackedTask,
    keys: &[(String, i64)],
    words: &str,
    reason: &str,
) {
    let lane = LaneKey {
        kind: parse_kind(&task.kind),
        flush: task.flush.parse::<FlushType>().unwrap_or_default(),
        headers: (!task.headers.is_empty()).then(|| Arc::from(task.headers.clone())),
    };
    let items: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    let mut dl =
        DeadLetter::for_provider(&p.name, &lane, &items, &Origin::default(), words, reason);
    dl.error = FAILED_AT_CDN.into();
    dl.reason = format!("provider `{}`: {reason}", p.name);
    let (body, props) = dl.to_message();
    for _ in 0..5 {
        match p
            .publisher
            .publish(&p.dead_letter_queue, &body, props.clone())
            .await
        {
            Ok(()) => {
                p.metrics.dead_lettered();
                warn!(task_id = %task.id, keys = items.len(), "purge failed at the CDN twice; dead-lettered as purge_failed_at_cdn");
                return;
            }
            Err(e) => {
                warn!(error = %e, "dead-letter publish failed; retrying");
                tokio::time::sleep(REDIS_RETRY).await;
            }
        }
    }
    warn!(task_id = %task.id, keys = items.len(), "could not dead-letter keys that failed at the CDN; they were purged but may be stale");
}
