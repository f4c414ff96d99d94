//! Pruning: deleting objects chump applied that git no longer renders.
//!
//! Only objects of the recorded inventory are candidates, and each is read
//! before it is deleted. It is deleted only when it still carries chump's
//! labels for this source (`app.kubernetes.io/managed-by: chump`,
//! `chump.dev/source: <id>`), is not annotated `chump.dev/prune: disabled`,
//! is not already being deleted, and lies inside the namespace chump is
//! restricted to (when it is). The delete is conditional on the uid read
//! (an object recreated meanwhile under the same name is not touched) and
//! uses background propagation: the object goes at once, its dependents
//! (ReplicaSets, Pods) are collected by the cluster's garbage collector.
//!
//! Namespaces and CRDs go last: deleting them takes everything inside.

use kube::api::{Api, DeleteParams, DynamicObject, Preconditions};
use kube::core::GroupVersionKind;

use super::{describe, Cluster, ClusterError};
use crate::history::{AppliedObject, ApplyAction};
use crate::inventory::InventoryObject;

/// The annotation that keeps an object from being pruned.
pub const PRUNE_ANNOTATION: &str = "chump.dev/prune";

/// Whose objects may be pruned, and where.
#[derive(Debug, Clone, Copy)]
pub struct PruneScope<'a> {
    /// The label naming chump as the manager (`app.kubernetes.io/managed-by`).
    pub managed_by: (&'a str, &'a str),
    /// The label naming the source (`chump.dev/source`, its id).
    pub source: (&'a str, &'a str),
    /// Restricted to this namespace: nothing outside it is deleted.
    pub allowed_namespace: Option<&'a str>,
}

/// Why a candidate was left in the cluster on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Annotated `chump.dev/prune: disabled`.
    Disabled,
    /// Its labels do not say chump applied it for this source.
    NotOurs,
    /// Outside the namespace chump is restricted to.
    Restricted,
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kept::Disabled => "annotated chump.dev/prune: disabled",
            Kept::NotOurs => "not labelled as applied by chump for this source",
            Kept::Restricted => "outside the namespace chump is restricted to",
        })
    }
}

/// What [`Cluster::prune`] did with each candidate.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Deleted (for history, with action `deleted`).
    pub deleted: Vec<AppliedObject>,
    /// Left on purpose.
    pub kept: Vec<(InventoryObject, Kept)>,
    /// Already gone (or being deleted by someone else).
    pub gone: Vec<InventoryObject>,
    /// Not deleted because the cluster failed or refused: to try again.
    pub failed: Vec<(InventoryObject, ClusterError)>,
}

impl PruneReport {
    /// "Service prod/web: <error>; …" for a failure message.
    pub fn failures(&self) -> String {
        self.failed
            .iter()
            .map(|(o, e)| {
                format!(
                    "{}: {e}",
                    describe(&o.kind, o.namespace.as_deref(), &o.name)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Deletion order: everything else, then CRDs, then Namespaces.
fn rank(o: &InventoryObject) -> u8 {
    match (crate::inventory::group_of(&o.api_version), o.kind.as_str()) {
        ("", "Namespace") => 2,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
        _ => 0,
    }
}

impl Cluster {
    /// Deletes every candidate that `scope` allows (see the module doc);
    /// one at a time, never stopping at a failure.
    pub async fn prune(
        &self,
        candidates: &[InventoryObject],
        scope: PruneScope<'_>,
    ) -> PruneReport {
        let mut ordered: Vec<&InventoryObject> = candidates.iter().collect();
        ordered.sort_by_key(|o| rank(o));
        let mut report = PruneReport::default();
        for o in ordered {
            let what = describe(&o.kind, o.namespace.as_deref(), &o.name);
            if let Some(allowed) = scope.allowed_namespace {
                if o.namespace.as_deref() != Some(allowed) {
                    tracing::warn!(object = %what, "not pruned: {}", Kept::Restricted);
                    report.kept.push((o.clone(), Kept::Restricted));
                    continue;
                }
            }
            match self.prune_one(o, scope).await {
                Ok(Pruned::Deleted) => {
                    tracing::info!(object = %what, "pruned");
                    report.deleted.push(AppliedObject {
                        api_version: o.api_version.clone(),
                        kind: o.kind.clone(),
                        namespace: o.namespace.clone(),
                        name: o.name.clone(),
                        action: ApplyAction::Deleted,
                    });
                }
                Ok(Pruned::Kept(why)) => {
                    tracing::info!(object = %what, "not pruned: {why}");
                    report.kept.push((o.clone(), why));
                }
                Ok(Pruned::Gone) => {
                    tracing::debug!(object = %what, "already gone");
                    report.gone.push(o.clone());
                }
                Err(e) => {
                    tracing::warn!(object = %what, error = %e, "prune failed");
                    report.failed.push((o.clone(), e));
                }
            }
        }
        report
    }

    async fn prune_one(
        &self,
        o: &InventoryObject,
        scope: PruneScope<'_>,
    ) -> Result<Pruned, ClusterError> {
        let (group, version) = o
            .api_version
            .split_once('/')
            .unwrap_or(("", &o.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &o.kind);
        let Some((resource, _)) = self.resolve(&gvk).await? else {
            // The kind is no longer served (its CRD went): so did the object.
            return Ok(Pruned::Gone);
        };
        let api: Api<DynamicObject> = match &o.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let Some(live) = api.get_metadata_opt(&o.name).await? else {
            return Ok(Pruned::Gone);
        };
        let meta = &live.metadata;
        if meta.deletion_timestamp.is_some() {
            return Ok(Pruned::Gone);
        }
        let label = |k: &str| {
            meta.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .map(String::as_str)
        };
        if label(scope.managed_by.0) != Some(scope.managed_by.1)
            || label(scope.source.0) != Some(scope.source.1)
        {
            return Ok(Pruned::Kept(Kept::NotOurs));
        }
        let disabled = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRUNE_ANNOTATION))
            .is_some_and(|v| v == "disabled");
        if disabled {
            return Ok(Pruned::Kept(Kept::Disabled));
        }
        let params = DeleteParams::background().preconditions(Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        });
        match api.delete(&o.name, &params).await {
            Ok(_) => Ok(Pruned::Deleted),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Pruned::Gone),
            Err(e) => Err(e.into()),
        }
    }
}

enum Pruned {
    Deleted,
    Kept(Kept),
    Gone,
}
