//! What a Deployment runs: the image of one of its containers, from one GET.
//! (Waiting for its rollout, and its health, are [`super::health`]'s.)

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;

use super::{Cluster, ClusterError};

/// A Deployment as a check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The container's image in the Deployment's spec (`None`: no such
    /// container).
    pub image: Option<String>,
}

impl Running {
    /// What Deployment `d` runs for `container`.
    pub fn of(d: &DynamicObject, container: &str) -> Running {
        let image = d.data["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == container))
            .and_then(|c| c["image"].as_str())
            .map(str::to_string);
        Running { image }
    }
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

    /// What Deployment `ns/deployment` runs for `container`, from one GET. `Ok(None)` when the
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
}
