//! The recorder: writes quiet checks' results in batches, off the workers.
//!
//! Most checks change nothing but a source's status and schedule
//! ([`crate::store::is_quiet`]: no history entry, inventory, pin or
//! rollback) and tell nobody (no notification). A worker hands such a
//! result here and takes its next check at once; the recorder writes
//! whatever has gathered meanwhile in one store call
//! ([`Store::finish_quiet_checks`]), then lets go of the claims. Until then
//! the source stays claimed by this process (the lease keeper renews its
//! lease), so neither this process nor another checks it again, and the API
//! shows its previous status for those milliseconds. Everything else a
//! worker records itself, because what follows (notifications, an automatic
//! rollback) depends on the record.
//!
//! Shutdown: [`run`] stops when its token is cancelled, after writing what
//! is still queued; the pipeline cancels it once the workers have stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::history::CheckReport;
use crate::lease::LeaseGuard;
use crate::scheduler::Load;
use crate::store::{Claim, QuietCheck, Store, StoreError};

/// Checks one store call records at most.
const MAX_BATCH: usize = 256;

/// A quiet check's result, waiting to be written.
#[derive(Debug)]
pub struct QuietRecord {
    pub claim: Claim,
    pub lease: LeaseGuard,
    pub report: CheckReport,
    pub next_check_at: OffsetDateTime,
}

/// Where workers hand quiet results.
pub type RecorderQueue = mpsc::UnboundedSender<QuietRecord>;

/// Writes the records sent on `queue` in batches until `stop` is cancelled
/// and the queue is drained; releases each source's claim in `load` once
/// written (or given up) and wakes the scheduler.
pub async fn run(
    store: Arc<dyn Store>,
    load: Arc<Load>,
    wake: Arc<Notify>,
    mut queue: mpsc::UnboundedReceiver<QuietRecord>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            r = queue.recv() => match r {
                Some(r) => r,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        write(&*store, &batch).await;
        release(&load, &wake, batch);
    }
    // The workers have stopped: what they handed over is all there is.
    queue.close();
    let mut rest = Vec::new();
    while let Some(r) = queue.recv().await {
        rest.push(r);
    }
    for chunk in rest.chunks(MAX_BATCH) {
        write(&*store, chunk).await;
    }
    release(&load, &wake, rest);
    tracing::debug!("recorder stopped");
}

/// Writes `batch`, retrying while the store is unavailable and some lease
/// still runs (as a worker's own record does); records whose lease was lost
/// are abandoned.
async fn write(store: &dyn Store, batch: &[QuietRecord]) {
    let mut delay = Duration::from_millis(100);
    let mut live: Vec<&QuietRecord> = batch.iter().collect();
    loop {
        live.retain(|r| {
            if r.lease.is_lost() {
                tracing::warn!(
                    source_id = r.claim.source.id,
                    "check abandoned: its lease was lost before its result was written; nothing recorded"
                );
                return false;
            }
            true
        });
        if live.is_empty() {
            return;
        }
        let checks: Vec<QuietCheck<'_>> = live
            .iter()
            .map(|r| QuietCheck {
                claim: &r.claim,
                report: &r.report,
                next_check_at: r.next_check_at,
            })
            .collect();
        match store.finish_quiet_checks(&checks).await {
            Ok(()) => return,
            Err(StoreError::Unavailable(e)) => {
                // Past its lease's end another process may be running it.
                let retry_by = OffsetDateTime::now_utc() + delay;
                live.retain(|r| {
                    let keep = retry_by < r.lease.until();
                    if !keep {
                        tracing::error!(source_id = r.claim.source.id, error = %e, "check result lost: the store was unavailable until its lease ended");
                    }
                    keep
                });
                if live.is_empty() {
                    return;
                }
                tracing::warn!(checks = live.len(), error = %e, "cannot record checks yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(checks = live.len(), error = %e, "check results lost: the store refused them");
                return;
            }
        }
    }
}

/// The checks of `batch` are over: their sources leave this process's
/// claims, and the scheduler may fill the room.
fn release(load: &Load, wake: &Notify, batch: Vec<QuietRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Ok(mut claimed) = load.claimed.lock() {
        for r in &batch {
            if claimed
                .get(&r.claim.source.id)
                .is_some_and(|g| g.same(&r.lease))
            {
                claimed.remove(&r.claim.source.id);
            }
        }
    }
    let running = load.running.load(Ordering::Relaxed);
    for r in &batch {
        tracing::debug!(source_id = r.claim.source.id, running, outcome = %r.report.outcome, "check done");
    }
    wake.notify_one();
}
