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
async fn a_closed_store_refuses_writes_and_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chump.db");
    let path = path.to_str().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let store = SqliteStore::open(path).await.unwrap();
    store
        .create_source(&support::conformance::spec("a"), now)
        .await
        .unwrap();
    store.close().await;
    let refused = store
        .create_source(&support::conformance::spec("b"), now)
        .await;
    assert!(
        matches!(refused, Err(chump_jobs::store::StoreError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(matches!(
        store
            .claim_due(now, 10, "p1", std::time::Duration::from_secs(60))
            .await,
        Err(chump_jobs::store::StoreError::Unavailable(_))
    ));
    drop(store);
    let store = SqliteStore::open(path).await.unwrap();
    let sources = store.list_sources().await.unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(
        sources[0].spec.deployment_name,
        support::conformance::spec("a").deployment_name
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
/// (`chump::api::whole_list`): every write, over the API or straight to
/// the store as a worker's, is in the next answer, and a lease that ends
/// with nothing written turns `in_flight` false on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_whole_list_follows_every_write_and_lease_end() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("chump.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let api = support::kept_list::ApiServer::start(store.clone()).await;
    support::kept_list::follows_every_write_and_lease_end(&api, &store, &store).await;
    api.stop().await;
}
