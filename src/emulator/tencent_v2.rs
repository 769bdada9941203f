//! The server side of Tencent Cloud legacy API 2.0: `GET|POST /v2/index.php` with `Action`
//! `RefreshCdnUrl` or `RefreshCdnDir` (PROVIDERS.md §2).

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Shared;

/// The v2 API's limits (PROVIDERS.md §2.2).
#[derive(Debug, Clone, Default)]
pub struct V2Limits {}

/// Nonces seen, rate windows and quotas of the v2 API.
#[derive(Debug, Default)]
pub(crate) struct V2State {}

pub(crate) async fn api(AxumState(_shared): AxumState<Arc<Shared>>) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
