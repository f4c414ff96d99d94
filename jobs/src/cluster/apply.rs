//! Server-side apply of a build: every object checked and placed before
//! anything is written, Namespaces first, then CRDs, then the rest.

use std::collections::HashMap;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use serde_json::Value;
use tokio::time::Instant;

use super::{describe, Cluster, ClusterError, CRD_WAIT, FIELD_MANAGER};
use crate::history::{AppliedObject, ApplyAction};

/// Why [`Cluster::apply`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyFailure {
    /// An object of the build is not a Kubernetes object.
    #[error("object #{index} of the build: {message}")]
    Invalid { index: usize, message: String },
    /// The cluster does not serve this kind.
    #[error("{object}: the cluster does not serve {api_version} {kind}")]
    UnknownKind {
        object: String,
        api_version: String,
        kind: String,
    },
    /// Restricted to one namespace, and this object is outside it.
    #[error("{object}: refused: {reason}")]
    Refused { object: String, reason: String },
    /// The API server rejected the object.
    #[error("{object}: {message}")]
    Rejected {
        object: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The API could not be reached (or failed otherwise) while handling this object.
    #[error("{object}: {error}")]
    Cluster { object: String, error: ClusterError },
}

/// [`Cluster::apply`] failed: why, and what had been applied before it stopped.
#[derive(Debug, thiserror::Error)]
#[error("{failure}")]
pub struct ApplyError {
    pub failure: ApplyFailure,
    /// Objects applied before the failure, in apply order.
    pub applied: Vec<AppliedObject>,
}

impl ApplyError {
    fn new(failure: ApplyFailure) -> Self {
        ApplyError {
            failure,
            applied: Vec::new(),
        }
    }
}

/// One object as applied: what happened, and its
/// [`super::drift::live_digest`] as the server returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub object: AppliedObject,
    pub live: String,
}

/// Where one object of a build goes: its kind and the namespace it is
/// applied in (None: cluster-scoped), in build order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// One object of a build, checked and placed.
struct Item {
    gvk: GroupVersionKind,
    name: String,
    body: Value,
    /// Apply order class: Namespaces, then CRDs, then the rest.
    rank: u8,
    /// Resolved through discovery (None: defined by a CRD of this build).
    resource: Option<ApiResource>,
    namespace: Option<String>,
}

impl Item {
    fn describe(&self) -> String {
        describe(&self.gvk.kind, self.namespace.as_deref(), &self.name)
    }
}

impl Cluster {
    /// Server-side apply every object (field manager `chump`, forcing
    /// conflicts): Namespaces first, then CustomResourceDefinitions, then the
    /// rest in build order. Namespaced objects without `metadata.namespace`
    /// get `default_ns`; cluster-scoped objects keep none.
    ///
    /// With `allowed_namespace`, any cluster-scoped object or object in
    /// another namespace is refused before anything is applied.
    ///
    /// Reports for each object whether it was created, configured (its
    /// resourceVersion changed) or left unchanged; stops at the first failure.
    ///
    /// Impersonating ([`Cluster::impersonating`]), every object is first
    /// applied with `dryRun=All` (one more PATCH per object), so that an
    /// object the user may not write (403) or the server rejects stops the
    /// apply before anything is written.
    pub async fn apply(
        &self,
        objects: &[Value],
        default_ns: &str,
        allowed_namespace: Option<&str>,
    ) -> Result<Vec<Applied>, ApplyError> {
        let mut items = self.plan(objects, default_ns, allowed_namespace).await?;
        items.sort_by_key(|i| i.rank);
        if self.user.is_some() {
            self.dry_run(&items).await.map_err(|failure| {
                tracing::warn!(error = %failure, "dry run refused: nothing applied");
                ApplyError::new(failure)
            })?;
        }
        let mut applied: Vec<Applied> = Vec::with_capacity(items.len());
        for item in &mut items {
            match self.apply_one(item).await {
                Ok((action, live)) => {
                    tracing::info!(object = %item.describe(), action = ?action, "applied");
                    applied.push(Applied {
                        object: AppliedObject {
                            api_version: item.gvk.api_version(),
                            kind: item.gvk.kind.clone(),
                            namespace: item.namespace.clone(),
                            name: item.name.clone(),
                            action,
                        },
                        live,
                    });
                }
                Err(failure) => {
                    tracing::warn!(object = %item.describe(), error = %failure, "apply failed");
                    let applied = applied.into_iter().map(|a| a.object).collect();
                    return Err(ApplyError { failure, applied });
                }
            }
        }
        Ok(applied)
    }

    /// Where each object of `objects` would be applied (kinds resolved
    /// through discovery, namespaced objects without a namespace in
    /// `default_ns`), in the same order; nothing is written.
    pub async fn place(
        &self,
        objects: &[Value],
        default_ns: &str,
    ) -> Result<Vec<Placement>, ApplyError> {
        Ok(self
            .plan(objects, default_ns, None)
            .await?
            .into_iter()
            .map(|item| Placement {
                api_version: item.gvk.api_version(),
                kind: item.gvk.kind,
                namespace: item.namespace,
                name: item.name,
            })
            .collect())
    }

    /// Check every object, resolve its kind and namespace, enforce the
    /// namespace restriction: all before anything is written.
    async fn plan(
        &self,
        objects: &[Value],
        default_ns: &str,
        allowed: Option<&str>,
    ) -> Result<Vec<Item>, ApplyError> {
        let invalid = |index: usize, message: String| {
            ApplyError::new(ApplyFailure::Invalid { index, message })
        };
        // Kinds defined by CRDs in this build: (group, kind) → namespaced.
        let mut crd_kinds: HashMap<(String, String), bool> = HashMap::new();
        for o in objects {
            if o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
                && o["kind"] == "CustomResourceDefinition"
            {
                if let (Some(g), Some(k)) = (
                    o["spec"]["group"].as_str(),
                    o["spec"]["names"]["kind"].as_str(),
                ) {
                    crd_kinds.insert(
                        (g.to_string(), k.to_string()),
                        o["spec"]["scope"].as_str() != Some("Cluster"),
                    );
                }
            }
        }
        let mut items = Vec::with_capacity(objects.len());
        for (index, o) in objects.iter().enumerate() {
            if !o.is_object() {
                return Err(invalid(index, "not a mapping".into()));
            }
            let api_version = o["apiVersion"].as_str().filter(|s| !s.is_empty());
            let kind = o["kind"].as_str().filter(|s| !s.is_empty());
            let name = o["metadata"]["name"].as_str().filter(|s| !s.is_empty());
            let (Some(api_version), Some(kind), Some(name)) = (api_version, kind, name) else {
                return Err(invalid(
                    index,
                    "missing apiVersion, kind or metadata.name".into(),
                ));
            };
            let (group, version) = match api_version.split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", api_version),
            };
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let declared = o["metadata"]["namespace"]
                .as_str()
                .filter(|s| !s.is_empty());
            let (resource, namespaced) = match self.resolve(&gvk).await {
                Ok(Some((ar, scope))) => (Some(ar), scope == Scope::Namespaced),
                Ok(None) => match crd_kinds.get(&(group.to_string(), kind.to_string())) {
                    Some(namespaced) => (None, *namespaced),
                    None => {
                        return Err(ApplyError::new(ApplyFailure::UnknownKind {
                            object: describe(kind, declared, name),
                            api_version: api_version.to_string(),
                            kind: kind.to_string(),
                        }))
                    }
                },
                Err(error) => {
                    return Err(ApplyError::new(ApplyFailure::Cluster {
                        object: describe(kind, declared, name),
                        error,
                    }))
                }
            };
            let namespace = namespaced.then(|| declared.unwrap_or(default_ns).to_string());
            let rank = match (group, kind) {
                ("", "Namespace") => 0,
                ("apiextensions.k8s.io", "CustomResourceDefinition") => 1,
                _ => 2,
            };
            let mut body = o.clone();
            match &namespace {
                Some(ns) => body["metadata"]["namespace"] = Value::String(ns.clone()),
                None => {
                    if let Some(m) = body["metadata"].as_object_mut() {
                        m.remove("namespace");
                    }
                }
            }
            items.push(Item {
                gvk,
                name: name.to_string(),
                body,
                rank,
                resource,
                namespace,
            });
        }
        if let Some(allowed) = allowed {
            for item in &items {
                let reason = match &item.namespace {
                    None => format!("cluster-scoped objects are not allowed (restricted to namespace {allowed})"),
                    Some(ns) if ns != allowed => format!("namespace {ns} is not allowed (restricted to namespace {allowed})"),
                    Some(_) => continue,
                };
                return Err(ApplyError::new(ApplyFailure::Refused {
                    object: item.describe(),
                    reason,
                }));
            }
        }
        Ok(items)
    }

    /// Server-side apply of every item with `dryRun=All`, as it will be
    /// applied: the API server authorizes (and admits and validates) a dry
    /// run as the write itself, and stores nothing. Objects of kinds a CRD
    /// of this build defines cannot be tried yet; an object in a Namespace
    /// the build creates meets a 404 for it, and is let through.
    async fn dry_run(&self, items: &[Item]) -> Result<(), ApplyFailure> {
        let created: Vec<&str> = items
            .iter()
            .filter(|i| i.rank == 0)
            .map(|i| i.name.as_str())
            .collect();
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        for item in items {
            let Some(resource) = &item.resource else {
                continue;
            };
            let api: Api<DynamicObject> = match &item.namespace {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
                None => Api::all_with(self.client.clone(), resource),
            };
            match api
                .patch(&item.name, &params, &Patch::Apply(&item.body))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s))
                    if s.code == 404
                        && item
                            .namespace
                            .as_deref()
                            .is_some_and(|ns| created.contains(&ns)) => {}
                Err(kube::Error::Api(s)) => {
                    return Err(ApplyFailure::Rejected {
                        object: item.describe(),
                        code: s.code,
                        reason: s.reason.clone(),
                        message: s.message.clone(),
                    })
                }
                Err(e) => {
                    return Err(ApplyFailure::Cluster {
                        object: item.describe(),
                        error: e.into(),
                    })
                }
            }
        }
        Ok(())
    }

    async fn apply_one(&self, item: &mut Item) -> Result<(ApplyAction, String), ApplyFailure> {
        let cluster_err = |error: ClusterError| ApplyFailure::Cluster {
            object: item.describe(),
            error,
        };
        let resource = match &item.resource {
            Some(r) => r.clone(),
            None => {
                // Defined by a CRD applied just before: wait until it is served.
                let deadline = Instant::now() + CRD_WAIT;
                loop {
                    match self.resolve(&item.gvk).await {
                        Ok(Some((ar, _))) => break ar,
                        Ok(None) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(250)).await
                        }
                        Ok(None) => {
                            return Err(ApplyFailure::UnknownKind {
                                object: item.describe(),
                                api_version: item.gvk.api_version(),
                                kind: item.gvk.kind.clone(),
                            })
                        }
                        Err(e) => return Err(cluster_err(e)),
                    }
                }
            }
        };
        let api: Api<DynamicObject> = match &item.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let before = api
            .get_metadata_opt(&item.name)
            .await
            .map_err(|e| cluster_err(e.into()))?
            .map(|m| m.metadata.resource_version);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let (after, live) = match api
            .patch(&item.name, &params, &Patch::Apply(&item.body))
            .await
        {
            Ok(mut obj) => {
                let live = super::drift::live_digest_of(&mut obj);
                (obj.metadata.resource_version, live)
            }
            Err(kube::Error::Api(s)) => {
                return Err(ApplyFailure::Rejected {
                    object: item.describe(),
                    code: s.code,
                    reason: s.reason.clone(),
                    message: s.message.clone(),
                })
            }
            Err(e) => return Err(cluster_err(e.into())),
        };
        let action = match before {
            None => ApplyAction::Created,
            Some(rv) if rv != after => ApplyAction::Configured,
            Some(_) => ApplyAction::Unchanged,
        };
        Ok((action, live))
    }
}
