//! The create-purge body as the API reads and checks it (PROVIDERS.md §3.2): `target`, `action`,
//! per-call caps, every entry through [`wangsu_rules`], header names.

use serde::Deserialize;
use serde_json::Value;

use super::{Refusal, WangsuLimits};
use crate::emulator::WangsuRequest;
use crate::provider::wangsu::TOO_MANY_ENTRIES_CODE;
use crate::provider::{Header, wangsu_rules};

/// The create-purge body as received; unknown fields are ignored like the real API does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct CreateBody {
    target: Option<Value>,
    file_urls: Vec<String>,
    file_headers: Vec<Header>,
    dir_urls: Vec<String>,
    regex_patterns: Vec<String>,
    action: Option<String>,
    name: Option<String>,
    webhook: Option<String>,
}

impl CreateBody {
    pub(super) fn items(&self) -> Vec<String> {
        [&self.file_urls, &self.dir_urls, &self.regex_patterns]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// Checks a parsed body the way the API does and returns it as the record to keep (without the
/// purge id, which is given only on acceptance).
pub(super) fn validate(limits: &WangsuLimits, body: &CreateBody) -> Result<WangsuRequest, Refusal> {
    let target = match body.target.as_ref().and_then(Value::as_str) {
        Some(t @ ("production" | "staging")) => t.to_string(),
        Some(t) => {
            return Err(Refusal::bad(
                "InvalidTarget",
                format!("The target '{t}' is invalid; use 'production' or 'staging'."),
            ));
        }
        None => {
            return Err(Refusal::bad(
                "InvalidTarget",
                "The target is required: 'production' or 'staging'.",
            ));
        }
    };
    let action = match body.action.as_deref() {
        None => "invalidate",
        Some(a @ ("invalidate" | "delete")) => a,
        Some(a) => {
            return Err(Refusal::bad(
                "InvalidPurgeAction",
                format!("The action '{a}' is invalid; use 'invalidate' or 'delete'."),
            ));
        }
    };
    if body.file_urls.is_empty() && body.dir_urls.is_empty() && body.regex_patterns.is_empty() {
        return Err(Refusal::bad(
            "NoPurgeEntries",
            "At least one of fileUrls, dirUrls and regexPatterns must be given.",
        ));
    }
    for (list, n, cap) in [
        ("fileUrls", body.file_urls.len(), limits.files_per_call),
        ("dirUrls", body.dir_urls.len(), limits.dirs_per_call),
        (
            "regexPatterns",
            body.regex_patterns.len(),
            limits.regex_per_call,
        ),
    ] {
        if n > cap {
            return Err(Refusal::bad(
                TOO_MANY_ENTRIES_CODE,
                format!("{list} has {n} entries; at most {cap} are allowed in one request."),
            ));
        }
    }
    let url_checks = [
        (
            &body.file_urls,
            wangsu_rules::check_file_url as fn(&str) -> _,
        ),
        (&body.dir_urls, wangsu_rules::check_dir_url),
    ];
    for (list, check) in url_checks {
        for url in list {
            check(url).map_err(|why| {
                Refusal::bad(
                    "InvalidPurgeUrl",
                    format!("The purge URL '{url}' is invalid: {why}."),
                )
            })?;
        }
    }
    for pattern in &body.regex_patterns {
        wangsu_rules::check_regex(pattern).map_err(|why| {
            Refusal::bad(
                "InvalidRegexPattern",
                format!("The regex pattern '{pattern}' is invalid: {why}."),
            )
        })?;
    }
    let mut names: Vec<String> = Vec::with_capacity(body.file_headers.len());
    for h in &body.file_headers {
        wangsu_rules::check_header(&h.name, &h.value)
            .map_err(|why| Refusal::bad("InvalidFileHeader", format!("{why}.")))?;
        let lower = h.name.to_ascii_lowercase();
        if names.contains(&lower) {
            return Err(Refusal::bad(
                "DuplicateFileHeaderName",
                format!(
                    "The header name '{}' appears more than once in fileHeaders.",
                    h.name
                ),
            ));
        }
        names.push(lower);
    }
    Ok(WangsuRequest {
        purge_id: String::new(),
        file_urls: body.file_urls.clone(),
        dir_urls: body.dir_urls.clone(),
        regex_patterns: body.regex_patterns.clone(),
        file_headers: body.file_headers.clone(),
        action: action.to_string(),
        target,
        name: body.name.clone(),
        webhook: body.webhook.clone(),
    })
}
