//! `GET /api/sources` without paging: every source with its status, the
//! original tool's answer, and the route its clients and dashboards poll.
//!
//! On a store that keeps a data version ([`Store::data_version`]: SQLite's
//! `PRAGMA data_version`; RethinkDB's writes counter, moved by every
//! replica's writes in the query that writes), the rendered answer is kept and every reader shares it until a commit
//! moves the version or a lease in it ends (the one change time makes on
//! its own, `in_flight` turning false). A reader asks the version first and
//! is served a rendering at least that new, so the answer never lags a
//! write that finished before the request. One reader renders at a time;
//! the readers that arrived before it started wait for its rendering
//! instead of making their own.
//!
//! On a store that cannot tell (RethinkDB while its sources changefeed is
//! closed: the Python tool's writes would go unseen), the answer is streamed: read and written [`CHUNK`] sources at a time, so a
//! process answering many clients holds one chunk per client, not the
//! whole list (8.75 MB at 10,000 sources).
//!
//! [`Store::data_version`]: chump_jobs::store::Store::data_version

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chump_jobs::source::{Source, SourceId};
use chump_jobs::store::SourceStatus;
use futures::StreamExt;
use time::OffsetDateTime;

use super::error::ApiError;
use super::sources::{internal, listed};
use super::AppState;

/// Sources read from the store at a time.
const CHUNK: u32 = 500;

/// The kept rendering of the whole list (one per process).
#[derive(Default)]
pub struct KeptList {
    slot: tokio::sync::Mutex<Option<Rendering>>,
}

struct Rendering {
    /// The store's data version read before the rows were.
    version: u64,
    /// When the first lease in it ends (None: no source in flight).
    until: Option<OffsetDateTime>,
    body: Bytes,
}

impl Rendering {
    fn serves(&self, version: u64, now: OffsetDateTime) -> bool {
        self.version >= version && self.until.is_none_or(|until| now < until)
    }
}

/// The answer: kept when the store keeps a version, else streamed.
pub async fn answer(state: &AppState) -> Result<Response, ApiError> {
    let Some(version) = state.store.data_version().await? else {
        return streamed(state.clone()).await;
    };
    let mut slot = state.whole_list.slot.lock().await;
    let body = match slot.as_ref() {
        Some(kept) if kept.serves(version, OffsetDateTime::now_utc()) => kept.body.clone(),
        _ => {
            // Labelled with the version as the rendering starts, not as
            // this request began: every reader that queued behind it asked
            // for no newer one, so one rendering serves them all even
            // while writes go on.
            let version = state.store.data_version().await?.unwrap_or(version);
            let size_hint = slot.as_ref().map_or(0, |kept| kept.body.len());
            let rendering = render(state, version, size_hint).await?;
            let body = rendering.body.clone();
            *slot = Some(rendering);
            body
        }
    };
    drop(slot);
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response())
}

/// The whole list read a chunk at a time into one body. Like any listing
/// read in pages it is not one snapshot, but every row is at least as new
/// as `version`, and a write landing meanwhile moves the version past it.
/// `size_hint` is the last rendering's length: the body is allocated once,
/// with room for some growth, instead of doubling its way there (a body
/// keeps the capacity it was built with).
async fn render(state: &AppState, version: u64, size_hint: usize) -> Result<Rendering, ApiError> {
    let mut body = Vec::with_capacity(size_hint + size_hint / 16 + 4096);
    body.extend_from_slice(br#"{"sources":["#);
    let mut until: Option<OffsetDateTime> = None;
    let mut after = None;
    loop {
        let rows = state
            .store
            .list_sources_with_status(after, Some(CHUNK))
            .await?;
        for (_, status) in &rows {
            if let Some(end) = status.in_flight_until {
                until = Some(until.map_or(end, |u| u.min(end)));
            }
        }
        let last = write_chunk(&mut body, &rows, after.is_none()).map_err(internal)?;
        match last {
            Some(id) if rows.len() == CHUNK as usize => after = Some(id),
            _ => break,
        }
    }
    body.extend_from_slice(b"]}");
    Ok(Rendering {
        version,
        until,
        body: Bytes::from(body),
    })
}

/// The whole list, `{"sources": [...]}`, streamed a chunk at a time. The
/// first chunk is read before the answer starts, so a store that cannot
/// answer gets its error status; one that fails later cuts the body short
/// (the client sees an incomplete answer, never a shorter list).
async fn streamed(state: AppState) -> Result<Response, ApiError> {
    let first = state
        .store
        .list_sources_with_status(None, Some(CHUNK))
        .await?;
    let mut head = br#"{"sources":["#.to_vec();
    let last = write_chunk(&mut head, &first, true).map_err(internal)?;
    enum Next {
        After(SourceId),
        Close,
        Done,
    }
    let next = match last {
        Some(id) if first.len() == CHUNK as usize => Next::After(id),
        _ => Next::Close,
    };
    let rest = futures::stream::unfold(next, move |next| {
        let store = state.store.clone();
        async move {
            let after = match next {
                Next::After(id) => id,
                Next::Close => return Some((Ok(Bytes::from_static(b"]}")), Next::Done)),
                Next::Done => return None,
            };
            let rows = match store
                .list_sources_with_status(Some(after), Some(CHUNK))
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, after, "the source list broke off");
                    return Some((Err(std::io::Error::other(e.to_string())), Next::Done));
                }
            };
            let mut chunk = Vec::with_capacity(rows.len() * 1024);
            let next = match write_chunk(&mut chunk, &rows, false) {
                Ok(Some(id)) if rows.len() == CHUNK as usize => Next::After(id),
                Ok(_) => Next::Close,
                Err(e) => return Some((Err(std::io::Error::other(e)), Next::Done)),
            };
            Some((Ok(Bytes::from(chunk)), next))
        }
    });
    let body = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(rest);
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        Body::from_stream(body),
    )
        .into_response())
}

/// Appends `rows` as list items (a comma before each but the list's very
/// first); the last row's id.
fn write_chunk(
    out: &mut Vec<u8>,
    rows: &[(Source, SourceStatus)],
    first_of_list: bool,
) -> Result<Option<SourceId>, serde_json::Error> {
    for (i, row) in rows.iter().enumerate() {
        if i > 0 || !first_of_list {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &listed(row))?;
    }
    Ok(rows.last().map(|(s, _)| s.id))
}
