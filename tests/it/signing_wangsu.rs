//! Wangsu CDN Pro signing against the vectors of `tests/fixtures/wangsu.json`.
//!
//! Property: `provider::wangsu_sign` reproduces every vector byte for byte — for the API-key
//! scheme (seed 004's bash/openssl pipeline) the HMAC-SHA1, the base64 password, the Basic
//! credentials and the `Authorization`/`Date` headers, including the key with `$` and `!`; for
//! the AK/SK `CNC-HMAC-SHA256` scheme (`wangsu-sdk-python` 1.0.0) the payload hash, canonical
//! request, string to sign, signature and `Authorization` — and the verifiers the emulator uses
//! accept exactly those headers and refuse them for another key.
//!
//! Also, beyond the vectors: dates are English, GMT and zero-padded whatever the locale, and
//! parsed strictly; both verifiers refuse a wrong key, a changed date or body, a missing signed
//! header and malformed headers; `Debug` never shows a secret.
//!
//! Pass criteria: no field differs (a failure names the case and the field) and the number of
//! cases checked equals the documented count, so a vector cannot be skipped silently.

use crate::vectors::{check, fixture, s};
use purge_worker::provider::wangsu_sign::{
    self, AkSkInput, AkSkReceived, VerifyError, http_date, parse_aksk_authorization,
    parse_http_date, sign_aksk, sign_api_key, verify_aksk, verify_api_key,
};

/// The case counts PROVIDERS.md §4 documents for `vectors/wangsu.json`.
const EXPECTED_API_KEY_CASES: usize = 3;
const EXPECTED_AKSK_CASES: usize = 3;

#[test]
fn every_api_key_vector_is_reproduced_byte_for_byte() {
    let doc = fixture("wangsu.json");
    let cases = doc["api_key_basic"]["cases"]
        .as_array()
        .expect("`api_key_basic.cases` is an array");
    let mut checked = 0;
    for case in cases {
        let id = s(case, "id", "?");
        let inputs = &case["inputs"];
        let expected = &case["expected"];
        let username = s(inputs, "username", id);
        let api_key = s(inputs, "api_key", id);
        let date = s(inputs, "date_header", id);

        // The date must be what our own formatter writes for that instant.
        let ts = wangsu_sign::parse_http_date(date)
            .unwrap_or_else(|| panic!("case {id}: date_header does not parse"));
        check(
            id,
            "http_date",
            &wangsu_sign::http_date(ts).unwrap_or_default(),
            date,
        );

        let signed = sign_api_key(username, api_key, date);
        check(
            id,
            "hmac_sha1_hex",
            &hex::encode(&signed.hmac_sha1),
            s(expected, "hmac_sha1_hex", id),
        );
        check(
            id,
            "password_base64",
            &signed.password,
            s(expected, "password_base64", id),
        );
        check(
            id,
            "password_base64 (api_key_password)",
            &wangsu_sign::api_key_password(api_key, date),
            s(expected, "password_base64", id),
        );
        check(
            id,
            "basic_credentials",
            &signed.basic_credentials,
            s(expected, "basic_credentials", id),
        );
        check(
            id,
            "authorization",
            &signed.authorization,
            s(expected, "authorization", id),
        );
        let headers = &expected["headers"];
        check(
            id,
            "headers.Authorization",
            &signed.authorization,
            s(headers, "Authorization", id),
        );
        check(id, "headers.Date", &signed.date, s(headers, "Date", id));
        check(
            id,
            "headers.Content-Type",
            purge_worker::provider::wangsu::CONTENT_TYPE,
            s(headers, "Content-Type", id),
        );
        check(
            id,
            "headers.Accept",
            purge_worker::provider::wangsu::CONTENT_TYPE,
            s(headers, "Accept", id),
        );

        let authorization = s(expected, "authorization", id);
        let got = verify_api_key(authorization, date, |u| (u == username).then_some(api_key));
        assert_eq!(got.as_deref(), Ok(username), "case {id}: verifier refuses");
        let wrong = verify_api_key(authorization, date, |_| Some("another key"));
        assert!(wrong.is_err(), "case {id}: verifier accepts another key");
        checked += 1;
    }
    assert_eq!(checked, EXPECTED_API_KEY_CASES);
}

#[test]
fn every_aksk_vector_is_reproduced_byte_for_byte() {
    let doc = fixture("wangsu.json");
    let cases = doc["aksk_cnc_hmac_sha256"]["cases"]
        .as_array()
        .expect("`aksk_cnc_hmac_sha256.cases` is an array");
    let mut checked = 0;
    for case in cases {
        let id = s(case, "id", "?");
        let inputs = &case["inputs"];
        let expected = &case["expected"];
        let request_headers = &case["request"]["headers"];
        assert!(
            inputs["signed_headers_requested"].is_null(),
            "case {id}: only the SDK's default signed headers are implemented"
        );
        let method = s(inputs, "http_method", id);
        let uri = s(inputs, "uri", id);
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let timestamp = inputs["timestamp"]
            .as_i64()
            .unwrap_or_else(|| panic!("case {id}: timestamp is not an integer"));
        let body = s(inputs, "body_utf8", id);
        let input = AkSkInput {
            method,
            host: s(inputs, "host", id),
            path,
            query,
            content_type: s(request_headers, "content-type", id),
            payload: body.as_bytes(),
            timestamp,
            access_key: s(inputs, "access_key", id),
            secret_key: s(inputs, "secret_key", id),
        };
        let signed = sign_aksk(&input);
        for (field, got) in [
            ("hashed_payload", &signed.hashed_payload),
            ("canonical_request", &signed.canonical_request),
            ("string_to_sign", &signed.string_to_sign),
            ("signature", &signed.signature),
            ("authorization", &signed.authorization),
        ] {
            check(id, field, got, s(expected, field, id));
        }
        check(
            id,
            "request.headers.Authorization",
            &signed.authorization,
            s(request_headers, "Authorization", id),
        );
        check(
            id,
            "request.headers.x-cnc-timestamp",
            &timestamp.to_string(),
            s(request_headers, "x-cnc-timestamp", id),
        );
        check(
            id,
            "request.headers.x-cnc-auth-method",
            wangsu_sign::AKSK_AUTH_METHOD,
            s(request_headers, "x-cnc-auth-method", id),
        );

        // The verifier accepts the SDK's own request and refuses it under another key.
        let authorization = s(request_headers, "Authorization", id);
        let auth = parse_aksk_authorization(authorization)
            .unwrap_or_else(|e| panic!("case {id}: SDK Authorization does not parse: {e}"));
        check(id, "credential", auth.access_key, input.access_key);
        let headers: Vec<(&str, &str)> = request_headers
            .as_object()
            .expect("request.headers is an object")
            .iter()
            .filter_map(|(n, v)| v.as_str().map(|v| (n.as_str(), v)))
            .collect();
        let ts_text = timestamp.to_string();
        let received = AkSkReceived {
            method,
            path,
            query,
            headers: &headers,
            payload: body.as_bytes(),
            timestamp: &ts_text,
        };
        assert_eq!(
            verify_aksk(&auth, &received, input.secret_key),
            Ok(()),
            "case {id}: verifier refuses the SDK's request"
        );
        assert!(
            verify_aksk(&auth, &received, "another secret").is_err(),
            "case {id}: verifier accepts another key"
        );
        checked += 1;
    }
    assert_eq!(checked, EXPECTED_AKSK_CASES);
}

#[test]
fn dates_are_english_gmt_and_zero_padded() {
    assert_eq!(
        http_date(1_337_283_478).as_deref(),
        Some("Thu, 17 May 2012 19:37:58 GMT")
    );
    assert_eq!(
        http_date(1_736_035_200).as_deref(),
        Some("Sun, 05 Jan 2025 00:00:00 GMT")
    );
    assert_eq!(
        parse_http_date("Thu, 17 May 2012 19:37:58 GMT"),
        Some(1_337_283_478)
    );
    for bad in [
        "Fri, 17 May 2012 19:37:58 GMT",
        "Thu, 17 May 2012 19:37:58 +0000",
        "Sun, 5 Jan 2025 00:00:00 GMT",
        "2012-05-17T19:37:58Z",
    ] {
        assert_eq!(parse_http_date(bad), None, "{bad}");
    }
}

#[test]
fn api_key_round_trip_and_refusals() {
    let date = "Mon, 06 Nov 2023 08:09:10 GMT";
    let s = sign_api_key("u", "k3y$With!Special", date);
    let keys = |u: &str| (u == "u").then_some("k3y$With!Special");
    assert_eq!(
        verify_api_key(&s.authorization, date, keys),
        Ok("u".to_string())
    );
    assert_eq!(
        verify_api_key(&s.authorization, "Mon, 06 Nov 2023 08:09:11 GMT", keys),
        Err(VerifyError::Mismatch)
    );
    let other = sign_api_key("v", "k", date);
    assert_eq!(
        verify_api_key(&other.authorization, date, keys),
        Err(VerifyError::UnknownAccount)
    );
    assert!(matches!(
        verify_api_key("Bearer x", date, keys),
        Err(VerifyError::Malformed(_))
    ));
    let debug = format!("{s:?}");
    assert!(
        !debug.contains(&s.password) && !debug.contains("Basic"),
        "{debug}"
    );
}

#[test]
fn aksk_round_trip_and_refusals() {
    let input = AkSkInput {
        method: "POST",
        host: "127.0.0.1:8089",
        path: "/cdn/purges",
        query: "",
        content_type: "application/json",
        payload: br#"{"target":"production"}"#,
        timestamp: 1_700_000_000,
        access_key: "AK",
        secret_key: "SK",
    };
    let signed = sign_aksk(&input);
    let auth = parse_aksk_authorization(&signed.authorization).unwrap();
    assert_eq!(auth.access_key, "AK");
    let headers = [
        ("Content-Type", "application/json"),
        ("host", "127.0.0.1:8089"),
    ];
    let received = AkSkReceived {
        method: "POST",
        path: "/cdn/purges",
        query: "",
        headers: &headers,
        payload: input.payload,
        timestamp: "1700000000",
    };
    assert_eq!(verify_aksk(&auth, &received, "SK"), Ok(()));
    assert_eq!(
        verify_aksk(&auth, &received, "other"),
        Err(VerifyError::Mismatch)
    );
    let tampered = AkSkReceived {
        payload: br#"{"target":"staging"}"#,
        ..received
    };
    assert_eq!(
        verify_aksk(&auth, &tampered, "SK"),
        Err(VerifyError::Mismatch)
    );
    let no_host = AkSkReceived {
        headers: &headers[..1],
        ..received
    };
    assert_eq!(
        verify_aksk(&auth, &no_host, "SK"),
        Err(VerifyError::MissingSignedHeader("host".into()))
    );
    assert!(parse_aksk_authorization("CNC-HMAC-SHA256 Credential=AK").is_err());
    assert!(!format!("{input:?}").contains("\"SK\""));
}

#[test]
fn get_queries_are_decoded_and_post_queries_ignored() {
    let line = |method, query| {
        let signed = sign_aksk(&AkSkInput {
            method,
            host: "h",
            path: "/p",
            query,
            content_type: "application/json",
            payload: b"",
            timestamp: 0,
            access_key: "AK",
            secret_key: "SK",
        });
        signed
            .canonical_request
            .lines()
            .nth(2)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(line("GET", "a=b%2Fc&d=%E4%B8%AD"), "a=b/c&d=中");
    assert_eq!(line("GET", "bad=%zz"), "bad=%zz");
    assert_eq!(line("POST", "a=b"), "");
}
