//! The emulator against the real `TencentV3` client, in process on 127.0.0.1:0.
//!
//! Property: every error class the worker must handle can be provoked through the emulator and
//! arrives at the client classified as PROVIDERS.md §1.5 says, and what the emulator accepted is
//! exactly what was recorded.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::provider::tencent_v3::TencentV3;
use crate::provider::{Account, Batch, FlushType, Kind, Provider, ProviderError, tc3};

fn client_with(
    endpoint: &url::Url,
    secret_id: &str,
    secret_key: &str,
    timeout_ms: u64,
) -> TencentV3 {
    let mut account = Account::new("emu", endpoint.clone(), secret_id, secret_key);
    account.request_timeout = Duration::from_millis(timeout_ms);
    TencentV3::new(&account, &Default::default()).expect("client builds")
}

fn client(emu: &Emulator) -> TencentV3 {
    client_with(
        &emu.endpoint(),
        EMULATOR_SECRET_ID,
        EMULATOR_SECRET_KEY,
        5_000,
    )
}

async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

fn urls(n: usize) -> Batch {
    Batch {
        kind: Kind::Url,
        flush_type: FlushType::Flush,
        items: (0..n)
            .map(|i| format!("https://www.example.com/{i}.js"))
            .collect(),
        headers: Vec::new(),
    }
}

#[track_caller]
fn assert_code(
    result: Result<crate::provider::Receipt, ProviderError>,
    code: &str,
) -> ProviderError {
    let e = result.expect_err("the call should have been refused");
    assert_eq!(e.code(), code, "{e:?}");
    e
}

/// Sends a hand-signed request, for what the client never does (stale clocks, other actions).
async fn raw_call(emu: &Emulator, action: &str, body: &str, timestamp: i64, key: &str) -> Value {
    let host = emu.addr().to_string();
    let signed = tc3::sign(&tc3::SignInput {
        method: "POST",
        host: &host,
        path: "/",
        query: "",
        content_type: "application/json",
        extra_headers: &[],
        payload: body.as_bytes(),
        timestamp,
        service: "cdn",
        secret_id: EMULATOR_SECRET_ID,
        secret_key: key,
    });
    let response = reqwest::Client::new()
        .post(emu.endpoint())
        .header("Content-Type", "application/json")
        .header("X-TC-Action", action)
        .header("X-TC-Version", "2018-06-06")
        .header("X-TC-Timestamp", timestamp.to_string())
        .header("Authorization", signed.authorization)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the API answers 200 even for errors"
    );
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn signed_purges_succeed_and_are_recorded() {
    let emu = start(EmulatorConfig::default()).await;
    let c = client(&emu);
    let receipt = c.purge(&urls(2)).await.unwrap();
    let (secs, suffix) = receipt.task_id.split_once('-').unwrap();
    assert!(
        secs.parse::<u64>().is_ok() && suffix.len() == 8,
        "{receipt:?}"
    );
    assert!(receipt.request_id.is_some());
    let dirs = Batch {
        kind: Kind::Dir,
        flush_type: FlushType::Delete,
        items: vec!["https://www.example.com/static/".into()],
        headers: Vec::new(),
    };
    c.purge(&dirs).await.unwrap();

    let accepted = emu.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0].action, "PurgeUrlsCache");
    assert_eq!(accepted[0].secret_id, EMULATOR_SECRET_ID);
    assert_eq!(accepted[0].items, urls(2).items);
    assert_eq!(accepted[0].flush_type, None);
    assert_eq!(accepted[1].action, "PurgePathCache");
    assert_eq!(accepted[1].flush_type.as_deref(), Some("delete"));
    assert!(emu.rejected().is_empty());

    // The inspection endpoints show the same records, and DELETE clears them.
    let http = reqwest::Client::new();
    let listed: Vec<RecordedCall> = serde_json::from_slice(
        &http
            .get(format!("{}_emulator/requests", emu.endpoint()))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(listed, accepted);
    let cleared = http
        .delete(format!("{}_emulator/requests", emu.endpoint()))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert!(emu.accepted().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_and_clocks_are_auth_errors() {
    let emu = start(EmulatorConfig::default()).await;
    let wrong_key = client_with(&emu.endpoint(), EMULATOR_SECRET_ID, "not-the-key", 5_000);
    let e = assert_code(
        wrong_key.purge(&urls(1)).await,
        "AuthFailure.SignatureFailure",
    );
    assert!(matches!(e, ProviderError::Auth { .. }), "{e:?}");
    let unknown = client_with(&emu.endpoint(), "AKIDnobody", EMULATOR_SECRET_KEY, 5_000);
    let e = assert_code(
        unknown.purge(&urls(1)).await,
        "AuthFailure.SecretIdNotFound",
    );
    assert!(matches!(e, ProviderError::Auth { .. }), "{e:?}");

    let now = chrono::Utc::now().timestamp();
    let body = r#"{"Urls":["https://www.example.com/a"]}"#;
    let stale = raw_call(&emu, "PurgeUrlsCache", body, now - 400, EMULATOR_SECRET_KEY).await;
    assert_eq!(
        stale["Response"]["Error"]["Code"],
        "AuthFailure.SignatureExpire"
    );
    let fresh = raw_call(&emu, "PurgeUrlsCache", body, now - 200, EMULATOR_SECRET_KEY).await;
    assert!(fresh["Response"]["TaskId"].is_string(), "{fresh}");

    let unsigned = reqwest::Client::new()
        .post(emu.endpoint())
        .body("{}")
        .send()
        .await
        .unwrap();
    let unsigned: Value = serde_json::from_slice(&unsigned.bytes().await.unwrap()).unwrap();
    assert_eq!(
        unsigned["Response"]["Error"]["Code"],
        "AuthFailure.InvalidAuthorization"
    );

    let codes: Vec<String> = emu.rejected().into_iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.SignatureExpire",
            "AuthFailure.InvalidAuthorization"
        ]
    );
    assert_eq!(emu.accepted().len(), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn caps_and_daily_quota_are_enforced() {
    let emu = start(EmulatorConfig {
        urls_per_call: 3,
        urls_per_day: 5,
        ..EmulatorConfig::default()
    })
    .await;
    let c = client(&emu);
    let e = assert_code(
        c.purge(&urls(4)).await,
        "LimitExceeded.CdnPurgeUrlExceedBatchLimit",
    );
    assert!(matches!(e, ProviderError::BatchTooLarge { .. }), "{e:?}");
    c.purge(&urls(3)).await.unwrap();
    let e = assert_code(
        c.purge(&urls(3)).await,
        "LimitExceeded.CdnPurgeUrlExceedDayLimit",
    );
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }), "{e:?}");
    c.purge(&urls(2)).await.unwrap();
    assert_code(
        c.purge(&urls(1)).await,
        "LimitExceeded.CdnPurgeUrlExceedDayLimit",
    );
    assert_eq!(
        emu.accepted().len(),
        2,
        "refused calls are not recorded as accepted"
    );

    let quota = raw_call(
        &emu,
        "DescribePurgeQuota",
        "{}",
        chrono::Utc::now().timestamp(),
        EMULATOR_SECRET_KEY,
    )
    .await;
    let url = &quota["Response"]["UrlPurge"][0];
    assert_eq!(
        (
            url["Batch"].as_u64(),
            url["Total"].as_u64(),
            url["Available"].as_u64()
        ),
        (Some(3), Some(5), Some(0))
    );
    assert_eq!(
        quota["Response"]["PathPurge"][0]["Available"].as_u64(),
        Some(100)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn rate_limit_refuses_the_call_over_the_window() {
    let emu = start(EmulatorConfig {
        requests_per_second: 2,
        ..EmulatorConfig::default()
    })
    .await;
    let c = client(&emu);
    c.purge(&urls(1)).await.unwrap();
    c.purge(&urls(1)).await.unwrap();
    let e = assert_code(c.purge(&urls(1)).await, "RequestLimitExceeded");
    assert!(
        matches!(
            e,
            ProviderError::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{e:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn injected_faults_behave() {
    let emu = start(EmulatorConfig {
        faults: Faults {
            fail_first: 2,
            ..Faults::default()
        },
        ..EmulatorConfig::default()
    })
    .await;
    let c = client(&emu);
    for _ in 0..2 {
        let e = assert_code(c.purge(&urls(1)).await, "InternalError");
        assert!(
            matches!(
                e,
                ProviderError::Transient {
                    maybe_applied: false,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    c.purge(&urls(1)).await.unwrap();

    emu.set_faults(Faults {
        rate_limit_every: 2,
        ..Faults::default()
    });
    c.purge(&urls(1)).await.unwrap();
    assert_code(c.purge(&urls(1)).await, "RequestLimitExceeded");
    c.purge(&urls(1)).await.unwrap();

    emu.set_faults(Faults {
        invalid_urls: HashSet::from(["https://www.example.com/1.js".to_string()]),
        ..Faults::default()
    });
    let e = assert_code(c.purge(&urls(3)).await, "InvalidParameter.CdnParamError");
    assert!(
        matches!(e, ProviderError::InvalidItems { items: None, .. }),
        "{e:?}"
    );
    c.purge(&urls(1)).await.unwrap();

    // Latency past the client's timeout: the purge took effect, the client cannot know.
    let impatient = client_with(
        &emu.endpoint(),
        EMULATOR_SECRET_ID,
        EMULATOR_SECRET_KEY,
        200,
    );
    emu.set_faults(Faults {
        latency: Duration::from_millis(600),
        ..Faults::default()
    });
    let before = emu.accepted().len();
    let e = assert_code(impatient.purge(&urls(1)).await, "Timeout");
    assert!(
        matches!(
            e,
            ProviderError::Transient {
                maybe_applied: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(emu.accepted().len(), before + 1);

    // The same faults over HTTP.
    let set = reqwest::Client::new()
        .post(format!("{}_emulator/faults", emu.endpoint()))
        .body(r#"{"fail_first":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    assert_code(c.purge(&urls(1)).await, "InternalError");
    c.purge(&urls(1)).await.unwrap();
    let bad = reqwest::Client::new()
        .post(format!("{}_emulator/faults", emu.endpoint()))
        .body(r#"{"fail_frist":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let rejections: Vec<RejectedCall> = serde_json::from_slice(
        &reqwest::get(format!("{}_emulator/rejections", emu.endpoint()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rejections, emu.rejected());
    assert_eq!(rejections.len(), 5);
    assert_eq!(
        rejections[3].items.len(),
        3,
        "a refused batch is recorded with its items"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_parameters_and_actions_are_refused() {
    let emu = start(EmulatorConfig::default()).await;
    let now = chrono::Utc::now().timestamp();
    let key = EMULATOR_SECRET_KEY;
    for (action, body, code) in [
        (
            "PurgeUrlsCache",
            r#"{"Urls":[]}"#,
            "InvalidParameter.CdnParamError",
        ),
        (
            "PurgeUrlsCache",
            r#"{"Paths":["https://a/"]}"#,
            "InvalidParameter.CdnParamError",
        ),
        (
            "PurgePathCache",
            r#"{"Paths":["https://a/"],"FlushType":"wipe"}"#,
            "InvalidParameter.CdnParamError",
        ),
        (
            "PurgePathCache",
            r#"{"Paths":["https://a/"]}"#,
            "InvalidParameter.CdnParamError",
        ),
        ("DescribeEverything", "{}", "InvalidAction"),
    ] {
        let answer = raw_call(&emu, action, body, now, key).await;
        assert_eq!(answer["Response"]["Error"]["Code"], code, "{action} {body}");
        assert!(answer["Response"]["RequestId"].is_string());
    }
    assert!(emu.accepted().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_that_was_not_applied() {
    let emu = start(EmulatorConfig::default()).await;
    let endpoint = emu.endpoint();
    emu.shutdown().await;
    let c = client_with(&endpoint, EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, 2_000);
    let e = assert_code(c.purge(&urls(1)).await, "ConnectError");
    assert!(
        matches!(
            e,
            ProviderError::Transient {
                maybe_applied: false,
                ..
            }
        ),
        "{e:?}"
    );
}
