//! Authentication of emulated Wangsu calls: the API-key scheme (`Date` + Basic) and AK/SK
//! (`CNC-HMAC-SHA256`), both checked with [`crate::provider::wangsu_sign`].
//!
//! Every failure is 401 `AccessDenied`, as the API documents; the message says why (the real
//! API is terser, but a test double that explains itself saves debugging time).

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};

use super::state::WangsuState;
use super::{Refusal, WangsuLimits};
use crate::provider::wangsu_sign::{
    self, AKSK_ALGORITHM, AkSkReceived, parse_aksk_authorization, verify_aksk, verify_api_key,
};

fn denied(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, "AccessDenied", message)
}

fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the request's credentials and clock; returns the account (username or AccessKey).
/// `replay_protected` turns on the AK/SK rule that a signature may be used once per skew
/// window (the emulator applies it to purge creation).
pub(super) fn authenticate(
    limits: &WangsuLimits,
    ws: &mut WangsuState,
    request: (&Method, &Uri, &HeaderMap, &[u8]),
    replay_protected: bool,
    now_ms: i64,
) -> Result<String, Refusal> {
    let (method, uri, headers, body) = request;
    let auth = header_text(headers, header::AUTHORIZATION.as_str())
        .ok_or_else(|| denied("missing Authorization header"))?;
    let now = now_ms.div_euclid(1000);
    let skew_ok = |ts: i64| (ts - now).abs() <= limits.max_date_skew_secs;

    if auth.starts_with("Basic ") {
        // CDNetworks allows `x-cnc-date` for clients that cannot set `Date`; it wins when both
        // are present, since a proxy may rewrite `Date` but leaves it alone.
        let date = header_text(headers, "x-cnc-date")
            .or_else(|| header_text(headers, header::DATE.as_str()))
            .ok_or_else(|| denied("missing Date (or x-cnc-date) header"))?;
        let ts = wangsu_sign::parse_http_date(date).ok_or_else(|| {
            denied("the Date header is not an RFC 1123 GMT date such as 'Thu, 17 May 2012 19:37:58 GMT'")
        })?;
        if !skew_ok(ts) {
            return Err(denied(format!(
                "the Date header is {} s from server time (allowed ±{} s)",
                ts - now,
                limits.max_date_skew_secs
            )));
        }
        return verify_api_key(auth, date, |user| {
            limits
                .accounts
                .iter()
                .find(|(u, _)| u == user)
                .map(|(_, k)| k.as_str())
        })
        .map_err(|e| denied(e.to_string()));
    }

    if auth.starts_with(AKSK_ALGORITHM) {
        let parsed = parse_aksk_authorization(auth).map_err(|e| denied(e.to_string()))?;
        let secret_key = limits
            .aksk_accounts
            .iter()
            .find(|(ak, _)| ak == parsed.access_key)
            .map(|(_, sk)| sk.as_str())
            .ok_or_else(|| denied("unknown AccessKey"))?;
        if header_text(headers, "x-cnc-accesskey") != Some(parsed.access_key) {
            return Err(denied(
                "x-cnc-accessKey is missing or differs from the Credential",
            ));
        }
        let timestamp = header_text(headers, "x-cnc-timestamp")
            .ok_or_else(|| denied("missing x-cnc-timestamp header"))?;
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| denied("x-cnc-timestamp is not Unix seconds"))?;
        if !skew_ok(ts) {
            return Err(denied(format!(
                "x-cnc-timestamp is {} s from server time (allowed ±{} s)",
                ts - now,
                limits.max_date_skew_secs
            )));
        }
        let received: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
            .collect();
        let request = AkSkReceived {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &received,
            payload: body,
            timestamp,
        };
        verify_aksk(&parsed, &request, secret_key).map_err(|e| denied(e.to_string()))?;
        let window_ms = limits.max_date_skew_secs.saturating_mul(1000);
        if replay_protected && !ws.first_use(parsed.signature, window_ms, now_ms) {
            return Err(denied(
                "this signature was already used: sign every request afresh",
            ));
        }
        return Ok(parsed.access_key.to_string());
    }

    Err(denied(
        "the Authorization scheme is neither Basic nor CNC-HMAC-SHA256",
    ))
}
