//! Bearer-token authentication of API routes, when `CHUMP_API_TOKEN` is set.
//!
//! The API token may do anything; the optional read-only token
//! (`CHUMP_API_READ_TOKEN`) may only read (GET and HEAD) and gets 403 on
//! writes. Tokens are compared in constant time.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Lets a request through when no token is configured or it carries a
/// token allowed to make it; 401 or 403 with a JSON `msg` otherwise.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.api_token.as_deref() else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if !presented.is_empty() && same(presented, expected) {
        return next.run(req).await;
    }
    let read_only = state
        .api_read_token
        .as_deref()
        .is_some_and(|t| !presented.is_empty() && same(presented, t));
    if read_only {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return next.run(req).await;
        }
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "[WARN] Forbidden: the read-only token cannot change anything",
        )
        .into_response();
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "[WARN] Unauthorized: send Authorization: Bearer <token>",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}
