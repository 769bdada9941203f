//! Wangsu CDN Pro beyond the purge: `GET /cdn/purges/{id}` (`status` waiting | inprogress |
//! finished, `successRate`; unknown id → 404 `InvalidPurgeTaskId`) and `POST /cdn/prefetches`
//! (`fileList[{url}]`, 201 + `Location`). Every call, these included, spends the customer's one
//! API budget (`apiRate`, field-notes-2), so [`super::Wangsu`] says its status calls share the
//! purge limiter. Signed like the purge call, on their own paths.

use serde_json::{Value, json};

use super::Wangsu;
use super::answer::interpret_query;
use crate::provider::task::{TaskQuery, TaskReport, TaskState};
use crate::provider::{ProviderError, http};

/// The status action (metric and log label).
pub const ACTION_STATUS: &str = "purges.get";
/// The prefetch action.
pub const ACTION_PREFETCH: &str = "prefetches.create";
/// Most URLs one prefetch call carries (our choice; the API documents no lower cap).
pub const PREFETCH_PER_CALL: usize = 100;

impl Wangsu {
    /// `{endpoint base}/{path}`.
    fn url_for(&self, path: &str) -> url::Url {
        let mut url = self.endpoint.url.clone();
        let base = url
            .path()
            .strip_suffix(super::PATH)
            .unwrap_or("/")
            .trim_end_matches('/')
            .to_string();
        url.set_path(&format!("{base}/{path}"));
        url
    }

    /// One `GET /cdn/purges/{id}`.
    pub(super) async fn status(&self, q: &TaskQuery) -> Result<TaskReport, ProviderError> {
        let id: String = q
            .task_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(64)
            .collect();
        let url = self.url_for(&format!("{}/{id}", super::PATH));
        let now = chrono::Utc::now().timestamp();
        let mut request = self.endpoint.client.get(url.clone());
        for (name, value) in self.auth_headers("GET", &url, b"", None, now) {
            request = request.header(name, value);
        }
        http::query(request, ACTION_STATUS, |a| {
            let body = interpret_query(a.status, &a.headers, &a.body)?;
            Ok(read_status(&body))
        })
        .await
    }

    /// One `POST /cdn/prefetches` of `urls`.
    pub(super) async fn prefetch_urls(&self, urls: &[String]) -> Result<String, ProviderError> {
        let list: Vec<Value> = urls.iter().map(|u| json!({"url": u})).collect();
        let body = serde_json::to_vec(&json!({"fileList": list})).map_err(http::build_error)?;
        let url = self.url_for("cdn/prefetches");
        let now = chrono::Utc::now().timestamp();
        let mut request = self.endpoint.client.post(url.clone());
        for (name, value) in self.auth_headers("POST", &url, &body, Some(&body), now) {
            request = request.header(name, value);
        }
        http::query(request.body(body), ACTION_PREFETCH, |a| {
            interpret_query(a.status, &a.headers, &a.body)?;
            Ok(a.headers
                .get("location")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.rsplit('/').next())
                .unwrap_or("")
                .chars()
                .take(64)
                .collect())
        })
        .await
    }
}

/// A purge's `status` and `successRate` as a report: finished under 100 % is failed (the
/// whole task is purged again: the API names no URLs in its status).
fn read_status(body: &Value) -> TaskReport {
    let status = body.get("status").and_then(Value::as_str).unwrap_or("");
    let rate = body
        .get("successRate")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        .clamp(0.0, 100.0);
    match status {
        "finished" if rate >= 100.0 => TaskReport::new(TaskState::Done, "finished", Vec::new()),
        "finished" => TaskReport::new(TaskState::Failed, &format!("finished {rate}%"), Vec::new()),
        "waiting" => TaskReport::new(TaskState::Running, "waiting", Vec::new()),
        _ => TaskReport::new(TaskState::Running, "inprogress", Vec::new()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn success_rate_under_100_is_a_failed_task() {
        let r = |v: Value| read_status(&v).state;
        assert_eq!(
            r(json!({"status":"finished","successRate":100})),
            TaskState::Done
        );
        assert_eq!(
            r(json!({"status":"finished","successRate":99.5})),
            TaskState::Failed
        );
        assert_eq!(
            r(json!({"status":"inprogress","successRate":0})),
            TaskState::Running
        );
        assert_eq!(r(json!({"status":"waiting"})), TaskState::Running);
    }
}
