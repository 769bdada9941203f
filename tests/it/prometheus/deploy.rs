//! The container and Kubernetes deployment files: docker-compose.yml is valid for `docker-compose
//! config`, its worker config passes `purge-worker check` with the environment the compose file
//! gives, its emulator command line is accepted by the real binary, and the Kubernetes manifests
//! carry probes on /healthz and /readyz, resources, the ConfigMap, Secret-fed credentials for every
//! `*_env` key of the config, and a grace period longer than the drain.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml_ng::Value as Yaml;

use super::artifacts::{read, yaml};
use super::server::{repo, tool};

const COMPOSE: &str = "deploy/docker-compose.yml";
const WORKER: &str = env!("CARGO_BIN_EXE_purge-worker");

/// `docker compose` (v2 plugin) when it works, else `docker-compose`.
fn compose_command() -> Command {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new(tool("docker-compose", "docker-compose"))
    }
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// `purge-worker check --config FILE` with `env`; panics with its output unless it exits 0.
#[track_caller]
fn check_config(path: &std::path::Path, env: &[(String, String)]) -> String {
    let out = Command::new(WORKER)
        .args(["check", "--config"])
        .arg(path)
        .env_remove("PURGE_WORKER_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("purge-worker check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`purge-worker check --config {}` failed:\n{text}",
        path.display()
    );
    text
}

/// Every value of a `*_env` key in a TOML document: the environment variables it needs.
fn env_keys(v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                match v.as_str() {
                    Some(var) if k.ends_with("_env") => out.push(var.to_string()),
                    _ => env_keys(v, out),
                }
            }
        }
        toml::Value::Array(a) => a.iter().for_each(|v| env_keys(v, out)),
        _ => {}
    }
}

#[test]
fn compose_file_is_valid_and_its_worker_and_emulator_commands_work() {
    let out = compose_command()
        .args(["-f", COMPOSE, "config", "-q"])
        .current_dir(repo())
        .output()
        .expect("docker-compose runs");
    assert!(
        out.status.success(),
        "`docker-compose -f {COMPOSE} config` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let compose = yaml(COMPOSE);
    let services = &compose["services"];
    for name in [
        "rabbitmq",
        "redis",
        "emulator",
        "worker",
        "prometheus",
        "grafana",
    ] {
        assert!(services.get(name).is_some(), "service `{name}` missing");
    }
    assert!(
        services["rabbitmq"]["image"]
            .as_str()
            .is_some_and(|i| i.contains("management")),
        "rabbitmq uses the management image"
    );
    let mounts = |svc: &str| strings(&services[svc]["volumes"]).join("\n");
    for (svc, needle) in [
        (
            "worker",
            "purge-worker.compose.toml:/etc/purge-worker/purge-worker.toml",
        ),
        ("prometheus", "alerts.yml"),
        ("prometheus", "prometheus.yml"),
        (
            "grafana",
            "./grafana/provisioning:/etc/grafana/provisioning",
        ),
        ("grafana", "purge-worker.json"),
    ] {
        assert!(mounts(svc).contains(needle), "{svc} mounts {needle}");
    }
    assert_eq!(
        strings(&services["worker"]["command"]),
        ["--config", "/etc/purge-worker/purge-worker.toml"]
    );
    // `--scale worker=3` needs a worker without a fixed host port or container name.
    assert!(
        services["worker"].get("ports").is_none(),
        "worker publishes no fixed host port"
    );
    assert!(services["worker"].get("container_name").is_none());

    // The worker's config passes `check` with exactly the environment compose gives it.
    let env: Vec<(String, String)> = services["worker"]["environment"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
        .collect();
    let checked = check_config(&repo().join("deploy/purge-worker.compose.toml"), &env);
    assert!(checked.contains("http: 0.0.0.0:9464"), "{checked}");

    // The emulator's command line is accepted by the real binary (on a free port here).
    let entry = strings(&services["emulator"]["entrypoint"]);
    assert!(entry.len() > 2 && entry[1] == "emulator", "{entry:?}");
    let args: Vec<String> = entry[1..]
        .iter()
        .map(|a| {
            if a.starts_with("0.0.0.0:") {
                "127.0.0.1:0".to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut child = Command::new(WORKER)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("emulator starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the emulator printed its address within 20 s");
    assert!(line.contains("listening on"), "emulator said: {line}");
}

#[test]
fn k8s_manifests_have_probes_resources_config_and_secrets() {
    let deployment = yaml("deploy/k8s/deployment.yaml");
    let configmap = yaml("deploy/k8s/configmap.yaml");
    let service = yaml("deploy/k8s/service.yaml");
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];

    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let port = &c["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(9464));
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"]["port"];
        assert!(
            p.as_u64() == Some(9464) || p.as_str() == port["name"].as_str(),
            "{probe} targets the metrics port"
        );
    }
    for r in ["cpu", "memory"] {
        assert!(
            c["resources"]["requests"].get(r).is_some(),
            "resources.requests.{r}"
        );
    }
    assert!(
        c["resources"]["limits"].get("memory").is_some(),
        "resources.limits.memory"
    );

    // The config comes from the ConfigMap, mounted where --config points.
    let cm_name = configmap["metadata"]["name"]
        .as_str()
        .expect("configmap name");
    let volume = pod["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|v| v["configMap"]["name"].as_str() == Some(cm_name))
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    let (file, toml_text) = configmap["data"]
        .as_mapping()
        .and_then(|d| d.iter().next())
        .map(|(k, v)| (k.as_str().unwrap_or(""), v.as_str().unwrap_or("")))
        .expect("configmap data");
    let config_path = format!("{}/{file}", mount["mountPath"].as_str().unwrap_or(""));
    assert_eq!(strings(&c["args"]), ["--config", config_path.as_str()]);

    // Every *_env variable the config names comes from a Secret.
    let config: toml::Value = toml::from_str(toml_text).expect("configmap TOML parses");
    let mut vars = Vec::new();
    env_keys(&config, &mut vars);
    for needed in ["secret_id_env", "secret_key_env"] {
        assert!(
            toml_text.contains(needed),
            "the config reads credentials via {needed}"
        );
    }
    let env = c["env"].as_sequence().cloned().unwrap_or_default();
    for var in &vars {
        let e = env
            .iter()
            .find(|e| e["name"].as_str() == Some(var))
            .unwrap_or_else(|| panic!("env {var} missing"));
        let r = &e["valueFrom"]["secretKeyRef"];
        assert!(
            r["name"].as_str().is_some() && r["key"].as_str().is_some(),
            "env {var} comes from a secretKeyRef"
        );
    }
    // ...and with them set, the config passes `purge-worker check`.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(file);
    std::fs::write(&path, toml_text).expect("write config");
    let fake: Vec<(String, String)> = vars
        .iter()
        .map(|v| {
            let value = match v.as_str() {
                "AMQP_URL" => "amqp://u:p@rabbitmq:5672/%2f",
                "REDIS_URL" => "redis://redis:6379/0",
                _ => "placeholder",
            };
            (v.clone(), value.to_string())
        })
        .collect();
    let checked = check_config(&path, &fake);
    assert!(checked.contains("http: 0.0.0.0:9464"), "{checked}");

    // The grace period outlasts the drain.
    let drain_ms = config
        .get("batching")
        .and_then(|b| b.get("drain_timeout_ms"))
        .and_then(toml::Value::as_integer)
        .unwrap_or(10_000);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace * 1000 > drain_ms as u64,
        "terminationGracePeriodSeconds {grace} s must exceed the drain timeout {drain_ms} ms"
    );

    // The Service selects the pods and exposes the metrics port for scraping.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().expect("selector") {
        assert_eq!(&labels[k.as_str().unwrap_or("")], v, "selector {k:?}");
    }
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(9464));
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
        Some("true")
    );

    // Several replicas, replaced one at a time, spread over nodes, at most one disrupted.
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64() >= Some(2), "several replicas");
    assert_eq!(spec["strategy"]["type"].as_str(), Some("RollingUpdate"));
    let spread = &pod["affinity"]["podAntiAffinity"];
    assert!(!spread.is_null(), "pod anti-affinity");
    let pdb = yaml("deploy/k8s/poddisruptionbudget.yaml");
    assert_eq!(pdb["kind"].as_str(), Some("PodDisruptionBudget"));
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    for (k, v) in pdb["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("PDB selector")
    {
        assert_eq!(&labels[k.as_str().unwrap_or("")], v, "PDB selector {k:?}");
    }
    let resources = strings(&yaml("deploy/k8s/kustomization.yaml")["resources"]);
    assert!(resources.iter().any(|r| r == "poddisruptionbudget.yaml"));

    for r in strings(&yaml("deploy/k8s/kustomization.yaml")["resources"]) {
        assert!(
            !read(&format!("deploy/k8s/{r}")).is_empty(),
            "kustomization resource {r}"
        );
    }
}
