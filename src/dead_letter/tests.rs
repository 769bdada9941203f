//! Dead-letter records: shapes, clipping under the cap, and what a record names.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn undecodable_bodies_are_kept_whole() {
    let d = DeadLetter::for_event(&EventError::InvalidUtf8(1), b"\xff\xfe");
    assert_eq!(d.event, Value::Null);
    assert_eq!(d.event_base64.as_deref(), Some("//4="));
    let d = DeadLetter::for_event(&EventError::InvalidJson("x".into()), b"{nope");
    assert_eq!(d.event, Value::String("{nope".into()));
    let (body, props) = d.to_message();
    let back: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(back["error"], "invalid_json");
    assert!(
        props
            .headers()
            .as_ref()
            .unwrap()
            .contains_key("x-purge-reason")
    );
}

#[test]
fn records_name_their_event_for_logs() {
    let body = br#"{"id": "cms-4711", "source": "cms-prod", "urls": []}"#;
    let d = DeadLetter::for_event(&EventError::InvalidJson("x".into()), body);
    assert_eq!(d.event_id(), Some("cms-4711"));
    assert_eq!(d.event_source(), Some("cms-prod"));
    let d = DeadLetter::for_event(&EventError::InvalidJson("x".into()), b"{nope");
    assert_eq!((d.event_id(), d.event_source()), (None, None));
    let d = DeadLetter::for_event(&EventError::InvalidJson("x".into()), br#"{"id": 7}"#);
    assert_eq!(d.event_id(), None, "only a string id is an event id");
}

fn parsed(d: &DeadLetter, max: usize) -> Value {
    let (body, _) = d.to_message_within(max);
    assert!(body.len() <= max, "{} bytes over the cap {max}", body.len());
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn records_under_the_cap_keep_their_shape() {
    let body = br#"{"id": "a", "urls": ["x"]}"#;
    let d = DeadLetter::for_event(&EventError::InvalidJson("x".into()), body);
    let v = parsed(&d, MIN_MAX_BYTES);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "at",
            "content_type",
            "error",
            "event",
            "id",
            "priority",
            "reason",
            "replayable"
        ]
    );
    assert_eq!(v["event"]["id"], "a");
    assert_eq!(
        v["replayable"], false,
        "an undecodable event cannot be replayed"
    );
    assert_eq!(v["priority"], "interactive");
}

#[test]
fn oversize_records_carry_a_prefix_size_and_digest() {
    // Quotes and control characters grow under JSON escaping: the cap still holds.
    let text: String = (0..100_000)
        .map(|i| ['a', '"', '\u{1}', '新'][i % 4])
        .collect();
    let d = DeadLetter::for_event(&EventError::InvalidJson("x".into()), text.as_bytes());
    let v = parsed(&d, MIN_MAX_BYTES);
    assert_eq!(v["replayable"], false);
    assert_eq!(v["error"], "invalid_json");
    let c = &v["clipped"];
    assert_eq!(c["of"], "body");
    assert_eq!(c["size_bytes"], text.len());
    assert_eq!(c["sha256"], hex::encode(Sha256::digest(text.as_bytes())));
    let prefix = v["event"].as_str().unwrap();
    assert!(
        prefix.len() > 500,
        "a useful prefix is kept: {}",
        prefix.len()
    );
    assert!(text.starts_with(prefix));
    assert_eq!(c["kept_bytes"], prefix.len());
}

#[test]
fn hostile_records_stay_under_the_cap() {
    let binary: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    let d = DeadLetter::for_event(&EventError::InvalidUtf8(1), &binary);
    let v = parsed(&d, MIN_MAX_BYTES);
    assert_eq!(v["clipped"]["size_bytes"], binary.len());
    assert!(v.get("event_base64").is_none());

    let event = Event {
        urls: Vec::new(),
        dirs: Vec::new(),
        regex: Vec::new(),
        headers: Vec::new(),
        flush_type: Default::default(),
        priority: Default::default(),
        id: Some("many".into()),
        source: None,
    };
    let rejected: Vec<RejectedItem> = (0..2000)
        .map(|i| RejectedItem {
            kind: Kind::Url,
            raw: format!("ftp://www.example.com/{i}/{}", "\"".repeat(300)),
            error: ItemError::UnsupportedScheme("ftp".into()),
        })
        .collect();
    let records = DeadLetter::for_rejected(&event, &rejected);
    let v = parsed(&records[0], 64 * 1024);
    assert_eq!(v["clipped"]["of"], "event");
    let kept = v["items"].as_array().unwrap().len();
    assert!(kept > 0, "some item details are kept");
    assert_eq!(v["clipped"]["items_dropped"], 2000 - kept);
}

#[test]
fn json_prefix_never_splits_a_character() {
    let s = "新闻新闻";
    assert_eq!(json_prefix(s.as_bytes(), 7), ("新闻".to_string(), 6));
    assert_eq!(json_prefix(s.as_bytes(), 4), ("新".to_string(), 3));
    let broken = &s.as_bytes()[..4];
    assert_eq!(json_prefix(broken, 10), ("新\u{FFFD}".to_string(), 4));
    assert_eq!(json_prefix(b"a\xffb", 10), ("a\u{FFFD}b".to_string(), 3));
    assert_eq!(json_prefix(b"\"\"\"", 5), ("\"\"".to_string(), 2));
}
