//! purge-worker: turns a noisy, duplicated, bursty stream of "this content changed" events from
//! RabbitMQ into the fewest, fullest CDN purge calls that still purge every changed cache key.
//!
//! # Layout (the data flow of DESIGN.md)
//!
//! ```text
//! RabbitMQ ─► amqp (consumer) ─► event (decode, validate) ─► cache_key + routing ─► dispatch
//!                 │                    │ bad                                     (per provider:
//!                 │                    ▼                                          coalesce lanes,
//!                 │              dead_letter queue                                ratelimit, quota,
//!                 │                                                               provider call)
//!                 ◄──────────── ledger: ack when every item of a delivery is done ◄──────┘
//!
//! config (TOML) ─► validated component settings ─► worker (wires the stages) ◄─ commands (CLI)
//! ```
//!
//! Ownership runs one way. [`purge`] is the vocabulary every stage speaks and imports nothing of
//! the crate. Each component owns its settings type and its defaults ([`amqp::AmqpConfig`],
//! [`provider::Account`] and each API's `Settings` and `DEFAULTS`, [`routing::DomainRule`],
//! [`ratelimit::RateLimit`], [`quota::QuotaWindow`], [`backoff::Backoff`]). [`config`] only
//! parses TOML, validates it and assembles those settings; only [`worker`] and [`commands`]
//! (and the dispatcher, which takes a provider's whole entry) read [`config`].
//!
//! Where each behaviour lives:
//!
//! - [`purge`]: `Kind` (url, dir, regex), `FlushType`, `Header`, `Batch`.
//! - [`config`]: TOML → validated settings; every error names its key. Lookup order, `*_env`
//!   keys, bounds of every number.
//! - [`event`], [`cache_key`], [`routing`]: the wire format, normalization and host routing.
//! - [`coalesce`]: lanes, dedupe of pending keys and batch formation.
//! - [`ledger`]: which deliveries wait on what; acks exactly when all their items are done;
//!   `ledger::Sessions` marks the deliveries of a lost channel dead.
//! - [`dispatch`]: one task per provider. A pure core (`dispatch/core.rs`: lanes, gates, and
//!   `dispatch/decide.rs`: what each provider answer means) under an I/O shell that reserves
//!   quota, takes the rate permit, calls the provider and publishes dead letters and parked items.
//! - [`tracking`]: follows accepted purge calls to completion at the CDN (task status polls
//!   within the rate budget, time to fresh, re-purge of failed tasks), pending tasks in Redis.
//! - [`backoff`]: the capped exponential backoff of provider retries and RabbitMQ reconnects.
//! - [`ratelimit`]: governor quotas derived so no sliding window is ever exceeded.
//! - [`quota`]: the daily or rolling-24-hour quota in Redis (atomic Lua reserve and refund).
//! - [`amqp`]: connection settings and supervision, topology, consumer, dead-letter and parking
//!   publishes.
//! - [`dead_letter`]: the dead-letter record, its reason codes and headers.
//! - [`provider`]: the provider boundary (`Provider`, `ProviderError`, `Capabilities`), the one
//!   HTTP path (`provider/http.rs`), the MACs (`provider::mac`), [`provider::api`] (the API
//!   families and building a client), and one module per API family with its signing.
//! - `emulator` (feature `emulator`, on by default): the server side of every provider API, for
//!   tests and demos.
//! - [`metrics`], [`http`]: Prometheus registry (typed handles per provider in
//!   `metrics/provider.rs`) and `/metrics` `/healthz` `/readyz`.
//! - [`control`]: operator control through Redis (pause flags, parked releases, each
//!   replica's state for `status`, the audit trail) and the worker stage that follows it.
//! - [`relay`]: moving messages between queues with confirms (releases, dead-letter replay).
//! - [`ingest`]: `POST /v1/purges` for publishers that cannot speak AMQP (CONTRACT §6).
//! - [`queue_depth`]: `purge_queue_messages` from passive declares on the consumer's connection.
//! - [`secret`]: credentials that never reach logs, metrics or errors.
//! - [`worker`]: wires the stages together: `Worker::start(config, shutdown)`; stage supervision
//!   in `worker/supervisor.rs`, the consumer loop in `worker/consumer.rs`.
//! - [`commands`]: the CLI subcommands; [`logging`]: log output that never panics or blocks.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

/// `println!` for command output that never panics: a closed stdout (`purge-worker check | head
/// -n 3`) drops the rest of the output instead of killing the command.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod amqp;
pub mod backoff;
pub mod cache_key;
pub mod coalesce;
pub mod commands;
pub mod config;
pub mod control;
pub mod dead_letter;
pub mod dispatch;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod event;
pub mod http;
pub mod ingest;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod provider;
pub mod purge;
pub mod queue_depth;
pub mod quota;
pub mod ratelimit;
pub mod relay;
pub mod routing;
pub mod secret;
pub mod tracking;
pub mod worker;
