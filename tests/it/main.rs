//! The integration tests: one binary, one module per area, so `cargo test` links the harness
//! ([`support`]) once instead of once per file. Each module's own docs state the property it
//! checks, its setup, its fault and what passes. `cargo test --test it <module>::` runs one area
//! (`cargo test --test it cli::`).
//!
//! Tests run in parallel in this one process: each isolates itself through [`support::TestEnv`]
//! (its own queue names and Redis key prefix) and its own emulator on an ephemeral port.

mod support;
mod vectors;

mod auth;
mod bad_input;
mod burst;
mod chaos;
mod cli;
mod cluster;
mod config_errors;
mod crash;
mod dead_letters;
mod dlq;
mod escalation;
mod explain;
mod faults;
mod ingest;
mod liveness;
mod pause;
mod plan;
mod prefetch;
mod priority;
mod prometheus;
mod provider_http;
mod queue_depth;
mod quota;
mod quota_rolling;
mod quota_sync;
mod rate_jitter;
mod rate_limit;
mod reconnect_memory;
mod shutdown;
mod signing;
mod signing_v2;
mod signing_wangsu;
mod tencent_v2;
mod tracking;
mod tracking_apis;
mod wangsu;
