//! The provider boundary: what the dispatcher needs from a CDN purge API.
//!
//! A provider only *classifies*: it turns one [`Batch`] into one API call and maps the answer onto
//! [`ProviderError`], the taxonomy of providers/PROVIDERS.md. What an error means for the items
//! (retry, back off, park, split, dead-letter, stop) is decided in `dispatch`, in one place.
//!
//! Every client is built from component settings, never from the config file: the [`Account`]
//! it calls (name, endpoint, credentials, timeouts) and its API's own `Settings` struct
//! (`tencent_v3::Settings`, `tencent_v2::Settings`, `wangsu::Settings`). Each API module also
//! publishes its [`Limits`] (`DEFAULTS`: endpoint, rates, batch sizes, daily allowances, quota
//! window) and its [`Capabilities`]; [`api`] names the families and builds a client for one.

pub mod api;
pub(crate) mod http;
pub mod mac;
pub mod qcloud_v2;
pub mod task;
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

pub use crate::purge::{Batch, FlushType, Header, Kind};
pub use http::{MAX_ANSWER_BYTES, MAX_RETRY_AFTER, error_chain};
pub use task::{PrefetchFuture, StatusFuture, TaskQuery, TaskReport, TaskState};

use crate::quota::QuotaWindow;
use crate::secret::Secret;

/// Connect timeout of provider calls unless configured.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Whole-request timeout of provider calls unless configured.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// The account a client calls: who signs, where, and how long a call may take. `Debug` never
/// shows the secrets.
#[derive(Debug, Clone)]
pub struct Account {
    /// The provider's configured name (metric labels, logs, the `provider` span field).
    pub name: String,
    /// API base URL, e.g. `https://cdn.tencentcloudapi.com` or an emulator.
    pub endpoint: url::Url,
    /// The identity that signs: Tencent SecretId, Wangsu username or AccessKey.
    pub secret_id: Secret,
    /// The signing key: Tencent SecretKey, Wangsu api_key or SecretKey.
    pub secret_key: Secret,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Account {
    /// An account at `endpoint` with the default timeouts.
    pub fn new(name: &str, endpoint: url::Url, secret_id: &str, secret_key: &str) -> Account {
        Account {
            name: name.to_string(),
            endpoint,
            secret_id: Secret::new(secret_id),
            secret_key: Secret::new(secret_key),
            connect_timeout: Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS),
            request_timeout: Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS),
        }
    }
}

/// The published limits of an API family (providers/PROVIDERS.md): each API module's
/// `DEFAULTS`, used for the keys a `[[providers]]` entry leaves unset.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub endpoint: &'static str,
    pub requests_per_second: u32,
    pub requests_per_minute: u32,
    /// Further windows, in `rate_limits` syntax (`"150/5m"`).
    pub rate_limits: &'static [&'static str],
    pub urls_per_call: usize,
    pub dirs_per_call: usize,
    pub regex_per_call: usize,
    pub urls_per_day: u64,
    pub dirs_per_day: u64,
    /// URLs prefetched per day, counted in a ledger of its own; 0 where the API has no prefetch.
    pub prefetch_per_day: u64,
    /// Seconds east of UTC of the API's day boundary.
    pub quota_utc_offset_secs: i32,
    pub quota_window: QuotaWindow,
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
    /// Whether directory purges honour the flush type. When not (legacy v2: RefreshCdnDir only
    /// expires), flush and delete directory items share one lane and one call.
    pub dir_flush_type: bool,
    /// The API's own rules for URLs, checked before an item is accepted.
    pub url_rules: UrlRules,
    /// Whether directory URLs may carry wildcards (`*`, `**`).
    pub wildcards: bool,
    /// Whether cache-key regex purges are supported.
    pub regex: bool,
    /// Whether file purges may carry request headers.
    pub headers: bool,
}

/// Which URL rules an API adds to the contract's own (CONTRACT §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlRules {
    /// None beyond the contract's.
    Plain,
    /// Wangsu CDN Pro: some characters must be percent-encoded, and its length and wildcard
    /// rules hold (`wangsu_rules`).
    Wangsu,
}

/// The boxed future a provider call returns (object-safe trait).
pub type PurgeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Receipt, ProviderError>> + Send + 'a>>;

/// One quota kind's figure as the provider reports it, bounded by [`MAX_QUOTA_FIGURE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaFigure {
    /// The window's allowance, when the API says it (Tencent `Total`; Wangsu does not).
    pub total: Option<u64>,
    /// What is left of the window now (Tencent `Available`, Wangsu `filePurgeTokens`).
    pub available: u64,
}

impl QuotaFigure {
    /// What the provider counts as spent: its total (or `limit` when it names none) minus what is
    /// left, never below zero.
    pub fn used(&self, limit: u64) -> u64 {
        self.total.unwrap_or(limit).saturating_sub(self.available)
    }
}

/// The provider's own quota figures, by quota kind; `None` for a kind the answer did not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProviderQuota {
    pub urls: Option<QuotaFigure>,
    pub dirs: Option<QuotaFigure>,
}

impl ProviderQuota {
    /// The figure of a quota kind (regex purges spend the directory one).
    pub fn figure(&self, kind: Kind) -> Option<QuotaFigure> {
        match kind {
            Kind::Url => self.urls,
            Kind::Dir | Kind::Regex => self.dirs,
        }
    }
}

/// Largest quota figure read from a provider (10^9 units a day): anything larger is not a
/// figure this account can have, and the answer is treated as malformed.
pub const MAX_QUOTA_FIGURE: u64 = 1_000_000_000;

/// The boxed future of a quota query.
pub type QuotaFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ProviderQuota, ProviderError>> + Send + 'a>>;

/// One CDN purge API. Implementations are cheap to share (`Arc<dyn Provider>`) and make exactly
/// one HTTP request per `purge` call, signed afresh, with connect and request timeouts.
pub trait Provider: Send + Sync + fmt::Debug {
    /// What this API supports.
    fn capabilities(&self) -> Capabilities;
    /// The API action name used for a batch of this kind (the `action` metric label).
    fn action(&self, kind: Kind) -> &'static str;
    /// Submits one batch. Never retries by itself: the dispatcher owns retries.
    fn purge<'a>(&'a self, batch: &'a Batch) -> PurgeFuture<'a>;
    /// Asks for the state of a purge task (one request). Clients without a status API refuse.
    fn task_status<'a>(&'a self, _query: &'a TaskQuery) -> StatusFuture<'a> {
        Box::pin(async { Err(task::unsupported("task status query")) })
    }
    /// Whether status queries spend the same call budget as purges (Wangsu: one API budget for
    /// every call) rather than one of their own (Tencent: a limit per action).
    fn status_shares_purge_budget(&self) -> bool {
        false
    }
    /// Prefetches `urls` (one request, within the API's per-call cap).
    fn prefetch<'a>(&'a self, _urls: &'a [String]) -> PrefetchFuture<'a> {
        Box::pin(async { Err(task::unsupported("prefetch")) })
    }
    /// Most URLs in one prefetch call.
    fn prefetch_per_call(&self) -> usize {
        0
    }
    /// The API action that reads the account's own quota figures (the `action` label), when the
    /// API has one.
    fn quota_action(&self) -> Option<&'static str> {
        None
    }
    /// Reads the account's own quota figures (one signed request through the one HTTP path);
    /// `None` when the API has no such call (tencent-v2).
    fn quota(&self) -> Option<QuotaFuture<'_>> {
        None
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
