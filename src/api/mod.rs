//! The REST API (axum): the original tool's routes for git sources, the
//! history and status of what chump did, manual checks and webhooks,
//! health and metrics — with JSON answers for every error, unknown route
//! and wrong method.

mod actions;
mod auth;
pub mod body;
pub mod error;
mod history;
mod notifications;
pub mod openapi;
mod rollback;
mod sources;
pub mod whole_list;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chump_jobs::metrics::{source_state, Metrics, StateLabels, SOURCE_STATES};
use chump_jobs::pipeline::PipelineProbe;
use chump_jobs::source::ValidationRules;
use chump_jobs::store::Store;
use serde_json::{json, Value};
use time::OffsetDateTime;
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
    /// May read but not write.
    pub api_read_token: Option<Arc<str>>,
    pub webhook_secret: Option<Arc<str>>,
    /// Woken when intent changes (a source created or updated, a check
    /// requested), so the scheduler looks at the schedule at once.
    pub schedule_changed: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    /// The pipeline's live counters (None when no pipeline runs).
    pub pipeline: Option<PipelineProbe>,
    /// The notification targets and their deliveries.
    pub notifications: crate::notify::Notifications,
    /// Which sources a push concerns, kept while the store's
    /// `sources_version` stays the same (see `actions::push_targets`).
    pub push_index: KeptPushIndex,
    /// The rendered whole source list and the store version it is of (see
    /// [`whole_list`]).
    pub whole_list: Arc<whole_list::KeptList>,
}

/// The push index and the `sources_version` it was built at.
pub type KeptPushIndex =
    Arc<tokio::sync::Mutex<Option<(u64, Arc<chump_jobs::webhook::PushIndex>)>>>;

impl AppState {
    fn wake_scheduler(&self) {
        self.schedule_changed.notify_one();
    }
}

/// Every route, for `GET /api` (and checked against the router and the
/// OpenAPI document by the tests).
pub const ENDPOINTS: &[&str] = &[
    "GET /",
    "GET /ui/",
    "GET /api",
    "GET /api/health",
    "GET /api/openapi.json",
    "GET /api/sources",
    "POST /api/sources",
    "POST /api/sources/create",
    "GET /api/sources/{id}",
    "PATCH /api/sources/{id}",
    "PUT /api/sources/{id}",
    "DELETE /api/sources/{id}",
    "PATCH /api/sources/{id}/update",
    "PUT /api/sources/{id}/update",
    "DELETE /api/sources/{id}/delete",
    "GET /api/sources/{id}/status",
    "GET /api/sources/{id}/objects",
    "GET /api/sources/{id}/history",
    "POST /api/sources/{id}/check",
    "POST /api/sources/{id}/rollback",
    "POST /api/sources/{id}/unpin",
    "GET /api/history",
    "GET /api/history/{id}",
    "GET /api/history/{id}/manifests",
    "GET /api/history/{id}/diff",
    "GET /api/notifications",
    "POST /api/notifications/{target}/test",
    "POST /api/webhooks/{provider}",
    "GET /metrics",
    "GET /healthz",
    "GET /readyz",
];

/// Every check outcome by its wire name, in the order error messages and
/// the CLI list them (`?outcome=` of the history routes, `chump history
/// --outcome`).
pub const OUTCOME_NAMES: &[&str] = chump_jobs::history::Outcome::NAMES;

/// `a, b, c or d`.
pub(crate) fn one_of(values: &[&str]) -> String {
    match values {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Builds the router over `state`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api", get(endpoints))
        .route("/api/", get(endpoints))
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/sources", get(sources::list).post(sources::create))
        .route("/api/sources/", get(sources::list).post(sources::create))
        .route("/api/sources/create", post(sources::create))
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
        .route("/api/sources/{id}/objects", get(history::objects))
        .route("/api/sources/{id}/objects/", get(history::objects))
        .route("/api/sources/{id}/history", get(history::of_source))
        .route("/api/sources/{id}/check", post(actions::check))
        .route("/api/sources/{id}/rollback", post(rollback::rollback))
        .route("/api/sources/{id}/unpin", post(rollback::unpin))
        .route("/api/history", get(history::all))
        .route("/api/history/{id}", get(history::one))
        .route("/api/history/{id}/manifests", get(history::manifests))
        .route("/api/history/{id}/diff", get(history::diff))
        .route("/api/notifications", get(notifications::list))
        .route(
            "/api/notifications/{target}/test",
            post(notifications::test),
        )
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // Webhooks authenticate themselves (signature, else the API token).
        .route("/api/webhooks/{provider}", post(actions::webhook))
        .merge(api)
        // The dashboard's files (public: the page reads data through the API).
        .merge(crate::ui::routes())
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

/// Readiness: the store answers and the scheduler loops.
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let not_ready = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[ERROR] Not ready: {why}"),
        )
    };
    state
        .store
        .ping()
        .await
        .map_err(|e| not_ready(e.to_string()))?;
    if let Some(probe) = &state.pipeline {
        let beat = probe.scheduler_heartbeat();
        let age = OffsetDateTime::now_utc().unix_timestamp() - beat;
        if beat == 0 || age > 30 {
            return Err(not_ready(format!("the scheduler has not run for {age} s")));
        }
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// Prometheus metrics, text format.
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let m = &state.metrics;
    if let Some(p) = &state.pipeline {
        m.queue_depth.set(p.queued() as i64);
        m.busy_workers.set(p.running() as i64);
    }
    let sources = state.store.list_sources().await?;
    let statuses = state.store.list_statuses().await?;
    // Every state, so a state no source is in any more reads zero.
    let mut counts: std::collections::BTreeMap<&str, i64> =
        SOURCE_STATES.iter().map(|s| (*s, 0)).collect();
    for s in &sources {
        let last = statuses.get(&s.id).and_then(|st| st.last_outcome);
        *counts.entry(source_state(s, last)).or_default() += 1;
    }
    for (state, n) in counts {
        m.sources
            .get_or_create(&StateLabels {
                state: state.to_string(),
            })
            .set(n);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use chump_jobs::history::Outcome;

    #[test]
    fn every_outcome_name_parses_back() {
        for name in OUTCOME_NAMES {
            assert_eq!(name.parse::<Outcome>().map(Outcome::as_str), Ok(*name));
        }
        assert!(OUTCOME_NAMES.contains(&"degraded") && OUTCOME_NAMES.contains(&"superseded"));
    }

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }
}
