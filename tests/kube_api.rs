//! Proves the Kubernetes API server stand-in faithful: the real `kubectl`
//! (client-go discovery, tables, server-side apply, delete) works against it.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::kube_api::{KubeApi, RolloutMode};

fn kubectl(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--request-timeout=10s")
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .output()
        .expect("run kubectl");
    out
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

    let out = ok(kubectl(&kc, dir.path(), &["delete", "-f", file2]));
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
