//! Regex, headers and wildcards: accepted where the host's provider has them, refused with a
//! reason naming the limitation elsewhere.

use super::*;
use crate::provider::api::ProviderKind;

/// Provider 0 (tencent-v3) serves `tc.example.com`, provider 1 (wangsu) `*.ws.example.com`.
fn router() -> Router {
    Router::for_tests(&[
        (ProviderKind::TencentV3, &[("tc.example.com", false)]),
        (ProviderKind::Wangsu, &[("*.ws.example.com", false)]),
    ])
}

fn event(body: &str) -> Event {
    decode(body.as_bytes(), None, DEFAULT_MAX_EVENT_BYTES).unwrap()
}

fn codes(rejected: &[RejectedItem]) -> Vec<(&str, &'static str)> {
    rejected
        .iter()
        .map(|r| (r.raw.as_str(), r.error.code()))
        .collect()
}

#[test]
fn wildcards_pass_for_wangsu_and_are_refused_for_tencent() {
    let e = event(
        r#"{"dirs": ["https://a.ws.example.com/img/**", "https://a.ws.example.com/x/*.jpg",
                     "https://tc.example.com/img/*"]}"#,
    );
    let (ok, bad) = validate(&e, &router());
    let keys: Vec<_> = ok.iter().map(|i| (i.provider, i.key.as_str())).collect();
    assert_eq!(
        keys,
        [
            (1, "https://a.ws.example.com/img/**"),
            (1, "https://a.ws.example.com/x/*.jpg")
        ]
    );
    assert_eq!(
        codes(&bad),
        [("https://tc.example.com/img/*", "wildcard_unsupported")]
    );
    assert!(
        bad[0].error.to_string().contains("tencent-v3"),
        "{}",
        bad[0].error
    );
}

#[test]
fn regex_is_routed_by_its_host_and_checked() {
    let e = event(
        r#"{"regex": ["https://a.ws.example.com/my.*\\.(jpg|png)\\?q=",
                      "https://a.ws.example.com/a.*b.*c+",
                      "https://tc.example.com/.*",
                      "https://nowhere.example.org/.*",
                      "not a pattern"]}"#,
    );
    let (ok, bad) = validate(&e, &router());
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].kind, Kind::Regex);
    assert_eq!(ok[0].provider, 1);
    assert_eq!(
        ok[0].key.as_str(),
        r"https://a.ws.example.com/my.*\.(jpg|png)\?q="
    );
    assert_eq!(
        codes(&bad),
        [
            ("https://a.ws.example.com/a.*b.*c+", "invalid_regex"),
            ("https://tc.example.com/.*", "regex_unsupported"),
            ("https://nowhere.example.org/.*", "unknown_host"),
            ("not a pattern", "invalid_regex"),
        ]
    );
}

#[test]
fn headers_decode_sorted_lowercase_and_unique() {
    let e = event(
        r#"{"urls": ["https://a.ws.example.com/a.js"],
            "headers": [{"name": "X-Device", "value": "mobile"}, {"name": "Accept-Language", "value": "en"}]}"#,
    );
    let names: Vec<_> = e.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["accept-language", "x-device"]);
    for (body, code) in [
        (
            r#"{"urls": ["https://a.ws.example.com/a"], "headers": [{"name": "A", "value": "1"}, {"name": "a", "value": "2"}]}"#,
            "invalid_headers",
        ),
        (
            r#"{"urls": ["https://a.ws.example.com/a"], "headers": [{"name": "A B", "value": "1"}]}"#,
            "invalid_headers",
        ),
        (
            r#"{"urls": ["https://a.ws.example.com/a"], "headers": {"name": "A"}}"#,
            "invalid_event",
        ),
        (
            r#"{"urls": ["https://a.ws.example.com/a"], "headers": [{"name": "A"}]}"#,
            "invalid_event",
        ),
    ] {
        let e = decode(body.as_bytes(), None, DEFAULT_MAX_EVENT_BYTES).unwrap_err();
        assert_eq!(e.code(), code, "{body}: {e}");
    }
}

#[test]
fn headers_only_travel_to_providers_that_purge_by_header() {
    let e = event(
        r#"{"urls": ["https://a.ws.example.com/a.js", "https://tc.example.com/a.js"],
            "dirs": ["https://tc.example.com/d/"],
            "headers": [{"name": "X-Device", "value": "mobile"}]}"#,
    );
    let (ok, bad) = validate(&e, &router());
    assert_eq!(
        ok.len(),
        2,
        "the wangsu URL and the tencent dir (headers apply to urls only)"
    );
    assert_eq!(
        codes(&bad),
        [("https://tc.example.com/a.js", "headers_unsupported")]
    );
}

#[test]
fn wangsu_urls_get_special_characters_encoded_or_a_reason() {
    let e = event(
        r#"{"urls": ["https://a.ws.example.com/newfile[1]{t|^}p.png",
                     "https://a.ws.example.com/*.png",
                     "https://a.ws.example.com/123%zz.jpg",
                     "https://tc.example.com/*.png"]}"#,
    );
    let (ok, bad) = validate(&e, &router());
    let keys: Vec<_> = ok.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "https://a.ws.example.com/newfile%5B1%5D%7Bt%7C%5E%7Dp.png",
            "https://tc.example.com/*.png"
        ]
    );
    assert_eq!(
        codes(&bad),
        [
            ("https://a.ws.example.com/*.png", "invalid_url"),
            ("https://a.ws.example.com/123%zz.jpg", "invalid_url"),
        ]
    );
}

#[test]
fn an_event_of_only_regex_is_not_empty_and_dead_letters_keep_the_headers() {
    let e = event(r#"{"regex": ["https://a.ws.example.com/.*"]}"#);
    assert_eq!(e.regex.len(), 1);
    let bad = Event::of_kind(
        Kind::Url,
        FlushType::Delete,
        vec!["https://a.ws.example.com/a".into()],
        &[Header {
            name: "x-device".into(),
            value: "mobile".into(),
        }],
        Some("id".into()),
        None,
    );
    let v = serde_json::to_value(&bad).unwrap();
    assert_eq!(v["headers"][0]["name"], "x-device");
    assert_eq!(v["flush_type"], "delete");
    assert!(v.get("regex").is_none(), "empty lists are left out: {v}");
}
