//! What Wangsu CDN Pro accepts in a purge body (PROVIDERS.md §3.2, seed 004), as pure checks.
//!
//! The worker runs them on event items before anything is queued, so a bad item is
//! dead-lettered with a precise reason instead of costing a call; the emulator runs the same
//! checks to refuse what the real API refuses.

use std::borrow::Cow;

use percent_encoding::{AsciiSet, percent_decode_str, utf8_percent_encode};

/// Shortest URL the API accepts in `fileUrls`/`dirUrls`.
pub const MIN_URL_CHARS: usize = 10;
/// Longest URL the API accepts in `fileUrls`/`dirUrls`.
pub const MAX_URL_CHARS: usize = 2048;
/// Most characters of a regex pattern after `{protocol}://{host}`.
pub const REGEX_MAX_AFTER_HOST: usize = 126;
/// Most quantifiers (`*`, `+`, `,}`) in one pattern.
pub const REGEX_MAX_QUANTIFIERS: usize = 2;
/// Largest bound in a `{m,n}` quantifier.
pub const REGEX_MAX_BOUND: u32 = 59;

/// The ASCII characters Wangsu wants percent-encoded in purge URLs (the seed's
/// `InvalidPurgeUrl` list): what [`encode_specials`] encodes.
const SPECIALS: &AsciiSet = &AsciiSet::EMPTY
    .add(b'[')
    .add(b']')
    .add(b'{')
    .add(b'}')
    .add(b'`')
    .add(b'|')
    .add(b'^')
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\');

/// Whether `c` is in [`SPECIALS`] (the set itself cannot be asked outside the crate).
fn is_special(c: char) -> bool {
    matches!(
        c,
        '[' | ']' | '{' | '}' | '`' | '|' | '^' | ' ' | '"' | '<' | '>' | '\\'
    )
}

/// Characters that must be percent-encoded in purge URLs ([`SPECIALS`], plus what is never
/// valid unencoded in a URL).
fn is_unencoded_special(c: char) -> bool {
    is_special(c) || c.is_control() || !c.is_ascii()
}

fn check_url_common(url: &str, what: &str) -> Result<(), String> {
    let n = url.chars().count();
    if !(MIN_URL_CHARS..=MAX_URL_CHARS).contains(&n) {
        return Err(format!(
            "{what} must be {MIN_URL_CHARS} to {MAX_URL_CHARS} characters long, this one has {n}"
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{what} must start with http:// or https://"));
    }
    if let Some(c) = url.chars().find(|&c| is_unencoded_special(c)) {
        return Err(format!(
            "{what} contains `{}`, which must be percent-encoded",
            c.escape_default()
        ));
    }
    // Every `%` must start an escape (two hex digits), and the escapes must decode to UTF-8:
    // the API refuses `123%abc.jpg` (seed 004) although `%ab` is two hex digits.
    let bytes = url.as_bytes();
    let escapes = bytes.iter().enumerate().filter(|(_, b)| **b == b'%');
    if !escapes
        .map(|(i, _)| bytes.get(i + 1..i + 3))
        .all(|hex| hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
    {
        return Err(format!(
            "{what} has a `%` that does not start a percent-escape: encode it as %25"
        ));
    }
    if percent_decode_str(url).decode_utf8().is_err() {
        return Err(format!(
            "{what} has percent-escapes that are not UTF-8 (a literal `%` must be encoded as %25)"
        ));
    }
    Ok(())
}

/// Percent-encodes the ASCII characters Wangsu wants encoded (`[ ] { } ` | ^`, space, `"`, `<`,
/// `>`, `\`) that a normalized URL may still hold after its host; the CDN decodes them for its
/// cache key, so the encoded URL names the same object.
pub fn encode_specials(url: &str) -> Cow<'_, str> {
    let path_at = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| i + 3 + j));
    let Some(path_at) = path_at else {
        return Cow::Borrowed(url);
    };
    // Normalized keys are ASCII, so only `SPECIALS` change (a non-ASCII byte would be encoded
    // as UTF-8 too, which is what the API asks for anyway).
    match Cow::from(utf8_percent_encode(&url[path_at..], SPECIALS)) {
        Cow::Borrowed(_) => Cow::Borrowed(url),
        Cow::Owned(path) => Cow::Owned(format!("{}{path}", &url[..path_at])),
    }
}

/// A `fileUrls` entry: no `*` (wildcards are for directories only).
pub fn check_file_url(url: &str) -> Result<(), String> {
    check_url_common(url, "a file URL")?;
    if url.contains('*') {
        return Err("a file URL must not contain `*`: wildcards belong in `dirs`".into());
    }
    Ok(())
}

/// A `dirUrls` entry; the last `*` or `**` is a wildcard.
pub fn check_dir_url(url: &str) -> Result<(), String> {
    check_url_common(url, "a directory URL")
}

/// Whether a directory URL uses a wildcard (only providers with wildcards take it).
pub fn has_wildcard(url: &str) -> bool {
    url.contains('*')
}

/// The host a regex pattern is for (`https://www\.example\.com/…` → `www.example.com`), lower-case,
/// with regex escapes removed; `None` when the pattern does not start with
/// `{http|https|any}://{host}/`.
pub fn regex_host(pattern: &str) -> Option<String> {
    let (_, rest) = split_scheme(pattern)?;
    let end = rest.find('/')?;
    let host = rest[..end].replace('\\', "").to_ascii_lowercase();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    valid.then_some(host)
}

fn split_scheme(pattern: &str) -> Option<(&str, &str)> {
    ["https://", "http://", "any://"]
        .into_iter()
        .find_map(|s| pattern.strip_prefix(s).map(|rest| (s, rest)))
}

/// A `regexPatterns` entry: `{http|https|any}://{host}/…`, at most 126 characters after the
/// host, at most two quantifiers (`*`, `+`, `,}`), bounds at most 59.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    let Some((_, rest)) = split_scheme(pattern) else {
        return Err("a regex pattern must start with http://, https:// or any://".into());
    };
    let Some(slash) = rest.find('/') else {
        return Err(
            "a regex pattern must be {protocol}://{host}/… with a `/` after the host".into(),
        );
    };
    if regex_host(pattern).is_none() {
        return Err("a regex pattern must name a plain host between :// and the first `/`".into());
    }
    let tail = &rest[slash..];
    let n = tail.chars().count();
    if n > REGEX_MAX_AFTER_HOST {
        return Err(format!(
            "a regex pattern may have at most {REGEX_MAX_AFTER_HOST} characters after the host, this one has {n}"
        ));
    }
    let mut quantifiers = 0;
    let mut chars = tail.chars().peekable();
    let mut escaped = false;
    let mut in_class = false;
    while let Some(c) = chars.next() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '*' | '+' if !in_class => quantifiers += 1,
            '{' if !in_class => {
                let mut body = String::new();
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == '}' {
                        closed = true;
                        break;
                    }
                    body.push(d);
                }
                if !closed {
                    return Err("a regex pattern has a `{` without its `}`".into());
                }
                let (lo, hi) = match body.split_once(',') {
                    Some((lo, hi)) => (lo, Some(hi)),
                    None => (body.as_str(), None),
                };
                let bound = |s: &str| -> Result<u32, String> {
                    s.trim().parse::<u32>().map_err(|_| {
                        format!("`{{{body}}}` in a regex pattern is not a quantifier {{m,n}}")
                    })
                };
                let mut bounds = vec![bound(lo)?];
                match hi {
                    Some("") => quantifiers += 1,
                    Some(h) => bounds.push(bound(h)?),
                    None => {}
                }
                if let Some(b) = bounds.into_iter().find(|&b| b > REGEX_MAX_BOUND) {
                    return Err(format!(
                        "a regex quantifier bound may be at most {REGEX_MAX_BOUND}, this one is {b}"
                    ));
                }
            }
            _ => {}
        }
    }
    if escaped {
        return Err("a regex pattern ends with a lone `\\`".into());
    }
    if quantifiers > REGEX_MAX_QUANTIFIERS {
        return Err(format!(
            "a regex pattern may have at most {REGEX_MAX_QUANTIFIERS} quantifiers (`*`, `+`, `{{n,}}`), this one has {quantifiers}"
        ));
    }
    Ok(())
}

/// A `fileHeaders` entry: an HTTP token name and a visible-ASCII value.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!(
            "`{}` is not an HTTP header name",
            name.escape_default()
        ));
    }
    if !value
        .chars()
        .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
    {
        return Err(format!(
            "the value of header `{name}` must be visible ASCII"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert!(check_file_url("https://www.example.com/a.jpg").is_ok());
        assert!(check_file_url("https://www.example.com/a%20b.jpg").is_ok());
        assert!(check_file_url("http://x.c/").is_ok());
        for bad in [
            "http://x/",
            "ftp://www.example.com/a",
            "https://www.example.com/*.jpg",
            "http://domain.info/newfile[1]{tes`|t^}p.png",
            "http://domain.info/i/image/gallery/123%abc.jpg",
            "https://www.example.com/a b",
        ] {
            assert!(check_file_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://www.example.com/{}", "a".repeat(2048));
        assert!(check_file_url(&long).unwrap_err().contains("2048"));
    }

    #[test]
    fn dir_urls_and_wildcards() {
        for ok in [
            "http://test.domain2.com/mydir",
            "http://test.domain2.com/mydir/**",
            "http://test.domain2.com/mydir/*.jpg",
            "http://test.domain2.com/my**jpg",
        ] {
            assert!(check_dir_url(ok).is_ok(), "{ok}");
        }
        assert!(has_wildcard("http://test.domain2.com/mydir/*"));
        assert!(!has_wildcard("http://test.domain2.com/mydir/"));
        assert!(check_dir_url("http://d.com/%zz/").is_err());
    }

    #[test]
    fn regex_patterns() {
        let ok = r"https://test.domain.com/my.*\.(jpg|png)\?q=";
        assert_eq!(check_regex(ok), Ok(()));
        assert_eq!(regex_host(ok).as_deref(), Some("test.domain.com"));
        assert_eq!(
            regex_host(r"any://www\.Example\.com/a").as_deref(),
            Some("www.example.com")
        );
        assert!(check_regex(r"https://h.com/a{1,59}b.*").is_ok());
        assert!(
            check_regex(r"https://h.com/a\*\+b.*c+").is_ok(),
            "escaped ones do not count"
        );
        assert!(
            check_regex(r"https://h.com/[*+]x").is_ok(),
            "class members do not count"
        );
        for (bad, why) in [
            ("ftp://h.com/a", "start with"),
            ("https://h.com", "`/` after the host"),
            (r"https://h.com/a.*b.*c+", "at most 2 quantifiers"),
            (r"https://h.com/a{2,}b.*c.*", "at most 2 quantifiers"),
            (r"https://h.com/a{1,60}", "at most 59"),
            (r"https://h.com/a{x}", "not a quantifier"),
        ] {
            let e = check_regex(bad).unwrap_err();
            assert!(
                e.contains(
                    why.trim_start_matches("at most 2 ")
                        .trim_start_matches("at most ")
                ),
                "{bad}: {e}"
            );
        }
        let long = format!("https://h.com/{}", "a".repeat(126));
        assert!(check_regex(&long).unwrap_err().contains("126"));
        assert!(check_regex(&format!("https://h.com/{}", "a".repeat(125))).is_ok());
    }

    #[test]
    fn specials_are_encoded_after_the_host_only() {
        assert_eq!(
            encode_specials("https://h.com/a[1]{x}|^.png?q=`1`"),
            "https://h.com/a%5B1%5D%7Bx%7D%7C%5E.png?q=%601%60"
        );
        let plain = "https://h.com/a.png";
        assert!(matches!(encode_specials(plain), Cow::Borrowed(_)));
        // The encoder's set and the checker's list are the same characters.
        for b in 0u8..128 {
            let c = char::from(b);
            let url = format!("https://h.com/{c}");
            assert_eq!(encode_specials(&url) != url, is_special(c), "{b:#04x}");
        }
        assert!(
            check_file_url(&encode_specials(
                "http://domain.info/newfile[1]{tes`|t^}p.png"
            ))
            .is_ok()
        );
    }

    #[test]
    fn headers() {
        assert!(check_header("X-Device", "mobile").is_ok());
        assert!(check_header("Bad Name", "v").is_err());
        assert!(check_header("X", "caf\u{e9}").is_err());
    }
}
