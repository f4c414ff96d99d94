//! chump's Kubernetes client: read the running image, server-side apply a
//! kustomize build, wait for a Deployment to roll out.
//!
//! Built on kube + k8s-openapi. Every request has connect, read and write
//! timeouts, so an unreachable cluster fails within seconds instead of
//! hanging a worker. Kinds are resolved through discovery once and cached
//! (GroupVersionKind → ApiResource + scope); a miss asks the server again, so
//! kinds that appear later (a CRD applied in the same build) are found.
//!
//! Waiting for a rollout polls the Deployment (250 ms, backing off ×1.5 to
//! 2 s) rather than watching: it works with the read timeout in place and
//! needs nothing but `get` from the server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::{Client, Config};
use serde_json::Value;
use tokio::time::Instant;

use crate::history::{AppliedObject, ApplyAction};

/// The field manager chump applies as.
pub const FIELD_MANAGER: &str = "chump";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a kind defined by a CRD of the same build to be served.
const CRD_WAIT: Duration = Duration::from_secs(15);

/// Talking to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot load the Kubernetes configuration: {0}")]
    Config(String),
    /// Connecting, sending or receiving failed (refused, timed out, TLS…).
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
    /// The API server answered with an error status.
    #[error("the Kubernetes API refused: {message} ({reason}, {code})")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// Anything else kube reported (bad response body, request building…).
    #[error("Kubernetes client error: {0}")]
    Other(String),
}

impl ClusterError {
    /// True when the API could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClusterError::Unreachable(_))
    }
}

/// The error and its sources, joined with ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

impl From<kube::Error> for ClusterError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => ClusterError::Api {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                let text = chain(&e);
                // "ServiceError: client error (Connect): tcp connect error: Connection refused"
                let text = text
                    .strip_prefix("ServiceError: ")
                    .unwrap_or(&text)
                    .to_string();
                ClusterError::Unreachable(text)
            }
            other => ClusterError::Other(chain(&other)),
        }
    }
}

/// A Deployment as a check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The container's image in the Deployment's spec (`None`: no such
    /// container).
    pub image: Option<String>,
    /// The message of a `ProgressDeadlineExceeded` condition of the current
    /// generation: the rollout of this spec failed.
    pub rollout_failed: Option<String>,
}

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

/// [`Cluster::wait_rollout`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The Deployment reports `Progressing=False` with `ProgressDeadlineExceeded`.
    #[error("deployment {namespace}/{name}: ProgressDeadlineExceeded: {message}")]
    DeadlineExceeded {
        namespace: String,
        name: String,
        message: String,
    },
    /// Not rolled out within the timeout.
    #[error("deployment {namespace}/{name}: not rolled out after {}s: {state}", timeout.as_secs_f32())]
    Timeout {
        namespace: String,
        name: String,
        timeout: Duration,
        state: String,
    },
    /// The Deployment does not exist.
    #[error("deployment {namespace}/{name}: not found")]
    NotFound { namespace: String, name: String },
    /// Reading the Deployment failed.
    #[error("deployment {namespace}/{name}: {error}")]
    Cluster {
        namespace: String,
        name: String,
        error: ClusterError,
    },
}

/// chump's handle on one cluster. Cheap to clone; clones share the client and
/// the discovery cache.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    kinds: Arc<RwLock<HashMap<GroupVersionKind, (ApiResource, Scope)>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

fn with_timeouts(mut config: Config) -> Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    config.reset_reader_on_write = true;
    config
}

/// "Deployment prod/web", "Namespace prod".
fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
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
    /// From `KUBECONFIG` (or `~/.kube/config`), else the in-cluster service account.
    pub async fn from_env() -> Result<Self, ClusterError> {
        let config = Config::infer()
            .await
            .map_err(|e| ClusterError::Config(chain(&e)))?;
        Self::from_config(config)
    }

    /// From one kubeconfig file (its current context).
    pub async fn from_kubeconfig(path: &Path) -> Result<Self, ClusterError> {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| ClusterError::Config(format!("{}: {}", path.display(), chain(&e))))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Config(format!("{}: {}", path.display(), chain(&e))))?;
        Self::from_config(config)
    }

    /// From a kube [`Config`]; chump's timeouts replace the config's.
    pub fn from_config(config: Config) -> Result<Self, ClusterError> {
        let client =
            Client::try_from(with_timeouts(config)).map_err(|e| ClusterError::Config(chain(&e)))?;
        Ok(Self::new(client))
    }

    /// Around an existing client (its timeouts are the caller's business).
    pub fn new(client: Client) -> Self {
        Cluster {
            client,
            kinds: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Image of container `container` in Deployment `ns/deployment`, from its
    /// spec. `Ok(None)` when the Deployment does not exist or has no such
    /// container: both mean "deploy".
    pub async fn running_image(
        &self,
        ns: &str,
        deployment: &str,
        container: &str,
    ) -> Result<Option<String>, ClusterError> {
        Ok(self
            .running(ns, deployment, container)
            .await?
            .and_then(|r| r.image))
    }

    /// What Deployment `ns/deployment` runs for `container`, and whether its
    /// current rollout has failed — from one GET. `Ok(None)` when the
    /// Deployment does not exist.
    pub async fn running(
        &self,
        ns: &str,
        deployment: &str,
        container: &str,
    ) -> Result<Option<Running>, ClusterError> {
        let Some(d) = self.deployments(ns).get_opt(deployment).await? else {
            tracing::debug!(namespace = ns, deployment, "deployment not found");
            return Ok(None);
        };
        let image = d.data["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .and_then(|c| c["image"].as_str())
            .map(str::to_string);
        let rollout_failed = match rollout_state(&d) {
            Progress::Failed(message) => Some(message),
            _ => None,
        };
        Ok(Some(Running {
            image,
            rollout_failed,
        }))
    }

    /// Deployments of one namespace, read as plain JSON so that chump does not
    /// depend on which Kubernetes version k8s-openapi is built for.
    fn deployments(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            ns,
            &ApiResource::erase::<Deployment>(&()),
        )
    }

    /// The ApiResource and scope of a kind, from the cache or discovery.
    /// `Ok(None)` when the server does not serve it.
    async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<Option<(ApiResource, Scope)>, ClusterError> {
        if let Some(hit) = self.kinds.read().unwrap().get(gvk) {
            return Ok(Some(hit.clone()));
        }
        match kube::discovery::pinned_kind(&self.client, gvk).await {
            Ok((ar, caps)) => {
                let entry = (ar, caps.scope);
                self.kinds
                    .write()
                    .unwrap()
                    .insert(gvk.clone(), entry.clone());
                Ok(Some(entry))
            }
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

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
    pub async fn apply(
        &self,
        objects: &[Value],
        default_ns: &str,
        allowed_namespace: Option<&str>,
    ) -> Result<Vec<AppliedObject>, ApplyError> {
        let mut items = self.plan(objects, default_ns, allowed_namespace).await?;
        items.sort_by_key(|i| i.rank);
        let mut applied = Vec::with_capacity(items.len());
        for item in &mut items {
            match self.apply_one(item).await {
                Ok(action) => {
                    tracing::info!(object = %item.describe(), action = ?action, "applied");
                    applied.push(AppliedObject {
                        api_version: item.gvk.api_version(),
                        kind: item.gvk.kind.clone(),
                        namespace: item.namespace.clone(),
                        name: item.name.clone(),
                        action,
                    });
                }
                Err(failure) => {
                    tracing::warn!(object = %item.describe(), error = %failure, "apply failed");
                    return Err(ApplyError { failure, applied });
                }
            }
        }
        Ok(applied)
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

    async fn apply_one(&self, item: &mut Item) -> Result<ApplyAction, ApplyFailure> {
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
        let after = match api
            .patch(&item.name, &params, &Patch::Apply(&item.body))
            .await
        {
            Ok(obj) => obj.metadata.resource_version,
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
        Ok(match before {
            None => ApplyAction::Created,
            Some(rv) if rv != after => ApplyAction::Configured,
            Some(_) => ApplyAction::Unchanged,
        })
    }

    /// Wait until Deployment `ns/name` has rolled out: observed generation ≥
    /// generation, updated and available replicas = desired replicas (default 1),
    /// no old replicas left. Fails at once on `ProgressDeadlineExceeded`, and
    /// after `timeout` otherwise. Polls (250 ms backing off to 2 s); a cluster
    /// that stops answering is retried until the timeout.
    pub async fn wait_rollout(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), RolloutError> {
        let api = self.deployments(ns);
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(250);
        let mut state;
        loop {
            match api.get_opt(name).await {
                Ok(Some(d)) => match rollout_state(&d) {
                    Progress::Done => {
                        tracing::info!(namespace = ns, deployment = name, "rolled out");
                        return Ok(());
                    }
                    Progress::Failed(message) => {
                        return Err(RolloutError::DeadlineExceeded {
                            namespace: ns.into(),
                            name: name.into(),
                            message,
                        })
                    }
                    Progress::Waiting(s) => state = s,
                },
                Ok(None) => {
                    return Err(RolloutError::NotFound {
                        namespace: ns.into(),
                        name: name.into(),
                    })
                }
                Err(e) => {
                    let error = ClusterError::from(e);
                    if !error.is_unreachable() {
                        return Err(RolloutError::Cluster {
                            namespace: ns.into(),
                            name: name.into(),
                            error,
                        });
                    }
                    state = error.to_string();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RolloutError::Timeout {
                    namespace: ns.into(),
                    name: name.into(),
                    timeout,
                    state,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }
}

enum Progress {
    Done,
    Waiting(String),
    Failed(String),
}

fn rollout_state(d: &DynamicObject) -> Progress {
    let generation = d.metadata.generation.unwrap_or(0);
    let desired = d.data["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &d.data["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Progress::Waiting(format!(
            "generation {generation} not observed yet (observed {observed})"
        ));
    }
    if let Some(c) = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    {
        return Progress::Failed(c["message"].as_str().unwrap_or("").to_string());
    }
    let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
    let available = status["availableReplicas"].as_i64().unwrap_or(0);
    let total = status["replicas"].as_i64().unwrap_or(updated);
    if updated >= desired && available >= desired && total <= updated {
        Progress::Done
    } else {
        Progress::Waiting(format!(
            "{updated} of {desired} replicas updated, {available} available, {} old",
            (total - updated).max(0)
        ))
    }
}
