//! The wire format of purge events (CONTRACT §3): decoding and validation.
//!
//! Decoding never panics and never allocates more than the body's size: an oversized body is
//! refused before parsing. A refused event is dead-lettered as a whole; a decodable event is split
//! into valid [`RoutedItem`]s and refused [`RejectedItem`]s, so the valid rest is still purged.

mod json;

use serde::Serialize;

use self::json::decode_json;
use crate::cache_key::{self, CLIP, CacheKey, ItemError, clip};
use crate::provider::{FlushType, Header, Kind, UrlRules, wangsu_rules};
use crate::routing::{Route, Router};

/// Largest event body accepted unless `batching.max_event_bytes` says otherwise; larger ones are
/// dead-lettered (`event_too_large`).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// A decoded event. Unknown JSON fields are ignored (forward compatibility).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Event {
    /// File purges, as given.
    pub urls: Vec<String>,
    /// Directory purges, as given (wildcards `*`, `**` for wangsu hosts).
    pub dirs: Vec<String>,
    /// Cache-key regex purges `{http|https|any}://{host}/…` (wangsu hosts only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regex: Vec<String>,
    /// Request headers the `urls` are cached under (wangsu `fileHeaders`); lower-case names,
    /// sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// Applies to the directory purges (default `flush`).
    #[serde(serialize_with = "ser_flush")]
    pub flush_type: FlushType,
    /// Publisher's id, carried into logs and dead-letter records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Publisher's name, carried into logs and dead-letter records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The event's class (CONTRACT §3): `interactive` unless it says `bulk` or was consumed from
    /// `amqp.bulk_queue` (the consumer sets that). Written out only when bulk, so parked and
    /// dead-lettered copies of bulk items come back as bulk.
    #[serde(skip_serializing_if = "Priority::is_interactive")]
    pub priority: Priority,
}

/// Which class an event's items belong to. Interactive items (editors, CMS publishes) go first
/// into every call and may spend the whole quota; bulk items (re-indexes, `publish --file`) fill
/// what is left and stop at `limit × (1 − interactive_reserve)`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Someone waits for it: first into every call, may spend the reserve.
    #[default]
    Interactive,
    /// A job: fills what interactive items leave, never spends the reserve.
    Bulk,
}

impl Priority {
    /// Both classes, interactive first (the order calls are filled in).
    pub const ALL: [Priority; 2] = [Priority::Interactive, Priority::Bulk];

    /// The wire and label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Bulk => "bulk",
        }
    }

    /// Parses the wire spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<Priority> {
        if s.eq_ignore_ascii_case("interactive") {
            Some(Priority::Interactive)
        } else if s.eq_ignore_ascii_case("bulk") {
            Some(Priority::Bulk)
        } else {
            None
        }
    }

    /// `0` for interactive, `1` for bulk (array index).
    pub fn index(self) -> usize {
        self as usize
    }

    fn is_interactive(&self) -> bool {
        *self == Priority::Interactive
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// An event carrying `items` of one kind (for dead-letter records and parked items), with
    /// `headers` on file purges.
    pub fn of_kind(
        kind: Kind,
        flush_type: FlushType,
        items: Vec<String>,
        headers: &[Header],
        id: Option<String>,
        source: Option<String>,
    ) -> Event {
        let mut event = Event {
            flush_type,
            id,
            source,
            ..Event::default()
        };
        match kind {
            Kind::Url => {
                event.urls = items;
                event.headers = headers.to_vec();
            }
            Kind::Dir => event.dirs = items,
            Kind::Regex => event.regex = items,
        }
        event
    }
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
    #[error("priority `{0}` is not `interactive` or `bulk`")]
    InvalidPriority(String),
    #[error("event has no urls, dirs or regex")]
    Empty,
    #[error("event headers are invalid: {0}")]
    InvalidHeaders(String),
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
            EventError::InvalidPriority(_) => "invalid_priority",
            EventError::Empty => "empty_event",
            EventError::InvalidHeaders(_) => "invalid_headers",
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
    /// The domain's `dir_escalation` for a file purge (0 = never escalated; always 0 for
    /// directories and regex).
    pub escalate: u32,
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
    if event.urls.is_empty() && event.dirs.is_empty() && event.regex.is_empty() {
        return Err(EventError::Empty);
    }
    Ok(event)
}

/// Splits a decoded event into valid routed items and refused ones, in event order (urls, dirs,
/// then regex). Beyond being a routable URL, an item must be something its provider's API takes:
/// wildcards, regex and headers only where the provider has them, and a wangsu URL by wangsu's
/// rules (special characters it wants encoded are encoded here).
pub fn validate(event: &Event, router: &Router) -> (Vec<RoutedItem>, Vec<RejectedItem>) {
    let total = event.urls.len() + event.dirs.len() + event.regex.len();
    // Usually every item is good: size for that, and let a bad item grow the other vector.
    let mut routed = Vec::with_capacity(total);
    let mut rejected = Vec::new();
    let headers = !event.headers.is_empty();
    let items = (event.urls.iter().map(|u| (Kind::Url, u)))
        .chain(event.dirs.iter().map(|d| (Kind::Dir, d)))
        .chain(event.regex.iter().map(|r| (Kind::Regex, r)));
    for (kind, raw) in items {
        let checked = match kind {
            Kind::Regex => route_regex(raw, router).map(|(p, k)| (p, k, 0)),
            Kind::Url | Kind::Dir => cache_key::normalize(raw, router)
                .and_then(|(route, key)| fit_provider(kind, headers, route, key)),
        };
        match checked {
            Ok((provider, key, escalate)) => routed.push(RoutedItem {
                provider,
                kind,
                key,
                escalate,
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

/// Validates one URL (file purge, no headers) exactly as [`validate`] does for an event's
/// `urls`: its provider, cache key and the domain's `dir_escalation`. For `purge-worker plan`.
pub fn route_url(raw: &str, router: &Router) -> Result<(usize, CacheKey, u32), ItemError> {
    cache_key::normalize(raw, router)
        .and_then(|(route, key)| fit_provider(Kind::Url, false, route, key))
}

/// Routes a regex pattern by its host and checks it by the rules of its provider.
fn route_regex(raw: &str, router: &Router) -> Result<(usize, CacheKey), ItemError> {
    let check = |r: Result<(), String>| {
        r.map_err(|e| ItemError::InvalidRegex(clip(&e, CLIP * 2).into_owned()))
    };
    let Some(host) = wangsu_rules::regex_host(raw) else {
        check(wangsu_rules::check_regex(raw))?;
        return Err(ItemError::InvalidRegex("the pattern names no host".into()));
    };
    let Some(route) = router.route(&host) else {
        return Err(ItemError::UnknownHost(clip(&host, CLIP).into_owned()));
    };
    if !route.caps.regex {
        return Err(ItemError::RegexUnsupported(route.api));
    }
    check(wangsu_rules::check_regex(raw))?;
    Ok((route.provider, CacheKey::from_normalized(raw)))
}

/// Checks a normalized URL item against what its provider's API takes.
fn fit_provider(
    kind: Kind,
    headers: bool,
    route: Route,
    key: CacheKey,
) -> Result<(usize, CacheKey, u32), ItemError> {
    let provider = route.provider;
    // Header lanes never escalate: a directory purge carries no request headers.
    let escalate = if kind == Kind::Url && !headers {
        route.dir_escalation
    } else {
        0
    };
    if kind == Kind::Dir && !route.caps.wildcards && wangsu_rules::has_wildcard(key.as_str()) {
        return Err(ItemError::WildcardUnsupported(route.api));
    }
    if kind == Kind::Url && headers && !route.caps.headers {
        return Err(ItemError::HeadersUnsupported(route.api));
    }
    if route.caps.url_rules == UrlRules::Plain {
        return Ok((provider, key, escalate));
    }
    let key = match wangsu_rules::encode_specials(key.as_str()) {
        std::borrow::Cow::Borrowed(_) => key,
        std::borrow::Cow::Owned(s) => CacheKey::from_normalized(&s),
    };
    let rule = match kind {
        Kind::Url => wangsu_rules::check_file_url(key.as_str()),
        Kind::Dir | Kind::Regex => wangsu_rules::check_dir_url(key.as_str()),
    };
    rule.map_err(|e| ItemError::RefusedByProviderRules(clip(&e, CLIP * 2).into_owned()))?;
    Ok((provider, key, escalate))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests_kinds;
