//! The JSON event format: hand-written serde visitors, so that a wrong type is refused with a
//! sentence naming the field (never serde's generic message quoting the value back).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{Event, EventError, Priority};
use crate::cache_key::{CLIP, clip};
use crate::provider::{FlushType, Header, wangsu_rules};

/// Parses a JSON event. Syntax errors are `InvalidJson`; a well-formed document of the wrong shape
/// is `InvalidEvent`, with the reason our visitors wrote (naming the field).
pub(super) fn decode_json(text: &str) -> Result<Event, EventError> {
    let raw: RawEvent = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EventError::InvalidEvent(data_reason(&e)),
        _ => EventError::InvalidJson(clip(&e.to_string(), CLIP * 2).into_owned()),
    })?;
    let flush_type = match raw.flush_type {
        None => FlushType::default(),
        Some(s) => s
            .to_ascii_lowercase()
            .parse::<FlushType>()
            .ok()
            .ok_or_else(|| EventError::InvalidFlushType(clip(&s, CLIP).into_owned()))?,
    };
    let priority = match raw.priority {
        None => Priority::default(),
        Some(s) => Priority::parse(&s)
            .ok_or_else(|| EventError::InvalidPriority(clip(&s, CLIP).into_owned()))?,
    };
    let headers = match raw.headers {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(v) => headers(v)?,
    };
    Ok(Event {
        urls: raw.urls.unwrap_or_default(),
        dirs: raw.dirs.unwrap_or_default(),
        regex: raw.regex.unwrap_or_default(),
        headers,
        flush_type,
        id: raw.id,
        source: raw.source,
        priority,
    })
}

/// `headers`: `[{"name": "...", "value": "..."}, ...]`, names unique ignoring case. Names are
/// lower-cased and the list sorted by name, so the same set always forms the same lane.
fn headers(v: serde_json::Value) -> Result<Vec<Header>, EventError> {
    const SHAPE: &str =
        "`headers` must be an array of {\"name\": string, \"value\": string} objects";
    let serde_json::Value::Array(list) = v else {
        return Err(EventError::InvalidEvent(SHAPE.into()));
    };
    let mut out: Vec<Header> = Vec::with_capacity(list.len());
    for item in list {
        let serde_json::Value::Object(mut obj) = item else {
            return Err(EventError::InvalidEvent(SHAPE.into()));
        };
        let (Some(serde_json::Value::String(name)), Some(serde_json::Value::String(value))) =
            (obj.remove("name"), obj.remove("value"))
        else {
            return Err(EventError::InvalidEvent(SHAPE.into()));
        };
        if let Some(extra) = obj.keys().next() {
            return Err(EventError::InvalidHeaders(format!(
                "header objects take only `name` and `value`, not `{}`",
                clip(extra, CLIP)
            )));
        }
        wangsu_rules::check_header(&name, &value)
            .map_err(|r| EventError::InvalidHeaders(clip(&r, CLIP * 2).into_owned()))?;
        out.push(Header {
            name: name.to_ascii_lowercase(),
            value,
        });
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(EventError::InvalidHeaders(format!(
            "header `{}` is given twice",
            clip(&w[0].name, CLIP)
        )));
    }
    Ok(out)
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
    regex: Option<Vec<String>>,
    headers: Option<serde_json::Value>,
    flush_type: Option<String>,
    id: Option<String>,
    source: Option<String>,
    priority: Option<String>,
}

/// The event's fields; anything else is skipped.
enum Field {
    Urls,
    Dirs,
    Regex,
    Headers,
    FlushType,
    Id,
    Source,
    Priority,
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
                    "regex" => Field::Regex,
                    "headers" => Field::Headers,
                    "flush_type" => Field::FlushType,
                    "id" => Field::Id,
                    "source" => Field::Source,
                    "priority" => Field::Priority,
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
        "the event must be a JSON object with `urls`, `dirs` and/or `regex`"
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
        let mut seen = [false; 8];
        while let Some(field) = map.next_key::<Field>()? {
            let (slot, name) = match field {
                Field::Urls => (0, "urls"),
                Field::Dirs => (1, "dirs"),
                Field::FlushType => (2, "flush_type"),
                Field::Id => (3, "id"),
                Field::Source => (4, "source"),
                Field::Regex => (5, "regex"),
                Field::Headers => (6, "headers"),
                Field::Priority => (7, "priority"),
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
                Field::Regex => ev.regex = map.next_value_seed(StringList("regex"))?,
                Field::Headers => ev.headers = Some(map.next_value::<serde_json::Value>()?),
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
                Field::Priority => {
                    ev.priority = map.next_value_seed(OptText {
                        field: "priority",
                        integers: false,
                    })?
                }
                Field::Unknown => {}
            }
        }
        Ok(ev)
    }
}

/// `urls`, `dirs` or `regex`: an array of strings, or `null` for absent.
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
