//! `purge-worker plan`: a bulk job previewed with the worker's own normalization, dedupe and
//! escalation rule, without publishing; with or without Redis.
//!
//! Setup: a 100,000-line job for one tencent-v3 provider (default limits: 1,000 URLs and 20
//! directories per call, 10,000 URLs and 100 directories a day, reserve 0.2): 1 % invalid lines
//! (three kinds of reasons), and of the 99,000 valid ones 20 % duplicates written in another form
//! of the same cache key (host case, `:443`, fragment, an ignored query). 20,000 keys lie in 10
//! directories of 2,000 under a domain with `dir_escalation = 10`, 50 more in a directory below
//! the quota floor (101 URLs per directory unit at 10,000/100).
//!
//! Pass: exact lines, invalid, distinct keys, calls and units; with Redis reachable (1,000 URL
//! units already spent under the test's prefix) today's bulk share, what fits and the days are
//! exact in `--json`; with Redis on a closed port the text output still has every count, says
//! the share is unknown, and exits 0.

use std::fmt::Write as _;
use std::process::{Command, Output};

use purge_worker::purge::Kind;
use purge_worker::quota::{QuotaPolicy, QuotaStore, QuotaWindow, unix_now};

use crate::support::*;

fn plan(config: &std::path::Path, job: &std::path::Path, json: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_purge-worker"));
    c.args(["plan", "--config"])
        .arg(config)
        .arg("--file")
        .arg(job);
    if json {
        c.arg("--json");
    }
    c.env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run purge-worker plan")
}

fn config(dir: &std::path::Path, name: &str, redis_url: &str, prefix: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[redis]\nurl = \"{redis_url}\"\nkey_prefix = \"{prefix}\"\n\
             [[providers]]\nname = \"tencent-main\"\nkind = \"tencent-v3\"\nsecret_id = \"AKIDplan\"\n\
             secret_key = \"plan-secret-key-value\"\n\
             [[providers.domains]]\nhost = \"www.example.com\"\nignore_query = true\n\
             [[providers.domains]]\nhost = \"static.example.com\"\ndir_escalation = 10\n"
        ),
    )
    .expect("write config");
    path
}

/// The URL of distinct key `k`, plainly or in another form of the same cache key.
fn url(k: usize, variant: bool) -> String {
    let (host, path) = if k < 20_000 {
        ("static.example.com", format!("/img/d{}/{k}.png", k % 10))
    } else if k < 20_050 {
        ("static.example.com", format!("/misc/{k}.png"))
    } else {
        ("www.example.com", format!("/news/{k}.html"))
    };
    if !variant {
        return format!("https://{host}{path}");
    }
    let query = if host.starts_with("www") {
        "?utm=x"
    } else {
        ""
    };
    format!("HTTPS://{}:443{path}{query}#top", host.to_uppercase())
}

/// 100,000 lines: every 100th invalid, every 5th valid one a duplicate.
fn job() -> String {
    let mut s = String::with_capacity(5_000_000);
    let mut valid = 0usize;
    for i in 0..100_000usize {
        if i % 100 == 99 {
            match i % 3 {
                0 => writeln!(s, "ftp://www.example.com/{i}"),
                1 => writeln!(s, "https://unknown.test/{i}"),
                _ => writeln!(s, "www.example.com/{i}"),
            }
            .expect("write");
            continue;
        }
        let (group, at) = (valid / 5, valid % 5);
        let line = if at == 4 {
            url(group * 4, true)
        } else {
            url(group * 4 + at, false)
        };
        s.push_str(&line);
        s.push('\n');
        valid += 1;
    }
    s
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_counts_a_bulk_job_exactly_with_and_without_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let job_path = dir.path().join("job.txt");
    std::fs::write(&job_path, job()).expect("write job");
    let prefix = unique("plan");

    // Redis reachable, 1,000 URL units already spent today (interactive).
    let store = QuotaStore::connect(REDIS_URL, &prefix).expect("redis");
    let policy = QuotaPolicy {
        window: QuotaWindow::Day,
        utc_offset_secs: 8 * 3600,
    };
    let r = store
        .reserve("tencent-main", Kind::Url, 10_000, 1_000, unix_now(), policy)
        .await
        .expect("reserve");
    assert_eq!(r.granted, 1_000);
    let live = config(dir.path(), "live.toml", REDIS_URL, &prefix);
    let o = plan(&live, &job_path, true);
    store
        .reset("tencent-main", unix_now())
        .await
        .expect("cleanup");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json parses");
    assert_eq!(v["lines"], 100_000);
    assert_eq!(v["blank"], 0);
    assert_eq!(v["invalid"], 1_000);
    let first = v["first_invalid"].as_array().expect("first_invalid");
    assert_eq!(first.len(), 5);
    assert_eq!(first[0]["line"], 100);
    assert_eq!(first[0]["code"], "unsupported_scheme");
    assert_eq!(first[1]["code"], "unknown_host");
    assert_eq!(first[2]["code"], "invalid_url");
    let p = &v["providers"][0];
    assert_eq!(p["provider"], "tencent-main");
    assert_eq!(p["lines"], 99_000);
    assert_eq!(p["distinct_keys"], 79_200);
    let units = |k: &str| {
        let u = &p[k];
        [
            &u["url_units"],
            &u["dir_units"],
            &u["replaced_urls"],
            &u["calls"],
        ]
        .map(|x| x.as_u64().expect("number"))
    };
    assert_eq!(units("plain"), [79_200, 0, 0, 80]);
    assert_eq!(units("escalated"), [59_200, 10, 20_000, 61]);
    assert_eq!(p["bulk_per_day"]["urls"], 8_000);
    assert_eq!(p["bulk_per_day"]["dirs"], 80);
    assert_eq!(p["bulk_left_today"]["urls"], 7_000, "{p}");
    assert_eq!(p["bulk_left_today"]["dirs"], 80);
    assert_eq!(p["fits_today"]["urls"], 7_000);
    assert_eq!(p["fits_today"]["dirs"], 10);
    // 52,200 URL units left over at 8,000 a day.
    assert_eq!(p["days_for_rest"], 7);

    // Redis on a closed port: every count still there, the share unknown, exit 0.
    let dead = config(
        dir.path(),
        "dead.toml",
        &format!("redis://127.0.0.1:{}/0", closed_port()),
        &prefix,
    );
    let o = plan(&dead, &job_path, false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    for want in [
        "100000 lines read, 0 blank (skipped), 1000 invalid",
        "line 100: unsupported_scheme:",
        "distinct keys    79200 (19800 duplicates)",
        "plain            79200 URL units, 0 directory units, 80 calls",
        "escalated        59200 URL units, 10 directory units, 61 calls (20000 URLs replaced",
        "bulk left today  unknown (",
        "fits today       unknown",
        // 59,200 URL units at 8,000 a day.
        "whole job        8 provider days",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let o = plan(&dead, &job_path, true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("--json parses");
    let p = &v["providers"][0];
    assert!(
        p["bulk_left_today"].is_null() && p["fits_today"].is_null(),
        "{p}"
    );
    assert!(p["unknown_reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(p["days_for_rest"], 8);
    assert_eq!(p["distinct_keys"], 79_200);
}
