//! Proves the Kubernetes API server stand-in faithful: the real `kubectl`
//! (client-go discovery, tables, watches, server-side apply, scale, delete
//! with its propagation policies) works against it, and raw HTTP sees what
//! a Kubernetes 1.32 API server answers (delete options, preconditions,
//! finalizers, field ownership).

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use support::kube_api::{KubeApi, RolloutMode};

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
    assert_eq!(d["status"]["updatedReplicas"], 2);
    assert_eq!(d["metadata"]["managedFields"][0]["manager"], "kubectl");
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

/// Seed, in `shop`, a ReplicaSet owned by Deployment `web` and a Pod owned
/// by the ReplicaSet (what the real Deployment controller would make), both
/// with `finalizers`.
fn seed_dependents(api: &KubeApi, finalizers: &[&str]) -> (Value, Value) {
    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .expect("the Deployment");
    let mut rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [owned_by(&d)]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
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
    pod["metadata"]["ownerReferences"] = json!([owned_by(&rs)]);
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
    api.put_object(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once", "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}
    }));
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/apis/batch/v1/namespaces/default/jobs/once/status?fieldManager=job-controller",
            api.url()
        ))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"status":{"active":1},"spec":{"parallelism":5}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let job = api
        .get_object("batch/v1", "jobs", Some("default"), "once")
        .unwrap();
    assert_eq!(job["status"]["active"], 1);
    assert!(
        job["spec"]["parallelism"].is_null(),
        "only status is written"
    );
    assert_eq!(
        fields_of(&job, "job-controller", "Update", Some("status")),
        Some(json!({"f:status": {"f:active": {}}}))
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
