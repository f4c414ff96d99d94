//! The scheduler and the kubelets of the stand-in's nodes.
//!
//! The cluster has [`NODES`] (`node-1`, `node-2`), served as `v1` Nodes. The
//! scheduler binds every pod without `spec.nodeName` to a Ready node (its
//! `nodeSelector` and a DaemonSet pod's node affinity respected; round
//! robin otherwise), sets `PodScheduled=True` and records `Scheduled`; a pod
//! it cannot place gets `PodScheduled=False` (`Unschedulable`, the real
//! scheduler's message) and a repeated `FailedScheduling` Warning.
//!
//! The kubelet of each node runs the pods bound to it. What a container
//! does is steered by its image ([`PodBehaviour`], exact match of
//! `spec.containers[].image`, set with `KubeApi::set_pod_behaviour`); any
//! other image is [`PodBehaviour::Ready`]. A Deployment's pods follow its
//! [`RolloutMode`](super::RolloutMode) when their image has no behaviour of
//! its own. Timings are simulated and short: a container starts 100 ms
//! after the pod is bound, a crash-looping one restarts every ~500 ms, an
//! image pull fails and backs off every ~2 s, stuck states repeat their
//! events every 2 s. A behaviour change re-evaluates every pod at once:
//! behaviours about starting (image pull, configuration, mounts, creation,
//! scheduling, `Pending`) concern containers that never ran; a running
//! container only heeds `CrashLoopBackOff`, `NotReady` and `Ready`.
//!
//! Statuses are the kubelet's (`kubelet_pods.go` `getPhase`,
//! `generateAPIPodStatus`): phase from the container states, conditions
//! `PodReadyToStartContainers`, `Initialized`, `Ready`, `ContainersReady`,
//! `PodScheduled` with honest `lastTransitionTime`s, complete
//! `containerStatuses` (name, image, imageID once pulled, containerID once
//! created, ready, started, restartCount, state, lastState), host and pod
//! IPs, `startTime`, `qosClass`. Events are the kubelet's reasons and
//! messages (`Pulled`, `Created`, `Started`, `Pulling`, `Failed`,
//! `BackOff`, `InspectFailed`, `Unhealthy`, `FailedMount`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::events::{NewEvent, Style};
use super::fields::{self, Part};
use super::{gc, key, timestamp, Inner, Key, RolloutMode};

/// The nodes of the stand-in's cluster.
pub const NODES: &[&str] = &["node-1", "node-2"];

/// What the kubelet (or scheduler) does with a container whose image it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodBehaviour {
    /// Scheduled, pulled, started, ready (a Job's pod then exits 0).
    Ready,
    /// `ContainerCreating` forever (the sandbox never becomes ready).
    Pending,
    /// `ErrImagePull`, then `ImagePullBackOff`, alternating: the image is
    /// not found in its registry.
    ImagePullBackOff,
    /// `InvalidImageName`: the reference does not parse.
    InvalidImageName,
    /// `CreateContainerConfigError` with this message (e.g.
    /// `configmap "app-config" not found`; [`PodBehaviour::missing_configmap`]).
    CreateContainerConfigError(String),
    /// `CreateContainerError` with this message (the runtime refused to
    /// create the container).
    CreateContainerError(String),
    /// Runs, exits 1, restarts with back-off: `CrashLoopBackOff` (never
    /// ready meanwhile). A Job's pod with `restartPolicy: Never` fails.
    CrashLoopBackOff,
    /// The scheduler finds no node: `PodScheduled=False`, `Unschedulable`.
    Unschedulable,
    /// Runs, but its readiness probe fails (HTTP 503).
    NotReady,
    /// `ContainerCreating` forever with `FailedMount` Warnings:
    /// `MountVolume.SetUp failed for volume "config" : configmap "missing"
    /// not found`.
    FailedMount,
}

impl PodBehaviour {
    /// `CreateContainerConfigError`: `configmap "<name>" not found`.
    pub fn missing_configmap(name: &str) -> PodBehaviour {
        PodBehaviour::CreateContainerConfigError(format!("configmap \"{name}\" not found"))
    }

    /// `CreateContainerError` as containerd reports a runtime that timed out.
    pub fn create_container_error() -> PodBehaviour {
        PodBehaviour::CreateContainerError("context deadline exceeded".into())
    }

    /// Whether it is about starting a container (ignored once it ran).
    fn about_starting(&self) -> bool {
        !matches!(
            self,
            PodBehaviour::Ready | PodBehaviour::CrashLoopBackOff | PodBehaviour::NotReady
        )
    }
}

/// From bound to the first container state change.
const START: Duration = Duration::from_millis(100);
/// A Job's container runs this long before it exits 0.
const RUN_TO_EXIT: Duration = Duration::from_millis(150);
/// A crashing container runs this long, shows `Error` this long, and
/// waits in `CrashLoopBackOff` this long before it restarts.
const CRASH_RUN: Duration = Duration::from_millis(150);
const CRASH_TERM: Duration = Duration::from_millis(100);
const CRASH_BACKOFF: Duration = Duration::from_millis(250);
/// `ErrImagePull` is shown this long, then `ImagePullBackOff` this long.
const PULL_ERR: Duration = Duration::from_millis(500);
const PULL_BACKOFF: Duration = Duration::from_millis(1500);
/// Stuck states record their events again this often.
const REPEAT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq)]
enum CState {
    /// Waiting, `ContainerCreating`.
    Creating,
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        reason: &'static str,
        code: i64,
        started_at: String,
        finished_at: String,
    },
}

/// The kubelet's memory of one container.
#[derive(Debug, Clone)]
struct Ctr {
    name: String,
    image: String,
    state: CState,
    /// When `state` was entered.
    since: Instant,
    restarts: i64,
    /// `lastState.terminated`.
    last: Option<Value>,
    ready: bool,
    ran: bool,
    pulled: bool,
    id: Option<String>,
    /// When the state's repeating events are due again.
    repeat: Option<Instant>,
}

/// The kubelet's memory of one pod.
#[derive(Debug, Clone)]
pub(super) struct PodSim {
    uid: String,
    seen: Instant,
    start_time: String,
    node: String,
    ip: String,
    containers: Vec<Ctr>,
    mount_repeat: Option<Instant>,
}

/// An event a container step asks for.
struct Ev {
    kind: &'static str,
    reason: &'static str,
    message: String,
    container: Option<String>,
}

fn ev(kind: &'static str, reason: &'static str, message: String, c: &str) -> Ev {
    Ev {
        kind,
        reason,
        message,
        container: Some(c.to_string()),
    }
}

/// What a step knows of its pod.
struct PodCx<'a> {
    name: &'a str,
    ns: &'a str,
    uid: &'a str,
    restart: &'a str,
    /// Containers may not start (FailedMount).
    blocked: bool,
}

/// A 64-hex-digit digest of `parts` (image and container ids).
fn hex64(parts: &[&str]) -> String {
    let mut out = String::new();
    for seed in 0u64..4 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for p in parts {
            for b in p.bytes().chain(std::iter::once(0)) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// The image reference as containerd resolves it
/// (`docker.io/library/nginx:1.27`).
pub(super) fn normalized(image: &str) -> String {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let mut full = if !name.contains('/') {
        format!("docker.io/library/{name}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        name.to_string()
    } else {
        format!("docker.io/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

fn repository(image: &str) -> String {
    let n = normalized(image);
    let n = n.split('@').next().unwrap_or("").to_string();
    match n.rfind(':') {
        Some(i) if !n[i..].contains('/') => n[..i].to_string(),
        _ => n,
    }
}

fn image_id(image: &str) -> String {
    format!("{}@sha256:{}", repository(image), hex64(&[image]))
}

/// `10s`, `20s`, … `5m0s`: the kubelet's restart back-off after `restarts`.
fn back_off(restarts: i64) -> String {
    let secs = (10u64 << restarts.clamp(0, 5)).min(300);
    if secs < 60 {
        format!("{secs}s")
    } else {
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

impl Ctr {
    fn new(name: &str, image: &str, now: Instant) -> Ctr {
        Ctr {
            name: name.to_string(),
            image: image.to_string(),
            state: CState::Creating,
            since: now,
            restarts: 0,
            last: None,
            ready: false,
            ran: false,
            pulled: false,
            id: None,
            repeat: None,
        }
    }

    fn enter(&mut self, state: CState, now: Instant) {
        self.state = state;
        self.since = now;
        self.repeat = None;
    }

    /// Pull (or not), create and start the container as `b` says.
    fn start(
        &mut self,
        b: &PodBehaviour,
        now: Instant,
        cx: &PodCx,
        out: &mut Vec<Ev>,
    ) -> Option<Instant> {
        let n = self.name.clone();
        let image = self.image.clone();
        let already = || {
            ev(
                "Normal",
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
                &n,
            )
        };
        match b {
            PodBehaviour::ImagePullBackOff => {
                let full = normalized(&self.image);
                let err = format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found"
                );
                out.push(ev(
                    "Normal",
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                    &n,
                ));
                out.push(ev(
                    "Warning",
                    "Failed",
                    format!("Failed to pull image \"{image}\": {err}"),
                    &n,
                ));
                out.push(ev("Warning", "Failed", "Error: ErrImagePull".into(), &n));
                self.enter(
                    CState::Waiting {
                        reason: "ErrImagePull".into(),
                        message: err,
                    },
                    now,
                );
                Some(now + PULL_ERR)
            }
            PodBehaviour::InvalidImageName => {
                let message = format!(
                    "Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format"
                );
                self.enter(
                    CState::Waiting {
                        reason: "InvalidImageName".into(),
                        message,
                    },
                    now,
                );
                self.repeat(now, out)
            }
            PodBehaviour::CreateContainerConfigError(m) | PodBehaviour::CreateContainerError(m) => {
                let reason = if matches!(b, PodBehaviour::CreateContainerError(_)) {
                    "CreateContainerError"
                } else {
                    "CreateContainerConfigError"
                };
                out.push(already());
                self.pulled = true;
                self.enter(
                    CState::Waiting {
                        reason: reason.into(),
                        message: m.clone(),
                    },
                    now,
                );
                self.repeat(now, out)
            }
            _ => {
                out.push(already());
                out.push(ev(
                    "Normal",
                    "Created",
                    format!("Created container: {n}"),
                    &n,
                ));
                out.push(ev(
                    "Normal",
                    "Started",
                    format!("Started container {n}"),
                    &n,
                ));
                if self.ran {
                    self.restarts += 1;
                }
                self.ran = true;
                self.pulled = true;
                self.id = Some(hex64(&[cx.uid, &n, &self.restarts.to_string()]));
                self.ready = false;
                self.enter(
                    CState::Running {
                        started_at: timestamp(),
                    },
                    now,
                );
                self.step(b, now, cx, out)
            }
        }
    }

    /// The repeated events of a stuck waiting state, when due.
    fn repeat(&mut self, now: Instant, out: &mut Vec<Ev>) -> Option<Instant> {
        if self.repeat.is_some_and(|r| now < r) {
            return self.repeat;
        }
        let n = self.name.clone();
        if let CState::Waiting { reason, message } = &self.state {
            if reason == "InvalidImageName" {
                out.push(ev("Warning", "InspectFailed", message.clone(), &n));
            }
            let shown = if reason == "InvalidImageName" {
                "InvalidImageName".to_string()
            } else {
                message.clone()
            };
            out.push(ev("Warning", "Failed", format!("Error: {shown}"), &n));
        }
        self.repeat = Some(now + REPEAT);
        self.repeat
    }

    fn terminate(&mut self, reason: &'static str, code: i64, now: Instant) {
        let started_at = match &self.state {
            CState::Running { started_at } => started_at.clone(),
            _ => timestamp(),
        };
        self.ready = false;
        self.enter(
            CState::Terminated {
                reason,
                code,
                started_at,
                finished_at: timestamp(),
            },
            now,
        );
    }

    /// Advance the container as behaviour `b` says; the next time it needs
    /// looking at.
    fn step(
        &mut self,
        b: &PodBehaviour,
        now: Instant,
        cx: &PodCx,
        out: &mut Vec<Ev>,
    ) -> Option<Instant> {
        let n = self.name.clone();
        match self.state.clone() {
            CState::Creating => {
                if cx.blocked || matches!(b, PodBehaviour::Pending) {
                    return None;
                }
                let at = self.since + START;
                if now < at {
                    return Some(at);
                }
                self.start(b, now, cx, out)
            }
            CState::Waiting { reason, message } => match reason.as_str() {
                "ErrImagePull" if *b == PodBehaviour::ImagePullBackOff => {
                    let at = self.since + PULL_ERR;
                    if now < at {
                        return Some(at);
                    }
                    let m = format!("Back-off pulling image \"{}\"", self.image);
                    out.push(ev("Normal", "BackOff", m.clone(), &n));
                    out.push(ev(
                        "Warning",
                        "Failed",
                        "Error: ImagePullBackOff".into(),
                        &n,
                    ));
                    self.enter(
                        CState::Waiting {
                            reason: "ImagePullBackOff".into(),
                            message: m,
                        },
                        now,
                    );
                    Some(now + PULL_BACKOFF)
                }
                "ImagePullBackOff" if *b == PodBehaviour::ImagePullBackOff => {
                    let at = self.since + PULL_BACKOFF;
                    if now < at {
                        return Some(at);
                    }
                    self.start(b, now, cx, out)
                }
                "CrashLoopBackOff" => {
                    let at = self.since + CRASH_BACKOFF;
                    if *b == PodBehaviour::CrashLoopBackOff && now < at {
                        return Some(at);
                    }
                    let b = if b.about_starting() {
                        &PodBehaviour::Ready
                    } else {
                        b
                    };
                    self.start(b, now, cx, out)
                }
                "InvalidImageName" if *b == PodBehaviour::InvalidImageName => self.repeat(now, out),
                "CreateContainerConfigError"
                    if *b == PodBehaviour::CreateContainerConfigError(message.clone()) =>
                {
                    self.repeat(now, out)
                }
                "CreateContainerError"
                    if *b == PodBehaviour::CreateContainerError(message.clone()) =>
                {
                    self.repeat(now, out)
                }
                _ => {
                    if cx.blocked || matches!(b, PodBehaviour::Pending) {
                        return None;
                    }
                    self.start(b, now, cx, out)
                }
            },
            CState::Running { .. } => {
                let b = if b.about_starting() {
                    &PodBehaviour::Ready
                } else {
                    b
                };
                match b {
                    PodBehaviour::CrashLoopBackOff => {
                        self.ready = false;
                        let at = self.since + CRASH_RUN;
                        if now < at {
                            return Some(at);
                        }
                        self.terminate("Error", 1, now);
                        self.step(b, now, cx, out)
                    }
                    PodBehaviour::NotReady => {
                        self.ready = false;
                        if self.repeat.is_none_or(|r| now >= r) {
                            out.push(ev(
                                "Warning",
                                "Unhealthy",
                                "Readiness probe failed: HTTP probe failed with statuscode: 503"
                                    .into(),
                                &n,
                            ));
                            self.repeat = Some(now + REPEAT);
                        }
                        self.repeat
                    }
                    _ => {
                        self.ready = true;
                        self.repeat = None;
                        if cx.restart == "Always" {
                            return None;
                        }
                        let at = self.since + RUN_TO_EXIT;
                        if now < at {
                            return Some(at);
                        }
                        self.terminate("Completed", 0, now);
                        None
                    }
                }
            }
            CState::Terminated { code, .. } => {
                if cx.restart == "Never" || (code == 0 && cx.restart == "OnFailure") {
                    return None;
                }
                let at = self.since + CRASH_TERM;
                if now < at {
                    return Some(at);
                }
                let last = self.terminated_json();
                self.last = last;
                let m = format!(
                    "back-off {} restarting failed container={n} pod={}_{}({})",
                    back_off(self.restarts),
                    cx.name,
                    cx.ns,
                    cx.uid
                );
                out.push(ev(
                    "Warning",
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {n} in pod {}_{}({})",
                        cx.name, cx.ns, cx.uid
                    ),
                    &n,
                ));
                self.enter(
                    CState::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: m,
                    },
                    now,
                );
                Some(now + CRASH_BACKOFF)
            }
        }
    }

    fn terminated_json(&self) -> Option<Value> {
        match &self.state {
            CState::Terminated {
                reason,
                code,
                started_at,
                finished_at,
            } => {
                let mut t = json!({
                    "exitCode": code, "reason": reason,
                    "startedAt": started_at, "finishedAt": finished_at,
                });
                if let Some(id) = &self.id {
                    t["containerID"] = json!(format!("containerd://{id}"));
                }
                Some(t)
            }
            _ => None,
        }
    }

    fn status(&self) -> Value {
        let running = matches!(self.state, CState::Running { .. });
        let state = match &self.state {
            CState::Creating => json!({"waiting": {"reason": "ContainerCreating"}}),
            CState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            CState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            CState::Terminated { .. } => json!({"terminated": self.terminated_json()}),
        };
        let mut s = json!({
            "name": self.name,
            "image": self.image,
            "imageID": if self.pulled { image_id(&self.image) } else { String::new() },
            "ready": running && self.ready,
            "started": running,
            "restartCount": self.restarts,
            "state": state,
            "lastState": match &self.last {
                Some(t) => json!({"terminated": t}),
                None => json!({}),
            },
        });
        if let Some(id) = self.id.as_ref().filter(|_| self.ran) {
            s["containerID"] = json!(format!("containerd://{id}"));
        }
        s
    }
}

/// A pod condition, its `lastTransitionTime` kept from `old` when its
/// status did not change.
fn pod_condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<&str>,
    old: &Value,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .filter(|c| c["status"] == status);
    let mut c = json!({
        "type": kind, "status": status, "lastProbeTime": null,
        "lastTransitionTime": prev.map_or_else(|| json!(timestamp()), |p| p["lastTransitionTime"].clone()),
    });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// `getPhase`: the pod phase its containers' states make.
fn phase(cs: &[Ctr], restart: &str) -> &'static str {
    let (mut running, mut stopped, mut succeeded, mut waiting) = (0, 0, 0, 0);
    for c in cs {
        match &c.state {
            CState::Running { .. } => running += 1,
            CState::Terminated { code, .. } => {
                stopped += 1;
                if *code == 0 {
                    succeeded += 1;
                }
            }
            _ if c.last.is_some() => stopped += 1,
            _ => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// The first node-name a DaemonSet pod's affinity pins it to.
pub(super) fn pinned_node(pod: &Value) -> Option<String> {
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"]
        .as_array()?
        .iter()
        .flat_map(|t| t["matchFields"].as_array().into_iter().flatten())
        .find(|f| f["key"] == "metadata.name" && f["operator"] == "In")
        .and_then(|f| f["values"][0].as_str())
        .map(str::to_string)
}

/// A `v1` Node of the stand-in's cluster.
pub(super) fn node_object(name: &str, index: usize) -> Value {
    let now = timestamp();
    let cond = |t: &str, s: &str, r: &str, m: &str| {
        json!({"type": t, "status": s, "reason": r, "message": m,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
        }, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": format!("10.244.{}.0/24", index + 1), "podCIDRs": [format!("10.244.{}.0/24", index + 1)]},
        "status": {
            "capacity": {"cpu": "2", "memory": "4025780Ki", "pods": "110", "ephemeral-storage": "30830Mi"},
            "allocatable": {"cpu": "2", "memory": "3923380Ki", "pods": "110", "ephemeral-storage": "30830Mi"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": format!("172.18.0.{}", index + 2)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": hex64(&[name])[..32].to_string(), "systemUUID": hex64(&[name, "uuid"])[..32].to_string(),
                "bootID": hex64(&[name, "boot"])[..32].to_string(),
                "kernelVersion": "6.8.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.24", "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "v1.32.0", "operatingSystem": "linux", "architecture": "amd64",
            },
        },
    })
}

fn node_ready(n: &Value) -> bool {
    n["spec"]["unschedulable"] != true
        && n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

impl Inner {
    /// The Nodes in the store, by name.
    pub(super) fn nodes(&self) -> Vec<(String, Value)> {
        let start = (
            String::new(),
            "v1".to_string(),
            "nodes".to_string(),
            String::new(),
            String::new(),
        );
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.0.is_empty() && k.1 == "v1" && k.2 == "nodes")
            .map(|(k, o)| (k.4.clone(), o.clone()))
            .collect()
    }

    /// The Ready, schedulable nodes.
    pub(super) fn ready_nodes(&self) -> Vec<(String, Value)> {
        self.nodes()
            .into_iter()
            .filter(|(_, n)| node_ready(n))
            .collect()
    }

    /// The rollout mode of the Deployment that owns `pod` (through its
    /// ReplicaSet), if any.
    fn deployment_mode(&self, pod: &Value) -> Option<RolloutMode> {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let rs_ref = super::workloads::controller_ref(pod)?;
        if rs_ref["kind"] != "ReplicaSet" {
            return None;
        }
        let rs = self.objects.get(&(
            "apps".into(),
            "v1".into(),
            "replicasets".into(),
            ns.into(),
            rs_ref["name"].as_str()?.into(),
        ))?;
        let d_ref = super::workloads::controller_ref(rs)?;
        if d_ref["kind"] != "Deployment" {
            return None;
        }
        Some(self.mode_for(ns, d_ref["name"].as_str()?))
    }

    /// The behaviour of `image` in `pod` now, and when to look again (an
    /// `After` rollout's delay).
    fn behaviour(
        &self,
        pod: &Value,
        image: &str,
        seen: Instant,
        now: Instant,
    ) -> (PodBehaviour, Option<Instant>) {
        if let Some(b) = self.wl.behaviours.get(image) {
            return (b.clone(), None);
        }
        match self.deployment_mode(pod) {
            Some(RolloutMode::Never | RolloutMode::Fail) => (PodBehaviour::Pending, None),
            Some(RolloutMode::After(d)) if now < seen + d => {
                (PodBehaviour::Pending, Some(seen + d))
            }
            _ => (PodBehaviour::Ready, None),
        }
    }

    /// The scheduler and the kubelet, for one pod.
    pub(super) fn sync_pod(&mut self, kk: &Key) {
        let Some(pod) = self.objects.get(kk).cloned() else {
            self.wl.pods.remove(kk);
            return;
        };
        if gc::is_deleting(&pod)
            || matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
        {
            return;
        }
        let pod = if pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
            match self.schedule(kk, &pod) {
                Some(bound) => bound,
                None => return,
            }
        } else {
            pod
        };
        self.kubelet(kk, &pod);
    }

    /// Bind `pod` to a node, or report why not. The bound pod.
    fn schedule(&mut self, kk: &Key, pod: &Value) -> Option<Value> {
        let now = Instant::now();
        let nodes = self.ready_nodes();
        let images: Vec<String> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["image"].as_str().map(str::to_string))
            .collect();
        let unschedulable = images
            .iter()
            .any(|i| self.wl.behaviours.get(i) == Some(&PodBehaviour::Unschedulable));
        let pinned = pinned_node(pod);
        let selector = pod["spec"]["nodeSelector"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let fits: Vec<&(String, Value)> = nodes
            .iter()
            .filter(|(name, n)| {
                pinned.as_ref().is_none_or(|p| p == name)
                    && selector
                        .iter()
                        .all(|(k, v)| n["metadata"]["labels"].get(k) == Some(v))
            })
            .collect();
        let total = nodes.len();
        let message = if unschedulable {
            Some(format!(
                "0/{total} nodes are available: {total} Insufficient cpu. preemption: 0/{total} nodes are available: {total} No preemption victims found for incoming pod."
            ))
        } else if fits.is_empty() {
            Some(format!(
                "0/{total} nodes are available: {total} node(s) didn't match Pod's node affinity/selector. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."
            ))
        } else {
            None
        };
        let k = self.find_kind("", "v1", "pods")?;
        if let Some(message) = message {
            let mut new = pod.clone();
            let old_status = pod["status"].clone();
            new["status"]["phase"] = json!("Pending");
            new["status"]["conditions"] = json!([pod_condition(
                "PodScheduled",
                false,
                Some("Unschedulable"),
                Some(&message),
                &old_status
            )]);
            fields::update(
                &mut new,
                Some(pod),
                None,
                "kube-scheduler",
                Part::Status,
                &k,
            );
            let stored = self.finish_write(&k, Some(&kk.3), &kk.4, new, false, true);
            let due = self.wl.unschedulable.get(kk).copied();
            if due.is_none_or(|d| now >= d) {
                self.emit(NewEvent {
                    object: &stored,
                    field_path: None,
                    kind: "Warning",
                    reason: "FailedScheduling",
                    message,
                    component: "default-scheduler",
                    host: None,
                    style: Style::Legacy,
                });
                self.wl.unschedulable.insert(kk.clone(), now + REPEAT);
            }
            self.wl.due(kk, now + REPEAT);
            return None;
        }
        self.wl.unschedulable.remove(kk);
        let (node, _) = fits[self.wl.next_node % fits.len()].clone();
        self.wl.next_node += 1;
        let mut new = pod.clone();
        new["spec"]["nodeName"] = json!(node);
        let old_status = pod["status"].clone();
        let mut conditions: Vec<Value> = old_status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["type"] != "PodScheduled")
            .cloned()
            .collect();
        conditions.push(pod_condition("PodScheduled", true, None, None, &old_status));
        new["status"]["conditions"] = json!(conditions);
        let stored = self.finish_write(&k, Some(&kk.3), &kk.4, new, false, true);
        self.emit(NewEvent {
            object: &stored,
            field_path: None,
            kind: "Normal",
            reason: "Scheduled",
            message: format!("Successfully assigned {}/{} to {node}", kk.3, kk.4),
            component: "default-scheduler",
            host: None,
            style: Style::Structured("Binding"),
        });
        Some(stored)
    }

    /// The kubelet of `pod`'s node.
    fn kubelet(&mut self, kk: &Key, pod: &Value) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        let Some(node_index) = self.ready_nodes().iter().position(|(n, _)| *n == node) else {
            return;
        };
        let now = Instant::now();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let specs: Vec<(String, String)> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or("").to_string(),
                    c["image"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let fresh = self.wl.pods.get(kk).is_none_or(|s| s.uid != uid);
        if fresh {
            self.wl.ip_seq += 1;
            let n = self.wl.ip_seq;
            let sim = PodSim {
                uid: uid.clone(),
                seen: now,
                start_time: timestamp(),
                node: node.clone(),
                ip: format!("10.244.{}.{}", node_index + 1, (n % 250) + 2),
                containers: specs.iter().map(|(n, i)| Ctr::new(n, i, now)).collect(),
                mount_repeat: None,
            };
            self.wl.pods.insert(kk.clone(), sim);
        }
        let mut sim = self.wl.pods.get(kk).cloned().unwrap();
        // A changed image restarts its container with the new one.
        for (name, image) in &specs {
            match sim.containers.iter_mut().find(|c| c.name == *name) {
                Some(c) if c.image != *image => {
                    let restarts = c.restarts + i64::from(c.ran);
                    *c = Ctr::new(name, image, now);
                    c.restarts = restarts;
                }
                Some(_) => {}
                None => sim.containers.push(Ctr::new(name, image, now)),
            }
        }
        sim.containers
            .retain(|c| specs.iter().any(|(n, _)| *n == c.name));
        let restart = pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
            .to_string();
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
        };
        let behaviours: Vec<PodBehaviour> = sim
            .containers
            .iter()
            .map(|c| {
                let (b, recheck) = self.behaviour(pod, &c.image, sim.seen, now);
                soonest(recheck);
                b
            })
            .collect();
        let ran = sim.containers.iter().any(|c| c.ran);
        let mount = (!ran && behaviours.contains(&PodBehaviour::FailedMount)).then(|| {
            "MountVolume.SetUp failed for volume \"config\" : configmap \"missing\" not found"
                .to_string()
        });
        let held =
            !ran && mount.is_none() && behaviours.iter().all(|b| *b == PodBehaviour::Pending);
        let name = kk.4.clone();
        let cx = PodCx {
            name: &name,
            ns: &kk.3,
            uid: &uid,
            restart: &restart,
            blocked: mount.is_some(),
        };
        let mut events: Vec<Ev> = Vec::new();
        for (c, b) in sim.containers.iter_mut().zip(&behaviours) {
            soonest(c.step(b, now, &cx, &mut events));
        }
        if let Some(m) = &mount {
            if sim.mount_repeat.is_none_or(|r| now >= r) {
                events.push(Ev {
                    kind: "Warning",
                    reason: "FailedMount",
                    message: m.clone(),
                    container: None,
                });
                sim.mount_repeat = Some(now + REPEAT);
            }
            soonest(sim.mount_repeat);
        } else {
            sim.mount_repeat = None;
        }

        // The status the kubelet reports.
        let old = pod["status"].clone();
        let ph = phase(&sim.containers, &restart);
        let terminal = matches!(ph, "Succeeded" | "Failed");
        let sandbox = mount.is_none() && !held && !terminal;
        let unready: Vec<&str> = sim
            .containers
            .iter()
            .filter(|c| !(c.ready && matches!(c.state, CState::Running { .. })))
            .map(|c| c.name.as_str())
            .collect();
        let (ready, reason, message) = match ph {
            "Succeeded" => (false, Some("PodCompleted"), None),
            "Failed" => (false, Some("PodFailed"), None),
            _ if unready.is_empty() => (true, None, None),
            _ => (
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            ),
        };
        let host_ip = self
            .objects
            .get(&(
                String::new(),
                "v1".into(),
                "nodes".into(),
                String::new(),
                node.clone(),
            ))
            .and_then(|n| {
                n["status"]["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let scheduled = old["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| pod_condition("PodScheduled", true, None, None, &old));
        let mut status = json!({
            "phase": ph,
            "conditions": [
                pod_condition("PodReadyToStartContainers", sandbox, None, None, &old),
                pod_condition("Initialized", true, None, None, &old),
                pod_condition("Ready", ready, reason, message.as_deref(), &old),
                pod_condition("ContainersReady", ready, reason, message.as_deref(), &old),
                scheduled,
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": sim.start_time,
            "containerStatuses": sim.containers.iter().map(Ctr::status).collect::<Vec<_>>(),
            "qosClass": old["qosClass"].as_str().unwrap_or("BestEffort"),
        });
        if sandbox || ran {
            status["podIP"] = json!(sim.ip);
            status["podIPs"] = json!([{"ip": sim.ip}]);
        }
        let _ = &sim.node;
        self.wl.pods.insert(kk.clone(), sim);
        let stored = if old != status {
            let Some(k) = self.find_kind("", "v1", "pods") else {
                return;
            };
            let mut new = pod.clone();
            new["status"] = status;
            fields::update(&mut new, Some(pod), None, "kubelet", Part::Status, &k);
            self.finish_write(&k, Some(&kk.3), &kk.4, new, false, true)
        } else {
            pod.clone()
        };
        for e in events {
            let field_path = e.container.map(|c| format!("spec.containers{{{c}}}"));
            self.emit(NewEvent {
                object: &stored,
                field_path,
                kind: e.kind,
                reason: e.reason,
                message: e.message,
                component: "kubelet",
                host: Some(&node),
                style: Style::Legacy,
            });
        }
        if let Some(t) = next {
            self.wl.due(kk, t);
        }
    }

    /// Seed the cluster's nodes.
    pub(super) fn seed_nodes(&mut self) {
        let Some(k) = self.find_kind("", "v1", "nodes") else {
            return;
        };
        for (i, name) in NODES.iter().enumerate() {
            if self.objects.contains_key(&key(&k, None, name)) {
                continue;
            }
            let mut node = node_object(name, i);
            fields::update(&mut node, None, None, "kubelet", Part::Main, &k);
            self.finish_write(&k, None, name, node, false, true);
        }
    }
}

/// The kubelet's memory, kept with the workload controllers' state.
pub(super) type Pods = HashMap<Key, PodSim>;
