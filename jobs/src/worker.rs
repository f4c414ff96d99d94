//! The worker pool: an apalis worker that runs at most `workers` checks at
//! once, each under a deadline, and records every result in the store.
//!
//! The queue is an in-process channel (the apalis backend is its stream):
//! the store already holds the schedule and the leases, so a queued job
//! lost with the process is simply claimed again once its lease expires.
//!
//! A check whose lease is lost (see [`crate::lease`]) is abandoned: it is
//! cancelled where it stands and nothing is recorded, since another process
//! may own the source now.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::check::{cut_report, Checker, ProgressCell};
use crate::history::{CheckReport, Trigger};
use crate::lease::LeaseGuard;
use crate::recorder::{QuietRecord, RecorderQueue};
use crate::scheduler::{next_check_at, Load};
use crate::store::{is_quiet, Claim, HistoryQuery, Store, StoreError};

/// What every job handler shares.
pub struct WorkerContext {
    pub store: Arc<dyn Store>,
    pub checker: Arc<Checker>,
    pub load: Arc<Load>,
    pub interval: Duration,
    pub check_timeout: Duration,
    /// Wakes the scheduler when a worker frees up.
    pub wake: Arc<Notify>,
    /// Cancelled when the shutdown grace period is over: running checks are
    /// cut and recorded as failed.
    pub cut: CancellationToken,
    /// Where quiet results go to be written in batches ([`crate::recorder`]).
    pub recorder: RecorderQueue,
}

/// A job: a claimed check and its lease. (apalis needs `Clone`; the claim
/// is small and the lease a shared handle.)
#[derive(Debug, Clone)]
pub struct CheckJob {
    pub claim: Claim,
    pub lease: LeaseGuard,
}

/// Builds the worker over `queue` and runs it until `stop` is cancelled,
/// then waits for running checks (which `ctx.cut` ends).
pub async fn run(
    ctx: Arc<WorkerContext>,
    workers: usize,
    queue: mpsc::Receiver<CheckJob>,
    stop: CancellationToken,
) {
    let backend = ReceiverStream::new(queue)
        .map(Ok::<_, std::convert::Infallible>)
        .boxed();
    let worker = WorkerBuilder::new("chump-checks")
        .backend(backend)
        .data(ctx)
        .concurrency(workers)
        .build(handle);
    let result = worker
        .run_until(async move {
            stop.cancelled().await;
            Ok::<(), WorkerError>(())
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "worker pool stopped with an error");
    }
}

/// How a check ended, as far as the worker is concerned.
enum Ending {
    Report(Box<CheckReport>),
    /// The lease was lost: nothing to record.
    Abandoned,
}

async fn handle(job: CheckJob, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    let CheckJob { claim, lease } = job;
    let ctx: Arc<WorkerContext> = (*ctx).clone();
    ctx.load.queued.fetch_sub(1, Ordering::Relaxed);
    let running = ctx.load.running.fetch_add(1, Ordering::SeqCst) + 1;
    tracing::debug!(source_id = claim.source.id, running, "check started");

    let started_at = OffsetDateTime::now_utc();
    let progress = ProgressCell::default();
    let fresh_since = fresh_since(&claim, ctx.interval);
    let ending = if !lease.held() {
        Ending::Abandoned
    } else {
        let check = ctx.checker.check(&claim, fresh_since, &progress, &lease);
        tokio::select! {
            r = tokio::time::timeout(ctx.check_timeout, check) => match r {
                Ok(report) => Ending::Report(Box::new(report)),
                Err(_) => Ending::Report(Box::new(cut_report(
                    &claim.source,
                    claim.trigger,
                    started_at,
                    &progress,
                    &format!("check exceeded its deadline of {}s (CHUMP_CHECK_TIMEOUT)", ctx.check_timeout.as_secs()),
                ))),
            },
            _ = ctx.cut.cancelled() => Ending::Report(Box::new(cut_report(
                &claim.source,
                claim.trigger,
                started_at,
                &progress,
                "check cut short at shutdown",
            ))),
            _ = lease.lost() => Ending::Abandoned,
        }
    };
    // A check that ended after its lease was lost is abandoned too: its
    // result is no longer this process's to record.
    let ending = match ending {
        Ending::Report(_) if lease.is_lost() => Ending::Abandoned,
        e => e,
    };
    let outcome = match ending {
        Ending::Report(report) if hands_over(&claim, &report, &progress) => {
            ctx.checker.metrics.record_check(&report);
            // The recorder writes it, then lets go of the claim: this
            // worker is free for its next check now.
            lease.set_recording();
            let quiet = QuietRecord {
                next_check_at: next_check_at(&claim, &report, ctx.interval),
                claim,
                lease,
                report: *report,
            };
            match ctx.recorder.send(quiet) {
                Ok(()) => {
                    ctx.load.running.fetch_sub(1, Ordering::SeqCst);
                    ctx.wake.notify_one();
                    return Ok(());
                }
                // The recorder stops only after the workers: not expected,
                // but then the worker records it itself.
                Err(mpsc::error::SendError(unsent)) => {
                    let QuietRecord {
                        claim,
                        lease,
                        report,
                        ..
                    } = unsent;
                    record(&ctx, &claim, &lease, &report).await;
                    finish(&ctx, &claim, &lease, Some(report.outcome));
                    return Ok(());
                }
            }
        }
        Ending::Report(report) => {
            ctx.checker.metrics.record_check(&report);
            if record(&ctx, &claim, &lease, &report).await {
                tell(&ctx, &claim, &report, &progress);
                if report.rollback_wanted {
                    roll_back_automatically(&ctx, &claim, &report).await;
                }
            }
            Some(report.outcome)
        }
        Ending::Abandoned => {
            ctx.checker.metrics.checks_abandoned.inc();
            let stage = progress.lock().ok().and_then(|p| p.stage);
            tracing::warn!(
                source_id = claim.source.id,
                stage = stage.map(|s| s.as_str()),
                "check abandoned: its lease was lost; nothing recorded"
            );
            None
        }
    };
    finish(&ctx, &claim, &lease, outcome);
    Ok(())
}

/// Whether the worker hands this check's result to the recorder: it is
/// quiet ([`is_quiet`]), and nobody is told of it (no notification event,
/// no deploy announced), so nothing waits on its record.
fn hands_over(claim: &Claim, report: &CheckReport, progress: &ProgressCell) -> bool {
    is_quiet(claim, report)
        && !report.rollback_wanted
        && crate::notify::event_kind(report, claim.last_outcome).is_none()
        && !progress.lock().map(|p| p.announced).unwrap_or(true)
}

/// The check's slot and claim are free again: logs "check done" and wakes
/// the scheduler.
fn finish(
    ctx: &WorkerContext,
    claim: &Claim,
    lease: &LeaseGuard,
    outcome: Option<crate::history::Outcome>,
) {
    let running = ctx.load.running.fetch_sub(1, Ordering::SeqCst) - 1;
    if let Ok(mut c) = ctx.load.claimed.lock() {
        if c.get(&claim.source.id).is_some_and(|g| g.same(lease)) {
            c.remove(&claim.source.id);
        }
    }
    match outcome {
        Some(outcome) => {
            tracing::debug!(source_id = claim.source.id, running, outcome = %outcome, "check done")
        }
        None => tracing::debug!(
            source_id = claim.source.id,
            running,
            abandoned = true,
            "check done"
        ),
    }
    ctx.wake.notify_one();
}

/// How recent a git head must be for this check: read after the source
/// became due. A requested check (manual, webhook) became due when it was
/// requested, so it sees any push before the request; sources triggered
/// together, or due together, share one ref query. Scheduled checks also
/// accept a head read up to a tenth of their interval (at most 30 s) before
/// they were due, so sources of one repository whose due times drifted a
/// little apart still share — except right after a supersession.
fn fresh_since(claim: &Claim, default_interval: Duration) -> OffsetDateTime {
    // A deploy superseded by a newer commit is followed at once by a check
    // that must see that commit: no head read before it was due will do.
    if claim.trigger != crate::history::Trigger::Schedule
        || claim.last_outcome == Some(crate::history::Outcome::Superseded)
    {
        return claim.due_at;
    }
    let interval = claim
        .source
        .spec
        .interval_seconds
        .map(|s| Duration::from_secs(s.into()))
        .unwrap_or(default_interval);
    claim.due_at - (interval / 10).min(Duration::from_secs(30))
}

/// Writes the report, retrying while the store is unavailable, up to the
/// lease's current (renewed) end: after that another process may already be
/// running the source. Gives up at once when the lease is lost. True when
/// the store took it.
async fn record(
    ctx: &WorkerContext,
    claim: &Claim,
    lease: &LeaseGuard,
    report: &CheckReport,
) -> bool {
    let next = next_check_at(claim, report, ctx.interval);
    let mut delay = Duration::from_millis(100);
    lease.set_recording();
    loop {
        match ctx.store.finish_check(claim, report, next).await {
            Ok(()) => return true,
            Err(StoreError::Unavailable(e))
                if !lease.is_lost() && OffsetDateTime::now_utc() + delay < lease.until() =>
            {
                tracing::warn!(source_id = claim.source.id, error = %e, "cannot record the check yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(source_id = claim.source.id, error = %e, lease_lost = lease.is_lost(), "check result lost: the store refused it");
                return false;
            }
        }
    }
}

/// Hands a recorded check's event to the notifier (which only enqueues):
/// see [`crate::notify::event_kind`]. A check that announced a deploy is
/// always handed over, so a commit status left `pending` is settled.
fn tell(ctx: &WorkerContext, claim: &Claim, report: &CheckReport, progress: &ProgressCell) {
    let kind = crate::notify::event_kind(report, claim.last_outcome);
    let announced = progress.lock().map(|p| p.announced).unwrap_or(false);
    if kind.is_none() && !announced {
        return;
    }
    // What receivers are told: not the render nor the inventory.
    let mut report = report.clone();
    report.manifests = None;
    report.inventory = None;
    ctx.checker.notifier.notify(crate::notify::Event {
        kind,
        source: claim.source.clone(),
        report,
        previous: claim.last_outcome,
        announced,
    });
}

/// How many of a source's newest applied entries an automatic rollback
/// looks through for its target (retention keeps fewer kept manifests).
const ROLLBACK_LOOKBACK: u32 = 200;

/// A deploy of a source with `auto_rollback` failed after it wrote to the
/// cluster, and its entry is recorded: asks for a rollback to the last
/// successful deploy of another commit (see
/// [`crate::rollback::auto_target`]). A process lost between the two
/// store calls loses the rollback, not the failure: the source stays at the
/// failed commit (degraded), as without `auto_rollback`.
async fn roll_back_automatically(ctx: &WorkerContext, claim: &Claim, report: &CheckReport) {
    let id = claim.source.id;
    let query = HistoryQuery {
        source_id: Some(id),
        applied: true,
        limit: ROLLBACK_LOOKBACK,
        ..Default::default()
    };
    let entries = match ctx.store.history(&query).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(source_id = id, error = %e, "no automatic rollback: cannot read the history");
            return;
        }
    };
    let target = match crate::rollback::auto_target(&entries) {
        Ok(target) => target,
        Err(why) => {
            tracing::info!(source_id = id, "no automatic rollback: {why}");
            return;
        }
    };
    let now = OffsetDateTime::now_utc();
    match ctx
        .store
        .request_rollback(id, target.id, Trigger::AutoRollback, now)
        .await
    {
        Ok(_) => {
            tracing::info!(
                source_id = id,
                to = target.id,
                failed = report.commit.as_deref(),
                "deploy failed: rolling back automatically"
            );
            ctx.wake.notify_one();
        }
        Err(e) => {
            tracing::warn!(source_id = id, error = %e, "no automatic rollback: the store refused it")
        }
    }
}
