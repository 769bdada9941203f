//! `/metrics`, `/healthz`, `/readyz` (CONTRACT §5) and `/explain?url=` (the JSON of
//! `purge-worker explain URL --json`; 400 on a URL the worker would refuse).
//!
//! `/healthz` is 200 while the process runs. `/readyz` is 200 only while RabbitMQ and Redis are
//! connected, no provider has stopped calls after an authentication failure and no stage task has
//! ended unexpectedly; the body says which check fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, READY_AMQP, READY_PROVIDERS, READY_REDIS, READY_STAGES};
use crate::tracking::explain::{ExplainError, Explainer};

/// The readiness inputs, set by the tasks that know them, and mirrored into
/// `purge_ready{dependency}` as they change so "not ready" can be alerted on from metrics alone.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The inputs. One lock (rather than one atomic each) so an input and its gauge always change
    /// together: with separate stores, two racing setters could leave the gauge disagreeing with
    /// `/readyz`. Setters run a few times a second at most.
    state: Mutex<ReadyState>,
    /// `purge_ready`; `None` for a readiness without metrics (`Readiness::default()`).
    /// Where `purge_ready{dependency}` is reported.
    gauge: Option<Metrics>,
}

#[derive(Debug, Default)]
struct ReadyState {
    amqp: bool,
    redis: bool,
    stopped_providers: usize,
    /// Stages that ended unexpectedly (the process is on its way out: this never clears).
    failed_stages: Vec<String>,
}

impl Readiness {
    /// Not ready (neither RabbitMQ nor Redis seen yet), reporting into `metrics`'
    /// `purge_ready{dependency}`.
    pub fn new(metrics: &Metrics) -> Readiness {
        let r = Readiness {
            state: Mutex::default(),
            gauge: Some(metrics.clone()),
        };
        r.update(|_| {});
        r
    }

    /// Applies `change` and sets every `purge_ready` series from the result, under the lock.
    fn update(&self, change: impl FnOnce(&mut ReadyState)) {
        // A panic while holding this lock cannot leave the plain fields inconsistent.
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut s);
        if let Some(m) = &self.gauge {
            m.set_ready(READY_AMQP, s.amqp);
            m.set_ready(READY_REDIS, s.redis);
            m.set_ready(READY_PROVIDERS, s.stopped_providers == 0);
            m.set_ready(READY_STAGES, s.failed_stages.is_empty());
        }
    }

    /// Whether the consumer is connected to RabbitMQ.
    pub fn set_amqp(&self, up: bool) {
        self.update(|s| s.amqp = up);
    }
    /// Whether the consumer is connected to RabbitMQ now (the HTTP ingest answers 503 when not).
    pub fn amqp_connected(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .amqp
    }
    /// Whether Redis answered the last PING.
    pub fn set_redis(&self, up: bool) {
        self.update(|s| s.redis = up);
    }
    /// A provider stopped (`true`) or resumed (`false`) calls after an auth failure.
    pub fn provider_stopped(&self, stopped: bool) {
        self.update(|s| {
            s.stopped_providers = if stopped {
                s.stopped_providers + 1
            } else {
                // An unmatched resume must not wrap around into "stopped forever".
                s.stopped_providers.saturating_sub(1)
            }
        });
    }
    /// A stage task ended unexpectedly: not ready for good (the worker drains and exits 1).
    pub fn stage_failed(&self, stage: &str) {
        self.update(|s| s.failed_stages.push(stage.to_string()));
    }
    /// Every check that fails, empty when ready.
    pub fn problems(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut p = Vec::new();
        if !s.amqp {
            p.push("rabbitmq: not connected".to_string());
        }
        if !s.redis {
            p.push("redis: not answering".to_string());
        }
        let stopped = s.stopped_providers;
        if stopped > 0 {
            p.push(format!(
                "{stopped} provider(s) stopped after an authentication failure"
            ));
        }
        if !s.failed_stages.is_empty() {
            p.push(format!(
                "stage ended unexpectedly: {}",
                s.failed_stages.join(", ")
            ));
        }
        p
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Arc<Readiness>,
    explainer: Option<Explainer>,
}

#[derive(serde::Deserialize)]
struct ExplainQuery {
    url: Option<String>,
}

async fn explain(
    State(s): State<AppState>,
    Query(q): Query<ExplainQuery>,
) -> (StatusCode, Json<serde_json::Value>) {
    let err = |code: StatusCode, msg: String| (code, Json(serde_json::json!({ "error": msg })));
    let Some(explainer) = &s.explainer else {
        return err(StatusCode::NOT_FOUND, "explain is not served here".into());
    };
    let Some(url) = q.url.filter(|u| !u.is_empty()) else {
        return err(
            StatusCode::BAD_REQUEST,
            "give the URL: /explain?url=https://...".into(),
        );
    };
    match explainer.explain(&url).await {
        Ok(e) => (
            StatusCode::OK,
            Json(serde_json::to_value(&e).unwrap_or_default()),
        ),
        Err(ExplainError::BadUrl(why)) => err(StatusCode::BAD_REQUEST, format!("url: {why}")),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let problems = s.readiness.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}

/// Binds `listen` and serves until `shutdown`; returns the bound address (port 0 allowed).
/// `/explain` answers 404 without an `explainer`.
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    explainer: Option<Explainer>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/explain", get(explain))
        .with_state(AppState {
            metrics,
            readiness,
            explainer,
        });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((addr, task))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ready(m: &Metrics, dependency: &str) -> i64 {
        m.ready.with_label_values(&[dependency]).get()
    }

    #[test]
    fn purge_ready_follows_every_readiness_input() {
        let m = Metrics::new();
        let r = Readiness::new(&m);
        assert_eq!(r.problems().len(), 2, "not ready before anything connected");
        assert_eq!(
            (
                ready(&m, "amqp"),
                ready(&m, "redis"),
                ready(&m, "providers")
            ),
            (0, 0, 1)
        );

        r.set_amqp(true);
        r.set_redis(true);
        assert!(r.problems().is_empty());
        assert_eq!((ready(&m, "amqp"), ready(&m, "redis")), (1, 1));

        r.provider_stopped(true);
        r.provider_stopped(true);
        r.provider_stopped(false);
        assert_eq!(ready(&m, "providers"), 0, "one provider still stopped");
        assert_eq!(r.problems().len(), 1);
        r.provider_stopped(false);
        assert_eq!(ready(&m, "providers"), 1);
        r.provider_stopped(false);
        assert_eq!(
            ready(&m, "providers"),
            1,
            "an unmatched resume does not wrap"
        );
        assert!(r.problems().is_empty());

        r.set_redis(false);
        r.set_amqp(false);
        assert_eq!((ready(&m, "amqp"), ready(&m, "redis")), (0, 0));
        assert_eq!(ready(&m, "stages"), 1);
        r.stage_failed("dispatcher cdn");
        assert_eq!(ready(&m, "stages"), 0, "a dead stage turns purge_ready red");
        assert!(m.render().contains("purge_ready{dependency=\"amqp\"} 0"));
    }

    #[test]
    fn a_readiness_without_metrics_still_answers() {
        let r = Readiness::default();
        r.set_amqp(true);
        r.set_redis(true);
        assert!(r.problems().is_empty());
        r.stage_failed("ledger");
        assert_eq!(r.problems(), ["stage ended unexpectedly: ledger"]);
    }
}
