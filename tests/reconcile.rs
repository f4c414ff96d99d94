//! Git is the truth: what the repository renders is what runs. A new commit
//! is deployed when any rendered object changed (not only the image), and
//! not when nothing it renders did; the image recorded is the one the build
//! gives the container; every applied object is labelled as chump's.
//! Through `chump serve`, a real `git daemon`, the real `kubectl kustomize`
//! and the Kubernetes API stand-in.

mod support;

use serde_json::Value;
use support::chump::wait_for;
use support::env::*;

/// The env var `name` of container `app` in Deployment `ns/web` as the
/// stand-in holds it.
fn env_var(env: &Env, ns: &str, name: &str) -> Option<String> {
    let d = env
        .kube
        .get_object("apps/v1", "deployments", Some(ns), "web")?;
    d["spec"]["template"]["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "app")?["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(str::to_string)
}

fn deployment_with_env(ns: &str, image: &str, value: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 1\n  \
         selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    \
         spec:\n      containers:\n      - name: app\n        image: {image}\n        env:\n        - name: GREETING\n          value: {value}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_anything_rendered_is_deployed_and_a_readme_change_writes_nothing() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1.25");
    env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment_with_env("shop", "nginx:1.25", "hello"),
        )],
        "greeting",
    );
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(env_var(&env, "shop", "GREETING").as_deref(), Some("hello"));

    // Only an env var changes: the image is the same, the commit deploys.
    let env_commit = env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment_with_env("shop", "nginx:1.25", "bonjour"),
        )],
        "greeting in French",
    );
    let entry = wait_history(&c, id, "the env var deploy", |e| {
        e["outcome"] == "deployed" && e["commit"] == env_commit.as_str()
    })
    .await;
    assert_eq!(entry["desired_image"], "nginx:1.25");
    assert_eq!(
        env_var(&env, "shop", "GREETING").as_deref(),
        Some("bonjour")
    );
    let configured: Vec<&Value> = entry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "configured")
        .collect();
    assert_eq!(configured.len(), 1, "only the Deployment changed: {entry}");
    assert_eq!(configured[0]["kind"], "Deployment");

    // Only a README changes: up to date at the new commit, nothing written.
    wait_for("an up_to_date check", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["last_outcome"] == "up_to_date" && st["last_commit"] == env_commit.as_str())
            .then_some(())
    })
    .await;
    env.kube.clear_requests();
    let readme = env
        .git
        .commit_files("web", "main", [("README.md", "# shop\n")], "docs");
    let st = wait_for("the README commit checked", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["last_commit"] == readme.as_str()).then_some(st)
    })
    .await;
    assert_eq!(st["last_outcome"], "up_to_date", "{st}");
    assert!(
        env.kube.writes().is_empty(),
        "a commit that renders the same objects wrote to the cluster: {:?}",
        env.kube.writes()
    );
    let deploys = history(&c, id)
        .await
        .iter()
        .filter(|e| e["outcome"] == "deployed")
        .count();
    assert_eq!(deploys, 2, "the README commit was recorded as a deploy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_set_by_an_overlay_is_deployed_and_recorded() {
    let env = Env::new().await;
    let mut files = app_files("prod", "web", "nginx:1.25");
    // The source points at an overlay; image_version_file names the base
    // file, which never changes.
    for (path, _) in files.iter_mut() {
        *path = path.replacen("deploy/", "deploy/base/", 1);
    }
    files.push((
        "deploy/prod/kustomization.yaml".into(),
        "resources:\n- ../base\nimages:\n- name: nginx\n  newTag: \"1.26\"\n".into(),
    ));
    env.git.create_repo("web", "main", files);
    let c = env.chump();
    let mut source = env.source("web", "prod", "web");
    source["deploy_path"] = "deploy/prod".into();
    source["image_version_file"] = "deploy/base/deployment.yaml".into();
    let id = create(&c, &source).await;
    let entry = wait_history(&c, id, "the overlay deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(entry["desired_image"], "nginx:1.26");
    assert_eq!(
        env.deployed_image("prod", "web").as_deref(),
        Some("nginx:1.26")
    );

    // A new tag in the overlay only.
    let bump = env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/prod/kustomization.yaml",
            "resources:\n- ../base\nimages:\n- name: nginx\n  newTag: \"1.27\"\n",
        )],
        "bump the overlay",
    );
    let entry = wait_history(&c, id, "the overlay bump", |e| {
        e["outcome"] == "deployed" && e["commit"] == bump.as_str()
    })
    .await;
    assert_eq!(entry["desired_image"], "nginx:1.27");
    assert_eq!(entry["running_image"], "nginx:1.26");
    assert_eq!(
        env.deployed_image("prod", "web").as_deref(),
        Some("nginx:1.27")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_objects_are_labelled_as_chumps() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1.25");
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    for (gv, plural, ns, name) in [
        ("apps/v1", "deployments", Some("shop"), "web"),
        ("v1", "configmaps", Some("shop"), "web-config"),
        ("v1", "namespaces", None, "shop"),
    ] {
        let o = env.kube.get_object(gv, plural, ns, name).unwrap();
        let labels = &o["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/managed-by"], "chump",
            "{plural}/{name}: {o}"
        );
        assert_eq!(
            labels["chump.dev/source"],
            id.to_string(),
            "{plural}/{name}: {o}"
        );
    }
}

/// The app with a Service, its Deployment declaring `GREETING=hello` and
/// one replica.
fn app_with_service(env: &Env, repo: &str, ns: &str) {
    let mut files = app_files(ns, "web", "nginx:1.25");
    files.retain(|(p, _)| p != "deploy/kustomization.yaml" && p != "deploy/deployment.yaml");
    files.push((
        "deploy/kustomization.yaml".into(),
        "resources:\n- namespace.yaml\n- deployment.yaml\n- config.yaml\n- service.yaml\n".into(),
    ));
    files.push((
        "deploy/deployment.yaml".into(),
        deployment_with_env(ns, "nginx:1.25", "hello"),
    ));
    files.push((
        "deploy/service.yaml".into(),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n"
            .into(),
    ));
    env.git.create_repo(repo, "main", files);
}

fn replicas(env: &Env, ns: &str) -> Option<i64> {
    env.kube
        .get_object("apps/v1", "deployments", Some(ns), "web")?["spec"]["replicas"]
        .as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_edits_and_deletes_are_undone_within_an_interval() {
    let env = Env::new().await;
    app_with_service(&env, "web", "shop");
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;

    // In step with git: checks read, and write nothing.
    let st = wait_for("an up_to_date check", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["last_outcome"] == "up_to_date").then_some(st)
    })
    .await;
    env.kube.clear_requests();
    let st = wait_checked_after(&c, id, st["last_checked_at"].as_str().unwrap()).await;
    wait_checked_after(&c, id, st["last_checked_at"].as_str().unwrap()).await;
    assert!(
        env.kube.writes().is_empty(),
        "a steady check wrote: {:?}",
        env.kube.writes()
    );
    assert!(
        env.kube.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        env.kube.requests()
    );

    // An env var changed with kubectl: put back.
    env.kubectl(&[
        "set",
        "env",
        "deployment/web",
        "-n",
        "shop",
        "-c",
        "app",
        "GREETING=tampered",
    ]);
    assert_eq!(
        env_var(&env, "shop", "GREETING").as_deref(),
        Some("tampered")
    );
    wait_for("the env var put back", WAIT, || async {
        (env_var(&env, "shop", "GREETING").as_deref() == Some("hello")).then_some(())
    })
    .await;
    let entry = wait_history(&c, id, "the drift recorded", |e| {
        e["outcome"] == "deployed"
            && e["message"].as_str().is_some_and(|m| {
                m.contains("drift undone") && m.contains("Deployment shop/web changed")
            })
    })
    .await;
    assert_eq!(entry["trigger"], "schedule", "{entry}");

    // The replica count changed with kubectl: put back.
    env.kubectl(&["scale", "deployment/web", "-n", "shop", "--replicas=3"]);
    assert_eq!(replicas(&env, "shop"), Some(3));
    wait_for("the replicas put back", WAIT, || async {
        (replicas(&env, "shop") == Some(1)).then_some(())
    })
    .await;

    // A deleted Service: created again.
    env.kubectl(&["delete", "service", "web", "-n", "shop"]);
    assert!(env
        .kube
        .get_object("v1", "services", Some("shop"), "web")
        .is_none());
    wait_for("the Service back", WAIT, || async {
        env.kube
            .get_object("v1", "services", Some("shop"), "web")
            .map(|_| ())
    })
    .await;
    wait_history(&c, id, "the deleted Service recorded", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("Service shop/web missing"))
    })
    .await;
}
