//! The CLI subcommands. Each returns `anyhow::Result`; a [`crate::config::ConfigError`] anywhere
//! in the chain means exit code 2, any other error exit code 1 (CONTRACT §1).

pub mod check;
pub mod emulator;
pub mod publish;
pub mod quota;
pub mod run;

use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigError, ConfigSource};
use crate::emulator::{EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY};

/// Loads the configuration per CONTRACT §1, or `None` when no file exists (built-in defaults).
pub fn load(explicit: Option<&Path>) -> Result<(ConfigSource, Option<Config>), ConfigError> {
    match config::locate(explicit) {
        Some(path) => {
            let cfg = Config::from_raw(config::read_raw(&path)?)?;
            Ok((ConfigSource::File(path), Some(cfg)))
        }
        None => Ok((ConfigSource::BuiltIn, None)),
    }
}

/// The built-in configuration with the emulator at `endpoint` (local services, every host).
pub fn builtin(endpoint: url::Url) -> Config {
    Config::builtin(endpoint, EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY)
}

/// Loads a config, or the built-in one with a placeholder emulator endpoint (for commands that
/// only need the broker or Redis settings).
pub fn load_or_builtin(explicit: Option<&PathBuf>) -> Result<(ConfigSource, Config), ConfigError> {
    let (source, cfg) = load(explicit.map(|p| p.as_path()))?;
    let cfg = match cfg {
        Some(c) => c,
        None => builtin(url::Url::parse("http://127.0.0.1:8089/").map_err(|e| {
            ConfigError::Invalid {
                key: "providers".into(),
                reason: e.to_string(),
            }
        })?),
    };
    Ok((source, cfg))
}
