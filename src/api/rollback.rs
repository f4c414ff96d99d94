//! Going back: a rollback of a source to a recorded deploy (its kept
//! manifests, applied again by a worker), and lifting the pin a rollback
//! leaves. The API only writes the intent; the check does the work.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chump_jobs::history::{HistoryEntry, Trigger};
use chump_jobs::manifests::ManifestsState;
use chump_jobs::rollback::{default_target, short};
use chump_jobs::source::{parse_source_id, rfc3339, SourceId};
use chump_jobs::store::{HistoryQuery, RequestResult};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::body::OptionalJsonBody;
use super::error::ApiError;
use super::AppState;

/// How many of a source's newest applied entries the default target is
/// looked for in (retention keeps far fewer manifests).
const LOOKBACK: u32 = 200;

/// `POST /api/sources/{id}/rollback` with an optional `{"to": <history
/// id>}` (default: the last successful deploy of another commit before the
/// live one): 202 with the queued rollback; 404 for an unknown source; 400
/// for a bad body or an entry that is not this source's; 409 when there is
/// nothing to roll back to (no earlier deploy, or its manifests were not
/// kept) or the source is being deleted.
pub async fn rollback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_source_id(&id).map_err(ApiError::bad_request)?;
    let asked = parse_body(body.as_ref())?;
    let source = state
        .store
        .get_source(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if source.deleting {
        return Err(chump_jobs::store::StoreError::BeingDeleted(id).into());
    }
    let target = match asked {
        Some(to) => explicit_target(&state, id, to).await?,
        None => {
            let applied = state
                .store
                .history(&HistoryQuery {
                    source_id: Some(id),
                    applied: true,
                    limit: LOOKBACK,
                    ..Default::default()
                })
                .await?;
            default_target(&applied).cloned().map_err(|why| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    format!("[WARN] Nothing to roll back to: {why}"),
                )
            })?
        }
    };
    let now = OffsetDateTime::now_utc();
    let result = state
        .store
        .request_rollback(id, target.id, Trigger::Manual, now)
        .await?;
    state.wake_scheduler();
    let commit = target.report.commit.clone();
    tracing::info!(
        source_id = id,
        to = target.id,
        commit = commit.as_deref(),
        "rollback requested"
    );
    let msg = match result {
        RequestResult::QueuedAfterRunning => format!(
            "[INFO] Rollback to entry {} queued after the running check",
            target.id
        ),
        _ => format!(
            "[INFO] Rollback to entry {} (commit {}) queued",
            target.id,
            commit.as_deref().map(short).unwrap_or("unknown")
        ),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "msg": msg,
            "result": result,
            "queued_at": rfc3339(now),
            "to": target.id,
            "commit": commit,
        })),
    ))
}

/// `{"to": N}`, `{}` or no body at all.
fn parse_body(body: Option<&Value>) -> Result<Option<i64>, ApiError> {
    let Some(body) = body else { return Ok(None) };
    let Some(obj) = body.as_object() else {
        return Err(field_error("body", "must be a JSON object"));
    };
    if let Some(key) = obj.keys().find(|k| k.as_str() != "to") {
        return Err(field_error(key, "unknown field: the body takes only 'to'"));
    }
    match obj.get("to") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| field_error("to", "must be a history entry id (an integer from 1)")),
    }
}

fn field_error(field: &str, why: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        msg: format!("[WARN] Invalid rollback: {field}: {why}"),
        errors: Some([(field.to_string(), why.to_string())].into()),
    }
}

/// Entry `to`, checked: this source's, with kept manifests.
async fn explicit_target(
    state: &AppState,
    id: SourceId,
    to: i64,
) -> Result<HistoryEntry, ApiError> {
    let entry = super::history::entry(state, to)
        .await?
        .filter(|e| e.report.source_id == id)
        .ok_or_else(|| field_error("to", &format!("source {id} has no history entry {to}")))?;
    match entry.manifests {
        Some(ManifestsState::Kept) => Ok(entry),
        state => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "[WARN] Nothing to roll back to: entry {to} {}",
                super::history::manifests_missing(state)
            ),
        )),
    }
}

/// `POST /api/sources/{id}/unpin`: lifts the pin a rollback left and
/// checks the source at once (202); 409 when it is not pinned.
pub async fn unpin(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_source_id(&id).map_err(ApiError::bad_request)?;
    let now = OffsetDateTime::now_utc();
    let Some(result) = state.store.unpin(id, now).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("[WARN] Source {id} is not pinned: nothing to unpin"),
        ));
    };
    state.wake_scheduler();
    tracing::info!(source_id = id, "unpinned");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "msg": "[INFO] Unpinned: auto-deploy resumes with a check now",
            "result": result,
            "queued_at": rfc3339(now),
        })),
    ))
}
