//! The REST API (axum): the original tool's routes for git sources, health,
//! and JSON answers for every error, unknown route and wrong method.

mod auth;
pub mod body;
pub mod error;
mod history;
mod sources;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chump_jobs::source::ValidationRules;
use chump_jobs::store::Store;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use error::ApiError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub rules: ValidationRules,
    pub api_token: Option<Arc<str>>,
    /// Woken when intent changes (a source created or updated), so the
    /// scheduler looks at the schedule at once instead of at its next tick.
    pub schedule_changed: Arc<Notify>,
}

impl AppState {
    fn wake_scheduler(&self) {
        self.schedule_changed.notify_one();
    }
}

/// Every route, for `GET /api`.
const ENDPOINTS: &[&str] = &[
    "GET /api",
    "GET /api/health",
    "GET /api/sources",
    "POST /api/sources",
    "POST /api/sources/create",
    "GET /api/sources/{id}",
    "PATCH /api/sources/{id}",
    "PUT /api/sources/{id}",
    "PATCH /api/sources/{id}/update",
    "PUT /api/sources/{id}/update",
    "DELETE /api/sources/{id}",
    "DELETE /api/sources/{id}/delete",
    "GET /api/sources/{id}/status",
    "GET /api/sources/{id}/history",
    "GET /api/history",
    "GET /healthz",
    "GET /readyz",
];

/// Builds the router over `state`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api", get(endpoints))
        .route("/api/", get(endpoints))
        .route("/api/health", get(health))
        .route("/api/sources", get(sources::list).post(sources::create))
        .route("/api/sources/", get(sources::list).post(sources::create))
        .route("/api/sources/create", axum::routing::post(sources::create))
        .route(
            "/api/sources/{id}",
            get(sources::get)
                .patch(sources::patch)
                .put(sources::put)
                .delete(sources::delete),
        )
        .route("/api/sources/{id}/", get(sources::get))
        .route(
            "/api/sources/{id}/update",
            axum::routing::patch(sources::patch).put(sources::put),
        )
        .route(
            "/api/sources/{id}/delete",
            axum::routing::delete(sources::delete),
        )
        .route("/api/sources/{id}/status", get(history::status))
        .route("/api/sources/{id}/history", get(history::of_source))
        .route("/api/history", get(history::all))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn endpoints() -> Json<Value> {
    Json(json!({ "endpoints": ENDPOINTS }))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "healthy" }))
}

/// Liveness: the process answers.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// Readiness: the store answers.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(json!({ "status": "ready" }))),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[ERROR] Not ready: {e}"),
        )),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("[WARN] No such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("[WARN] Method {method} is not allowed on {}", uri.path()),
    )
}
