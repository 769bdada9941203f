//! The fast path of [`super::normalize`]: most items already arrive in normalized form (lower-case
//! `http(s)://host/path?query`, ASCII, no port), and for those a single byte scan finds the host,
//! the end of the path and the end of the query without a full WHATWG parse (~10× cheaper).
//!
//! The scan is deliberately conservative: it accepts only strings the `url` parser would serialize
//! unchanged up to the fragment, and answers `None` for everything else (upper case in scheme or
//! host, ports, IDN or `xn--` labels, IP-like hosts, dot segments, backslashes, percent-encoded
//! dots, characters the parser would percent-encode, whitespace, ...), which then takes the
//! parser's path. A differential test checks the two paths agree on random inputs.

/// Where the parts of an already-normalized URL are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split<'a> {
    /// The host (lower-case ASCII, not an IP address).
    pub host: &'a str,
    /// Index of the `?` starting the query, or of the end of the path.
    pub path_end: usize,
    /// Index of the `#` starting the fragment, or the string's length.
    pub query_end: usize,
}

/// Path bytes the parser keeps as they are (RFC 3986 unreserved, sub-delims, `:@/%`).
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// Query bytes the parser keeps as they are for http(s) (no `'`, which it encodes).
fn query_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?%".contains(&b)
}

/// Accepts a host of labels `[a-z0-9-]{1,63}` joined by dots, whose last label starts with a
/// letter (so it is never read as an IPv4 address) and with no `--` at label positions 3–4 (IDNA
/// reserves those, e.g. `xn--`).
fn plain_host(host: &[u8]) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let mut last_first = 0u8;
    for label in host.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || label.get(2..4) == Some(b"--".as_slice())
        {
            return false;
        }
        last_first = label[0];
    }
    last_first.is_ascii_lowercase()
}

/// Splits `raw` when it is already normalized, else `None`.
pub(super) fn split(raw: &str) -> Option<Split<'_>> {
    let b = raw.as_bytes();
    let rest_at = if raw.starts_with("https://") {
        8
    } else if raw.starts_with("http://") {
        7
    } else {
        return None;
    };
    let host_end = rest_at + b[rest_at..].iter().position(|&c| c == b'/')?;
    let host = &raw[rest_at..host_end];
    if !plain_host(host.as_bytes()) {
        return None;
    }
    let mut i = host_end;
    while i < b.len() && b[i] != b'?' && b[i] != b'#' {
        if !path_byte(b[i]) {
            return None;
        }
        i += 1;
    }
    let path = &raw[host_end..i];
    // Dot segments (`/./`, `/../`, also percent-encoded) are resolved by the parser.
    if path.contains("/.") || path.contains("%2e") || path.contains("%2E") {
        return None;
    }
    let path_end = i;
    if i < b.len() && b[i] == b'?' {
        i += 1;
        while i < b.len() && b[i] != b'#' {
            if !query_byte(b[i]) {
                return None;
            }
            i += 1;
        }
    }
    Some(Split {
        host,
        path_end,
        query_end: i,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use url::{Position, Url};

    /// What the parser makes of `raw`, in the same terms: (host, key without fragment, key
    /// without query).
    fn by_parser(raw: &str) -> Option<(String, String, String)> {
        let u = Url::parse(raw).ok()?;
        Some((
            u.host_str()?.to_string(),
            u[..Position::AfterQuery].to_string(),
            u[..Position::AfterPath].to_string(),
        ))
    }

    #[test]
    fn accepts_the_common_normalized_shapes() {
        let s = split("https://www.example.com/news/1.html?a=1&b=2#top").unwrap();
        assert_eq!(s.host, "www.example.com");
        assert_eq!(
            &"https://www.example.com/news/1.html?a=1&b=2#top"[..s.path_end],
            "https://www.example.com/news/1.html"
        );
        for not_fast in [
            "https://WWW.example.com/a",
            "HTTPS://www.example.com/a",
            "https://www.example.com:443/a",
            "https://www.example.com",
            "https://127.0.0.1/a",
            "https://xn--fsqu00a.xn--0zwm56d/a",
            "https://www.example.com/a/../b",
            "https://www.example.com/a/%2E%2E/b",
            "https://www.example.com/新闻",
            "https://www.example.com/a b",
            "https://www.example.com/a\\b",
            "https://www.example.com/a?it's",
            "ftp://www.example.com/a",
            " https://www.example.com/a",
        ] {
            assert_eq!(split(not_fast), None, "{not_fast}");
        }
    }

    /// Differential test: wherever the fast path answers, the parser agrees byte for byte.
    #[test]
    fn agrees_with_the_parser_on_random_inputs() {
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let hosts = [
            "a.example.com",
            "www.example.com",
            "x-y.b2.example.org",
            "1.example.com",
            "a1",
            "example.com.",
        ];
        let pieces = [
            "/", "a", "Z", "0", "-", ".", "..", "%", "%2e", "%41", "?", "#", "=", "&", ":", "@",
            "~", "!", "'", "*", "(", ")", "+", ",", ";", "$", "|", "^", "[", "]", "{", "}", "`",
            "\"", "<", ">", "\\", " ", "\t", "é", "中", "//", "/./", "/../",
        ];
        let (mut fast, mut total) = (0, 0);
        for _ in 0..200_000 {
            let mut raw = String::from(if rng.random_bool(0.5) {
                "https://"
            } else {
                "http://"
            });
            raw.push_str(hosts[rng.random_range(0..hosts.len())]);
            raw.push('/');
            for _ in 0..rng.random_range(0..12) {
                raw.push_str(pieces[rng.random_range(0..pieces.len())]);
            }
            total += 1;
            let Some(s) = split(&raw) else { continue };
            fast += 1;
            let (host, with_query, without_query) =
                by_parser(&raw).unwrap_or_else(|| panic!("parser refuses {raw:?}"));
            assert_eq!(s.host, host, "{raw:?}");
            assert_eq!(&raw[..s.query_end], with_query, "{raw:?}");
            assert_eq!(&raw[..s.path_end], without_query, "{raw:?}");
        }
        assert!(
            fast > total / 10,
            "the fast path is exercised: {fast} of {total}"
        );
    }
}
