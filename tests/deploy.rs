//! chump in a cluster (issue #7): the manifests of `deploy/` render with the
//! real `kubectl kustomize` and apply with the real `kubectl apply
//! --server-side` to the Kubernetes API stand-in; chump deploys its own
//! `deploy/base` from a git repository and redeploys it on a tag bump; and
//! `chump serve` without a kubeconfig uses the in-cluster service account
//! (environment and files) against the stand-in behind TLS with a token.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use support::chump::{Chump, ChumpOptions};
use support::env::{create, wait_history};
use support::git_server::GitServer;
use support::kube_api::{KubeApi, KINDS};
const IMAGE: &str = "ghcr.io/chump-dev/chump";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

// ---------------------------------------------------------------------------
// kubectl

fn kubectl(kubeconfig: Option<&Path>, home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("kubectl");
    if let Some(kc) = kubeconfig {
        cmd.arg("--kubeconfig").arg(kc);
        cmd.arg("--cache-dir").arg(home.join("cache"));
        cmd.arg("--request-timeout=20s");
    }
    cmd.args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run kubectl (is it on PATH?)");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kubectl kustomize deploy/<dir>`: the YAML and its objects.
fn render(dir: &str) -> (String, Vec<Value>) {
    let home = tempfile::tempdir().unwrap();
    let path = deploy_dir().join(dir);
    let yaml = ok(
        &format!("kubectl kustomize {}", path.display()),
        kubectl(
            None,
            home.path(),
            &["kustomize", path.to_str().unwrap()],
            None,
        ),
    );
    let mut objects = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
        if !v.is_null() {
            objects.push(v);
        }
    }
    (yaml, objects)
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objects)))
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_value(c: &Value, name: &str) -> Option<Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

fn plain_env(c: &Value, name: &str) -> Option<String> {
    env_value(c, name)?["value"].as_str().map(str::to_string)
}

/// The stand-in's entry for an object's apiVersion and kind.
fn kind_spec(o: &Value) -> &'static support::kube_api::KindSpec {
    let gv = o["apiVersion"].as_str().unwrap();
    let (g, v) = gv.split_once('/').unwrap_or(("", gv));
    KINDS
        .iter()
        .find(|k| k.group == g && k.version == v && k.kind == o["kind"])
        .unwrap_or_else(|| panic!("the stand-in does not know {gv} {}", o["kind"]))
}

// ---------------------------------------------------------------------------
// What every variant of the chump Deployment must hold

fn assert_chump_deployment(objects: &[Value], replicas: i64) {
    let d = find(objects, "Deployment", "chump");
    assert_eq!(d["metadata"]["namespace"], "chump");
    assert_eq!(d["spec"]["replicas"], replicas);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "chump");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(d, "chump");
    assert_eq!(c["image"], format!("{IMAGE}:0.1.0"), "set by images:");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{sc}");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8000, "protocol": "TCP"}])
    );
    for r in ["requests", "limits"] {
        assert!(
            c["resources"][r]["cpu"].is_string(),
            "{r}: {}",
            c["resources"]
        );
        assert!(
            c["resources"][r]["memory"].is_string(),
            "{r}: {}",
            c["resources"]
        );
    }
    assert_eq!(plain_env(c, "CHUMP_BIND").as_deref(), Some("0.0.0.0:8000"));
    let token = env_value(c, "CHUMP_API_TOKEN").expect("CHUMP_API_TOKEN");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"name": "chump-api-token", "key": "token"}),
        "the token comes from the Secret"
    );
    // The git cache is an emptyDir mounted where CHUMP_WORKDIR points.
    let workdir = plain_env(c, "CHUMP_WORKDIR").expect("CHUMP_WORKDIR");
    let volume_at = |path: &str| -> Value {
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap()
            .clone()
    };
    assert!(volume_at(&workdir)["emptyDir"].is_object());
    // Read-only root: /tmp is writable for kustomize.
    assert!(volume_at("/tmp")["emptyDir"].is_object());
    // The Service reaches the container's port.
    let svc = find(objects, "Service", "chump");
    assert_eq!(
        svc["spec"]["ports"][0]["port"], 8000,
        "{}",
        svc["spec"]["ports"]
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(
        svc["spec"]["selector"],
        d["spec"]["template"]["metadata"]["labels"]
    );
    // The token is never shipped (chump deploying itself would overwrite it).
    assert!(
        !kinds(objects).contains("Secret"),
        "no Secret in {:?}",
        kinds(objects)
    );
}

/// Every pod template meets the "restricted" Pod Security Standard the
/// `chump` namespace enforces.
fn assert_restricted(objects: &[Value]) {
    for w in objects
        .iter()
        .filter(|o| o["spec"]["template"]["spec"].is_object())
    {
        let pod = &w["spec"]["template"]["spec"];
        for c in pod["containers"].as_array().unwrap() {
            let what = format!(
                "{} {} container {}",
                w["kind"], w["metadata"]["name"], c["name"]
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
            assert!(
                sc["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true,
                "{what}"
            );
            assert!(
                sc["seccompProfile"]["type"] == "RuntimeDefault"
                    || pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
                "{what}"
            );
            assert!(c["resources"]["limits"]["memory"].is_string(), "{what}");
        }
    }
}

/// What chump only reads, to tell a workload's health: (API group,
/// resource).
const READ_ONLY: [(&str, &str); 3] = [("", "pods"), ("", "events"), ("apps", "replicasets")];

fn strings(v: &Value) -> BTreeSet<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The one rule with the `impersonate` verb: ServiceAccounts, nothing else.
fn impersonate_rule() -> Value {
    json!({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]})
}

/// Every rule grants only get/list/create/patch/delete, on named groups and
/// resources (no `*`, no subresources, no Secrets); the health kinds
/// (pods, events, replicasets) are granted get and list, and nothing else;
/// `impersonate` only on serviceaccounts (deploying as a source's service
/// account), in a rule of its own — never users, groups or uids.
fn assert_least_privilege(role: &Value) {
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(
        rules.iter().filter(|r| **r == impersonate_rule()).count(),
        1,
        "chump may impersonate service accounts: {role}"
    );
    for rule in rules {
        if *rule == impersonate_rule() {
            continue;
        }
        let verbs = strings(&rule["verbs"]);
        assert!(
            verbs.is_subset(&BTreeSet::from([
                "get", "list", "create", "patch", "delete"
            ])),
            "{rule}"
        );
        for field in ["apiGroups", "resources"] {
            assert!(
                !rule[field].as_array().unwrap().contains(&json!("*")),
                "{rule}"
            );
        }
        let resources = strings(&rule["resources"]);
        assert!(
            !resources.contains("secrets"),
            "secrets only on purpose: {rule}"
        );
        assert!(
            resources.iter().all(|r| !r.contains('/')),
            "no subresources (pods/exec, pods/log…): {rule}"
        );
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "{rule}"
        );
        let groups = strings(&rule["apiGroups"]);
        for (group, resource) in READ_ONLY {
            if groups.contains(group) && resources.contains(resource) {
                assert_eq!(
                    verbs,
                    BTreeSet::from(["get", "list"]),
                    "{resource} are read-only (get, list): {rule}"
                );
            }
        }
    }
    assert!(grants(role, "", "serviceaccounts", "impersonate"));
    for resource in ["users", "groups", "uids", "userextras"] {
        for group in ["", "authentication.k8s.io"] {
            assert!(
                !grants(role, group, resource, "impersonate"),
                "impersonating {resource} is more than deploying as a service account needs: {role}"
            );
        }
    }
    for (group, resource) in READ_ONLY {
        for verb in ["get", "list"] {
            assert!(
                grants(role, group, resource, verb),
                "chump cannot {verb} {resource} (health): {role}"
            );
        }
        for verb in [
            "watch",
            "create",
            "patch",
            "update",
            "delete",
            "deletecollection",
        ] {
            assert!(
                !grants(role, group, resource, verb),
                "{verb} {resource} is more than health needs: {role}"
            );
        }
    }
}

/// Whether a rule of `role` grants `verb` on `resource` of `group`.
fn grants(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().unwrap().iter().any(|r| {
        r["apiGroups"].as_array().unwrap().contains(&json!(group))
            && r["resources"]
                .as_array()
                .unwrap()
                .contains(&json!(resource))
            && r["verbs"].as_array().unwrap().contains(&json!(verb))
    })
}

/// Whether `role` lets chump get, create and patch `o`'s kind (apply),
/// list it (drift) and delete it (prune).
fn grants_apply(role: &Value, o: &Value) -> bool {
    let k = kind_spec(o);
    ["get", "create", "patch", "list", "delete"]
        .iter()
        .all(|verb| grants(role, k.group, k.plural, verb))
}

// ---------------------------------------------------------------------------
// Rendering

#[test]
fn base_renders_with_kubectl_kustomize() {
    let (_, objects) = render("base");
    assert_restricted(&objects);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Namespace",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    assert_chump_deployment(&objects, 1);
    for o in &objects {
        if kind_spec(o).namespaced {
            assert_eq!(o["metadata"]["namespace"], "chump", "{o}");
        }
    }
    assert_eq!(
        find(&objects, "Namespace", "chump")["metadata"]["labels"]
            ["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let d = find(&objects, "Deployment", "chump");
    assert_eq!(
        d["spec"]["strategy"]["type"], "Recreate",
        "SQLite: one process"
    );
    let c = container(d, "chump");
    assert_eq!(
        plain_env(c, "CHUMP_DATABASE").as_deref(),
        Some("sqlite:///data/chump.db")
    );
    let data = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .unwrap();
    assert_eq!(data["persistentVolumeClaim"]["claimName"], "chump-data");
    find(&objects, "PersistentVolumeClaim", "chump-data");
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "data", "mountPath": "/data"})));

    let role = find(&objects, "ClusterRole", "chump");
    assert_least_privilege(role);
    // chump can apply every object of its own base (chump deploys chump).
    for o in &objects {
        assert!(
            grants_apply(role, o),
            "the ClusterRole does not cover {} {}",
            o["kind"],
            o["metadata"]["name"]
        );
    }
    let binding = find(&objects, "ClusterRoleBinding", "chump");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "chump"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "chump", "namespace": "chump"}])
    );
}

#[test]
fn rethinkdb_overlay_renders_with_kubectl_kustomize() {
    let (_, objects) = render("overlays/rethinkdb");
    assert_restricted(&objects);
    let ks = kinds(&objects);
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
    ] {
        assert!(ks.contains(kind), "{kind} missing from {ks:?}");
    }
    assert!(
        !ks.contains("PersistentVolumeClaim"),
        "no SQLite volume: {ks:?}"
    );
    assert_chump_deployment(&objects, 2);
    let d = find(&objects, "Deployment", "chump");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    let c = container(d, "chump");
    assert_eq!(
        plain_env(c, "CHUMP_DATABASE").as_deref(),
        Some("rethinkdb://rethinkdb:28015/chump")
    );
    assert!(
        !d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "data" || v.get("persistentVolumeClaim").is_some()),
        "{}",
        d["spec"]["template"]["spec"]["volumes"]
    );
    assert!(!c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/data"));

    let sts = find(&objects, "StatefulSet", "rethinkdb");
    assert_eq!(sts["metadata"]["namespace"], "chump");
    assert_eq!(sts["spec"]["serviceName"], "rethinkdb");
    let db = container(sts, "rethinkdb");
    assert_eq!(db["image"], "rethinkdb:2.4");
    let port = db["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"] == 28015)
        .expect("port 28015");
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &db[probe]["tcpSocket"]["port"];
        assert!(p == &port["name"] || p == 28015, "{probe}: {p}");
    }
    assert_eq!(db["securityContext"]["allowPrivilegeEscalation"], false);
    let claims = sts["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(claims[0]["metadata"]["name"], "data");
    assert!(db["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "data"));
    let svc = find(&objects, "Service", "rethinkdb");
    assert_eq!(svc["spec"]["ports"][0]["port"], 28015);
    assert_eq!(
        svc["spec"]["selector"],
        sts["spec"]["template"]["metadata"]["labels"]
    );
    let pdb = find(&objects, "PodDisruptionBudget", "chump");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn namespaced_overlay_renders_with_kubectl_kustomize() {
    let (_, objects) = render("overlays/namespaced");
    assert_restricted(&objects);
    let ks = kinds(&objects);
    assert!(
        !ks.contains("ClusterRole") && !ks.contains("ClusterRoleBinding"),
        "no cluster-wide rights: {ks:?}"
    );
    assert_chump_deployment(&objects, 1);
    let c = container(find(&objects, "Deployment", "chump"), "chump");
    assert_eq!(
        plain_env(c, "CHUMP_RESTRICT_NAMESPACE").as_deref(),
        Some("true")
    );
    let role = find(&objects, "Role", "chump");
    let managed = role["metadata"]["namespace"].as_str().unwrap();
    assert_ne!(managed, "chump", "the Role is in the managed namespace");
    assert_least_privilege(role);
    find(&objects, "Namespace", managed);
    let binding = find(&objects, "RoleBinding", "chump");
    assert_eq!(binding["metadata"]["namespace"], managed);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "chump"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "chump", "namespace": "chump"}])
    );
    // The Role covers the usual namespaced kinds of an app.
    for kind in ["Deployment", "Service", "ConfigMap"] {
        let probe = objects
            .iter()
            .find(|o| o["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| json!({"apiVersion": "v1", "kind": kind}));
        assert!(grants_apply(role, &probe), "{kind}");
    }
}

// ---------------------------------------------------------------------------
// Applying with kubectl to the stand-in

async fn apply_rendered(dir: &str) {
    let (yaml, objects) = render(dir);
    let kube = KubeApi::start().await;
    let home = tempfile::tempdir().unwrap();
    let kc = kube.kubeconfig(home.path());
    let home_path = home.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        kubectl(
            Some(&kc),
            &home_path,
            &[
                "apply",
                "--server-side",
                "--field-manager=install",
                "-f",
                "-",
            ],
            Some(&yaml),
        )
    })
    .await
    .unwrap();
    let stdout = ok(&format!("kubectl apply --server-side ({dir})"), out);
    for o in &objects {
        let k = kind_spec(o);
        let gv = o["apiVersion"].as_str().unwrap();
        let name = o["metadata"]["name"].as_str().unwrap();
        let ns = k
            .namespaced
            .then(|| o["metadata"]["namespace"].as_str().expect("a namespace"));
        let stored = kube
            .get_object(gv, k.plural, ns, name)
            .unwrap_or_else(|| panic!("{dir}: {} {name} not stored\n{stdout}", o["kind"]));
        // An object that sets nothing but its name owns no field: the
        // server keeps no managedFields entry for it (as a real one does).
        let sets_fields = o
            .as_object()
            .unwrap()
            .keys()
            .any(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            || o["metadata"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| !matches!(k.as_str(), "name" | "namespace"));
        assert!(
            !sets_fields
                || stored["metadata"]["managedFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["manager"] == "install" && m["operation"] == "Apply"),
            "{dir}: {} {name} applied server-side",
            o["kind"]
        );
        assert!(
            stdout.contains(&format!("{}/{name} serverside-applied", k.singular))
                || stdout.contains(&format!("/{name} serverside-applied")),
            "{dir}: {stdout}"
        );
    }
    let d = kube
        .get_object("apps/v1", "deployments", Some("chump"), "chump")
        .unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{IMAGE}:0.1.0")
    );
    assert!(kube.writes().iter().all(|w| w.method == "PATCH"
        && w.content_type.as_deref() == Some("application/apply-patch+yaml")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_applies_server_side_with_kubectl() {
    apply_rendered("base").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rethinkdb_overlay_applies_server_side_with_kubectl() {
    apply_rendered("overlays/rethinkdb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_overlay_applies_server_side_with_kubectl() {
    apply_rendered("overlays/namespaced").await;
}

// ---------------------------------------------------------------------------
// chump deploys chump

/// Every file under `deploy/`, as `deploy/...` paths for a repository.
fn deploy_files() -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push((
                    format!("deploy/{}", rel.to_str().unwrap()),
                    std::fs::read(&path).unwrap(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy_dir(), &deploy_dir(), &mut out);
    out.sort();
    out
}

fn deployed_image(kube: &KubeApi, ns: &str, name: &str, container: &str) -> Option<String> {
    let d = kube.get_object("apps/v1", "deployments", Some(ns), name)?;
    d["spec"]["template"]["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)?["image"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chump_deploys_chump_and_redeploys_on_a_tag_bump() {
    let git = GitServer::start();
    let kube = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kube.kubeconfig(dir.path());
    let files = deploy_files();
    assert!(files
        .iter()
        .any(|(p, _)| p == "deploy/base/kustomization.yaml"));
    let first = git.create_repo("chump", "main", files);

    std::fs::create_dir_all(dir.path().join("chump")).unwrap();
    let chump = Chump::start_with(
        ChumpOptions::default()
            .dir(&dir.path().join("chump"))
            .env("KUBECONFIG", kubeconfig.display().to_string())
            .env("CHUMP_INTERVAL", "2")
            .env("CHUMP_ROLLOUT_TIMEOUT", "5"),
    );
    let id = create(
        &chump,
        &json!({
            "namespace": "chump",
            "deployment_name": "chump",
            "git_url": git.url("chump"),
            "branch": "main",
            "deploy_path": "deploy/base",
            "container_name": "chump",
            "image_version_file": "deploy/base/kustomization.yaml",
        }),
    )
    .await;
    let entry = wait_history(&chump, id, "chump deploying chump", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(entry["commit"], first);
    assert_eq!(entry["desired_image"], format!("{IMAGE}:0.1.0"));
    assert_eq!(entry["running_image"], Value::Null);
    let applied: BTreeSet<(String, String)> = entry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        entry["objects"][0]["kind"], "Namespace",
        "namespaces first: {applied:?}"
    );
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ] {
        assert!(
            applied.contains(&(kind.to_string(), "created".to_string())),
            "{kind} created: {applied:?}"
        );
    }
    // The stand-in holds chump's own manifests, applied by chump.
    let (_, rendered) = render("base");
    for o in &rendered {
        let k = kind_spec(o);
        let name = o["metadata"]["name"].as_str().unwrap();
        let ns = k.namespaced.then_some("chump");
        let stored = kube
            .get_object(o["apiVersion"].as_str().unwrap(), k.plural, ns, name)
            .unwrap_or_else(|| panic!("{} {name} not applied", o["kind"]));
        assert!(
            stored["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["manager"] == "chump"),
            "{} {name} applied by chump",
            o["kind"]
        );
    }
    let role = kube
        .get_object(
            "rbac.authorization.k8s.io/v1",
            "clusterroles",
            None,
            "chump",
        )
        .unwrap();
    assert_eq!(
        role["rules"],
        find(&rendered, "ClusterRole", "chump")["rules"]
    );
    assert_eq!(
        deployed_image(&kube, "chump", "chump", "chump").as_deref(),
        Some(&*format!("{IMAGE}:0.1.0"))
    );

    // A release: one line in deploy/base/kustomization.yaml.
    let kustomization =
        std::fs::read_to_string(deploy_dir().join("base/kustomization.yaml")).unwrap();
    assert!(kustomization.contains("newTag: 0.1.0"), "{kustomization}");
    let bumped = kustomization.replace("newTag: 0.1.0", "newTag: 0.2.0");
    let second = git.commit_files(
        "chump",
        "main",
        [("deploy/base/kustomization.yaml", bumped)],
        "release chump 0.2.0",
    );
    let entry = wait_history(&chump, id, "the redeploy of chump 0.2.0", |e| {
        e["commit"] == second && e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(entry["running_image"], format!("{IMAGE}:0.1.0"));
    assert_eq!(entry["desired_image"], format!("{IMAGE}:0.2.0"));
    let actions: Vec<(String, String)> = entry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("Deployment".into(), "configured".into())),
        "{actions:?}"
    );
    assert_eq!(
        deployed_image(&kube, "chump", "chump", "chump").as_deref(),
        Some(&*format!("{IMAGE}:0.2.0"))
    );
}

// ---------------------------------------------------------------------------
// In-cluster: the service account's environment and files, TLS and a token

/// Where kube-rs (and every Kubernetes client) reads a pod's service account.
/// kube 5 has these paths as constants: there is no way to point it elsewhere.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_stand_in_demands_the_token() {
    let kube = KubeApi::start_tls("stand-in-token-0123456789abcdef").await;
    assert!(kube.url().starts_with("https://127.0.0.1:"));
    let home = tempfile::tempdir().unwrap();
    let kc = kube.kubeconfig(home.path());
    let h = home.path().to_path_buf();
    let (with, without) = tokio::task::spawn_blocking(move || {
        let with = kubectl(Some(&kc), &h, &["get", "namespaces", "-o", "name"], None);
        let text = std::fs::read_to_string(&kc).unwrap();
        let wrong = h.join("wrong-token");
        std::fs::write(
            &wrong,
            // A wrong token (with none, kubectl would prompt for a password).
            text.replace(
                "stand-in-token-0123456789abcdef",
                "wrong-token-0123456789abcdef",
            ),
        )
        .unwrap();
        let without = kubectl(Some(&wrong), &h, &["get", "namespaces", "-o", "name"], None);
        (with, without)
    })
    .await
    .unwrap();
    let names = ok("kubectl over TLS with the token", with);
    assert!(names.contains("namespace/default"), "{names}");
    assert!(!without.status.success());
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        stderr.contains("Unauthorized") || stderr.contains("401"),
        "{stderr}"
    );
    assert!(kube.unauthorized() > 0);
}

/// Makes `secrets/kubernetes.io/serviceaccount` of `root` appear at
/// [`SA_DIR`] for the command only: a private mount namespace (Linux,
/// CAP_SYS_ADMIN) with `root`'s matching subtree bind-mounted over the
/// deepest part of `/var/run/secrets/kubernetes.io/serviceaccount` that
/// exists (over `/var/run` itself, i.e. `/run`, on a machine that is not a
/// pod: the child then sees only our files there). Nothing outside the
/// child changes.
#[cfg(target_os = "linux")]
fn in_private_mount_namespace(cmd: &mut Command, root: &Path) {
    use std::ffi::CString;
    use std::os::unix::process::CommandExt;

    let mut target = PathBuf::from(SA_DIR);
    let mut source = root.join("secrets/kubernetes.io/serviceaccount");
    while !target.exists() {
        target.pop();
        source.pop();
    }
    let target = CString::new(target.to_str().unwrap()).unwrap();
    let source = CString::new(source.to_str().unwrap()).unwrap();
    let slash = CString::new("/").unwrap();
    // SAFETY: only system calls between fork and exec, on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    slash.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn in_private_mount_namespace(_cmd: &mut Command, _root: &Path) {}

/// The service-account files written at the real [`SA_DIR`] (the fallback
/// when no mount namespace can be made): removes what it created when
/// dropped.
struct WrittenServiceAccount {
    created: Vec<PathBuf>,
}

impl WrittenServiceAccount {
    /// None (and nothing written) when [`SA_DIR`] exists already (this is a
    /// pod: its real service account is left alone) or cannot be written.
    fn write(files: &[(&str, &[u8])]) -> Result<WrittenServiceAccount, String> {
        let sa = Path::new(SA_DIR);
        if sa.exists() {
            return Err(format!(
                "{SA_DIR} exists (a real service account?); not touching it"
            ));
        }
        let mut guard = WrittenServiceAccount {
            created: Vec::new(),
        };
        let mut missing = Vec::new();
        let mut p = sa.to_path_buf();
        while !p.exists() {
            missing.push(p.clone());
            p.pop();
        }
        for dir in missing.into_iter().rev() {
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            guard.created.push(dir);
        }
        for (name, contents) in files {
            let path = sa.join(name);
            std::fs::write(&path, contents)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            guard.created.push(path);
        }
        Ok(guard)
    }
}

impl Drop for WrittenServiceAccount {
    fn drop(&mut self) {
        for path in self.created.iter().rev() {
            let _ = if path.is_dir() {
                std::fs::remove_dir(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_cluster_service_account_without_kubeconfig() {
    const TOKEN: &str = "service-account-token-0123456789";
    let kube = KubeApi::start_tls(TOKEN).await;
    let git = GitServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ca = kube.ca_pem().unwrap();
    let sa_files: [(&str, &[u8]); 3] = [
        ("token", TOKEN.as_bytes()),
        ("ca.crt", ca.as_bytes()),
        ("namespace", b"chump"),
    ];
    // The files as kubelet mounts them, under a private root.
    let root = dir.path().join("run");
    let sa = root.join("secrets/kubernetes.io/serviceaccount");
    std::fs::create_dir_all(&sa).unwrap();
    for (name, contents) in &sa_files {
        std::fs::write(sa.join(name), contents).unwrap();
    }
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&data).unwrap();

    let commit = git.create_repo(
        "web",
        "main",
        [
            (
                "deploy/kustomization.yaml",
                "resources:\n- namespace.yaml\n- deployment.yaml\n".to_string(),
            ),
            (
                "deploy/namespace.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n".to_string(),
            ),
            (
                "deploy/deployment.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  \
                 selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    \
                 spec:\n      containers:\n      - name: app\n        image: registry.local/shop/web:1.0.0\n"
                    .to_string(),
            ),
        ],
    );

    // chump as in a pod: no KUBECONFIG, no ~/.kube/config, the service
    // environment variables, the service-account files.
    let options = || {
        ChumpOptions::default()
            .dir(&data)
            .env("HOME", home.display().to_string())
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", kube.addr().port().to_string())
            .env("CHUMP_INTERVAL", "2")
            .env("CHUMP_ROLLOUT_TIMEOUT", "5")
    };
    let mut written = None;
    let private_root = root.clone();
    let namespaced = options().command(move |cmd| in_private_mount_namespace(cmd, &private_root));
    let chump = match Chump::try_start_with(namespaced) {
        Ok(c) => {
            eprintln!("in-cluster test: service account bind-mounted at {SA_DIR} in a private mount namespace");
            c
        }
        Err(e) => match WrittenServiceAccount::write(&sa_files) {
            Ok(w) => {
                eprintln!("in-cluster test: no private mount namespace ({e}); wrote {SA_DIR} (removed afterwards)");
                written = Some(w);
                Chump::start_with(options())
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED in_cluster_service_account_without_kubeconfig: no private mount namespace ({e}) and {why}"
                );
                return;
            }
        },
    };
    let id = create(
        &chump,
        &json!({"namespace": "shop", "deployment_name": "web", "git_url": git.url("web"), "branch": "main",
                "deploy_path": "deploy", "container_name": "app", "image_version_file": "deploy/deployment.yaml"}),
    )
    .await;
    let entry = wait_history(&chump, id, "a deploy over TLS", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(entry["commit"], commit);
    assert_eq!(
        deployed_image(&kube, "shop", "web", "app").as_deref(),
        Some("registry.local/shop/web:1.0.0")
    );
    // Every request carried the service account's token: the stand-in
    // answers 401 without it (tls_stand_in_demands_the_token), and none was.
    assert!(!kube.writes().is_empty());
    assert_eq!(kube.unauthorized(), 0, "{}", chump.logs());
    drop(chump);
    if written.take().is_some() {
        assert!(!Path::new(SA_DIR).exists(), "{SA_DIR} removed");
    }
}
