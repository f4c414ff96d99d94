//! A whole test environment for pipeline tests: a `git daemon`, the
//! Kubernetes API stand-in, a data directory, and helpers to drive a running
//! chump over HTTP and wait for what it does.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};

use super::chump::{wait_for, Chump, ChumpOptions};
use super::git_server::GitServer;
use super::kube_api::KubeApi;

pub const WAIT: Duration = Duration::from_secs(60);

pub fn deployment(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    \
         spec:\n      containers:\n      - name: app\n        image: {image}\n      - name: sidecar\n        image: busybox:1.36\n"
    )
}

pub fn app_files(ns: &str, name: &str, image: &str) -> Vec<(String, String)> {
    vec![
        ("deploy/kustomization.yaml".into(), "resources:\n- namespace.yaml\n- deployment.yaml\n- config.yaml\n".into()),
        ("deploy/namespace.yaml".into(), format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")),
        ("deploy/deployment.yaml".into(), deployment(ns, name, image)),
        (
            "deploy/config.yaml".into(),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\ndata:\n  greeting: hello\n"),
        ),
    ]
}

/// A git server, a Kubernetes API stand-in and a data directory.
pub struct Env {
    pub git: GitServer,
    pub kube: KubeApi,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Env {
    pub async fn new() -> Env {
        let git = GitServer::start();
        let kube = KubeApi::start().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = kube.kubeconfig(dir.path());
        Env {
            git,
            kube,
            dir,
            kubeconfig,
        }
    }

    /// A repository `repo` with a kustomize app for `ns/name` declaring `image`.
    pub fn app_repo(&self, repo: &str, ns: &str, name: &str, image: &str) -> String {
        self.git
            .create_repo(repo, "main", app_files(ns, name, image))
    }

    pub fn options(&self) -> ChumpOptions {
        ChumpOptions::default()
            .dir(&self.dir.path().join("chump"))
            .env("KUBECONFIG", self.kubeconfig.display().to_string())
            .env("CHUMP_INTERVAL", "2")
            .env("CHUMP_ROLLOUT_TIMEOUT", "5")
    }

    pub fn chump(&self) -> Chump {
        self.chump_with(self.options())
    }

    pub fn chump_with(&self, options: ChumpOptions) -> Chump {
        std::fs::create_dir_all(self.dir.path().join("chump")).unwrap();
        Chump::start_with(options)
    }

    /// One repository holding `n` apps (`apps/app-I`), all in namespace
    /// `many` (created beforehand), and a source for each.
    pub fn monorepo(&self, repo: &str, n: usize) -> Vec<Value> {
        self.kube.put_namespace("many");
        let mut files = Vec::new();
        let mut sources = Vec::new();
        for i in 0..n {
            let name = format!("app-{i}");
            files.push((
                format!("apps/{name}/kustomization.yaml"),
                "resources:\n- deployment.yaml\n".to_string(),
            ));
            files.push((
                format!("apps/{name}/deployment.yaml"),
                deployment("many", &name, "nginx:1"),
            ));
            sources.push(
                json!({"namespace": "many", "deployment_name": name, "git_url": self.git.url(repo),
                "branch": "main", "deploy_path": format!("apps/{name}"), "container_name": "app",
                "image_version_file": format!("apps/{name}/deployment.yaml")}),
            );
        }
        self.git.create_repo(repo, "main", files);
        sources
    }

    pub fn source(&self, repo: &str, ns: &str, name: &str) -> Value {
        json!({"namespace": ns, "deployment_name": name, "git_url": self.git.url(repo), "branch": "main",
               "deploy_path": "deploy", "container_name": "app", "image_version_file": "deploy/deployment.yaml"})
    }

    pub fn deployed_image(&self, ns: &str, name: &str) -> Option<String> {
        let d = self
            .kube
            .get_object("apps/v1", "deployments", Some(ns), name)?;
        d["spec"]["template"]["spec"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "app")?["image"]
            .as_str()
            .map(str::to_string)
    }
}

pub async fn get(c: &Chump, path: &str) -> Value {
    let resp = Client::new().get(c.url(path)).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.unwrap()
}

pub async fn create(c: &Chump, body: &Value) -> i64 {
    let resp = Client::new()
        .post(c.url("/api/sources"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let answer = resp.json::<Value>().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    answer["source"]["id"].as_i64().unwrap()
}

pub async fn history(c: &Chump, id: i64) -> Vec<Value> {
    get(c, &format!("/api/sources/{id}/history")).await["history"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the source's history has an entry matching `pred`.
pub async fn wait_history(c: &Chump, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, WAIT, || async {
        history(c, id).await.into_iter().find(|e| pred(e))
    })
    .await
}

/// Waits until the source's status shows a check finished after `after`.
pub async fn wait_checked_after(c: &Chump, id: i64, after: &str) -> Value {
    wait_for("a newer check", WAIT, || async {
        let st = get(c, &format!("/api/sources/{id}/status")).await;
        let last = st["last_checked_at"].as_str().unwrap_or("").to_string();
        (last.as_str() > after).then_some(st)
    })
    .await
}

impl Env {
    /// Runs the real `kubectl` against the API stand-in; panics unless it
    /// succeeds. Returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .arg("--request-timeout=10s")
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The value of the sample `name` (with its labels, as exposed) in chump's
/// `/metrics`, 0 when it is absent.
pub async fn metric(c: &Chump, name: &str) -> f64 {
    let text = Client::new()
        .get(c.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}
