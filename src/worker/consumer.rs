//! The consumer: receives deliveries, decodes and validates them, dead-letters what is bad, and
//! hands the valid items to the dispatchers — plus the supervisor that (re)builds the connection.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Event};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::amqp::{self, Publisher};
use crate::coalesce::{HeaderSet, Origin};
use crate::config::Config;
use crate::dead_letter::DeadLetter;
use crate::dispatch::Incoming;
use crate::event::{self, Priority};
use crate::http::Readiness;
use crate::ledger::{self, DeliveryId, LedgerHandle, Sessions};
use crate::metrics::Metrics;
use crate::provider::Kind;
use crate::queue_depth::ConnectionSlot;
use crate::routing::Router;

/// Pause before a delivery is returned to the queue after its dead letter could not be published.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);
/// A session that lasted this long resets the reconnect pause.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// How often the connection's state is copied into `/readyz`.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// The consumer's state; owned by the supervisor task.
pub(super) struct Consumer {
    pub router: Router,
    /// Where each accepted event's keys are noted for `explain`.
    pub lineage: crate::tracking::lineage::LineageHandle,
    pub provider_names: Vec<String>,
    pub config: Config,
    pub senders: Vec<mpsc::Sender<Vec<Incoming>>>,
    pub ledger: LedgerHandle,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    /// Where the queue-depth poller finds the current connection.
    pub queue_depth: ConnectionSlot,
    /// The live channel's epoch; delivery ids carry it (see [`Sessions`]).
    pub sessions: Sessions,
    pub epoch: u64,
    /// Deliveries numbered within the session.
    pub next_seq: u64,
}

/// The connection and consuming channels (purge queue, bulk queue) of the last session, left open after the consumer was
/// cancelled. The channel must outlive the ledger's last ack: acks travel on the channel that
/// received the delivery, and dropping the last handle of a lapin channel closes it, which
/// makes the broker requeue (and the next run purge again) everything acked after that.
pub(super) type OpenSession = (Arc<Connection>, Vec<Channel>);

/// Keeps a consuming session alive until `shutdown`, rebuilding connection, topology and consumer
/// whenever lapin's own recovery gives up. Returns the last session (still open) so the ledger
/// can finish acking before it is closed.
pub(super) async fn supervise(mut c: Consumer, shutdown: CancellationToken) -> Option<OpenSession> {
    // Failed sessions in a row: the n-th is followed by the reconnect backoff's n-th pause.
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = session(&mut c, &shutdown).await;
        if started.elapsed() >= HEALTHY_SESSION {
            // A long healthy session: the next outage starts again from a short pause.
            failures = 0;
        }
        match result {
            Ok(open) => return Some(open),
            Err(e) => {
                // Deliveries of this session can no longer be acked: let every stage drop them.
                c.sessions.advance();
                c.readiness.set_amqp(false);
                c.publisher.detach();
                c.queue_depth.detach();
                if shutdown.is_cancelled() {
                    return None;
                }
                failures = failures.saturating_add(1);
                let pause = c.config.amqp.reconnect.step(failures);
                let retry_in_ms = pause.as_millis() as u64;
                // A connect failure names the broker itself; a session that was set up says so.
                if e.downcast_ref::<amqp::ConnectError>().is_some() {
                    warn!(error = %e, retry_in_ms, "RabbitMQ unreachable; retrying");
                } else {
                    let broker = amqp::broker_addr(c.config.amqp.url.expose());
                    warn!(%broker, error = %e, retry_in_ms, "RabbitMQ session ended; reconnecting");
                }
                c.metrics.reconnects.inc();
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// One connection's life: topology, consumer, deliveries until shutdown (Ok) or failure (Err).
async fn session(c: &mut Consumer, shutdown: &CancellationToken) -> anyhow::Result<OpenSession> {
    let a = c.config.amqp.clone();
    // Shared with the queue-depth poller, which reads through it.
    let conn = Arc::new(tokio::select! {
        r = amqp::connect(a.url.expose(), "purge-worker") => r?,
        _ = shutdown.cancelled() => anyhow::bail!("shutdown before RabbitMQ was reached"),
    });
    amqp::ensure_queue(&conn, &a.queue).await?;
    amqp::ensure_queue(&conn, &a.bulk_queue).await?;
    amqp::ensure_queue(&conn, &a.dead_letter_queue).await?;
    for name in &c.provider_names {
        amqp::ensure_parking_queue(&conn, &a.parking_queue(name), &a.queue).await?;
        amqp::ensure_parking_queue(&conn, &a.bulk_parking_queue(name), &a.bulk_queue).await?;
        amqp::ensure_queue(&conn, &a.paused_queue(name)).await?;
    }
    c.publisher.attach(&conn).await?;
    c.queue_depth.attach(&conn);
    // One channel per queue, each with its own prefetch: a bulk backlog fills only the bulk
    // channel's window, so interactive deliveries never wait behind it (RabbitMQ's advice:
    // separate queues, since prefetch defeats priorities within one queue).
    let (ch, mut consumer) = consume(&conn, &a.queue, a.prefetch).await?;
    let (bulk_ch, mut bulk) = consume(&conn, &a.bulk_queue, a.bulk_prefetch).await?;
    c.epoch = c.sessions.advance();
    c.next_seq = 0;
    c.readiness.set_amqp(true);
    info!(queue = %a.queue, prefetch = a.prefetch, bulk_queue = %a.bulk_queue,
        bulk_prefetch = a.bulk_prefetch, "consuming");

    // Readiness follows the connection's own state (checked a few times a second) as well as its
    // error events, so /readyz turns red as soon as the connection is lost.
    let readiness = c.readiness.clone();
    let mut events = conn.events_listener();
    let status = conn.status().clone();
    let watch = tokio::spawn(async move {
        let mut tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Event::Error(e)) => {
                        // Channel-level errors arrive here too (e.g. the queue-depth poller's
                        // passive declare of a deleted queue) and leave the connection up; a
                        // connection error has already set the status when the event comes.
                        let connected = status.connected();
                        readiness.set_amqp(connected);
                        if connected {
                            debug!(error = %e, "RabbitMQ channel error");
                        } else {
                            warn!(error = %e, "RabbitMQ connection error");
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tick.tick() => readiness.set_amqp(status.connected()),
            }
        }
        readiness.set_amqp(false);
    });
    let result = loop {
        tokio::select! {
            // Interactive deliveries first whenever both have one ready.
            biased;
            _ = shutdown.cancelled() => {
                for (channel, tag) in [(&ch, consumer.tag()), (&bulk_ch, bulk.tag())] {
                    if let Err(e) = channel.basic_cancel(tag, BasicCancelOptions::default()).await {
                        warn!(error = %e, "cancelling a consumer failed");
                    }
                }
                break Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => c.handle(delivery, Priority::Interactive).await,
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("consuming from RabbitMQ failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer (was queue `{}` deleted?)", a.queue)),
            },
            next = bulk.next() => match next {
                Some(Ok(delivery)) => c.handle(delivery, Priority::Bulk).await,
                Some(Err(e)) => break Err(anyhow::Error::new(e).context("consuming from RabbitMQ failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer (was queue `{}` deleted?)", a.bulk_queue)),
            },
        }
    };
    watch.abort();
    match result {
        Ok(()) => Ok((conn, vec![ch, bulk_ch])),
        Err(e) => {
            // The connection may still be half alive (a channel-level failure): close it so a
            // rebuild never leaves an old one behind.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                conn.close(320, "purge-worker reconnecting".into()),
            )
            .await;
            Err(e)
        }
    }
}

/// A channel with `prefetch` consuming `queue`.
async fn consume(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
) -> Result<(Channel, lapin::Consumer), lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((ch, consumer))
}

impl Consumer {
    /// Handles one delivery; `queue_class` is bulk for the bulk queue, whose events are bulk
    /// whatever they say.
    async fn handle(&mut self, delivery: Delivery, queue_class: Priority) {
        self.metrics.unacked.inc();
        let received = Instant::now();
        let id: DeliveryId = Sessions::id(self.epoch, self.next_seq);
        self.next_seq += 1;
        let ct = delivery
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let max = self.config.batching.max_event_bytes;
        let ev = match event::decode(&delivery.data, ct.as_deref(), max) {
            Ok(mut ev) => {
                ev.priority = ev.priority.max(queue_class);
                ev
            }
            Err(e) => {
                self.metrics.event("rejected");
                let dl = DeadLetter::for_event(&e, &delivery.data).with_content_type(ct.as_deref());
                // The id and source when the body still has them (valid JSON, bad content).
                warn!(error = e.code(), reason = %e, bytes = delivery.data.len(),
                    event_id = dl.event_id(), event_source = dl.event_source(),
                    "event refused; dead-lettering it");
                if self.publish_dead_letters(&[dl], &delivery).await {
                    ledger::ack(&delivery.acker, &self.metrics).await;
                }
                return;
            }
        };
        let (items, rejected) = event::validate(&ev, &self.router);
        // Log fields of every line about this event (absent, not empty, when the event has none).
        let (eid, src) = (ev.id.as_deref(), ev.source.as_deref());
        if !rejected.is_empty() {
            for r in &rejected {
                self.metrics.rejected_item(r.kind, ev.priority);
            }
            warn!(event_id = eid, event_source = src, refused = rejected.len(), first = rejected[0].error.code(),
                reason = %rejected[0].error, "items refused; dead-lettering them");
            if !self
                .publish_dead_letters(&DeadLetter::for_rejected(&ev, &rejected), &delivery)
                .await
            {
                return;
            }
        }
        let outcome = if items.is_empty() {
            "rejected"
        } else {
            "accepted"
        };
        self.metrics.event(outcome);
        if items.is_empty() {
            ledger::ack(&delivery.acker, &self.metrics).await;
            return;
        }
        tracing::debug!(
            event_id = eid,
            event_source = src,
            items = items.len(),
            "event accepted"
        );
        self.ledger
            .register(id, items.len() as u32, delivery.acker)
            .await;
        let origin = Arc::new(Origin {
            id: ev.id,
            source: ev.source,
        });
        self.lineage.note(crate::tracking::lineage::Note::Event {
            origin: origin.clone(),
            at: crate::tracking::unix_ms(),
            keys: items.iter().map(|it| it.key.clone()).collect(),
        });
        let mut per_provider: Vec<Vec<Incoming>> = vec![Vec::new(); self.senders.len()];
        // One shared copy of the event's headers for all its file purges.
        let headers: HeaderSet = (!ev.headers.is_empty()).then(|| Arc::from(ev.headers));
        for it in items {
            per_provider[it.provider].push(Incoming {
                delivery: id,
                kind: it.kind,
                flush: ev.flush_type,
                headers: if it.kind == Kind::Url {
                    headers.clone()
                } else {
                    None
                },
                key: it.key,
                received,
                origin: origin.clone(),
                priority: ev.priority,
                escalate: it.escalate,
            });
        }
        for (p, batch) in per_provider.into_iter().enumerate() {
            if !batch.is_empty() {
                let _ = self.senders[p].send(batch).await;
            }
        }
    }

    /// Publishes dead letters with confirms. On failure the delivery goes back to the queue (after
    /// a pause, so a broken dead-letter path does not spin) and `false` is returned.
    async fn publish_dead_letters(&self, records: &[DeadLetter], delivery: &Delivery) -> bool {
        let dlq = &self.config.amqp.dead_letter_queue;
        for dl in records {
            let (body, props) = dl.to_message_within(self.config.amqp.dead_letter_max_bytes);
            if let Err(e) = self.publisher.publish(dlq, &body, props).await {
                warn!(error = %e, queue = %dlq, event_id = dl.event_id(), event_source = dl.event_source(),
                    "dead-letter publish failed; returning the event to the queue");
                tokio::time::sleep(REQUEUE_PAUSE).await;
                self.metrics.unacked.dec();
                let _ = delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: true })
                    .await;
                return false;
            }
            self.metrics.dead_lettered(&dl.error);
        }
        true
    }
}
