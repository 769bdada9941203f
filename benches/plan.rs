//! `purge-worker plan` throughput: the pure tally (read, validate, normalize, dedupe, escalation)
//! of a 1,000,000-line bulk job held in memory, for one tencent-v3 provider with three domains
//! (one with `ignore_query`, one with `dir_escalation`). about 10 % of the lines are duplicates in
//! another form of the same key, 1 % invalid. Prints lines/s of the best of `PLAN_RUNS` runs
//! (default 5) and the counts, so a change in the result is seen too. No Redis, no broker.
//!
//! Run: `cargo bench --bench plan` (release profile). Knob: `PLAN_LINES` (default 1000000).

use std::fmt::Write as _;
use std::time::Instant;

use purge_worker::commands::plan::tally;
use purge_worker::config::{Config, RawConfig};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Key `k` in its plain form, or in another form of the same cache key.
fn url(s: &mut String, k: usize, variant: bool) -> std::fmt::Result {
    let (scheme, www, stat, shop, port) = if variant {
        (
            "HTTPS",
            "WWW.EXAMPLE.COM",
            "Static.Example.Com",
            "SHOP.example.com",
            ":443",
        )
    } else {
        (
            "https",
            "www.example.com",
            "static.example.com",
            "shop.example.com",
            "",
        )
    };
    match k % 3 {
        // `ignore_query`: the variant's query is dropped.
        0 => writeln!(
            s,
            "{scheme}://{www}{port}/news/{}/{k}.html{}",
            k % 97,
            if variant { "?utm=x" } else { "" }
        ),
        1 => writeln!(
            s,
            "{scheme}://{stat}{port}/img/{}/{}/{k}.png",
            k % 13,
            k % 7
        ),
        _ => writeln!(s, "{scheme}://{shop}{port}/p/{k}?colour=red&size={}", k % 5),
    }
}

/// `lines` lines: every 100th invalid, every 10th (of the rest) a duplicate of the key before.
fn job(lines: usize) -> String {
    let mut s = String::with_capacity(lines * 56);
    let mut k = 0usize;
    for i in 0..lines {
        let r = if i % 100 == 99 {
            writeln!(s, "ftp://www.example.com/{i}")
        } else if i % 10 == 9 && k > 0 {
            url(&mut s, k - 1, true)
        } else {
            k += 1;
            url(&mut s, k - 1, false)
        };
        r.expect("write to a String");
    }
    s
}

fn main() -> anyhow::Result<()> {
    let lines = env_or("PLAN_LINES", 1_000_000);
    let runs = env_or("PLAN_RUNS", 5).max(1);
    let raw: RawConfig = toml::from_str(
        "[[providers]]\nname = \"tencent-main\"\nkind = \"tencent-v3\"\nsecret_id = \"AKIDbench\"\n\
         secret_key = \"bench-secret\"\n\
         [[providers.domains]]\nhost = \"www.example.com\"\nignore_query = true\n\
         [[providers.domains]]\nhost = \"static.example.com\"\ndir_escalation = 50\n\
         [[providers.domains]]\nhost = \"shop.example.com\"\n",
    )?;
    let cfg = Config::from_raw(raw)?;
    let text = job(lines);
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..runs {
        let mut reader = std::io::BufReader::with_capacity(1 << 16, text.as_bytes());
        let t = Instant::now();
        let tally = tally(&mut reader, &cfg.providers)?;
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(tally);
    }
    let t = last.expect("at least one run");
    let p = &t.providers[0];
    println!(
        "plan: {} lines ({} MB) in {:.3} s best of {runs}: {:.0} lines/s",
        t.lines,
        text.len() / 1_000_000,
        best,
        t.lines as f64 / best
    );
    println!(
        "  invalid {}, distinct keys {}, plain {} URL units / {} calls, escalated {} URL + {} dir units / {} calls",
        t.invalid,
        p.distinct_keys,
        p.plain.url_units,
        p.plain.calls,
        p.escalated.url_units,
        p.escalated.dir_units,
        p.escalated.calls
    );
    Ok(())
}
