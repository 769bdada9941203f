//! The CLI subcommands. Each returns `anyhow::Result`; a [`crate::config::ConfigError`] or a
//! [`UsageError`] anywhere in the chain means exit code 2, any other error exit code 1
//! (CONTRACT §1).

pub mod check;
pub mod dlq;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod explain;
pub mod parked;
pub mod pause;
pub mod plan;
pub mod publish;
pub mod quota;
pub mod run;

use std::path::{Path, PathBuf};

use crate::config::{self, AmqpConfig, Config, ConfigError, ConfigSource};

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

/// A command-line argument the command cannot use (exit code 2). The message names the argument.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `1 url`, `2 urls`: a count with the noun that agrees with it.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The Redis key prefix of a zero-config `run` started at `unix_secs` by process `pid`. Each
/// start counts its demo quota afresh: the emulator forgets its state on exit, so counters kept
/// under a shared prefix would park a new demo's purges behind an old demo's day. The old keys
/// expire by themselves a day after their quota day ends.
pub fn demo_key_prefix(unix_secs: i64, pid: u32) -> String {
    format!("{DEMO_KEY_PREFIX}-{unix_secs}-{pid}")
}

/// What every [`demo_key_prefix`] starts with.
pub const DEMO_KEY_PREFIX: &str = "purge-worker-demo";

/// Why a build without the `emulator` feature refuses to start with no config file: the
/// built-in configuration is the emulator's (its endpoint and demo credentials).
pub const NO_EMULATOR: &str = "built without the emulator feature: give a config file (--config FILE, $PURGE_WORKER_CONFIG or ./purge-worker.toml)";

/// The built-in configuration with the emulator at `endpoint` (local services, every host).
#[cfg(feature = "emulator")]
pub fn builtin(endpoint: url::Url) -> Result<Config, UsageError> {
    use crate::emulator::{EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY};
    Ok(Config::builtin(
        endpoint,
        EMULATOR_SECRET_ID,
        EMULATOR_SECRET_KEY,
    ))
}

/// Without the emulator there is no built-in configuration: [`NO_EMULATOR`].
#[cfg(not(feature = "emulator"))]
pub fn builtin(_endpoint: url::Url) -> Result<Config, UsageError> {
    Err(UsageError(NO_EMULATOR.into()))
}

/// The configuration of a zero-config `run`: [`builtin`] with this start's own
/// [`demo_key_prefix`].
pub fn builtin_for_run(endpoint: url::Url) -> Result<Config, UsageError> {
    let mut cfg = builtin(endpoint)?;
    cfg.redis.key_prefix = demo_key_prefix(crate::quota::unix_now(), std::process::id());
    Ok(cfg)
}

/// Only `[amqp]` of the configuration, for commands that only publish: the rest of the file is
/// parsed (a typo is still an error) but not validated, so a publishing host needs neither the
/// CDN credentials nor a `[[providers]]` section.
pub fn load_amqp(explicit: Option<&Path>) -> Result<AmqpConfig, ConfigError> {
    let raw = match config::locate(explicit) {
        Some(path) => config::read_raw(&path)?.amqp,
        None => Default::default(),
    };
    AmqpConfig::from_raw(raw)
}

/// Loads a config, or the built-in one with a placeholder emulator endpoint (port 0: `run`
/// starts its emulator on an ephemeral port), for commands that never call the CDN.
pub fn load_or_builtin(explicit: Option<&PathBuf>) -> anyhow::Result<(ConfigSource, Config)> {
    let (source, cfg) = load(explicit.map(|p| p.as_path()))?;
    let cfg =
        match cfg {
            Some(c) => c,
            None => builtin(url::Url::parse("http://127.0.0.1:0/").map_err(|e| {
                ConfigError::Invalid {
                    key: "providers".into(),
                    reason: e.to_string(),
                }
            })?)?,
        };
    Ok((source, cfg))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(feature = "emulator")]
    #[test]
    fn each_zero_config_start_counts_quota_under_its_own_prefix() {
        let endpoint = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let a = builtin_for_run(endpoint.clone()).unwrap().redis.key_prefix;
        assert!(a.starts_with("purge-worker-demo-"), "{a}");
        assert!(a.ends_with(&format!("-{}", std::process::id())), "{a}");
        assert_ne!(demo_key_prefix(100, 7), demo_key_prefix(101, 7));
        assert_ne!(demo_key_prefix(100, 7), demo_key_prefix(100, 8));
        assert_ne!(
            a,
            builtin(endpoint).unwrap().redis.key_prefix,
            "the shared prefix is not used"
        );
    }

    #[cfg(not(feature = "emulator"))]
    #[test]
    fn without_the_emulator_a_zero_config_start_asks_for_a_config_file() {
        let endpoint = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let e = builtin_for_run(endpoint).unwrap_err();
        assert_eq!(e.0, NO_EMULATOR);
        assert!(load_or_builtin(None).is_err() || config::locate(None).is_some());
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1, "url", "urls"), "1 url");
        assert_eq!(count(0, "url", "urls"), "0 urls");
        assert_eq!(count(2, "event", "events"), "2 events");
    }
}
