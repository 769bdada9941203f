//! The queue-depth poller: every [`POLL_EVERY`] it reads how many messages are ready in the purge
//! queue, the bulk queue and the dead-letter queue (a passive `queue.declare`, whose reply carries
//! the ready count; unacked deliveries are not included) and exports them as
//! `purge_queue_messages{queue="purge"|"bulk"|"dead_letter"}`.
//!
//! It reads through the consumer's connection rather than a connection of its own. The supervisor
//! (`worker::consumer::supervise`) already rebuilds that connection after a broker cut (bounded
//! backoff, no lapin auto-recovery: see [`crate::amqp`]) and attaches each new one to a
//! [`ConnectionSlot`], as it attaches the [`Publisher`](crate::amqp::Publisher). One connection
//! per worker also keeps the broker's connection list, and tests that count connections, honest.
//!
//! The poller opens a channel of its own on that connection. A passive declare of a missing queue
//! is a channel-level error (404) that closes the channel: any failed read drops the channel and
//! the next read opens a fresh one, and a missing queue is re-checked after a pause that doubles
//! up to [`MAX_MISSING_PAUSE`] (each 404 also makes lapin log the channel error). While a count
//! cannot be read its series is removed, so a dashboard shows a gap rather than a stale number;
//! `purge_ready{dependency="amqp"}` tells when RabbitMQ itself is the reason. An outage is logged
//! once when it starts (the rest at debug) and once when it ends.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::amqp::AmqpConfig;
use crate::metrics::{Metrics, QUEUE_BULK, QUEUE_DEAD_LETTER, QUEUE_PURGE};

/// How often the queues are read. A passive declare is cheap for the broker; 5 s is finer than a
/// usual scrape interval, so alerts see fresh values without the poller adding load.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// The longest pause between checks of a queue that does not exist (each check makes the broker
/// close a channel and lapin log an error, so a deleted queue should not do that every tick).
pub const MAX_MISSING_PAUSE: Duration = Duration::from_secs(60);
/// How long one channel open or declare may take before the read counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the supervisor publishes its current connection (or none while reconnecting) for the
/// poller to read through.
#[derive(Debug)]
pub struct ConnectionSlot(watch::Sender<Option<Arc<Connection>>>);

impl Default for ConnectionSlot {
    fn default() -> Self {
        ConnectionSlot(watch::Sender::new(None))
    }
}

impl ConnectionSlot {
    /// Reads go through `conn` from now on (called once its topology is declared).
    pub fn attach(&self, conn: &Arc<Connection>) {
        self.0.send_replace(Some(conn.clone()));
    }

    /// No connection (it was lost): the counts are unknown until the next `attach`.
    pub fn detach(&self) {
        self.0.send_replace(None);
    }
}

/// Starts polling every [`POLL_EVERY`] until `shutdown`.
pub fn spawn(
    amqp: &AmqpConfig,
    slot: &ConnectionSlot,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    spawn_every(POLL_EVERY, amqp, slot, metrics, shutdown)
}

/// [`spawn`] with another period (tests use a short one).
pub fn spawn_every(
    period: Duration,
    amqp: &AmqpConfig,
    slot: &ConnectionSlot,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let watched = |role, queue: &String| Watched {
        role,
        queue: queue.clone(),
        failing: None,
        next_check: None,
        missing_pause: period,
    };
    let poller = Poller {
        queues: vec![
            watched(QUEUE_PURGE, &amqp.queue),
            watched(QUEUE_BULK, &amqp.bulk_queue),
            watched(QUEUE_DEAD_LETTER, &amqp.dead_letter_queue),
        ],
        metrics,
        period,
        channel: None,
    };
    let conn = slot.0.subscribe();
    tokio::spawn(
        poller
            .run(conn, shutdown)
            .instrument(tracing::info_span!("queue_depth")),
    )
}

/// Why a count could not be read.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// No connection: the supervisor is reconnecting and already reports the outage.
    NotConnected,
    /// The broker says the queue does not exist (404).
    Missing,
    /// Anything else (channel refused, timeout, connection lost mid-read).
    Error(String),
}

impl Failure {
    fn of(e: &lapin::Error) -> Failure {
        match e.kind() {
            lapin::ErrorKind::ProtocolError(p)
                if *p.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) =>
            {
                Failure::Missing
            }
            _ => Failure::Error(e.to_string()),
        }
    }
}

/// One polled queue.
struct Watched {
    /// The `queue` label.
    role: &'static str,
    queue: String,
    /// The failure being reported, while reads keep failing: an outage is logged once.
    failing: Option<Failure>,
    /// After a 404: not checked again before this instant.
    next_check: Option<Instant>,
    /// The pause after the next 404.
    missing_pause: Duration,
}

struct Poller {
    queues: Vec<Watched>,
    metrics: Metrics,
    period: Duration,
    /// The poller's channel and the connection it belongs to.
    channel: Option<(Arc<Connection>, Channel)>,
}

impl Poller {
    async fn run(
        mut self,
        mut conn: watch::Receiver<Option<Arc<Connection>>>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
                changed = conn.changed() => {
                    // The supervisor is gone: the worker is stopping.
                    if changed.is_err() {
                        break;
                    }
                    // A new connection (or none): read at once, then every period again.
                    tick.reset();
                }
            }
            let current = conn.borrow_and_update().clone();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.poll(current) => {}
            }
        }
        if let Some((_, ch)) = self.channel.take() {
            let _ = tokio::time::timeout(READ_TIMEOUT, ch.close(200, "ok".into())).await;
        }
    }

    /// Reads every queue that is due, through `conn`.
    async fn poll(&mut self, conn: Option<Arc<Connection>>) {
        let Some(conn) = conn.filter(|c| c.status().connected()) else {
            self.channel = None;
            for i in 0..self.queues.len() {
                self.unreadable(i, Failure::NotConnected);
            }
            return;
        };
        if !matches!(&self.channel, Some((c, _)) if Arc::ptr_eq(c, &conn)) {
            self.channel = None;
        }
        for i in 0..self.queues.len() {
            if self.queues[i]
                .next_check
                .is_some_and(|t| Instant::now() < t)
            {
                continue;
            }
            let read = tokio::time::timeout(READ_TIMEOUT, self.read(&conn, i)).await;
            match read {
                Ok(Ok(count)) => self.readable(i, count),
                Ok(Err(e)) => {
                    // A refused declare closed the channel; any other error leaves it suspect.
                    self.channel = None;
                    self.unreadable(i, Failure::of(&e));
                }
                Err(_) => {
                    self.channel = None;
                    let e = format!("no answer within {READ_TIMEOUT:?}");
                    self.unreadable(i, Failure::Error(e));
                }
            }
        }
    }

    /// The ready count of queue `i`, opening a channel on `conn` first when there is none.
    async fn read(&mut self, conn: &Arc<Connection>, i: usize) -> Result<u32, lapin::Error> {
        let ch = match &self.channel {
            Some((_, ch)) if ch.status().connected() => ch.clone(),
            _ => {
                self.channel = None;
                let ch = conn.create_channel().await?;
                self.channel = Some((conn.clone(), ch.clone()));
                ch
            }
        };
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let q = ch
            .queue_declare(
                self.queues[i].queue.as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await?;
        Ok(q.message_count())
    }

    fn readable(&mut self, i: usize, count: u32) {
        let q = &mut self.queues[i];
        self.metrics.queue_messages(q.role).set(i64::from(count));
        match q.failing.take() {
            Some(Failure::NotConnected) | None => {}
            Some(_) => {
                info!(queue = %q.queue, role = q.role, messages = count, "queue depth readable again")
            }
        }
        q.next_check = None;
        q.missing_pause = self.period;
    }

    fn unreadable(&mut self, i: usize, failure: Failure) {
        let q = &mut self.queues[i];
        // Absent rather than stale; an error only means the series was already gone.
        let _ = self.metrics.queue_messages.remove_label_values(&[q.role]);
        if failure == Failure::Missing {
            q.next_check = Some(Instant::now() + q.missing_pause);
            q.missing_pause = (q.missing_pause * 2).min(MAX_MISSING_PAUSE);
        }
        // Once per outage: a new kind of failure is news, a changed error text is not.
        let first = q.failing.as_ref().map(std::mem::discriminant)
            != Some(std::mem::discriminant(&failure));
        match &failure {
            Failure::Missing if first => warn!(
                queue = %q.queue, role = q.role,
                "queue does not exist; its depth is not reported until it is declared again"
            ),
            Failure::Error(e) if first => warn!(
                queue = %q.queue, role = q.role, error = %e,
                "cannot read the queue depth; retrying"
            ),
            f => {
                debug!(queue = %q.queue, role = q.role, failure = ?f, "queue depth not readable")
            }
        }
        q.failing = Some(failure);
    }
}
