//! Deletion, and the controllers that finish it: the garbage collector, the
//! namespace controller and the CustomResourceDefinition finalizer.
//!
//! `DELETE` follows the generic registry (`registry/generic/registry/store.go`
//! `Delete`, `rest.BeforeDelete`, `deletionFinalizersForGarbageCollection`,
//! `markAsDeleting`):
//!
//! - `DeleteOptions` come from the body when there is one, else from the
//!   query (`endpoints/handlers/delete.go`), and are validated (422);
//! - preconditions (`uid`, `resourceVersion`) that do not hold are a 409;
//! - the propagation policy picks the garbage-collector finalizers:
//!   `Orphan` adds `orphan`, `Foreground` adds `foregroundDeletion`,
//!   `Background` neither; without a policy the object's finalizers decide,
//!   then the kind's default (orphan for `batch/v1` Jobs, background for the
//!   rest);
//! - an object left with finalizers is not removed: it gets
//!   `deletionTimestamp` and `deletionGracePeriodSeconds: 0` (and a
//!   generation bump) and the answer is 200 with the object; an object
//!   without is removed at once and the answer is the object for the kinds
//!   whose store returns it (`ReturnDeletedObject`: namespaces, services,
//!   service accounts, pods, PVCs, PVs, resource quotas, storage classes)
//!   and a `Status` (`Success`, details name/group/kind/uid) for the rest;
//! - a write that empties the finalizers of an object being deleted removes
//!   it (`ShouldDeleteDuringUpdate`); writes cannot change
//!   `deletionTimestamp` nor add finalizers to it (422);
//! - `dryRun: [All]` changes nothing.
//!
//! Namespaces (`registry/core/namespace/storage/storage.go`) and CRDs
//! (`apiextensions-apiserver/pkg/registry/customresourcedefinition/etcd.go`)
//! have their own first step: a deletion timestamp (and phase `Terminating`,
//! or the `customresourcecleanup.apiextensions.k8s.io` finalizer and a
//! `Terminating` condition); their controllers then delete what they hold
//! (background propagation) and release them.
//!
//! The controllers run on a timer shortly after any change, like the real
//! ones after a watch event, and again while they find work: the garbage
//! collector (`pkg/controller/garbagecollector`) deletes objects all of
//! whose owners (`metadata.ownerReferences`, matched by uid) are gone,
//! drops references to gone owners from objects that keep another, orphans
//! the dependents of an object with the `orphan` finalizer, and removes
//! `foregroundDeletion` once no dependent with `blockOwnerDeletion` is left
//! (deleting the dependents meanwhile, in the foreground where they have
//! dependents of their own). The namespace controller starts on a
//! terminating Namespace a second after its deletion (`NAMESPACE_DELAY`),
//! deletes its content with background propagation, reports what remains in
//! the Namespace's conditions (`NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`, …) and removes the `kubernetes` finalizer
//! once nothing does; the Namespace then goes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::response::Response;
use serde_json::{json, Value};

use super::fields::{self, Part};
use super::{
    bad_request, failure, json_response, key, not_found, split_group_version, timestamp, Ctx,
    Failure, Inner, Key, KindSpec, Res,
};

pub(super) const ORPHAN: &str = "orphan";
pub(super) const FOREGROUND: &str = "foregroundDeletion";
const NAMESPACE_FINALIZER: &str = "kubernetes";
const CRD_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// The manager the controllers' writes are recorded under (the prefix of
/// kube-controller-manager's user agent).
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Propagation {
    Foreground,
    Background,
    Orphan,
}

/// The parts of `meta.k8s.io/v1` `DeleteOptions` the stand-in honours.
#[derive(Debug, Clone, Default)]
pub(super) struct DeleteOptions {
    pub propagation: Option<Propagation>,
    /// The deprecated `orphanDependents`.
    pub orphan_dependents: Option<bool>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub(super) fn background() -> DeleteOptions {
        DeleteOptions {
            propagation: Some(Propagation::Background),
            ..DeleteOptions::default()
        }
    }
}

/// The owner graph the garbage collector keeps (`uidToNode`): objects by
/// uid, the owners each names and the dependents of each owner, and the
/// objects whose change it has still to look at.
#[derive(Default)]
pub(super) struct Graph {
    by_uid: HashMap<String, Key>,
    owners: HashMap<Key, Vec<String>>,
    dependents: HashMap<String, BTreeSet<Key>>,
    dirty: BTreeSet<Key>,
    /// Look at every object with owners again (a kind came or went).
    pub resync: bool,
}

impl Graph {
    /// Whether the collector has nothing queued.
    pub(super) fn idle(&self) -> bool {
        self.dirty.is_empty() && !self.resync
    }
}

fn invalid_options(field: &str, message: String) -> Failure {
    failure(
        422,
        "Invalid",
        format!("DeleteOptions.meta.k8s.io \"\" is invalid: {field}: {message}"),
    )
}

/// `DeleteOptions` of a request: the body's when it has one (the query is
/// then ignored, as by the real handler), else the query's.
pub(super) fn delete_options(cx: &Ctx) -> Res<DeleteOptions> {
    let mut o = DeleteOptions::default();
    let mut policy: Option<String> = None;
    let mut dry_run: Vec<String> = Vec::new();
    if cx.body.iter().any(|b| !b.is_ascii_whitespace()) {
        let ct = cx.rec.content_type.as_deref().unwrap_or("application/json");
        let v: Value = if ct.contains("yaml") {
            yaml_serde::from_slice(cx.body)
                .map_err(|e| bad_request(format!("error decoding YAML: {e}")))?
        } else {
            serde_json::from_slice(cx.body).map_err(|e| {
                bad_request(format!(
                    "the body of the request was in an unknown format: {e}"
                ))
            })?
        };
        if let Some(kind) = v.get("kind").and_then(Value::as_str) {
            if kind != "DeleteOptions" {
                return Err(bad_request(
                    "decoded object cannot be converted to DeleteOptions",
                ));
            }
        }
        policy = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.orphan_dependents = v.get("orphanDependents").and_then(Value::as_bool);
        let pre = &v["preconditions"];
        o.uid = pre["uid"].as_str().map(str::to_string);
        o.resource_version = pre["resourceVersion"].as_str().map(str::to_string);
        dry_run = v["dryRun"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
    } else {
        for (k, v) in url::form_urlencoded::parse(cx.rec.query.as_bytes()) {
            match k.as_ref() {
                "propagationPolicy" => policy = Some(v.into_owned()),
                "orphanDependents" => {
                    o.orphan_dependents = Some(v.parse::<bool>().map_err(|_| {
                        bad_request(format!("orphanDependents: invalid boolean {v:?}"))
                    })?)
                }
                "dryRun" => dry_run.push(v.into_owned()),
                _ => {}
            }
        }
    }
    if let Some(p) = policy {
        if o.orphan_dependents.is_some() {
            return Err(invalid_options(
                "propagationPolicy",
                format!("Invalid value: \"{p}\": orphanDependents and deletionPropagation cannot be both set"),
            ));
        }
        o.propagation = Some(match p.as_str() {
            "Foreground" => Propagation::Foreground,
            "Background" => Propagation::Background,
            "Orphan" => Propagation::Orphan,
            _ => {
                return Err(invalid_options(
                    "propagationPolicy",
                    format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""),
                ))
            }
        });
    }
    if let Some(bad) = dry_run.iter().find(|d| *d != "All") {
        return Err(invalid_options(
            "dryRun",
            format!("Unsupported value: \"{bad}\": supported values: \"All\""),
        ));
    }
    o.dry_run = !dry_run.is_empty();
    Ok(o)
}

/// Stores with `ReturnDeletedObject: true` answer an immediate delete with
/// the object; the others with a `Status`.
fn returns_deleted_object(k: &KindSpec) -> bool {
    matches!(
        (k.group, k.plural),
        (
            "",
            "namespaces"
                | "services"
                | "serviceaccounts"
                | "pods"
                | "persistentvolumeclaims"
                | "persistentvolumes"
                | "resourcequotas"
        ) | ("storage.k8s.io", "storageclasses")
    )
}

/// `DefaultGarbageCollectionPolicy`: orphan for `batch/v1` Jobs (for
/// backwards compatibility), background for everything else served here.
fn orphans_by_default(k: &KindSpec) -> bool {
    k.group == "batch" && k.version == "v1" && k.plural == "jobs"
}

fn is_namespace(k: &KindSpec) -> bool {
    k.group.is_empty() && k.plural == "namespaces"
}

fn is_crd(k: &KindSpec) -> bool {
    k.group == "apiextensions.k8s.io" && k.plural == "customresourcedefinitions"
}

pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn set_finalizers(obj: &mut Value, fins: &[String]) {
    if fins.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        obj["metadata"]["finalizers"] = json!(fins);
    }
}

pub(super) fn is_deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// `shouldOrphanDependents` / `shouldDeleteDependents` and the finalizers
/// they leave (`deletionFinalizersForGarbageCollection`).
fn gc_finalizers(k: &KindSpec, fins: &[String], o: &DeleteOptions) -> Vec<String> {
    let from_finalizers = |orphan: bool| -> Option<bool> {
        fins.iter().find_map(|f| match f.as_str() {
            ORPHAN => Some(orphan),
            FOREGROUND => Some(!orphan),
            _ => None,
        })
    };
    let orphan = match (o.orphan_dependents, o.propagation) {
        (Some(v), _) => v,
        (None, Some(p)) => p == Propagation::Orphan,
        (None, None) => from_finalizers(true).unwrap_or(orphans_by_default(k)),
    };
    let foreground = match (o.orphan_dependents, o.propagation) {
        (Some(_), _) => false,
        (None, Some(p)) => p == Propagation::Foreground,
        (None, None) => from_finalizers(false).unwrap_or(false),
    };
    let mut out: Vec<String> = fins
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN.into());
    }
    if foreground {
        out.push(FOREGROUND.into());
    }
    out
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

/// `markAsDeleting`: a deletion timestamp (kept when there is one), a zero
/// grace period, and a generation bump the first time.
fn mark_deleting(obj: &mut Value) {
    let md = &mut obj["metadata"];
    if md["deletionTimestamp"].is_null() {
        if let Some(g) = md["generation"].as_i64().filter(|g| *g > 0) {
            md["generation"] = json!(g + 1);
        }
        md["deletionTimestamp"] = json!(timestamp());
    }
    md["deletionGracePeriodSeconds"] = json!(0);
}

/// `NewConflict(resource, name, cause)`; `kind` is the details' kind (the
/// resource without its group).
fn conflict(name: &str, resource: &str, group: &str, kind: &str, cause: String) -> Failure {
    Failure {
        code: 409,
        reason: "Conflict",
        message: format!("Operation cannot be fulfilled on {resource} \"{name}\": {cause}"),
        details: json!({"name": name, "group": group, "kind": kind}),
    }
}

/// `rest.BeforeDelete`: preconditions checked early, against the kind.
fn check_preconditions(k: &KindSpec, obj: &Value, o: &DeleteOptions) -> Res<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let gk = if k.group.is_empty() {
        k.kind.to_string()
    } else {
        format!("{}.{}", k.kind, k.group)
    };
    if let Some(uid) = &o.uid {
        if uid != uid_of(obj) {
            return Err(conflict(name, &gk, k.group, k.kind, format!(
                "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                uid_of(obj)
            )));
        }
    }
    if let Some(rv) = &o.resource_version {
        let actual = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if rv != actual {
            return Err(conflict(name, &gk, k.group, k.kind, format!(
                "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
            )));
        }
    }
    Ok(())
}

/// The namespace and CRD stores' own check, worded as theirs.
fn check_preconditions_meta(k: &KindSpec, obj: &Value, o: &DeleteOptions) -> Res<()> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let resource = super::resource_name(k);
    if let Some(uid) = &o.uid {
        if uid != uid_of(obj) {
            return Err(conflict(
                name,
                &resource,
                k.group,
                k.plural,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    uid_of(obj)
                ),
            ));
        }
    }
    if let Some(rv) = &o.resource_version {
        let actual = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if rv != actual {
            return Err(conflict(name, &resource, k.group, k.plural, format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
            )));
        }
    }
    Ok(())
}

/// The answer to a DELETE that did `(object, removed)`.
pub(super) fn delete_response(
    k: &KindSpec,
    obj: &Value,
    removed: bool,
    o: &DeleteOptions,
) -> Response {
    let code = if !removed && o.orphan_dependents == Some(false) {
        202
    } else {
        200
    };
    if removed && !returns_deleted_object(k) {
        return json_response(
            code,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": super::omit_empty(&json!({
                    "name": obj["metadata"]["name"],
                    "group": k.group,
                    "kind": k.plural,
                    "uid": obj["metadata"]["uid"],
                })),
            }),
        );
    }
    json_response(code, obj)
}

/// A namespace condition as the namespace controller writes it.
fn ns_condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

impl Inner {
    /// Delete the object at (k, ns, name) with options `o`: `(the object as
    /// it is now or was last, whether it was removed)`.
    pub(super) fn delete_object(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        o: &DeleteOptions,
    ) -> Res<(Value, bool)> {
        let obj = self
            .objects
            .get(&key(k, ns, name))
            .cloned()
            .ok_or_else(|| not_found(k, name))?;
        if is_namespace(k) {
            check_preconditions_meta(k, &obj, o)?;
            if !is_deleting(&obj) {
                let mut marked = obj.clone();
                marked["metadata"]["deletionTimestamp"] = json!(timestamp());
                let fins = finalizers(&obj);
                let orphan = match (o.orphan_dependents, o.propagation) {
                    (Some(v), _) => v,
                    (None, Some(p)) => p == Propagation::Orphan,
                    (None, None) => fins.iter().any(|f| f == ORPHAN),
                };
                let foreground = match (o.orphan_dependents, o.propagation) {
                    (Some(v), _) => !v,
                    (None, Some(p)) => p == Propagation::Foreground,
                    (None, None) => fins.iter().any(|f| f == FOREGROUND),
                };
                let mut new: Vec<String> = fins
                    .into_iter()
                    .filter(|f| f != ORPHAN && f != FOREGROUND)
                    .collect();
                if orphan {
                    new.push(ORPHAN.into());
                }
                if foreground {
                    new.push(FOREGROUND.into());
                }
                set_finalizers(&mut marked, &new);
                let out = self.commit_with(k, ns, name, marked, o.dry_run, true);
                if !o.dry_run {
                    self.timers.push(super::Timer::NamespaceDue(
                        name.to_string(),
                        super::NAMESPACE_DELAY,
                    ));
                }
                return Ok((out, false));
            }
            if obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
            {
                return Ok((obj, false));
            }
            return self.store_delete(k, ns, name, obj, o);
        }
        if is_crd(k) {
            check_preconditions_meta(k, &obj, o)?;
            if !is_deleting(&obj) {
                let mut marked = obj.clone();
                marked["metadata"]["deletionTimestamp"] = json!(timestamp());
                let mut fins = finalizers(&obj);
                if !fins.iter().any(|f| f == CRD_FINALIZER) {
                    fins.push(CRD_FINALIZER.into());
                }
                set_finalizers(&mut marked, &fins);
                set_crd_terminating(
                    &mut marked,
                    true,
                    "InstanceDeletionPending",
                    "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
                );
                let out = self.commit_with(k, ns, name, marked, o.dry_run, true);
                return Ok((out, false));
            }
            return self.store_delete(k, ns, name, obj, o);
        }
        check_preconditions(k, &obj, o)?;
        self.store_delete(k, ns, name, obj, o)
    }

    /// The generic store's delete, preconditions checked.
    fn store_delete(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        o: &DeleteOptions,
    ) -> Res<(Value, bool)> {
        let fins = finalizers(&obj);
        let wanted = gc_finalizers(k, &fins, o);
        let changed = !same_set(&fins, &wanted);
        if (!fins.is_empty() || changed) && !wanted.is_empty() {
            let mut marked = obj.clone();
            if changed {
                set_finalizers(&mut marked, &wanted);
            }
            mark_deleting(&mut marked);
            let out = self.commit_with(k, ns, name, marked, o.dry_run, true);
            return Ok((out, false));
        }
        if !o.dry_run {
            self.remove_object(&key(k, ns, name));
        }
        Ok((obj, true))
    }

    /// Remove an object from the store (a namespace takes whatever is left
    /// in it, a CRD its kinds).
    pub(super) fn remove_object(&mut self, kk: &Key) -> Option<Value> {
        let obj = self.objects.remove(kk)?;
        self.rv += 1;
        let mut last = obj.clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(kk.clone(), "DELETED", last);
        if kk.0 == "apiextensions.k8s.io" && kk.2 == "customresourcedefinitions" {
            self.unregister_crd(&obj);
        }
        if kk.0.is_empty() && kk.2 == "namespaces" {
            // What is left is of kinds no longer served (or left when the
            // Namespace was finalized by hand): it goes without events.
            let ns = kk.4.clone();
            let left: Vec<Key> = self.objects.keys().filter(|k| k.3 == ns).cloned().collect();
            for k in left {
                if let Some(o) = self.objects.remove(&k) {
                    self.observe_change(&k, "DELETED", &o);
                }
            }
            self.namespaces_due.remove(&ns);
        }
        self.kick();
        Some(obj)
    }

    /// Whether a write left `obj` (being deleted) with nothing holding it.
    pub(super) fn released(k: &KindSpec, obj: &Value) -> bool {
        is_deleting(obj)
            && finalizers(obj).is_empty()
            && obj["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .is_none_or(|g| g == 0)
            && (!is_namespace(k)
                || obj["spec"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty()))
    }

    /// A controller's write: recorded as an Update by kube-controller-manager.
    pub(super) fn controller_write(&mut self, k: &KindSpec, kk: &Key, mut new: Value, part: Part) {
        let Some(old) = self.objects.get(kk) else {
            return;
        };
        fields::update(&mut new, Some(old), None, CONTROLLER_MANAGER, part, k);
        let ns = (!kk.3.is_empty()).then(|| kk.3.clone());
        self.finish_write(k, ns.as_deref(), &kk.4, new, false, true);
    }

    fn kind_of(&self, kk: &Key) -> Option<KindSpec> {
        self.find_kind(&kk.0, &kk.1, &kk.2)
    }

    /// The controllers, round after round while they find work (at most
    /// [`super::workloads::ROUNDS`], and [`super::workloads::SLICE`] holding
    /// the lock: what is left runs after [`super::workloads::PAUSE`]);
    /// whether any did something.
    pub(super) fn run_controllers(&mut self) -> bool {
        let mut worked = false;
        let until = std::time::Instant::now() + super::workloads::SLICE;
        for _ in 0..super::workloads::ROUNDS {
            let a = self.namespace_controller();
            let b = self.crd_finalizer();
            let c = self.garbage_collector();
            let d = self.workload_controllers(until);
            if !(a || b || c || d) || std::time::Instant::now() >= until {
                break;
            }
            worked = true;
        }
        if !self.wl.dirty.is_empty() || !self.graph.idle() {
            // More to do: again after a pause that lets requests in.
            self.controllers_scheduled = true;
            self.timers
                .push(super::Timer::Controllers(super::workloads::PAUSE));
        }
        worked
    }

    /// The namespace controller (`namespaced_resources_deleter.go`): delete
    /// the content of terminating namespaces, report what remains, and
    /// remove the `kubernetes` finalizer once nothing does.
    fn namespace_controller(&mut self) -> bool {
        let mut worked = false;
        let terminating: Vec<Key> = self
            .namespaces_due
            .iter()
            .map(|ns| {
                (
                    String::new(),
                    "v1".to_string(),
                    "namespaces".to_string(),
                    String::new(),
                    ns.clone(),
                )
            })
            .filter(|nk| self.objects.get(nk).is_some_and(is_deleting))
            .collect();
        let Some(ns_kind) = self.find_kind("", "v1", "namespaces") else {
            return false;
        };
        for nk in terminating {
            let name = nk.4.clone();
            let Some(ns_obj) = self.objects.get(&nk).cloned() else {
                continue;
            };
            let holds = ns_obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == NAMESPACE_FINALIZER));
            if !holds {
                continue;
            }
            let content: Vec<Key> = self
                .objects
                .keys()
                .filter(|kk| kk.3 == name && self.kind_of(kk).is_some_and(|k| k.namespaced))
                .cloned()
                .collect();
            for kk in &content {
                let Some(k) = self.kind_of(kk) else { continue };
                if self.objects.get(kk).is_some_and(|o| !is_deleting(o)) {
                    let _ =
                        self.delete_object(&k, Some(&name), &kk.4, &DeleteOptions::background());
                    worked = true;
                }
            }
            let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
            let mut held: BTreeMap<String, usize> = BTreeMap::new();
            for (kk, o) in self.objects.iter().filter(|(kk, _)| kk.3 == name) {
                let Some(k) = self.kind_of(kk) else { continue };
                *remaining
                    .entry(format!("{}.{}", k.plural, k.group))
                    .or_default() += 1;
                for f in finalizers(o) {
                    *held.entry(f).or_default() += 1;
                }
            }
            let list = |m: &BTreeMap<String, usize>, f: &dyn Fn(&String, usize) -> String| {
                m.iter()
                    .map(|(k, n)| f(k, *n))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let conditions = vec![
                ns_condition(
                    "NamespaceDeletionDiscoveryFailure",
                    false,
                    "ResourcesDiscovered",
                    "All resources successfully discovered",
                ),
                ns_condition(
                    "NamespaceDeletionGroupVersionParsingFailure",
                    false,
                    "ParsedGroupVersions",
                    "All legacy kube types successfully parsed",
                ),
                ns_condition(
                    "NamespaceDeletionContentFailure",
                    false,
                    "ContentDeleted",
                    "All content successfully deleted, may be waiting on finalization",
                ),
                if remaining.is_empty() {
                    ns_condition(
                        "NamespaceContentRemaining",
                        false,
                        "ContentRemoved",
                        "All content successfully removed",
                    )
                } else {
                    ns_condition(
                        "NamespaceContentRemaining",
                        true,
                        "SomeResourcesRemain",
                        &format!(
                            "Some resources are remaining: {}",
                            list(&remaining, &|r, n| format!(
                                "{r} has {n} resource instances"
                            ))
                        ),
                    )
                },
                if held.is_empty() {
                    ns_condition(
                        "NamespaceFinalizersRemaining",
                        false,
                        "ContentHasNoFinalizers",
                        "All content-preserving finalizers finished",
                    )
                } else {
                    ns_condition(
                        "NamespaceFinalizersRemaining",
                        true,
                        "SomeFinalizersRemain",
                        &format!(
                            "Some content in the namespace has finalizers remaining: {}",
                            list(&held, &|f, n| format!("{f} in {n} resource instances"))
                        ),
                    )
                },
            ];
            let Some(current) = self.objects.get(&nk).cloned() else {
                continue;
            };
            let old_conditions = current["status"]["conditions"].clone();
            let strip_times = |cs: &Value| -> Vec<Value> {
                cs.as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let mut c = c.clone();
                        if let Some(m) = c.as_object_mut() {
                            m.remove("lastTransitionTime");
                        }
                        c
                    })
                    .collect()
            };
            if strip_times(&old_conditions) != conditions {
                let now = timestamp();
                let stamped: Vec<Value> = conditions
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        let kept = old_conditions.as_array().and_then(|old| {
                            old.iter()
                                .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
                        });
                        c["lastTransitionTime"] = kept
                            .map(|o| o["lastTransitionTime"].clone())
                            .unwrap_or_else(|| json!(now));
                        c
                    })
                    .collect();
                let mut new = current.clone();
                new["status"]["conditions"] = Value::Array(stamped);
                self.controller_write(&ns_kind, &nk, new, Part::Status);
                worked = true;
            }
            if remaining.is_empty() {
                if let Some(mut new) = self.objects.get(&nk).cloned() {
                    if let Some(f) = new["spec"]["finalizers"].as_array_mut() {
                        f.retain(|x| x != NAMESPACE_FINALIZER);
                    }
                    self.controller_write(&ns_kind, &nk, new, Part::Main);
                    worked = true;
                }
            }
        }
        worked
    }

    /// The CRD finalizer (`apiextensions-apiserver/pkg/controller/finalizer`):
    /// delete every custom resource of a CRD being deleted, then release it.
    fn crd_finalizer(&mut self) -> bool {
        let mut worked = false;
        let crds: Vec<Key> = self
            .keys_of(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                None,
            )
            .into_iter()
            .filter(|kk| {
                self.objects.get(kk).is_some_and(|o| {
                    is_deleting(o) && finalizers(o).iter().any(|f| f == CRD_FINALIZER)
                })
            })
            .collect();
        for ck in crds {
            let Some(crd) = self.objects.get(&ck).cloned() else {
                continue;
            };
            let Some(crd_kind) = self.kind_of(&ck) else {
                continue;
            };
            let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
            let plural = crd["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let instances: Vec<Key> = self
                .objects
                .keys()
                .filter(|kk| kk.0 == group && kk.2 == plural)
                .cloned()
                .collect();
            for kk in &instances {
                let Some(k) = self.kind_of(kk) else { continue };
                if self.objects.get(kk).is_some_and(|o| !is_deleting(o)) {
                    let ns = (!kk.3.is_empty()).then(|| kk.3.clone());
                    let _ =
                        self.delete_object(&k, ns.as_deref(), &kk.4, &DeleteOptions::background());
                    worked = true;
                }
            }
            let left = self
                .objects
                .keys()
                .any(|kk| kk.0 == group && kk.2 == plural);
            let mut new = crd.clone();
            if left {
                set_crd_terminating(
                    &mut new,
                    true,
                    "InstanceDeletionInProgress",
                    "CustomResource deletion is in progress",
                );
            } else {
                set_crd_terminating(
                    &mut new,
                    false,
                    "InstanceDeletionCompleted",
                    "removed all instances",
                );
                let fins: Vec<String> = finalizers(&crd)
                    .into_iter()
                    .filter(|f| f != CRD_FINALIZER)
                    .collect();
                set_finalizers(&mut new, &fins);
            }
            if new != crd {
                self.controller_write(&crd_kind, &ck, new, Part::Main);
                worked = true;
            }
        }
        worked
    }

    /// The object an owner reference of an object in `ns` names, if it is
    /// there with that uid; `Err(())` when its kind is not served (the real
    /// collector then waits).
    fn owner(&self, ns: &str, r: &Value) -> Result<Option<(Key, &Value)>, ()> {
        let (group, _) = split_group_version(r["apiVersion"].as_str().unwrap_or(""));
        let kind = r["kind"].as_str().unwrap_or("");
        let Some(k) = self
            .kinds
            .iter()
            .find(|k| k.group == group && k.kind == kind)
        else {
            return Err(());
        };
        let ns = if k.namespaced { ns } else { "" };
        let name = r["name"].as_str().unwrap_or("");
        let uid = r["uid"].as_str().unwrap_or("");
        Ok(self
            .graph
            .by_uid
            .get(uid)
            .filter(|kk| kk.0 == group && kk.2 == k.plural && kk.3 == ns && kk.4 == name)
            .and_then(|kk| self.objects.get(kk).map(|o| (kk.clone(), o)))
            .filter(|(_, o)| uid_of(o) == uid))
    }

    /// The objects whose owner references name `uid`.
    pub(super) fn dependents_of(&self, uid: &str) -> Vec<Key> {
        self.graph
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Keep the owner graph and the collector's queue up to date with a
    /// stored change (`deleted`: `obj` is gone).
    pub(super) fn observe_owners(&mut self, kk: &Key, deleted: bool, obj: &Value) {
        if kk.0.is_empty() && kk.2 == "events" {
            return;
        }
        let uid = uid_of(obj).to_string();
        let refs: Vec<String> = obj["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["uid"].as_str().map(str::to_string))
            .collect();
        let g = &mut self.graph;
        for u in g.owners.remove(kk).unwrap_or_default() {
            if let Some(s) = g.dependents.get_mut(&u) {
                s.remove(kk);
                if s.is_empty() {
                    g.dependents.remove(&u);
                }
            }
        }
        let owners: Vec<Key> = refs
            .iter()
            .filter_map(|u| g.by_uid.get(u).cloned())
            .collect();
        if deleted {
            if g.by_uid.get(&uid) == Some(kk) {
                g.by_uid.remove(&uid);
            }
            // Its dependents lost an owner; an owner may have waited for it.
            if let Some(ds) = g.dependents.get(&uid) {
                g.dirty.extend(ds.iter().cloned());
            }
            g.dirty.extend(owners);
            return;
        }
        g.by_uid.insert(uid.clone(), kk.clone());
        if !refs.is_empty() {
            for u in &refs {
                g.dependents
                    .entry(u.clone())
                    .or_default()
                    .insert(kk.clone());
            }
            g.owners.insert(kk.clone(), refs);
            g.dirty.insert(kk.clone());
        }
        if is_deleting(obj) {
            g.dirty.insert(kk.clone());
            if let Some(ds) = g.dependents.get(&uid) {
                g.dirty.extend(ds.iter().cloned());
            }
        }
        for ok in owners {
            if self.objects.get(&ok).is_some_and(is_deleting) {
                self.graph.dirty.insert(ok);
            }
        }
    }

    /// The garbage collector (`garbagecollector.go` `attemptToDeleteItem`,
    /// `processDeletingDependentsItem`, `attemptToOrphanWorker`).
    fn garbage_collector(&mut self) -> bool {
        let mut worked = false;
        if std::mem::take(&mut self.graph.resync) {
            let all: Vec<Key> = self.graph.owners.keys().cloned().collect();
            self.graph.dirty.extend(all);
        }
        // Only what changed concerns it: owners being deleted, objects with
        // owners, and the dependents of owners that went.
        let keys = std::mem::take(&mut self.graph.dirty);
        for kk in keys {
            let Some(obj) = self.objects.get(&kk).cloned() else {
                continue;
            };
            if !((is_deleting(&obj)
                && finalizers(&obj)
                    .iter()
                    .any(|f| f == ORPHAN || f == FOREGROUND))
                || obj["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()))
            {
                continue;
            }
            let Some(k) = self.kind_of(&kk) else {
                continue;
            };
            let ns = (!kk.3.is_empty()).then(|| kk.3.clone());
            let fins = finalizers(&obj);
            if is_deleting(&obj) {
                if fins.iter().any(|f| f == ORPHAN) {
                    // Orphan the dependents, then let the owner go.
                    let uid = uid_of(&obj).to_string();
                    for dk in self.dependents_of(&uid) {
                        let Some(dk_kind) = self.kind_of(&dk) else {
                            continue;
                        };
                        let Some(mut d) = self.objects.get(&dk).cloned() else {
                            continue;
                        };
                        remove_owner_refs(&mut d, std::slice::from_ref(&uid));
                        self.controller_write(&dk_kind, &dk, d, Part::Main);
                    }
                    let mut new = obj.clone();
                    let rest: Vec<String> = fins.iter().filter(|f| *f != ORPHAN).cloned().collect();
                    set_finalizers(&mut new, &rest);
                    self.controller_write(&k, &kk, new, Part::Main);
                    worked = true;
                } else if fins.iter().any(|f| f == FOREGROUND) {
                    // Wait for the dependents that block it.
                    let uid = uid_of(&obj).to_string();
                    let blocking = self.dependents_of(&uid).into_iter().any(|dk| {
                        self.objects.get(&dk).is_some_and(|d| {
                            d["metadata"]["ownerReferences"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|r| {
                                    r["uid"] == uid.as_str() && r["blockOwnerDeletion"] == true
                                })
                        })
                    });
                    if !blocking {
                        let mut new = obj.clone();
                        let rest: Vec<String> =
                            fins.iter().filter(|f| *f != FOREGROUND).cloned().collect();
                        set_finalizers(&mut new, &rest);
                        self.controller_write(&k, &kk, new, Part::Main);
                        worked = true;
                    }
                }
                continue;
            }
            let refs: Vec<Value> = obj["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if refs.is_empty() {
                continue;
            }
            let (mut solid, mut dangling, mut waiting) = (0, Vec::new(), Vec::new());
            for r in &refs {
                let uid = r["uid"].as_str().unwrap_or("").to_string();
                match self.owner(&kk.3, r) {
                    Err(()) => solid += 1,
                    Ok(None) => dangling.push(uid),
                    Ok(Some((_, o)))
                        if is_deleting(o) && finalizers(o).iter().any(|f| f == FOREGROUND) =>
                    {
                        waiting.push(uid)
                    }
                    Ok(Some(_)) => solid += 1,
                }
            }
            if solid > 0 {
                if !dangling.is_empty() || !waiting.is_empty() {
                    let mut new = obj.clone();
                    dangling.extend(waiting);
                    remove_owner_refs(&mut new, &dangling);
                    self.controller_write(&k, &kk, new, Part::Main);
                    worked = true;
                }
                continue;
            }
            let policy = if !waiting.is_empty() && !self.dependents_of(uid_of(&obj)).is_empty() {
                Propagation::Foreground
            } else if fins.iter().any(|f| f == ORPHAN) {
                Propagation::Orphan
            } else if fins.iter().any(|f| f == FOREGROUND) {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            let o = DeleteOptions {
                propagation: Some(policy),
                uid: Some(uid_of(&obj).to_string()),
                ..DeleteOptions::default()
            };
            let _ = self.delete_object(&k, ns.as_deref(), &kk.4, &o);
            worked = true;
        }
        worked
    }
}

fn remove_owner_refs(obj: &mut Value, uids: &[String]) {
    if let Some(rs) = obj["metadata"]["ownerReferences"].as_array_mut() {
        rs.retain(|r| !uids.iter().any(|u| r["uid"] == u.as_str()));
        if rs.is_empty() {
            obj["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("ownerReferences");
        }
    }
}

/// Set the CRD's `Terminating` condition.
fn set_crd_terminating(crd: &mut Value, on: bool, reason: &str, message: &str) {
    if !crd["status"].is_object() {
        crd["status"] = json!({});
    }
    if !crd["status"]["conditions"].is_array() {
        crd["status"]["conditions"] = json!([]);
    }
    let cs = crd["status"]["conditions"].as_array_mut().unwrap();
    let status = if on { "True" } else { "False" };
    match cs.iter_mut().find(|c| c["type"] == "Terminating") {
        Some(c) => {
            if c["status"] != status {
                c["lastTransitionTime"] = json!(timestamp());
            }
            c["status"] = json!(status);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
        }
        None => cs.push(json!({
            "type": "Terminating", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": timestamp(),
        })),
    }
}

/// Whether creating objects of `k` is refused because its CRD is being
/// deleted (the custom resource handler refuses `create` then).
pub(super) fn crd_terminating(inner: &Inner, k: &KindSpec) -> bool {
    inner.objects.iter().any(|(kk, o)| {
        kk.0 == "apiextensions.k8s.io"
            && kk.2 == "customresourcedefinitions"
            && o["spec"]["group"] == k.group
            && o["spec"]["names"]["plural"] == k.plural
            && o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Terminating" && c["status"] == "True")
    })
}
