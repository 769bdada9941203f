//! `purge-worker explain URL`: the purge history of one cache key (CONTRACT §1), read from the
//! lineage the worker keeps in Redis.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;

use super::UsageError;
use crate::tracking::explain::{ExplainError, Explainer, render};

/// Show the purge history of one URL's cache key: the events that asked for it (id, source,
/// time), the calls and tasks that covered it, each task's state at the CDN (`done`, `fail`,
/// `process`) and when it finished, and the prefetch after it. The URL is normalized exactly
/// as the worker does (the domain's ignore_query included). Nothing known: says so, exit 0.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// Config file (TOML); [redis], [tracking] and [[providers]] are used. Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Redis key prefix to use instead of `redis.key_prefix`, e.g. the one a zero-config `run` names in its first log line.
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Print JSON (the same document as GET /explain?url=).
    #[arg(long)]
    pub json: bool,
    /// The URL, as an event would carry it.
    #[arg(value_name = "URL")]
    pub url: String,
}

/// Runs the command.
pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let (_, mut cfg) = super::load_or_builtin(args.config.as_ref())?;
    if let Some(prefix) = args.key_prefix {
        if prefix.is_empty() {
            return Err(UsageError("--key-prefix must not be empty".into()).into());
        }
        cfg.redis.key_prefix = prefix;
    }
    let explainer = Explainer::connect(cfg.redis.url.expose(), cfg.explain_sources())
        .context("redis.url is not a usable Redis URL")?;
    let e = match explainer.explain(&args.url).await {
        Ok(e) => e,
        Err(ExplainError::BadUrl(why)) => {
            return Err(UsageError(format!("URL `{}`: {why}", args.url)).into());
        }
        Err(e) => return Err(e.into()),
    };
    let text = if args.json {
        serde_json::to_string_pretty(&e)? + "\n"
    } else {
        render(&e)
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}
