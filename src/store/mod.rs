//! Store implementations: the embedded SQLite default and RethinkDB.
//!
//! The [`Store`] trait itself lives in `chump_jobs::store` (what the pipeline
//! needs); this module picks and opens a backend from the configuration.

pub mod rethinkdb;
pub mod sqlite;

use std::sync::Arc;

use chump_jobs::store::Store;

use crate::config::DatabaseConfig;

/// Opens the configured store, keeping the manifests of each source's
/// newest `manifest_retention` history entries.
pub async fn open(
    config: &DatabaseConfig,
    manifest_retention: u32,
) -> anyhow::Result<Arc<dyn Store>> {
    match config {
        DatabaseConfig::Sqlite { path } => Ok(Arc::new(
            sqlite::SqliteStore::open(path)
                .await?
                .with_manifest_retention(manifest_retention),
        )),
        DatabaseConfig::RethinkDb(rc) => Ok(Arc::new(
            rethinkdb::RethinkStore::open(rc)
                .await?
                .with_manifest_retention(manifest_retention),
        )),
    }
}
