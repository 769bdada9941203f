//! The command-line interface: exit codes, messages that name the problem, secrets never printed,
//! and `publish` (arguments and `--file`) really enqueueing what it prints.
//!
//! Pass: `check` exits 0 on a valid file and 2 naming the key on an invalid one, never printing a
//! secret; `publish` exits 2 on a non-http URL, and otherwise enqueues one confirmed event per
//! invocation or per `--chunk-size` lines of a file; `quota` prints one row per provider and kind.

use std::process::{Command, Output};

use crate::support::*;

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
            "[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{}\"\ndead_letter_queue = \"{}\"\nbulk_queue = \"{}\"\n\
             [redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n\
             [[providers]]\nname = \"tencent-main\"\nkind = \"tencent-v3\"\nsecret_id = \"AKIDcli\"\n\
             secret_key = \"super-secret-key-value\"\n{extra_provider_line}\n\
             [[providers.domains]]\nhost = \"www.example.com\"\nignore_query = true\n",
            env.queue, env.dlq, env.bulk, env.prefix
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

    let mut msgs = env.drain(&env.queue).await;
    assert_eq!(msgs.len(), 2, "1 + 1 interactive events were enqueued");
    // A file is a bulk job: its events went to the bulk queue, marked bulk.
    let bulk = env.drain(&env.bulk).await;
    assert_eq!(bulk.len(), 3, "3 events from the file");
    assert!(
        bulk.iter().all(|(b, _)| b["priority"] == "bulk"),
        "{bulk:?}"
    );
    msgs.extend(bulk);
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

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn write_file(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).expect("write file");
    path
}

/// `publish --config CFG ARGS...`.
fn publish_with(cfg: &std::path::Path, args: &[&str]) -> Output {
    let mut all = vec!["publish", "--config", cfg.to_str().expect("UTF-8 path")];
    all.extend(args);
    cli(&all)
}

/// A config file with nothing but `[amqp]`, for the test's queue.
fn amqp_only(dir: &std::path::Path, env: &TestEnv) -> std::path::PathBuf {
    write_file(
        dir,
        "amqp.toml",
        &format!("[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{}\"\n", env.queue),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_needs_only_the_amqp_section() {
    let env = TestEnv::new("cli-amqp-only").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let only_amqp = amqp_only(dir.path(), &env);
    let o = publish_with(&only_amqp, &["https://www.example.com/a"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // One URL: the count agrees with its noun.
    assert!(
        text(&o).contains("published 1 event (1 url)"),
        "{}",
        text(&o)
    );
    // A publishing host need not hold the CDN credentials: providers are not validated.
    let with_providers = write_file(
        dir.path(),
        "full.toml",
        &format!(
            "[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{}\"\n[[providers]]\nname = \"p\"\nkind = \"tencent-v3\"\n\
             secret_id_env = \"PURGE_WORKER_TEST_UNSET_ID\"\nsecret_key_env = \"PURGE_WORKER_TEST_UNSET_KEY\"\n\
             [[providers.domains]]\nhost = \"*\"\n",
            env.queue
        ),
    );
    let o = publish_with(&with_providers, &["--dir", "https://www.example.com/news/"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("(1 dir)"), "{}", text(&o));
    // ...but `check` reports every unset variable at once.
    let o = cli(&["check", "--config", with_providers.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for var in ["PURGE_WORKER_TEST_UNSET_ID", "PURGE_WORKER_TEST_UNSET_KEY"] {
        assert!(text(&o).contains(var), "{}", text(&o));
    }
    let msgs = env.drain(&env.queue).await;
    assert_eq!(msgs.len(), 2, "both publishes were enqueued");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_lists_every_refused_argument_and_publishes_nothing() {
    let env = TestEnv::new("cli-bad-args").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = amqp_only(dir.path(), &env);
    let o = publish_with(
        &cfg,
        &[
            "ftp://www.example.com/a",
            "https://www.example.com/fine",
            "not-a-url",
            "--regex",
            "ftp://h.com/.*",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("3 of 4 arguments refused"), "{out}");
    for bad in ["ftp://www.example.com/a", "not-a-url", "ftp://h.com/.*"] {
        assert!(out.contains(&format!("`{bad}`")), "names {bad}: {out}");
    }
    assert!(!out.contains("fine"), "a good URL is not listed: {out}");
    assert!(
        !out.contains("config key"),
        "arguments are no config keys: {out}"
    );
    // Nothing reached the queue: after one good publish it holds exactly one message.
    let o = publish_with(&cfg, &["https://www.example.com/ok"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(env.drain(&env.queue).await.len(), 1);
    env.cleanup().await;
}

#[test]
fn errors_say_their_cause_once_and_name_the_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let cfg = write_file(
        dir.path(),
        "down.toml",
        &format!("[amqp]\nurl = \"amqp://guest:pa55word@127.0.0.1:{port}/%2f\"\n"),
    );
    let o = publish_with(&cfg, &["https://www.example.com/a"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
    assert_eq!(out.matches("Connection refused").count(), 1, "{out}");
    assert!(!out.contains("pa55word"), "no credentials: {out}");

    let o = cli(&["check", "--config", "/nonexistent/purge-worker.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        text(&o).matches("No such file or directory").count(),
        1,
        "{}",
        text(&o)
    );

    for value in ["-1", "70000", "\"many\""] {
        let cfg = write_file(
            dir.path(),
            "prefetch.toml",
            &format!("[amqp]\nprefetch = {value}\n"),
        );
        let o = cli(&["check", "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("1 to 65535"), "{value}: {}", text(&o));
        assert!(!text(&o).contains("u32"), "{value}: {}", text(&o));
    }
}

#[test]
fn check_without_a_config_says_the_emulator_port_is_chosen_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .arg("check")
        .current_dir(dir.path())
        .env_remove("PURGE_WORKER_CONFIG")
        .output()
        .expect("run purge-worker");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("no config file"), "{out}");
    assert!(out.contains("ephemeral"), "{out}");
    assert!(
        !out.contains(":8089"),
        "no address run would not use: {out}"
    );
    assert!(out.contains("purge-worker-demo-"), "{out}");
}

/// Output into a closed pipe (`purge-worker check | head -n 1` once head has exited) is dropped,
/// never a panic: the command still exits 0.
#[test]
fn check_into_a_closed_pipe_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .arg("check")
        .current_dir(dir.path())
        .env_remove("PURGE_WORKER_CONFIG")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run purge-worker");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_reset_deletes_one_providers_counters() {
    use purge_worker::config::QuotaWindow;
    use purge_worker::provider::Kind;
    use purge_worker::quota::{QuotaPolicy, QuotaStore, unix_now};

    let env = TestEnv::new("cli-quota-reset").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &env, "");
    let other = write_file(
        dir.path(),
        "two.toml",
        &format!(
            "{}[[providers]]\nname = \"other\"\nkind = \"wangsu\"\nusername = \"u\"\napi_key = \"k\"\n\
             [[providers.domains]]\nhost = \"*.example.org\"\n",
            std::fs::read_to_string(&cfg).unwrap()
        ),
    );
    let cfg_s = other.to_str().unwrap();
    let store = QuotaStore::connect(REDIS_URL, &env.prefix).unwrap();
    let now = unix_now();
    let day = QuotaPolicy {
        window: QuotaWindow::Day,
        utc_offset_secs: 8 * 3600,
    };
    let rolling = QuotaPolicy {
        window: QuotaWindow::Rolling24h,
        utc_offset_secs: 0,
    };
    for (kind, n) in [(Kind::Url, 7), (Kind::Dir, 3)] {
        store
            .reserve("tencent-main", kind, 100, n, now, day)
            .await
            .unwrap();
        store
            .reserve("other", kind, 100, n, now, rolling)
            .await
            .unwrap();
    }
    let used = |p: &'static str, policy| {
        let store = store.clone();
        async move { store.used(p, Kind::Url, now, policy).await.unwrap().used }
    };
    assert_eq!(
        (
            used("tencent-main", day).await,
            used("other", rolling).await
        ),
        (7, 7)
    );

    let o = cli(&["quota", "reset", "--provider", "nope", "--config", cfg_s]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("tencent-main, other"), "{}", text(&o));

    let o = cli(&[
        "quota",
        "--config",
        cfg_s,
        "reset",
        "--provider",
        "tencent-main",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("2 keys deleted"), "{}", text(&o));
    assert_eq!(used("tencent-main", day).await, 0, "reset");
    assert_eq!(
        used("other", rolling).await,
        7,
        "another provider keeps its count"
    );

    let o = cli(&["quota", "reset", "--provider", "other", "--config", cfg_s]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(used("other", rolling).await, 0);

    // `--key-prefix` reads another prefix's counters (a zero-config run names its own).
    let o = cli(&[
        "quota",
        "--config",
        cfg_s,
        "--key-prefix",
        "pwtest-none",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_named_by_host_and_port_without_credentials() {
    use std::io::BufRead;
    let env = TestEnv::new("cli-unreachable").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let cfg = write_file(
        dir.path(),
        "down.toml",
        &std::fs::read_to_string(write_config(dir.path(), &env, ""))
            .unwrap()
            .replace(
                AMQP_URL,
                &format!("amqp://guest:pa55word@127.0.0.1:{port}/%2f"),
            )
            .replace("[redis]", "[http]\nlisten = \"127.0.0.1:0\"\n[redis]"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg)
        .env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start purge-worker run");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = loop {
        match rx.recv_timeout(TIMEOUT) {
            Ok(l) if l.contains("RabbitMQ") => break l,
            Ok(_) => continue,
            Err(e) => panic!("no RabbitMQ warning within {TIMEOUT:?}: {e}"),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("unreachable"), "{line}");
    assert!(!line.contains("session ended"), "no session began: {line}");
    assert!(!line.contains("pa55word"), "no credentials: {line}");
    assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
    env.cleanup().await;
}
