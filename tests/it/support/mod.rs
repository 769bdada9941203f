//! Shared integration-test harness: the real local RabbitMQ and Redis, an in-process emulator on
//! an ephemeral port, and the real worker started in-process. Every test gets its own queue names
//! and Redis key prefix ([`TestEnv::new`]) and removes them when done ([`TestEnv::cleanup`]), so
//! tests run in parallel.
pub mod private_redis;
pub mod relay;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use purge_worker::config::{Config, RawConfig};
use purge_worker::emulator::{
    EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, EMULATOR_WANGSU_API_KEY, EMULATOR_WANGSU_USERNAME,
    Emulator, EmulatorConfig,
};
use purge_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

/// The local broker every test uses.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10";
/// The local Redis every test uses.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Upper bound on any wait in a test.
pub const TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other test (or earlier run) uses.
pub fn unique(name: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("pwtest-{name}-{}-{t}-{n}", std::process::id())
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_until<'a, F, Fut>(
    what: &'a str,
    timeout: Duration,
    mut cond: F,
) -> impl Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = bool> + 'a,
{
    let caller = std::panic::Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if cond().await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting for: {what} (at {caller})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// TOML lines for a provider `kind` signing with the emulator's built-in credentials; put them in
/// [`ProviderSpec::extra`] to configure a kind other than tencent-v3.
pub fn kind_lines(kind: &str) -> String {
    match kind {
        "wangsu" => format!(
            "kind = \"wangsu\"\nusername = \"{EMULATOR_WANGSU_USERNAME}\"\napi_key = \"{EMULATOR_WANGSU_API_KEY}\"\n"
        ),
        other => format!(
            "kind = \"{other}\"\nsecret_id = \"{EMULATOR_SECRET_ID}\"\nsecret_key = \"{EMULATOR_SECRET_KEY}\"\n"
        ),
    }
}

/// One provider of a test config.
pub struct ProviderSpec {
    pub name: String,
    pub endpoint: url::Url,
    /// Extra TOML lines for the `[[providers]]` table (limits and so on).
    pub extra: String,
    /// `(host, ignore_query)` pairs.
    pub domains: Vec<(String, bool)>,
}

/// A test's private names and connections.
pub struct TestEnv {
    pub queue: String,
    /// The bulk queue (`amqp.bulk_queue`).
    pub bulk: String,
    pub dlq: String,
    pub prefix: String,
    pub conn: Connection,
    /// Provider names whose parking queues belong to the test.
    pub providers: Vec<String>,
    cleaned: bool,
}

impl TestEnv {
    /// Fresh names; connects the test's own publisher connection.
    pub async fn new(name: &str) -> TestEnv {
        let base = unique(name);
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ on 127.0.0.1:5672 is reachable");
        TestEnv {
            queue: format!("{base}.q"),
            bulk: format!("{base}.bulk"),
            dlq: format!("{base}.dead"),
            prefix: base,
            conn,
            providers: Vec::new(),
            cleaned: false,
        }
    }

    /// The worker's config as TOML, validated through the real loader.
    pub fn config(&mut self, providers: &[ProviderSpec], batching: &str) -> Config {
        let t = self.config_toml(providers, batching);
        config_from_toml(&t)
    }

    /// The text of [`TestEnv::config`], for a worker run as a child process (`--config FILE`).
    pub fn config_toml(&mut self, providers: &[ProviderSpec], batching: &str) -> String {
        let mut t = format!(
            "[amqp]\nurl = \"{AMQP_URL}\"\nqueue = \"{}\"\ndead_letter_queue = \"{}\"\nprefetch = 1000\nbulk_queue = \"{}\"\n\
             [redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[batching]\n{batching}\n",
            self.queue, self.dlq, self.bulk, self.prefix
        );
        for p in providers {
            self.providers.push(p.name.clone());
            // `extra` may name the kind itself (with `kind_lines`); the default is tencent-v3.
            let kind = if p.extra.lines().any(|l| l.trim_start().starts_with("kind")) {
                String::new()
            } else {
                kind_lines("tencent-v3")
            };
            t.push_str(&format!(
                "[[providers]]\nname = \"{}\"\nendpoint = \"{}\"\n{kind}{}\n",
                p.name, p.endpoint, p.extra
            ));
            for (host, iq) in &p.domains {
                t.push_str(&format!(
                    "[[providers.domains]]\nhost = \"{host}\"\nignore_query = {iq}\n"
                ));
            }
        }
        t
    }

    /// Publishes a JSON event (confirmed).
    pub async fn publish_json(&self, event: &serde_json::Value) {
        self.publish_raw(
            &serde_json::to_vec(event).expect("json"),
            Some("application/json"),
        )
        .await;
    }

    /// Publishes raw bytes with a content type (confirmed), declaring the queue first.
    pub async fn publish_raw(&self, body: &[u8], content_type: Option<&str>) {
        self.publish_raw_to(&self.queue, body, content_type).await;
    }

    /// Publishes a JSON event to the bulk queue (confirmed).
    pub async fn publish_bulk(&self, event: &serde_json::Value) {
        let body = serde_json::to_vec(event).expect("json");
        self.publish_raw_to(&self.bulk, &body, Some("application/json"))
            .await;
    }

    /// Publishes raw bytes to `queue` (confirmed), declaring it first.
    pub async fn publish_raw_to(&self, queue: &str, body: &[u8], content_type: Option<&str>) {
        let ch = self.conn.create_channel().await.expect("channel");
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .expect("declare purge queue");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut props = BasicProperties::default().with_delivery_mode(2);
        if let Some(ct) = content_type {
            props = props.with_content_type(ct.into());
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "broker nacked a test publish");
        let _ = ch.close(200, "ok".into()).await;
    }

    /// Ready messages in a queue (0 if it does not exist).
    pub async fn ready(&self, queue: &str) -> u32 {
        self.counts(queue).await.0
    }

    /// Consumers of a queue (0 if it does not exist).
    pub async fn consumers(&self, queue: &str) -> u32 {
        self.counts(queue).await.1
    }

    async fn counts(&self, queue: &str) -> (u32, u32) {
        let ch = self.conn.create_channel().await.expect("channel");
        let opts = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match ch
            .queue_declare(queue.into(), opts, FieldTable::default())
            .await
        {
            Ok(q) => {
                let _ = ch.close(200, "ok".into()).await;
                (q.message_count(), q.consumer_count())
            }
            Err(_) => (0, 0),
        }
    }

    /// Takes every message from a queue: `(body as JSON, x-purge-error header)`.
    pub async fn drain(&self, queue: &str) -> Vec<(serde_json::Value, Option<String>)> {
        let ch = self.conn.create_channel().await.expect("channel");
        let mut out = Vec::new();
        while let Ok(Some(msg)) = ch.basic_get(queue.into(), BasicGetOptions::default()).await {
            let body: serde_json::Value =
                serde_json::from_slice(&msg.delivery.data).unwrap_or(serde_json::Value::Null);
            let code = msg
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-purge-error").cloned())
                .and_then(|v| match v {
                    lapin::types::AMQPValue::LongString(s) => {
                        Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    _ => None,
                });
            msg.delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            out.push((body, code));
        }
        let _ = ch.close(200, "ok".into()).await;
        out
    }

    /// The parking queue of a provider.
    pub fn parking(&self, provider: &str) -> String {
        format!("{}.parked.{provider}", self.queue)
    }

    /// The bulk parking queue of a provider.
    pub fn bulk_parking(&self, provider: &str) -> String {
        format!("{}.parked.{provider}", self.bulk)
    }

    /// Deletes the test's queues and Redis keys. Also done on drop (so a failing test leaves
    /// nothing behind either), from a helper thread with its own connections.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        let _ = self.conn.close(200, "bye".into()).await;
        remove(self.queues(), self.prefix.clone()).await;
    }

    fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.queue.clone(), self.bulk.clone(), self.dlq.clone()];
        queues.extend(self.providers.iter().map(|p| self.parking(p)));
        queues.extend(self.providers.iter().map(|p| self.bulk_parking(p)));
        queues
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (queues, prefix) = (self.queues(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(remove(queues, prefix));
            }
        })
        .join();
    }
}

/// Deletes queues and every Redis key under `prefix`, on fresh connections.
async fn remove(queues: Vec<String>, prefix: String) {
    if let Ok(conn) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
        if let Ok(ch) = conn.create_channel().await {
            for q in queues {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    let Ok(client) = redis::Client::open(REDIS_URL) else {
        return;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap_or(());
    }
}

/// A worker config from TOML, validated through the real loader (for tests that add keys the
/// [`ProviderSpec`] does not cover, such as a domain's `dir_escalation`).
pub fn config_from_toml(t: &str) -> Config {
    let raw: RawConfig = toml::from_str(t).unwrap_or_else(|e| panic!("test config: {e}\n{t}"));
    Config::from_raw(raw).expect("test config is valid")
}

/// An emulator on an ephemeral port.
pub async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("emulator binds")
}

/// An emulator that refuses, as an invalid item, any purge call carrying `url`.
pub async fn emulator_rejecting(url: &str) -> Emulator {
    emulator(EmulatorConfig {
        faults: purge_worker::emulator::Faults {
            invalid_urls: [url.to_string()].into(),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// A worker started in-process, with its shutdown token.
pub struct Running {
    pub worker: Worker,
    pub shutdown: CancellationToken,
}

impl Running {
    /// Starts the worker and waits until `/readyz` is 200 (RabbitMQ and Redis connected).
    pub async fn start(config: Config) -> Running {
        let shutdown = CancellationToken::new();
        let worker = Worker::start(config, shutdown.clone())
            .await
            .expect("worker starts");
        Running::ready(worker, shutdown).await
    }

    /// [`Running::start`] with the test's own provider clients (one per configured provider).
    pub async fn start_with_providers(
        config: Config,
        providers: Vec<std::sync::Arc<dyn purge_worker::provider::Provider>>,
    ) -> Running {
        let shutdown = CancellationToken::new();
        let worker = Worker::start_with_providers(config, providers, shutdown.clone())
            .await
            .expect("worker starts");
        Running::ready(worker, shutdown).await
    }

    async fn ready(worker: Worker, shutdown: CancellationToken) -> Running {
        let url = format!("http://{}/readyz", worker.http_addr);
        wait_until("worker ready", TIMEOUT, || {
            let url = url.clone();
            async move { matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success()) }
        })
        .await;
        Running { worker, shutdown }
    }

    /// The worker's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.worker.http_addr))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Deliveries acked by the worker so far.
    pub fn acked(&self) -> u64 {
        self.worker.metrics.acks.with_label_values(&["ok"]).get()
    }

    /// Stops the worker (SIGTERM path) and waits for its drain; panics if that takes too long.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.worker.wait())
            .await
            .expect("worker stops within the timeout")
            .expect("worker exits cleanly");
    }
}

/// All items of accepted emulator calls, in order.
pub fn purged(emu: &Emulator) -> Vec<String> {
    emu.accepted().into_iter().flat_map(|c| c.items).collect()
}

/// The common test provider: `cdn`, the emulator's tencent-v3 API, serving `www.example.com`.
pub fn example_provider(emu: &Emulator) -> ProviderSpec {
    ProviderSpec {
        name: "cdn".into(),
        endpoint: emu.endpoint(),
        extra: String::new(),
        domains: vec![("www.example.com".into(), false)],
    }
}

/// The value of one series (`name` or `name{labels}`, exactly as rendered) in the Prometheus
/// text; 0 when the series was never touched.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The most calls in any closed window of `window_ms` (closed is the strictest reading), from
/// arrival times in ms in ascending order.
pub fn max_in_window(times: &[f64], window_ms: f64) -> usize {
    let (mut worst, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] > window_ms {
            lo += 1;
        }
        worst = worst.max(hi - lo + 1);
    }
    worst
}
