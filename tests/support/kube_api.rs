//! The Kubernetes API server stand-in: the project's only stand-in.
//!
//! No API server can run on our build machines, so tests talk to this
//! in-process HTTP server on `127.0.0.1`. It speaks the subset of the
//! Kubernetes 1.32 API that chump (kube-rs) and the real `kubectl` use, and
//! runs the controllers, scheduler and kubelets whose writes chump reads —
//! what it reports must be what a real cluster would report:
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{g}`,
//!   `/apis/{g}/{v}` (non-aggregated; clients asking for aggregated discovery
//!   get `application/json` and fall back; every kind lists the verbs
//!   create, delete, deletecollection, get, list, patch, update and watch,
//!   plus its `status`, `scale` and `namespaces/finalize` subresources), and a
//!   minimal OpenAPI v3 (`/openapi/v3` and one document per group-version)
//!   that tells kubectl the server does field validation, so `kubectl apply`
//!   needs no client-side schema;
//! - objects in memory: get, list (namespaced and across namespaces; label
//!   selectors with `=`, `!=`, `in`, `notin`, `key`, `!key`; field selectors
//!   on the fields each kind really supports, others a 400 ([`selectors`]);
//!   `Table` renderings with the real printers' columns ([`tables`]) and
//!   `PartialObjectMetadata`), watch ([`watch`]), create, replace,
//!   server-side apply (`application/apply-patch+yaml`, with field-manager
//!   conflicts unless `force=true`), merge patch and strategic merge patch,
//!   the `status` subresource, the `scale` subresource of Deployments,
//!   StatefulSets and ReplicaSets (an `autoscaling/v1` `Scale`), and
//!   `dryRun=All`;
//! - delete as the real server does it ([`gc`]): `DeleteOptions` (body or
//!   query), preconditions, propagation policies and finalizers, deletion
//!   timestamps, and the controllers that finish deletions: the garbage
//!   collector (owner references: deleting a Deployment takes its
//!   ReplicaSets and their pods), the namespace controller (a terminating
//!   Namespace deletes what it holds, pods and events too, refuses new
//!   content, and goes once empty) and the CRD finalizer (a CRD being
//!   deleted deletes its custom resources first);
//! - server-kept metadata: `uid`, `creationTimestamp`, `resourceVersion` (one
//!   global counter, bumped only when an object really changes), `generation`
//!   (bumped when `spec` changes, and when deletion starts), and
//!   `managedFields` kept as structured-merge-diff keeps them ([`fields`]):
//!   an update's changed fields move to its manager, an apply owns exactly
//!   what it applies and removes what it stopped applying; the defaults the
//!   real server gives Pods, Jobs (selector, labels, parallelism, backoff
//!   limit), StatefulSets and DaemonSets (update strategies); a Job's pod
//!   template is immutable (422);
//! - the workload controllers of kube-controller-manager ([`workloads`]):
//!   Deployments (a ReplicaSet per pod template, `pod-template-hash`,
//!   revisions, RollingUpdate and Recreate, the real status and conditions
//!   including `ProgressDeadlineExceeded` and `ReplicaFailure`), ReplicaSets
//!   (pods, `FailedCreate`), StatefulSets (ordered pods, revisions,
//!   partitions), DaemonSets (a pod per node) and Jobs (completions, backoff
//!   limit, `Complete` / `Failed`); the scheduler and a kubelet per node
//!   ([`kubelet`]; the nodes `node-1` and `node-2`, served as Nodes)
//!   whose pods behave as the test steers them by image ([`PodBehaviour`]),
//!   with the kubelet's states, conditions and messages; events
//!   ([`events`]) as the components record them, repeats counted;
//! - a log of every request, so a test can assert that nothing was written
//!   (the controllers' own writes are not requests), with the user it was
//!   made as (`Impersonate-User`);
//! - user impersonation and RBAC ([`rbac`]): the caller is an administrator
//!   who may impersonate; an impersonated request (a ServiceAccount gets
//!   its groups) is allowed only by the Roles, ClusterRoles, RoleBindings
//!   and ClusterRoleBindings stored in the stand-in (verbs, API groups,
//!   resources and subresources, resource names; discovery is open to
//!   every user), else it gets the real 403 `Forbidden` Status;
//! - [`KubeApi::start_tls`]: the same server behind TLS (a CA and a server
//!   certificate for `127.0.0.1` and `localhost`, made with rcgen) that also
//!   demands a bearer token (401 without it), as a pod's service account
//!   meets the real API server.
//!
//! The controllers run as the real ones do, a little after the change that
//! concerns them (100 ms, [`CONTROLLER_DELAY`]) and again whenever their own
//! writes or a timed event (a container starting, a deadline) call for it;
//! they look only at what changed or came due, and hold the lock at most
//! 20 ms at a time. So the answer to a write is the object as written (a
//! Deployment's `observedGeneration` still the old one), and a test reads
//! the controllers' results by waiting for them ([`KubeApi::settle`], or a
//! condition with a deadline). A Deployment with pods that become ready
//! rolls out in about 200 ms.
//!
//! Kinds live in a table ([`KINDS`]): adding a kind is one entry. Creating a
//! CustomResourceDefinition adds its kinds while it exists.
//!
//! # Steering from a test
//!
//! - [`KubeApi::set_pod_behaviour`]`(image, `[`PodBehaviour`]`)` /
//!   [`KubeApi::clear_pod_behaviour`]`(image)`: what the kubelet (or the
//!   scheduler) does with containers of exactly that image — `Ready` (the
//!   default for every other image), `Pending`, `ImagePullBackOff`,
//!   `InvalidImageName`, `CreateContainerConfigError(message)`,
//!   `CreateContainerError(message)`, `CrashLoopBackOff`, `Unschedulable`,
//!   `NotReady`, `FailedMount`; existing pods are re-evaluated at once (fix
//!   the registry and the pods start);
//! - [`KubeApi::set_rollout`]`(`[`RolloutMode`]`)` /
//!   [`KubeApi::set_rollout_for`]`(ns, name, mode)`: how a Deployment's new
//!   pods behave when their image has no behaviour of its own (`Immediate`,
//!   `Never`, `Fail` — also past its progress deadline at once —,
//!   `After(delay)`);
//! - [`KubeApi::refuse_pods`]`(ns, Some(reason))` / `(ns, None)`: pod
//!   creation in `ns` refused as by a ResourceQuota (403 `pods "…" is
//!   forbidden: <reason>`; controllers record `FailedCreate`);
//! - [`KubeApi::add_event`]: an event about an object, as a component
//!   records it; [`KubeApi::events_about`], [`KubeApi::pods`]: reading back;
//! - [`KubeApi::settle`]: wait until the controllers have nothing queued;
//! - seeding and drift: [`KubeApi::put_object`], [`KubeApi::put_namespace`],
//!   [`KubeApi::put_deployment`], [`KubeApi::put_deployment_with`],
//!   [`KubeApi::set_image`]; impersonation:
//!   [`KubeApi::set_may_impersonate`]; faults: [`KubeApi::set_delay`],
//!   [`KubeApi::stop`], [`KubeApi::restart`].
//!
//! # Approximations (documented, deliberate)
//!
//! There is no OpenAPI schema, so server-side apply deep-merges the applied
//! configuration into the object (maps merge, lists of objects that all
//! carry `name` merge by name, other lists are replaced), and field
//! ownership types lists the same way (lists of named objects are
//! associative by `name` — ports too, where the real key is port and
//! protocol —, `metadata.ownerReferences` by `uid`, `metadata.finalizers` is
//! a set, the rest atomic); defaulting covers the fields listed above, not
//! a Deployment's strategy or a pod template's. A Namespace that goes takes
//! whatever it still holds (objects of kinds no longer served, or left when
//! it was finalized by hand), where the real one leaves them in etcd.
//! Pods are deleted at once (no graceful termination, no `Terminating`
//! pods); pod specs are not validated nor made immutable; init containers,
//! probes, resources and volumes are not run (a behaviour stands for them);
//! a crash-looping container is never ready between its crashes, and its
//! back-off is ~500 ms whatever the message says. ReplicaSets do not adopt
//! orphan pods; StatefulSets make no PersistentVolumeClaims; `minReadySeconds`
//! is honoured, `maxSurge` of DaemonSets and Indexed Jobs are not; a failed
//! Job pod is replaced at once (no back-off), Job pods carry no tracking
//! finalizer, and a Job counts pods rather than `uncountedTerminatedPods`.
//! The controllers' revision annotation on a Deployment is not in
//! `managedFields`. No CronJob, HorizontalPodAutoscaler, Endpoints or
//! PersistentVolume controller runs. The event store keeps the newest 5,000 events (the real
//! one expires them after an hour); no event aggregation ("combined from
//! similar events"). Watches send no periodic bookmarks. No JSON patch, no
//! protobuf; no authentication unless started with [`KubeApi::start_tls`]
//! (one bearer token); RBAC only for impersonated requests (see [`rbac`]
//! for what it leaves out).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// Paths spelled out: the file is also included with `#[path]` (benches),
// which would look for its modules next to it.
#[path = "kube_api/events.rs"]
mod events;
#[path = "kube_api/fields.rs"]
mod fields;
#[path = "kube_api/gc.rs"]
mod gc;
#[path = "kube_api/kubelet.rs"]
mod kubelet;
#[path = "kube_api/rbac.rs"]
mod rbac;
#[path = "kube_api/selectors.rs"]
mod selectors;
#[path = "kube_api/subresources.rs"]
mod subresources;
#[path = "kube_api/tables.rs"]
mod tables;
#[path = "kube_api/watch.rs"]
mod watch;
#[path = "kube_api/workloads.rs"]
mod workloads;

use fields::Part;
use selectors::{field_value, parse_fields, parse_labels};
use subresources::has_scale;

pub use kubelet::PodBehaviour;

/// One kind the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSpec {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `status` subresource: writes to the object ignore `status`.
    pub status: bool,
    /// Keeps `metadata.generation`.
    pub generation: bool,
}

#[allow(clippy::too_many_arguments)]
const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    generation: bool,
) -> KindSpec {
    KindSpec {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        status,
        generation,
    }
}

const NS: bool = true;
const CLUSTER: bool = false;

/// The built-in kinds. One line per kind:
/// group, version, plural, singular, Kind, scope, short names, status subresource, generation.
#[rustfmt::skip]
pub const KINDS: &[KindSpec] = &[
    kind("", "v1", "namespaces", "namespace", "Namespace", CLUSTER, &["ns"], true, false),
    kind("", "v1", "configmaps", "configmap", "ConfigMap", NS, &["cm"], false, false),
    kind("", "v1", "secrets", "secret", "Secret", NS, &[], false, false),
    kind("", "v1", "services", "service", "Service", NS, &["svc"], true, false),
    kind("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount", NS, &["sa"], false, false),
    kind("", "v1", "pods", "pod", "Pod", NS, &["po"], true, false),
    kind("", "v1", "events", "event", "Event", NS, &["ev"], false, false),
    kind("", "v1", "nodes", "node", "Node", CLUSTER, &["no"], true, false),
    kind("", "v1", "persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", NS, &["pvc"], true, false),
    kind("", "v1", "persistentvolumes", "persistentvolume", "PersistentVolume", CLUSTER, &["pv"], true, false),
    kind("", "v1", "endpoints", "endpoints", "Endpoints", NS, &["ep"], false, false),
    kind("", "v1", "limitranges", "limitrange", "LimitRange", NS, &["limits"], false, false),
    kind("", "v1", "resourcequotas", "resourcequota", "ResourceQuota", NS, &["quota"], true, false),
    kind("apps", "v1", "deployments", "deployment", "Deployment", NS, &["deploy"], true, true),
    kind("apps", "v1", "statefulsets", "statefulset", "StatefulSet", NS, &["sts"], true, true),
    kind("apps", "v1", "daemonsets", "daemonset", "DaemonSet", NS, &["ds"], true, true),
    kind("apps", "v1", "replicasets", "replicaset", "ReplicaSet", NS, &["rs"], true, true),
    kind("apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", NS, &[], false, false),
    kind("batch", "v1", "jobs", "job", "Job", NS, &[], true, true),
    kind("batch", "v1", "cronjobs", "cronjob", "CronJob", NS, &["cj"], true, true),
    kind("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", NS, &["ing"], true, true),
    kind("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", NS, &["netpol"], false, true),
    kind("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", NS, &[], false, false),
    kind("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", NS, &[], false, false),
    kind("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", CLUSTER, &[], false, false),
    kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", CLUSTER, &[], false, false),
    kind("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", NS, &["pdb"], true, true),
    kind("storage.k8s.io", "v1", "storageclasses", "storageclass", "StorageClass", CLUSTER, &["sc"], false, false),
    kind("autoscaling", "v2", "horizontalpodautoscalers", "horizontalpodautoscaler", "HorizontalPodAutoscaler", NS, &["hpa"], true, true),
    kind("coordination.k8s.io", "v1", "leases", "lease", "Lease", NS, &[], false, false),
    kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "customresourcedefinition", "CustomResourceDefinition", CLUSTER, &["crd", "crds"], true, true),
];

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const MAX_BODY: usize = 32 * 1024 * 1024;

/// How a Deployment's new pods behave, when their images have no
/// [`PodBehaviour`] of their own (globally with [`KubeApi::set_rollout`],
/// per Deployment with [`KubeApi::set_rollout_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RolloutMode {
    /// New pods become ready at once (≈100 ms): the rollout completes
    /// (`Available=True`, `Progressing=True`, `NewReplicaSetAvailable`).
    #[default]
    Immediate,
    /// New pods never become ready (`ContainerCreating`): the new
    /// ReplicaSet's replicas are updated but never available, old ones stay.
    Never,
    /// Like `Never`, and the Deployment reports `Progressing=False` with
    /// `ProgressDeadlineExceeded` at once, as if its deadline had passed.
    Fail,
    /// New pods become ready once the duration has passed since their
    /// creation.
    After(Duration),
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    /// The `Impersonate-User` header: the user the request was made as
    /// (None: the stand-in's administrator, [`rbac`]).
    pub impersonate_user: Option<String>,
    pub body: String,
}

impl RecordedRequest {
    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// (group, version, plural, namespace or "", name)
type Key = (String, String, String, String, String);

/// Work the stand-in's "controllers" do a little later.
enum Timer {
    /// The controllers again at an instant something is due (a container
    /// starting, a progress deadline).
    Wake(Instant),
    /// The controllers ([`gc`], [`workloads`], [`kubelet`]), after a change.
    Controllers(Duration),
    /// The namespace controller's turn to empty a terminating Namespace.
    NamespaceDue(String, Duration),
}

/// How long after a change the controllers look at it (the real ones react
/// to watch events, a little later than the request that caused them).
const CONTROLLER_DELAY: Duration = Duration::from_millis(100);

/// How long after a Namespace is deleted the namespace controller starts
/// deleting what it holds (the real one works from a queue; meanwhile its
/// objects can still be read and deleted, as with a real, terminating
/// namespace).
const NAMESPACE_DELAY: Duration = Duration::from_secs(1);

struct Inner {
    kinds: Vec<KindSpec>,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    uid: u64,
    requests: Vec<RecordedRequest>,
    /// The administrator may impersonate ([`KubeApi::set_may_impersonate`]).
    may_impersonate: bool,
    rollout: RolloutMode,
    rollout_for: HashMap<(String, String), RolloutMode>,
    /// The garbage collector's owner graph and queue.
    graph: gc::Graph,
    /// The workload controllers', scheduler's and kubelets' state.
    wl: workloads::State,
    /// The stored events, for the recorders' correlation.
    ev: events::EventLog,
    /// Timers to start once the lock is released.
    timers: Vec<Timer>,
    /// A [`Timer::Controllers`] is pending.
    controllers_scheduled: bool,
    /// Terminating Namespaces the namespace controller may empty.
    namespaces_due: HashSet<String>,
    /// The last stored changes, oldest first ([`watch`]).
    events: std::collections::VecDeque<watch::Event>,
    /// The resourceVersion before the oldest logged event.
    events_floor: u64,
    /// The resourceVersion of the last logged event, for watches to wait on.
    changes: tokio::sync::watch::Sender<u64>,
}

struct Shared {
    inner: Mutex<Inner>,
    addr: SocketAddr,
    /// Set by [`KubeApi::start_tls`]: the server's TLS and the CA that signed it.
    tls: Option<TlsSetup>,
    /// Set by [`KubeApi::start_tls`]: every request needs `Authorization: Bearer <token>`.
    token: Option<String>,
    /// Requests answered 401 (no or a wrong token).
    unauthorized: std::sync::atomic::AtomicUsize,
    /// Added before answering each request (a slow API server).
    delay: Mutex<Duration>,
    /// Bumped by [`KubeApi::stop`]: open watches end.
    closing: tokio::sync::watch::Sender<u64>,
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The stand-in server. Stops when dropped.
pub struct KubeApi {
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

/// An error answer: HTTP code plus a `metav1.Status` body.
struct Failure {
    code: u16,
    reason: &'static str,
    message: String,
    details: Value,
}

type Res<T> = Result<T, Failure>;

fn failure(code: u16, reason: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        code,
        reason,
        message: message.into(),
        details: Value::Null,
    }
}

fn page_not_found() -> Failure {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn bad_request(message: impl Into<String>) -> Failure {
    failure(400, "BadRequest", message)
}

fn resource_name(k: &KindSpec) -> String {
    if k.group.is_empty() {
        k.plural.to_string()
    } else {
        format!("{}.{}", k.plural, k.group)
    }
}

fn not_found(k: &KindSpec, name: &str) -> Failure {
    Failure {
        code: 404,
        reason: "NotFound",
        message: format!("{} \"{name}\" not found", resource_name(k)),
        details: json!({"name": name, "group": k.group, "kind": k.plural}),
    }
}

fn namespace_not_found(ns: &str) -> Failure {
    Failure {
        code: 404,
        reason: "NotFound",
        message: format!("namespaces \"{ns}\" not found"),
        details: json!({"name": ns, "kind": "namespaces"}),
    }
}

fn already_exists(k: &KindSpec, name: &str) -> Failure {
    Failure {
        code: 409,
        reason: "AlreadyExists",
        message: format!("{} \"{name}\" already exists", resource_name(k)),
        details: json!({"name": name, "group": k.group, "kind": k.plural}),
    }
}

fn status_body(f: &Failure) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f.message,
        "reason": f.reason,
        "code": f.code,
    });
    if !f.details.is_null() {
        s["details"] = omit_empty(&f.details);
    }
    s
}

/// `StatusDetails` as Go encodes it: empty `name`, `group`, `kind` and
/// `uid` are omitted.
fn omit_empty(details: &Value) -> Value {
    let mut d = details.clone();
    if let Some(m) = d.as_object_mut() {
        m.retain(|_, v| v.as_str() != Some(""));
    }
    d
}

fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    resp
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn timestamp() -> String {
    now().format(&Rfc3339).unwrap()
}

fn api_version_of(k: &KindSpec) -> String {
    if k.group.is_empty() {
        k.version.to_string()
    } else {
        format!("{}/{}", k.group, k.version)
    }
}

fn key(k: &KindSpec, ns: Option<&str>, name: &str) -> Key {
    (
        k.group.to_string(),
        k.version.to_string(),
        k.plural.to_string(),
        ns.unwrap_or("").to_string(),
        name.to_string(),
    )
}

fn split_group_version(gv: &str) -> (&str, &str) {
    match gv.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", gv),
    }
}

impl KubeApi {
    /// Start on 127.0.0.1 with a free port.
    pub async fn start() -> KubeApi {
        Self::start_with(None, None).await
    }

    /// Start on 127.0.0.1 with a free port, over TLS (a fresh CA and a server
    /// certificate for `127.0.0.1` and `localhost`; [`Self::ca_pem`]), and
    /// answer 401 to every request without `Authorization: Bearer <token>`.
    /// [`Self::url`] is `https://…` and [`Self::kubeconfig`] carries the CA
    /// and the token.
    pub async fn start_tls(token: &str) -> KubeApi {
        Self::start_with(Some(TlsSetup::generate()), Some(token.to_string())).await
    }

    async fn start_with(tls: Option<TlsSetup>, token: Option<String>) -> KubeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            addr,
            tls,
            token,
            unauthorized: Default::default(),
            delay: Mutex::new(Duration::ZERO),
            closing: tokio::sync::watch::Sender::new(0),
            inner: Mutex::new(Inner {
                kinds: KINDS.to_vec(),
                objects: BTreeMap::new(),
                rv: 1000,
                uid: 0,
                requests: Vec::new(),
                may_impersonate: true,
                rollout: RolloutMode::Immediate,
                rollout_for: HashMap::new(),
                graph: gc::Graph::default(),
                wl: workloads::State::default(),
                ev: events::EventLog::default(),
                timers: Vec::new(),
                controllers_scheduled: false,
                namespaces_due: HashSet::new(),
                events: std::collections::VecDeque::new(),
                events_floor: 1000,
                changes: tokio::sync::watch::Sender::new(1000),
            }),
        });
        let api = KubeApi {
            shared,
            running: Mutex::new(None),
        };
        api.serve(listener);
        api.put_namespace("default");
        api.put_namespace("kube-system");
        api.lock().seed_nodes();
        api
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(handle)
            .with_state(self.shared.clone());
        let tls = self.shared.tls.as_ref().map(|t| t.server.clone());
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            match tls {
                None => {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await;
                }
                Some(config) => {
                    let _ = axum::serve(TlsListener::new(listener, config), app)
                        .with_graceful_shutdown(stopped)
                        .await;
                }
            }
        });
        *self.running.lock().unwrap() = Some(Running { stop, task });
    }

    /// The PEM of the CA that signed the server certificate (TLS only).
    pub fn ca_pem(&self) -> Option<String> {
        self.shared.tls.as_ref().map(|t| t.ca_pem.clone())
    }

    /// The bearer token the server demands (TLS only).
    pub fn token(&self) -> Option<String> {
        self.shared.token.clone()
    }

    /// How many requests were answered 401 (no or a wrong token).
    pub fn unauthorized(&self) -> usize {
        self.shared
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` when started with [`Self::start_tls`])
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.shared.addr)
    }

    /// Stop listening (objects are kept); connections are closed once their
    /// request is answered. [`Self::restart`] listens again on the same port.
    pub async fn stop(&self) {
        self.shared.closing.send_modify(|g| *g += 1);
        let running = self.running.lock().unwrap().take();
        if let Some(Running { stop, mut task }) = running {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(3), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Listen again on the same port after [`Self::stop`].
    pub async fn restart(&self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.shared.addr)
            .await
            .expect("bind the same port again");
        self.serve(listener);
    }

    /// Stop for good.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    /// Answer every request only after `delay` (a slow API server).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Write a kubeconfig for this server into `dir` (plain http, no
    /// credentials; under [`Self::start_tls`], the CA in `dir/stand-in-ca.crt`
    /// and the token) and return its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let mut ca = String::new();
        if let Some(pem) = self.ca_pem() {
            let ca_path = dir.join("stand-in-ca.crt");
            std::fs::write(&ca_path, pem).expect("write the CA");
            ca = format!("    certificate-authority: {}\n", ca_path.display());
        }
        let user = match &self.shared.token {
            Some(token) => format!("\n    token: {token}"),
            None => " {}".to_string(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n{ca}\
             contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n    namespace: default\n\
             current-context: stand-in\nusers:\n- name: stand-in\n  user:{user}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Whether the stand-in's administrator (every caller) may impersonate
    /// users (`Impersonate-User`): on by default; off, an impersonating
    /// request gets the impersonation filter's 403.
    pub fn set_may_impersonate(&self, may: bool) {
        self.lock().may_impersonate = may;
    }

    /// Forget the requests so far.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The POST, PUT, PATCH and DELETE requests so far.
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.is_write())
            .cloned()
            .collect()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One stored object. `group_version` is `v1`, `apps/v1`, …; `ns` is
    /// `None` for cluster-scoped kinds.
    pub fn get_object(
        &self,
        group_version: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (g, v) = split_group_version(group_version);
        let k = (
            g.into(),
            v.into(),
            plural.into(),
            ns.unwrap_or("").into(),
            name.into(),
        );
        self.lock().objects.get(&k).cloned()
    }

    /// Every stored object of a kind, in one namespace or (`None`) all.
    pub fn list_objects(&self, group_version: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let (g, v) = split_group_version(group_version);
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == g && k.1 == v && k.2 == plural && ns.is_none_or(|ns| k.3 == ns))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Seed an object, as a create-or-replace by manager `test` (no request is
    /// logged). Panics on a kind the stand-in does not know or a missing namespace.
    pub fn put_object(&self, obj: Value) -> Value {
        let out = {
            let mut inner = self.lock();
            let gv = obj["apiVersion"].as_str().expect("apiVersion").to_string();
            let kind_name = obj["kind"].as_str().expect("kind").to_string();
            let (g, v) = split_group_version(&gv);
            let k = *inner
                .kinds
                .iter()
                .find(|k| k.group == g && k.version == v && k.kind == kind_name)
                .unwrap_or_else(|| panic!("unknown kind {gv} {kind_name}"));
            let name = obj["metadata"]["name"]
                .as_str()
                .expect("metadata.name")
                .to_string();
            let ns = if k.namespaced {
                Some(
                    obj["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                )
            } else {
                None
            };
            if let Some(ns) = &ns {
                assert!(inner.namespace_exists(ns), "namespace {ns} does not exist");
            }
            let mut obj = obj;
            if let Some(ns) = &ns {
                obj["metadata"]["namespace"] = json!(ns);
            }
            let old = inner.objects.get(&key(&k, ns.as_deref(), &name)).cloned();
            let mut new = obj.clone();
            if let (Some(old), true) = (&old, k.status) {
                new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
                strip_nulls_top(&mut new);
            }
            fields::update(&mut new, old.as_ref(), Some(&obj), "test", Part::Main, &k);
            inner.finish_write(&k, ns.as_deref(), &name, new, false, false)
        };
        self.start_timers();
        out
    }

    /// Seed a Namespace (no-op when it exists).
    pub fn put_namespace(&self, name: &str) {
        if self.get_object("v1", "namespaces", None, name).is_none() {
            self.put_object(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            );
        }
    }

    /// Seed a Deployment with one container named like the Deployment; creates
    /// the namespace if needed.
    pub fn put_deployment(&self, ns: &str, name: &str, image: &str) -> Value {
        self.put_deployment_with(ns, name, &[(name, image)])
    }

    /// Seed a Deployment with the given (container, image) pairs.
    pub fn put_deployment_with(&self, ns: &str, name: &str, containers: &[(&str, &str)]) -> Value {
        self.put_namespace(ns);
        let containers: Vec<Value> = containers
            .iter()
            .map(|(c, i)| json!({"name": c, "image": i}))
            .collect();
        self.put_object(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": containers}
                }
            }
        }))
    }

    /// Change a container's image in place, like `kubectl set image` by hand
    /// (drift). Returns false when the Deployment or container is missing.
    pub fn set_image(&self, ns: &str, name: &str, container: &str, image: &str) -> bool {
        let Some(mut d) = self.get_object("apps/v1", "deployments", Some(ns), name) else {
            return false;
        };
        let Some(cs) = d["spec"]["template"]["spec"]["containers"].as_array_mut() else {
            return false;
        };
        let Some(c) = cs.iter_mut().find(|c| c["name"] == container) else {
            return false;
        };
        c["image"] = json!(image);
        {
            let mut inner = self.lock();
            let k = *inner
                .kinds
                .iter()
                .find(|k| k.plural == "deployments")
                .unwrap();
            inner.commit(&k, Some(ns), name, d, false);
        }
        self.start_timers();
        true
    }

    /// Rollout behaviour for every Deployment without its own mode.
    /// Re-evaluates existing Deployments and their pods.
    pub fn set_rollout(&self, mode: RolloutMode) {
        {
            let mut inner = self.lock();
            inner.rollout = mode;
            inner.mark_all_workloads(None);
        }
        self.start_timers();
    }

    /// Rollout behaviour for one Deployment. Re-evaluates it and its pods.
    pub fn set_rollout_for(&self, ns: &str, name: &str, mode: RolloutMode) {
        {
            let mut inner = self.lock();
            inner
                .rollout_for
                .insert((ns.to_string(), name.to_string()), mode);
            inner.mark_all_workloads(Some(ns));
        }
        self.start_timers();
    }

    /// What the kubelet does with containers whose image is exactly
    /// `image` (any other image: [`PodBehaviour::Ready`]). Re-evaluates
    /// existing pods at once.
    pub fn set_pod_behaviour(&self, image: &str, behaviour: PodBehaviour) {
        {
            let mut inner = self.lock();
            inner.wl.behaviours.insert(image.to_string(), behaviour);
            inner.mark_all_workloads(None);
        }
        self.start_timers();
    }

    /// Back to the default ([`PodBehaviour::Ready`]) for `image`: "the
    /// registry is fixed". Re-evaluates existing pods at once.
    pub fn clear_pod_behaviour(&self, image: &str) {
        {
            let mut inner = self.lock();
            inner.wl.behaviours.remove(image);
            inner.mark_all_workloads(None);
        }
        self.start_timers();
    }

    /// Refuse (`Some(reason)`, e.g. `exceeded quota: compute, requested:
    /// pods=1, used: pods=2, limited: pods=2`) or allow again (`None`) the
    /// creation of pods in `ns`, as a ResourceQuota admission would: a 403
    /// `pods "<name>" is forbidden: <reason>` to clients, `FailedCreate`
    /// for the controllers.
    pub fn refuse_pods(&self, ns: &str, reason: Option<&str>) {
        {
            let mut inner = self.lock();
            match reason {
                Some(r) => inner.wl.refused.insert(ns.to_string(), r.to_string()),
                None => inner.wl.refused.remove(ns),
            };
            inner.mark_all_workloads(Some(ns));
        }
        self.start_timers();
    }

    /// Record an event about `object` (a stored object, e.g. from
    /// [`Self::get_object`]) as `component` would, through the legacy
    /// recorder: the same event again bumps `count`. `kind` is `Normal` or
    /// `Warning`. Returns the stored event.
    pub fn add_event(
        &self,
        object: &Value,
        kind: &'static str,
        reason: &str,
        message: &str,
        component: &str,
    ) -> Option<Value> {
        let out = self.lock().emit(events::NewEvent {
            object,
            field_path: None,
            kind,
            reason,
            message: message.to_string(),
            component,
            host: None,
            style: events::Style::Legacy,
        });
        self.start_timers();
        out
    }

    /// The events about the object `kind`/`name` in `ns`, in the order they
    /// last changed (created or repeated).
    pub fn events_about(&self, ns: &str, kind: &str, name: &str) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .list_objects("v1", "events", Some(ns))
            .into_iter()
            .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
            .collect();
        out.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
        });
        out
    }

    /// The pods in `ns` whose labels satisfy `selector` (a label selector
    /// string, `""` for all), by name. Panics on a selector the API server
    /// would refuse.
    pub fn pods(&self, ns: &str, selector: &str) -> Vec<Value> {
        let sel = parse_labels(selector)
            .unwrap_or_else(|f| panic!("label selector {selector:?}: {}", f.message));
        self.list_objects("v1", "pods", Some(ns))
            .into_iter()
            .filter(|p| sel.iter().all(|r| r.matches(label_of(p, &r.key))))
            .collect()
    }

    /// Wait (up to `timeout`) until the controllers have nothing queued for
    /// the next second: what the last changes set in motion has happened
    /// (crash-looping or back-off pods never settle). Whether they settled.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.start_timers();
            let idle = {
                let inner = self.lock();
                !inner.controllers_scheduled
                    && inner.graph.idle()
                    && inner.wl.idle_until(Instant::now() + Duration::from_secs(1))
            };
            if idle {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_timers(&self) {
        start_timers(&self.shared);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(Running { stop, task }) = self.running.lock().unwrap().take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// Start the timers the last change asked for (they stay queued while
/// there is no Tokio runtime to run them on).
fn start_timers(shared: &Arc<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let timers = {
        let mut inner = shared.inner.lock().unwrap();
        inner.arm_wake();
        std::mem::take(&mut inner.timers)
    };
    for timer in timers {
        let weak: Weak<Shared> = Arc::downgrade(shared);
        runtime.spawn(async move {
            match timer {
                Timer::Wake(at) => {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                    if let Some(shared) = weak.upgrade() {
                        {
                            let mut inner = shared.inner.lock().unwrap();
                            if inner.wl.wake_at == Some(at) {
                                inner.wl.wake_at = None;
                            }
                            if inner.run_controllers() {
                                inner.kick();
                            }
                        }
                        start_timers(&shared);
                    }
                }
                Timer::NamespaceDue(ns, delay) => {
                    tokio::time::sleep(delay).await;
                    if let Some(shared) = weak.upgrade() {
                        {
                            let mut inner = shared.inner.lock().unwrap();
                            inner.namespaces_due.insert(ns);
                            inner.kick();
                        }
                        start_timers(&shared);
                    }
                }
                Timer::Controllers(delay) => {
                    tokio::time::sleep(delay).await;
                    if let Some(shared) = weak.upgrade() {
                        {
                            let mut inner = shared.inner.lock().unwrap();
                            inner.controllers_scheduled = false;
                            if inner.run_controllers() {
                                inner.kick();
                            }
                        }
                        start_timers(&shared);
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------
// HTTP

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let header_str = |h: header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let rec = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_type: header_str(header::CONTENT_TYPE),
        accept: header_str(header::ACCEPT),
        user_agent: header_str(header::USER_AGENT),
        impersonate_user: parts
            .headers
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    };
    tracing::debug!(method = %rec.method, path = %rec.path, query = %rec.query, "kube stand-in request");
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(token) = &shared.token {
        let expected = format!("Bearer {token}");
        if parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(expected.as_str())
        {
            shared
                .unauthorized
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            shared.inner.lock().unwrap().requests.push(rec);
            return json_response(
                401,
                &status_body(&failure(401, "Unauthorized", "Unauthorized")),
            );
        }
    }
    let query: HashMap<String, String> = url::form_urlencoded::parse(rec.query.as_bytes())
        .into_owned()
        .collect();
    let resp = {
        let mut inner = shared.inner.lock().unwrap();
        inner.requests.push(rec.clone());
        // Impersonation, then RBAC for the impersonated user.
        let who = match rbac::impersonation(&parts.headers) {
            Ok(who) => who,
            Err(f) => return json_response(f.code, &status_body(&f)),
        };
        if let Some(who) = &who {
            if !inner.may_impersonate {
                let f = rbac::cannot_impersonate(&who.user);
                return json_response(f.code, &status_body(&f));
            }
            let attrs = rbac::attributes(&parts.method, &rec.path, &query);
            if !rbac::allowed(&inner.objects, who, &attrs) {
                let f = rbac::forbidden(who, &attrs);
                return json_response(f.code, &status_body(&f));
            }
        }
        match inner.route(&parts.method, &rec, &query, &bytes, &shared) {
            Ok(r) => r,
            Err(f) => json_response(f.code, &status_body(&f)),
        }
    };
    start_timers(&shared);
    resp
}

// ---------------------------------------------------------------------------
// TLS

/// The stand-in's TLS: a CA, and a server certificate it signed for
/// `127.0.0.1` and `localhost`.
struct TlsSetup {
    ca_pem: String,
    server: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl TlsSetup {
    fn generate() -> TlsSetup {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name
            .push(DnType::CommonName, "chump test API server CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("self-sign the CA");

        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver stand-in");
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server
            .signed_by(&server_key, &ca)
            .expect("sign the server certificate");

        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![
                    CertificateDer::from(server_cert.der().to_vec()),
                    CertificateDer::from(ca.der().to_vec()),
                ],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server certificate and key");
        // HTTP/1.1 only: the stand-in's axum serves no HTTP/2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsSetup {
            ca_pem: ca.pem(),
            server: Arc::new(config),
        }
    }
}

/// An [`axum::serve::Listener`] that hands axum TLS streams: a task accepts
/// TCP connections and runs each handshake on its own task (a client that
/// fails its handshake only loses its own connection).
struct TlsListener {
    addr: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        config: Arc<tokio_rustls::rustls::ServerConfig>,
    ) -> TlsListener {
        let addr = listener.local_addr().expect("local address");
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let tls = tokio_rustls::TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "kube stand-in: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!("kube stand-in: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            addr,
            ready,
            acceptor,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task is gone (it never ends on its own).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

enum Target {
    Collection {
        kind: KindSpec,
        ns: Option<String>,
    },
    Object {
        kind: KindSpec,
        ns: Option<String>,
        name: String,
        sub: Option<String>,
    },
}

struct Ctx<'a> {
    method: &'a Method,
    rec: &'a RecordedRequest,
    query: &'a HashMap<String, String>,
    body: &'a [u8],
    shared: &'a Arc<Shared>,
}

impl Ctx<'_> {
    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|v| v == "All")
    }
    fn accept(&self) -> &str {
        self.rec.accept.as_deref().unwrap_or("")
    }
    /// The `fieldManager` parameter, else the user agent up to its first
    /// `/` (`prefixFromUserAgent`), at most 128 characters.
    fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.clone();
        }
        let ua = self.rec.user_agent.as_deref().unwrap_or("");
        ua.split('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(128)
            .collect()
    }
    fn force(&self) -> bool {
        self.query.get("force").is_some_and(|f| f == "true")
    }
}

impl Inner {
    fn find_kind(&self, group: &str, version: &str, plural: &str) -> Option<KindSpec> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .copied()
    }

    fn group_versions(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for k in &self.kinds {
            let gv = (k.group.to_string(), k.version.to_string());
            if !out.contains(&gv) {
                out.push(gv);
            }
        }
        out
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(
            String::new(),
            "v1".into(),
            "namespaces".into(),
            String::new(),
            ns.into(),
        ))
    }

    fn route(
        &mut self,
        method: &Method,
        rec: &RecordedRequest,
        query: &HashMap<String, String>,
        body: &[u8],
        shared: &Arc<Shared>,
    ) -> Res<Response> {
        let addr = shared.addr;
        let segs: Vec<&str> = rec.path.split('/').filter(|s| !s.is_empty()).collect();
        let cx = Ctx {
            method,
            rec,
            query,
            body,
            shared,
        };
        let get_only = |r: Value| -> Res<Response> {
            if method == Method::GET {
                Ok(json_response(200, &r))
            } else {
                Err(failure(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ))
            }
        };
        match segs.as_slice() {
            ["version"] => get_only(json!({
                "major": "1", "minor": "32", "gitVersion": "v1.32.0-chump-stand-in",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
                "platform": "linux/amd64"
            })),
            ["healthz"] | ["readyz"] | ["livez"] => {
                Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
            }
            ["api"] => get_only(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]
            })),
            ["apis"] => {
                let groups: Vec<Value> = self
                    .group_versions()
                    .into_iter()
                    .filter(|(g, _)| !g.is_empty())
                    .map(|(g, v)| group_json(&g, &v))
                    .collect();
                get_only(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }
            ["apis", g] => match self.group_versions().into_iter().find(|(gg, _)| gg == g) {
                Some((g, v)) => {
                    let mut grp = group_json(&g, &v);
                    grp["kind"] = json!("APIGroup");
                    grp["apiVersion"] = json!("v1");
                    get_only(grp)
                }
                None => Err(page_not_found()),
            },
            ["openapi", "v2"] => Err(page_not_found()),
            ["openapi", "v3"] => {
                let mut paths = Map::new();
                for (g, v) in self.group_versions() {
                    let p = if g.is_empty() {
                        format!("api/{v}")
                    } else {
                        format!("apis/{g}/{v}")
                    };
                    paths.insert(
                        p.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
                    );
                }
                get_only(json!({"paths": paths}))
            }
            ["openapi", "v3", "api", v] => get_only(self.openapi_doc("", v)?),
            ["openapi", "v3", "apis", g, v] => get_only(self.openapi_doc(g, v)?),
            ["api", v, rest @ ..] => self.resource("", v, rest, &cx),
            ["apis", g, v, rest @ ..] => self.resource(g, v, rest, &cx),
            _ => Err(page_not_found()),
        }
    }

    fn openapi_doc(&self, group: &str, version: &str) -> Res<Value> {
        let mut paths = Map::new();
        let kinds: Vec<KindSpec> = self
            .kinds
            .iter()
            .filter(|k| k.group == group && k.version == version)
            .copied()
            .collect();
        if kinds.is_empty() {
            return Err(page_not_found());
        }
        for k in kinds {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let path = if k.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
            } else {
                format!("{prefix}/{}/{{name}}", k.plural)
            };
            let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
                .iter()
                .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
                .collect();
            let op = json!({
                "operationId": format!("patch{}", k.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind}
            });
            paths.insert(path, json!({"patch": op}));
        }
        Ok(json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths,
            "components": {"schemas": {}}
        }))
    }

    fn resource(&mut self, group: &str, version: &str, rest: &[&str], cx: &Ctx) -> Res<Response> {
        if !self
            .kinds
            .iter()
            .any(|k| k.group == group && k.version == version)
        {
            return Err(page_not_found());
        }
        let target = match rest {
            [] => {
                if cx.method != Method::GET {
                    return Err(failure(
                        405,
                        "MethodNotAllowed",
                        "the server does not allow this method",
                    ));
                }
                return Ok(json_response(200, &self.resource_list(group, version)));
            }
            [plural] => Target::Collection {
                kind: self
                    .find_kind(group, version, plural)
                    .ok_or_else(page_not_found)?,
                ns: None,
            },
            [plural, name] => {
                let kind = self
                    .find_kind(group, version, plural)
                    .ok_or_else(page_not_found)?;
                if kind.namespaced {
                    return Err(page_not_found());
                }
                Target::Object {
                    kind,
                    ns: None,
                    name: name.to_string(),
                    sub: None,
                }
            }
            ["namespaces", ns, plural]
                if group.is_empty()
                    && self
                        .find_kind(group, version, plural)
                        .is_some_and(|k| k.namespaced) =>
            {
                Target::Collection {
                    kind: self.find_kind(group, version, plural).unwrap(),
                    ns: Some(ns.to_string()),
                }
            }
            ["namespaces", ns, plural] if !group.is_empty() => {
                let kind = self
                    .find_kind(group, version, plural)
                    .ok_or_else(page_not_found)?;
                if !kind.namespaced {
                    return Err(page_not_found());
                }
                Target::Collection {
                    kind,
                    ns: Some(ns.to_string()),
                }
            }
            [plural, name, sub] => {
                let kind = self
                    .find_kind(group, version, plural)
                    .ok_or_else(page_not_found)?;
                if kind.namespaced {
                    return Err(page_not_found());
                }
                Target::Object {
                    kind,
                    ns: None,
                    name: name.to_string(),
                    sub: Some(sub.to_string()),
                }
            }
            ["namespaces", ns, plural, name] | ["namespaces", ns, plural, name, _] => {
                let kind = self
                    .find_kind(group, version, plural)
                    .ok_or_else(page_not_found)?;
                if !kind.namespaced {
                    return Err(page_not_found());
                }
                let sub = rest.get(4).map(|s| s.to_string());
                Target::Object {
                    kind,
                    ns: Some(ns.to_string()),
                    name: name.to_string(),
                    sub,
                }
            }
            _ => return Err(page_not_found()),
        };
        match target {
            Target::Collection { kind, ns } => match *cx.method {
                Method::GET => {
                    if cx
                        .query
                        .get("watch")
                        .is_some_and(|w| w == "true" || w == "1")
                    {
                        return self.watch(
                            Arc::downgrade(cx.shared),
                            cx.shared.closing.subscribe(),
                            &kind,
                            ns.as_deref(),
                            cx,
                        );
                    }
                    Ok(json_response(200, &self.list(&kind, ns.as_deref(), cx)?))
                }
                Method::POST => {
                    if kind.namespaced && ns.is_none() {
                        return Err(page_not_found());
                    }
                    let obj = self.create(&kind, ns.as_deref(), cx)?;
                    Ok(json_response(201, &obj))
                }
                Method::DELETE => self.delete_collection(&kind, ns.as_deref(), cx),
                _ => Err(failure(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )),
            },
            Target::Object {
                kind,
                ns,
                name,
                sub,
            } => {
                let ns = ns.as_deref();
                match sub.as_deref() {
                    None => {}
                    Some("status") if kind.status => {}
                    Some("scale") if has_scale(&kind) => return self.scale(&kind, ns, &name, cx),
                    Some("finalize") if kind.group.is_empty() && kind.plural == "namespaces" => {
                        if cx.method != Method::PUT {
                            return Err(failure(
                                405,
                                "MethodNotAllowed",
                                "the server does not allow this method on the requested resource",
                            ));
                        }
                        return self.finalize(&kind, &name, cx);
                    }
                    Some(_) => return Err(page_not_found()),
                }
                let status_only = sub.is_some();
                match *cx.method {
                    Method::GET => {
                        let obj = self.get(&kind, ns, &name)?;
                        Ok(json_response(200, &render_one(&kind, obj, cx.accept())))
                    }
                    Method::PUT => {
                        let (obj, created) = self.replace(&kind, ns, &name, status_only, cx)?;
                        Ok(json_response(if created { 201 } else { 200 }, &obj))
                    }
                    Method::PATCH => {
                        let (obj, created) = self.patch(&kind, ns, &name, status_only, cx)?;
                        Ok(json_response(if created { 201 } else { 200 }, &obj))
                    }
                    Method::DELETE if !status_only => {
                        let o = gc::delete_options(cx)?;
                        let (obj, removed) = self.delete_object(&kind, ns, &name, &o)?;
                        Ok(gc::delete_response(&kind, &obj, removed, &o))
                    }
                    _ => Err(failure(
                        405,
                        "MethodNotAllowed",
                        "the server does not allow this method on the requested resource",
                    )),
                }
            }
        }
    }

    fn resource_list(&self, group: &str, version: &str) -> Value {
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let mut resources = Vec::new();
        for k in self
            .kinds
            .iter()
            .filter(|k| k.group == group && k.version == version)
        {
            let mut r = json!({
                "name": k.plural,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": VERBS,
            });
            if !k.short_names.is_empty() {
                r["shortNames"] = json!(k.short_names);
            }
            if matches!(
                k.plural,
                "deployments"
                    | "statefulsets"
                    | "daemonsets"
                    | "replicasets"
                    | "pods"
                    | "services"
                    | "jobs"
                    | "cronjobs"
            ) {
                r["categories"] = json!(["all"]);
            }
            resources.push(r);
            if k.status {
                resources.push(json!({
                    "name": format!("{}/status", k.plural),
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
            if has_scale(k) {
                resources.push(json!({
                    "name": format!("{}/scale", k.plural),
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }));
            }
            if k.group.is_empty() && k.plural == "namespaces" {
                resources.push(json!({
                    "name": "namespaces/finalize",
                    "singularName": "",
                    "namespaced": false,
                    "kind": "Namespace",
                    "verbs": ["update"],
                }));
            }
        }
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }

    fn get(&self, k: &KindSpec, ns: Option<&str>, name: &str) -> Res<Value> {
        self.objects
            .get(&key(k, ns, name))
            .cloned()
            .ok_or_else(|| not_found(k, name))
    }

    fn list(&self, k: &KindSpec, ns: Option<&str>, cx: &Ctx) -> Res<Value> {
        let labels = cx
            .query
            .get("labelSelector")
            .map(|s| parse_labels(s))
            .transpose()?;
        let fields = cx
            .query
            .get("fieldSelector")
            .map(|s| parse_fields(k, s))
            .transpose()?;
        let start = key(k, Some(ns.unwrap_or("")), "");
        let items: Vec<Value> = self
            .objects
            .range(start..)
            .take_while(|(key, _)| key.0 == k.group && key.1 == k.version && key.2 == k.plural)
            .take_while(|(key, _)| ns.is_none_or(|ns| key.3 == ns))
            .map(|(_, o)| o)
            .filter(|o| {
                labels
                    .as_ref()
                    .is_none_or(|sel| sel.iter().all(|r| r.matches(label_of(o, &r.key))))
            })
            .filter(|o| {
                fields
                    .as_ref()
                    .is_none_or(|sel| sel.iter().all(|r| r.matches(field_value(k, o, &r.key))))
            })
            .cloned()
            .collect();
        let rv = self.rv.to_string();
        let accept = cx.accept();
        if accept.contains("as=Table") {
            return Ok(table(
                k,
                &items,
                &rv,
                cx.query.get("includeObject").map(String::as_str),
            ));
        }
        if accept.contains("as=PartialObjectMetadataList") {
            let items: Vec<Value> = items.iter().map(partial_metadata).collect();
            return Ok(json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": rv}, "items": items
            }));
        }
        Ok(json!({
            "kind": format!("{}List", k.kind),
            "apiVersion": api_version_of(k),
            "metadata": {"resourceVersion": rv},
            "items": items,
        }))
    }

    fn parse_body(&self, cx: &Ctx) -> Res<Value> {
        let ct = cx.rec.content_type.as_deref().unwrap_or("application/json");
        let v: Value = if ct.starts_with("application/json") || ct.contains("patch+json") {
            serde_json::from_slice(cx.body).map_err(|e| {
                bad_request(format!(
                    "the body of the request was in an unknown format: {e}"
                ))
            })?
        } else if ct.contains("yaml") {
            yaml_serde::from_slice(cx.body)
                .map_err(|e| bad_request(format!("error decoding YAML: {e}")))?
        } else {
            return Err(failure(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, not {ct}")));
        };
        if !v.is_object() {
            return Err(bad_request("the body of the request must be an object"));
        }
        Ok(v)
    }

    /// Check that a full object in a body is of this kind, named and placed right.
    fn check_object(
        &self,
        k: &KindSpec,
        ns: Option<&str>,
        name: Option<&str>,
        obj: &mut Value,
    ) -> Res<String> {
        let av = obj["apiVersion"].as_str().unwrap_or("");
        let kd = obj["kind"].as_str().unwrap_or("");
        if av.is_empty() || kd.is_empty() {
            return Err(bad_request("Object 'Kind' is missing in the request body"));
        }
        if av != api_version_of(k) || kd != k.kind {
            return Err(bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                api_version_of(k)
            )));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let body_name = obj["metadata"]["name"].as_str().map(str::to_string);
        let name = match (name, body_name) {
            (Some(p), Some(b)) if p != b => {
                return Err(bad_request(format!(
                    "the name of the object ({b}) does not match the name on the URL ({p})"
                )))
            }
            (Some(p), _) => p.to_string(),
            (None, Some(b)) if !b.is_empty() => b,
            (None, _) => {
                if let Some(prefix) = obj["metadata"]["generateName"].as_str() {
                    format!("{prefix}{:05x}", self.uid + 1)
                } else {
                    return Err(failure(422, "Invalid", format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", k.kind)));
                }
            }
        };
        if !is_dns_name(&name) {
            return Err(failure(422, "Invalid", format!("{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'", k.kind)));
        }
        obj["metadata"]["name"] = json!(name);
        match (k.namespaced, ns) {
            (true, Some(ns)) => {
                if let Some(b) = obj["metadata"]["namespace"].as_str() {
                    if b != ns {
                        return Err(bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                    }
                }
                obj["metadata"]["namespace"] = json!(ns);
            }
            _ => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("namespace");
                }
            }
        }
        Ok(name)
    }

    fn require_namespace(&self, k: &KindSpec, ns: Option<&str>) -> Res<()> {
        match ns {
            Some(ns) if k.namespaced && !self.namespace_exists(ns) => Err(namespace_not_found(ns)),
            _ => Ok(()),
        }
    }

    /// Creating `name` is refused in a terminating namespace (admission
    /// `NamespaceLifecycle`: 403) and, for `POST`, while its CRD is being
    /// deleted (405).
    fn refuse_creation(&self, k: &KindSpec, ns: Option<&str>, name: &str, post: bool) -> Res<()> {
        if let Some(ns) = ns.filter(|_| k.namespaced) {
            let nk = (
                String::new(),
                "v1".to_string(),
                "namespaces".to_string(),
                String::new(),
                ns.to_string(),
            );
            if self.objects.get(&nk).is_some_and(gc::is_deleting) {
                return Err(Failure {
                    code: 403,
                    reason: "Forbidden",
                    message: format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        resource_name(k)
                    ),
                    details: json!({
                        "name": name, "group": k.group, "kind": k.plural,
                        "causes": [{
                            "reason": "NamespaceTerminating",
                            "message": format!("namespace {ns} is being terminated"),
                            "field": "metadata.namespace",
                        }],
                    }),
                });
            }
        }
        if let (Some(ns), "", "pods") = (ns, k.group, k.plural) {
            if let Some(reason) = self.wl.refused.get(ns) {
                return Err(Failure {
                    code: 403,
                    reason: "Forbidden",
                    message: format!("pods \"{name}\" is forbidden: {reason}"),
                    details: json!({"name": name, "kind": "pods"}),
                });
            }
        }
        if post && gc::crd_terminating(self, k) {
            return Err(Failure {
                code: 405,
                reason: "MethodNotAllowed",
                message: "create not allowed while custom resource definition is terminating"
                    .into(),
                details: json!({"group": k.group, "kind": k.plural}),
            });
        }
        Ok(())
    }

    /// Writes to an object being deleted may not add finalizers
    /// (`ValidateObjectMetaUpdate`); its deletion timestamp is kept by
    /// [`Self::commit`].
    fn check_update(&self, k: &KindSpec, name: &str, old: &Value, new: &Value) -> Res<()> {
        if k.group == "batch"
            && k.plural == "jobs"
            && !new["spec"]["template"].is_null()
            && old["spec"]["template"] != new["spec"]["template"]
        {
            // `ValidateJobUpdate`: the pod template of a Job is immutable.
            let cause = format!(
                "Invalid value: core.PodTemplateSpec{}: field is immutable",
                serde_json::to_string(&new["spec"]["template"]).unwrap_or_default()
            );
            return Err(Failure {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "{} \"{name}\" is invalid: spec.template: {cause}",
                    group_kind(k)
                ),
                details: json!({
                    "name": name, "group": k.group, "kind": k.kind,
                    "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "spec.template"}],
                }),
            });
        }
        if !gc::is_deleting(old) {
            return Ok(());
        }
        let before = gc::finalizers(old);
        let mut extra: Vec<String> = gc::finalizers(new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if extra.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = extra.iter().map(|f| format!("{f:?}")).collect();
        let cause = format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
            list.join(", ")
        );
        Err(Failure {
            code: 422,
            reason: "Invalid",
            message: format!(
                "{} \"{name}\" is invalid: metadata.finalizers: {cause}",
                group_kind(k)
            ),
            details: json!({
                "name": name, "group": k.group, "kind": k.kind,
                "causes": [{"reason": "FieldValueForbidden", "message": cause, "field": "metadata.finalizers"}],
            }),
        })
    }

    fn create(&mut self, k: &KindSpec, ns: Option<&str>, cx: &Ctx) -> Res<Value> {
        let mut obj = self.parse_body(cx)?;
        let name = self.check_object(k, ns, None, &mut obj)?;
        self.require_namespace(k, ns)?;
        self.refuse_creation(k, ns, &name, true)?;
        if self.objects.contains_key(&key(k, ns, &name)) {
            return Err(already_exists(k, &name));
        }
        let request = obj.clone();
        strip_server_fields(&mut obj);
        if k.status && k.plural != "namespaces" {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        fields::update(&mut obj, None, Some(&request), &cx.manager(), Part::Main, k);
        Ok(self.commit(k, ns, &name, obj, cx.dry_run()))
    }

    fn replace(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        cx: &Ctx,
    ) -> Res<(Value, bool)> {
        let mut obj = self.parse_body(cx)?;
        self.check_object(k, ns, Some(name), &mut obj)?;
        let old = self.get(k, ns, name)?;
        if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
            if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                return Err(modified_conflict(k, name));
            }
        }
        let new = if status_only {
            let mut n = old.clone();
            n["status"] = obj.get("status").cloned().unwrap_or(json!({}));
            fields::update(&mut n, Some(&old), None, &cx.manager(), Part::Status, k);
            n
        } else {
            let request = obj.clone();
            strip_server_fields(&mut obj);
            if k.status {
                obj["status"] = old.get("status").cloned().unwrap_or(Value::Null);
                strip_nulls_top(&mut obj);
            }
            fields::update(
                &mut obj,
                Some(&old),
                Some(&request),
                &cx.manager(),
                Part::Main,
                k,
            );
            obj
        };
        self.check_update(k, name, &old, &new)?;
        Ok((
            self.finish_write(k, ns, name, new, cx.dry_run(), false),
            false,
        ))
    }

    fn patch(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        status_only: bool,
        cx: &Ctx,
    ) -> Res<(Value, bool)> {
        let ct = content_type(cx);
        let part = if status_only {
            Part::Status
        } else {
            Part::Main
        };
        match ct.as_str() {
            "application/apply-patch+yaml" => {
                let manager = apply_manager(cx)?;
                let mut applied = self.parse_body(cx)?;
                if applied["metadata"]["managedFields"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
                {
                    return Err(bad_request("metadata.managedFields must be nil"));
                }
                self.check_object(k, ns, Some(name), &mut applied)?;
                strip_server_fields(&mut applied);
                self.require_namespace(k, ns)?;
                let old = self.objects.get(&key(k, ns, name)).cloned();
                let created = old.is_none();
                if created {
                    self.refuse_creation(k, ns, name, false)?;
                }
                let mut new = match &old {
                    Some(old) => {
                        let mut n = old.clone();
                        if status_only {
                            if let Some(s) = applied.get("status") {
                                merge_into(&mut n["status"], s, true);
                            }
                        } else {
                            let mut a = applied.clone();
                            if k.status {
                                if let Some(m) = a.as_object_mut() {
                                    m.remove("status");
                                }
                            }
                            merge_into(&mut n, &a, true);
                        }
                        n
                    }
                    None => {
                        if status_only {
                            return Err(not_found(k, name));
                        }
                        let mut n = applied.clone();
                        if k.status && k.plural != "namespaces" {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                        n
                    }
                };
                fields::apply(
                    &mut new,
                    old.as_ref(),
                    &applied,
                    &manager,
                    part,
                    cx.force(),
                    k,
                )?;
                if let Some(old) = &old {
                    self.check_update(k, name, old, &new)?;
                }
                Ok((
                    self.finish_write(k, ns, name, new, cx.dry_run(), false),
                    created,
                ))
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let strategic = ct.starts_with("application/strategic");
                let patch = self.parse_body(cx)?;
                let old = self.get(k, ns, name)?;
                if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
                    if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                        return Err(modified_conflict(k, name));
                    }
                }
                let mut new = old.clone();
                if status_only {
                    if let Some(s) = patch.get("status") {
                        merge_into(&mut new["status"], s, strategic);
                    }
                    fields::update(&mut new, Some(&old), None, &cx.manager(), Part::Status, k);
                } else {
                    let mut p = patch.clone();
                    if k.status {
                        if let Some(m) = p.as_object_mut() {
                            m.remove("status");
                        }
                    }
                    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                        for f in [
                            "uid",
                            "creationTimestamp",
                            "generation",
                            "name",
                            "namespace",
                        ] {
                            m.remove(f);
                        }
                    }
                    merge_into(&mut new, &p, strategic);
                    let request = new.clone();
                    fields::update(
                        &mut new,
                        Some(&old),
                        Some(&request),
                        &cx.manager(),
                        Part::Main,
                        k,
                    );
                }
                if new["apiVersion"] != old["apiVersion"] || new["kind"] != old["kind"] {
                    return Err(bad_request("a patch may not change apiVersion or kind"));
                }
                self.check_update(k, name, &old, &new)?;
                Ok((
                    self.finish_write(k, ns, name, new, cx.dry_run(), false),
                    false,
                ))
            }
            other => Err(unsupported_patch(other)),
        }
    }

    /// `DELETE` on a collection: every listed object deleted with the
    /// request's options; the answer is the list as it was.
    fn delete_collection(&mut self, k: &KindSpec, ns: Option<&str>, cx: &Ctx) -> Res<Response> {
        let o = gc::delete_options(cx)?;
        let list = self.list(k, ns, cx)?;
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or("");
            let ns = item["metadata"]["namespace"].as_str();
            match self.delete_object(k, ns, name, &o) {
                Ok(_) => {}
                Err(f) if f.code == 404 => {}
                Err(f) => return Err(f),
            }
        }
        Ok(json_response(200, &list))
    }

    /// [`Self::commit`] a write, and remove the object when the write left
    /// it being deleted with no finalizer (`ShouldDeleteDuringUpdate`).
    fn finish_write(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        new: Value,
        dry_run: bool,
        system: bool,
    ) -> Value {
        let out = self.commit_with(k, ns, name, new, dry_run, system);
        if !dry_run && Inner::released(k, &out) {
            self.remove_object(&key(k, ns, name));
        }
        out
    }

    /// Ask for the controllers to run soon.
    fn kick(&mut self) {
        if !self.controllers_scheduled {
            self.controllers_scheduled = true;
            self.timers.push(Timer::Controllers(CONTROLLER_DELAY));
        }
    }

    /// Store `new` as the object at (k, ns, name), keeping server-owned
    /// metadata, bumping generation and resourceVersion only on real change.
    fn commit(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        new: Value,
        dry_run: bool,
    ) -> Value {
        self.commit_with(k, ns, name, new, dry_run, false)
    }

    /// [`Self::commit`]; a `system` write (the server's own: deletion marks,
    /// controllers) may set `generation`, `deletionTimestamp` and
    /// `deletionGracePeriodSeconds`, which other writes keep as they were.
    fn commit_with(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        mut new: Value,
        dry_run: bool,
        system: bool,
    ) -> Value {
        let kk = key(k, ns, name);
        // Taken out while the write is worked out (no clone), put back
        // when nothing changes.
        let old = self.objects.remove(&kk);
        new["apiVersion"] = json!(api_version_of(k));
        new["kind"] = json!(k.kind);
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        new["metadata"]["name"] = json!(name);
        match ns {
            Some(ns) => new["metadata"]["namespace"] = json!(ns),
            None => {
                new["metadata"].as_object_mut().unwrap().remove("namespace");
            }
        }
        match &old {
            Some(o) => {
                for f in ["uid", "creationTimestamp", "resourceVersion"] {
                    if let Some(v) = o["metadata"].get(f) {
                        new["metadata"][f] = v.clone();
                    }
                }
                let kept: &[&str] = if system {
                    &[]
                } else {
                    &[
                        "generation",
                        "deletionTimestamp",
                        "deletionGracePeriodSeconds",
                    ]
                };
                for f in kept {
                    match o["metadata"].get(*f) {
                        Some(v) => new["metadata"][*f] = v.clone(),
                        None => {
                            new["metadata"].as_object_mut().unwrap().remove(*f);
                        }
                    }
                }
                if new["metadata"]["generation"].is_null() {
                    if let Some(g) = o["metadata"].get("generation") {
                        new["metadata"]["generation"] = g.clone();
                    }
                }
            }
            None => {
                self.uid += 1;
                let uid = format!("{:08x}-0000-4000-8000-{:012x}", self.uid, self.rv);
                new["metadata"]["uid"] = json!(uid);
                new["metadata"]["creationTimestamp"] = json!(timestamp());
                if k.generation {
                    new["metadata"]["generation"] = json!(1);
                }
            }
        }
        // Defaults first, as the server decodes with them: a write that
        // leaves out a defaulted field changes no generation.
        apply_defaults(k, &mut new);
        if let Some(o) = &old {
            if k.generation && o.get("spec") != new.get("spec") {
                let g = new["metadata"]["generation"].as_i64().unwrap_or(1);
                new["metadata"]["generation"] = json!(g + 1);
            }
        }
        if old.as_ref() == Some(&new) || dry_run {
            if let Some(o) = old {
                self.objects.insert(kk, o);
            }
            return new;
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if k.plural == "customresourcedefinitions" && k.group == "apiextensions.k8s.io" {
            if let Some(o) = &old {
                self.unregister_crd(o);
            }
            self.register_crd(&new);
        }
        self.record(
            kk.clone(),
            if old.is_some() { "MODIFIED" } else { "ADDED" },
            new.clone(),
        );
        self.objects.insert(kk, new.clone());
        self.kick();
        new
    }

    fn mode_for(&self, ns: &str, name: &str) -> RolloutMode {
        self.rollout_for
            .get(&(ns.to_string(), name.to_string()))
            .copied()
            .unwrap_or(self.rollout)
    }

    /// A stored change (or a removal without a watch event): the garbage
    /// collector's graph, the workload controllers' queue, the events'
    /// correlation.
    fn observe_change(&mut self, kk: &Key, kind: &str, obj: &Value) {
        let deleted = kind == "DELETED";
        self.observe_owners(kk, deleted, obj);
        self.observe_workload(kk, kind, obj);
        if deleted && kk.0.is_empty() && kk.2 == "events" {
            self.forget_event(kk, obj);
        }
    }

    /// Arm a timer for the next instant the controllers have work due.
    fn arm_wake(&mut self) {
        if let Some(at) = self.wl.next_due() {
            if self.wl.wake_at.is_none_or(|w| at < w) {
                self.wl.wake_at = Some(at);
                self.timers.push(Timer::Wake(at));
            }
        }
    }

    fn register_crd(&mut self, crd: &Value) {
        self.graph.resync = true;
        let spec = &crd["spec"];
        let (Some(group), Some(plural), Some(kind)) = (
            spec["group"].as_str(),
            spec["names"]["plural"].as_str(),
            spec["names"]["kind"].as_str(),
        ) else {
            return;
        };
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let singular = spec["names"]["singular"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let shorts: Vec<&'static str> = spec["names"]["shortNames"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(leak).collect())
            .unwrap_or_default();
        let shorts: &'static [&'static str] = Box::leak(shorts.into_boxed_slice());
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for v in spec["versions"].as_array().into_iter().flatten() {
            if v["served"].as_bool() == Some(false) {
                continue;
            }
            let Some(version) = v["name"].as_str() else {
                continue;
            };
            let has_status = v["subresources"]["status"].is_object();
            if self.find_kind(group, version, plural).is_none() {
                self.kinds.push(KindSpec {
                    group: leak(group),
                    version: leak(version),
                    plural: leak(plural),
                    singular: leak(&singular),
                    kind: leak(kind),
                    namespaced,
                    short_names: shorts,
                    status: has_status,
                    generation: true,
                });
            }
        }
    }

    fn unregister_crd(&mut self, crd: &Value) {
        self.graph.resync = true;
        let spec = &crd["spec"];
        if let (Some(group), Some(plural)) =
            (spec["group"].as_str(), spec["names"]["plural"].as_str())
        {
            self.kinds
                .retain(|k| !(k.group == group && k.plural == plural && !KINDS.contains(k)));
        }
    }
}

/// `Kind.group` (`Kind` for the core group), as validation errors name a kind.
fn group_kind(k: &KindSpec) -> String {
    if k.group.is_empty() {
        k.kind.to_string()
    } else {
        format!("{}.{}", k.kind, k.group)
    }
}

/// A write whose `resourceVersion` is not the stored one.
fn modified_conflict(k: &KindSpec, name: &str) -> Failure {
    Failure {
        code: 409,
        reason: "Conflict",
        message: format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            resource_name(k)
        ),
        details: json!({"name": name, "group": k.group, "kind": k.plural}),
    }
}

fn content_type(cx: &Ctx) -> String {
    cx.rec
        .content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn apply_manager(cx: &Ctx) -> Res<String> {
    cx.query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| failure(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"))
}

fn unsupported_patch(ct: &str) -> Failure {
    failure(
        415,
        "UnsupportedMediaType",
        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?}; json-patch is not supported by the test API server)"),
    )
}

fn group_json(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn strip_server_fields(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            m.remove(f);
        }
    }
}

fn strip_nulls_top(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
}

fn apply_defaults(k: &KindSpec, obj: &mut Value) {
    match (k.group, k.plural) {
        ("", "namespaces") => {
            let name = obj["metadata"]["name"].clone();
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if !obj["spec"].is_object() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if !obj["status"].is_object() {
                obj["status"] = json!({});
            }
            obj["status"]["phase"] = json!(if gc::is_deleting(obj) {
                "Terminating"
            } else {
                "Active"
            });
        }
        ("apps", "deployments" | "statefulsets" | "replicasets") => {
            if !obj["spec"].is_object() {
                obj["spec"] = json!({});
            }
            if obj["spec"]["replicas"].is_null() {
                obj["spec"]["replicas"] = json!(1);
            }
            workloads::default_workload(k.plural, obj);
        }
        ("apps", "daemonsets") => workloads::default_workload(k.plural, obj),
        ("batch", "jobs") => workloads::default_job(obj),
        ("", "pods") => workloads::default_pod(obj),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let names = obj["spec"]["names"].clone();
            // Conditions the CRD finalizer sets (Terminating) are kept.
            let mut conditions = vec![
                json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"}),
                json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}),
            ];
            conditions.extend(
                obj["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["type"] != "NamesAccepted" && c["type"] != "Established")
                    .cloned(),
            );
            obj["status"] = json!({
                "acceptedNames": names,
                "conditions": conditions,
                "storedVersions": obj["spec"]["versions"].as_array().map(|vs| vs.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
            });
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Merging

/// True when every element is an object with a string `name`: such lists
/// (containers, env, volumes, ports…) merge by name.
fn named_list(a: &[Value]) -> bool {
    !a.is_empty()
        && a.iter()
            .all(|e| e.get("name").and_then(Value::as_str).is_some())
}

/// Merge `patch` into `base` (RFC 7386: maps merge, `null` deletes, anything
/// else replaces). With `by_name`, lists of named objects merge element-wise
/// by `name`, and `$`-directives of strategic merge patch are dropped.
fn merge_into(base: &mut Value, patch: &Value, by_name: bool) {
    match (base.as_object_mut(), patch) {
        (Some(b), Value::Object(p)) => {
            for (k, v) in p {
                if k.starts_with('$') && by_name {
                    continue;
                }
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge_into(b.entry(k.clone()).or_insert(Value::Null), v, by_name);
                }
            }
        }
        (_, Value::Object(p)) => {
            let mut fresh = Value::Object(Map::new());
            merge_into(&mut fresh, &Value::Object(p.clone()), by_name);
            *base = fresh;
        }
        (_, Value::Array(pa)) if by_name && named_list(pa) => {
            let mut out: Vec<Value> = match base.as_array() {
                Some(ba) if named_list(ba) => ba.clone(),
                _ => Vec::new(),
            };
            for pe in pa {
                if let Some(be) = out.iter_mut().find(|be| be["name"] == pe["name"]) {
                    merge_into(be, pe, by_name);
                } else {
                    let mut fresh = Value::Object(Map::new());
                    merge_into(&mut fresh, pe, by_name);
                    out.push(fresh);
                }
            }
            *base = Value::Array(out);
        }
        _ => *base = patch.clone(),
    }
}

// ---------------------------------------------------------------------------
// Selectors and renderings

fn label_of(o: &Value, key: &str) -> Option<String> {
    o["metadata"]["labels"]
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn partial_metadata(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
}

fn render_one(k: &KindSpec, obj: Value, accept: &str) -> Value {
    if accept.contains("as=Table") {
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string();
        table(k, std::slice::from_ref(&obj), &rv, None)
    } else if accept.contains("as=PartialObjectMetadata")
        && !accept.contains("as=PartialObjectMetadataList")
    {
        partial_metadata(&obj)
    } else {
        obj
    }
}

fn age(o: &Value) -> String {
    let Some(t) = o["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
    else {
        return "<unknown>".into();
    };
    let secs = (now() - t).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Renders one object as a Table row's cells.
type CellsFn = Box<dyn Fn(&Value) -> Vec<Value>>;

/// A `meta.k8s.io/v1` Table, as `kubectl get` asks for.
fn table(k: &KindSpec, items: &[Value], rv: &str, include: Option<&str>) -> Value {
    let col = |name: &str, ty: &str, priority: u8| json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": name, "priority": priority});
    let (cols, cells): (Vec<Value>, CellsFn) = match (k.group, k.plural) {
        ("apps", "deployments") => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
            ],
            Box::new(|o: &Value| {
                let cs = o["spec"]["template"]["spec"]["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let join = |f: &str| {
                    cs.iter()
                        .filter_map(|c| c[f].as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let s = &o["status"];
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!(
                        "{}/{}",
                        s["readyReplicas"].as_i64().unwrap_or(0),
                        o["spec"]["replicas"].as_i64().unwrap_or(1)
                    )),
                    json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
                    json!(s["availableReplicas"].as_i64().unwrap_or(0)),
                    json!(age(o)),
                    json!(join("name")),
                    json!(join("image")),
                ]
            }),
        ),
        ("", "namespaces") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    o["status"]["phase"].clone(),
                    json!(age(o)),
                ]
            }),
        ),
        ("", "configmaps") => (
            vec![
                col("Name", "string", 0),
                col("Data", "integer", 0),
                col("Age", "string", 0),
            ],
            Box::new(|o: &Value| {
                let n = o["data"].as_object().map_or(0, |m| m.len())
                    + o["binaryData"].as_object().map_or(0, |m| m.len());
                vec![o["metadata"]["name"].clone(), json!(n), json!(age(o))]
            }),
        ),
        _ => tables::columns(k).unwrap_or_else(|| {
            (
                vec![col("Name", "string", 0), col("Age", "string", 0)],
                Box::new(|o: &Value| vec![o["metadata"]["name"].clone(), json!(age(o))]),
            )
        }),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = match include {
                Some("Object") => o.clone(),
                Some("None") => Value::Null,
                _ => partial_metadata(o),
            };
            json!({"cells": cells(o), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": cols,
        "rows": rows,
    })
}
