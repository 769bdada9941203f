//! The v2 emulator against the real `TencentV2` client, in process on 127.0.0.1:0.
//!
//! Property: the client and the emulator agree on the wire (GET and POST, HmacSHA1 and
//! HmacSHA256), and every refusal the API documents — unknown SecretId, bad signature, reused
//! Nonce, stale Timestamp, per-call caps, daily quota, rate limit, "no such host" — reaches the
//! client classified as `provider::tencent_v2::classify` says.

use std::time::Duration;

use serde_json::Value;

use crate::emulator::{
    EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY, Emulator, EmulatorConfig, Faults, V2Limits,
};
use crate::provider::qcloud_v2::SignatureMethod;
use crate::provider::qcloud_v2::{self, SignInput};
use crate::provider::tencent_v2::{HttpMethod, Settings, TencentV2};
use crate::provider::{Account, DEFAULT_REQUEST_TIMEOUT_MS};
use crate::provider::{Batch, FlushType, Kind, Provider, ProviderError, Receipt};

/// A client of the emulator's account (or another `id`/`key`) with `settings`, and a request
/// timeout of `timeout_ms`.
fn client_timed(
    emu: &Emulator,
    settings: Settings,
    id: &str,
    key: &str,
    timeout_ms: u64,
) -> TencentV2 {
    let mut account = Account::new("emu", emu.endpoint(), id, key);
    account.request_timeout = Duration::from_millis(timeout_ms);
    TencentV2::new(&account, &settings).expect("client builds")
}

fn client_with(emu: &Emulator, settings: Settings, id: &str, key: &str) -> TencentV2 {
    client_timed(emu, settings, id, key, DEFAULT_REQUEST_TIMEOUT_MS)
}

fn client(emu: &Emulator, settings: Settings) -> TencentV2 {
    client_with(emu, settings, EMULATOR_SECRET_ID, EMULATOR_SECRET_KEY)
}

const GET: Settings = Settings {
    http_method: HttpMethod::Get,
    signature_method: SignatureMethod::HmacSha1,
};

async fn start(limits: V2Limits, faults: Faults) -> Emulator {
    let config = EmulatorConfig {
        tencent_v2: limits,
        faults,
        ..EmulatorConfig::default()
    };
    Emulator::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("emulator starts")
}

fn batch(kind: Kind, n: usize) -> Batch {
    let items = (0..n)
        .map(|i| match kind {
            Kind::Url => format!("https://www.example.com/{i}.js"),
            _ => format!("https://www.example.com/d{i}/"),
        })
        .collect();
    Batch {
        kind,
        flush_type: FlushType::Delete,
        items,
        headers: Vec::new(),
    }
}

#[track_caller]
fn assert_code(result: Result<Receipt, ProviderError>, code: &str) -> ProviderError {
    let e = result.expect_err("the call should have been refused");
    assert_eq!(e.code(), code, "{e:?}");
    e
}

/// Sends a hand-signed request, for what the client never does (replays, stale clocks, other
/// parameter spellings). `params` exclude `Signature`.
async fn raw_call(emu: &Emulator, method: &str, params: &[(&str, &str)]) -> Value {
    let host = emu.addr().to_string();
    let signature_method = qcloud_v2::signature_method_of(
        params
            .iter()
            .find(|(n, _)| *n == "SignatureMethod")
            .map(|(_, v)| *v),
    )
    .unwrap();
    let signed = qcloud_v2::sign(&SignInput {
        method,
        host: &host,
        path: qcloud_v2::PATH,
        params,
        signature_method,
        secret_key: EMULATOR_SECRET_KEY,
    });
    let url = format!("http://{host}{}", qcloud_v2::PATH);
    let http = reqwest::Client::new();
    let request = if method == "GET" {
        http.get(format!("{url}?{}", signed.encoded))
    } else {
        // No Content-Type at all, like curl without -H: read as a form.
        http.post(url).body(signed.encoded)
    };
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status(),
        200,
        "the API answers 200 even for errors"
    );
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

#[tokio::test]
async fn post_sha1_and_get_sha256_round_trips_are_recorded() {
    let emu = start(V2Limits::default(), Faults::default()).await;
    let post = client(&emu, Settings::default());
    let receipt = post.purge(&batch(Kind::Url, 12)).await.unwrap();
    assert_eq!(receipt.task_id.len(), 19, "{receipt:?}");
    assert!(receipt.task_id.bytes().all(|b| b.is_ascii_digit()));
    let get = client(
        &emu,
        Settings {
            http_method: HttpMethod::Get,
            signature_method: SignatureMethod::HmacSha256,
        },
    );
    let dir = get.purge(&batch(Kind::Dir, 2)).await.unwrap();
    assert!(!dir.task_id.is_empty(), "RefreshCdnDir's log_id: {dir:?}");
    let sha256_post = client(
        &emu,
        Settings {
            signature_method: SignatureMethod::HmacSha256,
            ..Settings::default()
        },
    );
    sha256_post.purge(&batch(Kind::Dir, 1)).await.unwrap();
    let sha1_get = client(&emu, GET);
    sha1_get.purge(&batch(Kind::Url, 1)).await.unwrap();

    let accepted = emu.accepted();
    assert_eq!(accepted.len(), 4);
    assert_eq!(accepted[0].action, "RefreshCdnUrl");
    assert_eq!(accepted[0].items, batch(Kind::Url, 12).items, "index order");
    assert_eq!(accepted[0].secret_id, EMULATOR_SECRET_ID);
    assert_eq!(accepted[0].flush_type, None, "the v2 API has no FlushType");
    assert_eq!(accepted[1].action, "RefreshCdnDir");
    assert_eq!(accepted[1].items, batch(Kind::Dir, 2).items);
    assert!(emu.rejected().is_empty(), "{:?}", emu.rejected());
    emu.shutdown().await;
}

#[tokio::test]
async fn credentials_are_checked() {
    let emu = start(V2Limits::default(), Faults::default()).await;
    let wrong_key = client_with(&emu, Settings::default(), EMULATOR_SECRET_ID, "not-the-key");
    let e = assert_code(wrong_key.purge(&batch(Kind::Url, 1)).await, "4100");
    assert!(matches!(e, ProviderError::Auth { .. }), "{e:?}");
    let unknown = client_with(&emu, Settings::default(), "AKIDnobody", EMULATOR_SECRET_KEY);
    let e = assert_code(unknown.purge(&batch(Kind::Url, 1)).await, "4104");
    assert!(matches!(e, ProviderError::Auth { .. }), "{e:?}");
    let rejected = emu.rejected();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].action, "RefreshCdnUrl");
    assert_eq!(rejected[0].items, batch(Kind::Url, 1).items);
    assert!(emu.accepted().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn a_reused_nonce_and_a_stale_timestamp_are_replays() {
    let emu = start(V2Limits::default(), Faults::default()).await;
    let ts = now();
    let params = [
        ("Action", "RefreshCdnUrl"),
        ("SecretId", EMULATOR_SECRET_ID),
        ("Timestamp", ts.as_str()),
        ("Nonce", "4242"),
        ("urls.0", "https://www.example.com/replayed"),
    ];
    let first = raw_call(&emu, "POST", &params).await;
    assert_eq!(first["code"], 0, "{first}");
    assert_eq!(first["codeDesc"], "Success");
    assert_eq!(first["data"]["count"], 1);
    let replay = raw_call(&emu, "POST", &params).await;
    assert_eq!(replay["code"], 4500, "{replay}");

    let stale = (chrono::Utc::now().timestamp() - 7300).to_string();
    let old = [
        ("Action", "RefreshCdnUrl"),
        ("SecretId", EMULATOR_SECRET_ID),
        ("Timestamp", stale.as_str()),
        ("Nonce", "4343"),
        ("urls.0", "https://www.example.com/old"),
    ];
    assert_eq!(raw_call(&emu, "GET", &old).await["code"], 4500);
    let late = (chrono::Utc::now().timestamp() - 7000).to_string();
    let fine = [
        ("Action", "RefreshCdnUrl"),
        ("SecretId", EMULATOR_SECRET_ID),
        ("Timestamp", late.as_str()),
        ("Nonce", "4444"),
        ("SignatureMethod", "HmacSHA256"),
        ("urls_0", "https://www.example.com/php-spelling"),
    ];
    let ok = raw_call(&emu, "GET", &fine).await;
    assert_eq!(
        ok["code"], 0,
        "within two hours, `_` spelling accepted: {ok}"
    );
    let purged: Vec<String> = emu.accepted().into_iter().flat_map(|c| c.items).collect();
    assert_eq!(
        purged,
        [
            "https://www.example.com/replayed",
            "https://www.example.com/php-spelling"
        ]
    );
    let codes: Vec<String> = emu.rejected().into_iter().map(|r| r.code).collect();
    assert_eq!(codes, ["4500", "4500"]);

    // The client itself never replays: each attempt is signed afresh.
    let c = client(&emu, Settings::default());
    for _ in 0..5 {
        c.purge(&batch(Kind::Url, 1)).await.unwrap();
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_parameter_errors() {
    let emu = start(V2Limits::default(), Faults::default()).await;
    let ts = now();
    let call = |action: &'static str, nonce: &'static str, item: (&'static str, &'static str)| {
        let params = [
            ("Action", action),
            ("SecretId", EMULATOR_SECRET_ID),
            ("Timestamp", ts.as_str()),
            ("Nonce", nonce),
            item,
        ];
        let emu = &emu;
        async move { raw_call(emu, "POST", &params).await }
    };
    let unknown = call("PurgeEverything", "1", ("urls.0", "https://a/x")).await;
    assert_eq!(unknown["code"], 4000, "{unknown}");
    let ftp = call("RefreshCdnUrl", "2", ("urls.0", "ftp://a/x")).await;
    assert_eq!(
        (&ftp["code"], &ftp["codeDesc"]),
        (&4000.into(), &"9003".into())
    );
    let none = call("RefreshCdnDir", "3", ("urls.0", "https://a/x")).await;
    assert_eq!(
        none["codeDesc"], "9003",
        "RefreshCdnDir needs dirs.N: {none}"
    );
    let json = reqwest::Client::new()
        .post(format!("{}v2/index.php", emu.endpoint()))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&json.bytes().await.unwrap()).unwrap();
    assert_eq!(json["code"], 4000, "{json}");
    let unsigned = reqwest::get(format!(
        "{}v2/index.php?Action=RefreshCdnUrl&SecretId={EMULATOR_SECRET_ID}",
        emu.endpoint()
    ))
    .await
    .unwrap();
    let unsigned: Value = serde_json::from_slice(&unsigned.bytes().await.unwrap()).unwrap();
    assert_eq!(unsigned["code"], 4100, "{unsigned}");
    assert!(emu.accepted().is_empty());
    emu.shutdown().await;
}

#[tokio::test]
async fn caps_and_daily_quotas_refuse_whole_calls() {
    let limits = V2Limits {
        urls_per_call: 3,
        dirs_per_call: 2,
        urls_per_day: 5,
        dirs_per_day: 2,
        ..V2Limits::default()
    };
    let emu = start(limits, Faults::default()).await;
    let c = client(&emu, Settings::default());
    let e = assert_code(c.purge(&batch(Kind::Url, 4)).await, "4000.22043");
    assert!(matches!(e, ProviderError::BatchTooLarge { .. }), "{e:?}");
    let e = assert_code(c.purge(&batch(Kind::Dir, 3)).await, "4000.22045");
    assert!(matches!(e, ProviderError::BatchTooLarge { .. }), "{e:?}");

    c.purge(&batch(Kind::Url, 3)).await.unwrap();
    let e = assert_code(c.purge(&batch(Kind::Url, 3)).await, "4000.22044");
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }), "{e:?}");
    c.purge(&batch(Kind::Url, 2)).await.unwrap();
    c.purge(&batch(Kind::Dir, 2)).await.unwrap();
    let e = assert_code(c.purge(&batch(Kind::Dir, 1)).await, "4000.22046");
    assert!(matches!(e, ProviderError::QuotaExhausted { .. }), "{e:?}");
    let spent: usize = emu.accepted().iter().map(|c| c.items.len()).sum();
    assert_eq!(spent, 7, "5 URLs and 2 dirs, nothing past the quota");
    emu.shutdown().await;
}

#[tokio::test]
async fn an_unknown_host_refuses_the_whole_call_without_naming_it() {
    let bad = "https://www.example.com/1.js";
    let faults = Faults {
        invalid_urls: [bad.to_string()].into(),
        ..Faults::default()
    };
    let emu = start(V2Limits::default(), faults).await;
    let c = client(&emu, Settings::default());
    let e = assert_code(c.purge(&batch(Kind::Url, 3)).await, "4000.9110");
    assert!(
        matches!(e, ProviderError::InvalidItems { items: None, .. }),
        "{e:?}"
    );
    let rejected = emu.rejected();
    assert_eq!(rejected[0].items.len(), 3);
    // Without the bad item the rest goes through.
    let mut good = batch(Kind::Url, 3);
    good.items.retain(|i| i != bad);
    c.purge(&good).await.unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_and_the_rate_limit_are_retryable() {
    let limits = V2Limits {
        requests_per_minute: 4,
        ..V2Limits::default()
    };
    let faults = Faults {
        fail_first: 1,
        rate_limit_every: 3,
        ..Faults::default()
    };
    let emu = start(limits, faults).await;
    let c = client(&emu, Settings::default());
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(match c.purge(&batch(Kind::Url, 1)).await {
            Ok(_) => "ok".to_string(),
            Err(e) => {
                let class = match e {
                    ProviderError::Transient {
                        maybe_applied: false,
                        ..
                    } => "transient",
                    ProviderError::RateLimited { .. } => "rate",
                    _ => "other",
                };
                format!("{}:{class}", e.code())
            }
        });
    }
    // Call 1 internal error, 3 injected rate limit, 5 over 4 per minute.
    assert_eq!(
        codes,
        ["6000:transient", "ok", "4400:rate", "ok", "4400:rate"]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_timeout_after_sending_may_have_been_applied() {
    let faults = Faults {
        latency: Duration::from_millis(400),
        ..Faults::default()
    };
    let emu = start(V2Limits::default(), faults).await;
    let c = client_timed(
        &emu,
        Settings::default(),
        EMULATOR_SECRET_ID,
        EMULATOR_SECRET_KEY,
        100,
    );
    let e = c.purge(&batch(Kind::Url, 1)).await.unwrap_err();
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
    assert_eq!(emu.accepted().len(), 1, "the call did take effect");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_get_too_long_to_send_is_a_batch_too_large_not_a_retry() {
    let emu = start(V2Limits::default(), Faults::default()).await;
    let get = client(&emu, GET);
    let big = batch(Kind::Url, 200);
    let e = assert_code(get.purge(&big).await, "GetUrlTooLong");
    assert!(matches!(e, ProviderError::BatchTooLarge { .. }), "{e:?}");
    assert!(
        emu.accepted().is_empty() && emu.rejected().is_empty(),
        "nothing was sent"
    );
    // Halved until it fits, as the dispatcher does; and the whole batch fits in a POST body.
    let mut half = big.clone();
    half.items.truncate(50);
    get.purge(&half).await.unwrap();
    client(&emu, Settings::default()).purge(&big).await.unwrap();
    assert_eq!(emu.accepted().len(), 2);
    emu.shutdown().await;
}
