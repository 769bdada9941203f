//! Tencent Cloud API 2.0 signing (`HmacSHA1` / `HmacSHA256`), as pure functions.
//!
//! Both sides use this module: the client ([`super::tencent_v2`]) signs with [`sign`], the
//! emulator checks with [`verify`]. One implementation means the emulator cannot accept a request
//! the real API would refuse for a signing reason the client got wrong in the same way — which is
//! why [`sign`] is checked byte for byte against the SDK-generated vectors in
//! `tests/fixtures/v2.json` (providers/PROVIDERS.md §2.3, `tests/signing_v2.rs`).
//!
//! The scheme, step by step:
//!
//! 1. every parameter that is sent, except `Signature`, is signed;
//! 2. `_` in a parameter **name** becomes `.` (PHP turns `.` into `_` on the server side, so the
//!    server signs the dotted spelling); values are untouched and the request keeps its names;
//! 3. names sort as byte strings (`urls.10` < `urls.2`);
//! 4. `name=value` pairs are joined with `&` using the **raw** values (no percent-encoding);
//! 5. string to sign = `METHOD` + host + path + `?` + joined;
//! 6. `Signature = base64(HMAC(SecretKey, string to sign))`, SHA-256 only when
//!    `SignatureMethod=HmacSHA256` is sent, SHA-1 otherwise;
//! 7. the request carries every value (the signature included) form-encoded exactly once.
//!
//! Decision: the official Python SDK sorts by the original names and replaces `_` afterwards;
//! PROVIDERS.md §2.3 replaces first. The two differ only for a name set mixing `_` and `.` at
//! the same position, which this worker never sends; we follow PROVIDERS.md, and both agree on
//! every vector.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::mac::{self, Hash};
use base64::Engine;

/// The HMAC behind `Signature` (the `signature_method` setting, spelled as the parameter value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::IntoStaticStr, strum::EnumString)]
pub enum SignatureMethod {
    /// `HmacSHA1` (the API's default when `SignatureMethod` is absent).
    #[default]
    #[strum(serialize = "HmacSHA1")]
    HmacSha1,
    /// `HmacSHA256` (sent as `SignatureMethod=HmacSHA256`).
    #[strum(serialize = "HmacSHA256")]
    HmacSha256,
}

impl SignatureMethod {
    /// The parameter value.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The API's only path.
pub const PATH: &str = "/v2/index.php";
/// The parameter that carries the signature; never part of the string to sign.
pub const SIGNATURE: &str = "Signature";
/// The parameter that selects the HMAC; absent means `HmacSHA1`.
pub const SIGNATURE_METHOD: &str = "SignatureMethod";

/// Everything [`sign`] needs. `params` are the parameters exactly as they will be sent, in the
/// order they will be sent, without `Signature`.
#[derive(Clone, Copy)]
pub struct SignInput<'a> {
    /// `GET` or `POST`: the first token of the string to sign.
    pub method: &'a str,
    /// The `Host` header as sent (with `:port` when not the scheme's default).
    pub host: &'a str,
    /// The request path, normally [`PATH`].
    pub path: &'a str,
    /// `(name, raw value)` pairs, as sent, without `Signature`.
    pub params: &'a [(&'a str, &'a str)],
    /// The HMAC to use. Must agree with the `SignatureMethod` parameter (absent → `HmacSHA1`);
    /// only the vectors sign a mismatching set on purpose.
    pub signature_method: SignatureMethod,
    /// The SecretKey; never leaves this function except through the MAC.
    pub secret_key: &'a str,
}

impl fmt::Debug for SignInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInput")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("params", &self.params.len())
            .field("signature_method", &self.signature_method)
            .field("secret_key", &"***")
            .finish()
    }
}

/// One signature and the request text that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Step 5: `METHOD host path ? sorted raw pairs`.
    pub string_to_sign: String,
    /// Step 6: base64 of the MAC, not yet form-encoded.
    pub signature: String,
    /// Step 7: every parameter in the given order, then `Signature`, form-encoded once: the POST
    /// body or the GET query string.
    pub encoded: String,
}

/// The HMAC a parameter set asks for: `SignatureMethod` absent or `HmacSHA1` → SHA-1,
/// `HmacSHA256` → SHA-256, anything else → `None` (the server refuses it).
pub fn signature_method_of(value: Option<&str>) -> Option<SignatureMethod> {
    value.map_or(Some(SignatureMethod::HmacSha1), |v| v.parse().ok())
}

/// Steps 1–5: the string to sign. A `Signature` parameter in `params` is skipped.
pub fn string_to_sign(method: &str, host: &str, path: &str, params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .filter(|(name, _)| *name != SIGNATURE)
        .map(|(name, value)| (name.replace('_', "."), *value))
        .collect();
    // `String` orders by bytes, which is exactly the server's sort.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let joined = pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}{host}{path}?{joined}")
}

/// Step 6: `base64(HMAC(secret_key, string_to_sign))`.
pub fn signature(secret_key: &str, string_to_sign: &str, method: SignatureMethod) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac::hmac(
        hash_of(method),
        secret_key.as_bytes(),
        string_to_sign.as_bytes(),
    ))
}

/// The MAC a signature method names.
fn hash_of(method: SignatureMethod) -> Hash {
    match method {
        SignatureMethod::HmacSha1 => Hash::Sha1,
        SignatureMethod::HmacSha256 => Hash::Sha256,
    }
}

/// What the official SDK's `urlencode` (Python `quote_plus`) encodes: every byte but ASCII
/// letters, digits and `_.-~`. The space is left out here only because it becomes `+` instead
/// of `%20`; [`form_encode`] swaps it afterwards. Non-ASCII bytes are always encoded.
const FORM_ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b' ');

/// Form-encodes one name or value the way the official SDK's `urlencode` does (Python
/// `quote_plus`): ASCII letters, digits and `_.-~` stay, a space becomes `+`, every other byte
/// of the UTF-8 text becomes `%XX` (upper-case hex). `+`, `/` and `=` of a base64 signature are
/// therefore encoded, exactly once.
pub fn form_encode(text: &str) -> String {
    // Every space left in the encoded text is an original space: escapes never contain one.
    utf8_percent_encode(text, FORM_ENCODED)
        .to_string()
        .replace(' ', "+")
}

/// `name=value&…` in the given order, each side form-encoded once.
pub fn encode_params(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs one request (steps 1–7). The caller must send exactly `encoded`, with `input.method`,
/// to `input.host` and `input.path`.
pub fn sign(input: &SignInput<'_>) -> Signed {
    let string_to_sign = string_to_sign(input.method, input.host, input.path, input.params);
    let signature = signature(input.secret_key, &string_to_sign, input.signature_method);
    let mut encoded = encode_params(input.params);
    if !encoded.is_empty() {
        encoded.push('&');
    }
    encoded.push_str(SIGNATURE);
    encoded.push('=');
    encoded.push_str(&form_encode(&signature));
    Signed {
        string_to_sign,
        signature,
        encoded,
    }
}

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Signature` parameter, or more than one.
    #[error("the request must carry exactly one Signature parameter")]
    MissingSignature,
    /// `SignatureMethod` names an HMAC the API does not have.
    #[error("unsupported SignatureMethod `{0}` (HmacSHA1 or HmacSHA256)")]
    UnsupportedMethod(String),
    /// The signature is not base64 of a MAC of the right length.
    #[error("Signature is not base64")]
    Malformed,
    /// The recomputed signature differs.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a received request: `params` are the decoded parameters as received (query for GET,
/// form body for POST), `Signature` included; `method`, `host` and `path` are those of the
/// request itself. The MAC is compared in constant time. Freshness (`Timestamp`) and replay
/// (`Nonce`) are the caller's policy.
pub fn verify(
    method: &str,
    host: &str,
    path: &str,
    params: &[(&str, &str)],
    secret_key: &str,
) -> Result<(), VerifyError> {
    let mut signatures = params.iter().filter(|(n, _)| *n == SIGNATURE);
    let (Some((_, given)), None) = (signatures.next(), signatures.next()) else {
        return Err(VerifyError::MissingSignature);
    };
    let requested = params
        .iter()
        .find(|(n, _)| *n == SIGNATURE_METHOD)
        .map(|(_, v)| *v);
    let signature_method = signature_method_of(requested)
        .ok_or_else(|| VerifyError::UnsupportedMethod(requested.unwrap_or("").to_string()))?;
    let tag = base64::engine::general_purpose::STANDARD
        .decode(given)
        .map_err(|_| VerifyError::Malformed)?;
    let s = string_to_sign(method, host, path, params);
    let hash = hash_of(signature_method);
    mac::verify_hmac(hash, secret_key.as_bytes(), s.as_bytes(), &tag)
        .then_some(())
        .ok_or(VerifyError::Mismatch)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    const KEY: &str = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";

    #[test]
    fn names_sort_bytewise_after_underscores_become_dots() {
        let s = string_to_sign(
            "GET",
            "h",
            "/p",
            &[
                ("urls.2", "c"),
                ("urls_10", "b"),
                ("Signature", "ignored"),
                ("urls.1", "a"),
                ("Action", "x"),
            ],
        );
        assert_eq!(s, "GETh/p?Action=x&urls.1=a&urls.10=b&urls.2=c");
    }

    #[test]
    fn form_encoding_matches_quote_plus() {
        assert_eq!(
            form_encode("https://a.b/图?q=1&x=a b+c~_-."),
            "https%3A%2F%2Fa.b%2F%E5%9B%BE%3Fq%3D1%26x%3Da+b%2Bc~_-."
        );
        assert_eq!(form_encode("V+Ik/3H4="), "V%2BIk%2F3H4%3D");
        // Every ASCII byte, as quote_plus encodes it (letters, digits, `_.-~` kept; space `+`).
        for b in 0u8..128 {
            let c = char::from(b);
            let want = match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '.' | '-' | '~' => c.to_string(),
                ' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            };
            assert_eq!(form_encode(&c.to_string()), want, "{b:#04x}");
        }
    }

    #[test]
    fn verify_accepts_what_sign_produced_and_nothing_else() {
        for method in [SignatureMethod::HmacSha1, SignatureMethod::HmacSha256] {
            let mut params = vec![("Action", "RefreshCdnUrl"), ("urls.0", "https://a/x")];
            if method == SignatureMethod::HmacSha256 {
                params.push((SIGNATURE_METHOD, "HmacSHA256"));
            }
            let signed = sign(&SignInput {
                method: "POST",
                host: "h:8080",
                path: PATH,
                params: &params,
                signature_method: method,
                secret_key: KEY,
            });
            let mut received = params.clone();
            received.push((SIGNATURE, &signed.signature));
            assert_eq!(verify("POST", "h:8080", PATH, &received, KEY), Ok(()));
            assert_eq!(
                verify("GET", "h:8080", PATH, &received, KEY),
                Err(VerifyError::Mismatch),
                "the method is signed"
            );
            assert_eq!(
                verify("POST", "h", PATH, &received, KEY),
                Err(VerifyError::Mismatch),
                "the port is signed"
            );
            assert_eq!(
                verify("POST", "h:8080", PATH, &received, "other"),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(
                verify("POST", "h:8080", PATH, &params, KEY),
                Err(VerifyError::MissingSignature)
            );
        }
        let bad = [("SignatureMethod", "HmacMD5"), ("Signature", "AAAA")];
        assert_eq!(
            verify("GET", "h", PATH, &bad, KEY),
            Err(VerifyError::UnsupportedMethod("HmacMD5".into()))
        );
        assert_eq!(
            verify("GET", "h", PATH, &[("Signature", "%%%")], KEY),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn sha256_without_the_parameter_is_verified_as_sha1() {
        let params = [("Action", "RefreshCdnUrl")];
        let signed = sign(&SignInput {
            method: "GET",
            host: "h",
            path: PATH,
            params: &params,
            signature_method: SignatureMethod::HmacSha256,
            secret_key: KEY,
        });
        let received = [("Action", "RefreshCdnUrl"), (SIGNATURE, &signed.signature)];
        assert_eq!(
            verify("GET", "h", PATH, &received, KEY),
            Err(VerifyError::Mismatch)
        );
    }
}
