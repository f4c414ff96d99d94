//! The store conformance suite on the SQLite backend, plus what only SQLite
//! has: a file that survives reopening.

mod support;

use std::sync::Arc;

use chump::store::sqlite::SqliteStore;
use chump_jobs::store::Store;

async fn fresh() -> Option<Arc<dyn Store>> {
    // Under target/tmp, kept: the store outlives this function.
    let dir = tempfile::Builder::new()
        .prefix("store-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
        .keep();
    let store = SqliteStore::open(dir.join("chump.db").to_str().unwrap())
        .await
        .unwrap()
        .with_manifest_retention(support::conformance::RETENTION);
    Some(Arc::new(store))
}

conformance_tests!(fresh());

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chump.db");
    let path = path.to_str().unwrap();
    let now = time::OffsetDateTime::now_utc();
    {
        let store = SqliteStore::open(path).await.unwrap();
        store
            .create_source(&support::conformance::spec("a"), now)
            .await
            .unwrap();
        store
            .create_source(&support::conformance::spec("b"), now)
            .await
            .unwrap();
        store.delete_source(2, false).await.unwrap();
        store.close().await;
    }
    let store = SqliteStore::open(path).await.unwrap();
    assert_eq!(store.list_sources().await.unwrap().len(), 1);
    assert_eq!(
        store
            .create_source(&support::conformance::spec("c"), now)
            .await
            .unwrap()
            .id,
        3
    );
}

#[tokio::test]
async fn a_database_from_before_pruning_is_upgraded() {
    // The schema as the previous release left it (its two migrations), with
    // a source in it.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    for name in ["0001_init.sql", "0002_inventory.sql"] {
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations/sqlite")
                .join(name),
            old.join(name),
        )
        .unwrap();
    }
    let path = dir.path().join("chump.db");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO sources (namespace, deployment_name, git_url, branch, deploy_path, \
             container_name, image_version_file, created_at, updated_at) \
             VALUES ('production', 'a', 'https://github.com/stvnorg/helloworld.git', 'master', \
             './deploy/helloworld/deployment.yaml', 'app', './deploy/helloworld/deployment.yaml', 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    let a = store.get_source(1).await.unwrap().unwrap();
    assert_eq!(a.spec, support::conformance::spec("a"));
    assert!(a.spec.prune && !a.deleting, "{a:?}");
    assert!(matches!(
        store.delete_source(1, true).await,
        Ok(chump_jobs::store::Deletion::Deleted)
    ));
}

/// The whole list is rendered once and kept between writes on SQLite
/// (`chump::api::whole_list`). Through the crate's router on a real
/// socket: every write, over the API or straight to the store as a
/// worker's, is in the next answer, and a lease that ends with nothing
/// written turns `in_flight` false on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_whole_list_follows_every_write_and_lease_end() {
    use std::time::Duration;

    use chump::api::AppState;
    use chump::http::HttpLimits;
    use chump_jobs::history::Outcome;
    use chump_jobs::metrics::Metrics;
    use serde_json::{json, Value};
    use support::chump::wait_for;
    use time::OffsetDateTime;
    use tokio_util::sync::CancellationToken;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("chump.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new());
    let state = AppState {
        store: store.clone(),
        rules: Default::default(),
        api_token: None,
        api_read_token: None,
        webhook_secret: None,
        schedule_changed: Default::default(),
        metrics: metrics.clone(),
        pipeline: None,
        notifications: chump::notify::Notifications::new(None, store.clone(), metrics, addr),
        push_index: Default::default(),
        whole_list: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(chump::http::serve(
        listener,
        chump::api::router(state),
        HttpLimits {
            header_timeout: Duration::from_secs(5),
            max_connections: 64,
        },
        shutdown.clone(),
    ));
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let list = || async {
        let resp = http.get(url("/api/sources")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["sources"]
            .as_array()
            .unwrap()
            .clone()
    };

    assert_eq!(list().await, Vec::<Value>::new());
    // Created over the API.
    let created: Value = http
        .post(url("/api/sources"))
        .json(&json!({"namespace": "production", "deployment_name": "web",
            "git_url": "https://example.com/shop.git", "branch": "master",
            "deploy_path": "deploy", "container_name": "web",
            "image_version_file": "deploy/web.yaml"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["source"]["id"].as_i64().unwrap();
    let once = list().await;
    assert_eq!(once.len(), 1);
    assert_eq!(once[0]["branch"], "master");
    assert_eq!(once[0]["status"]["in_flight"], false);
    // The same answer again while nothing changed.
    assert_eq!(list().await, once);
    // Changed over the API.
    let resp = http
        .patch(url(&format!("/api/sources/{id}")))
        .json(&json!({"branch": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(list().await[0]["branch"], "main");
    // Claimed straight in the store, as a worker does, with a short lease.
    let claims = store
        .claim_due(OffsetDateTime::now_utc(), 1, "p1", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(list().await[0]["status"]["in_flight"], true);
    // The lease ends with nothing written: the answer follows the clock.
    let version = store.data_version().await.unwrap();
    wait_for(
        "the lapsed lease to leave the list",
        Duration::from_secs(15),
        || async { (list().await[0]["status"]["in_flight"] == false).then_some(()) },
    )
    .await;
    assert_eq!(
        store.data_version().await.unwrap(),
        version,
        "nothing was written"
    );
    // A worker's report, written straight to the store.
    let claims = store
        .claim_due(OffsetDateTime::now_utc(), 1, "p2", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(list().await[0]["status"]["in_flight"], true);
    let now = OffsetDateTime::now_utc();
    store
        .finish_check(
            &claims[0],
            &support::conformance::report(&claims[0], Outcome::UpToDate, now),
            now + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let after = list().await;
    assert_eq!(after[0]["status"]["in_flight"], false);
    assert_eq!(after[0]["status"]["last_outcome"], "up_to_date");
    // Deleted over the API.
    let resp = http
        .delete(url(&format!("/api/sources/{id}")))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(list().await, Vec::<Value>::new());
    shutdown.cancel();
    server.await.unwrap();
}
