//! Wangsu CDN Pro request signing as pure functions (PROVIDERS.md §3.5, §3.6).
//!
//! Two schemes, both used by the client ([`super::wangsu`]) to sign and by the emulator to
//! verify, so the emulator cannot accept what the real API would refuse for a signing reason the
//! client got wrong in the same way:
//!
//! - **API key** (the seed's scheme): `Date` in RFC 1123 form, `password =
//!   base64(HMAC-SHA1(api_key, date))`, `Authorization: Basic base64("username:password")`.
//!   The date is formatted here with a fixed English format, never through a locale, because a
//!   localized weekday (`Do, 17 Mai 2012`) is the classic way this scheme fails (§3.7).
//! - **AK/SK** `CNC-HMAC-SHA256` (what the official SDKs use): a canonical request over method,
//!   path, decoded query, signed headers (values lower-cased, as the SDKs do) and the body hash;
//!   no key derivation, no credential scope.
//!
//! Every intermediate is returned so `tests/signing_wangsu.rs` can compare each step with the
//! vectors in `tests/fixtures/wangsu.json` and name the one that diverges.

use std::fmt;

pub use super::mac::sha256_hex;
use super::mac::{Hash, hmac_sha1, hmac_sha256, verify_hmac};
use base64::Engine;
use percent_encoding::percent_decode_str;

/// The RFC 1123 date format of the API-key scheme, with chrono's fixed English names (chrono
/// has no locale unless its `unstable-locales` feature is on, which this crate does not enable).
pub const HTTP_DATE_FORMAT: &str = "%a, %d %b %Y %H:%M:%S GMT";
/// The AK/SK algorithm: first token of `Authorization`, first line of the string to sign.
pub const AKSK_ALGORITHM: &str = "CNC-HMAC-SHA256";
/// The headers the official SDKs sign.
pub const AKSK_SIGNED_HEADERS: &str = "content-type;host";
/// The `x-cnc-auth-method` value announcing the AK/SK scheme.
pub const AKSK_AUTH_METHOD: &str = "AKSK";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `timestamp` (Unix seconds) as the `Date` header value, e.g. `Thu, 17 May 2012 19:37:58 GMT`.
/// `None` only outside chrono's range.
pub fn http_date(timestamp: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(timestamp, 0).map(|t| t.format(HTTP_DATE_FORMAT).to_string())
}

/// Parses a `Date` header written in exactly [`HTTP_DATE_FORMAT`] into Unix seconds. Strict: a
/// wrong weekday, a missing zero pad or another zone is refused, because the server signs the
/// header text as received and the client must format it exactly this way.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let t = chrono::NaiveDateTime::parse_from_str(text, HTTP_DATE_FORMAT).ok()?;
    let ts = t.and_utc().timestamp();
    (http_date(ts).as_deref() == Some(text)).then_some(ts)
}

/// Every intermediate of one API-key signature. `Debug` shows only the username and date: the
/// password is a bearer credential for as long as the date is accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySigned {
    /// The `Date` header value that was signed.
    pub date: String,
    /// `HMAC-SHA1(api_key, date)`, raw bytes.
    pub hmac_sha1: Vec<u8>,
    /// `base64(hmac_sha1)`.
    pub password: String,
    /// `username:password`.
    pub basic_credentials: String,
    /// `Basic base64(basic_credentials)`, the `Authorization` header value.
    pub authorization: String,
}

impl fmt::Debug for ApiKeySigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let username = self
            .basic_credentials
            .split_once(':')
            .map_or("", |(u, _)| u);
        f.debug_struct("ApiKeySigned")
            .field("username", &username)
            .field("date", &self.date)
            .finish_non_exhaustive()
    }
}

/// `base64(HMAC-SHA1(api_key, date))`, the Basic password of the API-key scheme.
pub fn api_key_password(api_key: &str, date: &str) -> String {
    B64.encode(hmac_sha1(api_key.as_bytes(), date.as_bytes()))
}

/// Signs with the API-key scheme for `date`, the exact `Date` header text to send (format it with
/// [`http_date`]).
pub fn sign_api_key(username: &str, api_key: &str, date: &str) -> ApiKeySigned {
    let hmac_sha1 = hmac_sha1(api_key.as_bytes(), date.as_bytes());
    let password = B64.encode(&hmac_sha1);
    let basic_credentials = format!("{username}:{password}");
    let authorization = format!("Basic {}", B64.encode(basic_credentials.as_bytes()));
    ApiKeySigned {
        date: date.to_string(),
        hmac_sha1,
        password,
        basic_credentials,
        authorization,
    }
}

/// Why a request's signature was not accepted. The emulator answers all of them with 401
/// `AccessDenied`, as the API does; the variant is for its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The `Authorization` header does not have the scheme's shape.
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    /// The username or AccessKey is not known.
    #[error("unknown account")]
    UnknownAccount,
    /// A header named in SignedHeaders was not in the request.
    #[error("signed header `{0}` is missing from the request")]
    MissingSignedHeader(String),
    /// The recomputed signature differs.
    #[error("signature does not match")]
    Mismatch,
}

fn decode_basic(authorization: &str) -> Result<(String, String), VerifyError> {
    let encoded = authorization
        .strip_prefix("Basic ")
        .ok_or(VerifyError::Malformed("scheme is not Basic"))?;
    let decoded = B64
        .decode(encoded.trim())
        .map_err(|_| VerifyError::Malformed("Basic credentials are not base64"))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| VerifyError::Malformed("Basic credentials are not UTF-8"))?;
    let (username, password) = text.split_once(':').ok_or(VerifyError::Malformed(
        "Basic credentials are not username:password",
    ))?;
    Ok((username.to_string(), password.to_string()))
}

/// Checks a `Basic` header against `date` (the `Date`/`x-cnc-date` text as received) with the
/// api key `api_key_of(username)` returns; the HMAC is compared in constant time. Returns the
/// username. Freshness of the date is the caller's policy.
pub fn verify_api_key<'k>(
    authorization: &str,
    date: &str,
    api_key_of: impl FnOnce(&str) -> Option<&'k str>,
) -> Result<String, VerifyError> {
    let (username, password) = decode_basic(authorization)?;
    let api_key = api_key_of(&username).ok_or(VerifyError::UnknownAccount)?;
    let tag = B64
        .decode(password.as_bytes())
        .map_err(|_| VerifyError::Malformed("password is not base64"))?;
    if !verify_hmac(Hash::Sha1, api_key.as_bytes(), date.as_bytes(), &tag) {
        return Err(VerifyError::Mismatch);
    }
    Ok(username)
}

/// Everything that enters an AK/SK signature with the SDKs' signed headers
/// (`content-type;host`).
#[derive(Clone, Copy)]
pub struct AkSkInput<'a> {
    /// `POST` or `GET`, as sent.
    pub method: &'a str,
    /// The `Host` header exactly as sent (with the port when it is not the default).
    pub host: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// The raw query string (without `?`); ignored for POST, as the SDKs do.
    pub query: &'a str,
    /// The `Content-Type` header exactly as sent.
    pub content_type: &'a str,
    /// The exact body bytes on the wire (ignored for GET).
    pub payload: &'a [u8],
    /// `x-cnc-timestamp`, Unix seconds.
    pub timestamp: i64,
    /// The AccessKey, sent in clear.
    pub access_key: &'a str,
    /// The SecretKey; never leaves this module.
    pub secret_key: &'a str,
}

impl fmt::Debug for AkSkInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AkSkInput")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("content_type", &self.content_type)
            .field("payload_len", &self.payload.len())
            .field("timestamp", &self.timestamp)
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .finish()
    }
}

/// Every intermediate of one AK/SK signature, in the order of PROVIDERS.md §3.6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkSkSigned {
    /// `hex(sha256(body))` (of the empty string for GET).
    pub hashed_payload: String,
    /// The six-part canonical request.
    pub canonical_request: String,
    /// `hex(sha256(canonical_request))`.
    pub hashed_canonical_request: String,
    /// The three-line string to sign.
    pub string_to_sign: String,
    /// `hex(HMAC-SHA256(secret_key, string_to_sign))`.
    pub signature: String,
    /// The complete `Authorization` header value.
    pub authorization: String,
}

/// The query as it enters the canonical request: empty for POST, else percent-decoded (a
/// sequence that is not valid UTF-8 after decoding is kept lossily; a `%` that does not start
/// two hex digits is kept as written, as Python's `unquote` does; `+` is kept as written — the
/// SDKs differ on it and this crate never sends one).
fn canonical_query(method: &str, query: &str) -> String {
    if method.eq_ignore_ascii_case("POST") {
        return String::new();
    }
    percent_decode_str(query).decode_utf8_lossy().into_owned()
}

/// The canonical request and string to sign from the signed `(name, value)` pairs, in the
/// order of the signed-headers list (names lowercase; values lower-cased here, as the SDKs do).
fn aksk_parts(
    method: &str,
    path: &str,
    query: &str,
    signed: &[(&str, &str)],
    payload: &[u8],
    timestamp: &str,
) -> AkSkSigned {
    let payload = if method.eq_ignore_ascii_case("GET") {
        &[][..]
    } else {
        payload
    };
    let hashed_payload = sha256_hex(payload);
    let canonical_headers: String = signed
        .iter()
        .map(|(n, v)| format!("{n}:{}\n", v.to_lowercase()))
        .collect();
    let names = signed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{method}\n{path}\n{}\n{canonical_headers}\n{names}\n{hashed_payload}",
        canonical_query(method, query)
    );
    let hashed_canonical_request = sha256_hex(canonical_request.as_bytes());
    let string_to_sign = format!("{AKSK_ALGORITHM}\n{timestamp}\n{hashed_canonical_request}");
    AkSkSigned {
        hashed_payload,
        canonical_request,
        hashed_canonical_request,
        string_to_sign,
        signature: String::new(),
        authorization: String::new(),
    }
}

/// Signs one request with `CNC-HMAC-SHA256`. The caller must send exactly `input.payload`,
/// `input.content_type`, `input.host`, `x-cnc-accessKey: access_key`, `x-cnc-timestamp:
/// timestamp` and `x-cnc-auth-method: AKSK`.
pub fn sign_aksk(input: &AkSkInput<'_>) -> AkSkSigned {
    let signed = [("content-type", input.content_type), ("host", input.host)];
    let mut out = aksk_parts(
        input.method,
        input.path,
        input.query,
        &signed,
        input.payload,
        &input.timestamp.to_string(),
    );
    out.signature = hex::encode(hmac_sha256(
        input.secret_key.as_bytes(),
        out.string_to_sign.as_bytes(),
    ));
    out.authorization = format!(
        "{AKSK_ALGORITHM} Credential={}, SignedHeaders={AKSK_SIGNED_HEADERS}, Signature={}",
        input.access_key, out.signature
    );
    out
}

/// The parts of a `CNC-HMAC-SHA256` header, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AkSkAuthorization<'a> {
    /// The AccessKey: picks the SecretKey to verify with.
    pub access_key: &'a str,
    /// The `;`-list of lowercase signed header names, as written.
    pub signed_headers: &'a str,
    /// The hex signature, as written.
    pub signature: &'a str,
}

/// Parses `CNC-HMAC-SHA256 Credential=<AK>, SignedHeaders=<list>, Signature=<hex>`.
pub fn parse_aksk_authorization(header: &str) -> Result<AkSkAuthorization<'_>, VerifyError> {
    let rest = header
        .strip_prefix(AKSK_ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(VerifyError::Malformed("algorithm is not CNC-HMAC-SHA256"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
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
    let access_key = credential
        .filter(|c| !c.is_empty())
        .ok_or(VerifyError::Malformed("no Credential"))?;
    let signed_headers = signed_headers.ok_or(VerifyError::Malformed("no SignedHeaders"))?;
    let signature = signature.ok_or(VerifyError::Malformed("no Signature"))?;
    super::tc3::check_signed_parts(signed_headers, signature).map_err(VerifyError::Malformed)?;
    Ok(AkSkAuthorization {
        access_key,
        signed_headers,
        signature,
    })
}

/// A received request, as the AK/SK verifier needs it (the same shape as TC3's).
pub type AkSkReceived<'a> = super::tc3::Received<'a>;

/// Checks `auth` against the request with `secret_key`: every signed header must be present, the
/// list must be sorted (as the SDKs write it), and the signature over the received bytes must
/// match, compared in constant time. Freshness and replay are the caller's policy.
pub fn verify_aksk(
    auth: &AkSkAuthorization<'_>,
    request: &AkSkReceived<'_>,
    secret_key: &str,
) -> Result<(), VerifyError> {
    let names: Vec<&str> = auth.signed_headers.split(';').collect();
    if !names.is_sorted() {
        return Err(VerifyError::Malformed("SignedHeaders is not sorted"));
    }
    let mut signed = Vec::with_capacity(names.len());
    for name in names {
        let value = request
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .ok_or_else(|| VerifyError::MissingSignedHeader(name.to_string()))?;
        signed.push((name, value));
    }
    let parts = aksk_parts(
        request.method,
        request.path,
        request.query,
        &signed,
        request.payload,
        request.timestamp,
    );
    let tag =
        hex::decode(auth.signature).map_err(|_| VerifyError::Malformed("Signature is not hex"))?;
    verify_hmac(
        Hash::Sha256,
        secret_key.as_bytes(),
        parts.string_to_sign.as_bytes(),
        &tag,
    )
    .then_some(())
    .ok_or(VerifyError::Mismatch)
}
