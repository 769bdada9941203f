use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::*;
use crate::provider::wangsu_sign::{
    AkSkReceived, parse_aksk_authorization, verify_aksk, verify_api_key,
};

/// A client from settings, as the worker builds it: username `api-user-01` and API key
/// `k3y$With!Special` for the API-key scheme, AccessKey `AKtest` and SecretKey `SKtest` for AK/SK.
fn provider(endpoint: &str, settings: Settings) -> Wangsu {
    let (id, key) = match settings.auth {
        WangsuAuth::ApiKey => ("api-user-01", "k3y$With!Special"),
        WangsuAuth::AkSk => ("AKtest", "SKtest"),
    };
    let endpoint = url::Url::parse(endpoint).expect("test endpoint is a URL");
    Wangsu::new(&Account::new("ws", endpoint, id, key), &settings).expect("client builds")
}

fn aksk() -> Settings {
    Settings {
        auth: WangsuAuth::AkSk,
        ..Settings::default()
    }
}

fn api_key_provider(settings: Settings) -> Wangsu {
    provider("https://open.chinanetcenter.com", settings)
}

fn batch(kind: Kind, flush_type: FlushType, items: &[&str]) -> Batch {
    Batch {
        kind,
        flush_type,
        items: items.iter().map(|s| s.to_string()).collect(),
        headers: Vec::new(),
    }
}

fn body(p: &SignedPost) -> Value {
    serde_json::from_slice(&p.body).unwrap()
}

fn header<'p>(p: &'p SignedPost, name: &str) -> Option<&'p str> {
    p.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// 2023-11-06T08:09:10Z, the `dollar_in_key` vector's date.
const NOW: i64 = 1_699_258_150;

#[test]
fn file_purges_carry_urls_headers_action_and_target_only() {
    let p = api_key_provider(Settings::default());
    let mut b = batch(
        Kind::Url,
        FlushType::Flush,
        &["https://a.example.com/1.jpg", "https://a.example.com/2.jpg"],
    );
    b.headers = vec![Header {
        name: "X-Device".into(),
        value: "mobile".into(),
    }];
    let prepared = p.prepare(&b, NOW).unwrap();
    assert_eq!(prepared.action, "purges.files");
    assert_eq!(
        body(&prepared),
        json!({
            "fileUrls": ["https://a.example.com/1.jpg", "https://a.example.com/2.jpg"],
            "fileHeaders": [{"name": "X-Device", "value": "mobile"}],
            "action": "invalidate",
            "target": "production",
        })
    );
    assert_eq!(header(&prepared, "Content-Type"), Some("application/json"));
    assert_eq!(header(&prepared, "Accept"), Some("application/json"));

    b.headers.clear();
    let plain = body(&p.prepare(&b, NOW).unwrap());
    assert!(plain.get("fileHeaders").is_none(), "{plain}");
}

#[test]
fn dirs_and_regex_go_in_their_own_lists_with_the_flush_type_as_action() {
    let p = api_key_provider(Settings {
        target: Target::Staging,
        webhook: Some("wh-1".into()),
        purge_name: Some("purge-worker".into()),
        ..Settings::default()
    });
    let dirs = p
        .prepare(
            &batch(
                Kind::Dir,
                FlushType::Delete,
                &["https://a.example.com/d/**"],
            ),
            NOW,
        )
        .unwrap();
    assert_eq!(dirs.action, "purges.dirs");
    assert_eq!(
        body(&dirs),
        json!({
            "name": "purge-worker",
            "dirUrls": ["https://a.example.com/d/**"],
            "action": "delete",
            "target": "staging",
            "webhook": "wh-1",
        })
    );
    let regex = p
        .prepare(
            &batch(
                Kind::Regex,
                FlushType::Flush,
                &[r"https://a.example.com/.*\.js"],
            ),
            NOW,
        )
        .unwrap();
    assert_eq!(regex.action, "purges.regex");
    let v = body(&regex);
    assert_eq!(v["regexPatterns"], json!([r"https://a.example.com/.*\.js"]));
    assert_eq!(v["action"], "invalidate");
    assert!(v.get("dirUrls").is_none() && v.get("fileUrls").is_none());
    // A header list never leaks into a non-file purge.
    let mut with_headers = batch(Kind::Dir, FlushType::Flush, &["https://a.example.com/d/"]);
    with_headers.headers = vec![Header {
        name: "X".into(),
        value: "y".into(),
    }];
    assert!(
        body(&p.prepare(&with_headers, NOW).unwrap())
            .get("fileHeaders")
            .is_none()
    );
}

#[test]
fn api_key_scheme_signs_the_date_it_sends() {
    let p = api_key_provider(Settings::default());
    let prepared = p
        .prepare(
            &batch(Kind::Url, FlushType::Flush, &["https://a.example.com/x"]),
            NOW,
        )
        .unwrap();
    // The `dollar_in_key` vector: same account, same instant.
    assert_eq!(
        header(&prepared, "Date"),
        Some("Mon, 06 Nov 2023 08:09:10 GMT")
    );
    assert_eq!(
        header(&prepared, "Authorization"),
        Some("Basic YXBpLXVzZXItMDE6NXhDUlFUREVEVE5ITUd1RVRLZEFmT3NibktRPQ==")
    );
    assert!(header(&prepared, "x-cnc-auth-method").is_none());
    let later = p
        .prepare(
            &batch(Kind::Url, FlushType::Flush, &["https://a.example.com/x"]),
            NOW + 1,
        )
        .unwrap();
    assert_ne!(
        header(&later, "Authorization"),
        header(&prepared, "Authorization"),
        "every attempt signs afresh"
    );
    let verified = verify_api_key(
        header(&later, "Authorization").unwrap(),
        header(&later, "Date").unwrap(),
        |_| Some("k3y$With!Special"),
    );
    assert_eq!(verified.as_deref(), Ok("api-user-01"));
}

#[test]
fn aksk_scheme_signs_host_content_type_and_body() {
    let p = provider("http://127.0.0.1:8089/base/", aksk());
    assert_eq!(
        p.endpoint.url.as_str(),
        "http://127.0.0.1:8089/base/cdn/purges"
    );
    let prepared = p
        .prepare(
            &batch(Kind::Dir, FlushType::Flush, &["https://a.example.com/d/"]),
            NOW,
        )
        .unwrap();
    assert_eq!(header(&prepared, "x-cnc-accessKey"), Some("AKtest"));
    assert_eq!(header(&prepared, "x-cnc-timestamp"), Some("1699258150"));
    assert_eq!(header(&prepared, "x-cnc-auth-method"), Some("AKSK"));
    assert!(header(&prepared, "Date").is_none());
    let auth = parse_aksk_authorization(header(&prepared, "Authorization").unwrap()).unwrap();
    assert_eq!(
        (auth.access_key, auth.signed_headers),
        ("AKtest", "content-type;host")
    );
    let headers = [
        ("content-type", "application/json"),
        ("host", "127.0.0.1:8089"),
    ];
    let received = AkSkReceived {
        method: "POST",
        path: "/base/cdn/purges",
        query: "",
        headers: &headers,
        payload: &prepared.body,
        timestamp: "1699258150",
    };
    assert_eq!(verify_aksk(&auth, &received, "SKtest"), Ok(()));
    let debug = format!("{p:?}");
    assert!(!debug.contains("SKtest"), "{debug}");
}

#[test]
fn aksk_never_signs_the_same_body_twice_in_one_second() {
    let p = provider("http://127.0.0.1:8089/", aksk());
    let b = batch(Kind::Url, FlushType::Flush, &["https://a.example.com/x"]);
    let stamps: Vec<String> = (0..3)
        .map(|_| {
            let prepared = p.prepare(&b, NOW).unwrap();
            header(&prepared, "x-cnc-timestamp").unwrap().to_string()
        })
        .collect();
    assert_eq!(stamps, ["1699258150", "1699258151", "1699258152"]);
    // Another body at the same second keeps the real clock.
    let other = batch(Kind::Url, FlushType::Flush, &["https://a.example.com/y"]);
    let prepared = p.prepare(&other, NOW).unwrap();
    assert_eq!(header(&prepared, "x-cnc-timestamp"), Some("1699258150"));
    // Later, the memory is gone and the clock is used again.
    let later = p.prepare(&b, NOW + 60).unwrap();
    assert_eq!(header(&later, "x-cnc-timestamp"), Some("1699258210"));
}

#[test]
fn capabilities_and_action_labels() {
    let p = api_key_provider(Settings::default());
    assert_eq!(
        p.capabilities(),
        Capabilities {
            url_flush_type: true,
            dir_flush_type: true,
            wildcards: true,
            regex: true,
            headers: true,
            url_rules: crate::provider::UrlRules::Wangsu,
        }
    );
    let labels: Vec<_> = Kind::ALL.iter().map(|k| p.action(*k)).collect();
    assert_eq!(labels, ["purges.files", "purges.dirs", "purges.regex"]);
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.insert(
            HeaderName::from_static(n),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn err_body(code: &str, message: &str) -> Vec<u8> {
    json!({"code": code, "message": message})
        .to_string()
        .into_bytes()
}

fn items(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn created_purges_yield_the_location_id_and_request_id() {
    let h = headers(&[
        (
            "location",
            "http://open.chinanetcenter.com/cdn/purges/5dca2205f9e9cc0001df7b33",
        ),
        ("x-cnc-request-id", "req-1"),
    ]);
    assert_eq!(
        interpret(201, &h, b"", &[]),
        Ok(Receipt {
            task_id: "5dca2205f9e9cc0001df7b33".into(),
            request_id: Some("req-1".into())
        })
    );
    let relative = headers(&[("location", "/cdn/purges/abc/")]);
    assert_eq!(interpret(201, &relative, b"", &[]).unwrap().task_id, "abc");
    for bare in [
        headers(&[]),
        headers(&[("location", "http://h/cdn/purges")]),
    ] {
        assert!(matches!(
            interpret(200, &bare, b"", &[]),
            Err(ProviderError::Transient {
                maybe_applied: true,
                ..
            })
        ));
    }
}

#[test]
fn invalid_purge_url_names_exactly_the_refused_item() {
    let batch_items = items(&[
        "http://domain.info/ok.jpg",
        "http://domain.info/i/image/gallery/123%abc.jpg",
        "http://test.domain.info/a.jpg",
        "http://test.domain.info/b.jpg",
    ]);
    let named = |message: &str| match interpret(
        400,
        &headers(&[]),
        &err_body("InvalidPurgeUrl", message),
        &batch_items,
    ) {
        Err(ProviderError::InvalidItems { code, items, .. }) => {
            assert_eq!(code, "InvalidPurgeUrl");
            items
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        named(
            "The purge URL 'http://domain.info/i/image/gallery/123%abc.jpg' is invalid. Special letters need to be encoded."
        ),
        Some(items(&["http://domain.info/i/image/gallery/123%abc.jpg"]))
    );
    assert_eq!(
        named("The host 'test.domain.info' has not been deployed in the 'production' environment."),
        Some(items(&[
            "http://test.domain.info/a.jpg",
            "http://test.domain.info/b.jpg"
        ]))
    );
    assert_eq!(
        named("The purge URL 'http://elsewhere/x' is invalid."),
        None
    );
    assert_eq!(named("something else"), None);
}

#[test]
fn every_answer_lands_in_its_class() {
    let no = headers(&[]);
    let b = items(&["https://a.example.com/x"]);
    let case = |status, h: &HeaderMap, body: &[u8]| interpret(status, h, body, &b).unwrap_err();

    for code in [
        "DuplicateFileHeaderName",
        "InvalidTarget",
        "InvalidRegexPattern",
    ] {
        assert!(
            matches!(
                case(400, &no, &err_body(code, "m")),
                ProviderError::InvalidItems { items: None, .. }
            ),
            "{code}"
        );
    }
    assert_eq!(
        case(400, &no, &err_body("PurgeQuotaExceeded", "m")),
        ProviderError::QuotaExhausted {
            code: "PurgeQuotaExceeded".into()
        }
    );
    assert!(
        matches!(
            case(403, &no, &err_body("NoPurgeTokensLeft", "m")),
            ProviderError::Auth { .. }
        ),
        "403 stays auth whatever the code"
    );
    assert_eq!(
        case(400, &no, &err_body("TooManyPurgeEntries", "m")),
        ProviderError::BatchTooLarge {
            code: "TooManyPurgeEntries".into()
        }
    );
    for status in [401, 403] {
        assert!(matches!(
            case(status, &no, &err_body("AccessDenied", "m")),
            ProviderError::Auth { .. }
        ));
        assert!(matches!(
            case(status, &no, b"<html>"),
            ProviderError::Auth { .. }
        ));
    }
    let wangsu_wait = headers(&[
        ("x-rate-limit-retry-after-seconds", "7"),
        ("retry-after", "99"),
    ]);
    assert_eq!(
        case(429, &wangsu_wait, &err_body("TooManyRequests", "slow down")),
        ProviderError::RateLimited {
            code: "TooManyRequests".into(),
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        case(429, &headers(&[("retry-after", "3")]), b""),
        ProviderError::RateLimited {
            code: "HttpStatus.429".into(),
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert!(matches!(
        case(500, &no, &err_body("InternalError", "m")),
        ProviderError::Transient {
            maybe_applied: false,
            ..
        }
    ));
    assert!(matches!(
        case(504, &no, b"gateway timeout"),
        ProviderError::Transient {
            maybe_applied: true,
            ..
        }
    ));
    assert!(matches!(
        case(502, &no, b""),
        ProviderError::Transient {
            maybe_applied: false,
            ..
        }
    ));
    assert!(
        matches!(
            case(404, &no, b"not found"),
            ProviderError::Transient {
                maybe_applied: false,
                ..
            }
        ),
        "a wrong endpoint is not the items' fault"
    );
}
