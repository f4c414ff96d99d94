//! The pipeline as one unit: the scheduler, the worker pool and the lease
//! keeper over a store, started together and stopped through one
//! [`CancellationToken`].
//!
//! Shutdown: when the token is cancelled the scheduler stops claiming, the
//! worker stops taking jobs, running checks get [`PipelineConfig::grace`] to
//! finish, and whatever is still running then is cut and recorded as failed
//! (stage `timeout`). The recorder then writes the quiet results the workers
//! handed it. The lease keeper renews leases until the last result is
//! written; then claims that never started are handed back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::check::Checker;
use crate::lease;
use crate::recorder;
use crate::scheduler::{self, Load, SchedulerConfig};
use crate::store::Store;
use crate::worker::{self, WorkerContext};

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub workers: usize,
    pub interval: Duration,
    pub check_timeout: Duration,
    /// How long running checks may go on after shutdown starts.
    pub grace: Duration,
    /// This process's name on its leases (unique per process).
    pub owner: String,
    /// How long a claim's lease lasts unless renewed (`CHUMP_LEASE`); the
    /// lease keeper renews every lease held every third of it.
    pub lease: Duration,
    /// Longest the scheduler sleeps without looking at the store.
    pub max_sleep: Duration,
}

/// Live counters of a running pipeline (cheap to clone).
#[derive(Clone)]
pub struct PipelineProbe {
    load: Arc<Load>,
    scheduler_alive: Arc<AtomicI64>,
}

impl PipelineProbe {
    /// Checks running now.
    pub fn running(&self) -> usize {
        self.load.running.load(Ordering::Relaxed)
    }

    /// Checks claimed and waiting for a worker.
    pub fn queued(&self) -> usize {
        self.load.queued.load(Ordering::Relaxed)
    }

    /// Unix time of the scheduler's last loop (0 before the first).
    pub fn scheduler_heartbeat(&self) -> i64 {
        self.scheduler_alive.load(Ordering::Relaxed)
    }

    /// Tells a check of `source` running in this process that a newer one
    /// was asked for (a push): a deploy waiting for its rollout looks at
    /// the branch at once, and stops waiting when it moved. No-op when no
    /// check of the source runs here (another replica's polls the branch).
    pub fn nudge(&self, source: crate::source::SourceId) {
        if let Some(lease) = self
            .load
            .claimed
            .lock()
            .ok()
            .and_then(|c| c.get(&source).cloned())
        {
            lease.nudge();
        }
    }
}

/// A running pipeline.
pub struct Pipeline {
    task: JoinHandle<()>,
    load: Arc<Load>,
    scheduler_alive: Arc<AtomicI64>,
}

impl Pipeline {
    /// Starts the scheduler and the workers. `wake` is the API's "intent
    /// changed" signal; `shutdown` stops everything.
    pub fn start(
        store: Arc<dyn Store>,
        checker: Arc<Checker>,
        config: PipelineConfig,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Pipeline {
        let load = Arc::new(Load::default());
        let alive = Arc::new(AtomicI64::new(0));
        let sched_config = SchedulerConfig {
            workers: config.workers,
            interval: config.interval,
            lease: config.lease,
            max_sleep: config.max_sleep,
            owner: config.owner.clone(),
            queue_ahead: !store.claimed_elsewhere(),
        };
        // Room for every claim the scheduler holds ahead of the workers.
        let (tx, rx) = mpsc::channel(sched_config.claim_ahead());
        let cut = CancellationToken::new();
        let (recorder_queue, recorded) = mpsc::unbounded_channel();
        let ctx = Arc::new(WorkerContext {
            store: store.clone(),
            checker,
            load: load.clone(),
            interval: config.interval,
            check_timeout: config.check_timeout,
            wake: wake.clone(),
            cut: cut.clone(),
            recorder: recorder_queue,
        });
        let task = {
            let (load, alive) = (load.clone(), alive.clone());
            tokio::spawn(async move {
                let follower = {
                    let (store, wake, stop) = (store.clone(), wake.clone(), shutdown.clone());
                    tokio::spawn(async move { store.follow_changes(wake, stop).await })
                };
                let scheduler = tokio::spawn(scheduler::run(
                    store.clone(),
                    sched_config,
                    load.clone(),
                    tx,
                    wake.clone(),
                    alive,
                    shutdown.clone(),
                ));
                // Stopped only once no check runs any more (after the grace).
                let keeper_stop = CancellationToken::new();
                let keeper = tokio::spawn(lease::keep(
                    store.clone(),
                    load.clone(),
                    config.owner.clone(),
                    config.lease,
                    keeper_stop.clone(),
                ));
                // Stopped once the workers have (it writes what they handed it).
                let recorder_stop = CancellationToken::new();
                let recorder = tokio::spawn(recorder::run(
                    store.clone(),
                    load.clone(),
                    wake.clone(),
                    recorded,
                    recorder_stop.clone(),
                ));
                let workers = tokio::spawn(worker::run(ctx, config.workers, rx, shutdown.clone()));
                shutdown.cancelled().await;
                let _ = scheduler.await;
                let _ = follower.await;
                // Running checks get the grace period, then are cut.
                let cutter = {
                    let cut = cut.clone();
                    let grace = config.grace;
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        tracing::warn!("shutdown grace period over: cutting running checks");
                        cut.cancel();
                    })
                };
                let _ = workers.await;
                cutter.abort();
                recorder_stop.cancel();
                let _ = recorder.await;
                keeper_stop.cancel();
                let _ = keeper.await;
                // Claims queued but never started go back to the schedule.
                let left: Vec<_> = load
                    .claimed
                    .lock()
                    .map(|c| c.keys().copied().collect())
                    .unwrap_or_default();
                if !left.is_empty() {
                    if let Err(e) = store.release_claims(&config.owner, &left).await {
                        tracing::warn!(error = %e, "could not release unstarted claims; they expire by themselves");
                    }
                }
                tracing::info!("pipeline stopped");
            })
        };
        Pipeline {
            task,
            load,
            scheduler_alive: alive,
        }
    }

    /// A handle on the pipeline's live counters, for health and metrics.
    pub fn probe(&self) -> PipelineProbe {
        PipelineProbe {
            load: self.load.clone(),
            scheduler_alive: self.scheduler_alive.clone(),
        }
    }

    /// Waits until the pipeline has stopped (after the shutdown token).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}
