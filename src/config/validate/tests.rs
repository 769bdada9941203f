//! Unit tests of the second stage.
#![allow(clippy::unwrap_used)]
use super::*;

fn raw(toml_text: &str) -> RawConfig {
    toml::from_str(toml_text).expect("test TOML parses")
}

const MINIMAL: &str = r#"
    [[providers]]
    name = "tencent-main"
    kind = "tencent-v3"
    secret_id = "AKIDtest"
    secret_key = "hunter2"
    # extra
      [[providers.domains]]
      host = "www.example.com"
      ignore_query = true
"#;

#[test]
fn defaults_are_tencent_v3s_published_limits() {
    let c = Config::from_raw(raw(MINIMAL)).unwrap();
    let p = &c.providers[0];
    assert_eq!(p.urls_per_call, 1000);
    assert_eq!(p.dirs_per_call, 20);
    assert_eq!(p.urls_per_day, 10_000);
    assert_eq!(p.dirs_per_day, 100);
    assert_eq!(p.quota_utc_offset_secs, 8 * 3600);
    assert_eq!(p.rate_limits.len(), 2);
    assert_eq!(c.amqp.queue, "cdn.purge");
    assert_eq!(c.amqp.prefetch, 1000);
    assert_eq!(c.batching.max_linger, Duration::from_millis(500));
}

#[test]
fn errors_name_the_key() {
    let e = Config::from_raw(raw(&MINIMAL.replace("tencent-v3", "akamai"))).unwrap_err();
    assert!(e.to_string().contains("providers[0].kind"), "{e}");
    let e = Config::from_raw(raw(
        &MINIMAL.replace("# extra", "rate_limits = [\"300/5x\"]")
    ))
    .unwrap_err();
    assert!(e.to_string().contains("providers[0].rate_limits[0]"), "{e}");
    let e = toml::from_str::<RawConfig>("[amqp]\nprefetc = 5").unwrap_err();
    assert!(e.to_string().contains("prefetc"), "{e}");
}

#[test]
fn secrets_never_show_in_debug_or_errors() {
    let c = Config::from_raw(raw(MINIMAL)).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    let e =
        Config::from_raw(raw(&MINIMAL.replace("# extra", "secret_key_env = \"X\""))).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn rate_limit_and_offset_parsing() {
    assert_eq!(
        RateLimit::parse("300/5m").unwrap(),
        RateLimit {
            limit: 300,
            window: Duration::from_secs(300)
        }
    );
    assert_eq!(
        RateLimit::parse("20/s").unwrap().window,
        Duration::from_secs(1)
    );
    assert!(RateLimit::parse("0/s").is_err());
    assert!(RateLimit::parse("10").is_err());
    assert_eq!(parse_utc_offset("+08:00").unwrap(), 28_800);
    assert_eq!(parse_utc_offset("-05:30").unwrap(), -19_800);
    assert!(parse_utc_offset("8").is_err());
    // The accepted forms, pinned (see the decision on `parse_utc_offset`).
    for (ok, secs) in [
        ("Z", 0),
        ("z", 0),
        ("+00:00", 0),
        ("+8:00", 28_800),
        ("-14:00", -50_400),
    ] {
        assert_eq!(parse_utc_offset(ok).unwrap(), secs, "{ok}");
    }
    for bad in [
        "+15:00",
        "+08:60",
        "+0800",
        "+08:00x",
        "08:00",
        "",
        "\u{2212}08:00",
    ] {
        let e = parse_utc_offset(bad).unwrap_err();
        assert_eq!(e, format!("`{bad}` is not a UTC offset like \"+08:00\""));
    }
}

#[test]
fn values_that_would_overflow_are_refused_naming_key_and_range() {
    let huge = u64::MAX.to_string();
    let batching = |key: &str| format!("[batching]\n{key} = {huge}\n{MINIMAL}");
    for key in ["max_linger_ms", "drain_timeout_ms"] {
        let e = Config::from_raw(raw(&batching(key)))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("batching.{key}")), "{e}");
        assert!(e.contains("between 0 and 86400000"), "{e}");
    }
    let provider = |line: &str| MINIMAL.replace("# extra", line);
    for (line, key) in [
        (
            format!("retry_max_ms = {huge}"),
            "providers[0].retry_max_ms",
        ),
        (
            format!("retry_base_ms = {huge}"),
            "providers[0].retry_base_ms",
        ),
        (
            format!("connect_timeout_ms = {huge}"),
            "providers[0].connect_timeout_ms",
        ),
        (
            format!("request_timeout_ms = {huge}"),
            "providers[0].request_timeout_ms",
        ),
        (
            format!("urls_per_day = {huge}"),
            "providers[0].urls_per_day",
        ),
        (
            format!("dirs_per_day = {huge}"),
            "providers[0].dirs_per_day",
        ),
        (
            format!("urls_per_call = {huge}"),
            "providers[0].urls_per_call",
        ),
        (
            format!("max_in_flight = {huge}"),
            "providers[0].max_in_flight",
        ),
        (
            "rate_limits = [\"1/99999999999999999h\"]".into(),
            "providers[0].rate_limits[0]",
        ),
        (
            "rate_limits = [\"1/1000000000000h\"]".into(),
            "providers[0].rate_limits[0]",
        ),
    ] {
        let e = Config::from_raw(raw(&provider(&line)))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{line}: {e}");
        assert!(e.contains("range"), "{line}: names the range: {e}");
    }
    let e = Config::from_raw(raw(&format!(
        "[amqp]\ndead_letter_max_bytes = 0\n{MINIMAL}"
    )))
    .unwrap_err()
    .to_string();
    assert!(e.contains("amqp.dead_letter_max_bytes"), "{e}");
    let c = Config::from_raw(raw(&format!(
        "[amqp]\ndead_letter_max_bytes = 65536\n{MINIMAL}"
    )))
    .unwrap();
    assert_eq!(c.amqp.dead_letter_max_bytes, 65536);
}

#[test]
fn builtin_config_is_valid() {
    let c = Config::builtin(url::Url::parse("http://127.0.0.1:1/").unwrap(), "AKID", "k");
    assert_eq!(c.providers[0].name, "emulator");
}

#[test]
fn duplicate_hosts_across_providers_are_rejected() {
    let two = format!("{MINIMAL}{}", MINIMAL.replace("tencent-main", "other"));
    let e = Config::from_raw(raw(&two)).unwrap_err();
    assert!(e.to_string().contains("already routed"), "{e}");
}

#[test]
fn every_unset_env_var_is_reported_at_once() {
    let two = format!(
        "[amqp]\nurl_env = \"PURGE_WORKER_TEST_UNSET_AMQP\"\n{}",
        MINIMAL.replace(
            "# extra",
            "secret_key_env = \"PURGE_WORKER_TEST_UNSET_KEY\"",
        )
    )
    .replace("secret_key = \"hunter2\"", "");
    let e = Config::from_raw(raw(&two)).unwrap_err().to_string();
    for part in [
        "PURGE_WORKER_TEST_UNSET_AMQP",
        "amqp.url_env",
        "PURGE_WORKER_TEST_UNSET_KEY",
        "providers[0].secret_key_env",
    ] {
        assert!(e.contains(part), "{part}: {e}");
    }
    let one = MINIMAL
        .replace(
            "# extra",
            "secret_key_env = \"PURGE_WORKER_TEST_UNSET_KEY\"",
        )
        .replace("secret_key = \"hunter2\"", "");
    let e = Config::from_raw(raw(&one)).unwrap_err().to_string();
    assert!(
        e.contains("config key `providers[0].secret_key_env`"),
        "{e}"
    );
}
