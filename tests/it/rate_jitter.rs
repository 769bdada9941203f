//! The rate limit holds even when Redis answers slowly and unevenly.
//!
//! Setup: 5 requests/second, one URL per call, 60 URLs waiting; the worker reaches Redis through
//! a relay that delays every reply by a random 0–50 ms, so each quota reservation takes a
//! different time. Fault: a reservation between the rate permit and the send would let a slow
//! reply squeeze two sends closer than the limiter allowed. Pass: no 1-second window (closed,
//! the strictest reading) of the emulator's arrival times holds more than 5 calls, and the
//! emulator refused nothing. Other tests run in parallel in the same binary, so the limit is
//! checked on a loaded machine.

use std::time::Duration;

use crate::support::relay::Relay;
use crate::support::*;
use purge_worker::config::Secret;
use purge_worker::emulator::EmulatorConfig;
use serde_json::json;

const LIMIT: usize = 5;
const CALLS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_jittery_redis_never_squeezes_calls_past_the_limit() {
    let emu = emulator(EmulatorConfig {
        // The emulator counts strictly; the check below is what matters.
        requests_per_second: 100,
        ..Default::default()
    })
    .await;
    let relay = Relay::start("127.0.0.1:6379".parse().expect("addr"))
        .await
        .expect("relay");
    relay.set_jitter(Duration::from_millis(50));
    let mut env = TestEnv::new("ratejitter").await;
    let mut config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: format!("requests_per_second = {LIMIT}\nurls_per_call = 1"),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 0",
    );
    config.redis.url = Secret::new(format!("redis://{}/0", relay.addr()));
    let urls: Vec<String> = (0..CALLS)
        .map(|i| format!("https://www.example.com/j/{i}"))
        .collect();
    for chunk in urls.chunks(10) {
        env.publish_json(&json!({ "urls": chunk })).await;
    }
    let w = Running::start(config).await;
    wait_until("every message acked", Duration::from_secs(90), || async {
        w.acked() == (CALLS / 10) as u64
    })
    .await;
    let times: Vec<f64> = emu.accepted().iter().map(|c| c.at_ms).collect();
    assert_eq!(times.len(), CALLS);
    let worst = max_in_window(&times, 1000.0);
    let min_gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    println!("largest 1-second window: {worst} calls; smallest gap {min_gap:.1} ms");
    assert!(worst <= LIMIT, "{worst} calls in one second");
    w.stop().await;
    env.cleanup().await;
    emu.shutdown().await;
}
