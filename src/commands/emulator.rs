//! `purge-worker emulator`: runs the CDN API emulator as a standalone server, for demos and for
//! pointing a worker (or curl) at a fake Tencent Cloud API with controllable limits and faults.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::emulator::{EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig, Faults};

/// Arguments of `purge-worker emulator`. Defaults are Tencent's published limits.
#[derive(clap::Args, Debug)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8089")]
    pub listen: SocketAddr,

    /// URL purges allowed per account per day (the day starts at 00:00 UTC+8, like Tencent's).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub urls_per_day: u64,

    /// Directory purges allowed per account per day (00:00 UTC+8 reset).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub paths_per_day: u64,

    /// Most URLs in one PurgeUrlsCache call; larger calls get
    /// LimitExceeded.CdnPurgeUrlExceedBatchLimit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub urls_per_call: usize,

    /// Most paths in one PurgePathCache call; larger calls get
    /// LimitExceeded.CdnPurgePathExceedBatchLimit.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub paths_per_call: usize,

    /// Purge calls per account allowed in any sliding second; more get RequestLimitExceeded.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub requests_per_second: u32,

    /// Purge tasks stay `process` this many milliseconds before they finish (status queries:
    /// DescribePurgeTasks, GetCdnRefreshLog, GET /cdn/purges/{id}).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub task_delay_ms: u64,

    /// Every Nth purge task (across the APIs) ends failed at the CDN (0 = none).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub task_fail_every: u32,

    /// Fault: the first N purge calls answer InternalError (a transient failure).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub fail_first: u32,

    /// Fault: every Kth purge call answers RequestLimitExceeded (0 = off).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub rate_limit_every: u32,

    /// Fault: delay every API answer by this many milliseconds (the call still takes effect,
    /// so a client timeout leaves it "maybe applied").
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Fault: refuse any purge batch containing exactly this URL with
    /// InvalidParameter.CdnParamError, the whole batch, like the real API (repeatable).
    #[arg(long = "reject-url", value_name = "URL")]
    pub reject_urls: Vec<String>,

    /// Legacy API 2.0: most URLs in one RefreshCdnUrl call; more get code 4000 (22043).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub v2_urls_per_call: usize,

    /// Legacy API 2.0: most directories in one RefreshCdnDir call; more get 4000 (22045).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub v2_dirs_per_call: usize,

    /// Legacy API 2.0: URL refreshes per account per day (00:00 UTC+8 reset); more get 4000
    /// (22044).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub v2_urls_per_day: u64,

    /// Legacy API 2.0: directory refreshes per account per day (00:00 UTC+8 reset); more get
    /// 4000 (22046).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub v2_dirs_per_day: u64,

    /// Legacy API 2.0: calls per account in any sliding minute; more get code 4400.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub v2_requests_per_minute: u32,

    /// Wangsu: most fileUrls in one POST /cdn/purges; more get 400 TooManyPurgeEntries.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub wangsu_files_per_call: usize,

    /// Wangsu: most dirUrls in one POST /cdn/purges; more get 400 TooManyPurgeEntries.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub wangsu_dirs_per_call: usize,

    /// Wangsu: file entries per target in any 24 hours; more get 400 PurgeQuotaExceeded.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    pub wangsu_files_per_24h: u64,

    /// Wangsu: directory plus regex entries per target in any 24 hours; more get 400
    /// PurgeQuotaExceeded.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub wangsu_dirs_per_24h: u64,

    /// Wangsu: API token-bucket refill per minute (apiRate); an empty bucket answers 429.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub wangsu_api_rate_per_min: u32,

    /// Wangsu: API token-bucket size (apiMaxBurst).
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub wangsu_api_burst: u32,

    /// SecretId of the emulated account, replacing the built-in demo account (needs
    /// --secret-key).
    #[arg(long, value_name = "ID", requires = "secret_key")]
    pub secret_id: Option<String>,

    /// SecretKey of the account named by --secret-id (ignored without it). Prefer the
    /// environment variable: command lines are visible to other local users.
    #[arg(
        long,
        value_name = "KEY",
        env = "PURGE_WORKER_EMULATOR_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
}

impl EmulatorArgs {
    /// The legacy v2 API's limits these arguments describe.
    fn tencent_v2_limits(&self) -> crate::emulator::V2Limits {
        crate::emulator::V2Limits {
            urls_per_call: self.v2_urls_per_call,
            dirs_per_call: self.v2_dirs_per_call,
            urls_per_day: self.v2_urls_per_day,
            dirs_per_day: self.v2_dirs_per_day,
            requests_per_minute: self.v2_requests_per_minute,
        }
    }

    /// The Wangsu API's accounts and limits these arguments describe.
    fn wangsu_limits(&self) -> crate::emulator::WangsuLimits {
        crate::emulator::WangsuLimits {
            files_per_call: self.wangsu_files_per_call,
            dirs_per_call: self.wangsu_dirs_per_call,
            files_per_24h: self.wangsu_files_per_24h,
            dirs_per_24h: self.wangsu_dirs_per_24h,
            api_rate_per_min: self.wangsu_api_rate_per_min,
            api_burst: self.wangsu_api_burst,
            ..crate::emulator::WangsuLimits::default()
        }
    }

    /// The emulator configuration these arguments describe.
    pub fn config(&self) -> EmulatorConfig {
        let accounts = match (&self.secret_id, &self.secret_key) {
            (Some(id), Some(key)) => vec![(id.clone(), key.clone())],
            _ => vec![(EMULATOR_SECRET_ID.into(), EMULATOR_SECRET_KEY.into())],
        };
        EmulatorConfig {
            accounts,
            urls_per_call: self.urls_per_call,
            paths_per_call: self.paths_per_call,
            urls_per_day: self.urls_per_day,
            paths_per_day: self.paths_per_day,
            requests_per_second: self.requests_per_second,
            faults: Faults {
                fail_first: self.fail_first,
                rate_limit_every: self.rate_limit_every,
                latency: Duration::from_millis(self.latency_ms),
                invalid_urls: self.reject_urls.iter().cloned().collect::<HashSet<_>>(),
                ..Faults::default()
            },
            tencent_v2: self.tencent_v2_limits(),
            wangsu: self.wangsu_limits(),
            tasks: crate::emulator::TaskModel {
                delay: Duration::from_millis(self.task_delay_ms),
                fail_every: self.task_fail_every,
            },
            prefetch: crate::emulator::PrefetchLimits::default(),
        }
    }
}

/// Runs the emulator until `shutdown` is cancelled (Ctrl-C / SIGTERM in `main`).
pub async fn run(args: EmulatorArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = args.config();
    let emulator = Emulator::start(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Only the built-in demo key is printed; a key given on the command line stays private.
    let credentials = match &args.secret_id {
        Some(id) => format!("secret_id={id} secret_key=<from --secret-key>"),
        None => format!("secret_id={EMULATOR_SECRET_ID} secret_key={EMULATOR_SECRET_KEY}"),
    };
    out!(
        "emulator (Tencent Cloud API 3.0 and 2.0, Wangsu CDN Pro) listening on {} — accepts {credentials}",
        emulator.endpoint()
    );
    out!(
        "  Wangsu CDN Pro (/cdn/purges) accepts username={} api_key={} or AccessKey={} SecretKey={}",
        crate::emulator::EMULATOR_WANGSU_USERNAME,
        crate::emulator::EMULATOR_WANGSU_API_KEY,
        crate::emulator::EMULATOR_WANGSU_ACCESS_KEY,
        crate::emulator::EMULATOR_WANGSU_SECRET_KEY,
    );
    shutdown.cancelled().await;
    emulator.shutdown().await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: EmulatorArgs,
    }

    #[test]
    fn flags_map_onto_the_config() {
        let cli = Cli::try_parse_from([
            "x",
            "--urls-per-day",
            "7",
            "--paths-per-call",
            "3",
            "--fail-first",
            "2",
            "--latency-ms",
            "50",
            "--reject-url",
            "https://a/x",
            "--reject-url",
            "https://a/y",
        ])
        .unwrap();
        let c = cli.args.config();
        assert_eq!(c.urls_per_day, 7);
        assert_eq!(c.paths_per_call, 3);
        assert_eq!(c.urls_per_call, 1000);
        assert_eq!(c.faults.fail_first, 2);
        assert_eq!(c.faults.latency, Duration::from_millis(50));
        assert_eq!(c.faults.invalid_urls.len(), 2);
        assert_eq!(c.accounts[0].0, EMULATOR_SECRET_ID);
        assert_eq!(cli.args.listen, "127.0.0.1:8089".parse().unwrap());
    }

    #[test]
    fn v2_flags_map_onto_the_v2_limits() {
        let cli = Cli::try_parse_from([
            "x",
            "--v2-urls-per-day",
            "5",
            "--v2-dirs-per-call",
            "2",
            "--v2-requests-per-minute",
            "1200",
        ])
        .unwrap();
        let v2 = cli.args.config().tencent_v2;
        assert_eq!(
            v2,
            crate::emulator::V2Limits {
                urls_per_day: 5,
                dirs_per_call: 2,
                requests_per_minute: 1200,
                ..Default::default()
            }
        );
        let defaults = Cli::try_parse_from(["x"]).unwrap().args.config();
        assert_eq!(defaults.tencent_v2, crate::emulator::V2Limits::default());
    }

    #[test]
    fn wangsu_flags_map_onto_its_limits() {
        let cli = Cli::try_parse_from([
            "x",
            "--wangsu-files-per-24h",
            "7",
            "--wangsu-api-burst",
            "2",
        ])
        .unwrap();
        let w = cli.args.config().wangsu;
        assert_eq!((w.files_per_24h, w.api_burst), (7, 2));
        assert_eq!(
            (w.files_per_call, w.dirs_per_24h, w.api_rate_per_min),
            (1000, 20, 30)
        );
        assert_eq!(w.accounts[0].0, crate::emulator::EMULATOR_WANGSU_USERNAME);
    }

    #[test]
    fn custom_account_needs_both_halves() {
        assert!(Cli::try_parse_from(["x", "--secret-id", "AKIDx"]).is_err());
        let cli = Cli::try_parse_from(["x", "--secret-id", "AKIDx", "--secret-key", "k"]).unwrap();
        assert_eq!(
            cli.args.config().accounts,
            [("AKIDx".to_string(), "k".to_string())]
        );
    }
}
