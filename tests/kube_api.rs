//! Proves the Kubernetes API server stand-in faithful: the real `kubectl`
//! (client-go discovery, tables, watches, server-side apply, scale, delete
//! with its propagation policies, `rollout status`, `wait`) works against
//! it, and raw HTTP sees what a Kubernetes 1.32 cluster answers (delete
//! options, preconditions, finalizers, field ownership, selectors), with
//! what its controllers, scheduler and kubelets write: Deployments rolled
//! out through ReplicaSets and pods, StatefulSets, DaemonSets and Jobs,
//! every steerable pod behaviour's states, conditions and events, quotas
//! refusing pods, garbage collection of pods.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use support::kube_api::{KubeApi, PodBehaviour, RolloutMode};

fn kubectl(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Output {
    kubectl_with(kubeconfig, dir, args, &[])
}

fn kubectl_with(kubeconfig: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--request-timeout=10s")
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("run kubectl")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

const MANIFESTS: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: registry.example.com/web:1.0
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: shop
data:
  greeting: hello
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_reads_seeded_objects() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    api.put_deployment("x", "web", "nginx:1.27");
    // The controllers roll it out a little later, as real ones do.
    eventually("the seeded Deployment rolled out", || {
        api.get_object("apps/v1", "deployments", Some("x"), "web")
            .filter(|d| d["status"]["availableReplicas"] == 1)
    })
    .await;

    let table = ok(kubectl(&kc, dir.path(), &["get", "deploy", "-n", "x"]));
    assert!(table.contains("NAME") && table.contains("READY"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("1/1")),
        "{table}"
    );

    let wide = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "deployments.apps", "-A", "-o", "wide"],
    ));
    assert!(wide.contains("nginx:1.27") && wide.contains('x'), "{wide}");

    let json = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "deploy", "web", "-n", "x", "-o", "json"],
    ));
    let d: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(d["status"]["availableReplicas"], 1);

    let missing = kubectl(&kc, dir.path(), &["get", "deploy", "nope", "-n", "x"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("NotFound") && err.contains("\"nope\" not found"),
        "{err}"
    );

    let ns = ok(kubectl(&kc, dir.path(), &["get", "ns"]));
    assert!(ns.contains("default") && ns.contains("Active"), "{ns}");

    assert!(
        api.writes().is_empty(),
        "kubectl get wrote: {:?}",
        api.writes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_get_and_delete() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, MANIFESTS).unwrap();
    let file = file.to_str().unwrap();

    let out = ok(kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", file],
    ));
    assert!(out.contains("namespace/shop serverside-applied"), "{out}");
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    assert!(
        out.contains("configmap/web-config serverside-applied"),
        "{out}"
    );
    let patches: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 3, "{patches:?}");
    assert!(patches
        .iter()
        .all(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml")));
    assert!(patches
        .iter()
        .all(|r| r.query.contains("fieldManager=kubectl")));

    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .expect("deployment stored");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["metadata"]["managedFields"][0]["manager"], "kubectl");
    // The apply's answer is the object as written; the controllers roll it
    // out after.
    eventually("the rollout", || {
        api.get_object("apps/v1", "deployments", Some("shop"), "web")
            .filter(|d| {
                d["status"]["updatedReplicas"] == 2 && d["status"]["availableReplicas"] == 2
            })
    })
    .await;
    assert!(
        api.settle(Duration::from_secs(10)).await,
        "the controllers settle"
    );
    let rv = api.resource_version();

    let got = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "deploy,cm", "-n", "shop"],
    ));
    assert!(
        got.contains("deployment.apps/web") && got.contains("2/2"),
        "{got}"
    );
    assert!(got.contains("configmap/web-config"), "{got}");

    // Same manifests again: kubectl says serverside-applied (it always does);
    // the server says unchanged — nothing's resourceVersion moves.
    api.clear_requests();
    ok(kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", file],
    ));
    assert_eq!(api.writes().len(), 3);
    assert_eq!(
        api.resource_version(),
        rv,
        "a repeated apply changed something"
    );
    let diff = kubectl(&kc, dir.path(), &["diff", "--server-side", "-f", file]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff saw changes: {}",
        String::from_utf8_lossy(&diff.stdout)
    );

    // A changed image is a new generation; kubectl diff sees it first.
    let changed = MANIFESTS.replace("web:1.0", "web:1.1");
    let file2 = dir.path().join("app2.yaml");
    std::fs::write(&file2, changed).unwrap();
    let file2 = file2.to_str().unwrap();
    let diff = kubectl(&kc, dir.path(), &["diff", "--server-side", "-f", file2]);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("web:1.1"));
    ok(kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", file2],
    ));
    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .unwrap();
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/web:1.1"
    );

    // kubectl set image sends a strategic merge patch.
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "set",
            "image",
            "deploy/web",
            "web=registry.example.com/web:hand",
            "-n",
            "shop",
        ],
    ));
    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/web:hand"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );

    let out = ok(kubectl(
        &kc,
        dir.path(),
        &["delete", "-f", file2, "--timeout=20s"],
    ));
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .is_none());
    assert!(api.get_object("v1", "namespaces", None, "shop").is_none());
    let gone = kubectl(&kc, dir.path(), &["get", "cm", "web-config", "-n", "shop"]);
    assert!(!gone.status.success());
    let ns = ok(kubectl(&kc, dir.path(), &["get", "ns", "-o", "name"]));
    assert!(!ns.contains("shop"), "{ns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_into_missing_namespace_fails_like_a_real_server() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let file = dir.path().join("cm.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: ghost\ndata:\n  a: b\n").unwrap();
    let out = kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespaces \"ghost\" not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_conflicts_and_custom_resources() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    // (`kubectl create namespace NAME` speaks protobuf, which the stand-in
    // does not; `create -f` speaks JSON.)
    let ns_file = dir.path().join("ns.yaml");
    std::fs::write(
        &ns_file,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
    )
    .unwrap();
    let ns_file = ns_file.to_str().unwrap();
    ok(kubectl(&kc, dir.path(), &["create", "-f", ns_file]));
    let again = kubectl(&kc, dir.path(), &["create", "-f", ns_file]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("AlreadyExists"));

    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wg]}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: team}
spec: {size: 3}
"#;
    let file = dir.path().join("crd.yaml");
    std::fs::write(&file, crd).unwrap();
    let crd_only = crd.split("---").next().unwrap();
    let crd_file = dir.path().join("crd-only.yaml");
    std::fs::write(&crd_file, crd_only).unwrap();
    ok(kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", crd_file.to_str().unwrap()],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    ));
    let got = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "wg", "-n", "team", "-o", "name"],
    ));
    assert_eq!(got.trim(), "widget.example.com/w1");

    api.set_rollout(RolloutMode::Never);
    api.put_deployment("team", "api", "api:1");
    let out = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "deploy", "api", "-n", "team"],
    ));
    assert!(out.contains("0/1"), "{out}");
}

// ---------------------------------------------------------------------------
// Deletion, ownership and the controllers

/// A Deployment chump applies, in namespace `shop`.
const WEB: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: registry.example.com/web:1.0
        env:
        - name: GREETING
          value: hello
        - name: OTHER
          value: x
"#;

/// Poll `cond` until it holds, for at most ten seconds.
async fn eventually<T>(what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `kubectl apply --server-side --field-manager=<manager> <extra> -f <yaml>`.
fn apply_as(kc: &Path, dir: &Path, yaml: &str, manager: &str, extra: &[&str]) -> Output {
    let file = dir.join(format!("apply-{}.yaml", fastrand::u64(..)));
    std::fs::write(&file, yaml).unwrap();
    let manager = format!("--field-manager={manager}");
    let mut args = vec!["apply", "--server-side", manager.as_str()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-f", file.to_str().unwrap()]);
    kubectl(kc, dir, &args)
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kubectl succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `fieldsV1` of `obj`'s entry for (manager, operation, subresource).
fn fields_of(obj: &Value, manager: &str, operation: &str, sub: Option<&str>) -> Option<Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| {
            e["manager"] == manager
                && e["operation"] == operation
                && e["subresource"].as_str() == sub
        })
        .map(|e| e["fieldsV1"].clone())
}

/// An owner reference to `owner` (a controller's, blocking its deletion).
fn owned_by(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// An owner reference to `owner` that is not its controller's.
fn referring_to(owner: &Value) -> Value {
    let mut r = owned_by(owner);
    r["controller"] = json!(false);
    r
}

/// Seed, in `shop`, an old (scaled to zero) ReplicaSet of Deployment `web`
/// and a Pod that refers to it without being its controller's (so that
/// neither controller touches it), both with `finalizers`.
fn seed_dependents(api: &KubeApi, finalizers: &[&str]) -> (Value, Value) {
    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .expect("the Deployment");
    let mut rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [owned_by(&d)]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
    });
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1-a", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}
    });
    if !finalizers.is_empty() {
        rs["metadata"]["finalizers"] = json!(finalizers);
        pod["metadata"]["finalizers"] = json!(finalizers);
    }
    let rs = api.put_object(rs);
    pod["metadata"]["ownerReferences"] = json!([referring_to(&rs)]);
    let pod = api.put_object(pod);
    (rs, pod)
}

fn replica_set(api: &KubeApi) -> Option<Value> {
    api.get_object("apps/v1", "replicasets", Some("shop"), "web-1")
}

fn the_pod(api: &KubeApi) -> Option<Value> {
    api.get_object("v1", "pods", Some("shop"), "web-1-a")
}

fn deployment(api: &KubeApi) -> Option<Value> {
    api.get_object("apps/v1", "deployments", Some("shop"), "web")
}

/// The body of the last DELETE of a path ending in `suffix`.
fn delete_body(api: &KubeApi, suffix: &str) -> Value {
    let r = api
        .writes()
        .into_iter()
        .rev()
        .find(|r| r.method == "DELETE" && r.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no DELETE of {suffix}"));
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_background_delete_leaves_dependents_to_the_garbage_collector() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    seed_dependents(&api, &[]);
    let d = deployment(&api).unwrap();
    let keep = api.put_object(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep", "namespace": "shop"}
    }));
    api.put_object(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "shared", "namespace": "shop",
                     "ownerReferences": [owned_by(&d), owned_by(&keep)]}
    }));

    let out = ok(kubectl(
        &kc,
        dir.path(),
        &[
            "delete",
            "deployment",
            "web",
            "-n",
            "shop",
            "--cascade=background",
        ],
    ));
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert_eq!(
        delete_body(&api, "/deployments/web")["propagationPolicy"],
        "Background"
    );
    // The owner goes at once; the collector takes its dependents, and theirs.
    assert!(deployment(&api).is_none());
    eventually("the ReplicaSet and its Pod collected", || {
        (replica_set(&api).is_none() && the_pod(&api).is_none()).then_some(())
    })
    .await;
    // An object with an owner left keeps it, and only it.
    let shared = eventually("the dangling reference dropped", || {
        api.get_object("v1", "configmaps", Some("shop"), "shared")
            .filter(|o| o["metadata"]["ownerReferences"].as_array().map(Vec::len) == Some(1))
    })
    .await;
    assert_eq!(
        shared["metadata"]["ownerReferences"][0]["uid"],
        keep["metadata"]["uid"]
    );
    assert!(api
        .get_object("v1", "configmaps", Some("shop"), "keep")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_orphan_delete_keeps_dependents_without_the_owner_reference() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    let (rs_before, _) = seed_dependents(&api, &[]);

    // kubectl waits (watching) until the Deployment is gone: the `orphan`
    // finalizer holds it until the collector has orphaned its dependents.
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "delete",
            "deployment",
            "web",
            "-n",
            "shop",
            "--cascade=orphan",
            "--timeout=20s",
        ],
    ));
    assert_eq!(
        delete_body(&api, "/deployments/web")["propagationPolicy"],
        "Orphan"
    );
    assert!(deployment(&api).is_none());
    let rs = replica_set(&api).expect("the ReplicaSet is kept");
    assert!(
        rs["metadata"]["ownerReferences"].is_null(),
        "{}",
        rs["metadata"]
    );
    assert_eq!(rs["metadata"]["uid"], rs_before["metadata"]["uid"]);
    let pod = the_pod(&api).expect("the Pod is kept");
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"], rs["metadata"]["uid"],
        "the Pod's own owner is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_foreground_delete_waits_for_blocking_dependents() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    seed_dependents(&api, &["example.com/hold"]);
    let generation = deployment(&api).unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap();

    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "delete",
            "deployment",
            "web",
            "-n",
            "shop",
            "--cascade=foreground",
            "--wait=false",
        ],
    ));
    assert_eq!(
        delete_body(&api, "/deployments/web")["propagationPolicy"],
        "Foreground"
    );
    let d = deployment(&api).expect("kept while its dependents exist");
    assert!(
        d["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        d["metadata"]
    );
    assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert_eq!(d["metadata"]["generation"], generation + 1);

    // The ReplicaSet, which has a dependent of its own, is deleted in the
    // foreground too, and so is its Pod; their finalizer holds them.
    let finalizers = |o: &Value| o["metadata"]["finalizers"].clone();
    eventually("the ReplicaSet and the Pod being deleted", || {
        let (rs, pod) = (replica_set(&api)?, the_pod(&api)?);
        (rs["metadata"]["deletionTimestamp"].is_string()
            && pod["metadata"]["deletionTimestamp"].is_string())
        .then_some(())
    })
    .await;
    assert_eq!(
        finalizers(&replica_set(&api).unwrap()),
        json!(["example.com/hold", "foregroundDeletion"])
    );
    assert_eq!(
        finalizers(&the_pod(&api).unwrap()),
        json!(["example.com/hold"])
    );
    let d = deployment(&api).expect("still held");
    assert!(d["metadata"]["deletionTimestamp"].is_string());

    // The Pod released and gone, the ReplicaSet waits no more for it…
    let release = |kind: &str, name: &str| {
        ok(kubectl(
            &kc,
            dir.path(),
            &[
                "patch",
                kind,
                name,
                "-n",
                "shop",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
        ))
    };
    release("pod", "web-1-a");
    eventually("the ReplicaSet's foregroundDeletion removed", || {
        replica_set(&api)
            .filter(|rs| finalizers(rs) == json!(["example.com/hold"]) && the_pod(&api).is_none())
    })
    .await;
    assert!(deployment(&api).is_some(), "still held by the ReplicaSet");

    // …and the ReplicaSet released, then the Deployment goes:
    // `kubectl wait --for=delete` watches for it.
    release("replicaset", "web-1");
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "wait",
            "--for=delete",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=10s",
        ],
    ));
    assert!(replica_set(&api).is_none() && deployment(&api).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_an_object_until_a_write_removes_them() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(
        &kc,
        dir.path(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: default\n  finalizers: [example.com/hold]\ndata:\n  a: b\n",
        "chump",
        &[],
    ));
    let url = format!("{}/api/v1/namespaces/default/configmaps/held", api.url());
    let http = reqwest::Client::new();
    // As kube-rs sends it: DeleteOptions as a JSON body.
    let resp = http
        .delete(&url)
        .header("content-type", "application/json")
        .body(r#"{"propagationPolicy":"Background"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "ConfigMap", "{body}");
    let stamp = body["metadata"]["deletionTimestamp"].clone();
    assert!(stamp.is_string(), "{body}");
    assert_eq!(body["metadata"]["deletionGracePeriodSeconds"], 0);
    assert_eq!(body["metadata"]["finalizers"], json!(["example.com/hold"]));
    assert!(api
        .get_object("v1", "configmaps", Some("default"), "held")
        .is_some());

    // No new finalizer on an object being deleted…
    let patch = |body: &'static str| {
        http.patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(body)
            .send()
    };
    let resp = patch(r#"{"metadata":{"finalizers":["example.com/hold","example.com/more"]}}"#)
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(
        st["message"],
        "ConfigMap \"held\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"example.com/more\"}"
    );
    // …and its deletion timestamp stays whatever a write says.
    let resp = patch(r#"{"metadata":{"deletionTimestamp":null},"data":{"a":"c"}}"#)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cm = api
        .get_object("v1", "configmaps", Some("default"), "held")
        .unwrap();
    assert_eq!(cm["metadata"]["deletionTimestamp"], stamp);
    assert_eq!(cm["data"]["a"], "c");
    // Deleting again changes nothing.
    let again: Value = http
        .delete(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["metadata"]["deletionTimestamp"], stamp, "{again}");

    // The last finalizer removed, the object is gone at once.
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "patch",
            "configmap",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    ));
    assert!(api
        .get_object("v1", "configmaps", Some("default"), "held")
        .is_none());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_preconditions_options_and_answers_are_the_real_servers() {
    let api = KubeApi::start().await;
    let cm = api.put_object(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "target", "namespace": "default"}
    }));
    let uid = cm["metadata"]["uid"].as_str().unwrap().to_string();
    let url = format!("{}/api/v1/namespaces/default/configmaps/target", api.url());
    let http = reqwest::Client::new();
    let delete = |body: String| {
        http.delete(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // A uid or resourceVersion that does not match: 409, nothing deleted.
    let resp =
        delete(r#"{"propagationPolicy":"Background","preconditions":{"uid":"not-it"}}"#.into())
            .await
            .unwrap();
    assert_eq!(resp.status(), 409);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "Conflict");
    assert_eq!(
        st["message"],
        format!("Operation cannot be fulfilled on ConfigMap \"target\": the UID in the precondition (not-it) does not match the UID in record ({uid}). The object might have been deleted and then recreated")
    );
    assert_eq!(st["details"]["name"], "target");
    let resp = delete(r#"{"preconditions":{"resourceVersion":"1"}}"#.into())
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let st: Value = resp.json().await.unwrap();
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("the ResourceVersion in the precondition (1) does not match"),
        "{st}"
    );
    // A policy that does not exist: 422. A dry run: nothing deleted.
    let resp = http
        .delete(format!("{url}?propagationPolicy=Sideways"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = delete(format!(
        r#"{{"dryRun":["All"],"preconditions":{{"uid":"{uid}"}}}}"#
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(api
        .get_object("v1", "configmaps", Some("default"), "target")
        .is_some());
    assert_eq!(
        api.get_object("v1", "configmaps", Some("default"), "target")
            .unwrap(),
        cm
    );

    // The uid that matches: deleted at once; a ConfigMap's store answers
    // with a Status naming it.
    let resp = delete(format!(
        r#"{{"propagationPolicy":"Background","preconditions":{{"uid":"{uid}"}}}}"#
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(
        st,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "target", "kind": "configmaps", "uid": uid}})
    );
    assert!(api
        .get_object("v1", "configmaps", Some("default"), "target")
        .is_none());

    // A Service's store answers with the object; a Namespace checks the uid
    // itself and words it its way.
    api.put_object(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}
    }));
    let svc: Value = http
        .delete(format!(
            "{}/api/v1/namespaces/default/services/svc",
            api.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(svc["kind"], "Service", "{svc}");
    api.put_namespace("team");
    let ns_uid = api.get_object("v1", "namespaces", None, "team").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = http
        .delete(format!("{}/api/v1/namespaces/team", api.url()))
        .body(r#"{"preconditions":{"uid":"nope"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(
        st["message"],
        format!("Operation cannot be fulfilled on namespaces \"team\": Precondition failed: UID in precondition: nope, UID in object meta: {ns_uid}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_orphaning_by_default() {
    let api = KubeApi::start().await;
    let job = api.put_object(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}
    }));
    api.put_object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "once-a", "namespace": "default", "ownerReferences": [owned_by(&job)]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }));
    // No options at all: batch/v1 Jobs default to orphaning their Pods.
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/apis/batch/v1/namespaces/default/jobs/once",
            api.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["kind"], "Job", "{body}");
    assert_eq!(body["metadata"]["finalizers"], json!(["orphan"]));
    eventually("the Job gone", || {
        api.get_object("batch/v1", "jobs", Some("default"), "once")
            .is_none()
            .then_some(())
    })
    .await;
    let pod = api
        .get_object("v1", "pods", Some("default"), "once-a")
        .expect("the Pod is kept");
    assert!(pod["metadata"]["ownerReferences"].is_null(), "{pod}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_namespace_refuses_content_and_goes_once_empty() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(
        &kc,
        dir.path(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: team\n  finalizers: [example.com/hold]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n  namespace: team\n",
        "chump",
        &[],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &["delete", "namespace", "team", "--wait=false"],
    ));
    let ns = api.get_object("v1", "namespaces", None, "team").unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    let table = ok(kubectl(&kc, dir.path(), &["get", "namespace", "team"]));
    assert!(table.contains("Terminating"), "{table}");

    // No new content.
    let file = dir.path().join("new.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: new\n  namespace: team\n",
    )
    .unwrap();
    let err = failed(kubectl(
        &kc,
        dir.path(),
        &["create", "-f", file.to_str().unwrap()],
    ));
    assert!(
        err.contains("Forbidden")
            && err.contains("configmaps \"new\" is forbidden: unable to create new content in namespace team because it is being terminated"),
        "{err}"
    );

    // Its content is deleted; the held ConfigMap holds the namespace.
    eventually("the content deleted", || {
        let held = api.get_object("v1", "configmaps", Some("team"), "held")?;
        (held["metadata"]["deletionTimestamp"].is_string()
            && api
                .get_object("v1", "configmaps", Some("team"), "plain")
                .is_none())
        .then_some(())
    })
    .await;
    let ns = eventually("the remaining finalizer reported", || {
        api.get_object("v1", "namespaces", None, "team").filter(|ns| {
            ns["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "NamespaceFinalizersRemaining"
                        && c["status"] == "True"
                        && c["message"]
                            == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                })
            })
        })
    })
    .await;
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));

    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "patch",
            "configmap",
            "held",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &["wait", "--for=delete", "namespace/team", "--timeout=10s"],
    ));
    assert!(api.get_object("v1", "namespaces", None, "team").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_finalized_by_hand_goes_at_once() {
    let api = KubeApi::start().await;
    api.put_namespace("stuck");
    api.put_object(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": "stuck", "finalizers": ["example.com/hold"]}
    }));
    let http = reqwest::Client::new();
    let ns_url = format!("{}/api/v1/namespaces/stuck", api.url());
    let resp = http.delete(&ns_url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ns: Value = resp.json().await.unwrap();
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(ns["status"]["phase"], "Terminating");
    // `kubectl replace --raw …/finalize` with no finalizer: gone, whatever
    // it still holds.
    let resp = http
        .put(format!("{ns_url}/finalize"))
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"stuck"},"spec":{"finalizers":[]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(api.get_object("v1", "namespaces", None, "stuck").is_none());
    assert!(api
        .get_object("v1", "configmaps", Some("stuck"), "held")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_deletes_what_the_selector_lists() {
    let api = KubeApi::start().await;
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        api.put_object(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}}
        }));
    }
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/api/v1/namespaces/default/configmaps?labelSelector=app%3Dweb",
            api.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let list: Value = resp.json().await.unwrap();
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let left: Vec<String> = api
        .list_objects("v1", "configmaps", Some("default"))
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec!["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_are_owned_through_the_status_subresource() {
    let api = KubeApi::start().await;
    // (An autoscaler's status: no controller of the stand-in writes it.)
    api.put_object(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 3}
    }));
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web/status?fieldManager=hpa-controller",
            api.url()
        ))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"status":{"currentReplicas":1},"spec":{"maxReplicas":5}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let hpa = api
        .get_object(
            "autoscaling/v2",
            "horizontalpodautoscalers",
            Some("default"),
            "web",
        )
        .unwrap();
    assert_eq!(hpa["status"]["currentReplicas"], 1);
    assert_eq!(hpa["spec"]["maxReplicas"], 3, "only status is written");
    assert_eq!(
        fields_of(&hpa, "hpa-controller", "Update", Some("status")),
        Some(json!({"f:status": {"f:currentReplicas": {}}}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_crd_deletes_its_custom_resources_first() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(
        &kc,
        dir.path(),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n",
        "chump",
        &[],
    ));
    ok(apply_as(
        &kc,
        dir.path(),
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: default\n  finalizers: [example.com/hold]\nspec: {size: 1}\n",
        "chump",
        &[],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &["delete", "crd", "widgets.example.com", "--wait=false"],
    ));
    let w1 = eventually("the custom resource being deleted", || {
        api.get_object("example.com/v1", "widgets", Some("default"), "w1")
            .filter(|w| w["metadata"]["deletionTimestamp"].is_string())
    })
    .await;
    assert_eq!(w1["metadata"]["finalizers"], json!(["example.com/hold"]));
    let crd = api
        .get_object(
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            None,
            "widgets.example.com",
        )
        .expect("held by its custom resource");
    assert_eq!(
        crd["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    // No new custom resource meanwhile.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/apis/example.com/v1/namespaces/default/widgets",
            api.url()
        ))
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w2"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "patch",
            "widget",
            "w1",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "wait",
            "--for=delete",
            "crd/widgets.example.com",
            "--timeout=10s",
        ],
    ));
    let resp = reqwest::Client::new()
        .get(format!("{}/apis/example.com/v1", api.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the kind is no longer served");
}

// ---------------------------------------------------------------------------
// Field ownership

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_takes_replicas_from_chump() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    let d = deployment(&api).unwrap();
    let chump = fields_of(&d, "chump", "Apply", None).unwrap();
    assert!(chump["f:spec"]["f:replicas"].is_object(), "{chump}");

    api.clear_requests();
    ok(kubectl(
        &kc,
        dir.path(),
        &["scale", "deployment", "web", "-n", "shop", "--replicas=5"],
    ));
    let scale_write = api.writes();
    assert!(
        scale_write.len() == 1 && scale_write[0].path.ends_with("/deployments/web/scale"),
        "{scale_write:?}"
    );
    let d = deployment(&api).unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    // kubectl 1.32 names no field manager for a scale: the server names it
    // after the user agent.
    assert_eq!(
        fields_of(&d, "kubectl", "Update", Some("scale")),
        Some(json!({"f:spec": {"f:replicas": {}}})),
        "{}",
        d["metadata"]["managedFields"]
    );
    let chump = fields_of(&d, "chump", "Apply", None).unwrap();
    assert!(chump["f:spec"]["f:replicas"].is_null(), "{chump}");
    assert!(chump["f:spec"]["f:template"].is_object(), "{chump}");

    // The Scale, as an autoscaler reads it.
    let scale: Value = reqwest::Client::new()
        .get(format!(
            "{}/apis/apps/v1/namespaces/shop/deployments/web/scale",
            api.url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    assert_eq!(scale["metadata"]["uid"], d["metadata"]["uid"]);

    // chump's apply of its replicas now conflicts, unless forced.
    let err = failed(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    assert!(
        err.contains(
            "conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
        ),
        "{err}"
    );
    assert_eq!(deployment(&api).unwrap()["spec"]["replicas"], 5);
    ok(apply_as(
        &kc,
        dir.path(),
        WEB,
        "chump",
        &["--force-conflicts"],
    ));
    let d = deployment(&api).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(fields_of(&d, "chump", "Apply", None).unwrap()["f:spec"]["f:replicas"].is_object());
    assert_eq!(
        fields_of(&d, "kubectl", "Update", Some("scale")),
        None,
        "an entry left with no field is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_of_a_statefulset() {
    let api = KubeApi::start().await;
    api.put_object(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 1, "serviceName": "db",
                 "selector": {"matchLabels": {"app": "db", "tier": "data"}},
                 "template": {"metadata": {"labels": {"app": "db", "tier": "data"}},
                              "spec": {"containers": [{"name": "db", "image": "postgres"}]}}}
    }));
    let url = format!(
        "{}/apis/apps/v1/namespaces/default/statefulsets/db/scale",
        api.url()
    );
    let http = reqwest::Client::new();
    let put = |replicas: i64| {
        http.put(&url)
            .header("content-type", "application/json")
            .body(
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                         "metadata": {"name": "db", "namespace": "default"},
                         "spec": {"replicas": replicas}})
                .to_string(),
            )
            .send()
    };
    let resp = put(3).await.unwrap();
    assert_eq!(resp.status(), 200);
    let scale: Value = resp.json().await.unwrap();
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=db,tier=data");
    assert_eq!(
        api.get_object("apps/v1", "statefulsets", Some("default"), "db")
            .unwrap()["spec"]["replicas"],
        3
    );
    assert_eq!(put(-1).await.unwrap().status(), 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_set_env_takes_the_value_and_chumps_apply_removes_what_it_dropped() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    let env_item = |fields: &Value, name: &str| {
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:env"]
            [format!("k:{{\"name\":\"{name}\"}}")]
        .clone()
    };
    let d = deployment(&api).unwrap();
    assert_eq!(
        env_item(&fields_of(&d, "chump", "Apply", None).unwrap(), "GREETING"),
        json!({".": {}, "f:name": {}, "f:value": {}})
    );

    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "set",
            "env",
            "deployment/web",
            "-n",
            "shop",
            "-c",
            "app",
            "GREETING=tampered",
            "NEW=1",
        ],
    ));
    let d = deployment(&api).unwrap();
    let chump = fields_of(&d, "chump", "Apply", None).unwrap();
    let set = fields_of(&d, "kubectl-set", "Update", None).expect("kubectl-set's entry");
    // The changed value is kubectl's now; the item and its name stay chump's.
    assert_eq!(env_item(&chump, "GREETING"), json!({".": {}, "f:name": {}}));
    assert_eq!(env_item(&set, "GREETING"), json!({"f:value": {}}));
    assert_eq!(
        env_item(&set, "NEW"),
        json!({".": {}, "f:name": {}, "f:value": {}})
    );
    assert_eq!(
        env_item(&chump, "OTHER"),
        json!({".": {}, "f:name": {}, "f:value": {}})
    );

    // chump applies again, without OTHER: its value back, OTHER removed
    // (chump alone owned it), NEW kept (kubectl-set's).
    let without_other = WEB.replace("        - name: OTHER\n          value: x\n", "");
    ok(apply_as(
        &kc,
        dir.path(),
        &without_other,
        "chump",
        &["--force-conflicts"],
    ));
    let d = deployment(&api).unwrap();
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "GREETING", "value": "hello"}, {"name": "NEW", "value": "1"}])
    );
    let chump = fields_of(&d, "chump", "Apply", None).unwrap();
    assert_eq!(
        env_item(&chump, "GREETING"),
        json!({".": {}, "f:name": {}, "f:value": {}})
    );
    assert!(env_item(&chump, "OTHER").is_null());
    let set = fields_of(&d, "kubectl-set", "Update", None).unwrap();
    assert!(env_item(&set, "GREETING").is_null(), "{set}");
    assert!(env_item(&set, "NEW").is_object(), "{set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_edit_is_an_update_that_takes_what_it_changed() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    ok(apply_as(&kc, dir.path(), WEB, "chump", &[]));
    api.clear_requests();
    let out = ok(kubectl_with(
        &kc,
        dir.path(),
        &["edit", "deployment/web", "-n", "shop"],
        &[(
            "KUBE_EDITOR",
            "sed -i s/registry.example.com.web:1.0/web:edited/",
        )],
    ));
    assert!(out.contains("deployment.apps/web edited"), "{out}");
    let writes = api.writes();
    assert!(
        writes.len() == 1 && writes[0].query.contains("fieldManager=kubectl-edit"),
        "{writes:?}"
    );
    let d = deployment(&api).unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:edited"
    );
    let container = |f: &Value| {
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"].clone()
    };
    let edit = fields_of(&d, "kubectl-edit", "Update", None).expect("kubectl-edit's entry");
    assert_eq!(container(&edit), json!({"f:image": {}}));
    let chump = fields_of(&d, "chump", "Apply", None).unwrap();
    assert!(container(&chump)["f:image"].is_null(), "{chump}");
    assert!(container(&chump)["f:env"].is_object(), "{chump}");
}

// ---------------------------------------------------------------------------
// Discovery and watch

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_delete_for_every_kind_and_the_scale_subresources() {
    let api = KubeApi::start().await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", api.url());
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let mut lists = vec![get("/api/v1".into()).await];
    for g in get("/apis".into()).await["groups"].as_array().unwrap() {
        let gv = g["preferredVersion"]["groupVersion"].as_str().unwrap();
        lists.push(get(format!("/apis/{gv}")).await);
    }
    let mut subresources = Vec::new();
    for list in &lists {
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if name.contains('/') {
                subresources.push((
                    format!("{}/{name}", list["groupVersion"].as_str().unwrap()),
                    r.clone(),
                ));
                continue;
            }
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for v in ["delete", "deletecollection", "watch"] {
                assert!(verbs.contains(&v), "{name}: {verbs:?}");
            }
        }
    }
    for sts in ["apps/v1/deployments/scale", "apps/v1/statefulsets/scale"] {
        let (_, r) = subresources
            .iter()
            .find(|(n, _)| n == sts)
            .unwrap_or_else(|| panic!("{sts} in discovery"));
        assert_eq!(r["kind"], "Scale");
        assert_eq!(r["group"], "autoscaling");
        assert_eq!(r["version"], "v1");
    }

    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let names = ok(kubectl(
        &kc,
        dir.path(),
        &["api-resources", "--verbs=delete", "-o", "name"],
    ));
    for n in ["deployments.apps", "configmaps", "namespaces", "jobs.batch"] {
        assert!(names.lines().any(|l| l == n), "{n}: {names}");
    }
}

/// Read watch events from `resp` until `want` matches one.
async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut Vec<u8>,
    want: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let event: Value = serde_json::from_slice(&line).expect("one JSON event a line");
            if want(&event) {
                return event;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the watch still open");
        buf.extend_from_slice(&chunk);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_streams_the_changes_after_its_resource_version() {
    let api = KubeApi::start().await;
    let http = reqwest::Client::new();
    let base = format!("{}/api/v1/namespaces/default/configmaps", api.url());
    let list: Value = http.get(&base).send().await.unwrap().json().await.unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut resp = http
        .get(format!(
            "{base}?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut buf = Vec::new();
    api.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "other", "namespace": "default"}}));
    api.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "a", "namespace": "default", "labels": {"app": "web"}}}));
    let added = next_event(&mut resp, &mut buf, |_| true).await;
    assert_eq!(added["type"], "ADDED");
    assert_eq!(
        added["object"]["metadata"]["name"], "a",
        "the selector filters"
    );
    let deleted = http.delete(format!("{base}/a")).send().await.unwrap();
    assert!(deleted.status().is_success());
    let gone = next_event(&mut resp, &mut buf, |_| true).await;
    assert_eq!(gone["type"], "DELETED");
    assert_eq!(gone["object"]["metadata"]["name"], "a");

    // From a resourceVersion older than the log: 410 Expired, in the stream.
    let mut old = http
        .get(format!("{base}?watch=true&resourceVersion=1"))
        .send()
        .await
        .unwrap();
    let event = next_event(&mut old, &mut Vec::new(), |_| true).await;
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

// ---------------------------------------------------------------------------
// Workloads, the scheduler and the kubelets

/// `eventually`, for longer.
async fn within<T>(what: &str, secs: u64, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Namespace and a Deployment `name` in it, container `web`.
fn web_yaml(ns: &str, name: &str, replicas: u32, image: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\n\
         spec:\n  replicas: {replicas}\n{extra_spec}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    \
         spec:\n      containers:\n      - name: web\n        image: {image}\n"
    )
}

fn apply_ok(kc: &Path, dir: &Path, yaml: &str) {
    ok(apply_as(kc, dir, yaml, "chump", &[]));
}

fn condition<'a>(o: &'a Value, kind: &str) -> &'a Value {
    o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn replica_sets(api: &KubeApi, ns: &str) -> Vec<Value> {
    api.list_objects("apps/v1", "replicasets", Some(ns))
}

fn container_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn waiting_reason(pod: &Value) -> Option<&str> {
    container_status(pod)["state"]["waiting"]["reason"].as_str()
}

fn is_safe_encoded(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// `kubectl get events --field-selector involvedObject.name=<name> -o json`.
fn events_of(kc: &Path, dir: &Path, ns: &str, name: &str) -> Vec<Value> {
    let out = ok(kubectl(
        kc,
        dir,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ],
    ));
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn find_event<'a>(events: &'a [Value], reason: &str, message: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["reason"] == reason && e["message"] == message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_rolls_out_through_a_replicaset_and_its_pods() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let v1 = web_yaml("shop", "web", 2, "nginx:1.27", "");
    apply_ok(&kc, dir.path(), &v1);
    let out = ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );

    // One ReplicaSet, named and labelled by the template's hash, owned by
    // the Deployment.
    let d = deployment(&api).unwrap();
    let rss = replica_sets(&api, "shop");
    assert_eq!(rss.len(), 1, "{rss:?}");
    let rs = &rss[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_safe_encoded(&hash) && hash.len() >= 5, "{hash}");
    let rs_name = format!("web-{hash}");
    assert_eq!(rs["metadata"]["name"], rs_name);
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"],
        json!({"app": "web", "pod-template-hash": hash})
    );
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web", "pod-template-hash": hash})
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        "2"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"],
        "3"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(rs["metadata"]["ownerReferences"], json!([owned_by(&d)]));
    assert_eq!(rs["status"]["replicas"], 2);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 2);
    assert_eq!(rs["status"]["readyReplicas"], 2);
    assert_eq!(rs["status"]["availableReplicas"], 2);
    assert_eq!(rs["status"]["observedGeneration"], 1);

    // The Deployment's status, as the real controller writes it.
    let st = &d["status"];
    assert_eq!(st["observedGeneration"], 1);
    for f in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        assert_eq!(st[f], 2, "{f}: {st}");
    }
    assert!(st["unavailableReplicas"].is_null(), "zero is omitted: {st}");
    let available = condition(&d, "Available");
    assert_eq!(available["status"], "True");
    assert_eq!(available["reason"], "MinimumReplicasAvailable");
    assert_eq!(available["message"], "Deployment has minimum availability.");
    let progressing = condition(&d, "Progressing");
    assert_eq!(progressing["status"], "True");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    assert_eq!(
        progressing["message"],
        format!("ReplicaSet \"{rs_name}\" has successfully progressed.")
    );
    for c in [available, progressing] {
        assert!(
            c["lastUpdateTime"].is_string() && c["lastTransitionTime"].is_string(),
            "{c}"
        );
    }

    // Its pods: named after the ReplicaSet, labelled, owned, bound, ready.
    let pods = api.pods("shop", &format!("app=web,pod-template-hash={hash}"));
    assert_eq!(pods.len(), 2);
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let suffix = name.strip_prefix(&format!("{rs_name}-")).unwrap();
        assert!(suffix.len() == 5 && is_safe_encoded(suffix), "{name}");
        assert_eq!(p["metadata"]["generateName"], format!("{rs_name}-"));
        assert_eq!(p["metadata"]["ownerReferences"], json!([owned_by(rs)]));
        assert_eq!(p["status"]["phase"], "Running");
        assert!(["node-1", "node-2"].contains(&p["spec"]["nodeName"].as_str().unwrap()));
        assert_eq!(condition(p, "Ready")["status"], "True");
    }
    let table = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "pods", "-n", "shop", "-l", "app=web"],
    ));
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with(&rs_name) && l.contains(" 1/1 ") && l.contains("Running"))
            .count(),
        2,
        "{table}"
    );
    let table = ok(kubectl(&kc, dir.path(), &["get", "rs", "-n", "shop"]));
    assert!(
        table.lines().any(|l| l.starts_with(&rs_name)
            && l.split_whitespace().skip(1).take(3).collect::<Vec<_>>() == ["2", "2", "2"]),
        "{table}"
    );

    // A new image: a new ReplicaSet, revision 2, scaled up as the old one
    // is scaled down.
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "set",
            "image",
            "deployment/web",
            "web=nginx:1.28",
            "-n",
            "shop",
        ],
    ));
    let out = ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    assert!(out.contains("successfully rolled out"), "{out}");
    let d = deployment(&api).unwrap();
    assert_eq!(d["status"]["observedGeneration"], 2);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let new_rs = within("the old ReplicaSet scaled to zero", 10, || {
        let rss = replica_sets(&api, "shop");
        let old = rss.iter().find(|r| r["metadata"]["name"] == rs_name)?;
        (old["spec"]["replicas"] == 0 && old["status"]["replicas"] == 0).then_some(())?;
        rss.into_iter().find(|r| r["metadata"]["name"] != rs_name)
    })
    .await;
    let new_name = new_rs["metadata"]["name"].as_str().unwrap().to_string();
    let new_hash = new_rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_ne!(new_hash, hash);
    assert_eq!(new_name, format!("web-{new_hash}"));
    assert_eq!(
        new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        new_rs["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    let pods = api.pods("shop", "app=web");
    assert_eq!(pods.len(), 2, "the old pods are gone");
    assert!(pods
        .iter()
        .all(|p| p["metadata"]["labels"]["pod-template-hash"] == new_hash));
    let scaled: Vec<String> = api
        .events_about("shop", "Deployment", "web")
        .iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    for m in [
        format!("Scaled up replica set {rs_name} from 0 to 2"),
        format!("Scaled up replica set {new_name} from 0 to 1"),
        format!("Scaled down replica set {rs_name} from 2 to 1"),
        format!("Scaled down replica set {rs_name} from 1 to 0"),
    ] {
        assert!(scaled.contains(&m), "{m:?} not in {scaled:?}");
    }
    let e = &api.events_about("shop", "Deployment", "web")[0];
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["source"], json!({"component": "deployment-controller"}));
    assert_eq!(e["involvedObject"]["apiVersion"], "apps/v1");

    // The first template again: its ReplicaSet is the new one, revision 3.
    ok(apply_as(
        &kc,
        dir.path(),
        &v1,
        "chump",
        &["--force-conflicts"],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    let rs = within("the first ReplicaSet back", 10, || {
        api.get_object("apps/v1", "replicasets", Some("shop"), &rs_name)
            .filter(|r| r["spec"]["replicas"] == 2 && r["status"]["availableReplicas"] == 2)
    })
    .await;
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        deployment(&api).unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(replica_sets(&api, "shop").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_backs_off_until_the_registry_has_it() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    api.set_pod_behaviour("nginx:bad", PodBehaviour::ImagePullBackOff);
    apply_ok(
        &kc,
        dir.path(),
        &web_yaml("shop", "web", 1, "nginx:1.27", ""),
    );
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "set",
            "image",
            "deployment/web",
            "web=nginx:bad",
            "-n",
            "shop",
        ],
    ));
    let out = kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=3s",
        ],
    );
    let err = failed(out);
    assert!(err.contains("timed out"), "{err}");

    // ErrImagePull first, as the kubelet reports a failed pull…
    let pod = within("ErrImagePull", 10, || {
        api.pods("shop", "app=web")
            .into_iter()
            .find(|p| waiting_reason(p) == Some("ErrImagePull"))
    })
    .await;
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let not_found = "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/library/nginx:bad\": failed to resolve reference \"docker.io/library/nginx:bad\": docker.io/library/nginx:bad: not found";
    let cs = container_status(&pod);
    assert_eq!(cs["state"]["waiting"]["message"], not_found);
    assert_eq!(cs["image"], "nginx:bad");
    assert_eq!(cs["imageID"], "");
    assert_eq!(
        (cs["ready"].clone(), cs["started"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["lastState"], json!({}));
    assert_eq!(pod["status"]["phase"], "Pending");
    let ready = condition(&pod, "Ready");
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["reason"].as_str(),
            ready["message"].as_str()
        ),
        (
            Some("False"),
            Some("ContainersNotReady"),
            Some("containers with unready status: [web]")
        )
    );
    assert_eq!(condition(&pod, "PodScheduled")["status"], "True");
    // …then ImagePullBackOff.
    let pod = within("ImagePullBackOff", 10, || {
        api.get_object("v1", "pods", Some("shop"), &name)
            .filter(|p| waiting_reason(p) == Some("ImagePullBackOff"))
    })
    .await;
    assert_eq!(
        container_status(&pod)["state"]["waiting"]["message"],
        "Back-off pulling image \"nginx:bad\""
    );
    let table = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "pod", &name, "-n", "shop"],
    ));
    assert!(
        table.contains("0/1")
            && (table.contains("ImagePullBackOff") || table.contains("ErrImagePull")),
        "{table}"
    );

    // The kubelet's events, listed by a field selector, repeated ones
    // counted.
    let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
    let events = within("the pull failure counted twice", 10, || {
        let events = events_of(&kc, dir.path(), "shop", &name);
        find_event(&events, "Failed", "Error: ErrImagePull")
            .filter(|e| e["count"].as_i64() >= Some(2))
            .map(|_| events.clone())
    })
    .await;
    let pulled = find_event(
        &events,
        "Failed",
        &format!("Failed to pull image \"nginx:bad\": {not_found}"),
    )
    .expect("the pull failure");
    assert_eq!(pulled["type"], "Warning");
    assert_eq!(
        pulled["source"],
        json!({"component": "kubelet", "host": node})
    );
    assert_eq!(pulled["reportingComponent"], "kubelet");
    assert_eq!(pulled["reportingInstance"], node);
    let io = &pulled["involvedObject"];
    assert_eq!(
        (
            io["kind"].clone(),
            io["namespace"].clone(),
            io["name"].clone(),
            io["uid"].clone(),
            io["apiVersion"].clone(),
            io["fieldPath"].clone()
        ),
        (
            json!("Pod"),
            json!("shop"),
            json!(name),
            json!(uid),
            json!("v1"),
            json!("spec.containers{web}")
        )
    );
    assert!(pulled["firstTimestamp"].is_string() && pulled["lastTimestamp"].is_string());
    let event_name = pulled["metadata"]["name"].as_str().unwrap();
    let hex = event_name.strip_prefix(&format!("{name}.")).unwrap();
    assert!(
        hex.len() >= 15 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{event_name}"
    );
    let backoff =
        find_event(&events, "BackOff", "Back-off pulling image \"nginx:bad\"").expect("BackOff");
    assert_eq!(
        backoff["type"], "Normal",
        "the kubelet's pull back-off is Normal"
    );
    assert!(find_event(&events, "Failed", "Error: ImagePullBackOff").is_some());
    assert!(find_event(&events, "Pulling", "Pulling image \"nginx:bad\"").is_some());
    assert!(
        events
            .iter()
            .filter(|e| e["source"]["component"] == "kubelet")
            .all(|e| e["count"].as_i64() >= Some(1) && e["eventTime"].is_null()),
        "{events:?}"
    );
    // The scheduler's comes through events.k8s.io: eventTime, no count.
    let scheduled = events
        .iter()
        .find(|e| e["reason"] == "Scheduled")
        .expect("Scheduled");
    assert_eq!(
        scheduled["message"],
        format!("Successfully assigned shop/{name} to {node}")
    );
    assert_eq!(scheduled["action"], "Binding");
    assert_eq!(scheduled["reportingComponent"], "default-scheduler");
    assert!(scheduled["eventTime"].is_string() && scheduled["lastTimestamp"].is_null());
    assert!(scheduled["count"].is_null(), "{scheduled}");

    // The old pod still serves: the Deployment is available, progressing.
    let d = deployment(&api).unwrap();
    assert_eq!(d["status"]["replicas"], 2);
    assert_eq!(d["status"]["updatedReplicas"], 1);
    assert_eq!(d["status"]["availableReplicas"], 1);
    assert_eq!(d["status"]["unavailableReplicas"], 1);
    assert_eq!(condition(&d, "Available")["status"], "True");
    assert_eq!(condition(&d, "Progressing")["status"], "True");

    // The registry gets the image: the same pod starts, the rollout ends.
    api.clear_pod_behaviour("nginx:bad");
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    let pod = api
        .get_object("v1", "pods", Some("shop"), &name)
        .expect("the same pod");
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(container_status(&pod)["imageID"]
        .as_str()
        .unwrap()
        .starts_with("docker.io/library/nginx@sha256:"));
}

/// POST a bare Pod `name` in `ns` with container `app` running `image`.
async fn post_pod(api: &KubeApi, ns: &str, name: &str, image: &str, labels: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces/{ns}/pods", api.url()))
        .header("content-type", "application/json")
        .body(
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "labels": labels},
                   "spec": {"containers": [{"name": "app", "image": image}]}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{name}");
    resp.json().await.unwrap()
}

fn pod(api: &KubeApi, ns: &str, name: &str) -> Option<Value> {
    api.get_object("v1", "pods", Some(ns), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_behaviour_reports_what_the_kubelet_and_scheduler_would() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    api.put_namespace("pods");
    let config = "configmap \"app-config\" not found";
    let create = "failed to reserve container name \"app_x\": name is reserved";
    let behaviours = [
        ("nginx:slow", PodBehaviour::Pending),
        ("nginx:Invalid_Tag", PodBehaviour::InvalidImageName),
        (
            "nginx:config",
            PodBehaviour::CreateContainerConfigError(config.into()),
        ),
        (
            "nginx:create",
            PodBehaviour::CreateContainerError(create.into()),
        ),
        ("nginx:crash", PodBehaviour::CrashLoopBackOff),
        ("nginx:huge", PodBehaviour::Unschedulable),
        ("nginx:probe", PodBehaviour::NotReady),
        ("nginx:mount", PodBehaviour::FailedMount),
    ];
    for (image, b) in &behaviours {
        api.set_pod_behaviour(image, b.clone());
    }
    let names = [
        "ok", "slow", "invalid", "config", "create", "crash", "huge", "probe", "mount",
    ];
    let images = [
        "nginx:1.27",
        "nginx:slow",
        "nginx:Invalid_Tag",
        "nginx:config",
        "nginx:create",
        "nginx:crash",
        "nginx:huge",
        "nginx:probe",
        "nginx:mount",
    ];
    for (n, i) in names.iter().zip(images) {
        let created = post_pod(&api, "pods", n, i, json!({"app": n})).await;
        assert_eq!(created["status"]["phase"], "Pending");
        assert_eq!(created["status"]["qosClass"], "BestEffort");
        assert_eq!(created["spec"]["restartPolicy"], "Always", "defaulted");
        assert_eq!(
            created["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
    }
    let events = |name: &str| events_of(&kc, dir.path(), "pods", name);

    // Ready (any image without a behaviour): scheduled, started, ready.
    let ready = within("the pod ready", 10, || {
        pod(&api, "pods", "ok").filter(|p| condition(p, "Ready")["status"] == "True")
    })
    .await;
    assert_eq!(ready["status"]["phase"], "Running");
    let types: Vec<&str> = ready["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert!(ready["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "True"
            && c["lastTransitionTime"].is_string()
            && c["lastProbeTime"].is_null()));
    let cs = container_status(&ready);
    assert_eq!(cs["name"], "app");
    assert_eq!(cs["image"], "nginx:1.27");
    assert!(
        cs["imageID"]
            .as_str()
            .unwrap()
            .starts_with("docker.io/library/nginx@sha256:"),
        "{cs}"
    );
    assert!(
        cs["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{cs}"
    );
    assert_eq!(
        (
            cs["ready"].clone(),
            cs["started"].clone(),
            cs["restartCount"].clone()
        ),
        (json!(true), json!(true), json!(0))
    );
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    assert_eq!(cs["lastState"], json!({}));
    let node = ready["spec"]["nodeName"].as_str().unwrap();
    assert!(["node-1", "node-2"].contains(&node));
    assert!(ready["status"]["podIP"]
        .as_str()
        .unwrap()
        .starts_with("10.244."));
    assert!(ready["status"]["hostIP"]
        .as_str()
        .unwrap()
        .starts_with("172.18.0."));
    assert!(ready["status"]["startTime"].is_string());
    let ev = events("ok");
    for (reason, message) in [
        (
            "Pulled",
            "Container image \"nginx:1.27\" already present on machine",
        ),
        ("Created", "Created container: app"),
        ("Started", "Started container app"),
    ] {
        let e = find_event(&ev, reason, message).unwrap_or_else(|| panic!("{reason}: {ev:?}"));
        assert_eq!(e["type"], "Normal");
    }

    // Pending: bound, but ContainerCreating forever.
    let slow = within("ContainerCreating", 10, || {
        pod(&api, "pods", "slow").filter(|p| waiting_reason(p) == Some("ContainerCreating"))
    })
    .await;
    assert_eq!(condition(&slow, "PodScheduled")["status"], "True");
    assert_eq!(
        condition(&slow, "PodReadyToStartContainers")["status"],
        "False"
    );
    assert!(container_status(&slow)["state"]["waiting"]["message"].is_null());

    // InvalidImageName.
    let invalid = within("InvalidImageName", 10, || {
        pod(&api, "pods", "invalid").filter(|p| waiting_reason(p) == Some("InvalidImageName"))
    })
    .await;
    let inspect = "Failed to apply default image tag \"nginx:Invalid_Tag\": couldn't parse image name \"nginx:Invalid_Tag\": invalid reference format";
    assert_eq!(
        container_status(&invalid)["state"]["waiting"]["message"],
        inspect
    );
    let ev = events("invalid");
    assert_eq!(
        find_event(&ev, "InspectFailed", inspect).expect("InspectFailed")["type"],
        "Warning"
    );
    assert!(
        find_event(&ev, "Failed", "Error: InvalidImageName").is_some(),
        "{ev:?}"
    );

    // CreateContainerConfigError and CreateContainerError, with the
    // message the test gave.
    for (name, reason, message) in [
        ("config", "CreateContainerConfigError", config),
        ("create", "CreateContainerError", create),
    ] {
        let p = within(reason, 10, || {
            pod(&api, "pods", name).filter(|p| waiting_reason(p) == Some(reason))
        })
        .await;
        assert_eq!(container_status(&p)["state"]["waiting"]["message"], message);
        assert_eq!(p["status"]["phase"], "Pending");
        let ev = events(name);
        let e = find_event(&ev, "Failed", &format!("Error: {message}"))
            .unwrap_or_else(|| panic!("{ev:?}"));
        assert_eq!(e["type"], "Warning");
        assert_eq!(e["involvedObject"]["fieldPath"], "spec.containers{app}");
    }

    // CrashLoopBackOff: runs, exits 1, restarts with back-off.
    let crash = within("two restarts and a back-off", 15, || {
        pod(&api, "pods", "crash").filter(|p| {
            container_status(p)["restartCount"].as_i64() >= Some(2)
                && waiting_reason(p) == Some("CrashLoopBackOff")
        })
    })
    .await;
    let uid = crash["metadata"]["uid"].as_str().unwrap();
    let cs = container_status(&crash);
    let message = cs["state"]["waiting"]["message"].as_str().unwrap();
    assert!(message.starts_with("back-off "), "{message}");
    assert!(
        message.ends_with(&format!(
            "s restarting failed container=app pod=crash_pods({uid})"
        )),
        "{message}"
    );
    let last = &cs["lastState"]["terminated"];
    assert_eq!(
        (last["exitCode"].clone(), last["reason"].clone()),
        (json!(1), json!("Error")),
        "{cs}"
    );
    assert!(
        last["startedAt"].is_string()
            && last["finishedAt"].is_string()
            && last["containerID"].is_string()
    );
    assert_eq!(cs["ready"], false);
    assert_eq!(crash["status"]["phase"], "Running");
    assert_eq!(condition(&crash, "Ready")["status"], "False");
    let ev = events("crash");
    let e = find_event(
        &ev,
        "BackOff",
        &format!("Back-off restarting failed container app in pod crash_pods({uid})"),
    )
    .unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(e["type"], "Warning");

    // Unschedulable: no node, PodScheduled=False, FailedScheduling.
    let huge = within("Unschedulable", 10, || {
        pod(&api, "pods", "huge")
            .filter(|p| condition(p, "PodScheduled")["reason"] == "Unschedulable")
    })
    .await;
    let scheduling = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.";
    assert_eq!(condition(&huge, "PodScheduled")["status"], "False");
    assert_eq!(condition(&huge, "PodScheduled")["message"], scheduling);
    assert_eq!(huge["status"]["phase"], "Pending");
    assert!(huge["spec"]["nodeName"].is_null());
    assert!(huge["status"]["containerStatuses"].is_null());
    let ev = events("huge");
    let e = find_event(&ev, "FailedScheduling", scheduling).unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["source"]["component"], "default-scheduler");
    assert_eq!(e["reportingComponent"], "default-scheduler");

    // NotReady: running, its readiness probe failing.
    let probe = within("Unhealthy", 10, || {
        pod(&api, "pods", "probe").filter(|p| container_status(p)["state"]["running"].is_object())
    })
    .await;
    let cs = container_status(&probe);
    assert_eq!(
        (cs["ready"].clone(), cs["started"].clone()),
        (json!(false), json!(true))
    );
    let ready = condition(&probe, "Ready");
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["reason"].as_str(),
            ready["message"].as_str()
        ),
        (
            Some("False"),
            Some("ContainersNotReady"),
            Some("containers with unready status: [app]")
        )
    );
    assert_eq!(condition(&probe, "ContainersReady")["status"], "False");
    let ev = events("probe");
    let e = find_event(
        &ev,
        "Unhealthy",
        "Readiness probe failed: HTTP probe failed with statuscode: 503",
    )
    .unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(e["type"], "Warning");

    // FailedMount: ContainerCreating, and the pod's event says why.
    let mount = within("FailedMount", 10, || {
        let ev = events("mount");
        find_event(
            &ev,
            "FailedMount",
            "MountVolume.SetUp failed for volume \"config\" : configmap \"missing\" not found",
        )
        .cloned()
    })
    .await;
    assert_eq!(mount["type"], "Warning");
    assert!(
        mount["involvedObject"]["fieldPath"].is_null(),
        "a pod's event: {mount}"
    );
    let p = pod(&api, "pods", "mount").unwrap();
    assert_eq!(waiting_reason(&p), Some("ContainerCreating"));
    assert_eq!(
        condition(&p, "PodReadyToStartContainers")["status"],
        "False"
    );

    // kubectl shows what a real cluster would.
    let table = ok(kubectl(&kc, dir.path(), &["get", "pods", "-n", "pods"]));
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name}: {table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("ok")[1..3], ["1/1", "Running"]);
    assert_eq!(row("slow")[1..3], ["0/1", "ContainerCreating"]);
    assert_eq!(row("invalid")[1..3], ["0/1", "InvalidImageName"]);
    assert_eq!(row("config")[1..3], ["0/1", "CreateContainerConfigError"]);
    assert_eq!(row("huge")[1..3], ["0/1", "Pending"]);
    assert_eq!(row("probe")[1..3], ["0/1", "Running"]);
    assert_eq!(row("mount")[1..3], ["0/1", "ContainerCreating"]);

    // Fixed: pods that never ran start; the crash-looping one stays up,
    // its restarts counted.
    for (image, _) in &behaviours {
        api.clear_pod_behaviour(image);
    }
    for name in [
        "slow", "invalid", "config", "create", "crash", "huge", "probe", "mount",
    ] {
        let p = within(&format!("{name} ready once fixed"), 10, || {
            pod(&api, "pods", name).filter(|p| condition(p, "Ready")["status"] == "True")
        })
        .await;
        assert_eq!(p["status"]["phase"], "Running", "{name}");
        if name == "crash" {
            assert!(container_status(&p)["restartCount"].as_i64() >= Some(2));
            assert_eq!(
                container_status(&p)["lastState"]["terminated"]["exitCode"],
                1
            );
        }
        if name == "huge" {
            assert!(p["spec"]["nodeName"].is_string());
            assert_eq!(condition(&p, "PodScheduled")["status"], "True");
        }
    }
}

fn sts_yaml(image: &str, partition: Option<u32>) -> String {
    let strategy = match partition {
        Some(p) => format!("  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: {p}\n"),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: data\n---\n\
         apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n  namespace: data\nspec:\n  replicas: 3\n  serviceName: db\n{strategy}  \
         selector:\n    matchLabels:\n      app: db\n  template:\n    metadata:\n      labels:\n        app: db\n    \
         spec:\n      containers:\n      - name: db\n        image: {image}\n"
    )
}

fn sts(api: &KubeApi) -> Value {
    api.get_object("apps/v1", "statefulsets", Some("data"), "db")
        .unwrap()
}

fn revision_label(p: &Value) -> String {
    p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_starts_its_pods_in_order_and_updates_from_the_highest_ordinal() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let rollout = |timeout: &str| {
        kubectl(
            &kc,
            dir.path(),
            &[
                "rollout",
                "status",
                "statefulset/db",
                "-n",
                "data",
                &format!("--timeout={timeout}"),
            ],
        )
    };
    // OrderedReady: db-1 waits for db-0 to be ready.
    api.set_pod_behaviour("postgres:16", PodBehaviour::Pending);
    apply_ok(&kc, dir.path(), &sts_yaml("postgres:16", None));
    within("db-0 created", 10, || pod(&api, "data", "db-0")).await;
    assert!(api.settle(Duration::from_secs(5)).await);
    assert!(pod(&api, "data", "db-1").is_none(), "db-1 waits for db-0");
    api.clear_pod_behaviour("postgres:16");
    let out = ok(rollout("20s"));
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );

    let s = sts(&api);
    let rev = s["status"]["updateRevision"].as_str().unwrap().to_string();
    let hash = rev.strip_prefix("db-").unwrap();
    assert!(is_safe_encoded(hash), "{rev}");
    assert_eq!(s["status"]["currentRevision"], rev);
    let st = &s["status"];
    for f in [
        "replicas",
        "readyReplicas",
        "availableReplicas",
        "currentReplicas",
        "updatedReplicas",
    ] {
        assert_eq!(st[f], 3, "{f}: {st}");
    }
    assert_eq!(st["collisionCount"], 0);
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(
        s["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
    for i in 0..3 {
        let p = pod(&api, "data", &format!("db-{i}")).unwrap();
        let labels = &p["metadata"]["labels"];
        assert_eq!(labels["controller-revision-hash"], rev);
        assert_eq!(
            labels["statefulset.kubernetes.io/pod-name"],
            format!("db-{i}")
        );
        assert_eq!(labels["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(p["metadata"]["ownerReferences"], json!([owned_by(&s)]));
        assert_eq!(p["spec"]["hostname"], format!("db-{i}"));
        assert_eq!(p["spec"]["subdomain"], "db");
    }
    let created: Vec<String> = api
        .events_about("data", "StatefulSet", "db")
        .iter()
        .filter(|e| e["reason"] == "SuccessfulCreate")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        created,
        (0..3)
            .map(|i| format!("create Pod db-{i} in StatefulSet db successful"))
            .collect::<Vec<_>>()
    );
    let cr = api
        .get_object("apps/v1", "controllerrevisions", Some("data"), &rev)
        .expect("the ControllerRevision");
    assert_eq!(cr["revision"], 1);
    assert_eq!(cr["metadata"]["ownerReferences"], json!([owned_by(&s)]));
    assert_eq!(
        cr["metadata"]["labels"]["controller.kubernetes.io/hash"],
        hash
    );

    // A new template: the highest ordinal first, the others wait for it.
    api.set_pod_behaviour("postgres:17", PodBehaviour::Pending);
    apply_ok(&kc, dir.path(), &sts_yaml("postgres:17", None));
    let new_rev = within("a new update revision", 10, || {
        let s = sts(&api);
        let r = s["status"]["updateRevision"].as_str()?.to_string();
        (r != rev && s["status"]["observedGeneration"] == 2).then_some(r)
    })
    .await;
    within("db-2 replaced", 10, || {
        pod(&api, "data", "db-2").filter(|p| revision_label(p) == new_rev)
    })
    .await;
    assert!(api.settle(Duration::from_secs(5)).await);
    for i in [0, 1] {
        assert_eq!(
            revision_label(&pod(&api, "data", &format!("db-{i}")).unwrap()),
            rev,
            "db-{i} waits"
        );
    }
    let s = sts(&api);
    assert_eq!(s["status"]["currentRevision"], rev);
    assert_eq!(s["status"]["updatedReplicas"], 1);
    assert_eq!(s["status"]["currentReplicas"], 2);
    assert_eq!(s["status"]["readyReplicas"], 2);
    failed(rollout("2s"));
    api.clear_pod_behaviour("postgres:17");
    ok(rollout("20s"));
    let s = within("the update complete", 10, || {
        Some(sts(&api)).filter(|s| s["status"]["currentRevision"] == new_rev)
    })
    .await;
    assert_eq!(s["status"]["updatedReplicas"], 3);
    assert_eq!(s["status"]["currentReplicas"], 3);
    for i in 0..3 {
        assert_eq!(
            revision_label(&pod(&api, "data", &format!("db-{i}")).unwrap()),
            new_rev
        );
    }
    assert_eq!(
        api.get_object("apps/v1", "controllerrevisions", Some("data"), &new_rev)
            .unwrap()["revision"],
        2
    );

    // A partition: only the ordinals at or above it are updated, and the
    // rollout is complete then; the current revision stays.
    apply_ok(&kc, dir.path(), &sts_yaml("postgres:18", Some(2)));
    let out = ok(rollout("20s"));
    assert!(
        out.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{out}"
    );
    let s = sts(&api);
    let third = s["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(third, new_rev);
    assert_eq!(s["status"]["currentRevision"], new_rev);
    assert_eq!(revision_label(&pod(&api, "data", "db-2").unwrap()), third);
    assert!(api.settle(Duration::from_secs(5)).await);
    assert_eq!(revision_label(&pod(&api, "data", "db-1").unwrap()), new_rev);
    assert_eq!(revision_label(&pod(&api, "data", "db-0").unwrap()), new_rev);
}

fn ds_yaml(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: infra\n---\n\
         apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\n  namespace: infra\nspec:\n  \
         selector:\n    matchLabels:\n      app: agent\n  template:\n    metadata:\n      labels:\n        app: agent\n    \
         spec:\n      containers:\n      - name: agent\n        image: {image}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonset_runs_a_pod_on_every_node() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let nodes = ok(kubectl(&kc, dir.path(), &["get", "nodes"]));
    for n in ["node-1", "node-2"] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(n) && l.contains(" Ready ") && l.contains("v1.32.0")),
            "{nodes}"
        );
    }
    let rollout = |timeout: &str| {
        kubectl(
            &kc,
            dir.path(),
            &[
                "rollout",
                "status",
                "daemonset/agent",
                "-n",
                "infra",
                &format!("--timeout={timeout}"),
            ],
        )
    };
    apply_ok(&kc, dir.path(), &ds_yaml("agent:1"));
    let out = ok(rollout("20s"));
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let ds = api
        .get_object("apps/v1", "daemonsets", Some("infra"), "agent")
        .unwrap();
    let st = &ds["status"];
    for f in [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "updatedNumberScheduled",
        "numberReady",
        "numberAvailable",
    ] {
        assert_eq!(st[f], 2, "{f}: {st}");
    }
    assert_eq!(st["numberMisscheduled"], 0, "kept at zero: {st}");
    assert!(st["numberUnavailable"].is_null(), "{st}");
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let pods = api.pods("infra", "app=agent");
    let mut on: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    on.sort();
    assert_eq!(on, ["node-1", "node-2"]);
    let hash = revision_label(&pods[0]);
    let crs = api.list_objects("apps/v1", "controllerrevisions", Some("infra"));
    assert_eq!(crs.len(), 1);
    assert_eq!(crs[0]["metadata"]["name"], format!("agent-{hash}"));
    for p in &pods {
        assert_eq!(revision_label(p), hash);
        assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "1");
        assert_eq!(p["metadata"]["ownerReferences"], json!([owned_by(&ds)]));
        let pinned = &p["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchFields"][0];
        assert_eq!(pinned["values"][0], p["spec"]["nodeName"]);
    }

    // Running pods that start crashing: not ready, restarting.
    api.set_pod_behaviour("agent:1", PodBehaviour::CrashLoopBackOff);
    within("the daemon set's pods crashing", 10, || {
        let ds = api.get_object("apps/v1", "daemonsets", Some("infra"), "agent")?;
        let pods = api.pods("infra", "app=agent");
        (ds["status"]["numberReady"] == 0
            && ds["status"]["numberUnavailable"] == 2
            && pods
                .iter()
                .all(|p| container_status(p)["restartCount"].as_i64() >= Some(1)))
        .then_some(())
    })
    .await;
    api.clear_pod_behaviour("agent:1");
    ok(rollout("20s"));

    // A new template: every pod replaced, one node at a time.
    apply_ok(&kc, dir.path(), &ds_yaml("agent:2"));
    ok(rollout("20s"));
    let pods = within("the new pods", 10, || {
        let pods = api.pods("infra", "app=agent");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["labels"]["pod-template-generation"] == "2"))
        .then_some(pods)
    })
    .await;
    assert_ne!(revision_label(&pods[0]), hash);
    assert_eq!(revision_label(&pods[0]), revision_label(&pods[1]));
    assert_eq!(
        api.list_objects("apps/v1", "controllerrevisions", Some("infra"))
            .len(),
        2
    );
}

fn job_yaml(name: &str, image: &str, backoff: u32) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  backoffLimit: {backoff}\n  template:\n    \
         spec:\n      restartPolicy: Never\n      containers:\n      - name: task\n        image: {image}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_or_fails_past_its_backoff_limit() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    apply_ok(&kc, dir.path(), &job_yaml("once", "busybox:1.36", 6));
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "wait",
            "--for=condition=complete",
            "job/once",
            "--timeout=20s",
        ],
    ));
    let job = api
        .get_object("batch/v1", "jobs", Some("default"), "once")
        .unwrap();
    let uid = job["metadata"]["uid"].as_str().unwrap();
    // The server's defaults: a selector on the controller uid, the labels.
    assert_eq!(
        job["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "once");
    assert_eq!(labels["job-name"], "once");
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(
        (
            job["spec"]["completions"].clone(),
            job["spec"]["parallelism"].clone()
        ),
        (json!(1), json!(1))
    );
    let st = &job["status"];
    assert_eq!(st["succeeded"], 1);
    assert!(st["active"].is_null() && st["failed"].is_null(), "{st}");
    assert_eq!(
        (st["ready"].clone(), st["terminating"].clone()),
        (json!(0), json!(0))
    );
    assert!(
        st["startTime"].is_string() && st["completionTime"].is_string(),
        "{st}"
    );
    assert_eq!(st["uncountedTerminatedPods"], json!({}));
    let types: Vec<&str> = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    for t in types {
        let c = condition(&job, t);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("CompletionsReached"))
        );
        assert_eq!(c["message"], "Reached expected number of succeeded pods");
    }
    let pods = api.pods("default", "batch.kubernetes.io/job-name=once");
    assert_eq!(pods.len(), 1);
    let p = &pods[0];
    assert_eq!(p["metadata"]["labels"]["controller-uid"], uid);
    assert_eq!(p["metadata"]["labels"]["job-name"], "once");
    assert_eq!(p["status"]["phase"], "Succeeded");
    let t = &container_status(p)["state"]["terminated"];
    assert_eq!(
        (t["reason"].clone(), t["exitCode"].clone()),
        (json!("Completed"), json!(0))
    );
    assert_eq!(condition(p, "Ready")["reason"], "PodCompleted");
    let table = ok(kubectl(&kc, dir.path(), &["get", "jobs"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("once") && l.contains("Complete") && l.contains("1/1")),
        "{table}"
    );
    let table = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "pods", "-l", "job-name=once"],
    ));
    assert!(table.contains("Completed"), "{table}");

    // Its template is immutable.
    let err = failed(apply_as(
        &kc,
        dir.path(),
        &job_yaml("once", "busybox:1.37", 6),
        "chump",
        &[],
    ));
    assert!(
        err.contains("The Job \"once\" is invalid: spec.template: Invalid value")
            && err.contains("field is immutable"),
        "{err}"
    );

    // A Job whose pods fail: Failed once past its backoff limit.
    api.set_pod_behaviour("migrate:broken", PodBehaviour::CrashLoopBackOff);
    apply_ok(&kc, dir.path(), &job_yaml("broken", "migrate:broken", 1));
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "wait",
            "--for=condition=failed",
            "job/broken",
            "--timeout=20s",
        ],
    ));
    let job = api
        .get_object("batch/v1", "jobs", Some("default"), "broken")
        .unwrap();
    assert_eq!(job["status"]["failed"], 2);
    assert!(job["status"]["succeeded"].is_null());
    for t in ["FailureTarget", "Failed"] {
        let c = condition(&job, t);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("BackoffLimitExceeded")),
            "{t}"
        );
        assert_eq!(c["message"], "Job has reached the specified backoff limit");
    }
    let pods = api.pods("default", "job-name=broken");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Failed");
        let t = &container_status(p)["state"]["terminated"];
        assert_eq!(
            (t["reason"].clone(), t["exitCode"].clone()),
            (json!("Error"), json!(1))
        );
    }
    let events = api.events_about("default", "Job", "broken");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "BackoffLimitExceeded" && e["type"] == "Warning"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_pods_and_the_replicaset_and_deployment_say_so() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let quota = "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2";
    api.put_namespace("quota");
    api.refuse_pods("quota", Some(quota));
    apply_ok(
        &kc,
        dir.path(),
        &web_yaml("quota", "api", 1, "nginx:1.27", ""),
    );
    let rs = within("the ReplicaSet's failure", 10, || {
        replica_sets(&api, "quota")
            .into_iter()
            .find(|rs| condition(rs, "ReplicaFailure")["status"] == "True")
    })
    .await;
    let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
    let refused = format!("pods \"{rs_name}-\" is forbidden: {quota}");
    let c = condition(&rs, "ReplicaFailure");
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (Some("FailedCreate"), Some(refused.as_str()))
    );
    assert!(c["lastTransitionTime"].is_string());
    assert_eq!(rs["status"]["replicas"], 0);
    // The controller's event, repeated as it retries.
    let e = within("FailedCreate counted twice", 10, || {
        api.events_about("quota", "ReplicaSet", &rs_name)
            .into_iter()
            .find(|e| e["reason"] == "FailedCreate" && e["count"].as_i64() >= Some(2))
    })
    .await;
    assert_eq!(e["message"], format!("Error creating: {refused}"));
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["source"], json!({"component": "replicaset-controller"}));
    assert_eq!(e["involvedObject"]["kind"], "ReplicaSet");
    // The Deployment carries it up.
    let d = within("the Deployment's ReplicaFailure", 10, || {
        api.get_object("apps/v1", "deployments", Some("quota"), "api")
            .filter(|d| condition(d, "ReplicaFailure")["status"] == "True")
    })
    .await;
    let c = condition(&d, "ReplicaFailure");
    assert_eq!(
        (c["reason"].as_str(), c["message"].as_str()),
        (Some("FailedCreate"), Some(refused.as_str()))
    );
    assert_eq!(condition(&d, "Available")["status"], "False");
    // Clients are refused too.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/namespaces/quota/pods", api.url()))
        .header("content-type", "application/json")
        .body(r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"x:1"}]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let st: Value = resp.json().await.unwrap();
    assert_eq!(st["reason"], "Forbidden");
    assert_eq!(st["message"], format!("pods \"p\" is forbidden: {quota}"));

    // The quota lifted: the pods come, the failures go.
    api.refuse_pods("quota", None);
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/api",
            "-n",
            "quota",
            "--timeout=20s",
        ],
    ));
    let d = within("the failure gone", 10, || {
        api.get_object("apps/v1", "deployments", Some("quota"), "api")
            .filter(|d| condition(d, "ReplicaFailure").is_null())
    })
    .await;
    assert_eq!(d["status"]["availableReplicas"], 1);
    let rs = api
        .get_object("apps/v1", "replicasets", Some("quota"), &rs_name)
        .unwrap();
    assert!(condition(&rs, "ReplicaFailure").is_null(), "{rs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_or_its_namespace_collects_its_replicasets_and_pods() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let yaml = web_yaml("shop", "web", 2, "nginx:1.27", "");
    apply_ok(&kc, dir.path(), &yaml);
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    let pods = api.pods("shop", "app=web");
    assert_eq!(pods.len(), 2);
    ok(kubectl(
        &kc,
        dir.path(),
        &["delete", "deployment", "web", "-n", "shop"],
    ));
    within("the ReplicaSet and the pods collected", 10, || {
        (replica_sets(&api, "shop").is_empty() && api.pods("shop", "").is_empty()).then_some(())
    })
    .await;
    // A pod deleted by hand is replaced; a namespace takes its pods along.
    apply_ok(&kc, dir.path(), &yaml);
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    let victim = api.pods("shop", "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    ok(kubectl(
        &kc,
        dir.path(),
        &["delete", "pod", &victim, "-n", "shop"],
    ));
    within("a replacement", 10, || {
        let pods = api.pods("shop", "app=web");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    })
    .await;
    ok(kubectl(
        &kc,
        dir.path(),
        &["delete", "namespace", "shop", "--timeout=20s"],
    ));
    assert!(api.get_object("v1", "namespaces", None, "shop").is_none());
    assert!(api.list_objects("v1", "pods", Some("shop")).is_empty());
    assert!(api
        .list_objects("apps/v1", "replicasets", Some("shop"))
        .is_empty());
    assert!(api.list_objects("v1", "events", Some("shop")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_modes_steer_a_deployments_new_pods_and_deadlines_pass() {
    let api = KubeApi::start().await;
    let d = |name: &str| api.get_object("apps/v1", "deployments", Some("modes"), name);
    // Never: the pods are created, never ready.
    api.set_rollout_for("modes", "never", RolloutMode::Never);
    api.put_deployment("modes", "never", "app:1");
    let never = within("the new replica updated", 10, || {
        d("never").filter(|d| d["status"]["updatedReplicas"] == 1)
    })
    .await;
    assert!(never["status"]["availableReplicas"].is_null(), "{never}");
    assert_eq!(never["status"]["unavailableReplicas"], 1);
    assert_eq!(
        condition(&never, "Available")["reason"],
        "MinimumReplicasUnavailable"
    );
    assert_eq!(condition(&never, "Progressing")["status"], "True");
    let pods = api.pods("modes", "app=never");
    assert_eq!(waiting_reason(&pods[0]), Some("ContainerCreating"));
    // Fail: the deadline is passed at once.
    api.set_rollout_for("modes", "never", RolloutMode::Fail);
    let failed_d = within("ProgressDeadlineExceeded", 10, || {
        d("never").filter(|d| condition(d, "Progressing")["reason"] == "ProgressDeadlineExceeded")
    })
    .await;
    let rs = &replica_sets(&api, "modes")[0];
    assert_eq!(condition(&failed_d, "Progressing")["status"], "False");
    assert_eq!(
        condition(&failed_d, "Progressing")["message"],
        format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            rs["metadata"]["name"].as_str().unwrap()
        )
    );
    // Immediate: the same pods become ready, the rollout completes.
    api.set_rollout_for("modes", "never", RolloutMode::Immediate);
    let done = within("the recovery", 10, || {
        d("never").filter(|d| condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable")
    })
    .await;
    assert_eq!(condition(&done, "Progressing")["status"], "True");
    assert_eq!(done["status"]["availableReplicas"], 1);
    assert_eq!(
        api.pods("modes", "app=never")[0]["metadata"]["name"],
        pods[0]["metadata"]["name"]
    );

    // After: new pods become ready once the delay has passed.
    api.set_rollout_for(
        "modes",
        "later",
        RolloutMode::After(Duration::from_millis(800)),
    );
    api.put_deployment("modes", "later", "app:1");
    let seen = within("the pod", 10, || {
        api.pods("modes", "app=later").into_iter().next()
    })
    .await;
    let first_seen = std::time::Instant::now();
    assert_ne!(condition(&seen, "Ready")["status"], "True");
    within("ready after the delay", 10, || {
        d("later").filter(|d| d["status"]["availableReplicas"] == 1)
    })
    .await;
    assert!(
        first_seen.elapsed() >= Duration::from_millis(500),
        "{:?}",
        first_seen.elapsed()
    );

    // A real deadline: a pull that never succeeds, a second to progress.
    api.set_pod_behaviour("app:missing", PodBehaviour::ImagePullBackOff);
    api.put_object(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "deadline", "namespace": "modes"},
        "spec": {"replicas": 1, "progressDeadlineSeconds": 1,
                 "selector": {"matchLabels": {"app": "deadline"}},
                 "template": {"metadata": {"labels": {"app": "deadline"}},
                              "spec": {"containers": [{"name": "app", "image": "app:missing"}]}}}
    }));
    let timed_out = within("the deadline passed", 15, || {
        d("deadline")
            .filter(|d| condition(d, "Progressing")["reason"] == "ProgressDeadlineExceeded")
    })
    .await;
    assert_eq!(condition(&timed_out, "Progressing")["status"], "False");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreate_deployment_stops_its_old_pods_before_starting_new_ones() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let strategy = "  strategy:\n    type: Recreate\n";
    apply_ok(
        &kc,
        dir.path(),
        &web_yaml("shop", "web", 2, "nginx:1.27", strategy),
    );
    ok(kubectl(
        &kc,
        dir.path(),
        &[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            "shop",
            "--timeout=20s",
        ],
    ));
    let old = replica_sets(&api, "shop")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    api.set_pod_behaviour("nginx:1.28", PodBehaviour::Pending);
    apply_ok(
        &kc,
        dir.path(),
        &web_yaml("shop", "web", 2, "nginx:1.28", strategy),
    );
    let pods = within("the new pods, the old gone", 10, || {
        let pods = api.pods("shop", "app=web");
        (pods.len() == 2
            && pods.iter().all(|p| {
                !p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{old}-"))
            }))
        .then_some(pods)
    })
    .await;
    assert!(pods
        .iter()
        .all(|p| waiting_reason(p) == Some("ContainerCreating")));
    let d = within("the status", 10, || {
        deployment(&api).filter(|d| d["status"]["updatedReplicas"] == 2)
    })
    .await;
    assert!(d["status"]["availableReplicas"].is_null(), "{d}");
    assert_eq!(condition(&d, "Available")["status"], "False");
    let old_rs = api
        .get_object("apps/v1", "replicasets", Some("shop"), &old)
        .unwrap();
    assert_eq!(old_rs["spec"]["replicas"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_pods_are_listed_by_the_selectors_the_real_server_supports() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    let http = reqwest::Client::new();
    let list = |path: String| {
        let http = http.clone();
        let url = format!("{}{path}", api.url());
        async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };

    // A repeated event is one object, its count bumped.
    let cm = api.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "cm1", "namespace": "default"}}));
    let first = api
        .add_event(&cm, "Warning", "Oops", "it broke", "tester")
        .unwrap();
    let again = api
        .add_event(&cm, "Warning", "Oops", "it broke", "tester")
        .unwrap();
    assert_eq!(first["metadata"]["name"], again["metadata"]["name"]);
    assert_eq!(again["count"], 2);
    assert_eq!(again["firstTimestamp"], first["firstTimestamp"]);
    api.add_event(&cm, "Normal", "Fine", "all good", "tester");
    let uid = cm["metadata"]["uid"].as_str().unwrap();
    for (selector, want) in [
        ("involvedObject.name=cm1".to_string(), 2),
        ("involvedObject.kind=ConfigMap,type=Warning".into(), 1),
        (format!("involvedObject.uid={uid},reason=Oops"), 1),
        ("involvedObject.namespace=default,source=tester".into(), 2),
        ("type!=Warning,involvedObject.name=cm1".into(), 1),
        ("involvedObject.name=other".into(), 0),
    ] {
        let (code, v) = list(format!(
            "/api/v1/namespaces/default/events?fieldSelector={}",
            url_encode(&selector)
        ))
        .await;
        assert_eq!(code, 200, "{selector}: {v}");
        assert_eq!(
            v["items"].as_array().unwrap().len(),
            want,
            "{selector}: {v}"
        );
    }
    let (code, v) =
        list("/api/v1/namespaces/default/events?fieldSelector=spec.foo%3Dbar".into()).await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["message"], "field label not supported: spec.foo");
    let out = ok(kubectl(
        &kc,
        dir.path(),
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=cm1,type=Warning",
        ],
    ));
    assert!(
        out.lines().any(|l| l.contains("Warning")
            && l.contains("Oops")
            && l.contains("configmap/cm1")
            && l.contains("it broke")),
        "{out}"
    );

    // Pods: set-based label selectors, and the pod field selectors.
    api.set_pod_behaviour("x:huge", PodBehaviour::Unschedulable);
    post_pod(&api, "default", "web", "x:1", json!({"app": "web"})).await;
    post_pod(
        &api,
        "default",
        "db",
        "x:1",
        json!({"app": "db", "tier": "data"}),
    )
    .await;
    post_pod(&api, "default", "bare", "x:huge", json!({})).await;
    within("web and db running", 10, || {
        (["web", "db"]
            .iter()
            .all(|n| pod(&api, "default", n).is_some_and(|p| p["status"]["phase"] == "Running"))
            && pod(&api, "default", "bare")
                .is_some_and(|p| condition(&p, "PodScheduled")["status"] == "False"))
        .then_some(())
    })
    .await;
    for (selector, want) in [
        ("app in (web,db)", vec!["db", "web"]),
        ("app notin (web)", vec!["bare", "db"]),
        ("!app", vec!["bare"]),
        ("app", vec!["db", "web"]),
        ("app=db,tier", vec!["db"]),
        ("app!=db", vec!["bare", "web"]),
    ] {
        let (code, v) = list(format!(
            "/api/v1/namespaces/default/pods?labelSelector={}",
            url_encode(selector)
        ))
        .await;
        assert_eq!(code, 200, "{selector}: {v}");
        assert_eq!(names(&v), want, "{selector}");
    }
    let node = pod(&api, "default", "web").unwrap()["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string();
    for (selector, want) in [
        ("status.phase=Running".to_string(), vec!["db", "web"]),
        ("status.phase=Pending".into(), vec!["bare"]),
        ("spec.nodeName=".into(), vec!["bare"]),
        (
            format!("spec.nodeName={node},metadata.name=web"),
            vec!["web"],
        ),
        (
            "metadata.name!=web,status.phase!=Pending".into(),
            vec!["db"],
        ),
    ] {
        let (code, v) = list(format!(
            "/api/v1/namespaces/default/pods?fieldSelector={}",
            url_encode(&selector)
        ))
        .await;
        assert_eq!(code, 200, "{selector}: {v}");
        assert_eq!(names(&v), want, "{selector}");
    }
    let (code, _) =
        list("/api/v1/namespaces/default/pods?fieldSelector=spec.containers%3Dx".into()).await;
    assert_eq!(code, 400);
    let out = ok(kubectl(
        &kc,
        dir.path(),
        &["get", "pods", "-l", "app in (web,db)", "-o", "name"],
    ));
    assert_eq!(out.lines().collect::<Vec<_>>(), ["pod/db", "pod/web"]);
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_deployments_roll_out_and_one_more_change_is_quick() {
    let api = KubeApi::start().await;
    api.put_namespace("many");
    let started = std::time::Instant::now();
    for i in 0..1000 {
        let name = format!("app-{i:04}");
        api.put_deployment_with("many", &name, &[("app", "registry.example/app:v1")]);
    }
    let seeded = started.elapsed();
    let rolled_out = |api: &KubeApi| {
        api.list_objects("apps/v1", "deployments", Some("many"))
            .iter()
            .filter(|d| {
                d["status"]["availableReplicas"] == 1 && d["status"]["updatedReplicas"] == 1
            })
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while rolled_out(&api) < 1000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 1000 rolled out",
            rolled_out(&api)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = started.elapsed();
    assert!(
        api.settle(Duration::from_secs(30)).await,
        "the controllers settle"
    );
    assert_eq!(api.list_objects("v1", "pods", Some("many")).len(), 1000);

    // Idle: nothing changes.
    let rv = api.resource_version();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.resource_version(), rv, "an idle cluster writes nothing");

    // One more rollout among a thousand is as quick as alone.
    let one = std::time::Instant::now();
    assert!(api.set_image("many", "app-0500", "app", "registry.example/app:v2"));
    within("the one rollout", 10, || {
        api.get_object("apps/v1", "deployments", Some("many"), "app-0500")
            .filter(|d| {
                d["status"]["observedGeneration"] == 2
                    && d["status"]["updatedReplicas"] == 1
                    && d["status"]["availableReplicas"] == 1
                    && d["status"]["replicas"] == 1
            })
    })
    .await;
    let took = one.elapsed();
    println!("1000 Deployments seeded in {seeded:?}, rolled out after {all:?}; one more rollout took {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

const TEAM_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: deployer
  namespace: team-a
rules:
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  resourceNames: ["settings"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["*/scale"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: deployer
  namespace: team-a
subjects:
- kind: ServiceAccount
  name: deployer
  namespace: team-a
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: deployer
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: namespace-reader
rules:
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: team-a-reads-namespaces
subjects:
- kind: Group
  name: system:serviceaccounts:team-a
  apiGroup: rbac.authorization.k8s.io
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: namespace-reader
"#;

const SA: &str = "system:serviceaccount:team-a:deployer";

/// `kubectl --as=system:serviceaccount:…`: what the stored Role,
/// RoleBinding, ClusterRole and ClusterRoleBinding allow works (discovery
/// for everyone, resource names, `*/subresource`, the ServiceAccount's
/// groups), anything else is the real server's 403, nothing is written,
/// and every request is recorded as made by the ServiceAccount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_as_a_service_account_is_held_to_its_rbac() {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kc = api.kubeconfig(dir.path());
    api.put_namespace("team-a");
    api.put_namespace("team-b");
    api.put_deployment("team-a", "web", "nginx:1.27");
    api.put_deployment("team-b", "web", "nginx:1.27");
    api.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "team-a"}, "data": {"a": "1"}}));
    api.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "secret-ish", "namespace": "team-a"}, "data": {"b": "2"}}));
    // The administrator (no --as) makes the RBAC objects.
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, TEAM_RBAC).unwrap();
    ok(kubectl(
        &kc,
        dir.path(),
        &["apply", "--server-side", "-f", rbac.to_str().unwrap()],
    ));
    api.clear_requests();
    let as_sa = format!("--as={SA}");
    let kubectl_as = |args: &[&str]| {
        let mut all = vec![as_sa.as_str()];
        all.extend_from_slice(args);
        kubectl(&kc, dir.path(), &all)
    };

    // Allowed: the Role's deployments, the named ConfigMap, a scale
    // subresource through `*/scale`, namespaces through the group binding.
    let table = ok(kubectl_as(&["get", "deploy", "-n", "team-a"]));
    assert!(table.lines().any(|l| l.starts_with("web ")), "{table}");
    ok(kubectl_as(&[
        "get",
        "configmap",
        "settings",
        "-n",
        "team-a",
    ]));
    ok(kubectl_as(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/team-a/deployments/web/scale",
    ]));
    let ns = ok(kubectl_as(&["get", "ns"]));
    assert!(ns.contains("team-a") && ns.contains("team-b"), "{ns}");

    // Forbidden: listing ConfigMaps, another name, another namespace, a
    // verb the Role lacks; the message is the real server's.
    let err = failed(kubectl_as(&["get", "configmaps", "-n", "team-a"]));
    assert!(
        err.contains(&format!("configmaps is forbidden: User \"{SA}\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"team-a\"")),
        "{err}"
    );
    let err = failed(kubectl_as(&[
        "get",
        "configmap",
        "secret-ish",
        "-n",
        "team-a",
    ]));
    assert!(
        err.contains(&format!("configmaps \"secret-ish\" is forbidden: User \"{SA}\" cannot get resource \"configmaps\"")),
        "{err}"
    );
    let err = failed(kubectl_as(&["get", "deploy", "web", "-n", "team-b"]));
    assert!(
        err.contains(&format!("deployments.apps \"web\" is forbidden: User \"{SA}\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"team-b\"")),
        "{err}"
    );
    let err = failed(kubectl_as(&["delete", "deploy", "web", "-n", "team-a"]));
    assert!(
        err.contains("cannot delete resource \"deployments\""),
        "{err}"
    );
    let err = failed(kubectl_as(&["get", "pods", "-A"]));
    assert!(
        err.contains("cannot list resource \"pods\" in API group \"\" at the cluster scope"),
        "{err}"
    );

    // An apply: the Deployment (patch allowed) goes through, a ConfigMap
    // (no patch) is refused and not stored.
    let out = apply_as(
        &kc,
        dir.path(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: team-a\ndata:\n  c: \"3\"\n",
        "chump",
        &[&as_sa],
    );
    let err = failed(out);
    assert!(
        err.contains(&format!("configmaps \"extra\" is forbidden: User \"{SA}\" cannot patch resource \"configmaps\" in API group \"\" in the namespace \"team-a\"")),
        "{err}"
    );
    assert!(api
        .get_object("v1", "configmaps", Some("team-a"), "extra")
        .is_none());
    let deploy = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: team-a
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.28
"#;
    ok(apply_as(
        &kc,
        dir.path(),
        deploy,
        "chump",
        &[&as_sa, "--force-conflicts"],
    ));
    let d = api
        .get_object("apps/v1", "deployments", Some("team-a"), "web")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );

    // Every request since the RBAC was made came as the ServiceAccount.
    let requests = api.requests();
    assert!(requests.len() > 10, "{requests:?}");
    for r in &requests {
        assert_eq!(
            r.impersonate_user.as_deref(),
            Some(SA),
            "{} {}",
            r.method,
            r.path
        );
    }
    // Without --as, the administrator may do everything.
    ok(kubectl(
        &kc,
        dir.path(),
        &["get", "configmaps", "-n", "team-a"],
    ));
    assert_eq!(api.requests().last().unwrap().impersonate_user, None);
}

/// Impersonation over raw HTTP: the 403 `Status` as the real server gives
/// it, a caller that may not impersonate, groups without a user, explicit
/// groups replacing a ServiceAccount's own, a User subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonated_requests_get_the_real_forbidden_status() {
    let api = KubeApi::start().await;
    api.put_namespace("team-a");
    api.put_object(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "team-a"}}));
    for doc in TEAM_RBAC.split("\n---\n") {
        let v: Value = yaml_serde::from_str(doc).unwrap();
        api.put_object(v);
    }
    let http = reqwest::Client::new();
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut req = http.get(format!("{}{path}", api.url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let cm = "/api/v1/namespaces/team-a/configmaps";

    let r = get(&format!("{cm}/other"), &[("Impersonate-User", SA)])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("configmaps \"other\" is forbidden: User \"{SA}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"team-a\""),
               "reason": "Forbidden", "details": {"name": "other", "kind": "configmaps"}, "code": 403})
    );
    let r = get(&format!("{cm}/settings"), &[("Impersonate-User", SA)])
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Discovery is open to every user.
    for path in ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/version"] {
        let r = get(path, &[("Impersonate-User", "someone")]).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Explicit groups replace the ServiceAccount's own: the group binding
    // no longer applies.
    let ns = "/api/v1/namespaces";
    let r = get(ns, &[("Impersonate-User", SA)]).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get(
        ns,
        &[("Impersonate-User", SA), ("Impersonate-Group", "other")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    // Groups without a user: the impersonation filter's 500.
    let r = get(ns, &[("Impersonate-Group", "system:masters")])
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    // A User subject.
    api.put_object(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "jane-reads-namespaces"},
        "subjects": [{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-reader"}}));
    let r = get(ns, &[("Impersonate-User", "jane")]).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get(ns, &[("Impersonate-User", "john")]).await.unwrap();
    assert_eq!(r.status(), 403);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s["message"],
        "namespaces is forbidden: User \"john\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    // The administrator without the right to impersonate.
    api.set_may_impersonate(false);
    let r = get(&format!("{cm}/settings"), &[("Impersonate-User", SA)])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s["message"],
        "serviceaccounts \"deployer\" is forbidden: User \"kubernetes-admin\" cannot impersonate resource \"serviceaccounts\" in API group \"\" in the namespace \"team-a\""
    );
    let r = get(&format!("{cm}/settings"), &[]).await.unwrap();
    assert_eq!(r.status(), 200, "the administrator itself still may");
    // Recorded with the user each was made as.
    let users: Vec<Option<String>> = api
        .requests()
        .iter()
        .map(|r| r.impersonate_user.clone())
        .collect();
    assert!(
        users.contains(&Some("jane".into())) && users.contains(&None),
        "{users:?}"
    );
}
