//! Bearer-token authentication of API routes, when `CHUMP_API_TOKEN` is set.
//! Tokens are compared in constant time.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;

/// Lets a request through when no token is configured or it carries
/// `Authorization: Bearer <token>`; 401 with a JSON `msg` otherwise.
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.api_token.as_deref() else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            next.run(req).await
        }
        _ => {
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
    }
}
