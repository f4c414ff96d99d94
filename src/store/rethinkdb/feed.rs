//! Following other writers through RethinkDB changefeeds.
//!
//! Two feeds, each on a connection of its own (a reql session that runs a
//! changefeed runs nothing else):
//!
//! - **sources**: documents the original Python tool (or any other client)
//!   inserts, updates or deletes in the sources table are scheduled,
//!   rescheduled or dropped at once. chump's own writes come through too and
//!   are recognised (an update by chump bumps `revision`; inserting a status
//!   or target key chump already wrote is a harmless conflict). A source
//!   marked `deleting` gets its status marked too (due at once), in case
//!   the delete that marked it was cut before it got there.
//! - **statuses**: a check or rollback requested, a new source, a schedule
//!   moved earlier or a lease handed back — on any replica — wakes this replica's
//!   scheduler, so whichever replica has a free worker takes it at once.
//!
//! While the sources feed is open, every change it delivers bumps the
//! store's `sources_version`, so pushes keep their index of the source list
//! until a source changes anywhere; while it is closed the version is
//! unknown and each push reads the list.
//!
//! The data version ([`chump_jobs::store::Store::data_version`]) is known
//! only while the sources feed is open too: chump's writes move it in the
//! query that writes, but other clients' writes to the sources table move
//! it only when the feed brings them (each change seen moves it once more).
//!
//! A feed that breaks (server restart, network) is opened again with
//! backoff; as soon as it is ready again the sources table is reconciled
//! with the schedule ([`RethinkStore::reconcile`]), so a write made while no
//! feed was open is not missed. Outages are logged once.

use std::sync::Arc;
use std::time::Duration;

use chump_jobs::history::Trigger;
use chump_jobs::store::StoreResult;
use futures::TryStreamExt;
use ql2::term::TermType;
use reql::cmd::changes;
use reql::Command;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::docs::{count, new_status, source_from_doc, target_key};
use super::terms::*;
use super::RethinkStore;

const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Whether a feed is in an outage (logged once), and the next retry delay.
struct FeedHealth {
    down: bool,
    delay: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Feed {
    Sources,
    Statuses,
}

impl Feed {
    fn name(self) -> &'static str {
        match self {
            Feed::Sources => "sources",
            Feed::Statuses => "statuses",
        }
    }
}

impl RethinkStore {
    /// Runs both feeds until `stop`.
    pub(super) async fn follow(&self, wake: Arc<Notify>, stop: CancellationToken) {
        tokio::join!(
            self.keep_following(Feed::Sources, &wake, &stop),
            self.keep_following(Feed::Statuses, &wake, &stop),
        );
    }

    /// One feed, opened again whenever it breaks.
    async fn keep_following(&self, feed: Feed, wake: &Notify, stop: &CancellationToken) {
        let mut health = FeedHealth {
            down: false,
            delay: RETRY_MIN,
        };
        loop {
            let why = tokio::select! {
                _ = stop.cancelled() => None,
                e = self.run_feed(feed, wake, &mut health) => Some(e),
            };
            if let Feed::Sources = feed {
                // Other replicas' writes go unseen until it is open again.
                self.sources_version.set_followed(false);
            }
            let Some(why) = why else { return };
            if !health.down {
                tracing::warn!(feed = feed.name(), error = %why, "changefeed broke; opening it again");
                health.down = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(health.delay) => {}
            }
            health.delay = (health.delay * 2).min(RETRY_MAX);
        }
    }

    /// Opens `feed` and handles its changes until it fails; returns why.
    async fn run_feed(&self, feed: Feed, wake: &Notify, health: &mut FeedHealth) -> String {
        let session = match self.pool.connect().await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let options = changes::Options::new().include_states(true);
        let query = match feed {
            Feed::Sources => self.sources().changes(options),
            Feed::Statuses => term(
                TermType::Filter,
                [self.statuses().changes(options), lambda(wakes_scheduler)],
            ),
        };
        let mut stream = Box::pin(query.run::<_, Value>(&session));
        loop {
            let change = match stream.try_next().await {
                Ok(Some(change)) => change,
                Ok(None) => return "the server closed the feed".into(),
                Err(e) => return e.to_string(),
            };
            if let Some(state) = change.get("state").and_then(Value::as_str) {
                if state == "ready" {
                    if let Feed::Sources = feed {
                        // Whatever was written while no feed was open.
                        if let Err(e) = self.reconcile(OffsetDateTime::now_utc()).await {
                            return format!("cannot reconcile the schedule: {e}");
                        }
                        self.sources_version.set_followed(true);
                    }
                    if health.down {
                        tracing::info!(feed = feed.name(), "changefeed open again");
                    }
                    *health = FeedHealth {
                        down: false,
                        delay: RETRY_MIN,
                    };
                    tracing::debug!(feed = feed.name(), "changefeed ready");
                    wake.notify_one();
                }
                continue;
            }
            if let Some(error) = change.get("error").and_then(Value::as_str) {
                // The server dropped changes (its queue overflowed): start
                // over, which reconciles.
                return error.to_string();
            }
            match feed {
                Feed::Sources => {
                    self.sources_version.changed();
                    let foreign = match self.source_changed(&change).await {
                        Ok(foreign) => foreign,
                        Err(e) => {
                            return format!("cannot follow a change of the sources table: {e}")
                        }
                    };
                    // Another client's write (the Python tool's) moves the
                    // data version only here; chump's own moved it already.
                    if foreign {
                        if let Err(e) = self.bump_writes().await {
                            return format!("cannot move the data version: {e}");
                        }
                    }
                    wake.notify_one();
                }
                Feed::Statuses => wake.notify_one(),
            }
        }
    }

    /// Brings the schedule in line with one change of the sources table;
    /// whether another client made it (chump's own inserts carry a
    /// `revision`, its updates bump it, and its other writes to a source
    /// leave the spec alone; a delete may be anyone's).
    async fn source_changed(&self, change: &Value) -> StoreResult<bool> {
        let doc = |name: &str| change.get(name).filter(|v| !v.is_null());
        let now = OffsetDateTime::now_utc();
        match (doc("old_val"), doc("new_val")) {
            (None, Some(new)) => {
                match source_from_doc(new) {
                    Ok(source) => {
                        tracing::debug!(source = source.id, "source inserted");
                        self.adopt_source(&source, now).await?;
                    }
                    Err(e) => tracing::warn!(error = %e, "a source document chump cannot read"),
                }
                return Ok(new.get("revision").is_none());
            }
            (Some(old), Some(new)) => {
                let (old, new) = match (source_from_doc(old), source_from_doc(new)) {
                    (Ok(old), Ok(new)) => (old, new),
                    (_, Err(e)) | (Err(e), _) => {
                        tracing::warn!(error = %e, "a source document chump cannot read");
                        return Ok(true);
                    }
                };
                // Marked `deleting` (by chump's delete with prune, on any
                // replica): its status too, in case that delete was cut
                // before it got there.
                if new.deleting && !old.deleting {
                    self.mark_status_deleting(new.id, now).await?;
                }
                // chump's own update bumps the revision and reschedules.
                if old.revision != new.revision || old.spec == new.spec {
                    return Ok(false);
                }
                tracing::info!(
                    source = new.id,
                    "source changed by another writer; checking it again"
                );
                if target_key(&old.spec) != target_key(&new.spec) {
                    self.adopt_source(&new, now).await?;
                    let id = new.id;
                    self.delete_target_if(&target_key(&old.spec), |d| {
                        eq(field_or(&d, "source_id", null()), lit(id))
                    })
                    .await?;
                }
                // Due at once; a check running with the old spec is followed
                // by another (a requested check survives its finish).
                let now_ms = ms(now);
                let suspended = new.spec.suspended;
                let f = lambda(|st| {
                    let requested = field_or(&st, "requested_trigger", null());
                    object(vec![
                        (
                            "next_check_at",
                            min_term(field_or(&st, "next_check_at", lit(now_ms)), lit(now_ms)),
                        ),
                        ("suspended", lit(suspended)),
                        (
                            "requested_trigger",
                            branch(
                                eq(requested.clone(), null()),
                                lit(Trigger::Schedule.as_str()),
                                requested,
                            ),
                        ),
                    ])
                });
                let result = self.write(self.statuses().get(new.id).update(f)).await?;
                if count(&result, "skipped") > 0 {
                    let status = new_status(&new, now_ms);
                    self.write(term(TermType::Insert, [self.statuses(), lit(status)]))
                        .await?;
                }
            }
            (Some(old), None) => {
                let Some(id) = old.get("id").and_then(as_int) else {
                    return Ok(true);
                };
                tracing::info!(source = id, "source deleted; dropping its schedule");
                self.drop_schedule(id).await?;
                if let Ok(source) = source_from_doc(old) {
                    self.delete_target_if(&target_key(&source.spec), |d| {
                        eq(field_or(&d, "source_id", null()), lit(id))
                    })
                    .await?;
                }
            }
            (None, None) => return Ok(false),
        }
        Ok(true)
    }
}

/// Whether a change of a status document may make a check due now: a feed
/// state, a new status, a requested check or rollback, a schedule moved
/// earlier, or a lease handed back (without a check recorded, or with a
/// rollback pending).
fn wakes_scheduler(change: Command) -> Command {
    let old = field(&change, "old_val");
    let new = field(&change, "new_val");
    let of = |doc: &Command, name: &str| field_or(doc, name, null());
    let state = term(TermType::HasFields, [change.clone(), lit("state")]);
    let inserted = eq(field_or(&change, "old_val", null()), null());
    let requested = ne(of(&new, "requested_trigger"), null());
    let earlier = lt(
        field_or(&new, "next_check_at", lit(i64::MAX >> 11)),
        field_or(&old, "next_check_at", lit(0)),
    );
    let handed_back = and(
        and(
            ne(of(&old, "lease_owner"), null()),
            eq(of(&new, "lease_owner"), null()),
        ),
        eq(of(&new, "last_checked_at"), of(&old, "last_checked_at")),
    );
    // A rollback asked for (through another replica), or still pending
    // when the check before it lets the source go.
    let rollback = and(
        ne(of(&new, "rollback_to"), null()),
        or(
            ne(of(&new, "rollback_to"), of(&old, "rollback_to")),
            and(
                ne(of(&old, "lease_owner"), null()),
                eq(of(&new, "lease_owner"), null()),
            ),
        ),
    );
    or(
        or(state, inserted),
        or(or(requested, rollback), or(earlier, handed_back)),
    )
}
