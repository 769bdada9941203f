//! RabbitMQ plumbing: connecting, declaring the topology, and confirmed publishing.
//!
//! Connections do not use lapin's automatic recovery: under repeated connection cuts it was seen
//! to start recovering without reporting an error (so readiness stayed green while disconnected)
//! and, now and then, never to reconnect while spinning its I/O thread. A lost connection instead
//! ends the worker's session, and the supervisor (`worker::consumer::supervise`) rebuilds the
//! connection, topology, publisher and consumer from scratch, with its own backoff.
//!
//! A *channel* the broker closes (406 for a message over `max_message_size`, a property it
//! refuses) leaves the connection up, so the publisher reopens its channel itself rather than
//! failing every later dead letter and parking publish until the next reconnect.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::metrics::Metrics;

/// The first pause before reconnecting; it doubles per consecutive failure up to
/// [`AmqpConfig::reconnect`]'s longest (`amqp.reconnect_max_ms`, at least this).
pub const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// RabbitMQ settings.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    /// Connection URL (may carry the password, hence a [`Secret`](crate::secret::Secret)).
    pub url: crate::secret::Secret,
    /// The purge queue, declared durable if missing.
    pub queue: String,
    /// Where rejected events and items land with their reason.
    pub dead_letter_queue: String,
    /// Largest dead-letter record body; a bigger record carries a clipped copy of its event.
    pub dead_letter_max_bytes: usize,
    /// Unacked deliveries held at once (of the purge queue).
    pub prefetch: u16,
    /// The bulk queue: events consumed from it are bulk (re-indexes, `publish --file`). It has
    /// its own consumer and prefetch, so a bulk backlog never delays interactive deliveries.
    pub bulk_queue: String,
    /// Unacked deliveries of the bulk queue held at once.
    pub bulk_prefetch: u16,
    /// Pauses between reconnect attempts: from 0.5 s, doubling up to `reconnect_max_ms`.
    pub reconnect: crate::backoff::Backoff,
}

impl AmqpConfig {
    /// The queue where a provider's quota-parked items wait for the provider's day reset; its
    /// messages expire back into [`AmqpConfig::queue`].
    pub fn parking_queue(&self, provider: &str) -> String {
        format!("{}.parked.{}", self.queue, provider)
    }

    /// The queue where a provider's bulk items wait for their share of the quota to come back;
    /// its messages expire back into [`AmqpConfig::bulk_queue`], so they return as bulk.
    pub fn bulk_parking_queue(&self, provider: &str) -> String {
        format!("{}.parked.{}", self.bulk_queue, provider)
    }

    /// The queue a parked item of `priority` waits in.
    pub fn parking_queue_of(&self, provider: &str, priority: crate::event::Priority) -> String {
        match priority {
            crate::event::Priority::Interactive => self.parking_queue(provider),
            crate::event::Priority::Bulk => self.bulk_parking_queue(provider),
        }
    }
}

/// Failures of a confirmed publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to RabbitMQ")]
    NotConnected,
    #[error("RabbitMQ error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    #[error("RabbitMQ could not route the message to queue `{0}` (does it exist?)")]
    Unroutable(String),
    #[error("RabbitMQ did not confirm the publish within {0:?}")]
    Timeout(Duration),
}

/// How long a publish may wait for the broker's confirm before it counts as failed.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to open a fresh publish channel before a publish gives up (the caller retries later).
const REOPEN_ATTEMPTS: u32 = 3;
/// Pause after a failed channel open; grows linearly per attempt.
const REOPEN_PAUSE: Duration = Duration::from_millis(100);

/// A failed connection attempt. It names the broker by host and port only: the URL may carry a
/// password.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to RabbitMQ at {addr} (amqp.url): {source}")]
pub struct ConnectError {
    /// `host:port` of the broker.
    pub addr: String,
    #[source]
    source: lapin::Error,
}

/// `host:port` of an AMQP URL, for messages: never the user, password or vhost.
pub fn broker_addr(url: &str) -> String {
    let Ok(u) = url::Url::parse(url) else {
        return "the address in amqp.url (not a valid URL)".into();
    };
    let default_port = if u.scheme() == "amqps" { 5671 } else { 5672 };
    format!(
        "{}:{}",
        u.host_str().unwrap_or("localhost"),
        u.port().unwrap_or(default_port)
    )
}

/// Opens a connection (one attempt; the supervisor retries). `name` shows in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, props)
        .await
        .map_err(|source| ConnectError {
            addr: broker_addr(url),
            source,
        })
}

/// Declares `queue` durable, or accepts it as it is when it already exists with arguments of its
/// owner's (a quorum queue, a DLX policy...): redeclaring with different arguments is refused with
/// 406 and closes the channel, so a refused declare falls back to a passive check on a fresh
/// channel instead of failing the worker.
pub async fn ensure_queue(conn: &Connection, queue: &str) -> Result<(), lapin::Error> {
    let ch = conn.create_channel().await?;
    let declared = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await;
    if declared.is_ok() {
        let _ = ch.close(200, "ok".into()).await;
        return Ok(());
    }
    let ch = conn.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    ch.queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// Declares a provider's parking queue: durable, and its expired messages dead-letter back into
/// the purge queue through the default exchange. Each parked message carries an `expiration` that
/// ends at the provider's day reset; within one provider those instants never decrease in
/// publish order, so head-of-queue expiry releases them on time.
pub async fn ensure_parking_queue(
    conn: &Connection,
    parking: &str,
    purge_queue: &str,
) -> Result<(), lapin::Error> {
    let mut args = FieldTable::default();
    // LongString, never ShortString: RabbitMQ resets the connection on a ShortString argument.
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(purge_queue.to_string())),
    );
    let ch = conn.create_channel().await?;
    ch.queue_declare(parking.into(), QueueDeclareOptions::durable(), args)
        .await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// The connection a publisher works on and its current confirm-mode channel.
struct Attached {
    conn: Arc<Connection>,
    channel: Channel,
}

/// A confirmed publisher to named queues (default exchange, `mandatory`), shared by the consumer
/// and the dispatchers. The supervisor swaps the connection in after every (re)connect; the
/// publisher replaces a channel the broker closed on its own (bounded attempts).
#[derive(Clone)]
pub struct Publisher {
    attached: Arc<Mutex<Option<Attached>>>,
    /// Held while a channel is reopened, so concurrent publishers open one channel, not one each.
    reopening: Arc<tokio::sync::Mutex<()>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Publisher")
    }
}

/// A channel on `conn` with publisher confirms enabled.
async fn confirm_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

impl Publisher {
    /// A publisher with no channel yet (publishes fail with `NotConnected` until `attach`).
    pub fn new(metrics: Metrics) -> Publisher {
        Publisher {
            attached: Arc::new(Mutex::new(None)),
            reopening: Arc::new(tokio::sync::Mutex::new(())),
            metrics,
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Attached>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a confirm-mode channel on `conn` and publishes through it from now on; later
    /// channels (after the broker closed one) are opened on the same connection.
    pub async fn attach(&self, conn: &Arc<Connection>) -> Result<(), lapin::Error> {
        let channel = confirm_channel(conn).await?;
        *self.slot() = Some(Attached {
            conn: conn.clone(),
            channel,
        });
        Ok(())
    }

    /// Stops publishing (at shutdown or before a rebuild).
    pub fn detach(&self) {
        *self.slot() = None;
    }

    /// Detaches the channel and closes it cleanly (bounded wait), so closing the connection
    /// afterwards does not race a channel that is still closing.
    pub async fn close(&self) {
        let attached = self.slot().take();
        if let Some(a) = attached {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                a.channel.close(200, "purge-worker shutting down".into()),
            )
            .await;
        }
    }

    /// A channel to publish on: the current one, or a fresh one when the broker has closed it.
    async fn channel(&self) -> Result<Channel, PublishError> {
        let current = self
            .slot()
            .as_ref()
            .map(|a| a.channel.clone())
            .ok_or(PublishError::NotConnected)?;
        if current.status().connected() {
            return Ok(current);
        }
        self.reopen().await
    }

    /// Replaces a closed channel, at most [`REOPEN_ATTEMPTS`] times in a row. A connection that
    /// is down is not retried here: the supervisor rebuilds everything then.
    async fn reopen(&self) -> Result<Channel, PublishError> {
        let _one_at_a_time = self.reopening.lock().await;
        let (conn, current) = self
            .slot()
            .as_ref()
            .map(|a| (a.conn.clone(), a.channel.clone()))
            .ok_or(PublishError::NotConnected)?;
        // Another publisher may have reopened it while this one waited for the lock.
        if current.status().connected() {
            return Ok(current);
        }
        let mut last = None;
        for attempt in 1..=REOPEN_ATTEMPTS {
            if !conn.status().connected() {
                return Err(PublishError::NotConnected);
            }
            match confirm_channel(&conn).await {
                Ok(fresh) => {
                    let mut slot = self.slot();
                    // Installed only on the connection it was opened on: a rebuild may have
                    // swapped the connection (or detached it) meanwhile.
                    return match slot.as_mut() {
                        Some(a) if Arc::ptr_eq(&a.conn, &conn) => {
                            a.channel = fresh.clone();
                            tracing::info!("reopened the publish channel the broker had closed");
                            Ok(fresh)
                        }
                        _ => Err(PublishError::NotConnected),
                    };
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(REOPEN_PAUSE * attempt).await;
                }
            }
        }
        Err(last.map_or(PublishError::NotConnected, PublishError::Amqp))
    }

    /// Publishes persistently to `queue` and waits for the broker's confirm; an unroutable
    /// message (returned) or a nack is an error, so the caller keeps the source unacked.
    ///
    /// When the broker closes the channel under this publish, the publish is tried once more on
    /// a fresh channel. The closing may have been caused by another message on the shared
    /// channel, so one retry is worth it; a message that is itself refused (406 over-size)
    /// fails again and returns the error, and the next publish reopens the channel again.
    pub async fn publish(
        &self,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let ch = self.channel().await?;
        match self.publish_on(&ch, queue, body, props.clone()).await {
            Err(PublishError::Amqp(e)) if !ch.status().connected() => {
                tracing::warn!(error = %e, queue, "the broker closed the publish channel; retrying once on a fresh one");
                let fresh = self.reopen().await?;
                self.publish_on(&fresh, queue, body, props).await
            }
            other => other,
        }
    }

    async fn publish_on(
        &self,
        ch: &Channel,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), PublishError> {
        let timer = self.metrics.publish_duration.start_timer();
        let confirm = async {
            let pending = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    props.with_delivery_mode(2),
                )
                .await?;
            pending.await
        };
        let result = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| PublishError::Timeout(CONFIRM_TIMEOUT))??;
        timer.observe_duration();
        match result {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(queue.to_string())),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            // Only without confirm mode, which every channel of the publisher enables.
            Confirmation::NotRequested => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addr_names_host_and_port_but_never_credentials() {
        let addr = broker_addr("amqp://svc:s3cret@rabbit.example:5673/%2f?heartbeat=10");
        assert_eq!(addr, "rabbit.example:5673");
        assert_eq!(broker_addr("amqps://u:p@mq.example/vh"), "mq.example:5671");
        assert_eq!(broker_addr("amqp://127.0.0.1"), "127.0.0.1:5672");
        assert_eq!(broker_addr("amqp://u:p@[::1]:5999/"), "[::1]:5999");
        assert!(!broker_addr("amqp://u:s3cret@@bad url").contains("s3cret"));
    }
}
