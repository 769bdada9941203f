//! The one HTTP path of every provider API: the account's endpoint and pooled client, sending a
//! signed request, bounding the answer, classifying transport failures (with `maybe_applied`),
//! reading `Retry-After`, answers that did not come from the API, and the outcome log line.
//!
//! Each API module keeps only what is its own: building and signing the request, and mapping the
//! API's answer onto [`ProviderError`]. A fix to how answers are read or how a timeout is
//! classified is therefore made once and holds for every provider.

use std::fmt;
use std::time::Duration;

use super::{Account, ProviderError, Receipt};
use crate::secret::Secret;

/// What every API client holds about its account: the configured name, the pooled HTTP client,
/// the API URL, the `Host` it signs and the credentials. `Debug` never shows the secrets.
pub(crate) struct Endpoint {
    /// The provider's configured name (the `provider` span field).
    pub name: String,
    /// Pooled, with the configured timeouts and no redirects ([`http_client`]).
    pub client: reqwest::Client,
    /// The full API URL requests go to.
    pub url: url::Url,
    /// The signed host (with the port when it is not the scheme's default).
    pub host: String,
    /// SecretId, username or AccessKey, depending on the API.
    pub secret_id: Secret,
    /// SecretKey or API key.
    pub secret_key: Secret,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("secret_id", &self.secret_id)
            .field("secret_key", &self.secret_key)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint of `account` at `url` (the API's path joined to the account's endpoint by
    /// the caller).
    pub fn new(account: &Account, url: url::Url) -> Result<Self, reqwest::Error> {
        Ok(Endpoint {
            name: account.name.clone(),
            client: http_client(account)?,
            host: host_header(&url),
            url,
            secret_id: account.secret_id.clone(),
            secret_key: account.secret_key.clone(),
        })
    }

    /// A POST of `signed` to the API URL, with exactly the signed headers and body bytes.
    pub fn post(&self, signed: SignedPost) -> reqwest::RequestBuilder {
        let mut request = self.client.post(self.url.clone());
        for (name, value) in signed.headers {
            request = request.header(name, value);
        }
        request.body(signed.body)
    }

    /// A GET of `url` (on this endpoint's host) with exactly the signed headers.
    pub fn get(
        &self,
        url: url::Url,
        headers: Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.client.get(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
    }
}

/// One signed POST, ready to send: the body bytes and the headers that sign them. The body is
/// serialized once, and exactly those bytes are signed and sent (re-serialising after signing
/// is a classic signature failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedPost {
    /// The API action (the `action` log field and metric label).
    pub action: &'static str,
    /// The exact body bytes that were signed.
    pub body: Vec<u8>,
    /// Every header to send, the signature included.
    pub headers: Vec<(&'static str, String)>,
}

/// What the outcome line of one call names besides its result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallLog {
    /// The API action.
    pub action: &'static str,
    /// How many items the call carried.
    pub items: usize,
    /// The response header carrying the API's request id, where the API has one.
    pub request_id_header: Option<&'static str>,
}

/// Sends `request` through [`send`], maps the answer with the API's `interpret`, and logs the
/// outcome at debug level (never the body, which may echo items, nor the request, which may carry
/// credentials).
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    log: CallLog,
    interpret: impl FnOnce(&Answer) -> Result<Receipt, ProviderError>,
) -> Result<Receipt, ProviderError> {
    let answer = send(request).await?;
    let result = interpret(&answer);
    match &result {
        Ok(receipt) => tracing::debug!(
            action = log.action,
            items = log.items,
            task_id = %receipt.task_id,
            request_id = receipt.request_id.as_deref().unwrap_or(""),
            "purge accepted"
        ),
        Err(e) => tracing::debug!(
            action = log.action,
            items = log.items,
            status = answer.status,
            code = e.code(),
            request_id = log
                .request_id_header
                .and_then(|name| answer.headers.get(name))
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            "purge refused"
        ),
    }
    result
}

/// A read-only call (a status query, a prefetch, a quota query): sends `request` through [`send`],
/// maps the answer with `interpret`, like [`exchange`] does for purges; logs the outcome at debug
/// level (never the body).
pub(crate) async fn query<T>(
    request: reqwest::RequestBuilder,
    action: &'static str,
    interpret: impl FnOnce(&Answer) -> Result<T, ProviderError>,
) -> Result<T, ProviderError> {
    let answer = send(request).await?;
    let result = interpret(&answer);
    match &result {
        Ok(_) => tracing::debug!(action, status = answer.status, "query answered"),
        Err(e) => tracing::debug!(
            action,
            status = answer.status,
            code = e.code(),
            "query refused"
        ),
    }
    result
}

/// A request that could not be built (a body that does not serialize): nothing was sent.
pub(crate) fn build_error(e: impl fmt::Display) -> ProviderError {
    ProviderError::Transient {
        code: "RequestBuildError".into(),
        message: e.to_string(),
        maybe_applied: false,
    }
}

/// A success status whose answer cannot be read as the API's: the purge may have happened, so
/// it is retried without refunding quota (a duplicate purge costs less than a lost one).
pub(crate) fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Transient {
        code: "MalformedResponse".into(),
        message: message.into(),
        maybe_applied: true,
    }
}

/// An answer without the API's own envelope: a gateway, a proxy or the wrong endpoint. A 200 we
/// cannot read may mean the purge happened (`missing` names what was not there, for the
/// message); a 429 is a rate limit whoever said it; other 4xx (but 408) and 502/503 were refused
/// before the API saw the request; anything else might have been forwarded. Statuses with a
/// meaning of their own for one API (a 413, a 401) are mapped by that API before calling this.
pub(crate) fn non_api_answer(
    status: u16,
    retry_after: Option<Duration>,
    missing: &str,
) -> ProviderError {
    if status == 200 {
        return malformed(format!("HTTP 200 without {missing}"));
    }
    let code = format!("HttpStatus.{status}");
    if status == 429 {
        return ProviderError::RateLimited { code, retry_after };
    }
    let refused_early = matches!(status, 400..=499 if status != 408) || matches!(status, 502 | 503);
    ProviderError::Transient {
        code,
        message: format!("HTTP {status} without an API response body"),
        maybe_applied: !refused_early,
    }
}

/// The `Host` header reqwest (hyper) sends for `url`: the host, plus the port only when it is not
/// the scheme's default. It is signed, so it must be computed exactly as the client sends it.
pub(crate) fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The pooled HTTP client of one provider: the account's connect and whole-request timeouts,
/// so a hung API cannot hold a dispatch slot forever. Redirects are never followed: a signed
/// call (credentials in its headers or query) goes to the configured endpoint only, and a 3xx
/// is classified by [`send`] instead.
fn http_client(account: &Account) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(account.connect_timeout)
        .timeout(account.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("purge-worker/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Largest provider answer read (1 MiB). Purge answers are a few hundred bytes; a gateway or a
/// misbehaving API sending more must not be able to make the worker allocate without bound.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Longest wait a `Retry-After` is read as (one day); larger values saturate here, and the
/// dispatcher holds any wait to `retry_max_ms` anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A provider's HTTP answer, read within [`MAX_ANSWER_BYTES`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// The standard `Retry-After` header in seconds, when present and sane.
    pub retry_after: Option<Duration>,
}

/// The one HTTP path of every provider: sends `request`, refuses a redirect, and reads the
/// body as a stream up to [`MAX_ANSWER_BYTES`]. Transport errors drop the URL (a tencent-v2 GET
/// carries every item and the SecretId in it).
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let mut response = request
        .send()
        .await
        .map_err(|e| transport_error(e.without_url()))?;
    let status = response.status().as_u16();
    let headers = std::mem::take(response.headers_mut());
    if (300..400).contains(&status) {
        // Transient, not permanent: neither the items nor the credentials are at fault (a
        // permanent class would dead-letter good items or stop the provider), and a gateway in
        // front of the API may redirect only for a while. The redirector answered instead of the
        // API, so nothing was applied. The code names the status for the operator to fix the
        // endpoint if it lasts.
        return Err(ProviderError::Transient {
            code: format!("HttpRedirect.{status}"),
            message: format!(
                "HTTP {status} redirect not followed: signed calls go to the configured endpoint only"
            ),
            maybe_applied: false,
        });
    }
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    // The request reached the API: from here on a failure leaves the outcome unknown.
    let too_large = || ProviderError::Transient {
        code: "ResponseTooLarge".into(),
        message: format!("HTTP {status} answer over {MAX_ANSWER_BYTES} bytes; not read"),
        maybe_applied: true,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            let mut err = transport_error(e.without_url());
            if let ProviderError::Transient { maybe_applied, .. } = &mut err {
                *maybe_applied = true;
            }
            err
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status,
        headers,
        body,
        retry_after,
    })
}

/// A `Retry-After`-style value in seconds: digits with an optional fraction (rounded up).
/// Anything else (an HTTP-date, a sign, an exponent, text) is `None`, so the caller backs off on
/// its own; a huge number saturates at [`MAX_RETRY_AFTER`] instead of overflowing.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    let numeric = !v.is_empty()
        && v.chars().all(|c| c.is_ascii_digit() || c == '.')
        && v.matches('.').count() <= 1
        && v != ".";
    if !numeric {
        return None;
    }
    let secs: f64 = v.parse().ok()?;
    let capped = secs.ceil().min(MAX_RETRY_AFTER.as_secs_f64());
    (capped >= 0.0).then(|| Duration::from_secs_f64(capped))
}

/// Text of an error and its sources, joined by ": ", for the `message` of a transport failure
/// and the CLI's last line. A source whose text its parent already shows is left out: many
/// errors repeat their cause in their own text (`IO error: Connection refused (os error 111)`
/// over `Connection refused (os error 111)`), and saying it twice reads as two problems.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parent = e.to_string();
    let mut message = parent.clone();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parent.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        parent = text;
        source = s.source();
    }
    message
}

/// Maps a reqwest failure. Connect failures never reached the API; anything after sending
/// (timeouts included) may have been applied.
pub(crate) fn transport_error(e: reqwest::Error) -> ProviderError {
    let message = error_chain(&e);
    let (code, maybe_applied) = if e.is_connect() {
        ("ConnectError", false)
    } else if e.is_builder() {
        ("RequestBuildError", false)
    } else if e.is_timeout() {
        ("Timeout", true)
    } else {
        ("TransportError", true)
    };
    ProviderError::Transient {
        code: code.into(),
        message,
        maybe_applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_says_a_repeated_cause_once() {
        let refused = "Connection refused (os error 111)";
        let e = Layer(
            "cannot connect: IO error: Connection refused (os error 111)",
            Some(Box::new(Layer(
                "IO error: Connection refused (os error 111)",
                Some(Box::new(Layer(refused, None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "cannot connect: IO error: Connection refused (os error 111)"
        );
        let e = Layer("cannot read quota", Some(Box::new(Layer(refused, None))));
        assert_eq!(error_chain(&e), format!("cannot read quota: {refused}"));
    }

    #[test]
    fn retry_after_is_parsed_safely() {
        let secs = |s: &str| parse_retry_after(s).map(|d| d.as_secs());
        assert_eq!(secs("7"), Some(7));
        assert_eq!(secs(" 2.5 "), Some(3));
        assert_eq!(
            secs("10000000000000000000"),
            Some(MAX_RETRY_AFTER.as_secs())
        );
        assert_eq!(secs(&"9".repeat(400)), Some(MAX_RETRY_AFTER.as_secs()));
        for bad in [
            "",
            "-1",
            "abc",
            "1e9",
            ".",
            "1.2.3",
            "inf",
            "NaN",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }
}
