//! Leases renewed while checks run: a check longer than its lease runs once,
//! and a replica that dies (kill -9) or stalls (SIGSTOP) mid-check is taken
//! over by another about a lease later, while the stalled one, once it
//! resumes, writes nothing more — neither to the cluster nor to the store.
//!
//! The first test runs on SQLite, always. The replica tests need a shared
//! database: `CHUMP_TEST_RETHINKDB=host:port` (see `support/rethinkdb.rs`);
//! without it they say they were skipped and pass.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::chump::{wait_for, Chump, ChumpOptions};
use support::env::{create, get, history, wait_history, Env, WAIT};
use support::kube_api::{KubeApi, RolloutMode};
use support::rethinkdb::{database_url, fresh_config};

/// The JSON log lines of `chump` whose message starts with `message`, for
/// source `id`.
fn log_lines(chump: &Chump, message: &str, id: i64) -> Vec<Value> {
    chump
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
                && v["source_id"] == id
        })
        .collect()
}

/// Server-side applies of Deployment `ns/name` the stand-in received.
fn applies(kube: &KubeApi, ns: &str, name: &str) -> usize {
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
    kube.writes()
        .iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.path == path
                && r.content_type.as_deref() == Some("application/apply-patch+yaml")
        })
        .count()
}

async fn metric(c: &Chump, name: &str) -> Option<f64> {
    let text = reqwest::get(c.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_longer_than_its_lease_runs_once() {
    let env = Env::new().await;
    env.app_repo("web", "shop", "web", "nginx:1");
    // The rollout takes 8 s: more than twice the 3 s lease.
    env.kube
        .set_rollout_for("shop", "web", RolloutMode::After(Duration::from_secs(8)));
    let c = env.chump_with(
        env.options()
            .env("CHUMP_LEASE", "3s")
            .env("CHUMP_INTERVAL", "10m")
            .env("CHUMP_ROLLOUT_TIMEOUT", "60"),
    );
    let id = create(&c, &env.source("web", "shop", "web")).await;
    let e = wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;

    let took = time::OffsetDateTime::parse(
        e["finished_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
        - time::OffsetDateTime::parse(
            e["started_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    assert!(
        took > time::Duration::seconds(6),
        "the check outlived its lease twice: {took}"
    );
    let h = history(&c, id).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(applies(&env.kube, "shop", "web"), 1);
    let logs = c.logs();
    assert_eq!(
        log_lines(&c, "check started", id).len(),
        1,
        "a second check started while the first ran:\n{logs}"
    );
    // Renewed in time: the store never handed the source out again.
    assert!(
        log_lines(&c, "claimed again while in flight", id).is_empty(),
        "the lease ran out while the check ran:\n{logs}"
    );
    assert!(log_lines(&c, "lease lost", id).is_empty(), "{logs}");
    assert_eq!(metric(&c, "chump_checks_abandoned_total").await, Some(0.0));
}

const LEASE_SECS: u64 = 5;

/// `chump serve` replica `name` on the shared database: one worker, a
/// 5 s lease, a long interval (only the first check of a source runs).
fn replica(env: &Env, url: &str, name: &str) -> ChumpOptions {
    let dir = env.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    env.options()
        .dir(&dir)
        .env("CHUMP_DATABASE", url)
        .env("CHUMP_WORKERS", "1")
        .env("CHUMP_LEASE", format!("{LEASE_SECS}s"))
        .env("CHUMP_INTERVAL", "1h")
        .env("CHUMP_ROLLOUT_TIMEOUT", "120")
}

/// Waits until one of `replicas` logs that the check of `id` started;
/// returns its index.
async fn running_replica(replicas: &[&Chump], id: i64) -> usize {
    wait_for("a replica to start the check", WAIT, || async {
        replicas
            .iter()
            .position(|c| !log_lines(c, "check started", id).is_empty())
    })
    .await
}

fn signal(c: &Chump, sig: i32) {
    let rc = unsafe { libc::kill(c.pid() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", c.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_check_is_taken_over_within_a_lease() {
    let Some(config) = fresh_config() else { return };
    let url = database_url(&config);
    let env = Env::new().await;
    env.app_repo("web", "fo", "web", "nginx:1");
    // The API server answers nothing for now: whichever replica checks
    // first is held before it can apply anything.
    env.kube.set_delay(Duration::from_secs(3600));
    let mut replicas = [
        env.chump_with(replica(&env, &url, "a")),
        env.chump_with(replica(&env, &url, "b")),
    ];
    let id = create(&replicas[0], &env.source("web", "fo", "web")).await;
    let x = running_replica(&[&replicas[0], &replicas[1]], id).await;
    let y = 1 - x;
    // Held well past its lease: renewed, so the other replica keeps off.
    let held = Instant::now();
    wait_for("two leases to pass", WAIT, || async {
        (held.elapsed() > Duration::from_secs(2 * LEASE_SECS)).then_some(())
    })
    .await;
    assert!(
        log_lines(&replicas[y], "check started", id).is_empty(),
        "the other replica started the check while its lease was renewed"
    );
    assert_eq!(applies(&env.kube, "fo", "web"), 0);

    replicas[x].kill();
    let killed = Instant::now();
    env.kube.set_delay(Duration::ZERO);
    let survivor = &replicas[y];
    wait_for(
        "the survivor to deploy the source",
        Duration::from_secs(3 * LEASE_SECS),
        || async {
            history(survivor, id)
                .await
                .into_iter()
                .find(|e| e["outcome"] == "deployed")
        },
    )
    .await;
    let took = killed.elapsed();
    eprintln!(
        "failover: replica killed mid-check → source deployed by the other in {:.2} s (lease {LEASE_SECS} s)",
        took.as_secs_f64()
    );
    assert_eq!(log_lines(survivor, "check started", id).len(), 1);
    assert_eq!(applies(&env.kube, "fo", "web"), 1);
    assert_eq!(history(survivor, id).await.len(), 1);
    assert_eq!(env.deployed_image("fo", "web").as_deref(), Some("nginx:1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_resumes_without_writing_anything() {
    let Some(config) = fresh_config() else { return };
    let url = database_url(&config);
    let env = Env::new().await;
    env.app_repo("web", "fo", "web", "nginx:1");
    // The first replica's first request to the API server takes 4 s: it is
    // stopped before that answer comes, so before it applies anything.
    env.kube.set_delay(Duration::from_secs(4));
    let replicas = [
        env.chump_with(replica(&env, &url, "a")),
        env.chump_with(replica(&env, &url, "b")),
    ];
    let id = create(&replicas[0], &env.source("web", "fo", "web")).await;
    let x = running_replica(&[&replicas[0], &replicas[1]], id).await;
    let (paused, other) = (&replicas[x], &replicas[1 - x]);
    signal(paused, libc::SIGSTOP);
    let stopped = Instant::now();
    env.kube.set_delay(Duration::ZERO);
    assert_eq!(
        applies(&env.kube, "fo", "web"),
        0,
        "applied before the pause"
    );

    // Stopped longer than its lease: the other replica takes over.
    let e = wait_history(other, id, "the other replica's deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    eprintln!(
        "failover: replica paused mid-check → source deployed by the other in {:.2} s (lease {LEASE_SECS} s)",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(log_lines(other, "check started", id).len(), 1);
    assert_eq!(applies(&env.kube, "fo", "web"), 1);

    signal(paused, libc::SIGCONT);
    let lost = wait_for("the resumed replica's lease lost", WAIT, || async {
        log_lines(paused, "lease lost", id).into_iter().next()
    })
    .await;
    eprintln!("resumed replica: lease lost ({})", lost["reason"]);
    wait_for("the resumed replica to drop the check", WAIT, || async {
        log_lines(paused, "check abandoned", id).into_iter().next()
    })
    .await;
    let logs = paused.logs();
    assert_eq!(log_lines(paused, "lease lost", id).len(), 1, "{logs}");
    assert!(
        log_lines(paused, "check done", id)
            .iter()
            .all(|l| l["abandoned"] == true),
        "{logs}"
    );
    // Nothing more reached the cluster or the store.
    assert_eq!(applies(&env.kube, "fo", "web"), 1, "{logs}");
    let h = history(other, id).await;
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0], e);
    let st = get(other, &format!("/api/sources/{id}/status")).await;
    assert_eq!(st["last_outcome"], "deployed", "{st}");
    assert_eq!(st["in_flight"], false, "{st}");
    assert_eq!(
        metric(paused, "chump_checks_abandoned_total").await,
        Some(1.0)
    );
}
