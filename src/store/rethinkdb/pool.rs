//! The connection pool: a few slots, each reconnected on its next use after
//! a failure, every query in its own task under a deadline, outages logged
//! once.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chump_jobs::store::{StoreError, StoreResult};
use futures::TryStreamExt;
use reql::cmd;
use reql::{r, Command, Session};
use serde_json::Value;

use crate::config::RethinkConfig;

/// How long one query may take before its connection is given up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long connecting may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, calls fail at once for this long.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(super) struct Slot {
    /// The connection and its generation (to replace only the one that failed).
    session: Option<(u64, Session)>,
    last_failure: Option<Instant>,
}

pub(super) struct Pool {
    config: RethinkConfig,
    slots: Vec<tokio::sync::Mutex<Slot>>,
    next_slot: AtomicUsize,
    generation: AtomicU64,
    /// True while the server is unreachable (for logging once per outage).
    down: AtomicBool,
}

/// Why a query failed, as far as the connection is concerned.
pub(super) enum Failure {
    /// The connection is unusable: drop it and report the store unavailable.
    Connection(String),
    /// The server is there but cannot serve this now.
    Unavailable(String),
    /// Anything else.
    Query(String),
}

pub(super) fn classify(e: &reql::Error) -> Failure {
    match e {
        reql::Error::Driver(reql::Driver::Io(_, _) | reql::Driver::ConnectionBroken) => {
            Failure::Connection(e.to_string())
        }
        reql::Error::Driver(reql::Driver::Auth(_)) => Failure::Connection(e.to_string()),
        // A cluster that lost the servers holding a table's configuration
        // answers with an internal error; it is an outage all the same.
        reql::Error::Runtime(reql::Runtime::Internal(m))
            if m.contains("servers were accessible") =>
        {
            Failure::Unavailable(e.to_string())
        }
        reql::Error::Runtime(reql::Runtime::Availability(_)) => {
            let m = e.to_string();
            // "already exists" is an op-failed error too; it is no outage.
            if m.contains("already exists") {
                Failure::Query(m)
            } else {
                Failure::Unavailable(m)
            }
        }
        _ => Failure::Query(e.to_string()),
    }
}

impl Pool {
    pub(super) fn new(config: RethinkConfig) -> Self {
        // Queries on one connection run one at a time.
        let slots = (0..config.pool.max(1))
            .map(|_| Default::default())
            .collect();
        Self {
            config,
            slots,
            next_slot: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            down: AtomicBool::new(false),
        }
    }

    pub(super) fn where_(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    pub(super) async fn connect(&self) -> Result<Session, String> {
        let c = &self.config;
        let mut options = cmd::connect::Options::new()
            .host(c.host.clone())
            .port(c.port)
            .db(c.db.clone());
        if let Some(user) = &c.user {
            options = options.user(user.clone());
        }
        if let Some(password) = &c.password {
            options = options.password(password.clone());
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, r.connect(options)).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(e)) => Err(format!(
                "cannot connect to RethinkDB at {}: {e}",
                self.where_()
            )),
            Err(_) => Err(format!(
                "cannot connect to RethinkDB at {}: timed out after {}s",
                self.where_(),
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// A connection from the next slot, connecting it if needed.
    pub(super) async fn session(&self) -> StoreResult<(usize, u64, Session)> {
        let index = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some((generation, session)) = &slot.session {
            if !session.is_broken() {
                return Ok((index, *generation, session.clone()));
            }
            slot.session = None;
        }
        if let Some(at) = slot.last_failure {
            if at.elapsed() < RECONNECT_PAUSE {
                return Err(StoreError::Unavailable(format!(
                    "RethinkDB at {} is unreachable",
                    self.where_()
                )));
            }
        }
        match self.connect().await {
            Ok(session) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed);
                slot.session = Some((generation, session.clone()));
                slot.last_failure = None;
                Ok((index, generation, session))
            }
            Err(message) => {
                slot.last_failure = Some(Instant::now());
                self.outage(&message);
                Err(StoreError::Unavailable(message))
            }
        }
    }

    /// Forgets a slot's connection if it is still the one that failed.
    pub(super) async fn discard(&self, index: usize, generation: u64) {
        let mut slot = self.slots[index].lock().await;
        if matches!(&slot.session, Some((g, _)) if *g == generation) {
            slot.session = None;
        }
    }

    pub(super) fn outage(&self, message: &str) {
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %message, "RethinkDB is unavailable; retrying on later calls");
        }
    }

    pub(super) fn reachable(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!(server = %self.where_(), "RethinkDB is reachable again");
        }
    }

    /// Runs `query` and returns every value it yields, arrays flattened
    /// (a sorted sequence comes back as one array).
    pub(super) async fn run(&self, query: Command) -> StoreResult<Vec<Value>> {
        let (index, generation, session) = self.session().await?;
        // In its own task: a caller that gives up never leaves the
        // connection between a request and its response.
        let task = tokio::spawn(async move {
            query
                .run::<_, Value>(&session)
                .try_collect::<Vec<Value>>()
                .await
        });
        let failure = match tokio::time::timeout(QUERY_TIMEOUT, task).await {
            Ok(Ok(Ok(values))) => {
                self.reachable();
                let mut out = Vec::with_capacity(values.len());
                for v in values {
                    match v {
                        Value::Array(items) => out.extend(items),
                        other => out.push(other),
                    }
                }
                return Ok(out);
            }
            Ok(Ok(Err(e))) => classify(&e),
            Ok(Err(join)) => Failure::Query(format!("query task failed: {join}")),
            Err(_) => Failure::Connection(format!(
                "no answer from RethinkDB at {} within {}s",
                self.where_(),
                QUERY_TIMEOUT.as_secs()
            )),
        };
        match failure {
            Failure::Connection(message) => {
                self.discard(index, generation).await;
                self.outage(&message);
                Err(StoreError::Unavailable(message))
            }
            Failure::Unavailable(message) => {
                self.outage(&message);
                Err(StoreError::Unavailable(message))
            }
            Failure::Query(message) => {
                self.reachable();
                Err(StoreError::Backend(message))
            }
        }
    }

    /// Runs a query that answers with one value (a document, a write result).
    pub(super) async fn one(&self, query: Command) -> StoreResult<Value> {
        let mut values = self.run(query).await?;
        Ok(if values.is_empty() {
            Value::Null
        } else {
            values.swap_remove(0)
        })
    }
}
