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
//! A check never fails as a Rust error: whatever happens becomes a
//! [`CheckReport`] with an [`Outcome`] and, for failures, the [`Stage`] that
//! failed and a message. The caller records it and moves on.
//!
//! A check holds a lease on its source ([`LeaseGuard`]); right before the
//! apply stage it makes sure the lease is still held, and stops with nothing
//! applied when it is not (another process may own the source now).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::OnceCell;
use tracing::Instrument;

use kube::api::DynamicObject;

use crate::cluster::drift::drift_of;
use crate::cluster::{Cluster, Drift, PruneScope, Running, Verdict, Workload};
use crate::git::GitCache;
use crate::history::{AppliedObject, ApplyAction, CheckReport, Outcome, Stage, Trigger};
use crate::image::same_image;
use crate::inventory::{digest, group_of, Inventory, InventoryObject, ObjectKey};
use crate::kustomize::Kustomize;
use crate::lease::LeaseGuard;
use crate::manifest::{desired_image_from_file, image_in_build};
use crate::metrics::Metrics;
use crate::redact::{redact_secrets, url_secrets};
use crate::source::Source;
use crate::store::Claim;

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
}

impl Ended {
    fn ok(outcome: Outcome, objects: Vec<AppliedObject>, inventory: Option<Inventory>) -> Self {
        Ended {
            outcome,
            failure: None,
            note: None,
            objects,
            inventory,
        }
    }

    fn failed(failure: Failure, objects: Vec<AppliedObject>, inventory: Option<Inventory>) -> Self {
        Ended {
            outcome: Outcome::Failed,
            failure: Some(failure),
            note: None,
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
            self_heal: true,
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
        let result = if source.deleting || trigger == Trigger::Delete {
            self.run_delete(source, recorded, progress, lease, &mut times)
                .instrument(span.clone())
                .await
        } else {
            self.run(
                source,
                recorded,
                claim.last_outcome,
                fresh_since,
                progress,
                lease,
                &mut times,
            )
            .instrument(span.clone())
            .await
        };
        let p = progress.lock().map(|p| p.clone()).unwrap_or_default();
        let secrets = url_secrets(&source.spec.git_url);
        let ended = result.unwrap_or_else(Ended::from);
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
                git_ms = times.git.as_millis() as u64,
                manifest_ms = times.manifest.as_millis() as u64,
                cluster_ms = times.cluster.as_millis() as u64,
                build_ms = times.build.as_millis() as u64,
                apply_ms = times.apply.as_millis() as u64,
                rollout_ms = times.rollout.as_millis() as u64,
                prune_ms = times.prune.as_millis() as u64,
                "check finished"
            )
        });
        let mut report = p.into_report(
            source, trigger, started_at, outcome, stage, message, objects,
        );
        report.inventory = inventory;
        report
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        source: &Source,
        recorded: &Inventory,
        last_outcome: Option<Outcome>,
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
        // build while every recorded object is as chump left it (one GET
        // per object, or a LIST per kind holding several) and the container
        // runs the build's image.
        let prune_pending = recorded.objects.iter().any(|o| o.prune_pending);
        let same_head = !recorded.objects.is_empty() && recorded.commit == commit && !prune_pending;
        // Read once, on whichever path needs it first.
        let mut seen: Option<crate::cluster::Running> = None;
        let mut drift_note: Option<String> = None;
        if same_head {
            let desired = recorded.desired_image.clone();
            set(&|p| p.desired_image = desired.clone());
            let look = self
                .look(cluster, source, recorded, times, progress)
                .await?;
            seen = Some(look.running.clone());
            if look.drift.is_empty() {
                if let Some(ended) = self
                    .steady(cluster, desired.as_deref(), &look, last_outcome)
                    .await?
                {
                    return Ok(ended);
                }
                tracing::info!(
                    desired = desired.as_deref(),
                    running = look.running.image.as_deref(),
                    "running image differs from the build's: deploying"
                );
            } else {
                drift_note = Some(look.note());
            }
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
                format!(
                    "{} renders no objects: nothing applied, nothing pruned",
                    spec.deploy_path
                ),
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
        let previous: HashMap<ObjectKey, &InventoryObject> =
            recorded.objects.iter().map(|o| (o.key(), o)).collect();
        let mut inventory = Inventory {
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
                        live: None,
                        prune_pending: false,
                    };
                    if let Some(old) = previous.get(&entry.key()) {
                        if old.digest == entry.digest && !old.prune_pending {
                            entry.commit = old.commit.clone();
                            entry.live = old.live.clone();
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
                    .is_some_and(|old| old.digest == o.digest && !old.prune_pending)
            });
        if unchanged && !same_head {
            let look = self
                .look(cluster, source, recorded, times, progress)
                .await?;
            seen = Some(look.running.clone());
            if !look.drift.is_empty() {
                drift_note = Some(look.note());
            } else if let Some(mut ended) = self
                .steady(cluster, desired.as_deref(), &look, last_outcome)
                .await?
            {
                // Nothing the build renders changed: the inventory moves
                // to the new commit, the cluster is left alone.
                tracing::info!(commit = %commit, "the new commit renders what is applied: nothing to deploy");
                if matches!(ended.outcome, Outcome::UpToDate | Outcome::Degraded) {
                    ended.inventory = Some(inventory);
                }
                return Ok(ended);
            }
        }
        if let Some(note) = &drift_note {
            tracing::info!(commit = %commit, "{note}");
        } else if !unchanged {
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
                        let mut o = o.clone();
                        o.live = None;
                        kept.objects.push(o);
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
        if drift_note.is_some() {
            self.metrics.drift_undone.inc();
        }
        // What the server made of each object: the digest drift is told by.
        for entry in &mut inventory.objects {
            if let Some(a) = applied.iter().find(|a| {
                a.object.kind == entry.kind
                    && a.object.name == entry.name
                    && a.object.namespace == entry.namespace
                    && group_of(&a.object.api_version) == group_of(&entry.api_version)
            }) {
                entry.live = Some(a.live.clone());
            }
        }
        let nothing_changed = applied
            .iter()
            .all(|a| a.object.action == ApplyAction::Unchanged);
        let mut history: Vec<AppliedObject> = applied.into_iter().map(|a| a.object).collect();

        // 6. Prune what the recorded inventory holds and the build lacks.
        let rendered: HashSet<ObjectKey> = inventory.objects.iter().map(|o| o.key()).collect();
        let candidates: Vec<InventoryObject> = recorded
            .objects
            .iter()
            .filter(|o| !rendered.contains(&o.key()))
            .cloned()
            .collect();
        let mut pruned_any = false;
        if !candidates.is_empty() && !spec.prune {
            tracing::info!(
                objects = candidates.len(),
                "prune is off for this source: objects the build no longer renders stay in the cluster, unmanaged"
            );
        } else if !candidates.is_empty() {
            set(&|p| p.stage = Some(Stage::Prune));
            let t = Instant::now();
            let id = source.id.to_string();
            let report = cluster
                .prune(&candidates, self.prune_scope(source, &id))
                .await;
            times.prune = t.elapsed();
            pruned_any = !report.deleted.is_empty();
            let failures = report.failures();
            history.extend(report.deleted);
            if !report.failed.is_empty() {
                inventory
                    .objects
                    .extend(report.failed.into_iter().map(|(mut o, _)| {
                        o.prune_pending = true;
                        o.live = None;
                        o
                    }));
                return Ok(Ended::failed(
                    fail(Stage::Prune, format!("cannot prune: {failures}")),
                    history,
                    Some(inventory),
                ));
            }
        }

        // An apply that changed nothing (the objects were in place: a
        // check cut after its apply, say) deployed nothing.
        let workloads: Vec<Workload> = inventory
            .objects
            .iter()
            .filter_map(|o| Workload::of(&o.api_version, &o.kind, o.namespace.as_deref(), &o.name))
            .collect();
        if nothing_changed && !pruned_any {
            let mut look = Looked {
                running: before,
                drift: Vec::new(),
                workloads: Vec::new(),
            };
            for w in &workloads {
                let object = cluster
                    .workload(w)
                    .await
                    .map_err(|e| fail(Stage::Cluster, e.to_string()))?;
                look.workloads.push((w.clone(), object.map(Box::new)));
            }
            if let Some(mut ended) = self
                .steady(cluster, desired.as_deref(), &look, last_outcome)
                .await?
            {
                tracing::info!("every object was in place already: nothing deployed");
                ended.inventory = Some(inventory);
                return Ok(ended);
            }
        }

        // 7. Roll out: every workload of the build, failing fast; a newer
        // commit on the branch ends the wait. The inventory is the new
        // build's either way: it is what the cluster was told to run.
        set(&|p| p.stage = Some(Stage::Rollout));
        let t = Instant::now();
        let state = Mutex::new(String::new());
        let waited = tokio::select! {
            r = cluster.wait_healthy(&workloads, self.rollout_timeout, &state) => Ok(r),
            head = self.branch_moved(source, &commit, lease) => Err(head),
        };
        times.rollout = t.elapsed();
        match waited {
            Ok(Ok(())) => {
                let mut ended = Ended::ok(Outcome::Deployed, history, Some(inventory));
                ended.note = drift_note;
                Ok(ended)
            }
            Ok(Err(e)) => Ok(Ended::failed(
                fail(Stage::Rollout, e.to_string()),
                history,
                Some(inventory),
            )),
            Err(head) => {
                let state = state.lock().map(|s| s.clone()).unwrap_or_default();
                let mut note = format!(
                    "superseded by {} after {}s of rollout",
                    short(&head),
                    times.rollout.as_secs()
                );
                if !state.is_empty() {
                    note.push_str(": ");
                    note.push_str(&state);
                }
                tracing::info!(commit = %commit, newer = %head, "{note}");
                let mut ended = Ended::ok(Outcome::Superseded, history, Some(inventory));
                ended.note = Some(note);
                Ok(ended)
            }
        }
    }

    /// Resolves with the branch's new head once it is no longer `commit`:
    /// asked every [`SUPERSEDE_POLL`], and at once when a push nudges the
    /// check's lease. A ref query that fails is tried again at the next
    /// poll.
    async fn branch_moved(&self, source: &Source, commit: &str, lease: &LeaseGuard) -> String {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SUPERSEDE_POLL) => {}
                _ = lease.nudged() => {}
            }
            let git = self.git.clone();
            let (url, branch) = (source.spec.git_url.clone(), source.spec.branch.clone());
            match tokio::task::spawn_blocking(move || git.remote_head(&url, &branch)).await {
                Ok(Ok(head)) if head != commit => return head,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot ask for the branch head during the rollout wait")
                }
                Err(e) => tracing::debug!(error = %e, "branch head task failed"),
            }
        }
    }

    /// A check that needs no write: `Some` when the container runs the
    /// image the build gives it (or the build gives it none) — `up_to_date`
    /// when every workload is healthy or rolling out with nothing wrong,
    /// `degraded` (with the reason) when one is not. `None`: deploy.
    async fn steady(
        &self,
        cluster: &Cluster,
        desired: Option<&str>,
        look: &Looked<'_>,
        previous: Option<Outcome>,
    ) -> Result<Option<Ended>, Failure> {
        let runs_it = match desired {
            Some(desired) => look
                .running
                .image
                .as_deref()
                .is_some_and(|r| same_image(r, desired)),
            None => true,
        };
        if !runs_it {
            return Ok(None);
        }
        let mut degraded = Vec::new();
        let mut progressing = Vec::new();
        for (workload, object) in &look.workloads {
            let Some(object) = object else { continue };
            let verdict = cluster
                .assess(workload, object, self.rollout_timeout)
                .await
                .map_err(|e| Failure {
                    stage: Stage::Cluster,
                    message: format!("{workload}: {e}"),
                })?;
            match verdict {
                Verdict::Healthy => {}
                Verdict::Progressing(what) => progressing.push(what),
                Verdict::Degraded(why) => degraded.push(why),
            }
        }
        let (outcome, note) = if !degraded.is_empty() {
            (Outcome::Degraded, Some(degraded.join("; ")))
        } else if !progressing.is_empty() {
            (
                Outcome::UpToDate,
                Some(format!("rolling out: {}", progressing.join("; "))),
            )
        } else if previous == Some(Outcome::Degraded) {
            (
                Outcome::UpToDate,
                Some("recovered: every workload is healthy".to_string()),
            )
        } else {
            (Outcome::UpToDate, None)
        };
        let mut ended = Ended::ok(outcome, Vec::new(), None);
        ended.note = note;
        Ok(Some(ended))
    }

    /// Whose objects a prune of `source` may delete, and where.
    fn prune_scope<'a>(&self, source: &'a Source, id: &'a str) -> PruneScope<'a> {
        PruneScope {
            managed_by: (MANAGED_BY, "chump"),
            source: (SOURCE_LABEL, id),
            allowed_namespace: self
                .restrict_namespace
                .then_some(source.spec.namespace.as_str()),
        }
    }

    /// A source being deleted with `prune=true`: delete every object of
    /// its recorded inventory that is still chump's (no git, no build).
    /// All gone → [`Outcome::Deleted`], and the store deletes the source;
    /// any failure → failed at stage `prune`, keeping what is left to prune.
    async fn run_delete(
        &self,
        source: &Source,
        recorded: &Inventory,
        progress: &ProgressCell,
        lease: &LeaseGuard,
        times: &mut StageTimes,
    ) -> Result<Ended, Failure> {
        let fail = |stage: Stage, message: String| Failure { stage, message };
        if let Ok(mut p) = progress.lock() {
            p.stage = Some(Stage::Prune);
            p.commit = (!recorded.commit.is_empty()).then(|| recorded.commit.clone());
            p.desired_image = recorded.desired_image.clone();
        }
        let cluster = self.cluster().await.map_err(|e| fail(Stage::Cluster, e))?;
        if !lease.held() {
            return Err(fail(
                Stage::Prune,
                "the check's lease was lost before the prune: nothing deleted".to_string(),
            ));
        }
        let t = Instant::now();
        let id = source.id.to_string();
        let report = cluster
            .prune(&recorded.objects, self.prune_scope(source, &id))
            .await;
        times.prune = t.elapsed();
        tracing::info!(
            deleted = report.deleted.len(),
            kept = report.kept.len(),
            gone = report.gone.len(),
            failed = report.failed.len(),
            "source deleted with prune"
        );
        if report.failed.is_empty() {
            return Ok(Ended::ok(Outcome::Deleted, report.deleted, None));
        }
        let failures = report.failures();
        let left = Inventory {
            objects: report
                .failed
                .into_iter()
                .map(|(mut o, _)| {
                    o.prune_pending = true;
                    o
                })
                .collect(),
            ..recorded.clone()
        };
        Ok(Ended::failed(
            fail(
                Stage::Prune,
                format!("cannot prune, the source stays until it can: {failures}"),
            ),
            report.deleted,
            Some(left),
        ))
    }

    /// The recorded objects as the cluster has them: what drifted, and
    /// what the source's Deployment runs (read with them when it is one of
    /// them; one more GET when it is not).
    async fn look<'r>(
        &self,
        cluster: &Cluster,
        source: &Source,
        recorded: &'r Inventory,
        times: &mut StageTimes,
        progress: &ProgressCell,
    ) -> Result<Looked<'r>, Failure> {
        let spec = &source.spec;
        let workload_of = |o: &InventoryObject| {
            Workload::of(&o.api_version, &o.kind, o.namespace.as_deref(), &o.name)
        };
        if !self.self_heal {
            // No drift to look for: only the workloads, for their health
            // (and the source's Deployment, for its image).
            let running = self.running(cluster, source, times, progress).await?;
            let mut workloads = Vec::new();
            let t = Instant::now();
            for w in recorded.objects.iter().filter_map(workload_of) {
                let object = cluster.workload(&w).await.map_err(|e| Failure {
                    stage: Stage::Cluster,
                    message: e.to_string(),
                })?;
                workloads.push((w, object.map(Box::new)));
            }
            times.cluster += t.elapsed();
            return Ok(Looked {
                running,
                drift: Vec::new(),
                workloads,
            });
        }
        if let Ok(mut p) = progress.lock() {
            p.stage = Some(Stage::Cluster);
        }
        let t = Instant::now();
        let observed = cluster
            .observe(&recorded.objects, SOURCE_LABEL, &source.id.to_string())
            .await
            .map_err(|e| Failure {
                stage: Stage::Cluster,
                message: e.to_string(),
            })?;
        times.cluster += t.elapsed();
        let workloads = recorded
            .objects
            .iter()
            .zip(&observed)
            .filter_map(|(o, seen)| {
                Some((workload_of(o)?, seen.object().map(|d| Box::new(d.clone()))))
            })
            .collect();
        let deployment = recorded.objects.iter().position(|o| {
            group_of(&o.api_version) == "apps"
                && o.kind == "Deployment"
                && o.namespace.as_deref() == Some(spec.namespace.as_str())
                && o.name == spec.deployment_name
        });
        let running = match deployment {
            Some(i) => {
                let running = match observed[i].object() {
                    Some(d) => Running::of(d, &spec.container_name),
                    None => Running { image: None },
                };
                let image = running.image.clone();
                if let Ok(mut p) = progress.lock() {
                    p.running_image = image;
                }
                running
            }
            None => self.running(cluster, source, times, progress).await?,
        };
        let drift = recorded
            .objects
            .iter()
            .zip(&observed)
            .filter_map(|(o, seen)| drift_of(o, seen).map(|d| (o, d)))
            .collect();
        Ok(Looked {
            running,
            drift,
            workloads,
        })
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
        let running = deployment.unwrap_or(crate::cluster::Running { image: None });
        let image = running.image.clone();
        set(&|p| p.running_image = image.clone());
        Ok(running)
    }
}

/// What [`Checker::look`] saw.
struct Looked<'r> {
    running: Running,
    /// Recorded objects that are not as chump left them.
    drift: Vec<(&'r InventoryObject, Drift)>,
    /// The workloads among the recorded objects, as read (`None`: missing).
    workloads: Vec<(Workload, Option<Box<DynamicObject>>)>,
}

impl Looked<'_> {
    /// "drift undone: Deployment prod/web changed, Service prod/web missing".
    fn note(&self) -> String {
        let objects: Vec<String> = self
            .drift
            .iter()
            .map(|(o, d)| {
                format!(
                    "{} {}",
                    describe_object(&o.kind, o.namespace.as_deref(), &o.name),
                    d.as_str()
                )
            })
            .collect();
        format!("drift undone: {}", objects.join(", "))
    }
}

/// The first 7 characters of a commit id.
fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
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
        }
    }
}
