//! Wangsu's task calls: `GET /cdn/purges/{id}` and the list call, as the emulator's task model
//! has them, and the prefetch endpoints (`POST /cdn/prefetches`, its tokens).

use std::sync::{Arc, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Refusal, auth, authenticated_get, purge_id, random_hex, refusal_response, respond};
use crate::emulator::{Shared, now_ms};

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The Wangsu words for a task's state and its success rate at `now`.
fn wangsu_status(task: &crate::emulator::tasks::TaskRecord, now: i64) -> (&'static str, u32) {
    match task.phase(now) {
        crate::emulator::tasks::Phase::Process => ("inprogress", 0),
        crate::emulator::tasks::Phase::Done => ("finished", 100),
        crate::emulator::tasks::Phase::Fail => ("finished", 0),
    }
}

/// `GET /cdn/purges/{id}`: the purge's status, as the task model has it ([`crate::emulator::TaskModel`]).
pub(crate) async fn status(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    authenticated_get(&shared, &method, &uri, &headers, |state, ws, now| {
        // One emulated customer: every account sees every purge.
        let not_found = || {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "InvalidPurgeTaskId",
                format!("The purge task '{id}' does not exist."),
            )
        };
        let task = ws.task(&id).ok_or_else(not_found)?;
        let record = state
            .tasks
            .query("GetPurge", &id, now)
            .cloned()
            .ok_or_else(not_found)?;
        let (status, rate) = wangsu_status(&record, now);
        let finish = (status == "finished").then(|| rfc3339(record.finish_ms));
        let r = &task.request;
        Ok(json!({
            "purgeId": r.purge_id,
            "status": status,
            "successRate": rate,
            "submissionTime": rfc3339(task.submitted_ms),
            "finishTime": finish,
            "action": r.action,
            "target": r.target,
            "name": r.name,
            "fileUrls": r.file_urls,
            "dirUrls": r.dir_urls,
            "regexPatterns": r.regex_patterns,
            "fileHeaders": r.file_headers,
            "dirHeaders": [],
            "apiRequestId": task.api_request_id,
            "customerId": "emulator-customer",
            "webhook": r.webhook,
        }))
    })
}

/// The query of `GET /cdn/purges` (the list call).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListQuery {
    max_success_rate: Option<u32>,
    limit: Option<usize>,
}

/// `GET /cdn/purges?maxSuccessRate=…&limit=…`: purges (without their URLs), newest first,
/// those with a success rate above `maxSuccessRate` left out; `limit` ≤ 200.
pub(crate) async fn list(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(query): Query<ListQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    authenticated_get(&shared, &method, &uri, &headers, |state, _ws, now| {
        state.tasks.record_status_call("ListPurges", now);
        let max = query.max_success_rate.unwrap_or(100);
        let limit = query.limit.unwrap_or(50).clamp(1, 200);
        let mut purges: Vec<Value> = state
            .tasks
            .of_api("wangsu")
            .filter_map(|t| {
                let (status, rate) = wangsu_status(t, now);
                (rate <= max).then(|| {
                    json!({"purgeId": t.id, "status": status, "successRate": rate,
                        "submissionTime": rfc3339(t.created_ms)})
                })
            })
            .collect();
        purges.reverse();
        purges.truncate(limit);
        Ok(json!({"purges": purges}))
    })
}

/// `POST /cdn/prefetches`: `fileList[{url}]`, spending the rolling `prefetchQuota`; 201 with a
/// `Location` naming the prefetch. Over the quota: 400 `PrefetchQuotaExceeded` (Wangsu
/// documents no code; the emulator's assumption, like [`crate::provider::wangsu::QUOTA_CODE`]).
pub(crate) async fn prefetch(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = now_ms();
    let request_id = random_hex(32);
    let mut state = shared.lock();
    let mut ws = shared.wangsu.lock().unwrap_or_else(PoisonError::into_inner);
    let limits = &shared.config.wangsu;
    let mut decide = || -> Result<Response, Refusal> {
        auth::authenticate(limits, &mut ws, (&method, &uri, &headers, &body), true, now)?;
        ws.take_token(limits.api_rate_per_min, limits.api_burst, now)
            .map_err(|secs| {
                Refusal::throttled(
                    "TooManyRequests",
                    format!("API rate limit exceeded; retry after {secs} s"),
                    secs,
                )
            })?;
        let urls: Vec<String> = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("fileList").and_then(Value::as_array).cloned())
            .map(|list| {
                list.iter()
                    .filter_map(|f| f.get("url").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .filter(|u: &Vec<String>| !u.is_empty())
            .ok_or_else(|| {
                Refusal::bad(
                    "InvalidPrefetchUrl",
                    "fileList must hold at least one {url}",
                )
            })?;
        let quota = shared.config.prefetch.wangsu_per_24h;
        state
            .tasks
            .take_wangsu_prefetch(urls.len() as u64, quota, now)
            .map_err(|left| {
                Refusal::bad(
                    "PrefetchQuotaExceeded",
                    format!(
                        "The prefetch quota is exhausted: {} requested, {left} of {quota} left in the last 24 hours.",
                        urls.len()
                    ),
                )
            })?;
        state.tasks.record_prefetch("CreatePrefetch", urls, now);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let id = purge_id(now);
        let extra = [("location", format!("http://{host}/cdn/prefetches/{id}"))];
        Ok(respond(StatusCode::CREATED, &request_id, &extra, None))
    };
    match decide() {
        Ok(r) => r,
        Err(refusal) => refusal_response(&refusal, &request_id),
    }
}

/// `GET /cdn/prefetches/prefetchTokens`: what is left of the rolling prefetch quota.
pub(crate) async fn prefetch_tokens(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let quota = shared.config.prefetch.wangsu_per_24h;
    authenticated_get(&shared, &method, &uri, &headers, |state, _ws, now| {
        Ok(json!({"prefetchTokens": state.tasks.wangsu_prefetch_left(quota, now)}))
    })
}
