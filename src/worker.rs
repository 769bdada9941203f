//! Wires the stages together and owns the lifecycle: `Worker::start(config, shutdown)`.
//!
//! Shutdown is the caller's `CancellationToken`; the stage tasks stop on a child of it that a
//! stage failure cancels too (see `supervisor`, which tracks them in a `TaskTracker`). On cancel,
//! in order: the consumer cancels its subscription and drops its senders; each dispatcher drains
//! (flushes what it can within `drain_timeout`); the ledger acks what completed; then the
//! consuming channel and the connection close, which makes the broker requeue whatever is still
//! unacked. Nothing is acked that was not purged, parked or dead-lettered. The whole drain is
//! bounded by `drain_timeout` plus a short grace for the last acks and closes.

mod consumer;
mod supervisor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp::Publisher;
use crate::config::{Config, ProviderConfig};
use crate::control::{self, ControlStore};
use crate::dispatch::{self, Control, DispatchState, DispatcherParts, Incoming};
use crate::http::{self, Readiness};
use crate::metrics::Metrics;
use crate::provider::{Provider, api};
use crate::queue_depth::{self, ConnectionSlot};
use crate::quota::QuotaStore;
use crate::ratelimit::SharedWindows;
use crate::ratelimit::shared::SharedRate;
use crate::routing::Router;
use crate::tracking;

use supervisor::Supervisor;

/// Messages buffered between the consumer and each dispatcher (each message is one delivery's
/// items for that provider); prefetch is the real bound on memory.
const DISPATCH_CHANNEL: usize = 1024;
/// Ledger messages buffered.
const LEDGER_CHANNEL: usize = 4096;
/// Time the drain may take beyond `drain_timeout` (the dispatchers' own bound) for the ledger's
/// last acks and the closes; past both, the worker stops waiting.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How often Redis is pinged for `/readyz`.
const REDIS_PING_EVERY: Duration = Duration::from_secs(2);

/// Builds the client for a provider's API family.
pub fn build_provider(cfg: &ProviderConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let context = || format!("building the HTTP client for provider `{}`", cfg.name);
    api::build(&cfg.account(), &cfg.options).with_context(context)
}

/// A running worker.
pub struct Worker {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (useful with port 0).
    pub http_addr: SocketAddr,
    /// Where `POST /v1/purges` is served, when `http.ingest_listen` is set.
    pub ingest_addr: Option<SocketAddr>,
    /// The worker's metrics (tests read them directly).
    pub metrics: Metrics,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Worker {
    /// Starts every stage and returns once the HTTP endpoint is bound; RabbitMQ and Redis are
    /// connected in the background (and reconnected whenever they go away).
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Worker> {
        let providers = config
            .providers
            .iter()
            .map(build_provider)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Worker::start_with_providers(config, providers, shutdown).await
    }

    /// [`Worker::start`] with the provider clients given, one per `config.providers` entry in the
    /// same order: tests inject clients that fail in ways no real API can be made to.
    pub async fn start_with_providers(
        config: Config,
        providers: Vec<Arc<dyn Provider>>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Worker> {
        anyhow::ensure!(
            providers.len() == config.providers.len(),
            "{} provider clients given for {} configured providers",
            providers.len(),
            config.providers.len()
        );
        let metrics = Metrics::new();
        let readiness = Arc::new(Readiness::new(&metrics));
        let quota = QuotaStore::connect(config.redis.url.expose(), &config.redis.key_prefix)
            .context("redis.url is not a usable Redis URL")?;
        let control_store =
            ControlStore::connect(config.redis.url.expose(), &config.redis.key_prefix)
                .context("redis.url is not a usable Redis URL")?;
        let http_shutdown = CancellationToken::new();
        let explainer = tracking::explain::Explainer::connect(
            config.redis.url.expose(),
            config.explain_sources(),
        )
        .context("redis.url is not a usable Redis URL")?;
        let (http_addr, http_task) = http::serve(
            config.listen,
            metrics.clone(),
            readiness.clone(),
            Some(explainer),
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

        // Every stage task is watched: one that dies turns /readyz red and stops the others.
        let stages = Supervisor::new(&shutdown, readiness.clone());
        let stop = stages.stop();
        let (ledger, ledger_task) = crate::ledger::spawn(metrics.clone(), LEDGER_CHANNEL);
        let sessions = crate::ledger::Sessions::default();
        stages.watch("ledger".into(), ledger_task);
        let publisher = Publisher::new(metrics.clone());
        let (lineage, lineage_task) = lineage_writer(&config, &metrics)?;
        // Ends once the consumer and the trackers (every handle) are gone.
        stages.watch("lineage writer".into(), lineage_task);
        let router = Arc::new(Router::new(
            config.providers.iter().map(ProviderConfig::routes),
        ));
        let mut senders = Vec::with_capacity(config.providers.len());
        let mut watched = Vec::with_capacity(config.providers.len());
        for (index, (p, provider)) in config.providers.iter().zip(providers).enumerate() {
            let (tx, rx) = mpsc::channel::<Vec<Incoming>>(DISPATCH_CHANNEL);
            senders.push(tx);
            let (control_tx, control_rx) = watch::channel(Control::default());
            let (state_tx, state_rx) = watch::channel(DispatchState::default());
            watched.push(control::watcher::Watched {
                name: p.name.clone(),
                control: control_tx,
                state: state_rx,
                paused_queue: config.amqp.paused_queue(&p.name),
            });
            let limiter = SharedWindows::new(&p.rate_limits);
            let (tracker, tracker_rx) = tracking::TrackerHandle::channel(&p.name);
            let store = tracking::store::TaskStore::connect(
                config.redis.url.expose(),
                &config.redis.key_prefix,
                &p.name,
            )
            .context("redis.url is not a usable Redis URL")?;
            let tracker_parts = tracking::TrackerParts {
                name: p.name.clone(),
                provider: provider.clone(),
                settings: config.tracking.clone(),
                store,
                purge_limiter: limiter.clone(),
                // Status queries have their own per-action limit where the API says so
                // (Tencent: 20 req/s per action); the purge windows are the conservative bound.
                status_limiter: SharedWindows::new(&p.rate_limits),
                quota: quota.clone(),
                shared_rate: Arc::new(tokio::sync::Mutex::new(SharedRate::new(
                    &config.redis.key_prefix,
                    &p.name,
                    &p.rate_limits,
                    config.redis.shared_rate_limits,
                ))),
                quota_limits: [p.urls_per_day, p.dirs_per_day],
                quota_policy: p.quota_policy(),
                interactive_reserve: p.interactive_reserve,
                metrics: metrics.tracker(
                    &p.name,
                    if provider.capabilities().regex {
                        &crate::provider::Kind::ALL[..]
                    } else {
                        &[crate::provider::Kind::Url, crate::provider::Kind::Dir]
                    },
                ),
                publisher: publisher.clone(),
                dead_letter_queue: config.amqp.dead_letter_queue.clone(),
                lineage: lineage.clone(),
                prefetch: prefetch_parts(p, index, &router, provider.as_ref(), &limiter),
            };
            // The tracker stops on the stop token; the dispatcher hands over until it drains.
            stages.watch(
                format!("tracker {}", p.name),
                tracking::spawn(tracker_parts, tracker_rx, stop.clone()),
            );
            let parts = DispatcherParts {
                limits: p.dispatch_limits(),
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
                bulk_parking_queue: config.amqp.bulk_parking_queue(&p.name),
                dead_letter_queue: config.amqp.dead_letter_queue.clone(),
                limiter,
                tracker: Some(tracker),
                shared_rate: SharedRate::new(
                    &config.redis.key_prefix,
                    &p.name,
                    &p.rate_limits,
                    config.redis.shared_rate_limits,
                ),
                paused_queue: config.amqp.paused_queue(&p.name),
                control: control_rx,
                state: state_tx,
            };
            stages.watch(format!("dispatcher {}", p.name), dispatch::spawn(parts, rx));
        }
        // Reads queue depths through the consumer's connection, whichever one is current.
        let depth_slot = ConnectionSlot::default();
        let depth = queue_depth::spawn(&config.amqp, &depth_slot, metrics.clone(), stop.clone());
        stages.watch("queue depth poller".into(), depth);
        let watcher = control::watcher::Watcher {
            store: control_store,
            replica: control::replica_id(),
            providers: watched,
            amqp: config.amqp.clone(),
            publisher: publisher.clone(),
            connection: depth_slot.subscribe(),
        };
        stages.watch("control".into(), tokio::spawn(watcher.run(stop.clone())));
        let ingest_addr = match config.ingest.listen {
            None => None,
            Some(listen) => {
                let parts = crate::ingest::IngestParts {
                    settings: config.ingest.clone(),
                    publisher: publisher.clone(),
                    router: Router::new(config.providers.iter().map(ProviderConfig::routes)),
                    amqp: config.amqp.clone(),
                    max_event_bytes: config.batching.max_event_bytes,
                    readiness: readiness.clone(),
                    metrics: metrics.clone(),
                };
                // Stops with the other stages, before the publisher closes: no request is
                // answered 202 without a confirm.
                let (addr, task) = crate::ingest::serve(listen, parts, stop.clone())
                    .await
                    // The stages already started stop again.
                    .inspect_err(|_| stop.cancel())
                    .with_context(|| format!("cannot listen on http.ingest_listen = {listen}"))?;
                stages.watch("http ingest".into(), task);
                info!(%addr, tokens = config.ingest.tokens.len(), "HTTP ingest listening on POST /v1/purges");
                Some(addr)
            }
        };
        let ctx = consumer::Consumer {
            router: (*router).clone(),
            lineage,
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
        let consumer = stages.watch(
            "consumer".into(),
            tokio::spawn(consumer::supervise(ctx, stop.clone())),
        );
        let bound = config.batching.drain_timeout + CLOSE_GRACE;
        let task = tokio::spawn(async move {
            tokio::select! {
                () = drain(&stages, consumer, publisher) => {}
                () = async { stop.cancelled().await; tokio::time::sleep(bound).await } => {
                    // Dropping the drain drops the connection: the broker requeues what is unacked.
                    warn!(bound_ms = bound.as_millis() as u64,
                        "the drain did not finish in time; unacked deliveries will be redelivered");
                }
            }
            http_shutdown.cancel();
            let _ = pinger.await;
            let _ = http_task.await;
            stages.result()?;
            info!("purge-worker stopped");
            Ok(())
        });
        Ok(Worker {
            http_addr,
            ingest_addr,
            metrics,
            task,
        })
    }

    /// Waits until the worker has shut down: `Err` when a stage ended unexpectedly (the worker
    /// then stops by itself, without the shutdown token; the process should exit 1).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("worker task panicked")?
    }
}

/// The shutdown order, once the stop token is cancelled (requested, or a stage failed): the
/// consumer cancels its subscription and drops its senders (no new items); each dispatcher
/// flushes within `drain_timeout` and ends; the ledger, whose last senders they held, sends every
/// ack and ends; only then are the consuming channel, the publisher and the connection closed.
async fn drain(
    stages: &Supervisor,
    consumer: JoinHandle<Option<Option<consumer::OpenSession>>>,
    publisher: Publisher,
) {
    let open = consumer.await.ok().flatten().flatten();
    stages.wait().await;
    publisher.close().await;
    let Some((conn, channels)) = open else { return };
    // Closing the channels after their acks: the broker handles a channel's frames in order.
    for channel in channels {
        if let Err(e) = channel.close(200, "purge-worker drained".into()).await {
            tracing::debug!(error = %e, "closing a consuming channel reported an error");
        }
    }
    if let Err(e) = conn.close(200, "purge-worker shutting down".into()).await {
        // Harmless at this point (e.g. a channel already closing): the broker requeues
        // whatever is unacked when the connection goes away.
        tracing::debug!(error = %e, "closing the RabbitMQ connection reported an error");
    }
}

/// The lineage writer for `explain` (its own Redis connection, made lazily).
fn lineage_writer(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<(tracking::lineage::LineageHandle, JoinHandle<()>)> {
    let client = redis::Client::open(config.redis.url.expose())
        .context("redis.url is not a usable Redis URL")?;
    let c = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    let conn = client
        .get_connection_manager_lazy(c)
        .context("redis.url is not a usable Redis URL")?;
    Ok(tracking::lineage::spawn_writer(
        conn,
        tracking::lineage::LineageKeys::new(&config.redis.key_prefix),
        tracking::lineage::WriterSettings {
            ttl: config.tracking.lineage_ttl,
            events_per_key: config.tracking.lineage_events_per_key,
        },
        metrics.lineage(),
    ))
}

/// Prefetch after purge for provider `p`, when one of its domains asks for it and its API has
/// prefetches. Wangsu's prefetches spend the one API budget; Tencent's `PushUrlsCache` has its
/// own (the purge windows are the conservative bound).
fn prefetch_parts(
    p: &crate::config::ProviderConfig,
    index: usize,
    router: &Arc<Router>,
    provider: &dyn Provider,
    purge_limiter: &SharedWindows,
) -> Option<tracking::PrefetchParts> {
    let wanted = p.domains.iter().any(|d| d.prefetch_after_purge);
    if !wanted || provider.prefetch_per_call() == 0 || p.prefetch_per_day == 0 {
        return None;
    }
    let wangsu = provider.status_shares_purge_budget();
    Some(tracking::PrefetchParts {
        router: router.clone(),
        index,
        limiter: if wangsu {
            purge_limiter.clone()
        } else {
            SharedWindows::new(&p.rate_limits)
        },
        per_day: p.prefetch_per_day,
        policy: crate::quota::QuotaPolicy {
            window: if wangsu {
                crate::quota::QuotaWindow::Rolling24h
            } else {
                crate::quota::QuotaWindow::Day
            },
            // Tencent counts prefetches per UTC+8 day.
            utc_offset_secs: 8 * 3600,
        },
    })
}

/// Runs the worker until `shutdown` is cancelled and the drain has finished.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Worker::start(config, shutdown).await?.wait().await
}
