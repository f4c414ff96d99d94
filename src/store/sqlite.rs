//! The embedded default store: one SQLite file, in WAL mode.
//!
//! Writes go through one connection, held behind a mutex, so they are
//! serialized inside the process and never fail with `SQLITE_BUSY` against
//! each other; reads use a separate pool and run concurrently with writes
//! (WAL). Each statement is a trip to the connection's own thread (sqlx),
//! and those trips are most of a steady check's store cost, so the hot
//! paths take few: a claim and a batch of quiet results are one statement
//! each, and a read followed by a single write under the writer's guard
//! needs no transaction around it (nothing else writes in between).
//!
//! A SQLite file belongs to one chump process at a time: leases still work,
//! but replicas that share a database need the RethinkDB backend. The
//! process holds an exclusive lock on `<database>.lock` for as long as the
//! store is open, so a second process refuses to start on the same file;
//! that is also why opening the store may release every lease it finds —
//! their holder is gone (a crash or `kill -9`), and their checks are due
//! again at once.
//!
//! A source deleted with `prune=true` keeps its row, marked `deleting`, until
//! the check that pruned its objects is recorded: that transaction deletes
//! the source, its status and its inventory, and writes the history entry.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chump_jobs::history::{CheckReport, HistoryEntry, Outcome, Stage, Trigger};
use chump_jobs::inventory::Inventory;
use chump_jobs::manifests::{ManifestsState, PackedManifests};
use chump_jobs::rollback::{Pin, PinChange, RollbackOrder};
use chump_jobs::source::{Source, SourceId, SourceSpec};
use chump_jobs::store::{
    is_quiet, Claim, Deletion, HistoryQuery, QuietCheck, RequestResult, SourceStatus, Store,
    StoreError, StoreResult, DEFAULT_MANIFEST_RETENTION,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use time::OffsetDateTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const SOURCE_COLUMNS: &str = "id, namespace, deployment_name, git_url, branch, deploy_path, \
    container_name, image_version_file, interval_seconds, suspended, prune, auto_rollback, \
    service_account, deleting, revision, created_at, updated_at";

/// Outcomes and stages of entries that went live, as SQL (see
/// [`chump_jobs::history::went_live`]; a test below keeps them in step).
const WENT_LIVE: &str = "(outcome IN ('deployed', 'rolled_back', 'superseded') \
    OR (outcome = 'failed' AND stage IN ('rollout', 'prune')))";

/// A claim, as one statement (binds: now, the limit, the owner, the lease's
/// end): the due sources, in schedule order, up to the limit, are leased,
/// and their requests cleared (kept in `claimed_trigger`: RETURNING reads
/// the updated row). Each row comes back with the status the claim needs,
/// the source's columns ([`SOURCE_COLUMNS`], read by `source_from_row`) and
/// its recorded inventory (`commit_sha`, `desired_image`, `objects`, read by
/// `inventory_from_row`; NULL without one).
fn claim_query() -> &'static str {
    static QUERY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    QUERY.get_or_init(|| {
        let of_source = |c: &str| {
            format!("(SELECT {c} FROM sources WHERE sources.id = source_status.source_id) AS {c}")
        };
        let of_inventory = |c: &str| {
            format!(
                "(SELECT {c} FROM source_inventory \
                 WHERE source_inventory.source_id = source_status.source_id) AS {c}"
            )
        };
        let returning: Vec<String> = SOURCE_COLUMNS
            .split(", ")
            .filter(|c| *c != "id")
            .map(of_source)
            .chain(["commit_sha", "desired_image", "objects"].map(of_inventory))
            .collect();
        format!(
            "UPDATE source_status SET claimed_trigger = requested_trigger, \
               requested_trigger = NULL, lease_owner = ?3, lease_until = ?4 \
             WHERE source_id IN ( \
               SELECT st.source_id FROM source_status st JOIN sources s ON s.id = st.source_id \
               WHERE st.next_check_at <= ?1 \
                 AND (st.lease_until IS NULL OR st.lease_until <= ?1) \
                 AND (s.suspended = 0 OR st.requested_trigger = 'manual' OR s.deleting = 1 \
                      OR st.rollback_to IS NOT NULL) \
               ORDER BY st.next_check_at, s.id LIMIT ?2) \
             RETURNING source_id AS id, claimed_trigger, consecutive_failures, last_outcome, \
               next_check_at, last_commit, pinned_commit, rollback_to, rollback_trigger, {}",
            returning.join(", ")
        )
    })
}

/// The writer connection (None once the store is closed).
type Writer = std::sync::Arc<tokio::sync::Mutex<Option<SqliteConnection>>>;

/// A [`Store`] on a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// The one connection that writes, held while it is used. Not a pool of
    /// one: a pool pings the connection on every release (and by default on
    /// every acquire) and releases it from a task of its own, so each
    /// statement cost two or three trips to the connection's thread
    /// instead of one. The connection is in this process; there is nothing
    /// a ping could find out.
    writer: Writer,
    reader: SqlitePool,
    /// Held open (and locked) while any clone of the store lives.
    _lock: std::sync::Arc<std::fs::File>,
    /// Per source, how many of the newest entries keep their manifests.
    manifest_retention: u32,
    /// Bumped after every committed change to the sources table: this
    /// process owns the file, so it sees every change.
    sources_version: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A read-only connection of its own, only ever asked `PRAGMA
    /// data_version` (a per-connection count that moves on every commit
    /// made through another connection: all of ours write through
    /// `writer`). Never pooled, so never swapped for a connection whose
    /// count starts elsewhere.
    version_probe: std::sync::Arc<tokio::sync::Mutex<Option<SqliteConnection>>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        let lock = lock_database(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database {path}: {e}"))
            })?;
        MIGRATOR.run(&mut writer).await.map_err(|e| {
            StoreError::Backend(format!("cannot migrate SQLite database {path}: {e}"))
        })?;
        let options = options.read_only(true);
        // No ping before each acquire (sqlx's default): the connections are
        // in this process, so a ping proves nothing and costs a trip to the
        // connection's thread.
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database {path}: {e}"))
            })?;
        let version_probe = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database {path}: {e}"))
            })?;
        // Whoever held leases in this file is gone: their checks are due.
        sqlx::query("UPDATE source_status SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
            .execute(&mut writer)
            .await
            .map_err(db_err)?;
        Ok(Self {
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(Some(writer))),
            reader,
            _lock: std::sync::Arc::new(lock),
            manifest_retention: DEFAULT_MANIFEST_RETENTION,
            sources_version: Default::default(),
            version_probe: std::sync::Arc::new(tokio::sync::Mutex::new(Some(version_probe))),
        })
    }

    /// A source was created, updated or deleted (called after the commit,
    /// so whoever reads the version before the list never keeps a list
    /// older than its version).
    fn sources_changed(&self) {
        self.sources_version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Keeps the manifests of each source's newest `n` entries (at least 1).
    pub fn with_manifest_retention(mut self, n: u32) -> Self {
        self.manifest_retention = n.max(1);
        self
    }

    /// Retention: source `source_id` keeps the manifests of its newest
    /// entries, and always those of its newest successful deploy; older
    /// ones are deleted and their entries marked `dropped`.
    async fn drop_old_manifests(
        &self,
        tx: &mut sqlx::SqliteConnection,
        source_id: SourceId,
    ) -> StoreResult<()> {
        let doomed: Vec<(i64,)> = sqlx::query_as(
            "SELECT history_id FROM history_manifests WHERE source_id = ?1 \
               AND history_id NOT IN (SELECT history_id FROM history_manifests \
                 WHERE source_id = ?1 ORDER BY history_id DESC LIMIT ?2) \
               AND history_id IS NOT (SELECT MAX(h.id) FROM history h \
                 JOIN history_manifests m ON m.history_id = h.id \
                 WHERE h.source_id = ?1 AND h.outcome IN ('deployed', 'rolled_back'))",
        )
        .bind(source_id)
        .bind(self.manifest_retention as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        for (id,) in doomed {
            sqlx::query("DELETE FROM history_manifests WHERE history_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            sqlx::query("UPDATE history SET manifests = 'dropped' WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// The writer connection, for as long as the guard is held (writes are
    /// serialized here, and so never fail with `SQLITE_BUSY` against each
    /// other).
    async fn writer(&self) -> StoreResult<tokio::sync::MappedMutexGuard<'_, SqliteConnection>> {
        tokio::sync::MutexGuard::try_map(self.writer.lock().await, Option::as_mut)
            .map_err(|_| StoreError::Unavailable("the SQLite store is closed".into()))
    }

    /// Closes the readers' pool, waiting for connections in use, the
    /// writer (after the write in progress) and the version probe.
    pub async fn close(&self) {
        self.reader.close().await;
        if let Some(writer) = self.writer.lock().await.take() {
            let _ = writer.close().await;
        }
        if let Some(probe) = self.version_probe.lock().await.take() {
            let _ = probe.close().await;
        }
    }
}

/// Takes the exclusive lock that makes this process the file's only user.
fn lock_database(path: &str) -> Result<std::fs::File, StoreError> {
    let lock_path = format!("{path}.lock");
    if let Some(dir) = std::path::Path::new(&lock_path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "the SQLite database {path} is in use by another chump process (lock {lock_path}); \
             replicas that share a database need RethinkDB"
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock {lock_path}: {e}"
        ))),
    }
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(v: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLITE_BUSY (5), SQLITE_LOCKED (6), SQLITE_READONLY (8),
            // SQLITE_IOERR (10), SQLITE_CANTOPEN (14), and their extended codes.
            let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
            if matches!(primary, 5 | 6 | 8 | 10 | 13 | 14) {
                StoreError::Unavailable(db.message().to_string())
            } else {
                StoreError::Backend(db.message().to_string())
            }
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn duplicate(spec: &SourceSpec) -> StoreError {
    StoreError::Duplicate(format!(
        "{}/{} container {}",
        spec.namespace, spec.deployment_name, spec.container_name
    ))
}

fn source_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Source, sqlx::Error> {
    Ok(Source {
        id: row.try_get("id")?,
        spec: SourceSpec {
            namespace: row.try_get("namespace")?,
            deployment_name: row.try_get("deployment_name")?,
            git_url: row.try_get("git_url")?,
            branch: row.try_get("branch")?,
            deploy_path: row.try_get("deploy_path")?,
            container_name: row.try_get("container_name")?,
            image_version_file: row.try_get("image_version_file")?,
            interval_seconds: row
                .try_get::<Option<i64>, _>("interval_seconds")?
                .map(|v| v as u32),
            suspended: row.try_get::<i64, _>("suspended")? != 0,
            prune: row.try_get::<i64, _>("prune")? != 0,
            auto_rollback: row
                .try_get::<Option<i64>, _>("auto_rollback")?
                .map(|v| v != 0),
            service_account: row.try_get("service_account")?,
        },
        revision: row.try_get("revision")?,
        created_at: from_ms(row.try_get("created_at")?),
        updated_at: from_ms(row.try_get("updated_at")?),
        deleting: row.try_get::<i64, _>("deleting")? != 0,
    })
}

/// A page of sources with their status rows, as one JSON array of arrays
/// in [`ListedRow`]'s field order (binds: the id to start above, the limit
/// or -1). `SOURCE_COLUMNS` and `status_from_row` read the same columns;
/// the store conformance suite holds the two readings equal.
const LISTING_QUERY: &str = "SELECT json_group_array(json_array(\
    id, namespace, deployment_name, git_url, branch, deploy_path, container_name, \
    image_version_file, interval_seconds, suspended, prune, auto_rollback, service_account, \
    deleting, revision, created_at, updated_at, \
    source_id, next_check_at, requested_trigger, lease_until, last_checked_at, last_commit, \
    last_outcome, last_stage, last_message, desired_image, running_image, consecutive_failures, \
    pinned_commit, pinned_reason, pinned_entry, pinned_at, rollback_to)) \
    FROM (SELECT s.*, st.* FROM sources s LEFT JOIN source_status st ON st.source_id = s.id \
          WHERE s.id > ? ORDER BY s.id LIMIT ?)";

/// One element of [`LISTING_QUERY`]'s answer (a JSON array, read in field
/// order).
#[derive(serde::Deserialize)]
struct ListedRow {
    id: i64,
    namespace: String,
    deployment_name: String,
    git_url: String,
    branch: String,
    deploy_path: String,
    container_name: String,
    image_version_file: String,
    interval_seconds: Option<i64>,
    suspended: i64,
    prune: i64,
    auto_rollback: Option<i64>,
    service_account: Option<String>,
    deleting: i64,
    revision: i64,
    created_at: i64,
    updated_at: i64,
    status_of: Option<i64>,
    next_check_at: Option<i64>,
    requested_trigger: Option<String>,
    lease_until: Option<i64>,
    last_checked_at: Option<i64>,
    last_commit: Option<String>,
    last_outcome: Option<String>,
    last_stage: Option<String>,
    last_message: Option<String>,
    desired_image: Option<String>,
    running_image: Option<String>,
    consecutive_failures: Option<i64>,
    pinned_commit: Option<String>,
    pinned_reason: Option<String>,
    pinned_entry: Option<i64>,
    pinned_at: Option<i64>,
    rollback_to: Option<i64>,
}

impl ListedRow {
    /// The source and its status, as `source_from_row` and
    /// `status_from_row` read them (`now` tells a live lease).
    fn into_parts(self, now: i64) -> (Source, SourceStatus) {
        let source = Source {
            id: self.id,
            spec: SourceSpec {
                namespace: self.namespace,
                deployment_name: self.deployment_name,
                git_url: self.git_url,
                branch: self.branch,
                deploy_path: self.deploy_path,
                container_name: self.container_name,
                image_version_file: self.image_version_file,
                interval_seconds: self.interval_seconds.map(|v| v as u32),
                suspended: self.suspended != 0,
                prune: self.prune != 0,
                auto_rollback: self.auto_rollback.map(|v| v != 0),
                service_account: self.service_account,
            },
            revision: self.revision,
            created_at: from_ms(self.created_at),
            updated_at: from_ms(self.updated_at),
            deleting: self.deleting != 0,
        };
        if self.status_of.is_none() {
            return (source, SourceStatus::default());
        }
        let status = SourceStatus {
            last_checked_at: self.last_checked_at.map(from_ms),
            last_commit: self.last_commit,
            last_outcome: parse_opt(self.last_outcome),
            last_stage: parse_opt(self.last_stage),
            last_message: self.last_message,
            desired_image: self.desired_image,
            running_image: self.running_image,
            consecutive_failures: self.consecutive_failures.unwrap_or(0).max(0) as u32,
            next_check_at: self.next_check_at.map(from_ms),
            requested: parse_opt(self.requested_trigger),
            in_flight: self.lease_until.is_some_and(|t| t > now),
            in_flight_until: self.lease_until.filter(|t| *t > now).map(from_ms),
            pinned: self.pinned_commit.map(|commit| Pin {
                commit,
                reason: self.pinned_reason.unwrap_or_default(),
                entry: self.pinned_entry,
                since: from_ms(self.pinned_at.unwrap_or_default()),
            }),
            rollback_to: self.rollback_to,
        };
        (source, status)
    }
}

fn parse_opt<T: FromStr>(v: Option<String>) -> Option<T> {
    v.and_then(|s| s.parse().ok())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_source(&self, spec: &SourceSpec, now: OffsetDateTime) -> StoreResult<Source> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        let row = sqlx::query(&format!(
            "INSERT INTO sources (namespace, deployment_name, git_url, branch, deploy_path, \
             container_name, image_version_file, interval_seconds, suspended, prune, auto_rollback, \
             service_account, revision, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) \
             RETURNING {SOURCE_COLUMNS}"
        ))
        .bind(&spec.namespace)
        .bind(&spec.deployment_name)
        .bind(&spec.git_url)
        .bind(&spec.branch)
        .bind(&spec.deploy_path)
        .bind(&spec.container_name)
        .bind(&spec.image_version_file)
        .bind(spec.interval_seconds.map(i64::from))
        .bind(spec.suspended as i64)
        .bind(spec.prune as i64)
        .bind(spec.auto_rollback.map(i64::from))
        .bind(spec.service_account.as_deref())
        .bind(ms(now))
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| if is_unique_violation(&e) { duplicate(spec) } else { db_err(e) })?;
        let source = source_from_row(&row).map_err(db_err)?;
        sqlx::query("INSERT INTO source_status (source_id, next_check_at) VALUES (?, ?)")
            .bind(source.id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.sources_changed();
        Ok(source)
    }

    async fn get_source(&self, id: SourceId) -> StoreResult<Option<Source>> {
        let row = sqlx::query(&format!(
            "SELECT {SOURCE_COLUMNS} FROM sources WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        row.map(|r| source_from_row(&r)).transpose().map_err(db_err)
    }

    /// Through the listing's single query (see `list_sources_with_status`):
    /// every push webhook reads the whole list, and reading it row by row
    /// through sqlx cost a thread hop per source.
    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        Ok(self
            .list_sources_with_status(None, None)
            .await?
            .into_iter()
            .map(|(source, _)| source)
            .collect())
    }

    async fn update_source(
        &self,
        id: SourceId,
        spec: &SourceSpec,
        now: OffsetDateTime,
    ) -> StoreResult<Source> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        let row = sqlx::query(&format!(
            "UPDATE sources SET namespace = ?, deployment_name = ?, git_url = ?, branch = ?, \
             deploy_path = ?, container_name = ?, image_version_file = ?, interval_seconds = ?, \
             suspended = ?, prune = ?, auto_rollback = ?, service_account = ?, \
             revision = revision + 1, updated_at = ? \
             WHERE id = ? AND deleting = 0 RETURNING {SOURCE_COLUMNS}"
        ))
        .bind(&spec.namespace)
        .bind(&spec.deployment_name)
        .bind(&spec.git_url)
        .bind(&spec.branch)
        .bind(&spec.deploy_path)
        .bind(&spec.container_name)
        .bind(&spec.image_version_file)
        .bind(spec.interval_seconds.map(i64::from))
        .bind(spec.suspended as i64)
        .bind(spec.prune as i64)
        .bind(spec.auto_rollback.map(i64::from))
        .bind(spec.service_account.as_deref())
        .bind(ms(now))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                duplicate(spec)
            } else {
                db_err(e)
            }
        })?;
        let Some(row) = row else {
            // Missing, or being deleted (its row takes no updates).
            return Err(match deleting(&mut tx, id).await? {
                None => StoreError::NotFound(id),
                Some(_) => StoreError::BeingDeleted(id),
            });
        };
        let source = source_from_row(&row).map_err(db_err)?;
        sqlx::query(
            "UPDATE source_status SET next_check_at = MIN(next_check_at, ?) WHERE source_id = ?",
        )
        .bind(ms(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.sources_changed();
        Ok(source)
    }

    async fn delete_source(&self, id: SourceId, prune: bool) -> StoreResult<Deletion> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        let Some(being_deleted) = deleting(&mut tx, id).await? else {
            return Err(StoreError::NotFound(id));
        };
        if prune && being_deleted {
            return Ok(Deletion::Pruning);
        }
        if prune {
            let row = sqlx::query(
                "SELECT commit_sha, desired_image, objects FROM source_inventory WHERE source_id = ?",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            let applied = match row.as_ref().map(inventory_from_row) {
                None => false,
                Some(Ok(inv)) => !inv.objects.is_empty(),
                // A check would see it as empty (nothing to prune): so does this.
                Some(Err(e)) => {
                    tracing::warn!(source = id, error = %e, "unreadable inventory: deleting at once");
                    false
                }
            };
            if applied {
                // Due at once; a check running now is followed by the prune
                // at once (a requested check survives its finish).
                sqlx::query("UPDATE sources SET deleting = 1 WHERE id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query(
                    "UPDATE source_status SET next_check_at = MIN(next_check_at, ?), \
                     requested_trigger = COALESCE(requested_trigger, ?) WHERE source_id = ?",
                )
                .bind(ms(OffsetDateTime::now_utc()))
                .bind(Trigger::Delete.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                self.sources_changed();
                return Ok(Deletion::Pruning);
            }
        }
        delete_rows(&mut tx, id).await?;
        tx.commit().await.map_err(db_err)?;
        self.sources_changed();
        Ok(Deletion::Deleted)
    }

    fn sources_version(&self) -> Option<u64> {
        Some(
            self.sources_version
                .load(std::sync::atomic::Ordering::Acquire),
        )
    }

    async fn request_check(
        &self,
        id: SourceId,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<RequestResult> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        let result = request_in(&mut tx, id, trigger, now).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(result)
    }

    /// The sources' rows in one query, the requests in one statement, both
    /// under the writer's guard: nothing else writes between them, and only
    /// the second writes, so no transaction is needed (it would be two more
    /// trips to SQLite's thread per push).
    async fn request_checks(
        &self,
        ids: &[SourceId],
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<StoreResult<RequestResult>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut writer = self.writer().await?;
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT s.id, s.deleting, st.requested_trigger, st.lease_until \
             FROM sources s JOIN source_status st ON st.source_id = s.id WHERE s.id IN (",
        );
        let mut list = qb.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        qb.push(")");
        let rows = qb.build().fetch_all(&mut *writer).await.map_err(db_err)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: SourceId = row.try_get("id").map_err(db_err)?;
            let deleting = row.try_get::<i64, _>("deleting").map_err(db_err)? != 0;
            let requested: Option<String> = row.try_get("requested_trigger").map_err(db_err)?;
            let lease_until: Option<i64> = row.try_get("lease_until").map_err(db_err)?;
            found.insert(id, (deleting, requested.is_some(), lease_until));
        }
        let results: Vec<StoreResult<RequestResult>> = ids
            .iter()
            .map(|&id| match found.get(&id) {
                None => Err(StoreError::NotFound(id)),
                Some((true, _, _)) => Err(StoreError::BeingDeleted(id)),
                Some(&(false, requested, lease_until)) => Ok(request_result(
                    requested,
                    lease_until.is_some_and(|t| t > ms(now)),
                    trigger,
                )),
            })
            .collect();
        let queued: Vec<SourceId> = ids
            .iter()
            .zip(&results)
            .filter(|(_, r)| {
                matches!(
                    r,
                    Ok(RequestResult::Queued | RequestResult::QueuedAfterRunning)
                )
            })
            .map(|(id, _)| *id)
            .collect();
        if !queued.is_empty() {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new("UPDATE source_status SET requested_trigger = ");
            qb.push_bind(trigger.as_str())
                .push(", next_check_at = MIN(next_check_at, ")
                .push_bind(ms(now))
                .push(") WHERE source_id IN (");
            let mut list = qb.separated(", ");
            for id in &queued {
                list.push_bind(*id);
            }
            qb.push(")");
            qb.build().execute(&mut *writer).await.map_err(db_err)?;
        }
        Ok(results)
    }

    async fn request_rollback(
        &self,
        id: SourceId,
        to: i64,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<RequestResult> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        let row = sqlx::query(
            "SELECT s.deleting, st.rollback_to, st.lease_until \
             FROM sources s JOIN source_status st ON st.source_id = s.id WHERE s.id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(id));
        };
        if row.try_get::<i64, _>("deleting").map_err(db_err)? != 0 {
            return Err(StoreError::BeingDeleted(id));
        }
        let pending: Option<i64> = row.try_get("rollback_to").map_err(db_err)?;
        let lease_until: Option<i64> = row.try_get("lease_until").map_err(db_err)?;
        let result = if lease_until.is_some_and(|t| t > ms(now)) {
            RequestResult::QueuedAfterRunning
        } else if pending == Some(to) {
            RequestResult::AlreadyQueued
        } else {
            RequestResult::Queued
        };
        sqlx::query(
            "UPDATE source_status SET rollback_to = ?, rollback_trigger = ?, \
             next_check_at = MIN(next_check_at, ?) WHERE source_id = ?",
        )
        .bind(to)
        .bind(trigger.as_str())
        .bind(ms(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(result)
    }

    async fn unpin(&self, id: SourceId, now: OffsetDateTime) -> StoreResult<Option<RequestResult>> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT pinned_commit FROM source_status WHERE source_id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        match row {
            None => return Err(StoreError::NotFound(id)),
            Some((None,)) => {
                // Not pinned; still tell a missing or deleting source apart.
                if deleting(&mut tx, id).await? == Some(true) {
                    return Err(StoreError::BeingDeleted(id));
                }
                return Ok(None);
            }
            Some((Some(_),)) => {}
        }
        sqlx::query(
            "UPDATE source_status SET pinned_commit = NULL, pinned_reason = NULL, \
             pinned_entry = NULL, pinned_at = NULL WHERE source_id = ?",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // Resumes at once: a manual check now, or right after a running one.
        let result = match request_in(&mut tx, id, Trigger::Manual, now).await? {
            RequestResult::AlreadyRunning => {
                sqlx::query(
                    "UPDATE source_status SET requested_trigger = 'manual' WHERE source_id = ?",
                )
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                RequestResult::QueuedAfterRunning
            }
            other => other,
        };
        tx.commit().await.map_err(db_err)?;
        Ok(Some(result))
    }

    async fn manifests(&self, history_id: i64) -> StoreResult<Option<PackedManifests>> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT data FROM history_manifests WHERE history_id = ?")
                .bind(history_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_err)?;
        Ok(row.map(|(data,)| PackedManifests::from_bytes(data)))
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: usize,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<Vec<Claim>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_until = now + lease;
        // One statement, so a claim is one trip to SQLite's thread: the
        // lease is taken and the claimed rows come back with their source
        // and inventory (see [`claim_query`]).
        let mut writer = self.writer().await?;
        let rows = sqlx::query(claim_query())
            .bind(ms(now))
            .bind(limit as i64)
            .bind(owner)
            .bind(ms(lease_until))
            .fetch_all(&mut *writer)
            .await
            .map_err(db_err)?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let source = source_from_row(row).map_err(db_err)?;
            let requested: Option<String> = row.try_get("claimed_trigger").map_err(db_err)?;
            let failures: i64 = row.try_get("consecutive_failures").map_err(db_err)?;
            let last_outcome: Option<String> = row.try_get("last_outcome").map_err(db_err)?;
            let due_at = from_ms(row.try_get("next_check_at").map_err(db_err)?);
            let pinned: Option<String> = row.try_get("pinned_commit").map_err(db_err)?;
            let last_commit: Option<String> = row.try_get("last_commit").map_err(db_err)?;
            let rollback_to: Option<i64> = row.try_get("rollback_to").map_err(db_err)?;
            let rollback_trigger: Option<String> =
                row.try_get("rollback_trigger").map_err(db_err)?;
            let inventory = match row
                .try_get::<Option<String>, _>("objects")
                .map_err(db_err)?
            {
                None => Inventory::default(),
                Some(_) => inventory_from_row(row).unwrap_or_else(|e| {
                    // Checked as if nothing was applied yet: everything is
                    // applied again and nothing is pruned.
                    tracing::warn!(source = source.id, error = %e, "unreadable inventory");
                    Inventory::default()
                }),
            };
            // A rollback's entry is read after the claim (rare; history
            // entries do not change, and the order says when its manifests
            // were dropped meanwhile).
            let rollback = match (source.deleting, rollback_to) {
                (false, Some(to)) => Some(
                    rollback_order(&mut writer, to, rollback_trigger, || {
                        pinned.clone().or(last_commit.clone())
                    })
                    .await?,
                ),
                _ => None,
            };
            let trigger = if source.deleting {
                Trigger::Delete
            } else if let Some(order) = &rollback {
                order.trigger
            } else {
                parse_opt(requested).unwrap_or(Trigger::Schedule)
            };
            claims.push(Claim {
                pinned,
                rollback,
                trigger,
                consecutive_failures: failures.max(0) as u32,
                last_outcome: parse_opt(last_outcome),
                due_at,
                inventory,
                owner: owner.to_string(),
                lease_until,
                source,
            });
        }
        // RETURNING's order is SQLite's: the schedule's is restored.
        claims.sort_by_key(|c| (c.due_at, c.source.id));
        Ok(claims)
    }

    async fn finish_check(
        &self,
        claim: &Claim,
        report: &CheckReport,
        next_check_at: OffsetDateTime,
    ) -> StoreResult<()> {
        let source = &claim.source;
        // Most checks find nothing changed: their status is one statement.
        if is_quiet(claim, report) {
            let check = QuietCheck {
                claim,
                report,
                next_check_at,
            };
            return self.finish_quiet_checks(&[check]).await;
        }
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        // Only the lease's holder writes (a deleted source has no status
        // row: its history entry is still kept).
        let holder: Option<(Option<String>,)> =
            sqlx::query_as("SELECT lease_owner FROM source_status WHERE source_id = ?")
                .bind(source.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if let Some((holder,)) = &holder {
            if holder.as_deref() != Some(claim.owner.as_str()) {
                return Ok(());
            }
        }
        // Deploys, failures, supersessions and deletions always; a steady
        // check only when it starts or ends a degraded spell.
        let mut entry_id: Option<i64> = None;
        if report.goes_to_history(claim.last_outcome) {
            let objects = serde_json::to_string(&report.objects)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            let manifests_state = report.manifests.as_ref().map(|m| match m {
                Ok(_) => ManifestsState::Kept,
                Err(state) => *state,
            });
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO history (source_id, namespace, deployment_name, container_name, trigger, \
                 started_at, finished_at, commit_sha, desired_image, running_image, outcome, stage, \
                 message, objects, manifests, rollback_to) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(source.id)
            .bind(&source.spec.namespace)
            .bind(&source.spec.deployment_name)
            .bind(&source.spec.container_name)
            .bind(report.trigger.as_str())
            .bind(ms(report.started_at))
            .bind(ms(report.finished_at))
            .bind(&report.commit)
            .bind(&report.desired_image)
            .bind(&report.running_image)
            .bind(report.outcome.as_str())
            .bind(report.stage.map(Stage::as_str))
            .bind(&report.message)
            .bind(objects)
            .bind(manifests_state.map(ManifestsState::as_str))
            .bind(report.rollback_to)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            entry_id = Some(id);
            if let Some(Ok(packed)) = &report.manifests {
                sqlx::query(
                    "INSERT INTO history_manifests (history_id, source_id, data) VALUES (?, ?, ?)",
                )
                .bind(id)
                .bind(source.id)
                .bind(packed.as_bytes())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                self.drop_old_manifests(&mut tx, source.id).await?;
            }
        }
        // The prune of a source being deleted is done: it goes, with its
        // status and inventory (the history entry above stays). Only while
        // the lease is ours: a status row that is gone means a plain delete
        // came first (and the lease check above let the history through).
        if claim.trigger == Trigger::Delete && report.outcome == Outcome::Deleted {
            if holder.is_some() && deleting(&mut tx, source.id).await? == Some(true) {
                delete_rows(&mut tx, source.id).await?;
            }
            tx.commit().await.map_err(db_err)?;
            self.sources_changed();
            return Ok(());
        }
        let updated = write_status(&mut *tx, claim, report, next_check_at, entry_id).await?;
        // The inventory, only with a status written under our lease (not
        // for a deleted source).
        if let (1, Some(inv)) = (updated, &report.inventory) {
            let objects = serde_json::to_string(&inv.objects)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            sqlx::query(
                "INSERT INTO source_inventory (source_id, commit_sha, desired_image, objects) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (source_id) DO UPDATE SET \
                 commit_sha = excluded.commit_sha, desired_image = excluded.desired_image, \
                 objects = excluded.objects",
            )
            .bind(source.id)
            .bind(&inv.commit)
            .bind(&inv.desired_image)
            .bind(objects)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    /// One statement for the whole batch, without a transaction around it
    /// (each statement is a trip to SQLite's thread, and most checks are
    /// quiet): the checks go in as one JSON array.
    async fn finish_quiet_checks(&self, checks: &[QuietCheck<'_>]) -> StoreResult<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "source_id": c.claim.source.id,
                    "owner": c.claim.owner,
                    "revision": c.claim.source.revision,
                    "finished_at": ms(c.report.finished_at),
                    "next_check_at": ms(c.next_check_at),
                    "commit_sha": c.report.commit,
                    "outcome": c.report.outcome.as_str(),
                    "stage": c.report.stage.map(Stage::as_str),
                    "message": c.report.message,
                    "desired_image": c.report.desired_image,
                    "running_image": c.report.running_image,
                    "failed": c.report.outcome == Outcome::Failed,
                })
            })
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| StoreError::Backend(e.to_string()))?;
        // As `write_status` for a claim without a rollback and a report
        // without a pin: due at once instead when the source changed or a
        // check or rollback was asked for while it ran.
        sqlx::query(
            "UPDATE source_status SET \
               last_checked_at = v.finished_at, \
               last_commit = COALESCE(v.commit_sha, last_commit), last_outcome = v.outcome, \
               last_stage = v.stage, last_message = v.message, \
               desired_image = COALESCE(v.desired_image, source_status.desired_image), \
               running_image = COALESCE(v.running_image, source_status.running_image), \
               consecutive_failures = CASE WHEN v.failed THEN consecutive_failures + 1 ELSE 0 END, \
               next_check_at = CASE \
                 WHEN requested_trigger IS NOT NULL OR rollback_to IS NOT NULL \
                   OR (SELECT revision FROM sources WHERE id = v.source_id) != v.revision \
                 THEN v.finished_at ELSE v.next_check_at END, \
               lease_owner = NULL, lease_until = NULL \
             FROM (SELECT value ->> 'source_id' AS source_id, value ->> 'owner' AS owner, \
                          value ->> 'revision' AS revision, value ->> 'finished_at' AS finished_at, \
                          value ->> 'next_check_at' AS next_check_at, \
                          value ->> 'commit_sha' AS commit_sha, value ->> 'outcome' AS outcome, \
                          value ->> 'stage' AS stage, value ->> 'message' AS message, \
                          value ->> 'desired_image' AS desired_image, \
                          value ->> 'running_image' AS running_image, value ->> 'failed' AS failed \
                   FROM json_each(?)) AS v \
             WHERE source_status.source_id = v.source_id AND source_status.lease_owner = v.owner",
        )
        .bind(rows)
        .execute(&mut *self.writer().await?)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn release_claims(&self, owner: &str, ids: &[SourceId]) -> StoreResult<()> {
        let mut writer = self.writer().await?;
        let mut tx = writer.begin().await.map_err(db_err)?;
        for id in ids {
            sqlx::query(
                "UPDATE source_status SET lease_owner = NULL, lease_until = NULL \
                 WHERE source_id = ? AND lease_owner = ?",
            )
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[SourceId],
        until: OffsetDateTime,
    ) -> StoreResult<Vec<SourceId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE source_status SET lease_until = ");
        qb.push_bind(ms(until))
            .push(" WHERE lease_owner = ")
            .push_bind(owner)
            .push(" AND source_id IN (");
        let mut list = qb.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        qb.push(") RETURNING source_id");
        let rows: Vec<(SourceId,)> = qb
            .build_query_as()
            .fetch_all(&mut *self.writer().await?)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(
            "SELECT MIN(CASE WHEN st.lease_until IS NOT NULL AND st.lease_until > st.next_check_at \
                    THEN st.lease_until ELSE st.next_check_at END) \
             FROM source_status st JOIN sources s ON s.id = st.source_id \
             WHERE s.suspended = 0 OR st.requested_trigger = 'manual' OR s.deleting = 1 \
                OR st.rollback_to IS NOT NULL",
        )
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        Ok(row.and_then(|(v,)| v).map(from_ms))
    }

    async fn data_version(&self) -> StoreResult<Option<u64>> {
        let mut probe = self.version_probe.lock().await;
        let conn = probe
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the SQLite store is closed".into()))?;
        let (version,): (i64,) = sqlx::query_as("PRAGMA data_version")
            .fetch_one(conn)
            .await
            .map_err(db_err)?;
        Ok(Some(version as u64))
    }

    async fn status(&self, id: SourceId) -> StoreResult<Option<SourceStatus>> {
        let row = sqlx::query("SELECT * FROM source_status WHERE source_id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(status_from_row).transpose()
    }

    async fn list_statuses(
        &self,
    ) -> StoreResult<std::collections::HashMap<SourceId, SourceStatus>> {
        let rows = sqlx::query("SELECT * FROM source_status")
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("source_id").map_err(db_err)?,
                    status_from_row(r)?,
                ))
            })
            .collect()
    }

    async fn list_sources_with_status(
        &self,
        after: Option<SourceId>,
        limit: Option<u32>,
    ) -> StoreResult<Vec<(Source, SourceStatus)>> {
        // The whole page as one JSON value: sqlx hands each row from its
        // worker thread to the caller on its own (a wake-up and a copy of
        // every value per row), which made a listing of 1,000 sources cost
        // 1,000 thread hops.
        let json: Option<String> = sqlx::query_scalar(LISTING_QUERY)
            .bind(after.unwrap_or(0))
            .bind(limit.map_or(-1, i64::from))
            .fetch_one(&self.reader)
            .await
            .map_err(db_err)?;
        let mut rows: Vec<ListedRow> = match json {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| StoreError::Backend(format!("reading the source list: {e}")))?,
            None => Vec::new(),
        };
        // An aggregate's order is not promised: sort by id again.
        rows.sort_unstable_by_key(|r| r.id);
        let now = ms(OffsetDateTime::now_utc());
        Ok(rows.into_iter().map(|r| r.into_parts(now)).collect())
    }

    async fn history(&self, query: &HistoryQuery) -> StoreResult<Vec<HistoryEntry>> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM history WHERE 1 = 1");
        if let Some(at) = query.at {
            // Each source's newest entry by then that went live or deleted
            // it; a deletion means nothing was live.
            qb.push(" AND id IN (SELECT MAX(id) FROM history WHERE finished_at <= ")
                .push_bind(ms(at))
                .push(format!(" AND ({WENT_LIVE} OR outcome = 'deleted')"));
            if let Some(id) = query.source_id {
                qb.push(" AND source_id = ").push_bind(id);
            }
            qb.push(" GROUP BY source_id) AND outcome != 'deleted'");
        }
        if let Some(id) = query.source_id {
            qb.push(" AND source_id = ").push_bind(id);
        }
        if query.applied {
            qb.push(" AND manifests IS NOT NULL");
        }
        if let Some(outcome) = query.outcome {
            qb.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(ns) = &query.namespace {
            qb.push(" AND namespace = ").push_bind(ns.clone());
        }
        if let Some(since) = query.since {
            qb.push(" AND started_at >= ").push_bind(ms(since));
        }
        if let Some(before) = query.before {
            qb.push(" AND id < ").push_bind(before);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(query.limit.max(1) as i64);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db_err)?;
        rows.iter().map(history_from_row).collect()
    }

    async fn inventory(&self, id: SourceId) -> StoreResult<Option<Inventory>> {
        let row = sqlx::query(
            "SELECT i.source_id, i.commit_sha, i.desired_image, i.objects \
             FROM sources s LEFT JOIN source_inventory i ON i.source_id = s.id WHERE s.id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        if row
            .try_get::<Option<SourceId>, _>("source_id")
            .map_err(db_err)?
            .is_none()
        {
            return Ok(Some(Inventory::default()));
        }
        inventory_from_row(&row).map(Some)
    }
}

/// [`Store::request_check`] inside a transaction.
async fn request_in(
    tx: &mut sqlx::SqliteConnection,
    id: SourceId,
    trigger: Trigger,
    now: OffsetDateTime,
) -> StoreResult<RequestResult> {
    let row = sqlx::query(
        "SELECT s.deleting, st.requested_trigger, st.lease_owner, st.lease_until \
             FROM sources s JOIN source_status st ON st.source_id = s.id WHERE s.id = ?",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound(id));
    };
    if row.try_get::<i64, _>("deleting").map_err(db_err)? != 0 {
        return Err(StoreError::BeingDeleted(id));
    }
    let requested: Option<String> = row.try_get("requested_trigger").map_err(db_err)?;
    let lease_until: Option<i64> = row.try_get("lease_until").map_err(db_err)?;
    let running = lease_until.is_some_and(|t| t > ms(now));
    let result = request_result(requested.is_some(), running, trigger);
    if matches!(
        result,
        RequestResult::Queued | RequestResult::QueuedAfterRunning
    ) {
        sqlx::query(
                "UPDATE source_status SET requested_trigger = ?, next_check_at = MIN(next_check_at, ?) \
                 WHERE source_id = ?",
            )
            .bind(trigger.as_str())
            .bind(ms(now))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    Ok(result)
}

/// What asking for a check does to a source with a check already
/// `requested` or not, `running` or not.
fn request_result(requested: bool, running: bool, trigger: Trigger) -> RequestResult {
    if requested {
        RequestResult::AlreadyQueued
    } else if running && trigger == Trigger::Manual {
        RequestResult::AlreadyRunning
    } else if running {
        RequestResult::QueuedAfterRunning
    } else {
        RequestResult::Queued
    }
}

/// The rollback a claim carries: entry `to`'s commit, image and kept
/// manifests (None when dropped since it was asked for), and the commit to
/// pin away from (the current pin, else the head last seen).
async fn rollback_order(
    db: &mut SqliteConnection,
    to: i64,
    trigger: Option<String>,
    from_commit: impl FnOnce() -> Option<String>,
) -> StoreResult<RollbackOrder> {
    let entry: Option<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT commit_sha, desired_image FROM history WHERE id = ?")
            .bind(to)
            .fetch_optional(&mut *db)
            .await
            .map_err(db_err)?;
    let data: Option<(Vec<u8>,)> =
        sqlx::query_as("SELECT data FROM history_manifests WHERE history_id = ?")
            .bind(to)
            .fetch_optional(&mut *db)
            .await
            .map_err(db_err)?;
    let (commit, desired_image) = entry.unwrap_or_default();
    Ok(RollbackOrder {
        to,
        trigger: parse_opt(trigger).unwrap_or(Trigger::Manual),
        commit,
        desired_image,
        from_commit: from_commit(),
        manifests: data.map(|(d,)| PackedManifests::from_bytes(d)),
    })
}

/// Whether source `id` is being deleted (None: no such source).
async fn deleting(tx: &mut sqlx::SqliteConnection, id: SourceId) -> StoreResult<Option<bool>> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT deleting FROM sources WHERE id = ?")
        .bind(id)
        .fetch_optional(tx)
        .await
        .map_err(db_err)?;
    Ok(row.map(|(d,)| d != 0))
}

/// Deletes source `id` with its status and inventory (its history stays).
async fn delete_rows(tx: &mut sqlx::SqliteConnection, id: SourceId) -> StoreResult<()> {
    for table in ["source_status", "source_inventory"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE source_id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    let done = sqlx::query("DELETE FROM sources WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(id));
    }
    Ok(())
}

/// A `source_inventory` row (`commit_sha`, `desired_image`, `objects`).
fn inventory_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Inventory> {
    let objects: String = row.try_get("objects").map_err(db_err)?;
    Ok(Inventory {
        commit: row.try_get("commit_sha").map_err(db_err)?,
        desired_image: row.try_get("desired_image").map_err(db_err)?,
        objects: serde_json::from_str(&objects)
            .map_err(|e| StoreError::Backend(format!("an inventory's objects: {e}")))?,
    })
}

fn status_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<SourceStatus> {
    let now = ms(OffsetDateTime::now_utc());
    let get = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db_err);
    let in_flight_until = row
        .try_get::<Option<i64>, _>("lease_until")
        .map_err(db_err)?
        .filter(|t| *t > now);
    Ok(SourceStatus {
        last_checked_at: row
            .try_get::<Option<i64>, _>("last_checked_at")
            .map_err(db_err)?
            .map(from_ms),
        last_commit: get("last_commit")?,
        last_outcome: parse_opt(get("last_outcome")?),
        last_stage: parse_opt(get("last_stage")?),
        last_message: get("last_message")?,
        desired_image: get("desired_image")?,
        running_image: get("running_image")?,
        consecutive_failures: row
            .try_get::<i64, _>("consecutive_failures")
            .map_err(db_err)?
            .max(0) as u32,
        next_check_at: Some(from_ms(row.try_get("next_check_at").map_err(db_err)?)),
        requested: parse_opt(get("requested_trigger")?),
        pinned: match get("pinned_commit")? {
            Some(commit) => Some(Pin {
                commit,
                reason: get("pinned_reason")?.unwrap_or_default(),
                entry: row.try_get("pinned_entry").map_err(db_err)?,
                since: from_ms(
                    row.try_get::<Option<i64>, _>("pinned_at")
                        .map_err(db_err)?
                        .unwrap_or_default(),
                ),
            }),
            None => None,
        },
        rollback_to: row.try_get("rollback_to").map_err(db_err)?,
        in_flight: in_flight_until.is_some(),
        in_flight_until: in_flight_until.map(from_ms),
    })
}

fn history_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<HistoryEntry> {
    let get = |c: &str| row.try_get::<Option<String>, _>(c).map_err(db_err);
    let text = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let bad = |c: &str, v: String| StoreError::Backend(format!("history column {c} holds '{v}'"));
    let trigger = text("trigger")?;
    let outcome = text("outcome")?;
    Ok(HistoryEntry {
        id: int("id")?,
        namespace: text("namespace")?,
        deployment_name: text("deployment_name")?,
        container_name: text("container_name")?,
        manifests: parse_opt(get("manifests")?),
        report: CheckReport {
            source_id: int("source_id")?,
            trigger: trigger
                .parse()
                .map_err(|_| bad("trigger", trigger.clone()))?,
            started_at: from_ms(int("started_at")?),
            finished_at: from_ms(int("finished_at")?),
            commit: get("commit_sha")?,
            desired_image: get("desired_image")?,
            running_image: get("running_image")?,
            outcome: outcome
                .parse()
                .map_err(|_| bad("outcome", outcome.clone()))?,
            stage: parse_opt(get("stage")?),
            message: get("message")?,
            objects: serde_json::from_str(&text("objects")?).unwrap_or_default(),
            inventory: None,
            rollback_to: row.try_get("rollback_to").map_err(db_err)?,
            manifests: None,
            pin: PinChange::Keep,
            rollback_wanted: false,
        },
    })
}

/// Writes a finished check's status and schedule and releases its lease, in
/// one statement, only while `claim.owner` holds the lease: the number of
/// rows written (0: the lease is not the claim's any more). `entry_id` is the
/// history entry the check wrote (a pin set by a rollback names it).
async fn write_status<'e, E>(
    ex: E,
    claim: &Claim,
    report: &CheckReport,
    next_check_at: OffsetDateTime,
    entry_id: Option<i64>,
) -> StoreResult<u64>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let source = &claim.source;
    // Only failures count (degraded and superseded are not): they drive
    // the backoff.
    let failed = report.outcome == Outcome::Failed;
    // The rollback this claim carried is done (unless another replaced it).
    let claim_rollback = claim.rollback.as_ref().map(|r| r.to);
    // 0: keep the pin, 1: set it, 2: clear it.
    let (pin_op, pin_commit, pin_reason) = match &report.pin {
        PinChange::Keep => (0, None, None),
        PinChange::Set { commit, reason } => (1, Some(commit.as_str()), Some(reason.as_str())),
        PinChange::Clear => (2, None, None),
    };
    // Due at once instead when the source changed or a check was asked
    // for while this one ran.
    sqlx::query(
        "UPDATE source_status SET \
           last_checked_at = ?, last_commit = COALESCE(?, last_commit), last_outcome = ?, \
           last_stage = ?, last_message = ?, desired_image = COALESCE(?, desired_image), \
           running_image = COALESCE(?, running_image), \
           consecutive_failures = CASE WHEN ? THEN consecutive_failures + 1 ELSE 0 END, \
           next_check_at = CASE \
             WHEN requested_trigger IS NOT NULL \
               OR (rollback_to IS NOT NULL AND rollback_to IS NOT ?) \
               OR (SELECT revision FROM sources WHERE id = ?) != ? THEN ? \
             ELSE ? END, \
           rollback_trigger = CASE WHEN rollback_to IS ? THEN NULL ELSE rollback_trigger END, \
           rollback_to = CASE WHEN rollback_to IS ? THEN NULL ELSE rollback_to END, \
           pinned_commit = CASE ? WHEN 1 THEN ? WHEN 2 THEN NULL ELSE pinned_commit END, \
           pinned_reason = CASE ? WHEN 1 THEN ? WHEN 2 THEN NULL ELSE pinned_reason END, \
           pinned_entry = CASE ? WHEN 1 THEN ? WHEN 2 THEN NULL ELSE pinned_entry END, \
           pinned_at = CASE ? WHEN 1 THEN ? WHEN 2 THEN NULL ELSE pinned_at END, \
           lease_owner = NULL, lease_until = NULL \
         WHERE source_id = ? AND lease_owner = ?",
    )
    .bind(ms(report.finished_at))
    .bind(&report.commit)
    .bind(report.outcome.as_str())
    .bind(report.stage.map(Stage::as_str))
    .bind(&report.message)
    .bind(&report.desired_image)
    .bind(if report.outcome == Outcome::Deployed {
        &report.desired_image
    } else {
        &report.running_image
    })
    .bind(failed)
    .bind(claim_rollback)
    .bind(source.id)
    .bind(source.revision)
    .bind(ms(report.finished_at))
    .bind(ms(next_check_at))
    .bind(claim_rollback)
    .bind(claim_rollback)
    .bind(pin_op)
    .bind(pin_commit)
    .bind(pin_op)
    .bind(pin_reason)
    .bind(pin_op)
    .bind(entry_id)
    .bind(pin_op)
    .bind(ms(report.finished_at))
    .bind(source.id)
    .bind(&claim.owner)
    .execute(ex)
    .await
    .map(|done| done.rows_affected())
    .map_err(db_err)
}
