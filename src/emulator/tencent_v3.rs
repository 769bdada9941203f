//! The server side of Tencent Cloud API 3.0 for CDN purges: `POST /` with `X-TC-Action`
//! `PurgeUrlsCache`, `PurgePathCache`, `DescribePurgeQuota`, and (in `tencent_v3_tasks`)
//! `DescribePurgeTasks` and `PushUrlsCache`.
//!
//! Checks run in the order a client would meet them at the real API: signature and clock
//! (`AuthFailure.*`), action and version, then for purges the per-account rate limit, injected
//! faults, parameters, the per-call cap, the "invalid URL" fault and the daily quota. The quota
//! query meets no injected fault and is not recorded: faults and records are about purges. Every
//! answer is HTTP 200 with the real JSON envelope, because that is what the client has to cope
//! with.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

use super::state::Refusal;
use super::{RecordedCall, RejectedCall, Shared, now_ms};
use crate::provider::Kind;
use crate::provider::tc3;

/// The API version the emulator serves (the only one the CDN API has).
const API_VERSION: &str = "2018-06-06";
/// Allowed clock skew between `X-TC-Timestamp` and the server, as documented.
const MAX_SKEW_SECS: i64 = 300;

/// `<8 hex>-<4>-<4>-<4>-<12>`, like Tencent's RequestIds.
fn request_id() -> String {
    let h = format!("{:032x}", rand::rng().random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `<unix seconds>-<8 lowercase alphanumerics>`, like `1533045796-i60rfmzm`.
fn task_id(now_ms: i64) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect();
    format!("{}-{suffix}", now_ms.div_euclid(1000))
}

fn answer(response: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        response.to_string(),
    )
        .into_response()
}

/// Adds the `RequestId` to a `{"Response": {…}}` answer.
fn with_request_id(mut v: Value, id: String) -> Value {
    v["Response"]["RequestId"] = json!(id);
    v
}

fn error_body(refusal: &Refusal) -> Value {
    json!({"Response": {
        "Error": {"Code": refusal.code, "Message": refusal.message},
        "RequestId": request_id(),
    }})
}

/// A purge request's parameters as far as they could be read; `items` is best effort so even a
/// refused call is recorded with what it tried to purge.
struct PurgeParams {
    kind: Kind,
    items: Vec<String>,
    flush_type: Option<String>,
    problem: Option<String>,
}

fn purge_params(kind: Kind, body: &[u8]) -> PurgeParams {
    let field = match kind {
        Kind::Url => "Urls",
        Kind::Dir | Kind::Regex => "Paths",
    };
    let mut params = PurgeParams {
        kind,
        items: Vec::new(),
        flush_type: None,
        problem: None,
    };
    let parsed = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            params.problem = Some("the request body is not a JSON object".into());
            return params;
        }
    };
    match parsed.get(field) {
        Some(Value::Array(values)) => {
            params.items = values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if params.items.len() != values.len() {
                params.problem = Some(format!("{field} must be an array of strings"));
            } else if params.items.is_empty() {
                params.problem = Some(format!("{field} must not be empty"));
            }
        }
        Some(_) => params.problem = Some(format!("{field} must be an array of strings")),
        None => params.problem = Some(format!("missing parameter {field}")),
    }
    if kind == Kind::Dir {
        let flush = parsed.get("FlushType").and_then(Value::as_str);
        params.flush_type = flush.map(str::to_string);
        if !matches!(flush, Some("flush" | "delete")) && params.problem.is_none() {
            params.problem = Some("FlushType must be \"flush\" or \"delete\"".into());
        }
    }
    params
}

/// Checks the TC3 signature and clock; returns the authenticated SecretId.
fn authenticate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
) -> Result<String, Refusal> {
    let invalid = |m: &str| Refusal::new("AuthFailure.InvalidAuthorization", m);
    let header_text = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| invalid("missing Authorization header"))?
        .to_str()
        .map_err(|_| invalid("Authorization header is not ASCII"))?;
    let auth = tc3::parse_authorization(header_text).map_err(|e| invalid(&e.to_string()))?;
    let secret_key = shared
        .config
        .accounts
        .iter()
        .find(|(id, _)| id == auth.secret_id)
        .map(|(_, key)| key.as_str())
        .ok_or_else(|| Refusal::new("AuthFailure.SecretIdNotFound", "the SecretId is not found"))?;
    let timestamp = headers
        .get("x-tc-timestamp")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("missing X-TC-Timestamp header"))?;
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| invalid("X-TC-Timestamp is not Unix seconds"))?;
    let skew = ts - now_ms.div_euclid(1000);
    if skew.abs() > MAX_SKEW_SECS {
        return Err(Refusal::new(
            "AuthFailure.SignatureExpire",
            format!("X-TC-Timestamp is {skew} s from server time (allowed ±{MAX_SKEW_SECS} s)"),
        ));
    }
    let received: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let request = tc3::Received {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &received,
        payload: body,
        timestamp,
    };
    tc3::verify(&auth, &request, secret_key)
        .map_err(|e| Refusal::new(e.tencent_code(), e.to_string()))?;
    Ok(auth.secret_id.to_string())
}

/// `POST /`: the API itself.
pub(crate) async fn api(
    AxumState(shared): AxumState<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_ms = now_ms();
    let action = headers
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let kind = match action.as_str() {
        "PurgeUrlsCache" => Some(Kind::Url),
        "PurgePathCache" => Some(Kind::Dir),
        _ => None,
    };
    let params = kind.map(|k| purge_params(k, &body));
    // The quota query is no purge call: injected faults and the call records are about purges.
    let quota_query = action == "DescribePurgeQuota";
    let gateway = if quota_query {
        None
    } else {
        let mut state = shared.lock();
        let answer = state.gateway_429();
        if answer.is_some() {
            state.record_rejected(RejectedCall {
                action: action.clone(),
                code: "HTTP 429".into(),
                items: params.as_ref().map(|p| p.items.clone()).unwrap_or_default(),
                at_ms: received_ms as f64,
            });
        }
        answer
    };
    if let Some(retry_after) = gateway {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&retry_after) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let (response, latency) = {
        let result = handle(
            &shared,
            &method,
            &uri,
            &headers,
            &body,
            &action,
            params.as_ref(),
            received_ms,
        );
        let mut state = shared.lock();
        let response = match result {
            Ok(response) => response,
            Err(refusal) if quota_query => error_body(&refusal),
            Err(refusal) => {
                state.record_rejected(RejectedCall {
                    action: action.clone(),
                    code: refusal.code.to_string(),
                    items: params.map(|p| p.items).unwrap_or_default(),
                    at_ms: received_ms as f64,
                });
                error_body(&refusal)
            }
        };
        (response, state.latency())
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    answer(response)
}

/// Decides one API call. Takes the state lock itself, briefly, and never across an await.
#[allow(clippy::too_many_arguments)]
fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    action: &str,
    params: Option<&PurgeParams>,
    now_ms: i64,
) -> Result<Value, Refusal> {
    let account = authenticate(shared, method, uri, headers, body, now_ms)?;
    if action.is_empty() {
        return Err(Refusal::new(
            "MissingParameter",
            "missing X-TC-Action header",
        ));
    }
    let version = headers.get("x-tc-version").and_then(|v| v.to_str().ok());
    if version != Some(API_VERSION) {
        return Err(Refusal::new(
            "NoSuchVersion",
            format!("X-TC-Version must be {API_VERSION}"),
        ));
    }
    let config = &shared.config;
    if action == "DescribePurgeQuota" {
        let state = shared.lock();
        let entry = |kind, batch: usize, total: u64| {
            json!({
                "Batch": batch,
                "Total": total,
                "Available": state.available(&account, kind, total, now_ms),
                "Area": "mainland",
            })
        };
        return Ok(json!({"Response": {
            "UrlPurge": [entry(Kind::Url, config.urls_per_call, config.urls_per_day)],
            "PathPurge": [entry(Kind::Dir, config.paths_per_call, config.paths_per_day)],
            "RequestId": request_id(),
        }}));
    }
    if action == "DescribePurgeTasks" {
        return super::tencent_v3_tasks::describe_purge_tasks(shared, &account, body, now_ms)
            .map(|v| with_request_id(v, request_id()));
    }
    if action == "PushUrlsCache" {
        return super::tencent_v3_tasks::push_urls_cache(shared, &account, body, now_ms)
            .map(|v| with_request_id(v, request_id()))
            .map(|mut v| {
                v["Response"]["TaskId"] = json!(task_id(now_ms));
                v
            });
    }
    let Some(params) = params else {
        return Err(Refusal::new(
            "InvalidAction",
            format!("action `{action}` is not supported by this emulator"),
        ));
    };

    let mut state = shared.lock();
    state.admit(config, &account, now_ms)?;
    if let Some(problem) = &params.problem {
        return Err(Refusal::new(
            "InvalidParameter.CdnParamError",
            problem.clone(),
        ));
    }
    let (cap, day_limit, cap_code) = match params.kind {
        Kind::Url => (
            config.urls_per_call,
            config.urls_per_day,
            "LimitExceeded.CdnPurgeUrlExceedBatchLimit",
        ),
        Kind::Dir | Kind::Regex => (
            config.paths_per_call,
            config.paths_per_day,
            "LimitExceeded.CdnPurgePathExceedBatchLimit",
        ),
    };
    if params.items.len() > cap {
        return Err(Refusal::new(
            cap_code,
            format!(
                "{} items in one call, at most {cap} allowed",
                params.items.len()
            ),
        ));
    }
    if let Some(refusal) = state.item_fault(&params.items) {
        return Err(refusal);
    }
    if let Some(bad) = state.invalid_item(&params.items) {
        return Err(Refusal::new(
            "InvalidParameter.CdnParamError",
            format!("invalid purge target: {bad}"),
        ));
    }
    state.take_quota(
        &account,
        params.kind,
        params.items.len() as u64,
        day_limit,
        now_ms,
    )?;
    state.record_accepted(RecordedCall {
        action: action.to_string(),
        secret_id: account,
        items: params.items.clone(),
        flush_type: params.flush_type.clone(),
        at_ms: now_ms as f64,
        wangsu: None,
    });
    let id = task_id(now_ms);
    state.tasks.add(
        &config.tasks,
        &id,
        "tencent-v3",
        params.items.clone(),
        now_ms,
    );
    Ok(json!({"Response": {"TaskId": id, "RequestId": request_id()}}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_real_shapes() {
        let t = task_id(1_533_045_796_123);
        let (secs, suffix) = t.split_once('-').unwrap();
        assert_eq!(secs, "1533045796");
        assert_eq!(suffix.len(), 8);
        assert!(
            suffix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        let r = request_id();
        let lens: Vec<usize> = r.split('-').map(str::len).collect();
        assert_eq!(lens, [8, 4, 4, 4, 12]);
    }

    #[test]
    fn purge_parameters_are_validated() {
        let p = purge_params(Kind::Url, br#"{"Urls":["https://a/x"]}"#);
        assert_eq!((p.items.len(), p.problem), (1, None));
        assert!(purge_params(Kind::Url, br#"{"Urls":[]}"#).problem.is_some());
        assert!(
            purge_params(Kind::Url, br#"{"Paths":["x"]}"#)
                .problem
                .is_some()
        );
        assert!(purge_params(Kind::Url, b"nope").problem.is_some());
        let p = purge_params(
            Kind::Dir,
            br#"{"Paths":["https://a/d/"],"FlushType":"delete"}"#,
        );
        assert_eq!((p.flush_type.as_deref(), p.problem), (Some("delete"), None));
        let p = purge_params(
            Kind::Dir,
            br#"{"Paths":["https://a/d/"],"FlushType":"wipe"}"#,
        );
        assert!(p.problem.is_some());
        assert_eq!(
            p.items,
            ["https://a/d/"],
            "items are kept for the rejection record"
        );
    }
}
