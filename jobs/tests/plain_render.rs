//! Plain kustomizations rendered in process, against the real binary
//! (`kustomize`, else `kubectl kustomize`): every plain case renders to the
//! very objects, in the very order, the binary prints; every case that is
//! not plain is declined and built by the binary, errors included.

use std::fs;
use std::path::Path;
use std::time::Duration;

use chump_jobs::kustomize::{render_plain, Kustomize, KustomizeOptions, PlainRender};
use serde_json::Value;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn options(in_process: bool) -> KustomizeOptions {
    KustomizeOptions {
        timeout: Duration::from_secs(60),
        max_output_bytes: 4 * 1024 * 1024,
        allow_remote: false,
        in_process,
    }
}

/// The binary's build, and chump's with plain kustomizations in process
/// (errors as text).
async fn both_builds(
    root: &Path,
    dir: &str,
) -> (Result<Vec<Value>, String>, Result<Vec<Value>, String>) {
    let binary = Kustomize::detect(None, options(false)).expect("kustomize or kubectl on PATH");
    let chump = Kustomize::detect(None, options(true)).unwrap();
    let by_binary = binary.build(root, dir).await.map_err(|e| e.to_string());
    let by_chump = chump.build(root, dir).await.map_err(|e| e.to_string());
    (by_binary, by_chump)
}

fn plain(root: &Path, dir: &str) -> PlainRender {
    render_plain(&root.join(dir), 4 * 1024 * 1024, 10_000)
}

fn ids(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Asserts `dir` is plain and renders exactly as the binary builds it.
async fn assert_renders_as_kustomize(root: &Path, dir: &str) -> Vec<Value> {
    let PlainRender::Rendered { objects, bytes } = plain(root, dir) else {
        panic!("{dir} should be plain: {:?}", plain(root, dir));
    };
    assert!(bytes > 0);
    let (by_binary, by_chump) = both_builds(root, dir).await;
    let by_binary = by_binary.unwrap_or_else(|e| panic!("{dir}: the binary failed: {e}"));
    assert_eq!(ids(&objects), ids(&by_binary), "{dir}: the order differs");
    for (mine, theirs) in objects.iter().zip(&by_binary) {
        assert_eq!(mine, theirs, "{dir}: an object differs");
    }
    assert_eq!(
        by_chump.as_ref(),
        Ok(&by_binary),
        "{dir}: chump's build differs"
    );
    objects
}

/// Asserts `dir` is declined, and that chump's build still equals the
/// binary's (the same objects, or both failing).
async fn assert_declined_and_built_by_kustomize(
    root: &Path,
    dir: &str,
) -> Result<Vec<Value>, String> {
    let PlainRender::NotPlain(reason) = plain(root, dir) else {
        panic!("{dir} should not be plain");
    };
    assert!(!reason.is_empty());
    let (by_binary, by_chump) = both_builds(root, dir).await;
    match (&by_binary, &by_chump) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{dir}: ({reason})"),
        (Err(_), Err(_)) => {}
        _ => panic!("{dir} ({reason}): binary {by_binary:?}, chump {by_chump:?}"),
    }
    by_chump
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
  annotations:
    team: checkout
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: ghcr.io/example/web:1.25
        args: [--port=8080, -v, \"--level=2\"]
        resources:
          limits: {cpu: 0.5, memory: 128Mi}
          requests: {cpu: 100m}
        ports:
        - containerPort: 8080
          protocol: TCP
        env:
        - {name: A, value: \"0755\"}
        - {name: B, value: '12:30'}
        - name: C
          value: yes
        - name: D
          value: \"1.0\"
        resources2: {}
      volumes: []
";

#[tokio::test]
async fn many_kinds_in_many_files_render_in_kustomizes_order() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write(
        root,
        "app/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n# the app\nresources:\n- workloads.yaml\n- ./rbac.yaml\n- sub/extra.yaml\n- crd.json\n",
    );
    write(
        root,
        "app/workloads.yaml",
        &format!(
            "---\n# leading comment\n{DEPLOYMENT}---\n~\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports:\n  - port: 80\n    targetPort: 8080\n---\n# only a comment\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrate, namespace: shop}}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox\n        command: [\"sh\", \"-c\", \"echo a && echo b\"]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop-b\nspec: {{}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: zeta\nspec: {{}}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"
        ),
    );
    write(
        root,
        "app/rbac.yaml",
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: guard\nwebhooks: []\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: reader\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n  verbs: [get, list, watch]\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  namespace: shop\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  minAvailable: 1\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\nspec:\n  size: -3\n  ratio: 0.25\n  enabled: true\n  nothing: null\n  empty:\n  tilde: ~\n",
    );
    write(
        root,
        "app/sub/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: \"\"\n  labels: {}\ndata:\n  script: |\n    #!/bin/sh\n    * not an alias in a block\n    echo \"$HOME\"\n  folded: >-\n    one\n    two\n  plain: this plain scalar\n    goes on over lines\n  quoted: \"tab\\there \\u00e9 \\\"q\\\"\"\n  single: 'it''s'\n  on: \"on\"\n  url: http://example.com/?a=1&b=2\n  star: \"*/5 * * * *\"\n  unicode: héllo wörld\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\n  namespace: shop\ntype: Opaque\nstringData:\n  password: \"12345\"\n",
    );
    write(
        root,
        "app/crd.json",
        r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced", "versions": [{"name": "v1", "served": true, "storage": true}]}}"#,
    );
    let objects = assert_renders_as_kustomize(root, "app").await;
    assert_eq!(objects.len(), 14, "{:?}", ids(&objects));
    assert_eq!(ids(&objects)[0], "Namespace /shop");
}

#[tokio::test]
async fn the_benchmarks_kustomization_and_a_headerless_one_render_in_process() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write(
        root,
        "apps/web/kustomization.yaml",
        "resources:\n- deployment.yaml\n",
    );
    write(root, "apps/web/deployment.yaml", DEPLOYMENT);
    let objects = assert_renders_as_kustomize(root, "apps/web").await;
    assert_eq!(
        objects[0]["spec"]["template"]["spec"]["containers"][0]["env"][2]["value"],
        "yes"
    );
    write(
        root,
        "apps/ns/Kustomization",
        "kind: Kustomization\nresources: [ns.yaml]\n",
    );
    write(
        root,
        "apps/ns/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n",
    );
    assert_renders_as_kustomize(root, "apps/ns").await;
}

#[tokio::test]
async fn what_kustomize_would_change_or_refuse_is_left_to_it() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    let cm =
        |extra: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n{extra}");
    let one = "resources:\n- cm.yaml\n";
    // (directory, kustomization, cm.yaml, whether the binary succeeds)
    let cases: Vec<(&str, String, String, bool)> = vec![
        ("namespace", format!("namespace: prod\n{one}"), cm(""), true),
        ("images", format!("{one}images:\n- name: x\n  newTag: \"2\"\n"), cm(""), true),
        ("octal", one.into(), cm("data:\n  mode: 0755\n"), false),
        ("whole-float", one.into(), cm("spec:\n  x: 1.0\n"), true),
        ("date", one.into(), cm("spec:\n  x: 2001-12-14\n"), true),
        ("underscore", one.into(), cm("spec:\n  x: 1_000\n"), true),
        ("capital-bool", one.into(), cm("spec:\n  x: True\n"), true),
        ("alias", one.into(), cm("spec:\n  a: &x [1]\n  b: *x\n"), true),
        ("tag", one.into(), cm("spec:\n  a: !!str 5\n"), true),
        ("empty-annotations", one.into(), cm("  annotations: {}\n"), true),
        ("number-annotation", one.into(), cm("  annotations:\n    a: 1\n"), true),
        (
            "local-config",
            one.into(),
            cm("  annotations:\n    config.kubernetes.io/local-config: \"true\"\n"),
            false,
        ),
        (
            "list",
            one.into(),
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n".into(),
            true,
        ),
        ("duplicate", one.into(), format!("{}---\n{}", cm(""), cm("")), false),
        ("no-name", one.into(), "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n".into(), false),
        ("empty-resources", "resources: []\n".into(), cm(""), true),
        ("not-yaml", one.into(), "a: [unclosed\n".into(), false),
        ("int-key", one.into(), cm("data:\n  80: http\n"), false),
    ];
    for (dir, kustomization, file, binary_succeeds) in &cases {
        write(root, &format!("{dir}/kustomization.yaml"), kustomization);
        write(root, &format!("{dir}/cm.yaml"), file);
        let built = assert_declined_and_built_by_kustomize(root, dir).await;
        // "octal" and "local-config" build (kustomize's 493, its object
        // left out), so only the failing ones fail.
        let expect_ok = *binary_succeeds || ["octal", "local-config"].contains(dir);
        assert_eq!(built.is_ok(), expect_ok, "{dir}: {built:?}");
    }
    // kustomize's own readings, which in process would have got wrong.
    let octal = Kustomize::detect(None, options(true))
        .unwrap()
        .build(root, "octal")
        .await
        .unwrap();
    assert_eq!(octal[0]["data"]["mode"], 493);
    let local = Kustomize::detect(None, options(true))
        .unwrap()
        .build(root, "local-config")
        .await
        .unwrap();
    assert!(local.is_empty(), "{local:?}");

    // A directory in resources, two kustomization files, a symbolic link.
    write(root, "base/kustomization.yaml", one);
    write(root, "base/cm.yaml", &cm(""));
    write(
        root,
        "overlay/kustomization.yaml",
        "resources:\n- ../base\n",
    );
    assert_declined_and_built_by_kustomize(root, "overlay")
        .await
        .unwrap();
    write(root, "two/kustomization.yaml", one);
    write(root, "two/kustomization.yml", one);
    write(root, "two/cm.yaml", &cm(""));
    assert_declined_and_built_by_kustomize(root, "two")
        .await
        .unwrap_err();
    write(
        root,
        "link/kustomization.yaml",
        "resources:\n- linked.yaml\n",
    );
    write(root, "link/real.yaml", &cm(""));
    std::os::unix::fs::symlink("real.yaml", root.join("link/linked.yaml")).unwrap();
    assert_declined_and_built_by_kustomize(root, "link")
        .await
        .unwrap();
}

/// A "kustomize" that always fails (the test's own script; chump never runs
/// a shell).
fn failing_binary(dir: &Path, in_process: bool) -> Kustomize {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("failing-kustomize");
    fs::write(&path, "#!/bin/sh\necho 'the binary ran' >&2\nexit 3\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    Kustomize::detect(Some(path.to_str().unwrap()), options(in_process)).unwrap()
}

#[tokio::test]
async fn only_plain_kustomizations_skip_the_binary_and_only_when_allowed() {
    let bin = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write(root, "plain/kustomization.yaml", "resources:\n- d.yaml\n");
    write(root, "plain/d.yaml", DEPLOYMENT);
    write(
        root,
        "overlay/kustomization.yaml",
        "namespace: x\nresources:\n- d.yaml\n",
    );
    write(root, "overlay/d.yaml", DEPLOYMENT);
    // "text file busy" while another test thread forks: retry a little.
    let build = |k: Kustomize, dir: &'static str| async move {
        for _ in 0..20 {
            match k.build(root, dir).await {
                Err(e) if e.to_string().contains("Text file busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => return other.map_err(|e| e.to_string()),
            }
        }
        k.build(root, dir).await.map_err(|e| e.to_string())
    };
    let objects = build(failing_binary(bin.path(), true), "plain")
        .await
        .unwrap();
    assert_eq!(ids(&objects), ["Deployment shop/web"]);
    let err = build(failing_binary(bin.path(), true), "overlay")
        .await
        .unwrap_err();
    assert!(err.contains("the binary ran"), "{err}");
    let err = build(failing_binary(bin.path(), false), "plain")
        .await
        .unwrap_err();
    assert!(err.contains("the binary ran"), "{err}");
}
