//! The CDN API emulator, on axum, for integration tests and demos: the server side of Tencent
//! Cloud API 3.0 (TC3-signed `PurgeUrlsCache`, `PurgePathCache`, `DescribePurgeQuota` on `POST /`),
//! the legacy Tencent API 2.0 (`/v2/index.php`, `RefreshCdnUrl`, `RefreshCdnDir`) and Wangsu CDN
//! Pro (`/cdn/purges`).
//!
//! Each enforces what the real API enforces — signature, clock skew, per-call caps, the account's
//! rate limit, daily or rolling quotas — and all share the injected failures a worker must survive
//! ([`Faults`]), each answering them in its own error shape. Every purge call is recorded, so tests assert on what reached the "CDN" instead
//! of on log lines:
//!
//! - `GET /_emulator/requests` — accepted purge calls ([`RecordedCall`]), in arrival order;
//! - `GET /_emulator/rejections` — refused calls ([`RejectedCall`]);
//! - `POST /_emulator/faults` — replace the faults: `{"fail_first":N,"rate_limit_every":K,
//!   "latency_ms":MS,"invalid_urls":[…]}` (missing fields mean "off");
//! - `DELETE /_emulator/requests` — forget both record lists (quotas and rate windows stay);
//! - `GET /_emulator/tasks`, `/_emulator/status_calls`, `/_emulator/prefetches` — purge tasks
//!   with their final state ([`TaskRecord`], see [`TaskModel`]), status queries and prefetches.

mod state;
mod tasks;
mod tencent_v2;
mod tencent_v3;
mod tencent_v3_tasks;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;
mod wangsu;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use state::State;
pub use tasks::{ApiCall, Phase, PrefetchLimits, TaskModel, TaskRecord};
pub use tencent_v2::V2Limits;
pub use wangsu::{
    EMULATOR_WANGSU_ACCESS_KEY, EMULATOR_WANGSU_API_KEY, EMULATOR_WANGSU_SECRET_KEY,
    EMULATOR_WANGSU_USERNAME, WangsuLimits,
};

/// The SecretId the emulator accepts by default; the built-in config signs with it.
pub const EMULATOR_SECRET_ID: &str = "AKIDEMULATOR0000000000000000000000";
/// The SecretKey paired with [`EMULATOR_SECRET_ID`]. A demo value, safe to print.
pub const EMULATOR_SECRET_KEY: &str = "emulator-secret-key";

/// How long [`Emulator::shutdown`] waits for open connections before aborting the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The emulated account(s) and limits. Defaults are Tencent's published limits (with the 2021
/// seed's 20 directories per call, matching the worker's default `dirs_per_call`).
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// `(secret_id, secret_key)` pairs that may sign requests; quotas and rate windows are per
    /// SecretId. Default: [`EMULATOR_SECRET_ID`] / [`EMULATOR_SECRET_KEY`].
    pub accounts: Vec<(String, String)>,
    /// Most URLs in one `PurgeUrlsCache` call (Tencent: 1000).
    pub urls_per_call: usize,
    /// Most paths in one `PurgePathCache` call.
    pub paths_per_call: usize,
    /// URL purges per account per UTC+8 day (Tencent: 10 000).
    pub urls_per_day: u64,
    /// Directory purges per account per UTC+8 day (Tencent: 100).
    pub paths_per_day: u64,
    /// Purge calls per account in any sliding second (Tencent: 20).
    pub requests_per_second: u32,
    /// Failures to inject from the start; replace later with [`Emulator::set_faults`].
    pub faults: Faults,
    /// The legacy Tencent API 2.0 (`/v2/index.php`); signed by the same `accounts`.
    pub tencent_v2: V2Limits,
    /// Wangsu CDN Pro (`/cdn/purges`), with its own accounts.
    pub wangsu: WangsuLimits,
    /// How purge tasks progress (delay, failing share) on every API.
    pub tasks: TaskModel,
    /// Prefetch allowances (Tencent `PushUrlsCache`, Wangsu `/cdn/prefetches`).
    pub prefetch: PrefetchLimits,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            accounts: vec![(EMULATOR_SECRET_ID.into(), EMULATOR_SECRET_KEY.into())],
            urls_per_call: 1000,
            paths_per_call: 20,
            urls_per_day: 10_000,
            paths_per_day: 100,
            requests_per_second: 20,
            faults: Faults::default(),
            tencent_v2: V2Limits::default(),
            wangsu: WangsuLimits::default(),
            tasks: TaskModel::default(),
            prefetch: PrefetchLimits::default(),
        }
    }
}

/// Failures the emulator injects into purge calls, so reliability tests can provoke each error
/// class on demand. The default injects nothing.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The first N purge calls (after the faults are set) answer `InternalError`.
    pub fail_first: u32,
    /// Every Kth purge call answers `RequestLimitExceeded`; 0 turns it off.
    pub rate_limit_every: u32,
    /// Added before every API answer (after the call was decided), to provoke client timeouts
    /// on calls that did take effect.
    pub latency: Duration,
    /// A purge batch containing any of these exact strings is refused as a whole: Tencent 3.0
    /// `InvalidParameter.CdnParamError` and v2 4000/9110 without saying which item it was (like
    /// the real APIs), Wangsu 400 `InvalidPurgeUrl` naming it.
    pub invalid_urls: HashSet<String>,
    /// Tencent 3.0: a batch holding any of these always fails with the transient
    /// `InternalError.CdnSystemError`, as a poisoned URL does.
    pub failing_urls: HashSet<String>,
    /// Tencent 3.0: a batch holding any of these is refused as over the batch limit, even alone.
    pub oversize_urls: HashSet<String>,
    /// Tencent 3.0: hosts these credentials may not purge (`UnauthorizedOperation.CdnHostUnauthorized`).
    pub unauthorized_hosts: HashSet<String>,
    /// Tencent 3.0: the next N calls are answered by a "gateway" in front of the API: HTTP 429
    /// with `gateway_retry_after` as the raw `Retry-After` header.
    pub gateway_429: u32,
    pub gateway_retry_after: String,
}

/// One accepted purge call, as the CDN saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedCall {
    /// `PurgeUrlsCache` or `PurgePathCache`.
    pub action: String,
    /// The account that signed it.
    pub secret_id: String,
    /// The URLs or paths, in request order.
    pub items: Vec<String>,
    /// `flush`/`delete` for path purges, `None` for URL purges.
    pub flush_type: Option<String>,
    /// Unix time in ms when the handler received the request (for rate assertions).
    pub at_ms: f64,
    /// Wangsu only: the request's lists, headers and target as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wangsu: Option<WangsuRequest>,
}

/// A Wangsu `POST /cdn/purges` body as the emulator accepted it. The [`RecordedCall`] around it
/// has `action = "CreatePurge"`, `items` = file URLs, then dir URLs, then regex patterns, and
/// `flush_type` = the Wangsu action (`invalidate`/`delete`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct WangsuRequest {
    /// The purge id given in the `Location` header.
    pub purge_id: String,
    pub file_urls: Vec<String>,
    pub dir_urls: Vec<String>,
    pub regex_patterns: Vec<String>,
    pub file_headers: Vec<crate::provider::Header>,
    /// `invalidate` or `delete`.
    pub action: String,
    /// `production` or `staging`.
    pub target: String,
    pub name: Option<String>,
    pub webhook: Option<String>,
}

/// One refused call with the error code it got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RejectedCall {
    /// The `X-TC-Action` as sent (empty if missing).
    pub action: String,
    /// The Tencent error code answered.
    pub code: String,
    /// The URLs or paths the call carried, as far as they could be read.
    pub items: Vec<String>,
    /// Unix time in ms when the handler received the request.
    pub at_ms: f64,
}

/// State shared by the handlers.
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    state: Mutex<State>,
    /// The v2 API's own bookkeeping (Nonces, rate windows, quotas). Lock order: `state` first.
    pub(crate) v2: Mutex<tencent_v2::V2State>,
    /// The Wangsu API's own bookkeeping (token bucket, rolling quotas, tasks). Lock order:
    /// `state` first.
    pub(crate) wangsu: Mutex<wangsu::WangsuState>,
}

impl Shared {
    /// The state lock. A panic while holding it cannot leave the records half-written in a way
    /// that matters to a test double, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A running emulator. Dropping it stops the server; [`Emulator::shutdown`] also waits for it.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The body of `POST /_emulator/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
struct FaultsBody {
    fail_first: u32,
    rate_limit_every: u32,
    latency_ms: u64,
    invalid_urls: Vec<String>,
    failing_urls: Vec<String>,
    oversize_urls: Vec<String>,
    unauthorized_hosts: Vec<String>,
    gateway_429: u32,
    gateway_retry_after: String,
}

impl From<FaultsBody> for Faults {
    fn from(b: FaultsBody) -> Self {
        Faults {
            fail_first: b.fail_first,
            rate_limit_every: b.rate_limit_every,
            latency: Duration::from_millis(b.latency_ms),
            invalid_urls: b.invalid_urls.into_iter().collect(),
            failing_urls: b.failing_urls.into_iter().collect(),
            oversize_urls: b.oversize_urls.into_iter().collect(),
            unauthorized_hosts: b.unauthorized_hosts.into_iter().collect(),
            gateway_429: b.gateway_429,
            gateway_retry_after: b.gateway_retry_after,
        }
    }
}

async fn list_requests(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Vec<RecordedCall>> {
    Json(shared.lock().accepted())
}

async fn list_rejections(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Vec<RejectedCall>> {
    Json(shared.lock().rejected())
}

async fn list_tasks(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Vec<TaskRecord>> {
    Json(shared.lock().tasks.tasks())
}

async fn list_status_calls(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Vec<ApiCall>> {
    Json(shared.lock().tasks.status_calls())
}

async fn list_prefetches(AxumState(shared): AxumState<Arc<Shared>>) -> Json<Vec<ApiCall>> {
    Json(shared.lock().tasks.prefetches())
}

async fn clear_requests(AxumState(shared): AxumState<Arc<Shared>>) -> StatusCode {
    shared.lock().clear_records();
    StatusCode::NO_CONTENT
}

/// Parses the body itself (not `Json<…>`) so `curl -d '{…}'` works without a Content-Type.
async fn replace_faults(AxumState(shared): AxumState<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsBody>(&body) {
        Ok(faults) => {
            shared.lock().set_faults(faults.clone().into());
            Json(faults).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad faults body: {e}\n")).into_response(),
    }
}

impl Emulator {
    /// Binds `listen` (port 0 picks a free port) and serves in a spawned task; returns at once.
    pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(config.faults.clone())),
            config,
            v2: Mutex::default(),
            wangsu: Mutex::default(),
        });
        let router = Router::new()
            .route("/", post(tencent_v3::api))
            .route("/v2/index.php", get(tencent_v2::api).post(tencent_v2::api))
            .route("/cdn/purges/{id}", get(wangsu::status))
            .route("/cdn/purges", post(wangsu::create).get(wangsu::list))
            .route("/cdn/purges/purgeTokens", get(wangsu::purge_tokens))
            .route("/cdn/prefetches", post(wangsu::prefetch))
            .route(
                "/cdn/prefetches/prefetchTokens",
                get(wangsu::prefetch_tokens),
            )
            .route("/_emulator/tasks", get(list_tasks))
            .route("/_emulator/status_calls", get(list_status_calls))
            .route("/_emulator/prefetches", get(list_prefetches))
            .route(
                "/_emulator/requests",
                get(list_requests).delete(clear_requests),
            )
            .route("/_emulator/rejections", get(list_rejections))
            .route("/_emulator/faults", post(replace_faults))
            .with_state(shared.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, %addr, "emulator server stopped with an error");
            }
        });
        Ok(Emulator {
            addr,
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure as a provider `endpoint`: `http://addr/`.
    pub fn endpoint(&self) -> url::Url {
        let text = format!("http://{}/", self.addr);
        // Invariant: a SocketAddr always forms a valid http URL authority.
        #[allow(clippy::expect_used)]
        url::Url::parse(&text).expect("http://<socket addr>/ is a valid URL")
    }

    /// Accepted purge calls, in arrival order.
    pub fn accepted(&self) -> Vec<RecordedCall> {
        self.shared.lock().accepted()
    }

    /// Refused calls with their error codes, in arrival order.
    pub fn rejected(&self) -> Vec<RejectedCall> {
        self.shared.lock().rejected()
    }

    /// Every purge task, in acceptance order, with its final state and the polls it got.
    pub fn tasks(&self) -> Vec<TaskRecord> {
        self.shared.lock().tasks.tasks()
    }

    /// Status queries (`DescribePurgeTasks`, `GetCdnRefreshLog`, `GetPurge`, `ListPurges`), in
    /// arrival order.
    pub fn status_calls(&self) -> Vec<ApiCall> {
        self.shared.lock().tasks.status_calls()
    }

    /// Accepted prefetches (`PushUrlsCache`, `CreatePrefetch`), in arrival order.
    pub fn prefetches(&self) -> Vec<ApiCall> {
        self.shared.lock().tasks.prefetches()
    }

    /// Replaces the injected faults; counting for `fail_first`/`rate_limit_every` restarts.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().set_faults(faults);
    }

    /// Tencent API 3.0: spends `n` of today's `kind` quota of `secret_id` as another tool of the
    /// same account would (the console, tccli, another team's script). `DescribePurgeQuota`
    /// shows it; the worker's ledger learns of it only from there.
    pub fn spend_elsewhere(&self, secret_id: &str, kind: crate::provider::Kind, n: u64) {
        self.shared
            .lock()
            .spend_elsewhere(secret_id, kind.quota_kind(), n, now_ms());
    }

    /// Wangsu: spends `n` entries of `target`'s rolling `kind` quota as another tool of the same
    /// customer would; `purgeTokens` shows it.
    pub fn wangsu_spend_elsewhere(&self, target: &str, kind: crate::provider::Kind, n: u64) {
        let mut ws = self
            .shared
            .wangsu
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ws.spend_elsewhere(target, kind, n, now_ms());
    }

    /// Stops accepting connections and waits (up to a few seconds) for open ones to finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
