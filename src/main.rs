//! The `purge-worker` binary: parse arguments, set up logging and signals, run a command.
//! Exit codes (CONTRACT §1): 0 ok, 2 usage or configuration error, 1 runtime failure.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use purge_worker::commands::{self, check, emulator, publish, quota, run};
use purge_worker::config::ConfigError;

/// Turns a noisy, duplicated, bursty stream of "this content changed" events from RabbitMQ into
/// the fewest, fullest CDN purge calls (Tencent Cloud API 3.0), within every rate limit and daily
/// quota, without losing a purge.
#[derive(Parser, Debug)]
#[command(name = "purge-worker", version, about, long_about = None)]
struct Cli {
    /// Log format: json (default when stdout is not a terminal) or text. Level via RUST_LOG
    /// (default info).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the worker: consume purge events, purge at the CDN, ack.
    Run(run::RunArgs),
    /// Publish a purge event (or a file of URLs) to the purge queue.
    Publish(publish::PublishArgs),
    /// Run the local CDN API emulator (signature checks, limits, real error shapes).
    Emulator(emulator::EmulatorArgs),
    /// Show today's quota use and limit per provider and kind.
    Quota(quota::QuotaArgs),
    /// Validate the configuration and say exactly what is wrong.
    Check(check::CheckArgs),
}

fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stdout().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested: draining");
        token.cancel();
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        match cli.command {
            Command::Run(a) => {
                cancel_on_signals(shutdown.clone());
                run::run(a, shutdown).await
            }
            Command::Emulator(a) => {
                cancel_on_signals(shutdown.clone());
                emulator::run(a, shutdown).await
            }
            Command::Publish(a) => publish::run(a).await,
            Command::Quota(a) => quota::run(a).await,
            Command::Check(a) => check::run(a),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = e
                .chain()
                .any(|c| c.is::<ConfigError>() || c.is::<commands::UsageError>());
            eprintln!("error: {}", purge_worker::provider::error_chain(e.as_ref()));
            ExitCode::from(if config_error { 2 } else { 1 })
        }
    }
}
