//! Credentials stay with their source, ssh for real, HTTPS to private hosts
//! (issue 15): the real `chump serve` against a real HTTPS git server (basic
//! auth, a private CA: `git http-backend` behind TLS) and a real OpenSSH
//! `sshd`, deploying to the Kubernetes API stand-in.

mod support;

use std::path::Path;

use serde_json::{json, Value};
use support::chump::Chump;
use support::env::*;
use support::https_git::HttpsGit;
use support::sshd::Sshd;

const RIGHT: &str = "right-token-7f3a9c";
const WRONG: &str = "wrong-token-2b8d41";

/// A repository `repo` with two apps: `apps/<a>` in namespace `<a>` and
/// `apps/<b>` in namespace `<b>`, each a Deployment named `web`.
fn two_apps(env: &Env, repo: &str, a: &str, b: &str, image: &str) -> String {
    let mut files = Vec::new();
    for ns in [a, b] {
        files.push((
            format!("apps/{ns}/kustomization.yaml"),
            "resources:\n- namespace.yaml\n- deployment.yaml\n".to_string(),
        ));
        files.push((
            format!("apps/{ns}/namespace.yaml"),
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
        ));
        files.push((
            format!("apps/{ns}/deployment.yaml"),
            deployment(ns, "web", image),
        ));
    }
    env.git.create_repo(repo, "main", files)
}

fn app_source(url: &str, ns: &str) -> Value {
    json!({"namespace": ns, "deployment_name": "web", "git_url": url, "branch": "main",
           "deploy_path": format!("apps/{ns}"), "container_name": "app",
           "image_version_file": format!("apps/{ns}/deployment.yaml")})
}

fn repos_root(env: &Env) -> std::path::PathBuf {
    env.git.repo_path("x").parent().unwrap().to_path_buf()
}

async fn wait_git_failure(c: &Chump, id: i64) -> Value {
    let failure = wait_history(c, id, "a failure at stage git", |e| {
        e["outcome"] == "failed" && e["stage"] == "git"
    })
    .await;
    eprintln!("source {id}: {}", failure["message"]);
    failure
}

/// Everything the API says about the sources, as text.
async fn api_text(c: &Chump, ids: &[i64]) -> String {
    let mut text = get(c, "/api/sources").await.to_string();
    for id in ids {
        text.push_str(&get(c, &format!("/api/sources/{id}")).await.to_string());
        text.push_str(
            &get(c, &format!("/api/sources/{id}/status"))
                .await
                .to_string(),
        );
        text.push_str(
            &get(c, &format!("/api/sources/{id}/history"))
                .await
                .to_string(),
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_gets_nothing_even_while_the_right_one_shares_the_repository() {
    let env = Env::new().await;
    two_apps(
        &env,
        "private",
        "team-a",
        "team-b",
        "registry.local/web:1.0.0",
    );
    let server = HttpsGit::start(&repos_root(&env), "deployer", RIGHT);
    let ca = server.ca_file(env.dir.path());
    let c = env.chump_with(env.options().env("SSL_CERT_FILE", ca.display().to_string()));

    // The right token deploys.
    let right = create(
        &c,
        &app_source(&server.url_with("deployer", RIGHT, "private"), "team-a"),
    )
    .await;
    let entry = wait_history(&c, right, "the right token's deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(
        env.deployed_image("team-a", "web").as_deref(),
        Some("registry.local/web:1.0.0"),
        "{entry}"
    );

    // Same repository URL, wrong token: refused by the server, nothing
    // deployed, however much the right token's source has cached.
    let refused_before = server.requests().iter().filter(|r| !r.authorized).count();
    let wrong = create(
        &c,
        &app_source(&server.url_with("deployer", WRONG, "private"), "team-b"),
    )
    .await;
    let failure = wait_git_failure(&c, wrong).await;
    let message = failure["message"].as_str().unwrap();
    assert!(message.contains("authentication failed"), "{failure}");
    assert!(
        message.contains(&format!("127.0.0.1:{}", server.port)),
        "names the host: {failure}"
    );
    assert!(failure["commit"].is_null(), "no commit was read: {failure}");
    assert!(env
        .kube
        .get_object("apps/v1", "deployments", Some("team-b"), "web")
        .is_none());
    assert!(env
        .kube
        .get_object("v1", "namespaces", None, "team-b")
        .is_none());
    let refused: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| !r.authorized)
        .collect();
    assert!(
        refused.len() > refused_before
            && refused
                .iter()
                .any(|r| r.password.as_deref() == Some(WRONG) && r.status == 401),
        "the server was asked with the wrong token and refused it: {refused:?}"
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.password.as_deref() != Some(WRONG) || !r.authorized),
        "the wrong token was never accepted"
    );

    // A bump over HTTPS deploys for the right token; the wrong one keeps
    // failing at git (its status says so).
    let bumped = env.git.commit_files(
        "private",
        "main",
        [
            (
                "apps/team-a/deployment.yaml",
                deployment("team-a", "web", "registry.local/web:1.1.0"),
            ),
            (
                "apps/team-b/deployment.yaml",
                deployment("team-b", "web", "registry.local/web:1.1.0"),
            ),
        ],
        "bump",
    );
    wait_history(&c, right, "the bump's deploy", |e| {
        e["commit"] == bumped && e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(
        env.deployed_image("team-a", "web").as_deref(),
        Some("registry.local/web:1.1.0")
    );
    let failure = wait_history(&c, wrong, "the wrong token failing again", |e| {
        e["stage"] == "git" && e["id"] != failure["id"]
    })
    .await;
    let st = get(&c, &format!("/api/sources/{wrong}/status")).await;
    assert_eq!(st["last_outcome"], "failed", "{st} {failure}");
    assert!(env
        .kube
        .get_object("apps/v1", "deployments", Some("team-b"), "web")
        .is_none());

    // No token anywhere in what chump shows.
    let text = api_text(&c, &[right, wrong]).await + &c.logs();
    for secret in [RIGHT, WRONG] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert!(
        text.contains("https://***@127.0.0.1"),
        "URLs are shown masked"
    );
    // Nor in the cache directory's names or notes.
    let mut stack = vec![c.dir.join("work")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.to_string_lossy().into_owned();
            assert!(!name.contains(RIGHT) && !name.contains(WRONG), "{name}");
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "source") {
                let note = std::fs::read_to_string(&path).unwrap();
                assert!(!note.contains(RIGHT) && !note.contains(WRONG), "{note}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_git_with_the_reason() {
    let env = Env::new().await;
    two_apps(
        &env,
        "private",
        "team-a",
        "team-b",
        "registry.local/web:1.0.0",
    );
    let server = HttpsGit::start(&repos_root(&env), "deployer", RIGHT);
    // No SSL_CERT_FILE: the platform's roots, which do not hold the test CA.
    let c = env.chump_with(env.options().command(|cmd| {
        cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    }));
    let id = create(
        &c,
        &app_source(&server.url_with("deployer", RIGHT, "private"), "team-a"),
    )
    .await;
    let failure = wait_git_failure(&c, id).await;
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("certificate not trusted for host 127.0.0.1")
            && message.contains("is not trusted"),
        "{failure}"
    );
    assert!(!message.contains(RIGHT), "{failure}");
    assert!(
        server.requests().is_empty(),
        "no request got past the TLS handshake"
    );
    assert!(env
        .kube
        .get_object("apps/v1", "deployments", Some("team-a"), "web")
        .is_none());
}

/// The sources of one app repository served over ssh at `url`.
fn ssh_source(url: &str, ns: &str) -> Value {
    app_source(url, ns)
}

fn ssh_chump(env: &Env, key: &Path, known_hosts: Option<&Path>) -> Chump {
    let mut options = env
        .options()
        .env("CHUMP_SSH_KEY", key.display().to_string());
    if let Some(k) = known_hosts {
        options = options.env("CHUMP_SSH_KNOWN_HOSTS", k.display().to_string());
    }
    env.chump_with(options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_urls_deploy_with_the_key_and_known_hosts() {
    let Some(sshd) = Sshd::start("127.0.0.1", 0) else {
        return;
    };
    let env = Env::new().await;
    let first = two_apps(
        &env,
        "over-ssh",
        "ssh-a",
        "ssh-b",
        "registry.local/web:2.0.0",
    );
    let c = ssh_chump(&env, &sshd.client_key, Some(&sshd.known_hosts));
    let url = sshd.url(&env.git.repo_path("over-ssh"));
    assert!(url.starts_with("ssh://"), "{url}");
    let id = create(&c, &ssh_source(&url, "ssh-a")).await;
    let entry = wait_history(&c, id, "a deploy over ssh", |e| e["outcome"] == "deployed").await;
    assert_eq!(entry["commit"], first, "{entry}");
    assert_eq!(
        env.deployed_image("ssh-a", "web").as_deref(),
        Some("registry.local/web:2.0.0")
    );
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    // A bump over ssh deploys too (a fetch on top of the cached repository).
    let second = env.git.commit_files(
        "over-ssh",
        "main",
        [(
            "apps/ssh-a/deployment.yaml",
            deployment("ssh-a", "web", "registry.local/web:2.1.0"),
        )],
        "bump",
    );
    wait_history(&c, id, "the bump over ssh", |e| {
        e["commit"] == second && e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(
        env.deployed_image("ssh-a", "web").as_deref(),
        Some("registry.local/web:2.1.0")
    );

    // A user the server does not let in: refused, at git, saying so.
    let stranger = url.replacen(&format!("ssh://{}@", sshd.user), "ssh://nobody-here@", 1);
    let id = create(&c, &ssh_source(&stranger, "ssh-b")).await;
    let failure = wait_git_failure(&c, id).await;
    assert!(
        failure["message"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{failure}"
    );
    assert!(env
        .kube
        .get_object("apps/v1", "deployments", Some("ssh-b"), "web")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_changed_ssh_host_keys_are_refused() {
    let Some(sshd) = Sshd::start("127.0.0.1", 0) else {
        return;
    };
    let env = Env::new().await;
    two_apps(
        &env,
        "over-ssh",
        "ssh-a",
        "ssh-b",
        "registry.local/web:2.0.0",
    );
    let url = sshd.url(&env.git.repo_path("over-ssh"));
    let expected = format!(
        "host key for 127.0.0.1 port {} is not known (CHUMP_SSH_KNOWN_HOSTS)",
        sshd.port
    );

    // No known hosts at all: every host is unknown.
    let c = ssh_chump(&env, &sshd.client_key, None);
    let id = create(&c, &ssh_source(&url, "ssh-a")).await;
    let failure = wait_git_failure(&c, id).await;
    assert!(
        failure["message"].as_str().unwrap().contains(&expected),
        "{failure}"
    );
    drop(c);

    // A known_hosts file with another key for this host: refused as well.
    let env2 = Env::new().await;
    two_apps(
        &env2,
        "over-ssh",
        "ssh-a",
        "ssh-b",
        "registry.local/web:2.0.0",
    );
    let wrong = sshd.wrong_known_hosts();
    let c = ssh_chump(&env2, &sshd.client_key, Some(&wrong));
    let url2 = sshd.url(&env2.git.repo_path("over-ssh"));
    let id = create(&c, &ssh_source(&url2, "ssh-a")).await;
    let failure = wait_git_failure(&c, id).await;
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("host key for 127.0.0.1") && message.contains("is not trusted"),
        "{failure}"
    );
    assert!(env
        .kube
        .get_object("apps/v1", "deployments", Some("ssh-a"), "web")
        .is_none());
    assert!(env2
        .kube
        .get_object("apps/v1", "deployments", Some("ssh-a"), "web")
        .is_none());
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "no login happened: {}",
        sshd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_like_urls_deploy_over_ssh() {
    // scp-like URLs (`user@host:path`) carry no port: ssh goes to port 22.
    // The test's sshd listens on port 22 of a loopback address of its own
    // (needs root, as on CI); elsewhere the test says why it is skipped.
    let addr = format!(
        "127.{}.{}.{}",
        1 + fastrand_u8() % 200,
        1 + fastrand_u8() % 200,
        2 + fastrand_u8() % 200
    );
    if !port_22_free(&addr) {
        eprintln!("skipping: cannot listen on {addr}:22 (not root, or port 22 taken)");
        return;
    }
    let Some(sshd) = Sshd::start(&addr, 22) else {
        return;
    };
    let env = Env::new().await;
    let head = two_apps(&env, "scp", "scp-a", "scp-b", "registry.local/web:3.0.0");
    let c = ssh_chump(&env, &sshd.client_key, Some(&sshd.known_hosts));
    let url = sshd.scp_url(&env.git.repo_path("scp"));
    assert!(!url.contains("://"), "{url}");
    let id = create(&c, &ssh_source(&url, "scp-a")).await;
    let entry = wait_history(&c, id, "a deploy over an scp-like URL", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(entry["commit"], head, "{entry}");
    assert_eq!(
        env.deployed_image("scp-a", "web").as_deref(),
        Some("registry.local/web:3.0.0")
    );
}

fn port_22_free(addr: &str) -> bool {
    std::net::TcpListener::bind((addr, 22)).is_ok()
}

fn fastrand_u8() -> u8 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (n ^ (n >> 8) ^ (n >> 16) ^ std::process::id()) as u8
}
