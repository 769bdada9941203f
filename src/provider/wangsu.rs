//! Wangsu (ChinaNetCenter) CDN Pro client: `POST {endpoint}/cdn/purges` (PROVIDERS.md §3).
//!
//! One [`Provider::purge`] is one signed POST whose JSON body carries one lane: `fileUrls` (with
//! the lane's `fileHeaders`), `dirUrls` or `regexPatterns`, plus `action`, `target` and the
//! configured `webhook`/`name`. The answer is classified by [`interpret`]. Decisions worth
//! knowing:
//!
//! - Signing follows the configured scheme ([`WangsuAuth`]): the API-key scheme signs the `Date`
//!   header we format ourselves in English ([`wangsu_sign::http_date`]); AK/SK signs
//!   `content-type;host` and the body. Date and timestamp are taken afresh on every attempt, so
//!   a retry is never a replay (the API refuses a replayed AK/SK signature for 5 minutes).
//! - Success is HTTP 201 with a `Location` naming the purge; the task id is its last path
//!   segment. A 2xx **without** `Location` is not trusted as success: a proxy or a misconfigured
//!   endpoint answering 200 would otherwise silently swallow purges. It is `Transient` with
//!   `maybe_applied = true`, so it is retried without refunding quota; a duplicate purge costs
//!   less than a lost one.
//! - `InvalidPurgeUrl` names the refused URL in its message (seed 004: "The purge URL '…' is
//!   invalid"); when that URL is a batch item, only it is reported, so the dispatcher
//!   dead-letters exactly it. When the message names an undeployed host instead ("The host '…'
//!   has not been deployed…"), every item on that host is reported: all of them would fail.
//! - Wangsu documents no quota-exhausted code. The emulator answers 400 `PurgeQuotaExceeded`
//!   (its own assumption, [`QUOTA_CODE`]); any 4xx code mentioning a quota or purge tokens is
//!   read as [`ProviderError::QuotaExhausted`].

use std::fmt;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use answer::interpret;

use super::http::{self, CallLog, Endpoint, SignedPost};
use super::wangsu_sign::{self, AKSK_AUTH_METHOD, AkSkInput};
use super::{
    Account, Batch, Capabilities, FlushType, Header, Kind, Limits, Provider, ProviderError,
    PurgeFuture, QuotaFuture, Receipt,
};
use crate::quota::QuotaWindow;

/// The purge path, joined to the endpoint's base path.
pub const PATH: &str = "cdn/purges";
/// `Content-Type` and `Accept` of every call, as the official CLI sends them (the seed's curl
/// omits it and so sends a form content type, PROVIDERS.md §3.7).
pub const CONTENT_TYPE: &str = "application/json";
/// Metric label for file purges.
pub const ACTION_FILES: &str = "purges.files";
/// Metric label for directory purges.
pub const ACTION_DIRS: &str = "purges.dirs";
/// Metric label for regex purges.
pub const ACTION_REGEX: &str = "purges.regex";
/// The code the emulator answers when a rolling-24-hour quota cannot take a call. Wangsu
/// documents none (PROVIDERS.md §3.3 **[UNVERIFIED]**): this is the emulator's assumption.
pub const QUOTA_CODE: &str = "PurgeQuotaExceeded";
/// The code the emulator answers for more entries than a call may carry (also undocumented).
pub const TOO_MANY_ENTRIES_CODE: &str = "TooManyPurgeEntries";
/// Lower-case fragments that mark a 4xx code as a spent allowance (`PurgeQuotaExceeded`, or
/// anything a future API revision names after quotas or purge tokens).
pub const QUOTA_CODE_HINTS: &[&str] = &["quota", "purgetoken"];
/// Seconds to wait after a 429, as the API says it.
pub const RETRY_AFTER_HEADER: &str = "x-rate-limit-retry-after-seconds";
/// The API's request id, for support tickets.
pub const REQUEST_ID_HEADER: &str = "x-cnc-request-id";
/// How long the client remembers its AK/SK signatures: comfortably past any retry that could
/// land in the same second, far below the API's 5-minute replay window (older entries cannot
/// collide with a fresh `now`).
const REPLAY_MEMORY_SECS: i64 = 10;

/// Published limits (PROVIDERS.md §3.4): the defaults of unset keys. The API is a token bucket
/// of 60 refilled at 30/min. 60/min with at most 150 in any 5 minutes never empties it (a
/// sliding window of T minutes then holds at most 60 + 30·T calls), and file/dir quotas count
/// over a rolling 24 hours.
pub const DEFAULTS: Limits = Limits {
    endpoint: "https://open.chinanetcenter.com",
    requests_per_second: 2,
    requests_per_minute: 60,
    rate_limits: &["150/5m"],
    urls_per_call: 1000,
    dirs_per_call: 20,
    regex_per_call: 2,
    urls_per_day: 5000,
    dirs_per_day: 20,
    // prefetchQuota: 5,000 per rolling 24 hours (field-notes-2).
    prefetch_per_day: 5000,
    quota_utc_offset_secs: 0,
    quota_window: QuotaWindow::Rolling24h,
};

/// How requests are authenticated (PROVIDERS.md §3.5, §3.6; the `auth_scheme` spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::IntoStaticStr, strum::EnumString)]
pub enum WangsuAuth {
    /// `Date` + Basic `username:base64(HMAC-SHA1(api_key, date))`.
    #[default]
    #[strum(serialize = "api-key")]
    ApiKey,
    /// `CNC-HMAC-SHA256` with an AccessKey/SecretKey pair.
    #[strum(serialize = "aksk")]
    AkSk,
}

impl WangsuAuth {
    /// The `auth_scheme` spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where a purge applies (`target`, sent with every call).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[strum(serialize_all = "lowercase")]
pub enum Target {
    #[default]
    Production,
    Staging,
}

impl Target {
    /// The wire and config spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What only Wangsu has; the defaults are the API-key scheme on production, no webhook and no
/// task name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub auth: WangsuAuth,
    pub target: Target,
    /// Webhook id called when a purge task finishes.
    pub webhook: Option<String>,
    /// The free-text `name` given to every purge task.
    pub purge_name: Option<String>,
}

/// A Wangsu CDN Pro account. Cheap to share; holds a pooled HTTP client.
pub struct Wangsu {
    /// The account at `{endpoint}/cdn/purges`; `secret_id` is the username (API key scheme) or
    /// the AccessKey, `secret_key` the API key or the SecretKey.
    endpoint: Endpoint,
    auth: WangsuAuth,
    target: Target,
    webhook: Option<String>,
    purge_name: Option<String>,
    /// `(timestamp, sha256(body))` of recent AK/SK signatures, see [`Wangsu::fresh_timestamp`].
    recent_signatures: Mutex<Vec<(i64, [u8; 32])>>,
}

impl fmt::Debug for Wangsu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wangsu")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// The create-purge body (PROVIDERS.md §3.2). Empty lists and unset options are left out;
/// `target` is always sent because the API requires it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PurgeBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    file_urls: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    file_headers: &'a [Header],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    dir_urls: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    regex_patterns: &'a [String],
    action: &'static str,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<&'a str>,
}

/// `{endpoint}` joined with `cdn/purges`, keeping any base path of the endpoint.
fn api_url(endpoint: &url::Url) -> url::Url {
    let mut url = endpoint.clone();
    let base = endpoint.path().trim_end_matches('/');
    url.set_path(&format!("{base}/{PATH}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The Wangsu `action` for a flush type.
pub fn wangsu_action(flush_type: FlushType) -> &'static str {
    match flush_type {
        FlushType::Flush => "invalidate",
        FlushType::Delete => "delete",
    }
}

/// What this API takes (see [`Capabilities`]).
pub const CAPABILITIES: Capabilities = Capabilities {
    url_flush_type: true,
    dir_flush_type: true,
    wildcards: true,
    regex: true,
    headers: true,
    url_rules: crate::provider::UrlRules::Wangsu,
};

/// The metric label for a kind.
fn action_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Url => ACTION_FILES,
        Kind::Dir => ACTION_DIRS,
        Kind::Regex => ACTION_REGEX,
    }
}

impl Wangsu {
    /// Builds the client of `account`, with its connect and whole-request timeouts, so a hung
    /// API cannot hold a dispatch slot forever.
    pub fn new(account: &Account, settings: &Settings) -> Result<Self, reqwest::Error> {
        Ok(Wangsu {
            endpoint: Endpoint::new(account, api_url(&account.endpoint))?,
            auth: settings.auth,
            target: settings.target,
            webhook: settings.webhook.clone(),
            purge_name: settings.purge_name.clone(),
            recent_signatures: Mutex::default(),
        })
    }

    /// Serializes and signs `batch` at `now` (Unix seconds). Pure but for the AK/SK replay
    /// memory ([`Wangsu::fresh_timestamp`]).
    fn prepare(&self, batch: &Batch, now: i64) -> Result<SignedPost, serde_json::Error> {
        let body = self.body(batch)?;
        let headers = self.auth_headers("POST", &self.endpoint.url, &body, Some(&body), now);
        Ok(SignedPost {
            action: action_for(batch.kind),
            body,
            headers,
        })
    }

    /// The JSON body for `batch`: serialized once, and exactly these bytes are signed and sent.
    fn body(&self, batch: &Batch) -> Result<Vec<u8>, serde_json::Error> {
        // Each list carries the batch's items only for its own kind; the others stay empty
        // and are left out of the JSON.
        let items = |kind: Kind| -> &[String] {
            if batch.kind == kind {
                &batch.items
            } else {
                &[]
            }
        };
        let file_headers: &[Header] = if batch.kind == Kind::Url {
            &batch.headers
        } else {
            &[]
        };
        serde_json::to_vec(&PurgeBody {
            name: self.purge_name.as_deref(),
            file_urls: items(Kind::Url),
            file_headers,
            dir_urls: items(Kind::Dir),
            regex_patterns: items(Kind::Regex),
            action: wangsu_action(batch.flush_type),
            target: self.target.as_str(),
            webhook: self.webhook.as_deref(),
        })
    }

    /// The signing headers of a `method` request to `url` carrying `body`, with the configured
    /// scheme; every Wangsu call signs through here. An AK/SK signature depends only on its
    /// timestamp and the request, so with a `replay_key` (the request bytes a repeat would share)
    /// its timestamp comes from [`Wangsu::fresh_timestamp`]; the API key's `Date` is `now`.
    fn auth_headers(
        &self,
        method: &str,
        url: &url::Url,
        body: &[u8],
        replay_key: Option<&[u8]>,
        now: i64,
    ) -> Vec<(&'static str, String)> {
        let endpoint = &self.endpoint;
        let mut headers = vec![
            ("Content-Type", CONTENT_TYPE.to_string()),
            ("Accept", CONTENT_TYPE.to_string()),
        ];
        match self.auth {
            WangsuAuth::ApiKey => {
                // A timestamp outside chrono's range cannot be formatted; an empty Date then
                // earns a 401, which is the honest outcome.
                let date = wangsu_sign::http_date(now).unwrap_or_default();
                let signed = wangsu_sign::sign_api_key(
                    endpoint.secret_id.expose(),
                    endpoint.secret_key.expose(),
                    &date,
                );
                headers.push(("Date", date));
                headers.push(("Authorization", signed.authorization));
            }
            WangsuAuth::AkSk => {
                let now = replay_key.map_or(now, |key| self.fresh_timestamp(now, key));
                let signed = wangsu_sign::sign_aksk(&AkSkInput {
                    method,
                    host: &endpoint.host,
                    path: url.path(),
                    query: url.query().unwrap_or(""),
                    content_type: CONTENT_TYPE,
                    payload: body,
                    timestamp: now,
                    access_key: endpoint.secret_id.expose(),
                    secret_key: endpoint.secret_key.expose(),
                });
                headers.push(("x-cnc-accessKey", endpoint.secret_id.expose().to_string()));
                headers.push(("x-cnc-timestamp", now.to_string()));
                headers.push(("x-cnc-auth-method", AKSK_AUTH_METHOD.to_string()));
                headers.push(("Authorization", signed.authorization));
            }
        }
        headers
    }

    /// The AK/SK timestamp for `body`: `now`, unless this client already signed the same body
    /// at that second (a retry soon after a failure), then the next free second. The API
    /// refuses a repeated signature for 5 minutes, and the signature depends only on the
    /// timestamp and the body, so this is what keeps a quick retry from being taken for a
    /// replay. Only identical bodies move, so the clock never drifts under load.
    fn fresh_timestamp(&self, now: i64, body: &[u8]) -> i64 {
        let digest: [u8; 32] = Sha256::digest(body).into();
        let mut recent = self
            .recent_signatures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recent.retain(|(ts, _)| *ts > now - REPLAY_MEMORY_SECS);
        let mut ts = now;
        while recent.contains(&(ts, digest)) {
            ts += 1;
        }
        recent.push((ts, digest));
        ts
    }

    async fn call(&self, batch: &Batch) -> Result<Receipt, ProviderError> {
        let signed = self
            .prepare(batch, chrono::Utc::now().timestamp())
            .map_err(http::build_error)?;
        let log = CallLog {
            action: signed.action,
            items: batch.items.len(),
            request_id_header: Some(REQUEST_ID_HEADER),
        };
        http::exchange(self.endpoint.post(signed), log, |answer| {
            interpret(answer.status, &answer.headers, &answer.body, &batch.items)
        })
        .await
    }
}

impl Provider for Wangsu {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn action(&self, kind: Kind) -> &'static str {
        action_for(kind)
    }

    fn purge<'a>(&'a self, batch: &'a Batch) -> PurgeFuture<'a> {
        let span = tracing::debug_span!(
            "wangsu.purge",
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

    fn status_shares_purge_budget(&self) -> bool {
        true
    }

    fn prefetch<'a>(&'a self, urls: &'a [String]) -> crate::provider::PrefetchFuture<'a> {
        Box::pin(self.prefetch_urls(urls))
    }

    fn prefetch_per_call(&self) -> usize {
        status::PREFETCH_PER_CALL
    }

    fn quota_action(&self) -> Option<&'static str> {
        Some(quota::ACTION_TOKENS)
    }

    fn quota(&self) -> Option<QuotaFuture<'_>> {
        let span = tracing::debug_span!("wangsu.quota", provider = %self.endpoint.name);
        Some(Box::pin(self.read_tokens().instrument(span)))
    }
}

mod answer;
mod quota;
pub mod status;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;
