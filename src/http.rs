//! `/metrics`, `/healthz` and `/readyz` (CONTRACT §5).
//!
//! `/healthz` is 200 while the process runs. `/readyz` is 200 only while RabbitMQ and Redis are
//! connected and no provider has stopped calls after an authentication failure; the body says
//! which check fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The readiness inputs, set by the tasks that know them.
#[derive(Debug, Default)]
pub struct Readiness {
    amqp: AtomicBool,
    redis: AtomicBool,
    stopped_providers: AtomicUsize,
}

impl Readiness {
    /// Whether the consumer is connected to RabbitMQ.
    pub fn set_amqp(&self, up: bool) {
        self.amqp.store(up, Ordering::Relaxed);
    }
    /// Whether Redis answered the last PING.
    pub fn set_redis(&self, up: bool) {
        self.redis.store(up, Ordering::Relaxed);
    }
    /// A provider stopped (`true`) or resumed (`false`) calls after an auth failure.
    pub fn provider_stopped(&self, stopped: bool) {
        if stopped {
            self.stopped_providers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stopped_providers.fetch_sub(1, Ordering::Relaxed);
        }
    }
    /// Every check that fails, empty when ready.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.amqp.load(Ordering::Relaxed) {
            p.push("rabbitmq: not connected".to_string());
        }
        if !self.redis.load(Ordering::Relaxed) {
            p.push("redis: not answering".to_string());
        }
        let stopped = self.stopped_providers.load(Ordering::Relaxed);
        if stopped > 0 {
            p.push(format!(
                "{stopped} provider(s) stopped after an authentication failure"
            ));
        }
        p
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Arc<Readiness>,
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
pub async fn serve(
    listen: SocketAddr,
    metrics: Metrics,
    readiness: Arc<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok((addr, task))
}
