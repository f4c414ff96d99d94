//! A workload's rollout read from its own status, as its controller wrote
//! it and as `kubectl rollout status` reads it: no other request.

use std::ops::Index;

use kube::api::DynamicObject;
use serde_json::Value;

use super::WorkloadKind;

/// What the status functions read a workload as: anything indexed by its
/// top-level fields (`metadata`, `spec`, `status`) — the object as JSON, or
/// a [`Body`] borrowed from the object as read.
pub(super) trait Fields: Index<&'static str, Output = Value> {}
impl<T: Index<&'static str, Output = Value> + ?Sized> Fields for T {}

/// A workload as read, seen through its body (`spec`, `status`) and its
/// generation, the one field of its metadata a status needs: reading a
/// rolled-out workload's status copies nothing of it.
pub(super) struct Body<'a> {
    data: &'a Value,
    metadata: Value,
}

impl<'a> Body<'a> {
    pub(super) fn of(object: &'a DynamicObject) -> Self {
        Body {
            data: &object.data,
            metadata: serde_json::json!({ "generation": object.metadata.generation }),
        }
    }
}

impl Index<&'static str> for Body<'_> {
    type Output = Value;
    fn index(&self, field: &'static str) -> &Value {
        match field {
            "metadata" => &self.metadata,
            _ => &self.data[field],
        }
    }
}

/// Where a workload's rollout stands, from the object alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    /// Rolled out: the controller saw the current spec and every replica
    /// runs it and is available (a Job: complete).
    Done,
    /// Still rolling out; what is left, in words.
    Waiting(String),
    /// The controller itself reports the rollout failed (a Deployment past
    /// its progress deadline, pods it cannot create; a Job that failed).
    Failed(String),
}

/// The status of `object`, a workload of kind `kind`.
pub(super) fn status_of(kind: WorkloadKind, object: &(impl Fields + ?Sized)) -> Status {
    match kind {
        WorkloadKind::Deployment => deployment(object),
        WorkloadKind::StatefulSet => stateful_set(object),
        WorkloadKind::DaemonSet => daemon_set(object),
        WorkloadKind::Job => job(object),
    }
}

/// True once the controller has seen the object's current generation: only
/// then do the status' counts speak of the current spec.
pub(super) fn observed(object: &(impl Fields + ?Sized)) -> bool {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    object["status"]["observedGeneration"].as_i64().unwrap_or(0) >= generation
}

fn not_observed(object: &(impl Fields + ?Sized)) -> Status {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = object["status"]["observedGeneration"].as_i64().unwrap_or(0);
    Status::Waiting(format!(
        "generation {generation} not observed yet (observed {observed})"
    ))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The condition of type `kind` with status `True`/`False`, if any.
pub(super) fn condition<'a>(object: &'a (impl Fields + ?Sized), kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn deployment(d: &(impl Fields + ?Sized)) -> Status {
    if !observed(d) {
        return not_observed(d);
    }
    if let Some(c) =
        condition(d, "Progressing").filter(|c| c["reason"] == "ProgressDeadlineExceeded")
    {
        return Status::Failed(format!(
            "ProgressDeadlineExceeded: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    if let Some(c) = condition(d, "ReplicaFailure").filter(|c| c["status"] == "True") {
        return Status::Failed(format!(
            "ReplicaFailure: {}: {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        ));
    }
    let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &d["status"];
    let updated = int(&status["updatedReplicas"]);
    let available = int(&status["availableReplicas"]);
    let total = status["replicas"].as_i64().unwrap_or(updated);
    if updated >= desired && available >= desired && total <= updated {
        Status::Done
    } else {
        Status::Waiting(format!(
            "{updated} of {desired} replicas updated, {available} available, {} old",
            (total - updated).max(0)
        ))
    }
}

fn stateful_set(s: &(impl Fields + ?Sized)) -> Status {
    if !observed(s) {
        return not_observed(s);
    }
    let strategy = &s["spec"]["updateStrategy"];
    if strategy["type"] == "OnDelete" {
        // Pods change only when someone deletes them: nothing to wait for.
        return Status::Done;
    }
    let desired = s["spec"]["replicas"].as_i64().unwrap_or(1);
    let status = &s["status"];
    let ready = int(&status["readyReplicas"]);
    let updated = int(&status["updatedReplicas"]);
    if ready < desired {
        return Status::Waiting(format!(
            "{ready} of {desired} pods ready, {updated} updated"
        ));
    }
    let partition = int(&strategy["rollingUpdate"]["partition"]);
    if partition > 0 {
        let want = (desired - partition).max(0);
        return if updated < want {
            Status::Waiting(format!(
                "{updated} of {want} pods updated (partition {partition})"
            ))
        } else {
            Status::Done
        };
    }
    if status["updateRevision"] != status["currentRevision"] {
        return Status::Waiting(format!(
            "{updated} of {desired} pods updated to revision {}",
            status["updateRevision"].as_str().unwrap_or("?")
        ));
    }
    Status::Done
}

fn daemon_set(d: &(impl Fields + ?Sized)) -> Status {
    if d["spec"]["updateStrategy"]["type"] == "OnDelete" {
        return Status::Done;
    }
    if !observed(d) {
        return not_observed(d);
    }
    let status = &d["status"];
    let desired = int(&status["desiredNumberScheduled"]);
    let updated = int(&status["updatedNumberScheduled"]);
    let available = int(&status["numberAvailable"]);
    if updated < desired {
        return Status::Waiting(format!(
            "{updated} of {desired} updated pods scheduled, {available} available"
        ));
    }
    if available < desired {
        return Status::Waiting(format!("{available} of {desired} pods available"));
    }
    Status::Done
}

fn job(j: &(impl Fields + ?Sized)) -> Status {
    if let Some(c) = condition(j, "Failed").filter(|c| c["status"] == "True") {
        return Status::Failed(format!(
            "{}: {}",
            c["reason"].as_str().unwrap_or("Failed"),
            c["message"].as_str().unwrap_or("")
        ));
    }
    if condition(j, "Complete").is_some_and(|c| c["status"] == "True") {
        return Status::Done;
    }
    if j["spec"]["suspend"] == true {
        // A suspended Job runs nothing until someone resumes it.
        return Status::Done;
    }
    let status = &j["status"];
    let completions = j["spec"]["completions"].as_i64().unwrap_or(1);
    Status::Waiting(format!(
        "{} active, {} of {completions} succeeded, {} failed",
        int(&status["active"]),
        int(&status["succeeded"]),
        int(&status["failed"])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_is_done_only_when_every_replica_is_updated_and_available() {
        let mut d = json!({
            "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
        });
        assert!(
            matches!(status_of(WorkloadKind::Deployment, &d), Status::Waiting(s) if s.contains("not observed"))
        );
        d["status"]["observedGeneration"] = json!(2);
        d["status"]["updatedReplicas"] = json!(1);
        d["status"]["replicas"] = json!(3);
        assert_eq!(
            status_of(WorkloadKind::Deployment, &d),
            Status::Waiting("1 of 2 replicas updated, 2 available, 2 old".into())
        );
        d["status"]["updatedReplicas"] = json!(2);
        d["status"]["replicas"] = json!(2);
        assert_eq!(status_of(WorkloadKind::Deployment, &d), Status::Done);
        d["status"]["conditions"] = json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}]);
        assert_eq!(
            status_of(WorkloadKind::Deployment, &d),
            Status::Failed("ReplicaFailure: FailedCreate: quota".into())
        );
    }

    #[test]
    fn stateful_set_waits_for_its_update_revision_and_honours_a_partition() {
        let mut s = json!({
            "metadata": {"generation": 1},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 1,
                       "currentRevision": "db-1", "updateRevision": "db-2"}
        });
        assert!(matches!(
            status_of(WorkloadKind::StatefulSet, &s),
            Status::Waiting(_)
        ));
        s["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        assert_eq!(status_of(WorkloadKind::StatefulSet, &s), Status::Done);
        s["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert_eq!(status_of(WorkloadKind::StatefulSet, &s), Status::Done);
    }

    #[test]
    fn daemon_set_and_job() {
        let mut d = json!({
            "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 2,
                       "updatedNumberScheduled": 2, "numberAvailable": 1}
        });
        assert!(matches!(
            status_of(WorkloadKind::DaemonSet, &d),
            Status::Waiting(_)
        ));
        d["status"]["numberAvailable"] = json!(2);
        assert_eq!(status_of(WorkloadKind::DaemonSet, &d), Status::Done);
        let mut j = json!({"spec": {}, "status": {"active": 1}});
        assert!(matches!(
            status_of(WorkloadKind::Job, &j),
            Status::Waiting(_)
        ));
        j["status"]["conditions"] = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]);
        assert_eq!(
            status_of(WorkloadKind::Job, &j),
            Status::Failed(
                "BackoffLimitExceeded: Job has reached the specified backoff limit".into()
            )
        );
    }
}
