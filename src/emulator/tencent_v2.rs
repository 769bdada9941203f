//! The server side of Tencent Cloud legacy API 2.0: `GET|POST /v2/index.php` with `Action`
//! `RefreshCdnUrl` or `RefreshCdnDir` (PROVIDERS.md §2).
//!
//! Parameters come from the query (GET) or an `application/x-www-form-urlencoded` body (POST; a
//! missing Content-Type is read as a form too, like curl `-d`). Checks run in the order a client
//! meets them at the real API: SecretId (4104), signature (4100), Timestamp and Nonce (4500),
//! action (4000), the per-account rate limit (4400), injected faults, parameters (4000/9003),
//! the per-call cap (4000/22043, 22045), the "invalid URL" fault (4000/9110, the whole call,
//! without naming the item) and the daily quota (4000/22044, 22046). Every answer is HTTP 200
//! with the API's `{code, message, codeDesc, data}` body, because that is what the client has to
//! cope with. The codes are the ones [`crate::provider::tencent_v2::classify`] documents.

mod limits;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

pub use limits::V2Limits;
pub(crate) use limits::V2State;

use super::state::InjectedFault;
use super::{RecordedCall, RejectedCall, Shared, now_ms};
use crate::provider::tencent_v2::{ACTION_DIRS, ACTION_URLS, error_code};
use crate::provider::{Kind, qcloud_v2};

/// Why a call is refused: the API's common code, the business code when there is one, and the
/// English `codeDesc` for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V2Refusal {
    /// The common code (`4000`, `4100`, …).
    pub code: i64,
    /// The module code carried in `codeDesc` and as `(NNNN)` in `message` (`9110`, `22044`).
    pub business: Option<i64>,
    /// `codeDesc` when there is no business code.
    pub code_desc: &'static str,
    /// Human-readable detail; clients must not depend on it.
    pub message: String,
}

impl V2Refusal {
    /// A common-code refusal (`4100`, `4400`, `4500`, `6000`, …).
    pub(crate) fn common(code: i64, code_desc: &'static str, message: impl Into<String>) -> Self {
        V2Refusal {
            code,
            business: None,
            code_desc,
            message: message.into(),
        }
    }

    /// A business refusal: common code 4000, `codeDesc` = the business code and `message`
    /// prefixed with it, like `{"code":4000,"message":"(9110)…","codeDesc":"9110"}`.
    pub(crate) fn business(business: i64, message: impl Into<String>) -> Self {
        V2Refusal {
            code: 4000,
            business: Some(business),
            code_desc: "",
            message: message.into(),
        }
    }

    /// A parameter error without a business code.
    fn parameter(message: impl Into<String>) -> Self {
        V2Refusal::common(4000, "InvalidParameter", message)
    }

    /// The code the client reports and the rejection record carries.
    fn reported(&self) -> String {
        error_code(self.code, self.business)
    }

    fn body(&self) -> Value {
        match self.business {
            Some(b) => json!({
                "code": self.code,
                "message": format!("({b}){}", self.message),
                "codeDesc": b.to_string(),
            }),
            None => json!({
                "code": self.code,
                "message": self.message,
                "codeDesc": self.code_desc,
            }),
        }
    }
}

/// A 19-digit task id, like `1480069888795584532`.
fn task_id() -> String {
    rand::rng()
        .random_range(1_000_000_000_000_000_000u64..=9_999_999_999_999_999_999)
        .to_string()
}

fn answer(response: &Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        response.to_string(),
    )
        .into_response()
}

/// The request's parameters, decoded, in the order received.
type Params = Vec<(String, String)>;

fn read_params(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Params, V2Refusal> {
    let raw: &[u8] = if method == Method::GET {
        uri.query().unwrap_or("").as_bytes()
    } else {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.is_empty()
            && !essence.eq_ignore_ascii_case(crate::provider::tencent_v2::FORM_CONTENT_TYPE)
        {
            return Err(V2Refusal::parameter(format!(
                "unsupported Content-Type `{essence}`: send application/x-www-form-urlencoded"
            )));
        }
        body
    };
    let params: Params = url::form_urlencoded::parse(raw).into_owned().collect();
    let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(V2Refusal::parameter(format!(
            "parameter `{}` is repeated",
            w[0]
        )));
    }
    Ok(params)
}

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The `urls.N` / `dirs.N` values (PHP spelling `urls_N` accepted too), in index order, and what
/// is wrong with them if anything. Best effort, so even a refused call is recorded with what it
/// tried to purge.
fn items(params: &Params, kind: Kind) -> (Vec<String>, Option<String>) {
    let prefix = match kind {
        Kind::Url => "urls.",
        Kind::Dir | Kind::Regex => "dirs.",
    };
    let mut indexed: Vec<(u64, String)> = Vec::new();
    let mut problem = None;
    for (name, value) in params {
        let dotted = name.replace('_', ".");
        let Some(index) = dotted.strip_prefix(prefix) else {
            continue;
        };
        match index.parse::<u64>() {
            Ok(i) => indexed.push((i, value.clone())),
            Err(_) => problem = Some(format!("`{name}` is not {prefix}N")),
        }
    }
    indexed.sort_by_key(|(i, _)| *i);
    if indexed.windows(2).any(|w| w[0].0 == w[1].0) {
        problem = Some(format!("an index of {prefix}N is given twice"));
    }
    let items: Vec<String> = indexed.into_iter().map(|(_, v)| v).collect();
    if items.is_empty() {
        problem = Some(format!("missing parameter {prefix}0"));
    } else if let Some(bad) = items
        .iter()
        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
    {
        problem = Some(format!("`{bad}` must start with http:// or https://"));
    }
    (items, problem)
}

/// Checks SecretId, signature, Timestamp and Nonce; returns the authenticated SecretId.
fn authenticate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: &Params,
    now_ms: i64,
) -> Result<String, V2Refusal> {
    let secret_id = param(params, "SecretId")
        .ok_or_else(|| V2Refusal::common(4000, "MissingParameter", "missing parameter SecretId"))?;
    let secret_key = shared
        .config
        .accounts
        .iter()
        .find(|(id, _)| id == secret_id)
        .map(|(_, key)| key.as_str())
        .ok_or_else(|| {
            V2Refusal::common(
                4104,
                "AuthFailure.SecretIdNotFound",
                "the SecretId does not exist",
            )
        })?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    qcloud_v2::verify(method.as_str(), host, uri.path(), &refs, secret_key).map_err(|e| {
        V2Refusal::common(
            4100,
            "AuthFailure.SignatureFailure",
            format!("authentication failed: {e}"),
        )
    })?;
    let timestamp: i64 = param(params, "Timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| V2Refusal::parameter("Timestamp must be Unix seconds"))?;
    let nonce: u64 = param(params, "Nonce")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| V2Refusal::parameter("Nonce must be a positive integer"))?;
    shared
        .v2
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check_replay(secret_id, nonce, timestamp, now_ms)?;
    Ok(secret_id.to_string())
}

/// `GET|POST /v2/index.php`: the API itself.
pub(crate) async fn api(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_ms = now_ms();
    let params = read_params(&method, &uri, &headers, &body);
    let action = params
        .as_ref()
        .ok()
        .and_then(|p| param(p, "Action"))
        .unwrap_or("")
        .to_string();
    let kind = match action.as_str() {
        ACTION_URLS => Some(Kind::Url),
        ACTION_DIRS => Some(Kind::Dir),
        _ => None,
    };
    let (response, latency) = {
        let result = params.as_ref().map_err(Clone::clone).and_then(|p| {
            handle(
                &shared,
                &method,
                &uri,
                &headers,
                p,
                &action,
                kind,
                received_ms,
            )
        });
        let mut state = shared.lock();
        let response = match result {
            Ok(response) => response,
            Err(refusal) => {
                let tried = match (&params, kind) {
                    (Ok(p), Some(k)) => items(p, k).0,
                    _ => Vec::new(),
                };
                state.record_rejected(RejectedCall {
                    action: action.clone(),
                    code: refusal.reported(),
                    items: tried,
                    at_ms: received_ms as f64,
                });
                refusal.body()
            }
        };
        (response, state.latency())
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    answer(&response)
}

/// Decides one API call. Takes the locks itself (common state first, then the v2 state),
/// briefly, and never across an await.
#[allow(clippy::too_many_arguments)]
fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: &Params,
    action: &str,
    kind: Option<Kind>,
    now_ms: i64,
) -> Result<Value, V2Refusal> {
    let account = authenticate(shared, method, uri, headers, params, now_ms)?;
    if action == REFRESH_LOG {
        return refresh_log(shared, &account, params, now_ms);
    }
    let Some(kind) = kind else {
        return Err(V2Refusal::common(
            4000,
            "InvalidAction",
            format!("action `{action}` is not supported by this emulator"),
        ));
    };
    let limits = &shared.config.tencent_v2;
    let mut state = shared.lock();
    let mut v2 = shared
        .v2
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    v2.admit(limits, &account, now_ms)?;
    match state.next_fault() {
        None => {}
        Some(InjectedFault::Internal(message)) => {
            return Err(V2Refusal::common(6000, "InternalError", message));
        }
        Some(InjectedFault::RateLimited(message)) => return Err(limits::rate_limited(message)),
    }
    let (items, problem) = items(params, kind);
    if let Some(problem) = problem {
        return Err(V2Refusal::business(9003, format!("参数错误: {problem}")));
    }
    let (cap, day_limit, cap_code, what) = match kind {
        Kind::Url => (
            limits.urls_per_call,
            limits.urls_per_day,
            22043,
            "单次提交刷新URL超出上限",
        ),
        Kind::Dir | Kind::Regex => (
            limits.dirs_per_call,
            limits.dirs_per_day,
            22045,
            "单次提交刷新目录超出上限",
        ),
    };
    if items.len() > cap {
        return Err(V2Refusal::business(
            cap_code,
            format!("{what} ({} items, at most {cap})", items.len()),
        ));
    }
    if state.invalid_item(&items).is_some() {
        // The real API names neither the item nor its position: the client must isolate it.
        return Err(V2Refusal::business(
            9110,
            "没有这个域名的信息 cdn no such host",
        ));
    }
    v2.take_quota(&account, kind, items.len() as u64, day_limit, now_ms)?;
    let count = items.len();
    let items_for_task = items.clone();
    state.record_accepted(RecordedCall {
        action: action.to_string(),
        secret_id: account,
        items,
        flush_type: None,
        at_ms: now_ms as f64,
        wangsu: None,
    });
    let id = task_id();
    state.tasks.add(
        &shared.config.tasks,
        &id,
        "tencent-v2",
        items_for_task,
        now_ms,
    );
    // RefreshCdnUrl answers `task_id`; RefreshCdnDir `log_id` (seed 000).
    let data = match kind {
        Kind::Url => json!({"count": count, "task_id": id}),
        Kind::Dir | Kind::Regex => json!({"count": count, "log_id": id}),
    };
    Ok(json!({"code": 0, "message": "", "codeDesc": "Success", "data": data}))
}

/// The status query of the API (214/3948).
const REFRESH_LOG: &str = "GetCdnRefreshLog";

/// `GetCdnRefreshLog` by `taskId` (214/3948): `data.logs[]` of `{id, host, type, status,
/// url_list, datetime}` with `status` 1 done, 0 running, negative failed; its own limit of
/// 1,000 calls per minute. Date-range queries are not emulated.
fn refresh_log(
    shared: &Shared,
    account: &str,
    params: &Params,
    now_ms: i64,
) -> Result<Value, V2Refusal> {
    let mut state = shared.lock();
    let mut v2 = shared
        .v2
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let limits = V2Limits {
        requests_per_minute: 1000,
        ..shared.config.tencent_v2.clone()
    };
    v2.admit(&limits, &format!("{account}/{REFRESH_LOG}"), now_ms)?;
    let Some(task_id) = param(params, "taskId") else {
        return Err(V2Refusal::parameter(
            "this emulator queries GetCdnRefreshLog by taskId only",
        ));
    };
    let logs: Vec<Value> = match state.tasks.query(REFRESH_LOG, task_id, now_ms) {
        None => Vec::new(),
        Some(task) => {
            let status = match task.phase(now_ms) {
                super::tasks::Phase::Process => 0,
                super::tasks::Phase::Done => 1,
                super::tasks::Phase::Fail => -1,
            };
            let host = task
                .items
                .first()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let datetime =
                chrono::DateTime::from_timestamp_millis(task.created_ms + 8 * 3600 * 1000)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
            vec![json!({
                "id": task.id,
                "app_id": 1_250_000_000u64,
                "project_id": 0,
                "host": host,
                "type": if task.items.iter().all(|i| i.ends_with('/')) { 1 } else { 0 },
                "status": status,
                "url_list": task.items,
                "datetime": datetime,
            })]
        }
    };
    Ok(json!({"code": 0, "message": "", "codeDesc": "Success",
        "data": {"total": logs.len(), "logs": logs}}))
}
