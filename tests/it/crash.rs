//! A worker killed with SIGKILL mid-stream loses nothing; a restarted one finishes the work; a
//! SIGTERM drains and exits 0.
//!
//! Setup: the real `purge-worker` binary as a child process, 2000 URLs in 200 events, paced at
//! 5 calls/s of 50 URLs so the work takes seconds. Fault: SIGKILL after the first accepted call.
//! Pass: after a restart every key is purged at least once (duplicates allowed: at-least-once);
//! SIGTERM then makes the process exit 0, and the purge queue is empty (everything was acked).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use crate::support::*;
use purge_worker::emulator::{EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY};
use serde_json::json;

fn spawn_worker(config: &std::path::Path, logs: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(logs)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn purge-worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_sigterm_drains() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("crash").await;
    env.providers.push("cdn".into()); // its parking queue is the test's too
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("purge-worker.toml");
    std::fs::write(
        &config,
        format!(
            "[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{q}\"\ndead_letter_queue = \"{d}\"\nprefetch = 500\nbulk_queue = \"{b}\"\n\
             [redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{p}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [batching]\nmax_linger_ms = 100\ndrain_timeout_ms = 5000\n\
             [[providers]]\nname = \"cdn\"\nkind = \"tencent-v3\"\nendpoint = \"{e}\"\n\
             secret_id = \"{EMULATOR_SECRET_ID}\"\nsecret_key = \"{EMULATOR_SECRET_KEY}\"\n\
             requests_per_second = 5\nurls_per_call = 50\n\
             [[providers.domains]]\nhost = \"www.example.com\"\n",
            q = env.queue,
            d = env.dlq,
            b = env.bulk,
            p = env.prefix,
            e = emu.endpoint()
        ),
    )
    .expect("write config");
    let urls: Vec<String> = (0..2000)
        .map(|i| format!("https://www.example.com/c/{i}"))
        .collect();
    for chunk in urls.chunks(10) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }

    let mut child = spawn_worker(&config, Stdio::null());
    wait_until("the first purge call", TIMEOUT, || async {
        !emu.accepted().is_empty()
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = purged(&emu).len();
    assert!(before < urls.len(), "killed mid-stream ({before} purged)");

    let mut child = spawn_worker(&config, Stdio::piped());
    // The restarted worker's JSON log lines, read as they come so the pipe never fills.
    let stdout = child.stdout.take().expect("piped stdout");
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut text);
        text
    });
    let expected: BTreeSet<String> = urls.iter().cloned().collect();
    wait_until("every key purged after the restart", TIMEOUT, || async {
        purged(&emu).into_iter().collect::<BTreeSet<_>>() == expected
    })
    .await;
    wait_until("the purge queue is empty", TIMEOUT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM drains and exits 0");
    let logs = logs.join().expect("log reader");
    let errors: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(
        errors.is_empty(),
        "a clean shutdown logs no ERROR: {errors:#?}"
    );
    // Unacked deliveries would be back in the queue once the connection closed.
    assert_eq!(env.ready(&env.queue).await, 0, "everything was acked");
    assert_eq!(env.ready(&env.dlq).await, 0);
    let total = purged(&emu).len();
    println!(
        "purged {total} items for {} keys ({} duplicates after SIGKILL)",
        urls.len(),
        total - urls.len()
    );
    env.cleanup().await;
    emu.shutdown().await;
}
