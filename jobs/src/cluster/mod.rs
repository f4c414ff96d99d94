//! chump's Kubernetes client: the connection, discovery, and the pieces a
//! check uses, one module each:
//!
//! - [`apply`]: server-side apply of a build (namespaces and CRDs first);
//! - [`rollout`]: reading the image a Deployment runs;
//! - [`health`]: waiting for every workload of a build to roll out, failing
//!   fast with the reason, and assessing workloads in steady checks;
//! - [`drift`]: observing applied objects and telling whether the fields
//!   chump applies were changed in the cluster;
//! - [`prune`]: deleting applied objects the build no longer renders.
//!
//! Built on kube + k8s-openapi. Every request has connect, read and write
//! timeouts, so an unreachable cluster fails within seconds instead of
//! hanging a worker. Kinds are resolved through discovery once and cached
//! (GroupVersionKind → ApiResource + scope); a miss asks the server again, so
//! kinds that appear later (a CRD applied in the same build) are found.
//!
//! A source with a service account is handled through
//! [`Cluster::impersonating`]: the same cluster, discovery cache and
//! settings, but a client (one per user, made once and kept) whose every
//! request carries `Impersonate-User`, so the cluster's RBAC decides what
//! the source may read and write. Such a client's applies are dry-run
//! first, every object, so that a forbidden object stops the deploy before
//! anything is written ([`Cluster::apply`]).

mod apply;
pub mod drift;
pub mod health;
mod prune;
mod rollout;

pub use apply::{Applied, ApplyError, ApplyFailure, Placement};
pub use drift::{Drift, Observed};
pub use health::{RolloutError, Verdict, Workload, WorkloadKind};
pub use prune::{Kept, PruneReport, PruneScope, PRUNE_ANNOTATION};
pub use rollout::Running;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope};
use kube::{Client, Config};

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
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
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

/// chump's handle on one cluster. Cheap to clone; clones share the client and
/// the discovery cache.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    kinds: Arc<RwLock<HashMap<GroupVersionKind, (ApiResource, Scope)>>>,
    /// The configuration the base client was made from (None: made around
    /// a client, so it cannot impersonate).
    config: Option<Arc<Config>>,
    /// One client per impersonated user, shared by every clone.
    users: Arc<Mutex<HashMap<String, Client>>>,
    /// The user `client` impersonates (None: chump's own identity).
    user: Option<Arc<str>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("user", &self.user)
            .finish_non_exhaustive()
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
pub(crate) fn describe(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
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
        let config = with_timeouts(config);
        let client =
            Client::try_from(config.clone()).map_err(|e| ClusterError::Config(chain(&e)))?;
        let mut cluster = Self::new(client);
        cluster.config = Some(Arc::new(config));
        Ok(cluster)
    }

    /// Around an existing client (its timeouts are the caller's business).
    /// Such a cluster cannot impersonate.
    pub fn new(client: Client) -> Self {
        Cluster {
            client,
            kinds: Arc::new(RwLock::new(HashMap::new())),
            config: None,
            users: Arc::new(Mutex::new(HashMap::new())),
            user: None,
        }
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The user this handle impersonates (None: chump's own identity).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The same cluster as `user` (Kubernetes user impersonation: every
    /// request carries `Impersonate-User: <user>` and no
    /// `Impersonate-Group`, so the API server gives a ServiceAccount user
    /// its groups): shares the discovery cache; the client is made on first
    /// use per user and kept. chump's own identity needs the `impersonate`
    /// verb on the user (for ServiceAccounts: `serviceaccounts`).
    pub fn impersonating(&self, user: &str) -> Result<Cluster, ClusterError> {
        let config = self.config.as_ref().ok_or_else(|| {
            ClusterError::Config(
                "this client was made around an existing one and cannot impersonate".into(),
            )
        })?;
        let client = {
            let mut users = self.users.lock().unwrap();
            match users.get(user) {
                Some(c) => c.clone(),
                None => {
                    let mut config = Config::clone(config);
                    config.auth_info.impersonate = Some(user.to_string());
                    config.auth_info.impersonate_groups = None;
                    config.auth_info.impersonate_uid = None;
                    config.auth_info.impersonate_user_extra = None;
                    let c =
                        Client::try_from(config).map_err(|e| ClusterError::Config(chain(&e)))?;
                    users.insert(user.to_string(), c.clone());
                    c
                }
            }
        };
        Ok(Cluster {
            client,
            kinds: self.kinds.clone(),
            config: self.config.clone(),
            users: self.users.clone(),
            user: Some(Arc::from(user)),
        })
    }

    /// The ApiResource and scope of a kind, from the cache or discovery.
    /// `Ok(None)` when the server does not serve it.
    pub(crate) async fn resolve(
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
}
