//! Every accepted purge call is followed to completion at the CDN.
//!
//! Setup: the emulator's tencent-v3 API with a 2 s task delay and every 4th task failing; 500
//! URLs in 50 events, `urls_per_call = 25` (20 calls). Pass: every task the emulator ran reaches
//! a final state in the tracker (nothing left pending in Redis), the URLs of every failed task
//! are purged again in a new task, keys that fail twice are dead-lettered as
//! `purge_failed_at_cdn`, `purge_time_to_fresh_seconds_count` equals the keys of done tasks, and
//! status calls stay within the API's 20 per second. With two replicas the counts are the same
//! (not doubled). Fault (second test): SIGKILL while 20 tasks are pending; after a restart they
//! are tracked to completion. Third: a re-purge keeps its call's priority class.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;
use purge_worker::emulator::{EmulatorConfig, Phase, TaskModel};
use serde_json::json;

const TRACKING: &str = "max_linger_ms = 100\n[tracking]\npoll_interval_ms = 500\nlease_ms = 2000\n";

async fn due(prefix: &str) -> u64 {
    let client = redis::Client::open(REDIS_URL).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("ZCARD")
        .arg(format!("{prefix}:track:cdn:due"))
        .query_async(&mut c)
        .await
        .unwrap_or(0)
}

fn fresh_count(r: &Running) -> u64 {
    r.worker
        .metrics
        .time_to_fresh
        .with_label_values(&["cdn", "url"])
        .get_sample_count()
}

async fn follow_500(replicas: usize) {
    let emu = emulator(EmulatorConfig {
        tasks: TaskModel {
            delay: Duration::from_secs(2),
            fail_every: 4,
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("tracking").await;
    let mut spec = example_provider(&emu);
    spec.extra = "urls_per_call = 25\n".into();
    let config = env.config(&[spec], TRACKING);
    let mut workers = Vec::new();
    for _ in 0..replicas {
        workers.push(Running::start(config.clone()).await);
    }
    let urls: Vec<String> = (0..500)
        .map(|i| format!("https://www.example.com/t/{i}"))
        .collect();
    let mut published = std::collections::HashMap::new();
    for chunk in urls.chunks(10) {
        let at = chrono::Utc::now().timestamp_millis();
        env.publish_json(&json!({ "urls": chunk })).await;
        for u in chunk {
            published.insert(u.clone(), at);
        }
    }
    // 20 original tasks, a re-purge for each failed one; settled when nothing is pending and
    // the emulator has no unfinished task.
    wait_until("every task final and nothing pending", TIMEOUT, || {
        let (emu, prefix) = (&emu, env.prefix.clone());
        async move {
            let tasks = emu.tasks();
            let keys: usize = tasks.iter().map(|t| t.items.len()).sum();
            keys >= 500 && due(&prefix).await == 0
        }
    })
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let tasks = emu.tasks();
    assert!(tasks.iter().all(|t| t.phase(now) != Phase::Process));
    // Failed originals were purged again, in later tasks.
    let originals: BTreeSet<String> = urls.iter().cloned().collect();
    let mut seen = BTreeSet::new();
    let mut again = 0;
    for t in &tasks {
        for i in &t.items {
            if !seen.insert(i.clone()) {
                again += 1;
            }
        }
    }
    assert_eq!(seen, originals);
    let failed_first: Vec<_> = tasks.iter().filter(|t| t.outcome == Phase::Fail).collect();
    assert!(!failed_first.is_empty(), "every 4th task fails");
    let fail_keys: usize = failed_first.iter().map(|t| t.items.len()).sum();
    let done_keys: usize = tasks
        .iter()
        .filter(|t| t.outcome == Phase::Done)
        .map(|t| t.items.len())
        .sum();
    // Every key of a failed task is purged again once, or was in a re-purge that failed too.
    let twice_failed = fail_keys - again;
    assert_eq!(again + twice_failed, fail_keys);
    // The dead letters of different tasks arrive apart: collect them until all are in.
    let dead_keys = std::cell::Cell::new(0usize);
    let dead_records = std::cell::Cell::new(0u64);
    wait_until("dead letters of keys that failed twice", TIMEOUT, || {
        let (env, dead_keys, dead_records) = (&env, &dead_keys, &dead_records);
        async move {
            let dead = env.drain(&env.dlq).await;
            let mine: Vec<_> = dead
                .iter()
                .filter(|(_, code)| code.as_deref() == Some("purge_failed_at_cdn"))
                .collect();
            let n: usize = mine
                .iter()
                .map(|(b, _)| b["event"]["urls"].as_array().map_or(0, Vec::len))
                .sum();
            dead_keys.set(dead_keys.get() + n);
            dead_records.set(dead_records.get() + mine.len() as u64);
            dead_keys.get() >= twice_failed
        }
    })
    .await;
    let dead_keys = dead_keys.get();
    assert_eq!(
        dead_keys, twice_failed,
        "keys failing twice are dead-lettered"
    );
    assert_eq!(
        done_keys + dead_keys,
        500,
        "every key ends done or dead-lettered"
    );
    let dead_records = dead_records.get();
    let counted: u64 = workers
        .iter()
        .map(|r| {
            r.worker
                .metrics
                .dead_letters
                .with_label_values(&["purge_failed_at_cdn"])
                .get()
        })
        .sum();
    assert_eq!(
        counted, dead_records,
        "purge_dead_letters_total counts the tracker's dead letters"
    );
    // One observation per key of a done task, whatever the number of replicas.
    let fresh: u64 = workers.iter().map(fresh_count).sum();
    assert_eq!(fresh as usize, done_keys);
    let sum: f64 = workers
        .iter()
        .map(|r| {
            r.worker
                .metrics
                .time_to_fresh
                .with_label_values(&["cdn", "url"])
                .get_sample_sum()
        })
        .sum();
    let calls = emu.status_calls();
    let times: Vec<f64> = calls.iter().map(|c| c.at_ms as f64).collect();
    assert!(
        max_in_window(&times, 1000.0) <= 20,
        "status calls within 20/s"
    );
    // Time to fresh per key of a done task: from its publish to the first status call that
    // found the task done (the emulator's clock; the same span the histogram observes).
    let mut ttf: Vec<f64> = Vec::new();
    for t in tasks.iter().filter(|t| t.outcome == Phase::Done) {
        let Some(seen) = calls
            .iter()
            .filter(|c| c.items == [t.id.clone()] && c.at_ms >= t.finish_ms)
            .map(|c| c.at_ms)
            .min()
        else {
            continue;
        };
        for i in &t.items {
            if let Some(p) = published.get(i) {
                ttf.push((seen - p) as f64 / 1000.0);
            }
        }
    }
    ttf.sort_by(f64::total_cmp);
    let q = |f: f64| {
        ttf.get(((ttf.len() as f64 * f).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    eprintln!(
        "tracking x{replicas}: time to fresh over {} keys: p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        ttf.len(),
        q(0.5),
        q(0.95),
        q(1.0)
    );
    eprintln!(
        "tracking x{replicas}: {} tasks, {} purge calls, {} status calls ({:.2} per purge call), time to fresh mean {:.2} s over {fresh} keys",
        tasks.len(),
        emu.accepted().len(),
        calls.len(),
        calls.len() as f64 / emu.accepted().len() as f64,
        sum / fresh.max(1) as f64
    );
    for r in workers {
        r.stop().await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_is_followed_to_a_final_state_and_failed_ones_are_purged_again() {
    follow_500(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_give_the_same_counts_not_doubled() {
    follow_500(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_tasks_survive_sigkill_and_complete_after_a_restart() {
    let emu = emulator(EmulatorConfig {
        tasks: TaskModel {
            delay: Duration::from_secs(4),
            fail_every: 0,
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("tracking-kill").await;
    let mut spec = example_provider(&emu);
    spec.extra = "urls_per_call = 25\n".into();
    let toml = env.config_toml(&[spec], TRACKING);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purge-worker.toml");
    std::fs::write(&path, toml).expect("write config");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_purge-worker"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn purge-worker")
    };
    let urls: Vec<String> = (0..500)
        .map(|i| format!("https://www.example.com/k/{i}"))
        .collect();
    for chunk in urls.chunks(10) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
    let mut child = spawn();
    wait_until("20 tasks pending in Redis", TIMEOUT, || {
        let prefix = env.prefix.clone();
        async move { due(&prefix).await == 20 }
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        emu.tasks()
            .iter()
            .all(|t| t.polls == 0
                || t.phase(chrono::Utc::now().timestamp_millis()) == Phase::Process),
        "killed before the tasks finished"
    );
    let mut child = spawn();
    wait_until(
        "the restarted worker tracks them to completion",
        TIMEOUT,
        || {
            let prefix = env.prefix.clone();
            async move { due(&prefix).await == 0 }
        },
    )
    .await;
    let now = chrono::Utc::now().timestamp_millis();
    let tasks = emu.tasks();
    let calls = emu.status_calls();
    // Each task was asked about after it finished (by the restarted worker).
    for t in &tasks {
        assert!(
            calls
                .iter()
                .any(|c| c.items == [t.id.clone()] && c.at_ms >= t.finish_ms),
            "task {} was seen done",
            t.id
        );
        assert_eq!(t.phase(now), Phase::Done);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::time::timeout(TIMEOUT, async {
        while child.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let _ = child.kill();
    env.cleanup().await;
}

/// The re-purge of a failed task keeps its call's priority class: with `urls_per_day = 20` and
/// `interactive_reserve = 0.5` (bulk may bring the day to 10), a failed call of 6 bulk URLs
/// cannot be purged again (6 + 6 > 10: dead-lettered saying no quota was left), while a failed
/// call of 6 interactive URLs is (18 of 20). Every task fails, so the interactive re-purge ends
/// dead-lettered as already purged again. The re-purge is counted in the cluster-wide windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_tasks_repurge_keeps_its_priority_class() {
    let emu = emulator(EmulatorConfig {
        tasks: TaskModel {
            delay: Duration::from_millis(200),
            fail_every: 1,
        },
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("tracking-class").await;
    let mut spec = example_provider(&emu);
    spec.extra = "urls_per_day = 20\ninteractive_reserve = 0.5\n".into();
    let config = env.config(&[spec], TRACKING);
    let r = Running::start(config).await;
    let bulk: Vec<String> = (0..6)
        .map(|i| format!("https://www.example.com/b/{i}"))
        .collect();
    let editorial: Vec<String> = (0..6)
        .map(|i| format!("https://www.example.com/e/{i}"))
        .collect();
    env.publish_bulk(&json!({ "urls": bulk })).await;
    // The bulk call goes first, so the interactive one finds 6 of the day spent.
    wait_until("the bulk call is accepted", TIMEOUT, || {
        let emu = &emu;
        async move { !emu.tasks().is_empty() }
    })
    .await;
    env.publish_json(&json!({ "urls": editorial })).await;
    wait_until("both calls dead-lettered", TIMEOUT, || {
        let env = &env;
        async move { env.ready(&env.dlq).await >= 2 }
    })
    .await;
    let dead = env.drain(&env.dlq).await;
    let urls_of = |prefix: &str| -> Option<&serde_json::Value> {
        dead.iter().map(|(b, _)| b).find(|b| {
            b["event"]["urls"][0]
                .as_str()
                .is_some_and(|u| u.contains(prefix))
        })
    };
    let b = urls_of("/b/").expect("the bulk keys are dead-lettered");
    let e = urls_of("/e/").expect("the interactive keys are dead-lettered");
    assert_eq!(b["error"], "purge_failed_at_cdn");
    assert!(
        b["reason"]
            .as_str()
            .is_some_and(|s| s.contains("no quota left for the second purge")),
        "bulk re-purge stays within bulk's share: {b}"
    );
    assert!(
        e["reason"]
            .as_str()
            .is_some_and(|s| s.contains("already purged again once")),
        "interactive re-purge may spend the reserve: {e}"
    );
    let calls = |prefix: &str| {
        emu.tasks()
            .iter()
            .filter(|t| t.items.iter().any(|i| i.contains(prefix)))
            .count()
    };
    assert_eq!(calls("/b/"), 1, "the bulk keys were not purged again");
    assert_eq!(calls("/e/"), 2, "the interactive keys were purged again");
    // The re-purge was admitted by the cluster-wide windows like the dispatcher's calls: the
    // minute window holds all three purge calls.
    let client = redis::Client::open(REDIS_URL).expect("redis url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let in_window: u64 = redis::cmd("ZCARD")
        .arg(format!("{}:rate:cdn:10000/60000ms", env.prefix))
        .query_async(&mut c)
        .await
        .expect("ZCARD");
    assert_eq!(
        in_window, 3,
        "two calls and one re-purge in the shared window"
    );
    assert_eq!(emu.accepted().len(), 3);
    r.stop().await;
    env.cleanup().await;
}
