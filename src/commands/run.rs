//! `purge-worker run`: the worker.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Config, ConfigSource};

/// Consume purge events from RabbitMQ and purge them at the CDN until SIGINT/SIGTERM, then drain
/// (finish or return in-flight work, ack what was purged) and exit 0.
///
/// Config lookup: --config, else $PURGE_WORKER_CONFIG, else ./purge-worker.toml. With no config at
/// all, the worker uses RabbitMQ and Redis on their default local ports and starts the built-in CDN
/// emulator in-process as the CDN for every host (a build without the `emulator` feature asks for
/// a config file instead).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Config file (TOML). Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults (local RabbitMQ and Redis, and the built-in emulator as the CDN for every host).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the built-in emulator listens when no config file is used (port 0 = any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub emulator_listen: std::net::SocketAddr,
}

/// Runs the worker until `shutdown`.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (source, cfg) = super::load(args.config.as_deref())?;
    match (source, cfg) {
        (ConfigSource::File(path), Some(cfg)) => {
            info!(config = %path.display(), providers = cfg.providers.len(), queue = %cfg.amqp.queue,
                "purge-worker starting");
            serve(cfg, shutdown).await
        }
        _ => zero_config(args.emulator_listen, shutdown).await,
    }
}

/// Runs the worker with `config` until `shutdown` and its drain are done.
async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker = crate::worker::Worker::start(config, shutdown).await?;
    info!(http = %worker.http_addr, "serving /metrics, /healthz and /readyz");
    worker.wait().await
}

/// No config file: the emulator on `listen` is the CDN for every host, and goes down with the
/// worker.
#[cfg(feature = "emulator")]
async fn zero_config(
    listen: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use crate::emulator::{Emulator, EmulatorConfig};
    let emu = Emulator::start(listen, EmulatorConfig::default()).await?;
    let cfg = super::builtin_for_run(emu.endpoint())?;
    info!(emulator = %emu.endpoint(), queue = %cfg.amqp.queue, key_prefix = %cfg.redis.key_prefix,
        "purge-worker starting with no config file: local RabbitMQ and Redis on their default ports, and the built-in emulator as the CDN for every host (see {}_emulator/requests for what it purged); demo quota counted afresh under Redis prefix `{}` (`purge-worker quota --key-prefix {}` shows it)",
        emu.endpoint(), cfg.redis.key_prefix, cfg.redis.key_prefix);
    let result = serve(cfg, shutdown).await;
    emu.shutdown().await;
    result
}

/// No config file and no emulator in this build: nothing to purge with.
#[cfg(not(feature = "emulator"))]
async fn zero_config(
    _listen: std::net::SocketAddr,
    _shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Err(super::UsageError(super::NO_EMULATOR.into()).into())
}
