//! `purge-worker plan`: preview a bulk job without publishing (issue 11 §3, CONTRACT §1, §7).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::config::{Config, ProviderConfig};
use crate::purge::Kind;
use crate::quota::{QuotaStore, bulk_limit, unix_now};

pub mod job;

pub use job::{Demand, InvalidLine, Tally, Units, tally};

/// What `plan --help` says about its output.
const OUTPUT_HELP: &str = "\
Every line goes through the worker's own validation and cache-key normalization (scheme and host
case, default ports, fragments, percent-encoding, the domain's ignore_query, the provider's URL
rules) and is deduplicated per provider. Nothing is published.

Output: lines read, blank lines (skipped), invalid lines with the reasons of the first few; then
per provider:
  lines            valid lines routed to it
  distinct keys    cache keys left after normalization and dedupe (one quota unit each)
  plain            URL units and calls with every key purged as a URL (urls_per_call)
  escalated        URL units, directory units and calls when the domains' dir_escalation replaces
                   URLs by directory purges (the worker's own rule, as if every key of the job
                   waited at once: the most escalation can save)
  bulk left today  what bulk items may still spend in the current quota window (day or rolling
                   24 h): the limit less interactive_reserve, less the use counted in Redis;
                   `unknown` when Redis cannot be reached
  fits today       the escalated units that fit in what is left today
  rest             how many more provider days (a full bulk share each) the rest needs; when
                   today's share is unknown, `whole job`: the days the whole job needs

Exit 0 whenever the file could be read, with or without Redis; 2 on a configuration error.";

/// Preview a bulk job (one URL per line, as `publish --file` takes it) without publishing.
#[derive(clap::Args, Debug)]
#[command(after_long_help = OUTPUT_HELP)]
pub struct PlanArgs {
    /// Config file (TOML); [redis] and [[providers]] are used. Default: $PURGE_WORKER_CONFIG, else ./purge-worker.toml, else built-in defaults.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The job: a file with one URL per line, or `-` for stdin.
    #[arg(long, value_name = "PATH|-")]
    pub file: String,
    /// Print JSON (one object: the job's counts and one entry per provider) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How long `plan` waits for Redis before saying today's share is unknown.
const REDIS_WAIT: Duration = Duration::from_secs(3);

/// One provider's plan.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderPlan {
    #[serde(flatten)]
    pub demand: Demand,
    /// Bulk share of a full window: `limit × (1 − interactive_reserve)`.
    pub bulk_per_day: Pair,
    /// What bulk may still spend now; `None`: unknown (Redis unreachable).
    pub bulk_left_today: Option<Pair>,
    /// The escalated units that fit in `bulk_left_today`; `None` when that is unknown.
    pub fits_today: Option<Pair>,
    /// Provider days (full bulk shares) for what does not fit today, or for the whole job when
    /// today is unknown; `None`: never (the bulk share of a kind the job needs is 0).
    pub days_for_rest: Option<u64>,
    /// Why `bulk_left_today` is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<String>,
}

/// URL and directory units.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Pair {
    pub urls: u64,
    pub dirs: u64,
}

/// The whole output of `plan`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub lines: u64,
    pub blank: u64,
    pub invalid: u64,
    pub first_invalid: Vec<InvalidLine>,
    pub providers: Vec<ProviderPlan>,
}

/// Runs the command.
pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let (_, cfg) = super::load_or_builtin(args.config.as_ref())?;
    let file = args.file.clone();
    let providers = cfg.providers.clone();
    // Reading and hashing a million lines is CPU work: off the async threads.
    let t = tokio::task::spawn_blocking(move || -> anyhow::Result<Tally> {
        let mut reader: Box<dyn BufRead> = if file == "-" {
            Box::new(std::io::BufReader::with_capacity(1 << 16, std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::with_capacity(
                1 << 16,
                std::fs::File::open(&file).with_context(|| format!("cannot open --file {file}"))?,
            ))
        };
        tally(&mut reader, &providers).with_context(|| format!("reading --file {file}"))
    })
    .await??;
    let left = bulk_left(&cfg).await;
    let plan = assemble(t, &cfg.providers, left);
    if args.json {
        out!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_text(&plan);
    }
    Ok(())
}

/// Today's bulk share left per provider, or why it is unknown.
async fn bulk_left(cfg: &Config) -> Result<Vec<Pair>, String> {
    let store = QuotaStore::connect(cfg.redis.url.expose(), &cfg.redis.key_prefix)
        .map_err(|e| format!("redis.url: {e}"))?;
    let now = unix_now();
    let read = async {
        let mut out = Vec::new();
        for p in &cfg.providers {
            let mut pair = Pair::default();
            for (kind, slot) in [(Kind::Url, &mut pair.urls), (Kind::Dir, &mut pair.dirs)] {
                *slot = store
                    .bulk_left(
                        &p.name,
                        kind,
                        p.per_day(kind),
                        p.interactive_reserve,
                        now,
                        p.quota_policy(),
                    )
                    .await
                    .map_err(|e| format!("cannot read quota counters from Redis: {e}"))?;
            }
            out.push(pair);
        }
        Ok(out)
    };
    tokio::time::timeout(REDIS_WAIT, read)
        .await
        .unwrap_or_else(|_| Err(format!("Redis did not answer within {REDIS_WAIT:?}")))
}

/// Puts the tally and today's shares together.
pub fn assemble(t: Tally, providers: &[ProviderConfig], left: Result<Vec<Pair>, String>) -> Plan {
    let plans = t
        .providers
        .into_iter()
        .zip(providers)
        .enumerate()
        .map(|(i, (demand, p))| {
            let per_day = Pair {
                urls: bulk_limit(p.urls_per_day, p.interactive_reserve),
                dirs: bulk_limit(p.dirs_per_day, p.interactive_reserve),
            };
            let need = Pair {
                urls: demand.escalated.url_units,
                dirs: demand.escalated.dir_units,
            };
            let today = left.as_ref().ok().and_then(|l| l.get(i).copied());
            let fits = today.map(|l| Pair {
                urls: need.urls.min(l.urls),
                dirs: need.dirs.min(l.dirs),
            });
            let rest = match fits {
                Some(f) => Pair {
                    urls: need.urls - f.urls,
                    dirs: need.dirs - f.dirs,
                },
                None => need,
            };
            ProviderPlan {
                demand,
                bulk_per_day: per_day,
                bulk_left_today: today,
                fits_today: fits,
                days_for_rest: days(rest, per_day),
                unknown_reason: left.as_ref().err().cloned(),
            }
        })
        .collect();
    Plan {
        lines: t.lines,
        blank: t.blank,
        invalid: t.invalid,
        first_invalid: t.first_invalid,
        providers: plans,
    }
}

/// Full bulk days that `rest` needs; `None` when a kind it needs has no bulk share at all.
pub fn days(rest: Pair, per_day: Pair) -> Option<u64> {
    let one = |need: u64, cap: u64| match (need, cap) {
        (0, _) => Some(0),
        (_, 0) => None,
        (n, c) => Some(n.div_ceil(c)),
    };
    Some(one(rest.urls, per_day.urls)?.max(one(rest.dirs, per_day.dirs)?))
}

fn print_text(plan: &Plan) {
    use super::count;
    out!(
        "job: {} read, {} blank (skipped), {} invalid",
        count(plan.lines, "line", "lines"),
        plan.blank,
        plan.invalid
    );
    if !plan.first_invalid.is_empty() {
        out!(
            "invalid lines (first {} of {}):",
            plan.first_invalid.len(),
            plan.invalid
        );
        for l in &plan.first_invalid {
            out!("  line {}: {}: {}", l.line, l.code, l.reason);
        }
    }
    for p in &plan.providers {
        let d = &p.demand;
        let units = |u: &Units| {
            format!(
                "{} URL units, {} directory units, {}",
                u.url_units,
                u.dir_units,
                count(u.calls, "call", "calls")
            )
        };
        out!("provider {}", d.provider);
        out!("  lines            {}", d.lines);
        out!(
            "  distinct keys    {} ({} duplicates)",
            d.distinct_keys,
            d.lines - d.distinct_keys
        );
        out!("  plain            {}", units(&d.plain));
        out!(
            "  escalated        {} ({} URLs replaced by directories)",
            units(&d.escalated),
            d.escalated.replaced_urls
        );
        let per_day = format!(
            "of {} URLs and {} directories a day",
            p.bulk_per_day.urls, p.bulk_per_day.dirs
        );
        match (&p.bulk_left_today, &p.fits_today) {
            (Some(l), Some(f)) => {
                out!(
                    "  bulk left today  {} URLs, {} directories ({per_day})",
                    l.urls,
                    l.dirs
                );
                out!("  fits today       {} URLs, {} directories", f.urls, f.dirs);
            }
            _ => {
                out!(
                    "  bulk left today  unknown ({}); bulk share {per_day}",
                    p.unknown_reason.as_deref().unwrap_or("not read")
                );
                out!("  fits today       unknown");
            }
        }
        let days = match p.days_for_rest {
            Some(0) => "nothing left over".to_string(),
            Some(n) => count(n, "provider day", "provider days"),
            None => "never: the bulk share of a kind it needs is 0".to_string(),
        };
        let what = if p.fits_today.is_some() {
            "rest"
        } else {
            "whole job"
        };
        out!("  {what:<16} {days}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_up_and_say_never_without_a_share() {
        let per_day = Pair {
            urls: 8000,
            dirs: 80,
        };
        assert_eq!(days(Pair { urls: 0, dirs: 0 }, per_day), Some(0));
        assert_eq!(
            days(
                Pair {
                    urls: 8000,
                    dirs: 0
                },
                per_day
            ),
            Some(1)
        );
        assert_eq!(
            days(
                Pair {
                    urls: 8001,
                    dirs: 0
                },
                per_day
            ),
            Some(2)
        );
        assert_eq!(
            days(
                Pair {
                    urls: 10,
                    dirs: 161
                },
                per_day
            ),
            Some(3)
        );
        assert_eq!(
            days(Pair { urls: 1, dirs: 0 }, Pair { urls: 0, dirs: 5 }),
            None
        );
    }
}
