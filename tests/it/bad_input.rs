//! Bad input is dead-lettered with a code and a reason, never stops the worker, and never blocks
//! the good items next to it.
//!
//! Property 1 (corpus): malformed JSON, wrong types, empty events, ftp://, > 2048 characters, an
//! unknown host, invalid UTF-8 and a 5 MB body each land in the dead-letter queue with the
//! expected `x-purge-error` code, a reason and the original event; a partly bad event still purges
//! its good item; every message is acked and the worker keeps purging afterwards.
//! Property 2 (provider refusal): a batch containing one URL the provider rejects is split until
//! that URL is isolated; it alone is dead-lettered with the provider's code, the rest purged.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::*;
use serde_json::json;

fn spec(emu: &purge_worker::emulator::Emulator) -> ProviderSpec {
    ProviderSpec {
        name: "cdn".into(),
        endpoint: emu.endpoint(),
        extra: String::new(),
        domains: vec![("www.example.com".into(), false)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_corpus_is_dead_lettered_with_codes_and_reasons() {
    let emu = emulator(Default::default()).await;
    let mut env = TestEnv::new("badinput").await;
    let config = env.config(&[spec(&emu)], "max_linger_ms = 100");
    let long = format!("https://www.example.com/{}", "x".repeat(2100));
    let big = vec![b'a'; 5 * 1024 * 1024];
    let corpus: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        (
            b"{\"urls\": [".to_vec(),
            Some("application/json"),
            "invalid_json",
        ),
        (
            br#"{"urls": "https://www.example.com/a"}"#.to_vec(),
            None,
            "invalid_event",
        ),
        (
            br#"{"urls": [1, 2]}"#.to_vec(),
            Some("application/json"),
            "invalid_event",
        ),
        (br#"[]"#.to_vec(), Some("application/json"), "invalid_event"),
        (br#"{}"#.to_vec(), Some("application/json"), "empty_event"),
        (
            br#"{"urls": [], "dirs": []}"#.to_vec(),
            Some("application/json"),
            "empty_event",
        ),
        (
            br#"{"urls": ["https://www.example.com/a"], "flush_type": "purge"}"#.to_vec(),
            None,
            "invalid_flush_type",
        ),
        (
            br#"{"urls": ["ftp://www.example.com/a"]}"#.to_vec(),
            None,
            "unsupported_scheme",
        ),
        (
            serde_json::to_vec(&json!({"urls": [long]})).unwrap(),
            None,
            "url_too_long",
        ),
        (
            br#"{"urls": ["https://unknown.example.org/a"]}"#.to_vec(),
            None,
            "unknown_host",
        ),
        (
            b"{\"urls\": [\"https://www.example.com/\xff\xfe\"]}".to_vec(),
            None,
            "invalid_utf8",
        ),
        (big, None, "event_too_large"),
        (
            b"<xml/>".to_vec(),
            Some("application/xml"),
            "unsupported_content_type",
        ),
    ];
    for (body, ct, _) in &corpus {
        env.publish_raw(body, *ct).await;
    }
    // Partly bad: the good URL is purged, the two bad ones dead-lettered by code.
    env.publish_json(&json!({
        "urls": ["https://www.example.com/good.html", "ftp://www.example.com/x", "https://nope.example.net/y"],
        "id": "partial-1", "source": "cms"
    }))
    .await;
    let published = corpus.len() as u64 + 1;

    let w = Running::start(config).await;
    wait_until("every message acked", TIMEOUT, || async {
        w.acked() == published
    })
    .await;
    assert_eq!(
        purged(&emu),
        vec!["https://www.example.com/good.html".to_string()]
    );

    let dead = env.drain(&env.dlq).await;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for (body, header) in &dead {
        let code = body["error"].as_str().expect("error field").to_string();
        assert_eq!(
            header.as_deref(),
            Some(code.as_str()),
            "x-purge-error header matches"
        );
        let reason = body["reason"].as_str().expect("reason field");
        assert!(reason.len() > 10, "a human reason: {reason}");
        assert!(body.get("event").is_some(), "the event is kept: {body}");
        *codes.entry(code).or_default() += 1;
    }
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, code) in &corpus {
        *expected.entry(code.to_string()).or_default() += 1;
    }
    *expected.entry("unsupported_scheme".into()).or_default() += 1;
    *expected.entry("unknown_host".into()).or_default() += 1;
    assert_eq!(codes, expected);
    // The partly bad event's records keep its id and only its bad items.
    let partial: Vec<_> = dead
        .iter()
        .filter(|(b, _)| b["event"]["id"] == "partial-1")
        .collect();
    assert_eq!(partial.len(), 2);
    for (b, _) in partial {
        assert_eq!(b["event"]["urls"].as_array().map(|a| a.len()), Some(1));
    }
    // The invalid UTF-8 body survives byte for byte.
    assert!(
        dead.iter()
            .any(|(b, _)| b["error"] == "invalid_utf8" && b["event_base64"].is_string())
    );

    // Still running: a good event is purged afterwards.
    env.publish_json(&json!({"urls": ["https://www.example.com/after.html"]}))
        .await;
    wait_until("the next good event is purged", TIMEOUT, || async {
        purged(&emu).contains(&"https://www.example.com/after.html".to_string())
    })
    .await;
    w.stop().await;
    assert_eq!(env.ready(&env.queue).await, 0);
    env.cleanup().await;
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_the_provider_rejects_is_isolated_and_dead_lettered_alone() {
    let bad = "https://www.example.com/bad.html";
    let emu = emulator_rejecting(bad).await;
    let mut env = TestEnv::new("isolate").await;
    let config = env.config(&[spec(&emu)], "max_linger_ms = 200");
    let good: Vec<String> = (0..7)
        .map(|i| format!("https://www.example.com/ok/{i}.html"))
        .collect();
    let mut all = good.clone();
    all.insert(3, bad.to_string());
    env.publish_json(&json!({"urls": all, "id": "with-bad-url"}))
        .await;

    let w = Running::start(config).await;
    wait_until("the message is acked", TIMEOUT, || async { w.acked() == 1 }).await;
    let got: BTreeSet<String> = purged(&emu).into_iter().collect();
    assert_eq!(
        got,
        good.iter().cloned().collect::<BTreeSet<_>>(),
        "the rest is purged"
    );
    let dead = env.drain(&env.dlq).await;
    assert_eq!(dead.len(), 1, "only the bad URL: {dead:?}");
    let (body, code) = &dead[0];
    assert_eq!(code.as_deref(), Some("provider_rejected"));
    assert_eq!(body["provider_code"], "InvalidParameter.CdnParamError");
    assert_eq!(body["event"]["urls"], json!([bad]));
    assert_eq!(body["event"]["id"], "with-bad-url");
    // Bisection: 8 → 4 → 2 → 1 costs a bounded number of refused calls.
    assert!(emu.rejected().len() <= 4, "{:?}", emu.rejected());
    w.stop().await;
    env.cleanup().await;
    emu.shutdown().await;
}
