//! One check of one source: what the repository renders is what runs.
//!
//! 1. git: the branch head (one ref query, shared), fetched only when new;
//! 2. same head as the recorded inventory: one GET of the Deployment tells
//!    the running image and whether its rollout failed — nothing is built;
//! 3. a new head (or nothing recorded yet): build it, and compare a digest
//!    of every rendered object with the recorded inventory; a build that is
//!    identical (a README change) and runs the image it declares is
//!    `up_to_date` at the new commit, with nothing written to the cluster;
//! 4. anything different, or the container's image not the one the build
//!    gives it: server-side apply every object (labelled as chump's), wait
//!    for the rollout, and record the new inventory with the result.
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
use crate::history::{AppliedObject, ApplyAction, CheckReport, Outcome, Stage, Trigger};
use crate::image::same_image;
use crate::inventory::{digest, Inventory, InventoryObject};
use crate::kustomize::Kustomize;
use crate::lease::LeaseGuard;
use crate::manifest::{desired_image_from_file, image_in_build};
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

/// The label every object chump applies carries (with the value `chump`).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming the source that applied an object.
pub const SOURCE_LABEL: &str = "chump.dev/source";

struct Failure {
    stage: Stage,
    message: String,
}

/// How a check ended, before it becomes a report.
struct Ended {
    outcome: Outcome,
    failure: Option<Failure>,
    objects: Vec<AppliedObject>,
    inventory: Option<Inventory>,
}

impl Ended {
    fn ok(outcome: Outcome, objects: Vec<AppliedObject>, inventory: Option<Inventory>) -> Self {
        Ended {
            outcome,
            failure: None,
            objects,
            inventory,
        }
    }

    fn failed(failure: Failure, objects: Vec<AppliedObject>, inventory: Option<Inventory>) -> Self {
        Ended {
            outcome: Outcome::Failed,
            failure: Some(failure),
            objects,
            inventory,
        }
    }
}

impl From<Failure> for Ended {
    fn from(f: Failure) -> Self {
        Ended::failed(f, Vec::new(), None)
    }
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
    /// before anything is written to the cluster. `recorded`: what chump
    /// last applied for the source.
    pub async fn check(
        &self,
        source: &Source,
        recorded: &Inventory,
        trigger: Trigger,
        fresh_since: OffsetDateTime,
        progress: &ProgressCell,
        lease: &LeaseGuard,
    ) -> CheckReport {
        let started_at = OffsetDateTime::now_utc();
        let mut times = StageTimes::default();
        let span = tracing::info_span!("check", source_id = source.id, %trigger);
        let result = self
            .run(source, recorded, fresh_since, progress, lease, &mut times)
            .instrument(span.clone())
            .await;
        let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let secrets = url_secrets(&source.spec.git_url);
        let ended = result.unwrap_or_else(Ended::from);
        let (outcome, objects, inventory) = (ended.outcome, ended.objects, ended.inventory);
        let (stage, message) = match ended.failure {
            Some(f) => (Some(f.stage), Some(redact_secrets(&f.message, &secrets))),
            None => (None, None),
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
        let mut report = p.into_report(
            source, trigger, started_at, outcome, stage, message, objects,
        );
        report.inventory = inventory;
        report
    }

    async fn run(
        &self,
        source: &Source,
        recorded: &Inventory,
        fresh_since: OffsetDateTime,
        progress: &ProgressCell,
        lease: &LeaseGuard,
        times: &mut StageTimes,
    ) -> Result<Ended, Failure> {
        let spec = &source.spec;
        let set = |f: &dyn Fn(&mut Progress)| {
            if let Ok(mut p) = progress.lock() {
                f(&mut p);
            }
        };
        let fail = |stage: Stage, message: String| Failure { stage, message };

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
        let cluster = self.cluster().await.map_err(|e| fail(Stage::Cluster, e))?;

        // 2. The head the recorded inventory was built from: nothing to
        // build; one GET tells the running image and a failed rollout.
        let same_head = !recorded.objects.is_empty() && recorded.commit == commit;
        // Read once, on whichever path needs it first.
        let mut seen: Option<crate::cluster::Running> = None;
        if same_head {
            let desired = recorded.desired_image.clone();
            set(&|p| p.desired_image = desired.clone());
            let running = self.running(cluster, source, times, progress).await?;
            seen = Some(running.clone());
            if let Some(ended) = steady(source, desired.as_deref(), &running) {
                return Ok(ended);
            }
            tracing::info!(
                desired = desired.as_deref(),
                running = running.image.as_deref(),
                "running image differs from the build's: deploying"
            );
        }

        // 3. Build the head.
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
        if objects.is_empty() {
            return Err(fail(
                Stage::Build,
                format!("{} renders no objects: nothing applied", spec.deploy_path),
            ));
        }

        // 4. The image the build gives the container (a base file, an
        // overlay's `images:`, a patch: whatever kustomize made of it); when
        // the build has no Deployment of that name, the original tool's rule:
        // the image `image_version_file` declares.
        set(&|p| p.stage = Some(Stage::Manifest));
        let t = Instant::now();
        let desired = match image_in_build(&objects, &spec.deployment_name, &spec.container_name) {
            Some(found) => found.map_err(|e| fail(Stage::Manifest, e))?,
            None => {
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
            }
        };
        let desired = Some(desired);
        times.manifest = t.elapsed();
        set(&|p| p.desired_image = desired.clone());

        // Where each object goes (discovery, cached), and its digest.
        let placed = cluster
            .place(&objects, &spec.namespace)
            .await
            .map_err(|e| match e.failure {
                crate::cluster::ApplyFailure::Cluster { .. } => fail(Stage::Cluster, e.to_string()),
                _ => fail(Stage::Apply, e.to_string()),
            })?;
        let previous: std::collections::HashMap<_, _> =
            recorded.objects.iter().map(|o| (o.key(), o)).collect();
        let inventory = Inventory {
            commit: commit.clone(),
            desired_image: desired.clone(),
            objects: objects
                .iter()
                .zip(&placed)
                .map(|(object, place)| {
                    let mut entry = InventoryObject {
                        api_version: place.api_version.clone(),
                        kind: place.kind.clone(),
                        namespace: place.namespace.clone(),
                        name: place.name.clone(),
                        digest: digest(object),
                        commit: commit.clone(),
                    };
                    if let Some(old) = previous.get(&entry.key()) {
                        if old.digest == entry.digest {
                            entry.commit = old.commit.clone();
                        }
                    }
                    entry
                })
                .collect(),
        };
        let unchanged = !recorded.objects.is_empty()
            && recorded.objects.len() == inventory.objects.len()
            && inventory.objects.iter().all(|o| {
                previous
                    .get(&o.key())
                    .is_some_and(|old| old.digest == o.digest)
            });
        if unchanged && !same_head {
            let running = self.running(cluster, source, times, progress).await?;
            seen = Some(running.clone());
            if let Some(mut ended) = steady(source, desired.as_deref(), &running) {
                // Nothing the build renders changed: the inventory moves
                // to the new commit, the cluster is left alone.
                tracing::info!(commit = %commit, "the new commit renders what is applied: nothing to deploy");
                if ended.outcome == Outcome::UpToDate {
                    ended.inventory = Some(inventory);
                }
                return Ok(ended);
            }
        }
        if !unchanged {
            tracing::info!(commit = %commit, "the build differs from what was applied: deploying");
        }

        // 5. Apply, labelled as chump's (the running image first, for the
        // record: what ran before this deploy).
        let before = match seen {
            Some(running) => running,
            None => self.running(cluster, source, times, progress).await?,
        };
        set(&|p| p.stage = Some(Stage::Apply));
        // The last moment to give up without touching the cluster.
        if !lease.held() {
            return Err(fail(
                Stage::Apply,
                "the check's lease was lost before the apply: nothing applied".to_string(),
            ));
        }
        let labelled: Vec<serde_json::Value> =
            objects.iter().map(|o| with_labels(o, source.id)).collect();
        let t = Instant::now();
        let allowed = self.restrict_namespace.then_some(spec.namespace.as_str());
        let applied = match cluster.apply(&labelled, &spec.namespace, allowed).await {
            Ok(applied) => applied,
            Err(e) => {
                // What was applied before the failure joins the recorded
                // inventory (so it can be pruned later); the commit stays,
                // so the next check tries this one again.
                let mut kept = recorded.clone();
                for o in &inventory.objects {
                    let was_applied = e.applied.iter().any(|a| {
                        a.kind == o.kind && a.name == o.name && a.namespace == o.namespace
                    });
                    if was_applied && !kept.objects.iter().any(|k| k.key() == o.key()) {
                        kept.objects.push(o.clone());
                    }
                }
                let changed = kept != *recorded;
                return Ok(Ended::failed(
                    fail(Stage::Apply, e.to_string()),
                    e.applied,
                    changed.then_some(kept),
                ));
            }
        };
        times.apply = t.elapsed();

        // An apply that changed nothing (the objects were in place: a
        // check cut after its apply, say) deployed nothing.
        if applied.iter().all(|a| a.action == ApplyAction::Unchanged) {
            if let Some(mut ended) = steady(source, desired.as_deref(), &before) {
                tracing::info!("every object was in place already: nothing deployed");
                ended.inventory = Some(inventory);
                return Ok(ended);
            }
        }

        // 6. Roll out. The inventory is the new build's either way: it is
        // what the cluster was told to run.
        set(&|p| p.stage = Some(Stage::Rollout));
        let t = Instant::now();
        let rollout = cluster
            .wait_rollout(&spec.namespace, &spec.deployment_name, self.rollout_timeout)
            .await;
        times.rollout = t.elapsed();
        if let Err(e) = rollout {
            return Ok(Ended::failed(
                fail(Stage::Rollout, e.to_string()),
                applied,
                Some(inventory),
            ));
        }
        Ok(Ended::ok(Outcome::Deployed, applied, Some(inventory)))
    }

    /// The source's Deployment as the cluster runs it (one GET).
    async fn running(
        &self,
        cluster: &Cluster,
        source: &Source,
        times: &mut StageTimes,
        progress: &ProgressCell,
    ) -> Result<crate::cluster::Running, Failure> {
        let spec = &source.spec;
        let set = |f: &dyn Fn(&mut Progress)| {
            if let Ok(mut p) = progress.lock() {
                f(&mut p);
            }
        };
        set(&|p| p.stage = Some(Stage::Cluster));
        let t = Instant::now();
        let deployment = cluster
            .running(&spec.namespace, &spec.deployment_name, &spec.container_name)
            .await
            .map_err(|e| Failure {
                stage: Stage::Cluster,
                message: e.to_string(),
            })?;
        times.cluster += t.elapsed();
        let running = deployment.unwrap_or(crate::cluster::Running {
            image: None,
            rollout_failed: None,
        });
        let image = running.image.clone();
        set(&|p| p.running_image = image.clone());
        Ok(running)
    }
}

/// A check that needs no write: `Some` when the container runs the image
/// the build gives it (or the build gives it none) — up to date, or failed
/// while the Deployment reports its rollout failed (until it recovers: a new
/// commit, or someone fixing the cluster). `None`: deploy.
fn steady(
    source: &Source,
    desired: Option<&str>,
    running: &crate::cluster::Running,
) -> Option<Ended> {
    let spec = &source.spec;
    let runs_it = match desired {
        Some(desired) => running
            .image
            .as_deref()
            .is_some_and(|r| same_image(r, desired)),
        None => true,
    };
    if !runs_it {
        return None;
    }
    if let Some(message) = &running.rollout_failed {
        return Some(Ended::from(Failure {
            stage: Stage::Rollout,
            message: format!(
                "deployment {}/{} does not roll out {}: ProgressDeadlineExceeded: {message}",
                spec.namespace,
                spec.deployment_name,
                desired.unwrap_or("its spec")
            ),
        }));
    }
    Some(Ended::ok(Outcome::UpToDate, Vec::new(), None))
}

/// `object` with chump's labels: managed by chump, applied for `source`.
fn with_labels(object: &serde_json::Value, source: crate::source::SourceId) -> serde_json::Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(MANAGED_BY.into(), "chump".into());
            labels.insert(SOURCE_LABEL.into(), source.to_string().into());
        }
    }
    object
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
            inventory: None,
        }
    }
}
