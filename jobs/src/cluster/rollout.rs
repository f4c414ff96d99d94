//! What a Deployment runs, and waiting for its rollout.
//!
//! Waiting polls the Deployment (250 ms, backing off ×1.5 to 2 s) rather
//! than watching: it works with the read timeout in place and needs nothing
//! but `get` from the server.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use tokio::time::Instant;

use super::{Cluster, ClusterError};

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

impl Running {
    /// What Deployment `d` runs for `container`, and whether its current
    /// rollout has failed.
    pub fn of(d: &DynamicObject, container: &str) -> Running {
        let image = d.data["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .and_then(|c| c["image"].as_str())
            .map(str::to_string);
        let rollout_failed = match rollout_state(d) {
            Progress::Failed(message) => Some(message),
            _ => None,
        };
        Running {
            image,
            rollout_failed,
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

impl Cluster {
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
        Ok(Some(Running::of(&d, container)))
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
