//! The Wangsu emulator against the real `Wangsu` client, in process on 127.0.0.1:0.
//!
//! Property: what the client sends for each lane (files with headers, directories with
//! wildcards, regex, either action, either target, either auth scheme) is accepted and recorded
//! exactly; every refusal the emulator can produce — auth, clock, replay, token bucket, caps,
//! invalid entries, rolling quota, injected faults — reaches the client classified as
//! PROVIDERS.md §3.3 says, with the refused URL named where the API names it.

use std::time::Duration;

use serde_json::Value;

use super::super::{Emulator, EmulatorConfig, Faults};
use super::*;
use crate::provider::Account;
use crate::provider::wangsu::{Settings, Target, Wangsu, WangsuAuth};
use crate::provider::wangsu_sign::{self, AkSkInput};
use crate::provider::{Batch, FlushType, Kind, Provider, ProviderError, Receipt};

/// A client of the emulator's Wangsu account with `settings`: the API-key pair or the AK/SK
/// pair, as `settings.auth` says.
fn client(emu: &Emulator, settings: Settings) -> Wangsu {
    let (id, key) = match settings.auth {
        WangsuAuth::ApiKey => (EMULATOR_WANGSU_USERNAME, EMULATOR_WANGSU_API_KEY),
        WangsuAuth::AkSk => (EMULATOR_WANGSU_ACCESS_KEY, EMULATOR_WANGSU_SECRET_KEY),
    };
    Wangsu::new(&Account::new("ws", emu.endpoint(), id, key), &settings).expect("client builds")
}

async fn start(limits: WangsuLimits) -> Emulator {
    let config = EmulatorConfig {
        wangsu: limits,
        ..EmulatorConfig::default()
    };
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

fn batch(kind: Kind, flush_type: FlushType, items: &[&str]) -> Batch {
    Batch {
        kind,
        flush_type,
        items: items.iter().map(|s| s.to_string()).collect(),
        headers: Vec::new(),
    }
}

fn files(n: usize) -> Batch {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("https://www.example.com/{i}.js"))
        .collect();
    batch(
        Kind::Url,
        FlushType::Flush,
        &urls.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

#[track_caller]
fn assert_code(result: Result<Receipt, ProviderError>, code: &str) -> ProviderError {
    let e = result.expect_err("the call should have been refused");
    assert_eq!(e.code(), code, "{e:?}");
    e
}

/// A request signed by hand with the API-key scheme, for what the client never does.
async fn raw(
    emu: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: &str,
    date: &str,
    api_key: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let signed = wangsu_sign::sign_api_key(EMULATOR_WANGSU_USERNAME, api_key, date);
    let url = emu.endpoint().join(path).unwrap();
    let response = reqwest::Client::new()
        .request(method, url)
        .header("Date", date)
        .header("Authorization", signed.authorization)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, json)
}

fn now_date() -> String {
    wangsu_sign::http_date(chrono::Utc::now().timestamp()).unwrap()
}

async fn post(emu: &Emulator, body: &str) -> (u16, Value) {
    let (status, _, json) = raw(
        emu,
        reqwest::Method::POST,
        "cdn/purges",
        body,
        &now_date(),
        EMULATOR_WANGSU_API_KEY,
    )
    .await;
    (status, json)
}

async fn get(emu: &Emulator, path: &str) -> (u16, Value) {
    let (status, _, json) = raw(
        emu,
        reqwest::Method::GET,
        path,
        "",
        &now_date(),
        EMULATOR_WANGSU_API_KEY,
    )
    .await;
    (status, json)
}

#[tokio::test]
async fn file_purges_with_headers_round_trip_and_report_their_status() {
    let emu = start(WangsuLimits::default()).await;
    let c = client(&emu, Settings::default());
    let mut b = files(2);
    let header = |name: &str, value: &str| crate::provider::Header {
        name: name.into(),
        value: value.into(),
    };
    b.headers = vec![header("X-Device", "mobile"), header("X-Lang", "zh")];
    let receipt = c.purge(&b).await.unwrap();
    assert_eq!(receipt.task_id.len(), 24, "{receipt:?}");
    assert!(receipt.task_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(receipt.request_id.as_deref().map(str::len), Some(32));

    let calls = emu.accepted();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        (call.action.as_str(), call.secret_id.as_str()),
        ("CreatePurge", EMULATOR_WANGSU_USERNAME)
    );
    assert_eq!(call.items, b.items);
    assert_eq!(call.flush_type.as_deref(), Some("invalidate"));
    let w = call.wangsu.as_ref().unwrap();
    assert_eq!(w.purge_id, receipt.task_id);
    assert_eq!(w.file_urls, b.items);
    assert_eq!(w.file_headers, b.headers);
    assert!(w.dir_urls.is_empty() && w.regex_patterns.is_empty());
    assert_eq!(
        (w.target.as_str(), &w.name, &w.webhook),
        ("production", &None, &None)
    );

    let (status, json) = get(&emu, &format!("cdn/purges/{}", receipt.task_id)).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["status"], "finished");
    assert_eq!(json["successRate"], 100);
    assert_eq!(json["fileUrls"].as_array().unwrap().len(), 2);
    assert_eq!(json["fileHeaders"][1]["name"], "X-Lang");
    assert_eq!(json["apiRequestId"].as_str(), receipt.request_id.as_deref());
    let (status, json) = get(&emu, "cdn/purges/000000000000000000000000").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (404, Some("InvalidPurgeTaskId"))
    );
}

#[tokio::test]
async fn aksk_dirs_with_wildcards_and_regex_reach_staging_with_delete() {
    let emu = start(WangsuLimits::default()).await;
    let c = client(
        &emu,
        Settings {
            auth: WangsuAuth::AkSk,
            target: Target::Staging,
            webhook: Some("wh-7".into()),
            purge_name: Some("nightly".into()),
        },
    );
    let dirs = batch(
        Kind::Dir,
        FlushType::Delete,
        &[
            "https://www.example.com/a/**",
            "https://www.example.com/b/*.jpg",
            "https://www.example.com/my**jpg",
        ],
    );
    c.purge(&dirs).await.unwrap();
    let regex = batch(
        Kind::Regex,
        FlushType::Flush,
        &[
            r"https://www.example.com/my.*\.(jpg|png)\?q=",
            r"any://img\.example\.com/x+",
        ],
    );
    c.purge(&regex).await.unwrap();
    // The same batch again at once: signed with a fresh timestamp, not refused as a replay.
    c.purge(&regex).await.unwrap();

    let calls = emu.accepted();
    assert_eq!(calls.len(), 3, "{:?}", emu.rejected());
    assert_eq!(calls[0].secret_id, EMULATOR_WANGSU_ACCESS_KEY);
    let d = calls[0].wangsu.as_ref().unwrap();
    assert_eq!(d.dir_urls, dirs.items);
    assert_eq!(
        (d.action.as_str(), d.target.as_str()),
        ("delete", "staging")
    );
    assert_eq!(
        (d.name.as_deref(), d.webhook.as_deref()),
        (Some("nightly"), Some("wh-7"))
    );
    let r = calls[1].wangsu.as_ref().unwrap();
    assert_eq!(r.regex_patterns, regex.items);
    assert_eq!(r.action, "invalidate");
    assert!(r.file_urls.is_empty() && r.dir_urls.is_empty());

    // The rolling dir quota of staging was spent (3 dirs + 2 + 2 regex), production's was not.
    let (_, staging) = get(&emu, "cdn/purges/purgeTokens?target=staging").await;
    assert_eq!(staging["dirPurgeTokens"], 13);
    let (_, production) = get(&emu, "cdn/purges/purgeTokens?target=production").await;
    assert_eq!(
        (
            production["filePurgeTokens"].as_u64(),
            production["dirPurgeTokens"].as_u64()
        ),
        (Some(5000), Some(20))
    );
}

#[tokio::test]
async fn bad_credentials_stale_dates_and_replays_are_denied() {
    let emu = start(WangsuLimits::default()).await;
    let wrong_key = Wangsu::new(
        &Account::new("ws", emu.endpoint(), EMULATOR_WANGSU_USERNAME, "nope"),
        &Settings::default(),
    )
    .unwrap();
    assert!(matches!(
        assert_code(wrong_key.purge(&files(1)).await, "AccessDenied"),
        ProviderError::Auth { .. }
    ));
    let wrong_sk = Wangsu::new(
        &Account::new("ws", emu.endpoint(), EMULATOR_WANGSU_ACCESS_KEY, "nope"),
        &Settings {
            auth: WangsuAuth::AkSk,
            ..Settings::default()
        },
    )
    .unwrap();
    assert_code(wrong_sk.purge(&files(1)).await, "AccessDenied");

    let body = r#"{"fileUrls":["https://www.example.com/a"],"target":"production"}"#;
    let old = wangsu_sign::http_date(chrono::Utc::now().timestamp() - 301).unwrap();
    let (status, _, json) = raw(
        &emu,
        reqwest::Method::POST,
        "cdn/purges",
        body,
        &old,
        EMULATOR_WANGSU_API_KEY,
    )
    .await;
    assert_eq!((status, json["code"].as_str()), (401, Some("AccessDenied")));
    assert!(json["message"].as_str().unwrap().contains("-30"), "{json}");

    // AK/SK: a correctly signed request is accepted once; the identical request is a replay.
    let host = emu.addr().to_string();
    let ts = chrono::Utc::now().timestamp();
    let signed = wangsu_sign::sign_aksk(&AkSkInput {
        method: "POST",
        host: &host,
        path: "/cdn/purges",
        query: "",
        content_type: "application/json",
        payload: body.as_bytes(),
        timestamp: ts,
        access_key: EMULATOR_WANGSU_ACCESS_KEY,
        secret_key: EMULATOR_WANGSU_SECRET_KEY,
    });
    let send = || {
        reqwest::Client::new()
            .post(emu.endpoint().join("cdn/purges").unwrap())
            .header("Content-Type", "application/json")
            .header("x-cnc-accessKey", EMULATOR_WANGSU_ACCESS_KEY)
            .header("x-cnc-timestamp", ts.to_string())
            .header("x-cnc-auth-method", "AKSK")
            .header("Authorization", signed.authorization.clone())
            .body(body)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 201);
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), 401);
    let text = replay.text().await.unwrap();
    assert!(text.contains("already used"), "{text}");
    let codes: Vec<_> = emu.rejected().into_iter().map(|r| r.code).collect();
    assert_eq!(codes, ["AccessDenied"; 4]);
}

#[tokio::test]
async fn an_empty_bucket_answers_429_with_the_wait_and_refused_calls_spend_tokens() {
    let emu = start(WangsuLimits {
        api_rate_per_min: 1,
        api_burst: 3,
        ..WangsuLimits::default()
    })
    .await;
    let c = client(&emu, Settings::default());
    // A refused call (no target) spends a token like any other.
    let (status, json) = post(&emu, r#"{"fileUrls":["https://www.example.com/a"]}"#).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("InvalidTarget"))
    );
    c.purge(&files(1)).await.unwrap();
    c.purge(&files(2)).await.unwrap();
    let e = assert_code(c.purge(&files(3)).await, "TooManyRequests");
    match e {
        ProviderError::RateLimited {
            retry_after: Some(wait),
            ..
        } => assert!(
            (Duration::from_secs(59)..=Duration::from_secs(60)).contains(&wait),
            "{wait:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(emu.accepted().len(), 2);
}

#[tokio::test]
async fn invalid_entries_are_refused_naming_the_entry_and_the_client_isolates_it() {
    let emu = start(WangsuLimits::default()).await;
    let c = client(&emu, Settings::default());
    let bad = "http://domain.info/i/image/gallery/123%abc.jpg";
    let b = batch(
        Kind::Url,
        FlushType::Flush,
        &["http://domain.info/ok.jpg", bad],
    );
    match assert_code(c.purge(&b).await, "InvalidPurgeUrl") {
        ProviderError::InvalidItems { items, message, .. } => {
            assert_eq!(items, Some(vec![bad.to_string()]), "{message}");
            assert!(message.starts_with(&format!("The purge URL '{bad}' is invalid")));
        }
        other => panic!("{other:?}"),
    }
    let regex = batch(
        Kind::Regex,
        FlushType::Flush,
        &[r"https://h.example.com/a.*b.*c+"],
    );
    match assert_code(c.purge(&regex).await, "InvalidRegexPattern") {
        ProviderError::InvalidItems { items, .. } => assert_eq!(items, Some(regex.items.clone())),
        other => panic!("{other:?}"),
    }

    // The "invalid URL" fault refuses the whole call, naming the URL like the seed's message.
    let flagged = "https://www.example.com/1.js";
    emu.set_faults(Faults {
        invalid_urls: [flagged.to_string()].into(),
        ..Faults::default()
    });
    match assert_code(c.purge(&files(3)).await, "InvalidPurgeUrl") {
        ProviderError::InvalidItems { items, .. } => {
            assert_eq!(items, Some(vec![flagged.to_string()]));
        }
        other => panic!("{other:?}"),
    }
    let rejected = emu.rejected();
    assert_eq!(rejected.len(), 3);
    assert_eq!(rejected[2].items.len(), 3, "refused calls keep their items");
    assert!(emu.accepted().is_empty());

    let dup = r#"{"fileUrls":["https://www.example.com/a"],"target":"production",
        "fileHeaders":[{"name":"X-A","value":"1"},{"name":"x-a","value":"2"}]}"#;
    let (status, json) = post(&emu, dup).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("DuplicateFileHeaderName"))
    );
    let (status, json) = post(
        &emu,
        r#"{"dirUrls":["https://w.example.com/d/"],"target":"qa"}"#,
    )
    .await;
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("InvalidTarget"))
    );
    let (status, json) = post(&emu, r#"{"target":"production"}"#).await;
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("NoPurgeEntries"))
    );
    let (status, json) = post(&emu, "fileUrls=x").await;
    assert_eq!(
        (status, json["code"].as_str()),
        (400, Some("InvalidRequestBody"))
    );
}

#[tokio::test]
async fn per_call_caps_are_batch_too_large() {
    let emu = start(WangsuLimits {
        files_per_call: 2,
        ..WangsuLimits::default()
    })
    .await;
    let c = client(&emu, Settings::default());
    c.purge(&files(2)).await.unwrap();
    assert!(matches!(
        assert_code(c.purge(&files(3)).await, "TooManyPurgeEntries"),
        ProviderError::BatchTooLarge { .. }
    ));
    let three = batch(
        Kind::Regex,
        FlushType::Flush,
        &[
            "https://h.example.com/a",
            "https://h.example.com/b",
            "https://h.example.com/c",
        ],
    );
    assert_code(c.purge(&three).await, "TooManyPurgeEntries");
    let dirs: Vec<String> = (0..21)
        .map(|i| format!("https://h.example.com/{i}/"))
        .collect();
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    assert_code(
        c.purge(&batch(Kind::Dir, FlushType::Flush, &dirs)).await,
        "TooManyPurgeEntries",
    );
}

#[tokio::test]
async fn the_rolling_quota_refuses_whole_calls_per_target() {
    let emu = start(WangsuLimits {
        files_per_24h: 3,
        dirs_per_24h: 1,
        ..WangsuLimits::default()
    })
    .await;
    let c = client(&emu, Settings::default());
    c.purge(&files(2)).await.unwrap();
    let e = assert_code(c.purge(&files(2)).await, "PurgeQuotaExceeded");
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }), "{e:?}");
    let (_, tokens) = get(&emu, "cdn/purges/purgeTokens").await;
    assert_eq!(
        tokens["filePurgeTokens"], 1,
        "a refused call spends nothing"
    );
    c.purge(&files(1)).await.unwrap();

    let dir = batch(Kind::Dir, FlushType::Flush, &["https://h.example.com/d/"]);
    c.purge(&dir).await.unwrap();
    let regex = batch(Kind::Regex, FlushType::Flush, &["https://h.example.com/.*"]);
    assert_code(c.purge(&regex).await, "PurgeQuotaExceeded");

    let staging = client(
        &emu,
        Settings {
            target: Target::Staging,
            ..Settings::default()
        },
    );
    staging.purge(&files(3)).await.unwrap();
    assert_eq!(emu.accepted().len(), 4);
}

#[tokio::test]
async fn injected_faults_arrive_classified() {
    let emu = start(WangsuLimits::default()).await;
    emu.set_faults(Faults {
        fail_first: 1,
        rate_limit_every: 3,
        ..Faults::default()
    });
    let c = client(
        &emu,
        Settings {
            auth: WangsuAuth::AkSk,
            ..Settings::default()
        },
    );
    assert!(matches!(
        assert_code(c.purge(&files(1)).await, "InternalError"),
        ProviderError::Transient {
            maybe_applied: false,
            ..
        }
    ));
    c.purge(&files(1)).await.unwrap();
    assert_eq!(
        c.purge(&files(1)).await,
        Err(ProviderError::RateLimited {
            code: "TooManyRequests".into(),
            retry_after: Some(Duration::from_secs(1)),
        })
    );
    assert_eq!(emu.accepted().len(), 1);
}
