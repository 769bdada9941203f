//! Tencent Cloud API 3.0 beyond the purge call: `DescribePurgeTasks` by `TaskId` (228/37873:
//! `PurgeLogs[]` of `{TaskId, Url, Status, PurgeType, FlushType, CreateTime}`, `Status` one of
//! `fail|done|process`, its own 20 req/s) and the prefetch `PushUrlsCache` (228/33600: `Urls.N`
//! ≤ 500 per call, 1,000 URLs per day per region, its own 20 req/s). Both are authenticated by the
//! caller; each takes the state lock itself, briefly.

use serde_json::{Value, json};

use super::Shared;
use super::state::Refusal;
use super::tasks::Phase;

/// `YYYY-MM-DD HH:MM:SS` in Beijing time, the API's timestamp format.
fn beijing(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms + super::state::QUOTA_UTC_OFFSET_SECS * 1000)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Process => "process",
        Phase::Done => "done",
        Phase::Fail => "fail",
    }
}

/// `DescribePurgeTasks` with `TaskId` (and optional `Offset`/`Limit`, default 20 as documented).
pub(crate) fn describe_purge_tasks(
    shared: &Shared,
    account: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<Value, Refusal> {
    let mut state = shared.lock();
    state.admit_action(&shared.config, account, "DescribePurgeTasks", now_ms)?;
    let params: Value = serde_json::from_slice(body).map_err(|_| {
        Refusal::new(
            "InvalidParameter.CdnParamError",
            "the request body is not a JSON object",
        )
    })?;
    let Some(task_id) = params.get("TaskId").and_then(Value::as_str) else {
        return Err(Refusal::new(
            "InvalidParameter.CdnParamError",
            "this emulator queries by TaskId only",
        ));
    };
    let offset = params.get("Offset").and_then(Value::as_u64).unwrap_or(0) as usize;
    let limit = params
        .get("Limit")
        .and_then(Value::as_u64)
        .unwrap_or(20)
        .min(1000) as usize;
    let Some(task) = state.tasks.query("DescribePurgeTasks", task_id, now_ms) else {
        return Ok(json!({"Response": {"PurgeLogs": [], "TotalCount": 0}}));
    };
    let status = phase_word(task.phase(now_ms));
    let purge_type = if task.items.iter().all(|i| i.ends_with('/')) {
        "path"
    } else {
        "url"
    };
    let logs: Vec<Value> = task
        .items
        .iter()
        .skip(offset)
        .take(limit)
        .map(|url| {
            json!({
                "TaskId": task.id,
                "Url": url,
                "Status": status,
                "PurgeType": purge_type,
                "FlushType": "flush",
                "CreateTime": beijing(task.created_ms),
            })
        })
        .collect();
    Ok(json!({"Response": {"PurgeLogs": logs, "TotalCount": task.items.len()}}))
}

/// `PushUrlsCache`: `Urls` (≤ `tencent_per_call`), spending the account's daily prefetch quota.
pub(crate) fn push_urls_cache(
    shared: &Shared,
    account: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<Value, Refusal> {
    let limits = &shared.config.prefetch;
    let mut state = shared.lock();
    state.admit_action(&shared.config, account, "PushUrlsCache", now_ms)?;
    let urls: Vec<String> = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("Urls").cloned())
        .and_then(|u| serde_json::from_value(u).ok())
        .filter(|u: &Vec<String>| !u.is_empty())
        .ok_or_else(|| {
            Refusal::new(
                "InvalidParameter.CdnParamError",
                "Urls must be a non-empty array of strings",
            )
        })?;
    if urls.len() > limits.tencent_per_call {
        return Err(Refusal::new(
            "LimitExceeded.CdnPushExceedBatchLimit",
            format!(
                "{} URLs in one call, at most {} allowed",
                urls.len(),
                limits.tencent_per_call
            ),
        ));
    }
    state
        .take_push_quota(account, urls.len() as u64, limits.tencent_per_day, now_ms)
        .map_err(|left| {
            Refusal::new(
                "LimitExceeded.CdnPushExceedDayLimit",
                format!(
                    "daily prefetch quota exceeded: {} requested, {left} of {} left today",
                    urls.len(),
                    limits.tencent_per_day
                ),
            )
        })?;
    state.tasks.record_prefetch("PushUrlsCache", urls, now_ms);
    Ok(json!({"Response": {}}))
}
