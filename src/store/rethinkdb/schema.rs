//! Creating the database, tables and indexes chump needs — converging when
//! several processes do it at once.
//!
//! RethinkDB does not serialize `db_create` and `table_create` across
//! connections: two replicas that open a fresh database together can both
//! succeed, leaving two databases (or tables) of one name, and every later
//! query on that name fails as "ambiguous" (rethinkdb/rethinkdb#4898,
//! #5900). So opening is a loop that every process runs the same way:
//!
//! 1. create what is missing ("already exists" is success);
//! 2. look in the system tables (`rethinkdb.db_config`, `table_config`) for
//!    duplicates of each name and resolve them: the duplicates are renamed
//!    apart (`NAME_chump_dup_<uuid>`), each is asked whether it holds data,
//!    and all but one are deleted — the one holding data, or, when none
//!    does, the one with the lowest id, so every process picks the same;
//!    two holding data are put back as found and opening fails naming them
//!    (chump never drops data to repair a database);
//! 3. verify: exactly one database, one of each table, every index ready.
//!    Anything "ambiguous" or "does not exist" on the way (another process
//!    is resolving at the same moment) starts the loop again, until a
//!    deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chump_jobs::store::{StoreError, StoreResult};
use ql2::term::TermType;
use reql::cmd::table_create;
use reql::{r, Command};
use serde_json::Value;

use super::terms::{field, func, gt, lambda, lit, term};
use super::*;

/// How long opening may keep converging before it gives up.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// The suffix that renames a duplicate apart while it is examined.
const DUP_MARK: &str = "_chump_dup_";

/// Why one pass of opening did not finish.
enum Pass {
    /// Another process is creating or resolving at the same time: go again.
    Again(String),
    /// A real error: stop.
    Fail(StoreError),
}

impl From<StoreError> for Pass {
    fn from(e: StoreError) -> Self {
        let message = match &e {
            StoreError::Backend(m) | StoreError::Unavailable(m) => m.as_str(),
            _ => "",
        };
        // "primary replica … not available": a table just created by
        // another process is not ready for reads yet.
        if message.contains("ambiguous")
            || message.contains("does not exist")
            || message.contains("doesn't exist")
            || message.contains("not available")
            || message.contains("lost contact")
        {
            Pass::Again(message.to_string())
        } else {
            Pass::Fail(e)
        }
    }
}

/// One entry of `rethinkdb.db_config` or `rethinkdb.table_config`.
#[derive(Debug, Clone)]
struct Config {
    id: String,
    name: String,
}

impl Config {
    fn from_doc(doc: &Value) -> Option<Config> {
        Some(Config {
            id: doc.get("id")?.as_str()?.to_string(),
            name: doc.get("name")?.as_str()?.to_string(),
        })
    }

    /// The name a duplicate gets while it is examined.
    fn apart(&self, base: &str) -> String {
        format!("{base}{DUP_MARK}{}", self.id.replace('-', ""))
    }
}

/// What `rethinkdb.*_config` entry a duplicate lives in.
#[derive(Clone, Copy)]
enum Kind {
    Db,
    Table,
}

impl Kind {
    fn system_table(self) -> Command {
        let name = match self {
            Kind::Db => "db_config",
            Kind::Table => "table_config",
        };
        r.db("rethinkdb").table(name)
    }

    fn word(self) -> &'static str {
        match self {
            Kind::Db => "databases",
            Kind::Table => "tables",
        }
    }
}

impl RethinkStore {
    /// The tables chump uses and their primary keys.
    fn tables(&self) -> [(String, &'static str); 7] {
        [
            (self.sources_table.clone(), "id"),
            (STATUS_TABLE.to_string(), "source_id"),
            (HISTORY_TABLE.to_string(), "id"),
            (COUNTERS_TABLE.to_string(), "id"),
            (TARGETS_TABLE.to_string(), "id"),
            (INVENTORY_TABLE.to_string(), "source_id"),
            (MANIFESTS_TABLE.to_string(), "id"),
        ]
    }

    /// Creates whatever is missing and resolves duplicates left by
    /// concurrent creators, until exactly one of everything is ready.
    pub(super) async fn ensure_schema(&self) -> StoreResult<()> {
        let deadline = Instant::now() + CONVERGE_DEADLINE;
        let mut passes = 0u32;
        loop {
            passes += 1;
            match self.schema_pass().await {
                Ok(()) => {
                    if passes > 1 {
                        tracing::info!(db = %self.db, passes, "database schema converged");
                    }
                    return Ok(());
                }
                Err(Pass::Fail(e)) => return Err(e),
                Err(Pass::Again(why)) if Instant::now() < deadline => {
                    tracing::debug!(db = %self.db, why = %why, "schema changing under us; looking again");
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(20..200))).await;
                }
                Err(Pass::Again(why)) => {
                    return Err(StoreError::Backend(format!(
                        "the database {} did not settle within {}s: {why}",
                        self.db,
                        CONVERGE_DEADLINE.as_secs()
                    )))
                }
            }
        }
    }

    async fn schema_pass(&self) -> Result<(), Pass> {
        // The database.
        if self.configs(Kind::Db, None, &self.db).await?.is_empty() {
            self.create_if_missing(r.db_create(self.db.clone())).await?;
        }
        self.resolve(Kind::Db, None, &self.db).await?;

        // The tables.
        for (name, key) in self.tables() {
            if self
                .configs(Kind::Table, Some(&self.db), &name)
                .await?
                .is_empty()
            {
                let options = table_create::Options::new()
                    .primary_key(key.to_string())
                    .replicas(table_create::Replicas::Int(self.replicas));
                self.create_if_missing(
                    r.db(self.db.clone())
                        .table_create(r.args((name.clone(), options))),
                )
                .await?;
            }
            self.resolve(Kind::Table, Some(&self.db), &name).await?;
        }
        for (name, _) in self.tables() {
            // Until a new table is ready for reads and writes on every replica.
            self.pool
                .run(term(TermType::Wait, [self.table(&name)]))
                .await?;
        }

        // The indexes (one name per table: index creation does not duplicate).
        self.create_if_missing(
            self.statuses()
                .index_create(r.args((INDEX_DUE, func(|st| field(&st, "next_check_at"))))),
        )
        .await?;
        for (table, index, by) in [
            (HISTORY_TABLE, INDEX_HISTORY_SOURCE, "source_id"),
            (HISTORY_TABLE, INDEX_HISTORY_NAMESPACE, "namespace"),
            (MANIFESTS_TABLE, INDEX_MANIFESTS_SOURCE, "source_id"),
        ] {
            self.create_if_missing(self.table(table).index_create(r.args((
                index,
                func(|h| term(TermType::MakeArray, [field(&h, by), field(&h, "id")])),
            ))))
            .await?;
        }
        self.create_if_missing(
            self.history_table()
                .index_create(r.args((INDEX_HISTORY_FINISHED, func(|h| field(&h, "finished_at"))))),
        )
        .await?;
        for name in [STATUS_TABLE, HISTORY_TABLE, MANIFESTS_TABLE] {
            self.pool
                .run(term(TermType::IndexWait, [self.table(name)]))
                .await?;
        }

        // Verify: another process may have created a duplicate meanwhile.
        if self.configs(Kind::Db, None, &self.db).await?.len() != 1 {
            return Err(Pass::Again(format!(
                "database {} is not unique yet",
                self.db
            )));
        }
        let tables = self.configs_in(&self.db).await?;
        for (name, _) in self.tables() {
            let n = tables.iter().filter(|c| c.name == name).count();
            if n != 1 {
                return Err(Pass::Again(format!("{n} tables {}.{name}", self.db)));
            }
        }
        for (table, indexes) in [
            (STATUS_TABLE, &[INDEX_DUE][..]),
            (
                HISTORY_TABLE,
                &[
                    INDEX_HISTORY_SOURCE,
                    INDEX_HISTORY_NAMESPACE,
                    INDEX_HISTORY_FINISHED,
                ][..],
            ),
            (MANIFESTS_TABLE, &[INDEX_MANIFESTS_SOURCE][..]),
        ] {
            let have = self
                .pool
                .run(term(TermType::IndexList, [self.table(table)]))
                .await?;
            for index in indexes {
                if !have.iter().any(|v| v.as_str() == Some(index)) {
                    return Err(Pass::Again(format!("index {table}.{index} missing")));
                }
            }
        }
        self.warn_about_replicas(&tables_docs(self, &self.db).await?);
        Ok(())
    }

    /// Runs a create command, treating "already exists" as done.
    pub(super) async fn create_if_missing(&self, query: Command) -> StoreResult<()> {
        match self.pool.run(query).await {
            Ok(_) => Ok(()),
            Err(e) if is_already_exists(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every table of database `db` (by its current name).
    async fn configs_in(&self, db: &str) -> StoreResult<Vec<Config>> {
        Ok(tables_docs(self, db)
            .await?
            .iter()
            .filter_map(Config::from_doc)
            .collect())
    }

    /// The databases (or tables of `db`) named `base`, and those renamed
    /// apart from it by an earlier pass.
    async fn configs(&self, kind: Kind, db: Option<&str>, base: &str) -> StoreResult<Vec<Config>> {
        let docs = match (kind, db) {
            (Kind::Table, Some(db)) => tables_docs(self, db).await?,
            _ => self.pool.run(Kind::Db.system_table()).await?,
        };
        let prefix = format!("{base}{DUP_MARK}");
        let mut found: Vec<Config> = docs
            .iter()
            .filter_map(Config::from_doc)
            .filter(|c| c.name == base || c.name.starts_with(&prefix))
            .collect();
        // The one carrying the name first (lowest id among several), so a
        // live table is never renamed away; then by id. Every process
        // orders them alike.
        found.sort_by(|a, b| (a.name != base, &a.id).cmp(&(b.name != base, &b.id)));
        Ok(found)
    }

    /// Leaves exactly one database (or table of `db`) named `base`.
    async fn resolve(&self, kind: Kind, db: Option<&str>, base: &str) -> Result<(), Pass> {
        let found = self.configs(kind, db, base).await?;
        if found.len() == 1 && found[0].name == base {
            return Ok(());
        }
        if found.is_empty() {
            return Err(Pass::Again(format!("{base} vanished")));
        }
        tracing::warn!(
            name = %base,
            count = found.len(),
            "found {} named {base} more than once (created concurrently); resolving",
            kind.word()
        );
        // Rename all but the lowest apart, so each can be addressed.
        let mut names = BTreeMap::new();
        for (i, c) in found.iter().enumerate() {
            let name = if i == 0 {
                base.to_string()
            } else {
                c.apart(base)
            };
            if c.name != name {
                self.rename(kind, &c.id, &name).await?;
            }
            names.insert(c.id.clone(), name);
        }
        // Which of them hold data?
        let mut holding = Vec::new();
        for c in &found {
            let name = &names[&c.id];
            let docs = match kind {
                Kind::Table => self.documents_in(db.unwrap_or(&self.db), name).await?,
                Kind::Db => {
                    let mut n = 0;
                    for t in self.configs_in(name).await? {
                        n += self.documents_in(name, &t.name).await?;
                    }
                    n
                }
            };
            if docs > 0 {
                holding.push((c.clone(), docs));
            }
        }
        let keep = match holding.as_slice() {
            [] => found[0].clone(),
            [(one, _)] => one.clone(),
            several => {
                // Put them back as found and refuse.
                for c in found.iter().skip(1) {
                    let _ = self.rename(kind, &c.id, base).await;
                }
                let list: Vec<String> = several
                    .iter()
                    .map(|(c, n)| format!("{} ({n} documents)", c.id))
                    .collect();
                let place = db.map(|d| format!("{d}.")).unwrap_or_default();
                return Err(Pass::Fail(StoreError::Backend(format!(
                    "RethinkDB holds {} {} named {place}{base}, and {} of them hold data: {}; \
                     chump will not choose between them. Keep one and delete the others \
                     (r.db('rethinkdb').table('{}').get(ID).delete()), then start chump again",
                    found.len(),
                    kind.word(),
                    several.len(),
                    list.join(", "),
                    match kind {
                        Kind::Db => "db_config",
                        Kind::Table => "table_config",
                    }
                ))));
            }
        };
        for c in &found {
            if c.id != keep.id {
                tracing::info!(name = %base, id = %c.id, "deleting an empty duplicate");
                self.pool
                    .run(term(
                        TermType::Delete,
                        [kind.system_table().get(c.id.clone())],
                    ))
                    .await?;
            }
        }
        if names[&keep.id] != base {
            self.rename(kind, &keep.id, base).await?;
        }
        Ok(())
    }

    async fn rename(&self, kind: Kind, id: &str, name: &str) -> StoreResult<()> {
        let result = self
            .pool
            .one(
                kind.system_table()
                    .get(id.to_string())
                    .update(serde_json::json!({ "name": name })),
            )
            .await?;
        // Refusals come back in the write result, not as errors.
        match result.get("first_error").and_then(Value::as_str) {
            Some(e) => Err(StoreError::Backend(format!("renaming {id} to {name}: {e}"))),
            None => Ok(()),
        }
    }

    /// Documents in table `db.table` that matter: every document, except in
    /// the counters table, where a counter still at 0 has handed out nothing.
    async fn documents_in(&self, db: &str, table: &str) -> StoreResult<u64> {
        let t = r.db(db.to_string()).table(table.to_string());
        // A table just created (here or by another process) may not be
        // ready for reads yet.
        self.pool.run(term(TermType::Wait, [t.clone()])).await?;
        let q = if table == COUNTERS_TABLE {
            term(
                TermType::Count,
                [term(
                    TermType::Filter,
                    [t, lambda(|c| gt(field(&c, "value"), lit(0)))],
                )],
            )
        } else {
            term(TermType::Count, [t])
        };
        Ok(self.pool.one(q).await?.as_u64().unwrap_or(0))
    }

    /// Tells when an existing chump table has fewer replicas than
    /// `CHUMP_RETHINKDB_REPLICAS` asks for (tables are only created with it).
    fn warn_about_replicas(&self, docs: &[Value]) {
        for doc in docs {
            let Some(name) = doc.get("name").and_then(Value::as_str) else {
                continue;
            };
            if !self.tables().iter().any(|(t, _)| t == name) {
                continue;
            }
            let have = doc
                .get("shards")
                .and_then(Value::as_array)
                .and_then(|s| s.first())
                .and_then(|s| s.get("replicas"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if have < self.replicas as usize {
                tracing::warn!(
                    table = %name,
                    replicas = have,
                    wanted = self.replicas,
                    "table has fewer replicas than CHUMP_RETHINKDB_REPLICAS; \
                     reconfigure it: r.db('{}').table('{name}').reconfigure({{shards: 1, replicas: {}}})",
                    self.db,
                    self.replicas
                );
            }
        }
    }
}

/// `rethinkdb.table_config` entries of database `db`.
async fn tables_docs(store: &RethinkStore, db: &str) -> StoreResult<Vec<Value>> {
    let q = term(
        TermType::Filter,
        [
            Kind::Table.system_table(),
            lambda(|t| super::terms::eq(field(&t, "db"), lit(db))),
        ],
    );
    store.pool.run(q).await
}
