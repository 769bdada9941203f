//! A CMS-like burst purges exactly the expected set of cache keys with the minimum number of API
//! calls, and every message is acked.
//!
//! Property: duplicates within the linger window, the same page with and without tracking query
//! strings on an `ignore_query` host, upper-case hosts, `:443`/`:80` and fragments all collapse to
//! one cache key each; file purges share one PurgeUrlsCache call; directory purges share one
//! PurgePathCache call per FlushType. A key requested again after its purge was sent is purged
//! again. Pass: the emulator's accepted calls are exactly the minimum (3, then 1 more), item sets
//! equal the expected keys, nothing is dead-lettered, and the queue is empty after shutdown.

use std::collections::BTreeSet;

use crate::support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cms_burst_is_deduplicated_into_the_fewest_calls() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("burst").await;
    let config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: String::new(),
            domains: vec![
                ("www.example.com".into(), true),
                ("static.example.com".into(), false),
                ("*.news.example.com".into(), false),
            ],
        }],
        "max_linger_ms = 300",
    );
    // Published before the worker starts, so the whole burst is inside one linger window.
    let events = [
        json!({"urls": ["https://WWW.Example.com/a.html?utm_source=x", "https://www.example.com:443/a.html"], "id": "e1", "source": "cms"}),
        json!({"urls": ["https://www.example.com/a.html?utm_campaign=y#top", "http://static.example.com:80/app.js?v=2"]}),
        json!({"urls": ["http://static.example.com/app.js?v=2", "http://STATIC.example.com/app.js?v=3"]}),
        json!({"dirs": ["https://www.example.com/news/"], "flush_type": "delete"}),
        json!({"dirs": ["https://WWW.EXAMPLE.COM:443/news/"], "flush_type": "delete"}),
        json!({"dirs": ["https://www.example.com/news/"]}),
    ];
    for e in &events {
        env.publish_json(e).await;
    }
    env.publish_raw(
        b"https://a.news.example.com/x\n\nhttps://A.NEWS.example.com/x#frag\r\n",
        Some("text/plain"),
    )
    .await;
    let published = events.len() as u64 + 1;

    let w = Running::start(config).await;
    wait_until("every message acked", TIMEOUT, || async {
        w.acked() == published
    })
    .await;

    let calls = emu.accepted();
    assert_eq!(
        calls.len(),
        3,
        "minimum is 1 URL call + 2 path calls (delete, flush): {calls:#?}"
    );
    let urls: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.action == "PurgeUrlsCache")
        .flat_map(|c| c.items.clone())
        .collect();
    let expected: BTreeSet<String> = [
        "https://www.example.com/a.html",
        "http://static.example.com/app.js?v=2",
        "http://static.example.com/app.js?v=3",
        "https://a.news.example.com/x",
    ]
    .map(String::from)
    .into();
    assert_eq!(urls, expected);
    let mut paths: Vec<(Option<String>, Vec<String>)> = calls
        .iter()
        .filter(|c| c.action == "PurgePathCache")
        .map(|c| (c.flush_type.clone(), c.items.clone()))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            (
                Some("delete".into()),
                vec!["https://www.example.com/news/".to_string()]
            ),
            (
                Some("flush".into()),
                vec!["https://www.example.com/news/".to_string()]
            ),
        ]
    );
    let total_items: usize = calls.iter().map(|c| c.items.len()).sum();
    assert_eq!(total_items, 6, "no key was sent twice");

    // Requested again after its purge was sent: purged again, not swallowed by the first one.
    env.publish_json(&json!({"urls": ["https://www.example.com/a.html?utm_source=z"]}))
        .await;
    wait_until("the repeat is acked", TIMEOUT, || async {
        w.acked() == published + 1
    })
    .await;
    let calls = emu.accepted();
    assert_eq!(calls.len(), 4);
    assert_eq!(
        calls[3].items,
        vec!["https://www.example.com/a.html".to_string()]
    );

    let metrics = w.metrics().await;
    // URL duplicates: a.html twice more in e1/e2, app.js?v=2 once, the text event's second line.
    for line in [
        "purge_items_total{kind=\"url\",outcome=\"deduplicated\",priority=\"interactive\",provider=\"cdn\"} 4",
        "purge_items_total{kind=\"dir\",outcome=\"deduplicated\",priority=\"interactive\",provider=\"cdn\"} 1",
        "purge_items_total{kind=\"url\",outcome=\"submitted\",priority=\"interactive\",provider=\"cdn\"} 5",
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
    w.stop().await;
    assert_eq!(env.ready(&env.queue).await, 0, "everything was acked");
    assert_eq!(env.ready(&env.dlq).await, 0, "nothing was dead-lettered");
    env.cleanup().await;
    emu.shutdown().await;
}

/// The README's demo shows what it says: on the zero-config host (query strings kept), the same
/// page spelled two ways is one purge and the `?utm_source=x` copy is a key of its own, all in one
/// call. A Tencent provider exports no `kind="regex"` series: it cannot take regex purges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_demo_makes_one_call_with_two_keys() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("demo").await;
    let config = env.config(
        &[ProviderSpec {
            name: "cdn".into(),
            endpoint: emu.endpoint(),
            extra: String::new(),
            domains: vec![("www.example.com".into(), false)],
        }],
        "max_linger_ms = 300",
    );
    env.publish_json(&json!({"urls": [
        "https://www.example.com/news/1.html",
        "https://WWW.example.com:443/news/1.html#top",
        "https://www.example.com/news/1.html?utm_source=x",
    ]}))
    .await;
    let w = Running::start(config).await;
    wait_until("the message acked", TIMEOUT, || async { w.acked() == 1 }).await;
    let calls = emu.accepted();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].items.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "https://www.example.com/news/1.html".to_string(),
            "https://www.example.com/news/1.html?utm_source=x".to_string(),
        ])
    );
    let m = w.metrics().await;
    assert!(!m.contains("kind=\"regex\""), "{m}");
    assert!(m.contains("kind=\"dir\""));
    w.stop().await;
    env.cleanup().await;
}
