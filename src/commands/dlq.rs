//! `purge-worker dlq list|show|replay`: look inside the dead-letter queue and send its events
//! back once the cause is fixed. Every pass streams the queue (see [`crate::relay`]): a DLQ of a
//! million records is never loaded into memory, and `list` and `show` take nothing from it.

use std::collections::BTreeMap;

use anyhow::Context;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};

use super::pause::{Common, audit, open};
use crate::control::{bounded_reason, os_user};
use crate::dead_letter::Priority;
use crate::relay::{self, Verdict};

/// Non-replayable records named one by one in the replay report (the rest are counted).
const NAMED: usize = 100;

/// Inspect the dead-letter queue, and replay its events after the cause is fixed.
#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

/// What `dlq` does.
#[derive(clap::Subcommand, Debug)]
pub enum DlqAction {
    /// One line per record (time, code, record id, event id and source, items, reason), then the
    /// totals per code over every record (exact, whatever --limit says). Takes nothing.
    List(ListArgs),
    /// One record in full, by its record id (the `dl-...` of `list`). Takes nothing.
    Show(ShowArgs),
    /// Republish the events of the records (all, or those of --code) to the queue of their class
    /// with publisher confirms; each record is removed only after its replay was confirmed.
    /// Records that cannot be replayed (undecodable or clipped) are listed and left in place.
    /// Exit 0 when every replayable record was replayed, 1 on a broker failure.
    Replay(ReplayArgs),
}

/// Arguments of `dlq list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only records with this error code (e.g. provider_rejected, unknown_host).
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
    /// Records to print at most (the totals still count every record).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
    /// One JSON object per line, then a totals line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `dlq show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The record id (`dl-` and 16 hex digits).
    pub id: String,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `dlq replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Only records with this error code.
    #[arg(long, value_name = "CODE")]
    pub code: Option<String>,
    /// Say what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why (kept in the audit trail), e.g. "provider fixed the host config, INC-4711".
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// What `list` and `replay` read of a record.
struct Record {
    v: Value,
    id: String,
    code: String,
}

impl Record {
    fn of(d: &Delivery) -> Record {
        let v: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
        let id = v["id"]
            .as_str()
            .map(str::to_string)
            .or_else(|| relay::header_str(d, "x-purge-record-id"))
            .unwrap_or_else(|| "-".into());
        let code = v["error"]
            .as_str()
            .map(str::to_string)
            .or_else(|| relay::header_str(d, "x-purge-error"))
            .unwrap_or_else(|| "unknown".into());
        Record { v, id, code }
    }

    fn items(&self) -> usize {
        ["urls", "dirs", "regex"]
            .iter()
            .map(|k| self.v["event"][k].as_array().map_or(0, Vec::len))
            .sum()
    }

    /// Whether the event can be republished: an event object, not marked otherwise (records
    /// written before the flag existed count as replayable unless clipped).
    fn replayable(&self) -> bool {
        self.v["event"].is_object()
            && self.v["replayable"].as_bool().unwrap_or(true)
            && self.v.get("clipped").is_none()
    }

    fn priority(&self) -> Priority {
        self.v["priority"]
            .as_str()
            .and_then(Priority::parse)
            .unwrap_or_default()
    }

    fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "at": self.v["at"],
            "code": self.code,
            "reason": self.v["reason"],
            "event_id": self.v["event"]["id"],
            "event_source": self.v["event"]["source"],
            "items": self.items(),
            "priority": self.priority().as_str(),
            "replayable": self.replayable(),
        })
    }
}

fn at(v: &Value) -> String {
    v.as_i64()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(|| "-".into(), |d| d.to_rfc3339())
}

/// Runs the command.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    match args.action {
        DlqAction::List(a) => list(a).await,
        DlqAction::Show(a) => show(a).await,
        DlqAction::Replay(a) => replay(a).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (cfg, _) = open(&args.common)?;
    let (conn, _) = relay::open(&cfg.amqp, "purge-worker dlq list").await?;
    let dlq = &cfg.amqp.dead_letter_queue;
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut shown = 0u64;
    let read = relay::browse(&conn, dlq, None, |d| {
        let r = Record::of(d);
        let t = totals.entry(r.code.clone()).or_default();
        t.0 += 1;
        t.1 += r.items() as u64;
        if args.code.as_deref().is_none_or(|c| c == r.code) && shown < args.limit {
            shown += 1;
            if args.json {
                out!("{}", r.summary());
            } else {
                out!(
                    "{}  {}  {}  event={} source={}  {} items{}  {}",
                    at(&r.v["at"]),
                    r.code,
                    r.id,
                    r.v["event"]["id"].as_str().unwrap_or("-"),
                    r.v["event"]["source"].as_str().unwrap_or("-"),
                    r.items(),
                    if r.replayable() {
                        ""
                    } else {
                        " (not replayable)"
                    },
                    crate::cache_key::clip(r.v["reason"].as_str().unwrap_or(""), 200)
                );
            }
        }
        true
    })
    .await
    .context("reading the dead-letter queue")?;
    if let Some(c) = &args.code {
        totals.retain(|k, _| k == c);
    }
    let records: u64 = totals.values().map(|t| t.0).sum();
    if args.json {
        let per: BTreeMap<&String, Value> = totals
            .iter()
            .map(|(k, (n, items))| (k, json!({ "records": n, "items": items })))
            .collect();
        out!(
            "{}",
            json!({ "totals": per, "records": records, "read": read })
        );
    } else {
        out!("-- {records} records in {dlq} (read {read})");
        for (code, (n, items)) in &totals {
            out!("{code}: {n} records, {items} items");
        }
    }
    Ok(())
}

async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let (cfg, _) = open(&args.common)?;
    let (conn, _) = relay::open(&cfg.amqp, "purge-worker dlq show").await?;
    let mut found = None;
    relay::browse(&conn, &cfg.amqp.dead_letter_queue, None, |d| {
        let r = Record::of(d);
        if r.id == args.id {
            found = Some(r.v);
            return false;
        }
        true
    })
    .await
    .context("reading the dead-letter queue")?;
    match found {
        Some(v) => {
            out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(())
        }
        None => Err(super::UsageError(format!(
            "no record `{}` in {}",
            args.id, cfg.amqp.dead_letter_queue
        ))
        .into()),
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let (cfg, store) = open(&args.common)?;
    let (conn, publisher) = relay::open(&cfg.amqp, "purge-worker dlq replay").await?;
    let dlq = cfg.amqp.dead_letter_queue.clone();
    let wanted = |r: &Record| args.code.as_deref().is_none_or(|c| c == r.code);
    let mut unreplayable: Vec<(String, String)> = Vec::new();
    let mut unreplayable_n = 0u64;
    let mut note = |r: &Record| {
        unreplayable_n += 1;
        if unreplayable.len() < NAMED {
            unreplayable.push((r.id.clone(), r.code.clone()));
        }
    };
    let filter = args.code.as_deref().unwrap_or("every code");
    let (replayed, other) = if args.dry_run {
        let (mut would, mut other) = (0u64, 0u64);
        relay::browse(&conn, &dlq, None, |d| {
            let r = Record::of(d);
            if !wanted(&r) {
                other += 1;
            } else if r.replayable() {
                would += 1;
            } else {
                note(&r);
            }
            true
        })
        .await
        .context("reading the dead-letter queue")?;
        out!("dry run: {would} records of {filter} would be replayed; nothing was changed");
        (would, other)
    } else {
        let moved = relay::pass(&conn, &publisher, &dlq, None, |d| {
            let r = Record::of(d);
            if !wanted(&r) {
                return Verdict::Keep;
            }
            if !r.replayable() {
                note(&r);
                return Verdict::Keep;
            }
            let mut headers = FieldTable::default();
            headers.insert(
                "x-purge-replay-of".into(),
                AMQPValue::LongString(LongString::from(r.id.clone())),
            );
            let ct = r.v["content_type"].as_str().unwrap_or("application/json");
            Verdict::Move {
                queue: relay::queue_for(&cfg.amqp, r.priority()).to_string(),
                body: serde_json::to_vec(&r.v["event"]).unwrap_or_default(),
                props: Box::new(
                    BasicProperties::default()
                        .with_content_type(ct.into())
                        .with_headers(headers),
                ),
            }
        })
        .await;
        let moved = match moved {
            Ok(m) => m,
            Err(e) => {
                let why = bounded_reason(args.reason.as_deref().unwrap_or("(no reason given)"));
                audit(
                    &store,
                    "dlq_replay",
                    &os_user(),
                    &why,
                    filter,
                    &format!("failed: {e}"),
                )
                .await;
                return Err(anyhow::Error::new(e).context(
                    "replay stopped on a broker failure; records not confirmed are still in the dead-letter queue",
                ));
            }
        };
        out!("replayed {} records of {filter}", moved.moved);
        (moved.moved, moved.kept - unreplayable_n)
    };
    if unreplayable_n > 0 {
        out!(
            "{unreplayable_n} records cannot be replayed (undecodable or clipped) and stay in {dlq}:"
        );
        for (id, code) in &unreplayable {
            out!("  {id} {code}");
        }
        if unreplayable_n > unreplayable.len() as u64 {
            out!(
                "  ... and {} more",
                unreplayable_n - unreplayable.len() as u64
            );
        }
    }
    if other > 0 {
        out!("{other} records of other codes left in place");
    }
    if !args.dry_run {
        let why = bounded_reason(args.reason.as_deref().unwrap_or("(no reason given)"));
        audit(
            &store,
            "dlq_replay",
            &os_user(),
            &why,
            filter,
            &format!("replayed {replayed}, {unreplayable_n} not replayable"),
        )
        .await;
    }
    Ok(())
}
