//! The deploy pipeline end to end (issue #3): the real `chump serve`, a real
//! `git daemon`, real `kubectl kustomize`, and the Kubernetes API stand-in.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};
use support::chump::{wait_for, Chump, ChumpOptions};
use support::git_server::GitServer;
use support::kube_api::{KubeApi, RolloutMode};

const WAIT: Duration = Duration::from_secs(60);

fn deployment(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    \
         spec:\n      containers:\n      - name: app\n        image: {image}\n      - name: sidecar\n        image: busybox:1.36\n"
    )
}

fn app_files(ns: &str, name: &str, image: &str) -> Vec<(String, String)> {
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
struct Env {
    git: GitServer,
    kube: KubeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Env {
    async fn new() -> Env {
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
    fn app_repo(&self, repo: &str, ns: &str, name: &str, image: &str) -> String {
        self.git
            .create_repo(repo, "main", app_files(ns, name, image))
    }

    fn options(&self) -> ChumpOptions {
        ChumpOptions::default()
            .dir(&self.dir.path().join("chump"))
            .env("KUBECONFIG", self.kubeconfig.display().to_string())
            .env("CHUMP_INTERVAL", "2")
            .env("CHUMP_ROLLOUT_TIMEOUT", "5")
    }

    fn chump(&self) -> Chump {
        self.chump_with(self.options())
    }

    fn chump_with(&self, options: ChumpOptions) -> Chump {
        std::fs::create_dir_all(self.dir.path().join("chump")).unwrap();
        Chump::start_with(options)
    }

    /// One repository holding `n` apps (`apps/app-I`), all in namespace
    /// `many` (created beforehand), and a source for each.
    fn monorepo(&self, repo: &str, n: usize) -> Vec<Value> {
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

    fn source(&self, repo: &str, ns: &str, name: &str) -> Value {
        json!({"namespace": ns, "deployment_name": name, "git_url": self.git.url(repo), "branch": "main",
               "deploy_path": "deploy", "container_name": "app", "image_version_file": "deploy/deployment.yaml"})
    }

    fn deployed_image(&self, ns: &str, name: &str) -> Option<String> {
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

async fn get(c: &Chump, path: &str) -> Value {
    let resp = Client::new().get(c.url(path)).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn create(c: &Chump, body: &Value) -> i64 {
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

async fn history(c: &Chump, id: i64) -> Vec<Value> {
    get(c, &format!("/api/sources/{id}/history")).await["history"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the source's history has an entry matching `pred`.
async fn wait_history(c: &Chump, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, WAIT, || async {
        history(c, id).await.into_iter().find(|e| pred(e))
    })
    .await
}

/// Waits until the source's status shows a check finished after `after`.
async fn wait_checked_after(c: &Chump, id: i64, after: &str) -> Value {
    wait_for("a newer check", WAIT, || async {
        let st = get(c, &format!("/api/sources/{id}/status")).await;
        let last = st["last_checked_at"].as_str().unwrap_or("").to_string();
        (last.as_str() > after).then_some(st)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_source_is_deployed_then_redeployed_on_a_new_tag() {
    let env = Env::new().await;
    let first = env.app_repo("web", "shop", "web", "registry.local:5000/shop/web:1.0.0");
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;

    let entry = wait_history(&c, id, "a deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(entry["trigger"], "schedule");
    assert_eq!(entry["commit"], first);
    assert_eq!(entry["desired_image"], "registry.local:5000/shop/web:1.0.0");
    assert_eq!(
        entry["running_image"],
        Value::Null,
        "the Deployment did not exist"
    );
    let objects: Vec<(String, String)> = entry["objects"]
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
        objects[0],
        ("Namespace".to_string(), "created".to_string()),
        "namespaces first: {objects:?}"
    );
    assert!(
        objects.contains(&("Deployment".into(), "created".into())),
        "{objects:?}"
    );
    assert!(
        objects.contains(&("ConfigMap".into(), "created".into())),
        "{objects:?}"
    );
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("registry.local:5000/shop/web:1.0.0")
    );
    // The ConfigMap had no namespace in the repo: it got the source's.
    assert!(env
        .kube
        .get_object("v1", "configmaps", Some("shop"), "web-config")
        .is_some());
    // Applied by chump, server-side.
    assert!(env.kube.writes().iter().any(|r| r.method == "PATCH"
        && r.query.contains("fieldManager=chump")
        && r.content_type.as_deref() == Some("application/apply-patch+yaml")));

    // A commit that bumps the tag is deployed within an interval or so.
    let second = env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", "registry.local:5000/shop/web:1.1.0"),
        )],
        "bump",
    );
    let entry = wait_history(&c, id, "the redeploy", |e| {
        e["commit"] == second && e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(entry["running_image"], "registry.local:5000/shop/web:1.0.0");
    assert_eq!(entry["desired_image"], "registry.local:5000/shop/web:1.1.0");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("registry.local:5000/shop/web:1.1.0")
    );
    let st = get(&c, &format!("/api/sources/{id}/status")).await;
    assert_eq!(st["last_commit"], second);
    assert_eq!(st["running_image"], "registry.local:5000/shop/web:1.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_writes_nothing_and_fetches_nothing() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1.25");
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let st = wait_for("an up_to_date check", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["last_outcome"] == "up_to_date").then_some(st)
    })
    .await;

    env.kube.clear_requests();
    let fetches = env.git.fetch_count();
    // Two more checks with nothing changed.
    let st = wait_checked_after(&c, id, st["last_checked_at"].as_str().unwrap()).await;
    let st = wait_checked_after(&c, id, st["last_checked_at"].as_str().unwrap()).await;
    assert_eq!(st["last_outcome"], "up_to_date");
    assert!(
        env.kube.writes().is_empty(),
        "a no-op check wrote to the cluster: {:?}",
        env.kube.writes()
    );
    assert!(env
        .kube
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("/deployments/web")));
    assert_eq!(
        env.git.fetch_count(),
        fetches,
        "a no-op check fetched from the remote"
    );
    // No history for no-op checks.
    assert_eq!(history(&c, id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_the_cluster_is_reapplied() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1.25");
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    assert!(env.kube.set_image("shop", "web", "app", "nginx:hacked"));
    let entry = wait_history(&c, id, "the re-apply", |e| {
        e["running_image"] == "nginx:hacked"
    })
    .await;
    assert_eq!(entry["outcome"], "deployed");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1.25")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_with_their_stage_and_others_still_run() {
    let env = Env::new().await;
    // build: a kustomization that names a missing resource.
    env.git.create_repo(
        "broken-build",
        "main",
        [
            (
                "deploy/kustomization.yaml",
                "resources:\n- deployment.yaml\n- missing.yaml\n".to_string(),
            ),
            ("deploy/deployment.yaml", deployment("b1", "b1", "nginx:1")),
        ],
    );
    // manifest: the image file has no container named "app".
    env.git.create_repo(
        "no-container",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("b2", "b2", "nginx:1").replace("name: app", "name: other"),
        )],
    );
    // A healthy one, checked alongside.
    env.app_repo("good", "good", "good", "nginx:1");
    // rollout: a Deployment that never becomes ready.
    env.app_repo("stuck", "stuck", "stuck", "nginx:1");
    env.kube
        .set_rollout_for("stuck", "stuck", RolloutMode::Never);

    let c = env.chump();
    let build = create(&c, &env.source("broken-build", "b1", "b1")).await;
    let manifest = create(&c, &env.source("no-container", "b2", "b2")).await;
    let mut unreachable = env.source("good", "b3", "b3");
    unreachable["git_url"] = json!(format!(
        "git://127.0.0.1:{}/nothing.git",
        support::git_server::free_port()
    ));
    let git = create(&c, &unreachable).await;
    let stuck = create(&c, &env.source("stuck", "stuck", "stuck")).await;
    let good = create(&c, &env.source("good", "good", "good")).await;

    for (id, stage, needle) in [
        (build, "build", "missing.yaml"),
        (manifest, "manifest", "no container named 'app'"),
        (git, "git", "127.0.0.1"),
        (stuck, "rollout", "stuck"),
    ] {
        let e = wait_history(&c, id, stage, |e| e["outcome"] == "failed").await;
        assert_eq!(e["stage"], stage, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{stage}: {e}"
        );
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        assert!(st["consecutive_failures"].as_u64().unwrap() >= 1);
    }
    let e = wait_history(&c, good, "the good deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(e["stage"], Value::Null);
    // The failing rollout's objects were applied and are recorded.
    let e = &history(&c, stuck).await[0];
    assert!(
        e["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Deployment"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_cluster_is_a_cluster_failure_and_recovers() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.stop().await;
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let e = wait_history(&c, id, "a cluster failure", |e| e["outcome"] == "failed").await;
    assert_eq!(e["stage"], "cluster", "{e}");
    env.kube.restart().await;
    // Backoff after one failure is about two intervals.
    wait_history(&c, id, "the deploy after recovery", |e| {
        e["outcome"] == "deployed"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_past_its_deadline_is_cut_and_recorded() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.set_rollout(RolloutMode::Never);
    let c = env.chump_with(
        env.options()
            .env("CHUMP_CHECK_TIMEOUT", "2")
            .env("CHUMP_ROLLOUT_TIMEOUT", "30"),
    );
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let e = wait_history(&c, id, "a timeout", |e| e["outcome"] == "failed").await;
    assert_eq!(e["stage"], "timeout", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("during stage rollout"),
        "{e}"
    );
    assert!(
        e["commit"].is_string() && e["desired_image"] == "nginx:1",
        "what was known is kept: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_running_checks_after_the_grace_period() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.set_rollout(RolloutMode::Never);
    let mut c = env.chump_with(
        env.options()
            .env("CHUMP_ROLLOUT_TIMEOUT", "60")
            .env("CHUMP_SHUTDOWN_GRACE", "1"),
    );
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_for("the rollout wait", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        let deployed = env.deployed_image("shop", "web").is_some();
        (st["in_flight"] == true && deployed).then_some(())
    })
    .await;
    assert!(
        c.terminate(Duration::from_secs(20)),
        "chump should exit cleanly"
    );
    drop(c);
    // Restart on the same data: the cut check is in the history.
    env.kube.set_rollout(RolloutMode::Immediate);
    let c = env.chump();
    let h = history(&c, id).await;
    let cut = h
        .iter()
        .find(|e| e["stage"] == "timeout")
        .unwrap_or_else(|| panic!("{h:?}"));
    assert!(
        cut["message"].as_str().unwrap().contains("shutdown"),
        "{cut}"
    );
    // And the source is checked again after the restart: the objects were
    // applied before the cut, so it is now up to date.
    let cut_at = cut["finished_at"].as_str().unwrap().to_string();
    let st = wait_checked_after(&c, id, &cut_at).await;
    assert_eq!(st["last_outcome"], "up_to_date", "{st}");
}

/// Log events of the worker: (source id, started?) in order, and the most
/// checks running at once.
fn worker_events(logs: &str) -> (Vec<(i64, bool)>, u64) {
    let mut events = Vec::new();
    let mut max_running = 0;
    for line in logs.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let started = match v["message"].as_str() {
            Some("check started") => true,
            Some("check done") => false,
            _ => continue,
        };
        if started {
            max_running = max_running.max(v["running"].as_u64().unwrap());
        }
        events.push((v["source_id"].as_i64().unwrap(), started));
    }
    (events, max_running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_sources_three_workers() {
    let env = Env::new().await;
    let sources = env.monorepo("apps", 40);
    // A slow API server, so checks overlap.
    env.kube.set_delay(Duration::from_millis(100));
    let c = env.chump_with(
        env.options()
            .env("CHUMP_WORKERS", "3")
            .env("CHUMP_INTERVAL", "600"),
    );
    let mut ids = Vec::new();
    for s in &sources {
        ids.push(create(&c, s).await);
    }
    wait_for(
        "every source deployed",
        Duration::from_secs(180),
        || async {
            let h = get(&c, "/api/history?outcome=deployed&limit=500").await;
            (h["history"].as_array().unwrap().len() >= 40).then_some(())
        },
    )
    .await;
    assert_eq!(
        get(&c, "/api/history?outcome=failed").await["history"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (events, max_running) = worker_events(&c.logs());
    assert!(
        max_running <= 3,
        "more than 3 checks at once: {max_running}"
    );
    assert!(
        max_running >= 2,
        "checks never overlapped: the pool is not concurrent"
    );
    let mut running: HashMap<i64, bool> = HashMap::new();
    for (id, started) in &events {
        let was = running.insert(*id, *started).unwrap_or(false);
        assert!(!(was && *started), "source {id} checked twice at once");
    }
    for id in &ids {
        assert!(
            events.iter().any(|(i, s)| i == id && *s),
            "source {id} never checked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_cycle_checks_every_source() {
    let env = Env::new().await;
    let specs = env.monorepo("apps", 12);
    env.kube.set_delay(Duration::from_millis(100));
    let mut c = env.chump_with(
        env.options()
            .env("CHUMP_WORKERS", "2")
            .env("CHUMP_INTERVAL", "600"),
    );
    let mut ids = Vec::new();
    for s in &specs {
        ids.push(create(&c, s).await);
    }
    // Some, not all, checked: kill it hard.
    wait_for("a few checks", WAIT, || async {
        let h = get(&c, "/api/history?limit=500").await;
        (h["history"].as_array().unwrap().len() >= 2).then_some(())
    })
    .await;
    c.kill();
    drop(c);
    let c = env.chump_with(
        env.options()
            .env("CHUMP_WORKERS", "2")
            .env("CHUMP_INTERVAL", "600"),
    );
    wait_for(
        "every source deployed",
        Duration::from_secs(120),
        || async {
            let mut all = true;
            for id in &ids {
                all &= history(&c, *id)
                    .await
                    .iter()
                    .any(|e| e["outcome"] == "deployed");
            }
            all.then_some(())
        },
    )
    .await;
    let sources = get(&c, "/api/sources").await["sources"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        sources
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids
    );
    let mut s = specs[0].clone();
    s["container_name"] = json!("sidecar");
    assert_eq!(create(&c, &s).await, 13, "ids stay unique across the crash");
}
