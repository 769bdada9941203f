use super::*;
use crate::provider::FlushType;
use crate::provider::http::host_header;
use crate::provider::test_class as class;

#[test]
fn every_documented_code_lands_in_its_class() {
    let table: &[(&str, &[&str])] = &[
        (
            "rate",
            &[
                "RequestLimitExceeded",
                "RequestLimitExceeded.IPLimitExceeded",
                "RequestLimitExceeded.UinLimitExceeded",
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                "UnauthorizedOperation.OperationTooOften",
            ],
        ),
        (
            "quota",
            &[
                "LimitExceeded.CdnPurgeUrlExceedDayLimit",
                "LimitExceeded.CdnPurgePathExceedDayLimit",
                "LimitExceeded.CdnPurgeExceedDayLimit",
            ],
        ),
        (
            "batch",
            &[
                "LimitExceeded.CdnPurgeUrlExceedBatchLimit",
                "LimitExceeded.CdnPurgePathExceedBatchLimit",
                "LimitExceeded.CdnPurgeExceedBatchLimit",
                "RequestSizeLimitExceeded",
            ],
        ),
        (
            "transient",
            &[
                "InternalError",
                "InternalError.CdnSystemError",
                "InternalError.CdnDbError",
                "InternalError.CdnConfigError",
                "InternalError.CdnQuerySystemError",
                "InternalError.CdnQueryParamError",
                "InternalError.CamSystemError",
                "InternalError.ProxyServer",
                "InternalError.RouteError",
                "InternalError.UnknownError",
                "InternalError.Error",
                "ServiceUnavailable",
                "ResourceInUse",
                "SomethingNew.NeverDocumented",
                "LimitExceeded.SomethingElse",
            ],
        ),
        (
            "auth",
            &[
                "AuthFailure.SignatureFailure",
                "AuthFailure.SignatureExpire",
                "AuthFailure.SecretIdNotFound",
                "AuthFailure.InvalidSecretId",
                "AuthFailure.TokenFailure",
                "AuthFailure.InvalidAuthorization",
                "AuthFailure.UnauthorizedOperation",
                "AuthFailure.MFAFailure",
                "UnauthorizedOperation.CdnCamUnauthorized",
                "UnauthorizedOperation.CdnUserAuthFail",
                "UnauthorizedOperation.CdnUserAuthWait",
                "UnauthorizedOperation.CdnUserIsSuspended",
                "UnauthorizedOperation.OpNoAuth",
                "UnauthorizedOperation.EcdnMigratedCdn",
                "ResourceNotFound.CdnUserNotExists",
                "IpInBlacklist",
                "IpNotInWhitelist",
            ],
        ),
        (
            "host",
            &[
                "UnauthorizedOperation.CdnHostUnauthorized",
                "InvalidParameter.CdnHostInvalidStatus",
                "ResourceNotFound.CdnHostNotExists",
                "ResourceUnavailable.CdnHostIsNotOnline",
            ],
        ),
        (
            "invalid",
            &[
                "InvalidParameter.CdnParamError",
                "InvalidParameter.CdnUrlExceedLength",
                "InvalidParameter.CdnPurgeWildcardNotAllowed",
                "InvalidParameter.CdnStatInvalidDate",
                "InvalidParameter.CdnInterfaceError",
                "MissingParameter",
                "InvalidParameterValue",
                "UnknownParameter",
                "InvalidAction",
                "NoSuchVersion",
                "UnsupportedProtocol",
                "UnsupportedOperation",
                "ActionOffline",
            ],
        ),
    ];
    for (want, codes) in table {
        for code in *codes {
            let e = classify(code, "msg");
            assert_eq!(class(&e), *want, "{code} classified as {e:?}");
            assert_eq!(e.code(), *code);
        }
    }
    // Prefix matching respects the dot: a longer word is not a sub-code.
    assert_eq!(class(&classify("InternalErrorX", "")), "transient");
    assert_eq!(class(&classify("AuthFailureish", "")), "transient");
}

fn provider(endpoint: &str) -> TencentV3 {
    let endpoint = url::Url::parse(endpoint).expect("test endpoint is a URL");
    let account = Account::new("t", endpoint, "AKIDtest", "hunter2-key");
    TencentV3::new(&account, &Settings::default()).expect("client builds")
}

fn header<'a>(p: &'a SignedPost, name: &str) -> &'a str {
    p.headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[test]
fn url_batch_becomes_a_signed_purge_urls_cache_call() {
    let p = provider("http://127.0.0.1:8089");
    assert_eq!(p.endpoint.host, "127.0.0.1:8089");
    let batch = Batch {
        kind: Kind::Url,
        flush_type: FlushType::Delete,
        items: vec![
            "https://a.example/x".into(),
            "https://a.example/y?z=1".into(),
        ],
        headers: Vec::new(),
    };
    let prepared = p.prepare(&batch, 1_700_000_000).unwrap();
    assert_eq!(
        std::str::from_utf8(&prepared.body).unwrap(),
        r#"{"Urls":["https://a.example/x","https://a.example/y?z=1"]}"#
    );
    assert_eq!(header(&prepared, "Content-Type"), "application/json");
    assert_eq!(header(&prepared, "X-TC-Action"), "PurgeUrlsCache");
    assert_eq!(header(&prepared, "X-TC-Version"), "2018-06-06");
    assert_eq!(header(&prepared, "X-TC-Timestamp"), "1700000000");
    assert_eq!(header(&prepared, "X-TC-Language"), "en-US");

    // The signature covers exactly the body and headers that are sent.
    let auth = tc3::parse_authorization(header(&prepared, "Authorization")).unwrap();
    assert_eq!(auth.secret_id, "AKIDtest");
    assert_eq!(auth.service, "cdn");
    assert_eq!(auth.signed_headers, "content-type;host");
    let mut headers: Vec<(&str, &str)> = prepared
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    headers.push(("host", "127.0.0.1:8089"));
    let received = tc3::Received {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        payload: &prepared.body,
        timestamp: "1700000000",
    };
    assert_eq!(tc3::verify(&auth, &received, "hunter2-key"), Ok(()));
}

#[test]
fn dir_batch_carries_paths_and_flush_type() {
    let p = provider("https://cdn.tencentcloudapi.com");
    assert_eq!(p.endpoint.host, "cdn.tencentcloudapi.com");
    assert_eq!(p.endpoint.url.path(), "/");
    for (flush, word) in [(FlushType::Flush, "flush"), (FlushType::Delete, "delete")] {
        let batch = Batch {
            kind: Kind::Dir,
            flush_type: flush,
            items: vec!["https://a.example/d/".into()],
            headers: Vec::new(),
        };
        let prepared = p.prepare(&batch, 1_700_000_000).unwrap();
        assert_eq!(
            String::from_utf8(prepared.body.clone()).unwrap(),
            format!(r#"{{"Paths":["https://a.example/d/"],"FlushType":"{word}"}}"#)
        );
        assert_eq!(header(&prepared, "X-TC-Action"), "PurgePathCache");
    }
    assert_eq!(p.action(Kind::Url), "PurgeUrlsCache");
    assert_eq!(p.action(Kind::Dir), "PurgePathCache");
    assert!(!p.capabilities().url_flush_type && !p.capabilities().wildcards);
}

#[test]
fn host_header_matches_what_reqwest_sends() {
    for (endpoint, host) in [
        (
            "https://cdn.tencentcloudapi.com/",
            "cdn.tencentcloudapi.com",
        ),
        (
            "https://cdn.tencentcloudapi.com:443/",
            "cdn.tencentcloudapi.com",
        ),
        ("http://127.0.0.1:80/", "127.0.0.1"),
        ("http://127.0.0.1:8089/", "127.0.0.1:8089"),
        ("https://example.com:8443/", "example.com:8443"),
        ("http://[::1]:9000/", "[::1]:9000"),
    ] {
        assert_eq!(host_header(&url::Url::parse(endpoint).unwrap()), host);
    }
}

#[test]
fn answers_are_interpreted_whatever_the_status() {
    let ok = br#"{"Response":{"TaskId":"1533045796-i60rfmzm","RequestId":"r-1"}}"#;
    assert_eq!(
        interpret(200, ok, None),
        Ok(Receipt {
            task_id: "1533045796-i60rfmzm".into(),
            request_id: Some("r-1".into())
        })
    );
    let err = br#"{"Response":{"Error":{"Code":"LimitExceeded.CdnPurgeUrlExceedDayLimit","Message":"m"},"RequestId":"r"}}"#;
    assert_eq!(class(&interpret(200, err, None).unwrap_err()), "quota");
    assert_eq!(class(&interpret(500, err, None).unwrap_err()), "quota");
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
        class(&interpret(200, br#"{"Response":{}}"#, None).unwrap_err()),
        "transient+applied"
    );
    assert_eq!(
        class(&interpret(429, b"slow down", Some(Duration::from_secs(2))).unwrap_err()),
        "rate+after"
    );
}

#[test]
fn debug_never_shows_the_secret_key() {
    let p = provider("https://cdn.tencentcloudapi.com");
    let shown = format!("{p:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
