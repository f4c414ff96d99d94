//! The CLI client of issue #5, through the real binary against a running
//! `chump serve`: every subcommand, human and `--json` output, `-f` files,
//! exit codes and error messages, `--url`/`CHUMP_URL` and `--token`; and
//! issue #14's `history show`, `diff`, `rollback`, `unpin`, `history --at`
//! and the pin in `status`.

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
    for cmd in [
        "serve", "sources", "check", "history", "diff", "rollback", "unpin", "status",
    ] {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(cmd)),
            "{cmd}: {help}"
        );
    }
    // `history show`, and the flags of the rollback commands.
    for (args, words) in [
        (
            &["history", "--help"][..],
            &["show", "--at", "rolled_back"][..],
        ),
        (&["history", "show", "--help"], &["<ID>", "--json"]),
        (&["diff", "--help"], &["<ID>", "--against"]),
        (
            &["rollback", "--help"],
            &["<SOURCE>", "--to <ENTRY>", "pinned"],
        ),
        (&["unpin", "--help"], &["<SOURCE>"]),
        (
            &["sources", "update", "--help"],
            &["--auto-rollback", "default"],
        ),
    ] {
        let o = chump_command().args(args).output().unwrap();
        let help = stdout(&o);
        for w in words {
            assert!(help.contains(w), "{args:?}: {w}: {help}");
        }
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
        "--auto-rollback",
        "--service-account",
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

/// Runs the binary off the async runtime; its output.
async fn run_async(c: &Chump, args: &[&str]) -> Output {
    let cmd = cli(c);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        run(cmd, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

/// `fails`, off the async runtime: expects exit `code`, returns stderr.
async fn fails_async(c: &Chump, args: &[&str], code: i32) -> String {
    let o = run_async(c, args).await;
    assert_eq!(
        o.status.code(),
        Some(code),
        "chump {args:?}\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

/// `json`, off the async runtime.
async fn json_async(c: &Chump, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok_async(c, &args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("chump {args:?}: not JSON ({e}): {out}"))
}

/// Whether some line of `out` is `words`, whitespace aside.
fn has_line(out: &str, words: &[&str]) -> bool {
    out.lines()
        .any(|l| l.split_whitespace().eq(words.iter().copied()))
}

/// The value of a `key: value` line of `out`.
fn line_value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

const SECRET_VALUE: &str = "hunter2-do-not-print";

/// A source deployed twice: `nginx:1` with a Namespace, the Deployment and
/// a ConfigMap; then `nginx:2` adding ConfigMap `extra` and Secret `creds`.
struct TwoDeploys {
    env: support::env::Env,
    c: Chump,
    id: String,
    first: Value,
    second: Value,
    /// After the first deploy, before the second.
    between: String,
}

async fn two_deploys() -> TwoDeploys {
    use support::env::{app_files, wait_history, Env};
    use time::format_description::well_known::Rfc3339;
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    // No scheduled check gets in the way: deploys follow `chump check`.
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "600"));
    let git_url = env.git.url("web");
    let out = ok_async(
        &c,
        &[
            "sources",
            "add",
            "--namespace",
            "shop",
            "--deployment-name",
            "web",
            "--git-url",
            &git_url,
            "--branch",
            "main",
            "--deploy-path",
            "deploy",
            "--container-name",
            "app",
            "--image-version-file",
            "deploy/deployment.yaml",
            "--auto-rollback=false",
        ],
    )
    .await;
    assert!(has_line(&out, &["auto_rollback:", "false"]), "{out}");
    let id: i64 = line_value(&out, "id").unwrap().parse().unwrap();
    let first = wait_history(&c, id, "the first deploy", |e| e["outcome"] == "deployed").await;
    let between = time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    let id = id.to_string();

    // One deploy only: nothing to roll back to, the server's 409 said.
    let err = fails_async(&c, &["rollback", &id], 1).await;
    assert!(
        err.contains(&format!(
            "[WARN] Nothing to roll back to: no successful deploy of another commit before entry {}",
            first["id"]
        )),
        "{err}"
    );
    let mut files = app_files("shop", "web", "nginx:2");
    files[0].1 = "resources:\n- namespace.yaml\n- deployment.yaml\n- config.yaml\n- extra.yaml\n- secret.yaml\n".into();
    files.push((
        "deploy/extra.yaml".into(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  added: second\n"
            .into(),
    ));
    files.push((
        "deploy/secret.yaml".into(),
        format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  password: {SECRET_VALUE}\n"),
    ));
    let commit = env
        .git
        .commit_files("web", "main", files, "nginx 2, extra, creds");
    let out = ok_async(&c, &["check", &id]).await;
    assert!(out.contains("result:"), "{out}");
    let second = wait_history(&c, id.parse().unwrap(), "the second deploy", |e| {
        e["outcome"] == "deployed" && e["commit"] == commit.as_str()
    })
    .await;
    TwoDeploys {
        env,
        c,
        id,
        first,
        second,
        between,
    }
}

/// The YAML documents after the entry's fields (and the blank line).
fn documents(show: &str) -> Vec<Value> {
    use serde::Deserialize;
    let (_, yaml) = show
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no manifests after the entry: {show}"));
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{e}: {yaml}")))
        .collect()
}

fn kinds_and_names(docs: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or("?").to_string(),
                d["metadata"]["name"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn kn(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_show_diff_and_at() {
    let t = two_deploys().await;
    let c = &t.c;
    let (first, second) = (t.first["id"].to_string(), t.second["id"].to_string());
    let short = |e: &Value| e["commit"].as_str().unwrap()[..7].to_string();

    // The entry, then the YAML it applied, the Secret's value masked.
    let out = ok_async(c, &["history", "show", &second]).await;
    for line in [
        &["id:", second.as_str()][..],
        &["source_id:", t.id.as_str()],
        &["outcome:", "deployed"],
        &["commit:", t.second["commit"].as_str().unwrap()],
        &["desired_image:", "nginx:2"],
        &["manifests:", "kept"],
        &["rollback_to:", "-"],
        &["created", "v1", "ConfigMap", "shop/extra"],
        &["created", "v1", "Secret", "shop/creds"],
    ] {
        assert!(has_line(&out, line), "{line:?}: {out}");
    }
    assert!(!out.contains(SECRET_VALUE), "{out}");
    let docs = documents(&out);
    assert_eq!(
        kinds_and_names(&docs),
        kn(&[
            ("ConfigMap", "extra"),
            ("ConfigMap", "web-config"),
            ("Deployment", "web"),
            ("Namespace", "shop"),
            ("Secret", "creds"),
        ]),
        "{out}"
    );
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2",
        "{out}"
    );
    let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret["stringData"]["password"], "***", "{out}");
    // The first deploy: its own render.
    let out = ok_async(c, &["history", "show", &first]).await;
    assert!(has_line(&out, &["desired_image:", "nginx:1"]), "{out}");
    assert_eq!(
        kinds_and_names(&documents(&out)),
        kn(&[
            ("ConfigMap", "web-config"),
            ("Deployment", "web"),
            ("Namespace", "shop"),
        ]),
        "{out}"
    );
    // --json: the server's entry.
    let v = json_async(c, &["history", "show", &second]).await;
    assert_eq!(v, t.second, "{v}");

    // The diff: the changed Deployment, the added objects, the summary. The
    // render is kustomize's: objects without a namespace of their own show
    // none.
    let out = ok_async(c, &["diff", &second]).await;
    for header in [
        "changed Deployment shop/web (apps/v1)",
        "added ConfigMap extra (v1)",
        "added Secret creds (v1)",
    ] {
        assert!(out.lines().any(|l| l == header), "{header}: {out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with('-') && l.contains("image: nginx:1"))
            && out
                .lines()
                .any(|l| l.starts_with('+') && l.contains("image: nginx:2")),
        "{out}"
    );
    assert!(
        !out.contains("ConfigMap web-config")
            && !out.contains("Namespace shop")
            && !out.contains(SECRET_VALUE),
        "{out}"
    );
    assert_eq!(
        out.lines().last(),
        Some(
            format!(
                "3 objects changed, 2 unchanged, against entry {first} (commit {})",
                short(&t.first)
            )
            .as_str()
        ),
        "{out}"
    );
    // The other way round: removed.
    let out = ok_async(c, &["diff", &first, "--against", &second]).await;
    assert!(
        out.lines().any(|l| l == "removed Secret creds (v1)"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "removed ConfigMap extra (v1)"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!(
            "against entry {second} (commit {})\n",
            short(&t.second)
        )),
        "{out}"
    );
    // The first deploy: nothing before it.
    let out = ok_async(c, &["diff", &first]).await;
    assert!(
        out.ends_with("\n3 objects changed, 0 unchanged, against nothing: every object is added\n"),
        "{out}"
    );
    let v = json_async(c, &["diff", &second]).await;
    assert_eq!(
        (v["against"].to_string(), v["unchanged"].as_i64()),
        (first.clone(), Some(2)),
        "{v}"
    );
    assert_eq!(v["objects"].as_array().map(Vec::len), Some(3), "{v}");

    // --at: what was live then, of all sources and of this one.
    let out = ok_async(c, &["history", "--at", &t.between]).await;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(
        (rows[0][0], rows[0][1]),
        (first.as_str(), t.id.as_str()),
        "{out}"
    );
    assert!(out.starts_with("ID  SOURCE"), "{out}");
    let v = json_async(c, &["history", &t.id, "--at", &t.between]).await;
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["history"][0]["id"], t.first["id"], "{v}");
    let v = json_async(c, &["history", "--at", "0s"]).await;
    assert_eq!(v["history"][0]["id"], t.second["id"], "{v}");
    // Another source deployed since: one entry per source, or this one's.
    t.env.app_repo("api", "other", "api", "nginx:1");
    let other = support::env::create(c, &t.env.source("api", "other", "api")).await;
    let deployed = support::env::wait_history(c, other, "the other source's deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    let v = json_async(c, &["history", "--at", "0s"]).await;
    let mut live: Vec<i64> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    live.sort_unstable();
    let mut want = vec![
        t.second["id"].as_i64().unwrap(),
        deployed["id"].as_i64().unwrap(),
    ];
    want.sort_unstable();
    assert_eq!(live, want, "{v}");
    let out = ok_async(c, &["history", &t.id, "--at", "0s"]).await;
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let row: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(&row[..3], [second.as_str(), t.id.as_str(), "shop"], "{out}");
    // Before anything was deployed: nothing.
    let out = ok_async(c, &["history", "--at", "2020-01-01T00:00:00Z"]).await;
    assert_eq!(out, "nothing was live then\n");
    // The list itself is as it was.
    let out = ok_async(c, &["history", &t.id]).await;
    assert!(out.starts_with("ID  STARTED"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    drop(t.env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_pins_and_unpin_resumes() {
    use support::env::{history, wait_history};
    let t = two_deploys().await;
    let c = &t.c;
    let id: i64 = t.id.parse().unwrap();
    let short = |e: &Value| e["commit"].as_str().unwrap()[..7].to_string();
    let status = ok_async(c, &["status", &t.id]).await;
    assert!(has_line(&status, &["pinned:", "-"]), "{status}");
    let err = fails_async(c, &["unpin", &t.id], 1).await;
    assert!(err.contains("is not pinned"), "{err}");

    // Queued: the server's message, where to.
    let out = ok_async(c, &["rollback", &t.id]).await;
    assert!(
        out.contains(&format!(
            "[INFO] Rollback to entry {} (commit {}) queued",
            t.first["id"],
            short(&t.first)
        )) || out.contains(&format!(
            "[INFO] Rollback to entry {} queued after the running check",
            t.first["id"]
        )),
        "{out}"
    );
    assert!(
        has_line(&out, &["to:", &t.first["id"].to_string()]),
        "{out}"
    );
    assert!(
        has_line(&out, &["commit:", t.first["commit"].as_str().unwrap()]),
        "{out}"
    );
    let rolled = wait_history(c, id, "the rollback", |e| e["outcome"] == "rolled_back").await;
    assert_eq!(
        t.env.deployed_image("shop", "web").as_deref(),
        Some("nginx:1")
    );
    let rolled_id = rolled["id"].to_string();

    // The history shows it; `show` tells what it went back to.
    let out = ok_async(c, &["history", &t.id, "--outcome", "rolled_back"]).await;
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        (row.first(), row.get(3)),
        (Some(&rolled_id.as_str()), Some(&"rolled_back")),
        "{out}"
    );
    let out = ok_async(c, &["history", "show", &rolled_id]).await;
    assert!(has_line(&out, &["outcome:", "rolled_back"]), "{out}");
    assert!(
        has_line(&out, &["rollback_to:", &t.first["id"].to_string()]),
        "{out}"
    );
    assert!(has_line(&out, &["manifests:", "kept"]), "{out}");
    assert!(
        kinds_and_names(&documents(&out))
            .iter()
            .all(|(_, name)| name != "extra"),
        "{out}"
    );

    // Pinned away from the second commit, and why.
    let status = ok_async(c, &["status", &t.id]).await;
    let pinned = line_value(&status, "pinned").unwrap_or_default();
    assert!(
        pinned.starts_with(&short(&t.second)) && pinned.ends_with(&format!("(entry {rolled_id})")),
        "{status}"
    );
    let reason = line_value(&status, "pinned_reason").unwrap_or_default();
    assert!(
        reason.contains(&format!("rolled back to entry {}", t.first["id"])),
        "{status}"
    );
    let list = ok_async(c, &["sources", "list"]).await;
    assert!(list.lines().next().unwrap().ends_with("PINNED"), "{list}");
    assert_eq!(
        list.lines()
            .nth(1)
            .and_then(|r| r.split_whitespace().last()),
        Some(short(&t.second).as_str()),
        "{list}"
    );
    let v = json_async(c, &["status", &t.id]).await;
    assert_eq!(v["pinned"]["commit"], t.second["commit"], "{v}");

    // Unpinned: not pinned any more, and the branch deployed again.
    let out = ok_async(c, &["unpin", &t.id]).await;
    assert!(
        out.contains("[INFO] Unpinned: auto-deploy resumes with a check now"),
        "{out}"
    );
    assert!(out.contains("result:"), "{out}");
    let status = ok_async(c, &["status", &t.id]).await;
    assert!(has_line(&status, &["pinned:", "-"]), "{status}");
    let redeployed = wait_history(c, id, "the branch deployed again", |e| {
        e["outcome"] == "deployed" && e["id"].as_i64() > rolled["id"].as_i64()
    })
    .await;
    assert_eq!(redeployed["commit"], t.second["commit"], "{redeployed}");
    assert_eq!(
        t.env.deployed_image("shop", "web").as_deref(),
        Some("nginx:2")
    );
    let err = fails_async(c, &["unpin", &t.id], 1).await;
    assert!(err.contains("is not pinned"), "{err}");

    // --to: an entry of this source; another's is refused (exit 1, named).
    let out = ok_async(
        c,
        &[
            "rollback",
            &t.id,
            "--to",
            &t.first["id"].to_string(),
            "--json",
        ],
    )
    .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["to"], t.first["id"], "{v}");
    let err = fails_async(c, &["rollback", &t.id, "--to", "999"], 1).await;
    assert!(
        err.contains("to:") && err.contains("has no history entry 999"),
        "{err}"
    );
    assert!(history(c, id).await.len() >= 4);
}

#[test]
fn history_show_and_rollback_of_a_source_never_deployed() {
    let c = Chump::start();
    add_seed(&c);
    // Its checks fail at git: an entry without manifests.
    let entry = support::git_server::wait_for(std::time::Duration::from_secs(60), || {
        json(&c, &["history", "1"])["history"]
            .as_array()
            .and_then(|h| h.last().cloned())
    })
    .expect("a failed check in the history");
    let eid = entry["id"].to_string();
    let out = ok(&c, &["history", "show", &eid]);
    assert!(has_line(&out, &["outcome:", "failed"]), "{out}");
    assert!(has_line(&out, &["manifests:", "-"]), "{out}");
    assert!(has_line(&out, &["objects:", "none"]), "{out}");
    assert!(
        out.ends_with(&format!(
            "\n\nno manifests: [WARN] History entry {eid} applied no manifests (or was recorded before chump kept them)\n"
        )),
        "{out}"
    );
    let err = fails(&c, &["diff", &eid], 1);
    assert!(err.contains("applied no manifests"), "{err}");
    let err = fails(&c, &["rollback", "1"], 1);
    assert!(
        err.contains("[WARN] Nothing to roll back to: nothing was deployed yet"),
        "{err}"
    );
    let err = fails(&c, &["unpin", "1"], 1);
    assert!(err.contains("[WARN] Source 1 is not pinned"), "{err}");
    // Unknown ids: the server's message, exit 1.
    let err = fails(&c, &["history", "show", "999"], 1);
    assert!(
        err.contains("[WARN] History entry 999 doesn't exist"),
        "{err}"
    );
    let err = fails(&c, &["diff", "999"], 1);
    assert!(
        err.contains("[WARN] History entry 999 doesn't exist"),
        "{err}"
    );
    let err = fails(&c, &["rollback", "999"], 1);
    assert!(err.contains("[WARN] Source doesn't exist!"), "{err}");
    // The source's auto_rollback: the service default, then set, then back.
    assert!(has_line(
        &ok(&c, &["sources", "get", "1"]),
        &["auto_rollback:", "default"]
    ));
    let v = json(&c, &["sources", "update", "1", "--auto-rollback"]);
    assert_eq!(v["source"]["auto_rollback"], true, "{v}");
    let v = json(
        &c,
        &["sources", "update", "1", "--auto-rollback", "default"],
    );
    assert_eq!(v["source"]["auto_rollback"], Value::Null, "{v}");
    // The source's service_account: none, set (bare or namespace/name), a
    // bad one refused by the server, cleared with ''.
    assert!(has_line(
        &ok(&c, &["sources", "get", "1"]),
        &["service_account:", "(server", "default)"]
    ));
    let v = json(
        &c,
        &["sources", "update", "1", "--service-account", "deployer"],
    );
    assert_eq!(v["source"]["service_account"], "deployer", "{v}");
    let v = json(
        &c,
        &[
            "sources",
            "update",
            "1",
            "--service-account",
            "team-a/deployer",
        ],
    );
    assert_eq!(v["source"]["service_account"], "team-a/deployer", "{v}");
    assert!(has_line(
        &ok(&c, &["sources", "get", "1"]),
        &["service_account:", "team-a/deployer"]
    ));
    let err = fails(
        &c,
        &["sources", "update", "1", "--service-account", "a/b/c"],
        1,
    );
    assert!(err.contains("service_account"), "{err}");
    let v = json(&c, &["sources", "update", "1", "--service-account="]);
    assert_eq!(v["source"]["service_account"], Value::Null, "{v}");
    // Usage errors: exit 2, nothing sent.
    fails(&c, &["history", "show", "0"], 2);
    fails(&c, &["diff", "1", "--against", "x"], 2);
    fails(&c, &["rollback", "1", "--to", "0"], 2);
    let err = fails(&c, &["history", "--at", "1h", "--before", "3"], 2);
    assert!(err.contains("--at") && err.contains("--before"), "{err}");
    let err = fails(&c, &["history", "--at", "whenever"], 2);
    assert!(err.contains("--at 'whenever'"), "{err}");
    let err = fails(&c, &["sources", "update", "1", "--auto-rollback=maybe"], 2);
    assert!(err.contains("--auto-rollback"), "{err}");
}
