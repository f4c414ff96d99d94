//! Rollback that keeps auto-deploy, end to end through `chump serve`: a
//! rollback re-applies a recorded deploy's manifests from the store (git
//! not needed), prunes what the bad deploy added, and pins the source away
//! from the commit it left until the branch moves; `auto_rollback` does it
//! by itself after a failed rollout, never looping; every deploy keeps its
//! manifests (masked when read, diffable, dropped by retention); `?at=`
//! tells what was live when.

mod support;

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::chump::{wait_for, Chump};
use support::env::*;
use support::kube_api::PodBehaviour;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const BAD_IMAGE: &str = "nginx:does-not-exist";

async fn status(c: &Chump, id: i64) -> Value {
    get(c, &format!("/api/sources/{id}/status")).await
}

async fn post(c: &Chump, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Client::new().post(c.url(path));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get_raw(c: &Chump, path: &str) -> (StatusCode, String) {
    let resp = Client::new().get(c.url(path)).send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

/// The app's files with an extra ConfigMap `extra` (what a bad deploy adds).
fn with_extra(files: &mut Vec<(String, String)>) {
    files[0].1 =
        "resources:\n- namespace.yaml\n- deployment.yaml\n- config.yaml\n- extra.yaml\n".into();
    files.push((
        "deploy/extra.yaml".into(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  added: by-the-bad-deploy\n".into(),
    ));
}

fn extra_exists(env: &Env, ns: &str) -> bool {
    env.kube
        .get_object("v1", "configmaps", Some(ns), "extra")
        .is_some()
}

/// Waits for the source's newest check to have finished after `after`
/// (RFC 3339), `n` times in a row, and returns the last status.
async fn checks_after(c: &Chump, id: i64, n: usize) -> Value {
    let mut st = status(c, id).await;
    for _ in 0..n {
        let last = st["last_checked_at"].as_str().unwrap_or("").to_string();
        st = wait_checked_after(c, id, &last).await;
    }
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_restores_the_last_good_deploy_prunes_and_pins_until_the_branch_moves() {
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour(BAD_IMAGE, PodBehaviour::ImagePullBackOff);
    env.app_repo("app", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_ROLLOUT_TIMEOUT", "60"));
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let good = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(good["manifests"], "kept", "{good}");

    // A bad deploy: an image that cannot be pulled, and a new object.
    let mut files = app_files("shop", "web", BAD_IMAGE);
    with_extra(&mut files);
    let bad_commit = env.git.commit_files("app", "main", files, "bad");
    let bad = wait_history(&c, id, "the bad deploy failing", |e| {
        e["outcome"] == "failed" && e["commit"] == bad_commit.as_str()
    })
    .await;
    assert_eq!(bad["stage"], "rollout", "{bad}");
    assert!(
        extra_exists(&env, "shop"),
        "the bad deploy applied its object"
    );
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some(BAD_IMAGE)
    );

    // Roll back, no body: to the last successful deploy.
    let (code, answer) = post(&c, &format!("/api/sources/{id}/rollback"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["to"], good["id"], "{answer}");
    assert_eq!(answer["commit"], good["commit"], "{answer}");
    let rolled = wait_history(&c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
    assert_eq!(rolled["rollback_to"], good["id"], "{rolled}");
    assert_eq!(rolled["trigger"], "manual", "{rolled}");
    assert_eq!(rolled["commit"], good["commit"], "{rolled}");
    assert_eq!(rolled["manifests"], "kept", "{rolled}");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );
    assert!(
        !extra_exists(&env, "shop"),
        "the rollback prunes what the bad deploy added"
    );
    let pruned = rolled["objects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "extra" && o["action"] == "deleted");
    assert!(pruned, "the prune is in the history: {rolled}");

    // Pinned away from the bad commit: three more checks write nothing.
    let st = status(&c, id).await;
    assert_eq!(st["pinned"]["commit"], bad_commit.as_str(), "{st}");
    assert_eq!(st["pinned"]["entry"], rolled["id"], "{st}");
    assert!(
        st["pinned"]["reason"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{st}"
    );
    let entries = history(&c, id).await.len();
    env.kube.clear_requests();
    let st = checks_after(&c, id, 3).await;
    assert_eq!(
        history(&c, id).await.len(),
        entries,
        "pinned checks add no history"
    );
    let writes = env.kube.writes();
    assert!(
        writes.is_empty(),
        "pinned checks write nothing to the cluster: {writes:?}"
    );
    assert_eq!(st["last_outcome"], "up_to_date", "{st}");
    assert!(
        st["last_message"]
            .as_str()
            .unwrap()
            .contains("pinned away from"),
        "{st}"
    );
    assert_eq!(st["pinned"]["commit"], bad_commit.as_str(), "{st}");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );

    // A new commit deploys normally, and the pin is gone.
    let fixed = env
        .git
        .commit_files("app", "main", app_files("shop", "web", "nginx:2"), "fixed");
    wait_history(&c, id, "the fix deployed", |e| {
        e["outcome"] == "deployed" && e["commit"] == fixed.as_str()
    })
    .await;
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:2")
    );
    let st = status(&c, id).await;
    assert!(st["pinned"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_works_with_the_git_server_stopped() {
    let mut env = Env::new().await;
    env.app_repo("app", "shop", "web", "nginx:1");
    let c = env.chump();
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let first = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let second_commit =
        env.git
            .commit_files("app", "main", app_files("shop", "web", "nginx:2"), "two");
    wait_history(&c, id, "the second deploy", |e| {
        e["outcome"] == "deployed" && e["commit"] == second_commit.as_str()
    })
    .await;
    env.git.stop();
    let (code, answer) = post(&c, &format!("/api/sources/{id}/rollback"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    let rolled = wait_history(&c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
    assert_eq!(rolled["rollback_to"], first["id"], "{rolled}");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );
    let st = status(&c, id).await;
    assert_eq!(st["pinned"]["commit"], second_commit.as_str(), "{st}");
    // With git still down, the next checks fail at git and apply nothing.
    let st = checks_after(&c, id, 1).await;
    assert_eq!(st["last_stage"], "git", "{st}");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );
    // Unpinning resumes at once: with git back, the branch head deploys.
    env.git.restart();
    let (code, answer) = post(&c, &format!("/api/sources/{id}/unpin"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    assert!(status(&c, id).await["pinned"].is_null());
    wait_for("the head deployed again", WAIT, || async {
        (env.deployed_image("shop", "web").as_deref() == Some("nginx:2")).then_some(())
    })
    .await;
    let (code, answer) = post(&c, &format!("/api/sources/{id}/unpin"), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["msg"].as_str().unwrap().contains("not pinned"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rollback_restores_the_previous_image_and_never_loops() {
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour(BAD_IMAGE, PodBehaviour::ImagePullBackOff);
    env.kube
        .set_pod_behaviour("nginx:also-bad", PodBehaviour::CrashLoopBackOff);
    env.app_repo("auto", "auto", "web", "nginx:1");
    env.app_repo("manual", "manual", "web", "nginx:1");
    // The service's default turns it on; a source can turn it off.
    let c = env.chump_with(
        env.options()
            .env("CHUMP_AUTO_ROLLBACK", "true")
            .env("CHUMP_ROLLOUT_TIMEOUT", "300"),
    );
    let auto = create(&c, &env.source("auto", "auto", "web")).await;
    let mut off = env.source("manual", "manual", "web");
    off["auto_rollback"] = json!(false);
    let manual = create(&c, &off).await;
    let good = wait_history(&c, auto, "auto's first deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    wait_history(&c, manual, "manual's first deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;

    let pushed = Instant::now();
    let bad = env
        .git
        .commit_files("auto", "main", app_files("auto", "web", BAD_IMAGE), "bad");
    env.git.commit_files(
        "manual",
        "main",
        app_files("manual", "web", BAD_IMAGE),
        "bad",
    );
    let rolled = wait_history(&c, auto, "the automatic rollback", |e| {
        e["outcome"] == "rolled_back"
    })
    .await;
    println!(
        "push of a bad image → previous image running again: {:.1}s",
        pushed.elapsed().as_secs_f64()
    );
    assert_eq!(rolled["trigger"], "auto_rollback", "{rolled}");
    assert_eq!(rolled["rollback_to"], good["id"], "{rolled}");
    assert_eq!(
        env.deployed_image("auto", "web").as_deref(),
        Some("nginx:1")
    );
    let h = history(&c, auto).await;
    let failed = h
        .iter()
        .find(|e| e["outcome"] == "failed" && e["commit"] == bad.as_str())
        .expect("the failure stays in history");
    assert_eq!(failed["stage"], "rollout", "{failed}");
    assert!(failed["id"].as_i64() < rolled["id"].as_i64());
    assert_eq!(status(&c, auto).await["pinned"]["commit"], bad.as_str());

    // The source with auto_rollback off stays failed at the bad image.
    wait_history(&c, manual, "manual's failure", |e| e["outcome"] == "failed").await;
    assert_eq!(
        env.deployed_image("manual", "web").as_deref(),
        Some(BAD_IMAGE)
    );
    assert!(history(&c, manual)
        .await
        .iter()
        .all(|e| e["outcome"] != "rolled_back"));

    // Pinned: the bad commit is not tried again.
    checks_after(&c, auto, 3).await;
    let count = |h: &[Value], outcome: &str| h.iter().filter(|e| e["outcome"] == outcome).count();
    let h = history(&c, auto).await;
    assert_eq!(
        (count(&h, "failed"), count(&h, "rolled_back")),
        (1, 1),
        "{h:?}"
    );

    // Another bad commit is tried, fails, and is rolled back too; then quiet.
    let bad2 = env.git.commit_files(
        "auto",
        "main",
        app_files("auto", "web", "nginx:also-bad"),
        "bad again",
    );
    wait_for("the second rollback", WAIT, || async {
        let h = history(&c, auto).await;
        (count(&h, "rolled_back") == 2).then_some(())
    })
    .await;
    assert_eq!(
        env.deployed_image("auto", "web").as_deref(),
        Some("nginx:1")
    );
    assert_eq!(status(&c, auto).await["pinned"]["commit"], bad2.as_str());
    checks_after(&c, auto, 3).await;
    let h = history(&c, auto).await;
    assert_eq!(
        (count(&h, "failed"), count(&h, "rolled_back")),
        (2, 2),
        "never a loop: {h:?}"
    );
}

/// A Secret whose value is `value` (base64 in `data`).
fn secret_yaml(value: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\ndata:\n  password: {value}\n")
}

fn secret_app(image: &str, secret_b64: &str, extra: bool) -> Vec<(String, String)> {
    let mut files = app_files("shop", "web", image);
    files[0].1 =
        "resources:\n- namespace.yaml\n- deployment.yaml\n- config.yaml\n- secret.yaml\n".into();
    files.push(("deploy/secret.yaml".into(), secret_yaml(secret_b64)));
    if extra {
        files[0].1.push_str("- extra.yaml\n");
        files.push((
            "deploy/extra.yaml".into(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  url: https://app:hunter2@db.example/x\n".into(),
        ));
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_diffs_are_kept_masked_and_dropped_by_retention() {
    let env = Env::new().await;
    // "s3cr3t-one" and "s3cr3t-two", base64.
    let (one, two) = ("czNjcjN0LW9uZQ==", "czNjcjN0LXR3bw==");
    env.git
        .create_repo("app", "main", secret_app("nginx:1", one, false));
    let c = env.chump_with(env.options().env("CHUMP_MANIFEST_RETENTION", "2"));
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let first = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let c2 = env
        .git
        .commit_files("app", "main", secret_app("nginx:2", two, true), "two");
    let second = wait_history(&c, id, "the second deploy", |e| {
        e["outcome"] == "deployed" && e["commit"] == c2.as_str()
    })
    .await;

    // The manifests: every object, Secret values and URL credentials masked.
    let (code, yaml) = get_raw(&c, &format!("/api/history/{}/manifests", second["id"])).await;
    assert_eq!(code, StatusCode::OK, "{yaml}");
    let docs: Vec<Value> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| yaml_serde::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 5, "{yaml}");
    for kind in ["Namespace", "Deployment", "ConfigMap", "Secret"] {
        assert!(kinds.contains(&kind), "{kind} missing: {yaml}");
    }
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["data"]["password"], "***", "{yaml}");
    assert!(!yaml.contains(two) && !yaml.contains("hunter2"), "{yaml}");
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );

    // The diff against the previous deploy (the default, and named).
    for path in [
        format!("/api/history/{}/diff", second["id"]),
        format!("/api/history/{}/diff?against={}", second["id"], first["id"]),
    ] {
        let d = get(&c, &path).await;
        assert_eq!(d["against"], first["id"], "{d}");
        let changes: Vec<(String, String)> = d["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["kind"].as_str().unwrap().into(),
                    o["change"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            vec![
                ("ConfigMap".to_string(), "added".to_string()),
                ("Deployment".into(), "changed".into()),
                ("Secret".into(), "changed".into())
            ],
            "{d}"
        );
        assert_eq!(d["unchanged"], 2, "{d}");
        let text = d.to_string();
        let deployment = &d["objects"][1]["diff"];
        assert!(
            deployment
                .as_str()
                .unwrap()
                .contains("-      - image: nginx:1"),
            "{d}"
        );
        assert!(
            deployment
                .as_str()
                .unwrap()
                .contains("+      - image: nginx:2"),
            "{d}"
        );
        assert!(
            d["objects"][2]["diff"]
                .as_str()
                .unwrap()
                .contains("*** (changed)"),
            "{d}"
        );
        assert!(
            !text.contains(one) && !text.contains(two) && !text.contains("hunter2"),
            "{d}"
        );
    }
    // The first deploy against nothing: every object added.
    let d = get(&c, &format!("/api/history/{}/diff", first["id"])).await;
    assert!(d["against"].is_null(), "{d}");
    assert!(
        d["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["change"] == "added"),
        "{d}"
    );

    // A third deploy: retention (2) drops the first one's manifests.
    let c3 = env
        .git
        .commit_files("app", "main", secret_app("nginx:3", two, true), "three");
    wait_history(&c, id, "the third deploy", |e| {
        e["outcome"] == "deployed" && e["commit"] == c3.as_str()
    })
    .await;
    let h = history(&c, id).await;
    let state = |entry: &Value| {
        h.iter()
            .find(|e| e["id"] == entry["id"])
            .map(|e| e["manifests"].clone())
            .unwrap()
    };
    assert_eq!(state(&first), "dropped", "{h:?}");
    assert_eq!(state(&second), "kept", "{h:?}");
    let (code, body) = get_raw(&c, &format!("/api/history/{}/manifests", first["id"])).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["msg"]
            .as_str()
            .unwrap()
            .contains("dropped by retention"),
        "{body}"
    );
    let (code, body) = get_raw(&c, &format!("/api/history/{}/diff", second["id"])).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "the default comparison is gone: {body}"
    );
    // Rolling back to it is refused, saying why; nothing is queued.
    let (code, answer) = post(
        &c,
        &format!("/api/sources/{id}/rollback"),
        Some(json!({"to": first["id"]})),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["msg"]
            .as_str()
            .unwrap()
            .contains("dropped by retention"),
        "{answer}"
    );
    assert!(status(&c, id).await["rollback_to"].is_null());

    // Bad requests.
    for (path, want) in [
        (
            "/api/history/999999/manifests".to_string(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/history/abc/manifests".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/history/0/diff".to_string(), StatusCode::BAD_REQUEST),
        (
            format!("/api/history/{}/diff?against=x", second["id"]),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/history/{}/diff?against=999999", second["id"]),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/history/{}/diff?versus=1", second["id"]),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/history/999999".to_string(), StatusCode::NOT_FOUND),
    ] {
        let resp = Client::new().get(c.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), want, "{path}");
        let body: Value = resp.json().await.expect("a JSON error");
        assert!(body["msg"].is_string(), "{path}: {body}");
    }
    let one_entry = get(&c, &format!("/api/history/{}", second["id"])).await;
    assert_eq!(
        one_entry,
        h.iter().find(|e| e["id"] == second["id"]).unwrap().clone()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_over_the_cap_is_not_kept_and_says_so() {
    let env = Env::new().await;
    let mut files = app_files("big", "web", "nginx:1");
    files[0].1.push_str("- blob.yaml\n");
    let noise: String = support::git_server::incompressible(4096, 7)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    files.push((
        "deploy/blob.yaml".into(),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: blob\ndata:\n  noise: \"{noise}\"\n"),
    ));
    env.git.create_repo("big", "main", files);
    let c = env.chump_with(env.options().env("CHUMP_MANIFEST_MAX_BYTES", "2KiB"));
    let id = create(&c, &env.source("big", "big", "web")).await;
    let e = wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(e["manifests"], "too_large", "{e}");
    let (code, body) = get_raw(&c, &format!("/api/history/{}/manifests", e["id"])).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("CHUMP_MANIFEST_MAX_BYTES"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollback_requests_are_refused_and_change_nothing() {
    let env = Env::new().await;
    env.app_repo("app", "shop", "web", "nginx:1");
    env.app_repo("other", "other", "web", "nginx:1");
    let c = env.chump();
    let (code, answer) = post(&c, "/api/sources/42/rollback", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{answer}");
    let (code, answer) = post(&c, "/api/sources/42/unpin", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{answer}");
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let other = create(&c, &env.source("other", "other", "web")).await;
    let first = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let theirs = wait_history(&c, other, "other's deploy", |e| e["outcome"] == "deployed").await;

    // One deploy only: nothing to roll back to.
    let (code, answer) = post(&c, &format!("/api/sources/{id}/rollback"), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["msg"]
            .as_str()
            .unwrap()
            .contains("Nothing to roll back to"),
        "{answer}"
    );
    let cases = [
        (json!({"to": "1"}), "to"),
        (json!({"to": 0}), "to"),
        (json!({"to": 1.5}), "to"),
        (json!({"too": 1}), "too"),
        (json!([1]), "body"),
        (json!({"to": theirs["id"]}), "to"),
        (json!({"to": 999999}), "to"),
    ];
    for (body, field) in cases {
        let (code, answer) = post(
            &c,
            &format!("/api/sources/{id}/rollback"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(answer["errors"][field].is_string(), "{body}: {answer}");
    }
    let resp = Client::new()
        .post(c.url(&format!("/api/sources/{id}/rollback")))
        .header("content-type", "text/plain")
        .body("to=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = Client::new()
        .post(c.url(&format!("/api/sources/{id}/rollback")))
        .header("content-type", "application/json")
        .body("{\"to\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let (code, answer) = post(&c, &format!("/api/sources/{id}/unpin"), None).await;
    assert_eq!(code, StatusCode::CONFLICT, "{answer}");

    // Nothing was queued or changed by any of it.
    let st = status(&c, id).await;
    assert!(
        st["rollback_to"].is_null() && st["pinned"].is_null(),
        "{st}"
    );
    let h = history(&c, id).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["id"], first["id"]);
    // An explicit rollback to the live deploy itself is allowed (it
    // re-applies it) and pins away from the head.
    let (code, answer) = post(
        &c,
        &format!("/api/sources/{id}/rollback"),
        Some(json!({"to": first["id"]})),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    wait_history(&c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
}

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

fn finished(e: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(e["finished_at"].as_str().unwrap(), &Rfc3339).unwrap()
}

async fn live_at(c: &Chump, query: &str) -> Vec<i64> {
    get(c, &format!("/api/history?{query}")).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_at_tells_what_was_live_around_a_deploy_and_a_rollback() {
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour(BAD_IMAGE, PodBehaviour::ImagePullBackOff);
    env.app_repo("app", "shop", "web", "nginx:1");
    env.app_repo("gone", "gone", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_ROLLOUT_TIMEOUT", "60"));
    let before_all = OffsetDateTime::now_utc() - Duration::from_secs(1);
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let gone = create(&c, &env.source("gone", "gone", "web")).await;
    let first = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let gone_deploy = wait_history(&c, gone, "gone's deploy", |e| e["outcome"] == "deployed").await;
    let bad_commit =
        env.git
            .commit_files("app", "main", app_files("shop", "web", BAD_IMAGE), "bad");
    let bad = wait_history(&c, id, "the failed deploy", |e| {
        e["outcome"] == "failed" && e["commit"] == bad_commit.as_str()
    })
    .await;
    let (code, answer) = post(&c, &format!("/api/sources/{id}/rollback"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    let rolled = wait_history(&c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
    let resp = Client::new()
        .delete(c.url(&format!("/api/sources/{gone}?prune=true")))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let deleted = wait_for("gone's prune", WAIT, || async {
        get(&c, &format!("/api/history?source_id={gone}")).await["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["outcome"] == "deleted")
            .cloned()
    })
    .await;
    let ms = Duration::from_millis(1);
    let src = format!("source_id={id}");
    let id_of = |e: &Value| e["id"].as_i64().unwrap();

    assert_eq!(
        live_at(&c, &format!("at={}&{src}", at(before_all))).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        live_at(&c, &format!("at={}&{src}", at(finished(&first) - ms))).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        live_at(&c, &format!("at={}&{src}", at(finished(&first)))).await,
        vec![id_of(&first)]
    );
    assert_eq!(
        live_at(&c, &format!("at={}&{src}", at(finished(&bad) - ms))).await,
        vec![id_of(&first)]
    );
    assert_eq!(
        live_at(&c, &format!("at={}&{src}", at(finished(&bad)))).await,
        vec![id_of(&bad)]
    );
    assert_eq!(
        live_at(&c, &format!("at={}&{src}", at(finished(&rolled)))).await,
        vec![id_of(&rolled)]
    );
    // Every source: both live before the deletion, one after it.
    let t = at(finished(&deleted) - ms);
    let mut both = live_at(&c, &format!("at={t}")).await;
    both.sort();
    // (The rollback was recorded before the delete was asked for.)
    let mut want = vec![id_of(&rolled), id_of(&gone_deploy)];
    want.sort();
    assert_eq!(both, want);
    let now = at(OffsetDateTime::now_utc());
    assert_eq!(
        live_at(&c, &format!("at={now}")).await,
        vec![id_of(&rolled)]
    );
    assert_eq!(
        live_at(&c, &format!("at={now}&namespace=gone")).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        live_at(&c, &format!("at={now}&outcome=rolled_back")).await,
        vec![id_of(&rolled)]
    );
    assert_eq!(
        live_at(&c, &format!("at={now}&outcome=deployed")).await,
        Vec::<i64>::new()
    );
    for bad_query in [
        "at=yesterday".to_string(),
        format!("at={now}&before=5"),
        format!("at={now}&since={now}"),
    ] {
        let resp = Client::new()
            .get(c.url(&format!("/api/history?{bad_query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad_query}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["errors"].is_object(), "{bad_query}: {body}");
    }
}

/// The same rollback, pin and manifests on the RethinkDB store (only with
/// `CHUMP_TEST_RETHINKDB`; says so when skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_on_rethinkdb_restores_pins_and_keeps_manifests() {
    let Some(config) = support::rethinkdb::fresh_config() else {
        return;
    };
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour(BAD_IMAGE, PodBehaviour::ImagePullBackOff);
    env.app_repo("app", "shop", "web", "nginx:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_DATABASE", support::rethinkdb::database_url(&config))
            .env("CHUMP_ROLLOUT_TIMEOUT", "60")
            .env("CHUMP_MANIFEST_RETENTION", "2"),
    );
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let good = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let mut files = app_files("shop", "web", BAD_IMAGE);
    with_extra(&mut files);
    let bad_commit = env.git.commit_files("app", "main", files, "bad");
    let bad = wait_history(&c, id, "the bad deploy failing", |e| {
        e["outcome"] == "failed" && e["commit"] == bad_commit.as_str()
    })
    .await;
    let d = get(&c, &format!("/api/history/{}/diff", bad["id"])).await;
    assert_eq!(d["against"], good["id"], "{d}");
    assert!(
        d["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "extra" && o["change"] == "added"),
        "{d}"
    );
    let (code, answer) = post(&c, &format!("/api/sources/{id}/rollback"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    let rolled = wait_history(&c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
    assert_eq!(rolled["rollback_to"], good["id"], "{rolled}");
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );
    assert!(!extra_exists(&env, "shop"));
    let st = status(&c, id).await;
    assert_eq!(st["pinned"]["commit"], bad_commit.as_str(), "{st}");
    let entries = history(&c, id).await.len();
    checks_after(&c, id, 2).await;
    assert_eq!(
        history(&c, id).await.len(),
        entries,
        "pinned checks add no history"
    );
    // Retention 2: the first deploy's manifests stay (the newest
    // successful deploy before the rollback is a copy in the rollback).
    let (code, yaml) = get_raw(&c, &format!("/api/history/{}/manifests", rolled["id"])).await;
    assert_eq!(code, StatusCode::OK, "{yaml}");
    assert!(yaml.contains("image: nginx:1"), "{yaml}");
    let now = at(OffsetDateTime::now_utc());
    assert_eq!(
        live_at(&c, &format!("at={now}")).await,
        vec![rolled["id"].as_i64().unwrap()]
    );
    let (code, answer) = post(&c, &format!("/api/sources/{id}/unpin"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{answer}");
    wait_for("the head deployed again", WAIT, || async {
        (env.deployed_image("shop", "web").as_deref() == Some(BAD_IMAGE)).then_some(())
    })
    .await;
}
