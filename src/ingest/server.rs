//! The ingest's HTTP server: one route, `POST /v1/purges`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_lite::StreamExt;
use lapin::BasicProperties;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Settings;
use crate::amqp::AmqpConfig;
use crate::amqp::Publisher;
use crate::cache_key::clip;
use crate::event;
use crate::http::Readiness;
use crate::metrics::Metrics;
use crate::metrics::ops::INGEST_CODES;
use crate::routing::Router as HostRouter;

/// The longest a request waits for the broker's confirm before it is answered 503 (the caller
/// retries; the event may then arrive twice, never not at all).
const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// Problems listed in a 400 answer at most (the count says how many there were).
const MAX_PROBLEMS: usize = 100;

/// Everything the ingest needs, injected.
pub struct IngestParts {
    pub settings: Settings,
    pub publisher: Publisher,
    pub router: HostRouter,
    pub amqp: AmqpConfig,
    pub max_event_bytes: usize,
    pub readiness: Arc<Readiness>,
    pub metrics: Metrics,
}

struct Shared {
    p: IngestParts,
    counters: [prometheus::IntCounter; 7],
}

/// Binds `listen` and serves until `stop`; returns the bound address (port 0 allowed).
pub async fn serve(
    listen: SocketAddr,
    parts: IngestParts,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let counters = parts.metrics.ops.ingest_counters();
    let shared = Arc::new(Shared { p: parts, counters });
    let app = Router::new()
        .route("/v1/purges", post(purge))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            warn!(error = %e, "the HTTP ingest server failed");
        }
    });
    Ok((addr, task))
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, axum::Json(body)).into_response()
}

fn problem(code: StatusCode, error: &str, reason: &str) -> Response {
    answer(
        code,
        json!({ "error": error, "problems": [{ "code": error, "reason": reason }] }),
    )
}

async fn purge(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let timer = s.p.metrics.ops.ingest_duration.start_timer();
    let r = handle(&s, &headers, body).await;
    timer.observe_duration();
    let code = r.status().as_u16();
    if let Some(i) = INGEST_CODES.iter().position(|c| *c == code) {
        s.counters[i].inc();
    }
    r
}

async fn handle(s: &Shared, headers: &HeaderMap, body: Body) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(caller) = presented.and_then(|t| s.p.settings.authenticate(t)) else {
        let mut r = problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    let max = s.p.max_event_bytes;
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "event_too_large",
            &format!("the event is larger than batching.max_event_bytes ({max} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    // Read at most `max` bytes, whatever the body claims.
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return problem(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                "the request body could not be read",
            );
        };
        if bytes.len() + chunk.len() > max {
            return too_large();
        }
        bytes.extend_from_slice(&chunk);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut ev = match event::decode(&bytes, ct, max) {
        Ok(ev) => ev,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let (items, rejected) = event::validate(&ev, &s.p.router);
    if items.is_empty() {
        let problems: Vec<Value> = rejected
            .iter()
            .take(MAX_PROBLEMS)
            .map(|r| json!({ "code": r.error.code(), "reason": r.error.to_string(), "item": clip(&r.raw, 2048) }))
            .collect();
        let (code, reason) = match rejected.first() {
            Some(r) => (r.error.code(), "the event has no valid item".to_string()),
            None => ("no_items", "the event has no item".to_string()),
        };
        return answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": code, "reason": reason, "problems_total": rejected.len(), "problems": problems }),
        );
    }
    let id = ev
        .id
        .clone()
        .unwrap_or_else(|| format!("http-{:016x}", rand::random::<u64>()));
    ev.id = Some(id.clone());
    let unavailable = || {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "RabbitMQ is unreachable; nothing was accepted, retry later",
        )
    };
    if !s.p.readiness.amqp_connected() {
        return unavailable();
    }
    let Ok(body) = serde_json::to_vec(&ev) else {
        return unavailable();
    };
    let queue = crate::relay::queue_for(&s.p.amqp, ev.priority);
    let props = BasicProperties::default().with_content_type("application/json".into());
    match tokio::time::timeout(CONFIRM_WAIT, s.p.publisher.publish(queue, &body, props)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(error = %e, caller, event_id = %id, "ingest publish failed; answering 503");
            return unavailable();
        }
        Err(_) => {
            warn!(caller, event_id = %id, "no publish confirm in time; answering 503");
            return unavailable();
        }
    }
    info!(caller, event_id = %id, event_source = ev.source.as_deref(), items = items.len(),
        refused = rejected.len(), "event accepted over HTTP");
    answer(
        StatusCode::ACCEPTED,
        json!({ "id": id, "items": items.len(), "refused": rejected.len() }),
    )
}
