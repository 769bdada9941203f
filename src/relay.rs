//! Moving messages out of a queue with publisher confirms: releasing paused and parked items,
//! replaying dead letters. Shared by the worker (paused items on `resume`) and the operator
//! commands (`parked release`, `dlq replay`, `dlq list`).
//!
//! A pass reads at most the messages the queue held when it started (its message count), so it
//! ends even though what it keeps goes back to the queue. A message moved elsewhere is acked
//! only after the broker confirmed its copy; a message kept is republished to the tail of its
//! own queue (confirmed) and then acked, so it stays without being read twice in one pass. A
//! crash at any point leaves every message somewhere: at worst twice (a copy confirmed, the
//! original not yet acked). Memory is bounded by the window of publishes in flight, never by
//! the queue's length.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use tokio::task::JoinSet;

use crate::amqp::AmqpConfig;
use crate::amqp::{PublishError, Publisher};
use crate::dead_letter::Priority;

/// Publishes in flight at once during a pass (and the consumer's prefetch).
pub const WINDOW: u16 = 256;
/// A pass that receives nothing for this long ends (another consumer took the rest).
const IDLE: Duration = Duration::from_secs(3);

/// The queue events of a class are consumed from: interactive events from the purge queue, bulk
/// events from the bulk queue (whose events are bulk whatever they say).
pub fn queue_for(amqp: &AmqpConfig, priority: Priority) -> &str {
    match priority {
        Priority::Interactive => &amqp.queue,
        Priority::Bulk => &amqp.bulk_queue,
    }
}

/// A failed pass.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("publishing to `{queue}` failed: {source}")]
    Publish {
        queue: String,
        #[source]
        source: PublishError,
    },
}

/// What to do with one message.
pub enum Verdict {
    /// Publish this to `queue` (confirmed), then ack the original.
    Move {
        queue: String,
        body: Vec<u8>,
        props: Box<BasicProperties>,
    },
    /// Leave it in its queue (republished to the tail).
    Keep,
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub moved: u64,
    pub kept: u64,
}

/// Messages ready in `queue` (passive declare; a missing queue holds none).
pub async fn message_count(conn: &Connection, queue: &str) -> Result<u32, lapin::Error> {
    let ch = conn.create_channel().await?;
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = match ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
    {
        Ok(q) => q.message_count(),
        // 404: no such queue, nothing to move (the channel is closed by the broker).
        Err(_) => return Ok(0),
    };
    let _ = ch.close(200, "ok".into()).await;
    Ok(count)
}

/// A string header of a delivery.
pub fn header_str(d: &Delivery, name: &str) -> Option<String> {
    let headers = d.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// One pass over `from`: `verdict` decides per message; `Moved` says what happened. `limit`
/// caps how many messages are read (besides the queue's count at the start).
pub async fn pass(
    conn: &Connection,
    publisher: &Publisher,
    from: &str,
    limit: Option<u64>,
    mut verdict: impl FnMut(&Delivery) -> Verdict,
) -> Result<Moved, RelayError> {
    let count = u64::from(message_count(conn, from).await?).min(limit.unwrap_or(u64::MAX));
    let mut out = Moved::default();
    if count == 0 {
        return Ok(out);
    }
    let ch = conn.create_channel().await?;
    ch.basic_qos(WINDOW, BasicQosOptions { global: false })
        .await?;
    let mut consumer = ch
        .basic_consume(
            from.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut tasks: JoinSet<Result<bool, RelayError>> = JoinSet::new();
    let mut seen = 0u64;
    let mut result = Ok(());
    while seen < count && result.is_ok() {
        let d = match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                result = Err(RelayError::Amqp(e));
                break;
            }
            Ok(None) | Err(_) => break,
        };
        seen += 1;
        let (queue, body, props, moved) = match verdict(&d) {
            Verdict::Move { queue, body, props } => (queue, body, *props, true),
            Verdict::Keep => (
                from.to_string(),
                d.data.clone(),
                d.properties.clone(),
                false,
            ),
        };
        while tasks.len() >= usize::from(WINDOW) {
            if let Some(r) = tasks.join_next().await {
                result = tally(r, &mut out);
                if result.is_err() {
                    break;
                }
            }
        }
        let publisher = publisher.clone();
        tasks.spawn(async move {
            publisher
                .publish(&queue, &body, props)
                .await
                .map_err(|source| RelayError::Publish {
                    queue: queue.clone(),
                    source,
                })?;
            d.acker.ack(BasicAckOptions::default()).await?;
            Ok(moved)
        });
    }
    while let Some(r) = tasks.join_next().await {
        let r = tally(r, &mut out);
        if result.is_ok() {
            result = r;
        }
    }
    let _ = ch
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    // Closing the channel returns whatever was delivered beyond the pass, unacked, in place.
    let _ = ch.close(200, "pass done".into()).await;
    result.map(|()| out)
}

fn tally(
    joined: Result<Result<bool, RelayError>, tokio::task::JoinError>,
    out: &mut Moved,
) -> Result<(), RelayError> {
    match joined {
        Ok(Ok(true)) => out.moved += 1,
        Ok(Ok(false)) => out.kept += 1,
        Ok(Err(e)) => return Err(e),
        // A publish task never panics; if one did, its message stays unacked (requeued).
        Err(_) => {}
    }
    Ok(())
}

/// Reads every message `from` held at the start without taking any (nothing is acked; closing
/// the channel puts them all back in place), up to `limit` or until `each` returns false.
pub async fn browse(
    conn: &Connection,
    from: &str,
    limit: Option<u64>,
    mut each: impl FnMut(&Delivery) -> bool,
) -> Result<u64, RelayError> {
    let count = u64::from(message_count(conn, from).await?).min(limit.unwrap_or(u64::MAX));
    if count == 0 {
        return Ok(0);
    }
    let ch = conn.create_channel().await?;
    // No prefetch limit: nothing is acked, so a limit would stop the browse at it. Each delivery
    // is dropped once looked at; the broker keeps them unacked.
    ch.basic_qos(0, BasicQosOptions { global: false }).await?;
    let mut consumer = ch
        .basic_consume(
            from.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut seen = 0u64;
    while seen < count {
        match tokio::time::timeout(IDLE, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                seen += 1;
                if !each(&d) {
                    break;
                }
            }
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = ch
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    let _ = ch.close(200, "browse done".into()).await;
    Ok(seen)
}

/// A connection and a confirmed publisher for an operator command.
pub async fn open(amqp: &AmqpConfig, name: &str) -> anyhow::Result<(Arc<Connection>, Publisher)> {
    let conn = Arc::new(crate::amqp::connect(amqp.url.expose(), name).await?);
    // What a replay or release publishes to must exist, whether a worker ran yet or not.
    for priority in [Priority::Interactive, Priority::Bulk] {
        crate::amqp::ensure_queue(&conn, queue_for(amqp, priority)).await?;
    }
    let publisher = Publisher::new(crate::metrics::Metrics::new());
    publisher.attach(&conn).await?;
    Ok((conn, publisher))
}

/// The priority a parked or dead-lettered message was of (`x-purge-priority`; interactive when
/// absent or unknown).
pub fn priority_of(d: &Delivery) -> Priority {
    header_str(d, "x-purge-priority")
        .as_deref()
        .and_then(Priority::parse)
        .unwrap_or_default()
}

/// Moves every message of a parking or paused queue back to the queue of its class, as a purge
/// event without the parking headers and expiry.
pub async fn release(
    conn: &Connection,
    publisher: &Publisher,
    amqp: &AmqpConfig,
    from: &str,
) -> Result<Moved, RelayError> {
    pass(conn, publisher, from, None, |d| Verdict::Move {
        queue: queue_for(amqp, priority_of(d)).to_string(),
        body: d.data.clone(),
        props: Box::new(
            BasicProperties::default().with_content_type(
                d.properties
                    .content_type()
                    .clone()
                    .unwrap_or_else(|| "application/json".into()),
            ),
        ),
    })
    .await
}
