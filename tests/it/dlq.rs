//! The operator tools for dead letters and parked items (`dlq list|show|replay`, `parked
//! list|release`).
//!
//! Property: `list` totals are exact and take nothing; `replay --dry-run` changes nothing; a
//! replay republishes each replayable record's event with confirms and removes the record only
//! after that, so a SIGKILL midway loses no record; records that cannot be replayed stay; a
//! `parked release` after a quota increase purges the parked items at once.
//! Setup: records built by the worker's own constructors (`DeadLetter`), published to the test's
//! dead-letter queue; the CLI binary against the test's queues and Redis prefix; a worker with
//! the emulator as CDN. Pass: as stated for each test below.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use purge_worker::cache_key::CacheKey;
use purge_worker::coalesce::{LaneKey, Origin};
use purge_worker::dead_letter::DeadLetter;
use purge_worker::event::{Event, EventError, RejectedItem};
use purge_worker::provider::{FlushType, Kind};
use serde_json::Value;

fn cli(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "warn")
        .env("USER", "sre-on-call")
        .output()
        .expect("run purge-worker")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `n` records of `code`: provider_rejected (replayable, one URL each), unknown_host
/// (replayable) or invalid_json (not replayable).
fn records(code: &str, n: usize) -> Vec<(Vec<u8>, lapin::BasicProperties)> {
    (0..n)
        .map(|i| {
            let d = match code {
                "provider_rejected" => {
                    let lane = LaneKey {
                        kind: Kind::Url,
                        flush: FlushType::Flush,
                        headers: None,
                    };
                    let origin = Origin {
                        id: Some(format!("ev-{i}")),
                        source: Some("cms".into()),
                    };
                    let url = CacheKey::from_normalized(&format!("https://www.example.com/r/{i}"));
                    DeadLetter::for_provider(
                        "cdn",
                        &lane,
                        &[url.to_string()],
                        &origin,
                        "InvalidParameter",
                        "bad",
                    )
                }
                "unknown_host" => {
                    let raw = format!("https://nowhere.example.org/{i}");
                    let ev = Event::of_kind(
                        Kind::Url,
                        FlushType::Flush,
                        vec![raw.clone()],
                        &[],
                        None,
                        None,
                    );
                    let bad = RejectedItem {
                        kind: Kind::Url,
                        raw: raw.clone(),
                        error: purge_worker::cache_key::ItemError::UnknownHost(
                            "nowhere.example.org".into(),
                        ),
                    };
                    DeadLetter::for_rejected(&ev, &[bad]).remove(0)
                }
                _ => DeadLetter::for_event(
                    &EventError::InvalidJson("x".into()),
                    format!("{{nope {i}").as_bytes(),
                ),
            };
            d.to_message()
        })
        .collect()
}

/// Publishes everything to `queue` with confirms, pipelined.
async fn publish_all(env: &TestEnv, queue: &str, msgs: Vec<(Vec<u8>, lapin::BasicProperties)>) {
    let ch = env.conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = Vec::new();
    for (body, props) in msgs {
        pending.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .unwrap(),
        );
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                assert!(p.await.unwrap().is_ack());
            }
        }
    }
    for p in pending {
        assert!(p.await.unwrap().is_ack());
    }
    let _ = ch.close(200, "ok".into()).await;
}

fn config_file(
    env: &mut TestEnv,
    emu: &purge_worker::emulator::Emulator,
    extra: &str,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut p = example_provider(emu);
    p.extra = extra.into();
    let toml = env.config_toml(&[p], "max_linger_ms = 50");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_exact_dry_run_changes_nothing_and_replay_purges_each_item_once() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("dlq").await;
    let (_dir, c) = config_file(&mut env, &emu, "");
    let mut all = records("provider_rejected", 500);
    all.extend(records("unknown_host", 300));
    all.extend(records("invalid_json", 200));
    // Mixed order, as a real DLQ is.
    all.sort_by_key(|(b, _)| {
        b.iter()
            .fold(0u32, |h, x| h.wrapping_mul(31).wrapping_add(u32::from(*x)))
    });
    publish_all(&env, &env.dlq, all).await;
    assert_eq!(env.ready(&env.dlq).await, 1000);

    let out = stdout(&cli(&c, &["dlq", "list", "--json", "--limit", "3"]));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "3 records and the totals: {out}");
    let totals = &lines[3]["totals"];
    assert_eq!(totals["provider_rejected"]["records"], 500);
    assert_eq!(totals["unknown_host"]["records"], 300);
    assert_eq!(totals["invalid_json"]["records"], 200);
    assert_eq!(lines[3]["records"], 1000);
    // The records list read come back to ready once its connection is closed (a moment after
    // the command exits); taking any would leave fewer for good.
    wait_until("list takes nothing", TIMEOUT, || async {
        env.ready(&env.dlq).await == 1000
    })
    .await;
    let id = lines[0]["id"].as_str().unwrap().to_string();
    let shown: Value = serde_json::from_str(&stdout(&cli(&c, &["dlq", "show", &id]))).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(
        cli(&c, &["dlq", "show", "dl-0000000000000000"])
            .status
            .code(),
        Some(2)
    );

    let w = Running::start(env.config(&[example_provider(&emu)], "max_linger_ms = 50")).await;
    let out = stdout(&cli(
        &c,
        &["dlq", "replay", "--code", "provider_rejected", "--dry-run"],
    ));
    assert!(
        out.contains("500 records of provider_rejected would be replayed"),
        "{out}"
    );
    assert_eq!(env.ready(&env.dlq).await, 1000, "a dry run changes nothing");
    assert_eq!(env.ready(&env.queue).await, 0);
    assert!(emu.accepted().is_empty());

    let t0 = Instant::now();
    let out = stdout(&cli(
        &c,
        &[
            "dlq",
            "replay",
            "--code",
            "provider_rejected",
            "--reason",
            "host fixed",
        ],
    ));
    println!(
        "replay of 500 records: {:?} (process start included)",
        t0.elapsed()
    );
    assert!(out.contains("replayed 500 records"), "{out}");
    let want: BTreeSet<String> = (0..500)
        .map(|i| format!("https://www.example.com/r/{i}"))
        .collect();
    wait_until("every replayed item purged", TIMEOUT, || async {
        purged(&emu).into_iter().collect::<BTreeSet<_>>() == want
    })
    .await;
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for u in purged(&emu) {
        *times.entry(u).or_default() += 1;
    }
    assert!(times.values().all(|n| *n == 1), "each item purged once");
    assert_eq!(
        env.ready(&env.dlq).await,
        500,
        "exactly those records are gone"
    );
    let out = stdout(&cli(&c, &["dlq", "list", "--json", "--limit", "0"]));
    let t: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(t["totals"].get("provider_rejected").is_none(), "{t}");

    // The undecodable ones cannot be replayed: listed, left in place, exit 0.
    let o = cli(&c, &["dlq", "replay", "--code", "invalid_json"]);
    let out = stdout(&o);
    assert!(out.contains("200 records cannot be replayed"), "{out}");
    assert_eq!(env.ready(&env.dlq).await, 500);
    w.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_midway_loses_no_record() {
    const N: usize = 20_000;
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("dlq-kill").await;
    let (_dir, c) = config_file(&mut env, &emu, "");
    publish_all(&env, &env.dlq, records("provider_rejected", N)).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(["dlq", "replay", "--config"])
        .arg(&c)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the replay is under way", TIMEOUT, || async {
        env.ready(&env.queue).await > 1000
    })
    .await;
    child.kill().unwrap();
    let _ = child.wait();
    // Unacked deliveries return to the DLQ once the broker sees the connection gone.
    let mut ids = BTreeSet::new();
    wait_until(
        "every record is in the DLQ or replayed",
        TIMEOUT,
        || async { env.ready(&env.dlq).await as usize + env.ready(&env.queue).await as usize >= N },
    )
    .await;
    let (dlq, replayed) = (
        env.ready(&env.dlq).await as usize,
        env.ready(&env.queue).await as usize,
    );
    assert!(
        dlq > 0 && replayed < N,
        "killed midway: {dlq} left, {replayed} replayed"
    );
    for (v, _) in env.drain(&env.dlq).await {
        ids.insert(v["event"]["urls"][0].as_str().unwrap().to_string());
    }
    for (v, _) in env.drain(&env.queue).await {
        ids.insert(v["urls"][0].as_str().unwrap().to_string());
    }
    assert_eq!(
        ids.len(),
        N,
        "no record lost ({dlq} left in the DLQ, {replayed} replayed)"
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_release_after_a_quota_increase_purges_at_once() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("parked").await;
    let (_dir, c) = config_file(&mut env, &emu, "urls_per_day = 60");
    let mut spec = example_provider(&emu);
    spec.extra = "urls_per_day = 60".into();
    let w = Running::start(env.config(&[spec], "max_linger_ms = 50")).await;
    let urls: Vec<String> = (0..100)
        .map(|i| format!("https://www.example.com/q/{i}"))
        .collect();
    env.publish_json(&serde_json::json!({ "urls": urls })).await;
    wait_until("the rest is parked", TIMEOUT, || async {
        purged(&emu).len() == 60 && env.ready(&env.parking("cdn")).await > 0
    })
    .await;
    let rows: Value =
        serde_json::from_str(&stdout(&cli(&c, &["parked", "list", "--json"]))).unwrap();
    assert_eq!(rows[0]["items"], 40, "{rows}");
    assert_eq!(
        (rows[0]["kind"].as_str(), rows[0]["class"].as_str()),
        (Some("url"), Some("interactive"))
    );
    assert_eq!(
        cli(&c, &["parked", "release", "--provider", "nope"])
            .status
            .code(),
        Some(2)
    );

    // The quota was raised: the worker's count starts afresh, and the parked items go now.
    stdout(&cli(&c, &["quota", "reset", "--provider", "cdn"]));
    let t0 = Instant::now();
    let out = stdout(&cli(
        &c,
        &[
            "parked",
            "release",
            "--provider",
            "cdn",
            "--reason",
            "quota raised",
        ],
    ));
    assert!(out.contains("released"), "{out}");
    wait_until("parked items purged", TIMEOUT, || async {
        purged(&emu).len() == 100
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "at once, not at the reset"
    );
    let got: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(got, urls.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(env.ready(&env.parking("cdn")).await, 0);
    let trail = purge_worker::control::ControlStore::connect(REDIS_URL, &env.prefix)
        .unwrap()
        .audit_tail(5)
        .await
        .unwrap();
    assert!(trail.iter().any(|e| e.action == "parked_release"
        && e.who == "sre-on-call"
        && e.why == "quota raised"));
    w.stop().await;
    env.cleanup().await;
}
