//! The store conformance suite on RethinkDB, plus what only a shared,
//! pre-existing database has: taking over the Python tool's data, two
//! processes racing for ids, targets and leases, and `chump serve` on it.
//!
//! Needs a server: `CHUMP_TEST_RETHINKDB=host:port` (e.g. `127.0.0.1:28015`,
//! user `admin` with no password). Every test works in its own new database
//! (random name), so the tests run in parallel; without the variable each
//! test says it was skipped and passes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chump::store::rethinkdb::RethinkStore;
use chump_jobs::history::{Outcome, Trigger};
use chump_jobs::store::{Deletion, Store, StoreError};
use reql::r;
use serde_json::{json, Value};
use support::conformance::{inventory, report, spec};
use support::rethinkdb::{delete, fresh_config, python_doc, raw_all, raw_run, raw_session};
use time::OffsetDateTime;

async fn fresh() -> Option<Arc<dyn Store>> {
    let config = fresh_config()?;
    let store = RethinkStore::open(&config)
        .await
        .unwrap()
        .with_manifest_retention(support::conformance::RETENTION);
    Some(Arc::new(store))
}

conformance_tests!(fresh());

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_a_database_in_the_original_layout() {
    let Some(config) = fresh_config() else { return };
    let session = raw_session(&config).await;
    raw_run(&session, r.db_create(config.db.clone())).await;
    raw_run(&session, r.db(config.db.clone()).table_create("sources")).await;
    let docs = vec![python_doc(3, "a"), python_doc(7, "b"), python_doc(12, "c")];
    let result = raw_run(
        &session,
        r.db(config.db.clone()).table("sources").insert(docs),
    )
    .await;
    assert_eq!(result["inserted"], 3, "{result}");

    let store = RethinkStore::open(&config).await.unwrap();
    let listed = store.list_sources().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![3, 7, 12]
    );
    assert_eq!(listed[1].spec, spec("b"));
    assert_eq!(listed[1].revision, 1);
    // Each is scheduled, due at once.
    let statuses = store.list_statuses().await.unwrap();
    assert_eq!(statuses.len(), 3);
    let now = OffsetDateTime::now_utc() + Duration::from_secs(5);
    let claims = store
        .claim_due(now, 10, "p1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claims.len(), 3);
    // New ids continue above the highest existing one.
    let d = store.create_source(&spec("d"), now).await.unwrap();
    assert_eq!(d.id, 13);
    // Their targets are taken.
    assert!(matches!(
        store.create_source(&spec("a"), now).await,
        Err(StoreError::Duplicate(_))
    ));
    // Updating an original document keeps the fields the Python tool reads.
    let mut changed = spec("a");
    changed.branch = "main".into();
    store.update_source(3, &changed, now).await.unwrap();
    let raw = raw_run(&session, r.db(config.db.clone()).table("sources").get(3)).await;
    assert_eq!(raw["branch"], "main");
    assert_eq!(raw["deployment_name"], "a");
    assert_eq!(raw["id"], 3);

    // A second replica opening the same database changes nothing.
    let again = RethinkStore::open(&config).await.unwrap();
    assert_eq!(again.list_sources().await.unwrap().len(), 4);
    assert_eq!(again.create_source(&spec("e"), now).await.unwrap().id, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_documents_are_errors_not_panics() {
    let Some(config) = fresh_config() else { return };
    let store = RethinkStore::open(&config).await.unwrap();
    let session = raw_session(&config).await;
    let mut doc = python_doc(40, "odd");
    doc.as_object_mut().unwrap().remove("branch");
    raw_run(
        &session,
        r.db(config.db.clone()).table("sources").insert(doc),
    )
    .await;
    match store.get_source(40).await {
        Err(StoreError::Backend(m)) => assert!(m.contains("40") && m.contains("branch"), "{m}"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_race_for_ids_and_targets() {
    let Some(config) = fresh_config() else { return };
    // Two stores, each with its own connections: two chump processes.
    let (a, b) = tokio::join!(RethinkStore::open(&config), RethinkStore::open(&config));
    let stores: [Arc<dyn Store>; 2] = [Arc::new(a.unwrap()), Arc::new(b.unwrap())];
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_source(&spec(&format!("app-{i}")), t(0))
                .await
                .unwrap()
                .id
        }));
    }
    let mut dups = Vec::new();
    for i in 0..10 {
        let store = stores[i % 2].clone();
        dups.push(tokio::spawn(async move {
            store.create_source(&spec("same"), t(0)).await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    let mut wins = 0;
    for d in dups {
        match d.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Duplicate(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    assert_eq!(stores[0].list_sources().await.unwrap().len(), 65);
    assert_eq!(stores[1].list_sources().await.unwrap().len(), 65);

    // Both claim at once: every source exactly once.
    let lease = Duration::from_secs(60);
    let (s0, s1) = (stores[0].clone(), stores[1].clone());
    let p0 = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(s0.claim_due(t(1), 4, "p0", lease).await.unwrap());
        }
        got
    });
    let p1 = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(s1.claim_due(t(1), 4, "p1", lease).await.unwrap());
        }
        got
    });
    let mut all: Vec<i64> = p0
        .await
        .unwrap()
        .into_iter()
        .chain(p1.await.unwrap())
        .map(|c| c.source.id)
        .collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a source was claimed by both processes");
    assert_eq!(n, 65);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_across_processes() {
    let Some(config) = fresh_config() else { return };
    let a = RethinkStore::open(&config).await.unwrap();
    let b = RethinkStore::open(&config).await.unwrap();
    let lease = Duration::from_secs(60);
    let s = a.create_source(&spec("a"), t(0)).await.unwrap();
    let first = a.claim_due(t(1), 10, "a", lease).await.unwrap();
    assert_eq!(first.len(), 1);
    // Held: the other process sees nothing due until the lease ends.
    assert!(b.claim_due(t(30), 10, "b", lease).await.unwrap().is_empty());
    assert_eq!(b.next_due().await.unwrap(), Some(t(61)));
    // Process a dies; its lease expires and b takes the source.
    let taken = b.claim_due(t(62), 10, "b", lease).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].source.id, s.id);
    // a's late report neither records status nor frees b's lease.
    a.finish_check(
        &first[0],
        &report(&first[0], Outcome::Failed, t(63)),
        t(500),
    )
    .await
    .unwrap();
    let st = b.status(s.id).await.unwrap().unwrap();
    assert!(st.in_flight);
    assert_eq!(st.last_outcome, None);
    b.finish_check(
        &taken[0],
        &report(&taken[0], Outcome::UpToDate, t(64)),
        t(300),
    )
    .await
    .unwrap();
    let st = a.status(s.id).await.unwrap().unwrap();
    assert!(!st.in_flight);
    assert_eq!(st.next_check_at, Some(t(300)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_rethinkdb_over_http() {
    let Some(config) = fresh_config() else { return };
    let url = format!("rethinkdb://{}:{}/{}", config.host, config.port, config.db);
    let mut chump = support::chump::Chump::start_with(
        support::chump::ChumpOptions::default().env("CHUMP_DATABASE", url),
    );
    let client = reqwest::Client::new();
    let mut seed = python_doc(0, "web");
    seed.as_object_mut().unwrap().remove("id");
    let created = client
        .post(chump.url("/api/sources"))
        .json(&seed)
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", chump.logs());
    let body: Value = created.json().await.unwrap();
    let id = body["id"]
        .as_i64()
        .or_else(|| body["source"]["id"].as_i64());
    assert_eq!(id, Some(1), "{body}");
    let dup = client
        .post(chump.url("/api/sources"))
        .json(&seed)
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status().as_u16(), 409);
    let listed: Value = client
        .get(chump.url("/api/sources"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains("\"web\""), "{listed}");
    assert!(chump.terminate(Duration::from_secs(20)));
    // The data is in RethinkDB: a store opened afterwards sees it.
    let store = RethinkStore::open(&config).await.unwrap();
    assert_eq!(store.list_sources().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_documents_go_with_their_source() {
    let Some(config) = fresh_config() else { return };
    let store = RethinkStore::open(&config).await.unwrap();
    let session = raw_session(&config).await;
    let inventories = || r.db(config.db.clone()).table("chump_inventory");
    let lease = Duration::from_secs(60);
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    for claim in store.claim_due(t(0), 10, "p1", lease).await.unwrap() {
        let mut done = report(&claim, Outcome::Deployed, t(1));
        done.inventory = Some(inventory(
            "1111111111111111111111111111111111111111",
            &["x"],
        ));
        store.finish_check(&claim, &done, t(10)).await.unwrap();
    }
    // One document per source, keyed by source_id, readable by other tools.
    let doc = raw_run(&session, inventories().get(a.id)).await;
    assert_eq!(doc["source_id"], a.id, "{doc}");
    assert_eq!(doc["objects"][1]["kind"], "ConfigMap", "{doc}");
    assert_eq!(raw_all(&session, inventories()).await.len(), 2);
    store.delete_source(a.id, false).await.unwrap();
    assert!(raw_run(&session, inventories().get(a.id)).await.is_null());

    // Left behind by a delete cut short (source and status gone, the
    // inventory not): dropped when a process opens the database.
    raw_run(
        &session,
        delete(r.db(config.db.clone()).table("sources").get(b.id)),
    )
    .await;
    raw_run(
        &session,
        delete(r.db(config.db.clone()).table("chump_status").get(b.id)),
    )
    .await;
    assert!(!raw_run(&session, inventories().get(b.id)).await.is_null());
    let again = RethinkStore::open(&config).await.unwrap();
    assert!(raw_all(&session, inventories()).await.is_empty());
    assert_eq!(again.inventory(b.id).await.unwrap(), None);
}

/// Source `name`, suspended, deployed once (a manual check) with an
/// inventory of one ConfigMap.
async fn deployed_suspended(store: &RethinkStore, name: &str) -> chump_jobs::source::Source {
    let mut s = spec(name);
    s.suspended = true;
    let source = store.create_source(&s, t(0)).await.unwrap();
    store
        .request_check(source.id, Trigger::Manual, t(0))
        .await
        .unwrap();
    let claim = store
        .claim_due(t(0), 10, "p1", Duration::from_secs(60))
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.source.id == source.id)
        .unwrap();
    let mut done = report(&claim, Outcome::Deployed, t(1));
    done.inventory = Some(inventory(
        "1111111111111111111111111111111111111111",
        &["x"],
    ));
    store.finish_check(&claim, &done, t(100)).await.unwrap();
    source
}

/// Claims at a time past `t(200)` and the wall clock (a delete makes a
/// source due at the real time).
async fn claims_later(store: &RethinkStore) -> Vec<chump_jobs::store::Claim> {
    let at = t(200).max(OffsetDateTime::now_utc() + Duration::from_secs(1));
    store
        .claim_due(at, 10, "p9", Duration::from_secs(60))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_and_deleting_live_on_the_documents() {
    let Some(config) = fresh_config() else { return };
    let store = RethinkStore::open(&config).await.unwrap();
    let session = raw_session(&config).await;
    let db = || r.db(config.db.clone());
    let mut keep = spec("keep");
    keep.prune = false;
    let k = store.create_source(&keep, t(0)).await.unwrap();
    let raw = raw_run(&session, db().table("sources").get(k.id)).await;
    assert_eq!(raw["prune"], false, "{raw}");
    let a = deployed_suspended(&store, "a").await;
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Pruning
    );
    let raw = raw_run(&session, db().table("sources").get(a.id)).await;
    assert_eq!(
        (&raw["deleting"], &raw["prune"]),
        (&json!(true), &json!(true)),
        "{raw}"
    );
    let st = raw_run(&session, db().table("chump_status").get(a.id)).await;
    assert_eq!(
        (&st["deleting"], &st["requested_trigger"]),
        (&json!(true), &json!("delete")),
        "{st}"
    );
    // A document without the fields (the Python tool's) reads as prune on,
    // not being deleted.
    raw_run(&session, db().table("sources").insert(python_doc(50, "py"))).await;
    let py = store.get_source(50).await.unwrap().unwrap();
    assert!(py.spec.prune && !py.deleting, "{py:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_cut_before_the_status_mark_is_finished_by_reconcile() {
    let Some(config) = fresh_config() else { return };
    let store = RethinkStore::open(&config).await.unwrap();
    let session = raw_session(&config).await;
    let a = deployed_suspended(&store, "a").await;
    // The source document marked, the process gone before its status was.
    raw_run(
        &session,
        r.db(config.db.clone())
            .table("sources")
            .get(a.id)
            .update(json!({"deleting": true})),
    )
    .await;
    assert!(store.get_source(a.id).await.unwrap().unwrap().deleting);
    // Suspended, and its status not marked: nothing claims it yet.
    assert!(claims_later(&store).await.is_empty());
    // The next process to open the database schedules the prune.
    let again = RethinkStore::open(&config).await.unwrap();
    let claims = claims_later(&again).await;
    assert_eq!(
        claims
            .iter()
            .map(|c| (c.source.id, c.trigger))
            .collect::<Vec<_>>(),
        vec![(a.id, Trigger::Delete)]
    );
    assert_eq!(claims[0].inventory.objects.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_cut_before_the_status_mark_is_finished_by_a_following_replica() {
    let Some(config) = fresh_config() else { return };
    let store = Arc::new(RethinkStore::open(&config).await.unwrap());
    let session = raw_session(&config).await;
    let a = deployed_suspended(&store, "a").await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = {
        let (store, wake, stop) = (store.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move { store.follow_changes(wake, stop).await })
    };
    // The sources feed is live once a source another client inserts gets
    // a status (so what follows is the feed's doing, not a reconcile's).
    let statuses = || r.db(config.db.clone()).table("chump_status");
    raw_run(
        &session,
        r.db(config.db.clone())
            .table("sources")
            .insert(python_doc(60, "probe")),
    )
    .await;
    support::chump::wait_for("the sources feed", Duration::from_secs(30), || async {
        (!raw_run(&session, statuses().get(60)).await.is_null()).then_some(())
    })
    .await;
    raw_run(
        &session,
        r.db(config.db.clone())
            .table("sources")
            .get(a.id)
            .update(json!({"deleting": true})),
    )
    .await;
    support::chump::wait_for(
        "the status marked by the feed",
        Duration::from_secs(30),
        || async {
            let st = raw_run(&session, statuses().get(a.id)).await;
            (st["deleting"] == json!(true)).then_some(())
        },
    )
    .await;
    let claims = claims_later(&store).await;
    let claim = claims.iter().find(|c| c.source.id == a.id).unwrap();
    assert_eq!(claim.trigger, Trigger::Delete);
    stop.cancel();
    follower.await.unwrap();
}

/// Pages of the source list where ids are sparse and run past
/// the id counter (documents another client inserted while chump ran):
/// every source once, in order, whatever the page size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cover_sparse_ids_and_ids_past_the_counter() {
    let Some(config) = fresh_config() else { return };
    let store = RethinkStore::open(&config).await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(store.create_source(&spec(name), t(0)).await.unwrap().id);
    }
    // Inserted behind chump's back: far apart, and far above its counter
    // (which stays at 3).
    let session = raw_session(&config).await;
    let outside = [700, 5_000, 90_000];
    let docs: Vec<Value> = outside
        .iter()
        .map(|id| python_doc(*id, &format!("x{id}")))
        .collect();
    let result = raw_run(
        &session,
        r.db(config.db.clone()).table("sources").insert(docs),
    )
    .await;
    assert_eq!(result["inserted"], 3, "{result}");
    ids.extend(outside);
    ids.sort_unstable();

    let whole = store.list_sources_with_status(None, None).await.unwrap();
    assert_eq!(whole.iter().map(|(s, _)| s.id).collect::<Vec<_>>(), ids);
    for limit in [1, 2, 3, 1000] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .list_sources_with_status(after, Some(limit))
                .await
                .unwrap();
            assert!(page.len() <= limit as usize, "limit {limit}");
            seen.extend(page.iter().map(|(s, _)| s.id));
            if page.len() < limit as usize {
                break;
            }
            after = page.last().map(|(s, _)| s.id);
        }
        assert_eq!(seen, ids, "pages of {limit}");
    }
}

/// `store` following its changefeeds (as `chump serve` does) until `stop`;
/// returns once its data version is known (the sources feed is open).
async fn following(
    store: &Arc<RethinkStore>,
) -> (
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move { store.follow_changes(wake, stop).await })
    };
    support::chump::wait_for(
        "the data version (the sources feed open)",
        Duration::from_secs(30),
        || async { store.data_version().await.unwrap() },
    )
    .await;
    (stop, follower)
}

/// The data version is the writes counter: every write that changes a
/// source or a status moves it, on whichever replica wrote, at once (no
/// feed in between); a write that changes nothing leaves it; another
/// client's change moves it once the sources feed brings it; and with the
/// feed closed the version is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_version_moves_with_every_replicas_writes() {
    let Some(config) = fresh_config() else { return };
    let a = Arc::new(RethinkStore::open(&config).await.unwrap());
    assert_eq!(
        a.data_version().await.unwrap(),
        None,
        "known without the sources feed"
    );
    let (stop, follower) = following(&a).await;
    support::conformance::data_version_moves_with_every_write(a.clone()).await;

    // Another replica, not following anything.
    let b = RethinkStore::open(&config).await.unwrap();
    let v = a.data_version().await.unwrap().unwrap();
    let s = b.create_source(&spec("b"), t(0)).await.unwrap();
    let v2 = a.data_version().await.unwrap().unwrap();
    assert!(v2 > v, "another replica's create left the version at {v}");
    let claims = b
        .claim_due(OffsetDateTime::now_utc(), 1, "b1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    let v3 = a.data_version().await.unwrap().unwrap();
    assert!(v3 > v2, "another replica's claim left the version at {v2}");
    // Changing nothing (a lease that is not this owner's) moves nothing.
    b.release_claims("nobody", &[s.id]).await.unwrap();
    assert_eq!(a.data_version().await.unwrap(), Some(v3));

    // The Python tool inserts a source: seen through the feed.
    let session = raw_session(&config).await;
    raw_run(
        &session,
        r.db(config.db.clone())
            .table("sources")
            .insert(python_doc(70, "py")),
    )
    .await;
    support::chump::wait_for(
        "the Python tool's insert to move the version",
        Duration::from_secs(30),
        || async { (a.data_version().await.unwrap().unwrap() > v3).then_some(()) },
    )
    .await;

    stop.cancel();
    follower.await.unwrap();
    assert_eq!(
        a.data_version().await.unwrap(),
        None,
        "known with the sources feed closed"
    );
}

/// The whole list kept on RethinkDB (`chump::api::whole_list`): the API
/// of one replica keeps it, another replica claims and reports, and every
/// write is in the next answer; so is, once the feed brings it, a source
/// the Python tool inserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_whole_list_follows_every_replicas_writes() {
    let Some(config) = fresh_config() else { return };
    let a = Arc::new(RethinkStore::open(&config).await.unwrap());
    let (stop, follower) = following(&a).await;
    let served: Arc<dyn Store> = a.clone();
    let worker: Arc<dyn Store> = Arc::new(RethinkStore::open(&config).await.unwrap());
    let api = support::kept_list::ApiServer::start(served.clone()).await;
    support::kept_list::follows_every_write_and_lease_end(&api, &served, &worker).await;

    let session = raw_session(&config).await;
    raw_run(
        &session,
        r.db(config.db.clone())
            .table("sources")
            .insert(python_doc(80, "py")),
    )
    .await;
    support::chump::wait_for(
        "the Python tool's source in the list",
        Duration::from_secs(30),
        || async {
            let list = api.list().await;
            (list.len() == 1 && list[0]["id"] == json!(80)).then_some(())
        },
    )
    .await;
    api.stop().await;
    stop.cancel();
    follower.await.unwrap();
}
