//! The pure part of `purge-worker plan`: reads a bulk job line by line (bounded memory per
//! line) and counts, per provider, the distinct cache keys the worker would form, the calls and
//! the quota units with and without directory escalation. No I/O beyond the reader.

use std::collections::HashMap;
use std::io::BufRead;

use serde::Serialize;

use crate::cache_key::{CLIP, CacheKey, ItemError, MAX_URL_LEN, clip};
use crate::coalesce::escalate;
use crate::config::ProviderConfig;
use crate::event::route_url;
use crate::purge::Kind;
use crate::routing::Router;

/// How many invalid lines are quoted with their reason.
pub const FIRST_REASONS: usize = 5;

/// The longest line read into memory: longer ones are skipped to their end and refused as too
/// long (a file with no newline at all must not be read whole).
const MAX_LINE: usize = MAX_URL_LEN + 64;

/// One refused line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvalidLine {
    /// 1-based line number.
    pub line: u64,
    /// The dead-letter code the worker would give it (`invalid_url`, `unknown_host`, ...).
    pub code: &'static str,
    pub reason: String,
}

/// What a job holds for one provider, before quota is looked at.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Demand {
    pub provider: String,
    /// Valid lines routed to this provider.
    pub lines: u64,
    /// Distinct cache keys after normalization and dedupe.
    pub distinct_keys: u64,
    /// Quota units and calls with every key purged as a URL.
    pub plain: Units,
    /// Quota units and calls with directory escalation (as `plain` where no domain escalates).
    pub escalated: Units,
}

/// Quota units and calls of one way to purge a provider's keys.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Units {
    pub url_units: u64,
    pub dir_units: u64,
    /// URLs replaced by the directory purges.
    pub replaced_urls: u64,
    pub calls: u64,
}

/// The whole job: line counts and one [`Demand`] per configured provider, in config order.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tally {
    /// Every line read, blank ones included.
    pub lines: u64,
    /// Empty or whitespace-only lines (skipped, as `publish --file` skips them).
    pub blank: u64,
    pub invalid: u64,
    /// The first [`FIRST_REASONS`] invalid lines.
    pub first_invalid: Vec<InvalidLine>,
    pub providers: Vec<Demand>,
}

/// Reads `reader` to its end and tallies it against `providers` (the worker's routing and
/// normalization). Fails only on a read error.
pub fn tally(reader: &mut impl BufRead, providers: &[ProviderConfig]) -> std::io::Result<Tally> {
    let router = Router::new(providers.iter().map(ProviderConfig::routes));
    // Per provider: lines, and each distinct key with its domain's escalation threshold.
    type Keys = HashMap<CacheKey, u32, foldhash::fast::RandomState>;
    let mut per: Vec<(u64, Keys)> = providers.iter().map(|_| (0, Keys::default())).collect();
    let (mut lines, mut blank, mut invalid) = (0u64, 0u64, 0u64);
    let mut first_invalid = Vec::new();
    let mut buf = Vec::with_capacity(256);
    while let Some(len) = next_line(reader, &mut buf)? {
        lines += 1;
        let checked = if len > buf.len() {
            Err(ItemError::TooLong(len))
        } else {
            match std::str::from_utf8(&buf) {
                Ok(s) if s.trim().is_empty() => {
                    blank += 1;
                    continue;
                }
                Ok(s) => route_url(s.trim(), &router),
                Err(_) => Err(ItemError::InvalidUrl(format!(
                    "`{}` is not UTF-8",
                    clip(&String::from_utf8_lossy(&buf), CLIP)
                ))),
            }
        };
        match checked {
            Ok((provider, key, threshold)) => {
                let (n, keys) = &mut per[provider];
                *n += 1;
                keys.entry(key).or_insert(threshold);
            }
            Err(e) => {
                invalid += 1;
                if first_invalid.len() < FIRST_REASONS {
                    first_invalid.push(InvalidLine {
                        line: lines,
                        code: e.code(),
                        reason: e.to_string(),
                    });
                }
            }
        }
    }
    let providers = providers
        .iter()
        .zip(per)
        .map(|(p, (n, keys))| demand(p, n, &keys))
        .collect();
    Ok(Tally {
        lines,
        blank,
        invalid,
        first_invalid,
        providers,
    })
}

/// One provider's demand from its distinct keys.
fn demand(
    p: &ProviderConfig,
    lines: u64,
    keys: &HashMap<CacheKey, u32, impl std::hash::BuildHasher>,
) -> Demand {
    let distinct = keys.len() as u64;
    let calls = |units: u64, kind: Kind| units.div_ceil(p.per_call(kind).max(1) as u64);
    let plain = Units {
        url_units: distinct,
        calls: calls(distinct, Kind::Url),
        ..Units::default()
    };
    // The dispatcher's rule: escalation only where a domain asks for it and directory quota
    // exists, with the same floor (`escalate::min_urls`).
    let min_urls = p
        .domains
        .iter()
        .any(|d| d.dir_escalation > 0)
        .then(|| escalate::min_urls(p.urls_per_day, p.dirs_per_day))
        .flatten();
    let escalated = match min_urls {
        None => plain,
        Some(min_urls) => {
            let escalable: Vec<(&str, u32)> = keys
                .iter()
                .filter(|(_, t)| **t > 0)
                .map(|(k, t)| (k.as_str(), *t))
                .collect();
            let dirs = escalate::cover(&escalable, min_urls);
            let replaced: u64 = dirs.iter().map(|(_, n)| *n as u64).sum();
            let (url_units, dir_units) = (distinct - replaced, dirs.len() as u64);
            Units {
                url_units,
                dir_units,
                replaced_urls: replaced,
                calls: calls(url_units, Kind::Url) + calls(dir_units, Kind::Dir),
            }
        }
    };
    Demand {
        provider: p.name.clone(),
        lines,
        distinct_keys: distinct,
        plain,
        escalated,
    }
}

/// Reads the next line (without its `\n`) into `buf`, keeping at most [`MAX_LINE`] bytes of
/// it; returns the line's full length (longer than `buf` when cut), or `None` at the end.
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(len));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        len = len.saturating_add(part.len());
        let used = done.unwrap_or(chunk.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(Some(len));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_whole_and_long_ones_are_cut_not_buffered() {
        let long = "x".repeat(MAX_LINE * 3);
        let text = format!("a\r\n\nb{long}\nlast");
        let mut r = std::io::BufReader::with_capacity(16, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(next_line(&mut r, &mut buf).unwrap(), Some(2));
        assert_eq!(buf, b"a\r");
        assert_eq!(next_line(&mut r, &mut buf).unwrap(), Some(0));
        assert_eq!(next_line(&mut r, &mut buf).unwrap(), Some(long.len() + 1));
        assert_eq!(buf.len(), MAX_LINE);
        assert_eq!(next_line(&mut r, &mut buf).unwrap(), Some(4));
        assert_eq!(buf, b"last");
        assert_eq!(next_line(&mut r, &mut buf).unwrap(), None);
    }
}
