//! A workload's current pods, and what is wrong with one.
//!
//! "Current" means the pods of the revision being rolled out: the new
//! ReplicaSet's for a Deployment (the one it owns whose
//! `deployment.kubernetes.io/revision` is the Deployment's), the update
//! revision's for a StatefulSet, the current template generation's for a
//! DaemonSet, every pod of a Job. Old pods' troubles are not the rollout's.

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::WorkloadKind;
use crate::cluster::{Cluster, ClusterError};

/// Waiting reasons of a container that will not go away by waiting: the
/// image cannot be pulled or named, the container cannot be made or
/// started, or it keeps crashing.
const BROKEN_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// Restarts after which a container counts as crashing even while it runs.
pub(super) const RESTART_LIMIT: i64 = 3;

/// What one pod says about the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PodState {
    /// Running and ready (or done, for a Job's pod).
    Fine,
    /// On its way (being scheduled, pulling, starting): what it waits
    /// for; `since` the pod was made.
    Starting {
        text: String,
        since: Option<OffsetDateTime>,
    },
    /// No node can take it; `since` when the scheduler said so.
    Unschedulable {
        text: String,
        since: Option<OffsetDateTime>,
    },
    /// Running but not ready (a failing readiness probe), since `since`.
    NotReady {
        text: String,
        since: Option<OffsetDateTime>,
    },
    /// A state that will not fix itself.
    Broken(String),
}

/// What `pod` says, in words that name it and its container:
/// `pod web-7d9f-x2k: container web: ImagePullBackOff: Back-off pulling image "nginx:bad"`.
pub(super) fn pod_state(pod: &Value) -> PodState {
    let name = pod["metadata"]["name"].as_str().unwrap_or("?");
    let status = &pod["status"];
    let created = timestamp(&pod["metadata"]["creationTimestamp"]);
    let starting = |text: String| PodState::Starting {
        text,
        since: created,
    };
    for (list, what) in [
        ("initContainerStatuses", "init container"),
        ("containerStatuses", "container"),
    ] {
        for c in status[list].as_array().into_iter().flatten() {
            let container = c["name"].as_str().unwrap_or("?");
            let waiting = &c["state"]["waiting"];
            let reason = waiting["reason"].as_str().unwrap_or("");
            let last = last_termination(c);
            if BROKEN_REASONS.contains(&reason) {
                let mut text = format!("pod {name}: {what} {container}: {reason}");
                if let Some(m) = waiting["message"].as_str().filter(|m| !m.is_empty()) {
                    text.push_str(": ");
                    text.push_str(m);
                }
                if let (Some(last), "CrashLoopBackOff") = (&last, reason) {
                    text.push_str("; last terminated: ");
                    text.push_str(last);
                }
                return PodState::Broken(text);
            }
            let restarts = c["restartCount"].as_i64().unwrap_or(0);
            // Between two crashes of a crash loop the container runs, not
            // ready, for a moment: still the crash loop.
            let crashed_and_unready = restarts > 0
                && c["ready"] != true
                && c["lastState"]["terminated"]["exitCode"]
                    .as_i64()
                    .is_some_and(|code| code != 0);
            if (restarts >= RESTART_LIMIT || crashed_and_unready) && what == "container" {
                let mut text = format!(
                    "pod {name}: container {container}: restarted {restarts} {}",
                    if restarts == 1 { "time" } else { "times" }
                );
                if let Some(last) = &last {
                    text.push_str("; last terminated: ");
                    text.push_str(last);
                }
                return PodState::Broken(text);
            }
        }
    }
    if let Some(c) = pod_condition(pod, "PodScheduled")
        .filter(|c| c["status"] == "False" && c["reason"] == "Unschedulable")
    {
        return PodState::Unschedulable {
            text: format!(
                "pod {name}: Unschedulable: {}",
                c["message"].as_str().unwrap_or("")
            ),
            since: timestamp(&c["lastTransitionTime"]),
        };
    }
    match status["phase"].as_str() {
        Some("Succeeded") => return PodState::Fine,
        Some("Failed") => {
            // Evicted, or a Job's try that failed: its controller makes
            // another (a Job fails by its own condition).
            let reason = status["reason"].as_str().unwrap_or("Failed");
            let message = status["message"].as_str().unwrap_or("");
            return starting(format!("pod {name}: {reason}: {message}"));
        }
        _ => {}
    }
    // Waiting for something that may still come (ContainerCreating,
    // PodInitializing): say what.
    for c in status["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(reason) = c["state"]["waiting"]["reason"].as_str() {
            return starting(format!(
                "pod {name}: container {}: {reason}",
                c["name"].as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(c) = pod_condition(pod, "Ready").filter(|c| c["status"] == "False") {
        let running = status["containerStatuses"].as_array().is_some_and(|cs| {
            !cs.is_empty() && cs.iter().all(|c| c["state"]["running"].is_object())
        });
        if running {
            let not_ready: Vec<&str> = status["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["ready"] != true)
                .filter_map(|c| c["name"].as_str())
                .collect();
            return PodState::NotReady {
                text: format!("pod {name}: container {} not ready", not_ready.join(", ")),
                since: timestamp(&c["lastTransitionTime"]),
            };
        }
        return starting(format!("pod {name}: not ready"));
    }
    if pod_condition(pod, "Ready").is_none() {
        return starting(format!(
            "pod {name}: {}",
            status["phase"].as_str().unwrap_or("Pending")
        ));
    }
    PodState::Fine
}

/// "Error, exit code 1" from a container's last termination.
fn last_termination(container: &Value) -> Option<String> {
    let t = container["lastState"]["terminated"].as_object()?;
    let reason = t
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("terminated");
    Some(match t.get("exitCode").and_then(Value::as_i64) {
        Some(code) => format!("{reason}, exit code {code}"),
        None => reason.to_string(),
    })
}

fn pod_condition<'a>(pod: &'a Value, kind: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

pub(super) fn timestamp(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()
}

/// A label selector (`matchLabels`, `matchExpressions`) in the query
/// syntax; `None` when it selects nothing by label (no pods to look at).
pub(super) fn selector_query(selector: &Value) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        parts.push(format!("{k}={}", v.as_str()?));
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str()?;
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str()? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    (!parts.is_empty()).then(|| parts.join(","))
}

/// True when `object`'s controller owner has uid `uid`.
fn owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["uid"] == uid && o["controller"] == true)
}

const REVISION: &str = "deployment.kubernetes.io/revision";

impl Cluster {
    /// The pods of the revision `workload` (a whole object) is rolling out.
    pub(super) async fn current_pods(
        &self,
        kind: WorkloadKind,
        workload: &Value,
    ) -> Result<Vec<Value>, ClusterError> {
        let ns = workload["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let uid = workload["metadata"]["uid"].as_str().unwrap_or("");
        let Some(selector) = selector_query(&workload["spec"]["selector"]) else {
            return Ok(Vec::new());
        };
        let pods = || {
            Api::<DynamicObject>::namespaced_with(
                self.client.clone(),
                ns,
                &ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&()),
            )
        };
        let list = |api: Api<DynamicObject>, selector: String| async move {
            let list = api.list(&ListParams::default().labels(&selector)).await?;
            let items: Vec<Value> = list
                .items
                .into_iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            Ok::<_, ClusterError>(items)
        };
        match kind {
            WorkloadKind::Deployment => {
                // The new ReplicaSet: owned by the Deployment, of its revision.
                let Some(revision) = workload["metadata"]["annotations"][REVISION].as_str() else {
                    return Ok(Vec::new());
                };
                let sets = Api::<DynamicObject>::namespaced_with(
                    self.client.clone(),
                    ns,
                    &ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()),
                );
                let sets = list(sets, selector.clone()).await?;
                let Some(hash) = sets
                    .iter()
                    .find(|rs| {
                        owned_by(rs, uid) && rs["metadata"]["annotations"][REVISION] == revision
                    })
                    .and_then(|rs| rs["metadata"]["labels"]["pod-template-hash"].as_str())
                else {
                    return Ok(Vec::new());
                };
                let pods = list(pods(), format!("{selector},pod-template-hash={hash}")).await?;
                Ok(pods.into_iter().filter(|p| !terminating(p)).collect())
            }
            WorkloadKind::StatefulSet => {
                let selector = match workload["status"]["updateRevision"].as_str() {
                    Some(rev) => format!("{selector},controller-revision-hash={rev}"),
                    None => selector,
                };
                let pods = list(pods(), selector).await?;
                Ok(pods
                    .into_iter()
                    .filter(|p| owned_by(p, uid) && !terminating(p))
                    .collect())
            }
            WorkloadKind::DaemonSet => {
                let pods: Vec<Value> = list(pods(), selector)
                    .await?
                    .into_iter()
                    .filter(|p| owned_by(p, uid) && !terminating(p))
                    .collect();
                // The current template's pods, where the controller labels
                // them with its generation.
                let generation = workload["metadata"]["generation"]
                    .as_i64()
                    .unwrap_or(0)
                    .to_string();
                let current: Vec<Value> = pods
                    .iter()
                    .filter(|p| {
                        p["metadata"]["labels"]["pod-template-generation"] == generation.as_str()
                    })
                    .cloned()
                    .collect();
                Ok(if current.is_empty() { pods } else { current })
            }
            WorkloadKind::Job => Ok(list(pods(), selector)
                .await?
                .into_iter()
                .filter(|p| owned_by(p, uid))
                .collect()),
        }
    }
}

/// A pod being deleted (an old one on its way out) says nothing.
fn terminating(pod: &Value) -> bool {
    !pod["metadata"]["deletionTimestamp"].is_null()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: Value) -> Value {
        json!({"metadata": {"name": "web-7d9f-x2k"}, "status": status})
    }

    #[test]
    fn image_pull_back_off_names_pod_container_reason_and_message() {
        let p = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": "web", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nginx:bad\""}}
        }]}));
        assert_eq!(
            pod_state(&p),
            PodState::Broken(
                "pod web-7d9f-x2k: container web: ImagePullBackOff: Back-off pulling image \"nginx:bad\"".into()
            )
        );
    }

    #[test]
    fn crash_loops_and_restarts_are_broken_with_the_last_exit() {
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "web", "ready": false, "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
            "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}
        }]}));
        assert_eq!(
            pod_state(&p),
            PodState::Broken("pod web-7d9f-x2k: container web: CrashLoopBackOff: back-off 10s; last terminated: Error, exit code 1".into())
        );
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "web", "ready": true, "restartCount": 3,
            "state": {"running": {}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
        }]}));
        assert!(
            matches!(pod_state(&p), PodState::Broken(t) if t.contains("restarted 3 times; last terminated: OOMKilled, exit code 137"))
        );
        // Running again after a crash, not ready yet: the crash loop goes on.
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "web", "ready": false, "restartCount": 1,
            "state": {"running": {}},
            "lastState": {"terminated": {"reason": "Error", "exitCode": 2}}
        }]}));
        assert_eq!(
            pod_state(&p),
            PodState::Broken("pod web-7d9f-x2k: container web: restarted 1 time; last terminated: Error, exit code 2".into())
        );
    }

    #[test]
    fn unschedulable_not_ready_starting_and_fine() {
        let p = pod(json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available", "lastTransitionTime": "2026-01-01T00:00:00Z"
        }]}));
        assert!(matches!(
            pod_state(&p),
            PodState::Unschedulable { since: Some(_), .. }
        ));
        let p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "web", "ready": false, "state": {"running": {}}}]}),
        );
        assert!(
            matches!(pod_state(&p), PodState::NotReady { text, .. } if text == "pod web-7d9f-x2k: container web not ready")
        );
        let p = pod(
            json!({"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "web", "ready": false, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert!(
            matches!(pod_state(&p), PodState::Starting { text, .. } if text.ends_with("ContainerCreating"))
        );
        let p = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "web", "ready": true, "state": {"running": {}}}]}),
        );
        assert_eq!(pod_state(&p), PodState::Fine);
    }

    #[test]
    fn selectors_in_query_syntax() {
        let s = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(selector_query(&s).unwrap(), "app=web,tier in (a,b),!canary");
        assert_eq!(selector_query(&json!({})), None);
    }
}
