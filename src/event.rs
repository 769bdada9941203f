//! The wire format of purge events (CONTRACT §3): decoding and validation.
//!
//! Decoding never panics and never allocates more than the body's size: an oversized body is
//! refused before parsing. A refused event is dead-lettered as a whole; a decodable event is split
//! into valid [`RoutedItem`]s and refused [`RejectedItem`]s, so the valid rest is still purged.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cache_key::{self, CLIP, CacheKey, ItemError, clip};
use crate::provider::{FlushType, Kind};
use crate::routing::Router;

/// A decoded event. Unknown JSON fields are ignored (forward compatibility).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Event {
    /// File purges, as given.
    pub urls: Vec<String>,
    /// Directory purges, as given.
    pub dirs: Vec<String>,
    /// Applies to the directory purges (default `flush`).
    #[serde(serialize_with = "ser_flush")]
    pub flush_type: FlushType,
    /// Publisher's id, carried into logs and dead-letter records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Publisher's name, carried into logs and dead-letter records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

fn ser_flush<S: serde::Serializer>(f: &FlushType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.as_str())
}

/// Why a whole event was refused. `code()` is a bounded label set; `Display` is the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event body is {size} bytes; the limit is {max} (batching.max_event_bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("event body is not valid UTF-8 (invalid byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("event body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but not the event shape (wrong types, not an object, ...).
    #[error("event does not match the purge event format: {0}")]
    InvalidEvent(String),
    #[error("flush_type `{0}` is not `flush` or `delete`")]
    InvalidFlushType(String),
    #[error("event has no urls and no dirs")]
    Empty,
    #[error("content type `{0}` is not supported (use application/json or text/plain)")]
    UnsupportedContentType(String),
}

impl EventError {
    /// The dead-letter code.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::TooLarge { .. } => "event_too_large",
            EventError::InvalidUtf8(_) => "invalid_utf8",
            EventError::InvalidJson(_) => "invalid_json",
            EventError::InvalidEvent(_) => "invalid_event",
            EventError::InvalidFlushType(_) => "invalid_flush_type",
            EventError::Empty => "empty_event",
            EventError::UnsupportedContentType(_) => "unsupported_content_type",
        }
    }
}

/// A valid item, routed and normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedItem {
    /// Index into `Config::providers`.
    pub provider: usize,
    pub kind: Kind,
    pub key: CacheKey,
}

/// A refused item, with the text it arrived as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedItem {
    pub kind: Kind,
    pub raw: String,
    pub error: ItemError,
}

/// Decodes a body by content type: `application/json` (parameters such as `; charset=utf-8`
/// allowed) or none → JSON; `text/plain` → one URL per line (CRLF tolerated, blank lines ignored),
/// all `urls`. Size is checked first.
///
/// Checks run cheapest first: size, content type, UTF-8, then the parse. A leading UTF-8 byte
/// order mark is skipped (editors and some HTTP-to-AMQP bridges add one). JSON details:
/// - unknown fields are ignored and `null` means absent;
/// - `id` may be a string or an integer (`4711` becomes `"4711"`, since many CMSs number their
///   jobs); any other type for a field is refused with a reason naming the field;
/// - `flush_type` is matched case-insensitively (`Delete` is `delete`);
/// - a field given twice is refused rather than silently taking one of the values.
pub fn decode(
    body: &[u8],
    content_type: Option<&str>,
    max_bytes: usize,
) -> Result<Event, EventError> {
    if body.len() > max_bytes {
        return Err(EventError::TooLarge {
            size: body.len(),
            max: max_bytes,
        });
    }
    let format = Format::of(content_type)?;
    let text = std::str::from_utf8(body).map_err(|e| EventError::InvalidUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let event = match format {
        Format::Json => decode_json(text)?,
        Format::Text => Event {
            urls: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            ..Event::default()
        },
    };
    if event.urls.is_empty() && event.dirs.is_empty() {
        return Err(EventError::Empty);
    }
    Ok(event)
}

/// Splits a decoded event into valid routed items and refused ones, in event order (urls, then
/// dirs).
pub fn validate(event: &Event, router: &Router) -> (Vec<RoutedItem>, Vec<RejectedItem>) {
    let total = event.urls.len() + event.dirs.len();
    // Usually every item is good: size for that, and let a bad item grow the other vector.
    let mut routed = Vec::with_capacity(total);
    let mut rejected = Vec::new();
    let items = (event.urls.iter().map(|u| (Kind::Url, u)))
        .chain(event.dirs.iter().map(|d| (Kind::Dir, d)));
    for (kind, raw) in items {
        match cache_key::normalize(raw, router) {
            Ok((route, key)) => routed.push(RoutedItem {
                provider: route.provider,
                kind,
                key,
            }),
            Err(error) => rejected.push(RejectedItem {
                kind,
                raw: raw.clone(),
                error,
            }),
        }
    }
    (routed, rejected)
}

/// The body formats an event may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

impl Format {
    /// Media type only: parameters (`; charset=utf-8`) are ignored, case does not matter, and a
    /// missing or blank content type is JSON (CONTRACT §3).
    fn of(content_type: Option<&str>) -> Result<Format, EventError> {
        let Some(ct) = content_type else {
            return Ok(Format::Json);
        };
        let mime = ct.split_once(';').map_or(ct, |(mime, _)| mime).trim();
        if mime.is_empty() || mime.eq_ignore_ascii_case("application/json") {
            Ok(Format::Json)
        } else if mime.eq_ignore_ascii_case("text/plain") {
            Ok(Format::Text)
        } else {
            Err(EventError::UnsupportedContentType(
                clip(ct, CLIP).into_owned(),
            ))
        }
    }
}

/// Parses a JSON event. Syntax errors are `InvalidJson`; a well-formed document of the wrong shape
/// is `InvalidEvent`, with the reason our visitors wrote (naming the field).
fn decode_json(text: &str) -> Result<Event, EventError> {
    let raw: RawEvent = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EventError::InvalidEvent(data_reason(&e)),
        _ => EventError::InvalidJson(clip(&e.to_string(), CLIP * 2).into_owned()),
    })?;
    let flush_type = match raw.flush_type {
        None => FlushType::default(),
        Some(s) => FlushType::parse(&s.to_ascii_lowercase())
            .ok_or_else(|| EventError::InvalidFlushType(clip(&s, CLIP).into_owned()))?,
    };
    Ok(Event {
        urls: raw.urls.unwrap_or_default(),
        dirs: raw.dirs.unwrap_or_default(),
        flush_type,
        id: raw.id,
        source: raw.source,
    })
}

/// The message of a data error without serde_json's " at line L column C" suffix: the reason
/// already names the field, and the position of a one-line JSON body says little.
fn data_reason(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    clip(msg, CLIP * 2).into_owned()
}

/// The JSON event as sent, before `flush_type` is checked. Deserialized by hand (not derived) so a
/// wrong type yields "`urls` must be an array of strings" rather than serde's generic message,
/// which would also quote the offending value in full.
#[derive(Debug, Default)]
struct RawEvent {
    urls: Option<Vec<String>>,
    dirs: Option<Vec<String>>,
    flush_type: Option<String>,
    id: Option<String>,
    source: Option<String>,
}

/// The event's fields; anything else is skipped.
enum Field {
    Urls,
    Dirs,
    FlushType,
    Id,
    Source,
    Unknown,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "urls" => Field::Urls,
                    "dirs" => Field::Dirs,
                    "flush_type" => Field::FlushType,
                    "id" => Field::Id,
                    "source" => Field::Source,
                    _ => Field::Unknown,
                })
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

/// Generates `visit_*` methods that refuse a JSON type with the visitor's own sentence.
macro_rules! refuse {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        })*
    };
}

/// `null` as a JSON value, for the `refuse!` list.
macro_rules! refuse_null {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal()))
        }
    };
}

/// Arrays and objects, for the `refuse!` list; their contents are not read.
macro_rules! refuse_containers {
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(self.refusal()))
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(self.refusal()))
        }
    };
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EventVisitor)
    }
}

/// The top level: an object, or a sentence saying what it is instead.
struct EventVisitor;

impl EventVisitor {
    fn refusal(&self) -> &'static str {
        "the event must be a JSON object with `urls` and/or `dirs`"
    }
}

impl<'de> Visitor<'de> for EventVisitor {
    type Value = RawEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.refusal())
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
    refuse_null!();
    refuse_containers!(seq);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent, A::Error> {
        let mut ev = RawEvent::default();
        let mut seen = [false; 5];
        while let Some(field) = map.next_key::<Field>()? {
            let (slot, name) = match field {
                Field::Urls => (0, "urls"),
                Field::Dirs => (1, "dirs"),
                Field::FlushType => (2, "flush_type"),
                Field::Id => (3, "id"),
                Field::Source => (4, "source"),
                Field::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::custom(format_args!(
                    "field `{name}` appears twice"
                )));
            }
            match field {
                Field::Urls => ev.urls = map.next_value_seed(StringList("urls"))?,
                Field::Dirs => ev.dirs = map.next_value_seed(StringList("dirs"))?,
                Field::FlushType => {
                    ev.flush_type = map.next_value_seed(OptText {
                        field: "flush_type",
                        integers: false,
                    })?
                }
                Field::Id => {
                    ev.id = map.next_value_seed(OptText {
                        field: "id",
                        integers: true,
                    })?
                }
                Field::Source => {
                    ev.source = map.next_value_seed(OptText {
                        field: "source",
                        integers: false,
                    })?
                }
                Field::Unknown => {}
            }
        }
        Ok(ev)
    }
}

/// `urls` or `dirs`: an array of strings, or `null` for absent.
struct StringList(&'static str);

impl StringList {
    fn refusal(&self) -> String {
        format!("`{}` must be an array of strings", self.0)
    }
}

impl<'de> DeserializeSeed<'de> for StringList {
    type Value = Option<Vec<String>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringList {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.refusal())
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
    refuse_containers!(map);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The hint is bounded by what the body holds, and the body by max_event_bytes.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(OneString(self.0))? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// One element of `urls` or `dirs`; the error names the list.
struct OneString(&'static str);

impl OneString {
    fn refusal(&self) -> String {
        format!("`{}` must be an array of strings", self.0)
    }
}

impl<'de> DeserializeSeed<'de> for OneString {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OneString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.refusal())
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );
    refuse_null!();
    refuse_containers!(seq);
    refuse_containers!(map);

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

/// `flush_type`, `id`, `source`: a string (or, for `id`, an integer), or `null` for absent.
struct OptText {
    field: &'static str,
    integers: bool,
}

impl OptText {
    fn refusal(&self) -> String {
        if self.integers {
            format!("`{}` must be a string or an integer", self.field)
        } else {
            format!("`{}` must be a string", self.field)
        }
    }

    fn integer<E: de::Error>(self, v: impl ToString) -> Result<Option<String>, E> {
        if self.integers {
            Ok(Some(v.to_string()))
        } else {
            Err(E::custom(self.refusal()))
        }
    }
}

impl<'de> DeserializeSeed<'de> for OptText {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for OptText {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.refusal())
    }

    refuse!(visit_bool(bool), visit_f64(f64));
    refuse_containers!(seq);
    refuse_containers!(map);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.integer(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.integer(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;
    use crate::config::{Config, DEFAULT_MAX_EVENT_BYTES};

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

    fn router() -> Router {
        let config = Config::from_raw(
            toml::from_str(
                r#"
                [[providers]]
                name = "main"
                kind = "tencent-v3"
                secret_id = "AKID"
                secret_key = "k"
                  [[providers.domains]]
                  host = "www.example.com"
                  ignore_query = true
                [[providers]]
                name = "img"
                kind = "tencent-v3"
                secret_id = "AKID"
                secret_key = "k"
                  [[providers.domains]]
                  host = "*.img.example.com"
                "#,
            )
            .expect("test TOML parses"),
        )
        .expect("test config is valid");
        Router::new(&config.providers)
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
        let e = json(
            r#"{"urls": null, "dirs": ["d"], "flush_type": null, "id": null, "source": null}"#,
        )
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
}
