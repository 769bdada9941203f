//! The per-kind part of a `[[providers]]` entry: which credential keys it takes and the settings
//! only its API family has. Keys of another family are errors, not silently ignored.

use super::env::literal_or_env;
use super::*;
use crate::provider::qcloud_v2::SignatureMethod;
use crate::provider::tencent_v2::{self, HttpMethod};
use crate::provider::tencent_v3;
use crate::provider::wangsu::{self, Target, WangsuAuth};

/// Credentials and options taken out of `p`; the rest of `p` is validated by the caller.
pub(super) struct KindParts {
    pub secret_id: String,
    pub secret_key: String,
    pub options: ApiSettings,
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

/// A setting spelled as one of `T`'s names (`expected` lists them), `T`'s default when unset.
fn spelled<T: std::str::FromStr + Default>(
    at: &dyn Fn(&str) -> String,
    key: &str,
    raw: &Option<String>,
    expected: &str,
) -> Result<T, ConfigError> {
    match raw.as_deref() {
        None => Ok(T::default()),
        Some(s) => s
            .parse()
            .map_err(|_| invalid(at(key), format!("`{s}` is not {expected}"))),
    }
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
    if kind != ProviderKind::TencentV3 {
        reject(at, "quota_area", &p.quota_area, kind, "tencent-v3")?;
    }
    let quota_area = match p.quota_area.take() {
        None => tencent_v3::DEFAULT_QUOTA_AREA.to_string(),
        Some(a) if matches!(a.as_str(), "mainland" | "overseas") => a,
        Some(a) => {
            return Err(invalid(
                at("quota_area"),
                format!(
                    "`{}` is not an Area of DescribePurgeQuota: use \"mainland\" or \"overseas\" (where the account's domains are accelerated)",
                    a.chars().take(64).collect::<String>()
                ),
            ));
        }
    };
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
            (
                id,
                key,
                ApiSettings::TencentV3(tencent_v3::Settings { quota_area }),
            )
        }
        ProviderKind::TencentV2 => {
            let (id, key) = tencent_credentials(p)?;
            let http_method =
                spelled::<HttpMethod>(at, "http_method", &p.http_method, "POST or GET")?;
            let signature_method = spelled::<SignatureMethod>(
                at,
                "signature_method",
                &p.signature_method,
                "HmacSHA1 or HmacSHA256",
            )?;
            (
                id,
                key,
                ApiSettings::TencentV2(tencent_v2::Settings {
                    http_method,
                    signature_method,
                }),
            )
        }
        ProviderKind::Wangsu => {
            let auth = spelled::<WangsuAuth>(at, "auth_scheme", &p.auth_scheme, "api-key or aksk")?;
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
            let target = spelled::<Target>(at, "target", &p.target, "production or staging")?;
            (
                id,
                key,
                ApiSettings::Wangsu(wangsu::Settings {
                    auth,
                    target,
                    webhook: p.webhook.take().filter(|w| !w.is_empty()),
                    purge_name: p.purge_name.take().filter(|n| !n.is_empty()),
                }),
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
        Some(s) => s.parse().map_err(|_| {
            invalid(
                at("quota_window"),
                format!("`{s}` is not \"day\" or \"rolling-24h\""),
            )
        }),
    }
}
