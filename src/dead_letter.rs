//! Dead-letter records (CONTRACT §3): `{"error": code, "reason": sentence, "event": ...}` with
//! headers `x-purge-error` and `x-purge-reason`, published with confirms before the source is
//! acked. An undecodable body is kept whole so nothing is lost: as JSON when it parses, as a
//! string when it is UTF-8, else base64 in `event_base64`.
//!
//! A record is capped (`amqp.dead_letter_max_bytes`): one over the cap would be refused by the
//! broker (`max_message_size`, 406) and would close the publish channel. Such a record carries
//! instead a prefix of its event as a JSON string, the original's size and sha256, and
//! `"replayable": false`, so an operator can tell it apart and find the original by its digest.

use std::borrow::Cow;

use base64::Engine;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache_key::{ItemError, clip};
use crate::coalesce::Origin;
use crate::event::{Event, EventError, RejectedItem};
use crate::provider::Kind;

/// Largest record body by default (1 MiB): far under RabbitMQ's default `max_message_size`
/// (128 MiB), and still enough for any event up to `batching.max_event_bytes`' default.
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// Smallest cap accepted: a clipped record's fixed part (code, reason, digest) must fit.
pub const MIN_MAX_BYTES: usize = 4096;
/// Largest cap accepted (64 MiB): half the broker's default message size limit.
pub const MAX_MAX_BYTES: usize = 64 << 20;
/// Characters of the reason a clipped record keeps, so its fixed part always fits the cap.
const CLIPPED_REASON_CHARS: usize = 300;

/// One dead-letter record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Bounded code: our own (`invalid_json`, `unknown_host`, ...) or `provider_rejected`.
    pub error: String,
    /// A sentence for humans.
    pub reason: String,
    /// The original event, or an event holding only the bad items.
    pub event: Value,
    /// The original body in base64 when it was not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_base64: Option<String>,
    /// The provider's own error code, for items the provider refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    /// The provider (config name) that refused the items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Per-item detail when several items are reported together.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemDetail>,
    /// `Some(false)` when the record holds only a clipped copy of its event; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replayable: Option<bool>,
    /// What was cut from a record over the size cap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clipped: Option<Clipped>,
    /// The message body as received, when the record is about a whole delivery: a clipped
    /// record's size and digest then name exactly what the publisher sent.
    #[serde(skip)]
    body: Option<Vec<u8>>,
}

/// The part of a clipped record that says what is missing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clipped {
    /// `body` (the message as received) or `event` (the record's event as compact JSON).
    pub of: &'static str,
    /// Size of the original in bytes.
    pub size_bytes: usize,
    /// SHA-256 of the original, lowercase hex.
    pub sha256: String,
    /// Bytes of the original kept as the `event` string (a prefix).
    pub kept_bytes: usize,
    /// Item details left out to stay under the cap.
    #[serde(skip_serializing_if = "is_zero")]
    pub items_dropped: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why one item was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemDetail {
    pub item: String,
    pub reason: String,
}

impl DeadLetter {
    /// A whole event refused before any item was looked at.
    pub fn for_event(err: &EventError, body: &[u8]) -> DeadLetter {
        let (event, event_base64) = match std::str::from_utf8(body) {
            Ok(text) => (
                serde_json::from_str::<Value>(text)
                    .unwrap_or_else(|_| Value::String(text.to_string())),
                None,
            ),
            Err(_) => (
                Value::Null,
                Some(base64::engine::general_purpose::STANDARD.encode(body)),
            ),
        };
        DeadLetter {
            error: err.code().to_string(),
            reason: err.to_string(),
            event,
            event_base64,
            provider_code: None,
            provider: None,
            items: Vec::new(),
            replayable: None,
            clipped: None,
            body: Some(body.to_vec()),
        }
    }

    /// The refused items of an otherwise good event, grouped by error code: one record per code.
    pub fn for_rejected(event: &Event, rejected: &[RejectedItem]) -> Vec<DeadLetter> {
        let mut codes: Vec<&'static str> = rejected.iter().map(|r| r.error.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        codes
            .into_iter()
            .map(|code| {
                let mine: Vec<&RejectedItem> =
                    rejected.iter().filter(|r| r.error.code() == code).collect();
                let pick = |k: Kind| -> Vec<String> {
                    mine.iter()
                        .filter(|r| r.kind == k)
                        .map(|r| r.raw.clone())
                        .collect()
                };
                let urls = pick(Kind::Url);
                let bad = Event {
                    headers: if urls.is_empty() {
                        Vec::new()
                    } else {
                        event.headers.clone()
                    },
                    urls,
                    dirs: pick(Kind::Dir),
                    regex: pick(Kind::Regex),
                    flush_type: event.flush_type,
                    priority: event.priority,
                    id: event.id.clone(),
                    source: event.source.clone(),
                };
                let reason = summarize(&mine.iter().map(|r| &r.error).collect::<Vec<_>>());
                DeadLetter {
                    error: code.to_string(),
                    reason,
                    event: serde_json::to_value(&bad).unwrap_or(Value::Null),
                    event_base64: None,
                    provider_code: None,
                    provider: None,
                    items: mine
                        .iter()
                        .map(|r| ItemDetail {
                            item: clip(&r.raw, 2048).into_owned(),
                            reason: r.error.to_string(),
                        })
                        .collect(),
                    replayable: None,
                    clipped: None,
                    body: None,
                }
            })
            .collect()
    }

    /// Items of one lane a provider refused permanently.
    pub fn for_provider(
        provider: &str,
        lane: &crate::coalesce::LaneKey,
        items: &[String],
        origin: &Origin,
        code: &str,
        message: &str,
    ) -> DeadLetter {
        let bad = Event::of_kind(
            lane.kind,
            lane.flush,
            items.to_vec(),
            lane.headers(),
            origin.id.clone(),
            origin.source.clone(),
        );
        DeadLetter {
            error: "provider_rejected".into(),
            reason: format!(
                "provider `{provider}` refused {} {}: {code}: {}",
                items.len(),
                if items.len() == 1 { "item" } else { "items" },
                clip(message, 300)
            ),
            event: serde_json::to_value(&bad).unwrap_or(Value::Null),
            event_base64: None,
            provider_code: Some(code.to_string()),
            provider: Some(provider.to_string()),
            items: Vec::new(),
            replayable: None,
            clipped: None,
            body: None,
        }
    }

    /// The `id` of the event this record holds, for log lines (`event_id`), when it has one.
    pub fn event_id(&self) -> Option<&str> {
        self.event.get("id").and_then(Value::as_str)
    }

    /// The `source` of the event this record holds, for log lines (`event_source`).
    pub fn event_source(&self) -> Option<&str> {
        self.event.get("source").and_then(Value::as_str)
    }

    /// The AMQP body and properties under the default cap ([`DEFAULT_MAX_BYTES`]).
    pub fn to_message(&self) -> (Vec<u8>, BasicProperties) {
        self.to_message_within(DEFAULT_MAX_BYTES)
    }

    /// The AMQP body and properties (persistent, JSON, with the contract's headers), the body at
    /// most `max_bytes` (at least [`MIN_MAX_BYTES`]): over it, the record is [`Self::clip_to`].
    pub fn to_message_within(&self, max_bytes: usize) -> (Vec<u8>, BasicProperties) {
        let mut body = serde_json::to_vec(self).unwrap_or_default();
        if body.len() > max_bytes {
            body = serde_json::to_vec(&self.clip_to(max_bytes)).unwrap_or_default();
        }
        let mut headers = FieldTable::default();
        headers.insert(
            "x-purge-error".into(),
            AMQPValue::LongString(LongString::from(self.error.clone())),
        );
        headers.insert(
            "x-purge-reason".into(),
            AMQPValue::LongString(LongString::from(clip(&self.reason, 1000).into_owned())),
        );
        if let Some(code) = &self.provider_code {
            headers.insert(
                "x-purge-provider-code".into(),
                AMQPValue::LongString(LongString::from(code.clone())),
            );
        }
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        (body, props)
    }
}

impl DeadLetter {
    /// This record with its event replaced by a prefix (a JSON string) sized so that the whole
    /// record serializes to at most `max_bytes`, plus the original's size and sha256. Item
    /// details are kept while they fill at most a quarter of the cap.
    pub fn clip_to(&self, max_bytes: usize) -> DeadLetter {
        let (of, original): (_, Cow<'_, [u8]>) = match &self.body {
            Some(b) => ("body", Cow::Borrowed(b)),
            None => (
                "event",
                Cow::Owned(serde_json::to_vec(&self.event).unwrap_or_default()),
            ),
        };
        let mut out = DeadLetter {
            error: self.error.clone(),
            reason: clip(&self.reason, CLIPPED_REASON_CHARS).into_owned(),
            event: Value::String(String::new()),
            event_base64: None,
            provider_code: self
                .provider_code
                .as_deref()
                .map(|c| clip(c, 100).into_owned()),
            provider: self.provider.clone(),
            items: Vec::new(),
            replayable: Some(false),
            clipped: Some(Clipped {
                of,
                size_bytes: original.len(),
                sha256: hex::encode(Sha256::digest(&original)),
                kept_bytes: 0,
                items_dropped: 0,
            }),
            body: None,
        };
        let mut items_len = 0;
        for item in &self.items {
            items_len += serde_json::to_vec(item).map(|b| b.len() + 1).unwrap_or(0);
            if items_len > max_bytes / 4 {
                break;
            }
            out.items.push(item.clone());
        }
        let dropped = self.items.len() - out.items.len();
        // Room left for the prefix; the slack covers the digits `kept_bytes` and
        // `items_dropped` gain once filled in.
        let fixed = serde_json::to_vec(&out)
            .map(|b| b.len())
            .unwrap_or(max_bytes)
            + 48;
        let (prefix, kept) = json_prefix(&original, max_bytes.saturating_sub(fixed));
        out.event = Value::String(prefix);
        if let Some(c) = &mut out.clipped {
            c.kept_bytes = kept;
            c.items_dropped = dropped;
        }
        out
    }
}

/// The longest prefix of `original` whose JSON string form (without quotes) fits `budget`
/// bytes, and how many bytes of `original` it covers. Invalid UTF-8 shows as U+FFFD; a
/// character cut by the budget is left out rather than shown broken.
fn json_prefix(original: &[u8], budget: usize) -> (String, usize) {
    let head = &original[..original.len().min(budget)];
    let (mut out, mut used, mut kept) = (String::new(), 0, 0);
    for chunk in head.utf8_chunks() {
        for c in chunk.valid().chars() {
            let cost = match c {
                '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
                c if (c as u32) < 0x20 => 6,
                c => c.len_utf8(),
            };
            if used + cost > budget {
                return (out, kept);
            }
            out.push(c);
            used += cost;
            kept += c.len_utf8();
        }
        let bad = chunk.invalid();
        let cut_at_end = kept + bad.len() == head.len() && head.len() < original.len();
        if bad.is_empty() {
            continue;
        }
        if cut_at_end || used + 3 > budget {
            break;
        }
        out.push('\u{FFFD}');
        used += 3;
        kept += bad.len();
    }
    (out, kept)
}

/// "3 items refused: <first reason> (and 2 more)".
fn summarize(errors: &[&ItemError]) -> String {
    match errors {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!(
            "{} items refused: {first} (and {} more)",
            rest.len() + 1,
            rest.len()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
        assert_eq!(keys, ["error", "event", "reason"]);
        assert_eq!(v["event"]["id"], "a");
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
            id: Some("many".into()),
            source: None,
            priority: Default::default(),
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
}
