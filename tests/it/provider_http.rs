//! Provider answers are hostile input: bounded, and never a reason to send a signed call elsewhere.
//!
//! Property 1 (bounded read): an API that answers 5 MiB with a Content-Length, or 64 MiB chunked
//! without one, yields a transient `ResponseTooLarge` from every provider kind; the worker reads
//! at most 1 MiB of it.
//! Property 2 (no redirects): an API that answers `302 Location: <another server>` yields a
//! transient `HttpRedirect.302`, and the other server is never hit (the signed request, with its
//! credentials, never leaves the configured endpoint).
//! Pass: the errors above for tencent-v3, tencent-v2 and wangsu, and a hit count of 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::kind_lines;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use purge_worker::config::{Config, RawConfig};
use purge_worker::provider::{Batch, FlushType, Kind, MAX_ANSWER_BYTES, ProviderError};

const BIG: usize = 5 * 1024 * 1024;
/// The chunked answer: far more than socket buffers hold, so what the server got to send shows
/// whether the client stopped reading.
const ENDLESS: usize = 64 * 1024 * 1024;

/// Serves `app` on an ephemeral port until the test ends.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Every kind's provider, signing with the emulator's credentials, pointed at `addr`.
fn providers(addr: SocketAddr) -> Vec<Arc<dyn purge_worker::provider::Provider>> {
    ["tencent-v3", "tencent-v2", "wangsu"]
        .iter()
        .map(|kind| {
            let t = format!(
                "[[providers]]\nname = \"p\"\nendpoint = \"http://{addr}\"\n{}\
                 request_timeout_ms = 20000\n[[providers.domains]]\nhost = \"www.example.com\"\n",
                kind_lines(kind)
            );
            let raw: RawConfig = toml::from_str(&t).expect("toml");
            let config = Config::from_raw(raw).expect("valid");
            purge_worker::worker::build_provider(&config.providers[0]).expect("provider")
        })
        .collect()
}

fn batch() -> Batch {
    Batch {
        kind: Kind::Url,
        flush_type: FlushType::Flush,
        items: vec!["https://www.example.com/a.html".into()],
        headers: Vec::new(),
    }
}

#[track_caller]
fn assert_transient(result: Result<purge_worker::provider::Receipt, ProviderError>, want: &str) {
    match result {
        Err(ProviderError::Transient { code, .. }) => assert_eq!(code, want),
        other => panic!("expected a transient {want}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_huge_answer_is_refused_after_a_bounded_read() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let app = Router::new()
        .route(
            "/{*path}",
            axum::routing::any(|| async { vec![b'x'; BIG].into_response() }),
        )
        .route(
            "/",
            axum::routing::any(|| async { vec![b'x'; BIG].into_response() }),
        );
    let with_length = serve(app).await;
    // Chunked, no Content-Length: only the streaming bound can stop it. Counts what it sends.
    let chunked = move || {
        let counter = counter.clone();
        async move {
            let chunks = (0..ENDLESS / 65536).map(move |_| {
                counter.fetch_add(65536, Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'{'; 65536]))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(futures_lite::stream::iter(chunks)))
                .expect("response")
        }
    };
    let app = Router::new()
        .route("/{*path}", axum::routing::any(chunked.clone()))
        .route("/", axum::routing::any(chunked));
    let without_length = serve(app).await;

    for addr in [with_length, without_length] {
        for p in providers(addr) {
            assert_transient(p.purge(&batch()).await, "ResponseTooLarge");
        }
    }
    // Each call stopped reading at the bound; the rest is what loopback buffers took in.
    let streamed = sent.load(Ordering::Relaxed);
    assert!(
        streamed < 3 * (MAX_ANSWER_BYTES + 16 * 1024 * 1024),
        "{streamed} bytes produced for 3 calls of {ENDLESS}"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let record = move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::Relaxed);
            "{}"
        }
    };
    let elsewhere = serve(
        Router::new()
            .route("/{*path}", axum::routing::any(record.clone()))
            .route("/", axum::routing::any(record)),
    )
    .await;
    let redirect = move || async move {
        Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("http://{elsewhere}/stolen"))
            .body(Body::empty())
            .expect("response")
    };
    let api = serve(
        Router::new()
            .route("/{*path}", axum::routing::any(redirect))
            .route("/", axum::routing::any(redirect)),
    )
    .await;
    for p in providers(api) {
        assert_transient(p.purge(&batch()).await, "HttpRedirect.302");
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "the redirect target was hit"
    );
}
