//! `purge-worker pause PROVIDER [--reason TEXT]`, `resume PROVIDER` and `status`: stop and
//! restart calls to one provider on every replica (through Redis, within a second), and show
//! each provider's state across the cluster.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use super::UsageError;
use crate::config::Config;
use crate::control::{AuditEntry, ControlStore, Pause, ReplicaState, bounded_reason, os_user};
use crate::quota::unix_now;

/// Options every control command takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Config file (TOML); [redis] and [[providers]] are used. Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis key prefix to use instead of `redis.key_prefix` (e.g. the one a zero-config `run` names in its first log line).
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
}

/// Stop calls to one provider on every replica within a second. Its items wait durably in its
/// paused queue (acked, so no consumer timeout fires); other providers keep flowing; `resume`
/// releases them. Logged to the audit trail with the OS user and the reason.
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// The provider (its `name` in the config).
    pub provider: String,
    /// Why (shown by `status`, kept in the audit trail), e.g. "migration running, INC-4711".
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Restart calls to a paused provider; running replicas release its paused items back to the
/// purge queue.
#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// The provider (its `name` in the config).
    pub provider: String,
    /// Why (kept in the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Show each provider's state across the cluster: running, paused (reason, since, by),
/// auth-stopped, parked until; and which replicas report it.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// The config and the control store of a command.
pub fn open(common: &Common) -> anyhow::Result<(Config, ControlStore)> {
    let (_, mut cfg) = super::load_or_builtin(common.config.as_ref())?;
    if let Some(prefix) = &common.key_prefix {
        if prefix.is_empty() {
            return Err(UsageError("--key-prefix must not be empty".into()).into());
        }
        cfg.redis.key_prefix = prefix.clone();
    }
    let store = ControlStore::connect(cfg.redis.url.expose(), &cfg.redis.key_prefix)
        .context("redis.url is not a usable Redis URL")?;
    Ok((cfg, store))
}

/// `Err(UsageError)` (exit 2) naming the configured providers when `name` is not one of them.
pub fn known_provider(cfg: &Config, name: &str) -> Result<(), UsageError> {
    if cfg.providers.iter().any(|p| p.name == name) {
        return Ok(());
    }
    let known: Vec<&str> = cfg.providers.iter().map(|p| p.name.as_str()).collect();
    Err(UsageError(format!(
        "unknown provider `{name}`; the configured providers are: {}",
        known.join(", ")
    )))
}

fn at(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), |d| d.to_rfc3339())
}

/// Runs `pause`.
pub async fn pause(args: PauseArgs) -> anyhow::Result<()> {
    let (cfg, store) = open(&args.common)?;
    known_provider(&cfg, &args.provider)?;
    let reason = bounded_reason(args.reason.as_deref().unwrap_or("(no reason given)"));
    let p = Pause {
        reason: reason.clone(),
        since: unix_now(),
        by: os_user(),
    };
    let earlier = store
        .pause(&args.provider, &p)
        .await
        .context("cannot write the pause flag to Redis")?;
    let outcome = match &earlier {
        Some(e) => format!(
            "already paused since {} by {}; reason updated",
            at(e.since),
            e.by
        ),
        None => "paused".into(),
    };
    audit(&store, "pause", &p.by, &reason, &args.provider, &outcome).await;
    out!(
        "{}: {outcome}. Every replica stops calling it within a second; its items wait in {} until `purge-worker resume {}`.",
        args.provider,
        cfg.amqp.paused_queue(&args.provider),
        args.provider
    );
    Ok(())
}

/// Runs `resume`.
pub async fn resume(args: ResumeArgs) -> anyhow::Result<()> {
    let (cfg, store) = open(&args.common)?;
    known_provider(&cfg, &args.provider)?;
    let who = os_user();
    let reason = bounded_reason(args.reason.as_deref().unwrap_or("(no reason given)"));
    let ended = store
        .resume(&args.provider)
        .await
        .context("cannot clear the pause flag in Redis")?;
    let outcome = match &ended {
        Some(p) => format!(
            "resumed (paused since {} by {}: {})",
            at(p.since),
            p.by,
            p.reason
        ),
        None => "was not paused".into(),
    };
    audit(&store, "resume", &who, &reason, &args.provider, &outcome).await;
    out!(
        "{}: {outcome}. Running replicas release its paused items back to the purge queue.",
        args.provider
    );
    Ok(())
}

/// Logs and records an operator action; a Redis failure only warns (the log line is written).
pub async fn audit(
    store: &ControlStore,
    action: &str,
    who: &str,
    why: &str,
    target: &str,
    outcome: &str,
) {
    let entry = AuditEntry {
        action: action.into(),
        who: who.into(),
        why: why.into(),
        target: target.into(),
        outcome: outcome.into(),
        at: unix_now(),
    };
    if let Err(e) = store.audit(&entry).await {
        tracing::warn!(error = %e, "cannot append to the audit stream in Redis (the log line above is the record)");
    }
}

/// One provider's state for `status`.
fn summary(pause: Option<&Pause>, replicas: &[ReplicaState]) -> String {
    if let Some(p) = pause {
        return format!("paused since {} by {}: {}", at(p.since), p.by, p.reason);
    }
    let mut parts = Vec::new();
    if replicas.iter().any(|r| r.state == "auth_stopped") {
        parts.push("auth-stopped (credentials refused; one probe call a minute)".to_string());
    }
    for (i, kind) in ["url", "dir"].into_iter().enumerate() {
        if let Some(until) = replicas.iter().filter_map(|r| r.parked_until[i]).max() {
            parts.push(format!("{kind} quota parked until {}", at(until)));
        }
    }
    if parts.is_empty() {
        if replicas.is_empty() {
            "running (no replica reports it)".into()
        } else {
            "running".into()
        }
    } else {
        parts.join("; ")
    }
}

/// Runs `status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (cfg, store) = open(&args.common)?;
    let names: Vec<String> = cfg.providers.iter().map(|p| p.name.clone()).collect();
    let flags = store
        .read(&names)
        .await
        .context("cannot read the pause flags from Redis")?;
    let mut rows = Vec::new();
    for (name, (pause, _)) in names.iter().zip(flags) {
        let replicas = store
            .statuses(name)
            .await
            .context("cannot read the replicas' status from Redis")?;
        rows.push((name.clone(), pause, replicas));
    }
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(name, pause, replicas)| {
                json!({
                    "provider": name,
                    "state": if pause.is_some() { "paused" } else if replicas.iter().any(|r| r.state == "auth_stopped") { "auth_stopped" } else { "running" },
                    "pause": pause,
                    "summary": summary(pause.as_ref(), replicas),
                    "replicas": replicas,
                })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    for (name, pause, replicas) in &rows {
        out!("{name}: {}", summary(pause.as_ref(), replicas));
        for r in replicas {
            out!(
                "  {} {} ({} pending, seen {}s ago)",
                r.replica,
                r.state.replace('_', "-"),
                r.pending,
                (unix_now() - r.updated).max(0)
            );
        }
    }
    Ok(())
}
