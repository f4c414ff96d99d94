//! `GET /api/notifications` (targets, URLs masked, last deliveries) and
//! `POST /api/notifications/{target}/test` (one test delivery, now).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::notify::TestError;

/// Every target of `CHUMP_NOTIFY_CONFIG`: name, type, masked URL, events,
/// selector, queue and the last delivery's result.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(state.notifications.describe())
}

/// Sends a test event to `target` (one attempt, not queued): 200 when it
/// was delivered, 502 with the (masked) error when the receiver failed.
pub async fn test(
    State(state): State<AppState>,
    Path(target): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    match state.notifications.test(&target).await {
        Ok(answer) => {
            let code = if answer["result"] == "delivered" {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            };
            Ok((code, Json(answer)))
        }
        Err(TestError::NoSuchTarget) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "[WARN] No notification target '{}' (GET /api/notifications lists them)",
                target.chars().take(64).collect::<String>()
            ),
        )),
        Err(TestError::Unsupported(why)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("[WARN] Cannot test {target}: {why}"),
        )),
    }
}
