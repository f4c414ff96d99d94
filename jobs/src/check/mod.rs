//! One check of one source: what the repository renders is what runs.
//!
//! 1. git: the branch head (one ref query, shared), fetched only when new;
//! 2. same head as the recorded inventory: observe the recorded objects
//!    (one GET per object, one LIST per kind and namespace holding several)
//!    — nothing is built while every object is as chump left it (the
//!    fields chump applies, per the server's managed fields: see
//!    [`crate::cluster::drift`]) and the container runs the build's image;
//! 3. a new head (or nothing recorded yet): build it, and compare a digest
//!    of every rendered object with the recorded inventory; a build that is
//!    identical (a README change), with nothing drifted, is `up_to_date` at
//!    the new commit, with nothing written to the cluster;
//! 4. nothing to deploy: the workloads of the build (Deployments,
//!    StatefulSets, DaemonSets, Jobs) are assessed from the objects just
//!    read ([`Cluster::assess`]): `up_to_date` when they are healthy (or
//!    still rolling out with nothing wrong), `degraded` with the reason
//!    when one is not — their pods are listed only then;
//! 5. anything different, drifted, or the container's image not the one
//!    the build gives it: server-side apply every object (labelled as
//!    chump's), then prune what the recorded inventory holds and the build
//!    lacks (unless the source's `prune` is off), wait for every workload
//!    of the build to roll out — failing as soon as one cannot, with the
//!    reason ([`Cluster::wait_healthy`]), and stopping as `superseded` when
//!    the branch moves meanwhile — and record the new inventory with the
//!    result.
//!
//! A source being deleted with `prune=true` (trigger `delete`) runs no git
//! and no build: its recorded objects are pruned, and the store deletes it
//! once none is left.
//!
//! A rollback (the claim carries a [`crate::rollback::RollbackOrder`]) runs
//! no git and no build either: it applies the kept manifests of a history
//! entry through the same write path as a deploy, and pins the source away
//! from the commit it left. A pinned source's checks read the branch head;
//! while it is the pinned commit they only assess health, and the first
//! other commit deploys as usual and drops the pin.
//!
//! The modules: `deploy` (git, build, compare; the write path shared with
//! rollbacks), `steady` (observing and assessing without writing),
//! `rollback` (rollbacks and pinned checks), `delete` (a deleted source's
//! prune).
//!
//! A check never fails as a Rust error: whatever happens becomes a
//! [`CheckReport`] with an [`Outcome`] and, for failures, the [`Stage`] that
//! failed and a message. The caller records it and moves on.
//!
//! A check holds a lease on its source ([`LeaseGuard`]); right before the
//! apply stage it makes sure the lease is still held, and stops with nothing
//! applied when it is not (another process may own the source now).

mod delete;
mod deploy;
mod rollback;
mod steady;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::git::GitCache;
use crate::history::{AppliedObject, CheckReport, Outcome, Stage, Trigger};
use crate::inventory::Inventory;
use crate::kustomize::Kustomize;
use crate::lease::LeaseGuard;
use crate::manifests::{ManifestsState, PackedManifests};
use crate::metrics::Metrics;
use crate::notify::{NoNotifier, Notifier};
use crate::redact::{redact_secrets, url_secrets};
use crate::rollback::PinChange;
use crate::source::Source;
use crate::store::Claim;

pub(crate) use crate::rollback::short;
use steady::Looked;

/// How often a deploy waiting for its rollout asks whether the branch moved
/// (at once, too, when a push for the source arrives: [`LeaseGuard::nudge`]).
const SUPERSEDE_POLL: Duration = Duration::from_secs(5);

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
    /// Undo drift: observe every recorded object on each check (on by
    /// default). Off: only the source's Deployment is read, for its image.
    pub self_heal: bool,
    /// `auto_rollback` of sources that do not set it (off by default).
    pub auto_rollback: bool,
    /// The ServiceAccount impersonated for sources that name none
    /// (`namespace/name`, or a name in each source's namespace).
    pub default_service_account: Option<String>,
    /// A source with no service account (and no default) is not checked:
    /// it fails at stage `cluster` before any request.
    pub require_service_account: bool,
    /// The largest render (compressed) kept with a history entry.
    pub manifest_max_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// Told when a deploy starts writing to the cluster (a commit status
    /// goes `pending`); only enqueues. [`NoNotifier`] by default.
    pub notifier: Arc<dyn Notifier>,
}

/// Default of [`Checker::manifest_max_bytes`]: 1 MiB compressed.
pub const DEFAULT_MANIFEST_MAX_BYTES: usize = 1 << 20;

/// What a check has learnt so far; read when the check is cut short
/// (deadline, shutdown) to record as much as is known.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub stage: Option<Stage>,
    pub commit: Option<String>,
    pub desired_image: Option<String>,
    pub running_image: Option<String>,
    /// The check told [`Checker::notifier`] that a deploy starts.
    pub announced: bool,
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
    pub prune: Duration,
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
    /// For an outcome that is not a failure: what to say about it (the
    /// drift a deploy undid).
    note: Option<String>,
    objects: Vec<AppliedObject>,
    inventory: Option<Inventory>,
    /// The render the check applied (or tried to), for its history entry.
    manifests: Option<Result<PackedManifests, ManifestsState>>,
    /// What becomes of the source's pin.
    pin: PinChange,
    /// The history entry a rollback applied again.
    rollback_to: Option<i64>,
}

impl Ended {
    fn ok(outcome: Outcome, objects: Vec<AppliedObject>, inventory: Option<Inventory>) -> Self {
        Ended {
            outcome,
            failure: None,
            note: None,
            objects,
            inventory,
            manifests: None,
            pin: PinChange::Keep,
            rollback_to: None,
        }
    }

    fn failed(failure: Failure, objects: Vec<AppliedObject>, inventory: Option<Inventory>) -> Self {
        Ended {
            failure: Some(failure),
            ..Ended::ok(Outcome::Failed, objects, inventory)
        }
    }

    /// A deploy that failed after it started writing to the cluster (the
    /// failures `auto_rollback` answers).
    fn failed_after_apply(&self) -> bool {
        self.manifests.is_some()
            && self
                .failure
                .as_ref()
                .is_some_and(|f| matches!(f.stage, Stage::Apply | Stage::Rollout))
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
            self_heal: true,
            auto_rollback: false,
            default_service_account: None,
            require_service_account: false,
            manifest_max_bytes: DEFAULT_MANIFEST_MAX_BYTES,
            metrics,
            notifier: Arc::new(NoNotifier),
        }
    }

    /// `objects` packed for the history entry, or `TooLarge` past
    /// [`Checker::manifest_max_bytes`] (None: they cannot be packed; logged).
    fn pack(
        &self,
        objects: &[serde_json::Value],
    ) -> Option<Result<PackedManifests, ManifestsState>> {
        match PackedManifests::pack(objects) {
            Ok(p) if p.len() <= self.manifest_max_bytes => Some(Ok(p)),
            Ok(p) => {
                tracing::warn!(
                    bytes = p.len(),
                    cap = self.manifest_max_bytes,
                    "the render is larger than the cap per history entry (CHUMP_MANIFEST_MAX_BYTES): not kept"
                );
                Some(Err(ManifestsState::TooLarge))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the render cannot be kept with its history entry");
                None
            }
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

    /// The cluster as `source` talks to it: impersonating its service
    /// account (its own, else the default), or as chump itself — unless a
    /// service account is required.
    async fn cluster_for(&self, source: &Source) -> Result<Cluster, String> {
        let cluster = self.cluster().await?;
        match source.impersonated_user(self.default_service_account.as_deref()) {
            Some(user) => cluster
                .impersonating(&user)
                .map_err(|e| format!("cannot impersonate {user}: {e}")),
            None if self.require_service_account => Err(
                "the source has no service_account and this server deploys only as a service account (CHUMP_REQUIRE_SERVICE_ACCOUNT): nothing read or written"
                    .to_string(),
            ),
            None => Ok(cluster.clone()),
        }
    }

    /// Runs the check `claim` asks for to the end and reports it.
    /// `progress` is updated as the check goes, so a caller that cuts it
    /// short knows how far it got. `fresh_since`: a git head read by a sync
    /// that started at or after this instant is fresh enough for this check
    /// (see [`GitCache::sync_since`]). `lease`: the check's lease, asked
    /// right before anything is written to the cluster (and nudged when a
    /// push asks for a newer check).
    pub async fn check(
        &self,
        claim: &Claim,
        fresh_since: OffsetDateTime,
        progress: &ProgressCell,
        lease: &LeaseGuard,
    ) -> CheckReport {
        let (source, recorded, trigger) = (&claim.source, &claim.inventory, claim.trigger);
        let started_at = OffsetDateTime::now_utc();
        let mut times = StageTimes::default();
        let span = tracing::info_span!("check", source_id = source.id, %trigger);
        let mut pin = PinChange::Keep;
        let result = if source.deleting || trigger == Trigger::Delete {
            self.run_delete(source, recorded, progress, lease, &mut times)
                .instrument(span.clone())
                .await
        } else if let Some(order) = &claim.rollback {
            self.run_rollback(claim, order, progress, lease, &mut times, &mut pin)
                .instrument(span.clone())
                .await
        } else {
            self.run(claim, fresh_since, progress, lease, &mut times, &mut pin)
                .instrument(span.clone())
                .await
        };
        let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let secrets = url_secrets(&source.spec.git_url);
        let mut ended = result.unwrap_or_else(Ended::from);
        if ended.pin == PinChange::Keep {
            ended.pin = pin;
        }
        let rollback_wanted = claim.rollback.is_none()
            && ended.failed_after_apply()
            && source.spec.auto_rollback.unwrap_or(self.auto_rollback);
        let (outcome, objects, inventory) = (ended.outcome, ended.objects, ended.inventory);
        let (stage, message) = match ended.failure {
            Some(f) => (Some(f.stage), Some(redact_secrets(&f.message, &secrets))),
            None => (None, ended.note),
        };
        span.in_scope(|| {
            tracing::info!(
                outcome = %outcome,
                stage = stage.map(|s| s.as_str()),
                error = message.as_deref(),
                commit = p.commit.as_deref(),
                desired = p.desired_image.as_deref(),
                running = p.running_image.as_deref(),
                git_ms = stage_ms(times.git),
                manifest_ms = stage_ms(times.manifest),
                cluster_ms = stage_ms(times.cluster),
                build_ms = stage_ms(times.build),
                apply_ms = stage_ms(times.apply),
                rollout_ms = stage_ms(times.rollout),
                prune_ms = stage_ms(times.prune),
                "check finished"
            )
        });
        let mut report = p.into_report(
            source, trigger, started_at, outcome, stage, message, objects,
        );
        report.inventory = inventory;
        report.manifests = ended.manifests;
        report.pin = ended.pin;
        report.rollback_to = ended.rollback_to;
        report.rollback_wanted = rollback_wanted;
        report
    }
}

/// A stage's time for the log: milliseconds, to the microsecond (most
/// stages of a steady check take well under one).
fn stage_ms(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

fn describe_object(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
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
            rollback_to: None,
            manifests: None,
            pin: PinChange::Keep,
            rollback_wanted: false,
        }
    }
}
