//! Tencent Cloud legacy API 2.0 client: RefreshCdnUrl / RefreshCdnDir (PROVIDERS.md §2).
//!
//! One [`Provider::purge`] is one request to `{endpoint}/v2/index.php`, signed with
//! [`qcloud_v2`] (HmacSHA1 by default, HmacSHA256 when configured), as a form body (POST, the
//! default) or a query string (GET). The answer `{code, message, codeDesc, data}` is classified
//! by [`classify`]. Decisions worth knowing:
//!
//! - Every attempt gets a new `Nonce` and `Timestamp`, hence a new signature: the API refuses a
//!   reused Nonce (4500), so a retry must never replay the previous request.
//! - `SignatureMethod` is sent only for HmacSHA256. HmacSHA1 is the API's default, and leaving
//!   it out makes a HmacSHA1 request byte-identical to Tencent's documented example
//!   (vector `doc_param_set_hmacsha1`).
//! - Parameters are sent in the documented order (`Action`, `SecretId`, `Timestamp`, `Nonce`,
//!   `SignatureMethod`, then `urls.N`/`dirs.N`); the signature does not depend on it.
//! - The API has no FlushType: a `delete` directory purge is sent as RefreshCdnDir, which marks
//!   the content expired (the closest the API offers).
//! - The body is parsed regardless of HTTP status: the API signals errors inside a 200 JSON body.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use tracing::Instrument;

use super::http::{self, CallLog, Endpoint};
use super::qcloud_v2::SignatureMethod;
use super::qcloud_v2::{self, SIGNATURE_METHOD, SignInput};
use super::{
    Account, Batch, Capabilities, Kind, Limits, Provider, ProviderError, PurgeFuture, Receipt,
};
use crate::quota::QuotaWindow;

/// Action for file purges.
pub const ACTION_URLS: &str = "RefreshCdnUrl";
/// Action for directory purges.
pub const ACTION_DIRS: &str = "RefreshCdnDir";
/// The POST content type, as the official SDK sends it.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";
/// Largest Nonce we send: a positive integer that fits any server's signed 32-bit parsing.
const NONCE_MAX: u64 = i32::MAX as u64;
/// Longest GET URL we send. Tencent documents no number ("use POST for many URLs, a GET may
/// exceed the length limit"); 8 KiB is the common server default for a request line (nginx
/// `large_client_header_buffers`), and reqwest cannot build URLs past 64 KiB at all. A longer
/// GET is answered locally with `BatchTooLarge`, so the dispatcher halves the lane's batch size
/// until the query fits instead of retrying a request that can never be sent.
pub const MAX_GET_URL_BYTES: usize = 8192;

/// Published limits (PROVIDERS.md §2): the defaults of unset keys. §2.2: the 2018 seed's
/// 10 000 calls/min (an older revision says 1200).
pub const DEFAULTS: Limits = Limits {
    endpoint: "https://cdn.api.qcloud.com",
    requests_per_second: 20,
    requests_per_minute: 10_000,
    rate_limits: &[],
    urls_per_call: 1000,
    dirs_per_call: 20,
    regex_per_call: 1,
    urls_per_day: 10_000,
    dirs_per_day: 100,
    // API 2.0 has no prefetch.
    prefetch_per_day: 0,
    quota_utc_offset_secs: 8 * 3600,
    quota_window: QuotaWindow::Day,
};

/// How parameters travel (`http_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "UPPERCASE")]
pub enum HttpMethod {
    /// Form body (`application/x-www-form-urlencoded`); long batches fit.
    #[default]
    Post,
    /// Everything in the query string; long batches may overflow URL limits.
    Get,
}

impl HttpMethod {
    /// The method name, also the first part of the v2 string to sign.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What only API 2.0 has; the defaults are the API's own (POST, HmacSHA1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub http_method: HttpMethod,
    pub signature_method: SignatureMethod,
}

/// A Tencent Cloud API 2.0 CDN account. Cheap to share; holds a pooled HTTP client.
pub struct TencentV2 {
    /// The account at `{endpoint}/v2/index.php`.
    endpoint: Endpoint,
    http_method: HttpMethod,
    signature_method: SignatureMethod,
}

impl fmt::Debug for TencentV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentV2")
            .field("endpoint", &self.endpoint)
            .field("http_method", &self.http_method)
            .field("signature_method", &self.signature_method)
            .finish()
    }
}

/// One request, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Prepared {
    action: &'static str,
    method: HttpMethod,
    /// The full URL; for GET it carries the signed query.
    url: url::Url,
    /// The form body for POST; `None` for GET.
    body: Option<String>,
    /// Kept for tests and for debugging a `4100`.
    string_to_sign: String,
}

/// `{endpoint}` joined with `v2/index.php`, keeping any base path of the endpoint.
fn api_url(endpoint: &url::Url) -> url::Url {
    let mut url = endpoint.clone();
    let base = endpoint.path().trim_end_matches('/');
    url.set_path(&format!("{base}{}", qcloud_v2::PATH));
    url.set_query(None);
    url.set_fragment(None);
    url
}

impl TencentV2 {
    /// Builds the client of `account`, with its connect and whole-request timeouts, so a hung
    /// API cannot hold a dispatch slot forever.
    pub fn new(account: &Account, settings: &Settings) -> Result<Self, reqwest::Error> {
        Ok(TencentV2 {
            endpoint: Endpoint::new(account, api_url(&account.endpoint))?,
            http_method: settings.http_method,
            signature_method: settings.signature_method,
        })
    }

    /// Builds and signs `batch` for `timestamp` (Unix seconds) and `nonce`. Pure: the caller
    /// draws the nonce and reads the clock.
    fn prepare(&self, batch: &Batch, timestamp: i64, nonce: u64) -> Prepared {
        let endpoint = &self.endpoint;
        let action = action_for(batch.kind);
        let prefix = match batch.kind {
            Kind::Url => "urls",
            Kind::Dir | Kind::Regex => "dirs",
        };
        let names: Vec<String> = (0..batch.items.len())
            .map(|i| format!("{prefix}.{i}"))
            .collect();
        let (timestamp, nonce) = (timestamp.to_string(), nonce.to_string());
        let mut params: Vec<(&str, &str)> = vec![
            ("Action", action),
            ("SecretId", endpoint.secret_id.expose()),
            ("Timestamp", &timestamp),
            ("Nonce", &nonce),
        ];
        if self.signature_method == SignatureMethod::HmacSha256 {
            params.push((SIGNATURE_METHOD, self.signature_method.as_str()));
        }
        params.extend(
            names
                .iter()
                .zip(&batch.items)
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        let signed = qcloud_v2::sign(&SignInput {
            method: self.http_method.as_str(),
            host: &endpoint.host,
            path: endpoint.url.path(),
            params: &params,
            signature_method: self.signature_method,
            secret_key: endpoint.secret_key.expose(),
        });
        let mut url = endpoint.url.clone();
        let body = match self.http_method {
            HttpMethod::Post => Some(signed.encoded),
            HttpMethod::Get => {
                // Already form-encoded: `set_query` leaves `%XX`, `+`, `&` and `=` alone.
                url.set_query(Some(&signed.encoded));
                None
            }
        };
        Prepared {
            action,
            method: self.http_method,
            url,
            body,
            string_to_sign: signed.string_to_sign,
        }
    }

    async fn call(&self, batch: &Batch) -> Result<Receipt, ProviderError> {
        if batch.kind == Kind::Regex {
            return Err(super::unsupported_regex(batch));
        }
        let nonce = rand::rng().random_range(1..=NONCE_MAX);
        let prepared = self.prepare(batch, chrono::Utc::now().timestamp(), nonce);
        let client = &self.endpoint.client;
        let request = match prepared.body {
            Some(body) => client
                .post(prepared.url)
                .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
                .body(body),
            None if prepared.url.as_str().len() > MAX_GET_URL_BYTES => {
                return Err(ProviderError::BatchTooLarge {
                    code: "GetUrlTooLong".into(),
                });
            }
            None => client.get(prepared.url),
        };
        let log = CallLog {
            action: prepared.action,
            items: batch.items.len(),
            request_id_header: None,
        };
        // Errors drop the URL (in `send`): for GET it carries every item and the SecretId.
        http::exchange(request, log, |answer| {
            interpret(answer.status, &answer.body, answer.retry_after)
        })
        .await
    }
}

/// What this API takes (see [`Capabilities`]).
pub const CAPABILITIES: Capabilities = Capabilities {
    url_flush_type: false,
    dir_flush_type: false,
    wildcards: false,
    regex: false,
    headers: false,
    url_rules: crate::provider::UrlRules::Plain,
};

/// The action name for a kind; also the `action` metric label.
fn action_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Url => ACTION_URLS,
        Kind::Dir | Kind::Regex => ACTION_DIRS,
    }
}

impl Provider for TencentV2 {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn action(&self, kind: Kind) -> &'static str {
        action_for(kind)
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> PurgeFuture<'a> {
        let span = tracing::debug_span!(
            "tencent_v2.purge",
            provider = %self.endpoint.name,
            kind = %batch.kind,
            method = self.http_method.as_str(),
        );
        Box::pin(self.call(batch).instrument(span))
    }

    fn task_status<'a>(
        &'a self,
        query: &'a crate::provider::TaskQuery,
    ) -> crate::provider::StatusFuture<'a> {
        Box::pin(self.status(query))
    }
}

/// The API's answer envelope, as far as it could be read.
struct Answer {
    code: i64,
    message: String,
    code_desc: String,
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reads `{code, message, codeDesc, data}`; `code` may be a number or a numeric string. `None`
/// when the body is not the API's envelope.
fn parse_answer(body: &[u8]) -> Option<Answer> {
    let serde_json::Value::Object(mut map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let code = match map.get("code")? {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let text = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let message = text(map.get("message"));
    let code_desc = text(map.get("codeDesc"));
    // PHP encodes an empty `data` as `[]`; only an object carries fields.
    let data = match map.remove("data") {
        Some(serde_json::Value::Object(data)) => Some(data),
        _ => None,
    };
    Some(Answer {
        code,
        message,
        code_desc,
        data,
    })
}

/// An id field that may be a string or a number (seed 001 types `task_id` as Int; every example
/// shows a 19-digit string, which a float would round).
fn id_field(data: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    match data.get(key)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Turns an HTTP answer into a receipt or a classified error. A non-zero `code` wins whatever
/// the status; a body without the envelope is a gateway or network problem.
fn interpret(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Receipt, ProviderError> {
    let Some(answer) = parse_answer(body) else {
        return Err(non_api_answer(status, retry_after));
    };
    if answer.code != 0 {
        return Err(
            match classify(answer.code, &answer.code_desc, &answer.message) {
                ProviderError::RateLimited { code, .. } => {
                    ProviderError::RateLimited { code, retry_after }
                }
                other => other,
            },
        );
    }
    if status != 200 {
        return Err(non_api_answer(status, retry_after));
    }
    // RefreshCdnUrl answers `data.task_id`; RefreshCdnDir `data.log_id` (seed 000) or nothing at
    // all (Tencent's tool guide). `code` 0 is the acceptance; the id is for humans.
    let task_id = answer
        .data
        .as_ref()
        .and_then(|d| id_field(d, "task_id").or_else(|| id_field(d, "log_id")))
        .unwrap_or_default();
    Ok(Receipt {
        task_id,
        request_id: None,
    })
}

/// A non-API answer ([`http::non_api_answer`]), but 413/414: the request (a long GET query,
/// typically) was too big, so the batch is split.
fn non_api_answer(status: u16, retry_after: Option<Duration>) -> ProviderError {
    match status {
        413 | 414 => ProviderError::BatchTooLarge {
            code: format!("HttpStatus.{status}"),
        },
        _ => http::non_api_answer(status, retry_after, "the API's {code, message} envelope"),
    }
}

/// The module (business) code of an error: `codeDesc` when it is a number (`"9110"`), else the
/// `(NNNN)` prefix of `message` (`"(9110)没有这个域名的信息"`).
pub fn business_code(code_desc: &str, message: &str) -> Option<i64> {
    if let Ok(n) = code_desc.trim().parse() {
        return Some(n);
    }
    let rest = message.trim_start().strip_prefix('(')?;
    let (digits, _) = rest.split_once(')')?;
    digits.trim().parse().ok()
}

/// The error code the worker reports (metrics, logs, dead letters): the common code, plus the
/// business code after a dot when there is one (`4000.9110`). The emulator records the same.
pub fn error_code(code: i64, business: Option<i64>) -> String {
    match business {
        Some(b) => format!("{code}.{b}"),
        None => code.to_string(),
    }
}

/// The one place API 2.0 error codes become [`ProviderError`] classes (PROVIDERS.md §2.4 and
/// Tencent's CDN API 2.0 error-code page, common and module codes).
///
/// The business code decides first, whatever the common code around it:
///
/// | business code | meaning | class |
/// |---|---|---|
/// | 22044, 22046 | URL / directory refreshes over the daily allowance | `QuotaExhausted` |
/// | 22043, 22045 | too many URLs / directories in one call | `BatchTooLarge` |
/// | 9163, 22063 | "operation too frequent" | `RateLimited` |
/// | 9111, 9169, 9170, 23103, 25002, 25010 | CDN not enabled, account banned, trial account, no permission | `Auth` |
/// | 9000, 9151, 22800, -9011, -9014, -9015, -9021, 9135 | system errors, "domain busy" | `Transient` |
///
/// Then the common code: 4000 (parameters or a refused item such as 9110 "no such host") →
/// `InvalidItems` without naming the item, so the dispatcher isolates it by splitting;
/// 4100–4110, 4200 (request expired: our clock), 4300 (access denied) and 4600 (protocol, a
/// configuration error) → `Auth`, because retrying cannot help and every call would fail alike;
/// **4400 → `RateLimited`**: Tencent documents it as "the number of requests exceeded the
/// quota" — the call-frequency quota, not the daily purge allowance, which comes as 22044/22046
/// (the emulator answers the same way); 4500 (Nonce reused or Timestamp off) → `Transient`,
/// retried with a fresh Nonce/Timestamp; 5000–6999 and unknown codes → `Transient`.
pub fn classify(code: i64, code_desc: &str, message: &str) -> ProviderError {
    let business = business_code(code_desc, message);
    let code_s = error_code(code, business);
    let message_s = if message.is_empty() {
        code_desc.to_string()
    } else {
        message.to_string()
    };
    let transient = |code: String, message: String| ProviderError::Transient {
        code,
        message,
        maybe_applied: false,
    };
    match business {
        Some(22044 | 22046) => return ProviderError::QuotaExhausted { code: code_s },
        Some(22043 | 22045) => return ProviderError::BatchTooLarge { code: code_s },
        Some(9163 | 22063) => {
            return ProviderError::RateLimited {
                code: code_s,
                retry_after: None,
            };
        }
        Some(9111 | 9169 | 9170 | 23103 | 25002 | 25010) => {
            return ProviderError::Auth {
                code: code_s,
                message: message_s,
            };
        }
        Some(9000 | 9151 | 22800 | -9011 | -9014 | -9015 | -9021 | 9135) => {
            return transient(code_s, message_s);
        }
        _ => {}
    }
    match code {
        4000 => ProviderError::InvalidItems {
            code: code_s,
            message: message_s,
            items: None,
        },
        4100..=4110 | 4200 | 4300 | 4600 => ProviderError::Auth {
            code: code_s,
            message: message_s,
        },
        4400 => ProviderError::RateLimited {
            code: code_s,
            retry_after: None,
        },
        _ => transient(code_s, message_s),
    }
}

pub mod status;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;
