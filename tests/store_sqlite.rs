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
        .unwrap();
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
        store.delete_source(2).await.unwrap();
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
