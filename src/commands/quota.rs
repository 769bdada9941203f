//! `purge-worker quota`: today's quota use per provider and kind, from Redis.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::QuotaWindow;
use crate::provider::Kind;
use crate::quota::{QuotaPolicy, QuotaStore, day_label, day_of, unix_now};

/// Show today's quota use and limit per provider and kind (provider-local day), read from the
/// worker's counters in Redis.
#[derive(clap::Args, Debug)]
pub struct QuotaArgs {
    /// Config file (TOML); [redis] and [[providers]] are used. Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults (local RabbitMQ and Redis).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    let (_, cfg) = super::load_or_builtin(args.config.as_ref())?;
    let store = QuotaStore::connect(cfg.redis.url.expose(), &cfg.redis.key_prefix)?;
    let now = unix_now();
    let mut rows = Vec::new();
    for p in &cfg.providers {
        for (kind, limit) in [(Kind::Url, p.urls_per_day), (Kind::Dir, p.dirs_per_day)] {
            let usage = store
                .used(&p.name, kind, now, QuotaPolicy::of(p))
                .await
                .context("cannot read quota counters from Redis (redis.url)")?;
            let (used, reset) = (usage.used, usage.free_at);
            let day = match p.quota_window {
                QuotaWindow::Day => day_label(day_of(now, p.quota_utc_offset_secs)),
                QuotaWindow::Rolling24h => "last 24h".to_string(),
            };
            rows.push(serde_json::json!({
                "provider": p.name,
                "kind": kind.as_str(),
                "day": day,
                "used": used,
                "limit": limit,
                "left": limit.saturating_sub(used),
                "resets_at": chrono::DateTime::from_timestamp(reset, 0).map(|d| d.to_rfc3339()),
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<4} {:<10} {:>9} {:>9} {:>9}  resets at (UTC)",
        "provider", "kind", "day", "used", "limit", "left"
    );
    for r in rows {
        let num = |k: &str| r[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
        println!(
            "{:<24} {:<4} {:<10} {:>9} {:>9} {:>9}  {}",
            r["provider"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["day"].as_str().unwrap_or(""),
            num("used"),
            num("limit"),
            num("left"),
            r["resets_at"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
