//! Drift: did anything change, in the cluster, a field chump applies?
//!
//! The API server already keeps the answer. Server-side apply records, in
//! `metadata.managedFields`, the set of fields each manager owns; chump's
//! entry (manager [`FIELD_MANAGER`], operation `Apply`) lists exactly the
//! fields of its applied configuration. When someone else changes one of
//! them (`kubectl edit`, `kubectl scale`, `kubectl set env`), the server
//! moves that field to their entry; when an object is deleted it is gone.
//!
//! So after each apply chump keeps a [`live_digest`] of the object the
//! server returned: chump's field set and the values at those fields. A
//! check observes the recorded objects ([`Cluster::observe`]: one GET per
//! object, or one LIST by chump's source label per kind and namespace that
//! holds several) and compares digests. Nothing is built and nothing is
//! written while they match; fields others own (status, an HPA's replicas,
//! annotations added by controllers) never count as drift.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::GroupVersionKind;
use serde_json::{json, Map, Value};

use super::{Cluster, ClusterError, FIELD_MANAGER};
use crate::inventory::{digest, InventoryObject};

/// How many requests one observation has in flight at once.
const OBSERVE_CONCURRENCY: usize = 8;

/// A digest of what chump manages in `object`: the field set of chump's
/// `Apply` entry in `metadata.managedFields`, and the object's values at
/// those fields. An object without such an entry (created by someone else,
/// or its managed fields cleared) digests as "no fields".
pub fn live_digest(object: &Value) -> String {
    let fields = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == FIELD_MANAGER && e["operation"] == "Apply")
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null);
    let values = match &fields {
        Value::Object(set) => project(object, set),
        _ => Value::Null,
    };
    digest(&json!({ "fields": fields, "values": values }))
}

/// [`live_digest`] of a typed object, the same digest, without turning the
/// whole object into JSON first: only the metadata is serialized (without
/// its managed fields, unless the set asks for them), the rest is read
/// where it is. `object` is left as it was.
pub fn live_digest_of(object: &mut DynamicObject) -> String {
    let fields = object
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|e| {
            e.manager.as_deref() == Some(FIELD_MANAGER) && e.operation.as_deref() == Some("Apply")
        })
        .map(|e| e.fields_v1.as_ref().map_or(Value::Null, |f| f.0.clone()))
        .unwrap_or(Value::Null);
    let values = match &fields {
        Value::Object(set) => project_object(object, set),
        _ => Value::Null,
    };
    digest(&json!({ "fields": fields, "values": values }))
}

/// [`project`] of `object` as JSON, member by member from where it is.
fn project_object(object: &mut DynamicObject, set: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (member, sub) in set {
        if member == "." {
            continue;
        }
        let Some(name) = member.strip_prefix("f:") else {
            // Only a map's fields name something in an object; the other
            // members find nothing there, as in `project`.
            let one = Map::from_iter([(member.clone(), sub.clone())]);
            if let Value::Object(found) = project(&Value::Object(Map::new()), &one) {
                out.extend(found);
            }
            continue;
        };
        let types = object.types.as_ref();
        let found: Option<std::borrow::Cow<'_, Value>> = match name {
            "apiVersion" => types.map(|t| Cow::Owned(Value::String(t.api_version.clone()))),
            "kind" => types.map(|t| Cow::Owned(Value::String(t.kind.clone()))),
            "metadata" => Some(Cow::Owned(metadata_json(object, sub))),
            _ => object.data.get(name).map(Cow::Borrowed),
        };
        out.insert(member.clone(), projected(found.as_deref(), sub));
    }
    Value::Object(out)
}

/// The object's metadata as JSON: without its managed fields (most of it)
/// unless the member set `sub` may reach them.
fn metadata_json(object: &mut DynamicObject, sub: &Value) -> Value {
    let reaches_managed = match sub.as_object() {
        Some(subset) => subset.keys().all(|k| k == ".") || subset.contains_key("f:managedFields"),
        None => true,
    };
    if reaches_managed {
        return serde_json::to_value(&object.metadata).unwrap_or(Value::Null);
    }
    let managed = object.metadata.managed_fields.take();
    let json = serde_json::to_value(&object.metadata).unwrap_or(Value::Null);
    object.metadata.managed_fields = managed;
    json
}

/// A member's value as [`project`] keeps it: the value itself for a leaf or
/// an item kept whole, its projection for a subset, null when not there.
fn projected(found: Option<&Value>, sub: &Value) -> Value {
    match (found, sub.as_object()) {
        (None, _) => Value::Null,
        (Some(v), Some(subset)) if subset.keys().all(|k| k == ".") => v.clone(),
        (Some(v), Some(subset)) => project(v, subset),
        (Some(v), None) => v.clone(),
    }
}

/// `value` reduced to the fields of a `fieldsV1` set. Every member of the
/// set is in the result, `null` where the value has nothing there, so a
/// removed field shows. Members: `f:<name>` (a map field), `k:<json>` (the
/// list item whose fields equal the key), `v:<json>` (a set item, present or
/// not), `i:<n>` (a list index), `.` (the item itself; implied).
fn project(value: &Value, set: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (member, sub) in set {
        if member == "." {
            continue;
        }
        let found: Option<&Value> = if let Some(name) = member.strip_prefix("f:") {
            value.get(name)
        } else if let Some(key) = member.strip_prefix("k:") {
            let key: Value = serde_json::from_str(key).unwrap_or(Value::Null);
            value.as_array().and_then(|items| {
                items.iter().find(|item| {
                    key.as_object()
                        .is_some_and(|k| k.iter().all(|(f, v)| item.get(f) == Some(v)))
                })
            })
        } else if let Some(item) = member.strip_prefix("v:") {
            let item: Value = serde_json::from_str(item).unwrap_or(Value::Null);
            let present = value.as_array().is_some_and(|items| items.contains(&item));
            out.insert(member.clone(), Value::Bool(present));
            continue;
        } else if let Some(index) = member.strip_prefix("i:") {
            index
                .parse::<usize>()
                .ok()
                .and_then(|i| value.as_array().and_then(|items| items.get(i)))
        } else {
            None
        };
        out.insert(member.clone(), projected(found, sub));
    }
    Value::Object(out)
}

/// One recorded object as the cluster has it now.
#[derive(Debug, Clone)]
pub enum Observed {
    /// Not there (deleted, or its kind is no longer served).
    Missing,
    /// There, with its [`live_digest`].
    Present {
        object: Box<DynamicObject>,
        live: String,
    },
}

impl Observed {
    /// The object, when present.
    pub fn object(&self) -> Option<&DynamicObject> {
        match self {
            Observed::Present { object, .. } => Some(object),
            Observed::Missing => None,
        }
    }

    /// The object, when present, given up by the observation.
    pub fn into_object(self) -> Option<Box<DynamicObject>> {
        match self {
            Observed::Present { object, .. } => Some(object),
            Observed::Missing => None,
        }
    }
}

/// What drifted in one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Not in the cluster: deleted (or, where several of its kind were
    /// listed by chump's label, relabelled).
    Missing,
    /// A field chump applies was changed (or taken over) by someone else.
    Changed,
    /// Not observed since chump applied it (an older chump, or a failed
    /// apply): applied again to know.
    Unknown,
}

impl Drift {
    /// How a history message says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Changed => "changed",
            Drift::Unknown => "not observed since it was applied",
        }
    }
}

/// How `recorded` compares with `observed`: `None` when it is as chump
/// left it.
pub fn drift_of(recorded: &InventoryObject, observed: &Observed) -> Option<Drift> {
    match (observed, &recorded.live) {
        (Observed::Missing, _) => Some(Drift::Missing),
        (Observed::Present { .. }, None) => Some(Drift::Unknown),
        (Observed::Present { live, .. }, Some(applied)) if live != applied => Some(Drift::Changed),
        _ => None,
    }
}

impl Cluster {
    /// Reads every object of `objects` as the cluster has it now: one GET
    /// for a kind and namespace with one object, one LIST (by chump's label
    /// `source_label=source`) for one with several. Results in the order of
    /// `objects`.
    pub async fn observe(
        &self,
        objects: &[InventoryObject],
        source_label: &str,
        source: &str,
    ) -> Result<Vec<Observed>, ClusterError> {
        // Group by (apiVersion, kind, namespace), keeping each object's index.
        let mut groups: BTreeMap<(String, String, Option<String>), Vec<usize>> = BTreeMap::new();
        for (i, o) in objects.iter().enumerate() {
            groups
                .entry((o.api_version.clone(), o.kind.clone(), o.namespace.clone()))
                .or_default()
                .push(i);
        }
        let selector = format!("{source_label}={source}");
        let reads = groups
            .into_iter()
            .map(|((api_version, kind, namespace), members)| {
                let selector = selector.clone();
                async move {
                    let (group, version) =
                        api_version.split_once('/').unwrap_or(("", &api_version));
                    let gvk = GroupVersionKind::gvk(group, version, &kind);
                    let Some((resource, _)) = self.resolve(&gvk).await? else {
                        return Ok::<_, ClusterError>(
                            members
                                .into_iter()
                                .map(|i| (i, Observed::Missing))
                                .collect::<Vec<_>>(),
                        );
                    };
                    let api: Api<DynamicObject> = match &namespace {
                        Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
                        None => Api::all_with(self.client.clone(), &resource),
                    };
                    let mut found: HashMap<String, DynamicObject> = HashMap::new();
                    if let [only] = members[..] {
                        if let Some(o) = api.get_opt(&objects[only].name).await? {
                            found.insert(objects[only].name.clone(), o);
                        }
                    } else {
                        let list = api.list(&ListParams::default().labels(&selector)).await?;
                        for o in list.items {
                            if let Some(name) = o.metadata.name.clone() {
                                found.insert(name, o);
                            }
                        }
                    }
                    Ok(members
                        .into_iter()
                        .map(|i| {
                            let observed = match found.remove(&objects[i].name) {
                                Some(mut object) => {
                                    let live = live_digest_of(&mut object);
                                    Observed::Present {
                                        object: Box::new(object),
                                        live,
                                    }
                                }
                                None => Observed::Missing,
                            };
                            (i, observed)
                        })
                        .collect())
                }
            });
        let results: Vec<Vec<(usize, Observed)>> = futures::stream::iter(reads)
            .buffer_unordered(OBSERVE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut out = vec![Observed::Missing; objects.len()];
        for (i, observed) in results.into_iter().flatten() {
            out[i] = observed;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(replicas: i64, value: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "prod", "resourceVersion": "7",
                "labels": {"app": "web"},
                "managedFields": [{
                    "manager": "chump", "operation": "Apply", "apiVersion": "apps/v1",
                    "time": "2026-12-01T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {
                            "f:replicas": {},
                            "f:template": {"f:spec": {"f:containers": {
                                "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {},
                                    "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}}
                            }}}
                        }
                    }
                }]
            },
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "web:1", "env": [{"name": "A", "value": value}],
                     "imagePullPolicy": "IfNotPresent"}
                ]}}
            },
            "status": {"replicas": replicas}
        })
    }

    #[test]
    fn a_changed_field_chump_owns_is_drift_and_others_are_not() {
        let base = applied(2, "1");
        let d = live_digest(&base);
        assert_eq!(d, live_digest(&base.clone()));
        // Fields chump does not own: status, resourceVersion, other defaults.
        let mut other = base.clone();
        other["status"]["replicas"] = json!(5);
        other["metadata"]["resourceVersion"] = json!("9");
        other["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("Always");
        other["metadata"]["labels"]["added"] = json!("by-someone");
        other["metadata"]["managedFields"][0]["time"] = json!("2026-12-02T00:00:00Z");
        assert_eq!(live_digest(&other), d);
        // Fields it owns.
        assert_ne!(live_digest(&applied(3, "1")), d);
        assert_ne!(live_digest(&applied(2, "2")), d);
        let mut removed = base.clone();
        removed["spec"]["template"]["spec"]["containers"][0]["env"] = json!([]);
        assert_ne!(live_digest(&removed), d);
        // Ownership taken over (same values, smaller set).
        let mut taken = base.clone();
        taken["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        assert_ne!(live_digest(&taken), d);
        // No entry for chump at all.
        let mut none = base;
        none["metadata"]["managedFields"] = json!([]);
        assert_ne!(live_digest(&none), d);
    }

    /// The typed digest is the JSON one, whatever the set reaches: types,
    /// metadata (whole, or its managed fields), data, and members that find
    /// nothing at the top.
    #[test]
    fn the_typed_digest_is_the_json_digest() {
        let with_set = |set: Value| {
            let mut o = applied(2, "1");
            o["metadata"]["managedFields"][0]["fieldsV1"] = set;
            o
        };
        let mut cases = vec![
            applied(2, "1"),
            applied(3, "2"),
            with_set(json!({"f:apiVersion": {}, "f:kind": {}, "f:metadata": {".": {}}})),
            with_set(json!({"f:metadata": {"f:managedFields": {}, "f:name": {}}})),
            with_set(json!({"f:metadata": {}, "f:status": {"f:replicas": {}}, "f:missing": {}})),
            with_set(json!({"v:\"a\"": {}, "i:0": {}, "k:{\"a\":1}": {}, ".": {}})),
            with_set(json!(null)),
        ];
        let mut none = applied(2, "1");
        none["metadata"]["managedFields"][0]["manager"] = json!("kubectl");
        cases.push(none);
        let mut untyped = applied(2, "1");
        untyped.as_object_mut().unwrap().remove("apiVersion");
        untyped.as_object_mut().unwrap().remove("kind");
        cases.push(untyped);
        for case in cases {
            let object: DynamicObject = serde_json::from_value(case.clone()).unwrap();
            let mut typed = object.clone();
            let want = live_digest(&serde_json::to_value(&object).unwrap());
            assert_eq!(live_digest_of(&mut typed), want, "{case}");
            assert_eq!(
                serde_json::to_value(&typed).unwrap(),
                serde_json::to_value(&object).unwrap(),
                "left as it was"
            );
        }
    }

    #[test]
    fn set_and_index_members_project() {
        let set = json!({"f:finalizers": {"v:\"a\"": {}}, "f:args": {"i:1": {}}});
        let v = json!({"finalizers": ["a", "b"], "args": ["x", "y"]});
        let p = project(&v, set.as_object().unwrap());
        assert_eq!(
            p,
            json!({"f:finalizers": {"v:\"a\"": true}, "f:args": {"i:1": "y"}})
        );
        let gone = project(&json!({"finalizers": ["b"]}), set.as_object().unwrap());
        assert_eq!(
            gone,
            json!({"f:finalizers": {"v:\"a\"": false}, "f:args": null})
        );
    }
}
