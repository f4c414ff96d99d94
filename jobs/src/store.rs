//! The storage the pipeline and the API stand on.
//!
//! [`Store`] is implemented by the service (`chump::store::sqlite`,
//! `chump::store::rethinkdb`); this crate only calls it. It holds three kinds
//! of data:
//!
//! - **intent**, written by the API: sources, and requests to check one now;
//! - **the schedule**: when each source is due next, and which process holds
//!   a *lease* on a check in flight, renewed while the check runs, so no
//!   source is checked twice at once and a crashed process's checks come
//!   back soon after its leases expire;
//! - **facts**, written by workers: each source's status and the history of
//!   deploys, failures and changes of health.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::history::{CheckReport, HistoryEntry, Outcome, Stage, Trigger};
use crate::manifests::PackedManifests;
use crate::rollback::{Pin, RollbackOrder};
use crate::source::{Source, SourceId, SourceSpec};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No source with that id.
    #[error("source {0} doesn't exist")]
    NotFound(SourceId),
    /// Another source already targets the same namespace, Deployment and
    /// container.
    #[error("a source for {0} already exists")]
    Duplicate(String),
    /// The database cannot be reached or refuses work right now; retrying
    /// later may succeed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The source is being deleted (its objects are being pruned): it
    /// takes no updates and no check requests.
    #[error("source {0} is being deleted")]
    BeingDeleted(SourceId),
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

/// What [`Store::delete_source`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletion {
    /// The source and its schedule are gone (its history stays).
    Deleted,
    /// The source is marked `deleting` and due at once: a worker prunes
    /// its recorded inventory (trigger [`Trigger::Delete`]), and the
    /// store deletes it when [`Store::finish_check`] records outcome
    /// [`Outcome::Deleted`].
    Pruning,
}

/// How many of a source's newest history entries keep their manifests,
/// unless configured (`CHUMP_MANIFEST_RETENTION`).
pub const DEFAULT_MANIFEST_RETENTION: u32 = 20;

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A source's last check and its place in the schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceStatus {
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_checked_at: Option<OffsetDateTime>,
    pub last_commit: Option<String>,
    pub last_outcome: Option<Outcome>,
    pub last_stage: Option<Stage>,
    pub last_message: Option<String>,
    pub desired_image: Option<String>,
    pub running_image: Option<String>,
    /// Failed checks since the last success.
    pub consecutive_failures: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_check_at: Option<OffsetDateTime>,
    /// A check asked for through the API or a webhook, not yet started.
    pub requested: Option<Trigger>,
    /// A check holds a lease on the source (queued or running).
    pub in_flight: bool,
    /// When that lease ends unless renewed (None: not in flight): the one
    /// moment a status changes by time alone, with nothing written.
    #[serde(skip)]
    pub in_flight_until: Option<OffsetDateTime>,
    /// Pinned away from a commit after a rollback (see [`crate::rollback`]).
    pub pinned: Option<Pin>,
    /// A rollback asked for and not yet recorded: the entry it goes to.
    pub rollback_to: Option<i64>,
}

/// A due check taken by one process: the source as it was when claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    pub source: Source,
    pub trigger: Trigger,
    /// Failed checks in a row before this one (for backoff).
    pub consecutive_failures: u32,
    /// How the source's previous check ended (`None`: never checked).
    pub last_outcome: Option<Outcome>,
    /// When the source became due: its scheduled time, or when the check was
    /// requested. A git head read after this is fresh enough for the check.
    pub due_at: OffsetDateTime,
    /// What chump last applied for the source (empty: nothing yet).
    pub inventory: crate::inventory::Inventory,
    /// The commit the source is pinned away from (after a rollback).
    pub pinned: Option<String>,
    /// This check is a rollback: what to apply.
    pub rollback: Option<RollbackOrder>,
    /// Who holds the lease.
    pub owner: String,
    /// When the lease ends unless renewed ([`Store::renew_leases`]).
    pub lease_until: OffsetDateTime,
}

/// A finished check that writes nothing but its status and schedule, for
/// [`Store::finish_quiet_checks`].
#[derive(Debug, Clone, Copy)]
pub struct QuietCheck<'a> {
    pub claim: &'a Claim,
    pub report: &'a CheckReport,
    pub next_check_at: OffsetDateTime,
}

/// Whether recording `report` of `claim` writes only the source's status
/// and schedule (and releases the lease): no history entry, no inventory,
/// no pin, no rollback, not a deletion. Most steady checks are; the store
/// may record such checks in batches ([`Store::finish_quiet_checks`]).
pub fn is_quiet(claim: &Claim, report: &CheckReport) -> bool {
    !report.goes_to_history(claim.last_outcome)
        && report.inventory.is_none()
        && report.manifests.is_none()
        && matches!(report.pin, crate::rollback::PinChange::Keep)
        && claim.rollback.is_none()
        && claim.trigger != Trigger::Delete
        && !claim.source.deleting
}

/// What [`Store::request_check`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestResult {
    /// The source is now due at once.
    Queued,
    /// A requested check is already waiting for a worker; nothing added.
    AlreadyQueued,
    /// A check is running; nothing added.
    AlreadyRunning,
    /// A check is running; another will follow it at once (webhooks: the
    /// running check may have read the branch before the push).
    QueuedAfterRunning,
}

/// Filters and paging for history queries, newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub source_id: Option<SourceId>,
    pub outcome: Option<Outcome>,
    pub namespace: Option<String>,
    pub since: Option<OffsetDateTime>,
    /// Only entries with an id below this (the paging cursor).
    pub before: Option<i64>,
    /// Only entries whose check applied (or tried to apply) a render: their
    /// manifests state is set.
    pub applied: bool,
    /// Time travel: instead of a page, for each source the newest entry
    /// finished at or before this instant that went live
    /// ([`crate::history::went_live`]) — none for a source whose newest
    /// such entry, or a later `deleted` one, is a deletion — then the
    /// other filters; newest first, at most `limit`.
    pub at: Option<OffsetDateTime>,
    pub limit: u32,
}

/// The storage chump runs on. All methods are safe to call concurrently, from
/// several processes where the backend is shared.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the backend is reachable and working.
    async fn ping(&self) -> StoreResult<()>;

    // --- sources (intent, written by the API) ---

    /// Stores a new source with the next free id, due for a check at once.
    /// [`StoreError::Duplicate`] when its target is taken.
    async fn create_source(&self, spec: &SourceSpec, now: OffsetDateTime) -> StoreResult<Source>;
    async fn get_source(&self, id: SourceId) -> StoreResult<Option<Source>>;
    /// Every source, sorted by id.
    async fn list_sources(&self) -> StoreResult<Vec<Source>>;
    /// Replaces a source's spec, bumps its revision and makes it due at once.
    async fn update_source(
        &self,
        id: SourceId,
        spec: &SourceSpec,
        now: OffsetDateTime,
    ) -> StoreResult<Source>;
    /// Deletes a source and its schedule; its history stays. With `prune`
    /// and a non-empty recorded inventory, the source is only marked
    /// `deleting` and made due at once ([`Deletion::Pruning`]); a source
    /// already `deleting` is deleted at once without `prune` (the prune is
    /// abandoned) and left as it is with it.
    async fn delete_source(&self, id: SourceId, prune: bool) -> StoreResult<Deletion>;

    /// A number that changes whenever any source is created, updated or
    /// deleted — when the backend can tell for certain (one process owns
    /// the data) — so what was derived from the source list may be kept
    /// until it changes (the push index). `None`: other processes may
    /// change sources at any time; derive afresh.
    fn sources_version(&self) -> Option<u64> {
        None
    }

    /// Whether other processes (replicas) may claim checks from this store
    /// too. Then a process claims only for its free workers and queues none
    /// ahead of them ([`crate::scheduler::SchedulerConfig::queue_ahead`]),
    /// so a due check goes to whichever replica is free.
    fn claimed_elsewhere(&self) -> bool {
        false
    }

    // --- schedule ---

    /// Makes a source due at once with `trigger`, unless a check is already
    /// waiting or (for manual requests) running. Suspended sources are only
    /// queued for manual requests.
    /// A source being deleted: [`StoreError::BeingDeleted`].
    async fn request_check(
        &self,
        id: SourceId,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<RequestResult>;
    /// [`Store::request_check`] for each of `ids` (a push to a repository
    /// many sources follow), in as few round trips as the backend allows:
    /// each source's own result, in order. The default asks one by one.
    async fn request_checks(
        &self,
        ids: &[SourceId],
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<StoreResult<RequestResult>>> {
        let mut results = Vec::with_capacity(ids.len());
        for &id in ids {
            results.push(match self.request_check(id, trigger, now).await {
                Err(StoreError::Unavailable(e)) => return Err(StoreError::Unavailable(e)),
                other => other,
            });
        }
        Ok(results)
    }
    /// Takes up to `limit` due sources that no live lease holds, earliest
    /// first, and leases them to `owner` for `lease`. Suspended sources are
    /// skipped unless a manual check was requested. A source being deleted
    /// is claimed (suspended or not) with trigger [`Trigger::Delete`].
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: usize,
        owner: &str,
        lease: Duration,
    ) -> StoreResult<Vec<Claim>>;
    /// Records a finished check in one step: the status, a history entry
    /// when [`CheckReport::goes_to_history`] after `claim.last_outcome`
    /// (deploys, failures, supersessions, rollbacks, the start and end of a
    /// degraded spell), the next due time (at once instead, if the
    /// source changed or a check or rollback was requested meanwhile), and
    /// releases the lease. Only the lease's holder writes: when the claim's
    /// lease is no longer `claim.owner`'s (released, or taken by another
    /// process), nothing is written. A deleted source only gets its history
    /// entry.
    ///
    /// With the history entry go its manifests ([`CheckReport::manifests`]:
    /// the entry's state `kept` with the bytes, or `too_large`); then the
    /// source keeps the bytes of its newest `retention` entries, and always
    /// those of its newest successful one (`deployed` or `rolled_back`):
    /// older entries are marked `dropped` and their bytes deleted.
    /// [`CheckReport::pin`] sets (with the new entry's id and the report's
    /// `finished_at`) or clears the pin. A claim that carried a rollback
    /// clears the pending rollback, unless another was asked for since.
    /// A source being deleted whose report's outcome is
    /// [`Outcome::Deleted`] is deleted with its schedule and inventory (the
    /// history entry stays); any other outcome records it like a check and
    /// keeps it `deleting`, to be claimed again.
    async fn finish_check(
        &self,
        claim: &Claim,
        report: &CheckReport,
        next_check_at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Records several quiet checks ([`is_quiet`]: a status and a schedule,
    /// nothing else) as [`Store::finish_check`] would record each, in as few
    /// round trips as the backend allows. Each is written only while its
    /// claim's lease is its owner's; the others are skipped. The default
    /// records them one by one.
    async fn finish_quiet_checks(&self, checks: &[QuietCheck<'_>]) -> StoreResult<()> {
        for check in checks {
            self.finish_check(check.claim, check.report, check.next_check_at)
                .await?;
        }
        Ok(())
    }
    /// Gives back leases held by `owner` without recording anything (the
    /// process gave up the checks before starting them).
    async fn release_claims(&self, owner: &str, ids: &[SourceId]) -> StoreResult<()>;
    /// Extends to `until` every lease on `ids` still held by `owner` (even
    /// one past its end, as long as no other process took it), and returns
    /// the ids whose lease is `owner`'s after the call. The others were lost:
    /// released, or taken by another process after they expired.
    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[SourceId],
        until: OffsetDateTime,
    ) -> StoreResult<Vec<SourceId>>;
    /// When the earliest source is due (for the scheduler's sleep).
    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>>;

    // --- rollback ---

    /// Asks for a rollback of source `id` to history entry `to` (checked
    /// by the caller: an entry of this source with kept manifests): due at
    /// once with `trigger`, even when suspended; a pending rollback is
    /// replaced, a pending check becomes this rollback. While a check runs,
    /// the rollback follows it ([`RequestResult::QueuedAfterRunning`]).
    /// The claim that takes it carries a [`RollbackOrder`] with the entry's
    /// commit, image and manifests (`None` if dropped since); it stays
    /// pending until that claim's check is recorded, so a check lost with
    /// its process is tried again. A source being deleted:
    /// [`StoreError::BeingDeleted`].
    async fn request_rollback(
        &self,
        id: SourceId,
        to: i64,
        trigger: Trigger,
        now: OffsetDateTime,
    ) -> StoreResult<RequestResult>;
    /// Removes source `id`'s pin and asks for a manual check at once, as
    /// [`Store::request_check`] does. `Ok(None)`: it was not pinned
    /// (nothing changed).
    async fn unpin(&self, id: SourceId, now: OffsetDateTime) -> StoreResult<Option<RequestResult>>;
    /// The kept manifests of history entry `history_id` (None: none kept).
    async fn manifests(&self, history_id: i64) -> StoreResult<Option<PackedManifests>>;

    // --- facts ---

    /// A number that changes whenever a committed write changes anything
    /// this store holds, whoever wrote it, and never goes back: a reader
    /// that saw version `v` and then read some facts holds facts at least
    /// as new as `v`. None: this store cannot tell (every read is fresh).
    async fn data_version(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
    async fn status(&self, id: SourceId) -> StoreResult<Option<SourceStatus>>;
    /// Every source's status, keyed by source id (for listings and metrics).
    async fn list_statuses(&self)
        -> StoreResult<std::collections::HashMap<SourceId, SourceStatus>>;
    /// Sources with their statuses, by id: those with an id above `after`
    /// (every one when None), at most `limit` (no limit when None). The
    /// default reads every source and status; a backend that can page
    /// reads only the page.
    async fn list_sources_with_status(
        &self,
        after: Option<SourceId>,
        limit: Option<u32>,
    ) -> StoreResult<Vec<(Source, SourceStatus)>> {
        let mut statuses = self.list_statuses().await?;
        Ok(self
            .list_sources()
            .await?
            .into_iter()
            .filter(|s| after.is_none_or(|a| s.id > a))
            .take(limit.map_or(usize::MAX, |l| l as usize))
            .map(|s| {
                let status = statuses.remove(&s.id).unwrap_or_default();
                (s, status)
            })
            .collect())
    }
    /// History entries matching `query`, newest first.
    async fn history(&self, query: &HistoryQuery) -> StoreResult<Vec<HistoryEntry>>;
    /// The source's recorded inventory (`Some(empty)` when nothing was
    /// applied yet; `None` when the source does not exist).
    async fn inventory(&self, id: SourceId) -> StoreResult<Option<crate::inventory::Inventory>>;

    // --- other writers ---

    /// Follows what other processes write (sources added, changed or
    /// deleted by another tool, checks requested through another replica)
    /// until `stop`, keeping the schedule in step with it and notifying
    /// `wake` whenever a check may have become due. A backend only this
    /// process writes has nothing to follow: the default waits for `stop`.
    async fn follow_changes(&self, wake: Arc<Notify>, stop: CancellationToken) {
        let _ = wake;
        stop.cancelled().await;
    }
}
