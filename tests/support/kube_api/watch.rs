//! Watch: `GET …?watch=true` streams `{"type": …, "object": …}` lines.
//!
//! Every stored change is logged with the resourceVersion it made (the
//! last [`EVENT_LOG`] of them are kept). A watch from resourceVersion `N`
//! replays the logged events after `N` and then follows new ones; without a
//! resourceVersion, or from `0`, or with `sendInitialEvents=true`, it starts
//! with an `ADDED` event per current object (the latter closed by a
//! `BOOKMARK` annotated `k8s.io/initial-events-end`). A resourceVersion
//! older than the log is answered, as by the watch cache, with one `ERROR`
//! event holding a 410 `Expired` Status. Label and field selectors filter
//! events by the object they carry; `timeoutSeconds` ends the stream;
//! `as=Table` renders each object as a one-row Table. No periodic bookmarks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Weak;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{json, Value};

use super::selectors::{field_value, parse_fields, parse_labels, Requirement};
use super::{label_of, partial_metadata, table, Ctx, Inner, Key, KindSpec, Res, Shared};

/// How many events the log keeps.
pub(super) const EVENT_LOG: usize = 4096;

/// One logged change.
pub(super) struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: &'static str,
    pub object: Value,
}

struct Filter {
    kind: KindSpec,
    ns: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Filter {
    fn matches(&self, key: &Key, obj: &Value) -> bool {
        key.0 == self.kind.group
            && key.1 == self.kind.version
            && key.2 == self.kind.plural
            && self.ns.as_ref().is_none_or(|ns| &key.3 == ns)
            && self.labels.iter().all(|r| r.matches(label_of(obj, &r.key)))
            && self
                .fields
                .iter()
                .all(|r| r.matches(field_value(&self.kind, obj, &r.key)))
    }
}

/// How each event's object is rendered.
#[derive(Clone, Copy)]
enum Render {
    Object,
    Table(KindSpec),
    Metadata,
}

impl Render {
    fn event(self, kind: &str, obj: &Value, include: Option<&str>) -> Value {
        let object = match self {
            Render::Object => obj.clone(),
            Render::Metadata => partial_metadata(obj),
            Render::Table(k) => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                table(&k, std::slice::from_ref(obj), &rv, include)
            }
        };
        json!({"type": kind, "object": object})
    }
}

struct Stream {
    shared: Weak<Shared>,
    changes: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<u64>,
    filter: Filter,
    render: Render,
    include: Option<String>,
    last: u64,
    pending: VecDeque<Value>,
    deadline: tokio::time::Instant,
    done: bool,
}

impl Inner {
    /// Log a stored change (the resourceVersion it made is `self.rv`).
    pub(super) fn record(&mut self, key: Key, kind: &'static str, object: Value) {
        self.observe_change(&key, kind, &object);
        self.events.push_back(Event {
            rv: self.rv,
            key,
            kind,
            object,
        });
        while self.events.len() > EVENT_LOG {
            if let Some(e) = self.events.pop_front() {
                self.events_floor = e.rv;
            }
        }
        self.changes.send_replace(self.rv);
    }

    /// The response to a watch of kind `k` (in `ns`, or everywhere).
    pub(super) fn watch(
        &self,
        shared: Weak<Shared>,
        closing: tokio::sync::watch::Receiver<u64>,
        k: &KindSpec,
        ns: Option<&str>,
        cx: &Ctx,
    ) -> Res<Response> {
        let filter = Filter {
            kind: *k,
            ns: ns.map(str::to_string),
            labels: cx
                .query
                .get("labelSelector")
                .map(|s| parse_labels(s))
                .transpose()?
                .unwrap_or_default(),
            fields: cx
                .query
                .get("fieldSelector")
                .map(|s| parse_fields(k, s))
                .transpose()?
                .unwrap_or_default(),
        };
        let accept = cx.accept();
        let render = if accept.contains("as=Table") {
            Render::Table(*k)
        } else if accept.contains("as=PartialObjectMetadata") {
            Render::Metadata
        } else {
            Render::Object
        };
        let include = cx.query.get("includeObject").cloned();
        let timeout = cx
            .query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(1800);
        let initial_events = cx
            .query
            .get("sendInitialEvents")
            .is_some_and(|v| v == "true");
        let from = cx
            .query
            .get("resourceVersion")
            .filter(|v| !v.is_empty() && *v != "0" && !initial_events)
            .map(|v| v.parse::<u64>());
        let mut pending = VecDeque::new();
        let mut done = false;
        let last = match from {
            Some(Ok(rv)) if rv < self.events_floor => {
                pending.push_back(json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {rv} ({})", self.events_floor + 1),
                    "reason": "Expired", "code": 410,
                }}));
                done = true;
                rv
            }
            Some(Ok(rv)) => rv,
            Some(Err(_)) => {
                return Err(super::bad_request(
                    "resourceVersion: Invalid value: must be a number",
                ))
            }
            None => {
                for (key, obj) in &self.objects {
                    if filter.matches(key, obj) {
                        pending.push_back(render.event("ADDED", obj, include.as_deref()));
                    }
                }
                if initial_events {
                    pending.push_back(json!({"type": "BOOKMARK", "object": {
                        "kind": k.kind, "apiVersion": super::api_version_of(k),
                        "metadata": {
                            "resourceVersion": self.rv.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    }}));
                }
                self.rv
            }
        };
        let stream = Stream {
            shared,
            changes: self.changes.subscribe(),
            closing,
            filter,
            render,
            include,
            last,
            pending,
            deadline: tokio::time::Instant::now() + Duration::from_secs(timeout),
            done,
        };
        let body = futures::stream::unfold(stream, |mut st| async move {
            loop {
                if let Some(event) = st.pending.pop_front() {
                    let mut line = serde_json::to_vec(&event).unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok::<_, Infallible>(Bytes::from(line)), st));
                }
                if st.done {
                    return None;
                }
                {
                    let shared = st.shared.upgrade()?;
                    let inner = shared.inner.lock().unwrap();
                    let since = st.last;
                    for e in inner.events.iter().filter(|e| e.rv > since) {
                        st.last = e.rv;
                        if st.filter.matches(&e.key, &e.object) {
                            st.pending.push_back(st.render.event(
                                e.kind,
                                &e.object,
                                st.include.as_deref(),
                            ));
                        }
                    }
                }
                if !st.pending.is_empty() {
                    continue;
                }
                tokio::select! {
                    changed = st.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    _ = st.closing.changed() => return None,
                    _ = tokio::time::sleep_until(st.deadline) => return None,
                }
            }
        });
        let mut resp = Response::new(Body::from_stream(body));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        Ok(resp)
    }
}
