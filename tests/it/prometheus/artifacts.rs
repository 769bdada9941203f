//! Reading the files under `deploy/`: the Grafana dashboard's queries and the alert rules.

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use super::server::repo;

/// The Grafana dashboard.
pub const DASHBOARD: &str = "deploy/grafana/purge-worker.json";
/// The alert rules.
pub const ALERTS: &str = "deploy/prometheus/alerts.yml";
/// The alert rules' promtool unit tests.
pub const ALERTS_TEST: &str = "deploy/prometheus/alerts_test.yml";

/// A file under the repository root, as text.
#[track_caller]
pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A YAML file (or one YAML document given as text).
#[track_caller]
pub fn yaml(path: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// The dashboard JSON.
#[track_caller]
pub fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel of the dashboard, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

/// `(panel title, expr)` of every query in the dashboard, as written (variables unsubstituted).
pub fn dashboard_queries() -> Vec<(String, String)> {
    panels(&dashboard())
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(move |e| (title.clone(), e.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One alerting rule of alerts.yml.
#[derive(Debug)]
pub struct AlertRule {
    pub name: String,
    pub expr: String,
    pub severity: Option<String>,
    pub summary: Option<String>,
    pub description: Option<String>,
}

fn string(v: &Yaml, key: &str) -> Option<String> {
    v.get(key).and_then(Yaml::as_str).map(str::to_string)
}

/// Every alerting rule of alerts.yml (recording rules are skipped).
pub fn alert_rules() -> Vec<AlertRule> {
    let rules = yaml(ALERTS);
    let groups = rules["groups"].as_sequence().cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| {
            Some(AlertRule {
                name: string(&r, "alert")?,
                expr: string(&r, "expr").unwrap_or_default(),
                severity: r.get("labels").and_then(|l| string(l, "severity")),
                summary: r.get("annotations").and_then(|a| string(a, "summary")),
                description: r.get("annotations").and_then(|a| string(a, "description")),
            })
        })
        .collect()
}

/// For every alert name in alerts_test.yml: (has a case expecting it to fire, has a case expecting
/// it not to).
pub fn alert_test_coverage() -> std::collections::BTreeMap<String, (bool, bool)> {
    let tests = yaml(ALERTS_TEST);
    let mut cover = std::collections::BTreeMap::new();
    for t in tests["tests"].as_sequence().into_iter().flatten() {
        for case in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let Some(name) = string(case, "alertname") else {
                continue;
            };
            let fires = case["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty());
            let entry = cover.entry(name).or_insert((false, false));
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    cover
}
