//! Reading a JSON request body with the API's own errors: a size cap
//! (64 KiB), a JSON content type, and a clear message for malformed JSON,
//! instead of axum's plain-text rejections.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde_json::Value;

use super::error::ApiError;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A parsed JSON request body (any JSON value; callers check its shape).
pub struct JsonBody(pub Value);

/// A JSON request body that may be absent (empty): `None`.
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        match read_json(req).await? {
            Some(v) => Ok(JsonBody(v)),
            None => Err(ApiError::bad_request(
                "[WARN] Request body is empty: expected a JSON object",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_json(req).await.map(OptionalJsonBody)
    }
}

/// The body as JSON (None: empty), with the API's errors.
async fn read_json(req: Request) -> Result<Option<Value>, ApiError> {
    {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or_default().trim();
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("[WARN] Content-Type must be application/json, not '{mime}'"),
                ));
            }
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "[WARN] Request body is larger than {} KiB",
                    MAX_BODY_BYTES / 1024
                ),
            )
        };
        if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
            if len
                .to_str()
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
                .is_some_and(|l| l > MAX_BODY_BYTES)
            {
                return Err(too_large());
            }
        }
        let body: Body = req.into_body();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| {
                // to_bytes fails on the limit or on a broken connection.
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit")
                {
                    too_large()
                } else {
                    ApiError::bad_request(format!("[WARN] Cannot read request body: {e}"))
                }
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("[WARN] Malformed JSON: {e}")))
    }
}
