//! The per-kind part of a `[[providers]]` entry: which credential keys it takes and the settings
//! only its API family has. Keys of another family are errors, not silently ignored.

use super::validate::literal_or_env;
use super::*;

/// tencent-v2: how parameters travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// Form body (`application/x-www-form-urlencoded`); long batches fit.
    Post,
    /// Everything in the query string; long batches may overflow URL limits.
    Get,
}

impl HttpMethod {
    /// The method name, also the first part of the v2 string to sign.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Get => "GET",
        }
    }
}

/// tencent-v2: the HMAC behind `Signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMethod {
    /// `HmacSHA1` (the API's default when `SignatureMethod` is absent).
    HmacSha1,
    /// `HmacSHA256` (sent as `SignatureMethod=HmacSHA256`).
    HmacSha256,
}

impl SignatureMethod {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha1 => "HmacSHA1",
            SignatureMethod::HmacSha256 => "HmacSHA256",
        }
    }
}

/// wangsu: how requests are authenticated (PROVIDERS.md §3.5, §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WangsuAuth {
    /// `Date` + Basic `username:base64(HMAC-SHA1(api_key, date))`.
    ApiKey,
    /// `CNC-HMAC-SHA256` with an AccessKey/SecretKey pair.
    AkSk,
}

/// Settings that only one API family has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindOptions {
    TencentV3,
    TencentV2 {
        http_method: HttpMethod,
        signature_method: SignatureMethod,
    },
    Wangsu {
        auth: WangsuAuth,
        /// `production` or `staging`.
        target: String,
        webhook: Option<String>,
        purge_name: Option<String>,
    },
}

/// Credentials and options taken out of `p`; the rest of `p` is validated by the caller.
pub(super) struct KindParts {
    pub secret_id: String,
    pub secret_key: String,
    pub options: KindOptions,
}

/// A key that belongs to another provider kind is a mistake worth naming.
fn reject<T>(
    at: &dyn Fn(&str) -> String,
    key: &str,
    value: &Option<T>,
    kind: ProviderKind,
    owner: &str,
) -> Result<(), ConfigError> {
    if value.is_some() {
        return Err(invalid(
            at(key),
            format!(
                "is a {owner} setting; provider kind `{}` does not take it",
                kind.as_str()
            ),
        ));
    }
    Ok(())
}

/// A required credential: a literal or an `_env` twin, non-empty.
fn required(
    at: &dyn Fn(&str) -> String,
    key: &str,
    literal: Option<String>,
    env: Option<String>,
) -> Result<String, ConfigError> {
    let v = literal_or_env(&at(key), literal, env)?
        .ok_or_else(|| invalid(at(key), format!("is required (or {key}_env)")))?;
    if v.is_empty() {
        return Err(invalid(at(key), "must not be empty"));
    }
    Ok(v)
}

pub(super) fn kind_parts(
    at: &dyn Fn(&str) -> String,
    kind: ProviderKind,
    p: &mut RawProvider,
) -> Result<KindParts, ConfigError> {
    if kind != ProviderKind::TencentV2 {
        reject(at, "http_method", &p.http_method, kind, "tencent-v2")?;
        reject(
            at,
            "signature_method",
            &p.signature_method,
            kind,
            "tencent-v2",
        )?;
    }
    if kind != ProviderKind::Wangsu {
        for (key, v) in [
            ("auth_scheme", &p.auth_scheme),
            ("username", &p.username),
            ("username_env", &p.username_env),
            ("api_key", &p.api_key),
            ("api_key_env", &p.api_key_env),
            ("target", &p.target),
            ("webhook", &p.webhook),
            ("purge_name", &p.purge_name),
        ] {
            reject(at, key, v, kind, "wangsu")?;
        }
        reject(at, "regex_per_call", &p.regex_per_call, kind, "wangsu")?;
    }
    let tencent_credentials = |p: &mut RawProvider| -> Result<(String, String), ConfigError> {
        Ok((
            required(at, "secret_id", p.secret_id.take(), p.secret_id_env.take())?,
            required(
                at,
                "secret_key",
                p.secret_key.take(),
                p.secret_key_env.take(),
            )?,
        ))
    };
    let (secret_id, secret_key, options) = match kind {
        ProviderKind::TencentV3 => {
            let (id, key) = tencent_credentials(p)?;
            (id, key, KindOptions::TencentV3)
        }
        ProviderKind::TencentV2 => {
            let (id, key) = tencent_credentials(p)?;
            let http_method = match p.http_method.as_deref() {
                None | Some("POST") => HttpMethod::Post,
                Some("GET") => HttpMethod::Get,
                Some(other) => {
                    return Err(invalid(
                        at("http_method"),
                        format!("`{other}` is not POST or GET"),
                    ));
                }
            };
            let signature_method = match p.signature_method.as_deref() {
                None | Some("HmacSHA1") => SignatureMethod::HmacSha1,
                Some("HmacSHA256") => SignatureMethod::HmacSha256,
                Some(other) => {
                    return Err(invalid(
                        at("signature_method"),
                        format!("`{other}` is not HmacSHA1 or HmacSHA256"),
                    ));
                }
            };
            (
                id,
                key,
                KindOptions::TencentV2 {
                    http_method,
                    signature_method,
                },
            )
        }
        ProviderKind::Wangsu => {
            let auth = match p.auth_scheme.as_deref() {
                None | Some("api-key") => WangsuAuth::ApiKey,
                Some("aksk") => WangsuAuth::AkSk,
                Some(other) => {
                    return Err(invalid(
                        at("auth_scheme"),
                        format!("`{other}` is not api-key or aksk"),
                    ));
                }
            };
            let (id, key) = match auth {
                WangsuAuth::ApiKey => {
                    for (key, v) in [
                        ("secret_id", &p.secret_id),
                        ("secret_id_env", &p.secret_id_env),
                        ("secret_key", &p.secret_key),
                        ("secret_key_env", &p.secret_key_env),
                    ] {
                        if v.is_some() {
                            return Err(invalid(
                                at(key),
                                "wangsu with auth_scheme = \"api-key\" signs with `username` and `api_key`; set auth_scheme = \"aksk\" to use secret_id/secret_key as AccessKey/SecretKey",
                            ));
                        }
                    }
                    (
                        required(at, "username", p.username.take(), p.username_env.take())?,
                        required(at, "api_key", p.api_key.take(), p.api_key_env.take())?,
                    )
                }
                WangsuAuth::AkSk => {
                    for (key, v) in [
                        ("username", &p.username),
                        ("username_env", &p.username_env),
                        ("api_key", &p.api_key),
                        ("api_key_env", &p.api_key_env),
                    ] {
                        if v.is_some() {
                            return Err(invalid(
                                at(key),
                                "wangsu with auth_scheme = \"aksk\" signs with secret_id (AccessKey) and secret_key (SecretKey)",
                            ));
                        }
                    }
                    tencent_credentials(p)?
                }
            };
            let target = p.target.take().unwrap_or_else(|| "production".into());
            if target != "production" && target != "staging" {
                return Err(invalid(
                    at("target"),
                    format!("`{target}` is not production or staging"),
                ));
            }
            (
                id,
                key,
                KindOptions::Wangsu {
                    auth,
                    target,
                    webhook: p.webhook.take().filter(|w| !w.is_empty()),
                    purge_name: p.purge_name.take().filter(|n| !n.is_empty()),
                },
            )
        }
    };
    Ok(KindParts {
        secret_id,
        secret_key,
        options,
    })
}

/// `quota_window`, defaulting to the kind's.
pub(super) fn quota_window(
    at: &dyn Fn(&str) -> String,
    raw: Option<&str>,
    default: QuotaWindow,
) -> Result<QuotaWindow, ConfigError> {
    match raw {
        None => Ok(default),
        Some(s) => QuotaWindow::parse(s).ok_or_else(|| {
            invalid(
                at("quota_window"),
                format!("`{s}` is not \"day\" or \"rolling-24h\""),
            )
        }),
    }
}
