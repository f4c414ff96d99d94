//! One check of one source: clone/fetch, compare, and (when the images
//! differ) build, apply and wait for the rollout.
//!
//! A check never fails as a Rust error: whatever happens becomes a
//! [`CheckReport`] with an [`Outcome`] and, for failures, the [`Stage`] that
//! failed and a message. The caller records it and moves on.
//!
//! A check holds a lease on its source ([`LeaseGuard`]); right before the
//! apply stage it makes sure the lease is still held, and stops with nothing
//! applied when it is not (another process may own the source now).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::git::GitCache;
use crate::history::{AppliedObject, CheckReport, Outcome, Stage, Trigger};
use crate::image::same_image;
use crate::kustomize::Kustomize;
use crate::lease::LeaseGuard;
use crate::manifest::desired_image_from_file;
use crate::metrics::Metrics;
use crate::redact::{redact_secrets, url_secrets};
use crate::source::Source;

/// Where the Kubernetes client comes from. The client is made on first use
/// and kept; until it can be made, checks fail at the `cluster` stage.
#[derive(Debug, Clone)]
pub enum ClusterConfig {
    /// `KUBECONFIG`-style file.
    Kubeconfig(PathBuf),
    /// In-cluster service account, else the default kubeconfig.
    Infer,
}

/// What every check shares: the git cache, the cluster client, the
/// kustomize runner and the deploy settings.
pub struct Checker {
    pub git: GitCache,
    pub kustomize: Result<Kustomize, String>,
    pub cluster_config: ClusterConfig,
    cluster: OnceCell<Cluster>,
    pub rollout_timeout: Duration,
    /// Refuse objects outside the source's namespace.
    pub restrict_namespace: bool,
    pub metrics: Arc<Metrics>,
}

/// What a check has learnt so far; read when the check is cut short
/// (deadline, shutdown) to record as much as is known.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub stage: Option<Stage>,
    pub commit: Option<String>,
    pub desired_image: Option<String>,
    pub running_image: Option<String>,
}

/// Shared handle on a check's [`Progress`].
pub type ProgressCell = Arc<Mutex<Progress>>;

/// How long each stage took, for the check's log line (and the benchmark).
#[derive(Debug, Default, Clone, Copy)]
pub struct StageTimes {
    pub git: Duration,
    pub manifest: Duration,
    pub cluster: Duration,
    pub build: Duration,
    pub apply: Duration,
    pub rollout: Duration,
}

struct Failure {
    stage: Stage,
    message: String,
}

impl Checker {
    /// A checker; the cluster client is made on the first check that needs it.
    pub fn new(
        git: GitCache,
        kustomize: Result<Kustomize, String>,
        cluster_config: ClusterConfig,
        rollout_timeout: Duration,
        restrict_namespace: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            git,
            kustomize,
            cluster_config,
            cluster: OnceCell::new(),
            rollout_timeout,
            restrict_namespace,
            metrics,
        }
    }

    async fn cluster(&self) -> Result<&Cluster, String> {
        self.cluster
            .get_or_try_init(|| async {
                match &self.cluster_config {
                    ClusterConfig::Kubeconfig(path) => Cluster::from_kubeconfig(path).await,
                    ClusterConfig::Infer => Cluster::from_env().await,
                }
            })
            .await
            .map_err(|e| format!("no Kubernetes client: {e}"))
    }

    /// Runs one check to the end and reports it. `progress` is updated as
    /// the check goes, so a caller that cuts it short knows how far it got.
    /// `fresh_since`: a git head read by a sync that started at or after
    /// this instant is fresh enough for this check (see
    /// [`GitCache::sync_since`]). `lease`: the check's lease, asked right
    /// before anything is written to the cluster.
    pub async fn check(
        &self,
        source: &Source,
        trigger: Trigger,
        fresh_since: OffsetDateTime,
        progress: &ProgressCell,
        lease: &LeaseGuard,
    ) -> CheckReport {
        let started_at = OffsetDateTime::now_utc();
        let mut times = StageTimes::default();
        let span = tracing::info_span!("check", source_id = source.id, %trigger);
        let result = self
            .run(source, fresh_since, progress, lease, &mut times)
            .instrument(span.clone())
            .await;
        let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let secrets = url_secrets(&source.spec.git_url);
        let (outcome, stage, message, objects) = match result {
            Ok((outcome, objects)) => (outcome, None, None, objects),
            Err((failure, objects)) => (
                Outcome::Failed,
                Some(failure.stage),
                Some(redact_secrets(&failure.message, &secrets)),
                objects,
            ),
        };
        span.in_scope(|| {
            tracing::info!(
                outcome = %outcome,
                stage = stage.map(|s| s.as_str()),
                error = message.as_deref(),
                commit = p.commit.as_deref(),
                desired = p.desired_image.as_deref(),
                running = p.running_image.as_deref(),
                git_ms = times.git.as_millis() as u64,
                manifest_ms = times.manifest.as_millis() as u64,
                cluster_ms = times.cluster.as_millis() as u64,
                build_ms = times.build.as_millis() as u64,
                apply_ms = times.apply.as_millis() as u64,
                rollout_ms = times.rollout.as_millis() as u64,
                "check finished"
            )
        });
        p.into_report(
            source, trigger, started_at, outcome, stage, message, objects,
        )
    }

    async fn run(
        &self,
        source: &Source,
        fresh_since: OffsetDateTime,
        progress: &ProgressCell,
        lease: &LeaseGuard,
        times: &mut StageTimes,
    ) -> Result<(Outcome, Vec<AppliedObject>), (Failure, Vec<AppliedObject>)> {
        let spec = &source.spec;
        let set = |f: &dyn Fn(&mut Progress)| {
            if let Ok(mut p) = progress.lock() {
                f(&mut p);
            }
        };
        let fail = |stage: Stage, message: String| (Failure { stage, message }, Vec::new());

        // 1. Git: the branch head, fetched only when it moved.
        set(&|p| p.stage = Some(Stage::Git));
        let t = Instant::now();
        let git = self.git.clone();
        let (url, branch) = (spec.git_url.clone(), spec.branch.clone());
        let checkout =
            tokio::task::spawn_blocking(move || git.sync_since(&url, &branch, fresh_since))
                .await
                .map_err(|e| fail(Stage::Git, format!("git task failed: {e}")))?
                .map_err(|e| fail(Stage::Git, e.to_string()))?;
        times.git = t.elapsed();
        self.metrics
            .record_git_sync(checkout.fetched, checkout.shared);
        tracing::debug!(commit = %checkout.commit, fetched = checkout.fetched, shared = checkout.shared, "git synced");
        let commit = checkout.commit.clone();
        set(&|p| p.commit = Some(commit.clone()));

        // 2. The image the repository declares.
        set(&|p| p.stage = Some(Stage::Manifest));
        let t = Instant::now();
        let desired = {
            let (checkout, file, container) = (
                checkout.clone(),
                spec.image_version_file.clone(),
                spec.container_name.clone(),
            );
            tokio::task::spawn_blocking(move || {
                desired_image_from_file(checkout.dir(), &file, &container)
            })
            .await
            .map_err(|e| fail(Stage::Manifest, format!("manifest task failed: {e}")))?
            .map_err(|e| fail(Stage::Manifest, e.to_string()))?
        };
        times.manifest = t.elapsed();
        set(&|p| p.desired_image = Some(desired.clone()));

        // 3. The image running in the cluster.
        set(&|p| p.stage = Some(Stage::Cluster));
        let t = Instant::now();
        let cluster = self.cluster().await.map_err(|e| fail(Stage::Cluster, e))?;
        let deployment = cluster
            .running(&spec.namespace, &spec.deployment_name, &spec.container_name)
            .await
            .map_err(|e| fail(Stage::Cluster, e.to_string()))?;
        times.cluster = t.elapsed();
        let running = deployment.as_ref().and_then(|d| d.image.clone());
        set(&|p| p.running_image = running.clone());

        // 4. Same image: nothing to write. But a spec whose rollout failed is
        // not "up to date": the failure is reported until the Deployment
        // recovers (a new commit, or someone fixing the cluster).
        if running.as_deref().is_some_and(|r| same_image(r, &desired)) {
            if let Some(message) = deployment.and_then(|d| d.rollout_failed) {
                return Err(fail(
                    Stage::Rollout,
                    format!(
                        "deployment {}/{} does not roll out {desired}: ProgressDeadlineExceeded: {message}",
                        spec.namespace, spec.deployment_name
                    ),
                ));
            }
            return Ok((Outcome::UpToDate, Vec::new()));
        }
        tracing::info!(desired = %desired, running = running.as_deref(), "image differs: deploying");

        // 5. Build, apply, roll out.
        set(&|p| p.stage = Some(Stage::Build));
        let t = Instant::now();
        let kustomize = self
            .kustomize
            .as_ref()
            .map_err(|e| fail(Stage::Build, e.clone()))?;
        let objects = kustomize
            .build(checkout.dir(), &spec.deploy_path)
            .await
            .map_err(|e| fail(Stage::Build, e.to_string()))?;
        times.build = t.elapsed();

        set(&|p| p.stage = Some(Stage::Apply));
        // The last moment to give up without touching the cluster.
        if !lease.held() {
            return Err(fail(
                Stage::Apply,
                "the check's lease was lost before the apply: nothing applied".to_string(),
            ));
        }
        let t = Instant::now();
        let allowed = self.restrict_namespace.then_some(spec.namespace.as_str());
        let applied = cluster
            .apply(&objects, &spec.namespace, allowed)
            .await
            .map_err(|e| {
                (
                    Failure {
                        stage: Stage::Apply,
                        message: e.to_string(),
                    },
                    e.applied,
                )
            })?;
        times.apply = t.elapsed();

        set(&|p| p.stage = Some(Stage::Rollout));
        let t = Instant::now();
        let rollout = cluster
            .wait_rollout(&spec.namespace, &spec.deployment_name, self.rollout_timeout)
            .await;
        times.rollout = t.elapsed();
        if let Err(e) = rollout {
            return Err((
                Failure {
                    stage: Stage::Rollout,
                    message: e.to_string(),
                },
                applied,
            ));
        }
        Ok((Outcome::Deployed, applied))
    }
}

/// The report of a check that was cut short: at its deadline, or at
/// shutdown. Keeps what the check had learnt.
pub fn cut_report(
    source: &Source,
    trigger: Trigger,
    started_at: OffsetDateTime,
    progress: &ProgressCell,
    why: &str,
) -> CheckReport {
    let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
    let during = p
        .stage
        .map(|s| format!(" during stage {s}"))
        .unwrap_or_default();
    let message = Some(format!("{why}{during}"));
    p.into_report(
        source,
        trigger,
        started_at,
        Outcome::Failed,
        Some(Stage::Timeout),
        message,
        Vec::new(),
    )
}

impl Progress {
    /// The report of a check that got this far and ended now.
    #[allow(clippy::too_many_arguments)]
    fn into_report(
        self,
        source: &Source,
        trigger: Trigger,
        started_at: OffsetDateTime,
        outcome: Outcome,
        stage: Option<Stage>,
        message: Option<String>,
        objects: Vec<AppliedObject>,
    ) -> CheckReport {
        CheckReport {
            source_id: source.id,
            trigger,
            started_at,
            finished_at: OffsetDateTime::now_utc(),
            commit: self.commit,
            desired_image: self.desired_image,
            running_image: self.running_image,
            outcome,
            stage,
            message,
            objects,
        }
    }
}
