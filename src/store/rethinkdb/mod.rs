//! The shared store: RethinkDB through the `reql` crate, for replicas that
//! share one database, and for taking over the original Python tool's data.
//!
//! # Layout
//!
//! Everything lives in one database (`git-sources` by default):
//!
//! | table | primary key | holds |
//! |---|---|---|
//! | `sources` (`TABLE_NAME`) | `id` (integer) | the original tool's documents: the seven fields, plus chump's `interval_seconds`, `suspended`, `prune`, `auto_rollback` (null: the service's default), `service_account` (null: the service's default), `deleting`, `revision`, `created_at`, `updated_at` (all optional when reading: documents written by the Python tool lack them; a missing `prune` reads as true, a missing `auto_rollback` or `service_account` as null, a missing `deleting` as false) |
//! | `chump_status` | `source_id` | one per source: the schedule (`next_check_at`, `requested_trigger`), the lease (`lease_owner`, `lease_until`), the last check, the pin (`pinned_commit`, `pinned_reason`, `pinned_entry`, `pinned_at`), a rollback asked for and not yet recorded (`rollback_to`, `rollback_trigger`), and copies of the source's `suspended`, `deleting` and `revision` |
//! | `chump_history` | `id` (integer, from a counter) | deploys, failures, supersessions, rollbacks, deletions, and the checks that start or end a degraded spell ([`CheckReport::goes_to_history`]), each with `manifests` (`kept`, `dropped`, `too_large` or null) and `rollback_to`; they outlive their source |
//! | `chump_manifests` | `id` (the history entry's) | the rendered manifests of entries that keep them: `source_id`, the entry's `outcome` (for retention), `data` (binary: gzip of a JSON array); they outlive their source |
//! | `chump_counters` | `id` (`"sources"`, `"history"`, `"writes"`) | `value`: the last id handed out; for `writes`, the data version (see below) |
//! | `chump_targets` | `id` = `namespace/deployment/container` | `source_id` (null while its create is in flight), `token`, `at`: who owns a target |
//! | `chump_inventory` | `source_id` | what chump last applied for a source: `commit`, `desired_image`, `objects` (each `api_version`, `kind`, `namespace`, `name`, `digest`, `commit`); none until the first check that records one |
//!
//! Secondary indexes: `chump_status.next_check_at`;
//! `chump_history.source_id_id` = `[source_id, id]`,
//! `chump_history.namespace_id` = `[namespace, id]` and
//! `chump_history.finished_at` (time travel, `?at=`);
//! `chump_manifests.source_id_id` = `[source_id, id]` (retention). Times are
//! Unix milliseconds (numbers), as in the SQLite store. Ids stay below 2^53,
//! so RethinkDB's doubles hold them exactly.
//!
//! # Concurrency
//!
//! RethinkDB has no multi-document transactions, but a write to one document
//! is atomic, so every rule that must hold across processes is a
//! single-document write:
//!
//! - **ids**: `counters.get(name).update(|c| {value: c.value + 1},
//!   return_changes: true)`, reading `changes[0].new_val.value`. Never
//!   `max + 1`. `open` raises the counter to the highest existing id (an
//!   atomic `update` with `r.branch`), so ids continue above the Python tool's.
//! - **one source per target**: before a create (or an update that moves a
//!   source), the target's key document is inserted with the key as primary
//!   key; a second insert of the same key fails (`errors: 1`, "Duplicate
//!   primary key") and becomes [`StoreError::Duplicate`]. The key is taken
//!   before the id, so a refused duplicate spends no id. A key left behind by
//!   a crash (its source missing or aiming elsewhere) is reclaimed with a
//!   conditional `replace` once it is older than [`STALE_TARGET`].
//! - **leases**: `claim_due` reads due candidates through the `next_check_at`
//!   index, then takes each with `status.get(id).update(|st|
//!   r.branch(<due, unleased, runnable>, {lease_owner, lease_until,
//!   requested_trigger: null}, {}), return_changes: true)`; a candidate is
//!   ours only if the update changed it. `finish_check` and `release_claims`
//!   write only while the lease is still the caller's (again a branch inside
//!   one update).
//! - **inventories**: `finish_check` replaces the source's inventory
//!   document only after its status update showed the lease was the
//!   caller's (`replaced`), so a check whose lease was lost writes none.
//!   `claim_due` reads the inventories of all its claims in one `get_all`.
//! - **changes during a check**: `update_source` writes the new revision into
//!   the status document too, so `finish_check` compares revisions inside its
//!   own atomic update.
//! - **manifests**: `finish_check` writes an entry's bytes before the entry
//!   (bytes a cut leaves without their entry are pushed out by retention),
//!   then applies the source's retention: each dropped entry is marked
//!   `dropped` before its bytes are deleted, so an entry never says `kept`
//!   without bytes. Only the lease's holder records a check, so one source's
//!   retention does not run twice at once.
//! - **rollbacks and pins** live in the status document: `request_rollback`
//!   and `unpin` are single conditional updates of it, and `finish_check`
//!   clears the pending rollback (only the one its claim carried) and sets
//!   or clears the pin inside its own atomic update. A pin's entry id is
//!   taken from the counter before that update.
//! - **the data version** ([`Store::data_version`], which keeps the whole
//!   list between writes): the `writes` counter, bumped (soft durability)
//!   in the query of every write to the sources or the status table that
//!   changes a document, or once after a batch of them (claims, quiet
//!   results) before the batch returns. A reader that reads the counter
//!   and then the tables holds every write finished before its read, on
//!   any replica. Other clients' source writes are counted when the
//!   sources feed brings them; while it is closed the version is unknown.
//! - **deleting with prune**: `delete_source(id, true)` marks the source
//!   document `deleting` (the truth), then its status (due at once, the
//!   copy `claim_due`, `request_check` and `next_due` read); a cut between
//!   the two is finished by the sources changefeed or `reconcile`.
//!   `update_source` refuses a marked document inside its atomic update.
//!   When a prune is recorded (`finish_check`, outcome `deleted`), the status
//!   update (still only while the lease is the caller's) keeps the lease;
//!   then the history entry is written, the source document deleted (only
//!   while marked), and its status, inventory and target key dropped. A cut
//!   before the source goes leaves it leased and `deleting`: it is pruned
//!   again once the lease expires; a cut after leaves orphans `reconcile`
//!   drops.
//!
//! # Faults
//!
//! Connections sit in a small pool of slots; a slot whose connection fails
//! (I/O error, broken, timed out) is emptied and reconnected on its next use.
//! Connection failures become [`StoreError::Unavailable`]; the outage is
//! logged once when it starts and once when it ends. Every query runs in its
//! own task with a deadline, so a caller that gives up never leaves a
//! connection half-read. The password is only ever handed to `r.connect`.

mod docs;
mod feed;
mod pool;
mod schema;
mod terms;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chump_jobs::history::{went_live, CheckReport, HistoryEntry, Outcome, Stage, Trigger};
use chump_jobs::inventory::Inventory;
use chump_jobs::manifests::{ManifestsState, PackedManifests};
use chump_jobs::rollback::{PinChange, RollbackOrder};
use chump_jobs::source::{Source, SourceId, SourceSpec};
use chump_jobs::store::{
    Claim, Deletion, HistoryQuery, QuietCheck, RequestResult, SourceStatus, Store, StoreError,
    StoreResult, DEFAULT_MANIFEST_RETENTION,
};
use ql2::term::TermType;
use reql::cmd::{between, update, Durability, ReturnChanges};
use reql::{r, Command};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RethinkConfig;
use docs::*;
use pool::Pool;
use terms::*;

/// Table of per-source schedule, lease and status documents.
pub const STATUS_TABLE: &str = "chump_status";
/// Table of history entries.
pub const HISTORY_TABLE: &str = "chump_history";
/// Table of id counters.
pub const COUNTERS_TABLE: &str = "chump_counters";
/// Table of target key documents (the duplicate rule).
pub const TARGETS_TABLE: &str = "chump_targets";
/// Table of per-source inventories (what chump last applied).
pub const INVENTORY_TABLE: &str = "chump_inventory";
/// Table of the manifests history entries keep.
pub const MANIFESTS_TABLE: &str = "chump_manifests";

const SOURCES_COUNTER: &str = "sources";
const HISTORY_COUNTER: &str = "history";
/// The data version ([`Store::data_version`]): moved by every write that
/// changes a source or a status.
const WRITES_COUNTER: &str = "writes";
const INDEX_DUE: &str = "next_check_at";
const INDEX_HISTORY_SOURCE: &str = "source_id_id";
const INDEX_HISTORY_NAMESPACE: &str = "namespace_id";
const INDEX_HISTORY_FINISHED: &str = "finished_at";
const INDEX_MANIFESTS_SOURCE: &str = "source_id_id";

/// A target key whose create or update never finished (a crash) is reclaimed
/// after this long.
const STALE_TARGET: Duration = Duration::from_secs(60);
/// The lowest bound used for numeric index ranges.
const MIN_NUMBER: i64 = -(1 << 53);
/// The widest id window a history query scans at once (keeps in-memory
/// sorting far below RethinkDB's array limit).
const MAX_HISTORY_WINDOW: i64 = 1 << 16;

// ---------------------------------------------------------------------------
// The store

/// Whether a status write moves the data version itself, or leaves that to
/// its caller, which moves it once after a batch of them.
#[derive(Debug, Clone, Copy)]
enum Counting {
    EachWrite,
    ByTheBatch,
}

/// A [`Store`] on a RethinkDB database, shared safely by several processes.
#[derive(Clone)]
pub struct RethinkStore {
    pool: Arc<Pool>,
    db: String,
    sources_table: String,
    /// Replicas of each table created.
    replicas: u8,
    /// Per source, how many of the newest entries keep their manifests.
    manifest_retention: u32,
    /// Bumped by every write of this process to the sources table and by
    /// every change the sources changefeed delivers (see
    /// [`Store::sources_version`]).
    sources_version: Arc<SourcesVersion>,
}

/// What this process can say about the source list: a counter of the
/// changes it knows of, meaningful only while the sources changefeed is
/// open (other replicas' writes reach this process through it alone).
#[derive(Debug, Default)]
pub(super) struct SourcesVersion {
    changes: std::sync::atomic::AtomicU64,
    followed: std::sync::atomic::AtomicBool,
}

impl SourcesVersion {
    /// A change was written here or seen in the feed (after the write, so
    /// whoever reads the version before the list never keeps a list older
    /// than its version).
    pub(super) fn changed(&self) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The feed opened (`true`: everything missed meanwhile counts as a
    /// change) or broke (`false`: nothing can be said until it is back).
    pub(super) fn set_followed(&self, followed: bool) {
        self.changed();
        self.followed
            .store(followed, std::sync::atomic::Ordering::Release);
    }

    fn get(&self) -> Option<u64> {
        self.followed
            .load(std::sync::atomic::Ordering::Acquire)
            .then(|| self.changes.load(std::sync::atomic::Ordering::Acquire))
    }
}

impl RethinkStore {
    /// Connects, creates the database, tables and indexes that are missing
    /// (what exists already is fine: replicas may start at once), and takes
    /// over the sources already in the table.
    pub async fn open(config: &RethinkConfig) -> StoreResult<Self> {
        let store = Self {
            pool: Arc::new(Pool::new(config.clone())),
            db: config.db.clone(),
            sources_table: config.table.clone(),
            replicas: config.replicas.clamp(1, u8::MAX.into()) as u8,
            manifest_retention: DEFAULT_MANIFEST_RETENTION,
            sources_version: Default::default(),
        };
        store.ensure_schema().await?;
        store.reconcile(OffsetDateTime::now_utc()).await?;
        tracing::info!(
            server = %store.pool.where_(),
            db = %store.db,
            table = %store.sources_table,
            "RethinkDB store open"
        );
        Ok(store)
    }

    /// Keeps the manifests of each source's newest `n` entries (at least 1).
    pub fn with_manifest_retention(mut self, n: u32) -> Self {
        self.manifest_retention = n.max(1);
        self
    }

    fn table(&self, name: &str) -> Command {
        r.db(self.db.clone()).table(name.to_string())
    }
    fn sources(&self) -> Command {
        self.table(&self.sources_table)
    }
    fn statuses(&self) -> Command {
        self.table(STATUS_TABLE)
    }
    fn history_table(&self) -> Command {
        self.table(HISTORY_TABLE)
    }
    fn counters(&self) -> Command {
        self.table(COUNTERS_TABLE)
    }
    fn targets(&self) -> Command {
        self.table(TARGETS_TABLE)
    }
    fn inventories(&self) -> Command {
        self.table(INVENTORY_TABLE)
    }
    fn manifests_table(&self) -> Command {
        self.table(MANIFESTS_TABLE)
    }

    /// Raises counter `name` to at least `floor` (creating it when missing).
    async fn raise_counter(&self, name: &str, floor: i64) -> StoreResult<()> {
        // Conflict (another replica made it first) is fine: raised below.
        let result = self
            .pool
            .one(term(
                TermType::Insert,
                [self.counters(), lit(json!({"id": name, "value": floor}))],
            ))
            .await?;
        inserted(&result, "a counter")?;
        let raise = lambda(|c| {
            object(vec![(
                "value",
                branch(
                    lt(field(&c, "value"), lit(floor)),
                    lit(floor),
                    field(&c, "value"),
                ),
            )])
        });
        self.pool
            .one(self.counters().get(name).update(raise))
            .await?;
        Ok(())
    }

    /// Takes the next id from counter `name`, atomically.
    async fn next_id(&self, name: &str) -> StoreResult<i64> {
        let bump = lambda(|c| object(vec![("value", add(field(&c, "value"), lit(1)))]));
        let result = self
            .pool
            .one(self.counters().get(name).update(r.args((
                bump,
                update::Options::new().return_changes(ReturnChanges::Bool(true)),
            ))))
            .await?;
        change(&result, "new_val")
            .and_then(|v| v.get("value"))
            .and_then(as_int)
            .filter(|id| *id >= 1 && *id <= chump_jobs::source::MAX_SOURCE_ID)
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "counter {name} gave no id (is {COUNTERS_TABLE} intact?): {result}"
                ))
            })
    }

    /// `write` (to the sources or the status table), then, in the same
    /// query and only when it changed a document, the writes counter moved
    /// one up: whoever reads the counter after this write finished reads a
    /// value at least as high as the bump, and the bump lands after the
    /// write, so a reader that saw the counter and then read sources and
    /// statuses holds this write ([`Store::data_version`], exact across
    /// replicas without any feed).
    fn counted(&self, write: Command) -> Command {
        let counter = self.counters().get(WRITES_COUNTER);
        funcall(write, move |result| {
            let n = |name: &str| field_or(&result, name, lit(0));
            let changed = gt(add(add(n("inserted"), n("replaced")), n("deleted")), lit(0));
            funcall(branch(changed, soft_bump(counter), null()), |_| {
                result.clone()
            })
        })
    }

    /// Runs a write to the sources or the status table, counted
    /// ([`RethinkStore::counted`]). A write that fails may still have
    /// written (a connection cut after the server ran it): the counter is
    /// moved again on its own, so no kept answer outlives such a write.
    async fn write(&self, write: Command) -> StoreResult<Value> {
        let result = self.pool.one(self.counted(write)).await;
        if result.is_err() {
            let _ = self.bump_writes().await;
        }
        result
    }

    /// Moves the writes counter one up (after a change some other client
    /// made, seen in a feed).
    pub(super) async fn bump_writes(&self) -> StoreResult<()> {
        self.pool
            .one(soft_bump(self.counters().get(WRITES_COUNTER)))
            .await
            .map(|_| ())
    }

    /// Makes existing data usable and the schedule match the sources table:
    /// counters above the highest ids, a status (due at once) and a target
    /// key for every source that lacks them, and no status without its
    /// source. Run at open and whenever the changefeed on the sources table
    /// (re)starts, so writes by other tools are never missed.
    pub(super) async fn reconcile(&self, now: OffsetDateTime) -> StoreResult<()> {
        // The data version jumps to the clock (milliseconds × 1024, far
        // above what counting reaches in between): a counter lost and made
        // again never goes back, and whatever was written while no feed was
        // open counts as a change.
        self.raise_counter(WRITES_COUNTER, wall_ms() << 10).await?;
        // Statuses before sources: a source is written before its status and
        // deleted before it, so a status read here whose source is missing
        // from the later read is an orphan, never a create in flight.
        let statuses = self
            .pool
            .run(term(
                TermType::Pluck,
                [self.statuses(), lit("source_id"), lit("deleting")],
            ))
            .await?;
        let with_status: HashSet<i64> = statuses
            .iter()
            .filter_map(|st| opt_int(st, "source_id"))
            .collect();
        let marked_deleting: HashSet<i64> = statuses
            .iter()
            .filter(|st| is_deleting(st))
            .filter_map(|st| opt_int(st, "source_id"))
            .collect();
        // Inventories too: one is only written for a source that exists.
        let with_inventory: HashSet<i64> = self
            .pool
            .run(term(
                TermType::Map,
                [self.inventories(), lambda(|i| field(&i, "source_id"))],
            ))
            .await?
            .iter()
            .filter_map(as_int)
            .collect();
        let docs = self.pool.run(self.sources()).await?;
        let mut sources = Vec::with_capacity(docs.len());
        for doc in &docs {
            match source_from_doc(doc) {
                Ok(s) => sources.push(s),
                Err(e) => tracing::warn!(error = %e, "a source document chump cannot read"),
            }
        }
        let ids: HashSet<i64> = docs
            .iter()
            .filter_map(|d| d.get("id").and_then(as_int))
            .collect();
        let max_source = ids.iter().copied().max().unwrap_or(0);
        self.raise_counter(SOURCES_COUNTER, max_source).await?;
        // History ids only ever come from the counter; scan the table only
        // when the counter is missing (a new database, or a lost counter).
        let counter = self.pool.one(self.counters().get(HISTORY_COUNTER)).await?;
        let max_history = if counter.is_null() {
            self.pool
                .run(term(
                    TermType::Map,
                    [self.history_table(), lambda(|h| field(&h, "id"))],
                ))
                .await?
                .iter()
                .filter_map(as_int)
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        self.raise_counter(HISTORY_COUNTER, max_history).await?;

        let missing: Vec<Value> = sources
            .iter()
            .filter(|s| !with_status.contains(&s.id))
            .map(|s| new_status(s, ms(now)))
            .collect();
        if !missing.is_empty() {
            tracing::info!(
                count = missing.len(),
                "scheduling sources that have no schedule yet"
            );
            // Conflicts: another replica adopted them first.
            self.write(term(TermType::Insert, [self.statuses(), lit(missing)]))
                .await?;
        }
        // A delete with prune cut between the source's mark and its
        // status's: the prune is due at once.
        for s in &sources {
            if s.deleting && with_status.contains(&s.id) && !marked_deleting.contains(&s.id) {
                tracing::info!(
                    source = s.id,
                    "a source being deleted: scheduling its prune"
                );
                self.mark_status_deleting(s.id, now).await?;
            }
        }
        let orphans: Vec<i64> = with_status.difference(&ids).copied().collect();
        if !orphans.is_empty() {
            tracing::info!(
                count = orphans.len(),
                "dropping the schedule of deleted sources"
            );
            for id in orphans {
                self.drop_schedule(id).await?;
            }
        }
        // Left by a delete cut short, or by a check of a deleted source
        // finishing after its delete.
        let stale: Vec<i64> = with_inventory
            .difference(&ids)
            .filter(|id| !with_status.contains(id))
            .copied()
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                count = stale.len(),
                "dropping the inventories of deleted sources"
            );
            for id in stale {
                self.pool
                    .one(term(TermType::Delete, [self.inventories().get(id)]))
                    .await?;
            }
        }

        let keys: HashMap<String, Option<i64>> = self
            .pool
            .run(self.targets())
            .await?
            .iter()
            .filter_map(|d| Some((opt_str(d, "id")?, opt_int(d, "source_id"))))
            .collect();
        for s in &sources {
            match keys.get(&target_key(&s.spec)) {
                Some(Some(owner)) if *owner == s.id => {}
                Some(Some(owner)) => tracing::warn!(
                    source = s.id,
                    other = owner,
                    target = %target_key(&s.spec),
                    "two existing sources share one target"
                ),
                _ => self.adopt_target(s).await?,
            }
        }
        Ok(())
    }

    /// Schedules a source another tool wrote: its status (due at once, if it
    /// has none), the id counter above its id, and its target key.
    pub(super) async fn adopt_source(
        &self,
        source: &Source,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let status = new_status(source, ms(now));
        // A conflict is chump's own create (or another replica) first: fine.
        self.write(term(TermType::Insert, [self.statuses(), lit(status)]))
            .await?;
        self.raise_counter(SOURCES_COUNTER, source.id).await?;
        self.adopt_target(source).await
    }

    /// Takes the target key of an adopted source, unless it is taken.
    async fn adopt_target(&self, s: &Source) -> StoreResult<()> {
        let key = target_key(&s.spec);
        let doc = json!({"id": key, "source_id": s.id, "token": "adopted", "at": wall_ms()});
        let result = self
            .pool
            .one(term(TermType::Insert, [self.targets(), lit(doc)]))
            .await?;
        if let Inserted::Conflict = inserted(&result, "a target key")? {
            // Another replica's adoption, a create in flight, or a duplicate
            // written by another tool: leave it.
            tracing::debug!(target = %key, source = s.id, "target key exists already");
        }
        Ok(())
    }

    /// Drops what chump keeps of a deleted source: its inventory, then its
    /// status (a status left by a cut is found again as an orphan).
    pub(super) async fn drop_schedule(&self, id: SourceId) -> StoreResult<()> {
        self.pool
            .one(term(TermType::Delete, [self.inventories().get(id)]))
            .await?;
        self.write(term(TermType::Delete, [self.statuses().get(id)]))
            .await?;
        Ok(())
    }

    /// Drops the schedule of a source just deleted, then its target key
    /// (when its document was readable: otherwise the key is reclaimed as
    /// stale).
    async fn forget_source(&self, id: SourceId, source: Option<&Source>) -> StoreResult<()> {
        self.drop_schedule(id).await?;
        if let Some(source) = source {
            self.delete_target_if(&target_key(&source.spec), |d| {
                eq(field_or(&d, "source_id", null()), lit(id))
            })
            .await?;
        }
        Ok(())
    }

    /// Whether source `id` has a recorded inventory with objects in it (an
    /// unreadable one counts as empty, as it does for a check).
    async fn has_applied(&self, id: SourceId) -> StoreResult<bool> {
        let doc = self.pool.one(self.inventories().get(id)).await?;
        if doc.is_null() {
            return Ok(false);
        }
        match inventory_from_doc(&doc) {
            Ok((_, inv)) => Ok(!inv.objects.is_empty()),
            Err(e) => {
                tracing::warn!(source = id, error = %e, "unreadable inventory: deleting at once");
                Ok(false)
            }
        }
    }

    /// Marks source `id` `deleting` (its document, the truth, first), then
    /// its status (due at once). A cut between the two is finished by the
    /// sources changefeed or by [`RethinkStore::reconcile`].
    async fn mark_deleting(&self, id: SourceId) -> StoreResult<Deletion> {
        let result = self
            .write(
                self.sources()
                    .get(id)
                    .update(lit(json!({"deleting": true}))),
            )
            .await;
        self.sources_version.changed();
        let result = result?;
        if count(&result, "skipped") > 0 {
            return Err(StoreError::NotFound(id));
        }
        self.mark_status_deleting(id, OffsetDateTime::now_utc())
            .await?;
        Ok(Deletion::Pruning)
    }

    /// Copies a source's `deleting` mark into its status, making it due at
    /// once (with a requested trigger, so a check running now is followed
    /// by the prune at once). A status marked already is left alone.
    pub(super) async fn mark_status_deleting(
        &self,
        id: SourceId,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let now_ms = ms(now);
        let f = lambda(|st| {
            let requested = field_or(&st, "requested_trigger", null());
            branch(
                eq(field_or(&st, "deleting", lit(false)), lit(true)),
                lit(json!({})),
                object(vec![
                    ("deleting", lit(true)),
                    (
                        "next_check_at",
                        min_term(field_or(&st, "next_check_at", lit(now_ms)), lit(now_ms)),
                    ),
                    (
                        "requested_trigger",
                        branch(
                            eq(requested.clone(), null()),
                            lit(Trigger::Delete.as_str()),
                            requested,
                        ),
                    ),
                ]),
            )
        });
        let result = self.write(self.statuses().get(id).update(f)).await?;
        if count(&result, "skipped") > 0 {
            // No status yet: a new one copies the mark from the source.
            self.ensure_status(id, now).await?;
        }
        Ok(())
    }

    /// The recorded inventories of `ids` (those that have one), in one
    /// `get_all`.
    async fn inventories_of(&self, ids: &[SourceId]) -> StoreResult<HashMap<SourceId, Inventory>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let q = ids.iter().fold(
            Command::new(TermType::GetAll).with_arg(self.inventories()),
            |q, id| q.with_arg(lit(id)),
        );
        let mut found = HashMap::with_capacity(ids.len());
        for doc in self.pool.run(q).await? {
            match inventory_from_doc(&doc) {
                Ok((id, inv)) => {
                    found.insert(id, inv);
                }
                // Checked as if nothing was applied yet: everything is
                // applied again and nothing is pruned.
                Err(e) => tracing::warn!(error = %e, "unreadable inventory"),
            }
        }
        Ok(found)
    }

    /// Deletes a source whose prune is done, under a lease `finish_check`
    /// just found to be ours: the history entry first, then the source
    /// document (only while it is still marked `deleting`), then its status,
    /// inventory and target key. A cut before the source goes leaves it
    /// `deleting` and leased: claimed again once the lease expires, pruned
    /// (nothing left) and deleted, with a second entry; a cut after it
    /// leaves a status and inventory without source, which `reconcile`
    /// drops, and a target key reclaimed as stale.
    async fn delete_pruned(
        &self,
        claim: &Claim,
        report: &CheckReport,
        entry_id: Option<i64>,
    ) -> StoreResult<()> {
        let id = claim.source.id;
        self.insert_history(claim, report, entry_id).await?;
        let only_deleting = lambda(|d| {
            branch(
                eq(field_or(&d, "deleting", lit(false)), lit(true)),
                null(),
                d,
            )
        });
        let result = self
            .write(term(
                TermType::Replace,
                [self.sources().get(id), only_deleting],
            ))
            .await;
        self.sources_version.changed();
        let result = result?;
        if count(&result, "errors") > 0 {
            let first = result
                .get("first_error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(StoreError::Backend(format!(
                "deleting pruned source {id}: {first}"
            )));
        }
        if count(&result, "deleted") == 0 {
            // Gone already (a plain delete), or not being deleted (never
            // unmarked, so never): give the lease back.
            return self.release_claims(&claim.owner, &[id]).await;
        }
        tracing::info!(source = id, "source deleted after its objects were pruned");
        self.forget_source(id, Some(&claim.source)).await
    }

    /// Writes history entry `id` (None: the next history id) for `report`,
    /// with its manifests: the bytes first, then the entry, then the
    /// source's retention ([`RethinkStore::drop_old_manifests`]).
    async fn insert_history(
        &self,
        claim: &Claim,
        report: &CheckReport,
        id: Option<i64>,
    ) -> StoreResult<i64> {
        let source = &claim.source;
        let id = match id {
            Some(id) => id,
            None => self.next_id(HISTORY_COUNTER).await?,
        };
        let state = report.manifests.as_ref().map(|m| match m {
            Ok(_) => ManifestsState::Kept,
            Err(state) => *state,
        });
        if let Some(Ok(packed)) = &report.manifests {
            let doc = json!({
                "id": id,
                "source_id": source.id,
                "outcome": report.outcome.as_str(),
                "data": binary(packed.as_bytes()),
            });
            let result = self
                .pool
                .one(term(TermType::Insert, [self.manifests_table(), lit(doc)]))
                .await?;
            if let Inserted::Conflict = inserted(&result, "manifests")? {
                return Err(StoreError::Backend(format!(
                    "manifests of history entry {id} exist although the counter handed it out"
                )));
            }
        }
        let doc = json!({
            "id": id,
            "source_id": source.id,
            "namespace": source.spec.namespace,
            "deployment_name": source.spec.deployment_name,
            "container_name": source.spec.container_name,
            "trigger": report.trigger.as_str(),
            "started_at": ms(report.started_at),
            "finished_at": ms(report.finished_at),
            "commit": report.commit,
            "desired_image": report.desired_image,
            "running_image": report.running_image,
            "outcome": report.outcome.as_str(),
            "stage": report.stage.map(Stage::as_str),
            "message": report.message,
            "objects": serde_json::to_value(&report.objects)
                .map_err(|e| StoreError::Backend(e.to_string()))?,
            "manifests": state.map(ManifestsState::as_str),
            "rollback_to": report.rollback_to,
        });
        let result = self
            .pool
            .one(term(TermType::Insert, [self.history_table(), lit(doc)]))
            .await?;
        if let Inserted::Conflict = inserted(&result, "a history entry")? {
            return Err(StoreError::Backend(format!(
                "history id {id} is taken although the counter handed it out"
            )));
        }
        if state == Some(ManifestsState::Kept) {
            self.drop_old_manifests(source.id).await?;
        }
        Ok(id)
    }

    /// Retention: source `source_id` keeps the manifests of its newest
    /// `manifest_retention` entries that have them, and always those of its
    /// newest successful one (`deployed` or `rolled_back`); the others'
    /// entries are marked `dropped` (first: an entry never says `kept`
    /// without bytes), then their bytes deleted.
    async fn drop_old_manifests(&self, source_id: SourceId) -> StoreResult<()> {
        let of_source = self.manifests_table().between(r.args((
            json!([source_id, MIN_NUMBER]),
            json!([source_id, -MIN_NUMBER]),
            between::Options::new().index(INDEX_MANIFESTS_SOURCE),
        )));
        let q = term(TermType::Pluck, [of_source, lit("id"), lit("outcome")]);
        let mut kept: Vec<(i64, Option<Outcome>)> = self
            .pool
            .run(q)
            .await?
            .iter()
            .filter_map(|d| Some((opt_int(d, "id")?, parse_opt(opt_str(d, "outcome")))))
            .collect();
        kept.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        let successful = kept
            .iter()
            .find(|(_, o)| matches!(o, Some(Outcome::Deployed | Outcome::RolledBack)))
            .map(|(id, _)| *id);
        let doomed: Vec<i64> = kept
            .iter()
            .skip(self.manifest_retention as usize)
            .map(|(id, _)| *id)
            .filter(|id| Some(*id) != successful)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let get_all = |table: Command| {
            doomed
                .iter()
                .fold(Command::new(TermType::GetAll).with_arg(table), |q, id| {
                    q.with_arg(lit(id))
                })
        };
        let marked = self
            .pool
            .one(get_all(self.history_table()).update(lit(json!({"manifests": "dropped"}))))
            .await?;
        no_errors(&marked, "marking manifests dropped")?;
        let deleted = self
            .pool
            .one(term(TermType::Delete, [get_all(self.manifests_table())]))
            .await?;
        no_errors(&deleted, "dropping manifests")?;
        tracing::debug!(
            source = source_id,
            dropped = doomed.len(),
            "manifests dropped by retention"
        );
        Ok(())
    }

    /// Takes target `key` for `source_id` (None: a create, id not known
    /// yet). Returns the token that proves ownership.
    async fn take_target(
        &self,
        key: &str,
        source_id: Option<SourceId>,
        spec: &SourceSpec,
    ) -> StoreResult<String> {
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        for attempt in 0..2 {
            let doc = json!({"id": key, "source_id": source_id, "token": token, "at": wall_ms()});
            let result = self
                .pool
                .one(term(TermType::Insert, [self.targets(), lit(doc)]))
                .await?;
            match inserted(&result, "a target key")? {
                Inserted::Yes => return Ok(token),
                Inserted::Conflict if attempt == 0 && self.reclaim_stale(key).await? => continue,
                Inserted::Conflict => return Err(duplicate(spec)),
            }
        }
        Err(duplicate(spec))
    }

    /// Deletes target `key` if it is left over from a crash: old, and its
    /// source missing or aimed elsewhere. True if it was deleted.
    async fn reclaim_stale(&self, key: &str) -> StoreResult<bool> {
        let doc = self.pool.one(self.targets().get(key)).await?;
        if doc.is_null() {
            return Ok(true);
        }
        let at = opt_int(&doc, "at").unwrap_or(0);
        if wall_ms() - at < STALE_TARGET.as_millis() as i64 {
            return Ok(false);
        }
        if let Some(owner) = opt_int(&doc, "source_id") {
            let source = self.pool.one(self.sources().get(owner)).await?;
            if !source.is_null() {
                match source_from_doc(&source) {
                    Ok(s) if target_key(&s.spec) == key => return Ok(false),
                    Ok(_) => {}
                    Err(_) => return Ok(false),
                }
            }
        }
        let token = doc.get("token").cloned().unwrap_or(Value::Null);
        tracing::info!(target = %key, "reclaiming a target key left by an unfinished write");
        self.delete_target_if(key, |d| eq(field_or(&d, "token", null()), lit(token)))
            .await?;
        Ok(true)
    }

    /// Deletes target `key` if `test(doc)` holds, in one atomic replace.
    async fn delete_target_if(
        &self,
        key: &str,
        test: impl FnOnce(Command) -> Command,
    ) -> StoreResult<()> {
        let f = lambda(|d| branch(test(d.clone()), null(), d));
        self.pool
            .one(term(TermType::Replace, [self.targets().get(key), f]))
            .await?;
        Ok(())
    }

    /// Inserts a status for a source that has none (adopting a source written
    /// by another tool after `open`). False if the source doesn't exist.
    async fn ensure_status(&self, id: SourceId, now: OffsetDateTime) -> StoreResult<bool> {
        let doc = self.pool.one(self.sources().get(id)).await?;
        if doc.is_null() {
            return Ok(false);
        }
        let source = source_from_doc(&doc)?;
        let status = new_status(&source, ms(now));
        self.write(term(TermType::Insert, [self.statuses(), lit(status)]))
            .await?;
        Ok(true)
    }

    /// Updates status `id` with `f`, returning the write result (with changes).
    async fn update_status(
        &self,
        id: SourceId,
        f: Command,
        counting: Counting,
    ) -> StoreResult<Value> {
        let q = self.statuses().get(id).update(r.args((
            f,
            update::Options::new().return_changes(ReturnChanges::Bool(true)),
        )));
        self.status_write(q, counting).await
    }

    /// A write to the status table, counted by itself or left to a batch.
    async fn status_write(&self, q: Command, counting: Counting) -> StoreResult<Value> {
        match counting {
            Counting::EachWrite => self.write(q).await,
            Counting::ByTheBatch => self.pool.one(q).await,
        }
    }

    /// Entry `order.to`'s commit, image and kept manifests (None: dropped
    /// since the rollback was asked for), into `order`.
    async fn fill_rollback(&self, order: &mut RollbackOrder) -> StoreResult<()> {
        let entry = self.history_table().get(order.to);
        let data = self.manifests_table().get(order.to);
        let v = self
            .pool
            .one(object(vec![
                ("commit", field_or(&entry, "commit", null())),
                ("desired_image", field_or(&entry, "desired_image", null())),
                ("data", field_or(&data, "data", null())),
            ]))
            .await?;
        order.commit = opt_str(&v, "commit");
        order.desired_image = opt_str(&v, "desired_image");
        order.manifests = v.get("data").and_then(manifests_from_binary);
        Ok(())
    }

    /// Updates status `id` with the update `make_update` builds (once more
    /// after adopting a source that had no status), returning the document
    /// as it was before (also when the update changed nothing).
    /// [`StoreError::NotFound`] when there is no such source.
    async fn update_status_reading_old(
        &self,
        id: SourceId,
        now: OffsetDateTime,
        make_update: impl Fn() -> Command,
    ) -> StoreResult<Value> {
        let run = || async {
            self.write(self.statuses().get(id).update(r.args((
                make_update(),
                update::Options::new().return_changes(ReturnChanges::Always),
            ))))
            .await
        };
        let mut result = run().await?;
        if count(&result, "skipped") > 0 {
            if !self.ensure_status(id, now).await? {
                return Err(StoreError::NotFound(id));
            }
            result = run().await?;
        }
        no_errors(&result, "updating a status")?;
        change(&result, "old_val")
            .cloned()
            .ok_or(StoreError::NotFound(id))
    }

    /// Time travel ([`HistoryQuery::at`]): each source's newest entry
    /// finished by `at` that went live or deleted it, unless a deletion;
    /// then the query's other filters, newest first.
    async fn history_at(
        &self,
        query: &HistoryQuery,
        at: OffsetDateTime,
    ) -> StoreResult<Vec<HistoryEntry>> {
        let at_ms = ms(at);
        let candidates = match query.source_id {
            Some(id) => self.history_table().between(r.args((
                json!([id, MIN_NUMBER]),
                json!([id, -MIN_NUMBER]),
                between::Options::new().index(INDEX_HISTORY_SOURCE),
            ))),
            None => self.history_table().between(
                r.args((
                    MIN_NUMBER,
                    at_ms,
                    between::Options::new()
                        .index(INDEX_HISTORY_FINISHED)
                        .right_bound(between::Status::Closed),
                )),
            ),
        };
        let pairs = live_or_deleted_pairs();
        let counted = lambda(|h| {
            and(
                le(field(&h, "finished_at"), lit(at_ms)),
                term(
                    TermType::Contains,
                    [
                        lit(&pairs),
                        term(
                            TermType::MakeArray,
                            [field(&h, "outcome"), field_or(&h, "stage", null())],
                        ),
                    ],
                ),
            )
        });
        let q = term(TermType::Filter, [candidates, counted]);
        let q = term(TermType::Group, [q, lit("source_id")]);
        let q = term(TermType::Max, [q, lit("id")]);
        let q = term(TermType::Ungroup, [q]);
        let q = term(TermType::Map, [q, lambda(|g| field(&g, "reduction"))]);
        let mut entries = Vec::new();
        for doc in self.pool.run(q).await? {
            let e = history_from_doc(&doc)?;
            let keep = e.report.outcome != Outcome::Deleted
                && query.outcome.is_none_or(|o| e.report.outcome == o)
                && query.namespace.as_ref().is_none_or(|ns| &e.namespace == ns)
                && query.since.is_none_or(|t| e.report.started_at >= t)
                && query.before.is_none_or(|b| e.id < b)
                && (!query.applied || e.manifests.is_some());
            if keep {
                entries.push(e);
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.id));
        entries.truncate(query.limit.max(1) as usize);
        Ok(entries)
    }

    async fn history_window(
        &self,
        query: &HistoryQuery,
        lo: i64,
        hi: i64,
        limit: i64,
    ) -> StoreResult<Vec<Value>> {
        let (index, lo_key, hi_key) = if let Some(id) = query.source_id {
            (INDEX_HISTORY_SOURCE, json!([id, lo]), json!([id, hi]))
        } else if let Some(ns) = &query.namespace {
            (INDEX_HISTORY_NAMESPACE, json!([ns, lo]), json!([ns, hi]))
        } else {
            ("id", json!(lo), json!(hi))
        };
        // [lo, hi): left bound closed, right bound open (the defaults).
        let mut q = self.history_table().between(r.args((
            lo_key,
            hi_key,
            between::Options::new().index(index),
        )));
        let mut tests = Vec::new();
        if let Some(outcome) = query.outcome {
            tests.push(("outcome", lit(outcome.as_str())));
        }
        if let (Some(_), Some(ns)) = (query.source_id, &query.namespace) {
            tests.push(("namespace", lit(ns.as_str())));
        }
        let since = query.since.map(ms);
        let applied = query.applied;
        if !tests.is_empty() || since.is_some() || applied {
            let f = lambda(|h| {
                let mut test = lit(true);
                for (name, value) in tests {
                    test = and(test, eq(field(&h, name), value));
                }
                if let Some(since) = since {
                    test = and(test, ge(field(&h, "started_at"), lit(since)));
                }
                if applied {
                    // Only entries whose check applied a render.
                    test = and(test, ne(field_or(&h, "manifests", null()), null()));
                }
                test
            });
            q = term(TermType::Filter, [q, f]);
        }
        let q = term(TermType::Limit, [q.order_by(r.desc("id")), lit(limit)]);
        self.pool.run(q).await
    }

    /// `claim_due`'s claims, each update uncounted (the caller moves the
    /// data version once); `attempted`: whether any update was sent.
    async fn claim_due_uncounted(
        &self,
        now: OffsetDateTime,
        limit: usize,
        owner: &str,
        lease: Duration,
        attempted: &mut bool,
    ) -> StoreResult<Vec<Claim>> {
        let now_ms = ms(now);
        let lease_until = now + lease;
        let until_ms = ms(lease_until);
        // Due, unleased, and runnable (not suspended, asked for by hand, or
        // being deleted).
        let claimable = move |st: &Command| {
            let lease = field_or(st, "lease_until", null());
            and(
                or(eq(lease.clone(), null()), le(lease, lit(now_ms))),
                runnable(st),
            )
        };
        let candidates = self.statuses().between(
            r.args((
                MIN_NUMBER,
                now_ms,
                between::Options::new()
                    .index(INDEX_DUE)
                    .right_bound(between::Status::Closed),
            )),
        );
        let candidates = term(TermType::Filter, [candidates, lambda(|st| claimable(&st))]);
        let candidates = term(
            TermType::OrderBy,
            [candidates, lit("next_check_at"), lit("source_id")],
        );
        let candidates = term(
            TermType::Limit,
            [candidates, lit(limit.saturating_mul(2).saturating_add(16))],
        );
        let docs = self.pool.run(candidates).await?;

        let mut claims = Vec::new();
        for doc in docs {
            if claims.len() >= limit {
                break;
            }
            let Some(id) = opt_int(&doc, "source_id") else {
                continue;
            };
            let take = lambda(|st| {
                branch(
                    and(
                        le(field_or(&st, "next_check_at", lit(now_ms)), lit(now_ms)),
                        claimable(&st),
                    ),
                    object(vec![
                        ("lease_owner", lit(owner)),
                        ("lease_until", lit(until_ms)),
                        ("requested_trigger", null()),
                    ]),
                    lit(json!({})),
                )
            });
            *attempted = true;
            let result = self.update_status(id, take, Counting::ByTheBatch).await?;
            let (Some(old), Some(new)) = (change(&result, "old_val"), change(&result, "new_val"))
            else {
                continue; // someone else took it first
            };
            if opt_str(new, "lease_owner").as_deref() != Some(owner)
                || opt_int(new, "lease_until") != Some(until_ms)
            {
                continue;
            }
            let requested = parse_opt(opt_str(old, "requested_trigger"));
            let consecutive_failures = opt_int(old, "consecutive_failures")
                .unwrap_or(0)
                .clamp(0, u32::MAX as i64) as u32;
            let last_outcome = parse_opt(opt_str(old, "last_outcome"));
            let due_at = from_ms(opt_int(old, "next_check_at").unwrap_or(now_ms));
            let source = match self.get_source(id).await {
                Ok(Some(source)) => source,
                Ok(None) => {
                    // Its source is gone (a delete cut short): drop the status.
                    self.drop_schedule(id).await?;
                    continue;
                }
                Err(e) => {
                    let _ = self.release_claims(owner, &[id]).await;
                    if matches!(e, StoreError::Unavailable(_)) {
                        return Err(e);
                    }
                    tracing::warn!(source = id, error = %e, "cannot read a due source; skipped");
                    continue;
                }
            };
            let pinned = opt_str(old, "pinned_commit");
            // A source being deleted is pruned, not rolled back.
            let rollback = opt_int(old, "rollback_to")
                .filter(|_| !source.deleting)
                .map(|to| RollbackOrder {
                    to,
                    trigger: parse_opt(opt_str(old, "rollback_trigger")).unwrap_or(Trigger::Manual),
                    commit: None,
                    from_commit: pinned.clone().or_else(|| opt_str(old, "last_commit")),
                    desired_image: None,
                    manifests: None,
                });
            let trigger = if source.deleting {
                Trigger::Delete
            } else if let Some(order) = &rollback {
                order.trigger
            } else {
                requested.unwrap_or(Trigger::Schedule)
            };
            // A rollback runs even while suspended.
            if source.spec.suspended
                && rollback.is_none()
                && !matches!(trigger, Trigger::Manual | Trigger::Delete)
            {
                self.release_claims(owner, &[id]).await?;
                continue;
            }
            claims.push(Claim {
                source,
                trigger,
                consecutive_failures,
                last_outcome,
                due_at,
                inventory: Inventory::default(),
                owner: owner.to_string(),
                lease_until,
                pinned,
                rollback,
            });
        }
        let ids: Vec<SourceId> = claims.iter().map(|c| c.source.id).collect();
        let filled = async {
            let mut inventories = self.inventories_of(&ids).await?;
            for c in &mut claims {
                if let Some(inv) = inventories.remove(&c.source.id) {
                    c.inventory = inv;
                }
                if let Some(order) = &mut c.rollback {
                    self.fill_rollback(order).await?;
                }
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = filled {
            // A check without its inventory would apply blind (a rollback
            // without its order would be a plain check): give the claims
            // back, due again at once.
            let _ = self.release_claims(owner, &ids).await;
            return Err(e);
        }
        Ok(claims)
    }

    /// `finish_check`, its status write counted by itself or left to the
    /// batch it is in.
    async fn record_check(
        &self,
        claim: &Claim,
        report: &CheckReport,
        next_check_at: OffsetDateTime,
        counting: Counting,
    ) -> StoreResult<()> {
        let source = &claim.source;
        // Only failures count (degraded and superseded are not): they drive
        // the backoff.
        let failed = report.outcome == Outcome::Failed;
        // The prune of a source being deleted is done: the source goes.
        let gone = claim.trigger == Trigger::Delete && report.outcome == Outcome::Deleted;
        let finished = ms(report.finished_at);
        let next = ms(next_check_at);
        let owner = claim.owner.clone();
        let revision = source.revision;
        let running_image = if report.outcome == Outcome::Deployed {
            report.desired_image.clone()
        } else {
            report.running_image.clone()
        };
        let keep_or = |st: &Command, name: &str, v: &Option<String>| match v {
            Some(v) => lit(v),
            None => field_or(st, name, null()),
        };
        let to_history = report.goes_to_history(claim.last_outcome);
        // A pin names its rollback's entry: that id is taken first (spent
        // for nothing if the lease turns out lost).
        let entry_id = match (&report.pin, to_history) {
            (PinChange::Set { .. }, true) => Some(self.next_id(HISTORY_COUNTER).await?),
            _ => None,
        };
        // The rollback this claim carried is done (unless another replaced it).
        let carried = claim.rollback.as_ref().map(|order| order.to);
        let f = lambda(|st| {
            let ours = eq(field_or(&st, "lease_owner", null()), lit(&owner));
            let pending = field_or(&st, "rollback_to", null());
            let done = eq(pending.clone(), lit(carried));
            let changed = or(
                or(
                    ne(field_or(&st, "requested_trigger", null()), null()),
                    ne(field_or(&st, "revision", lit(1)), lit(revision)),
                ),
                and(
                    ne(pending.clone(), null()),
                    ne(pending.clone(), lit(carried)),
                ),
            );
            let failures = if failed {
                add(field_or(&st, "consecutive_failures", lit(0)), lit(1))
            } else {
                lit(0)
            };
            let mut fields = vec![
                ("last_checked_at", lit(finished)),
                ("last_commit", keep_or(&st, "last_commit", &report.commit)),
                ("last_outcome", lit(report.outcome.as_str())),
                ("last_stage", lit(report.stage.map(Stage::as_str))),
                ("last_message", lit(&report.message)),
                (
                    "desired_image",
                    keep_or(&st, "desired_image", &report.desired_image),
                ),
                (
                    "running_image",
                    keep_or(&st, "running_image", &running_image),
                ),
                ("consecutive_failures", failures),
                ("next_check_at", branch(changed, lit(finished), lit(next))),
                ("rollback_to", branch(done.clone(), null(), pending)),
                (
                    "rollback_trigger",
                    branch(done, null(), field_or(&st, "rollback_trigger", null())),
                ),
            ];
            match &report.pin {
                PinChange::Keep => {}
                PinChange::Set { commit, reason } => fields.extend([
                    ("pinned_commit", lit(commit)),
                    ("pinned_reason", lit(reason)),
                    ("pinned_entry", lit(entry_id)),
                    ("pinned_at", lit(finished)),
                ]),
                PinChange::Clear => fields.extend([
                    ("pinned_commit", null()),
                    ("pinned_reason", null()),
                    ("pinned_entry", null()),
                    ("pinned_at", null()),
                ]),
            }
            // A source about to go keeps its lease: no other process claims
            // it before it is deleted, and after a crash here it comes back
            // (its lease expired, still `deleting`) to be pruned and deleted.
            if !gone {
                fields.push(("lease_owner", null()));
                fields.push(("lease_until", null()));
            }
            branch(ours, object(fields), lit(json!({})))
        });
        // The status first, only while the lease is still ours: a check
        // whose lease was lost records nothing (another process owns the
        // source now). A deleted source has no status (the update skips it)
        // and still gets its history entry.
        let result = self
            .status_write(self.statuses().get(source.id).update(f), counting)
            .await?;
        if count(&result, "replaced") == 0 && count(&result, "skipped") == 0 {
            tracing::debug!(
                source = source.id,
                "lease lost before the check was recorded"
            );
            return Ok(());
        }
        if gone && count(&result, "replaced") > 0 {
            return self.delete_pruned(claim, report, entry_id).await;
        }
        // The inventory only with a status written under our lease (a
        // deleted source's update is skipped: it gets none).
        if let (true, Some(inv)) = (count(&result, "replaced") > 0, &report.inventory) {
            let doc = inventory_doc(source.id, inv)?;
            let written = self
                .pool
                .one(term(
                    TermType::Replace,
                    [self.inventories().get(source.id), lit(doc)],
                ))
                .await?;
            if count(&written, "errors") > 0 {
                let first = written
                    .get("first_error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(StoreError::Backend(format!(
                    "writing the inventory of source {}: {first}",
                    source.id
                )));
            }
        }
        // Deploys, failures, supersessions, rollbacks and deletions always;
        // a steady check only when it starts or ends a degraded spell.
        if to_history {
            self.insert_history(claim, report, entry_id).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Store for RethinkStore {
    async fn ping(&self) -> StoreResult<()> {
        self.pool.run(lit(1)).await?;
        Ok(())
    }

    async fn follow_changes(&self, wake: Arc<Notify>, stop: CancellationToken) {
        self.follow(wake, stop).await
    }

    /// Known only while the sources changefeed is open: then every change,
    /// by this process or another, bumps it (another's as soon as the feed
    /// delivers it).
    fn sources_version(&self) -> Option<u64> {
        self.sources_version.get()
    }

    /// The writes counter: chump's writes move it in the query that writes
    /// ([`RethinkStore::counted`]), on every replica, so reading it is one
    /// point read and exact. Other clients' changes to the sources table
    /// (the Python tool) move it only once the sources feed brings them, so
    /// while that feed is not open the version is unknown.
    async fn data_version(&self) -> StoreResult<Option<u64>> {
        if self.sources_version.get().is_none() {
            return Ok(None);
        }
        let counter = self.pool.one(self.counters().get(WRITES_COUNTER)).await?;
        Ok(opt_int(&counter, "value").and_then(|v| u64::try_from(v).ok()))
    }

    /// Replicas share the database.
    fn claimed_elsewhere(&self) -> bool {
        true
    }

    async fn create_source(&self, spec: &SourceSpec, now: OffsetDateTime) -> StoreResult<Source> {
        let key = target_key(spec);
        // The target first: a refused duplicate spends no id.
        let token = self.take_target(&key, None, spec).await?;
        let give_back = |token: String| {
            let key = key.clone();
            async move {
                let _ = self
                    .delete_target_if(&key, |d| eq(field_or(&d, "token", null()), lit(token)))
                    .await;
            }
        };
        let id = match self.next_id(SOURCES_COUNTER).await {
            Ok(id) => id,
            Err(e) => {
                give_back(token).await;
                return Err(e);
            }
        };
        let mut doc = spec_fields(spec);
        doc.insert("id".into(), id.into());
        doc.insert("revision".into(), 1.into());
        doc.insert("created_at".into(), ms(now).into());
        doc.insert("updated_at".into(), ms(now).into());
        let doc = Value::Object(doc);
        let written = async {
            let result = self
                .write(term(TermType::Insert, [self.sources(), lit(&doc)]))
                .await;
            self.sources_version.changed();
            let result = result?;
            if let Inserted::Conflict = inserted(&result, "a source")? {
                return Err(StoreError::Backend(format!(
                    "source id {id} is taken although the counter handed it out; \
                     is another tool writing ids to the sources table?"
                )));
            }
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = written {
            give_back(token).await;
            return Err(e);
        }
        let source = source_from_doc(&doc)?;
        let status = new_status(&source, ms(now));
        self.write(term(TermType::Insert, [self.statuses(), lit(status)]))
            .await?;
        let owned = lambda(|d| {
            branch(
                eq(field_or(&d, "token", null()), lit(&token)),
                object(vec![("source_id", lit(id))]),
                lit(json!({})),
            )
        });
        self.pool
            .one(self.targets().get(&key).update(owned))
            .await?;
        Ok(source)
    }

    async fn get_source(&self, id: SourceId) -> StoreResult<Option<Source>> {
        let doc = self.pool.one(self.sources().get(id)).await?;
        if doc.is_null() {
            return Ok(None);
        }
        source_from_doc(&doc).map(Some)
    }

    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        let docs = self.pool.run(self.sources()).await?;
        let mut sources = docs
            .iter()
            .map(source_from_doc)
            .collect::<StoreResult<Vec<_>>>()?;
        sources.sort_by_key(|s| s.id);
        Ok(sources)
    }

    async fn update_source(
        &self,
        id: SourceId,
        spec: &SourceSpec,
        now: OffsetDateTime,
    ) -> StoreResult<Source> {
        let Some(old) = self.get_source(id).await? else {
            return Err(StoreError::NotFound(id));
        };
        if old.deleting {
            return Err(StoreError::BeingDeleted(id));
        }
        let old_key = target_key(&old.spec);
        let new_key = target_key(spec);
        let moved = old_key != new_key;
        let token = if moved {
            Some(self.take_target(&new_key, Some(id), spec).await?)
        } else {
            None
        };
        let mut fields: Vec<(String, Command)> = spec_fields(spec)
            .into_iter()
            .map(|(k, v)| (k, lit(v)))
            .collect();
        fields.push(("updated_at".into(), lit(ms(now))));
        // A source marked `deleting` since it was read is left as it is
        // (unchanged: a real update always bumps the revision).
        let f = lambda(move |d| {
            let mut fields = fields;
            fields.push((
                "revision".into(),
                add(field_or(&d, "revision", lit(1)), lit(1)),
            ));
            branch(
                eq(field_or(&d, "deleting", lit(false)), lit(true)),
                lit(json!({})),
                object(fields),
            )
        });
        let result = self
            .write(self.sources().get(id).update(r.args((
                f,
                update::Options::new().return_changes(ReturnChanges::Bool(true)),
            ))))
            .await;
        self.sources_version.changed();
        let result = match result {
            Ok(v) => v,
            Err(e) => {
                if let Some(token) = token {
                    let _ = self
                        .delete_target_if(&new_key, |d| {
                            eq(field_or(&d, "token", null()), lit(token))
                        })
                        .await;
                }
                return Err(e);
            }
        };
        let Some(new_doc) = change(&result, "new_val").cloned() else {
            // Deleted meanwhile (or unchanged, which a revision bump rules out).
            if let Some(token) = token {
                let _ = self
                    .delete_target_if(&new_key, |d| eq(field_or(&d, "token", null()), lit(token)))
                    .await;
            }
            return if count(&result, "skipped") > 0 {
                Err(StoreError::NotFound(id))
            } else if count(&result, "unchanged") > 0 {
                Err(StoreError::BeingDeleted(id))
            } else {
                Err(StoreError::Backend(format!(
                    "updating source {id} changed nothing: {result}"
                )))
            };
        };
        let source = source_from_doc(&new_doc)?;
        let now_ms = ms(now);
        let revision = source.revision;
        let suspended = spec.suspended;
        let status = lambda(|st| {
            object(vec![
                (
                    "next_check_at",
                    min_term(field_or(&st, "next_check_at", lit(now_ms)), lit(now_ms)),
                ),
                ("suspended", lit(suspended)),
                ("revision", lit(revision)),
            ])
        });
        let result = self.write(self.statuses().get(id).update(status)).await?;
        if count(&result, "skipped") > 0 {
            self.ensure_status(id, now).await?;
        }
        if moved {
            self.delete_target_if(&old_key, |d| eq(field_or(&d, "source_id", null()), lit(id)))
                .await?;
        }
        Ok(source)
    }

    async fn delete_source(&self, id: SourceId, prune: bool) -> StoreResult<Deletion> {
        let doc = self.pool.one(self.sources().get(id)).await?;
        if doc.is_null() {
            return Err(StoreError::NotFound(id));
        }
        if prune {
            if is_deleting(&doc) {
                return Ok(Deletion::Pruning);
            }
            if self.has_applied(id).await? {
                return self.mark_deleting(id).await;
            }
        }
        // The source first: a status without its source is cleaned up by
        // `claim_due`, a source without status would never be checked.
        let result = self
            .write(term(TermType::Delete, [self.sources().get(id)]))
            .await;
        self.sources_version.changed();
        let result = result?;
        if count(&result, "deleted") == 0 {
            return Err(StoreError::NotFound(id));
        }
        self.forget_source(id, source_from_doc(&doc).ok().as_ref())
            .await?;
        Ok(Deletion::Deleted)
    }

    async fn request_check(
        &self,
        id: SourceId,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<RequestResult> {
        let now_ms = ms(now);
        let manual = trigger == Trigger::Manual;
        let make_update = || {
            lambda(|st| {
                let requested = field_or(&st, "requested_trigger", null());
                let lease = field_or(&st, "lease_until", null());
                let running = and(ne(lease.clone(), null()), gt(lease, lit(now_ms)));
                let deleting = eq(field_or(&st, "deleting", lit(false)), lit(true));
                branch(
                    or(deleting, ne(requested, null())),
                    lit(json!({})),
                    branch(
                        and(lit(manual), running),
                        lit(json!({})),
                        object(vec![
                            ("requested_trigger", lit(trigger.as_str())),
                            (
                                "next_check_at",
                                min_term(field_or(&st, "next_check_at", lit(now_ms)), lit(now_ms)),
                            ),
                        ]),
                    ),
                )
            })
        };
        let mut result = self
            .update_status(id, make_update(), Counting::EachWrite)
            .await?;
        if count(&result, "skipped") > 0 {
            if !self.ensure_status(id, now).await? {
                return Err(StoreError::NotFound(id));
            }
            result = self
                .update_status(id, make_update(), Counting::EachWrite)
                .await?;
        }
        if let Some(old) = change(&result, "old_val") {
            let running = opt_int(old, "lease_until").is_some_and(|t| t > now_ms);
            return Ok(if running {
                RequestResult::QueuedAfterRunning
            } else {
                RequestResult::Queued
            });
        }
        // Nothing changed: say why, from the document as it is now.
        let doc = self.pool.one(self.statuses().get(id)).await?;
        if doc.is_null() {
            return Err(StoreError::NotFound(id));
        }
        if is_deleting(&doc) {
            return Err(StoreError::BeingDeleted(id));
        }
        let requested = opt_str(&doc, "requested_trigger").is_some();
        let running = opt_int(&doc, "lease_until").is_some_and(|t| t > now_ms);
        Ok(if !requested && running {
            RequestResult::AlreadyRunning
        } else {
            RequestResult::AlreadyQueued
        })
    }

    /// Each candidate is its own conditional update, uncounted; the data
    /// version moves once for the batch, after the last of them (and before
    /// the claims are handed out).
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
        let mut attempted = false;
        let claims = self
            .claim_due_uncounted(now, limit, owner, lease, &mut attempted)
            .await;
        if attempted {
            if let Err(e) = self.bump_writes().await {
                tracing::warn!(error = %e, "cannot move the data version after claiming");
            }
        }
        claims
    }

    async fn finish_check(
        &self,
        claim: &Claim,
        report: &CheckReport,
        next_check_at: OffsetDateTime,
    ) -> StoreResult<()> {
        self.record_check(claim, report, next_check_at, Counting::EachWrite)
            .await
    }

    /// Each check is its own conditional write (as `finish_check`), sent
    /// at once: the pool runs them side by side. The data version moves
    /// once, after the last.
    async fn finish_quiet_checks(&self, checks: &[QuietCheck<'_>]) -> StoreResult<()> {
        if checks.is_empty() {
            return Ok(());
        }
        let writes = checks
            .iter()
            .map(|c| self.record_check(c.claim, c.report, c.next_check_at, Counting::ByTheBatch));
        let written = futures::future::join_all(writes)
            .await
            .into_iter()
            .collect::<StoreResult<Vec<()>>>()
            .map(|_| ());
        let bumped = self.bump_writes().await;
        written.and(bumped)
    }

    async fn release_claims(&self, owner: &str, ids: &[SourceId]) -> StoreResult<()> {
        for id in ids {
            let f = lambda(|st| {
                branch(
                    eq(field_or(&st, "lease_owner", null()), lit(owner)),
                    object(vec![("lease_owner", null()), ("lease_until", null())]),
                    lit(json!({})),
                )
            });
            self.write(self.statuses().get(*id).update(f)).await?;
        }
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
        let until_ms = ms(until);
        let selection = || {
            ids.iter().fold(
                Command::new(TermType::GetAll).with_arg(self.statuses()),
                |q, id| q.with_arg(lit(id)),
            )
        };
        let is_owners = |st: &Command| eq(field_or(st, "lease_owner", null()), lit(owner));
        // Each document's write is atomic: a lease another process took
        // meanwhile is left alone.
        let extend = lambda(|st| {
            branch(
                is_owners(&st),
                object(vec![("lease_until", lit(until_ms))]),
                lit(json!({})),
            )
        });
        let result = self.write(selection().update(extend)).await?;
        if count(&result, "errors") > 0 {
            let first = result
                .get("first_error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(StoreError::Backend(format!("renewing leases: {first}")));
        }
        let held = term(TermType::Filter, [selection(), lambda(|st| is_owners(&st))]);
        let held = term(TermType::Pluck, [held, lit("source_id")]);
        Ok(self
            .pool
            .run(held)
            .await?
            .iter()
            .filter_map(|doc| opt_int(doc, "source_id"))
            .collect())
    }

    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        let runnable = lambda(|st| runnable(&st));
        let due_at = lambda(|st| {
            let lease = field_or(&st, "lease_until", null());
            let next = field(&st, "next_check_at");
            branch(
                and(ne(lease.clone(), null()), gt(lease.clone(), next.clone())),
                lease,
                next,
            )
        });
        let q = term(TermType::Filter, [self.statuses(), runnable]);
        let q = term(TermType::Map, [q, due_at]);
        // `min` of an empty sequence is a non-existence error: none due.
        let q = term(TermType::Default, [term(TermType::Min, [q]), null()]);
        let v = self.pool.one(q).await?;
        Ok(as_int(&v).map(from_ms))
    }

    async fn status(&self, id: SourceId) -> StoreResult<Option<SourceStatus>> {
        let doc = self.pool.one(self.statuses().get(id)).await?;
        if doc.is_null() {
            return Ok(None);
        }
        Ok(Some(status_from_doc(&doc)?.1))
    }

    async fn list_statuses(&self) -> StoreResult<HashMap<SourceId, SourceStatus>> {
        self.pool
            .run(self.statuses())
            .await?
            .iter()
            .map(status_from_doc)
            .collect()
    }

    async fn list_sources_with_status(
        &self,
        after: Option<SourceId>,
        limit: Option<u32>,
    ) -> StoreResult<Vec<(Source, SourceStatus)>> {
        let Some(limit) = limit else {
            // The whole list: two table scans beat a `get_all` of every id.
            let mut statuses = self.list_statuses().await?;
            return Ok(self
                .list_sources()
                .await?
                .into_iter()
                .filter(|s| after.is_none_or(|a| s.id > a))
                .map(|s| {
                    let status = statuses.remove(&s.id).unwrap_or_default();
                    (s, status)
                })
                .collect());
        };
        // Ids above `after`, ascending, one id window at a time (each sorted
        // in memory, so each stays small: ids come from a counter, so a
        // window of `limit` ids usually holds the page), widening while they
        // come back thin; past the counter, everything left (ids another
        // client gave its documents).
        let counter = self.pool.one(self.counters().get(SOURCES_COUNTER)).await?;
        let last = opt_int(&counter, "value").unwrap_or(0);
        let limit = limit as usize;
        let mut sources = Vec::new();
        let mut window = (limit as i64).clamp(256, MAX_HISTORY_WINDOW);
        // The first window: `window` ids above `after`, or from the lowest
        // id there is up to `window`.
        let first = after.map_or(1, |a| a.saturating_add(1));
        let mut lo = after.map_or(MIN_NUMBER, |_| first);
        let mut hi = first.saturating_add(window);
        loop {
            // A window reaching past the counter takes everything left.
            let upper = if hi > last { -MIN_NUMBER } else { hi };
            let q = self.sources().between(r.args((lo, upper)));
            let q = term(
                TermType::Limit,
                [q.order_by("id"), lit(limit - sources.len())],
            );
            for doc in &self.pool.run(q).await? {
                sources.push(source_from_doc(doc)?);
            }
            if upper == -MIN_NUMBER || sources.len() >= limit {
                break;
            }
            window = (window * 2).min(MAX_HISTORY_WINDOW);
            lo = hi;
            hi = lo.saturating_add(window);
        }
        if sources.is_empty() {
            return Ok(Vec::new());
        }
        let statuses = sources.iter().fold(
            Command::new(TermType::GetAll).with_arg(self.statuses()),
            |q, s| q.with_arg(lit(s.id)),
        );
        let mut statuses = self
            .pool
            .run(statuses)
            .await?
            .iter()
            .map(status_from_doc)
            .collect::<StoreResult<HashMap<_, _>>>()?;
        Ok(sources
            .into_iter()
            .map(|s| {
                let status = statuses.remove(&s.id).unwrap_or_default();
                (s, status)
            })
            .collect())
    }

    async fn history(&self, query: &HistoryQuery) -> StoreResult<Vec<HistoryEntry>> {
        if let Some(at) = query.at {
            return self.history_at(query, at).await;
        }
        let limit = query.limit.max(1) as usize;
        let counter = self.pool.one(self.counters().get(HISTORY_COUNTER)).await?;
        let last = opt_int(&counter, "value").unwrap_or(0);
        // Ids below `hi`, newest first, one id window at a time (each sorted
        // in memory, so each stays small), widening while they come back thin.
        let mut hi = query.before.unwrap_or(last + 1).min(last + 1);
        let mut window = (limit as i64).clamp(256, MAX_HISTORY_WINDOW);
        let mut entries = Vec::new();
        while hi > 1 && entries.len() < limit {
            let lo = (hi - window).max(1);
            let docs = self
                .history_window(query, lo, hi, (limit - entries.len()) as i64)
                .await?;
            for doc in &docs {
                entries.push(history_from_doc(doc)?);
            }
            hi = lo;
            window = (window * 2).min(MAX_HISTORY_WINDOW);
        }
        entries.truncate(limit);
        Ok(entries)
    }

    async fn request_rollback(
        &self,
        id: SourceId,
        to: i64,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<RequestResult> {
        let now_ms = ms(now);
        // One atomic update: the rollback (replacing a pending one), due at
        // once, unless the source is being deleted.
        let make_update = || {
            lambda(|st| {
                branch(
                    eq(field_or(&st, "deleting", lit(false)), lit(true)),
                    lit(json!({})),
                    object(vec![
                        ("rollback_to", lit(to)),
                        ("rollback_trigger", lit(trigger.as_str())),
                        (
                            "next_check_at",
                            min_term(field_or(&st, "next_check_at", lit(now_ms)), lit(now_ms)),
                        ),
                    ]),
                )
            })
        };
        let old = self.update_status_reading_old(id, now, make_update).await?;
        if is_deleting(&old) {
            return Err(StoreError::BeingDeleted(id));
        }
        Ok(
            if opt_int(&old, "lease_until").is_some_and(|t| t > now_ms) {
                RequestResult::QueuedAfterRunning
            } else if opt_int(&old, "rollback_to") == Some(to) {
                RequestResult::AlreadyQueued
            } else {
                RequestResult::Queued
            },
        )
    }

    async fn unpin(&self, id: SourceId, now: OffsetDateTime) -> StoreResult<Option<RequestResult>> {
        let now_ms = ms(now);
        // One atomic update: the pin goes and a manual check is asked for
        // (as `request_check` would; while a check runs, one follows it).
        let make_update = || {
            lambda(|st| {
                let requested = field_or(&st, "requested_trigger", null());
                let lease = field_or(&st, "lease_until", null());
                let running = and(ne(lease.clone(), null()), gt(lease, lit(now_ms)));
                let next = field_or(&st, "next_check_at", lit(now_ms));
                branch(
                    or(
                        eq(field_or(&st, "deleting", lit(false)), lit(true)),
                        eq(field_or(&st, "pinned_commit", null()), null()),
                    ),
                    lit(json!({})),
                    object(vec![
                        ("pinned_commit", null()),
                        ("pinned_reason", null()),
                        ("pinned_entry", null()),
                        ("pinned_at", null()),
                        (
                            "requested_trigger",
                            branch(
                                eq(requested.clone(), null()),
                                lit(Trigger::Manual.as_str()),
                                requested.clone(),
                            ),
                        ),
                        (
                            "next_check_at",
                            branch(
                                or(ne(requested, null()), running),
                                next.clone(),
                                min_term(next, lit(now_ms)),
                            ),
                        ),
                    ]),
                )
            })
        };
        let old = self.update_status_reading_old(id, now, make_update).await?;
        if is_deleting(&old) {
            return Err(StoreError::BeingDeleted(id));
        }
        if opt_str(&old, "pinned_commit").is_none() {
            return Ok(None);
        }
        Ok(Some(if opt_str(&old, "requested_trigger").is_some() {
            RequestResult::AlreadyQueued
        } else if opt_int(&old, "lease_until").is_some_and(|t| t > now_ms) {
            RequestResult::QueuedAfterRunning
        } else {
            RequestResult::Queued
        }))
    }

    async fn manifests(&self, history_id: i64) -> StoreResult<Option<PackedManifests>> {
        let data = field_or(&self.manifests_table().get(history_id), "data", null());
        let v = self.pool.one(data).await?;
        if v.is_null() {
            return Ok(None);
        }
        match manifests_from_binary(&v) {
            Some(packed) => Ok(Some(packed)),
            None => Err(StoreError::Backend(format!(
                "the manifests of history entry {history_id} are not binary"
            ))),
        }
    }

    async fn inventory(&self, id: SourceId) -> StoreResult<Option<Inventory>> {
        let q = object(vec![
            ("exists", ne(self.sources().get(id), null())),
            ("inventory", self.inventories().get(id)),
        ]);
        let v = self.pool.one(q).await?;
        if v.get("exists").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        match v.get("inventory").filter(|d| !d.is_null()) {
            None => Ok(Some(Inventory::default())),
            Some(doc) => Ok(Some(inventory_from_doc(doc)?.1)),
        }
    }
}

/// Whether a status document's source may be checked: not suspended, a
/// manual check or a rollback asked for, or being deleted (its prune runs
/// even while suspended).
/// `counter.value + 1`, with soft durability: acknowledged once in memory,
/// so a counted write costs no second disk flush (a hard bump made each
/// PATCH 4.5 ms slower). A server that crashes may lose the last bumps, but
/// then every feed breaks (the version is unknown meanwhile) and the
/// reconcile that reopens them raises the counter to the clock, past every
/// value it had.
fn soft_bump(counter: Command) -> Command {
    let bump = lambda(|c| object(vec![("value", add(field(&c, "value"), lit(1)))]));
    counter.update(r.args((bump, update::Options::new().durability(Durability::Soft))))
}

fn runnable(st: &Command) -> Command {
    or(
        or(
            ne(field_or(st, "suspended", lit(false)), lit(true)),
            eq(
                field_or(st, "requested_trigger", null()),
                lit(Trigger::Manual.as_str()),
            ),
        ),
        or(
            eq(field_or(st, "deleting", lit(false)), lit(true)),
            ne(field_or(st, "rollback_to", null()), null()),
        ),
    )
}

/// Every `[outcome, stage]` of an entry that went live
/// ([`went_live`], from the domain's own lists), and `deleted`'s: what
/// time travel looks at.
fn live_or_deleted_pairs() -> Value {
    let stages = std::iter::once(None).chain(Stage::NAMES.iter().map(|s| Some(*s)));
    let mut pairs = Vec::new();
    for outcome in Outcome::NAMES {
        for stage in stages.clone() {
            let (Ok(o), Ok(st)) = (
                outcome.parse::<Outcome>(),
                stage.map(str::parse::<Stage>).transpose(),
            ) else {
                continue;
            };
            if went_live(o, st) || o == Outcome::Deleted {
                pairs.push(json!([outcome, stage]));
            }
        }
    }
    Value::Array(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_rethinkdb_read_as_integers() {
        assert_eq!(as_int(&json!(3)), Some(3));
        assert_eq!(as_int(&json!(3.0)), Some(3));
        assert_eq!(as_int(&json!(3.5)), None);
        assert_eq!(as_int(&json!("3")), None);
        assert_eq!(as_int(&json!(9007199254740991.0)), Some(9007199254740991));
    }

    #[test]
    fn python_documents_read_with_defaults() {
        let doc = json!({
            "id": 7.0,
            "namespace": "production",
            "deployment_name": "web",
            "git_url": "https://example.com/r.git",
            "branch": "master",
            "deploy_path": "./deploy",
            "container_name": "app",
            "image_version_file": "./deploy/deployment.yaml",
        });
        let s = source_from_doc(&doc).unwrap();
        assert_eq!(s.id, 7);
        assert_eq!(s.revision, 1);
        assert!(!s.spec.suspended);
        assert!(s.spec.prune, "pruning is on unless switched off");
        assert_eq!(s.spec.auto_rollback, None, "the service's default");
        assert_eq!(s.spec.service_account, None, "the service's default");
        assert!(!s.deleting);
        assert_eq!(s.spec.interval_seconds, None);
        let mut odd = doc.clone();
        odd.as_object_mut().unwrap().remove("branch");
        let e = source_from_doc(&odd).unwrap_err().to_string();
        assert!(e.contains("7") && e.contains("branch"), "{e}");
        let mut odd = doc;
        odd["id"] = json!("abc");
        assert!(source_from_doc(&odd).is_err());
    }

    #[test]
    fn write_results_are_read() {
        let dup = json!({"inserted": 0, "errors": 1,
            "first_error": "Duplicate primary key `id`:\n{...}"});
        assert!(matches!(inserted(&dup, "x"), Ok(Inserted::Conflict)));
        assert!(matches!(
            inserted(&json!({"inserted": 1, "errors": 0}), "x"),
            Ok(Inserted::Yes)
        ));
        assert!(inserted(
            &json!({"inserted": 0, "errors": 1, "first_error": "boom"}),
            "x"
        )
        .is_err());
        let changed =
            json!({"replaced": 1, "changes": [{"old_val": {"value": 1}, "new_val": {"value": 2}}]});
        assert_eq!(change(&changed, "new_val").unwrap()["value"], 2);
        assert!(change(&json!({"unchanged": 1, "changes": []}), "new_val").is_none());
    }

    #[test]
    fn times_round_trip_through_milliseconds() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
            + Duration::from_millis(123);
        assert_eq!(from_ms(ms(t)), t);
    }
}
