//! Making chump act now: a manual check of one source, and push webhooks
//! from git hosts that check every source following the pushed branch.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chump_jobs::history::Trigger;
use chump_jobs::source::{parse_source_id, rfc3339, SourceId};
use chump_jobs::store::RequestResult;
use chump_jobs::webhook::{self, Provider, SignatureCheck};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::body::MAX_BODY_BYTES;
use super::error::ApiError;
use super::AppState;
use std::sync::Arc;

/// `POST /api/sources/{id}/check`: 202 with when it was queued. A second
/// request while one is queued or running adds nothing (and says so). A
/// source being deleted takes none (409).
pub async fn check(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_source_id(&id).map_err(ApiError::bad_request)?;
    let now = OffsetDateTime::now_utc();
    let result = state.store.request_check(id, Trigger::Manual, now).await?;
    let msg = match result {
        RequestResult::Queued => "[INFO] Check queued",
        RequestResult::AlreadyQueued => "[INFO] A check is already queued; nothing added",
        RequestResult::AlreadyRunning => "[INFO] A check is already running; nothing added",
        RequestResult::QueuedAfterRunning => "[INFO] Check queued after the running one",
    };
    if matches!(
        result,
        RequestResult::Queued | RequestResult::QueuedAfterRunning
    ) {
        state.wake_scheduler();
        tracing::info!(source_id = id, "manual check requested");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "msg": msg, "result": result, "queued_at": rfc3339(now) })),
    ))
}

/// `POST /api/webhooks/{provider}`: a push checks every matching source
/// (not suspended ones, nor those being deleted). Other events are acknowledged and ignored.
pub async fn webhook(
    State(state): State<AppState>,
    Path(provider_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let provider = Provider::from_name(&provider_name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("[WARN] Unknown webhook provider '{provider_name}': use github, gitlab, gitea or generic"),
        )
    })?;
    if body.len() > MAX_BODY_BYTES * 16 {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "[WARN] Webhook payload too large",
        ));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    authorize(&state, provider, &body, &header)?;

    let event = provider.event_header().and_then(header);
    if !provider.is_push_event(event.as_deref()) {
        let event = event.unwrap_or_else(|| "unknown".into());
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "msg": format!("[INFO] Event '{event}' ignored: only push events trigger checks"),
                "event": event,
                "triggered": [],
            })),
        ));
    }
    let push = match webhook::parse_push(provider, &body) {
        Ok(push) => push,
        Err(webhook::PayloadError::NotABranch(r)) => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(
                    json!({ "msg": format!("[INFO] Push of '{r}' ignored: not a branch"), "triggered": [] }),
                ),
            ))
        }
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "[WARN] Invalid {provider_name} push payload: {e}"
            )))
        }
    };

    let now = OffsetDateTime::now_utc();
    let mut triggered = Vec::new();
    let mut results = HashMap::new();
    let matching = push_targets(&state, &push).await?;
    let asked = state
        .store
        .request_checks(&matching, Trigger::Webhook, now)
        .await?;
    for (id, result) in matching.into_iter().zip(asked) {
        match result {
            Ok(result) => {
                // A deploy of this source waiting for its rollout here
                // looks at the branch at once (and stops when it moved).
                if let (RequestResult::QueuedAfterRunning, Some(p)) = (result, &state.pipeline) {
                    p.nudge(id);
                }
                triggered.push(id);
                results.insert(id.to_string(), result);
            }
            // Deleted (or being deleted) since the listing: nothing to check.
            Err(
                chump_jobs::store::StoreError::NotFound(_)
                | chump_jobs::store::StoreError::BeingDeleted(_),
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !triggered.is_empty() {
        state.metrics.webhooks.inc_by(triggered.len() as u64);
        state.wake_scheduler();
    }
    tracing::info!(provider = provider_name, branch = %push.branch, triggered = ?triggered, "push webhook");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "msg": format!("[INFO] Push to '{}' triggered {} check(s)", push.branch, triggered.len()),
            "event": "push",
            "branch": push.branch,
            "triggered": triggered,
            "results": results,
        })),
    ))
}

/// The ids of the sources `push` concerns (not suspended, not being
/// deleted, on its repository and branch), ascending. Reading and matching
/// every source costs O(sources) per push: where the store can say that no
/// source changed (`sources_version`: SQLite, one process per file), the
/// index built from the last reading serves every push until one does.
async fn push_targets(
    state: &AppState,
    push: &webhook::Push,
) -> Result<Vec<SourceId>, chump_jobs::store::StoreError> {
    if state.store.sources_version().is_none() {
        let sources = state.store.list_sources().await?;
        return Ok(webhook::PushIndex::new(&sources).sources_for(push));
    }
    // Held while rebuilding, so pushes arriving together read the list once.
    let mut kept = state.push_index.lock().await;
    let version = state.store.sources_version().unwrap_or_default();
    if let Some((built_at, index)) = kept.as_ref() {
        if *built_at == version {
            return Ok(index.sources_for(push));
        }
    }
    // The version is read before the list: a change committed meanwhile
    // bumps it again, and the next push rebuilds.
    let sources = state.store.list_sources().await?;
    let index = Arc::new(webhook::PushIndex::new(&sources));
    let ids = index.sources_for(push);
    *kept = Some((version, index));
    Ok(ids)
}

/// With `CHUMP_WEBHOOK_SECRET`, the payload must carry the provider's
/// signature (401 otherwise). Without it, webhooks are API routes like any
/// other: they need the API token when one is set.
fn authorize(
    state: &AppState,
    provider: Provider,
    body: &[u8],
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ApiError> {
    let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, msg);
    if let Some(secret) = state.webhook_secret.as_deref() {
        return match webhook::verify_signature(provider, secret.as_bytes(), body, header) {
            SignatureCheck::Valid => Ok(()),
            SignatureCheck::Missing => Err(unauthorized(
                "[WARN] Unauthorized: the webhook signature is missing",
            )),
            SignatureCheck::Invalid => Err(unauthorized(
                "[WARN] Unauthorized: the webhook signature is wrong",
            )),
        };
    }
    if let Some(token) = state.api_token.as_deref() {
        let presented = header(header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
        let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(token.as_bytes())));
        if !ok {
            return Err(unauthorized(
                "[WARN] Unauthorized: set CHUMP_WEBHOOK_SECRET for signed webhooks, or send Authorization: Bearer <token>",
            ));
        }
    }
    Ok(())
}
