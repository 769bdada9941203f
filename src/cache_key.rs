//! URL validation and cache-key normalization (CONTRACT §3).
//!
//! A cache key is the URL the CDN caches under: scheme and host lower-cased (IDN hosts in
//! punycode), default port and fragment removed, non-ASCII path (and query) characters
//! percent-encoded as UTF-8, already-encoded sequences left as they are, an empty `?` dropped, and
//! the query removed when the host's rule has `ignore_query = true`.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use url::{Position, Url};

use crate::routing::{Route, Router};

mod fast;

/// Longest accepted item, in bytes of the original string.
pub const MAX_URL_LEN: usize = 2048;

/// A normalized URL; cheap to clone (shared), compared and hashed by its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Arc<str>);

impl CacheKey {
    /// The normalized URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a string that is already a normalized cache key (parked items coming back, tests,
    /// benches). Does not validate: use [`normalize`] for input.
    pub fn from_normalized(s: &str) -> CacheKey {
        CacheKey(Arc::from(s))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why one item of an event was refused. `code()` is a bounded label set (dead-letter `error`
/// field and metric label); the `Display` text is the human `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// Not an absolute URL at all (or unparsable).
    #[error("not an absolute URL: {0}")]
    InvalidUrl(String),
    /// Absolute, but not http or https (ftp://, file://, ...).
    #[error("scheme `{0}` is not supported: only http:// and https:// URLs can be purged")]
    UnsupportedScheme(String),
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL is {0} bytes long; the limit is 2048")]
    TooLong(usize),
    /// user:password@ in the URL: refused so credentials never reach logs or the CDN.
    #[error("URL carries user credentials (user@host), which CDN cache keys never have")]
    Credentials,
    /// No provider's `domains` covers the host.
    #[error("host `{0}` is not routed to any provider (add it to a provider's domains)")]
    UnknownHost(String),
    /// A directory wildcard (`*`, `**`) for a host whose provider has none.
    #[error(
        "directory wildcards (`*`, `**`) are supported by wangsu providers only; this host is routed to a {0} provider"
    )]
    WildcardUnsupported(&'static str),
    /// A regex purge for a host whose provider has none.
    #[error(
        "regex purges are supported by wangsu providers only; this host is routed to a {0} provider"
    )]
    RegexUnsupported(&'static str),
    /// Request headers on a file purge for a host whose provider cannot purge by header.
    #[error(
        "purging by request headers is supported by wangsu providers only; this host is routed to a {0} provider"
    )]
    HeadersUnsupported(&'static str),
    /// A regex pattern the provider would refuse.
    #[error("invalid regex pattern: {0}")]
    InvalidRegex(String),
    /// A URL the provider's API would refuse (its own rules, beyond being a URL).
    #[error("the provider would refuse this URL: {0}")]
    RefusedByProviderRules(String),
}

impl ItemError {
    /// The dead-letter code.
    pub fn code(&self) -> &'static str {
        match self {
            ItemError::InvalidUrl(_) => "invalid_url",
            ItemError::UnsupportedScheme(_) => "unsupported_scheme",
            ItemError::TooLong(_) => "url_too_long",
            ItemError::Credentials => "invalid_url",
            ItemError::UnknownHost(_) => "unknown_host",
            ItemError::WildcardUnsupported(_) => "wildcard_unsupported",
            ItemError::RegexUnsupported(_) => "regex_unsupported",
            ItemError::HeadersUnsupported(_) => "headers_unsupported",
            ItemError::InvalidRegex(_) => "invalid_regex",
            ItemError::RefusedByProviderRules(_) => "invalid_url",
        }
    }
}

/// Validates one raw item and returns its route and cache key.
///
/// Cost: items already in normalized form take a single byte scan ([`fast`]); the rest take one
/// `Url` parse (the url crate does the lower-casing, default-port removal, IDNA and
/// percent-encoding). Either way one allocation for the key, which is a prefix of the URL's text.
pub fn normalize(raw: &str, router: &Router) -> Result<(Route, CacheKey), ItemError> {
    // Before parsing: a huge item must not cost a parse, and the limit is on what the user sent.
    if raw.len() > MAX_URL_LEN {
        return Err(ItemError::TooLong(raw.len()));
    }
    if let Some(s) = fast::split(raw) {
        let Some(route) = router.route(s.host) else {
            return Err(ItemError::UnknownHost(clip(s.host, CLIP).into_owned()));
        };
        let end = if route.ignore_query || s.query_end == s.path_end + 1 {
            s.path_end
        } else {
            s.query_end
        };
        return Ok((route, CacheKey(Arc::from(&raw[..end]))));
    }
    if raw.trim().is_empty() {
        return Err(ItemError::InvalidUrl("the item is empty".into()));
    }
    let url = Url::parse(raw).map_err(|e| parse_error(raw, e))?;
    match url.scheme() {
        "http" | "https" => {}
        // `example.com:8080/a` parses with the "scheme" `example.com`: really a missing scheme.
        scheme if scheme.contains('.') => return Err(no_scheme(raw)),
        scheme => {
            return Err(ItemError::UnsupportedScheme(
                clip(scheme, CLIP).into_owned(),
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ItemError::Credentials);
    }
    let Some(parsed_host) = url.host_str() else {
        return Err(ItemError::InvalidUrl(format!(
            "`{}` has no host",
            clip(raw, CLIP)
        )));
    };
    // `www.example.com.` (with the DNS root dot) names the same site as `www.example.com`; the
    // CDN knows the domain without the dot, so the key and the route use that form.
    let host = parsed_host.strip_suffix('.').unwrap_or(parsed_host);
    if host.is_empty() || host.starts_with('.') || host.ends_with('.') || host.contains("..") {
        return Err(ItemError::InvalidUrl(format!(
            "host `{}` has an empty label",
            clip(parsed_host, CLIP)
        )));
    }
    let Some(route) = router.route(host) else {
        return Err(ItemError::UnknownHost(clip(host, CLIP).into_owned()));
    };
    // The fragment never reaches the server; an empty `?` is the same resource as none.
    let end = if route.ignore_query || url.query().is_some_and(str::is_empty) {
        Position::AfterPath
    } else {
        Position::AfterQuery
    };
    let key: Arc<str> = if host.len() == parsed_host.len() {
        Arc::from(&url[..end])
    } else {
        let mut s = String::with_capacity(url.as_str().len());
        s.push_str(&url[..Position::BeforeHost]);
        s.push_str(host);
        s.push_str(&url[Position::AfterHost..end]);
        Arc::from(s)
    };
    Ok((route, CacheKey(key)))
}

/// How much of a user-supplied string an error message quotes: reasons travel in AMQP headers and
/// logs, where a 2 KB URL would be noise (and headers have size limits).
pub(crate) const CLIP: usize = 100;

/// The first `max_chars` characters of `s`, with `…` when something was cut.
pub(crate) fn clip(s: &str, max_chars: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max_chars) {
        None => Cow::Borrowed(s),
        Some((at, _)) => Cow::Owned(format!("{}…", &s[..at])),
    }
}

fn no_scheme(raw: &str) -> ItemError {
    ItemError::InvalidUrl(format!(
        "`{}` has no scheme; write it as http://… or https://…",
        clip(raw, CLIP)
    ))
}

/// A short sentence for a `url` parse failure, quoting at most [`CLIP`] characters of the item.
fn parse_error(raw: &str, e: url::ParseError) -> ItemError {
    match e {
        url::ParseError::RelativeUrlWithoutBase => no_scheme(raw),
        e => ItemError::InvalidUrl(format!("`{}`: {e}", clip(raw.trim(), CLIP))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;
    use crate::provider::api::ProviderKind;

    /// Provider 0 serves `www.example.com`, `static.example.com` (ignore_query) and
    /// `*.example.com`; provider 1 serves the IDN host `例子.测试` and `*.cdn.example.com`
    /// (ignore_query).
    fn router() -> Router {
        Router::for_tests(&[
            (
                ProviderKind::TencentV3,
                &[
                    ("www.example.com", false),
                    ("static.example.com", true),
                    ("*.example.com", false),
                ],
            ),
            (
                ProviderKind::TencentV3,
                &[("例子.测试", false), ("*.cdn.example.com", true)],
            ),
        ])
    }

    /// What a table row expects.
    enum Want {
        /// Accepted: the key, the provider, and whether the host's rule has `ignore_query`.
        Key(&'static str, usize, bool),
        /// Refused with this dead-letter code.
        Err(&'static str),
    }
    use Want::{Err as Refused, Key};

    /// A URL of exactly `len` bytes on a routed host.
    fn url_of_len(len: usize) -> String {
        let prefix = "https://www.example.com/";
        format!("{prefix}{}", "a".repeat(len - prefix.len()))
    }

    #[test]
    fn normalization_table() {
        let long_ok = url_of_len(MAX_URL_LEN);
        let long_bad = url_of_len(MAX_URL_LEN + 1);
        let cases: Vec<(&str, Want)> = vec![
            // Plain, and case of scheme and host (never of the path).
            (
                "https://www.example.com/news/1.html",
                Key("https://www.example.com/news/1.html", 0, false),
            ),
            (
                "HTTPS://WWW.EXAMPLE.COM/News/1.html",
                Key("https://www.example.com/News/1.html", 0, false),
            ),
            (
                "Http://Www.Example.Com/a",
                Key("http://www.example.com/a", 0, false),
            ),
            (
                "https://www.example.com",
                Key("https://www.example.com/", 0, false),
            ),
            // Ports: defaults go, others stay.
            (
                "http://www.example.com:80/a",
                Key("http://www.example.com/a", 0, false),
            ),
            (
                "https://www.example.com:443/a",
                Key("https://www.example.com/a", 0, false),
            ),
            (
                "http://www.example.com:8080/a",
                Key("http://www.example.com:8080/a", 0, false),
            ),
            (
                "http://www.example.com:443/a",
                Key("http://www.example.com:443/a", 0, false),
            ),
            (
                "https://www.example.com:80/a",
                Key("https://www.example.com:80/a", 0, false),
            ),
            // Fragments and empty queries.
            (
                "https://www.example.com/a#top",
                Key("https://www.example.com/a", 0, false),
            ),
            (
                "https://www.example.com/a?x=1#top",
                Key("https://www.example.com/a?x=1", 0, false),
            ),
            (
                "https://www.example.com/a?",
                Key("https://www.example.com/a", 0, false),
            ),
            (
                "https://www.example.com/a?#top",
                Key("https://www.example.com/a", 0, false),
            ),
            // Non-ASCII and spaces are percent-encoded; encoded input is left alone.
            (
                "https://www.example.com/新闻/1.html",
                Key(
                    "https://www.example.com/%E6%96%B0%E9%97%BB/1.html",
                    0,
                    false,
                ),
            ),
            (
                "https://www.example.com/%E6%96%B0%E9%97%BB/1.html",
                Key(
                    "https://www.example.com/%E6%96%B0%E9%97%BB/1.html",
                    0,
                    false,
                ),
            ),
            (
                "https://www.example.com/?q=新",
                Key("https://www.example.com/?q=%E6%96%B0", 0, false),
            ),
            (
                "https://www.example.com/a b/c d.html",
                Key("https://www.example.com/a%20b/c%20d.html", 0, false),
            ),
            (
                "https://www.example.com/a/../b",
                Key("https://www.example.com/b", 0, false),
            ),
            // IDN hosts in punycode, routed by the IDN pattern of provider 1.
            (
                "https://例子.测试/a",
                Key("https://xn--fsqu00a.xn--0zwm56d/a", 1, false),
            ),
            (
                "https://XN--FSQU00A.xn--0zwm56d/a",
                Key("https://xn--fsqu00a.xn--0zwm56d/a", 1, false),
            ),
            // Queries: kept on a normal host, dropped where the CDN ignores them.
            (
                "https://www.example.com/a?utm=x",
                Key("https://www.example.com/a?utm=x", 0, false),
            ),
            (
                "https://www.example.com/a?b=2&a=1",
                Key("https://www.example.com/a?b=2&a=1", 0, false),
            ),
            (
                "https://static.example.com/a?utm=x",
                Key("https://static.example.com/a", 0, true),
            ),
            (
                "https://static.example.com/a?a=1&b=2",
                Key("https://static.example.com/a", 0, true),
            ),
            (
                "https://static.example.com/a?a=1#f",
                Key("https://static.example.com/a", 0, true),
            ),
            // Directories keep their trailing slash.
            (
                "https://www.example.com/news/",
                Key("https://www.example.com/news/", 0, false),
            ),
            (
                "https://static.example.com/img/?v=3",
                Key("https://static.example.com/img/", 0, true),
            ),
            // Wildcards: any depth, not the apex; the longer suffix wins.
            (
                "https://a.example.com/x",
                Key("https://a.example.com/x", 0, false),
            ),
            (
                "https://a.b.example.com/x?v=1",
                Key("https://a.b.example.com/x?v=1", 0, false),
            ),
            (
                "https://img.cdn.example.com/x?v=1",
                Key("https://img.cdn.example.com/x", 1, true),
            ),
            (
                "https://cdn.example.com/x?v=1",
                Key("https://cdn.example.com/x?v=1", 0, false),
            ),
            ("https://example.com/x", Refused("unknown_host")),
            ("https://unknown.org/a", Refused("unknown_host")),
            ("http://192.0.2.1/a", Refused("unknown_host")),
            // Trailing dot: the same site; doubled dots are not a host.
            (
                "https://www.example.com./a",
                Key("https://www.example.com/a", 0, false),
            ),
            (
                "https://www.example.com.:8080/a",
                Key("https://www.example.com:8080/a", 0, false),
            ),
            ("https://www.example.com../a", Refused("invalid_url")),
            ("https://a..example.com/a", Refused("invalid_url")),
            ("http://./a", Refused("invalid_url")),
            // Surrounding whitespace is trimmed by the URL parser.
            (
                "  https://www.example.com/a\t",
                Key("https://www.example.com/a", 0, false),
            ),
            // Schemes.
            ("ftp://www.example.com/a", Refused("unsupported_scheme")),
            ("file:///etc/passwd", Refused("unsupported_scheme")),
            ("mailto:ops@example.com", Refused("unsupported_scheme")),
            ("javascript:alert(1)", Refused("unsupported_scheme")),
            // Not absolute URLs.
            ("/news/1.html", Refused("invalid_url")),
            ("news/1.html", Refused("invalid_url")),
            ("www.example.com/news/1.html", Refused("invalid_url")),
            ("www.example.com:8080/news/1.html", Refused("invalid_url")),
            ("//www.example.com/a", Refused("invalid_url")),
            ("http://", Refused("invalid_url")),
            ("https://exa mple.com/", Refused("invalid_url")),
            ("https://[::1/", Refused("invalid_url")),
            ("", Refused("invalid_url")),
            ("   ", Refused("invalid_url")),
            // Credentials.
            (
                "https://user:pass@www.example.com/a",
                Refused("invalid_url"),
            ),
            ("https://user@www.example.com/a", Refused("invalid_url")),
            ("https://:pass@www.example.com/a", Refused("invalid_url")),
            // Length: on the raw bytes.
            (long_ok.as_str(), Key("", 0, false)),
            (long_bad.as_str(), Refused("url_too_long")),
        ];
        assert!(cases.len() >= 30);
        let router = router();
        for (input, want) in cases {
            let got = normalize(input, &router);
            match (want, got) {
                (Key(key, provider, ignore_query), Ok((route, k))) => {
                    // An empty expected key means "the input itself" (the long case).
                    let key = if key.is_empty() { input } else { key };
                    assert_eq!(k.as_str(), key, "input {input:?}");
                    assert_eq!(route.provider, provider, "provider of {input:?}");
                    assert_eq!(
                        route.ignore_query, ignore_query,
                        "ignore_query of {input:?}"
                    );
                }
                (Refused(code), Err(e)) => assert_eq!(e.code(), code, "input {input:?}: {e}"),
                (Key(key, ..), Err(e)) => panic!("{input:?}: expected {key:?}, refused: {e}"),
                (Refused(code), Ok((_, k))) => panic!("{input:?}: expected {code}, got key {k}"),
            }
        }
    }

    #[test]
    fn encoded_and_raw_chinese_paths_are_one_key() {
        let r = router();
        let raw = normalize("https://www.example.com/新闻/1.html", &r)
            .unwrap()
            .1;
        let encoded = normalize("https://www.example.com/%E6%96%B0%E9%97%BB/1.html", &r)
            .unwrap()
            .1;
        assert_eq!(raw, encoded);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let r = router();
        let reason = |s: &str| normalize(s, &r).unwrap_err().to_string();
        assert!(reason("ftp://www.example.com/a").contains("`ftp`"));
        assert!(reason("https://unknown.org/a").contains("`unknown.org`"));
        assert!(reason("/news/1.html").contains("no scheme"));
        assert!(reason("http://").contains("empty host"));
        assert!(reason(&url_of_len(3000)).contains("3000 bytes"));
        assert_eq!(
            normalize("https://u:hunter2@www.example.com/", &r).unwrap_err(),
            ItemError::Credentials
        );
        assert!(!reason("https://u:hunter2@www.example.com/").contains("hunter2"));
    }

    #[test]
    fn reasons_never_quote_a_whole_long_url() {
        let r = router();
        let tail = "x".repeat(1900);
        for input in [
            format!("https://exa mple.com/{tail}"),
            format!("/relative/{tail}"),
            format!("https://{tail}.org/"),
            format!("{tail}:rest"),
        ] {
            let reason = normalize(&input, &r).unwrap_err().to_string();
            assert!(reason.len() < 300, "{} bytes: {reason}", reason.len());
        }
    }

    #[test]
    fn clip_cuts_on_char_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc…");
        assert_eq!(clip("新闻新闻", 2), "新闻…");
    }
}
