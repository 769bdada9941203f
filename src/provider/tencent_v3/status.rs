//! Tencent Cloud API 3.0 beyond the purge: `DescribePurgeTasks` by `TaskId` (228/37873; its own
//! 20 req/s, so it does not spend the purge budget) and `PushUrlsCache` (228/33600: ≤ 500 URLs a
//! call, 1,000 a day per region). Signed and sent like the purge call.

use serde_json::{Value, json};

use super::{TencentV3, response};
use crate::provider::ProviderError;
use crate::provider::http;
use crate::provider::task::{TaskQuery, TaskReport, TaskState};

/// The status action.
pub const ACTION_STATUS: &str = "DescribePurgeTasks";
/// The prefetch action.
pub const ACTION_PREFETCH: &str = "PushUrlsCache";
/// Most URLs one `PushUrlsCache` call takes.
pub const PREFETCH_PER_CALL: usize = 500;
/// Most purge logs asked for in one status query (the API pages; a task holds ≤ 1000 URLs).
const MAX_LOGS: usize = 1000;

impl TencentV3 {
    /// One `DescribePurgeTasks` by `TaskId`.
    pub(super) async fn status(&self, q: &TaskQuery) -> Result<TaskReport, ProviderError> {
        let body = json!({"TaskId": q.task_id, "Limit": q.items.clamp(1, MAX_LOGS)});
        let body = serde_json::to_vec(&body).map_err(http::build_error)?;
        let signed = self.signed(ACTION_STATUS, body, chrono::Utc::now().timestamp());
        http::query(self.endpoint.post(signed), ACTION_STATUS, |a| {
            interpret_status(a.status, &a.body, a.retry_after)
        })
        .await
    }

    /// One `PushUrlsCache` of `urls`.
    pub(super) async fn push(&self, urls: &[String]) -> Result<String, ProviderError> {
        let body = serde_json::to_vec(&json!({"Urls": urls})).map_err(http::build_error)?;
        let signed = self.signed(ACTION_PREFETCH, body, chrono::Utc::now().timestamp());
        http::query(self.endpoint.post(signed), ACTION_PREFETCH, |a| {
            let r = response(a.status, &a.body, a.retry_after)?;
            Ok(r.get("TaskId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string())
        })
        .await
    }
}

/// `PurgeLogs[]` → one report: any `process` keeps the task running; else any `fail` fails it,
/// naming the failed URLs; all `done` is done. No logs yet (the task is not indexed yet, or
/// unknown) reads as running: the tracker bounds how long it asks.
fn interpret_status(
    status: u16,
    body: &[u8],
    retry_after: Option<std::time::Duration>,
) -> Result<TaskReport, ProviderError> {
    let response = response(status, body, retry_after)?;
    let logs = response
        .get("PurgeLogs")
        .and_then(Value::as_array)
        .ok_or_else(|| http::malformed("DescribePurgeTasks answer without PurgeLogs"))?;
    fn status_of(l: &Value) -> &str {
        l.get("Status").and_then(Value::as_str).unwrap_or("")
    }
    if logs.is_empty() || logs.iter().any(|l| status_of(l) == "process") {
        return Ok(TaskReport::new(TaskState::Running, "process", Vec::new()));
    }
    let failed: Vec<String> = logs
        .iter()
        .filter(|l| status_of(l) != "done")
        .filter_map(|l| l.get("Url").and_then(Value::as_str).map(str::to_string))
        .take(MAX_LOGS)
        .collect();
    if failed.is_empty() {
        Ok(TaskReport::new(TaskState::Done, "done", failed))
    } else {
        Ok(TaskReport::new(TaskState::Failed, "fail", failed))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn purge_logs_become_one_state() {
        let read = |logs: &str| {
            let body = format!(r#"{{"Response":{{"PurgeLogs":{logs},"RequestId":"r"}}}}"#);
            interpret_status(200, body.as_bytes(), None).unwrap()
        };
        assert_eq!(read("[]").state, TaskState::Running);
        let r = read(r#"[{"Url":"a","Status":"done"},{"Url":"b","Status":"process"}]"#);
        assert_eq!(r.state, TaskState::Running);
        let r = read(r#"[{"Url":"a","Status":"done"},{"Url":"b","Status":"fail"}]"#);
        assert_eq!(
            (r.state, r.failed, r.words.as_str()),
            (TaskState::Failed, vec!["b".to_string()], "fail")
        );
        assert_eq!(
            read(r#"[{"Url":"a","Status":"done"}]"#).state,
            TaskState::Done
        );
        let e = interpret_status(
            200,
            br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"x"}}}"#,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, ProviderError::RateLimited { .. }));
    }
}
