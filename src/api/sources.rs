//! `/api/sources`: create, read, update and delete git sources, with the
//! original tool's paths, messages and status codes. `DELETE ?prune=true`
//! never touches the cluster itself: the store marks the source `deleting`
//! and a worker prunes its objects before the store deletes it (202).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chump_jobs::redact::redact_url;
use chump_jobs::source::{parse_source_id, Merge, SourceId, SourceSpec};
use chump_jobs::store::{Deletion, StoreError};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::body::JsonBody;
use super::error::ApiError;
use super::AppState;

fn source_id(raw: &str) -> Result<SourceId, ApiError> {
    parse_source_id(raw).map_err(ApiError::bad_request)
}

/// Largest page of `GET /api/sources?limit=`.
const MAX_PAGE: u32 = 1000;

/// One source of a listing, with its status.
#[derive(serde::Serialize)]
pub(super) struct Listed<'a> {
    #[serde(flatten)]
    source: chump_jobs::source::PublicSource<'a>,
    status: super::history::PublicStatus<'a>,
}

/// What `GET /api/sources` answers: `next_after` only when paging.
#[derive(serde::Serialize)]
struct Listing<'a> {
    sources: Vec<Listed<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<Option<SourceId>>,
}

/// `GET /api/sources`: every source with its status, sorted by id (the
/// original tool's answer); with `?limit=N` (1 to 1000), a page of them,
/// `?after=ID` the ones above `ID`, and `next_after` the cursor of the
/// next page (null on the last).
pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let mut limit = None;
    let mut after = None;
    for (key, value) in &params {
        match key.as_str() {
            "limit" => {
                limit = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_query(
                                key,
                                &format!("must be an integer from 1 to {MAX_PAGE}"),
                            )
                        })?,
                );
            }
            "after" => {
                after = Some(
                    value
                        .parse::<SourceId>()
                        .ok()
                        .filter(|n| *n >= 0)
                        .ok_or_else(|| ApiError::bad_query(key, "must be a source id"))?,
                );
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "[WARN] Unknown query parameter '{other}': this route takes limit and after"
                )))
            }
        }
    }
    if after.is_some() && limit.is_none() {
        return Err(ApiError::bad_query("after", "needs limit"));
    }
    let Some(limit) = limit else {
        return super::whole_list::answer(&state).await;
    };
    let rows = state
        .store
        .list_sources_with_status(after, Some(limit))
        .await?;
    let next_after = Some(
        (rows.len() == limit as usize)
            .then(|| rows.last().map(|(s, _)| s.id))
            .flatten(),
    );
    let listing = Listing {
        sources: rows.iter().map(listed).collect(),
        next_after,
    };
    // Serialized here, straight from the store's rows (no JSON tree).
    let mut body = Vec::with_capacity(rows.len() * 1024);
    serde_json::to_writer(&mut body, &listing).map_err(internal)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response())
}

pub(super) fn listed<'a>(
    (source, status): &'a (chump_jobs::source::Source, chump_jobs::store::SourceStatus),
) -> Listed<'a> {
    Listed {
        source: source.public(),
        status: super::history::PublicStatus::of(status),
    }
}

pub(super) fn internal(e: serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("[ERROR] {e}"))
}

/// `GET /api/sources/{id}`: one source.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = source_id(&id)?;
    let source = state
        .store
        .get_source(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Object(source.to_public_json())))
}

/// `POST /api/sources/create`, `POST /api/sources`: a new source, due for a
/// check at once.
pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let spec = SourceSpec::from_json(&body, Merge::Full, state.rules)?;
    let source = state
        .store
        .create_source(&spec, OffsetDateTime::now_utc())
        .await?;
    tracing::info!(source_id = source.id, target = %source.target(), git_url = %redact_url(&spec.git_url), "source created");
    state.wake_scheduler();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "msg": "[INFO] Add new source success!", "source": source.to_public_json() })),
    ))
}

/// `PATCH` (some fields) or `PUT` (all fields) `/api/sources/{id}[/update]`.
pub async fn patch(
    state: State<AppState>,
    id: Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    update(state, id, body, true).await
}

/// `PUT /api/sources/{id}[/update]`: replaces every field.
pub async fn put(
    state: State<AppState>,
    id: Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    update(state, id, body, false).await
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(mut body): JsonBody,
    partial: bool,
) -> Result<Json<Value>, ApiError> {
    let id = source_id(&id)?;
    let current = state
        .store
        .get_source(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if current.deleting {
        return Err(StoreError::BeingDeleted(id).into());
    }
    // A client that sends back the masked URL it was shown keeps the stored
    // credentials.
    if let Some(Value::String(url)) = body.get("git_url") {
        if *url == redact_url(&current.spec.git_url) {
            body["git_url"] = Value::String(current.spec.git_url.clone());
        }
    }
    let merge = if partial {
        Merge::Patch(&current.spec)
    } else {
        Merge::Full
    };
    let spec = SourceSpec::from_json(&body, merge, state.rules)?;
    let source = state
        .store
        .update_source(id, &spec, OffsetDateTime::now_utc())
        .await?;
    tracing::info!(source_id = id, target = %source.target(), "source updated");
    state.wake_scheduler();
    Ok(Json(
        json!({ "msg": "[INFO] Source has been updated!", "source": source.to_public_json() }),
    ))
}

/// `DELETE /api/sources/{id}[/delete][?prune=true]`: the source and its
/// schedule go; its history stays. With `prune=true` and objects recorded
/// as applied, the source is marked `deleting` instead (202): a worker
/// deletes those objects, then the store deletes the source. Without
/// `prune` (or `prune=false`), a source being deleted goes at once and its
/// prune is abandoned.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = source_id(&id)?;
    let prune = delete_params(&params)?;
    match state.store.delete_source(id, prune).await? {
        Deletion::Deleted => {
            tracing::info!(source_id = id, "source deleted");
            Ok((
                StatusCode::OK,
                Json(json!({ "msg": "[INFO] Source has been deleted!" })),
            ))
        }
        Deletion::Pruning => {
            tracing::info!(
                source_id = id,
                "source being deleted: pruning its objects first"
            );
            state.wake_scheduler();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "msg": "[INFO] Source is being deleted: the objects chump applied for it are pruned first",
                    "deleting": true,
                })),
            ))
        }
    }
}

/// The query of a delete: `prune`, exactly `true` or `false` (default false).
fn delete_params(params: &HashMap<String, String>) -> Result<bool, ApiError> {
    let mut prune = false;
    for (key, value) in params {
        match key.as_str() {
            "prune" => {
                prune = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::bad_query(key, "must be true or false")),
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "[WARN] Unknown query parameter '{other}': this route takes prune"
                )))
            }
        }
    }
    Ok(prune)
}
