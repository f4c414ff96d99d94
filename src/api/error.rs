//! The one error shape of the REST API: a status code and a JSON body with a
//! `msg` (the original tool's wording where it had one) and, for validation,
//! an `errors` object of field → reason.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chump_jobs::source::ValidationErrors;
use chump_jobs::store::StoreError;
use serde_json::json;

/// The original tool's messages.
pub const MSG_NOT_FOUND: &str = "[WARN] Source doesn't exist!";
pub const MSG_DUPLICATE: &str = "[WARN] Source already exist!";
/// A source deleted with `prune=true` whose objects are still being pruned.
pub const MSG_BEING_DELETED: &str =
    "[WARN] Source is being deleted: it takes no changes and no checks until its objects are pruned";

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
    pub errors: Option<BTreeMap<String, String>>,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
            errors: None,
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, MSG_NOT_FOUND)
    }
    /// A bad query parameter: 400, the `msg` naming it and `errors` giving
    /// the reason under its name.
    pub fn bad_query(name: &str, why: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            msg: format!("[WARN] Invalid query parameter '{name}': {why}"),
            errors: Some(BTreeMap::from([(name.to_string(), why.to_string())])),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(e: ValidationErrors) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            msg: e.summary(),
            errors: Some(e.0),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(),
            StoreError::Duplicate(_) => Self::new(StatusCode::CONFLICT, MSG_DUPLICATE),
            StoreError::BeingDeleted(_) => Self::new(StatusCode::CONFLICT, MSG_BEING_DELETED),
            StoreError::Unavailable(detail) => {
                // Logged once per outage by the scheduler; not per request.
                tracing::debug!(error = %detail, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "[ERROR] The database is unavailable, try again later",
                )
            }
            StoreError::Backend(detail) => {
                tracing::error!(error = %detail, "store error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "[ERROR] The database failed to answer",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.errors {
            Some(errors) => json!({ "msg": self.msg, "errors": errors }),
            None => json!({ "msg": self.msg }),
        };
        (self.status, Json(body)).into_response()
    }
}
