//! Leases held while checks run, and the keeper that renews them.
//!
//! A claim's lease is short (`CHUMP_LEASE`, 30 s by default) so that a check
//! in flight on a process that died is taken over soon. While the process
//! lives, one task — [`keep`], one per process, not one per check — renews
//! every lease it holds in one [`Store::renew_leases`] call every third of
//! the lease. Each claim has a [`LeaseGuard`]: the lease's current end and a
//! "lost" token. A lease is lost when the store no longer gives it to this
//! process (it expired and another process took it, e.g. after this one was
//! paused), or when its last known end passes while the store cannot be
//! reached (another process may have taken it); a source deleted mid-check
//! loses nothing (no other process can take it). A lost lease is logged once
//! and cancels its check: the worker abandons it without recording anything,
//! and a check that has not applied yet stops before it writes to the
//! cluster.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::scheduler::Load;
use crate::source::SourceId;
use crate::store::Store;

/// One claim's lease as this process knows it (cheap to clone).
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    inner: Arc<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    source_id: SourceId,
    /// The lease's end, Unix milliseconds (the last renewal's, or the claim's).
    until_ms: AtomicI64,
    /// Cancelled once the lease is lost.
    lost: CancellationToken,
    /// Set while the worker records the result: the record releases the
    /// lease, so the keeper finding it gone then is no news.
    recording: AtomicBool,
    /// Notified when a newer check was asked for while this one runs (a
    /// push): a rollout wait looks at the branch at once.
    nudge: tokio::sync::Notify,
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

impl LeaseGuard {
    /// A lease on `source_id` held until `until`.
    pub fn new(source_id: SourceId, until: OffsetDateTime) -> Self {
        Self {
            inner: Arc::new(LeaseState {
                source_id,
                until_ms: AtomicI64::new(ms(until)),
                lost: CancellationToken::new(),
                recording: AtomicBool::new(false),
                nudge: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The source the lease is on.
    pub fn source_id(&self) -> SourceId {
        self.inner.source_id
    }

    /// The lease's current end.
    pub fn until(&self) -> OffsetDateTime {
        let v = self.inner.until_ms.load(Ordering::Acquire);
        OffsetDateTime::from_unix_timestamp_nanos(v as i128 * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Moves the lease's end to `until` (never earlier than it was).
    pub fn extend(&self, until: OffsetDateTime) {
        self.inner.until_ms.fetch_max(ms(until), Ordering::AcqRel);
    }

    /// Whether the lease is still this process's: not lost, and its end not
    /// passed. A lease found past its end is lost from then on.
    pub fn held(&self) -> bool {
        if self.is_lost() {
            return false;
        }
        if ms(OffsetDateTime::now_utc()) >= self.inner.until_ms.load(Ordering::Acquire) {
            self.lose("its end passed before it was renewed");
            return false;
        }
        true
    }

    /// Whether the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.inner.lost.is_cancelled()
    }

    /// Resolves once the lease is lost.
    pub async fn lost(&self) {
        self.inner.lost.cancelled().await
    }

    /// Marks the lease lost (logged once, the first time).
    pub fn lose(&self, why: &str) {
        if self.inner.lost.is_cancelled() {
            return;
        }
        self.inner.lost.cancel();
        if !self.inner.recording.load(Ordering::Acquire) {
            tracing::warn!(
                source_id = self.inner.source_id,
                reason = why,
                "lease lost: the check is abandoned (another process may own the source now)"
            );
        }
    }

    /// The worker is writing the result (which releases the lease).
    pub fn set_recording(&self) {
        self.inner.recording.store(true, Ordering::Release);
    }

    /// A newer check was asked for (a push webhook) while this one runs.
    pub fn nudge(&self) {
        self.inner.nudge.notify_one();
    }

    /// Resolves at the next [`LeaseGuard::nudge`] (or at once after one
    /// nobody waited for).
    pub async fn nudged(&self) {
        self.inner.nudge.notified().await
    }

    /// Whether two guards are the same lease.
    pub fn same(&self, other: &LeaseGuard) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Renews every lease in `load.claimed` every `lease / 3` until `stop`, and
/// marks lost the ones the store no longer gives to `owner` (and, while the
/// store is unreachable, the ones whose last known end has passed).
pub async fn keep(
    store: Arc<dyn Store>,
    load: Arc<Load>,
    owner: String,
    lease: Duration,
    stop: CancellationToken,
) {
    let period = (lease / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let held: Vec<LeaseGuard> = load
            .claimed
            .lock()
            .map(|c| c.values().filter(|g| !g.is_lost()).cloned().collect())
            .unwrap_or_default();
        if held.is_empty() {
            continue;
        }
        let ids: Vec<SourceId> = held.iter().map(LeaseGuard::source_id).collect();
        let until = OffsetDateTime::now_utc() + lease;
        let renewed = tokio::time::timeout(period, store.renew_leases(&owner, &ids, until)).await;
        match renewed {
            Ok(Ok(kept)) => {
                if outage {
                    tracing::info!("store reachable again: leases renewed");
                    outage = false;
                }
                let kept: HashSet<SourceId> = kept.into_iter().collect();
                for guard in &held {
                    if kept.contains(&guard.source_id()) {
                        guard.extend(until);
                        continue;
                    }
                    // A source deleted mid-check has no lease any more, and
                    // no other process can take it: its check goes on, and
                    // its history entry is kept.
                    match store.get_source(guard.source_id()).await {
                        Ok(None) => guard.extend(until),
                        Ok(Some(_)) => {
                            guard.lose("the store gives the lease to another process, or to none")
                        }
                        Err(_) => expire(std::slice::from_ref(guard)),
                    }
                }
            }
            Ok(Err(e)) => {
                if !outage {
                    tracing::warn!(error = %e, "cannot renew leases; checks go on until their leases end");
                    outage = true;
                }
                expire(&held);
            }
            Err(_) => {
                if !outage {
                    tracing::warn!(
                        "renewing leases timed out; checks go on until their leases end"
                    );
                    outage = true;
                }
                expire(&held);
            }
        }
    }
    tracing::debug!("lease keeper stopped");
}

/// Marks lost every lease whose last known end has passed.
fn expire(held: &[LeaseGuard]) {
    for guard in held {
        if guard.until() <= OffsetDateTime::now_utc() {
            guard.lose("its end passed while the store was unreachable");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_is_held_until_its_end_or_until_lost() {
        let g = LeaseGuard::new(1, OffsetDateTime::now_utc() + Duration::from_secs(60));
        assert!(g.held());
        let before = g.until();
        g.extend(before - Duration::from_secs(30));
        assert_eq!(g.until(), before, "extend never shortens");
        g.extend(before + Duration::from_secs(30));
        assert!(g.until() > before);
        g.lose("test");
        assert!(g.is_lost() && !g.held());

        let past = LeaseGuard::new(2, OffsetDateTime::now_utc() - Duration::from_millis(1));
        assert!(!past.held());
        assert!(past.is_lost(), "a lease found past its end is lost");
        assert!(past.same(&past.clone()) && !past.same(&g));
    }
}
