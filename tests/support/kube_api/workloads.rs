//! The workload controllers of kube-controller-manager: Deployments,
//! ReplicaSets, StatefulSets, DaemonSets and Jobs, and the loop that runs
//! them (with the scheduler and kubelets of [`super::kubelet`]).
//!
//! Like the real controllers they react to changes: every stored change of
//! a workload or a pod marks the object (and the controller that owns it,
//! by its controller `ownerReference`) for a sync; the syncs run on the
//! controllers' timer, a little after the change, and again while they
//! change something, so a cascade (Deployment → ReplicaSet → Pod → kubelet
//! → ReplicaSet status → Deployment status) settles within one run. Work
//! due later (a container that starts in 100 ms, a progress deadline, a
//! retry) is kept in a queue of instants; nothing is looked at unless it
//! changed or came due, so an idle cluster of thousands of Deployments
//! costs nothing.
//!
//! - **Deployment** (`pkg/controller/deployment`): one ReplicaSet per pod
//!   template, named `<deployment>-<hash>` where the hash
//!   (`pod-template-hash`, a stable FNV-32a of the template encoded like
//!   `rand.SafeEncodeString`) labels the ReplicaSet, its selector and its
//!   template; `deployment.kubernetes.io/revision` on the ReplicaSet and the
//!   Deployment (one more than the highest old revision per new template),
//!   `desired-replicas` and `max-replicas`; a controller owner reference with
//!   `blockOwnerDeletion`. `RollingUpdate` as `rolloutRolling` does it
//!   (`maxSurge`/`maxUnavailable`, 25 % by default, the new ReplicaSet scaled
//!   up within the surge, old ones down as availability allows, unhealthy
//!   old replicas first), `Recreate` (old ones to zero, the new one once
//!   their pods are gone), `paused`, `revisionHistoryLimit`. Status as
//!   `calculateStatus` and `syncRolloutStatus` write it: counts from the
//!   ReplicaSets, `Available`, `Progressing` (`NewReplicaSetCreated`,
//!   `FoundNewReplicaSet`, `ReplicaSetUpdated`, `NewReplicaSetAvailable`,
//!   and `ProgressDeadlineExceeded` once `progressDeadlineSeconds`, 600 by
//!   default, pass without progress), `ReplicaFailure` copied from a
//!   ReplicaSet; `ScalingReplicaSet` events.
//! - **ReplicaSet**: pods `<rs>-<5 characters>` from the template (its
//!   labels, a controller reference), surplus ones deleted (unscheduled,
//!   pending, not ready and newest first); status `replicas`,
//!   `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`
//!   (`minReadySeconds` honoured), `observedGeneration`; a refused pod
//!   creation (quota, terminating namespace) is a `ReplicaFailure`
//!   condition (`FailedCreate`) and a `FailedCreate` Warning
//!   (`Error creating: pods "<rs>-" is forbidden: …`), retried every 2 s.
//! - **StatefulSet**: ControllerRevisions `<sts>-<hash>`; pods `<sts>-<i>`
//!   (labels `controller-revision-hash`, `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index`), created in order each once the
//!   previous is Running and Ready (`OrderedReady`) or at once
//!   (`Parallel`), removed from the highest ordinal; a template change is a
//!   new `updateRevision`, rolled out from the highest ordinal down to
//!   `partition`, one pod at a time once all are ready (`OnDelete`: only
//!   pods deleted by hand are replaced); status with `currentRevision`
//!   following `updateRevision` once every pod is updated and ready.
//! - **DaemonSet**: a pod per Ready node whose labels match the
//!   `nodeSelector`, pinned by node affinity (labels
//!   `controller-revision-hash`, `pod-template-generation`); a template
//!   change replaces them `maxUnavailable` (1) at a time, unavailable old
//!   pods first; status `desiredNumberScheduled`, `currentNumberScheduled`,
//!   `updatedNumberScheduled`, `numberReady`, `numberAvailable`,
//!   `numberUnavailable`, `numberMisscheduled`, `observedGeneration`.
//! - **Job**: pods (labels `batch.kubernetes.io/job-name`, `job-name`,
//!   `batch.kubernetes.io/controller-uid`, `controller-uid`) up to
//!   `parallelism` until `completions` succeed; status `active`, `ready`,
//!   `succeeded`, `failed`, `terminating`, `startTime`, `completionTime`,
//!   `uncountedTerminatedPods`; `SuccessCriteriaMet` then `Complete`
//!   (`CompletionsReached`), or `FailureTarget` then `Failed`
//!   (`BackoffLimitExceeded`) once failures pass `backoffLimit` (6).
//!   Failed pods are replaced at once (no back-off delay).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::events::{NewEvent, Style};
use super::fields::{self, Part};
use super::gc::{self, DeleteOptions};
use super::kubelet::{self, PodBehaviour};
use super::{key, split_group_version, timestamp, Inner, Key, KindSpec};

/// `rand.SafeEncodeString`'s alphabet (no vowels, no look-alikes).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// How often a refused pod creation is retried.
const RETRY: Duration = Duration::from_secs(2);
/// How many rounds one run of the controllers goes before it yields.
pub(super) const ROUNDS: usize = 24;
/// How long one run of the controllers may hold the lock…
pub(super) const SLICE: Duration = Duration::from_millis(20);
/// …and how long it then lets requests in before it goes on.
pub(super) const PAUSE: Duration = Duration::from_millis(2);

/// The workload controllers', scheduler's and kubelets' state.
#[derive(Default)]
pub(super) struct State {
    /// Objects to sync in the next round.
    pub dirty: BTreeSet<Key>,
    /// Objects to sync at an instant.
    due_set: BTreeSet<(Instant, Key)>,
    due_of: HashMap<Key, Instant>,
    /// The instant a wake-up timer is armed for.
    pub wake_at: Option<Instant>,
    /// Image → behaviour.
    pub behaviours: HashMap<String, PodBehaviour>,
    /// Namespace → why pod creation is refused.
    pub refused: HashMap<String, String>,
    /// The kubelets' memory of their pods.
    pub pods: kubelet::Pods,
    /// Unschedulable pods → when their `FailedScheduling` is due again.
    pub unschedulable: HashMap<Key, Instant>,
    /// Round robin over the nodes.
    pub next_node: usize,
    /// Pod IPs handed out.
    pub ip_seq: u64,
}

impl State {
    /// Sync `k` at `at` (the earliest of the instants asked for).
    pub fn due(&mut self, k: &Key, at: Instant) {
        if let Some(old) = self.due_of.get(k) {
            if *old <= at {
                return;
            }
            self.due_set.remove(&(*old, k.clone()));
        }
        self.due_set.insert((at, k.clone()));
        self.due_of.insert(k.clone(), at);
    }

    fn take_due(&mut self, now: Instant) {
        while let Some((t, k)) = self.due_set.first().cloned() {
            if t > now {
                break;
            }
            self.due_set.pop_first();
            self.due_of.remove(&k);
            self.dirty.insert(k);
        }
    }

    /// The next instant something is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due_set.first().map(|(t, _)| *t)
    }

    /// Whether nothing is queued before `horizon`.
    pub fn idle_until(&self, horizon: Instant) -> bool {
        self.dirty.is_empty() && self.next_due().is_none_or(|t| t > horizon)
    }
}

/// The owner reference with `controller: true`.
pub(super) fn controller_ref(o: &Value) -> Option<&Value> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

fn uid_of(o: &Value) -> &str {
    o["metadata"]["uid"].as_str().unwrap_or("")
}

fn name_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn int(v: &Value, default: i64) -> i64 {
    v.as_i64().unwrap_or(default)
}

/// A controller owner reference to `owner`.
fn owner_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

fn fnv32a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `rand.SafeEncodeString(fmt.Sprint(hash))`.
fn safe_encode(h: u32) -> String {
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// `controller.ComputeHash`: a stable hash of a pod template (without its
/// `pod-template-hash` label) and the collision count.
pub(super) fn template_hash(template: &Value, collisions: i64) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
    }
    let mut s = fields::canonical(&t);
    if collisions > 0 {
        s.push_str(&collisions.to_string());
    }
    safe_encode(fnv32a(&s))
}

/// `EqualIgnoreHash`: the templates without their `pod-template-hash`.
fn same_template(a: &Value, b: &Value) -> bool {
    let strip = |t: &Value| {
        let mut t = t.clone();
        if let Some(l) = t["metadata"]["labels"].as_object_mut() {
            l.remove("pod-template-hash");
        }
        t
    };
    strip(a) == strip(b)
}

fn random_suffix() -> String {
    (0..5)
        .map(|_| ALPHANUMS[fastrand::usize(..ALPHANUMS.len())] as char)
        .collect()
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// An intstr (`25%` or `1`) of `total`, rounded up or down.
fn int_or_percent(v: &Value, default: &str, total: i64, up: bool) -> i64 {
    let s = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0),
        Value::String(s) => s.clone(),
        _ => default.to_string(),
    };
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) if up => (p * total + 99) / 100,
        Some(p) => p * total / 100,
        None => s.parse().unwrap_or(0),
    }
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

fn condition_true(o: &Value, kind: &str) -> bool {
    o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn pod_ready(pod: &Value) -> bool {
    condition_true(pod, "Ready")
}

fn parse_time(s: &Value) -> Option<OffsetDateTime> {
    s.as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

/// Whether `pod` has been ready for `min_ready` seconds; if not yet, when
/// it will have been.
fn pod_available(pod: &Value, min_ready: i64) -> (bool, Option<Instant>) {
    if !pod_ready(pod) {
        return (false, None);
    }
    if min_ready <= 0 {
        return (true, None);
    }
    let since = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| parse_time(&c["lastTransitionTime"]));
    let Some(since) = since else {
        return (true, None);
    };
    let left = (since + time::Duration::seconds(min_ready)) - OffsetDateTime::now_utc();
    if left.is_negative() {
        (true, None)
    } else {
        let left = Duration::from_millis(left.whole_milliseconds().max(0) as u64 + 50);
        (false, Some(Instant::now() + left))
    }
}

/// Put `fields` into `obj`'s status, dropping Go's omitted zero values.
fn status_of(pairs: &[(&str, i64)], keep_zero: &[&str]) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in pairs {
        if *v != 0 || keep_zero.contains(k) {
            m.insert((*k).to_string(), json!(v));
        }
    }
    m
}

/// `SetDeploymentCondition` / `SetCondition`: nothing when status and
/// reason are the same; the transition time kept when only the status is.
fn set_condition(conds: &mut Vec<Value>, mut new: Value) {
    if let Some(cur) = conds.iter().find(|c| c["type"] == new["type"]) {
        if cur["status"] == new["status"] && cur["reason"] == new["reason"] {
            return;
        }
        if cur["status"] == new["status"] {
            new["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    conds.retain(|c| c["type"] != new["type"]);
    conds.push(new);
}

fn deployment_condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = timestamp();
    json!({
        "type": kind, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
        "reason": reason, "message": message,
    })
}

impl Inner {
    // -----------------------------------------------------------------------
    // Bookkeeping

    /// A stored change: mark what has to look at it.
    pub(super) fn observe_workload(&mut self, kk: &Key, kind: &str, obj: &Value) {
        let deleted = kind == "DELETED";
        match (kk.0.as_str(), kk.2.as_str()) {
            ("", "pods") => {
                if deleted {
                    self.wl.pods.remove(kk);
                    self.wl.unschedulable.remove(kk);
                } else {
                    self.wl.dirty.insert(kk.clone());
                }
                self.mark_controller_of(kk, obj);
            }
            ("apps", "replicasets") => {
                if !deleted {
                    self.wl.dirty.insert(kk.clone());
                }
                self.mark_controller_of(kk, obj);
            }
            ("apps", "deployments" | "statefulsets" | "daemonsets") | ("batch", "jobs")
                if !deleted =>
            {
                self.wl.dirty.insert(kk.clone());
            }
            ("", "nodes") => {
                let ds: Vec<Key> = self.keys_of("apps", "v1", "daemonsets", None);
                self.wl.dirty.extend(ds);
            }
            _ => {}
        }
    }

    fn mark_controller_of(&mut self, kk: &Key, obj: &Value) {
        let Some(r) = controller_ref(obj) else {
            return;
        };
        let (g, v) = split_group_version(r["apiVersion"].as_str().unwrap_or(""));
        let Some(k) = self
            .kinds
            .iter()
            .find(|k| k.group == g && k.version == v && Some(k.kind) == r["kind"].as_str())
        else {
            return;
        };
        if matches!(
            (k.group, k.plural),
            (
                "apps",
                "deployments" | "replicasets" | "statefulsets" | "daemonsets"
            ) | ("batch", "jobs")
        ) {
            let owner = key(k, Some(&kk.3), r["name"].as_str().unwrap_or(""));
            self.wl.dirty.insert(owner);
        }
    }

    /// The keys of one kind, in one namespace or all.
    pub(super) fn keys_of(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        ns: Option<&str>,
    ) -> Vec<Key> {
        let start = (
            group.to_string(),
            version.to_string(),
            plural.to_string(),
            ns.unwrap_or("").to_string(),
            String::new(),
        );
        self.objects
            .range(start..)
            .take_while(|(k, _)| {
                k.0 == group && k.1 == version && k.2 == plural && ns.is_none_or(|ns| k.3 == ns)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Mark every workload and pod (a behaviour or rollout mode changed).
    pub(super) fn mark_all_workloads(&mut self, ns: Option<&str>) {
        for (g, p) in [
            ("", "pods"),
            ("apps", "replicasets"),
            ("apps", "deployments"),
            ("apps", "statefulsets"),
            ("apps", "daemonsets"),
            ("batch", "jobs"),
        ] {
            let keys = self.keys_of(g, "v1", p, ns);
            self.wl.dirty.extend(keys);
        }
        self.kick();
    }

    /// One round of the workload controllers, scheduler and kubelets over
    /// what changed or came due; whether anything did something.
    pub(super) fn workload_controllers(&mut self, until: Instant) -> bool {
        let before = self.rv;
        self.wl.take_due(Instant::now());
        let mut keys = std::mem::take(&mut self.wl.dirty).into_iter();
        while let Some(kk) = keys.next() {
            if Instant::now() >= until {
                // Out of time: the rest waits for the next slice.
                self.wl.dirty.insert(kk);
                self.wl.dirty.extend(keys);
                break;
            }
            let kk = &kk;
            match (kk.0.as_str(), kk.2.as_str()) {
                ("", "pods") => self.sync_pod(kk),
                ("apps", "replicasets") => self.sync_replicaset(kk),
                ("apps", "deployments") => self.sync_deployment(kk),
                ("apps", "statefulsets") => self.sync_statefulset(kk),
                ("apps", "daemonsets") => self.sync_daemonset(kk),
                ("batch", "jobs") => self.sync_job(kk),
                _ => {}
            }
        }
        self.rv != before
    }

    /// The objects of kind `plural` that `owner` controls (by uid), not
    /// being deleted, by name.
    fn controlled(&self, owner: &Value, plural: &str) -> Vec<(Key, Value)> {
        let uid = uid_of(owner);
        self.dependents_of(uid)
            .into_iter()
            .filter(|k| k.2 == plural)
            .filter_map(|k| self.objects.get(&k).map(|o| (k, o.clone())))
            .filter(|(_, o)| {
                !gc::is_deleting(o) && controller_ref(o).is_some_and(|r| r["uid"] == uid)
            })
            .collect()
    }

    /// Why creating pods in `ns` is refused, as the API server says it
    /// (`name` is the pod's name, or its generateName prefix).
    pub(super) fn pod_refusal(&self, ns: &str, name: &str) -> Option<String> {
        let nk = (
            String::new(),
            "v1".to_string(),
            "namespaces".to_string(),
            String::new(),
            ns.to_string(),
        );
        if self.objects.get(&nk).is_some_and(gc::is_deleting) {
            return Some(format!(
                "pods \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"
            ));
        }
        self.wl
            .refused
            .get(ns)
            .map(|m| format!("pods \"{name}\" is forbidden: {m}"))
    }

    /// Create an object as kube-controller-manager does.
    fn controller_create(&mut self, k: &KindSpec, ns: &str, name: &str, mut obj: Value) -> Value {
        fields::update(
            &mut obj,
            None,
            None,
            "kube-controller-manager",
            Part::Main,
            k,
        );
        self.finish_write(k, Some(ns), name, obj, false, true)
    }

    /// Create a pod from `template` owned by `owner`: named `name`, or
    /// `prefix` plus five random characters. The pod, or the API server's
    /// refusal.
    fn create_pod(
        &mut self,
        owner: &Value,
        template: &Value,
        name: Option<&str>,
        prefix: &str,
        labels: &[(&str, String)],
        spec_extra: &[(&str, Value)],
    ) -> Result<Value, String> {
        let ns = owner["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let shown = name.unwrap_or(prefix).to_string();
        if let Some(refusal) = self.pod_refusal(&ns, &shown) {
            return Err(refusal);
        }
        let Some(k) = self.find_kind("", "v1", "pods") else {
            return Err("pods are not served".into());
        };
        let name = match name {
            Some(n) => n.to_string(),
            None => loop {
                let n = format!("{prefix}{}", random_suffix());
                if !self.objects.contains_key(&key(&k, Some(&ns), &n)) {
                    break n;
                }
            },
        };
        if self.objects.contains_key(&key(&k, Some(&ns), &name)) {
            return Err(format!("pods \"{name}\" already exists"));
        }
        let mut meta = json!({
            "name": name, "namespace": ns,
            "ownerReferences": [owner_ref(owner)],
        });
        if name.starts_with(prefix) && !prefix.is_empty() && prefix.ends_with('-') {
            meta["generateName"] = json!(prefix);
        }
        let mut l = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in labels {
            l.insert((*k).to_string(), json!(v));
        }
        meta["labels"] = Value::Object(l);
        if let Some(a) = template["metadata"]["annotations"].as_object() {
            meta["annotations"] = Value::Object(a.clone());
        }
        let mut spec = template["spec"].clone();
        if !spec.is_object() {
            spec = json!({});
        }
        for (f, v) in spec_extra {
            spec[*f] = v.clone();
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
        Ok(self.controller_create(&k, &ns, &name, pod))
    }

    fn delete_pod(&mut self, kk: &Key) {
        if let Some(k) = self.find_kind("", "v1", "pods") {
            let _ = self.delete_object(&k, Some(&kk.3), &kk.4, &DeleteOptions::background());
        }
    }

    /// A Normal or Warning event about `object` from `component`.
    fn controller_event(
        &mut self,
        object: &Value,
        kind: &'static str,
        reason: &str,
        message: String,
        component: &str,
    ) {
        self.emit(NewEvent {
            object,
            field_path: None,
            kind,
            reason,
            message,
            component,
            host: None,
            style: Style::Legacy,
        });
    }

    /// A controller's status write, only when it changes something.
    fn write_status(&mut self, kk: &Key, old: &Value, new: Value) -> Value {
        if *old == new {
            return new;
        }
        let Some(k) = self.find_kind(&kk.0, &kk.1, &kk.2) else {
            return new;
        };
        self.controller_write(&k, kk, new, Part::Status);
        self.objects.get(kk).cloned().unwrap_or(Value::Null)
    }

    // -----------------------------------------------------------------------
    // ReplicaSet

    fn sync_replicaset(&mut self, kk: &Key) {
        let Some(rs) = self.objects.get(kk).cloned() else {
            return;
        };
        if gc::is_deleting(&rs) {
            return;
        }
        let want = int(&rs["spec"]["replicas"], 1);
        let mut pods: Vec<(Key, Value)> = self
            .controlled(&rs, "pods")
            .into_iter()
            .filter(|(_, p)| !is_terminal(p))
            .collect();
        let now = Instant::now();
        let mut failure: Option<String> = None;
        let have = pods.len() as i64;
        let name = kk.4.clone();
        if have < want {
            let template = rs["spec"]["template"].clone();
            for _ in 0..(want - have).min(500) {
                match self.create_pod(&rs, &template, None, &format!("{name}-"), &[], &[]) {
                    Ok(p) => {
                        let pod_name = name_of(&p);
                        self.controller_event(
                            &rs,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {pod_name}"),
                            "replicaset-controller",
                        );
                    }
                    Err(m) => {
                        self.controller_event(
                            &rs,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {m}"),
                            "replicaset-controller",
                        );
                        failure = Some(m);
                        self.wl.due(kk, now + RETRY);
                        break;
                    }
                }
            }
        } else if have > want {
            // `ActivePodsWithRanks`: unscheduled, pending, not ready,
            // restarted most and newest go first.
            pods.sort_by_key(|(_, p)| {
                let assigned = p["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty());
                let running = p["status"]["phase"] == "Running";
                let restarts: i64 = p["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| int(&c["restartCount"], 0))
                    .sum();
                let created = p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                (
                    assigned,
                    running,
                    pod_ready(p),
                    std::cmp::Reverse(restarts),
                    std::cmp::Reverse(created),
                )
            });
            for (pk, p) in pods.iter().take((have - want) as usize) {
                self.delete_pod(pk);
                self.controller_event(
                    &rs,
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", name_of(p)),
                    "replicaset-controller",
                );
            }
        }
        // Status from the pods seen before this sync's changes, as the real
        // controller computes it; the changes bring it here again.
        let template_labels = rs["spec"]["template"]["metadata"]["labels"].clone();
        let min_ready = int(&rs["spec"]["minReadySeconds"], 0);
        let (mut labelled, mut ready, mut available) = (0, 0, 0);
        for (_, p) in &pods {
            if template_labels
                .as_object()
                .into_iter()
                .flatten()
                .all(|(k, v)| p["metadata"]["labels"].get(k) == Some(v))
            {
                labelled += 1;
            }
            if pod_ready(p) {
                ready += 1;
            }
            let (ok, at) = pod_available(p, min_ready);
            if ok {
                available += 1;
            }
            if let Some(at) = at {
                self.wl.due(kk, at);
            }
        }
        let mut status = status_of(
            &[
                ("replicas", pods.len() as i64),
                ("fullyLabeledReplicas", labelled),
                ("readyReplicas", ready),
                ("availableReplicas", available),
                ("observedGeneration", int(&rs["metadata"]["generation"], 1)),
            ],
            &["replicas"],
        );
        let mut conds: Vec<Value> = rs["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let had_failure = conds.iter().any(|c| c["type"] == "ReplicaFailure");
        match &failure {
            Some(m) if !had_failure => conds.push(json!({
                "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                "message": m, "lastTransitionTime": timestamp(),
            })),
            None if had_failure => conds.retain(|c| c["type"] != "ReplicaFailure"),
            _ => {}
        }
        if !conds.is_empty() {
            status.insert("conditions".into(), Value::Array(conds));
        }
        let mut new = rs.clone();
        new["status"] = Value::Object(status);
        self.write_status(kk, &rs, new);
    }

    // -----------------------------------------------------------------------
    // Deployment

    /// Scale ReplicaSet `rk` to `to` for Deployment `d`, with the event.
    fn scale_replicaset(&mut self, rk: &Key, to: i64, d: &Value, max_surge: i64) -> Option<Value> {
        let rs = self.objects.get(rk).cloned()?;
        let from = int(&rs["spec"]["replicas"], 1);
        let replicas = int(&d["spec"]["replicas"], 1);
        let mut new = rs.clone();
        new["spec"]["replicas"] = json!(to);
        new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            json!(replicas.to_string());
        new["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] =
            json!((replicas + max_surge).to_string());
        if new == rs {
            return Some(rs);
        }
        let k = self.find_kind("apps", "v1", "replicasets")?;
        self.controller_write(&k, rk, new, Part::Main);
        if from != to {
            let op = if to > from { "up" } else { "down" };
            self.controller_event(
                d,
                "Normal",
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {} from {from} to {to}", rk.4),
                "deployment-controller",
            );
        }
        self.objects.get(rk).cloned()
    }

    fn sync_deployment(&mut self, kk: &Key) {
        let Some(d) = self.objects.get(kk).cloned() else {
            return;
        };
        if gc::is_deleting(&d) || !d["spec"]["selector"].is_object() {
            return;
        }
        let Some(rs_kind) = self.find_kind("apps", "v1", "replicasets") else {
            return;
        };
        let ns = kk.3.clone();
        let name = kk.4.clone();
        let now = Instant::now();
        let replicas = int(&d["spec"]["replicas"], 1);
        let template = d["spec"]["template"].clone();
        let mode = self.mode_for(&ns, &name);
        let paused = d["spec"]["paused"] == true;
        let recreate = d["spec"]["strategy"]["type"] == "Recreate";
        let (max_surge, mut max_unavailable) = if recreate {
            (0, 0)
        } else {
            let ru = &d["spec"]["strategy"]["rollingUpdate"];
            (
                int_or_percent(&ru["maxSurge"], "25%", replicas, true),
                int_or_percent(&ru["maxUnavailable"], "25%", replicas, false),
            )
        };
        if !recreate && max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let deadline = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
        let has_deadline = deadline != i32::MAX as i64;
        let mut conds: Vec<Value> = d["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();

        let rss = self.controlled(&d, "replicasets");
        let mut new_key = rss
            .iter()
            .find(|(_, rs)| same_template(&rs["spec"]["template"], &template))
            .map(|(k, _)| k.clone());
        let max_old = rss
            .iter()
            .filter(|(k, _)| Some(k) != new_key.as_ref())
            .map(|(_, rs)| revision(rs))
            .max()
            .unwrap_or(0);
        let old_keys: Vec<Key> = {
            let mut old: Vec<&(Key, Value)> = rss
                .iter()
                .filter(|(k, _)| Some(k) != new_key.as_ref())
                .collect();
            old.sort_by_key(|(_, rs)| {
                rs["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            });
            old.into_iter().map(|(k, _)| k.clone()).collect()
        };
        let spec_of = |s: &Self, k: &Key| {
            s.objects
                .get(k)
                .map_or(0, |rs| int(&rs["spec"]["replicas"], 1))
        };
        let status_n =
            |s: &Self, k: &Key, f: &str| s.objects.get(k).map_or(0, |rs| int(&rs["status"][f], 0));

        // The new ReplicaSet: found (its revision brought up to date) or,
        // unless paused (or Recreate with old pods still there), created.
        if let Some(nk) = &new_key {
            let rs = self.objects.get(nk).cloned().unwrap_or(Value::Null);
            if revision(&rs) <= max_old {
                let mut bumped = rs.clone();
                bumped["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!((max_old + 1).to_string());
                self.controller_write(&rs_kind, nk, bumped, Part::Main);
            }
            if has_deadline && !conds.iter().any(|c| c["type"] == "Progressing") {
                set_condition(
                    &mut conds,
                    deployment_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        &format!("Found new replica set \"{}\"", nk.4),
                    ),
                );
            }
        } else if !paused {
            if recreate {
                for ok in &old_keys {
                    if spec_of(self, ok) > 0 {
                        self.scale_replicaset(ok, 0, &d, max_surge);
                    }
                }
            }
            let old_pods = old_keys.iter().any(|ok| {
                self.objects
                    .get(ok)
                    .is_some_and(|rs| !self.controlled(rs, "pods").is_empty())
            });
            if !(recreate && old_pods) {
                let all: i64 = old_keys.iter().map(|k| spec_of(self, k)).sum();
                let count = if recreate {
                    replicas
                } else {
                    (replicas + max_surge - all).clamp(0, replicas)
                };
                let (mut hash, mut collisions) = (template_hash(&template, 0), 0i64);
                let mut rs_name = format!("{name}-{hash}");
                while self
                    .objects
                    .contains_key(&key(&rs_kind, Some(&ns), &rs_name))
                    && collisions < 10
                {
                    collisions += 1;
                    hash = template_hash(&template, collisions);
                    rs_name = format!("{name}-{hash}");
                }
                let mut t = template.clone();
                if !t["metadata"].is_object() {
                    t["metadata"] = json!({});
                }
                t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut labels = t["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let mut spec = json!({"replicas": count, "selector": selector, "template": t});
                if let Some(m) = d["spec"]["minReadySeconds"].as_i64() {
                    spec["minReadySeconds"] = json!(m);
                }
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name, "namespace": ns, "labels": labels,
                        "annotations": {
                            "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                            "deployment.kubernetes.io/max-replicas": (replicas + max_surge).to_string(),
                            "deployment.kubernetes.io/revision": (max_old + 1).to_string(),
                        },
                        "ownerReferences": [owner_ref(&d)],
                    },
                    "spec": spec,
                });
                self.controller_create(&rs_kind, &ns, &rs_name, rs);
                if count > 0 {
                    self.controller_event(
                        &d,
                        "Normal",
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {rs_name} from 0 to {count}"),
                        "deployment-controller",
                    );
                }
                if has_deadline {
                    set_condition(
                        &mut conds,
                        deployment_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetCreated",
                            &format!("Created new replica set \"{rs_name}\""),
                        ),
                    );
                }
                new_key = Some(key(&rs_kind, Some(&ns), &rs_name));
            }
        }

        // Scaling.
        if !paused {
            if let Some(nk) = &new_key {
                if recreate {
                    for ok in &old_keys {
                        if spec_of(self, ok) > 0 {
                            self.scale_replicaset(ok, 0, &d, max_surge);
                        }
                    }
                    let old_pods = old_keys.iter().any(|ok| {
                        self.objects
                            .get(ok)
                            .is_some_and(|rs| !self.controlled(rs, "pods").is_empty())
                    });
                    if !old_pods && spec_of(self, nk) != replicas {
                        self.scale_replicaset(nk, replicas, &d, max_surge);
                    }
                } else {
                    // reconcileNewReplicaSet
                    let new_spec = spec_of(self, nk);
                    let all: i64 =
                        old_keys.iter().map(|k| spec_of(self, k)).sum::<i64>() + new_spec;
                    if new_spec > replicas {
                        self.scale_replicaset(nk, replicas, &d, max_surge);
                    } else if new_spec < replicas && all < replicas + max_surge {
                        let to = (new_spec + replicas + max_surge - all).min(replicas);
                        self.scale_replicaset(nk, to, &d, max_surge);
                    }
                    // reconcileOldReplicaSets
                    let old_total: i64 = old_keys.iter().map(|k| spec_of(self, k)).sum();
                    if old_total > 0 {
                        let new_spec = spec_of(self, nk);
                        let all = old_total + new_spec;
                        let min_available = replicas - max_unavailable;
                        let new_unavailable = new_spec - status_n(self, nk, "availableReplicas");
                        let max_down = all - min_available - new_unavailable;
                        if max_down > 0 {
                            // cleanupUnhealthyReplicas
                            let mut cleaned = 0;
                            for ok in &old_keys {
                                if cleaned >= max_down {
                                    break;
                                }
                                let (spec, avail) =
                                    (spec_of(self, ok), status_n(self, ok, "availableReplicas"));
                                if spec == 0 || spec == avail {
                                    continue;
                                }
                                let down = (spec - avail).min(max_down - cleaned);
                                self.scale_replicaset(ok, spec - down, &d, max_surge);
                                cleaned += down;
                            }
                            // scaleDownOldReplicaSetsForRollingUpdate
                            let mut all_keys = old_keys.clone();
                            all_keys.push(nk.clone());
                            let available: i64 = all_keys
                                .iter()
                                .map(|k| status_n(self, k, "availableReplicas"))
                                .sum();
                            let budget = available - min_available;
                            let mut done = 0;
                            for ok in &old_keys {
                                if done >= budget {
                                    break;
                                }
                                let spec = spec_of(self, ok);
                                if spec == 0 {
                                    continue;
                                }
                                let down = spec.min(budget - done);
                                self.scale_replicaset(ok, spec - down, &d, max_surge);
                                done += down;
                            }
                        }
                    }
                }
            }
            // cleanupDeployment: old ReplicaSets beyond the history limit.
            let limit = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10);
            let mut spent: Vec<(i64, Key)> = old_keys
                .iter()
                .filter(|k| {
                    self.objects.get(*k).is_some_and(|rs| {
                        int(&rs["spec"]["replicas"], 1) == 0
                            && int(&rs["status"]["replicas"], 0) == 0
                    })
                })
                .map(|k| (revision(&self.objects[k]), k.clone()))
                .collect();
            spent.sort();
            let excess = spent.len().saturating_sub(limit.max(0) as usize);
            for (_, k) in spent.into_iter().take(excess) {
                let _ = self.delete_object(&rs_kind, Some(&ns), &k.4, &DeleteOptions::background());
            }
        }

        // syncRolloutStatus
        let d = self.objects.get(kk).cloned().unwrap_or(d);
        let all: Vec<Value> = self
            .controlled(&d, "replicasets")
            .into_iter()
            .map(|(_, rs)| rs)
            .collect();
        let new_rs = new_key.as_ref().and_then(|k| self.objects.get(k)).cloned();
        let sum = |f: &str| all.iter().map(|rs| int(&rs["status"][f], 0)).sum::<i64>();
        let available = sum("availableReplicas");
        let total_spec: i64 = all.iter().map(|rs| int(&rs["spec"]["replicas"], 1)).sum();
        let generation = int(&d["metadata"]["generation"], 1);
        let st_replicas = sum("replicas");
        let st_updated = new_rs
            .as_ref()
            .map_or(0, |rs| int(&rs["status"]["replicas"], 0));
        let st_ready = sum("readyReplicas");
        let mut status = status_of(
            &[
                ("observedGeneration", generation),
                ("replicas", st_replicas),
                ("updatedReplicas", st_updated),
                ("readyReplicas", st_ready),
                ("availableReplicas", available),
                ("unavailableReplicas", (total_spec - available).max(0)),
            ],
            &[],
        );
        if let Some(c) = d["status"]["collisionCount"].as_i64() {
            status.insert("collisionCount".into(), json!(c));
        }
        if available >= replicas - max_unavailable {
            set_condition(
                &mut conds,
                deployment_condition(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                ),
            );
        } else {
            set_condition(
                &mut conds,
                deployment_condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
            );
        }
        let rs_name = new_rs.as_ref().map(name_of);
        let about = |what: &str| match &rs_name {
            Some(n) => format!("ReplicaSet \"{n}\" {what}"),
            None => format!("Deployment \"{name}\" {what}"),
        };
        if paused {
            if !conds
                .iter()
                .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
            {
                set_condition(
                    &mut conds,
                    deployment_condition(
                        "Progressing",
                        "Unknown",
                        "DeploymentPaused",
                        "Deployment is paused",
                    ),
                );
            }
        } else if !has_deadline {
            conds.retain(|c| c["type"] != "Progressing");
        } else {
            let current = conds.iter().find(|c| c["type"] == "Progressing").cloned();
            let already_complete = st_replicas == st_updated
                && current
                    .as_ref()
                    .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
            if !already_complete {
                let old = &d["status"];
                let old_updated = int(&old["updatedReplicas"], 0);
                let old_old = int(&old["replicas"], 0) - old_updated;
                let complete = st_updated == replicas
                    && st_replicas == replicas
                    && available == replicas
                    && generation >= int(&d["metadata"]["generation"], 1);
                let progressed = st_updated > old_updated
                    || st_replicas - st_updated < old_old
                    || st_ready > int(&old["readyReplicas"], 0)
                    || available > int(&old["availableReplicas"], 0);
                let timed_out = mode == super::RolloutMode::Fail
                    || current.as_ref().is_some_and(|c| {
                        c["reason"] == "ProgressDeadlineExceeded"
                            || parse_time(&c["lastUpdateTime"]).is_some_and(|t| {
                                t + time::Duration::seconds(deadline) < OffsetDateTime::now_utc()
                            })
                    });
                if complete {
                    set_condition(
                        &mut conds,
                        deployment_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetAvailable",
                            &about("has successfully progressed."),
                        ),
                    );
                } else if mode == super::RolloutMode::Fail {
                    set_condition(
                        &mut conds,
                        deployment_condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            &about("has timed out progressing."),
                        ),
                    );
                } else if progressed {
                    let mut c = deployment_condition(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        &about("is progressing."),
                    );
                    if let Some(cur) = current.as_ref().filter(|c| c["status"] == "True") {
                        c["lastTransitionTime"] = cur["lastTransitionTime"].clone();
                    }
                    conds.retain(|c| c["type"] != "Progressing");
                    conds.push(c);
                } else if timed_out {
                    set_condition(
                        &mut conds,
                        deployment_condition(
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            &about("has timed out progressing."),
                        ),
                    );
                }
                // Look again when the deadline passes.
                if let Some(t) = conds
                    .iter()
                    .find(|c| c["type"] == "Progressing" && c["status"] == "True")
                    .filter(|c| c["reason"] != "NewReplicaSetAvailable")
                    .and_then(|c| parse_time(&c["lastUpdateTime"]))
                {
                    let left = (t + time::Duration::seconds(deadline)) - OffsetDateTime::now_utc();
                    let left =
                        Duration::from_millis(left.whole_milliseconds().max(0) as u64 + 1000);
                    self.wl.due(kk, now + left);
                }
            }
        }
        // getReplicaFailures: the new ReplicaSet's first, else an old one's.
        let failure = new_rs.iter().chain(all.iter()).find_map(|rs| {
            rs["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "ReplicaFailure")
                .cloned()
        });
        match failure {
            Some(c) => set_condition(
                &mut conds,
                json!({
                    "type": "ReplicaFailure", "status": c["status"],
                    "lastUpdateTime": c["lastTransitionTime"], "lastTransitionTime": c["lastTransitionTime"],
                    "reason": c["reason"], "message": c["message"],
                }),
            ),
            None => conds.retain(|c| c["type"] != "ReplicaFailure"),
        }
        if !conds.is_empty() {
            status.insert("conditions".into(), Value::Array(conds));
        }
        let mut new = d.clone();
        new["status"] = Value::Object(status);
        if let Some(rs) = &new_rs {
            let r = revision(rs);
            if r > 0 {
                new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!(r.to_string());
            }
        }
        self.write_status(kk, &d, new);
    }

    // -----------------------------------------------------------------------
    // ControllerRevisions (StatefulSets and DaemonSets)

    /// The ControllerRevision of `owner`'s current template: (name, hash,
    /// revision number), created or renumbered as the history needs.
    fn revision_of(&mut self, owner: &Value, hash_label: &str) -> Option<(String, String, i64)> {
        let k = self.find_kind("apps", "v1", "controllerrevisions")?;
        let ns = owner["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let owner_name = name_of(owner);
        let template = owner["spec"]["template"].clone();
        let hash = template_hash(&template, 0);
        let name = format!("{owner_name}-{hash}");
        let history = self.controlled(owner, "controllerrevisions");
        let max = history
            .iter()
            .map(|(_, r)| int(&r["revision"], 0))
            .max()
            .unwrap_or(0);
        match history.iter().find(|(kk, _)| kk.4 == name) {
            Some((kk, r)) => {
                let n = int(&r["revision"], 0);
                if n < max {
                    let mut bumped = r.clone();
                    bumped["revision"] = json!(max + 1);
                    self.controller_write(&k, kk, bumped, Part::Main);
                    return Some((name, hash, max + 1));
                }
                Some((name, hash, n))
            }
            None => {
                let mut t = template.clone();
                t["$patch"] = json!("replace");
                let mut labels = template["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                labels.insert(hash_label.to_string(), json!(hash));
                let cr = json!({
                    "apiVersion": "apps/v1", "kind": "ControllerRevision",
                    "metadata": {"name": name, "namespace": ns, "labels": labels,
                                 "ownerReferences": [owner_ref(owner)]},
                    "data": {"spec": {"template": t}},
                    "revision": max + 1,
                });
                self.controller_create(&k, &ns, &name, cr);
                Some((name, hash, max + 1))
            }
        }
    }

    /// The template stored in ControllerRevision `name` of `ns`.
    fn revision_template(&self, ns: &str, name: &str) -> Option<Value> {
        let r = self.objects.get(&(
            "apps".into(),
            "v1".into(),
            "controllerrevisions".into(),
            ns.into(),
            name.into(),
        ))?;
        let mut t = r["data"]["spec"]["template"].clone();
        t.as_object_mut()?.remove("$patch");
        Some(t)
    }

    // -----------------------------------------------------------------------
    // StatefulSet

    fn sync_statefulset(&mut self, kk: &Key) {
        let Some(sts) = self.objects.get(kk).cloned() else {
            return;
        };
        if gc::is_deleting(&sts) {
            return;
        }
        let Some((update_rev, _, _)) = self.revision_of(&sts, "controller.kubernetes.io/hash")
        else {
            return;
        };
        let ns = kk.3.clone();
        let name = kk.4.clone();
        let replicas = int(&sts["spec"]["replicas"], 1);
        let parallel = sts["spec"]["podManagementPolicy"] == "Parallel";
        let on_delete = sts["spec"]["updateStrategy"]["type"] == "OnDelete";
        let partition = if on_delete {
            0
        } else {
            int(
                &sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
                0,
            )
        };
        let current_rev = sts["status"]["currentRevision"]
            .as_str()
            .filter(|r| !r.is_empty())
            .unwrap_or(&update_rev)
            .to_string();
        let min_ready = int(&sts["spec"]["minReadySeconds"], 0);
        let rev_of = |p: &Value| {
            p["metadata"]["labels"]["controller-revision-hash"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let ordinal =
            |k: &Key| -> Option<i64> { k.4.strip_prefix(&format!("{name}-"))?.parse().ok() };

        let mut pods: Vec<(i64, Key, Value)> = self
            .controlled(&sts, "pods")
            .into_iter()
            .filter_map(|(k, p)| ordinal(&k).map(|o| (o, k, p)))
            .collect();
        pods.sort_by_key(|(o, _, _)| *o);
        let healthy = |p: &Value| p["status"]["phase"] == "Running" && pod_ready(p);
        let mut changed = false;

        // Failed pods are replaced.
        for (_, pk, p) in &pods {
            if p["status"]["phase"] == "Failed" {
                self.delete_pod(pk);
                changed = true;
            }
        }
        if !changed {
            // Create what is missing, in order.
            let existing: BTreeSet<i64> = pods.iter().map(|(o, _, _)| *o).collect();
            for ord in 0..replicas {
                if existing.contains(&ord) {
                    if !parallel && !pods.iter().any(|(o, _, p)| *o == ord && healthy(p)) {
                        break;
                    }
                    continue;
                }
                let rev = if !on_delete && ord < partition {
                    current_rev.clone()
                } else {
                    update_rev.clone()
                };
                let template = self
                    .revision_template(&ns, &rev)
                    .unwrap_or_else(|| sts["spec"]["template"].clone());
                let pod_name = format!("{name}-{ord}");
                if self.objects.contains_key(&(
                    String::new(),
                    "v1".into(),
                    "pods".into(),
                    ns.clone(),
                    pod_name.clone(),
                )) {
                    // Still there, being deleted: wait for it to go.
                    break;
                }
                let mut extra = vec![("hostname", json!(pod_name))];
                if let Some(svc) = sts["spec"]["serviceName"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                {
                    extra.push(("subdomain", json!(svc)));
                }
                let labels = [
                    ("controller-revision-hash", rev.clone()),
                    ("statefulset.kubernetes.io/pod-name", pod_name.clone()),
                    ("apps.kubernetes.io/pod-index", ord.to_string()),
                ];
                match self.create_pod(&sts, &template, Some(&pod_name), "", &labels, &extra) {
                    Ok(_) => {
                        self.controller_event(
                            &sts,
                            "Normal",
                            "SuccessfulCreate",
                            format!("create Pod {pod_name} in StatefulSet {name} successful"),
                            "statefulset-controller",
                        );
                    }
                    Err(m) => {
                        self.controller_event(
                            &sts,
                            "Warning",
                            "FailedCreate",
                            format!(
                                "create Pod {pod_name} in StatefulSet {name} failed error: {m}"
                            ),
                            "statefulset-controller",
                        );
                        self.wl.due(kk, Instant::now() + RETRY);
                    }
                }
                changed = true;
                if !parallel {
                    break;
                }
            }
        }
        if !changed {
            // Condemned pods (ordinal ≥ replicas) go from the highest.
            let all_healthy = pods.iter().all(|(_, _, p)| healthy(p));
            let condemned: Vec<&(i64, Key, Value)> = pods
                .iter()
                .rev()
                .filter(|(o, _, _)| *o >= replicas)
                .collect();
            for (_, pk, _) in condemned {
                if !parallel && !all_healthy {
                    break;
                }
                self.delete_pod(pk);
                self.controller_event(
                    &sts,
                    "Normal",
                    "SuccessfulDelete",
                    format!("delete Pod {} in StatefulSet {name} successful", pk.4),
                    "statefulset-controller",
                );
                changed = true;
                if !parallel {
                    break;
                }
            }
        }
        if !changed && !on_delete {
            // RollingUpdate: the highest ordinal not at the update revision,
            // once every pod is running and ready.
            let all_healthy =
                pods.len() as i64 >= replicas && pods.iter().all(|(_, _, p)| healthy(p));
            if all_healthy {
                if let Some((_, pk, _)) = pods
                    .iter()
                    .rev()
                    .filter(|(o, _, _)| *o >= partition && *o < replicas)
                    .find(|(_, _, p)| rev_of(p) != update_rev)
                {
                    self.delete_pod(pk);
                    self.controller_event(
                        &sts,
                        "Normal",
                        "SuccessfulDelete",
                        format!("delete Pod {} in StatefulSet {name} successful", pk.4),
                        "statefulset-controller",
                    );
                }
            }
        }

        // Status, from the pods as they are now.
        let pods: Vec<Value> = self
            .controlled(&sts, "pods")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let count = |f: &dyn Fn(&Value) -> bool| pods.iter().filter(|p| f(p)).count() as i64;
        let ready = count(&pod_ready);
        let mut available = 0;
        for p in &pods {
            let (ok, at) = pod_available(p, min_ready);
            available += i64::from(ok);
            if let Some(at) = at {
                self.wl.due(kk, at);
            }
        }
        let updated = count(&|p| rev_of(p) == update_rev);
        let mut current_rev = current_rev;
        let mut current = count(&|p| rev_of(p) == current_rev);
        let total = pods.len() as i64;
        if updated == total && ready == total && total >= replicas.min(total) {
            current_rev = update_rev.clone();
            current = updated;
        }
        let mut status = status_of(
            &[
                ("observedGeneration", int(&sts["metadata"]["generation"], 1)),
                ("replicas", total),
                ("readyReplicas", ready),
                ("currentReplicas", current),
                ("updatedReplicas", updated),
                ("availableReplicas", available),
                ("collisionCount", 0),
            ],
            &["replicas", "availableReplicas", "collisionCount"],
        );
        status.insert("currentRevision".into(), json!(current_rev));
        status.insert("updateRevision".into(), json!(update_rev));
        let sts = self.objects.get(kk).cloned().unwrap_or(sts);
        let mut new = sts.clone();
        new["status"] = Value::Object(status);
        self.write_status(kk, &sts, new);
    }

    // -----------------------------------------------------------------------
    // DaemonSet

    fn sync_daemonset(&mut self, kk: &Key) {
        let Some(ds) = self.objects.get(kk).cloned() else {
            return;
        };
        if gc::is_deleting(&ds) {
            return;
        }
        let Some((_, hash, _)) = self.revision_of(&ds, "controller-revision-hash") else {
            return;
        };
        let name = kk.4.clone();
        let generation = int(&ds["metadata"]["generation"], 1);
        let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
        let desired_nodes = {
            let sel = ds["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            self.ready_nodes()
                .into_iter()
                .filter(|(_, n)| {
                    sel.iter()
                        .all(|(k, v)| n["metadata"]["labels"].get(k) == Some(v))
                })
                .map(|(n, _)| n)
                .collect::<Vec<String>>()
        };
        let desired = desired_nodes.len() as i64;
        let max_unavailable = int_or_percent(
            &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            "1",
            desired,
            true,
        )
        .max(1);
        let min_ready = int(&ds["spec"]["minReadySeconds"], 0);
        let node_of = |p: &Value| {
            p["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .or_else(|| kubelet::pinned_node(p))
                .unwrap_or_default()
        };
        let hash_of = |p: &Value| {
            p["metadata"]["labels"]["controller-revision-hash"]
                .as_str()
                .unwrap_or("")
                .to_string()
        };
        let pods = self.controlled(&ds, "pods");
        let mut changed = false;
        // Failed pods, extra pods and pods on nodes that should not run one go.
        let mut seen_nodes: BTreeSet<String> = BTreeSet::new();
        for (pk, p) in &pods {
            let node = node_of(p);
            if p["status"]["phase"] == "Failed"
                || !desired_nodes.contains(&node)
                || !seen_nodes.insert(node)
            {
                self.delete_pod(pk);
                self.controller_event(
                    &ds,
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pk.4),
                    "daemonset-controller",
                );
                changed = true;
            }
        }
        if !changed {
            // A pod for every node without one.
            let template = ds["spec"]["template"].clone();
            for node in &desired_nodes {
                if pods.iter().any(|(_, p)| node_of(p) == *node) {
                    continue;
                }
                let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}});
                let mut tolerations: Vec<Value> = template["spec"]["tolerations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for (k, effect) in [
                    ("node.kubernetes.io/not-ready", "NoExecute"),
                    ("node.kubernetes.io/unreachable", "NoExecute"),
                    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                    ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ] {
                    tolerations.push(json!({"key": k, "operator": "Exists", "effect": effect}));
                }
                let labels = [
                    ("controller-revision-hash", hash.clone()),
                    ("pod-template-generation", generation.to_string()),
                ];
                let extra = [("affinity", affinity), ("tolerations", json!(tolerations))];
                match self.create_pod(&ds, &template, None, &format!("{name}-"), &labels, &extra) {
                    Ok(p) => {
                        let pod_name = name_of(&p);
                        self.controller_event(
                            &ds,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {pod_name}"),
                            "daemonset-controller",
                        );
                    }
                    Err(m) => {
                        self.controller_event(
                            &ds,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {m}"),
                            "daemonset-controller",
                        );
                        self.wl.due(kk, Instant::now() + RETRY);
                        break;
                    }
                }
                changed = true;
            }
        }
        if !changed && !on_delete {
            // RollingUpdate: old pods that are not available go at once,
            // available ones while the budget allows.
            let unavailable = desired_nodes
                .iter()
                .filter(|n| {
                    !pods
                        .iter()
                        .any(|(_, p)| node_of(p) == **n && pod_available(p, min_ready).0)
                })
                .count() as i64;
            let mut budget = max_unavailable - unavailable;
            for (pk, p) in &pods {
                if hash_of(p) == hash {
                    continue;
                }
                let avail = pod_available(p, min_ready).0;
                if !avail || budget > 0 {
                    if avail {
                        budget -= 1;
                    }
                    self.delete_pod(pk);
                    self.controller_event(
                        &ds,
                        "Normal",
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pk.4),
                        "daemonset-controller",
                    );
                }
            }
        }

        let pods: Vec<Value> = self
            .controlled(&ds, "pods")
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        let on_desired = |p: &&Value| desired_nodes.contains(&node_of(p));
        let scheduled: BTreeSet<String> = pods.iter().filter(on_desired).map(node_of).collect();
        let misscheduled = pods
            .iter()
            .filter(|p| !on_desired(p) && !node_of(p).is_empty())
            .count() as i64;
        let ready = pods
            .iter()
            .filter(on_desired)
            .filter(|p| pod_ready(p))
            .count() as i64;
        let mut available = 0;
        for p in pods.iter().filter(on_desired) {
            let (ok, at) = pod_available(p, min_ready);
            available += i64::from(ok);
            if let Some(at) = at {
                self.wl.due(kk, at);
            }
        }
        let updated = pods
            .iter()
            .filter(on_desired)
            .filter(|p| hash_of(p) == hash)
            .count() as i64;
        let status = status_of(
            &[
                ("currentNumberScheduled", scheduled.len() as i64),
                ("numberMisscheduled", misscheduled),
                ("desiredNumberScheduled", desired),
                ("numberReady", ready),
                ("observedGeneration", generation),
                ("updatedNumberScheduled", updated),
                ("numberAvailable", available),
                ("numberUnavailable", (desired - available).max(0)),
            ],
            &[
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
            ],
        );
        let ds = self.objects.get(kk).cloned().unwrap_or(ds);
        let mut new = ds.clone();
        let conds = ds["status"]["conditions"].clone();
        new["status"] = Value::Object(status);
        if conds.is_array() {
            new["status"]["conditions"] = conds;
        }
        self.write_status(kk, &ds, new);
    }

    // -----------------------------------------------------------------------
    // Job

    fn sync_job(&mut self, kk: &Key) {
        let Some(job) = self.objects.get(kk).cloned() else {
            return;
        };
        if gc::is_deleting(&job) {
            return;
        }
        let name = kk.4.clone();
        let uid = uid_of(&job).to_string();
        let done = |c: &str| condition_true(&job, c);
        if done("Complete") || done("Failed") {
            return;
        }
        let spec = &job["spec"];
        let parallelism = int(&spec["parallelism"], 1);
        let completions = spec["completions"].as_i64();
        let backoff_limit = int(&spec["backoffLimit"], 6);
        let restart = spec["template"]["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Never")
            .to_string();
        let suspended = spec["suspend"] == true;
        let pods = self.controlled(&job, "pods");
        let status = &job["status"];
        let succeeded = (pods
            .iter()
            .filter(|(_, p)| p["status"]["phase"] == "Succeeded")
            .count() as i64)
            .max(int(&status["succeeded"], 0));
        let failed = (pods
            .iter()
            .filter(|(_, p)| p["status"]["phase"] == "Failed")
            .count() as i64)
            .max(int(&status["failed"], 0));
        let active: Vec<&(Key, Value)> = pods.iter().filter(|(_, p)| !is_terminal(p)).collect();
        let restarts: i64 = active
            .iter()
            .flat_map(|(_, p)| {
                p["status"]["containerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .map(|c| int(&c["restartCount"], 0))
            .sum();
        let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
        let job_condition = |kind: &str, reason: &str, message: &str| {
            let now = timestamp();
            json!({"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now,
                   "reason": reason, "message": message})
        };
        let has = |conds: &Vec<Value>, t: &str| {
            conds
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        let exceeded = if restart == "OnFailure" {
            failed + restarts >= backoff_limit.max(1) && (failed + restarts) > 0
        } else {
            failed > backoff_limit
        };
        let reached = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let mut completion_time = status["completionTime"].clone();
        let mut active_n = active.len() as i64;
        if has(&conds, "FailureTarget") || exceeded {
            if !has(&conds, "FailureTarget") {
                conds.push(job_condition(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ));
            }
            for (pk, _) in &active {
                self.delete_pod(pk);
            }
            active_n = 0;
            conds.push(job_condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
            self.controller_event(
                &job,
                "Warning",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
                "job-controller",
            );
        } else if has(&conds, "SuccessCriteriaMet") || reached {
            if !has(&conds, "SuccessCriteriaMet") {
                conds.push(job_condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
            }
            for (pk, _) in &active {
                self.delete_pod(pk);
            }
            active_n = 0;
            conds.push(job_condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            completion_time = json!(timestamp());
            self.controller_event(
                &job,
                "Normal",
                "Completed",
                "Job completed".into(),
                "job-controller",
            );
        } else if !suspended {
            let want = match completions {
                Some(c) => parallelism.min(c - succeeded),
                None => parallelism,
            }
            .max(0);
            let template = spec["template"].clone();
            let labels = [
                ("batch.kubernetes.io/controller-uid", uid.clone()),
                ("batch.kubernetes.io/job-name", name.clone()),
                ("controller-uid", uid.clone()),
                ("job-name", name.clone()),
            ];
            for _ in active_n..want {
                match self.create_pod(&job, &template, None, &format!("{name}-"), &labels, &[]) {
                    Ok(p) => {
                        let pod_name = name_of(&p);
                        self.controller_event(
                            &job,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {pod_name}"),
                            "job-controller",
                        );
                    }
                    Err(m) => {
                        self.controller_event(
                            &job,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {m}"),
                            "job-controller",
                        );
                        self.wl.due(kk, Instant::now() + RETRY);
                        break;
                    }
                }
            }
        }
        let ready = active.iter().filter(|(_, p)| pod_ready(p)).count() as i64;
        let mut st = status_of(
            &[
                ("active", active_n),
                ("succeeded", succeeded),
                ("failed", failed),
                ("ready", if active_n == 0 { 0 } else { ready }),
                ("terminating", 0),
            ],
            &["ready", "terminating"],
        );
        st.insert(
            "startTime".into(),
            if status["startTime"].is_string() {
                status["startTime"].clone()
            } else {
                json!(timestamp())
            },
        );
        if completion_time.is_string() {
            st.insert("completionTime".into(), completion_time);
        }
        st.insert("uncountedTerminatedPods".into(), json!({}));
        if !conds.is_empty() {
            st.insert("conditions".into(), Value::Array(conds));
        }
        let job = self.objects.get(kk).cloned().unwrap_or(job);
        let mut new = job.clone();
        new["status"] = Value::Object(st);
        self.write_status(kk, &job, new);
    }
}

/// The `kubernetes.io`-style defaults the API server gives a Job when it
/// is created: its selector, the labels its pods carry, parallelism,
/// completions, backoff limit and the rest.
pub(super) fn default_job(obj: &mut Value) {
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    if spec["manualSelector"] != true && !spec["selector"].is_object() && !uid.is_empty() {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        if !spec["template"]["metadata"].is_object() {
            spec["template"]["metadata"] = json!({});
        }
        let labels = &mut spec["template"]["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels[k] = json!(v);
        }
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    if spec["parallelism"].is_null() {
        spec["parallelism"] = json!(1);
    }
    for (f, v) in [
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        if spec[f].is_null() {
            spec[f] = v;
        }
    }
}

/// The defaults the API server gives a Pod (`SetDefaults_Pod`,
/// `SetDefaults_Container`, …) and its initial status.
pub(super) fn default_pod(obj: &mut Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    for (f, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
        ("enableServiceLinks", json!(true)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
        ("priority", json!(0)),
    ] {
        if spec[f].is_null() {
            spec[f] = v;
        }
    }
    if spec["tolerations"].is_null() {
        spec["tolerations"] = json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        ]);
    }
    let mut qos = "BestEffort";
    let (mut all_guaranteed, mut any) = (true, false);
    if let Some(cs) = spec["containers"].as_array_mut() {
        for c in cs {
            let image = c["image"].as_str().unwrap_or("").to_string();
            let last = image.rsplit('/').next().unwrap_or("");
            let latest = !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"));
            for (f, v) in [
                (
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                ),
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                ("resources", json!({})),
            ] {
                if c[f].is_null() {
                    c[f] = v;
                }
            }
            let r = &c["resources"];
            let has = r["requests"].as_object().is_some_and(|m| !m.is_empty())
                || r["limits"].as_object().is_some_and(|m| !m.is_empty());
            any |= has;
            let guaranteed = ["cpu", "memory"].iter().all(|k| {
                let l = &r["limits"][*k];
                !l.is_null() && (r["requests"][*k].is_null() || r["requests"][*k] == *l)
            });
            all_guaranteed &= guaranteed;
        }
    }
    if any {
        qos = if all_guaranteed {
            "Guaranteed"
        } else {
            "Burstable"
        };
    }
    if !obj["status"].is_object() {
        obj["status"] = json!({});
    }
    if obj["status"]["phase"].is_null() {
        obj["status"]["phase"] = json!("Pending");
    }
    if obj["status"]["qosClass"].is_null() {
        obj["status"]["qosClass"] = json!(qos);
    }
}

/// The update strategies the API server defaults for StatefulSets and
/// DaemonSets (kubectl's `rollout status` needs their type).
pub(super) fn default_workload(plural: &str, obj: &mut Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    match plural {
        "statefulsets" => {
            if spec["updateStrategy"]["type"].is_null() {
                spec["updateStrategy"]["type"] = json!("RollingUpdate");
            }
            if spec["updateStrategy"]["type"] == "RollingUpdate"
                && spec["updateStrategy"]["rollingUpdate"]["partition"].is_null()
            {
                spec["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
            }
            for (f, v) in [
                ("podManagementPolicy", json!("OrderedReady")),
                ("revisionHistoryLimit", json!(10)),
                (
                    "persistentVolumeClaimRetentionPolicy",
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                ),
            ] {
                if spec[f].is_null() {
                    spec[f] = v;
                }
            }
        }
        "daemonsets" => {
            if spec["updateStrategy"]["type"].is_null() {
                spec["updateStrategy"]["type"] = json!("RollingUpdate");
            }
            if spec["updateStrategy"]["type"] == "RollingUpdate"
                && spec["updateStrategy"]["rollingUpdate"].is_null()
            {
                spec["updateStrategy"]["rollingUpdate"] =
                    json!({"maxUnavailable": 1, "maxSurge": 0});
            }
            if spec["revisionHistoryLimit"].is_null() {
                spec["revisionHistoryLimit"] = json!(10);
            }
        }
        _ => {}
    }
}
