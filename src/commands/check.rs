//! `purge-worker check`: validate the configuration and say exactly what is wrong.

use std::path::PathBuf;

use crate::config::ConfigSource;

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
    match &source {
        ConfigSource::File(p) => println!("{}: OK", p.display()),
        ConfigSource::BuiltIn => println!(
            "no config file (--config, $PURGE_WORKER_CONFIG, ./purge-worker.toml): `run` would use the built-in defaults and emulator"
        ),
    }
    println!(
        "amqp: queue `{}`, dead letters `{}`, prefetch {}",
        cfg.amqp.queue, cfg.amqp.dead_letter_queue, cfg.amqp.prefetch
    );
    println!("redis: key prefix `{}`", cfg.redis.key_prefix);
    println!("http: {}", cfg.listen);
    println!(
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
        println!(
            "provider `{}` ({}) at {}: {} urls/call, {} dirs/call, {} urls/day, {} dirs/day, rate {}, day starts at UTC{:+}h",
            p.name,
            p.kind.as_str(),
            p.endpoint,
            p.urls_per_call,
            p.dirs_per_call,
            p.urls_per_day,
            p.dirs_per_day,
            limits.join(" + "),
            p.quota_utc_offset_secs as f64 / 3600.0
        );
        for d in &p.domains {
            println!(
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
