//! The configured rate limit holds in every sliding window, and the budget is used.
//!
//! Setup: 5 requests/second configured, one URL per call, 150 URLs waiting (30 seconds of backlog
//! at the limit); the emulator also enforces 5/s and would refuse any excess. Pass: no 1-second
//! window (closed, the strictest reading) of the emulator's arrival times holds more than 5 calls,
//! the emulator refused nothing, and at least 90 % of the calls the limit allowed over the run
//! were made. Other tests run in parallel in the same binary, so the limit and the budget are
//! checked on a loaded machine.

use crate::support::*;
use purge_worker::emulator::EmulatorConfig;
use serde_json::json;

const LIMIT: usize = 5;
const CALLS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_second_window_exceeds_the_limit_and_the_budget_is_used() {
    let emu = emulator(EmulatorConfig {
        requests_per_second: LIMIT as u32,
        ..Default::default()
    })
    .await;
    let mut env = TestEnv::new("ratelimit").await;
    let config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: format!("requests_per_second = {LIMIT}\nurls_per_call = 1"),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 0",
    );
    let urls: Vec<String> = (0..CALLS)
        .map(|i| format!("https://www.example.com/r/{i}"))
        .collect();
    for chunk in urls.chunks(10) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
    let w = Running::start(config).await;
    wait_until(
        "every message acked",
        std::time::Duration::from_secs(90),
        || async { w.acked() == (CALLS / 10) as u64 },
    )
    .await;

    let times: Vec<f64> = emu.accepted().iter().map(|c| c.at_ms).collect();
    assert_eq!(times.len(), CALLS);
    assert!(
        emu.rejected().is_empty(),
        "the emulator refused calls: {:?}",
        emu.rejected()
    );
    let worst = max_in_window(&times, 1000.0);
    let span_s = (times[CALLS - 1] - times[0]) / 1000.0;
    let share = (CALLS - 1) as f64 / (span_s * LIMIT as f64);
    println!(
        "largest 1-second window: {worst} calls; span {span_s:.2} s; budget used {:.1} %",
        share * 100.0
    );
    assert!(worst <= LIMIT, "{worst} calls in one second");
    assert!(
        share >= 0.9,
        "only {:.1} % of the allowed calls were made",
        share * 100.0
    );
    w.stop().await;
    env.cleanup().await;
    emu.shutdown().await;
}
