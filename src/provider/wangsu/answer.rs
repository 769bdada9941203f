//! Wangsu answers as [`Receipt`]s or classified [`ProviderError`]s (PROVIDERS.md §3.3): the one
//! place HTTP statuses, `{code, message}` bodies and response headers become error classes.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::{QUOTA_CODE_HINTS, REQUEST_ID_HEADER, RETRY_AFTER_HEADER, TOO_MANY_ENTRIES_CODE};
use crate::provider::{ProviderError, Receipt, http, wangsu_rules};

/// A response header as text; `None` when absent or not visible ASCII.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Seconds the API asks us to wait: its own header first, then a standard `Retry-After` in
/// seconds (fractions rounded up).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    [RETRY_AFTER_HEADER, "retry-after"]
        .into_iter()
        .find_map(|name| http::parse_retry_after(header_text(headers, name)?))
}

/// The purge id: the last path segment of `Location` (absolute, or relative to the API).
fn purge_id(location: &str) -> Option<String> {
    let base = url::Url::parse("http://api.invalid/cdn/purges").ok()?;
    let url = base.join(location.trim()).ok()?;
    let id = url.path_segments()?.rev().find(|s| !s.is_empty())?;
    (id != "purges").then(|| id.to_string())
}

/// Turns an HTTP answer into a receipt or a classified error. `items` are the batch's items, so
/// an `InvalidPurgeUrl` naming one of them reports exactly that one.
pub(super) fn interpret(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    items: &[String],
) -> Result<Receipt, ProviderError> {
    let request_id = header_text(headers, REQUEST_ID_HEADER).map(str::to_string);
    if (200..300).contains(&status) {
        return match header_text(headers, "location").and_then(purge_id) {
            Some(task_id) => Ok(Receipt {
                task_id,
                request_id,
            }),
            None => Err(http::malformed(format!(
                "HTTP {status} without a Location naming the purge"
            ))),
        };
    }
    let error = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let code = v.get("code")?.as_str()?.to_string();
            let message = v
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string();
            Some((code, message))
        });
    match error {
        Some((code, message)) => Err(classify(status, code, message, headers, items)),
        None => Err(non_api_answer(status, headers)),
    }
}

/// An error status without the API's `{code, message}` body ([`http::non_api_answer`]), but
/// 401/403 keep their documented meaning (credentials) and 413 splits the batch. Never a 2xx:
/// those were read above.
fn non_api_answer(status: u16, headers: &HeaderMap) -> ProviderError {
    let code = format!("HttpStatus.{status}");
    match status {
        401 | 403 => ProviderError::Auth {
            code,
            message: format!("HTTP {status} without an API error body"),
        },
        413 => ProviderError::BatchTooLarge { code },
        _ => http::non_api_answer(
            status,
            retry_after(headers),
            "the API's {code, message} body",
        ),
    }
}

/// Whether a 4xx code reports a spent allowance (Wangsu documents no such code).
fn is_quota_code(code: &str) -> bool {
    let lower = code.to_ascii_lowercase();
    QUOTA_CODE_HINTS.iter().any(|hint| lower.contains(hint))
}

/// The one place Wangsu answers become [`ProviderError`] classes (PROVIDERS.md §3.3).
fn classify(
    status: u16,
    code: String,
    message: String,
    headers: &HeaderMap,
    items: &[String],
) -> ProviderError {
    match status {
        429 => ProviderError::RateLimited {
            code,
            retry_after: retry_after(headers),
        },
        401 | 403 => ProviderError::Auth { code, message },
        // The API's own 5xx refused the call before creating a purge.
        500..=599 => ProviderError::Transient {
            code,
            message,
            maybe_applied: false,
        },
        _ if is_quota_code(&code) => ProviderError::QuotaExhausted { code },
        413 => ProviderError::BatchTooLarge { code },
        _ if code == TOO_MANY_ENTRIES_CODE => ProviderError::BatchTooLarge { code },
        400..=499 => {
            let named = if code.starts_with("InvalidPurgeUrl") || code.starts_with("InvalidRegex") {
                named_items(&message, items)
            } else {
                None
            };
            ProviderError::InvalidItems {
                code,
                message,
                items: named,
            }
        }
        _ => ProviderError::Transient {
            code,
            message,
            maybe_applied: true,
        },
    }
}

/// The batch items an error message names: those quoted verbatim (`'…'`), else those on a quoted
/// host (the "host has not been deployed" form). `None` when it names none of them.
fn named_items(message: &str, items: &[String]) -> Option<Vec<String>> {
    let quoted = |s: &str| message.contains(&format!("'{s}'"));
    let exact: Vec<String> = items.iter().filter(|i| quoted(i)).cloned().collect();
    if !exact.is_empty() {
        return Some(exact);
    }
    let on_host: Vec<String> = items
        .iter()
        .filter(|i| item_host(i).is_some_and(|h| quoted(&h)))
        .cloned()
        .collect();
    (!on_host.is_empty()).then_some(on_host)
}

/// The host of a URL item or a regex pattern, lower-case.
fn item_host(item: &str) -> Option<String> {
    match url::Url::parse(item) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u.host_str().map(str::to_string),
        _ => wangsu_rules::regex_host(item),
    }
}

/// A status or prefetch answer: the JSON body (`null` when empty) of a 2xx, else the classified
/// error (404 `InvalidPurgeTaskId` included, as an item error).
pub(super) fn interpret_query(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, ProviderError> {
    if (200..300).contains(&status) {
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        return serde_json::from_slice(body)
            .map_err(|_| http::malformed(format!("HTTP {status} answer is not JSON")));
    }
    match interpret(status, headers, body, &[]) {
        Err(e) => Err(e),
        Ok(_) => Err(http::malformed(format!("HTTP {status}"))),
    }
}
