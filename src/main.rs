//! The `purge-worker` binary: parse arguments, set up logging and signals, run a command.
//! Exit codes (CONTRACT §1): 0 ok, 2 usage or configuration error, 1 runtime failure.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "emulator")]
use purge_worker::commands::emulator;
use purge_worker::commands::{self, check, dlq, explain, parked, pause, plan, publish, quota, run};
use purge_worker::config::ConfigError;
use purge_worker::logging::LogSink;

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
    #[cfg(feature = "emulator")]
    Emulator(emulator::EmulatorArgs),
    /// Show today's quota use and limit per provider and kind.
    Quota(quota::QuotaArgs),
    /// Validate the configuration and say exactly what is wrong.
    Check(check::CheckArgs),
    /// Preview a bulk job without publishing: keys, calls, quota units, what fits today, days.
    Plan(plan::PlanArgs),
    /// Inspect the dead-letter queue and replay its events (with confirms) once the cause is fixed.
    Dlq(dlq::DlqArgs),
    /// What waits for quota or a resume, and releasing it now (after a quota increase).
    Parked(parked::ParkedArgs),
    /// Stop calls to one provider on every replica within a second (items wait, nothing is lost).
    Pause(pause::PauseArgs),
    /// Restart calls to a paused provider and release its waiting items.
    Resume(pause::ResumeArgs),
    /// Each provider's state across the cluster: running, paused, auth-stopped, parked until.
    Status(pause::StatusArgs),
    /// Show the purge history of one URL: events, calls, task states at the CDN, prefetch.
    Explain(explain::ExplainArgs),
}

/// Longest wait for the last log lines at exit (stdout may be stalled).
const LOG_FLUSH: Duration = Duration::from_secs(1);
/// Longest wait at exit for blocking tasks (e.g. a DNS lookup) after the command has returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

fn init_logging(format: Option<LogFormat>, sink: LogSink) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stdout().is_terminal(),
    };
    // The sink never reports an error; tracing's own fallback (a line on stderr) is off anyway,
    // since stderr is often the same closed pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink)
        .log_internal_errors(false);
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

/// Writes a line to stderr; a closed stderr is not worth a panic.
fn report(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Cancels `token` on the first SIGINT or SIGTERM; exits the process with code 1 on the second,
/// without waiting for the drain (unacked deliveries are redelivered by the broker).
///
/// The token is cancelled before anything is logged, so nothing about logging (a closed or
/// stalled pipe) can stand between a signal and the shutdown.
fn cancel_on_signals(token: CancellationToken, logs: LogSink) {
    tokio::spawn(async move {
        let mut signals = Signals::new();
        signals.next().await;
        token.cancel();
        tracing::info!("shutdown requested: draining (a second SIGINT/SIGTERM stops at once)");
        signals.next().await;
        tracing::warn!("second shutdown signal: exiting without finishing the drain");
        logs.flush(LOG_FLUSH);
        std::process::exit(1);
    });
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // Without the handlers (never seen in practice) `ctrl_c` is still tried per call.
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        if tokio::signal::ctrl_c().await.is_err() {
            // No way to hear a signal: wait forever rather than shut down for no reason.
            std::future::pending::<()>().await;
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = match LogSink::stdout() {
        Ok(sink) => sink,
        Err(e) => {
            report(format_args!("error: cannot start the log writer: {e}"));
            return ExitCode::from(1);
        }
    };
    init_logging(cli.log_format, logs.clone());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        match cli.command {
            Command::Run(a) => {
                cancel_on_signals(shutdown.clone(), logs.clone());
                run::run(a, shutdown).await
            }
            #[cfg(feature = "emulator")]
            Command::Emulator(a) => {
                cancel_on_signals(shutdown.clone(), logs.clone());
                emulator::run(a, shutdown).await
            }
            Command::Publish(a) => publish::run(a).await,
            Command::Quota(a) => quota::run(a).await,
            Command::Check(a) => check::run(a),
            Command::Plan(a) => plan::run(a).await,
            Command::Dlq(a) => dlq::run(a).await,
            Command::Parked(a) => parked::run(a).await,
            Command::Pause(a) => pause::pause(a).await,
            Command::Resume(a) => pause::resume(a).await,
            Command::Status(a) => pause::status(a).await,
            Command::Explain(a) => explain::run(a).await,
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    logs.flush(LOG_FLUSH);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let config_error = e
                .chain()
                .any(|c| c.is::<ConfigError>() || c.is::<commands::UsageError>());
            report(format_args!(
                "error: {}",
                purge_worker::provider::error_chain(e.as_ref())
            ));
            ExitCode::from(if config_error { 2 } else { 1 })
        }
    }
}
