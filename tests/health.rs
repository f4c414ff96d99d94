//! Health you can trust, end to end through `chump serve`: a rollout whose
//! new pods cannot run fails within seconds with the reason; a workload
//! that stays broken is `degraded` at every later check (recorded once)
//! and `up_to_date` again on its own once it is healthy; a push during a
//! rollout wait supersedes it; StatefulSets, DaemonSets and Jobs of a build
//! are waited for and assessed; Warning events add what the status lacks.
//!
//! Pod states are steered through the stand-in's kubelet
//! ([`PodBehaviour`], keyed by image), as a real node would report them.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::chump::{wait_for, Chump};
use support::env::*;
use support::kube_api::PodBehaviour;

/// Far longer than any fast failure may take: a check that only fails at
/// the rollout timeout fails the test's deadline instead.
const LONG_ROLLOUT: &str = "300";
/// The deadline for a fast failure to show in history (the issue asks for
/// 10 s after the pod state appears; the rest is git, build and apply on a
/// busy 2-core machine).
const FAST: Duration = Duration::from_secs(30);

async fn wait_history_within(
    c: &Chump,
    id: i64,
    what: &str,
    within: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(what, within, || async {
        history(c, id).await.into_iter().find(|e| pred(e))
    })
    .await
}

async fn wait_for_opt<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn status(c: &Chump, id: i64) -> Value {
    get(c, &format!("/api/sources/{id}/status")).await
}

/// A repository for `ns/name` whose container `app` runs `image`.
fn app(env: &Env, repo: &str, ns: &str, name: &str, image: &str) -> Value {
    env.app_repo(repo, ns, name, image);
    let mut source = env.source(repo, ns, name);
    source["container_name"] = json!("app");
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_pod_state_fails_the_rollout_fast_with_its_reason() {
    let env = Env::new().await;
    // (state, image, what the failure must say)
    let cases: Vec<(PodBehaviour, &str, Vec<&str>)> = vec![
        (
            PodBehaviour::ImagePullBackOff,
            "nginx:does-not-exist",
            vec!["container app: ", "nginx:does-not-exist"],
        ),
        (
            PodBehaviour::InvalidImageName,
            "nginx:Invalid_Tag",
            vec![
                "container app: InvalidImageName: ",
                "invalid reference format",
            ],
        ),
        (
            PodBehaviour::CreateContainerConfigError("configmap \"app-config\" not found".into()),
            "nginx:config",
            vec![
                "container app: CreateContainerConfigError: ",
                "configmap \"app-config\" not found",
            ],
        ),
        (
            PodBehaviour::CreateContainerError("container name already in use".into()),
            "nginx:create",
            vec!["container app: CreateContainerError: ", "already in use"],
        ),
        (
            PodBehaviour::CrashLoopBackOff,
            "nginx:crash",
            vec!["container app: ", "exit code 1"],
        ),
        (
            PodBehaviour::Unschedulable,
            "nginx:huge",
            vec!["Unschedulable: ", "nodes are available"],
        ),
    ];
    let c = env.chump_with(
        env.options()
            .env("CHUMP_ROLLOUT_TIMEOUT", LONG_ROLLOUT)
            .env("CHUMP_INTERVAL", "3600")
            .env("CHUMP_WORKERS", "8"),
    );
    let mut ids = Vec::new();
    for (i, (behaviour, image, _)) in cases.iter().enumerate() {
        env.kube.set_pod_behaviour(image, behaviour.clone());
        let source = app(&env, &format!("app{i}"), &format!("ns{i}"), "web", image);
        ids.push(create(&c, &source).await);
    }
    let started = Instant::now();
    for ((behaviour, image, says), id) in cases.iter().zip(&ids) {
        let e = wait_history_within(&c, *id, &format!("{behaviour:?} fails fast"), FAST, |e| {
            e["outcome"] == "failed"
        })
        .await;
        assert_eq!(e["stage"], "rollout", "{behaviour:?}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "deployment {}/web: ",
                e["namespace"].as_str().unwrap()
            )),
            "names the workload: {message}"
        );
        assert!(message.contains("pod web-"), "names the pod: {message}");
        for s in says {
            assert!(
                message.contains(s),
                "{behaviour:?} ({image}): {s:?} not in {message}"
            );
        }
        let st = status(&c, *id).await;
        assert_eq!(st["last_outcome"], "failed", "{st}");
        assert_eq!(st["last_message"], e["message"], "{st}");
        assert_eq!(st["health"], "degraded", "{st}");
    }
    println!(
        "six broken rollouts failed {:.1}s after their sources were created (rollout timeout {LONG_ROLLOUT}s)",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rollout_is_degraded_at_every_check_until_fixed_then_up_to_date() {
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour("nginx:2", PodBehaviour::ImagePullBackOff);
    let source = app(&env, "web", "shop", "web", "nginx:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_ROLLOUT_TIMEOUT", LONG_ROLLOUT)
            .env("CHUMP_INTERVAL", "1"),
    );
    let id = create(&c, &source).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;

    // A push of a tag the registry does not have.
    env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", "nginx:2"),
        )],
        "bump to a tag that does not exist",
    );
    let failed = wait_history_within(&c, id, "the broken rollout fails fast", FAST, |e| {
        e["outcome"] == "failed"
    })
    .await;
    assert!(
        failed["message"].as_str().unwrap().contains("nginx:2"),
        "{failed}"
    );

    // Every later check is degraded, with the reason, never up to date.
    let mut last = String::new();
    let mut seen = 0;
    while seen < 4 {
        let st = wait_checked_after(&c, id, &last).await;
        last = st["last_checked_at"].as_str().unwrap().to_string();
        if st["last_outcome"] == "failed" {
            continue; // the failed deploy itself
        }
        assert_eq!(
            st["last_outcome"], "degraded",
            "never up_to_date while broken: {st}"
        );
        assert_eq!(st["health"], "degraded", "{st}");
        let reason = st["health_reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("deployment shop/web: ")
                && reason.contains("container app: ")
                && reason.contains("nginx:2"),
            "{st}"
        );
        assert_eq!(
            st["consecutive_failures"], 0,
            "degraded is not a failure: {st}"
        );
        seen += 1;
    }
    // Recorded once when it started.
    let degraded: Vec<Value> = history(&c, id)
        .await
        .into_iter()
        .filter(|e| e["outcome"] == "degraded")
        .collect();
    assert_eq!(degraded.len(), 1, "{degraded:?}");
    assert!(degraded[0]["objects"].as_array().unwrap().is_empty());
    let filtered = get(&c, &format!("/api/history?outcome=degraded&source_id={id}")).await;
    assert_eq!(
        filtered["history"].as_array().unwrap().len(),
        1,
        "{filtered}"
    );

    // The tag appears in the registry: the pods start, and the source is up
    // to date again on its own, recorded once.
    env.kube.set_pod_behaviour("nginx:2", PodBehaviour::Ready);
    let recovered = wait_history(&c, id, "the recovery", |e| e["outcome"] == "up_to_date").await;
    assert!(
        recovered["message"]
            .as_str()
            .unwrap_or("")
            .contains("recovered"),
        "{recovered}"
    );
    let st = status(&c, id).await;
    assert_eq!(st["health"], "healthy", "{st}");
    let last = st["last_checked_at"].as_str().unwrap().to_string();
    let st = wait_checked_after(&c, id, &last).await;
    assert_eq!(st["last_outcome"], "up_to_date", "{st}");
    let entries = history(&c, id).await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["outcome"] == "up_to_date")
            .count(),
        1,
        "{entries:?}"
    );
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["outcome"] == "degraded")
            .count(),
        1,
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_rollout_wait_supersedes_it_and_deploys_the_new_commit() {
    let env = Env::new().await;
    // Pods of this image never start: the rollout would wait its whole
    // timeout (five minutes).
    env.kube
        .set_pod_behaviour("nginx:slow", PodBehaviour::Pending);
    let source = app(&env, "web", "shop", "web", "nginx:slow");
    let first = env.git.head("web", "main");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_ROLLOUT_TIMEOUT", LONG_ROLLOUT)
            .env("CHUMP_INTERVAL", "3600"),
    );
    let id = create(&c, &source).await;
    // The deploy is applied and waiting for its rollout.
    wait_for("the rollout wait", WAIT, || async {
        (env.deployed_image("shop", "web").as_deref() == Some("nginx:slow")).then_some(())
    })
    .await;

    let second = env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", "nginx:3"),
        )],
        "a fix",
    );
    let pushed = Instant::now();
    let body =
        serde_json::to_vec(&json!({"repository": env.git.url("web"), "ref": "main"})).unwrap();
    let resp = Client::new()
        .post(c.url("/api/webhooks/generic"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    let superseded = wait_history_within(&c, id, "the old deploy superseded", FAST, |e| {
        e["outcome"] == "superseded"
    })
    .await;
    assert_eq!(superseded["commit"], first, "{superseded}");
    let message = superseded["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("superseded by {}", &second[..7])),
        "{message}"
    );
    assert!(
        message.contains("deployment shop/web: "),
        "how far it got: {message}"
    );
    let deployed = wait_history_within(&c, id, "the new commit deployed", FAST, |e| {
        e["outcome"] == "deployed" && e["commit"] == second
    })
    .await;
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:3")
    );
    println!(
        "superseded and redeployed {:.1}s after the push (rollout timeout {LONG_ROLLOUT}s): {}",
        pushed.elapsed().as_secs_f64(),
        deployed["id"]
    );

    // Without a webhook the wait notices the branch moving by itself.
    env.kube
        .set_pod_behaviour("nginx:slow2", PodBehaviour::Pending);
    env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", "nginx:slow2"),
        )],
        "slow again",
    );
    let manual = Client::new()
        .post(c.url(&format!("/api/sources/{id}/check")))
        .send()
        .await
        .unwrap();
    assert!(manual.status().is_success());
    wait_for("the second rollout wait", WAIT, || async {
        (env.deployed_image("shop", "web").as_deref() == Some("nginx:slow2")).then_some(())
    })
    .await;
    let fourth = env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", "nginx:4"),
        )],
        "another fix, no webhook",
    );
    let found = wait_for_opt(FAST, || async {
        history(&c, id)
            .await
            .into_iter()
            .find(|e| e["outcome"] == "deployed" && e["commit"] == fourth)
    })
    .await;
    if found.is_none() {
        eprintln!("{}", c.logs());
        eprintln!("{:#?}", history(&c, id).await);
        panic!("the poll did not supersede");
    }
    let entries = history(&c, id).await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["outcome"] == "superseded")
            .count(),
        2,
        "{entries:?}"
    );
}

fn stateful_set(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  replicas: 2\n  \
         serviceName: {name}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    \
         spec:\n      containers:\n      - name: {name}\n        image: {image}\n"
    )
}

fn daemon_set(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  \
         selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    \
         spec:\n      containers:\n      - name: {name}\n        image: {image}\n"
    )
}

fn job(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  backoffLimit: 1\n  template:\n    \
         spec:\n      restartPolicy: Never\n      containers:\n      - name: {name}\n        image: {image}\n"
    )
}

/// A build of a Deployment, a StatefulSet, a DaemonSet and a Job.
fn workloads_repo(env: &Env, db: &str, agent: &str, migrate: &str) -> Value {
    env.git.create_repo(
        "stack",
        "main",
        [
            (
                "deploy/kustomization.yaml".to_string(),
                "resources:\n- namespace.yaml\n- web.yaml\n- db.yaml\n- agent.yaml\n- migrate.yaml\n".to_string(),
            ),
            ("deploy/namespace.yaml".into(), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: stack\n".into()),
            ("deploy/web.yaml".into(), deployment("stack", "web", "nginx:1")),
            ("deploy/db.yaml".into(), stateful_set("stack", "db", db)),
            ("deploy/agent.yaml".into(), daemon_set("stack", "agent", agent)),
            ("deploy/migrate.yaml".into(), job("stack", "migrate", migrate)),
        ],
    );
    let mut source = env.source("stack", "stack", "web");
    source["container_name"] = json!("app");
    source["image_version_file"] = json!("deploy/web.yaml");
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulsets_daemonsets_and_jobs_of_a_build_are_waited_for_and_assessed() {
    let env = Env::new().await;
    // The StatefulSet's pods take a while: the deploy waits for them.
    env.kube
        .set_pod_behaviour("postgres:16", PodBehaviour::Pending);
    let source = workloads_repo(&env, "postgres:16", "agent:1", "migrate:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_ROLLOUT_TIMEOUT", LONG_ROLLOUT)
            .env("CHUMP_INTERVAL", "1"),
    );
    let id = create(&c, &source).await;
    wait_for("the StatefulSet applied", WAIT, || async {
        env.kube
            .get_object("apps/v1", "statefulsets", Some("stack"), "db")
            .map(|_| ())
    })
    .await;
    // Every other workload is rolled out, the StatefulSet is not: no
    // result yet (the deploy is waiting for it).
    wait_for("the DaemonSet and the Job done", WAIT, || async {
        let ds = env
            .kube
            .get_object("apps/v1", "daemonsets", Some("stack"), "agent")?;
        let job = env
            .kube
            .get_object("batch/v1", "jobs", Some("stack"), "migrate")?;
        let ds_done = ds["status"]["numberAvailable"].as_i64() > Some(0)
            && ds["status"]["numberAvailable"] == ds["status"]["desiredNumberScheduled"];
        let job_done = job["status"]["succeeded"].as_i64() == Some(1);
        (ds_done && job_done).then_some(())
    })
    .await;
    let st = status(&c, id).await;
    assert!(
        st["last_outcome"].is_null(),
        "still waiting for the StatefulSet: {st}"
    );
    assert!(history(&c, id).await.is_empty());
    env.kube
        .set_pod_behaviour("postgres:16", PodBehaviour::Ready);
    let deployed = wait_history(&c, id, "the stack deployed", |e| e["outcome"] == "deployed").await;
    let kinds: Vec<&str> = deployed["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    for kind in ["Deployment", "StatefulSet", "DaemonSet", "Job"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let sts = env
        .kube
        .get_object("apps/v1", "statefulsets", Some("stack"), "db")
        .unwrap();
    assert_eq!(
        sts["status"]["readyReplicas"], 2,
        "deployed only once ready: {sts}"
    );

    // A steady check assesses the DaemonSet too: its pods start crashing.
    env.kube
        .set_pod_behaviour("agent:1", PodBehaviour::CrashLoopBackOff);
    let st = wait_for("the DaemonSet degraded", WAIT, || async {
        let st = status(&c, id).await;
        (st["last_outcome"] == "degraded").then_some(st)
    })
    .await;
    let reason = st["health_reason"].as_str().unwrap();
    assert!(reason.starts_with("daemonset stack/agent: "), "{st}");
    assert!(reason.contains("container agent: "), "{st}");
    env.kube.set_pod_behaviour("agent:1", PodBehaviour::Ready);
    wait_for("healthy again", WAIT, || async {
        let st = status(&c, id).await;
        (st["last_outcome"] == "up_to_date" && st["health"] == "healthy").then_some(())
    })
    .await;

    // A new StatefulSet image that cannot be pulled: the deploy fails,
    // naming the StatefulSet (the first workload that fails).
    env.kube
        .set_pod_behaviour("postgres:bad", PodBehaviour::ImagePullBackOff);
    env.git.commit_files(
        "stack",
        "main",
        [(
            "deploy/db.yaml",
            stateful_set("stack", "db", "postgres:bad"),
        )],
        "a bad database image",
    );
    let failed = wait_history_within(&c, id, "the StatefulSet fails fast", FAST, |e| {
        e["outcome"] == "failed"
    })
    .await;
    assert_eq!(failed["stage"], "rollout", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(message.starts_with("statefulset stack/db: "), "{message}");
    assert!(message.contains("pod db-1: container db: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_fails_the_deploy_with_its_reason() {
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour("migrate:broken", PodBehaviour::CrashLoopBackOff);
    let source = workloads_repo(&env, "postgres:16", "agent:1", "migrate:broken");
    let c = env.chump_with(env.options().env("CHUMP_ROLLOUT_TIMEOUT", LONG_ROLLOUT));
    let id = create(&c, &source).await;
    let failed = wait_history_within(&c, id, "the Job fails the deploy", FAST, |e| {
        e["outcome"] == "failed"
    })
    .await;
    assert_eq!(failed["stage"], "rollout", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(message.starts_with("job stack/migrate: "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_events_and_quotas_say_what_the_status_does_not() {
    let env = Env::new().await;
    // A volume that cannot be mounted: the pod waits in ContainerCreating,
    // which may still fix itself: the rollout times out, and the event says why.
    env.kube
        .set_pod_behaviour("nginx:mount", PodBehaviour::FailedMount);
    let source = app(&env, "web", "shop", "web", "nginx:mount");
    env.kube.put_namespace("quota");
    env.kube.refuse_pods(
        "quota",
        Some("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"),
    );
    let quota_source = app(&env, "q", "quota", "api", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_ROLLOUT_TIMEOUT", "4"));
    let id = create(&c, &source).await;
    let quota_id = create(&c, &quota_source).await;

    let failed = wait_history(&c, id, "the mount failure", |e| e["outcome"] == "failed").await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("deployment shop/web: not rolled out after 4s: "),
        "{message}"
    );
    assert!(message.contains("ContainerCreating"), "{message}");
    assert!(
        message.contains("FailedMount: MountVolume.SetUp failed"),
        "{message}"
    );

    // Pods the quota refuses: the Deployment reports ReplicaFailure, a
    // failure at once (no timeout), with the quota's words.
    let failed = wait_history_within(&c, quota_id, "the quota failure", FAST, |e| {
        e["outcome"] == "failed"
    })
    .await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.starts_with("deployment quota/api: ReplicaFailure: FailedCreate: "),
        "{message}"
    );
    assert!(message.contains("exceeded quota: compute"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_workload_costs_no_pod_or_event_request() {
    let env = Env::new().await;
    let source = app(&env, "web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "1"));
    let id = create(&c, &source).await;
    let deployed = wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    let mut last = deployed["finished_at"].as_str().unwrap().to_string();
    env.kube.clear_requests();
    for _ in 0..3 {
        let st = wait_checked_after(&c, id, &last).await;
        assert_eq!(st["last_outcome"], "up_to_date", "{st}");
        last = st["last_checked_at"].as_str().unwrap().to_string();
    }
    let reads: Vec<String> = env
        .kube
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("/pods") || p.contains("/events") || p.contains("/replicasets"))
        .collect();
    assert!(
        reads.is_empty(),
        "a healthy Deployment is judged from its own status: {reads:?}"
    );

    // Its pods start crashing: the Deployment is no longer available, and
    // only then are its ReplicaSets, pods and the pod's events read.
    env.kube
        .set_pod_behaviour("nginx:1", PodBehaviour::CrashLoopBackOff);
    let st = wait_for("degraded", WAIT, || async {
        let st = status(&c, id).await;
        (st["last_outcome"] == "degraded").then_some(st)
    })
    .await;
    assert!(
        st["health_reason"]
            .as_str()
            .unwrap()
            .contains("container app: "),
        "{st}"
    );
    let paths: Vec<String> = env.kube.requests().into_iter().map(|r| r.path).collect();
    for what in ["/replicasets", "/pods", "/events"] {
        assert!(
            paths.iter().any(|p| p.ends_with(what)),
            "{what} read: {paths:?}"
        );
    }
}
