//! The server side of Wangsu CDN Pro purges (PROVIDERS.md §3): `POST /cdn/purges`,
//! `GET /cdn/purges/{id}` and `GET /cdn/purges/purgeTokens?target=…` (the task and prefetch calls
//! in `wangsu/tasks.rs`).
//!
//! `POST` checks run in this order: credentials and clock (401 `AccessDenied`), the customer's
//! token bucket (429 with `x-rate-limit-retry-after-seconds`; every authenticated call spends a
//! token, refused ones too, as the doc says), injected faults, then the body — `target` (400
//! `InvalidTarget`), `action`, per-call caps, every entry through [`crate::provider::wangsu_rules`]
//! (400 `InvalidPurgeUrl` / `InvalidRegexPattern` naming it, `DuplicateFileHeaderName`), the
//! "invalid URL" fault — and last the rolling-24-hour quotas of the target. Success is 201 with
//! an empty body and `Location: http://<host>/cdn/purges/<24-hex id>`.
//!
//! Codes Wangsu does not document and the emulator had to choose (the client maps them):
//! 400 `TooManyPurgeEntries` (a cap), 400 `PurgeQuotaExceeded` (a rolling quota; Wangsu
//! documents no code, PROVIDERS.md §3.3), 429 `TooManyRequests` (empty bucket), 400
//! `InvalidRequestBody`, `InvalidPurgeAction`, `NoPurgeEntries`, `InvalidFileHeader`. Simplified
//! on purpose: one emulated customer for all accounts, no per-IP bucket for unauthenticated
//! calls, every call (GETs too) spends a token, every host counts as deployed, and purges
//! progress as the emulator's task model says (`emulator::TaskModel`).

mod auth;
mod body;
mod state;
mod tasks;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;

use std::sync::{Arc, PoisonError};

use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use body::{CreateBody, validate};

use super::state::InjectedFault;
use super::{RecordedCall, RejectedCall, Shared, WangsuRequest, now_ms};
pub(crate) use state::WangsuState;
use state::{QuotaClass, Task};
pub(crate) use tasks::{list, prefetch, prefetch_tokens, status};

/// The username the emulator accepts by default for Wangsu's API-key scheme.
pub const EMULATOR_WANGSU_USERNAME: &str = "emulator-user";
/// The api key paired with [`EMULATOR_WANGSU_USERNAME`]. A demo value, safe to print.
pub const EMULATOR_WANGSU_API_KEY: &str = "emulator-api-key";
/// The AccessKey the emulator accepts by default for the AK/SK scheme.
pub const EMULATOR_WANGSU_ACCESS_KEY: &str = "EMULATORWANGSUACCESSKEY0000000000000";
/// The SecretKey paired with [`EMULATOR_WANGSU_ACCESS_KEY`]. A demo value, safe to print.
pub const EMULATOR_WANGSU_SECRET_KEY: &str = "emulator-wangsu-secret-key";

/// The `RecordedCall::action` of every Wangsu purge.
const RECORD_ACTION: &str = "CreatePurge";

/// The Wangsu API's accounts and limits (PROVIDERS.md §3.4). Defaults are Wangsu's published
/// defaults; every account belongs to one emulated customer, so they share the bucket and quotas.
/// `Debug` names the accounts but not their keys.
#[derive(Clone)]
pub struct WangsuLimits {
    /// `(username, api_key)` pairs for the API-key scheme.
    pub accounts: Vec<(String, String)>,
    /// `(AccessKey, SecretKey)` pairs for the AK/SK scheme.
    pub aksk_accounts: Vec<(String, String)>,
    /// Most `fileUrls` per call (`maxFilePurgeEntries`, 1000).
    pub files_per_call: usize,
    /// Most `dirUrls` per call (20).
    pub dirs_per_call: usize,
    /// Most `regexPatterns` per call (2).
    pub regex_per_call: usize,
    /// File entries per target in any 24 hours (5000).
    pub files_per_24h: u64,
    /// Directory plus regex entries per target in any 24 hours (20).
    pub dirs_per_24h: u64,
    /// Token-bucket refill per minute (`apiRate`, 30).
    pub api_rate_per_min: u32,
    /// Token-bucket size (`apiMaxBurst`, 60).
    pub api_burst: u32,
    /// Allowed distance of `Date`/`x-cnc-timestamp` from server time; also the AK/SK replay
    /// window (300 s).
    pub max_date_skew_secs: i64,
}

impl std::fmt::Debug for WangsuLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |accounts: &[(String, String)]| -> Vec<String> {
            accounts.iter().map(|(id, _)| id.clone()).collect()
        };
        f.debug_struct("WangsuLimits")
            .field("accounts", &names(&self.accounts))
            .field("aksk_accounts", &names(&self.aksk_accounts))
            .field("files_per_call", &self.files_per_call)
            .field("dirs_per_call", &self.dirs_per_call)
            .field("regex_per_call", &self.regex_per_call)
            .field("files_per_24h", &self.files_per_24h)
            .field("dirs_per_24h", &self.dirs_per_24h)
            .field("api_rate_per_min", &self.api_rate_per_min)
            .field("api_burst", &self.api_burst)
            .field("max_date_skew_secs", &self.max_date_skew_secs)
            .finish()
    }
}

impl Default for WangsuLimits {
    fn default() -> Self {
        WangsuLimits {
            accounts: vec![(
                EMULATOR_WANGSU_USERNAME.into(),
                EMULATOR_WANGSU_API_KEY.into(),
            )],
            aksk_accounts: vec![(
                EMULATOR_WANGSU_ACCESS_KEY.into(),
                EMULATOR_WANGSU_SECRET_KEY.into(),
            )],
            files_per_call: 1000,
            dirs_per_call: 20,
            regex_per_call: 2,
            files_per_24h: 5000,
            dirs_per_24h: 20,
            api_rate_per_min: 30,
            api_burst: 60,
            max_date_skew_secs: 300,
        }
    }
}

/// A refused call: HTTP status, Wangsu-style code and message, and for 429 the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn throttled(code: &'static str, message: impl Into<String>, secs: u64) -> Self {
        Refusal {
            retry_after_secs: Some(secs),
            ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }
}

fn random_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

/// `<8 hex seconds><16 hex>`, the shape of CDN Pro purge ids (`5dca2205f9e9cc0001df7b33`).
fn purge_id(now_ms: i64) -> String {
    format!("{:08x}{}", now_ms.div_euclid(1000) as u32, random_hex(16))
}

/// An answer with `x-cnc-request-id`, the `extra` headers and, when given, a JSON body.
fn respond(
    status: StatusCode,
    request_id: &str,
    extra: &[(&'static str, String)],
    json_body: Option<String>,
) -> Response {
    let mut response = match json_body {
        Some(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => status.into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in [("x-cnc-request-id", request_id)]
        .into_iter()
        .chain(extra.iter().map(|(n, v)| (*n, v.as_str())))
    {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    response
}

fn refusal_response(refusal: &Refusal, request_id: &str) -> Response {
    let extra: Vec<(&'static str, String)> = refusal
        .retry_after_secs
        .map(|s| ("x-rate-limit-retry-after-seconds", s.to_string()))
        .into_iter()
        .collect();
    let body = json!({"code": refusal.code, "message": refusal.message}).to_string();
    respond(refusal.status, request_id, &extra, Some(body))
}

/// `POST /cdn/purges`.
pub(crate) async fn create(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_ms = now_ms();
    let request_id = random_hex(32);
    let parsed = serde_json::from_slice::<CreateBody>(&body);
    let (response, latency) = {
        let mut state = shared.lock();
        let mut ws = shared.wangsu.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = &shared.config.wangsu;
        let mut decide = || -> Result<Response, Refusal> {
            let account = auth::authenticate(
                limits,
                &mut ws,
                (&method, &uri, &headers, &body),
                true,
                received_ms,
            )?;
            let remaining = ws
                .take_token(limits.api_rate_per_min, limits.api_burst, received_ms)
                .map_err(|secs| {
                    Refusal::throttled(
                        "TooManyRequests",
                        format!("API rate limit exceeded; retry after {secs} s"),
                        secs,
                    )
                })?;
            match state.next_fault() {
                None => {}
                Some(InjectedFault::Internal(m)) => {
                    return Err(Refusal::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "InternalError",
                        m,
                    ));
                }
                Some(InjectedFault::RateLimited(m)) => {
                    return Err(Refusal::throttled("TooManyRequests", m, 1));
                }
            }
            let body = parsed.as_ref().map_err(|e| {
                Refusal::bad(
                    "InvalidRequestBody",
                    format!("the request body is not a create-purge JSON object: {e}"),
                )
            })?;
            let request = validate(limits, body)?;
            let items = body.items();
            if let Some(bad) = state.invalid_item(&items) {
                return Err(Refusal::bad(
                    "InvalidPurgeUrl",
                    format!(
                        "The purge URL '{bad}' is invalid. Special letters need to be encoded."
                    ),
                ));
            }
            let dirs = (request.dir_urls.len() + request.regex_patterns.len()) as u64;
            ws.take_quota(
                &request.target,
                (request.file_urls.len() as u64, limits.files_per_24h),
                (dirs, limits.dirs_per_24h),
                received_ms,
            )
            .map_err(|m| Refusal::bad(crate::provider::wangsu::QUOTA_CODE, m))?;
            let id = purge_id(received_ms);
            let request = WangsuRequest {
                purge_id: id.clone(),
                ..request
            };
            state.tasks.add(
                &shared.config.tasks,
                &id,
                "wangsu",
                items.clone(),
                received_ms,
            );
            state.record_accepted(RecordedCall {
                action: RECORD_ACTION.into(),
                secret_id: account,
                items,
                flush_type: Some(request.action.clone()),
                at_ms: received_ms as f64,
                wangsu: Some(request.clone()),
            });
            ws.add_task(Task {
                request,
                submitted_ms: received_ms,
                api_request_id: request_id.clone(),
            });
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let extra = [
                ("location", format!("http://{host}/cdn/purges/{id}")),
                ("x-rate-limit-remaining", remaining.to_string()),
            ];
            Ok(respond(StatusCode::CREATED, &request_id, &extra, None))
        };
        let response = match decide() {
            Ok(response) => response,
            Err(refusal) => {
                state.record_rejected(RejectedCall {
                    action: RECORD_ACTION.into(),
                    code: refusal.code.to_string(),
                    items: parsed.as_ref().map(CreateBody::items).unwrap_or_default(),
                    at_ms: received_ms as f64,
                });
                refusal_response(&refusal, &request_id)
            }
        };
        (response, state.latency())
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

/// Authenticates a GET, spends one token of the customer's bucket (the API budget covers every
/// call, status queries included) and runs `answer` on the state.
fn authenticated_get(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    answer: impl FnOnce(&mut super::state::State, &mut WangsuState, i64) -> Result<Value, Refusal>,
) -> Response {
    let now = now_ms();
    let request_id = random_hex(32);
    let mut state = shared.lock();
    let mut ws = shared.wangsu.lock().unwrap_or_else(PoisonError::into_inner);
    let limits = &shared.config.wangsu;
    let result = auth::authenticate(limits, &mut ws, (method, uri, headers, &[]), false, now)
        .and_then(|_account| {
            ws.take_token(limits.api_rate_per_min, limits.api_burst, now)
                .map_err(|secs| {
                    Refusal::throttled(
                        "TooManyRequests",
                        format!("API rate limit exceeded; retry after {secs} s"),
                        secs,
                    )
                })
        })
        .and_then(|_| answer(&mut state, &mut ws, now));
    match result {
        Ok(body) => respond(StatusCode::OK, &request_id, &[], Some(body.to_string())),
        Err(refusal) => refusal_response(&refusal, &request_id),
    }
}

/// The query of `GET /cdn/purges/purgeTokens`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokensQuery {
    target: Option<String>,
}

/// `GET /cdn/purges/purgeTokens?target=…`: what is left of the rolling quotas.
pub(crate) async fn purge_tokens(
    AxumState(shared): AxumState<Arc<Shared>>,
    Query(query): Query<TokensQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let limits = &shared.config.wangsu;
    authenticated_get(&shared, &method, &uri, &headers, |_state, ws, now| {
        let target = query.target.as_deref().unwrap_or("production");
        if !matches!(target, "production" | "staging") {
            return Err(Refusal::bad(
                "InvalidTarget",
                format!("The target '{target}' is invalid; use 'production' or 'staging'."),
            ));
        }
        Ok(json!({
            "filePurgeTokens": ws.quota_left(target, QuotaClass::Files, limits.files_per_24h, now),
            "dirPurgeTokens": ws.quota_left(target, QuotaClass::Dirs, limits.dirs_per_24h, now),
        }))
    })
}
