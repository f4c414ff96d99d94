//! Prune: what git no longer renders is deleted from the cluster — only
//! objects chump applied for the source, never one annotated
//! `chump.dev/prune: disabled`, never with the source's `prune` off, and
//! never by a delete of the source unless it asks (`?prune=true`). A crash
//! between apply and record prunes nothing it should not.
//! Through `chump serve`, a real `git daemon`, the real `kubectl kustomize`
//! and the Kubernetes API stand-in.

mod support;

use reqwest::Client;
use serde_json::{json, Value};
use support::chump::{wait_for, Chump};
use support::env::*;
use support::kube_api::RolloutMode;

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"
    )
}

fn hpa() -> String {
    "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef:\n    \
     apiVersion: apps/v1\n    kind: Deployment\n    name: web\n  minReplicas: 1\n  maxReplicas: 3\n"
        .to_string()
}

fn config(name: &str, annotations: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{annotations}data:\n  a: \"1\"\n")
}

/// The app of `env::app_files` plus the given extra resources.
fn repo_files(ns: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut files = app_files(ns, "web", "nginx:1.25");
    files.retain(|(p, _)| p != "deploy/kustomization.yaml");
    files.extend(
        extra
            .iter()
            .map(|(name, body)| (format!("deploy/{name}"), body.clone())),
    );
    files.push(kustomization(
        &extra.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
    ));
    files
}

/// `deploy/kustomization.yaml` for the base app and `extra` files.
fn kustomization(extra: &[&str]) -> (String, String) {
    let mut k = "resources:\n- namespace.yaml\n- deployment.yaml\n- config.yaml\n".to_string();
    for e in extra {
        k.push_str(&format!("- {e}\n"));
    }
    ("deploy/kustomization.yaml".into(), k)
}

fn exists(env: &Env, gv: &str, plural: &str, ns: &str, name: &str) -> bool {
    env.kube.get_object(gv, plural, Some(ns), name).is_some()
}

fn deleted_in(entry: &Value) -> Vec<(String, String)> {
    entry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "deleted")
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_string(),
                o["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn set_suspended(c: &Chump, id: i64, suspended: bool) {
    let resp = Client::new()
        .patch(c.url(&format!("/api/sources/{id}")))
        .json(&json!({ "suspended": suspended }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

async fn check_now(c: &Chump, id: i64) {
    let resp = Client::new()
        .post(c.url(&format!("/api/sources/{id}/check")))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_removed_from_git_are_pruned_and_only_chumps() {
    let env = Env::new().await;
    let extra = [
        ("service.yaml", service("web")),
        ("hpa.yaml", hpa()),
        (
            "keep.yaml",
            config("keep", "  annotations:\n    chump.dev/prune: disabled\n"),
        ),
        ("legacy.yaml", config("legacy", "")),
    ];
    env.git
        .create_repo("shop", "main", repo_files("shop", &extra));
    let c = env.chump();
    let id = create(&c, &env.source("shop", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    for (gv, plural, name) in [
        ("v1", "services", "web"),
        ("autoscaling/v2", "horizontalpodautoscalers", "web"),
        ("v1", "configmaps", "keep"),
        ("v1", "configmaps", "legacy"),
    ] {
        assert!(exists(&env, gv, plural, "shop", name), "{plural}/{name}");
    }

    // While the source is suspended, someone replaces "legacy" with an
    // object of their own under the same name.
    set_suspended(&c, id, true).await;
    wait_for("no check in flight", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["in_flight"] == false).then_some(())
    })
    .await;
    env.kubectl(&["delete", "configmap", "legacy", "-n", "shop"]);
    let theirs = env.dir.path().join("legacy.yaml");
    std::fs::write(
        &theirs,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: shop\ndata:\n  owner: them\n",
    )
    .unwrap();
    env.kubectl(&["create", "-f", theirs.to_str().unwrap()]);
    // Git drops the Service, the HPA, "keep" and "legacy".
    let commit = env.git.commit_files(
        "shop",
        "main",
        [kustomization(&[])],
        "drop the service, the HPA and two ConfigMaps",
    );
    env.kube.clear_requests();
    check_now(&c, id).await;
    let entry = wait_history(&c, id, "the pruning deploy", |e| {
        e["commit"] == commit.as_str() && e["outcome"] == "deployed"
    })
    .await;
    let mut deleted = deleted_in(&entry);
    deleted.sort();
    assert_eq!(
        deleted,
        vec![
            ("HorizontalPodAutoscaler".into(), "web".into()),
            ("Service".into(), "web".into())
        ],
        "{entry}"
    );
    assert!(!exists(&env, "v1", "services", "shop", "web"));
    assert!(!exists(
        &env,
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "shop",
        "web"
    ));
    assert!(
        exists(&env, "v1", "configmaps", "shop", "keep"),
        "prune: disabled survives"
    );
    let legacy = env
        .kube
        .get_object("v1", "configmaps", Some("shop"), "legacy")
        .expect("an object chump did not apply survives");
    assert_eq!(legacy["data"]["owner"], "them");
    // The rest of the app is untouched, and the inventory holds what the
    // build renders.
    assert!(exists(&env, "apps/v1", "deployments", "shop", "web"));
    let deletes: Vec<String> = env
        .kube
        .writes()
        .into_iter()
        .filter(|w| w.method == "DELETE")
        .map(|w| w.path)
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    let objects = get(&c, &format!("/api/sources/{id}/objects")).await;
    let mut names: Vec<String> = objects["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["ConfigMap/web-config", "Deployment/web", "Namespace/shop"],
        "{objects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prune_off_removed_objects_stay() {
    let env = Env::new().await;
    env.git.create_repo(
        "shop",
        "main",
        repo_files("shop", &[("service.yaml", service("web"))]),
    );
    let c = env.chump();
    let mut source = env.source("shop", "shop", "web");
    source["prune"] = json!(false);
    let id = create(&c, &source).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    assert!(exists(&env, "v1", "services", "shop", "web"));

    env.kube.clear_requests();
    let commit = env
        .git
        .commit_files("shop", "main", [kustomization(&[])], "drop the service");
    wait_for("the commit checked", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["last_commit"] == commit.as_str()).then_some(())
    })
    .await;
    assert!(
        exists(&env, "v1", "services", "shop", "web"),
        "prune is off"
    );
    assert!(
        env.kube.writes().iter().all(|w| w.method != "DELETE"),
        "{:?}",
        env.kube.writes()
    );
    // No longer chump's to manage: not in the inventory.
    let objects = get(&c, &format!("/api/sources/{id}/objects")).await;
    assert!(
        !objects["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "Service"),
        "{objects}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_source_prunes_its_objects_only_when_asked() {
    let env = Env::new().await;
    env.git.create_repo(
        "a",
        "main",
        repo_files("team-a", &[("service.yaml", service("web"))]),
    );
    env.git.create_repo(
        "b",
        "main",
        repo_files("team-b", &[("service.yaml", service("web"))]),
    );
    let c = env.chump();
    let a = create(&c, &env.source("a", "team-a", "web")).await;
    let b = create(&c, &env.source("b", "team-b", "web")).await;
    wait_history(&c, a, "a deployed", |e| e["outcome"] == "deployed").await;
    wait_history(&c, b, "b deployed", |e| e["outcome"] == "deployed").await;

    // A plain delete touches nothing in the cluster.
    env.kube.clear_requests();
    let resp = Client::new()
        .delete(c.url(&format!("/api/sources/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // With prune: accepted, the source shows it is being deleted until a
    // worker has pruned its objects.
    let resp = Client::new()
        .delete(c.url(&format!("/api/sources/{b}?prune=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["deleting"], true, "{body}");
    wait_for("source b gone", WAIT, || async {
        let resp = Client::new()
            .get(c.url(&format!("/api/sources/{b}")))
            .send()
            .await
            .unwrap();
        (resp.status() == 404).then_some(())
    })
    .await;
    let history = get(&c, &format!("/api/history?source_id={b}")).await;
    let entry = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["outcome"] == "deleted")
        .cloned()
        .unwrap_or_else(|| panic!("a deleted entry: {history}"));
    assert_eq!(entry["trigger"], "delete");
    let mut deleted = deleted_in(&entry);
    deleted.sort();
    assert_eq!(
        deleted,
        vec![
            ("ConfigMap".into(), "web-config".into()),
            ("Deployment".into(), "web".into()),
            ("Namespace".into(), "team-b".into()),
            ("Service".into(), "web".into()),
        ]
    );
    assert!(!exists(&env, "apps/v1", "deployments", "team-b", "web"));
    // Source a's objects were left alone.
    assert!(exists(&env, "apps/v1", "deployments", "team-a", "web"));
    assert!(exists(&env, "v1", "services", "team-a", "web"));
    let deletes: Vec<String> = env
        .kube
        .writes()
        .into_iter()
        .filter(|w| w.method == "DELETE")
        .map(|w| w.path)
        .collect();
    assert!(deletes.iter().all(|p| !p.contains("team-a")), "{deletes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_apply_and_record_prunes_nothing_wrongly() {
    let env = Env::new().await;
    env.app_repo("shop", "shop", "web", "nginx:1.25");
    // A short lease: the killed process's claim comes back soon.
    let mut c = env.chump_with(
        env.options()
            .env("CHUMP_ROLLOUT_TIMEOUT", "60")
            .env("CHUMP_LEASE", "6"),
    );
    let id = create(&c, &env.source("shop", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;

    // A commit that changes the image (so the check waits for its
    // rollout), adds a Service and renames the ConfigMap.
    env.kube.set_rollout(RolloutMode::Never);
    let mut files = app_files("shop", "web", "nginx:1.26");
    files.retain(|(p, _)| p != "deploy/config.yaml" && p != "deploy/kustomization.yaml");
    files.push(("deploy/config.yaml".into(), config("web-settings", "")));
    files.push(("deploy/service.yaml".into(), service("new")));
    files.push(kustomization(&["service.yaml"]));
    let commit = env
        .git
        .commit_files("shop", "main", files, "rename, add, bump");
    wait_for("the deploy applied, rolling out", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["in_flight"] == true
            && exists(&env, "v1", "services", "shop", "new")
            && env.deployed_image("shop", "web").as_deref() == Some("nginx:1.26"))
        .then_some(())
    })
    .await;
    // Killed before it could record anything: the recorded inventory is
    // still the first commit's.
    c.kill();
    drop(c);
    env.kube.set_rollout(RolloutMode::Immediate);
    env.kube.clear_requests();
    let c = env.chump();
    // The apply finds everything in place: up to date at the commit.
    let entry = wait_for("the commit recorded after the restart", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["last_commit"] == commit.as_str() && st["last_outcome"] != "failed").then_some(st)
    })
    .await;
    // Nothing it applied was pruned: the Service and the renamed ConfigMap
    // stand, and no DELETE but (at most) the old ConfigMap's was sent.
    assert!(exists(&env, "v1", "services", "shop", "new"), "{entry}");
    assert!(exists(&env, "v1", "configmaps", "shop", "web-settings"));
    assert!(exists(&env, "apps/v1", "deployments", "shop", "web"));
    assert!(!exists(&env, "v1", "configmaps", "shop", "web-config"));
    for w in env.kube.writes().iter().filter(|w| w.method == "DELETE") {
        assert!(w.path.ends_with("/configmaps/web-config"), "{w:?}");
    }
    let objects = get(&c, &format!("/api/sources/{id}/objects")).await;
    let names: Vec<&str> = objects["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"new") && names.contains(&"web-settings"),
        "{objects}"
    );
    assert!(!names.contains(&"web-config"), "{objects}");

    // And the recovered inventory prunes right: dropping the Service
    // deletes it.
    let drop = env
        .git
        .commit_files("shop", "main", [kustomization(&[])], "drop the service");
    let entry = wait_history(&c, id, "the pruning deploy", |e| {
        e["commit"] == drop.as_str() && e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(
        deleted_in(&entry),
        vec![("Service".to_string(), "new".to_string())]
    );
    assert!(!exists(&env, "v1", "services", "shop", "new"));
}
