//! Operating chump (issue #5) over HTTP: history and status with paging and
//! filters, manual checks, webhooks of every provider (real signed
//! payloads), suspend/resume, metrics, health and the OpenAPI document.

mod support;

use chump_jobs::webhook::sign;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::chump::{wait_for, Chump, ChumpOptions};
use support::env::*;
use support::git_server::free_port;
use support::kube_api::RolloutMode;

const SECRET: &str = "webhook-s3cret-value";

async fn status_of(c: &Chump, path: &str) -> (StatusCode, Value) {
    let resp = Client::new().get(c.url(path)).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

async fn post_json(
    c: &Chump,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, Value) {
    let mut req = Client::new()
        .post(c.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// A source whose every check fails fast at the git stage.
fn unreachable_source(i: usize, ns: &str) -> Value {
    json!({"namespace": ns, "deployment_name": format!("d{i}"), "git_url": format!("git://127.0.0.1:{}/none.git", free_port()),
           "branch": "main", "deploy_path": "deploy", "container_name": "app", "image_version_file": "deploy/d.yaml"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_paging_filters_and_bad_parameters() {
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_INTERVAL", "600"));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create(
                &c,
                &unreachable_source(i, if i < 3 { "team-a" } else { "team-b" }),
            )
            .await,
        );
    }
    wait_for("5 failures", WAIT, || async {
        let h = get(&c, "/api/history").await;
        (h["history"].as_array().unwrap().len() == 5).then_some(())
    })
    .await;
    let all = get(&c, "/api/history").await["history"]
        .as_array()
        .unwrap()
        .clone();
    let all_ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(
        all_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first: {all_ids:?}"
    );
    assert!(all
        .iter()
        .all(|e| e["outcome"] == "failed" && e["stage"] == "git" && e["trigger"] == "schedule"));

    // Paging with the cursor.
    let mut seen = Vec::new();
    let mut path = "/api/history?limit=2".to_string();
    loop {
        let page = get(&c, &path).await;
        seen.extend(
            page["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page["next_before"].as_i64() {
            Some(b) => path = format!("/api/history?limit=2&before={b}"),
            None => break,
        }
    }
    assert_eq!(seen, all_ids);

    // Filters.
    let a = get(&c, "/api/history?namespace=team-a").await["history"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(a, 3);
    let one = get(&c, &format!("/api/history?source_id={}", ids[4])).await;
    assert_eq!(one["history"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(&c, "/api/history?outcome=deployed").await["history"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        get(&c, "/api/history?since=2000-01-01T00:00:00Z").await["history"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        get(&c, "/api/history?since=2999-01-01T00:00:00Z").await["history"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let mine = get(
        &c,
        &format!("/api/sources/{}/history?outcome=failed&limit=1", ids[0]),
    )
    .await;
    assert_eq!(mine["history"][0]["source_id"], ids[0]);
    // Every outcome is a filter (these checks all failed).
    for outcome in [
        "degraded",
        "superseded",
        "up_to_date",
        "deleted",
        "rolled_back",
    ] {
        for path in [
            format!("/api/history?outcome={outcome}"),
            format!("/api/sources/{}/history?outcome={outcome}", ids[0]),
        ] {
            let (s, b) = status_of(&c, &path).await;
            assert_eq!(
                (s, &b["history"]),
                (StatusCode::OK, &json!([])),
                "{path}: {b}"
            );
        }
    }
    // An unknown outcome: 400, naming every one there is.
    for path in [
        "/api/history?outcome=bogus".to_string(),
        format!("/api/sources/{}/history?outcome=bogus", ids[0]),
        "/api/history?outcome=Degraded".to_string(),
    ] {
        let why =
            "must be deployed, up_to_date, failed, deleted, degraded, superseded or rolled_back";
        let (s, b) = status_of(&c, &path).await;
        assert_eq!(
            (s, b),
            (
                StatusCode::BAD_REQUEST,
                json!({
                    "msg": format!("[WARN] Invalid query parameter 'outcome': {why}"),
                    "errors": {"outcome": why},
                })
            ),
            "{path}"
        );
    }

    for bad in [
        "/api/history?limit=0",
        "/api/history?limit=501",
        "/api/history?limit=x",
        "/api/history?before=-3",
        "/api/history?outcome=great",
        "/api/history?since=yesterday",
        "/api/history?namespace=Bad_NS",
        "/api/history?source_id=abc",
        "/api/history?colour=blue",
        "/api/sources/1/history?namespace=x",
        "/api/sources/abc/history",
    ] {
        let (s, b) = status_of(&c, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert!(b["msg"].as_str().unwrap().starts_with("[WARN]"), "{b}");
    }
    let (s, _) = status_of(&c, "/api/sources/999/history").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = status_of(&c, "/api/sources/999/status").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Status: of one source, and in the listing.
    let st = get(&c, &format!("/api/sources/{}/status", ids[0])).await;
    assert_eq!(
        (st["last_outcome"].as_str(), st["last_stage"].as_str()),
        (Some("failed"), Some("git"))
    );
    assert_eq!(st["consecutive_failures"], 1);
    assert_eq!(st["suspended"], false);
    assert!(st["next_check_at"].is_string() && st["last_checked_at"].is_string());
    // Failed before reaching the workloads: their health is not known.
    assert_eq!(
        (&st["health"], &st["health_reason"]),
        (&json!("unknown"), &Value::Null),
        "{st}"
    );
    let list = get(&c, "/api/sources").await;
    assert!(
        list["sources"].as_array().unwrap().iter().all(|s| {
            s["status"]["last_outcome"] == "failed"
                && s["status"]["health"] == "unknown"
                && s["status"]["health_reason"].is_null()
        }),
        "{list}"
    );

    // History of a deleted source stays readable.
    let resp = Client::new()
        .delete(c.url(&format!("/api/sources/{}", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(history(&c, ids[0]).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_workloads_health_and_why() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.set_rollout_for("shop", "web", RolloutMode::Fail);
    // One check each: the failure's backoff keeps a second one away.
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "600"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let failed = wait_history(&c, id, "the failed rollout", |e| e["outcome"] == "failed").await;
    assert_eq!(failed["stage"], "rollout", "{failed}");
    // The rollout failed: degraded, and the message says why.
    let st = get(&c, &format!("/api/sources/{id}/status")).await;
    assert_eq!(
        (&st["last_outcome"], &st["last_stage"], &st["health"]),
        (&json!("failed"), &json!("rollout"), &json!("degraded")),
        "{st}"
    );
    let reason = st["health_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("ProgressDeadlineExceeded"), "{st}");
    assert_eq!(st["health_reason"], st["last_message"], "{st}");
    assert_eq!(st["health_reason"], failed["message"], "{st}");
    let list = get(&c, "/api/sources").await;
    let listed = &list["sources"][0]["status"];
    assert_eq!(
        (&listed["health"], &listed["health_reason"]),
        (&st["health"], &st["health_reason"]),
        "{list}"
    );

    // Never checked (suspended): unknown, no reason.
    let mut spec = unreachable_source(1, "other");
    spec["suspended"] = json!(true);
    let never = create(&c, &spec).await;
    let st = get(&c, &format!("/api/sources/{never}/status")).await;
    assert_eq!(
        (&st["last_outcome"], &st["health"], &st["health_reason"]),
        (&Value::Null, &json!("unknown"), &Value::Null),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_checks_run_at_once_and_are_not_queued_twice() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_INTERVAL", "600")
            .env("CHUMP_ROLLOUT_TIMEOUT", "30"),
    );
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;

    // Drift, then a manual check: re-applied at once, recorded as manual.
    env.kube.set_image("shop", "web", "app", "nginx:drifted");
    let (s, b) = post_json(&c, &format!("/api/sources/{id}/check"), &[], b"").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["result"], "queued");
    assert!(b["queued_at"].is_string());
    let e = wait_history(&c, id, "the manual deploy", |e| e["trigger"] == "manual").await;
    assert_eq!(
        (e["outcome"].as_str(), e["running_image"].as_str()),
        (Some("deployed"), Some("nginx:drifted"))
    );

    // While a check runs, another request adds nothing.
    env.kube.set_rollout(RolloutMode::Never);
    env.kube
        .set_image("shop", "web", "app", "nginx:drifted-again");
    let (s, _) = post_json(&c, &format!("/api/sources/{id}/check"), &[], b"").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_for("the check in flight", WAIT, || async {
        (get(&c, &format!("/api/sources/{id}/status")).await["in_flight"] == true).then_some(())
    })
    .await;
    let (s, b) = post_json(&c, &format!("/api/sources/{id}/check"), &[], b"").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(b["result"], "already_running", "{b}");
    assert!(b["msg"].as_str().unwrap().contains("already running"));

    for (path, status) in [
        ("/api/sources/999/check", StatusCode::NOT_FOUND),
        ("/api/sources/x/check", StatusCode::BAD_REQUEST),
    ] {
        let (s, b) = post_json(&c, path, &[], b"").await;
        assert_eq!(s, status, "{path}: {b}");
    }
}

fn github_push(env: &Env, repo: &str, branch: &str) -> Vec<u8> {
    // GitHub names the repository in several URL forms; the clone URL differs
    // from the source's git:// URL but is the same repository.
    let port = env.git.port();
    serde_json::to_vec(&json!({
        "ref": format!("refs/heads/{branch}"),
        "repository": {
            "clone_url": format!("http://127.0.0.1:{port}/{repo}.git"),
            "ssh_url": format!("git@127.0.0.1:{repo}.git"),
            "html_url": format!("http://127.0.0.1/{repo}"),
        },
        "commits": [],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_webhook_deploys_without_waiting_for_the_interval() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_INTERVAL", "3600")
            .env("CHUMP_WEBHOOK_SECRET", SECRET),
    );
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let mut other = env.source("web", "shop", "web");
    other["branch"] = json!("release");
    other["container_name"] = json!("sidecar");
    let other_id = create(&c, &other).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;

    let commit = env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", "nginx:2"),
        )],
        "bump",
    );
    let body = github_push(&env, "web", "main");
    let sig = format!("sha256={}", sign(SECRET.as_bytes(), &body));
    let (s, b) = post_json(
        &c,
        "/api/webhooks/github",
        &[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", sig),
        ],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        b["triggered"],
        json!([id]),
        "only the source on the pushed branch: {b}"
    );
    assert!(!b["triggered"]
        .as_array()
        .unwrap()
        .contains(&json!(other_id)));
    // The interval is an hour: only the webhook can have done this.
    let e = wait_history(&c, id, "the webhook deploy", |e| e["commit"] == commit).await;
    assert_eq!(
        (e["trigger"].as_str(), e["outcome"].as_str()),
        (Some("webhook"), Some("deployed"))
    );
    assert_eq!(
        env.deployed_image("shop", "web").as_deref(),
        Some("nginx:2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signatures_events_and_providers() {
    let env = Env::new().await;
    let c = env.chump_with(
        env.options()
            .env("CHUMP_INTERVAL", "3600")
            .env("CHUMP_WEBHOOK_SECRET", SECRET),
    );
    // The git server has no such repo: checks fail, which is fine here.
    let id = create(&c, &env.source("svc", "shop", "svc")).await;
    let mut suspended = env.source("svc", "shop", "svc-2");
    suspended["deployment_name"] = json!("svc-2");
    suspended["suspended"] = json!(true);
    let suspended_id = create(&c, &suspended).await;

    let body = github_push(&env, "svc", "main");
    let good = format!("sha256={}", sign(SECRET.as_bytes(), &body));
    let wrong = format!("sha256={}", sign(b"another-secret", &body));
    let push = ("x-github-event", "push".to_string());
    for (headers, status, needle) in [
        (vec![push.clone()], StatusCode::UNAUTHORIZED, "missing"),
        (
            vec![push.clone(), ("x-hub-signature-256", wrong.clone())],
            StatusCode::UNAUTHORIZED,
            "wrong",
        ),
        (
            vec![push.clone(), ("x-hub-signature-256", "sha256=zz".into())],
            StatusCode::UNAUTHORIZED,
            "wrong",
        ),
        (
            vec![
                ("x-github-event", "ping".into()),
                ("x-hub-signature-256", good.clone()),
            ],
            StatusCode::ACCEPTED,
            "ignored",
        ),
    ] {
        let (s, b) = post_json(&c, "/api/webhooks/github", &headers, &body).await;
        assert_eq!(s, status, "{headers:?}: {b}");
        assert!(b["msg"].as_str().unwrap().contains(needle), "{b}");
    }
    // A valid push: the suspended source is not triggered.
    let (s, b) = post_json(
        &c,
        "/api/webhooks/github",
        &[push.clone(), ("x-hub-signature-256", good.clone())],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["triggered"], json!([id]));
    assert!(!b["triggered"]
        .as_array()
        .unwrap()
        .contains(&json!(suspended_id)));
    // A tampered body fails the signature.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let (s, _) = post_json(
        &c,
        "/api/webhooks/github",
        &[push.clone(), ("x-hub-signature-256", good.clone())],
        &tampered,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // GitLab: token header, "Push Hook" event, project URLs.
    let port = env.git.port();
    let gl = serde_json::to_vec(&json!({"object_kind": "push", "ref": "refs/heads/main",
        "project": {"git_http_url": format!("https://127.0.0.1:{port}/svc.git"), "git_ssh_url": "ssh://git@127.0.0.1/svc.git"}})).unwrap();
    let gl_event = ("x-gitlab-event", "Push Hook".to_string());
    let (s, _) = post_json(
        &c,
        "/api/webhooks/gitlab",
        &[gl_event.clone(), ("x-gitlab-token", "nope-nope".into())],
        &gl,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = post_json(
        &c,
        "/api/webhooks/gitlab",
        &[gl_event.clone(), ("x-gitlab-token", SECRET.into())],
        &gl,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(b["triggered"].is_array(), "{b}");
    let (s, b) = post_json(
        &c,
        "/api/webhooks/gitlab",
        &[
            ("x-gitlab-event", "Tag Push Hook".into()),
            ("x-gitlab-token", SECRET.into()),
        ],
        &gl,
    )
    .await;
    assert_eq!(
        (s, b["triggered"].clone()),
        (StatusCode::ACCEPTED, json!([]))
    );

    // Gitea: bare hex HMAC.
    let gitea_sig = sign(SECRET.as_bytes(), &body);
    let gitea_event = ("x-gitea-event", "push".to_string());
    let (s, _) = post_json(
        &c,
        "/api/webhooks/gitea",
        &[
            gitea_event.clone(),
            (
                "x-gitea-signature",
                wrong.trim_start_matches("sha256=").into(),
            ),
        ],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = post_json(
        &c,
        "/api/webhooks/gitea",
        &[gitea_event.clone(), ("x-gitea-signature", gitea_sig)],
        &body,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");

    // Generic.
    let generic =
        serde_json::to_vec(&json!({"repository": env.git.url("svc"), "branch": "main"})).unwrap();
    let gsig = format!("sha256={}", sign(SECRET.as_bytes(), &generic));
    let (s, b) = post_json(
        &c,
        "/api/webhooks/generic",
        &[("x-chump-signature-256", gsig)],
        &generic,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert!(b["triggered"].is_array(), "{b}");

    // Bad payloads and providers.
    let junk = b"{not json";
    let jsig = format!("sha256={}", sign(SECRET.as_bytes(), junk));
    let (s, b) = post_json(
        &c,
        "/api/webhooks/github",
        &[push.clone(), ("x-hub-signature-256", jsig)],
        junk,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = post_json(&c, "/api/webhooks/bitbucket", &[], &body).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_sources_are_left_alone_until_resumed_or_checked_by_hand() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let mut spec = env.source("web", "shop", "web");
    spec["suspended"] = json!(true);
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "1"));
    let id = create(&c, &spec).await;
    // A second, active source proves the schedule runs meanwhile.
    env.app_repo("api", "shop", "api", "nginx:1");
    let active = create(&c, &env.source("api", "shop", "api")).await;
    wait_history(&c, active, "the active source's deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    let after = get(&c, &format!("/api/sources/{active}/status")).await["last_checked_at"]
        .as_str()
        .unwrap()
        .to_string();
    wait_checked_after(&c, active, &after).await;
    let st = get(&c, &format!("/api/sources/{id}/status")).await;
    assert_eq!(
        (st["suspended"].as_bool(), st["last_checked_at"].is_null()),
        (Some(true), true),
        "{st}"
    );
    assert!(env.deployed_image("shop", "web").is_none());

    // A manual check still runs it.
    let (s, _) = post_json(&c, &format!("/api/sources/{id}/check"), &[], b"").await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_history(&c, id, "the manual deploy", |e| e["trigger"] == "manual").await;

    // Resumed: the schedule takes it again.
    env.kube.set_image("shop", "web", "app", "nginx:drift");
    let resp = Client::new()
        .patch(c.url(&format!("/api/sources/{id}")))
        .json(&json!({"suspended": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    wait_history(&c, id, "a scheduled check after resume", |e| {
        e["trigger"] == "schedule"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_objects_of_unknown_bad_and_never_deployed_sources() {
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_INTERVAL", "600"));
    let id = create(&c, &unreachable_source(1, "team-a")).await;
    // Checked (and failed): still nothing applied.
    wait_history(&c, id, "a failed check", |e| e["outcome"] == "failed").await;
    for path in [
        format!("/api/sources/{id}/objects"),
        format!("/api/sources/{id}/objects/"),
    ] {
        let (s, b) = status_of(&c, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert_eq!(
            b,
            json!({"source_id": id, "commit": null, "desired_image": null, "objects": []}),
            "{path}"
        );
    }
    for (path, status) in [
        ("/api/sources/999/objects", StatusCode::NOT_FOUND),
        ("/api/sources/abc/objects", StatusCode::BAD_REQUEST),
        ("/api/sources/0/objects", StatusCode::BAD_REQUEST),
        ("/api/sources/-1/objects/", StatusCode::BAD_REQUEST),
    ] {
        let (s, b) = status_of(&c, path).await;
        assert_eq!(s, status, "{path}: {b}");
        assert!(
            b["msg"].as_str().unwrap().starts_with("[WARN]"),
            "{path}: {b}"
        );
    }
    let (_, b) = status_of(&c, "/api/sources/999/objects").await;
    assert_eq!(b["msg"], "[WARN] Source doesn't exist!");
    // Deleted: gone.
    let resp = Client::new()
        .delete(c.url(&format!("/api/sources/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _) = status_of(&c, &format!("/api/sources/{id}/objects")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Needs the checker to record inventories (`CheckReport::inventory`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_source_lists_the_objects_it_applied() {
    let env = Env::new().await;
    let commit = env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "600"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let e = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(e["commit"], commit.as_str());
    let v = get(&c, &format!("/api/sources/{id}/objects")).await;
    assert_eq!(
        (
            v["source_id"].as_i64(),
            v["commit"].as_str(),
            v["desired_image"].as_str()
        ),
        (Some(id), Some(commit.as_str()), Some("nginx:1")),
        "{v}"
    );
    let mut objects: Vec<(String, String, Option<String>, String, String)> = v["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects: {v}"))
        .iter()
        .map(|o| {
            assert!(o.get("digest").is_none(), "digests stay in the store: {o}");
            (
                o["kind"].as_str().unwrap().to_string(),
                o["api_version"].as_str().unwrap().to_string(),
                o["namespace"].as_str().map(str::to_string),
                o["name"].as_str().unwrap().to_string(),
                o["commit"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    objects.sort();
    let object = |kind: &str, api_version: &str, ns: Option<&str>, name: &str| {
        (
            kind.to_string(),
            api_version.to_string(),
            ns.map(str::to_string),
            name.to_string(),
            commit.clone(),
        )
    };
    // tests/support/env.rs `app_files`: the ConfigMap gets the source's
    // namespace, the Namespace has none.
    assert_eq!(
        objects,
        vec![
            object("ConfigMap", "v1", Some("shop"), "web-config"),
            object("Deployment", "apps/v1", Some("shop"), "web"),
            object("Namespace", "v1", None, "shop"),
        ],
        "{v}"
    );
    assert_eq!(get(&c, &format!("/api/sources/{id}/objects/")).await, v);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_openapi() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "1"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    create(&c, &unreachable_source(1, "other")).await;
    wait_history(&c, id, "a deploy", |e| e["outcome"] == "deployed").await;
    let st = get(&c, &format!("/api/sources/{id}/status")).await;
    let st = wait_checked_after(&c, id, st["last_checked_at"].as_str().unwrap()).await;
    assert_eq!(
        (&st["health"], &st["health_reason"]),
        (&json!("healthy"), &Value::Null),
        "{st}"
    );

    let text = Client::new()
        .get(c.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "chump_checks_total{outcome=\"deployed\",stage=\"none\"}",
        "chump_checks_total{outcome=\"failed\",stage=\"git\"}",
        "chump_checks_total{outcome=\"up_to_date\",stage=\"none\"}",
        "chump_check_duration_seconds_bucket",
        "chump_deploys_total 1",
        "chump_git_syncs_total{kind=\"fetch\"}",
        "chump_git_syncs_total{kind=\"refs_only\"}",
        "chump_queue_depth",
        "chump_busy_workers",
        "chump_sources{state=\"up_to_date\"} 1",
        "chump_sources{state=\"failed\"} 1",
        "chump_sources{state=\"degraded\"} 0",
        "chump_sources{state=\"superseded\"} 0",
        "chump_sources{state=\"never_checked\"} 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("source_id"), "no per-source labels");

    let (s, b) = status_of(&c, "/readyz").await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, _) = status_of(&c, "/healthz").await;
    assert_eq!(s, StatusCode::OK);

    // Every route in the OpenAPI document, and every route served.
    let doc = get(&c, "/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // The outcome filters name every outcome; the status has its health.
    for path in ["/api/history", "/api/sources/{id}/history"] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let outcome = params.iter().find(|p| p["name"] == "outcome").unwrap();
        let described = outcome["description"].as_str().unwrap_or_default();
        for name in [
            "deployed",
            "up_to_date",
            "failed",
            "deleted",
            "degraded",
            "superseded",
            "rolled_back",
        ] {
            assert!(described.contains(name), "{path}: {outcome}");
        }
    }
    let at = doc["paths"]["/api/history"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "at");
    assert!(at, "?at= is documented");
    let status = &doc["components"]["schemas"]["Status"]["properties"];
    for field in ["health", "health_reason", "pinned", "rollback_to"] {
        assert!(status[field].is_object(), "{field}: {status}");
    }
    let endpoints = get(&c, "/api").await["endpoints"]
        .as_array()
        .unwrap()
        .clone();
    assert!(endpoints.len() >= 20);
    for e in &endpoints {
        let (method, path) = e.as_str().unwrap().split_once(' ').unwrap();
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path} is not in the OpenAPI document"
        );
        // Served: a request does not get the router's "No such endpoint".
        let concrete = path.replace("{id}", "1").replace("{provider}", "generic");
        let resp = Client::new()
            .request(method.parse().unwrap(), c.url(&concrete))
            .send()
            .await
            .unwrap();
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("No such endpoint") && !text.contains("not allowed"),
            "{method} {path}: {text}"
        );
    }
    // And the document lists nothing the router does not serve.
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, endpoints.len());
}

async fn send(
    c: &Chump,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Client::new().request(method, c.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_deleted_with_prune_is_read_only_until_its_objects_are_gone() {
    use reqwest::Method;
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_WEBHOOK_SECRET", SECRET));
    let spec = env.source("web", "shop", "web");
    let id = create(&c, &spec).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let path = format!("/api/sources/{id}");

    // The cluster is away: the prune cannot finish, the source stays.
    env.kube.stop().await;
    let deleting = json!({
        "msg": "[INFO] Source is being deleted: the objects chump applied for it are pruned first",
        "deleting": true,
    });
    let (s, b) = send(&c, Method::DELETE, &format!("{path}?prune=true"), None).await;
    assert_eq!((s, &b), (StatusCode::ACCEPTED, &deleting));
    let (s, got) = send(&c, Method::GET, &path, None).await;
    assert_eq!(
        (s, &got["deleting"]),
        (StatusCode::OK, &json!(true)),
        "{got}"
    );
    assert_eq!(
        get(&c, "/api/sources").await["sources"][0]["deleting"],
        true
    );
    assert_eq!(get(&c, &format!("{path}/status")).await["deleting"], true);
    // Asked again (the legacy route): the same answer.
    let (s, b) = send(
        &c,
        Method::DELETE,
        &format!("{path}/delete?prune=true"),
        None,
    )
    .await;
    assert_eq!((s, &b), (StatusCode::ACCEPTED, &deleting));

    // Read-only: no updates, no manual checks, its target still taken.
    let being_deleted = json!({"msg": "[WARN] Source is being deleted: it takes no changes and no checks until its objects are pruned"});
    for (method, route, body) in [
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"branch": "other"})),
        ),
        (
            Method::PATCH,
            format!("{path}/update"),
            Some(json!({"suspended": true})),
        ),
        (Method::PUT, path.clone(), Some(spec.clone())),
        (Method::POST, format!("{path}/check"), None),
    ] {
        let (s, b) = send(&c, method.clone(), &route, body).await;
        assert_eq!(
            (s, &b),
            (StatusCode::CONFLICT, &being_deleted),
            "{method} {route}"
        );
    }
    let (s, b) = send(&c, Method::POST, "/api/sources", Some(spec.clone())).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::CONFLICT,
            json!({"msg": "[WARN] Source already exist!"})
        )
    );
    // A push does not check it.
    let body = github_push(&env, "web", "main");
    let sig = format!("sha256={}", sign(SECRET.as_bytes(), &body));
    let (s, b) = post_json(
        &c,
        "/api/webhooks/github",
        &[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", sig),
        ],
        &body,
    )
    .await;
    assert_eq!(
        (s, &b["triggered"]),
        (StatusCode::ACCEPTED, &json!([])),
        "{b}"
    );
    assert_eq!(get(&c, &path).await["branch"], "main");
    // The prune is tried, and fails while the cluster is away.
    wait_history(&c, id, "a failed prune", |e| {
        e["trigger"] == "delete" && e["outcome"] == "failed"
    })
    .await;
    assert_eq!(get(&c, &path).await["deleting"], true);

    // The cluster is back: the objects go, then the source.
    env.kube.restart().await;
    wait_for("the source deleted", WAIT, || async {
        let (s, _) = send(&c, Method::GET, &path, None).await;
        (s == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(env.deployed_image("shop", "web").is_none());
    let entry = wait_history(&c, id, "the prune", |e| e["outcome"] == "deleted").await;
    assert_eq!(entry["trigger"], "delete", "{entry}");
    let objects = entry["objects"].as_array().unwrap();
    assert!(!objects.is_empty(), "{entry}");
    assert!(objects.iter().all(|o| o["action"] == "deleted"), "{entry}");
    let (s, h) = send(&c, Method::GET, "/api/history?outcome=deleted", None).await;
    assert_eq!(
        (s, h["history"][0]["id"].clone()),
        (StatusCode::OK, entry["id"].clone())
    );
    // The target is free again.
    create(&c, &spec).await;
}

/// Pushes find the sources as they are now, while chump keeps an index of
/// which sources a push concerns (rebuilt only when a source changes):
/// created, moved to another branch, suspended, resumed and deleted
/// sources are all seen by the very next push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_sees_the_sources_as_they_are_now() {
    let env = Env::new().await;
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "3600"));
    let http = Client::new();
    let push = || {
        serde_json::to_vec(&json!({"repository": env.git.url("mono"), "branch": "main"})).unwrap()
    };
    let triggered = |b: &Value| -> Vec<i64> {
        let mut ids: Vec<i64> = b["triggered"]
            .as_array()
            .unwrap_or_else(|| panic!("{b}"))
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    };
    let pushed = || async {
        let (s, b) = post_json(&c, "/api/webhooks/generic", &[], &push()).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        triggered(&b)
    };
    let a = create(&c, &env.source("mono", "shop", "a")).await;
    assert_eq!(pushed().await, vec![a]);
    let b = create(&c, &env.source("mono", "shop", "b")).await;
    let other = create(&c, &env.source("elsewhere", "shop", "other")).await;
    assert_eq!(
        pushed().await,
        vec![a, b],
        "a source created since the last push"
    );

    let patch = |id: i64, body: Value| {
        let http = http.clone();
        let url = c.url(&format!("/api/sources/{id}"));
        async move {
            let resp = http.patch(url).json(&body).send().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{}",
                resp.text().await.unwrap()
            );
        }
    };
    patch(a, json!({"branch": "dev"})).await;
    assert_eq!(pushed().await, vec![b], "a moved to another branch");
    patch(a, json!({"branch": "main", "suspended": true})).await;
    assert_eq!(pushed().await, vec![b], "a suspended");
    patch(a, json!({"suspended": false})).await;
    patch(other, json!({"git_url": env.git.url("mono")})).await;
    assert_eq!(
        pushed().await,
        vec![a, b, other],
        "a resumed, other moved here"
    );
    let resp = http
        .delete(c.url(&format!("/api/sources/{b}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(pushed().await, vec![a, other], "b deleted");
}
