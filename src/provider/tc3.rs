//! TC3-HMAC-SHA256 (Tencent Cloud API 3.0 "signature v3") as pure functions.
//!
//! Both sides use this module: the client ([`super::tencent_v3`]) signs with [`sign`], the
//! emulator checks with [`parse_authorization`] and [`verify`]. Keeping one implementation means
//! the emulator cannot accept a request the real API would refuse for a signing reason the client
//! got wrong in the same way — which is why [`sign`] is also checked byte for byte against the
//! SDK-generated vectors in `tests/fixtures/tc3.json` (providers/PROVIDERS.md §1.4).
//!
//! Every intermediate value is returned in [`Signed`] so the vectors can be compared field by
//! field; a mismatch then points at the step that is wrong instead of just "bad signature".

use std::fmt;

use super::mac::{Hash, verify_hmac};
pub use super::mac::{hmac_sha256, sha256_hex};

/// The algorithm name, first token of the `Authorization` header and first line of the string
/// to sign.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The fixed last element of the credential scope.
pub const TERMINATOR: &str = "tc3_request";

/// Headers the official SDKs sign. Signing more is allowed (newer doc revision signs
/// `x-tc-action`), but this pair is what every SDK sends and what the vectors pin down.
pub const DEFAULT_SIGNED_HEADERS: &str = "content-type;host";

/// Everything that enters a TC3 signature. Borrowed, so signing allocates only its outputs.
#[derive(Clone, Copy)]
pub struct SignInput<'a> {
    /// `POST` or `GET`, as sent.
    pub method: &'a str,
    /// The `Host` header exactly as sent (`host[:port]`, the port only when non-default).
    pub host: &'a str,
    /// The canonical URI; always `/` for API 3.0.
    pub path: &'a str,
    /// The query string as sent (without `?`); empty for POST.
    pub query: &'a str,
    /// The `Content-Type` header exactly as sent: a client appending `; charset=utf-8` after
    /// signing is the classic `SignatureFailure` (PROVIDERS.md §1.6).
    pub content_type: &'a str,
    /// Further headers to sign besides `content-type` and `host`, as `(name, value)`; any case,
    /// any order. Empty for what the SDKs do.
    pub extra_headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes on the wire (empty for GET).
    pub payload: &'a [u8],
    /// `X-TC-Timestamp`, Unix seconds. Also selects the credential-scope date (UTC).
    pub timestamp: i64,
    /// The product, e.g. `cdn` (the host's first label for public endpoints).
    pub service: &'a str,
    /// The SecretId, sent in clear in the credential.
    pub secret_id: &'a str,
    /// The SecretKey; never leaves this function except through derived keys.
    pub secret_key: &'a str,
}

impl fmt::Debug for SignInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInput")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("content_type", &self.content_type)
            .field("extra_headers", &self.extra_headers)
            .field("payload_len", &self.payload.len())
            .field("timestamp", &self.timestamp)
            .field("service", &self.service)
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"***")
            .finish()
    }
}

/// Every intermediate of one signature, in the order of PROVIDERS.md §1.4, so tests can name the
/// step that diverges. `Debug` hides the derived keys (each is valid for a whole day).
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// Step 1: `hex(sha256(payload))`.
    pub hashed_payload: String,
    /// Step 2: the six-line canonical request.
    pub canonical_request: String,
    /// `hex(sha256(canonical_request))`, the last line of the string to sign.
    pub hashed_canonical_request: String,
    /// The `;`-joined lowercase names of the signed headers, sorted.
    pub signed_headers: String,
    /// Step 3: `<UTC date>/<service>/tc3_request`.
    pub credential_scope: String,
    /// Step 4: the four-line string to sign.
    pub string_to_sign: String,
    /// Step 5: `HMAC("TC3" + key, date)`.
    pub secret_date: Vec<u8>,
    /// Step 5: `HMAC(secret_date, service)`.
    pub secret_service: Vec<u8>,
    /// Step 5: `HMAC(secret_service, "tc3_request")`.
    pub secret_signing: Vec<u8>,
    /// `hex(HMAC(secret_signing, string_to_sign))`.
    pub signature: String,
    /// Step 6: the complete `Authorization` header value.
    pub authorization: String,
}

impl fmt::Debug for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("hashed_payload", &self.hashed_payload)
            .field("canonical_request", &self.canonical_request)
            .field("credential_scope", &self.credential_scope)
            .field("string_to_sign", &self.string_to_sign)
            .field("signature", &self.signature)
            .field("authorization", &self.authorization)
            .finish_non_exhaustive()
    }
}

/// The credential-scope date: `YYYY-MM-DD` of `timestamp` **in UTC**. Using local (Beijing) time
/// breaks signing between 00:00 and 08:00 UTC+8 (PROVIDERS.md §1.6). `None` only for timestamps
/// outside chrono's range.
pub fn credential_date(timestamp: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.format("%Y-%m-%d").to_string())
}

/// The three chained keys of step 5: `(secret_date, secret_service, secret_signing)`.
pub fn derive_keys(secret_key: &str, date: &str, service: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let secret_date = hmac_sha256(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, TERMINATOR.as_bytes());
    (secret_date, secret_service, secret_signing)
}

/// Canonical headers and the signed-header list from `(name, value)` pairs: names lowercased and
/// sorted, values trimmed and lowercased (the signature doc lowercases values: its newer worked
/// example signs `x-tc-action:describeinstances`; `application/json` and hosts are lowercase
/// anyway, so the SDK vectors are unaffected).
fn canonical_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
) -> (String, String) {
    let mut entries: Vec<(String, String)> = headers
        .into_iter()
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase()))
        .collect();
    entries.sort();
    let canonical = entries
        .iter()
        .map(|(n, v)| format!("{n}:{v}\n"))
        .collect::<String>();
    let names = entries
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (canonical, names)
}

/// The signature parts shared by [`sign`] and [`verify`].
struct Parts {
    hashed_payload: String,
    canonical_request: String,
    hashed_canonical_request: String,
    signed_headers: String,
    credential_scope: String,
    string_to_sign: String,
}

#[allow(clippy::too_many_arguments)]
fn parts<'h>(
    method: &str,
    path: &str,
    query: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    payload: &[u8],
    timestamp: &str,
    date: &str,
    service: &str,
) -> Parts {
    let hashed_payload = sha256_hex(payload);
    let (canonical, signed_headers) = canonical_headers(headers);
    let canonical_request =
        format!("{method}\n{path}\n{query}\n{canonical}\n{signed_headers}\n{hashed_payload}");
    let hashed_canonical_request = sha256_hex(canonical_request.as_bytes());
    let credential_scope = format!("{date}/{service}/{TERMINATOR}");
    let string_to_sign =
        format!("{ALGORITHM}\n{timestamp}\n{credential_scope}\n{hashed_canonical_request}");
    Parts {
        hashed_payload,
        canonical_request,
        hashed_canonical_request,
        signed_headers,
        credential_scope,
        string_to_sign,
    }
}

/// Signs one request (PROVIDERS.md §1.4, steps 1–6). The caller must send exactly
/// `input.payload`, `input.content_type` and `input.host`, and `input.timestamp` as
/// `X-TC-Timestamp`.
pub fn sign(input: &SignInput<'_>) -> Signed {
    // A timestamp outside chrono's range (±262,000 years) cannot be sent meaningfully; an empty
    // date yields a signature the server refuses, which is the honest outcome.
    let date = credential_date(input.timestamp).unwrap_or_default();
    let headers = [("content-type", input.content_type), ("host", input.host)]
        .into_iter()
        .chain(input.extra_headers.iter().copied());
    let p = parts(
        input.method,
        input.path,
        input.query,
        headers,
        input.payload,
        &input.timestamp.to_string(),
        &date,
        input.service,
    );
    let (secret_date, secret_service, secret_signing) =
        derive_keys(input.secret_key, &date, input.service);
    let signature = hex::encode(hmac_sha256(&secret_signing, p.string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        input.secret_id, p.credential_scope, p.signed_headers
    );
    Signed {
        hashed_payload: p.hashed_payload,
        canonical_request: p.canonical_request,
        hashed_canonical_request: p.hashed_canonical_request,
        signed_headers: p.signed_headers,
        credential_scope: p.credential_scope,
        string_to_sign: p.string_to_sign,
        secret_date,
        secret_service,
        secret_signing,
        signature,
        authorization,
    }
}

/// Why a request's signature was not accepted. The emulator maps these onto Tencent's
/// `AuthFailure.*` codes via [`VerifyError::tencent_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header is not `TC3-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// A header named in SignedHeaders was not in the request.
    #[error("signed header `{0}` is missing from the request")]
    MissingSignedHeader(String),
    /// The credential date is not the UTC date of the timestamp.
    #[error("credential date {credential} is not the UTC date of the timestamp ({expected})")]
    DateMismatch {
        /// The date in the credential.
        credential: String,
        /// The UTC date of `X-TC-Timestamp`.
        expected: String,
    },
    /// The recomputed signature differs.
    #[error("signature does not match")]
    Mismatch,
}

impl VerifyError {
    /// The Tencent error code a real server answers with for this failure.
    pub fn tencent_code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) | VerifyError::MissingSignedHeader(_) => {
                "AuthFailure.InvalidAuthorization"
            }
            VerifyError::DateMismatch { .. } | VerifyError::Mismatch => {
                "AuthFailure.SignatureFailure"
            }
        }
    }
}

/// The parts of an `Authorization` header, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// The SecretId: picks the key to verify with.
    pub secret_id: &'a str,
    /// The credential-scope date, `YYYY-MM-DD`.
    pub date: &'a str,
    /// The credential-scope service, e.g. `cdn`.
    pub service: &'a str,
    /// The SignedHeaders list as written (`;`-separated lowercase names).
    pub signed_headers: &'a str,
    /// The hex signature as written.
    pub signature: &'a str,
}

/// Parses `TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request,
/// SignedHeaders=<list>, Signature=<hex>` (spaces after the commas optional).
pub fn parse_authorization(header: &str) -> Result<Authorization<'_>, VerifyError> {
    let rest = header
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(VerifyError::Malformed("algorithm is not TC3-HMAC-SHA256"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for field in rest.split(',') {
        let (key, value) = field
            .trim()
            .split_once('=')
            .ok_or(VerifyError::Malformed("a field is not key=value"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(VerifyError::Malformed("unknown field")),
        };
        if slot.replace(value).is_some() {
            return Err(VerifyError::Malformed("repeated field"));
        }
    }
    let credential = credential.ok_or(VerifyError::Malformed("no Credential"))?;
    let signed_headers = signed_headers.ok_or(VerifyError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(VerifyError::Malformed("no Signature"))?;

    let mut scope = credential.split('/');
    let (Some(secret_id), Some(date), Some(service), Some(TERMINATOR), None) = (
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
        scope.next(),
    ) else {
        return Err(VerifyError::Malformed(
            "Credential is not <id>/<date>/<service>/tc3_request",
        ));
    };
    if secret_id.is_empty() || date.is_empty() || service.is_empty() {
        return Err(VerifyError::Malformed("empty Credential element"));
    }
    check_signed_parts(signed_headers, signature).map_err(VerifyError::Malformed)?;
    Ok(Authorization {
        secret_id,
        date,
        service,
        signed_headers,
        signature,
    })
}

/// The `SignedHeaders` and `Signature` parts of an HMAC-SHA256 Authorization header (TC3 and
/// Wangsu's `CNC-HMAC-SHA256` share them): a `;`-list of lowercase header names and 64 hex digits.
pub(crate) fn check_signed_parts(
    signed_headers: &str,
    signature: &str,
) -> Result<(), &'static str> {
    let names_ok = !signed_headers.is_empty()
        && signed_headers.split(';').all(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !names_ok {
        return Err("SignedHeaders is not a ;-list of lowercase header names");
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("Signature is not 64 hex digits");
    }
    Ok(())
}

/// A received request, as the verifier needs it (TC3, and Wangsu's AK/SK scheme).
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The raw query string (without `?`), empty if none.
    pub query: &'a str,
    /// Every received header as `(name, value)`; looked up case-insensitively.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body bytes as received.
    pub payload: &'a [u8],
    /// The timestamp header (`X-TC-Timestamp`, `x-cnc-timestamp`) exactly as received: it is
    /// signed as written.
    pub timestamp: &'a str,
}

/// Checks `auth` against the request with `secret_key`: the credential date must be the UTC date
/// of the timestamp, every signed header must be present, and the signature over the received
/// bytes must match — compared in constant time. Freshness of the timestamp is the caller's
/// policy (the API allows ±300 s).
pub fn verify(
    auth: &Authorization<'_>,
    request: &Received<'_>,
    secret_key: &str,
) -> Result<(), VerifyError> {
    let ts: i64 = request
        .timestamp
        .parse()
        .map_err(|_| VerifyError::Malformed("X-TC-Timestamp is not a number"))?;
    let expected = credential_date(ts).ok_or(VerifyError::Malformed("timestamp out of range"))?;
    if auth.date != expected {
        return Err(VerifyError::DateMismatch {
            credential: auth.date.to_string(),
            expected,
        });
    }
    let mut signed = Vec::new();
    for name in auth.signed_headers.split(';') {
        let value = request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .ok_or_else(|| VerifyError::MissingSignedHeader(name.to_string()))?;
        signed.push((name, value));
    }
    let p = parts(
        request.method,
        request.path,
        request.query,
        signed,
        request.payload,
        request.timestamp,
        auth.date,
        auth.service,
    );
    if p.signed_headers != auth.signed_headers {
        // The list must already be in canonical (sorted, unique) order, as the SDKs write it.
        return Err(VerifyError::Malformed("SignedHeaders is not sorted"));
    }
    let (_, _, secret_signing) = derive_keys(secret_key, auth.date, auth.service);
    let tag =
        hex::decode(auth.signature).map_err(|_| VerifyError::Malformed("Signature is not hex"))?;
    verify_hmac(
        Hash::Sha256,
        &secret_signing,
        p.string_to_sign.as_bytes(),
        &tag,
    )
    .then_some(())
    .ok_or(VerifyError::Mismatch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests;
