//! `DescribePurgeQuota` (PROVIDERS.md §1.2): no parameters (the body is `{}`); the answer has
//! `UrlPurge[]` and `PathPurge[]`, one `{Batch, Total, Available, Area}` per region. The element
//! of the configured `quota_area` is the account's figure; every number is bounded by
//! [`MAX_QUOTA_FIGURE`] before it is used.

use serde::Deserialize;

use super::{TencentV3, response};
use crate::provider::http;
use crate::provider::{MAX_QUOTA_FIGURE, ProviderError, ProviderQuota, QuotaFigure};

/// The action (also the `action` metric label).
pub const ACTION_QUOTA: &str = "DescribePurgeQuota";
/// Most region elements looked at per list (Tencent has two regions).
const MAX_ELEMENTS: usize = 16;

#[derive(Deserialize)]
struct Element {
    #[serde(rename = "Total")]
    total: Option<serde_json::Value>,
    #[serde(rename = "Available")]
    available: Option<serde_json::Value>,
    #[serde(rename = "Area")]
    area: Option<String>,
}

impl TencentV3 {
    pub(super) async fn read_quota(&self) -> Result<ProviderQuota, ProviderError> {
        let signed = self.signed(ACTION_QUOTA, b"{}".to_vec(), chrono::Utc::now().timestamp());
        let area = self.quota_area.as_str();
        http::query(self.endpoint.post(signed), ACTION_QUOTA, |answer| {
            interpret(answer.status, &answer.body, area)
        })
        .await
    }
}

/// A bounded non-negative integer, or `None`.
fn figure(v: Option<&serde_json::Value>) -> Option<u64> {
    v?.as_u64().filter(|n| *n <= MAX_QUOTA_FIGURE)
}

/// The `area` element of one list; an error when it is there but its numbers are not sane.
fn element(
    response: &serde_json::Value,
    list: &str,
    area: &str,
) -> Result<Option<QuotaFigure>, ProviderError> {
    let Some(items) = response.get(list).and_then(|l| l.as_array()) else {
        return Ok(None);
    };
    for item in items.iter().take(MAX_ELEMENTS) {
        let Ok(e) = Element::deserialize(item) else {
            continue;
        };
        if e.area.as_deref() != Some(area) {
            continue;
        }
        let (Some(total), Some(available)) =
            (figure(e.total.as_ref()), figure(e.available.as_ref()))
        else {
            return Err(http::malformed(format!(
                "{list} of area {area}: Total and Available must be integers from 0 to {MAX_QUOTA_FIGURE}"
            )));
        };
        return Ok(Some(QuotaFigure {
            total: Some(total),
            available: available.min(total),
        }));
    }
    Ok(None)
}

/// Turns a `DescribePurgeQuota` answer into figures or a classified error.
pub(super) fn interpret(
    status: u16,
    body: &[u8],
    area: &str,
) -> Result<ProviderQuota, ProviderError> {
    let response = response(status, body, None)?;
    Ok(ProviderQuota {
        urls: element(&response, "UrlPurge", area)?,
        dirs: element(&response, "PathPurge", area)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn the_configured_area_is_read_and_bounded() {
        let body = br#"{"Response":{"UrlPurge":[
            {"Batch":1000,"Total":10000,"Available":10000,"Area":"overseas"},
            {"Batch":1000,"Total":20000,"Available":1000,"Area":"mainland"}],
            "PathPurge":[{"Batch":500,"Total":100,"Available":200,"Area":"mainland"}],
            "RequestId":"r"}}"#;
        let q = interpret(200, body, "mainland").unwrap();
        let urls = q.urls.unwrap();
        assert_eq!((urls.total, urls.available), (Some(20_000), 1000));
        assert_eq!(urls.used(10_000), 19_000);
        let dirs = q.dirs.unwrap();
        assert_eq!(dirs.available, 100, "Available never exceeds Total");
        assert_eq!(dirs.used(100), 0);
        let q = interpret(200, body, "overseas").unwrap();
        assert_eq!(q.urls.unwrap().used(0), 0);
        assert_eq!(q.dirs, None, "no PathPurge element for that area");

        let huge =
            br#"{"Response":{"UrlPurge":[{"Total":1e30,"Available":-1,"Area":"mainland"}]}}"#;
        assert!(interpret(200, huge, "mainland").is_err());
        let err =
            br#"{"Response":{"Error":{"Code":"ResourceNotFound.CdnUserNotExists","Message":"x"}}}"#;
        assert!(matches!(
            interpret(200, err, "mainland"),
            Err(ProviderError::Auth { .. })
        ));
        assert!(interpret(502, b"<html>", "mainland").is_err());
    }
}
