//! Workload health: is what a build applied running, and if not, why.
//!
//! Every Deployment, StatefulSet, DaemonSet and Job a build applies is a
//! [`Workload`]. Its health is read first from the object itself — the
//! status its controller writes (observed generation, replica counts,
//! revisions, conditions), as `kubectl rollout status` reads it
//! ([`status`]) — and only when that says the workload is not done, from
//! its current pods ([`pods`]: the new ReplicaSet's for a Deployment, the
//! update revision's for a StatefulSet…) and the newest Warning event of
//! the pod at fault ([`events`]). A pod state that will not fix itself (an
//! image that cannot be pulled or named, a container that cannot be made,
//! a crash loop, a pod no node takes for [`UNSCHEDULABLE_GRACE`]) is a
//! failure at once; anything else is progress.
//!
//! Two uses: [`Cluster::wait_healthy`] ([`wait`]) after a deploy, failing
//! fast with the reason; and [`Cluster::assess`] in a steady check, on the
//! object the check has already read, so a healthy workload costs no
//! request at all.

mod events;
mod pods;
mod status;
mod wait;

pub use wait::RolloutError;

use std::time::Duration;

use kube::api::DynamicObject;
use serde_json::Value;
use time::OffsetDateTime;

use self::pods::PodState;
use self::status::Status;
use super::{Cluster, ClusterError};

/// How long a pod may stay unschedulable before the rollout fails (a
/// cluster autoscaler may be adding a node; a real shortage lasts).
pub const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(5);
/// How long a running pod may stay unready before a steady check calls
/// its workload degraded (probes take a while to pass after a restart).
pub const NOT_READY_GRACE: Duration = Duration::from_secs(30);

/// The kinds chump waits for and assesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
}

impl WorkloadKind {
    /// The workload kind of `apiVersion` + `kind`, if it is one.
    pub fn of(api_version: &str, kind: &str) -> Option<WorkloadKind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        match (group, kind) {
            ("apps", "Deployment") => Some(WorkloadKind::Deployment),
            ("apps", "StatefulSet") => Some(WorkloadKind::StatefulSet),
            ("apps", "DaemonSet") => Some(WorkloadKind::DaemonSet),
            ("batch", "Job") => Some(WorkloadKind::Job),
            _ => None,
        }
    }

    fn word(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
            WorkloadKind::Job => "job",
        }
    }
}

/// One workload of a build.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl Workload {
    /// The workload an object of the build is, if it is one.
    pub fn of(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Self> {
        Some(Workload {
            kind: WorkloadKind::of(api_version, kind)?,
            namespace: namespace?.to_string(),
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for Workload {
    /// `deployment prod/web`, as kubectl names it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.word(), self.namespace, self.name)
    }
}

/// A workload's health, as a steady check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Rolled out and available.
    Healthy,
    /// Still rolling out, with nothing wrong found yet: what is left.
    Progressing(String),
    /// Not healthy, and why: `deployment prod/web: pod web-7d9f-x2k:
    /// container web: ImagePullBackOff: Back-off pulling image "nginx:bad"`.
    Degraded(String),
}

/// An object as one JSON value (kind, metadata, spec, status).
fn whole(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

impl Cluster {
    /// The health of `workload` from `object`, the workload as a check has
    /// just read it. No request while its status says it is rolled out;
    /// otherwise its current pods are listed (and the newest Warning event
    /// of a pod in trouble read) to tell a rollout in progress from a
    /// broken one. A pod still starting after `patience` (the rollout
    /// timeout: a deploy would have failed on it) is broken too.
    pub async fn assess(
        &self,
        workload: &Workload,
        object: &DynamicObject,
        patience: Duration,
    ) -> Result<Verdict, ClusterError> {
        // Most workloads are rolled out: their status says so, read in place.
        let waiting = match status::status_of(workload.kind, &status::Body::of(object)) {
            Status::Done => return Ok(Verdict::Healthy),
            other => other,
        };
        let object = whole(object);
        let waiting = match waiting {
            Status::Done => return Ok(Verdict::Healthy),
            Status::Failed(why) => {
                let detail = self.pod_detail(workload, &object).await?;
                return Ok(Verdict::Degraded(join(workload, &why, detail)));
            }
            Status::Waiting(state) => state,
        };
        if !status::observed(&object) {
            return Ok(Verdict::Progressing(format!("{workload}: {waiting}")));
        }
        let now = OffsetDateTime::now_utc();
        let longer_than = |since: Option<OffsetDateTime>, grace: Duration| {
            since.is_some_and(|t| now - t >= grace)
        };
        let mut note = None;
        for pod in self.current_pods(workload.kind, &object).await? {
            let text = match pods::pod_state(&pod) {
                PodState::Fine => continue,
                PodState::Broken(text) => text,
                PodState::Unschedulable { text, since }
                    if longer_than(since, UNSCHEDULABLE_GRACE) =>
                {
                    text
                }
                PodState::NotReady { text, since } if longer_than(since, NOT_READY_GRACE) => text,
                PodState::Starting { text, since } if longer_than(since, patience) => {
                    format!("{text} for more than {}s", patience.as_secs())
                }
                PodState::Unschedulable { text, .. }
                | PodState::NotReady { text, .. }
                | PodState::Starting { text, .. } => {
                    note.get_or_insert(text);
                    continue;
                }
            };
            let text = self.with_event(&pod, text).await?;
            return Ok(Verdict::Degraded(format!("{workload}: {waiting}; {text}")));
        }
        Ok(Verdict::Progressing(join(workload, &waiting, note)))
    }

    /// What the current pods say about a workload whose controller reports
    /// a failure: the first pod not fine, with its newest Warning event.
    async fn pod_detail(
        &self,
        workload: &Workload,
        object: &Value,
    ) -> Result<Option<String>, ClusterError> {
        for pod in self.current_pods(workload.kind, object).await? {
            let text = match pods::pod_state(&pod) {
                PodState::Fine => continue,
                PodState::Broken(text)
                | PodState::Starting { text, .. }
                | PodState::Unschedulable { text, .. }
                | PodState::NotReady { text, .. } => text,
            };
            return Ok(Some(self.with_event(&pod, text).await?));
        }
        Ok(None)
    }

    /// `text` about `pod`, with the pod's newest Warning event when it says
    /// more.
    async fn with_event(&self, pod: &Value, text: String) -> Result<String, ClusterError> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        Ok(match self.newest_warning(ns, "Pod", name).await? {
            Some(w) => w.added_to(&text),
            None => text,
        })
    }
}

/// `deployment prod/web: <what>[; <detail>]`.
fn join(workload: &Workload, what: &str, detail: Option<String>) -> String {
    match detail {
        Some(d) => format!("{workload}: {what}; {d}"),
        None => format!("{workload}: {what}"),
    }
}
