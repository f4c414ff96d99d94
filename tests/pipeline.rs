//! The deploy pipeline end to end (issue #3): the real `chump serve`, a real
//! `git daemon`, real `kubectl kustomize`, and the Kubernetes API stand-in.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Client;
use serde_json::{json, Value};
use support::chump::wait_for;
use support::env::*;
use support::kube_api::RolloutMode;

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
    // manifest: the build's Deployment has no container named "app".
    env.git.create_repo(
        "no-container",
        "main",
        [
            (
                "deploy/kustomization.yaml",
                "resources:\n- deployment.yaml\n".to_string(),
            ),
            (
                "deploy/deployment.yaml",
                deployment("b2", "b2", "nginx:1").replace("name: app", "name: other"),
            ),
        ],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_sharing_a_repository_share_its_ref_queries() {
    let env = Env::new().await;
    let specs = env.monorepo("apps", 12);
    let c = env.chump_with(
        env.options()
            .env("CHUMP_WORKERS", "4")
            .env("CHUMP_INTERVAL", "6"),
    );
    let mut ids = Vec::new();
    for s in &specs {
        ids.push(create(&c, s).await);
    }
    wait_for(
        "every source deployed",
        Duration::from_secs(120),
        || async {
            let h = get(&c, "/api/history?outcome=deployed&limit=500").await;
            (h["history"].as_array().unwrap().len() >= 12).then_some(())
        },
    )
    .await;
    let ls_refs = || {
        env.git
            .upload_pack_commands()
            .iter()
            .filter(|c| *c == "ls-refs")
            .count()
    };
    let checks = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("\"check finished\""))
            .count()
    };
    let (refs_before, checks_before) = (ls_refs(), checks(&c.logs()));
    // Two more scheduled cycles of all twelve, nothing changed.
    wait_for("two more cycles", Duration::from_secs(60), || async {
        (checks(&c.logs()) >= checks_before + 24).then_some(())
    })
    .await;
    let (refs, done) = (ls_refs() - refs_before, checks(&c.logs()) - checks_before);
    assert!(
        refs * 3 <= done,
        "{refs} ref queries for {done} checks of one repository: not shared"
    );
    let metrics = Client::new()
        .get(c.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("chump_git_syncs_total{kind=\"shared\"}"),
        "{metrics}"
    );

    // Requested together (as a push webhook does): one head read after the
    // requests serves them all, and a push just before is seen by every one.
    let commit = env
        .git
        .commit_files("apps", "main", [("README", "pushed\n")], "push");
    let (refs_before, checks_before) = (ls_refs(), checks(&c.logs()));
    let push = json!({"repository": env.git.url("apps"), "branch": "main"});
    let resp = Client::new()
        .post(c.url("/api/webhooks/generic"))
        .json(&push)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["triggered"].as_array().unwrap().len(),
        12,
        "{answer}"
    );
    wait_for("twelve webhook checks", Duration::from_secs(60), || async {
        let mut all = true;
        for id in &ids {
            all &= get(&c, &format!("/api/sources/{id}/status")).await["last_commit"] == commit;
        }
        all.then_some(())
    })
    .await;
    let refs = ls_refs() - refs_before;
    let done = checks(&c.logs()) - checks_before;
    assert!(
        refs * 3 <= done.max(12),
        "{refs} ref queries for {done} webhook checks"
    );
}

/// One app directory deployed to two namespaces: a commit is built once, and
/// each source applies the render in its own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_building_the_same_directory_share_one_build_per_commit() {
    let env = Env::new().await;
    let app = |image: &str| {
        vec![
            (
                "apps/web/kustomization.yaml".to_string(),
                "resources:\n- deployment.yaml\n".to_string(),
            ),
            (
                "apps/web/deployment.yaml".to_string(),
                // No namespace: each source places it in its own.
                deployment("unused", "web", image).replace("  namespace: unused\n", ""),
            ),
        ]
    };
    env.git.create_repo("shared", "main", app("nginx:1"));
    let namespaces = ["team-a", "team-b", "team-c"];
    for ns in namespaces {
        env.kube.put_namespace(ns);
    }
    let c = env.chump_with(env.options().env("CHUMP_WORKERS", "3"));
    let mut ids = Vec::new();
    for ns in namespaces {
        let mut s = env.source("shared", ns, "web");
        s["deploy_path"] = json!("apps/web");
        s["image_version_file"] = json!("apps/web/deployment.yaml");
        ids.push(create(&c, &s).await);
    }
    // The kustomization is plain: rendered in process, not by kustomize.
    let built = || async {
        assert_eq!(metric(&c, "chump_builds_total{kind=\"built\"}").await, 0.0);
        metric(&c, "chump_builds_total{kind=\"in_process\"}").await
    };
    let shared = || metric(&c, "chump_builds_total{kind=\"shared\"}");
    for ns in namespaces {
        wait_for(&format!("web deployed in {ns}"), WAIT, || async {
            (env.deployed_image(ns, "web").as_deref() == Some("nginx:1")).then_some(())
        })
        .await;
    }
    assert_eq!(built().await, 1.0, "one build for the first commit");
    assert!(shared().await >= 2.0, "the other two sources shared it");

    // A push: the three checks, run at once by the webhook, build once.
    let commit = env
        .git
        .commit_files("shared", "main", app("nginx:2"), "nginx 2");
    let push = json!({"repository": env.git.url("shared"), "branch": "main"});
    let resp = Client::new()
        .post(c.url("/api/webhooks/generic"))
        .json(&push)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    for (ns, id) in namespaces.iter().zip(&ids) {
        let entry = wait_history(&c, *id, "the push deployed", |h| {
            h["outcome"] == "deployed" && h["commit"] == commit
        })
        .await;
        assert_eq!(entry["desired_image"], "nginx:2", "{entry}");
        let objects = entry["objects"].as_array().unwrap();
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == "Deployment" && o["namespace"] == *ns),
            "{ns}: {entry}"
        );
        assert_eq!(env.deployed_image(ns, "web").as_deref(), Some("nginx:2"));
    }
    assert_eq!(built().await, 2.0, "one build per commit");
    assert!(shared().await >= 4.0);
}

/// `CHUMP_KUSTOMIZE_IN_PROCESS=false`: kustomize builds even a plain
/// kustomization, and the deploy is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_builds_plain_kustomizations_when_in_process_rendering_is_off() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_KUSTOMIZE_IN_PROCESS", "false"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let entry = wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(entry["desired_image"], "nginx:1", "{entry}");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );
    assert_eq!(metric(&c, "chump_builds_total{kind=\"built\"}").await, 1.0);
    assert_eq!(
        metric(&c, "chump_builds_total{kind=\"in_process\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollout_is_degraded_until_the_deployment_recovers() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.set_rollout_for("shop", "web", RolloutMode::Fail);
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "1"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let first = wait_history(&c, id, "the failed rollout", |e| e["outcome"] == "failed").await;
    assert_eq!(first["stage"], "rollout", "{first}");
    // The spec is applied: the next check finds the image in place, but the
    // rollout still failed — reported as degraded, not "up_to_date", and
    // recorded once.
    let again = wait_history(&c, id, "the failure seen again", |e| {
        e["outcome"] == "degraded" && e["id"].as_i64() > first["id"].as_i64()
    })
    .await;
    assert!(
        again["objects"].as_array().unwrap().is_empty(),
        "nothing re-applied: {again}"
    );
    assert!(again["message"]
        .as_str()
        .unwrap()
        .contains("ProgressDeadlineExceeded"));
    let st = get(&c, &format!("/api/sources/{id}/status")).await;
    let st = wait_checked_after(&c, id, st["last_checked_at"].as_str().unwrap()).await;
    assert_eq!(st["last_outcome"], "degraded", "{st}");
    assert_eq!(st["consecutive_failures"], 0, "{st}");
    // The cluster recovers: the source is up to date again.
    env.kube
        .set_rollout_for("shop", "web", RolloutMode::Immediate);
    wait_for(
        "up_to_date after recovery",
        Duration::from_secs(60),
        || async {
            let st = get(&c, &format!("/api/sources/{id}/status")).await;
            (st["last_outcome"] == "up_to_date" && st["consecutive_failures"] == 0).then_some(())
        },
    )
    .await;
    let degraded = history(&c, id)
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "degraded")
        .count();
    assert_eq!(degraded, 1, "recorded once, not at every interval");
}
