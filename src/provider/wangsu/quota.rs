//! The remaining purge allowance: `GET {endpoint}/cdn/purges/purgeTokens?target=…`
//! (PROVIDERS.md §3.1), answering `{"filePurgeTokens":N,"dirPurgeTokens":M}`: what is left of
//! the rolling 24 hours of the configured target. Wangsu names no total, so the ledger's limit
//! stands and the used figure is `limit − tokens`. Signed like every call, with the configured
//! scheme; the numbers are bounded by [`MAX_QUOTA_FIGURE`] before they are used.

use super::{Wangsu, answer};
use crate::provider::http;
use crate::provider::{MAX_QUOTA_FIGURE, ProviderError, ProviderQuota, QuotaFigure};

/// The `action` metric label of the quota query.
pub const ACTION_TOKENS: &str = "purges.tokens";

impl Wangsu {
    /// The tokens URL: the purge URL plus `/purgeTokens?target=…`.
    fn tokens_url(&self) -> url::Url {
        let mut url = self.endpoint.url.clone();
        let path = format!("{}/purgeTokens", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.set_query(Some(&format!("target={}", self.target.as_str())));
        url
    }

    pub(super) async fn read_tokens(&self) -> Result<ProviderQuota, ProviderError> {
        let url = self.tokens_url();
        let now = chrono::Utc::now().timestamp();
        let endpoint = &self.endpoint;
        // A second read within the same second would repeat the signature: keyed by the URL.
        let headers = self.auth_headers("GET", &url, &[], Some(url.as_str().as_bytes()), now);
        http::query(endpoint.get(url, headers), ACTION_TOKENS, |a| {
            interpret(a.status, &a.headers, &a.body)
        })
        .await
    }
}

/// A bounded token count, or `None`.
fn tokens(v: &serde_json::Value, field: &str) -> Option<u64> {
    v.get(field)?.as_u64().filter(|n| *n <= MAX_QUOTA_FIGURE)
}

/// Turns a purgeTokens answer into figures (no totals) or a classified error.
fn interpret(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> Result<ProviderQuota, ProviderError> {
    if status != 200 {
        // Errors have the purge calls' shape; a 2xx without a Location is not an error here.
        return Err(answer::interpret(status, headers, body, &[])
            .err()
            .unwrap_or_else(|| http::malformed(format!("HTTP {status} from purgeTokens"))));
    }
    let v = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|_| http::malformed("purgeTokens answer is not JSON"))?;
    let (Some(files), Some(dirs)) = (tokens(&v, "filePurgeTokens"), tokens(&v, "dirPurgeTokens"))
    else {
        return Err(http::malformed(format!(
            "purgeTokens answer without filePurgeTokens and dirPurgeTokens from 0 to {MAX_QUOTA_FIGURE}"
        )));
    };
    let figure = |available| QuotaFigure {
        total: None,
        available,
    };
    Ok(ProviderQuota {
        urls: Some(figure(files)),
        dirs: Some(figure(dirs)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_and_bounded() {
        let h = reqwest::header::HeaderMap::new();
        let q = interpret(200, &h, br#"{"filePurgeTokens":200,"dirPurgeTokens":7}"#).unwrap();
        assert_eq!(q.urls.unwrap().used(5000), 4800);
        assert_eq!(
            q.dirs.unwrap().used(5),
            0,
            "more tokens than the limit is no use"
        );
        for bad in [
            &br#"{"filePurgeTokens":-1,"dirPurgeTokens":7}"#[..],
            br#"{"filePurgeTokens":1e300,"dirPurgeTokens":7}"#,
            br#"{"filePurgeTokens":1}"#,
            b"nope",
        ] {
            assert!(interpret(200, &h, bad).is_err());
        }
        let denied = interpret(401, &h, br#"{"code":"AccessDenied","message":"no"}"#);
        assert!(matches!(denied, Err(ProviderError::Auth { .. })));
    }
}
