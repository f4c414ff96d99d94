//! What chump did: history entries (deploys, failures, supersessions,
//! rollbacks, deletions, and where degraded spells start and end), the
//! manifests a deploy applied and how two deploys differ, what was live at
//! a moment (`?at=`), each source's status (its last check, its place in
//! the schedule, its workloads' health, its pin) and the objects chump last
//! applied for it (its inventory).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chump_jobs::history::{Health, HistoryEntry, Outcome};
use chump_jobs::manifests::{self, ManifestsState};
use chump_jobs::source::parse_source_id;
use chump_jobs::store::{HistoryQuery, SourceStatus};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::ApiError;
use super::AppState;

/// Default and largest page size.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// Parses the paging and filter parameters; `allowed` lists the filters the
/// route takes beyond `limit` and `before`.
fn parse_query(
    params: &HashMap<String, String>,
    allowed: &[&str],
) -> Result<HistoryQuery, ApiError> {
    let mut q = HistoryQuery {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let bad = |name: &str, why: &str| ApiError::bad_query(name, why);
    for (key, value) in params {
        match key.as_str() {
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(key, &format!("must be an integer from 1 to {MAX_LIMIT}"))
                    })?;
            }
            "before" => {
                q.before = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(key, "must be a history entry id"))?,
                );
            }
            "outcome" if allowed.contains(&"outcome") => {
                q.outcome = Some(value.parse::<Outcome>().map_err(|_| {
                    bad(
                        key,
                        &format!("must be {}", super::one_of(super::OUTCOME_NAMES)),
                    )
                })?);
            }
            "namespace" if allowed.contains(&"namespace") => {
                chump_jobs::source::validate_dns_label(value).map_err(|e| bad(key, &e))?;
                q.namespace = Some(value.clone());
            }
            "source_id" if allowed.contains(&"source_id") => {
                q.source_id =
                    Some(parse_source_id(value).map_err(|_| bad(key, "must be a source id"))?);
            }
            "since" if allowed.contains(&"since") => {
                q.since = Some(OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
                    bad(key, "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
                })?);
            }
            "at" if allowed.contains(&"at") => {
                q.at = Some(OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
                    bad(key, "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z")
                })?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "[WARN] Unknown query parameter '{other}': this route takes limit, before, {}",
                    allowed.join(", ")
                )))
            }
        }
    }
    if q.at.is_some() {
        for other in ["before", "since"] {
            if params.contains_key(other) {
                return Err(bad(
                    other,
                    "cannot be combined with 'at' (one entry per source, not a page)",
                ));
            }
        }
    }
    Ok(q)
}

async fn page(state: &AppState, q: &HistoryQuery) -> Result<Json<Value>, ApiError> {
    let entries = state.store.history(q).await?;
    let next_before = (entries.len() as u32 == q.limit && q.at.is_none())
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(
        json!({ "history": entries, "next_before": next_before }),
    ))
}

/// `GET /api/history`: every source's history, newest first. With
/// `?at=<RFC 3339>`: for each source, the entry of the deploy that was live
/// then (the newest deploy, rollback, supersession or failure after an
/// apply finished by then; none once the source was deleted with prune).
pub async fn all(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(
        &params,
        &["outcome", "namespace", "source_id", "since", "at"],
    )?;
    page(&state, &q).await
}

/// History entry `id` (None: no such entry).
pub(super) async fn entry(state: &AppState, id: i64) -> Result<Option<HistoryEntry>, ApiError> {
    // The newest entry below id + 1 is entry id, when it exists.
    let found = state
        .store
        .history(&HistoryQuery {
            before: id.checked_add(1),
            limit: 1,
            ..Default::default()
        })
        .await?;
    Ok(found.into_iter().next().filter(|e| e.id == id))
}

fn parse_entry_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::bad_request(format!(
            "[WARN] Invalid history entry id '{raw}': must be an integer from 1"
        ))
    })
}

async fn entry_or_404(state: &AppState, raw: &str) -> Result<HistoryEntry, ApiError> {
    let id = parse_entry_id(raw)?;
    entry(state, id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("[WARN] History entry {id} doesn't exist"),
        )
    })
}

/// What an entry without kept manifests says ("entry 7 …").
pub(super) fn manifests_missing(state: Option<ManifestsState>) -> &'static str {
    match state {
        Some(ManifestsState::Kept) => "has its manifests",
        Some(ManifestsState::Dropped) => {
            "had its manifests dropped by retention (CHUMP_MANIFEST_RETENTION)"
        }
        Some(ManifestsState::TooLarge) => {
            "rendered more than the cap per entry (CHUMP_MANIFEST_MAX_BYTES): its manifests were not kept"
        }
        None => "applied no manifests (or was recorded before chump kept them)",
    }
}

/// The unpacked render of `e` (unmasked: callers mask), or a 404 saying
/// why there is none.
async fn render_of(state: &AppState, e: &HistoryEntry) -> Result<Vec<Value>, ApiError> {
    let missing = |why: &str| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("[WARN] History entry {} {why}", e.id),
        )
    };
    if e.manifests != Some(ManifestsState::Kept) {
        return Err(missing(manifests_missing(e.manifests)));
    }
    let packed = state
        .store
        .manifests(e.id)
        .await?
        .ok_or_else(|| missing(manifests_missing(Some(ManifestsState::Dropped))))?;
    packed.unpack().map_err(|err| {
        tracing::error!(entry = e.id, error = %err, "unreadable manifests");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "[ERROR] The manifests of history entry {} cannot be read: {err}",
                e.id
            ),
        )
    })
}

/// `GET /api/history/{id}`: one entry.
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<HistoryEntry>, ApiError> {
    Ok(Json(entry_or_404(&state, &id).await?))
}

/// `GET /api/history/{id}/manifests`: the render the entry's check
/// applied, as multi-document YAML (`application/yaml`), Secret values and
/// URL credentials masked; 404 (JSON, saying why) when none is kept.
pub async fn manifests(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let e = entry_or_404(&state, &id).await?;
    let objects = render_of(&state, &e).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        manifests::to_yaml(&objects),
    ))
}

/// `GET /api/history/{id}/diff?against={other}`: how the entry's render
/// differs from `other`'s (default: the source's previous entry that
/// applied one; none: everything is added), object by object, as unified
/// diffs of the masked YAML. 404 when either render is not kept.
pub async fn diff(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    if let Some(other) = params.keys().find(|k| k.as_str() != "against") {
        return Err(ApiError::bad_request(format!(
            "[WARN] Unknown query parameter '{other}': this route takes against"
        )));
    }
    let e = entry_or_404(&state, &id).await?;
    let new = render_of(&state, &e).await?;
    let against = match params.get("against") {
        Some(raw) => {
            let other_id = raw
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ApiError::bad_query("against", "must be a history entry id"))?;
            Some(entry(&state, other_id).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("[WARN] History entry {other_id} (against) doesn't exist"),
                )
            })?)
        }
        // The source's previous entry that applied a render (whose
        // manifests, when not kept, make this a 404 saying so).
        None => state
            .store
            .history(&HistoryQuery {
                source_id: Some(e.report.source_id),
                applied: true,
                before: Some(e.id),
                limit: 1,
                ..Default::default()
            })
            .await?
            .into_iter()
            .next(),
    };
    let old = match &against {
        Some(a) => render_of(&state, a).await?,
        None => Vec::new(),
    };
    let (objects, unchanged) = manifests::diff(&old, &new);
    Ok(Json(json!({
        "entry": e.id,
        "against": against.as_ref().map(|a| a.id),
        "commit": e.report.commit,
        "against_commit": against.as_ref().and_then(|a| a.report.commit.clone()),
        "objects": objects,
        "unchanged": unchanged,
    })))
}

/// `GET /api/sources/{id}/history`: one source's history, newest first. The
/// history of a deleted source stays readable.
pub async fn of_source(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_source_id(&id).map_err(ApiError::bad_request)?;
    let mut q = parse_query(&params, &["outcome"])?;
    q.source_id = Some(id);
    let resp = page(&state, &q).await?;
    let empty = resp.0["history"].as_array().is_none_or(Vec::is_empty);
    if empty && q.before.is_none() && state.store.get_source(id).await?.is_none() {
        // Never existed (or deleted and never checked).
        return Err(ApiError::not_found());
    }
    Ok(resp)
}

/// `GET /api/sources/{id}/status`: the last check and the next one, and
/// what the last check says of the workloads' health (`health`, with the
/// last message as `health_reason` when degraded).
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_source_id(&id).map_err(ApiError::bad_request)?;
    let source = state
        .store
        .get_source(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let status = state.store.status(id).await?.unwrap_or_default();
    let mut v = status_json(&status);
    v["source_id"] = json!(id);
    v["suspended"] = json!(source.spec.suspended);
    v["deleting"] = json!(source.deleting);
    Ok(Json(v))
}

/// A status as the API shows it: the stored fields, plus `health` (what the
/// last check says of the workloads) and `health_reason` (the last message
/// when health is degraded, else null).
pub(super) fn status_json(status: &SourceStatus) -> Value {
    serde_json::to_value(PublicStatus::of(status)).unwrap_or_else(|_| json!({}))
}

/// [`status_json`] as a value that serializes itself (for listings).
#[derive(serde::Serialize)]
pub(super) struct PublicStatus<'a> {
    #[serde(flatten)]
    status: &'a SourceStatus,
    health: &'static str,
    health_reason: Option<&'a str>,
}

impl<'a> PublicStatus<'a> {
    pub(super) fn of(status: &'a SourceStatus) -> PublicStatus<'a> {
        let health = Health::of(status.last_outcome, status.last_stage);
        PublicStatus {
            status,
            health: health.as_str(),
            health_reason: status
                .last_message
                .as_deref()
                .filter(|_| health == Health::Degraded),
        }
    }
}

/// `GET /api/sources/{id}/objects`: the objects chump last applied for the
/// source (its recorded inventory), each with the commit that last changed
/// it. Digests stay in the store: a digest of a Secret's content would let a
/// reader test guesses of its value.
pub async fn objects(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_source_id(&id).map_err(ApiError::bad_request)?;
    let inventory = state
        .store
        .inventory(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let objects: Vec<Value> = inventory
        .objects
        .iter()
        .map(|o| {
            json!({
                "api_version": o.api_version,
                "kind": o.kind,
                "namespace": o.namespace,
                "name": o.name,
                "commit": o.commit,
            })
        })
        .collect();
    Ok(Json(json!({
        "source_id": id,
        // Nothing applied yet: no commit.
        "commit": Some(&inventory.commit).filter(|c| !c.is_empty()),
        "desired_image": inventory.desired_image,
        "objects": objects,
    })))
}
