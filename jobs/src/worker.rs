//! The worker pool: an apalis worker that runs at most `workers` checks at
//! once, each under a deadline, and records every result in the store.
//!
//! The queue is an in-process channel (the apalis backend is its stream):
//! the store already holds the schedule and the leases, so a queued job
//! lost with the process is simply claimed again once its lease expires.

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
use crate::history::CheckReport;
use crate::scheduler::{next_check_at, Load};
use crate::store::{Claim, Store, StoreError};

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
}

/// A job: a claimed check. (apalis needs `Clone`; the claim is small.)
#[derive(Debug, Clone)]
pub struct CheckJob {
    pub claim: Claim,
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

async fn handle(job: CheckJob, ctx: Data<Arc<WorkerContext>>) -> Result<(), BoxDynError> {
    let CheckJob { claim } = job;
    let ctx: Arc<WorkerContext> = (*ctx).clone();
    ctx.load.queued.fetch_sub(1, Ordering::Relaxed);
    let running = ctx.load.running.fetch_add(1, Ordering::SeqCst) + 1;
    tracing::debug!(source_id = claim.source.id, running, "check started");

    let started_at = OffsetDateTime::now_utc();
    let progress = ProgressCell::default();
    let fresh_since = fresh_since(&claim, ctx.interval);
    let report = tokio::select! {
        r = tokio::time::timeout(ctx.check_timeout, ctx.checker.check(&claim.source, claim.trigger, fresh_since, &progress)) => match r {
            Ok(report) => report,
            Err(_) => cut_report(
                &claim.source,
                claim.trigger,
                started_at,
                &progress,
                &format!("check exceeded its deadline of {}s (CHUMP_CHECK_TIMEOUT)", ctx.check_timeout.as_secs()),
            ),
        },
        _ = ctx.cut.cancelled() => cut_report(
            &claim.source,
            claim.trigger,
            started_at,
            &progress,
            "check cut short at shutdown",
        ),
    };
    ctx.checker.metrics.record_check(&report);
    record(&ctx, &claim, &report).await;

    let running = ctx.load.running.fetch_sub(1, Ordering::SeqCst) - 1;
    if let Ok(mut c) = ctx.load.claimed.lock() {
        c.remove(&claim.source.id);
    }
    tracing::debug!(source_id = claim.source.id, running, outcome = %report.outcome, "check done");
    ctx.wake.notify_one();
    Ok(())
}

/// How recent a git head must be for this check: read after the source
/// became due. A requested check (manual, webhook) became due when it was
/// requested, so it sees any push before the request; sources triggered
/// together, or due together, share one ref query. Scheduled checks also
/// accept a head read up to a tenth of their interval (at most 30 s) before
/// they were due, so sources of one repository whose due times drifted a
/// little apart still share.
fn fresh_since(claim: &Claim, default_interval: Duration) -> OffsetDateTime {
    if claim.trigger != crate::history::Trigger::Schedule {
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

/// Writes the report, retrying while the store is unavailable (up to the
/// lease: after that another claim may already be running the source).
async fn record(ctx: &WorkerContext, claim: &Claim, report: &CheckReport) {
    let next = next_check_at(claim, report, ctx.interval);
    let mut delay = Duration::from_millis(100);
    loop {
        match ctx.store.finish_check(claim, report, next).await {
            Ok(()) => return,
            Err(StoreError::Unavailable(e))
                if OffsetDateTime::now_utc() + delay < claim.lease_until =>
            {
                tracing::warn!(source_id = claim.source.id, error = %e, "cannot record the check yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(source_id = claim.source.id, error = %e, "check result lost: the store refused it");
                return;
            }
        }
    }
}
