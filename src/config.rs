//! Configuration in two stages: [`RawConfig`] mirrors the TOML file (CONTRACT §2) exactly, and
//! [`Config::from_raw`] turns it into validated, typed values. Every validation error names the key
//! and the problem (`check` and `run` exit 2 on it). Secrets live in [`Secret`], whose `Debug`
//! never shows the value.
//!
//! This module only parses, validates and assembles: the settings types and their defaults
//! belong to the components (re-exported here): [`AmqpConfig`] to `amqp`, [`Backoff`] to
//! `backoff`, [`ProviderKind`], [`ApiSettings`] and each API's `Settings` and published `DEFAULTS`
//! to `provider`, [`DomainRule`] to `routing`, [`RateLimit`] to `ratelimit`, [`QuotaWindow`] to
//! `quota`. No component imports this module; `worker` and `commands` do (and `dispatch`, which
//! takes a provider's whole [`ProviderConfig`]).
//!
//! Submodules: `load` (TOML errors that locate the problem without quoting secrets), `env`
//! (`*_env` keys), `bounds` (the range of every number), `amqp` (`[amqp]` alone, for `publish`),
//! `kinds` (the keys of one API family), `validate` (the rest).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::provider::Kind;

/// The environment variable naming a config file when `--config` is not given.
pub const CONFIG_ENV: &str = "PURGE_WORKER_CONFIG";
/// The config file read from the working directory when neither `--config` nor the env is set.
pub const DEFAULT_CONFIG_FILE: &str = "purge-worker.toml";

/// Default broker: the local RabbitMQ with the guest account. `heartbeat=10` makes a dead TCP
/// connection visible within ~20 s instead of the kernel's ~11 minutes.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10";
/// Default purge queue.
pub const DEFAULT_QUEUE: &str = "cdn.purge";
/// Default bulk queue (events consumed from it are bulk).
pub const DEFAULT_BULK_QUEUE: &str = "cdn.purge.bulk";
/// Default dead-letter queue.
pub const DEFAULT_DEAD_LETTER_QUEUE: &str = "cdn.purge.dead";
/// Largest dead-letter record body (1 MiB); see [`crate::dead_letter::DEFAULT_MAX_BYTES`].
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: usize = crate::dead_letter::DEFAULT_MAX_BYTES;
/// Longest pause between RabbitMQ reconnect attempts: long enough not to hammer a broker that is
/// down for a while, short enough to be back within half a minute of its return.
pub const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;
/// Unacked deliveries held at once; bounds the worker's memory, not the backlog.
pub const DEFAULT_PREFETCH: u16 = 1000;
/// Unacked deliveries of the bulk queue held at once.
pub const DEFAULT_BULK_PREFETCH: u16 = 1000;
/// Share of every quota window kept for interactive items: a re-index leaves a fifth of the day
/// for the editors.
pub const DEFAULT_INTERACTIVE_RESERVE: f64 = 0.2;
/// The largest `interactive_reserve`: bulk always keeps a tenth of the window.
pub const MAX_INTERACTIVE_RESERVE: f64 = 0.9;
/// Default Redis.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Every Redis key the worker writes starts with this.
pub const DEFAULT_KEY_PREFIX: &str = "purge-worker";
/// Metrics and probes.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// How long an item may wait for companions when the API is the bottleneck.
pub const DEFAULT_MAX_LINGER_MS: u64 = 500;
/// How long SIGTERM waits for in-flight work before leaving the rest for redelivery.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;
pub use crate::event::DEFAULT_MAX_EVENT_BYTES;
/// First retry delay after a transient provider failure; doubles per attempt, with jitter.
pub const DEFAULT_RETRY_BASE_MS: u64 = 200;
/// Cap on the retry delay.
pub const DEFAULT_RETRY_MAX_MS: u64 = 30_000;
pub use crate::provider::{DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS};
/// Calls in flight per provider at once (the rate limiter still spaces them).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Failed calls an item may have alone before it is dead-lettered: with the default backoff
/// (200 ms doubling) that is about 25 s of retries once the item is isolated.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// Errors from loading or validating configuration. Each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for purge-worker: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// More than one `*_env` key names an unset variable: each entry is "`VAR` (key)".
    #[error("environment variables named in the config are not set (or not UTF-8): {}", .0.join(", "))]
    MissingEnv(Vec<String>),
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// === raw (TOML) ===

/// The TOML file as written. Unknown keys are errors: a typo must not silently fall back to a
/// default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub amqp: RawAmqp,
    pub redis: RawRedis,
    pub http: RawHttp,
    pub batching: RawBatching,
    pub tracking: RawTracking,
    pub providers: Vec<RawProvider>,
}

/// `[tracking]` (assembled into [`crate::tracking::Settings`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracking {
    pub poll_interval_ms: Option<u64>,
    pub lineage_ttl_hours: Option<u64>,
    pub lineage_events_per_key: Option<usize>,
    pub lease_ms: Option<u64>,
    pub max_pending: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAmqp {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub queue: Option<String>,
    pub dead_letter_queue: Option<String>,
    pub dead_letter_max_bytes: Option<usize>,
    pub reconnect_max_ms: Option<u64>,
    #[serde(deserialize_with = "amqp::prefetch_range")]
    pub prefetch: Option<u32>,
    pub bulk_queue: Option<String>,
    #[serde(deserialize_with = "amqp::prefetch_range")]
    pub bulk_prefetch: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub key_prefix: Option<String>,
    pub shared_rate_limits: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen: Option<String>,
    /// `IP:port` of the HTTP ingest (`POST /v1/purges`); off unless set.
    pub ingest_listen: Option<String>,
    /// The environment variable holding the ingest's `name:token` pairs.
    pub ingest_tokens_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBatching {
    pub max_linger_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub max_event_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProvider {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub endpoint: Option<String>,
    pub secret_id: Option<String>,
    pub secret_id_env: Option<String>,
    pub secret_key: Option<String>,
    pub secret_key_env: Option<String>,
    pub requests_per_second: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub rate_limits: Option<Vec<String>>,
    pub urls_per_call: Option<usize>,
    pub dirs_per_call: Option<usize>,
    pub regex_per_call: Option<usize>,
    pub urls_per_day: Option<u64>,
    pub dirs_per_day: Option<u64>,
    pub prefetch_per_day: Option<u64>,
    pub quota_utc_offset: Option<String>,
    pub quota_window: Option<String>,
    pub retry_base_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub max_attempts: Option<u32>,
    pub interactive_reserve: Option<f64>,
    pub quota_sync_interval_ms: Option<u64>,
    /// tencent-v3: which `Area` of `DescribePurgeQuota` the account spends.
    pub quota_area: Option<String>,
    /// tencent-v2: `POST` (default) or `GET`.
    pub http_method: Option<String>,
    /// tencent-v2: `HmacSHA1` (default) or `HmacSHA256`.
    pub signature_method: Option<String>,
    /// wangsu: `api-key` (default; `username` + `api_key`) or `aksk` (`secret_id` + `secret_key`).
    pub auth_scheme: Option<String>,
    pub username: Option<String>,
    pub username_env: Option<String>,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    /// wangsu: `production` (default) or `staging`.
    pub target: Option<String>,
    /// wangsu: webhook id called when a purge task finishes.
    pub webhook: Option<String>,
    /// wangsu: the free-text `name` given to every purge task.
    pub purge_name: Option<String>,
    pub domains: Vec<RawDomain>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDomain {
    pub host: Option<String>,
    pub ignore_query: bool,
    pub dir_escalation: Option<u64>,
    pub prefetch_after_purge: bool,
}

// === validated ===

/// The validated configuration the worker runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// The HTTP ingest (`http.ingest_listen`, `http.ingest_tokens_env`).
    pub ingest: crate::ingest::Settings,
    pub batching: BatchingConfig,
    /// Following purges to completion (`[tracking]`).
    pub tracking: crate::tracking::Settings,
    /// At least one provider (the built-in emulator when no file was given).
    pub providers: Vec<ProviderConfig>,
}

/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Secret,
    /// Prefix of every key the worker writes.
    pub key_prefix: String,
    /// Rate windows hold across every process on this Redis and prefix (default on).
    pub shared_rate_limits: bool,
}

/// Batching and lifecycle timing.
#[derive(Debug, Clone, Copy)]
pub struct BatchingConfig {
    /// The most an item waits for companions once the API has room.
    pub max_linger: Duration,
    /// How long shutdown waits for in-flight work.
    pub drain_timeout: Duration,
    /// Largest accepted event body in bytes.
    pub max_event_bytes: usize,
}

/// One `[[providers]]` entry, validated.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Used in metric labels, logs, Redis keys and the parking queue name.
    pub name: String,
    pub kind: ProviderKind,
    /// API base URL, e.g. `https://cdn.tencentcloudapi.com` or an emulator.
    pub endpoint: url::Url,
    /// The identity that signs: Tencent SecretId, Wangsu username or AccessKey.
    pub secret_id: Secret,
    /// The signing key: Tencent SecretKey, Wangsu api_key or SecretKey.
    pub secret_key: Secret,
    /// Every window that must hold, shortest first.
    pub rate_limits: Vec<RateLimit>,
    pub urls_per_call: usize,
    pub dirs_per_call: usize,
    /// Regex patterns per call (wangsu); regex purges spend the directory quota.
    pub regex_per_call: usize,
    pub urls_per_day: u64,
    pub dirs_per_day: u64,
    /// URLs prefetched per day (Tencent `PushUrlsCache`: per UTC+8 day; Wangsu: per rolling 24
    /// hours), counted in a ledger of its own; 0 where the API has no prefetch.
    pub prefetch_per_day: u64,
    /// Seconds east of UTC of the provider's day boundary.
    pub quota_utc_offset_secs: i32,
    /// Calendar day or rolling 24 hours.
    pub quota_window: QuotaWindow,
    /// What only this provider's API family has.
    pub options: ApiSettings,
    /// Retries of failed calls: `retry_base_ms` doubling up to `retry_max_ms`.
    pub retry: Backoff,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    /// Failed calls an item may have alone before it is dead-lettered (`provider_failed`).
    pub max_attempts: u32,
    /// Share of every quota window bulk items never spend (0 to 0.9).
    pub interactive_reserve: f64,
    /// How the ledger follows the provider's own quota figures.
    pub quota_sync: crate::dispatch::QuotaSync,
    pub domains: Vec<DomainRule>,
}

impl ProviderConfig {
    /// The account its client calls.
    pub fn account(&self) -> crate::provider::Account {
        crate::provider::Account {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            secret_id: self.secret_id.clone(),
            secret_key: self.secret_key.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
        }
    }

    /// What its dispatcher needs of it.
    pub fn dispatch_limits(&self) -> crate::dispatch::Limits {
        crate::dispatch::Limits {
            name: self.name.clone(),
            kind: self.kind,
            urls_per_call: self.urls_per_call,
            dirs_per_call: self.dirs_per_call,
            regex_per_call: self.regex_per_call,
            urls_per_day: self.urls_per_day,
            dirs_per_day: self.dirs_per_day,
            quota: self.quota_policy(),
            retry: self.retry,
            max_in_flight: self.max_in_flight,
            max_attempts: self.max_attempts,
            interactive_reserve: self.interactive_reserve,
            escalates: self.domains.iter().any(|d| d.dir_escalation > 0),
            quota_sync: self.quota_sync,
        }
    }

    /// What routing needs of it: its API family and its hosts.
    pub fn routes(&self) -> (ProviderKind, &[DomainRule]) {
        (self.kind, &self.domains)
    }

    /// How this provider's allowance is counted (for the quota store).
    pub fn quota_policy(&self) -> crate::quota::QuotaPolicy {
        crate::quota::QuotaPolicy {
            window: self.quota_window,
            utc_offset_secs: self.quota_utc_offset_secs,
        }
    }

    /// Items of `kind` per call.
    pub fn per_call(&self, kind: Kind) -> usize {
        match kind {
            Kind::Url => self.urls_per_call,
            Kind::Dir => self.dirs_per_call,
            Kind::Regex => self.regex_per_call,
        }
    }

    /// The daily (or rolling 24-hour) allowance `kind` spends: regex purges spend the directory
    /// one.
    pub fn per_day(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Url => self.urls_per_day,
            Kind::Dir | Kind::Regex => self.dirs_per_day,
        }
    }
}

impl Config {
    /// What `explain` reads of this worker's lineage.
    pub fn explain_sources(&self) -> crate::tracking::explain::Sources {
        crate::tracking::explain::Sources {
            router: crate::routing::Router::new(self.providers.iter().map(ProviderConfig::routes)),
            providers: self.providers.iter().map(|p| p.name.clone()).collect(),
            key_prefix: self.redis.key_prefix.clone(),
            lineage_ttl: self.tracking.lineage_ttl,
        }
    }
}

/// Where the configuration came from, for the first log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file: local services and the built-in emulator.
    BuiltIn,
}

/// Finds the config file per CONTRACT §1: `--config`, `$PURGE_WORKER_CONFIG`, `./purge-worker.toml`.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(DEFAULT_CONFIG_FILE);
    local.exists().then_some(local)
}

/// Reads and parses a config file (first stage).
pub fn read_raw(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // Never `e.to_string()`: it quotes the source line, which may hold a secret.
    toml::from_str(&text).map_err(|e| load::parse_error(path, &text, &e))
}

mod amqp;
mod bounds;
mod env;
mod kinds;
mod load;

mod validate;
pub use crate::amqp::AmqpConfig;
pub use crate::backoff::Backoff;
pub use crate::provider::api::{ApiSettings, ProviderKind};
pub use crate::provider::qcloud_v2::SignatureMethod;
pub use crate::provider::tencent_v2::HttpMethod;
pub use crate::provider::wangsu::WangsuAuth;
pub use crate::quota::QuotaWindow;
pub use crate::ratelimit::RateLimit;
pub use crate::routing::DomainRule;
pub use crate::secret::Secret;
pub use bounds::{
    MAX_ATTEMPTS, MAX_DURATION_MS, MAX_EVENT_BYTES, MAX_IN_FLIGHT, MAX_PER_CALL, MAX_PER_DAY,
    MAX_RATE_WINDOW_SECS,
};
pub use validate::parse_utc_offset;
