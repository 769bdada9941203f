//! The monitoring files under `deploy/` work against the real worker and a real Prometheus.
//!
//! Property: the Prometheus config, the alert rules and their unit tests pass `promtool`; every
//! alert has a firing and a non-firing unit test and tells the on-call what to do; the Grafana
//! dashboard is well-formed; and against a live worker (which purged a burst against the emulator,
//! retried one transient failure and dead-lettered one bad event), scraped every second by a
//! Prometheus of our own on a free port, every dashboard query parses and returns at least one
//! series, every alert expression parses and every series selector in it returns at least one
//! series, the dead-letter alert becomes active and the alerts of a healthy worker stay quiet.
//! Fault: none; the emulator's first call fails (a retry) and one event names an unknown host.
//! Pass: all of the above, with a summary of what was verified. Needs `promtool` and `prometheus`
//! (Debian package `prometheus`; `.ci/run` installs it); fails with that message otherwise.

mod artifacts;
mod deploy;
mod promql;
mod server;

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;
use purge_worker::emulator::{EmulatorConfig, Faults};
use serde_json::json;

use artifacts::{ALERTS, ALERTS_TEST, DASHBOARD};
use server::{Prometheus, promtool, repo};

/// Alerts that must not be active (pending or firing) for a healthy worker that dead-lettered one
/// event. `PurgeQueueGrowing` is left out: its inputs are a live queue's depth.
const QUIET_ALERTS: &[&str] = &[
    "PurgeWorkerDown",
    "PurgeWorkerNotReady",
    "PurgeProviderAuthFailure",
    "PurgeStalled",
    "PurgeQuotaExhaustionPredicted",
    "PurgeLaneParked",
    "PurgeTasksFailingAtCdn",
    "PurgeTimeToFreshSlow",
    "PurgeInteractiveParked",
];
/// The alert the live worker's dead letter must trigger.
const DEAD_LETTER_ALERT: &str = "PurgeDeadLettersGrowing";
/// Bound on the live checks' waits on Prometheus.
const PROM_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn promtool_accepts_the_config_the_rules_and_the_rule_unit_tests() {
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool(&["check", "rules", ALERTS]);
    let out = promtool(&["test", "rules", ALERTS_TEST]);
    assert!(out.contains("SUCCESS"), "{out}");

    // The Kubernetes variant: Debian's Prometheus is built without Kubernetes service discovery,
    // so there promtool cannot parse kubernetes_sd_configs; then check its shape here instead.
    let k8s = "deploy/prometheus/prometheus-kubernetes.yml";
    let full = std::process::Command::new(server::tool("promtool", "prometheus"))
        .args(["check", "config", k8s])
        .current_dir(repo())
        .output()
        .expect("promtool runs");
    let text =
        String::from_utf8_lossy(&full.stdout).to_string() + &String::from_utf8_lossy(&full.stderr);
    if !full.status.success() {
        assert!(
            text.contains("field kubernetes_sd_configs not found"),
            "`promtool check config {k8s}` failed:\n{text}"
        );
        println!("note: this promtool lacks Kubernetes SD; {k8s} checked as YAML only");
    }
    let cfg = artifacts::yaml(k8s);
    assert_eq!(cfg["rule_files"][0].as_str(), Some("alerts.yml"));
    assert_eq!(
        cfg["scrape_configs"][0]["job_name"].as_str(),
        Some("purge-worker")
    );
}

#[test]
fn every_alert_is_documented_and_unit_tested_firing_and_not_firing() {
    let rules = artifacts::alert_rules();
    assert!(rules.len() >= 7, "{rules:#?}");
    let cover = artifacts::alert_test_coverage();
    for r in &rules {
        assert!(r.severity.is_some(), "{}: severity label", r.name);
        for (what, text) in [("summary", &r.summary), ("description", &r.description)] {
            assert!(
                text.as_ref().is_some_and(|t| t.len() > 20),
                "{}: {what} annotation",
                r.name
            );
        }
        assert_eq!(
            cover.get(&r.name),
            Some(&(true, true)),
            "{}: alerts_test.yml needs a firing and a non-firing case",
            r.name
        );
    }
}

#[test]
fn dashboard_is_structurally_valid() {
    let d = artifacts::dashboard();
    assert!(d["schemaVersion"].as_u64().is_some(), "schemaVersion");
    assert!(d["uid"].as_str().is_some(), "uid");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(vars.contains(&"datasource"), "{vars:?}");
    let panels = artifacts::panels(&d);
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title}: id"));
        assert!(ids.insert(id), "panel id {id} is not unique ({title})");
        assert!(p["gridPos"].is_object(), "panel {title}: gridPos");
        let ds = &p["datasource"];
        assert!(
            ds["uid"].as_str().is_some() || ds.as_str().is_some(),
            "panel {title}: datasource"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title}: no query");
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "panel {title}: target without expr"
            );
            promql::substitute(expr).unwrap_or_else(|e| panic!("panel {title}: {e}"));
        }
    }
}

/// What the live check found.
#[derive(Default)]
struct Verified {
    dashboard: usize,
    alerts: usize,
    selectors: usize,
    failures: Vec<String>,
}

/// Runs every dashboard query and every alert expression and selector against `prom`.
/// Worker replicas behind the one Prometheus job of the live test.
const REPLICAS: usize = 3;

async fn verify_live(prom: &Prometheus, metrics_url: &str) -> Verified {
    let mut v = Verified::default();
    let up = r#"up{job="purge-worker"}"#;
    let all_up = format!("sum({up})");
    wait_until("Prometheus scrapes every replica", PROM_TIMEOUT, || async {
        prom.value(&all_up).await == Some(REPLICAS as f64)
    })
    .await;
    // Enough samples that every rate() and increase() over 1m has data.
    let samples = format!("min(count_over_time({up}[1m]))");
    wait_until("6 scrapes", PROM_TIMEOUT, || async {
        prom.value(&samples).await.is_some_and(|n| n >= 6.0)
    })
    .await;
    let exported = reqwest::get(metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");

    for (title, raw) in artifacts::dashboard_queries() {
        let q = promql::substitute(&raw).unwrap_or_else(|e| panic!("{title}: {e}"));
        match prom.query(&q).await {
            Ok(series) if !series.is_empty() => v.dashboard += 1,
            Ok(_) => v.failures.push(format!(
                "dashboard `{title}`: no series for `{q}`{}",
                missing(&q, &exported)
            )),
            Err(e) => v
                .failures
                .push(format!("dashboard `{title}`: `{q}` failed: {e}")),
        }
    }
    let mut checked = BTreeSet::new();
    for rule in artifacts::alert_rules() {
        match prom.query(&rule.expr).await {
            Ok(_) => v.alerts += 1,
            Err(e) => v.failures.push(format!("alert {}: {e}", rule.name)),
        }
        for sel in promql::selectors(&rule.expr) {
            if !checked.insert(sel.clone()) {
                continue;
            }
            match prom.query(&sel).await {
                Ok(series) if !series.is_empty() => v.selectors += 1,
                Ok(_) => v.failures.push(format!(
                    "alert {}: selector `{sel}` returns no series{}",
                    rule.name,
                    missing(&sel, &exported)
                )),
                Err(e) => v
                    .failures
                    .push(format!("alert {}: selector `{sel}`: {e}", rule.name)),
            }
        }
    }

    // Sanity on values: the worker is purging and Prometheus sees it.
    let accepted = r#"sum(rate(purge_api_requests_total{result="ok"}[1m]))"#;
    if !prom.value(accepted).await.is_some_and(|r| r > 0.0) {
        v.failures
            .push(format!("`{accepted}` is not > 0 while purging"));
    }
    // The rules evaluate on live data: the dead letter activates its alert, the rest stay quiet.
    let deadline = tokio::time::Instant::now() + PROM_TIMEOUT;
    let mut active = prom.alerts().await;
    while !active.iter().any(|(a, _)| a == DEAD_LETTER_ALERT)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        active = prom.alerts().await;
    }
    if !active.iter().any(|(a, _)| a == DEAD_LETTER_ALERT) {
        v.failures.push(format!(
            "{DEAD_LETTER_ALERT} never became active: {active:?}"
        ));
    }
    for (alert, state) in &active {
        if QUIET_ALERTS.contains(&alert.as_str()) {
            v.failures
                .push(format!("{alert} is {state} for a healthy worker"));
        }
    }
    v
}

/// " (metric X is not exported by the worker)" for every metric of `selector` missing from the
/// worker's exposition, so a failure says whether the metric or the query is wrong.
fn missing(query: &str, exported: &str) -> String {
    promql::selectors(query)
        .iter()
        .map(|s| promql::family(promql::metric_name(s)).to_string())
        .filter(|m| m.starts_with("purge_"))
        .filter(|m| !exported.contains(&format!("# TYPE {m} ")))
        .map(|m| format!(" (metric {m} is not exported by the worker)"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_and_alert_selectors_return_live_series() {
    // Fail fast, before starting anything, when the tools are missing.
    server::tool("prometheus", "prometheus");
    let emu = emulator(EmulatorConfig {
        faults: Faults {
            fail_first: 1,
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let mut env = TestEnv::new("prometheus").await;
    let config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: String::new(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 50",
    );
    // Several replicas behind one job: every query must still work (sums over instances).
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(Running::start(config.clone()).await);
    }
    let acked = || replicas.iter().map(Running::acked).sum::<u64>();
    // A burst of file and directory purges (the first call fails: a retry), and one event for a
    // host no provider serves (a dead letter).
    for i in 0..10 {
        env.publish_json(&json!({"urls": [format!("https://www.example.com/p/{i}.html")]}))
            .await;
    }
    env.publish_json(&json!({"dirs": ["https://www.example.com/news/"]}))
        .await;
    env.publish_json(&json!({"urls": ["https://unknown.example.org/x"], "id": "bad"}))
        .await;
    wait_until("the burst is acked", TIMEOUT, || async { acked() == 12 }).await;

    let addrs: Vec<_> = replicas.iter().map(|r| r.worker.http_addr).collect();
    let prom = Prometheus::start(&addrs, &repo().join(ALERTS)).await;
    let metrics_url = format!("http://{}/metrics", addrs[0]);
    // Steady traffic while Prometheus scrapes, so rates and latency quantiles have data.
    let traffic = async {
        for i in 0.. {
            env.publish_json(&json!({"urls": [format!("https://www.example.com/live/{i}")]}))
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let verified = tokio::select! {
        v = verify_live(&prom, &metrics_url) => v,
        () = traffic => unreachable!("the traffic loop never ends"),
    };

    println!(
        "{} dashboard queries verified live (parse, >= 1 series); {} alert expressions parsed, \
         {} distinct alert selectors verified live (>= 1 series); {DEAD_LETTER_ALERT} active, \
         {} alerts quiet",
        verified.dashboard,
        verified.alerts,
        verified.selectors,
        QUIET_ALERTS.len()
    );
    if !verified.failures.is_empty() {
        panic!(
            "{} live check(s) failed ({DASHBOARD}, {ALERTS}):\n  {}\nPrometheus log:\n{}",
            verified.failures.len(),
            verified.failures.join("\n  "),
            prom.log()
        );
    }
    // With the traffic stopped, Prometheus's sum over the replicas is what they counted.
    let series = r#"purge_events_total{outcome="accepted"}"#;
    let query = format!("sum({series})");
    let own = || async {
        let mut sum = 0.0;
        for r in &replicas {
            sum += metric(&r.metrics().await, series);
        }
        sum
    };
    wait_until(
        "Prometheus's sum equals the replicas' counts",
        PROM_TIMEOUT,
        || async { prom.value(&query).await == Some(own().await) },
    )
    .await;
    let own = own().await;
    println!("{REPLICAS} replicas: sum({series}) = {own} in Prometheus and in the replicas");
    drop(prom);
    for r in replicas {
        r.stop().await;
    }
    env.cleanup().await;
    emu.shutdown().await;
}
