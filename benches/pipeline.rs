//! The worker's CPU path without I/O: normalize + dedupe + batch (DESIGN "Performance stance":
//! millions of items per second per core).
//!
//! Benches, all reporting items per second:
//! - `pipeline/normalize_dedupe_batch`: every raw URL through `cache_key::normalize`, into its
//!   provider's lane with `Lane::add`, then `Lane::take` batches of 1000 until every lane is empty;
//! - `pipeline/normalize`: `cache_key::normalize` alone over the same URLs;
//! - `pipeline/dedupe_batch`: `Lane::add` + `Lane::take` alone over pre-normalized keys (add all,
//!   then take), and `dedupe_batch_take_when_full` (take as soon as a lane holds a full batch, as
//!   the dispatcher does when the API is not the bottleneck);
//! - `event/decode_validate_10_urls`: `event::decode` + `event::validate` of a JSON event of 10
//!   URLs (throughput counted in items, so events/s = items/s / 10).
//!
//! Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use purge_worker::cache_key::{self, CacheKey};
use purge_worker::coalesce::{Lane, LaneKey, Origin};
use purge_worker::config::{Config, ProviderConfig};
use purge_worker::event;
use purge_worker::provider::{FlushType, Kind};
use purge_worker::routing::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Raw URLs per iteration.
const N: usize = 100_000;
/// Share of URLs that repeat an earlier one (after normalization).
const DUP_SHARE: f64 = 0.30;
/// Items per provider call (Tencent's `urls_per_call`).
const BATCH: usize = 1000;

/// Two providers: `main` serves www/static (ignore_query, where tracking queries go) and every
/// other `*.example.com`; `second` serves `*.example.org` and an IDN host.
const CONFIG: &str = r#"
    [[providers]]
    name = "main"
    kind = "tencent-v3"
    secret_id = "AKIDbench"
    secret_key = "bench"
      [[providers.domains]]
      host = "www.example.com"
      [[providers.domains]]
      host = "static.example.com"
      ignore_query = true
      [[providers.domains]]
      host = "*.example.com"

    [[providers]]
    name = "second"
    kind = "tencent-v3"
    secret_id = "AKIDbench"
    secret_key = "bench"
      [[providers.domains]]
      host = "*.example.org"
      [[providers.domains]]
      host = "新闻.例子.中国"
"#;

fn config() -> Config {
    let raw = toml::from_str(CONFIG).expect("bench TOML parses");
    Config::from_raw(raw).expect("bench config is valid")
}

const SECTIONS: &[&str] = &["news", "sport", "tech", "video", "assets/js", "img/2024"];
const CN_SECTIONS: &[&str] = &["新闻", "体育/足球", "科技", "财经/股票", "图片"];
const TRACKING: &[&str] = &[
    "utm_source=newsletter&utm_medium=email&utm_campaign=spring",
    "utm_source=weibo&utm_medium=social",
    "spm=a2c4g.11186623&from=timeline",
    "v=3",
    "_t=1718000000",
];

/// One fresh URL of a realistic mix: pages, CMS queries, static assets with tracking or
/// cache-busting queries on the `ignore_query` host, Chinese paths, other subdomains, an IDN host.
fn fresh_url(rng: &mut StdRng, i: usize) -> String {
    match rng.random_range(0..100) {
        // Article pages.
        0..=29 => {
            let s = SECTIONS[rng.random_range(0..SECTIONS.len())];
            format!("https://www.example.com/{s}/2024/06/{i}.html")
        }
        // CMS pages with a meaningful query (kept in the key).
        30..=39 => format!(
            "https://www.example.com/list?page={}&cat={}",
            i,
            rng.random_range(0..50)
        ),
        // Static assets on the ignore_query host, usually with tracking or cache-busting queries.
        40..=64 => {
            let q = TRACKING[rng.random_range(0..TRACKING.len())];
            format!(
                "https://static.example.com/assets/{i}/app.{}.js?{q}",
                i % 97
            )
        }
        // Chinese paths (percent-encoded by normalize).
        65..=79 => {
            let s = CN_SECTIONS[rng.random_range(0..CN_SECTIONS.len())];
            format!("https://www.example.com/{s}/文章-{i}.html")
        }
        // Other subdomains through the wildcard, with a fragment and an explicit default port.
        80..=89 => format!(
            "https://img{}.example.com:443/p/{i}/large.jpg#zoom",
            rng.random_range(0..8)
        ),
        // Second provider: example.org pages, and the IDN host with a Chinese path.
        90..=96 => format!("http://m.example.org/a/{i}?ref=home"),
        _ => format!("https://新闻.例子.中国/频道/{i}/"),
    }
}

/// A repeat of an earlier URL: the same text, or the same cache key spelled differently
/// (upper-case scheme and host, another tracking query on the ignore_query host, a fragment).
fn variant_of(rng: &mut StdRng, earlier: &str) -> String {
    match rng.random_range(0..4) {
        0 => earlier.to_string(),
        1 => match earlier.strip_prefix("https://www.example.com") {
            Some(rest) => format!("HTTPS://WWW.Example.COM{rest}"),
            None => earlier.to_string(),
        },
        2 => match earlier.split_once('?') {
            Some((base, _)) if earlier.starts_with("https://static.") => {
                let q = TRACKING[rng.random_range(0..TRACKING.len())];
                format!("{base}?{q}&_={}", rng.random_range(0..1_000_000))
            }
            _ => earlier.to_string(),
        },
        _ if earlier.contains('#') => earlier.to_string(),
        _ => format!("{earlier}#section-2"),
    }
}

/// `n` raw URLs, about [`DUP_SHARE`] of them repeats of an earlier URL (mostly recent ones, as a
/// burst of edits to the same pages would produce).
fn raw_urls(n: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut urls: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        if !urls.is_empty() && rng.random_bool(DUP_SHARE) {
            let back = rng.random_range(1..=urls.len().min(5_000));
            let earlier = urls[urls.len() - back].clone();
            urls.push(variant_of(&mut rng, &earlier));
        } else {
            urls.push(fresh_url(&mut rng, i));
        }
    }
    urls
}

fn lane_key() -> LaneKey {
    LaneKey {
        kind: Kind::Url,
        flush: FlushType::Flush,
        headers: None,
    }
}

/// One URL lane per provider, as each dispatcher would hold.
fn lanes(providers: usize) -> Vec<Lane> {
    (0..providers)
        .map(|_| Lane::new(lane_key(), BATCH))
        .collect()
}

/// Takes every batch of every lane; returns (batches, items).
fn drain(lanes: &mut [Lane]) -> (usize, usize) {
    let (mut batches, mut items) = (0, 0);
    for lane in lanes {
        while let Some(b) = lane.take(Instant::now()) {
            batches += 1;
            items += b.len();
            black_box(&b);
        }
    }
    (batches, items)
}

/// The full CPU path over `urls`; returns (batches, items batched).
fn pipeline(
    urls: &[String],
    router: &Router,
    providers: usize,
    origin: &Arc<Origin>,
) -> (usize, usize) {
    let mut lanes = lanes(providers);
    let now = Instant::now();
    for (id, raw) in urls.iter().enumerate() {
        if let Ok((route, key)) = cache_key::normalize(raw, router) {
            lanes[route.provider].add(key, id as u64, origin, now);
        }
    }
    drain(&mut lanes)
}

fn benches(c: &mut Criterion) {
    let config = config();
    let router = Router::new(config.providers.iter().map(ProviderConfig::routes));
    let providers = config.providers.len();
    let urls = raw_urls(N);
    let origin = Arc::new(Origin {
        id: Some("bench".into()),
        source: Some("cms".into()),
    });

    // Sanity and the shape of the data, printed once.
    let normalized: Vec<(usize, CacheKey)> = urls
        .iter()
        .map(|u| {
            let (route, key) = cache_key::normalize(u, &router)
                .unwrap_or_else(|e| panic!("bench URL {u} refused: {e}"));
            (route.provider, key)
        })
        .collect();
    let (batches, items) = pipeline(&urls, &router, providers, &origin);
    let chinese = urls.iter().filter(|u| !u.is_ascii()).count();
    let ignore_query = urls
        .iter()
        .filter(|u| u.starts_with("https://static."))
        .count();
    eprintln!(
        "pipeline input: {N} raw URLs ({chinese} non-ASCII, {ignore_query} on the ignore_query host) -> \
         {items} distinct cache keys ({:.1} % duplicates) in {batches} batches",
        100.0 * (N - items) as f64 / N as f64
    );

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(N as u64));
    g.bench_function("normalize_dedupe_batch", |b| {
        b.iter(|| black_box(pipeline(black_box(&urls), &router, providers, &origin)))
    });
    g.bench_function("normalize", |b| {
        b.iter(|| {
            for u in black_box(&urls) {
                let _ = black_box(cache_key::normalize(u, &router));
            }
        })
    });
    // Key clones are what the consumer hands over (an Arc bump), so they are set up outside.
    g.bench_function("dedupe_batch", |b| {
        b.iter_batched(
            || normalized.clone(),
            |keys| {
                let mut lanes = lanes(providers);
                let now = Instant::now();
                for (id, (p, key)) in keys.into_iter().enumerate() {
                    lanes[p].add(key, id as u64, &origin, now);
                }
                black_box(drain(&mut lanes))
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("dedupe_batch_take_when_full", |b| {
        b.iter_batched(
            || normalized.clone(),
            |keys| {
                let mut lanes = lanes(providers);
                let now = Instant::now();
                let mut batches = 0;
                for (id, (p, key)) in keys.into_iter().enumerate() {
                    let lane = &mut lanes[p];
                    lane.add(key, id as u64, &origin, now);
                    if lane.waiting() >= BATCH
                        && let Some(batch) = lane.take(now)
                    {
                        batches += 1;
                        black_box(batch);
                    }
                }
                black_box((batches, drain(&mut lanes)))
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // One event of 10 URLs as the CMS sends it.
    let body = serde_json::to_vec(&serde_json::json!({
        "urls": &urls[..10],
        "flush_type": "flush",
        "id": "job-4711",
        "source": "cms",
    }))
    .expect("event serializes");
    let max = config.batching.max_event_bytes;
    let mut g = c.benchmark_group("event");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(10));
    g.bench_function("decode_validate_10_urls", |b| {
        b.iter(|| {
            let ev = event::decode(black_box(&body), Some("application/json"), max)
                .expect("bench event decodes");
            let (items, rejected) = event::validate(&ev, &router);
            assert!(rejected.is_empty());
            black_box(items)
        })
    });
    g.finish();
}

criterion_group!(pipeline_benches, benches);
criterion_main!(pipeline_benches);
