//! The provider boundary: what the dispatcher needs from a CDN purge API.
//!
//! A provider only *classifies*: it turns one [`Batch`] into one API call and maps the answer onto
//! [`ProviderError`], the taxonomy of providers/PROVIDERS.md. What an error means for the items
//! (retry, back off, park, split, dead-letter, stop) is decided in `dispatch`, in one place.

pub mod mac;
pub mod qcloud_v2;
pub mod tc3;
pub mod tencent_v2;
pub mod tencent_v3;
pub mod wangsu;
pub mod wangsu_rules;
pub mod wangsu_sign;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Whether an item purges one URL or everything under a directory prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A single cache key (`urls` in an event).
    Url,
    /// A directory prefix (`dirs` in an event), with wildcards where the provider has them.
    Dir,
    /// A cache-key regular expression (`regex` in an event; Wangsu only). Spends the directory
    /// quota, as Wangsu counts it.
    Regex,
}

impl Kind {
    /// The metric label and Redis key segment for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Url => "url",
            Kind::Dir => "dir",
            Kind::Regex => "regex",
        }
    }

    /// Every kind, in metric-label order.
    pub const ALL: [Kind; 3] = [Kind::Url, Kind::Dir, Kind::Regex];

    /// The daily allowance this kind spends: regex purges count as directory purges.
    pub fn quota_kind(self) -> Kind {
        match self {
            Kind::Url => Kind::Url,
            Kind::Dir | Kind::Regex => Kind::Dir,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a directory purge treats cached objects (Tencent `FlushType`, Wangsu `action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum FlushType {
    /// Expire only what changed at the origin (Tencent `flush`, Wangsu `invalidate`).
    #[default]
    Flush,
    /// Drop everything under the path (Tencent `delete`, Wangsu `delete`).
    Delete,
}

impl FlushType {
    /// The wire and event spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushType::Flush => "flush",
            FlushType::Delete => "delete",
        }
    }

    /// Parses the event spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "flush" => Some(FlushType::Flush),
            "delete" => Some(FlushType::Delete),
            _ => None,
        }
    }
}

/// A request header that is part of the cache key (Wangsu `fileHeaders`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// One provider call's worth of interchangeable items from one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Files, directories or regex patterns: a call never mixes them.
    pub kind: Kind,
    /// Applies to directory purges (and to file purges where the provider supports it).
    pub flush_type: FlushType,
    /// Normalized cache keys (absolute URLs, or patterns for [`Kind::Regex`]), unique within the
    /// batch.
    pub items: Vec<String>,
    /// Request headers the file URLs were cached under (Wangsu `fileHeaders`); empty elsewhere.
    /// Sorted by name; items with different headers are never in one batch.
    pub headers: Vec<Header>,
}

/// What a provider returns for an accepted call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The provider's task id for the call (shared by every item of the batch).
    pub task_id: String,
    /// The provider's request id, for support tickets.
    pub request_id: Option<String>,
}

/// The failure taxonomy of providers/PROVIDERS.md. Every variant carries the provider's own error
/// code (bounded by the provider's documented list) for logs and dead-letter records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider throttled us; wait `retry_after` if it said how long, else back off.
    #[error("rate limited by the provider ({code})")]
    RateLimited {
        code: String,
        retry_after: Option<Duration>,
    },
    /// The provider's daily allowance for this kind is spent: park the lane until the reset.
    #[error("daily purge quota exhausted at the provider ({code})")]
    QuotaExhausted { code: String },
    /// Too many items in one call: split and resubmit.
    #[error("batch too large for the provider ({code})")]
    BatchTooLarge { code: String },
    /// A transient failure (5xx, gateway, transport). `maybe_applied` is true when the request may
    /// have reached the provider (a timeout after sending), so the quota must not be refunded.
    #[error("transient provider failure ({code}): {message}")]
    Transient {
        code: String,
        message: String,
        maybe_applied: bool,
    },
    /// The provider rejected items permanently. `items` names the offending ones when the
    /// provider says which; `None` means the whole batch was refused and the culprit must be
    /// isolated by splitting.
    #[error("provider rejected the request ({code}): {message}")]
    InvalidItems {
        code: String,
        message: String,
        items: Option<Vec<String>>,
    },
    /// The provider refused the batch because of one of its hosts (not a domain of this account,
    /// not online, or not authorised for these credentials): the host's items are dead-lettered,
    /// the other hosts keep flowing. A batch with several hosts is split by host first.
    #[error("provider refused a host of the batch ({code}): {message}")]
    HostRefused { code: String, message: String },
    /// Credentials, permissions, account state or clock skew: stop calling this provider.
    #[error("provider refused our credentials ({code}): {message}")]
    Auth { code: String, message: String },
}

impl ProviderError {
    /// The `result` label of `purge_api_requests_total` for this failure.
    pub fn result_label(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted { .. } => "quota_exceeded",
            ProviderError::Transient { .. } => "retryable_error",
            ProviderError::BatchTooLarge { .. }
            | ProviderError::InvalidItems { .. }
            | ProviderError::HostRefused { .. }
            | ProviderError::Auth { .. } => "permanent_error",
        }
    }

    /// The provider's error code.
    pub fn code(&self) -> &str {
        match self {
            ProviderError::RateLimited { code, .. }
            | ProviderError::QuotaExhausted { code }
            | ProviderError::BatchTooLarge { code }
            | ProviderError::Transient { code, .. }
            | ProviderError::InvalidItems { code, .. }
            | ProviderError::HostRefused { code, .. }
            | ProviderError::Auth { code, .. } => code,
        }
    }
}

/// What a provider declares about itself; the dispatcher forms batches within these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether file purges honour the flush type (Wangsu `action`); if not, URL lanes ignore it.
    pub url_flush_type: bool,
    /// Whether directory URLs may carry wildcards (`*`, `**`).
    pub wildcards: bool,
    /// Whether cache-key regex purges are supported.
    pub regex: bool,
    /// Whether file purges may carry request headers.
    pub headers: bool,
}

/// The boxed future a provider call returns (object-safe trait).
pub type PurgeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Receipt, ProviderError>> + Send + 'a>>;

/// One CDN purge API. Implementations are cheap to share (`Arc<dyn Provider>`) and make exactly
/// one HTTP request per `purge` call, signed afresh, with connect and request timeouts.
pub trait Provider: Send + Sync + fmt::Debug {
    /// What this API supports.
    fn capabilities(&self) -> Capabilities;
    /// Whether directory purges honour the flush type. When not (legacy v2: RefreshCdnDir only
    /// expires), flush and delete directory items share one lane and one call.
    fn dir_flush_type(&self) -> bool {
        true
    }
    /// The API action name used for a batch of this kind (the `action` metric label).
    fn action(&self, kind: Kind) -> &'static str;
    /// Submits one batch. Never retries by itself: the dispatcher owns retries.
    fn purge<'a>(&'a self, batch: &'a Batch) -> PurgeFuture<'a>;
}

/// The `Host` header reqwest (hyper) sends for `url`: the host, plus the port only when it is not
/// the scheme's default. It is signed, so it must be computed exactly as the client sends it.
pub(crate) fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The pooled HTTP client of one provider: connect and whole-request timeouts from the config,
/// so a hung API cannot hold a dispatch slot forever. Redirects are never followed: a signed
/// call (credentials in its headers or query) goes to the configured endpoint only, and a 3xx
/// is classified by [`send`] instead.
pub(crate) fn http_client(
    cfg: &crate::config::ProviderConfig,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("purge-worker/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Largest provider answer read (1 MiB). Purge answers are a few hundred bytes; a gateway or a
/// misbehaving API sending more must not be able to make the worker allocate without bound.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Longest wait a `Retry-After` is read as (one day); larger values saturate here, and the
/// dispatcher holds any wait to `retry_max_ms` anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A provider's HTTP answer, read within [`MAX_ANSWER_BYTES`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// The standard `Retry-After` header in seconds, when present and sane.
    pub retry_after: Option<Duration>,
}

/// The one HTTP path of every provider: sends `request`, refuses a redirect, and reads the
/// body as a stream up to [`MAX_ANSWER_BYTES`]. Transport errors drop the URL (a tencent-v2 GET
/// carries every item and the SecretId in it).
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let mut response = request
        .send()
        .await
        .map_err(|e| transport_error(e.without_url()))?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    if (300..400).contains(&status) {
        // Transient, not permanent: neither the items nor the credentials are at fault (a
        // permanent class would dead-letter good items or stop the provider), and a gateway in
        // front of the API may redirect only for a while. The redirector answered instead of the
        // API, so nothing was applied. The code names the status for the operator to fix the
        // endpoint if it lasts.
        return Err(ProviderError::Transient {
            code: format!("HttpRedirect.{status}"),
            message: format!(
                "HTTP {status} redirect not followed: signed calls go to the configured endpoint only"
            ),
            maybe_applied: false,
        });
    }
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // The request reached the API: from here on a failure leaves the outcome unknown.
    let too_large = || ProviderError::Transient {
        code: "ResponseTooLarge".into(),
        message: format!("HTTP {status} answer over {MAX_ANSWER_BYTES} bytes; not read"),
        maybe_applied: true,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            let mut err = transport_error(e.without_url());
            if let ProviderError::Transient { maybe_applied, .. } = &mut err {
                *maybe_applied = true;
            }
            err
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
        retry_after,
    })
}

/// A `Retry-After`-style value in seconds: digits with an optional fraction (rounded up).
/// Anything else (an HTTP-date, a sign, an exponent, text) is `None`, so the caller backs off on
/// its own; a huge number saturates at [`MAX_RETRY_AFTER`] instead of overflowing.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let numeric = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_digit() || c == '.')
        && v.matches('.').count() <= 1
        && v != ".";
    if !numeric {
        return None;
    }
    let secs: f64 = v.parse().ok()?;
    let capped = secs.ceil().min(MAX_RETRY_AFTER.as_secs_f64());
    (capped >= 0.0).then(|| Duration::from_secs_f64(capped))
}

/// Text of an error and its sources, joined by ": ", for the `message` of a transport failure
/// and the CLI's last line. A source whose text its parent already shows is left out: many
/// errors repeat their cause in their own text (`IO error: Connection refused (os error 111)`
/// over `Connection refused (os error 111)`), and saying it twice reads as two problems.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parent = e.to_string();
    let mut message = parent.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parent.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        parent = text;
        source = s.source();
    }
    message
}

/// Maps a reqwest failure. Connect failures never reached the API; anything after sending
/// (timeouts included) may have been applied.
pub(crate) fn transport_error(e: reqwest::Error) -> ProviderError {
    let message = error_chain(&e);
    let (code, maybe_applied) = if e.is_connect() {
        ("ConnectError", false)
    } else if e.is_builder() {
        ("RequestBuildError", false)
    } else if e.is_timeout() {
        ("Timeout", true)
    } else {
        ("TransportError", true)
    };
    ProviderError::Transient {
        code: code.into(),
        message,
        maybe_applied,
    }
}

/// The refusal for a regex batch sent to a provider without regex purges. Routing validation
/// keeps such items out; this is the last line of defence, and it dead-letters rather than loops.
pub(crate) fn unsupported_regex(batch: &Batch) -> ProviderError {
    ProviderError::InvalidItems {
        code: "RegexUnsupported".into(),
        message: "this provider has no regex purges".into(),
        items: Some(batch.items.clone()),
    }
}

#[cfg(test)]
#[test]
fn retry_after_is_parsed_safely() {
    let secs = |s: &str| parse_retry_after(s).map(|d| d.as_secs());
    assert_eq!(secs("7"), Some(7));
    assert_eq!(secs(" 2.5 "), Some(3));
    assert_eq!(
        secs("10000000000000000000"),
        Some(MAX_RETRY_AFTER.as_secs())
    );
    assert_eq!(secs(&"9".repeat(400)), Some(MAX_RETRY_AFTER.as_secs()));
    for bad in [
        "",
        "-1",
        "abc",
        "1e9",
        ".",
        "1.2.3",
        "inf",
        "NaN",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        assert_eq!(secs(bad), None, "{bad:?}");
    }
}

/// A short name for an error's class and the detail that changes what the dispatcher does, for
/// classification tables in the providers' tests.
#[cfg(test)]
pub(crate) fn test_class(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::RateLimited {
            retry_after: None, ..
        } => "rate",
        ProviderError::RateLimited { .. } => "rate+after",
        ProviderError::QuotaExhausted { .. } => "quota",
        ProviderError::BatchTooLarge { .. } => "batch",
        ProviderError::Transient {
            maybe_applied: false,
            ..
        } => "transient",
        ProviderError::Transient { .. } => "transient+applied",
        ProviderError::InvalidItems { items: None, .. } => "invalid",
        ProviderError::InvalidItems { .. } => "invalid+items",
        ProviderError::HostRefused { .. } => "host",
        ProviderError::Auth { .. } => "auth",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_says_a_repeated_cause_once() {
        let refused = "Connection refused (os error 111)";
        let e = Layer(
            "cannot connect: IO error: Connection refused (os error 111)",
            Some(Box::new(Layer(
                "IO error: Connection refused (os error 111)",
                Some(Box::new(Layer(refused, None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "cannot connect: IO error: Connection refused (os error 111)"
        );
        let e = Layer("cannot read quota", Some(Box::new(Layer(refused, None))));
        assert_eq!(error_chain(&e), format!("cannot read quota: {refused}"));
    }
}
