//! Host → provider routing by the `domains` rules of each provider (CONTRACT §2).
//!
//! Precedence: an exact host beats any wildcard; among `*.suffix` patterns the longest suffix wins;
//! `*` (match every host, used by the built-in emulator configuration) comes last.
//!
//! Routing runs once per event item, so [`Router::route`] costs one hash lookup for the exact host
//! plus at most one lookup per dot in the host for the wildcards, however many rules are configured.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;

use url::Host;

use crate::provider::Capabilities;
use crate::provider::api::ProviderKind;

/// A host (or host pattern) routed to a provider: one `[[providers.domains]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    pub host: HostPattern,
    /// The CDN ignores the query string in its cache key for this host.
    pub ignore_query: bool,
    /// Pending bulk URLs under one directory (never the host root) that are purged as that
    /// directory instead; 0 = never.
    pub dir_escalation: u32,
    /// Prefetch (warm) the URL at the CDN once its purge task is done.
    pub prefetch_after_purge: bool,
}

/// A validated `domains.host` value. Hosts are stored lower-cased and IDNA-encoded (punycode), the
/// same form [`crate::cache_key`] produces, so matching is a plain string comparison.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: every host.
    Any,
    /// `www.example.com`: exactly this host.
    Exact(String),
    /// `*.example.com`: any subdomain at any depth (`a.example.com`, `a.b.example.com`), not the
    /// apex `example.com` itself. Holds the suffix with its leading dot: `.example.com`.
    Suffix(String),
}

/// Shown in error messages as the shape of a valid value.
const EXAMPLES: &str =
    "a host name such as `www.example.com`, a wildcard such as `*.example.com`, or `*`";

impl HostPattern {
    /// Parses a config value; the error says what is wrong with it (ports, paths, schemes and
    /// wildcards other than a leading `*.` are rejected).
    ///
    /// Normalization goes through the `url` crate's host parser, the same one
    /// [`crate::cache_key::normalize`] uses, so `WWW.Example.COM` and `例子.测试` become exactly the
    /// strings a URL for that host routes by. One trailing dot (the DNS root, `example.com.`) is
    /// dropped, as it is for URLs. IPv4 and bracketed IPv6 literals are accepted as exact hosts
    /// when written in their canonical form.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err(format!("must not be empty: give {EXAMPLES}"));
        }
        if s.trim() != s {
            return Err(format!("`{s}` has leading or trailing whitespace"));
        }
        if s == "*" {
            return Ok(HostPattern::Any);
        }
        if s.contains("://") {
            return Err(format!(
                "`{s}` is a URL; give only the host name without scheme or path ({EXAMPLES})"
            ));
        }
        if let Some(c) = s.chars().find(|c| matches!(c, '/' | '\\' | '?' | '#')) {
            return Err(format!(
                "`{s}` contains `{c}`: give only the host name, without a path or query ({EXAMPLES})"
            ));
        }
        if s.contains('@') {
            return Err(format!(
                "`{s}` contains `@`: give only the host name, without a user"
            ));
        }
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if rest.contains('*') {
            return Err(format!(
                "`{s}`: the wildcard `*` is allowed only alone or as a leading `*.` (such as `*.example.com`)"
            ));
        }
        if rest.is_empty() || rest == "." {
            return Err(format!(
                "`{s}` needs a domain after `*.`, such as `*.example.com`"
            ));
        }
        if !rest.starts_with('[') && rest.contains(':') {
            if rest.parse::<Ipv6Addr>().is_ok() {
                return Err(format!(
                    "`{s}` is an IPv6 address; write it in brackets, like `[{rest}]`"
                ));
            }
            return Err(format!(
                "`{s}` has a port; routing is by host name only, so remove `:` and what follows"
            ));
        }
        let host = normalize_host(s, rest)?;
        match host {
            Host::Domain(d) => {
                let d = d.strip_suffix('.').unwrap_or(&d);
                if d.is_empty() || d.split('.').any(str::is_empty) {
                    return Err(format!("`{s}` has an empty label (`..` or a leading dot)"));
                }
                Ok(if wildcard {
                    HostPattern::Suffix(format!(".{d}"))
                } else {
                    HostPattern::Exact(d.to_owned())
                })
            }
            Host::Ipv4(_) | Host::Ipv6(_) if wildcard => Err(format!(
                "`{s}`: a wildcard needs a domain name after `*.`, not an IP address"
            )),
            Host::Ipv4(ip) => canonical_ip(s, ip.to_string()),
            Host::Ipv6(ip) => canonical_ip(s, format!("[{ip}]")),
        }
    }

    /// Whether `host` (already normalized: lower-case, punycode, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            // The suffix starts with a dot, so `ends_with` already stops at a label boundary; the
            // length check keeps the apex (and a bare `.example.com`) out.
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// Runs `rest` through the `url` crate's host parser (lower-casing, IDNA, IPv4 forms) and checks
/// that nothing but a host came out of it.
fn normalize_host(s: &str, rest: &str) -> Result<Host<String>, String> {
    let url = url::Url::parse(&format!("http://{rest}/"))
        .map_err(|e| format!("`{s}` is not a valid host name ({e})"))?;
    let only_host = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    match url.host() {
        Some(host) if only_host => Ok(host.to_owned()),
        _ => Err(format!("`{s}` is not a plain host name ({EXAMPLES})")),
    }
}

/// IP literals are matched as text, so only the form the `url` crate prints can ever match.
fn canonical_ip(s: &str, canonical: String) -> Result<HostPattern, String> {
    if canonical.eq_ignore_ascii_case(s) {
        Ok(HostPattern::Exact(canonical))
    } else {
        Err(format!(
            "`{s}` is read as the IP address `{canonical}`; write it that way"
        ))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
        }
    }
}

/// Where an item goes and how its cache key is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The provider's position in the list the router was built from (`Config::providers`).
    pub provider: usize,
    /// Strip the query string from the cache key.
    pub ignore_query: bool,
    /// Prefetch the URL once its purge task is done.
    pub prefetch: bool,
    /// The domain's `dir_escalation` (0 = off): pending bulk URLs per directory that make one
    /// directory purge worth it.
    pub dir_escalation: u32,
    /// What the provider's API takes: wildcards, regex, headers and its URL rules.
    pub caps: Capabilities,
    /// The provider's API family, for messages (`tencent-v3`).
    pub api: &'static str,
}

/// The routing table built once from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Exact hosts.
    exact: HashMap<Box<str>, Route, foldhash::fast::RandomState>,
    /// Wildcard suffixes with their leading dot (`.example.com`).
    suffix: HashMap<Box<str>, Route, foldhash::fast::RandomState>,
    /// Longest key in `suffix`: longer suffixes of a host cannot match, so they are not looked up.
    longest_suffix: usize,
    /// The `*` rule, if any.
    any: Option<Route>,
}

impl Router {
    /// Builds the table from each provider's API family and hosts, in config order.
    ///
    /// Config validation refuses a pattern claimed twice; should one slip through anyway, the
    /// first rule in config order keeps it, so routing stays deterministic.
    pub fn new<'a>(
        providers: impl IntoIterator<Item = (ProviderKind, &'a [DomainRule])>,
    ) -> Router {
        let mut router = Router::default();
        for (provider, (kind, domains)) in providers.into_iter().enumerate() {
            for rule in domains {
                let route = Route {
                    provider,
                    ignore_query: rule.ignore_query,
                    prefetch: rule.prefetch_after_purge,
                    dir_escalation: rule.dir_escalation,
                    caps: kind.capabilities(),
                    api: kind.as_str(),
                };
                match &rule.host {
                    HostPattern::Any => {
                        router.any.get_or_insert(route);
                    }
                    HostPattern::Exact(h) => {
                        router.exact.entry(h.as_str().into()).or_insert(route);
                    }
                    HostPattern::Suffix(s) => {
                        router.longest_suffix = router.longest_suffix.max(s.len());
                        router.suffix.entry(s.as_str().into()).or_insert(route);
                    }
                }
            }
        }
        router
    }

    /// A router for tests: each provider's family and `(host, ignore_query)` rules, in order.
    #[cfg(test)]
    pub(crate) fn for_tests(providers: &[(ProviderKind, &[(&str, bool)])]) -> Router {
        let rules: Vec<(ProviderKind, Vec<DomainRule>)> = providers
            .iter()
            .map(|(kind, hosts)| {
                let rules = hosts
                    .iter()
                    .map(|(host, ignore_query)| DomainRule {
                        host: HostPattern::parse(host).expect("test host pattern is valid"),
                        ignore_query: *ignore_query,
                        dir_escalation: 0,
                        prefetch_after_purge: false,
                    })
                    .collect();
                (*kind, rules)
            })
            .collect();
        Router::new(rules.iter().map(|(kind, rules)| (*kind, &rules[..])))
    }

    /// The route for a normalized host, or `None` when no provider serves it.
    pub fn route(&self, host: &str) -> Option<Route> {
        if let Some(route) = self.exact.get(host) {
            return Some(*route);
        }
        if !self.suffix.is_empty() {
            // Dots from the left give the host's suffixes longest first, so the first hit is the
            // most specific wildcard. A dot at 0 would leave an empty subdomain: never a match.
            for (at, _) in host.match_indices('.') {
                let candidate = &host[at..];
                if at == 0 || candidate.len() > self.longest_suffix {
                    continue;
                }
                if let Some(route) = self.suffix.get(candidate) {
                    return Some(*route);
                }
            }
        }
        self.any
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    /// One tencent-v3 provider per entry, with its `(host, ignore_query)` rules.
    fn router(providers: &[&[(&str, bool)]]) -> Router {
        let providers: Vec<_> = providers
            .iter()
            .map(|rules| (ProviderKind::TencentV3, *rules))
            .collect();
        Router::for_tests(&providers)
    }

    #[track_caller]
    fn assert_route(router: &Router, host: &str, provider: Option<usize>) {
        assert_eq!(
            router.route(host).map(|r| r.provider),
            provider,
            "host {host}"
        );
    }

    #[test]
    fn parse_accepts_and_normalizes() {
        let ok = |s: &str| HostPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let exact = |s: &str| HostPattern::Exact(s.into());
        let suffix = |s: &str| HostPattern::Suffix(s.into());
        assert_eq!(ok("www.example.com"), exact("www.example.com"));
        assert_eq!(ok("WWW.Example.COM"), exact("www.example.com"));
        assert_eq!(ok("例子.测试"), exact("xn--fsqu00a.xn--0zwm56d"));
        assert_eq!(ok("*.例子.测试"), suffix(".xn--fsqu00a.xn--0zwm56d"));
        assert_eq!(ok("*.example.com"), suffix(".example.com"));
        assert_eq!(ok("*.Example.COM"), suffix(".example.com"));
        assert_eq!(ok("www.example.com."), exact("www.example.com"));
        assert_eq!(ok("*"), HostPattern::Any);
        assert_eq!(ok("localhost"), exact("localhost"));
        assert_eq!(ok("192.0.2.1"), exact("192.0.2.1"));
        assert_eq!(ok("[::1]"), exact("[::1]"));
        assert_eq!(ok("[2001:DB8::1]"), exact("[2001:db8::1]"));
        // Display round-trips the normalized form.
        assert_eq!(ok("*.Example.COM").to_string(), "*.example.com");
    }

    #[test]
    fn parse_rejects_with_a_reason() {
        for (input, says) in [
            ("", "must not be empty"),
            (" www.example.com", "whitespace"),
            ("https://www.example.com", "is a URL"),
            ("www.example.com/news", "without a path"),
            ("www.example.com?a=1", "without a path"),
            ("www.example.com:8080", "has a port"),
            ("user@www.example.com", "without a user"),
            ("*example.com", "leading `*.`"),
            ("www.*.example.com", "leading `*.`"),
            ("*.*.example.com", "leading `*.`"),
            ("example.*", "leading `*.`"),
            ("**", "leading `*.`"),
            ("*.", "needs a domain"),
            ("www..example.com", "empty label"),
            (".example.com", "empty label"),
            ("exa mple.com", "not a valid host name"),
            ("::1", "in brackets"),
            ("[::1", "not a valid host name"),
            ("127.1", "`127.0.0.1`"),
            ("*.192.0.2.1", "not an IP address"),
            ("*.[::1]", "not an IP address"),
        ] {
            let e = HostPattern::parse(input).expect_err(input);
            assert!(e.contains(says), "{input:?}: {e}");
        }
    }

    #[test]
    fn matches_respects_label_boundaries_and_the_apex() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches("example.com.evil.org"));
        let e = HostPattern::parse("www.example.com").unwrap();
        assert!(e.matches("www.example.com"));
        assert!(!e.matches("a.www.example.com"));
        assert!(HostPattern::Any.matches("anything.at.all"));
    }

    #[test]
    fn exact_beats_any_wildcard() {
        let r = router(&[&[("www.example.com", false)], &[("*.example.com", true)]]);
        assert_route(&r, "www.example.com", Some(0));
        assert_route(&r, "img.example.com", Some(1));
        assert_route(&r, "a.www.example.com", Some(1));
        assert_route(&r, "example.com", None);
        assert_eq!(
            r.route("img.example.com").map(|r| r.ignore_query),
            Some(true)
        );
        assert_eq!(
            r.route("www.example.com").map(|r| r.ignore_query),
            Some(false)
        );
    }

    #[test]
    fn longest_suffix_wins_regardless_of_config_order() {
        for flipped in [false, true] {
            let (mut short, mut long) =
                ([("*.example.com", false)], [("*.cdn.example.com", false)]);
            let (s, l) = if flipped {
                std::mem::swap(&mut short, &mut long);
                (1, 0)
            } else {
                (0, 1)
            };
            let r = router(&[&short, &long]);
            assert_route(&r, "x.cdn.example.com", Some(l));
            assert_route(&r, "x.y.cdn.example.com", Some(l));
            // The apex of the longer pattern is only a subdomain of the shorter one.
            assert_route(&r, "cdn.example.com", Some(s));
            assert_route(&r, "www.example.com", Some(s));
            assert_route(&r, "x.cdnexample.com", None);
        }
    }

    #[test]
    fn star_comes_last() {
        let r = router(&[
            &[("*", false)],
            &[("www.example.com", true), ("*.example.org", false)],
        ]);
        assert_route(&r, "www.example.com", Some(1));
        assert_route(&r, "a.example.org", Some(1));
        assert_route(&r, "example.org", Some(0));
        assert_route(&r, "other.net", Some(0));
        assert_route(&r, "[::1]", Some(0));
    }

    #[test]
    fn no_rule_no_route() {
        let r = router(&[&[("www.example.com", false)]]);
        assert_route(&r, "example.com", None);
        assert_route(&r, "", None);
        assert_route(&r, ".", None);
        assert_route(&r, ".www.example.com", None);
    }

    #[test]
    fn idn_patterns_route_punycode_hosts() {
        let r = router(&[&[("例子.测试", false), ("*.ÉXAMPLE.com", false)]]);
        assert_route(&r, "xn--fsqu00a.xn--0zwm56d", Some(0));
        assert_route(&r, "www.xn--xample-9ua.com", Some(0));
    }

    /// The table agrees with [`HostPattern::matches`] plus the documented precedence, for every
    /// host and rule set tried.
    #[test]
    fn router_agrees_with_matches_and_precedence() {
        let patterns = [
            "*",
            "example.com",
            "*.example.com",
            "*.a.example.com",
            "b.a.example.com",
            "*.org",
        ];
        let hosts = [
            "example.com",
            "a.example.com",
            "b.a.example.com",
            "c.b.a.example.com",
            "x.example.com",
            "example.org",
            "x.example.org",
            "other.net",
            "com",
        ];
        // Every subset of the patterns, one provider per pattern.
        for mask in 1u32..(1 << patterns.len()) {
            let chosen: Vec<&str> = (0..patterns.len())
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| patterns[i])
                .collect();
            let rules: Vec<[(&str, bool); 1]> = chosen.iter().map(|p| [(*p, false)]).collect();
            let r = router(&rules.iter().map(|r| &r[..]).collect::<Vec<_>>());
            let parsed: Vec<HostPattern> = chosen
                .iter()
                .map(|p| HostPattern::parse(p).unwrap())
                .collect();
            for host in hosts {
                let rank = |p: &HostPattern| match p {
                    HostPattern::Exact(_) => usize::MAX,
                    HostPattern::Suffix(s) => s.len(),
                    HostPattern::Any => 0,
                };
                let expected = parsed
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.matches(host))
                    .max_by_key(|(_, p)| rank(p))
                    .map(|(i, _)| i);
                assert_route(&r, host, expected);
            }
        }
    }
}
