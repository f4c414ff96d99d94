//! The kustomize runner against the real binary (`kustomize`, else
//! `kubectl kustomize`) and against fake binaries for the sandbox limits.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chump_jobs::kustomize::{Kustomize, KustomizeError, KustomizeOptions};
use serde_json::Value;

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn options() -> KustomizeOptions {
    KustomizeOptions {
        timeout: Duration::from_secs(60),
        max_output_bytes: 4 * 1024 * 1024,
        allow_remote: false,
        // These tests are about running the binary: plain kustomizations
        // are rendered in process otherwise (see tests/plain_render.rs).
        in_process: false,
    }
}

/// The real binary, as chump would pick it.
fn real() -> Kustomize {
    Kustomize::detect(None, options()).expect("kustomize or kubectl on PATH")
}

/// A fake "kustomize" script (the test's own; chump never runs a shell).
fn fake(dir: &Path, body: &str, options: KustomizeOptions) -> Kustomize {
    let path: PathBuf = dir.join("fake-kustomize");
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    Kustomize::detect(Some(path.to_str().unwrap()), options).unwrap()
}

/// `build`, retrying when a freshly written script is "text file busy"
/// (another test thread forked while it was open for writing).
async fn build(
    k: &Kustomize,
    root: &Path,
    deploy_path: &str,
) -> Result<Vec<Value>, KustomizeError> {
    for _ in 0..20 {
        match k.build(root, deploy_path).await {
            Err(KustomizeError::Spawn { source, .. }) if source.raw_os_error() == Some(26) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    k.build(root, deploy_path).await
}

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    spec:\n      containers:\n      - name: app\n        image: registry.example.com/app:1.0\n",
    );
    write(
        root,
        "base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: app\nspec:\n  ports:\n  - port: 80\n",
    );
    write(
        root,
        "base/kustomization.yaml",
        "resources:\n- deployment.yaml\n- service.yaml\n",
    );
    write(
        root,
        "deploy/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: prod\nresources:\n- ../base\nimages:\n- name: registry.example.com/app\n  newTag: \"1.10\"\n",
    );
    dir
}

fn image_of(objects: &[Value]) -> String {
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_good_build_returns_objects() {
    let repo = repo();
    let objects = build(&real(), repo.path(), "deploy").await.unwrap();
    assert_eq!(objects.len(), 2, "{objects:#?}");
    assert!(objects.iter().all(|o| o["metadata"]["namespace"] == "prod"));
    assert_eq!(image_of(&objects), "registry.example.com/app:1.10");
    // The desired image computed from the kustomization agrees with the build.
    let desired = chump_jobs::manifest::desired_image_from_file(
        repo.path(),
        "deploy/kustomization.yaml",
        "app",
    )
    .unwrap();
    assert_eq!(desired, image_of(&objects));
}

#[tokio::test]
async fn a_deploy_path_naming_a_file_builds_its_directory() {
    let repo = repo();
    let objects = build(&real(), repo.path(), "deploy/kustomization.yaml")
        .await
        .unwrap();
    assert_eq!(image_of(&objects), "registry.example.com/app:1.10");
    let objects = build(&real(), repo.path(), "./deploy/").await.unwrap();
    assert_eq!(objects.len(), 2);
}

#[tokio::test]
async fn a_broken_kustomization_fails_with_kustomizes_message() {
    let repo = repo();
    write(repo.path(), "deploy/kustomization.yaml", "resources: 5\n");
    let err = build(&real(), repo.path(), "deploy").await.unwrap_err();
    assert!(matches!(err, KustomizeError::Failed { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("kustomize build failed"), "{message}");
    assert!(message.contains("cannot unmarshal"), "{message}");

    write(
        repo.path(),
        "deploy/kustomization.yaml",
        "resources: [../base]\npatches:\n- path: patch.yaml\n",
    );
    write(
        repo.path(),
        "deploy/patch.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nothere}\nspec: {replicas: 2}\n",
    );
    let err = build(&real(), repo.path(), "deploy").await.unwrap_err();
    assert!(err.to_string().contains("nothere"), "{err}");
}

#[tokio::test]
async fn the_load_restrictor_refuses_files_outside_the_kustomization_root() {
    let repo = repo();
    // Inside the checkout, but outside the kustomization's own directory.
    write(
        repo.path(),
        "deploy/kustomization.yaml",
        "resources:\n- ../base/deployment.yaml\n",
    );
    let err = build(&real(), repo.path(), "deploy").await.unwrap_err();
    assert!(matches!(err, KustomizeError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("is not in or below"), "{err}");
}

#[tokio::test]
async fn paths_outside_the_checkout_are_refused_before_running() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("repo");
    write(
        &root,
        "deploy/kustomization.yaml",
        "resources: [../../elsewhere]\n",
    );
    write(
        outer.path(),
        "elsewhere/kustomization.yaml",
        "resources: []\n",
    );
    let err = build(&real(), &root, "deploy").await.unwrap_err();
    assert!(
        matches!(err, KustomizeError::ResourceRefused { .. }),
        "{err}"
    );
    for bad in ["../elsewhere", "/etc", "deploy/../../elsewhere", "deploy\0"] {
        let err = build(&real(), &root, bad).await.unwrap_err();
        assert!(matches!(err, KustomizeError::Path(_)), "{bad:?}: {err}");
    }
    std::os::unix::fs::symlink(outer.path().join("elsewhere"), root.join("link")).unwrap();
    let err = build(&real(), &root, "link").await.unwrap_err();
    assert!(matches!(err, KustomizeError::Path(_)), "{err}");
}

#[tokio::test]
async fn remote_bases_are_refused_unless_allowed() {
    let repo = repo();
    write(
        repo.path(),
        "deploy/kustomization.yaml",
        "resources:\n- ../base\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1\n",
    );
    let started = Instant::now();
    let err = build(&real(), repo.path(), "deploy").await.unwrap_err();
    assert!(matches!(err, KustomizeError::RemoteRefused { .. }), "{err}");
    assert!(
        err.to_string().contains("CHUMP_KUSTOMIZE_ALLOW_REMOTE"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Allowed: the pre-check lets it through to kustomize (a fake here, so
    // the test needs no network).
    let bin = tempfile::tempdir().unwrap();
    let allow = KustomizeOptions {
        allow_remote: true,
        ..options()
    };
    let k = fake(bin.path(), "echo 'kind: ConfigMap'", allow);
    let objects = build(&k, repo.path(), "deploy").await.unwrap();
    assert_eq!(objects.len(), 1);
}

#[tokio::test]
async fn the_environment_is_scrubbed() {
    std::env::set_var("CHUMP_API_TOKEN", "secret-token-value");
    std::env::set_var("CHUMP_DATABASE", "rethinkdb://admin:pw@db:28015/chump");
    let repo = repo();
    let bin = tempfile::tempdir().unwrap();
    let script = r#"echo "apiVersion: v1"
echo "kind: ConfigMap"
echo "metadata:"
echo "  name: env"
echo "data:"
env | while IFS= read -r line; do
  printf '  %s: present\n' "${line%%=*}"
done
printf '  ARGS: "%s"\n' "$*"
printf '  CWD: "%s"\n' "$(pwd)"
printf '  HOMEDIR: "%s"\n' "$HOME"
printf '  GOGCVALUE: "%s"\n' "$GOGC"
printf '  GOMEMLIMITVALUE: "%s"\n' "$GOMEMLIMIT""#;
    let k = fake(bin.path(), script, options());
    let objects = build(&k, repo.path(), "deploy/kustomization.yaml")
        .await
        .unwrap();
    let data = objects[0]["data"].as_object().unwrap();
    assert!(!data.contains_key("CHUMP_API_TOKEN"), "{data:?}");
    assert!(!data.contains_key("CHUMP_DATABASE"), "{data:?}");
    assert!(
        data.contains_key("PATH") && data.contains_key("HOME"),
        "{data:?}"
    );
    let allowed = [
        "PATH",
        "HOME",
        "GOGC",
        "GOMEMLIMIT",
        "PWD",
        "OLDPWD",
        "SHLVL",
        "_",
        "ARGS",
        "CWD",
        "HOMEDIR",
        "GOGCVALUE",
        "GOMEMLIMITVALUE",
    ];
    for key in data.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "unexpected variable {key} reached kustomize"
        );
    }
    assert_eq!(
        data["ARGS"],
        "build --load-restrictor LoadRestrictionsRootOnly ."
    );
    // The Go runtime collects no garbage below a soft limit.
    assert_eq!(data["GOGCVALUE"], "off");
    assert_eq!(data["GOMEMLIMITVALUE"], "256MiB");
    let cwd = PathBuf::from(data["CWD"].as_str().unwrap());
    assert_eq!(cwd, repo.path().canonicalize().unwrap().join("deploy"));
    let home = data["HOMEDIR"].as_str().unwrap();
    assert_ne!(Some(home.to_string()), std::env::var("HOME").ok());
    assert!(
        !Path::new(home).exists(),
        "the temporary HOME is removed after the build"
    );
}

#[tokio::test]
async fn output_is_capped() {
    let repo = repo();
    let bin = tempfile::tempdir().unwrap();
    let small = KustomizeOptions {
        max_output_bytes: 256 * 1024,
        ..options()
    };
    let k = fake(bin.path(), "exec yes 'a: b'", small);
    let started = Instant::now();
    let err = build(&k, repo.path(), "deploy").await.unwrap_err();
    assert!(
        matches!(err, KustomizeError::OutputTooLarge { limit } if limit == 256 * 1024),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_build_past_the_timeout_is_killed() {
    let repo = repo();
    let bin = tempfile::tempdir().unwrap();
    let short = KustomizeOptions {
        timeout: Duration::from_millis(500),
        ..options()
    };
    let k = fake(bin.path(), "exec sleep 30", short);
    let started = Instant::now();
    let err = build(&k, repo.path(), "deploy").await.unwrap_err();
    assert!(matches!(err, KustomizeError::Timeout(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_failing_binary_reports_the_tail_of_stderr() {
    let repo = repo();
    let bin = tempfile::tempdir().unwrap();
    let script = "i=0; while [ $i -lt 50 ]; do echo \"noise $i\" >&2; i=$((i+1)); done; echo 'Error: the real reason' >&2; exit 3";
    let k = fake(bin.path(), script, options());
    let err = build(&k, repo.path(), "deploy").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.ends_with("Error: the real reason"), "{message}");
    assert!(!message.contains("noise 10\n"), "{message}");
}

#[tokio::test]
async fn output_that_is_not_objects_is_an_error() {
    let repo = repo();
    let bin = tempfile::tempdir().unwrap();
    let k = fake(bin.path(), "echo '- a'; echo '- b'", options());
    let err = build(&k, repo.path(), "deploy").await.unwrap_err();
    assert!(
        matches!(err, KustomizeError::NotAnObject { index: 0 }),
        "{err}"
    );
    let k = fake(bin.path(), "echo 'a: [unclosed'", options());
    let err = build(&k, repo.path(), "deploy").await.unwrap_err();
    assert!(matches!(err, KustomizeError::Output(_)), "{err}");
}
