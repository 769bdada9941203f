//! Just enough PromQL reading for the live check: substitute the dashboard's Grafana variables, and
//! list the series selectors (`metric{matchers}`) an expression reads, so each can be queried on
//! its own. Functions, aggregations, keywords, label lists (`by (...)`), strings, durations and
//! numbers are skipped; what is left are metric selectors.

/// Grafana variables the dashboard may use, and what the live check puts in their place.
/// `$provider` is matched with `=~`, so `.*` is "All".
const VARIABLES: &[(&str, &str)] = &[
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("${__interval}", "1m"),
    ("$__interval", "1m"),
    ("${provider}", ".*"),
    ("$provider", ".*"),
];

/// Aggregation operators: they may be followed by `by (...)` before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Keywords followed by a parenthesised label list.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords that are never metric names.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// `expr` with every known Grafana variable substituted; an error names any variable left over.
pub fn substitute(expr: &str) -> Result<String, String> {
    let mut out = expr.to_string();
    for (var, value) in VARIABLES {
        out = out.replace(var, value);
    }
    if out.contains('$') {
        return Err(format!(
            "unknown Grafana variable left in `{out}` (add it to VARIABLES)"
        ));
    }
    Ok(out)
}

/// Index just past the bracket that closes the one at `open`, skipping quoted strings.
fn skip_group(b: &[u8], open: usize) -> usize {
    let (start, end) = (b[open], matching(b[open]));
    let mut depth = 0;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i = skip_string(b, i, q);
                continue;
            }
            c if c == start => depth += 1,
            c if c == end => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

fn matching(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

/// Index just past the string literal starting at `at` (quote `q`).
fn skip_string(b: &[u8], at: usize, q: u8) -> usize {
    let mut i = at + 1;
    while i < b.len() {
        if b[i] == b'\\' && q != b'`' {
            i += 2;
            continue;
        }
        if b[i] == q {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn next_non_space(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The distinct series selectors in `expr`, in order of first appearance, e.g.
/// `purge_api_requests_total{result="ok"}` or `purge_quota_used`.
pub fn selectors(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_string(b, i, c);
        } else if matches!(c, b'[' | b'{') {
            i = skip_group(b, i);
        } else if c.is_ascii_digit() || c == b'.' {
            // Numbers and durations (0.99, 3600, 15m, 1e3).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let next = next_non_space(b, i);
            let peek = b.get(next).copied();
            if LABEL_LIST_KEYWORDS.contains(&word) {
                if peek == Some(b'(') {
                    i = skip_group(b, next);
                }
            } else if KEYWORDS.contains(&word) || AGGREGATIONS.contains(&word) {
                // An operator; its operands follow.
            } else if peek == Some(b'(') {
                // A function call; its arguments follow.
            } else {
                let end = if peek == Some(b'{') {
                    skip_group(b, next)
                } else {
                    i
                };
                let selector = format!("{word}{}", &expr[next.min(end)..end]);
                if !out.contains(&selector) {
                    out.push(selector);
                }
                i = end;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The metric name of a selector (`name{...}` → `name`).
pub fn metric_name(selector: &str) -> &str {
    selector.split('{').next().unwrap_or(selector).trim()
}

/// The family name the worker exports for a series name (`x_bucket` → `x`).
pub fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_skip_functions_aggregations_label_lists_and_durations() {
        assert_eq!(
            selectors(
                "sum by (provider) (increase(purge_auth_failures_total[5m])) > 0\nor\n\
                 max by (provider) (purge_provider_stopped) > 0"
            ),
            ["purge_auth_failures_total", "purge_provider_stopped"]
        );
        assert_eq!(
            selectors(
                r#"histogram_quantile(0.99, sum by (le, provider) (rate(x_bucket{provider=~"a|b", k="}"}[1m])))"#
            ),
            [r#"x_bucket{provider=~"a|b", k="}"}"#]
        );
        assert_eq!(
            selectors(r#"up{job="purge-worker"} == 0 or absent(up{job="purge-worker"})"#),
            [r#"up{job="purge-worker"}"#]
        );
        assert_eq!(
            selectors(
                "sum by (error) ((d_total > 0) unless (d_total offset 15m)) and on (provider) q * 3600"
            ),
            ["d_total", "q"]
        );
        assert_eq!(
            selectors("max by (provider, kind) (clamp_min(p - time(), 0))"),
            ["p"]
        );
    }

    #[test]
    fn variables_are_substituted_and_unknown_ones_reported() {
        assert_eq!(
            substitute(r#"rate(x{provider=~"$provider"}[$__rate_interval])"#).as_deref(),
            Ok(r#"rate(x{provider=~".*"}[1m])"#)
        );
        assert!(substitute("x{a=~\"$unknown\"}").is_err());
    }

    #[test]
    fn histogram_series_map_to_their_family() {
        assert_eq!(family("purge_batch_size_bucket"), "purge_batch_size");
        assert_eq!(family("purge_events_total"), "purge_events_total");
        assert_eq!(metric_name(r#"up{job="x"}"#), "up");
    }
}
