use serde_json::Value;

use super::*;
use crate::provider::FlushType;
use crate::provider::qcloud_v2::{PATH, VerifyError};
use crate::provider::test_class as class;

/// Tencent's example credentials, as used by every vector.
const VECTOR_ID: &str = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
const VECTOR_KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";

fn provider_with(endpoint: &str, settings: Settings, id: &str, key: &str) -> TencentV2 {
    let endpoint = url::Url::parse(endpoint).expect("test endpoint is a URL");
    TencentV2::new(&Account::new("t", endpoint, id, key), &settings).expect("client builds")
}

fn provider(endpoint: &str, settings: Settings) -> TencentV2 {
    provider_with(endpoint, settings, "AKIDtest", "hunter2-key")
}

fn batch(kind: Kind, items: &[&str]) -> Batch {
    Batch {
        kind,
        flush_type: FlushType::Delete,
        items: items.iter().map(|s| s.to_string()).collect(),
        headers: Vec::new(),
    }
}

/// The parameters a prepared request carries, decoded as the server decodes them.
fn sent_params(p: &Prepared) -> Vec<(String, String)> {
    let encoded = match &p.body {
        Some(body) => body.clone(),
        None => p.url.query().unwrap_or("").to_string(),
    };
    url::form_urlencoded::parse(encoded.as_bytes())
        .into_owned()
        .collect()
}

#[track_caller]
fn verify_sent(p: &Prepared, host: &str, key: &str) -> Result<(), VerifyError> {
    let params = sent_params(p);
    let refs: Vec<(&str, &str)> = params
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    qcloud_v2::verify(p.method.as_str(), host, p.url.path(), &refs, key)
}

fn names(p: &Prepared) -> Vec<String> {
    sent_params(p).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn the_documented_example_is_reproduced_byte_for_byte() {
    // Vector `doc_param_set_hmacsha1`: Tencent's own example parameter set, which is exactly what
    // this client sends for HmacSHA1 (no SignatureMethod, the documented order).
    let doc: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/v2.json"
    )))
    .unwrap();
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "doc_param_set_hmacsha1")
        .unwrap();
    let b = batch(Kind::Url, &["https://www.test.com/1.jpg"]);
    for (method, http_method) in [("GET", HttpMethod::Get), ("POST", HttpMethod::Post)] {
        let settings = Settings {
            http_method,
            ..Settings::default()
        };
        let p = provider_with(
            "https://cdn.api.qcloud.com",
            settings,
            VECTOR_ID,
            VECTOR_KEY,
        );
        let prepared = p.prepare(&b, 1_462_521_223, 123_456_789);
        let want = &case["expected"][method];
        assert_eq!(prepared.string_to_sign, want["string_to_sign"], "{method}");
        let encoded = match &prepared.body {
            Some(body) => body.as_str(),
            None => prepared.url.query().unwrap(),
        };
        assert_eq!(encoded, want["urlencoded_params"], "{method}");
        assert_eq!(
            prepared.url.as_str().split('?').next().unwrap(),
            "https://cdn.api.qcloud.com/v2/index.php"
        );
    }
}

#[test]
fn post_is_the_default_and_carries_a_signed_form_body() {
    let p = provider("http://127.0.0.1:8089", Settings::default());
    assert_eq!(p.endpoint.host, "127.0.0.1:8089");
    assert_eq!(
        p.endpoint.url.as_str(),
        "http://127.0.0.1:8089/v2/index.php"
    );
    let b = batch(
        Kind::Url,
        &[
            "https://www.example.com/a b",
            "https://www.example.com/s?q=1&r=2",
        ],
    );
    let prepared = p.prepare(&b, 1_700_000_000, 42);
    assert_eq!(prepared.method, HttpMethod::Post);
    assert_eq!(prepared.action, "RefreshCdnUrl");
    assert_eq!(prepared.url.query(), None);
    assert_eq!(
        names(&prepared),
        [
            "Action",
            "SecretId",
            "Timestamp",
            "Nonce",
            "urls.0",
            "urls.1",
            "Signature"
        ]
    );
    let params = sent_params(&prepared);
    assert_eq!(params[2].1, "1700000000");
    assert_eq!(params[3].1, "42");
    assert_eq!(params[5].1, "https://www.example.com/s?q=1&r=2");
    assert!(
        prepared
            .string_to_sign
            .starts_with("POST127.0.0.1:8089/v2/index.php?Action=RefreshCdnUrl&Nonce=42&"),
        "{}",
        prepared.string_to_sign
    );
    assert_eq!(
        verify_sent(&prepared, "127.0.0.1:8089", "hunter2-key"),
        Ok(())
    );
    assert_eq!(
        verify_sent(&prepared, "127.0.0.1:8089", "other-key"),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn get_and_hmac_sha256_sign_the_query() {
    let p = provider(
        "https://cdn.api.qcloud.com/",
        Settings {
            http_method: HttpMethod::Get,
            signature_method: SignatureMethod::HmacSha256,
        },
    );
    let b = batch(Kind::Dir, &["https://www.example.com/图片/"]);
    let prepared = p.prepare(&b, 1_700_000_000, 7);
    assert_eq!(prepared.method, HttpMethod::Get);
    assert_eq!(prepared.action, "RefreshCdnDir");
    assert_eq!(prepared.body, None);
    assert_eq!(
        names(&prepared),
        [
            "Action",
            "SecretId",
            "Timestamp",
            "Nonce",
            "SignatureMethod",
            "dirs.0",
            "Signature"
        ]
    );
    let query = prepared.url.query().unwrap();
    assert!(
        query.contains("dirs.0=https%3A%2F%2Fwww.example.com%2F%E5%9B%BE%E7%89%87%2F"),
        "values are encoded exactly once: {query}"
    );
    assert!(
        prepared
            .string_to_sign
            .starts_with("GETcdn.api.qcloud.com/v2/index.php?")
    );
    assert!(
        prepared
            .string_to_sign
            .ends_with("dirs.0=https://www.example.com/图片/"),
        "raw values in the string to sign"
    );
    let signature = &sent_params(&prepared).last().unwrap().1.clone();
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signature)
            .unwrap()
            .len(),
        32,
        "a SHA-256 MAC"
    );
    assert_eq!(
        verify_sent(&prepared, "cdn.api.qcloud.com", "hunter2-key"),
        Ok(())
    );
}

#[test]
fn more_than_ten_items_sort_bytewise_in_the_signature() {
    let p = provider("https://cdn.api.qcloud.com", Settings::default());
    let items: Vec<String> = (0..12)
        .map(|i| format!("https://www.example.com/{i}"))
        .collect();
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    let prepared = p.prepare(&batch(Kind::Url, &refs), 1_700_000_000, 5);
    let tail = prepared.string_to_sign.split("urls.").skip(1);
    let order: Vec<&str> = tail.map(|s| s.split('=').next().unwrap()).collect();
    assert_eq!(
        order,
        ["0", "1", "10", "11", "2", "3", "4", "5", "6", "7", "8", "9"]
    );
    // The request itself keeps the natural order.
    let sent: Vec<String> = names(&prepared)
        .into_iter()
        .filter(|n| n.starts_with("urls."))
        .collect();
    assert_eq!(sent[2], "urls.2");
    assert_eq!(
        verify_sent(&prepared, "cdn.api.qcloud.com", "hunter2-key"),
        Ok(())
    );
}

#[test]
fn endpoint_base_paths_are_kept() {
    for (endpoint, url) in [
        (
            "https://cdn.api.qcloud.com",
            "https://cdn.api.qcloud.com/v2/index.php",
        ),
        ("http://127.0.0.1:1/", "http://127.0.0.1:1/v2/index.php"),
        (
            "http://gw.local/tencent/",
            "http://gw.local/tencent/v2/index.php",
        ),
        (
            "http://gw.local/tencent?x=1",
            "http://gw.local/tencent/v2/index.php",
        ),
    ] {
        assert_eq!(api_url(&url::Url::parse(endpoint).unwrap()).as_str(), url);
    }
}

#[test]
fn every_documented_code_lands_in_its_class() {
    // (common code, codeDesc, message, class, reported code)
    let table: &[(i64, &str, &str, &str, &str)] = &[
        (
            4000,
            "9110",
            "(9110)没有这个域名的信息 cdn no such host",
            "invalid",
            "4000.9110",
        ),
        (
            4000,
            "",
            "(9110)没有这个域名的信息 cdn no such host",
            "invalid",
            "4000.9110",
        ),
        (
            4000,
            "InvalidParameter",
            "(9003)参数错误",
            "invalid",
            "4000.9003",
        ),
        (4000, "InvalidParameter", "missing urls", "invalid", "4000"),
        (
            4000,
            "22044",
            "(22044)URL刷新数目超出单日限额",
            "quota",
            "4000.22044",
        ),
        (
            4000,
            "22046",
            "(22046)目录刷新数目超出单日限额",
            "quota",
            "4000.22046",
        ),
        (4400, "22044", "", "quota", "4400.22044"),
        (
            4000,
            "22043",
            "(22043)单次提交刷新URL超出上限",
            "batch",
            "4000.22043",
        ),
        (4000, "22045", "", "batch", "4000.22045"),
        (
            4000,
            "9163",
            "(9163)操作频繁，请稍后再试",
            "rate",
            "4000.9163",
        ),
        (4000, "22063", "", "rate", "4000.22063"),
        (
            4400,
            "RequestLimitExceeded",
            "请求的次数超过了配额限制",
            "rate",
            "4400",
        ),
        (4000, "9111", "(9111)未开通CDN服务", "auth", "4000.9111"),
        (4000, "9169", "", "auth", "4000.9169"),
        (4000, "25002", "", "auth", "4000.25002"),
        (4100, "AuthFailure.SignatureFailure", "", "auth", "4100"),
        (4101, "", "", "auth", "4101"),
        (4102, "", "", "auth", "4102"),
        (4103, "", "", "auth", "4103"),
        (4104, "AuthFailure.SecretIdNotFound", "", "auth", "4104"),
        (4110, "", "", "auth", "4110"),
        (4200, "", "请求已经过期", "auth", "4200"),
        (4300, "", "", "auth", "4300"),
        (4600, "", "", "auth", "4600"),
        (4500, "ReplayAttack", "Nonce reused", "transient", "4500"),
        (4000, "9000", "(9000)系统错误", "transient", "4000.9000"),
        (4000, "-9015", "", "transient", "4000.-9015"),
        (5000, "", "", "transient", "5000"),
        (5100, "", "", "transient", "5100"),
        (6000, "InternalError", "", "transient", "6000"),
        (6100, "", "", "transient", "6100"),
        (6200, "", "", "transient", "6200"),
        (7777, "", "", "transient", "7777"),
    ];
    for (code, desc, message, want, reported) in table {
        let e = classify(*code, desc, message);
        assert_eq!(class(&e), *want, "{code}/{desc}/{message} → {e:?}");
        assert_eq!(e.code(), *reported);
    }
}

#[test]
fn answers_are_interpreted_whatever_the_status() {
    let ok = r#"{"code":0,"message":"","codeDesc":"Success","data":{"count":1,"task_id":"1480069888795584532"}}"#;
    assert_eq!(
        interpret(200, ok.as_bytes(), None),
        Ok(Receipt {
            task_id: "1480069888795584532".into(),
            request_id: None
        })
    );
    let numeric = br#"{"code":0,"message":"","data":{"count":1,"task_id":1480069888795584532}}"#;
    assert_eq!(
        interpret(200, numeric, None).unwrap().task_id,
        "1480069888795584532"
    );
    let dir = br#"{"code":0,"message":"","data":{"log_id":"952094"}}"#;
    assert_eq!(interpret(200, dir, None).unwrap().task_id, "952094");
    let bare = br#"{"code":"0","message":"","data":[]}"#;
    assert_eq!(interpret(200, bare, None).unwrap().task_id, "");

    let host =
        r#"{"code":4000,"message":"(9110)没有这个域名的信息 cdn no such host","codeDesc":"9110"}"#;
    assert_eq!(
        class(&interpret(200, host.as_bytes(), None).unwrap_err()),
        "invalid"
    );
    assert_eq!(
        class(&interpret(500, host.as_bytes(), None).unwrap_err()),
        "invalid"
    );
    let limited = br#"{"code":4400,"message":"slow","codeDesc":"RequestLimitExceeded"}"#;
    assert_eq!(
        class(&interpret(200, limited, Some(Duration::from_secs(3))).unwrap_err()),
        "rate+after"
    );
    let e = interpret(502, b"<html>Bad Gateway</html>", None).unwrap_err();
    assert_eq!((class(&e), e.code()), ("transient", "HttpStatus.502"));
    assert_eq!(
        class(&interpret(504, b"", None).unwrap_err()),
        "transient+applied"
    );
    assert_eq!(
        class(&interpret(200, b"not json", None).unwrap_err()),
        "transient+applied"
    );
    assert_eq!(
        class(&interpret(200, br#"{"message":"no code"}"#, None).unwrap_err()),
        "transient+applied"
    );
    assert_eq!(
        class(&interpret(414, b"URI Too Long", None).unwrap_err()),
        "batch"
    );
    assert_eq!(class(&interpret(429, b"", None).unwrap_err()), "rate");
}

#[test]
fn actions_capabilities_and_debug() {
    let p = provider("https://cdn.api.qcloud.com", Settings::default());
    assert_eq!(p.action(Kind::Url), "RefreshCdnUrl");
    assert_eq!(p.action(Kind::Dir), "RefreshCdnDir");
    let c = p.capabilities();
    assert!(!c.url_flush_type && !c.wildcards && !c.regex && !c.headers);
    let shown = format!("{p:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(PATH, "/v2/index.php");
}

#[tokio::test]
async fn regex_batches_are_refused_without_a_call() {
    // Port 9 (discard) on localhost: a call would fail with a transport error, not this one.
    let p = provider("http://127.0.0.1:9", Settings::default());
    let e = p
        .purge(&batch(Kind::Regex, &["^/a/.*$"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "RegexUnsupported");
}
