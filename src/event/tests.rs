use super::*;
use crate::provider::api::ProviderKind;

const JSON: Option<&str> = Some("application/json");
const TEXT: Option<&str> = Some("text/plain");
const MAX: usize = DEFAULT_MAX_EVENT_BYTES;

fn json(body: &str) -> Result<Event, EventError> {
    decode(body.as_bytes(), JSON, MAX)
}

/// Decodes `body` as JSON and expects `InvalidEvent` whose reason contains `says`.
#[track_caller]
fn assert_invalid_event(body: &str, says: &str) {
    match json(body) {
        Err(e @ EventError::InvalidEvent(_)) => {
            assert_eq!(e.code(), "invalid_event");
            assert!(e.to_string().contains(says), "{body}: {e}");
        }
        other => panic!("{body}: expected invalid_event, got {other:?}"),
    }
}

/// Provider 0 serves `www.example.com` (ignore_query), provider 1 `*.img.example.com`.
fn router() -> Router {
    Router::for_tests(&[
        (ProviderKind::TencentV3, &[("www.example.com", true)]),
        (ProviderKind::TencentV3, &[("*.img.example.com", false)]),
    ])
}

#[test]
fn full_json_event() {
    let e = json(
        r#"{"urls": ["https://www.example.com/news/1.html?utm=x"],
            "dirs": ["https://www.example.com/news/"],
            "flush_type": "delete", "id": "cms-4711", "source": "cms-prod",
            "future_field": {"nested": [1, 2, {"x": null}]}}"#,
    )
    .unwrap();
    assert_eq!(e.urls, ["https://www.example.com/news/1.html?utm=x"]);
    assert_eq!(e.dirs, ["https://www.example.com/news/"]);
    assert_eq!(e.flush_type, FlushType::Delete);
    assert_eq!(e.id.as_deref(), Some("cms-4711"));
    assert_eq!(e.source.as_deref(), Some("cms-prod"));
}

#[test]
fn defaults_nulls_and_lenient_spellings() {
    let e = json(r#"{"urls": ["u"]}"#).unwrap();
    assert_eq!(e.flush_type, FlushType::Flush);
    assert_eq!((e.id, e.source), (None, None));
    let e =
        json(r#"{"urls": null, "dirs": ["d"], "flush_type": null, "id": null, "source": null}"#)
            .unwrap();
    assert_eq!((e.urls.len(), e.dirs.len()), (0, 1));
    assert_eq!(e.flush_type, FlushType::Flush);
    assert_eq!(
        json(r#"{"dirs":["d"],"flush_type":"Delete"}"#)
            .unwrap()
            .flush_type,
        FlushType::Delete
    );
    // Integer ids are stringified.
    assert_eq!(
        json(r#"{"urls":["u"],"id":4711}"#).unwrap().id.as_deref(),
        Some("4711")
    );
    assert_eq!(
        json(r#"{"urls":["u"],"id":-1}"#).unwrap().id.as_deref(),
        Some("-1")
    );
    // Escapes are decoded; a BOM is skipped.
    assert_eq!(json(r#"{"urls":["a\/b\u00e9"]}"#).unwrap().urls, ["a/bé"]);
    assert_eq!(json("\u{feff}{\"urls\":[\"u\"]}").unwrap().urls, ["u"]);
}

#[test]
fn content_types() {
    let body = br#"{"urls":["u"]}"#;
    for ct in [
        None,
        Some("application/json"),
        Some("Application/JSON"),
        Some("application/json; charset=utf-8"),
        Some(" application/json ;charset=UTF-8"),
        Some(""),
    ] {
        assert_eq!(decode(body, ct, MAX).unwrap().urls, ["u"], "{ct:?}");
    }
    assert_eq!(
        decode(b"u", Some("TEXT/PLAIN; charset=utf-8"), MAX)
            .unwrap()
            .urls,
        ["u"]
    );
    for ct in [
        "application/xml",
        "text/html",
        "application/octet-stream",
        "json",
    ] {
        let e = decode(body, Some(ct), MAX).unwrap_err();
        assert_eq!(e, EventError::UnsupportedContentType(ct.into()));
        assert_eq!(e.code(), "unsupported_content_type");
    }
}

#[test]
fn text_plain_one_url_per_line() {
    let body = "https://www.example.com/a\r\n\r\n   \n  https://www.example.com/b  \r\n\thttps://www.example.com/c";
    let e = decode(body.as_bytes(), TEXT, MAX).unwrap();
    assert_eq!(
        e.urls,
        [
            "https://www.example.com/a",
            "https://www.example.com/b",
            "https://www.example.com/c"
        ]
    );
    assert!(e.dirs.is_empty());
    assert_eq!(e.flush_type, FlushType::Flush);
    for empty in ["", "\n", " \r\n\t\r\n"] {
        assert_eq!(
            decode(empty.as_bytes(), TEXT, MAX),
            Err(EventError::Empty),
            "{empty:?}"
        );
    }
}

#[test]
fn too_large_is_checked_first() {
    // 5 MB of invalid bytes under an unsupported type: the size is what is reported.
    let body = vec![0xff; 5 * 1024 * 1024];
    let e = decode(&body, Some("application/zip"), DEFAULT_MAX_EVENT_BYTES).unwrap_err();
    assert_eq!(
        e,
        EventError::TooLarge {
            size: 5 * 1024 * 1024,
            max: 1 << 20
        }
    );
    assert_eq!(e.code(), "event_too_large");
    // Exactly at the limit is fine.
    let body = format!(r#"{{"urls":["{}"]}}"#, "a".repeat(100));
    assert!(decode(body.as_bytes(), None, body.len()).is_ok());
    assert!(matches!(
        decode(body.as_bytes(), None, body.len() - 1),
        Err(EventError::TooLarge { .. })
    ));
}

#[test]
fn invalid_utf8_reports_the_offset() {
    let mut body = br#"{"urls":["https://www.example.com/"#.to_vec();
    let at = body.len();
    body.extend_from_slice(b"\xe6\x96\"]}");
    let e = decode(&body, JSON, MAX).unwrap_err();
    assert_eq!(e, EventError::InvalidUtf8(at));
    assert_eq!(e.code(), "invalid_utf8");
    assert!(e.to_string().contains(&format!("offset {at}")));
    assert_eq!(
        decode(b"ok\n\xff", TEXT, MAX),
        Err(EventError::InvalidUtf8(3))
    );
}

#[test]
fn malformed_json() {
    for body in [
        "",
        "{",
        r#"{"urls": ["a",]}"#,
        r#"{"urls": ["a"]} trailing"#,
        "{urls: []}",
        "nope",
    ] {
        let e = json(body).unwrap_err();
        assert!(matches!(e, EventError::InvalidJson(_)), "{body:?}: {e:?}");
        assert_eq!(e.code(), "invalid_json");
    }
}

#[test]
fn not_an_object() {
    for body in [
        "[]",
        r#"["https://www.example.com/"]"#,
        "\"https://www.example.com/\"",
        "42",
        "1.5",
        "true",
        "null",
    ] {
        assert_invalid_event(body, "must be a JSON object");
    }
    // The refused value is not quoted back, however big.
    let big = format!("\"{}\"", "x".repeat(100_000));
    let e = json(&big).unwrap_err();
    assert!(e.to_string().len() < 200, "{e}");
}

#[test]
fn wrong_types_name_the_field() {
    for (body, says) in [
        (
            r#"{"urls": "https://www.example.com/"}"#,
            "`urls` must be an array of strings",
        ),
        (r#"{"urls": [1]}"#, "`urls` must be an array of strings"),
        (
            r#"{"urls": ["a", null]}"#,
            "`urls` must be an array of strings",
        ),
        (r#"{"urls": [["a"]]}"#, "`urls` must be an array of strings"),
        (
            r#"{"urls": {"a": 1}}"#,
            "`urls` must be an array of strings",
        ),
        (r#"{"urls": true}"#, "`urls` must be an array of strings"),
        (r#"{"dirs": 7}"#, "`dirs` must be an array of strings"),
        (
            r#"{"dirs": [{"url": "a"}]}"#,
            "`dirs` must be an array of strings",
        ),
        (
            r#"{"urls": ["a"], "flush_type": 1}"#,
            "`flush_type` must be a string",
        ),
        (
            r#"{"urls": ["a"], "flush_type": ["flush"]}"#,
            "`flush_type` must be a string",
        ),
        (
            r#"{"urls": ["a"], "id": 1.5}"#,
            "`id` must be a string or an integer",
        ),
        (
            r#"{"urls": ["a"], "id": {}}"#,
            "`id` must be a string or an integer",
        ),
        (
            r#"{"urls": ["a"], "id": false}"#,
            "`id` must be a string or an integer",
        ),
        (
            r#"{"urls": ["a"], "source": 3}"#,
            "`source` must be a string",
        ),
        (
            r#"{"urls": ["a"], "source": []}"#,
            "`source` must be a string",
        ),
        (
            r#"{"urls": ["a"], "urls": ["b"]}"#,
            "field `urls` appears twice",
        ),
    ] {
        assert_invalid_event(body, says);
    }
    // The position suffix of serde_json is not part of the reason.
    let e = json(r#"{"urls": 1}"#).unwrap_err();
    assert_eq!(
        e,
        EventError::InvalidEvent("`urls` must be an array of strings".into())
    );
}

#[test]
fn invalid_flush_type() {
    let e = json(r#"{"dirs": ["d"], "flush_type": "purge"}"#).unwrap_err();
    assert_eq!(e, EventError::InvalidFlushType("purge".into()));
    assert_eq!(e.code(), "invalid_flush_type");
}

#[test]
fn empty_events() {
    for body in [
        "{}",
        r#"{"urls":[]}"#,
        r#"{"dirs":[]}"#,
        r#"{"urls":[],"dirs":[]}"#,
        r#"{"urls":null}"#,
        r#"{"id":"x","source":"y"}"#,
    ] {
        let e = json(body).unwrap_err();
        assert_eq!(e, EventError::Empty, "{body}");
        assert_eq!(e.code(), "empty_event");
    }
}

#[test]
fn event_serializes_for_dead_letter_records() {
    let e = json(r#"{"urls":["u"],"flush_type":"delete","unknown":1}"#).unwrap();
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({"urls": ["u"], "dirs": [], "flush_type": "delete"})
    );
}

#[test]
fn validate_routes_good_items_and_rejects_bad_ones_in_order() {
    let e = json(
        r#"{"urls": ["https://www.example.com/a?utm=1", "ftp://www.example.com/a",
                     "https://a.img.example.com/x.png?v=2", "https://nowhere.org/", "/rel"],
            "dirs": ["https://WWW.example.com/news/", "https://img.example.com/", "https://a.img.example.com/d/"]}"#,
    )
    .unwrap();
    let (routed, rejected) = validate(&e, &router());
    let routed: Vec<(usize, Kind, &str)> = routed
        .iter()
        .map(|r| (r.provider, r.kind, r.key.as_str()))
        .collect();
    assert_eq!(
        routed,
        [
            (0, Kind::Url, "https://www.example.com/a"),
            (1, Kind::Url, "https://a.img.example.com/x.png?v=2"),
            (0, Kind::Dir, "https://www.example.com/news/"),
            (1, Kind::Dir, "https://a.img.example.com/d/"),
        ]
    );
    let rejected: Vec<(Kind, &str, &str)> = rejected
        .iter()
        .map(|r| (r.kind, r.raw.as_str(), r.error.code()))
        .collect();
    assert_eq!(
        rejected,
        [
            (Kind::Url, "ftp://www.example.com/a", "unsupported_scheme"),
            (Kind::Url, "https://nowhere.org/", "unknown_host"),
            (Kind::Url, "/rel", "invalid_url"),
            (Kind::Dir, "https://img.example.com/", "unknown_host"),
        ]
    );
}

#[test]
fn validate_text_plain_event() {
    let e = decode(
        b"https://www.example.com/a\nhttps://www.example.com/b?x\n",
        TEXT,
        MAX,
    )
    .unwrap();
    let (routed, rejected) = validate(&e, &router());
    assert!(rejected.is_empty());
    assert_eq!(routed.len(), 2);
    assert!(
        routed
            .iter()
            .all(|r| r.kind == Kind::Url && r.provider == 0)
    );
}
