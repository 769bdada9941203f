use super::*;

fn input<'a>(payload: &'a [u8], extra: &'a [(&'a str, &'a str)]) -> SignInput<'a> {
    SignInput {
        method: "POST",
        host: "127.0.0.1:8089",
        path: "/",
        query: "",
        content_type: "application/json",
        extra_headers: extra,
        payload,
        timestamp: 1_700_000_000,
        service: "cdn",
        secret_id: "AKIDtest",
        secret_key: "k3y",
    }
}

fn received<'a>(
    headers: &'a [(&'a str, &'a str)],
    payload: &'a [u8],
    timestamp: &'a str,
) -> Received<'a> {
    Received {
        method: "POST",
        path: "/",
        query: "",
        headers,
        payload,
        timestamp,
    }
}

#[test]
fn sign_then_verify_round_trips_with_default_and_extra_headers() {
    let body = br#"{"Urls":["https://a/x"]}"#;
    for extra in [&[][..], &[("X-TC-Action", "PurgeUrlsCache")][..]] {
        let s = sign(&input(body, extra));
        let auth = parse_authorization(&s.authorization).unwrap();
        assert_eq!(auth.secret_id, "AKIDtest");
        assert_eq!(auth.date, "2023-11-14");
        let headers = [
            ("Host", "127.0.0.1:8089"),
            ("Content-Type", "application/json"),
            ("X-TC-Action", "PurgeUrlsCache"),
        ];
        let r = received(&headers, body, "1700000000");
        assert_eq!(verify(&auth, &r, "k3y"), Ok(()));
        assert_eq!(verify(&auth, &r, "other"), Err(VerifyError::Mismatch));
        let r = received(&headers, b"{}", "1700000000");
        assert_eq!(verify(&auth, &r, "k3y"), Err(VerifyError::Mismatch));
    }
    let s = sign(&input(body, &[("X-TC-Action", "PurgeUrlsCache")]));
    assert!(s.canonical_request.contains("x-tc-action:purgeurlscache\n"));
    assert_eq!(s.signed_headers, "content-type;host;x-tc-action");
}

#[test]
fn verify_names_the_problem() {
    let s = sign(&input(b"", &[]));
    let auth = parse_authorization(&s.authorization).unwrap();
    let only_host = [("host", "127.0.0.1:8089")];
    assert_eq!(
        verify(&auth, &received(&only_host, b"", "1700000000"), "k3y"),
        Err(VerifyError::MissingSignedHeader("content-type".into()))
    );
    let headers = [
        ("host", "127.0.0.1:8089"),
        ("content-type", "application/json"),
    ];
    let e = verify(&auth, &received(&headers, b"", "1700086400"), "k3y").unwrap_err();
    assert!(matches!(e, VerifyError::DateMismatch { .. }), "{e:?}");
    assert_eq!(e.tencent_code(), "AuthFailure.SignatureFailure");
}

#[test]
fn malformed_headers_are_refused() {
    let sig = "a".repeat(64);
    for bad in [
        "".to_string(),
        format!("HMAC Credential=a/2023-11-14/cdn/tc3_request, SignedHeaders=host, Signature={sig}"),
        format!("TC3-HMAC-SHA256 Credential=a/2023-11-14/cdn, SignedHeaders=host, Signature={sig}"),
        format!("TC3-HMAC-SHA256 Credential=a/2023-11-14/cdn/tc3_request, SignedHeaders=Host, Signature={sig}"),
        "TC3-HMAC-SHA256 Credential=a/2023-11-14/cdn/tc3_request, SignedHeaders=host, Signature=xyz".to_string(),
        format!("TC3-HMAC-SHA256 Credential=a/2023-11-14/cdn/tc3_request, Signature={sig}"),
    ] {
        let e = parse_authorization(&bad).unwrap_err();
        assert_eq!(e.tencent_code(), "AuthFailure.InvalidAuthorization", "{bad}");
    }
    let ok = format!(
        "TC3-HMAC-SHA256 Credential=a/2023-11-14/cdn/tc3_request,SignedHeaders=host,Signature={sig}"
    );
    assert!(parse_authorization(&ok).is_ok());
}

#[test]
fn scope_date_is_utc_not_beijing() {
    // 2023-11-14T17:00Z is already the 15th in Beijing.
    assert_eq!(
        credential_date(1_699_981_200).as_deref(),
        Some("2023-11-14")
    );
}

#[test]
fn debug_hides_the_key_and_derived_keys() {
    let i = input(b"", &[]);
    let s = sign(&i);
    let shown = format!("{i:?} {s:?}");
    assert!(!shown.contains("k3y"));
    assert!(!shown.contains(&hex::encode(&s.secret_signing)));
}
