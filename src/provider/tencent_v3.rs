//! Tencent Cloud API 3.0 client: PurgeUrlsCache / PurgePathCache with TC3-HMAC-SHA256.
//!
//! One [`Provider::purge`] is one signed POST (PROVIDERS.md §1). The answer is classified by
//! [`classify`] into the taxonomy of [`ProviderError`]; what to do about it is `dispatch`'s job.
//! Decisions worth knowing:
//!
//! - The body is serialized once and exactly those bytes are signed and sent (re-serialising
//!   after signing is a classic `SignatureFailure`).
//! - The body is parsed regardless of HTTP status and Content-Type: Tencent signals errors inside
//!   a 200 JSON body, and gateways may answer anything.
//! - `maybe_applied` is true whenever the request may have reached the API (timeouts after
//!   sending, a 200 we cannot read), so the dispatcher does not refund quota that may be spent.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tracing::Instrument;

use super::http::{self, CallLog, Endpoint, SignedPost};
use super::tc3;
use super::{
    Account, Batch, Capabilities, Kind, Limits, Provider, ProviderError, PurgeFuture, QuotaFuture,
    Receipt,
};
use crate::quota::QuotaWindow;

/// The CDN API version every request names (`X-TC-Version`).
pub const API_VERSION: &str = "2018-06-06";
/// The service name in the credential scope; stays `cdn` on the international endpoint too.
pub const SERVICE: &str = "cdn";
/// The POST content type, exactly as the SDK sends it: a `; charset=utf-8` suffix would have to be
/// signed too, and is a common cause of `SignatureFailure` when a client adds it on its own.
pub const CONTENT_TYPE: &str = "application/json";
/// Error messages in English; the worker logs `Error.Code`, the message is for humans.
pub const LANGUAGE: &str = "en-US";
/// Action for file purges.
pub const ACTION_URLS: &str = "PurgeUrlsCache";
/// Action for directory purges.
pub const ACTION_PATHS: &str = "PurgePathCache";

/// Published limits (PROVIDERS.md §1): the defaults of unset keys.
pub const DEFAULTS: Limits = Limits {
    endpoint: "https://cdn.tencentcloudapi.com",
    requests_per_second: 20,
    requests_per_minute: 10_000,
    rate_limits: &[],
    urls_per_call: 1000,
    dirs_per_call: 20,
    regex_per_call: 1,
    urls_per_day: 10_000,
    dirs_per_day: 100,
    // PushUrlsCache: 1,000 URLs per day per region (field-notes-2).
    prefetch_per_day: 1000,
    quota_utc_offset_secs: 8 * 3600,
    quota_window: QuotaWindow::Day,
};

/// What only API 3.0 takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Which `Area` of `DescribePurgeQuota` this account spends (`quota_area`).
    pub quota_area: String,
}

/// The `quota_area` unless configured.
pub const DEFAULT_QUOTA_AREA: &str = "mainland";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            quota_area: DEFAULT_QUOTA_AREA.to_string(),
        }
    }
}

/// A Tencent Cloud API 3.0 CDN account. Cheap to share; holds a pooled HTTP client.
pub struct TencentV3 {
    endpoint: Endpoint,
    quota_area: String,
}

impl fmt::Debug for TencentV3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentV3")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[derive(Serialize)]
struct PurgeUrlsBody<'a> {
    #[serde(rename = "Urls")]
    urls: &'a [String],
}

#[derive(Serialize)]
struct PurgePathsBody<'a> {
    #[serde(rename = "Paths")]
    paths: &'a [String],
    #[serde(rename = "FlushType")]
    flush_type: &'a str,
}

impl TencentV3 {
    /// Builds the client of `account`, with its connect and whole-request timeouts, so a hung
    /// API cannot hold a dispatch slot forever.
    pub fn new(account: &Account, settings: &Settings) -> Result<Self, reqwest::Error> {
        Ok(TencentV3 {
            endpoint: Endpoint::new(account, account.endpoint.clone())?,
            quota_area: settings.quota_area.clone(),
        })
    }

    /// Serializes and signs `batch` for `timestamp` (Unix seconds).
    fn prepare(&self, batch: &Batch, timestamp: i64) -> Result<SignedPost, serde_json::Error> {
        let action = action_for(batch.kind);
        let body = match batch.kind {
            Kind::Url => serde_json::to_vec(&PurgeUrlsBody { urls: &batch.items })?,
            Kind::Dir | Kind::Regex => serde_json::to_vec(&PurgePathsBody {
                paths: &batch.items,
                flush_type: batch.flush_type.as_str(),
            })?,
        };
        Ok(self.signed(action, body, timestamp))
    }

    /// Signs `body` for `action` at `timestamp`: the headers of one API 3.0 POST.
    pub(super) fn signed(&self, action: &'static str, body: Vec<u8>, timestamp: i64) -> SignedPost {
        let endpoint = &self.endpoint;
        let signed = tc3::sign(&tc3::SignInput {
            method: "POST",
            host: &endpoint.host,
            path: endpoint.url.path(),
            query: endpoint.url.query().unwrap_or(""),
            content_type: CONTENT_TYPE,
            extra_headers: &[],
            payload: &body,
            timestamp,
            service: SERVICE,
            secret_id: endpoint.secret_id.expose(),
            secret_key: endpoint.secret_key.expose(),
        });
        let headers = vec![
            ("Content-Type", CONTENT_TYPE.to_string()),
            ("X-TC-Action", action.to_string()),
            ("X-TC-Version", API_VERSION.to_string()),
            ("X-TC-Timestamp", timestamp.to_string()),
            ("X-TC-Language", LANGUAGE.to_string()),
            ("Authorization", signed.authorization),
        ];
        SignedPost {
            action,
            body,
            headers,
        }
    }

    async fn call(&self, batch: &Batch) -> Result<Receipt, ProviderError> {
        if batch.kind == Kind::Regex {
            return Err(super::unsupported_regex(batch));
        }
        let signed = self
            .prepare(batch, chrono::Utc::now().timestamp())
            .map_err(http::build_error)?;
        let log = CallLog {
            action: signed.action,
            items: batch.items.len(),
            request_id_header: None,
        };
        http::exchange(self.endpoint.post(signed), log, |answer| {
            interpret(answer.status, &answer.body, answer.retry_after)
        })
        .await
    }
}

/// What this API takes (see [`Capabilities`]).
pub const CAPABILITIES: Capabilities = Capabilities {
    url_flush_type: false,
    dir_flush_type: true,
    wildcards: false,
    regex: false,
    headers: false,
    url_rules: crate::provider::UrlRules::Plain,
};

/// The action name for a kind; also the `action` metric label.
fn action_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Url => ACTION_URLS,
        Kind::Dir | Kind::Regex => ACTION_PATHS,
    }
}

impl Provider for TencentV3 {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn action(&self, kind: Kind) -> &'static str {
        action_for(kind)
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> PurgeFuture<'a> {
        let span = tracing::debug_span!(
            "tencent_v3.purge",
            provider = %self.endpoint.name,
            kind = %batch.kind,
        );
        Box::pin(self.call(batch).instrument(span))
    }

    fn task_status<'a>(
        &'a self,
        query: &'a crate::provider::TaskQuery,
    ) -> crate::provider::StatusFuture<'a> {
        Box::pin(self.status(query))
    }

    fn prefetch<'a>(&'a self, urls: &'a [String]) -> crate::provider::PrefetchFuture<'a> {
        Box::pin(self.push(urls))
    }

    fn prefetch_per_call(&self) -> usize {
        status::PREFETCH_PER_CALL
    }

    fn quota_action(&self) -> Option<&'static str> {
        Some(quota::ACTION_QUOTA)
    }

    fn quota(&self) -> Option<QuotaFuture<'_>> {
        let span = tracing::debug_span!("tencent_v3.quota", provider = %self.endpoint.name);
        Some(Box::pin(self.read_quota().instrument(span)))
    }
}

mod quota;

/// Turns an HTTP answer into a receipt or a classified error ([`response`]).
fn interpret(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Receipt, ProviderError> {
    let response = response(status, body, retry_after)?;
    let request_id = response
        .get("RequestId")
        .and_then(|r| r.as_str())
        .map(str::to_string);
    match response.get("TaskId").and_then(|t| t.as_str()) {
        Some(task_id) => Ok(Receipt {
            task_id: task_id.to_string(),
            request_id,
        }),
        None => Err(http::malformed("success response without Response.TaskId")),
    }
}

/// What a non-API answer lacks (an HTTP 200 without it may still have purged).
const ENVELOPE: &str = "a Response envelope";

/// The `Response` object of a successful answer of any action, or the classified error:
/// `Response.Error` wins whatever the status; a body without the API envelope, or a non-200
/// without an error, is a gateway or network problem.
pub(super) fn response(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<serde_json::Value, ProviderError> {
    let envelope = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("Response").map(serde_json::Value::take))
        .filter(serde_json::Value::is_object);
    let Some(response) = envelope else {
        return Err(http::non_api_answer(status, retry_after, ENVELOPE));
    };
    if let Some(error) = response.get("Error") {
        let code = error
            .get("Code")
            .and_then(|c| c.as_str())
            .unwrap_or("UnknownError");
        let message = error.get("Message").and_then(|m| m.as_str()).unwrap_or("");
        return Err(classify(code, message));
    }
    if status != 200 {
        return Err(http::non_api_answer(status, retry_after, ENVELOPE));
    }
    Ok(response)
}

/// Whether `code` is `family` itself or one of its dotted sub-codes (`InternalError.ProxyServer`).
fn in_family(code: &str, family: &str) -> bool {
    code.strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The one place Tencent error codes become [`ProviderError`] classes (PROVIDERS.md §1.5).
///
/// Families are matched by prefix where Tencent adds sub-codes over time (`AuthFailure.*`,
/// `UnauthorizedOperation.*`, `InternalError.*`, `RequestLimitExceeded.*`, `InvalidParameter.*`);
/// `LimitExceeded.*` is matched exactly because its members mean different things (day limit vs
/// batch limit). Unknown codes are transient: retrying with backoff is safe, and a persistent
/// unknown code surfaces through the retry cap.
pub fn classify(code: &str, message: &str) -> ProviderError {
    let code_s = code.to_string();
    let message_s = message.to_string();
    if in_family(code, "RequestLimitExceeded") || code == "UnauthorizedOperation.OperationTooOften"
    {
        return ProviderError::RateLimited {
            code: code_s,
            retry_after: None,
        };
    }
    match code {
        "LimitExceeded.CdnPurgeUrlExceedDayLimit"
        | "LimitExceeded.CdnPurgePathExceedDayLimit"
        | "LimitExceeded.CdnPurgeExceedDayLimit" => {
            return ProviderError::QuotaExhausted { code: code_s };
        }
        "LimitExceeded.CdnPurgeUrlExceedBatchLimit"
        | "LimitExceeded.CdnPurgePathExceedBatchLimit"
        | "LimitExceeded.CdnPurgeExceedBatchLimit"
        | "RequestSizeLimitExceeded" => return ProviderError::BatchTooLarge { code: code_s },
        _ => {}
    }
    if in_family(code, "InternalError")
        || in_family(code, "ServiceUnavailable")
        || in_family(code, "ResourceInUse")
    {
        return ProviderError::Transient {
            code: code_s,
            message: message_s,
            maybe_applied: false,
        };
    }
    // Refusals about one domain (not ours, not online, not authorised for this key): the other
    // hosts of the account still work, so they must not stop the provider.
    if matches!(
        code,
        "UnauthorizedOperation.CdnHostUnauthorized"
            | "InvalidParameter.CdnHostInvalidStatus"
            | "ResourceNotFound.CdnHostNotExists"
            | "ResourceUnavailable.CdnHostIsNotOnline"
    ) {
        return ProviderError::HostRefused {
            code: code_s,
            message: message_s,
        };
    }
    if in_family(code, "AuthFailure")
        || in_family(code, "UnauthorizedOperation")
        || matches!(
            code,
            "ResourceNotFound.CdnUserNotExists" | "IpInBlacklist" | "IpNotInWhitelist"
        )
    {
        return ProviderError::Auth {
            code: code_s,
            message: message_s,
        };
    }
    if in_family(code, "InvalidParameter")
        || in_family(code, "InvalidParameterValue")
        || in_family(code, "UnsupportedOperation")
        || matches!(
            code,
            "MissingParameter"
                | "UnknownParameter"
                | "InvalidAction"
                | "NoSuchVersion"
                | "UnsupportedProtocol"
                | "ActionOffline"
        )
    {
        // Tencent refuses the whole batch without naming the culprit.
        return ProviderError::InvalidItems {
            code: code_s,
            message: message_s,
            items: None,
        };
    }
    ProviderError::Transient {
        code: code_s,
        message: message_s,
        maybe_applied: false,
    }
}

pub mod status;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;
