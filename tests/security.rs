//! Locking chump down (issue #6), through the real binary: tokens, refusing
//! to run open on the network, secrets that never leak, slow clients, and
//! faults (store locked, cluster or git server gone mid-way, kill -9).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::chump::{chump_command, wait_for, Chump, ChumpOptions};
use support::env::*;
use support::git_server::{incompressible, CutProxy};
use support::kube_api::RolloutMode;

const TOKEN: &str = "full-access-token-0123456789";
const READ_TOKEN: &str = "read-only-token-0123456789";

fn seed() -> Value {
    json!({"namespace": "production", "deployment_name": "helloworld",
           "git_url": "https://github.com/stvnorg/helloworld.git", "branch": "master",
           "deploy_path": "./deploy/helloworld/deployment.yaml", "container_name": "helloworld",
           "image_version_file": "./deploy/helloworld/deployment.yaml"})
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

#[tokio::test]
async fn read_only_token_reads_but_cannot_write() {
    let c = Chump::start_with(
        ChumpOptions::default()
            .env("CHUMP_API_TOKEN", TOKEN)
            .env("CHUMP_API_READ_TOKEN", READ_TOKEN),
    );
    let http = Client::new();
    let (s, b) = send(
        http.post(c.url("/api/sources"))
            .bearer_auth(TOKEN)
            .json(&seed()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for path in [
        "/api/sources",
        "/api/sources/1",
        "/api/sources/1/status",
        "/api/history",
        "/metrics",
    ] {
        let resp = http
            .get(c.url(path))
            .bearer_auth(READ_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    for (method, path) in [
        (reqwest::Method::POST, "/api/sources"),
        (reqwest::Method::PATCH, "/api/sources/1"),
        (reqwest::Method::DELETE, "/api/sources/1/delete"),
        (reqwest::Method::POST, "/api/sources/1/check"),
    ] {
        let (s, b) = send(
            http.request(method.clone(), c.url(path))
                .bearer_auth(READ_TOKEN)
                .json(&json!({"branch": "x"})),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {b}");
        assert!(b["msg"].as_str().unwrap().contains("read-only"));
        let (s, _) = send(
            http.request(method.clone(), c.url(path))
                .json(&json!({"branch": "x"})),
        )
        .await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
    }
    // Nothing changed.
    let (_, b) = send(http.get(c.url("/api/sources/1")).bearer_auth(TOKEN)).await;
    assert_eq!(b["branch"], "master");
    // Probes need no token.
    assert_eq!(
        http.get(c.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn token_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let c = Chump::start_with(
        ChumpOptions::default().env("CHUMP_API_TOKEN_FILE", file.display().to_string()),
    );
    let http = Client::new();
    assert_eq!(
        http.get(c.url("/api/sources"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http.get(c.url("/api/sources"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let out = chump_command()
        .arg("serve")
        .env("CHUMP_BIND", "127.0.0.1:0")
        .env("CHUMP_API_TOKEN_FILE", dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CHUMP_API_TOKEN_FILE"));
}

#[test]
fn refuses_to_listen_beyond_loopback_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = chump_command()
        .arg("serve")
        .env("CHUMP_BIND", "0.0.0.0:0")
        .env(
            "CHUMP_DATABASE",
            format!("sqlite://{}", dir.path().join("a.db").display()),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CHUMP_API_TOKEN") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    assert!(!dir.path().join("a.db").exists(), "nothing was started");

    // With the explicit flag, it starts (and says so).
    let c = Chump::start_with(
        ChumpOptions::default()
            .env("CHUMP_INSECURE_NO_AUTH", "true")
            .dir(dir.path()),
    );
    drop(c);
    let mut child = chump_command()
        .args(["serve", "--insecure-no-auth", "true"])
        .env("CHUMP_BIND", "0.0.0.0:0")
        .env(
            "CHUMP_DATABASE",
            format!("sqlite://{}", dir.path().join("b.db").display()),
        )
        .env("CHUMP_WORKDIR", dir.path().join("w"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    let mut stderr = child.stderr.take().unwrap();
    let mut buf = [0u8; 4096];
    while !seen.contains("chump listening") && Instant::now() < deadline {
        let n = stderr.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("no token"), "a warning is logged: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_the_process() {
    let env = Env::new().await;
    let git_password = "gitpass-Zq81xk";
    let webhook_secret = "hooksecret-Pp02";
    let opts = env
        .options()
        .env("CHUMP_API_TOKEN", TOKEN)
        .env("CHUMP_WEBHOOK_SECRET", webhook_secret)
        .env("CHUMP_INTERVAL", "1")
        .env("RUST_LOG", "trace");
    let c = env.chump_with(opts);
    let http = Client::new();
    let mut source = seed();
    source["git_url"] = json!(format!(
        "https://deployer:{git_password}@127.0.0.1:{}/org/app.git",
        support::git_server::free_port()
    ));
    let (s, created) = send(
        http.post(c.url("/api/sources"))
            .bearer_auth(TOKEN)
            .json(&source),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["source"]["id"].as_i64().unwrap();
    // Its checks fail at the git stage, with a message about the URL.
    wait_for("a git failure", WAIT, || async {
        let (_, h) = send(
            http.get(c.url(&format!("/api/sources/{id}/history")))
                .bearer_auth(TOKEN),
        )
        .await;
        h["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["stage"] == "git")
            .then_some(())
    })
    .await;
    // A signed webhook, a bad token, and the rest of the API.
    let body = serde_json::to_vec(
        &json!({"repository": "https://127.0.0.1/org/app.git", "branch": "master"}),
    )
    .unwrap();
    let sig = format!(
        "sha256={}",
        chump_jobs::webhook::sign(webhook_secret.as_bytes(), &body)
    );
    let resp = http
        .post(c.url("/api/webhooks/generic"))
        .header("x-chump-signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let _ = http
        .get(c.url("/api/sources"))
        .bearer_auth("wrong-token-but-long-enough")
        .send()
        .await
        .unwrap();

    let mut seen = String::new();
    for path in [
        "/api/sources",
        &format!("/api/sources/{id}"),
        &format!("/api/sources/{id}/status"),
        "/api/history",
        "/metrics",
    ] {
        let resp = http
            .get(c.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        seen.push_str(&resp.text().await.unwrap());
    }
    assert!(
        seen.contains("https://***@127.0.0.1"),
        "the URL is shown masked: {seen}"
    );
    assert!(seen.contains("\"stage\":\"git\""));
    let logs = c.logs();
    assert!(logs.lines().count() > 20, "trace logs were written");
    for secret in [git_password, TOKEN, webhook_secret] {
        assert!(!seen.contains(secret), "{secret} leaked through the API");
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }

    // A database password never shows either, even when the connection fails.
    let db_password = "dbpass-Kk39Vv";
    let out = chump_command()
        .arg("serve")
        .env("CHUMP_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "trace")
        .env(
            "CHUMP_DATABASE",
            format!(
                "rethinkdb://admin:{db_password}@127.0.0.1:{}/chump",
                support::git_server::free_port()
            ),
        )
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(db_password),
        "the database password leaked: {all}"
    );
}

#[tokio::test]
async fn slow_clients_do_not_starve_the_api() {
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_HEADER_TIMEOUT", "2"));
    // 200 connections that send half a request line and then nothing.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(c.addr).unwrap();
        s.write_all(b"GET /api/sources HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        slow.push(s);
    }
    // The API still answers at once.
    let started = Instant::now();
    let resp = Client::new()
        .get(c.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // And the slow ones are dropped once their header time is up.
    let mut s = slow.pop().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a slow client was kept {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_answers_503_and_recovers_with_nothing_lost() {
    let c = Chump::start();
    let http = Client::new();
    let (s, _) = send(http.post(c.url("/api/sources")).json(&seed())).await;
    assert_eq!(s, StatusCode::CREATED);
    // Another program takes the database's write lock and keeps it.
    let db = c.dir.join("chump.db");
    let mut locker = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\nsys.stdin.read()",
            db.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 6];
    locker
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"locked");

    let mut second = seed();
    second["container_name"] = json!("second");
    let (s, b) = send(http.post(c.url("/api/sources")).json(&second)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(b["msg"].as_str().unwrap().contains("unavailable"), "{b}");
    // Reads still work meanwhile (WAL).
    let (s, _) = send(http.get(c.url("/api/sources/1"))).await;
    assert_eq!(s, StatusCode::OK);

    drop(locker.stdin.take());
    let _ = locker.wait();
    let (s, b) = send(http.post(c.url("/api/sources")).json(&second)).await;
    assert_eq!(s, StatusCode::CREATED, "recovered: {b}");
    let (_, list) = send(http.get(c.url("/api/sources"))).await;
    assert_eq!(list["sources"].as_array().unwrap().len(), 2);
    assert!(!c.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_gone_mid_apply_is_a_failed_apply_then_a_retry() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.set_delay(Duration::from_millis(300));
    let c = env.chump();
    let id = create(&c, &env.source("web", "shop", "web")).await;
    // The first apply PATCH arrives: take the API server away.
    wait_for("the first apply", WAIT, || async {
        env.kube
            .requests()
            .iter()
            .any(|r| r.method == "PATCH")
            .then_some(())
    })
    .await;
    env.kube.stop().await;
    let e = wait_history(&c, id, "a failed apply", |e| e["outcome"] == "failed").await;
    assert_eq!(e["stage"], "apply", "{e}");
    env.kube.set_delay(Duration::ZERO);
    env.kube.restart().await;
    let ok = wait_history(&c, id, "the retry", |e| e["outcome"] == "deployed").await;
    assert!(ok["id"].as_i64() > e["id"].as_i64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_server_cut_mid_fetch_fails_then_recovers() {
    let env = Env::new().await;
    env.app_repo("big", "shop", "big", "nginx:1");
    env.git.commit_files(
        "big",
        "main",
        [("deploy/blob.bin", incompressible(2 << 20, 7))],
        "big blob",
    );
    let proxy = CutProxy::start(env.git.port());
    proxy.set_cut_after(Some(64 * 1024));
    let c = env.chump();
    let mut source = env.source("big", "shop", "big");
    source["git_url"] = json!(proxy.url("big"));
    let id = create(&c, &source).await;
    let e = wait_history(&c, id, "a git failure", |e| e["outcome"] == "failed").await;
    assert_eq!(e["stage"], "git", "{e}");
    proxy.set_cut_after(None);
    let ok = wait_history(&c, id, "the deploy once the server is whole", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(ok["commit"], env.git.head("big", "main"));
    assert_eq!(
        env.deployed_image("shop", "big").as_deref(),
        Some("nginx:1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_deploy_then_restart() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.set_rollout(RolloutMode::Never);
    let mut c = env.chump_with(env.options().env("CHUMP_ROLLOUT_TIMEOUT", "60"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_for("the deploy in flight", WAIT, || async {
        let st = get(&c, &format!("/api/sources/{id}/status")).await;
        (st["in_flight"] == true && env.deployed_image("shop", "web").is_some()).then_some(())
    })
    .await;
    c.kill();
    drop(c);
    env.kube.set_rollout(RolloutMode::Immediate);
    env.kube.set_image("shop", "web", "app", "nginx:0");
    let c = env.chump();
    // Checked again at once (its lease died with the process), and deployed.
    let e = wait_history(&c, id, "the deploy after the crash", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(e["running_image"], "nginx:0");
    let mut other = env.source("web", "shop", "web");
    other["container_name"] = json!("sidecar");
    assert_eq!(create(&c, &other).await, id + 1, "ids stay unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_namespace_refuses_other_objects_and_writes_nothing() {
    let env = Env::new().await;
    // The app carries a Namespace (cluster-scoped): refused under restriction.
    env.app_repo("web", "shop", "web", "nginx:1");
    env.kube.put_namespace("shop");
    let c = env.chump_with(env.options().env("CHUMP_RESTRICT_NAMESPACE", "true"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let e = wait_history(&c, id, "a refused apply", |e| e["outcome"] == "failed").await;
    assert_eq!(e["stage"], "apply");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("Namespace") && msg.contains("shop"), "{msg}");
    assert!(
        env.kube.writes().is_empty(),
        "nothing was applied: {:?}",
        env.kube.writes()
    );
}
