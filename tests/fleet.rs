//! chump as a fleet of replicas on one RethinkDB database: replicas that
//! open a fresh database at the same moment, duplicates an earlier version
//! left behind, sources written by other clients (the Python tool) while
//! chump runs, and checks asked of one replica run by another at once.
//!
//! Needs `CHUMP_TEST_RETHINKDB=host:port` (see `support/rethinkdb.rs`);
//! without it every test says it was skipped and passes.

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use chump::config::RethinkConfig;
use chump::store::rethinkdb::RethinkStore;
use chump_jobs::store::Store;
use reql::r;
use serde_json::{json, Value};
use support::chump::{wait_for, Chump};
use support::conformance::spec;
use support::env::{create, get, wait_history, Env, WAIT};
use support::kube_api::RolloutMode;
use support::rethinkdb::{
    database_url, delete, fresh_config, raw_all, raw_run, raw_session, try_raw_run,
};
use time::OffsetDateTime;

/// The tables chump keeps in its database.
const TABLES: [&str; 7] = [
    "sources",
    "chump_status",
    "chump_history",
    "chump_counters",
    "chump_targets",
    "chump_inventory",
    "chump_manifests",
];

/// How many databases named like `config.db` exist, and how many tables of
/// each name are in it (any name, duplicates and renamed ones included).
async fn census(
    session: &reql::Session,
    config: &RethinkConfig,
) -> (usize, BTreeMap<String, usize>) {
    let dbs = raw_all(session, r.db("rethinkdb").table("db_config"))
        .await
        .iter()
        .filter(|d| d["name"] == config.db.as_str())
        .count();
    let mut tables = BTreeMap::new();
    for t in raw_all(session, r.db("rethinkdb").table("table_config")).await {
        if t["db"] == config.db.as_str() {
            *tables
                .entry(t["name"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    (dbs, tables)
}

fn count(query: reql::Command) -> reql::Command {
    reql::Command::new(ql2::term::TermType::Count).with_arg(query)
}

/// Asserts exactly one database and one of each table, nothing else.
async fn assert_converged(session: &reql::Session, config: &RethinkConfig, what: &str) {
    let (dbs, tables) = census(session, config).await;
    assert_eq!(dbs, 1, "{what}: databases named {}", config.db);
    let expected: BTreeMap<String, usize> = TABLES.iter().map(|t| (t.to_string(), 1)).collect();
    assert_eq!(tables, expected, "{what}: tables of {}", config.db);
    let indexes = raw_run(
        session,
        r.db(config.db.clone()).table("chump_status").index_list(),
    )
    .await;
    assert!(
        indexes.to_string().contains("next_check_at"),
        "{what}: {indexes}"
    );
    let indexes = raw_run(
        session,
        r.db(config.db.clone()).table("chump_history").index_list(),
    )
    .await;
    assert!(
        indexes.to_string().contains("source_id_id")
            && indexes.to_string().contains("namespace_id"),
        "{what}: {indexes}"
    );
}

async fn drop_db(session: &reql::Session, config: &RethinkConfig) {
    // Every database of that name (a failed test may leave several).
    for d in raw_all(session, r.db("rethinkdb").table("db_config")).await {
        if d["name"] == config.db.as_str() {
            let id = d["id"].as_str().unwrap().to_string();
            let _ = try_raw_run(
                session,
                delete(r.db("rethinkdb").table("db_config").get(id)),
            )
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_opening_a_fresh_database_at_once_converge() {
    let Some(probe) = fresh_config() else { return };
    let session = raw_session(&probe).await;
    for n in [2usize, 4, 8] {
        for round in 0..3 {
            let config = fresh_config().unwrap();
            let started = Instant::now();
            let opened =
                futures::future::join_all((0..n).map(|_| RethinkStore::open(&config))).await;
            let elapsed = started.elapsed();
            let stores: Vec<RethinkStore> = opened
                .into_iter()
                .enumerate()
                .map(|(i, opened)| {
                    opened.unwrap_or_else(|e| panic!("{n} at once, round {round}: store {i}: {e}"))
                })
                .collect();
            assert_converged(&session, &config, &format!("{n} at once, round {round}")).await;
            // And they work together: ids from one counter, seen by all.
            let now = OffsetDateTime::now_utc();
            let a = stores[0].create_source(&spec("a"), now).await.unwrap();
            let b = stores[n - 1].create_source(&spec("b"), now).await.unwrap();
            assert_eq!((a.id, b.id), (1, 2));
            for s in &stores {
                assert_eq!(s.list_sources().await.unwrap().len(), 2);
            }
            eprintln!("{n} stores opened one fresh database together in {elapsed:?}");
            drop_db(&session, &config).await;
        }
    }
}

/// Makes RethinkDB create table `table` in `config.db` more than once, as
/// concurrent creators do (it does not serialize them): creates it from 8
/// connections at once until it has, and returns how many there are.
async fn provoke_duplicates(config: &RethinkConfig, table: &str) -> usize {
    let session = raw_session(config).await;
    let _ = try_raw_run(&session, r.db_create(config.db.clone())).await;
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(raw_session(config).await);
    }
    for _ in 0..50 {
        futures::future::join_all(
            sessions
                .iter()
                .map(|s| try_raw_run(s, r.db(config.db.clone()).table_create(table.to_string()))),
        )
        .await;
        let (_, tables) = census(&session, config).await;
        let n = tables.get(table).copied().unwrap_or(0);
        if n > 1 {
            return n;
        }
        raw_run(
            &session,
            r.db(config.db.clone()).table_drop(table.to_string()),
        )
        .await;
    }
    panic!("RethinkDB never created {table} twice from 8 concurrent creates in 50 tries");
}

/// The ids of the tables named `table` in `config.db`, lowest first.
async fn table_ids(session: &reql::Session, config: &RethinkConfig, table: &str) -> Vec<String> {
    let mut ids: Vec<String> = raw_all(session, r.db("rethinkdb").table("table_config"))
        .await
        .iter()
        .filter(|t| t["db"] == config.db.as_str() && t["name"] == table)
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// A new table in `config.db` holding `docs`, named `name` in the end;
/// returns its id. RethinkDB refuses to rename a table to a name in use, so
/// tables of one name come only from concurrent creates (which leave them
/// empty: nothing can write to an ambiguous name) — or from a chump that
/// stopped while it had renamed duplicates apart (`NAME_chump_dup_<id>`)
/// to examine them, which is what these tables stand for.
async fn table_holding(
    config: &RethinkConfig,
    docs: Vec<Value>,
    name: impl Fn(&str) -> String,
) -> String {
    let session = raw_session(config).await;
    let _ = try_raw_run(&session, r.db_create(config.db.clone())).await;
    let temp = format!("chump_test_{:08x}", fastrand::u32(..));
    raw_run(&session, r.db(config.db.clone()).table_create(temp.clone())).await;
    let t = r.db(config.db.clone()).table(temp.clone());
    raw_run(
        &session,
        reql::Command::new(ql2::term::TermType::Wait).with_arg(t.clone()),
    )
    .await;
    if !docs.is_empty() {
        let inserted = raw_run(&session, t.insert(docs.clone())).await;
        assert_eq!(inserted["inserted"], docs.len(), "{inserted}");
    }
    let id = table_ids(&session, config, &temp).await.remove(0);
    let renamed = raw_run(
        &session,
        r.db("rethinkdb")
            .table("table_config")
            .get(id.clone())
            .update(json!({"name": name(&id)})),
    )
    .await;
    assert_eq!(renamed["replaced"], 1, "{renamed}");
    id
}

/// The name chump gives a duplicate of `table` with id `id` while it
/// examines it.
fn apart(table: &str) -> impl Fn(&str) -> String + '_ {
    move |id| format!("{table}_chump_dup_{}", id.replace('-', ""))
}

/// Every table of `config.db` named `table` or renamed apart from it.
async fn tables_like(session: &reql::Session, config: &RethinkConfig, table: &str) -> Vec<String> {
    let mut ids: Vec<String> = raw_all(session, r.db("rethinkdb").table("table_config"))
        .await
        .iter()
        .filter(|t| {
            t["db"] == config.db.as_str()
                && t["name"]
                    .as_str()
                    .is_some_and(|n| n == table || n.starts_with(&format!("{table}_chump_dup_")))
        })
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_duplicates_left_behind_are_repaired_at_open() {
    let Some(config) = fresh_config() else { return };
    let n = provoke_duplicates(&config, "sources").await;
    let m = provoke_duplicates(&config, "chump_status").await;
    let session = raw_session(&config).await;
    let broken = try_raw_run(&session, count(r.db(config.db.clone()).table("sources"))).await;
    assert!(
        broken.as_ref().is_err_and(|e| e.contains("ambiguous")),
        "{n} tables named sources should be ambiguous: {broken:?}"
    );
    let store = RethinkStore::open(&config).await.unwrap();
    assert_converged(&session, &config, &format!("{n} + {m} duplicates")).await;
    assert!(store.list_sources().await.unwrap().is_empty());
    drop_db(&session, &config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_holding_data_is_the_one_kept() {
    let Some(probe) = fresh_config() else { return };
    let session = raw_session(&probe).await;
    let doc = support::rethinkdb::python_doc(5, "kept");
    // The data in the table carrying the name, then in the one renamed
    // apart (whichever id is lower: lowest-id-wins alone would lose it).
    for data_in_named in [true, false] {
        let config = fresh_config().unwrap();
        let (named_docs, apart_docs) = if data_in_named {
            (vec![doc.clone()], vec![])
        } else {
            (vec![], vec![doc.clone()])
        };
        let named = table_holding(&config, named_docs, |_| "sources".into()).await;
        let other = table_holding(&config, apart_docs, apart("sources")).await;
        let holder = if data_in_named { named } else { other };
        let store = RethinkStore::open(&config).await.unwrap();
        assert_converged(&session, &config, "one duplicate with data").await;
        assert_eq!(table_ids(&session, &config, "sources").await, vec![holder]);
        let sources = store.list_sources().await.unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].id, 5);
        assert_eq!(sources[0].spec.deployment_name, "kept");
        drop_db(&session, &config).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_that_both_hold_data_are_refused_and_left_alone() {
    let Some(config) = fresh_config() else { return };
    let one = table_holding(
        &config,
        vec![support::rethinkdb::python_doc(1, "one")],
        |_| "sources".into(),
    )
    .await;
    let two = table_holding(
        &config,
        vec![support::rethinkdb::python_doc(2, "two")],
        apart("sources"),
    )
    .await;
    let session = raw_session(&config).await;
    let found = tables_like(&session, &config, "sources").await;
    let err = match RethinkStore::open(&config).await {
        Ok(_) => panic!("opened a database with two sources tables holding data"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("sources") && err.contains("hold data"),
        "{err}"
    );
    for id in [&one, &two] {
        assert!(
            err.contains(id.as_str()),
            "the message names table {id}: {err}"
        );
    }
    // Nothing dropped: both tables and their documents are there.
    assert_eq!(tables_like(&session, &config, "sources").await, found);
    assert_eq!(
        table_ids(&session, &config, "sources").await,
        vec![one.clone()]
    );
    // And chump serve says so and exits non-zero.
    let out = support::chump::chump_command()
        .arg("serve")
        .env("CHUMP_BIND", "127.0.0.1:0")
        .env("CHUMP_DATABASE", database_url(&config))
        .env(
            "CHUMP_WORKDIR",
            tempfile::tempdir().unwrap().path().join("w"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hold data"), "{stderr}");
    assert_eq!(tables_like(&session, &config, "sources").await, found);
    drop_db(&session, &config).await;
}

/// The JSON log lines of `chump` with `message`, for source `id`.
fn log_lines(chump: &Chump, message: &str, id: i64) -> Vec<Value> {
    chump
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == message && v["source_id"] == id)
        .collect()
}

fn log_time(line: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        line["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Waits until `chump` logs that a check of source `id` started, after
/// `seen` such lines; returns when it did (by chump's clock).
async fn check_started(chump: &Chump, id: i64, seen: usize) -> OffsetDateTime {
    let line = wait_for("a check to start", WAIT, || async {
        log_lines(chump, "check started", id).into_iter().nth(seen)
    })
    .await;
    log_time(&line)
}

fn ms(d: time::Duration) -> f64 {
    d.as_seconds_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_written_by_another_client_are_followed_live() {
    let Some(config) = fresh_config() else { return };
    let env = Env::new().await;
    env.app_repo("app", "feed", "web", "nginx:1.0");
    // A long interval: only the changefeed can make chump look in time.
    let chump = env.chump_with(
        env.options()
            .env("CHUMP_DATABASE", database_url(&config))
            .env("CHUMP_INTERVAL", "1h"),
    );
    let session = raw_session(&config).await;
    let sources = r.db(config.db.clone()).table("sources");

    // Inserted as the Python tool does: seven fields and an integer id.
    let mut doc = json!({"id": 1, "namespace": "feed", "deployment_name": "web",
        "git_url": env.git.url("app"), "branch": "main", "deploy_path": "deploy",
        "container_name": "app", "image_version_file": "deploy/deployment.yaml"});
    let written = OffsetDateTime::now_utc();
    raw_run(&session, sources.clone().insert(doc.clone())).await;
    let started = check_started(&chump, 1, 0).await;
    wait_history(&chump, 1, "the inserted source deployed", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    assert_eq!(
        env.deployed_image("feed", "web").as_deref(),
        Some("nginx:1.0")
    );
    eprintln!(
        "insert by another client → check started: {:.0} ms",
        ms(started - written)
    );

    // Updated the same way: a branch with another image.
    env.git.commit_files(
        "app",
        "next",
        support::env::app_files("feed", "web", "nginx:2.0"),
        "next image",
    );
    doc["branch"] = json!("next");
    let written = OffsetDateTime::now_utc();
    raw_run(
        &session,
        sources.clone().get(1).update(json!({"branch": "next"})),
    )
    .await;
    let started = check_started(&chump, 1, 1).await;
    wait_history(&chump, 1, "the updated source deployed", |e| {
        e["outcome"] == "deployed" && e["desired_image"] == "nginx:2.0"
    })
    .await;
    eprintln!(
        "update by another client → check started: {:.0} ms",
        ms(started - written)
    );

    // Deleted: never checked again, and gone from the API.
    raw_run(&session, delete(sources.clone().get(1))).await;
    wait_for("the deleted source to leave the API", WAIT, || async {
        let resp = reqwest::get(chump.url("/api/sources/1")).await.unwrap();
        (resp.status() == 404).then_some(())
    })
    .await;
    let checks_of_deleted = log_lines(&chump, "check started", 1).len();
    // Another source, checked every 5 s: two of its checks are two
    // chances for the deleted one to come round.
    let mut other = env.source("app", "feed", "other");
    other["interval_seconds"] = json!(5);
    let other_id = create(&chump, &other).await;
    check_started(&chump, other_id, 1).await;
    assert_eq!(
        log_lines(&chump, "check started", 1).len(),
        checks_of_deleted
    );
    let status = raw_run(
        &session,
        r.db(config.db.clone()).table("chump_status").get(1),
    )
    .await;
    assert!(
        status.is_null(),
        "the deleted source's schedule stays: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_asked_of_one_replica_starts_at_once_on_a_free_one() {
    let Some(config) = fresh_config() else { return };
    let env = Env::new().await;
    env.app_repo("busy", "fleet", "busy", "nginx:1.0");
    env.app_repo("app", "fleet", "web", "nginx:1.0");
    // The busy source's rollout never finishes: its check holds a worker.
    env.kube
        .set_rollout_for("fleet", "busy", RolloutMode::Never);
    let replica = |name: &str| {
        let dir = env.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        env.options()
            .dir(&dir)
            .env("CHUMP_DATABASE", database_url(&config))
            .env("CHUMP_WORKERS", "1")
            .env("CHUMP_INTERVAL", "1h")
            .env("CHUMP_ROLLOUT_TIMEOUT", "120")
    };
    let a = env.chump_with(replica("a"));
    let busy = create(&a, &env.source("busy", "fleet", "busy")).await;
    check_started(&a, busy, 0).await;
    let b = env.chump_with(replica("b"));
    // B is up once it answers; its feeds open as it starts.
    get(&b, "/api/health").await;
    wait_for("replica b's changefeeds", WAIT, || async {
        b.logs().contains("changefeed ready").then_some(())
    })
    .await;

    // Created through A, whose only worker is busy: B checks it.
    let written = OffsetDateTime::now_utc();
    let web = create(&a, &env.source("app", "fleet", "web")).await;
    let started = check_started(&b, web, 0).await;
    eprintln!(
        "create on replica A → check started on replica B: {:.0} ms",
        ms(started - written)
    );
    wait_history(&b, web, "web deployed by b", |e| e["outcome"] == "deployed").await;
    assert!(
        log_lines(&a, "check started", web).is_empty(),
        "A was busy, yet checked web"
    );

    // A manual check asked of A runs on B, at once.
    let written = OffsetDateTime::now_utc();
    let resp = reqwest::Client::new()
        .post(a.url(&format!("/api/sources/{web}/check")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let started = check_started(&b, web, 1).await;
    eprintln!(
        "manual check on replica A → check started on replica B: {:.0} ms",
        ms(started - written)
    );
    assert!(log_lines(&a, "check started", web).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_changefeed_is_reopened_and_misses_nothing() {
    let Some(config) = fresh_config() else { return };
    let env = Env::new().await;
    env.app_repo("app", "gap", "web", "nginx:1.0");
    let chump = env.chump_with(
        env.options()
            .env("CHUMP_DATABASE", database_url(&config))
            .env("CHUMP_INTERVAL", "1h"),
    );
    let feed_says = |what: &'static str| {
        let chump = &chump;
        move || async move {
            chump
                .logs()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["message"] == what && v["feed"] == "sources")
                .then_some(())
        }
    };
    wait_for("the sources feed", WAIT, feed_says("changefeed ready")).await;
    let session = raw_session(&config).await;

    // Resharding the sources table aborts every changefeed on it.
    let id = table_ids(&session, &config, "sources").await.remove(0);
    let table_config = r.db("rethinkdb").table("table_config").get(id);
    let shard = raw_run(&session, table_config.clone()).await["shards"][0].clone();
    let result = raw_run(
        &session,
        table_config.update(json!({"shards": [shard.clone(), shard]})),
    )
    .await;
    assert_eq!(result["replaced"], 1, "{result}");

    // Written at once, while the table settles (retried while it refuses).
    let doc = json!({"id": 1, "namespace": "gap", "deployment_name": "web",
        "git_url": env.git.url("app"), "branch": "main", "deploy_path": "deploy",
        "container_name": "app", "image_version_file": "deploy/deployment.yaml"});
    let sources = r.db(config.db.clone()).table("sources");
    wait_for("the insert to be taken", WAIT, || async {
        match try_raw_run(&session, sources.clone().insert(doc.clone())).await {
            Ok(v) if v["inserted"] == 1 => Some(()),
            _ => None,
        }
    })
    .await;
    wait_for(
        "the feed to break",
        WAIT,
        feed_says("changefeed broke; opening it again"),
    )
    .await;
    wait_for(
        "the feed to open again",
        WAIT,
        feed_says("changefeed open again"),
    )
    .await;
    wait_history(
        &chump,
        1,
        "the source written across the gap deployed",
        |e| e["outcome"] == "deployed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_get_the_replicas_asked_for_and_too_many_is_a_clear_error() {
    let Some(probe) = fresh_config() else { return };
    let session = raw_session(&probe).await;
    let servers = raw_all(&session, r.db("rethinkdb").table("server_status"))
        .await
        .len() as u32;
    // As many replicas as there are servers: every table has them.
    let mut config = fresh_config().unwrap();
    config.replicas = servers;
    RethinkStore::open(&config).await.unwrap();
    for t in raw_all(&session, r.db("rethinkdb").table("table_config")).await {
        if t["db"] == config.db.as_str() {
            let replicas = t["shards"][0]["replicas"].as_array().unwrap().len() as u32;
            assert_eq!(replicas, servers, "{t}");
        }
    }
    drop_db(&session, &config).await;
    // One more than there are servers: opening fails and says why.
    let mut config = fresh_config().unwrap();
    config.replicas = servers + 1;
    let err = match RethinkStore::open(&config).await {
        Ok(_) => panic!("{} replicas on {servers} servers", servers + 1),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("replicas"), "{err}");
    eprintln!("{} replicas on {servers} server(s): {err}", servers + 1);
    drop_db(&session, &config).await;
}

/// The sources a push to `chump` triggered, ascending.
async fn pushed(chump: &Chump, repository: &str) -> Vec<i64> {
    let resp = reqwest::Client::new()
        .post(chump.url("/api/webhooks/generic"))
        .json(&json!({"repository": repository, "branch": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let mut ids: Vec<i64> = body["triggered"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// A replica keeps an index of the sources for pushes while the sources
/// changefeed says nothing changed: pushes to it still find the sources as
/// they are now, whoever wrote them (itself, another replica, or another
/// client on the table), once the feed has brought the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_to_a_replica_see_sources_written_anywhere() {
    let Some(config) = fresh_config() else { return };
    let env = Env::new().await;
    let replica = |name: &str| {
        let dir = env.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        env.options()
            .dir(&dir)
            .env("CHUMP_DATABASE", database_url(&config))
            .env("CHUMP_INTERVAL", "1h")
    };
    let a = env.chump_with(replica("a"));
    let b = env.chump_with(replica("b"));
    for (name, c) in [("a", &a), ("b", &b)] {
        get(c, "/api/health").await;
        wait_for(&format!("replica {name}'s changefeeds"), WAIT, || async {
            c.logs().contains("changefeed ready").then_some(())
        })
        .await;
    }
    let mono = env.git.url("mono");
    let sees = |want: Vec<i64>, what: &'static str| {
        let (a, mono) = (&a, &mono);
        async move {
            wait_for(what, WAIT, || {
                let want = want.clone();
                async move { (pushed(a, mono).await == want).then_some(()) }
            })
            .await
        }
    };

    let x = create(&a, &env.source("mono", "shop", "x")).await;
    assert_eq!(pushed(&a, &mono).await, vec![x], "created on this replica");
    let y = create(&b, &env.source("mono", "shop", "y")).await;
    sees(vec![x, y], "a push to A to find y, created on B").await;

    // Inserted as the Python tool does, with an id of its own.
    let session = raw_session(&config).await;
    let sources = r.db(config.db.clone()).table("sources");
    let z = 1000;
    raw_run(
        &session,
        sources.clone().insert(json!({"id": z, "namespace": "shop",
            "deployment_name": "z", "git_url": mono, "branch": "main",
            "deploy_path": "deploy", "container_name": "app",
            "image_version_file": "deploy/deployment.yaml"})),
    )
    .await;
    sees(
        vec![x, y, z],
        "a push to A to find z, inserted by another client",
    )
    .await;
    raw_run(
        &session,
        sources.clone().get(y).update(json!({"branch": "dev"})),
    )
    .await;
    sees(vec![x, z], "a push to A to miss y, moved to another branch").await;
    let resp = reqwest::Client::new()
        .delete(b.url(&format!("/api/sources/{x}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    sees(vec![z], "a push to A to miss x, deleted through B").await;
    assert_eq!(pushed(&b, &mono).await, vec![z], "B agrees");
}
