//! The server side of Wangsu CDN Pro purges: `POST /cdn/purges`, `GET /cdn/purges/{id}`
//! (PROVIDERS.md §3).

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Shared;

/// The username the emulator accepts by default for Wangsu's API-key scheme.
pub const EMULATOR_WANGSU_USERNAME: &str = "emulator-user";
/// The api key paired with [`EMULATOR_WANGSU_USERNAME`]. A demo value, safe to print.
pub const EMULATOR_WANGSU_API_KEY: &str = "emulator-api-key";

/// The Wangsu API's accounts and limits (PROVIDERS.md §3.4).
#[derive(Debug, Clone, Default)]
pub struct WangsuLimits {}

/// Token buckets, rolling quotas and purge tasks of the Wangsu API.
#[derive(Debug, Default)]
pub(crate) struct WangsuState {}

pub(crate) async fn create(AxumState(_shared): AxumState<Arc<Shared>>) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}

pub(crate) async fn status(AxumState(_shared): AxumState<Arc<Shared>>) -> Response {
    StatusCode::NOT_IMPLEMENTED.into_response()
}
