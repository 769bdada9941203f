//! `check` refuses hostile configuration cleanly: exit 2 with a message naming the place and the
//! problem, never a panic and never the text of a secret.
//!
//! Property 1: a parse error (an unterminated `secret_key` string, a misspelled `secret_kye`
//! key) gives line and column, and the secret value appears nowhere in the output.
//! Property 2: values that would overflow duration or window arithmetic (`max_linger_ms`,
//! `drain_timeout_ms`, `retry_max_ms`, a `rate_limits` window of 10^17 hours) are refused naming
//! the key and the allowed range.
//! Pass: every case exits 2 (a panic would exit 101) with those messages.

use std::process::{Command, Output};

const SECRET: &str = "Zq8-very-secret-value-7Kp";

fn check(toml_text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("purge-worker.toml");
    std::fs::write(&path, toml_text).expect("write config");
    let o: Output = Command::new(env!("CARGO_BIN_EXE_purge-worker"))
        .args(["check", "--config", path.to_str().expect("utf-8 path")])
        .env_remove("PURGE_WORKER_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run purge-worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

fn provider(lines: &str) -> String {
    format!(
        "[[providers]]\nname = \"cdn\"\nkind = \"tencent-v3\"\nsecret_id = \"AKIDcli\"\n{lines}\n\
         [[providers.domains]]\nhost = \"www.example.com\"\n"
    )
}

#[test]
fn parse_errors_locate_the_problem_without_printing_the_secret() {
    let unterminated = provider(&format!("secret_key = \"{SECRET}"));
    let (code, text) = check(&unterminated);
    assert_eq!(code, Some(2), "{text}");
    assert!(!text.contains(SECRET), "the secret is printed: {text}");
    assert!(
        !text.contains("Zq8"),
        "part of the secret is printed: {text}"
    );
    assert!(text.contains("line 5, column"), "line and column: {text}");

    let misspelled = provider(&format!("secret_kye = \"{SECRET}\""));
    let (code, text) = check(&misspelled);
    assert_eq!(code, Some(2), "{text}");
    assert!(!text.contains(SECRET), "the secret is printed: {text}");
    assert!(text.contains("line 5, column 1"), "{text}");
    assert!(text.contains("unknown field `secret_kye`"), "{text}");
}

#[test]
fn overflowing_values_exit_2_naming_key_and_range() {
    let key_line = format!("secret_key = \"{SECRET}\"");
    let huge = "18446744073709551615";
    let cases = [
        (
            format!(
                "[batching]\nmax_linger_ms = {huge}\n{}",
                provider(&key_line)
            ),
            "batching.max_linger_ms",
        ),
        (
            format!(
                "[batching]\ndrain_timeout_ms = {huge}\n{}",
                provider(&key_line)
            ),
            "batching.drain_timeout_ms",
        ),
        (
            provider(&format!("{key_line}\nretry_max_ms = {huge}")),
            "providers[0].retry_max_ms",
        ),
        (
            provider(&format!(
                "{key_line}\nrate_limits = [\"1/99999999999999999h\"]"
            )),
            "providers[0].rate_limits[0]",
        ),
    ];
    for (toml_text, key) in cases {
        let (code, text) = check(&toml_text);
        assert_eq!(code, Some(2), "{key}: {text}");
        assert!(text.contains(key), "names the key {key}: {text}");
        assert!(text.contains("range"), "names the range: {text}");
        assert!(!text.contains(SECRET), "{text}");
    }
}
