//! Tencent API 2.0 task status: `GetCdnRefreshLog` by `taskId` (214/3948, confirmed: records kept
//! 30 days, 1,000 calls per minute of its own; `logs[].status` 1 done, 0 running, negative
//! failed, with the task's `url_list`). Signed and sent like the purge call, with a fresh Nonce.

use rand::Rng;
use serde_json::Value;

use super::HttpMethod;
use super::{FORM_CONTENT_TYPE, NONCE_MAX, TencentV2, classify, parse_answer};
use crate::provider::qcloud_v2::SignatureMethod;
use crate::provider::qcloud_v2::{self, SIGNATURE_METHOD, SignInput};
use crate::provider::task::{TaskQuery, TaskReport, TaskState};
use crate::provider::{ProviderError, http};

/// The status action.
pub const ACTION_STATUS: &str = "GetCdnRefreshLog";

impl TencentV2 {
    /// One `GetCdnRefreshLog` by `taskId`.
    pub(super) async fn status(&self, q: &TaskQuery) -> Result<TaskReport, ProviderError> {
        let endpoint = &self.endpoint;
        let nonce = rand::rng().random_range(1..=NONCE_MAX).to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let mut params: Vec<(&str, &str)> = vec![
            ("Action", ACTION_STATUS),
            ("SecretId", endpoint.secret_id.expose()),
            ("Timestamp", &timestamp),
            ("Nonce", &nonce),
        ];
        if self.signature_method == SignatureMethod::HmacSha256 {
            params.push((SIGNATURE_METHOD, self.signature_method.as_str()));
        }
        params.push(("taskId", &q.task_id));
        let signed = qcloud_v2::sign(&SignInput {
            method: self.http_method.as_str(),
            host: &endpoint.host,
            path: endpoint.url.path(),
            params: &params,
            signature_method: self.signature_method,
            secret_key: endpoint.secret_key.expose(),
        });
        let request = match self.http_method {
            HttpMethod::Post => endpoint
                .client
                .post(endpoint.url.clone())
                .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE)
                .body(signed.encoded),
            HttpMethod::Get => {
                let mut url = endpoint.url.clone();
                url.set_query(Some(&signed.encoded));
                endpoint.client.get(url)
            }
        };
        http::query(request, ACTION_STATUS, |a| {
            interpret_status(a.status, &a.body)
        })
        .await
    }
}

/// `data.logs[]` → one report: any `0` keeps it running, any negative fails it (naming its
/// `url_list`), all `1` is done; no log yet reads as running (the tracker bounds the asking).
fn interpret_status(status: u16, body: &[u8]) -> Result<TaskReport, ProviderError> {
    let Some(answer) = parse_answer(body) else {
        return Err(http::non_api_answer(
            status,
            None,
            "the API's {code, message} envelope",
        ));
    };
    if answer.code != 0 {
        return Err(classify(answer.code, &answer.code_desc, &answer.message));
    }
    let logs = answer
        .data
        .as_ref()
        .and_then(|d| d.get("logs"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let code = |l: &Value| l.get("status").and_then(Value::as_i64).unwrap_or(0);
    if logs.is_empty() || logs.iter().any(|l| code(l) == 0) {
        return Ok(TaskReport::new(TaskState::Running, "status 0", Vec::new()));
    }
    if let Some(bad) = logs.iter().find(|l| code(l) < 0) {
        let failed: Vec<String> = logs
            .iter()
            .filter(|l| code(l) < 0)
            .filter_map(|l| l.get("url_list").and_then(Value::as_array))
            .flatten()
            .filter_map(|u| u.as_str().map(str::to_string))
            .take(1000)
            .collect();
        return Ok(TaskReport::new(
            TaskState::Failed,
            &format!("status {}", code(bad)),
            failed,
        ));
    }
    Ok(TaskReport::new(TaskState::Done, "status 1", Vec::new()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is the test failure report
mod tests {
    use super::*;

    #[test]
    fn refresh_log_statuses_are_read_as_documented() {
        let read = |logs: &str| {
            let body = format!(
                r#"{{"code":0,"message":"","codeDesc":"Success","data":{{"total":1,"logs":{logs}}}}}"#
            );
            interpret_status(200, body.as_bytes()).unwrap()
        };
        assert_eq!(read("[]").state, TaskState::Running);
        assert_eq!(
            read(r#"[{"status":0,"url_list":["a"]}]"#).state,
            TaskState::Running
        );
        assert_eq!(
            read(r#"[{"status":1,"url_list":["a"]}]"#).state,
            TaskState::Done
        );
        let r = read(r#"[{"status":-2,"url_list":["a","b"]}]"#);
        assert_eq!(
            (r.state, r.failed.len(), r.words.as_str()),
            (TaskState::Failed, 2, "status -2")
        );
    }
}
