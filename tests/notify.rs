//! Notifications and commit statuses, end to end through `chump serve`:
//! local HTTP receivers on 127.0.0.1 record what chump sends — the generic
//! webhook's signed JSON, the Slack message, GitHub/GitLab/Gitea status
//! calls for a deploy, a failure and a rollback — and that event filters
//! and selectors hold, that a receiver that hangs or fails delays no check
//! and is retried then given up as configured, that a bad config file stops
//! startup, and that no secret shows in the API, the CLI or the log.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::chump::{chump_command, wait_for, Chump};
use support::env::*;
use support::kube_api::PodBehaviour;
use support::receiver::{Answer, Received, Receiver};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const WEBHOOK_SECRET: &str = "whsec-0123456789-notify";
const SLACK_PATH: &str = "/services/T0000/B0000/slackpathsecret42";
const GH_TOKEN: &str = "ghp-token-abcdef123456";
const GL_TOKEN: &str = "glpat-token-abcdef123456";
const GT_TOKEN: &str = "gitea-token-abcdef123456";

/// Writes `text` as `name` into the env's directory; returns its path.
fn config_file(env: &Env, name: &str, text: &str) -> PathBuf {
    let path = env.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Waits until `recv` has at least `n` requests under `prefix`.
async fn wait_received(recv: &Receiver, prefix: &str, n: usize, what: &str) -> Vec<Received> {
    wait_for(what, WAIT, || async {
        let got = recv.received_at(prefix);
        (got.len() >= n).then_some(got)
    })
    .await
}

fn seconds(entry: &Value) -> f64 {
    let at = |k: &str| OffsetDateTime::parse(entry[k].as_str().unwrap(), &Rfc3339).unwrap();
    (at("finished_at") - at("started_at")).as_seconds_f64()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [
        WEBHOOK_SECRET,
        "slackpathsecret42",
        GH_TOKEN,
        GL_TOKEN,
        GT_TOKEN,
        "pw-s3cret",
    ] {
        assert!(!text.contains(secret), "{secret} leaked in {what}:\n{text}");
    }
}

async fn notifications(c: &Chump) -> Value {
    get(c, "/api/notifications").await
}

fn target<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {list}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_json_signed_slack_message_filters_and_selectors() {
    let env = Env::new().await;
    let hook = Receiver::start(Answer::Status(200)).await;
    let slack = Receiver::start(Answer::Status(200)).await;
    let file = config_file(
        &env,
        "notify.yaml",
        &format!(
            "targets:\n\
             - name: all\n  type: webhook\n  url: {all}\n  secret_env: TEST_HOOK_SECRET\n\
             - name: failed-only\n  type: webhook\n  url: {failed}\n  events: [failed]\n\
             - name: elsewhere\n  type: webhook\n  url: {elsewhere}\n  selector:\n    namespaces: [other]\n\
             - name: chat\n  type: slack\n  url: {slack}\n",
            all = hook.url("/all"),
            failed = hook.url("/failed-only"),
            elsewhere = hook.url("/elsewhere"),
            slack = slack.url(SLACK_PATH),
        ),
    );
    env.app_repo("app", "shop", "web", "nginx:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_NOTIFY_CONFIG", file.display().to_string())
            .env("TEST_HOOK_SECRET", WEBHOOK_SECRET),
    );
    let id = create(&c, &env.source("app", "shop", "web")).await;
    let deployed = wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;

    // The generic webhook: the entry, the source, a link; signed.
    let got = wait_received(&hook, "/all", 1, "the deploy event").await;
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let signature = r.header("x-chump-signature-256").expect("signed");
    assert_eq!(
        signature,
        format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &r.body)),
        "the signature is the HMAC-SHA256 of the body"
    );
    let body = r.json();
    assert_eq!(body["event"], "deployed", "{body}");
    assert_eq!(body["entry"]["id"], deployed["id"], "{body}");
    assert_eq!(body["entry"]["outcome"], "deployed", "{body}");
    assert_eq!(body["entry"]["commit"], deployed["commit"], "{body}");
    assert_eq!(body["entry"]["desired_image"], "nginx:1", "{body}");
    assert_eq!(body["source"]["id"], id, "{body}");
    assert_eq!(body["source"]["namespace"], "shop", "{body}");
    assert_eq!(body["source"]["git_url"], env.git.url("app"), "{body}");
    assert_eq!(
        body["link"],
        c.url(&format!("/api/history/{}", deployed["id"])),
        "{body}"
    );
    let linked: Value = get(&c, &format!("/api/history/{}", deployed["id"])).await;
    assert_eq!(linked["id"], deployed["id"]);

    // Slack: one readable message.
    let got = wait_received(&slack, SLACK_PATH, 1, "the slack message").await;
    let text = got[0].json()["text"].as_str().unwrap().to_string();
    let commit = deployed["commit"].as_str().unwrap();
    for needle in ["shop/web", "deployed", &commit[..12], "nginx:1"] {
        assert!(text.contains(needle), "{needle} not in {text}");
    }
    assert!(
        text.contains(&format!("/api/history/{}|", deployed["id"])),
        "{text}"
    );

    // A failing source whose git_url carries credentials: every listener
    // of `failed` hears it, without the credentials.
    let broken = json!({"namespace": "shop", "deployment_name": "broken",
        "git_url": "https://robot:pw-s3cret@127.0.0.1:1/acme/app.git", "branch": "main",
        "deploy_path": "deploy", "container_name": "app", "image_version_file": "deploy/deployment.yaml"});
    let broken_id = create(&c, &broken).await;
    let failed = wait_received(&hook, "/failed-only", 1, "the failure at failed-only").await;
    let body = failed[0].json();
    assert_eq!(body["event"], "failed", "{body}");
    assert_eq!(body["source"]["id"], broken_id, "{body}");
    assert_eq!(body["entry"]["stage"], "git", "{body}");
    assert_eq!(
        body["source"]["git_url"],
        "https://***@127.0.0.1:1/acme/app.git"
    );
    assert!(
        failed[0].header("x-chump-signature-256").is_none(),
        "no secret, no signature"
    );
    assert_no_secret(
        "the failure event",
        &String::from_utf8_lossy(&failed[0].body),
    );
    let all = wait_for("the failure at all", WAIT, || async {
        hook.received_at("/all")
            .into_iter()
            .find(|r| r.json()["event"] == "failed")
    })
    .await;
    assert_no_secret("the failure event", &String::from_utf8_lossy(&all.body));

    // Filters and selectors: failed-only never got the deploy (it came
    // first), elsewhere (namespace other) got nothing.
    let events: Vec<Value> = hook
        .received_at("/failed-only")
        .iter()
        .map(|r| r.json()["event"].clone())
        .collect();
    assert!(events.iter().all(|e| e == "failed"), "{events:?}");
    assert!(hook.received_at("/elsewhere").is_empty());

    let list = notifications(&c).await;
    assert_eq!(
        target(&list, "all")["last"]["result"],
        "delivered",
        "{list}"
    );
    assert_eq!(target(&list, "elsewhere")["delivered"], 0, "{list}");
    assert_no_secret("GET /api/notifications", &list.to_string());
    assert_no_secret("the log", &c.logs());
}

/// The commit statuses one provider's receiver got for `commit`, as
/// (state, description).
fn statuses(recv: &Receiver, prefix: &str, commit: &str) -> Vec<(String, String)> {
    recv.received_at(prefix)
        .into_iter()
        .filter(|r| r.path.ends_with(&format!("/statuses/{commit}")))
        .map(|r| {
            let b = r.json();
            (
                b["state"].as_str().unwrap_or("").to_string(),
                b["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn states(recv: &Receiver, prefix: &str, commit: &str) -> Vec<String> {
    statuses(recv, prefix, commit)
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

async fn wait_states(recv: &Receiver, prefix: &str, commit: &str, want: &[&str]) {
    wait_for(
        &format!("{prefix} statuses {want:?} on {commit}"),
        WAIT,
        || async {
            let got = states(recv, prefix, commit);
            (got.len() >= want.len()).then_some(())
        },
    )
    .await;
    assert_eq!(states(recv, prefix, commit), want, "{prefix} on {commit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_statuses_on_github_gitlab_and_gitea_for_a_deploy_a_failure_and_a_rollback() {
    const BAD: &str = "nginx:no-such-tag";
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour(BAD, PodBehaviour::ImagePullBackOff);
    let api = Receiver::start(Answer::Status(201)).await;
    let file = config_file(
        &env,
        "notify.toml",
        &format!(
            "timeout = \"3s\"\n\
             [[targets]]\nname = \"github\"\ntype = \"commit_status\"\nprovider = \"github\"\napi_url = \"{gh}\"\ntoken_env = \"TEST_GH_TOKEN\"\n\
             [[targets]]\nname = \"gitlab\"\ntype = \"commit_status\"\nprovider = \"gitlab\"\napi_url = \"{gl}\"\ntoken = \"{GL_TOKEN}\"\n\
             [[targets]]\nname = \"gitea\"\ntype = \"commit_status\"\nprovider = \"gitea\"\napi_url = \"{gt}\"\ntoken = \"{GT_TOKEN}\"\n\
             [targets.selector]\ngit_hosts = [\"127.0.0.1\"]\n\
             [[targets]]\nname = \"not-ours\"\ntype = \"commit_status\"\nprovider = \"github\"\napi_url = \"{other}\"\ntoken = \"x-other\"\n\
             [targets.selector]\ngit_hosts = [\"github.com\"]\n",
            gh = api.url("/gh"),
            gl = api.url("/gl/api/v4/"),
            gt = api.url("/gt/api/v1"),
            other = api.url("/other"),
        ),
    );
    env.app_repo("acme/app", "shop", "web", "nginx:1");
    let c = env.chump_with(
        env.options()
            .env("CHUMP_NOTIFY_CONFIG", file.display().to_string())
            .env("TEST_GH_TOKEN", GH_TOKEN)
            .env("CHUMP_ROLLOUT_TIMEOUT", "60"),
    );
    let id = create(&c, &env.source("acme/app", "shop", "web")).await;
    let good = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let good_commit = good["commit"].as_str().unwrap().to_string();

    // A deploy: pending, then success — on each provider's API.
    for prefix in ["/gh", "/gl", "/gt"] {
        wait_states(&api, prefix, &good_commit, &["pending", "success"]).await;
    }
    let gh = api.received_at("/gh");
    assert_eq!(gh[0].method, "POST");
    assert_eq!(
        gh[0].path,
        format!("/gh/repos/acme/app/statuses/{good_commit}")
    );
    assert_eq!(
        gh[0].header("authorization"),
        Some(format!("Bearer {GH_TOKEN}").as_str())
    );
    let body = gh[1].json();
    assert_eq!(body["state"], "success", "{body}");
    assert_eq!(body["context"], "chump/shop/web", "{body}");
    assert_eq!(body["description"], "deployed nginx:1", "{body}");
    assert_eq!(
        body["target_url"],
        c.url(&format!("/api/history/{}", good["id"])),
        "{body}"
    );
    let gl = api.received_at("/gl");
    assert_eq!(gl[0].method, "POST");
    assert_eq!(
        gl[0].path,
        format!("/gl/api/v4/projects/acme%2Fapp/statuses/{good_commit}")
    );
    assert_eq!(gl[0].header("private-token"), Some(GL_TOKEN));
    assert!(gl[0].header("authorization").is_none());
    let body = gl[1].json();
    assert_eq!(body["state"], "success", "{body}");
    assert_eq!(body["name"], "chump/shop/web", "{body}");
    let gt = api.received_at("/gt");
    assert_eq!(
        gt[0].path,
        format!("/gt/api/v1/repos/acme/app/statuses/{good_commit}")
    );
    assert_eq!(
        gt[0].header("authorization"),
        Some(format!("token {GT_TOKEN}").as_str())
    );
    assert_eq!(gt[1].json()["context"], "chump/shop/web");
    assert_eq!(gt[0].json()["state"], "pending");
    assert_eq!(gt[0].json()["description"], "deploying");

    // A failed deploy: pending, then failure (GitLab: failed).
    let bad_commit = env
        .git
        .commit_files("acme/app", "main", app_files("shop", "web", BAD), "bad");
    let bad = wait_history(&c, id, "the bad deploy failing", |e| {
        e["outcome"] == "failed" && e["commit"] == bad_commit.as_str()
    })
    .await;
    assert_eq!(bad["stage"], "rollout", "{bad}");
    wait_states(&api, "/gh", &bad_commit, &["pending", "failure"]).await;
    wait_states(&api, "/gl", &bad_commit, &["pending", "failed"]).await;
    wait_states(&api, "/gt", &bad_commit, &["pending", "failure"]).await;
    let (_, description) = statuses(&api, "/gh", &bad_commit).pop().unwrap();
    assert!(
        description.starts_with("failed at rollout: "),
        "{description}"
    );
    assert!(description.chars().count() <= 140, "{description}");

    // A rollback to the good deploy: pending, then success on its commit.
    let resp = Client::new()
        .post(c.url(&format!("/api/sources/{id}/rollback")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let rolled = wait_history(&c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
    wait_states(
        &api,
        "/gh",
        &good_commit,
        &["pending", "success", "pending", "success"],
    )
    .await;
    wait_states(
        &api,
        "/gl",
        &good_commit,
        &["pending", "success", "pending", "success"],
    )
    .await;
    wait_states(
        &api,
        "/gt",
        &good_commit,
        &["pending", "success", "pending", "success"],
    )
    .await;
    let gh = statuses(&api, "/gh", &good_commit);
    assert_eq!(gh[2].1, format!("rolling back to entry {}", good["id"]));
    assert!(gh[3].1.starts_with("rolled back to entry"), "{:?}", gh[3]);
    let last = api
        .received_at("/gh")
        .into_iter()
        .rev()
        .find(|r| r.json()["state"] == "success")
        .unwrap();
    assert_eq!(
        last.json()["target_url"],
        c.url(&format!("/api/history/{}", rolled["id"]))
    );

    // The selector kept the github.com target out of it.
    assert!(api.received_at("/other").is_empty());
    assert_no_secret("the log", &c.logs());
    assert_no_secret(
        "GET /api/notifications",
        &notifications(&c).await.to_string(),
    );
}

/// The number after `name` in the metrics text (0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_receiver_delays_no_check_and_is_retried_then_given_up() {
    let env = Env::new().await;
    env.app_repo("plain", "plain", "web", "nginx:1");
    env.app_repo("acme/app", "shop", "web", "nginx:1");

    // Without notifications: how long a first deploy takes.
    let plain_dir = env.dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = env.chump_with(env.options().dir(&plain_dir));
    let pid = create(&plain, &env.source("plain", "plain", "web")).await;
    let plain_entry = wait_history(&plain, pid, "the plain deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    drop(plain);

    // With a commit status API that never answers and a webhook that
    // answers 500.
    let hung = Receiver::start(Answer::Hang).await;
    let broken = Receiver::start(Answer::Status(500)).await;
    let file = config_file(
        &env,
        "notify.yaml",
        &format!(
            "targets:\n\
             - name: hung\n  type: commit_status\n  provider: github\n  api_url: {hung}\n  token: {GH_TOKEN}\n  timeout: 2s\n  retries: 2\n  backoff: 200ms\n\
             - name: broken\n  type: webhook\n  url: {broken}\n  secret: {WEBHOOK_SECRET}\n  timeout: 2s\n  retries: 3\n  backoff: 100ms\n",
            hung = hung.url("/api"),
            broken = broken.url("/hook"),
        ),
    );
    let c = env.chump_with(
        env.options()
            .env("CHUMP_NOTIFY_CONFIG", file.display().to_string()),
    );
    let id = create(&c, &env.source("acme/app", "shop", "web")).await;
    let entry = wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    let seen_at = Instant::now();
    // The deploy is recorded while the `pending` status it announced is
    // still being attempted: it did not wait for it (one delivery with its
    // retries takes at least 3 × 2 s + 0.6 s).
    let list = notifications(&c).await;
    let t = target(&list, "hung");
    let attempts_then = hung.received().len();
    assert!(
        attempts_then >= 1,
        "the pending status was sent during the deploy"
    );
    assert!(
        attempts_then < 3,
        "the deploy was recorded before the delivery gave up ({attempts_then} attempts)"
    );
    assert_eq!(t["failed"], 0, "{t}");
    assert!(t["queued"].as_u64().unwrap() >= 1, "{t}");
    let first_attempt = hung.received()[0].at;
    println!(
        "deploy check: {:.3} s without notifications, {:.3} s with a hanging receiver; \
         recorded {:.3} s after the first (hanging) delivery attempt started",
        seconds(&plain_entry),
        seconds(&entry),
        seen_at.duration_since(first_attempt).as_secs_f64()
    );

    // Retried, then given up: 1 + 2 attempts for `pending` and for
    // `success` (hung), 1 + 3 for the deploy event (broken).
    wait_for("the hanging target to give up twice", WAIT, || async {
        let list = notifications(&c).await;
        (target(&list, "hung")["failed"] == 2).then_some(())
    })
    .await;
    wait_for("the failing target to give up", WAIT, || async {
        let list = notifications(&c).await;
        (target(&list, "broken")["failed"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        hung.received().len(),
        6,
        "3 attempts for each of two statuses"
    );
    let states: Vec<Value> = hung
        .received()
        .iter()
        .map(|r| r.json()["state"].clone())
        .collect();
    assert_eq!(
        states,
        ["pending", "pending", "pending", "success", "success", "success"]
    );
    assert_eq!(broken.received().len(), 4, "1 attempt and 3 retries");
    // The backoff doubles: 100 ms, 200 ms, 400 ms between attempts.
    let at: Vec<Instant> = broken.received().iter().map(|r| r.at).collect();
    for (i, min) in [90u64, 190, 390].iter().enumerate() {
        let gap = at[i + 1].duration_since(at[i]);
        assert!(gap >= Duration::from_millis(*min), "gap {i}: {gap:?}");
    }
    let list = notifications(&c).await;
    let t = target(&list, "hung");
    assert_eq!(t["last"]["result"], "failed", "{t}");
    assert_eq!(t["last"]["error"], "no answer within 2000 ms", "{t}");
    let b = target(&list, "broken");
    assert_eq!(b["last"]["status"], 500, "{b}");

    let text = Client::new()
        .get(c.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &text,
            "chump_notifications_total{target=\"hung\",result=\"failed\"}"
        ),
        2,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "chump_notifications_total{target=\"hung\",result=\"retried\"}"
        ),
        4
    );
    assert_eq!(
        metric(
            &text,
            "chump_notifications_total{target=\"broken\",result=\"retried\"}"
        ),
        3
    );

    // Checks go on at their interval while deliveries fail.
    let last = get(&c, &format!("/api/sources/{id}/status")).await["last_checked_at"]
        .as_str()
        .unwrap()
        .to_string();
    wait_checked_after(&c, id, &last).await;

    // Failures are logged once per outage per target, and without secrets.
    let logs = c.logs();
    let failing = |name: &str| {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["target_name"] == name
                    && v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("notification target failing"))
            })
            .count()
    };
    assert_eq!(failing("hung"), 1, "{logs}");
    assert_eq!(failing("broken"), 1, "{logs}");
    assert_no_secret("the log", &logs);
}

#[test]
fn a_bad_config_file_stops_serve_with_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "bad.yaml",
            format!("targets:\n- name: hook\n  type: webhook\n  secret: {WEBHOOK_SECRET}\n"),
            "targets[0].url: required",
        ),
        (
            "bad.yml",
            format!("targets:\n- name: gh\n  type: commit_status\n  provider: bitbucket\n  token: {GH_TOKEN}\n"),
            "targets[0].provider: 'bitbucket' is not github, gitlab or gitea",
        ),
        (
            "bad.toml",
            "[[targets]]\nname = \"gh\"\ntype = \"commit_status\"\nprovider = \"github\"\ntoken_env = \"NO_SUCH_TOKEN_VAR\"\n".to_string(),
            "targets[0].token_env: the environment variable NO_SUCH_TOKEN_VAR is not set",
        ),
        (
            "events.yaml",
            format!("targets:\n- name: chat\n  type: slack\n  url: https://hooks.slack.com{SLACK_PATH}\n  events: [deployed, exploded]\n"),
            "targets[0].events[1]: 'exploded' is not one of",
        ),
        ("broken.yaml", "targets: [\n".to_string(), "broken.yaml: "),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let out = chump_command()
            .arg("serve")
            .env("CHUMP_BIND", "127.0.0.1:0")
            .env(
                "CHUMP_DATABASE",
                format!("sqlite://{}", dir.path().join("c.db").display()),
            )
            .env("CHUMP_NOTIFY_CONFIG", &path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("CHUMP_NOTIFY_CONFIG"), "{stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(want), "{want} not in {stderr}");
        assert_no_secret("the startup error", &stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_masks_targets_and_the_cli_lists_and_tests_them() {
    let env = Env::new().await;
    let hook = Receiver::start(Answer::Status(204)).await;
    let slack = Receiver::start(Answer::Status(200)).await;
    let down = Receiver::start(Answer::Status(503)).await;
    let file = config_file(
        &env,
        "notify.yaml",
        &format!(
            "public_url: https://chump.example.com/\n\
             targets:\n\
             - name: hook\n  type: webhook\n  url: {hook}\n  secret: {WEBHOOK_SECRET}\n  events: [failed, recovered]\n  selector:\n    namespaces: [shop]\n    sources: [7]\n\
             - name: chat\n  type: slack\n  url: {slack}\n\
             - name: down\n  type: webhook\n  url: {down}\n  retries: 0\n\
             - name: gh\n  type: commit_status\n  provider: github\n  token: {GH_TOKEN}\n",
            hook = hook.url("/deliver?key=querysecret"),
            slack = slack.url(SLACK_PATH),
            down = down.url("/down"),
        ),
    );
    let c = env.chump_with(
        env.options()
            .env("CHUMP_NOTIFY_CONFIG", file.display().to_string())
            .env("CHUMP_API_TOKEN", "full-token-123456")
            .env("CHUMP_API_READ_TOKEN", "read-token-123456"),
    );
    let http = Client::new();
    let answer = |token: &'static str, path: &str, post: bool| {
        let req = if post {
            http.post(c.url(path))
        } else {
            http.get(c.url(path))
        };
        req.bearer_auth(token).send()
    };

    // The list: masked URLs, no secret, the settings.
    let resp = answer("read-token-123456", "/api/notifications", false)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert_no_secret("GET /api/notifications", &text);
    assert!(!text.contains("querysecret"), "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let t = target(&list, "hook");
    assert_eq!(t["type"], "webhook");
    assert_eq!(t["url"], format!("http://{}/***", hook.addr), "{t}");
    assert_eq!(t["signed"], true);
    assert_eq!(t["events"], json!(["failed", "recovered"]));
    assert_eq!(t["selector"]["namespaces"], json!(["shop"]));
    assert_eq!(t["selector"]["sources"], json!([7]));
    assert!(t["last"].is_null(), "{t}");
    assert_eq!(
        target(&list, "chat")["url"],
        format!("http://{}/***", slack.addr)
    );
    let gh = target(&list, "gh");
    assert_eq!(gh["url"], "https://api.github.com");
    assert_eq!(gh["provider"], "github");

    // Testing takes the full token.
    let resp = answer("read-token-123456", "/api/notifications/hook/test", true)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(hook.received().is_empty());

    // The CLI: list, then test (delivered, signed).
    let cli = |args: &[&str]| {
        chump_command()
            .env("CHUMP_URL", format!("http://{}", c.addr))
            .env("CHUMP_API_TOKEN", "full-token-123456")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = cli(&["notify", "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "NAME",
        "hook",
        "webhook",
        "chat",
        "slack",
        "commit_status/github",
        "failed,recovered",
    ] {
        assert!(stdout.contains(needle), "{needle} not in\n{stdout}");
    }
    assert_no_secret("chump notify list", &stdout);

    let out = cli(&["notify", "test", "hook"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "hook: delivered (HTTP 204)\n");
    let got = hook.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/deliver?key=querysecret");
    assert_eq!(got[0].json()["event"], "test");
    assert_eq!(
        got[0].header("x-chump-signature-256").unwrap(),
        format!("sha256={}", hmac_hex(WEBHOOK_SECRET, &got[0].body))
    );
    let out = cli(&["notify", "test", "chat"]);
    assert!(out.status.success());
    let text = slack.received()[0].json()["text"].clone();
    assert_eq!(text, "chump: a test notification");

    // A receiver that fails: exit 1 and why; commit statuses and unknown
    // targets cannot be tested.
    let out = cli(&["notify", "test", "down"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not delivered: the receiver answered 503"),
        "{stderr}"
    );
    let out = cli(&["notify", "test", "gh"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("a commit status needs a commit"),
        "{stderr}"
    );
    let resp = answer("full-token-123456", "/api/notifications/nope/test", true)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // The last results show, still masked.
    let resp = answer("full-token-123456", "/api/notifications", false)
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert_no_secret("GET /api/notifications", &text);
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(target(&list, "hook")["last"]["result"], "delivered");
    assert_eq!(target(&list, "hook")["last"]["status"], 204);
    assert_eq!(target(&list, "down")["last"]["result"], "failed");
    assert_no_secret("the log", &c.logs());
    assert!(!c.logs().contains("querysecret"));
}
