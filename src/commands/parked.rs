//! `purge-worker parked list|release [--provider NAME]`: what waits for quota (and for a
//! `resume`), per provider, kind and class; and sending it back now, after a quota increase.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::{Value, json};

use super::pause::{Common, audit, known_provider, open};
use crate::control::{bounded_reason, os_user};
use crate::relay;

/// What waits in the parking queues (quota spent) and paused queues (provider paused).
#[derive(clap::Args, Debug)]
pub struct ParkedArgs {
    #[command(subcommand)]
    pub action: ParkedAction,
}

/// What `parked` does.
#[derive(clap::Subcommand, Debug)]
pub enum ParkedAction {
    /// Per provider, kind and class: messages, items, and when they come back. Takes nothing.
    List(ListArgs),
    /// Move parked items back to the queue of their class now (with confirms), and tell every
    /// replica to stop holding the provider's parked kinds. Use it after a quota increase: raise
    /// urls_per_day / dirs_per_day if the worker's own limit was reached, or run `quota reset
    /// --provider NAME` if the provider said the quota was spent. Items of a paused provider stay
    /// until `resume`.
    Release(ReleaseArgs),
}

/// Arguments of `parked list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this provider.
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `parked release`.
#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    /// Only this provider (default: every provider).
    #[arg(long, value_name = "NAME")]
    pub provider: Option<String>,
    /// Why (kept in the audit trail), e.g. "quota raised to 50000/day, ticket 123".
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Runs the command.
pub async fn run(args: ParkedArgs) -> anyhow::Result<()> {
    match args.action {
        ParkedAction::List(a) => list(a).await,
        ParkedAction::Release(a) => release(a).await,
    }
}

fn providers(cfg: &crate::config::Config, only: Option<&str>) -> anyhow::Result<Vec<String>> {
    if let Some(p) = only {
        known_provider(cfg, p)?;
        return Ok(vec![p.to_string()]);
    }
    Ok(cfg.providers.iter().map(|p| p.name.clone()).collect())
}

/// Messages, items and the latest return time of one (provider, queue, kind, class).
#[derive(Default)]
struct Group {
    messages: u64,
    items: u64,
    until: Option<i64>,
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let (cfg, _) = open(&args.common)?;
    let names = providers(&cfg, args.provider.as_deref())?;
    let (conn, _) = relay::open(&cfg.amqp, "purge-worker parked list").await?;
    let mut rows = Vec::new();
    for name in &names {
        for (why, queue) in [
            ("quota", cfg.amqp.parking_queue(name)),
            ("quota", cfg.amqp.bulk_parking_queue(name)),
            ("paused", cfg.amqp.paused_queue(name)),
        ] {
            let mut groups: BTreeMap<(String, &'static str), Group> = BTreeMap::new();
            relay::browse(&conn, &queue, None, |d| {
                let v: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
                let class = relay::priority_of(d).as_str();
                for kind in ["urls", "dirs", "regex"] {
                    let n = v[kind].as_array().map_or(0, Vec::len) as u64;
                    if n == 0 {
                        continue;
                    }
                    let g = groups
                        .entry((kind.trim_end_matches('s').to_string(), class))
                        .or_default();
                    g.messages += 1;
                    g.items += n;
                    let until = d
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get("x-purge-parked-until").cloned())
                        .and_then(|v| match v {
                            lapin::types::AMQPValue::LongLongInt(t) => Some(t),
                            _ => None,
                        });
                    g.until = g.until.max(until);
                }
                true
            })
            .await
            .with_context(|| format!("reading {queue}"))?;
            for ((kind, class), g) in groups {
                let back = match (why, g.until) {
                    ("paused", _) => "on resume".to_string(),
                    (_, Some(t)) => chrono::DateTime::from_timestamp(t, 0)
                        .map_or_else(|| t.to_string(), |d| d.to_rfc3339()),
                    _ => "at the quota reset".to_string(),
                };
                rows.push(json!({
                    "provider": name, "waits_for": why, "kind": kind, "class": class,
                    "messages": g.messages, "items": g.items, "back": back,
                }));
            }
        }
    }
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if rows.is_empty() {
        out!("nothing is parked");
    } else {
        for r in &rows {
            out!(
                "{} {} {} {}: {} messages, {} items, back {}",
                r["provider"].as_str().unwrap_or(""),
                r["waits_for"].as_str().unwrap_or(""),
                r["kind"].as_str().unwrap_or(""),
                r["class"].as_str().unwrap_or(""),
                r["messages"],
                r["items"],
                r["back"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn release(args: ReleaseArgs) -> anyhow::Result<()> {
    let (cfg, store) = open(&args.common)?;
    let names = providers(&cfg, args.provider.as_deref())?;
    let (conn, publisher) = relay::open(&cfg.amqp, "purge-worker parked release").await?;
    let who = os_user();
    let why = bounded_reason(args.reason.as_deref().unwrap_or("(no reason given)"));
    let flags = store
        .read(&names)
        .await
        .context("cannot read the pause flags from Redis")?;
    for (name, (pause, _)) in names.iter().zip(flags) {
        // Replicas stop holding the parked kinds first, so what comes back is not parked again.
        store
            .signal_release(name)
            .await
            .context("cannot signal the release to the replicas through Redis")?;
        // Replicas read the counter every POLL_EVERY and open their gates at once; items moved
        // before a replica saw it would be parked again until the reset. Three poll periods is
        // the propagation bound (a replica that cannot read Redis makes no calls anyway).
        tokio::time::sleep(crate::control::POLL_EVERY * 3).await;
        let mut released = 0;
        for queue in [
            cfg.amqp.parking_queue(name),
            cfg.amqp.bulk_parking_queue(name),
        ] {
            released += relay::release(&conn, &publisher, &cfg.amqp, &queue)
                .await
                .with_context(|| format!("releasing the parked items of `{name}` ({queue})"))?
                .moved;
        }
        let mut outcome = format!("released {released} parked messages");
        if pause.is_some() {
            outcome.push_str("; paused, so its paused queue waits for `resume`");
        }
        audit(&store, "parked_release", &who, &why, name, &outcome).await;
        out!("{name}: {outcome}");
    }
    Ok(())
}
