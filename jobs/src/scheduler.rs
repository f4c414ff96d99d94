//! The scheduler: turns due sources into check jobs.
//!
//! The schedule lives in the store (each source's next check time), so the
//! scheduler keeps no state of its own that a restart could lose. Each tick
//! it claims due sources — a claim is a lease in the store, so no source is
//! queued or checked twice at once, by this process or another — and hands
//! them to the worker queue: enough for every worker and a queue behind
//! them ([`SchedulerConfig::claim_ahead`]), refilled in one store call
//! once half the queue has drained ([`SchedulerConfig::refill_at`]). It wakes
//! at the earliest due time, when a worker frees up, when the API changes
//! intent, and at least every [`SchedulerConfig::max_sleep`].
//!
//! Each claim gets a [`LeaseGuard`] in [`Load::claimed`], which the lease
//! keeper ([`crate::lease::keep`]) renews while the check is queued or runs.
//! A claim for a source this process already has in flight (its own lease
//! expired, e.g. while the process was paused, and it took it again) starts
//! no second check: the running one keeps going under the new lease.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::history::{CheckReport, Outcome, Trigger};
use crate::lease::LeaseGuard;
use crate::source::SourceId;
use crate::store::{Claim, Store};
use crate::worker::CheckJob;

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Checks at once (the worker pool's size).
    pub workers: usize,
    /// Default time between two checks of a source.
    pub interval: Duration,
    /// How long a claim holds a source before it must be renewed
    /// (`CHUMP_LEASE`; the lease keeper renews it every third of that).
    pub lease: Duration,
    /// Longest sleep between two looks at the schedule (other processes may
    /// change it without waking this one).
    pub max_sleep: Duration,
    /// This process's name on its leases.
    pub owner: String,
    /// Whether to hold claims queued behind the workers. Only where no
    /// other process claims from the store ([`Store::claimed_elsewhere`]):
    /// in a fleet, a source queued behind this replica's long checks would
    /// wait while another replica has a free worker.
    pub queue_ahead: bool,
}

/// Claims queued behind the workers at least (more with more workers).
const MIN_QUEUED_AHEAD: usize = 8;

impl SchedulerConfig {
    /// How many claims this process holds at most: a check for every
    /// worker, and a queue behind them (as many again, at least
    /// [`MIN_QUEUED_AHEAD`]), so a worker that finishes starts its next
    /// check at once instead of waiting for the scheduler's next store call.
    pub fn claim_ahead(&self) -> usize {
        let workers = self.workers.max(1);
        if !self.queue_ahead {
            return workers;
        }
        workers + workers.max(MIN_QUEUED_AHEAD)
    }

    /// The scheduler claims again once no more than this many claims are
    /// held: half the queue has drained. Claims so come in batches (one
    /// store call for several sources) and the queue never runs dry while
    /// a claim is on its way.
    pub fn refill_at(&self) -> usize {
        let workers = self.workers.max(1);
        if !self.queue_ahead {
            // No queue: claim as soon as a worker is free.
            return workers - 1;
        }
        workers + workers.max(MIN_QUEUED_AHEAD) / 2
    }
}

/// Counters the scheduler and workers share.
#[derive(Debug, Default)]
pub struct Load {
    /// Claimed and handed to the queue, not yet started.
    pub queued: AtomicUsize,
    /// Running now.
    pub running: AtomicUsize,
    /// Sources claimed by this process whose check has not finished, with
    /// their leases.
    pub claimed: Mutex<HashMap<SourceId, LeaseGuard>>,
}

impl Load {
    fn in_flight(&self) -> usize {
        self.claimed.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// When a source is due next, after a check that ended in `report`.
///
/// Successes (and degraded checks: no backoff, nothing failed) come back
/// after the interval, failures after a doubling delay (interval ×
/// 2^(failures − 1), at most 8 × interval). Either way a ±10 % jitter
/// spreads the load. A superseded check is due again at once: the branch
/// moved during its rollout, and the new commit is deployed without waiting
/// an interval. The jitter is the same for every source of one
/// repository and branch within one interval-long window, so sources that
/// share a repository stay due together and share its ref query, while
/// different repositories spread out.
pub fn next_check_at(
    claim: &Claim,
    report: &CheckReport,
    default_interval: Duration,
) -> OffsetDateTime {
    let interval = claim
        .source
        .spec
        .interval_seconds
        .map(|s| Duration::from_secs(s.into()))
        .unwrap_or(default_interval);
    let delay = match report.outcome {
        Outcome::Superseded => return report.finished_at,
        Outcome::Failed => {
            let failures = claim.consecutive_failures.min(3);
            interval * 2u32.pow(failures)
        }
        Outcome::Deployed
        | Outcome::UpToDate
        | Outcome::Degraded
        | Outcome::Deleted
        | Outcome::RolledBack => interval,
    };
    let window = report.finished_at.unix_timestamp() / interval.as_secs().max(1) as i64;
    let jitter = 0.9
        + unit_hash(
            &claim.source.spec.git_url,
            &claim.source.spec.branch,
            window,
        ) * 0.2;
    report.finished_at + delay.mul_f64(jitter)
}

/// A number in [0, 1) from a repository, branch and time window.
fn unit_hash(url: &str, branch: &str, window: i64) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (url, branch, window).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs the scheduler until `shutdown`: claims due sources and sends them to
/// `queue`. `wake` is notified by the API and by workers when they finish.
pub async fn run(
    store: Arc<dyn Store>,
    config: SchedulerConfig,
    load: Arc<Load>,
    queue: mpsc::Sender<CheckJob>,
    wake: Arc<Notify>,
    alive: Arc<std::sync::atomic::AtomicI64>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut outage = false;
    loop {
        alive.store(
            OffsetDateTime::now_utc().unix_timestamp(),
            Ordering::Relaxed,
        );
        let sleep = match tick(&*store, &config, &load, &queue).await {
            Ok(sleep) => {
                if outage {
                    tracing::info!("store reachable again: scheduling resumed");
                    outage = false;
                }
                failures = 0;
                sleep
            }
            Err(e) => {
                if !outage {
                    tracing::warn!(error = %e, "cannot read the schedule; retrying with backoff");
                    outage = true;
                }
                failures = failures.saturating_add(1);
                Duration::from_millis(200 * 2u64.pow(failures.min(6)))
                    .min(config.max_sleep.max(Duration::from_secs(5)))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    tracing::debug!("scheduler stopped");
}

/// One look at the schedule; returns how long to sleep.
async fn tick(
    store: &dyn Store,
    config: &SchedulerConfig,
    load: &Load,
    queue: &mpsc::Sender<CheckJob>,
) -> Result<Duration, crate::store::StoreError> {
    let in_flight = load.in_flight();
    // Refill only once half the queue has drained (see `refill_at`).
    let free = if in_flight <= config.refill_at() {
        config.claim_ahead().saturating_sub(in_flight)
    } else {
        0
    };
    if free > 0 {
        let now = OffsetDateTime::now_utc();
        let claims = store
            .claim_due(now, free, &config.owner, config.lease)
            .await?;
        for claim in claims {
            let id = claim.source.id;
            let lease = LeaseGuard::new(id, claim.lease_until);
            let running = load.claimed.lock().ok().and_then(|mut c| {
                match c.get(&id) {
                    // Already in flight here: the store handed this process
                    // its own source again (its lease had expired). The new
                    // lease is ours too; the running check goes on under it.
                    Some(held) if !held.is_lost() => Some(held.clone()),
                    _ => {
                        c.insert(id, lease.clone());
                        None
                    }
                }
            });
            if let Some(held) = running {
                held.extend(claim.lease_until);
                tracing::debug!(
                    source_id = id,
                    "claimed again while in flight: the running check keeps it"
                );
                if claim.trigger != Trigger::Schedule {
                    // The claim took a request the running check may not
                    // have seen: ask again, so it follows this check.
                    if let Err(e) = store.request_check(id, claim.trigger, now).await {
                        tracing::warn!(source_id = id, error = %e, "cannot queue the follow-up check");
                    }
                }
                continue;
            }
            load.queued.fetch_add(1, Ordering::Relaxed);
            let job = CheckJob {
                claim,
                lease: lease.clone(),
            };
            if queue.send(job).await.is_err() {
                // The workers are gone (shutdown): give the lease back.
                load.queued.fetch_sub(1, Ordering::Relaxed);
                if let Ok(mut c) = load.claimed.lock() {
                    if c.get(&id).is_some_and(|g| g.same(&lease)) {
                        c.remove(&id);
                    }
                }
                store.release_claims(&config.owner, &[id]).await?;
            }
        }
        if load.in_flight() > config.refill_at() {
            // Busy, with checks queued: a finishing worker wakes us.
            return Ok(config.max_sleep);
        }
    } else {
        return Ok(config.max_sleep);
    }
    let now = OffsetDateTime::now_utc();
    let sleep = match store.next_due().await? {
        Some(due) if due <= now => Duration::from_millis(50),
        Some(due) => {
            let d = due - now;
            Duration::try_from(d).unwrap_or(config.max_sleep)
        }
        None => config.max_sleep,
    };
    Ok(sleep.min(config.max_sleep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;
    use crate::source::{Source, SourceSpec};

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn claim(consecutive_failures: u32, last_outcome: Option<Outcome>) -> Claim {
        Claim {
            source: Source {
                id: 1,
                spec: SourceSpec {
                    namespace: "production".into(),
                    deployment_name: "web".into(),
                    git_url: "https://github.com/stvnorg/helloworld.git".into(),
                    branch: "master".into(),
                    deploy_path: "./deploy".into(),
                    container_name: "app".into(),
                    image_version_file: "./deploy/deployment.yaml".into(),
                    interval_seconds: Some(100),
                    suspended: false,
                    prune: true,
                    auto_rollback: None,
                    service_account: None,
                },
                revision: 1,
                created_at: at(0),
                updated_at: at(0),
                deleting: false,
            },
            trigger: Trigger::Schedule,
            consecutive_failures,
            last_outcome,
            due_at: at(0),
            inventory: Inventory::default(),
            owner: "p1".into(),
            lease_until: at(30),
            pinned: None,
            rollback: None,
        }
    }

    fn report(outcome: Outcome, finished_at: OffsetDateTime) -> CheckReport {
        CheckReport {
            source_id: 1,
            trigger: Trigger::Schedule,
            started_at: finished_at - Duration::from_secs(1),
            finished_at,
            commit: None,
            desired_image: None,
            running_image: None,
            outcome,
            stage: None,
            message: None,
            objects: Vec::new(),
            inventory: None,
            rollback_to: None,
            manifests: None,
            pin: Default::default(),
            rollback_wanted: false,
        }
    }

    /// The delay after `finished`, in seconds.
    fn delay(claim: &Claim, outcome: Outcome, finished: OffsetDateTime) -> f64 {
        let next = next_check_at(claim, &report(outcome, finished), Duration::from_secs(60));
        (next - finished).as_seconds_f64()
    }

    #[test]
    fn superseded_checks_are_due_at_once() {
        for failures in [0, 1, 5] {
            let c = claim(failures, Some(Outcome::Deployed));
            assert_eq!(
                next_check_at(
                    &c,
                    &report(Outcome::Superseded, at(500)),
                    Duration::from_secs(60)
                ),
                at(500)
            );
        }
    }

    #[test]
    fn degraded_checks_come_back_after_the_interval_without_backoff() {
        for failures in [0, 2, 7] {
            for last in [None, Some(Outcome::Degraded), Some(Outcome::Failed)] {
                let d = delay(&claim(failures, last), Outcome::Degraded, at(1_000));
                assert!((90.0..=110.0).contains(&d), "{failures} {last:?}: {d}");
                let up = delay(&claim(failures, last), Outcome::UpToDate, at(1_000));
                assert_eq!(d, up, "degraded is scheduled as a success");
            }
        }
    }

    #[test]
    fn failures_back_off() {
        let d = delay(&claim(2, Some(Outcome::Failed)), Outcome::Failed, at(1_000));
        assert!((360.0..=440.0).contains(&d), "{d}");
        let d = delay(&claim(9, Some(Outcome::Failed)), Outcome::Failed, at(1_000));
        assert!((720.0..=880.0).contains(&d), "at most 8 intervals: {d}");
    }
}
