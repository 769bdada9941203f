//! Dead-letter records (CONTRACT §3): `{"error": code, "reason": sentence, "event": ...}` with
//! headers `x-purge-error` and `x-purge-reason`, published with confirms before the source is
//! acked. An undecodable body is kept whole so nothing is lost: as JSON when it parses, as a
//! string when it is UTF-8, else base64 in `event_base64`.

use base64::Engine;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;
use serde_json::Value;

use crate::cache_key::{ItemError, clip};
use crate::coalesce::Origin;
use crate::event::{Event, EventError, RejectedItem};
use crate::provider::Kind;

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

    /// The AMQP body and properties (persistent, JSON, with the contract's headers).
    pub fn to_message(&self) -> (Vec<u8>, BasicProperties) {
        let body = serde_json::to_vec(self).unwrap_or_default();
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
}
