//! `purge-worker quota`: today's quota use per provider and kind, from Redis, and `quota reset`.

use std::path::PathBuf;

use anyhow::Context;

use super::UsageError;
use crate::config::QuotaWindow;
use crate::provider::Kind;
use crate::quota::{QuotaStore, day_label, day_of, unix_now};

/// Show today's quota use and limit per provider and kind (provider-local day), read from the
/// worker's counters in Redis.
#[derive(clap::Args, Debug)]
pub struct QuotaArgs {
    /// Config file (TOML); [redis] and [[providers]] are used. Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults (local RabbitMQ and Redis).
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Redis key prefix to use instead of `redis.key_prefix`, e.g. the one a zero-config `run` names in its first log line.
    #[arg(long, value_name = "PREFIX", global = true)]
    pub key_prefix: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Option<QuotaAction>,
}

/// What `quota` does besides showing.
#[derive(clap::Subcommand, Debug)]
pub enum QuotaAction {
    /// Delete one provider's quota counters in Redis (every kind, day and rolling window), so the
    /// worker counts that provider's quota from zero. The provider's own count is not reset: use
    /// it when the provider really has room (a demo, a raised quota). A running worker keeps a
    /// lane it already parked until that lane's reset time.
    Reset(ResetArgs),
}

/// Arguments of `quota reset`.
#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// The provider (its `name` in the config; `emulator` with no config file).
    #[arg(long, value_name = "NAME")]
    pub provider: String,
}

/// Runs the command.
pub async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    let (_, mut cfg) = super::load_or_builtin(args.config.as_ref())?;
    if let Some(prefix) = args.key_prefix {
        if prefix.is_empty() {
            return Err(UsageError("--key-prefix must not be empty".into()).into());
        }
        cfg.redis.key_prefix = prefix;
    }
    let store = QuotaStore::connect(cfg.redis.url.expose(), &cfg.redis.key_prefix)?;
    let now = unix_now();
    if let Some(QuotaAction::Reset(reset)) = args.action {
        if !cfg.providers.iter().any(|p| p.name == reset.provider) {
            let known: Vec<&str> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
            return Err(UsageError(format!(
                "--provider `{}` is not configured (providers: {})",
                reset.provider,
                known.join(", ")
            ))
            .into());
        }
        let deleted = store
            .reset(&reset.provider, now)
            .await
            .context("cannot delete quota counters in Redis (redis.url)")?;
        out!(
            "provider `{}`: quota counters reset under Redis prefix `{}` ({} deleted)",
            reset.provider,
            cfg.redis.key_prefix,
            super::count(deleted, "key", "keys")
        );
        return Ok(());
    }
    let mut rows = Vec::new();
    for p in &cfg.providers {
        for (kind, limit) in [(Kind::Url, p.urls_per_day), (Kind::Dir, p.dirs_per_day)] {
            let usage = store
                .used(&p.name, kind, now, p.quota_policy())
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
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    out!(
        "{:<24} {:<4} {:<10} {:>9} {:>9} {:>9}  resets at (UTC)",
        "provider",
        "kind",
        "day",
        "used",
        "limit",
        "left"
    );
    for r in rows {
        let num = |k: &str| r[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
        out!(
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
