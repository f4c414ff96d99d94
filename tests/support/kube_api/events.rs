//! Events (`v1` `Event`) as the components record them.
//!
//! The kubelet and the controllers record through client-go's legacy
//! recorder (`tools/record`): an event is named `<object>.<hex of the Unix
//! nanoseconds>`, carries `involvedObject` (kind, namespace, name, uid,
//! apiVersion, resourceVersion, and `fieldPath` such as
//! `spec.containers{web}` for a container), `source` (component, and host
//! for the kubelet), `reportingComponent` / `reportingInstance`,
//! `firstTimestamp`, `lastTimestamp` and `count`, and `eventTime: null`; the
//! same event again (same source, object, type, reason and message — the
//! correlator's key) bumps `count` and `lastTimestamp` of the stored one
//! instead of adding another. The scheduler's `Scheduled` event comes, as
//! the real one does, through `events.k8s.io`: `eventTime` (microseconds),
//! `action: Binding`, no timestamps, no count, an empty `source`.
//!
//! Like the API server's event TTL, the store keeps a bounded number of
//! events ([`MAX_EVENTS`]): the oldest go first.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;

use super::fields::{self, Part};
use super::{key, timestamp, Inner, Key};

/// How many events the store keeps (the real server expires them after an
/// hour instead).
pub(super) const MAX_EVENTS: usize = 5000;

/// What the stand-in remembers about the events it stores.
#[derive(Default)]
pub(super) struct EventLog {
    /// Correlator key → the stored event.
    index: HashMap<String, Key>,
    /// Events in the order they were created.
    order: VecDeque<Key>,
    /// Makes names unique within one nanosecond.
    seq: u64,
}

/// How an event reaches the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// `core/v1` through client-go's legacy recorder (count, timestamps).
    Legacy,
    /// `events.k8s.io/v1` as the scheduler records (eventTime, action).
    Structured(&'static str),
}

/// One event to record.
pub(super) struct NewEvent<'a> {
    /// The object it is about.
    pub object: &'a Value,
    /// `spec.containers{name}` for a container's events.
    pub field_path: Option<String>,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    pub reason: &'a str,
    pub message: String,
    /// `source.component` / `reportingComponent`.
    pub component: &'a str,
    /// `source.host` / `reportingInstance` (the kubelet's node).
    pub host: Option<&'a str>,
    pub style: Style,
}

/// The correlator's key of a stored or new event.
fn correlation(e: &Value) -> String {
    let io = &e["involvedObject"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    [
        s(&e["metadata"]["namespace"]),
        s(&e["source"]["component"]),
        s(&e["source"]["host"]),
        s(&e["reportingComponent"]),
        s(&io["kind"]),
        s(&io["namespace"]),
        s(&io["name"]),
        s(&io["fieldPath"]),
        s(&io["uid"]),
        s(&io["apiVersion"]),
        s(&e["type"]),
        s(&e["reason"]),
        s(&e["message"]),
    ]
    .join("\u{1}")
}

/// `metav1.MicroTime` now.
fn micro_time() -> String {
    let now = time::OffsetDateTime::now_utc();
    let secs = now.replace_nanosecond(0).unwrap();
    let base = secs.format(&Rfc3339).unwrap();
    format!("{}.{:06}Z", base.trim_end_matches('Z'), now.microsecond())
}

impl Inner {
    /// Record event `e`: a new Event, or the stored one it repeats with its
    /// count and last timestamp bumped. Returns the stored event (none when
    /// its namespace is missing or terminating).
    pub(super) fn emit(&mut self, e: NewEvent) -> Option<Value> {
        let md = &e.object["metadata"];
        let involved_ns = md["namespace"].as_str().unwrap_or("");
        let ns = if involved_ns.is_empty() {
            "default"
        } else {
            involved_ns
        };
        let ns_key = (
            String::new(),
            "v1".to_string(),
            "namespaces".to_string(),
            String::new(),
            ns.to_string(),
        );
        if self.objects.get(&ns_key).is_none_or(super::gc::is_deleting) {
            return None;
        }
        let k = self.find_kind("", "v1", "events")?;
        let mut involved = json!({
            "kind": e.object["kind"],
            "name": md["name"],
            "uid": md["uid"],
            "apiVersion": e.object["apiVersion"],
            "resourceVersion": md["resourceVersion"],
        });
        if !involved_ns.is_empty() {
            involved["namespace"] = json!(involved_ns);
        }
        if let Some(fp) = &e.field_path {
            involved["fieldPath"] = json!(fp);
        }
        let now = timestamp();
        let mut event = match e.style {
            Style::Legacy => {
                let mut source = json!({"component": e.component});
                if let Some(h) = e.host {
                    source["host"] = json!(h);
                }
                json!({
                    "apiVersion": "v1", "kind": "Event",
                    "metadata": {"namespace": ns},
                    "involvedObject": involved,
                    "reason": e.reason, "message": e.message,
                    "source": source,
                    "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                    "type": e.kind, "eventTime": null,
                    "reportingComponent": e.component,
                    "reportingInstance": e.host.unwrap_or(""),
                })
            }
            Style::Structured(action) => json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"namespace": ns},
                "involvedObject": involved,
                "reason": e.reason, "message": e.message,
                "source": {},
                "firstTimestamp": null, "lastTimestamp": null,
                "type": e.kind, "eventTime": micro_time(), "action": action,
                "reportingComponent": e.component,
                "reportingInstance": format!("{}-{}", e.component, e.host.unwrap_or("stand-in")),
            }),
        };
        let manager = match e.component {
            "kubelet" => "kubelet",
            "default-scheduler" => "kube-scheduler",
            _ => "kube-controller-manager",
        };
        let corr = correlation(&event);
        if let Some(existing) = self
            .ev
            .index
            .get(&corr)
            .and_then(|kk| self.objects.get(kk).map(|o| (kk.clone(), o.clone())))
        {
            let (kk, old) = existing;
            let mut new = old.clone();
            match e.style {
                Style::Legacy => {
                    new["count"] = json!(old["count"].as_i64().unwrap_or(1) + 1);
                    new["lastTimestamp"] = json!(now);
                }
                Style::Structured(_) => {
                    let count = old["series"]["count"].as_i64().unwrap_or(1) + 1;
                    new["series"] = json!({"count": count, "lastObservedTime": micro_time()});
                }
            }
            fields::update(&mut new, Some(&old), None, manager, Part::Main, &k);
            return Some(self.finish_write(&k, Some(ns), &kk.4, new, false, true));
        }
        self.ev.seq += 1;
        let nanos =
            time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128 + self.ev.seq as u128;
        let name = format!("{}.{:x}", md["name"].as_str().unwrap_or(""), nanos);
        event["metadata"]["name"] = json!(name);
        fields::update(&mut event, None, None, manager, Part::Main, &k);
        let stored = self.finish_write(&k, Some(ns), &name, event, false, true);
        let kk = key(&k, Some(ns), &name);
        self.ev.index.insert(corr, kk.clone());
        self.ev.order.push_back(kk);
        while self.ev.order.len() > MAX_EVENTS {
            if let Some(old) = self.ev.order.pop_front() {
                self.remove_object(&old);
            }
        }
        Some(stored)
    }

    /// Forget a removed event.
    pub(super) fn forget_event(&mut self, kk: &Key, obj: &Value) {
        let corr = correlation(obj);
        if self.ev.index.get(&corr) == Some(kk) {
            self.ev.index.remove(&corr);
        }
    }
}
