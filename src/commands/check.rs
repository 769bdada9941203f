//! `purge-worker check`: validate the configuration and say exactly what is wrong.

use std::path::PathBuf;

use crate::config::{ApiSettings, ConfigSource};

/// Validate the configuration and print what the worker would run with (never secrets). Exits 2
/// naming the key and the problem when something is wrong.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Config file (TOML). Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults (local RabbitMQ and Redis).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let (source, cfg) = super::load_or_builtin(args.config.as_ref())?;
    let builtin = source == ConfigSource::BuiltIn;
    match &source {
        ConfigSource::File(p) => out!("{}: OK", p.display()),
        ConfigSource::BuiltIn => out!(
            "no config file (--config, $PURGE_WORKER_CONFIG, ./purge-worker.toml): `run` would use the built-in defaults and emulator"
        ),
    }
    out!(
        "amqp: queue `{}`, dead letters `{}`, prefetch {}",
        cfg.amqp.queue,
        cfg.amqp.dead_letter_queue,
        cfg.amqp.prefetch
    );
    if builtin {
        out!(
            "redis: a fresh key prefix per start, `{}-<unix time>-<pid>` (named in `run`'s first log line), so each demo counts its quota from zero",
            super::DEMO_KEY_PREFIX
        );
    } else {
        out!("redis: key prefix `{}`", cfg.redis.key_prefix);
    }
    out!("http: {}", cfg.listen);
    out!(
        "batching: linger {} ms, drain {} ms, max event {} bytes",
        cfg.batching.max_linger.as_millis(),
        cfg.batching.drain_timeout.as_millis(),
        cfg.batching.max_event_bytes
    );
    for p in &cfg.providers {
        let limits: Vec<String> = p
            .rate_limits
            .iter()
            .map(|r| format!("{}/{}s", r.limit, r.window.as_secs()))
            .collect();
        let window = match p.quota_window {
            crate::config::QuotaWindow::Day => format!(
                "day starts at UTC{:+}h",
                p.quota_utc_offset_secs as f64 / 3600.0
            ),
            crate::config::QuotaWindow::Rolling24h => "quota counted over any 24 hours".into(),
        };
        // With no file, `run` starts the emulator on an ephemeral port (or --emulator-listen);
        // there is no address to print yet, only where `run` will print it.
        let endpoint = if builtin {
            "the built-in emulator (an ephemeral 127.0.0.1 port, printed in `run`'s first log line; `run --emulator-listen ADDR` fixes it)".to_string()
        } else {
            p.endpoint.to_string()
        };
        out!(
            "provider `{}` ({}) at {endpoint}: {} urls/call, {} dirs/call, {} urls/day, {} dirs/day, rate {}, {window}; retries {}–{} ms, an item failing alone {} times is dead-lettered",
            p.name,
            p.kind.as_str(),
            p.urls_per_call,
            p.dirs_per_call,
            p.urls_per_day,
            p.dirs_per_day,
            limits.join(" + "),
            p.retry.base().as_millis(),
            p.retry.max().as_millis(),
            p.max_attempts,
        );
        let every = p.quota_sync.interval.as_millis();
        let adopt = |q: usize, key: &str| {
            if p.quota_sync.adopt_total[q] {
                format!("{key} follows the provider's Total")
            } else {
                format!("{key} as configured")
            }
        };
        let adopted = format!("{}, {}", adopt(0, "urls_per_day"), adopt(1, "dirs_per_day"));
        match &p.options {
            ApiSettings::TencentV3(s) => out!(
                "  quota sync: DescribePurgeQuota (area {}) at start and every {every} ms raises the ledger to the provider's figure; {adopted}",
                s.quota_area
            ),
            ApiSettings::TencentV2(s) => {
                out!(
                    "  {} requests signed with {}",
                    s.http_method.as_str(),
                    s.signature_method.as_str()
                );
                out!(
                    "  quota sync: none: API 2.0 has no quota query, so the ledger counts only this worker's own spending (spend by other tools shows up as the provider's quota refusals)"
                );
            }
            ApiSettings::Wangsu(s) => out!(
                "  {} auth, target {}, {} regex/call{}{}",
                s.auth.as_str(),
                s.target,
                p.regex_per_call,
                s.webhook
                    .as_deref()
                    .map(|w| format!(", webhook {w}"))
                    .unwrap_or_default(),
                s.purge_name
                    .as_deref()
                    .map(|n| format!(", task name `{n}`"))
                    .unwrap_or_default(),
            ),
        }
        if let ApiSettings::Wangsu(s) = &p.options {
            out!(
                "  quota sync: purgeTokens (target {}) at start and every {every} ms raises the ledger to the provider's figure; the limits stay as configured (purgeTokens names no total)",
                s.target
            );
        }
        for d in &p.domains {
            out!(
                "  host {}{}",
                d.host,
                if d.ignore_query {
                    " (query ignored)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}
