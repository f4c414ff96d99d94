//! The CLI client of issue #5, through the real binary against a running
//! `chump serve`: every subcommand, human and `--json` output, `-f` files,
//! exit codes and error messages, `--url`/`CHUMP_URL` and `--token`.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::chump::{chump_command, Chump, ChumpOptions};

/// The seven fields as flags. The URL is on a reserved TLD, so the checks the
/// server runs fail at once without going out to the network.
const SEED_FLAGS: &[&str] = &[
    "--namespace",
    "production",
    "--deployment-name",
    "helloworld",
    "--git-url",
    "https://git.invalid/stvnorg/helloworld.git",
    "--branch",
    "master",
    "--deploy-path",
    "./deploy/helloworld/deployment.yaml",
    "--container-name",
    "helloworld",
    "--image-version-file",
    "./deploy/helloworld/deployment.yaml",
];

/// `chump ARGS --url <c>`
fn cli(c: &Chump) -> Command {
    let mut cmd = chump_command();
    cmd.env("CHUMP_URL", format!("http://{}", c.addr))
        .stdin(Stdio::null());
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("run chump")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects exit 0; returns stdout.
fn ok(c: &Chump, args: &[&str]) -> String {
    let o = run(cli(c), args);
    assert!(
        o.status.success(),
        "chump {args:?}: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs with `--json`, expects exit 0, parses stdout.
fn json(c: &Chump, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(c, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("chump {args:?}: not JSON ({e}): {out}"))
}

/// Runs and expects exit `code`; returns stderr.
fn fails(c: &Chump, args: &[&str], code: i32) -> String {
    let o = run(cli(c), args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "chump {args:?}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn add_seed(c: &Chump) -> String {
    let mut args = vec!["sources", "add"];
    args.extend_from_slice(SEED_FLAGS);
    ok(c, &args)
}

#[test]
fn sources_crud_with_flags() {
    let c = Chump::start();
    assert!(ok(&c, &["sources", "list"]).contains("no sources"));

    let out = add_seed(&c);
    assert!(out.contains("[INFO] Add new source success!"), "{out}");
    assert!(out.contains("id:"), "{out}");

    // The table has the header and the row.
    let table = ok(&c, &["sources", "list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for col in [
        "ID",
        "NAMESPACE",
        "DEPLOYMENT",
        "CONTAINER",
        "BRANCH",
        "SUSPENDED",
        "LAST OUTCOME",
        "NEXT CHECK",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            "1",
            "production",
            "helloworld",
            "helloworld",
            "master",
            "false"
        ],
        "{table}"
    );

    let list = json(&c, &["sources", "list"]);
    assert_eq!(list["sources"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["sources"][0]["id"], 1);

    let got = ok(&c, &["sources", "get", "1"]);
    assert!(got.contains("branch:") && got.contains("master"), "{got}");
    let got = json(&c, &["sources", "get", "1"]);
    assert_eq!(got["deployment_name"], "helloworld");
    assert_eq!(got["interval_seconds"], Value::Null);

    // Update a subset of fields (PATCH).
    let out = ok(
        &c,
        &[
            "sources",
            "update",
            "1",
            "--branch",
            "main",
            "--interval-seconds",
            "60",
        ],
    );
    assert!(out.contains("[INFO] Source has been updated!"), "{out}");
    let got = json(&c, &["sources", "get", "1"]);
    assert_eq!(
        (got["branch"].as_str(), got["interval_seconds"].as_i64()),
        (Some("main"), Some(60))
    );
    assert_eq!(got["namespace"], "production");

    // Suspend and resume.
    ok(&c, &["sources", "suspend", "1"]);
    assert_eq!(json(&c, &["sources", "get", "1"])["suspended"], true);
    let status = json(&c, &["status", "1"]);
    assert_eq!(
        (status["source_id"].as_i64(), &status["suspended"]),
        (Some(1), &Value::Bool(true))
    );
    ok(&c, &["sources", "resume", "1"]);
    assert_eq!(json(&c, &["sources", "get", "1"])["suspended"], false);
    let out = json(&c, &["sources", "update", "1", "--suspended"]);
    assert_eq!(out["source"]["suspended"], true);
    let out = json(&c, &["sources", "update", "1", "--suspended=false"]);
    assert_eq!(out["source"]["suspended"], false);

    // Status, human and JSON.
    let status = ok(&c, &["status", "1"]);
    for key in [
        "source_id:",
        "suspended:",
        "consecutive_failures:",
        "next_check_at:",
    ] {
        assert!(status.contains(key), "{status}");
    }
    // Never checked, or failed at git: the workloads' health is unknown.
    for line in [["health:", "unknown"], ["health_reason:", "-"]] {
        assert!(
            status.lines().any(|l| l.split_whitespace().eq(line)),
            "{line:?}: {status}"
        );
    }
    let status = json(&c, &["status", "1"]);
    assert_eq!(status["source_id"], 1);
    assert_eq!(status["suspended"], false);
    assert_eq!(
        (&status["health"], &status["health_reason"]),
        (&serde_json::json!("unknown"), &Value::Null),
        "{status}"
    );

    // History: of the source and of all, with filters; empty or not.
    let h = json(&c, &["history", "1"]);
    assert!(h["history"].is_array(), "{h}");
    assert!(h.get("next_before").is_some(), "{h}");
    let h = json(&c, &["history", "1", "--limit", "5", "--outcome", "failed"]);
    assert!(h["history"].as_array().unwrap().len() <= 5, "{h}");
    // Degraded and superseded are outcomes too (none here: the checks fail
    // at git).
    for outcome in ["degraded", "superseded"] {
        for args in [
            &["history", "1", "--outcome", outcome][..],
            &["history", "--outcome", outcome],
        ] {
            let h = json(&c, args);
            assert_eq!(h["history"], serde_json::json!([]), "{args:?}: {h}");
        }
        let out = ok(&c, &["history", "--outcome", outcome]);
        assert!(out.contains("no history"), "{out}");
    }
    let h = json(
        &c,
        &[
            "history",
            "--namespace",
            "production",
            "--since",
            "1h",
            "--limit",
            "10",
        ],
    );
    assert!(h["history"].is_array(), "{h}");
    let h = json(&c, &["history", "--since", "2020-01-01T00:00:00Z"]);
    assert!(h["history"].is_array(), "{h}");
    let out = ok(&c, &["history"]);
    assert!(out.contains("no history") || out.starts_with("ID"), "{out}");
    let out = ok(&c, &["history", "1"]);
    assert!(out.contains("no history") || out.starts_with("ID"), "{out}");

    // Delete: gone afterwards.
    let out = ok(&c, &["sources", "delete", "1"]);
    assert!(out.contains("[INFO] Source has been deleted!"), "{out}");
    let err = fails(&c, &["sources", "get", "1"], 1);
    assert!(err.contains("[WARN] Source doesn't exist!"), "{err}");
    assert!(json(&c, &["sources", "list"])["sources"]
        .as_array()
        .unwrap()
        .is_empty());
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn sources_from_yaml_and_json_files() {
    let c = Chump::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = write(
        dir.path(),
        "source.yaml",
        "namespace: production\n\
         deployment_name: web\n\
         git_url: https://git.invalid/team/web.git\n\
         branch: main\n\
         deploy_path: deploy\n\
         container_name: web\n\
         image_version_file: deploy/kustomization.yaml\n\
         interval_seconds: 120\n",
    );
    let out = json(&c, &["sources", "add", "-f", &yaml]);
    assert_eq!(out["msg"], "[INFO] Add new source success!");
    assert_eq!(out["source"]["deployment_name"], "web");
    assert_eq!(out["source"]["interval_seconds"], 120);
    let id = out["source"]["id"].as_i64().unwrap().to_string();

    let json_file = write(
        dir.path(),
        "source.json",
        r#"{"namespace": "staging", "deployment_name": "api",
            "git_url": "https://git.invalid/team/api.git", "branch": "main",
            "deploy_path": "deploy", "container_name": "api",
            "image_version_file": "deploy/deployment.yaml", "suspended": true}"#,
    );
    // Flags override the file's values.
    let out = json(
        &c,
        &[
            "sources",
            "add",
            "--file",
            &json_file,
            "--container-name",
            "api-server",
        ],
    );
    assert_eq!(out["source"]["namespace"], "staging");
    assert_eq!(out["source"]["container_name"], "api-server");
    assert_eq!(out["source"]["suspended"], true);

    // The output of `get --json` is a valid update document (the server's own
    // fields are dropped).
    let got = ok(&c, &["sources", "get", &id, "--json"]);
    let edited = got.replace("\"main\"", "\"release\"");
    let edited_path = write(dir.path(), "edited.json", &edited);
    let out = json(&c, &["sources", "update", &id, "-f", &edited_path]);
    assert_eq!(out["source"]["branch"], "release");

    // A YAML patch of one field.
    let patch = write(dir.path(), "patch.yml", "branch: hotfix\n");
    let out = ok(&c, &["sources", "update", &id, "-f", &patch]);
    assert!(out.contains("hotfix"), "{out}");
    assert_eq!(json(&c, &["sources", "get", &id])["branch"], "hotfix");

    // From stdin.
    let mut cmd = cli(&c);
    cmd.args(["sources", "update", &id, "-f", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"{\"branch\": \"from-stdin\"}")
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&c, &["sources", "get", &id])["branch"], "from-stdin");

    // Bad files are usage errors.
    let bad = write(dir.path(), "bad.yaml", "- a\n- list\n");
    let err = fails(&c, &["sources", "add", "-f", &bad], 2);
    assert!(err.contains("mapping"), "{err}");
    let bad = write(dir.path(), "bad.json", "{\"namespace\": ");
    let err = fails(&c, &["sources", "add", "-f", &bad], 2);
    assert!(err.contains("not valid JSON"), "{err}");
    let err = fails(&c, &["sources", "add", "-f", "/nonexistent/source.yaml"], 2);
    assert!(err.contains("cannot read"), "{err}");

    // A file missing fields: the server names them.
    let partial = write(dir.path(), "partial.yaml", "namespace: production\n");
    let err = fails(&c, &["sources", "add", "-f", &partial], 1);
    assert!(err.contains("git_url") && err.contains("branch"), "{err}");
}

#[test]
fn errors_exit_codes_and_messages() {
    let c = Chump::start();
    add_seed(&c);

    // Unknown id: exit 1, the server's message.
    for args in [
        &["sources", "get", "999"][..],
        &["sources", "delete", "999"],
        &["sources", "update", "999", "--branch", "x"],
        &["sources", "suspend", "999"],
        &["sources", "resume", "999"],
        &["status", "999"],
        &["history", "999"],
    ] {
        let err = fails(&c, args, 1);
        assert!(
            err.contains("[WARN] Source doesn't exist!"),
            "{args:?}: {err}"
        );
    }

    // Invalid fields: exit 1, the fields named.
    let err = fails(
        &c,
        &[
            "sources",
            "update",
            "1",
            "--namespace",
            "BAD_NS",
            "--branch",
            "a..b",
        ],
        1,
    );
    assert!(
        err.contains("namespace:") && err.contains("branch:"),
        "{err}"
    );
    let mut args = vec!["sources", "add"];
    args.extend_from_slice(SEED_FLAGS);
    let i = args.iter().position(|a| *a == "--deploy-path").unwrap();
    args[i + 1] = "/etc/passwd";
    let err = fails(&c, &args, 1);
    assert!(err.contains("deploy_path"), "{err}");
    // A duplicate: 409's message.
    let mut args = vec!["sources", "add"];
    args.extend_from_slice(SEED_FLAGS);
    let err = fails(&c, &args, 1);
    assert!(err.contains("[WARN] Source already exist!"), "{err}");

    // Usage errors: exit 2.
    let err = fails(&c, &["sources", "add", "--namespace", "production"], 2);
    assert!(
        err.contains("--git-url") && err.contains("--image-version-file"),
        "{err}"
    );
    let err = fails(&c, &["sources", "update", "1"], 2);
    assert!(err.contains("nothing to update"), "{err}");
    fails(&c, &["sources", "get", "abc"], 2);
    fails(&c, &["sources", "get", "0"], 2);
    fails(&c, &["history", "--limit", "0"], 2);
    let err = fails(&c, &["history", "--outcome", "great"], 2);
    for value in [
        "deployed",
        "up_to_date",
        "failed",
        "deleted",
        "degraded",
        "superseded",
    ] {
        assert!(err.contains(value), "{value}: {err}");
    }
    fails(&c, &["history", "1", "--namespace", "production"], 2);
    let err = fails(&c, &["history", "--since", "yesterday-ish"], 2);
    assert!(err.contains("--since"), "{err}");
    let err = fails(&c, &["sources", "list", "--url", "ftp://x"], 2);
    assert!(err.contains("--url"), "{err}");
}

#[test]
fn server_not_running() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let o = chump_command()
        .args(["sources", "list", "--url", &url])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the chump server") && err.contains(&url),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
}

#[test]
fn chump_url_env_and_url_flag() {
    let c = Chump::start();
    add_seed(&c);
    // CHUMP_URL alone (no flag).
    let o = chump_command()
        .env("CHUMP_URL", c.url(""))
        .args(["sources", "list", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["sources"][0]["id"], 1);
    // --url wins over CHUMP_URL, before or after the subcommand, trailing / too.
    for args in [
        vec!["--url".to_string(), c.url("/"), "list".into()],
        vec!["list".into(), "--url".into(), c.url("")],
    ] {
        let mut cmd = chump_command();
        cmd.env("CHUMP_URL", "http://127.0.0.1:9")
            .arg("sources")
            .args(&args);
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).contains("production"), "{}", stdout(&o));
    }
}

#[test]
fn api_token() {
    let token = "cli-test-token-0123456789";
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_API_TOKEN", token));
    // Without a token: the server's 401 message.
    let err = fails(&c, &["sources", "list"], 1);
    assert!(err.contains("Unauthorized"), "{err}");
    let err = fails(
        &c,
        &["sources", "list", "--token", "wrong-token-wrong-token"],
        1,
    );
    assert!(err.contains("Unauthorized"), "{err}");
    // --token
    let mut args = vec!["sources", "add", "--token", token];
    args.extend_from_slice(SEED_FLAGS);
    ok(&c, &args);
    let out = ok(&c, &["sources", "list", "--token", token]);
    assert!(out.contains("production"), "{out}");
    // CHUMP_API_TOKEN, the server's own variable.
    let mut cmd = cli(&c);
    cmd.env("CHUMP_API_TOKEN", token);
    let o = run(cmd, &["status", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn check_now() {
    let c = Chump::start();
    add_seed(&c);
    let out = ok(&c, &["check", "1"]);
    assert!(
        out.contains("result:") && out.contains("queued_at:"),
        "{out}"
    );
    let v = json(&c, &["check", "1"]);
    let result = v["result"].as_str().unwrap_or_default();
    assert!(
        [
            "queued",
            "already_queued",
            "already_running",
            "queued_after_running"
        ]
        .contains(&result),
        "{v}"
    );
    assert!(v["queued_at"].is_string(), "{v}");
    let err = fails(&c, &["check", "999"], 1);
    assert!(err.contains("[WARN] Source doesn't exist!"), "{err}");
}

#[test]
fn help_texts() {
    // `chump serve --help` has none of the client options.
    let o = chump_command().args(["serve", "--help"]).output().unwrap();
    let help = stdout(&o);
    assert!(help.contains("CHUMP_BIND"), "{help}");
    assert!(
        !help.contains("CHUMP_URL") && !help.contains("--json"),
        "{help}"
    );
    // The client commands are listed.
    let o = chump_command().arg("--help").output().unwrap();
    let help = stdout(&o);
    for cmd in ["serve", "sources", "check", "history", "status"] {
        assert!(help.contains(cmd), "{help}");
    }
    let o = chump_command()
        .args(["sources", "add", "--help"])
        .output()
        .unwrap();
    let help = stdout(&o);
    for flag in [
        "--namespace",
        "--deployment-name",
        "--git-url",
        "--branch",
        "--deploy-path",
        "--container-name",
        "--image-version-file",
        "--interval-seconds",
        "--suspended",
        "--file",
        "--url",
        "--token",
        "CHUMP_URL",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

/// `ok`, off the async runtime (the Kubernetes API stand-in runs on it).
async fn ok_async(c: &Chump, args: &[&str]) -> String {
    let cmd = cli(c);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let o = tokio::task::spawn_blocking(move || {
        run(cmd, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_was_applied() {
    use support::env::{create, wait_history, Env};
    let env = Env::new().await;
    let commit = env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "600"));
    // Never deployed: no commit, no objects.
    let never = create(
        &c,
        &serde_json::json!({"namespace": "other", "deployment_name": "d",
        "git_url": "https://git.invalid/none.git", "branch": "main", "deploy_path": "deploy",
        "container_name": "app", "image_version_file": "deploy/d.yaml"}),
    )
    .await;
    let out = ok_async(&c, &["status", &never.to_string()]).await;
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["inventory_commit:", "-"])),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["objects:", "none"])),
        "{out}"
    );

    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let out = ok_async(&c, &["status", &id.to_string()]).await;
    assert!(
        out.lines().any(|l| l
            .split_whitespace()
            .eq(["inventory_commit:", commit.as_str()])),
        "{out}"
    );
    let objects = out
        .lines()
        .find_map(|l| l.strip_prefix("objects:"))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        objects.trim(),
        "3 (ConfigMap 1, Deployment 1, Namespace 1)",
        "{out}"
    );
    // Deployed: healthy, no reason.
    for line in [["health:", "healthy"], ["health_reason:", "-"]] {
        assert!(
            out.lines().any(|l| l.split_whitespace().eq(line)),
            "{line:?}: {out}"
        );
    }
    // --json stays the server's status answer.
    let v: Value =
        serde_json::from_str(&ok_async(&c, &["status", &id.to_string(), "--json"]).await).unwrap();
    assert_eq!(v["source_id"], id);
    assert!(v.get("objects").is_none(), "{v}");
    assert_eq!(
        (&v["health"], &v["health_reason"]),
        (&serde_json::json!("healthy"), &Value::Null),
        "{v}"
    );
}

#[test]
fn prune_flags_on_add_and_update() {
    let c = Chump::start();
    let mut args = vec!["sources", "add"];
    args.extend_from_slice(SEED_FLAGS);
    args.extend(["--prune=false", "--json"]);
    let out = ok(&c, &args);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"]["prune"], false, "{v}");
    assert_eq!(json(&c, &["sources", "get", "1"])["prune"], false);
    let got = ok(&c, &["sources", "get", "1"]);
    assert!(
        got.lines()
            .any(|l| l.split_whitespace().eq(["prune:", "false"])),
        "{got}"
    );
    assert!(
        got.lines()
            .any(|l| l.split_whitespace().eq(["deleting:", "false"])),
        "{got}"
    );
    let out = json(&c, &["sources", "update", "1", "--prune"]);
    assert_eq!(out["source"]["prune"], true, "{out}");
    let out = json(&c, &["sources", "update", "1", "--prune", "false"]);
    assert_eq!(out["source"]["prune"], false, "{out}");
    // `get --json` output sent back with -f: `deleting` is the server's.
    let dir = tempfile::tempdir().unwrap();
    let doc = serde_json::to_string(&json(&c, &["sources", "get", "1"])).unwrap();
    let file = write(dir.path(), "s.json", &doc);
    ok(&c, &["sources", "update", "1", "-f", &file]);
    // Not a boolean: refused before anything is sent.
    let err = fails(&c, &["sources", "update", "1", "--prune=maybe"], 2);
    assert!(err.contains("--prune"), "{err}");
    // Plain delete --prune of a source never deployed: deleted at once.
    let out = ok(&c, &["sources", "delete", "1", "--prune"]);
    assert!(out.contains("[INFO] Source has been deleted!"), "{out}");
    fails(&c, &["sources", "get", "1"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_prune_asks_the_server_to_prune() {
    use support::env::{create, wait_history, Env};
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "600"));
    let id = create(&c, &env.source("web", "shop", "web")).await;
    wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    // The cluster away, the prune cannot finish: the source stays deleting.
    env.kube.stop().await;
    let id = id.to_string();
    let out = ok_async(&c, &["sources", "delete", &id, "--prune"]).await;
    assert!(
        out.contains(
            "[INFO] Source is being deleted: the objects chump applied for it are pruned first"
        ),
        "{out}"
    );
    let got: Value =
        serde_json::from_str(&ok_async(&c, &["sources", "get", &id, "--json"]).await).unwrap();
    assert_eq!(got["deleting"], true, "{got}");
    let list = ok_async(&c, &["sources", "list"]).await;
    assert!(
        list.lines()
            .nth(1)
            .is_some_and(|row| row.split_whitespace().any(|c| c == "deleting")),
        "{list}"
    );
    // Read-only meanwhile: the server's 409, exit 1.
    let cmd = cli(&c);
    let args = [
        "sources".to_string(),
        "update".into(),
        id.clone(),
        "--branch".into(),
        "x".into(),
    ];
    let o = tokio::task::spawn_blocking(move || {
        run(cmd, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("being deleted"), "{}", stderr(&o));
    // --json: the server's answer.
    let v: Value = serde_json::from_str(
        &ok_async(&c, &["sources", "delete", &id, "--prune=true", "--json"]).await,
    )
    .unwrap();
    assert_eq!(v["deleting"], true, "{v}");
    // Without --prune (or --prune=false): deleted at once, prune abandoned.
    let out = ok_async(&c, &["sources", "delete", &id, "--prune=false"]).await;
    assert!(out.contains("[INFO] Source has been deleted!"), "{out}");
    let cmd = cli(&c);
    let args = ["sources".to_string(), "get".into(), id.clone()];
    let o = tokio::task::spawn_blocking(move || {
        run(cmd, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
}
