//! The command-line interface: exit codes, messages that name the problem, secrets never printed,
//! and `publish` (arguments and `--file`) really enqueueing what it prints.
//!
//! Pass: `check` exits 0 on a valid file and 2 naming the key on an invalid one, never printing a
//! secret; `publish` exits 2 on a non-http URL, and otherwise enqueues one confirmed event per
//! invocation or per `--chunk-size` lines of a file; `quota` prints one row per provider and kind.

mod support;

use std::process::{Command, Output};

use support::*;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(args)
        .env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run purge-worker")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(
    dir: &std::path::Path,
    env: &TestEnv,
    extra_provider_line: &str,
) -> std::path::PathBuf {
    let path = dir.join("purge-worker.toml");
    std::fs::write(
        &path,
        format!(
            "[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{}\"\ndead_letter_queue = \"{}\"\n\
             [redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n\
             [[providers]]\nname = \"tencent-main\"\nkind = \"tencent-v3\"\nsecret_id = \"AKIDcli\"\n\
             secret_key = \"super-secret-key-value\"\n{extra_provider_line}\n\
             [[providers.domains]]\nhost = \"www.example.com\"\nignore_query = true\n",
            env.queue, env.dlq, env.prefix
        ),
    )
    .expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_publish_and_quota_behave_like_a_cli_should() {
    let env = TestEnv::new("cli").await;
    let dir = tempfile::tempdir().expect("tempdir");

    let good = write_config(dir.path(), &env, "urls_per_day = 500");
    let good_s = good.to_str().unwrap();
    let o = cli(&["check", "--config", good_s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("tencent-main"), "{}", text(&o));
    assert!(
        !text(&o).contains("super-secret-key-value"),
        "check never prints secrets"
    );

    let bad = write_config(dir.path(), &env, "rate_limits = [\"300 per 5 minutes\"]");
    let o = cli(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("providers[0].rate_limits[0]"),
        "names the key: {}",
        text(&o)
    );
    assert!(!text(&o).contains("super-secret-key-value"));
    let o = cli(&["check", "--config", "/nonexistent/purge-worker.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    let good = write_config(dir.path(), &env, "urls_per_day = 500");
    let good_s = good.to_str().unwrap();
    let o = cli(&["publish", "--config", good_s, "ftp://www.example.com/a"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("ftp"), "{}", text(&o));
    let o = cli(&[
        "publish",
        "--config",
        good_s,
        "--header",
        "X-Device:mobile",
        "--header",
        "x-device: tablet",
        "https://www.example.com/a",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("given twice"), "{}", text(&o));
    let o = cli(&["publish", "--config", good_s, "--regex", "ftp://h.com/.*"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("regex pattern"), "{}", text(&o));

    let o = cli(&[
        "publish",
        "--config",
        good_s,
        "--id",
        "cli-1",
        "https://www.example.com/a",
        "https://www.example.com/b",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("published 1 event (2 urls)"),
        "{}",
        text(&o)
    );
    let o = cli(&[
        "publish",
        "--config",
        good_s,
        "--dir",
        "--flush-type",
        "delete",
        "https://www.example.com/news/",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let list = dir.path().join("urls.txt");
    let lines: Vec<String> = (0..25)
        .map(|i| format!("https://www.example.com/f/{i}"))
        .collect();
    std::fs::write(&list, format!("{}\n\n", lines.join("\n"))).unwrap();
    let o = cli(&[
        "publish",
        "--config",
        good_s,
        "--file",
        list.to_str().unwrap(),
        "--chunk-size",
        "10",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("published 3 events (25 urls)"),
        "{}",
        text(&o)
    );

    let msgs = env.drain(&env.queue).await;
    assert_eq!(msgs.len(), 5, "1 + 1 + 3 events were enqueued");
    assert_eq!(
        msgs[0].0["urls"],
        serde_json::json!(["https://www.example.com/a", "https://www.example.com/b"])
    );
    assert_eq!(msgs[0].0["id"], "cli-1");
    assert_eq!(
        msgs[1].0["dirs"],
        serde_json::json!(["https://www.example.com/news/"])
    );
    assert_eq!(msgs[1].0["flush_type"], "delete");
    let from_file: usize = msgs[2..]
        .iter()
        .map(|(b, _)| b["urls"].as_array().unwrap().len())
        .sum();
    assert_eq!(from_file, 25);

    let o = cli(&["quota", "--config", good_s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("tencent-main") && l.contains(" url ") && l.contains("500")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("tencent-main") && l.contains(" dir ")),
        "{out}"
    );

    let o = cli(&["run", "--help"]);
    assert!(
        text(&o).contains("PURGE_WORKER_CONFIG"),
        "--help explains the config lookup"
    );
    env.cleanup().await;
}
