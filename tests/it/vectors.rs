//! Shared by the signing tests: load an official-SDK vector file and compare fields with a
//! message naming the case and the field.

use serde_json::Value;

/// `tests/fixtures/{name}` as JSON.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path} is readable: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is JSON: {e}"))
}

/// The string field `key` of `v`, or a failure naming the case.
#[track_caller]
pub fn s<'a>(v: &'a Value, key: &str, case: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("case {case}: `{key}` is missing or not a string"))
}

/// `got == want`, or a failure showing both.
#[track_caller]
pub fn check(case: &str, field: &str, got: &str, want: &str) {
    assert!(
        got == want,
        "case {case}: {field} differs\n  got:  {got:?}\n  want: {want:?}"
    );
}
