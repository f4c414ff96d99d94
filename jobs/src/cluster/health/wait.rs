//! Waiting for a deploy's workloads to roll out, failing as soon as one of
//! them cannot.
//!
//! Polls (250 ms, backing off ×1.5 to 2 s) rather than watching: it works
//! with the client's read timeout and needs only `get` and `list`. Each
//! round reads every workload not yet rolled out; one whose controller has
//! seen its spec but is not done has its current pods listed, so a pod in a
//! state that will not fix itself fails the wait within one round (≤ 2 s)
//! of appearing, an unschedulable one after [`UNSCHEDULABLE_GRACE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use serde_json::Value;
use tokio::time::Instant;

use super::pods::{self, PodState};
use super::status::{self, Status};
use super::{whole, Workload, WorkloadKind, UNSCHEDULABLE_GRACE};
use crate::cluster::{Cluster, ClusterError};

/// [`Cluster::wait_healthy`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The workload cannot roll out: its controller says so (a progress
    /// deadline passed, pods cannot be created, a Job failed) or one of its
    /// new pods is in a state that will not fix itself.
    #[error("{workload}: {reason}")]
    Failed { workload: Workload, reason: String },
    /// Not rolled out within the timeout.
    #[error("{workload}: not rolled out after {}s: {state}", timeout.as_secs_f32())]
    Timeout {
        workload: Workload,
        timeout: Duration,
        state: String,
    },
    /// The workload does not exist.
    #[error("{workload}: not found")]
    NotFound { workload: Workload },
    /// Reading the workload or its pods failed.
    #[error("{workload}: {error}")]
    Cluster {
        workload: Workload,
        error: ClusterError,
    },
}

fn resource(kind: WorkloadKind) -> ApiResource {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch};
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<apps::Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<apps::StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<apps::DaemonSet>(&()),
        WorkloadKind::Job => ApiResource::erase::<batch::Job>(&()),
    }
}

/// What one round found about one workload.
enum Round {
    Done,
    /// Not done: what is left, and the first pod not fine with what it
    /// says (its Warning event is read only if the wait times out on it).
    Waiting(String, Option<(Value, String)>),
}

impl Cluster {
    /// A workload as the cluster has it now (`None`: it does not exist).
    pub(crate) async fn workload(
        &self,
        workload: &Workload,
    ) -> Result<Option<DynamicObject>, ClusterError> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &workload.namespace,
            &resource(workload.kind),
        );
        Ok(api.get_opt(&workload.name).await?)
    }

    /// Wait until every workload has rolled out (see [`super::status`]), for
    /// at most `timeout`; fail with the first one that cannot. `state` is
    /// kept up to date with what is left, for a caller that stops waiting
    /// early. A cluster that stops answering is retried until the timeout.
    pub async fn wait_healthy(
        &self,
        workloads: &[Workload],
        timeout: Duration,
        state: &Mutex<String>,
    ) -> Result<(), RolloutError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(250);
        let mut pending: Vec<&Workload> = workloads.iter().collect();
        // Pods seen unschedulable, and since when (this process's clock).
        let mut unschedulable: HashMap<String, Instant> = HashMap::new();
        loop {
            let mut left = Vec::new();
            let mut states = Vec::new();
            let mut first_pod = None;
            for w in pending {
                match self.round(w, &mut unschedulable).await? {
                    Round::Done => tracing::info!(workload = %w, "rolled out"),
                    Round::Waiting(s, pod) => {
                        let state = match &pod {
                            Some((_, note)) => format!("{s}; {note}"),
                            None => s,
                        };
                        if left.is_empty() {
                            first_pod = pod;
                        }
                        states.push(format!("{w}: {state}"));
                        left.push(w);
                    }
                }
            }
            pending = left;
            if pending.is_empty() {
                return Ok(());
            }
            let now_state = states.join("; ");
            if let Ok(mut s) = state.lock() {
                s.clone_from(&now_state);
            }
            let now = Instant::now();
            if now >= deadline {
                let first = pending[0];
                let mut state = states[0]
                    .strip_prefix(&format!("{first}: "))
                    .unwrap_or(&states[0])
                    .to_string();
                // What the pod it waited on last said, in its events.
                if let Some((pod, note)) = first_pod {
                    if let Ok(explained) = self.with_event(&pod, note.clone()).await {
                        state = state.replace(&note, &explained);
                    }
                }
                return Err(RolloutError::Timeout {
                    workload: first.clone(),
                    timeout,
                    state,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 3 / 2).min(Duration::from_secs(2));
        }
    }

    /// One look at one workload: done, still waiting (and on what), or an
    /// error that ends the wait.
    async fn round(
        &self,
        w: &Workload,
        unschedulable: &mut HashMap<String, Instant>,
    ) -> Result<Round, RolloutError> {
        let cluster_error = |error: ClusterError| RolloutError::Cluster {
            workload: w.clone(),
            error,
        };
        let object = match self.workload(w).await {
            Ok(Some(object)) => whole(&object),
            Ok(None) => {
                return Err(RolloutError::NotFound {
                    workload: w.clone(),
                })
            }
            // Unreachable for a moment: the timeout decides.
            Err(e) if e.is_unreachable() => return Ok(Round::Waiting(e.to_string(), None)),
            Err(e) => return Err(cluster_error(e)),
        };
        let waiting = match status::status_of(w.kind, &object) {
            Status::Done => return Ok(Round::Done),
            Status::Failed(why) => {
                let reason = match self.pod_detail(w, &object).await {
                    Ok(Some(detail)) => format!("{why}; {detail}"),
                    _ => why,
                };
                return Err(RolloutError::Failed {
                    workload: w.clone(),
                    reason,
                });
            }
            Status::Waiting(s) => s,
        };
        // Until the controller has seen the new spec, the pods it points at
        // are the old ones: nothing to judge yet.
        if !status::observed(&object) {
            return Ok(Round::Waiting(waiting, None));
        }
        let current = match self.current_pods(w.kind, &object).await {
            Ok(pods) => pods,
            Err(e) if e.is_unreachable() => return Ok(Round::Waiting(waiting, None)),
            Err(e) => return Err(cluster_error(e)),
        };
        let mut note = None;
        for pod in &current {
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            let text = match pods::pod_state(pod) {
                PodState::Fine => continue,
                PodState::Broken(text) => text,
                PodState::Unschedulable { text, .. } => {
                    let since = *unschedulable.entry(name).or_insert_with(Instant::now);
                    if since.elapsed() < UNSCHEDULABLE_GRACE {
                        note.get_or_insert((pod.clone(), text));
                        continue;
                    }
                    text
                }
                PodState::NotReady { text, .. } | PodState::Starting { text, .. } => {
                    note.get_or_insert((pod.clone(), text));
                    continue;
                }
            };
            let reason = match self.with_event(pod, text.clone()).await {
                Ok(with_event) => with_event,
                Err(_) => text,
            };
            return Err(RolloutError::Failed {
                workload: w.clone(),
                reason,
            });
        }
        Ok(Round::Waiting(waiting, note))
    }

    /// Wait for one Deployment (see [`Cluster::wait_healthy`]).
    pub async fn wait_rollout(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), RolloutError> {
        let w = Workload {
            kind: WorkloadKind::Deployment,
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        self.wait_healthy(
            std::slice::from_ref(&w),
            timeout,
            &Mutex::new(String::new()),
        )
        .await
    }
}
