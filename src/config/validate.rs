//! Second stage: [`RawConfig`] → [`Config`], with a precise message per mistake.

use std::collections::HashSet;
use std::time::Duration;

use super::bounds::{DEFAULT_QUOTA_SYNC_INTERVAL_MS, MIN_QUOTA_SYNC_INTERVAL_MS, in_range, millis};
use super::env::{from_env, literal_or_env};
use super::*;
use crate::routing::HostPattern;

/// Parses `"+08:00"`, `"-05:30"`, `"Z"` or `"+00:00"` into seconds east of UTC, at most 14 hours
/// either way (the widest offset in use).
///
/// Decision: not chrono's `FixedOffset` parser. It accepts another set of spellings (it ignores
/// text after the offset, takes `+0800` and `+08 00` and the Unicode minus sign, allows up to
/// 23:59, and has no `Z`) and refuses `+8:00`, which this parser takes; wrapping it to keep this
/// key's accepted forms and range would cost more code than the parser it would replace.
pub fn parse_utc_offset(s: &str) -> Result<i32, String> {
    if s == "Z" || s == "z" {
        return Ok(0);
    }
    let bad = || format!("`{s}` is not a UTC offset like \"+08:00\"");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m > 59 || h < 0 || m < 0 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

impl Config {
    /// Validates a parsed file. `providers` must not be empty.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        super::env::check_env_vars(&raw)?;
        let amqp = AmqpConfig::from_raw(raw.amqp)?;

        let redis_url = literal_or_env("redis.url", raw.redis.url, raw.redis.url_env)?
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string());
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("unix://"))
        {
            return Err(invalid(
                "redis.url",
                "must start with redis://, rediss:// or unix://",
            ));
        }
        let key_prefix = raw
            .redis
            .key_prefix
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
        if key_prefix.is_empty() {
            return Err(invalid("redis.key_prefix", "must not be empty"));
        }

        let listen = raw.http.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!("`{listen}` is not an IP:port address such as 127.0.0.1:9464"),
            )
        })?;

        let tokens = match &raw.http.ingest_tokens_env {
            Some(var) => Some(from_env("http.ingest_tokens_env", var)?),
            None => None,
        };
        let ingest =
            crate::ingest::Settings::new(raw.http.ingest_listen.as_deref(), tokens.as_deref())
                .map_err(|e| invalid(e.key, e.reason))?;

        let b = &raw.batching;
        let batching = BatchingConfig {
            max_linger: millis(
                "batching.max_linger_ms",
                b.max_linger_ms,
                DEFAULT_MAX_LINGER_MS,
                0,
            )?,
            drain_timeout: millis(
                "batching.drain_timeout_ms",
                b.drain_timeout_ms,
                DEFAULT_DRAIN_TIMEOUT_MS,
                0,
            )?,
            max_event_bytes: in_range(
                "batching.max_event_bytes",
                b.max_event_bytes,
                DEFAULT_MAX_EVENT_BYTES,
                1,
                MAX_EVENT_BYTES,
            )?,
        };

        let t = &raw.tracking;
        let tracking = crate::tracking::Settings::from_raw(
            t.poll_interval_ms,
            t.lineage_ttl_hours,
            t.lineage_events_per_key,
            t.lease_ms,
            t.max_pending,
        )
        .map_err(|(key, reason)| invalid(key, reason))?;

        if raw.providers.is_empty() {
            return Err(invalid(
                "providers",
                "no [[providers]] configured: add at least one (or run without a config file to use the built-in emulator)",
            ));
        }
        let mut names = HashSet::new();
        let mut providers = Vec::with_capacity(raw.providers.len());
        for (i, p) in raw.providers.into_iter().enumerate() {
            let provider = provider_from_raw(i, p)?;
            if !names.insert(provider.name.clone()) {
                return Err(invalid(
                    format!("providers[{i}].name"),
                    format!("`{}` is used by two providers", provider.name),
                ));
            }
            providers.push(provider);
        }
        check_domains_unique(&providers)?;

        Ok(Config {
            amqp,
            redis: RedisConfig {
                url: Secret::new(redis_url),
                key_prefix,
                shared_rate_limits: raw.redis.shared_rate_limits.unwrap_or(true),
            },
            listen,
            ingest,
            batching,
            tracking,
            providers,
        })
    }

    /// The configuration used when no file exists: local services on default ports and one
    /// `tencent-v3` provider named `emulator` for every host, pointed at `emulator_endpoint`.
    pub fn builtin(emulator_endpoint: url::Url, secret_id: &str, secret_key: &str) -> Config {
        let mut config = Config::from_raw(RawConfig {
            providers: vec![RawProvider {
                name: Some("emulator".into()),
                kind: Some("tencent-v3".into()),
                endpoint: Some(emulator_endpoint.to_string()),
                secret_id: Some(secret_id.into()),
                secret_key: Some(secret_key.into()),
                domains: vec![RawDomain {
                    host: Some("*".into()),
                    ignore_query: false,
                    prefetch_after_purge: false,
                    dir_escalation: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .expect("built-in configuration is valid"); // invariant: covered by a unit test
        config.providers[0].endpoint = emulator_endpoint;
        config
    }
}

fn provider_from_raw(i: usize, mut p: RawProvider) -> Result<ProviderConfig, ConfigError> {
    let at = |key: &str| format!("providers[{i}].{key}");
    let name = p
        .name
        .take()
        .ok_or_else(|| invalid(at("name"), "is required"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(invalid(
            at("name"),
            format!(
                "`{name}` must be non-empty and use only ASCII letters, digits, '-', '_' or '.'"
            ),
        ));
    }
    let kind_s = p.kind.take().ok_or_else(|| {
        invalid(
            at("kind"),
            format!("is required ({})", ProviderKind::SUPPORTED),
        )
    })?;
    let kind: ProviderKind = kind_s.parse().map_err(|_| {
        invalid(
            at("kind"),
            format!(
                "`{kind_s}` is not a supported provider kind (supported: {})",
                ProviderKind::SUPPORTED
            ),
        )
    })?;
    let d = kind.defaults();
    let endpoint_s = p.endpoint.take().unwrap_or_else(|| d.endpoint.to_string());
    let endpoint = url::Url::parse(&endpoint_s)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            invalid(
                at("endpoint"),
                format!("`{endpoint_s}` is not an http(s) URL"),
            )
        })?;

    let parts = super::kinds::kind_parts(&at, kind, &mut p)?;
    let quota_window = super::kinds::quota_window(&at, p.quota_window.as_deref(), d.quota_window)?;

    let mut rate_limits = Vec::new();
    let rps = p.requests_per_second.unwrap_or(d.requests_per_second);
    let rpm = p.requests_per_minute.unwrap_or(d.requests_per_minute);
    if rps == 0 {
        return Err(invalid(at("requests_per_second"), "must be at least 1"));
    }
    if rpm == 0 {
        return Err(invalid(at("requests_per_minute"), "must be at least 1"));
    }
    rate_limits.push(RateLimit {
        limit: rps,
        window: Duration::from_secs(1),
    });
    rate_limits.push(RateLimit {
        limit: rpm,
        window: Duration::from_secs(60),
    });
    let extra_limits = p
        .rate_limits
        .unwrap_or_else(|| d.rate_limits.iter().map(|s| s.to_string()).collect());
    for (j, s) in extra_limits.iter().enumerate() {
        rate_limits
            .push(RateLimit::parse(s).map_err(|r| invalid(at(&format!("rate_limits[{j}]")), r))?);
    }
    rate_limits.sort_by_key(|r| r.window);

    let quota_utc_offset_secs = match p.quota_utc_offset {
        Some(s) => parse_utc_offset(&s).map_err(|r| invalid(at("quota_utc_offset"), r))?,
        None => d.quota_utc_offset_secs,
    };

    let retry_base = millis(
        &at("retry_base_ms"),
        p.retry_base_ms,
        DEFAULT_RETRY_BASE_MS,
        1,
    )?;
    let retry_max = millis(&at("retry_max_ms"), p.retry_max_ms, DEFAULT_RETRY_MAX_MS, 1)?;
    let retry = Backoff::new(retry_base, retry_max).map_err(|_| {
        invalid(
            at("retry_max_ms"),
            "retry_base_ms must be at least 1 and retry_max_ms at least retry_base_ms",
        )
    })?;
    let connect_timeout = millis(
        &at("connect_timeout_ms"),
        p.connect_timeout_ms,
        DEFAULT_CONNECT_TIMEOUT_MS,
        1,
    )?;
    let request_timeout = millis(
        &at("request_timeout_ms"),
        p.request_timeout_ms,
        DEFAULT_REQUEST_TIMEOUT_MS,
        1,
    )?;
    let per_call = |key: &str, v: Option<usize>, default: usize| {
        in_range(&at(key), v, default, 1, MAX_PER_CALL)
    };
    let per_day =
        |key: &str, v: Option<u64>, default: u64| in_range(&at(key), v, default, 0, MAX_PER_DAY);

    if p.domains.is_empty() {
        return Err(invalid(
            at("domains"),
            "no [[providers.domains]]: a provider must serve at least one host",
        ));
    }
    let mut domains = Vec::with_capacity(p.domains.len());
    for (j, dom) in p.domains.into_iter().enumerate() {
        let key = at(&format!("domains[{j}].host"));
        let host = dom.host.ok_or_else(|| invalid(&key, "is required"))?;
        let host = HostPattern::parse(&host).map_err(|r| invalid(&key, r))?;
        let dir_escalation = in_range(
            &at(&format!("domains[{j}].dir_escalation")),
            dom.dir_escalation,
            0,
            0,
            u64::from(u32::MAX),
        )?;
        domains.push(DomainRule {
            host,
            ignore_query: dom.ignore_query,
            prefetch_after_purge: dom.prefetch_after_purge,
            dir_escalation: u32::try_from(dir_escalation).unwrap_or(u32::MAX),
        });
    }

    Ok(ProviderConfig {
        name,
        kind,
        endpoint,
        secret_id: Secret::new(parts.secret_id),
        secret_key: Secret::new(parts.secret_key),
        rate_limits,
        urls_per_call: per_call("urls_per_call", p.urls_per_call, d.urls_per_call)?,
        dirs_per_call: per_call("dirs_per_call", p.dirs_per_call, d.dirs_per_call)?,
        regex_per_call: per_call("regex_per_call", p.regex_per_call, d.regex_per_call)?,
        quota_sync: crate::dispatch::QuotaSync {
            interval: millis(
                &at("quota_sync_interval_ms"),
                p.quota_sync_interval_ms,
                DEFAULT_QUOTA_SYNC_INTERVAL_MS,
                MIN_QUOTA_SYNC_INTERVAL_MS,
            )?,
            adopt_total: [p.urls_per_day.is_none(), p.dirs_per_day.is_none()],
        },
        urls_per_day: per_day("urls_per_day", p.urls_per_day, d.urls_per_day)?,
        dirs_per_day: per_day("dirs_per_day", p.dirs_per_day, d.dirs_per_day)?,
        prefetch_per_day: per_day("prefetch_per_day", p.prefetch_per_day, d.prefetch_per_day)?,
        quota_utc_offset_secs,
        quota_window,
        options: parts.options,
        retry,
        connect_timeout,
        request_timeout,
        max_in_flight: in_range(
            &at("max_in_flight"),
            p.max_in_flight,
            DEFAULT_MAX_IN_FLIGHT,
            1,
            MAX_IN_FLIGHT,
        )?,
        max_attempts: in_range(
            &at("max_attempts"),
            p.max_attempts,
            DEFAULT_MAX_ATTEMPTS,
            1,
            MAX_ATTEMPTS,
        )?,
        interactive_reserve: reserve(&at("interactive_reserve"), p.interactive_reserve)?,
        domains,
    })
}

/// `interactive_reserve`: a finite share from 0 to [`MAX_INTERACTIVE_RESERVE`].
fn reserve(key: &str, v: Option<f64>) -> Result<f64, ConfigError> {
    let v = v.unwrap_or(DEFAULT_INTERACTIVE_RESERVE);
    if !v.is_finite() || !(0.0..=MAX_INTERACTIVE_RESERVE).contains(&v) {
        return Err(invalid(
            key,
            format!(
                "{v} is out of range: must be a share between 0 and {MAX_INTERACTIVE_RESERVE} (0.2 keeps a fifth of every window for interactive purges)"
            ),
        ));
    }
    Ok(v)
}

/// A host pattern may be claimed by one provider only, or routing would be ambiguous.
fn check_domains_unique(providers: &[ProviderConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashMap::new();
    for (i, p) in providers.iter().enumerate() {
        for (j, d) in p.domains.iter().enumerate() {
            if let Some(owner) = seen.insert(d.host.clone(), p.name.clone()) {
                return Err(invalid(
                    format!("providers[{i}].domains[{j}].host"),
                    format!("`{}` is already routed to provider `{owner}`", d.host),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
