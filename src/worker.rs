//! Wires the stages together and owns the lifecycle: `Worker::start(config, shutdown)`.
//!
//! Shutdown is one `CancellationToken`. On cancel, in order: the consumer cancels its
//! subscription and drops its senders; each dispatcher drains (flushes what it can within
//! `drain_timeout`); the ledger acks what completed; then the connection closes, which makes the
//! broker requeue whatever is still unacked. Nothing is acked that was not purged, parked or
//! dead-lettered.

mod consumer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::amqp::Publisher;
use crate::config::{Config, ProviderConfig, ProviderKind};
use crate::dispatch::{self, DispatcherParts, Incoming};
use crate::http::{self, Readiness};
use crate::metrics::Metrics;
use crate::provider::Provider;
use crate::provider::tencent_v2::TencentV2;
use crate::provider::tencent_v3::TencentV3;
use crate::provider::wangsu::Wangsu;
use crate::queue_depth::{self, ConnectionSlot};
use crate::quota::QuotaStore;
use crate::routing::Router;

/// Messages buffered between the consumer and each dispatcher (each message is one delivery's
/// items for that provider); prefetch is the real bound on memory.
const DISPATCH_CHANNEL: usize = 1024;
/// Ledger messages buffered.
const LEDGER_CHANNEL: usize = 4096;
/// How often Redis is pinged for `/readyz`.
const REDIS_PING_EVERY: Duration = Duration::from_secs(2);

/// Builds the client for a provider's API family.
pub fn build_provider(cfg: &ProviderConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let context = || format!("building the HTTP client for provider `{}`", cfg.name);
    Ok(match cfg.kind {
        ProviderKind::TencentV3 => Arc::new(TencentV3::new(cfg).with_context(context)?),
        ProviderKind::TencentV2 => Arc::new(TencentV2::new(cfg).with_context(context)?),
        ProviderKind::Wangsu => Arc::new(Wangsu::new(cfg).with_context(context)?),
    })
}

/// A running worker.
pub struct Worker {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (useful with port 0).
    pub http_addr: SocketAddr,
    /// The worker's metrics (tests read them directly).
    pub metrics: Metrics,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    /// Starts every stage and returns once the HTTP endpoint is bound; RabbitMQ and Redis are
    /// connected in the background (and reconnected whenever they go away).
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Worker> {
        let metrics = Metrics::new();
        let readiness = Arc::new(Readiness::new(&metrics));
        let quota = QuotaStore::connect(config.redis.url.expose(), &config.redis.key_prefix)
            .context("redis.url is not a usable Redis URL")?;
        let http_shutdown = CancellationToken::new();
        let (http_addr, http_task) = http::serve(
            config.listen,
            metrics.clone(),
            readiness.clone(),
            http_shutdown.clone(),
        )
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.listen))?;

        let pinger = {
            let (quota, readiness, stop) =
                (quota.clone(), readiness.clone(), http_shutdown.clone());
            tokio::spawn(async move {
                loop {
                    readiness.set_redis(quota.ping().await);
                    tokio::select! {
                        _ = tokio::time::sleep(REDIS_PING_EVERY) => {}
                        _ = stop.cancelled() => break,
                    }
                }
            })
        };

        let (ledger, ledger_task) = crate::ledger::spawn(metrics.clone(), LEDGER_CHANNEL);
        let sessions = crate::ledger::Sessions::default();
        let publisher = Publisher::new(metrics.clone());
        let mut senders = Vec::with_capacity(config.providers.len());
        let mut dispatchers = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            let provider = build_provider(p)?;
            let (tx, rx) = mpsc::channel::<Vec<Incoming>>(DISPATCH_CHANNEL);
            senders.push(tx);
            dispatchers.push(dispatch::spawn(
                DispatcherParts {
                    config: p.clone(),
                    provider,
                    quota: quota.clone(),
                    ledger: ledger.clone(),
                    publisher: publisher.clone(),
                    metrics: metrics.clone(),
                    readiness: readiness.clone(),
                    sessions: sessions.clone(),
                    linger: config.batching.max_linger,
                    drain_timeout: config.batching.drain_timeout,
                    parking_queue: config.amqp.parking_queue(&p.name),
                    dead_letter_queue: config.amqp.dead_letter_queue.clone(),
                },
                rx,
            ));
        }
        // Reads queue depths through the consumer's connection, whichever one is current.
        let depth_slot = ConnectionSlot::default();
        let depth =
            queue_depth::spawn(&config.amqp, &depth_slot, metrics.clone(), shutdown.clone());
        let ctx = consumer::Consumer {
            router: Router::new(&config.providers),
            provider_names: config.providers.iter().map(|p| p.name.clone()).collect(),
            config: config.clone(),
            senders,
            ledger,
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            queue_depth: depth_slot,
            sessions: sessions.clone(),
            epoch: 0,
            next_seq: 0,
        };
        let task = tokio::spawn(async move {
            // Runs until shutdown; returns the live connection so acks can still be sent.
            let conn = consumer::supervise(ctx, shutdown).await;
            let _ = depth.await;
            for d in dispatchers {
                let _ = d.await;
            }
            let _ = ledger_task.await;
            publisher.close().await;
            if let Some(conn) = conn
                && let Err(e) = conn.close(200, "purge-worker shutting down".into()).await
            {
                // Harmless at this point (e.g. a channel already closing): the broker requeues
                // whatever is unacked when the connection goes away.
                tracing::debug!(error = %e, "closing the RabbitMQ connection reported an error");
            }
            http_shutdown.cancel();
            let _ = pinger.await;
            let _ = http_task.await;
            info!("purge-worker stopped");
            Ok(())
        });
        Ok(Worker {
            http_addr,
            metrics,
            task,
        })
    }

    /// Waits until the worker has shut down.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("worker task panicked")?
    }
}

/// Runs the worker until `shutdown` is cancelled and the drain has finished.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Worker::start(config, shutdown).await?.wait().await
}
