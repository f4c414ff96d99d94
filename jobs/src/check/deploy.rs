//! A check of the branch head: git, the same-head fast path, the build and
//! its comparison with the recorded inventory — and [`Checker::roll_out`],
//! the write path a deploy and a rollback share (apply, prune, wait).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;
use time::OffsetDateTime;

use super::{
    short, with_labels, Checker, Ended, Failure, Looked, Progress, ProgressCell, StageTimes,
    SUPERSEDE_POLL,
};
use crate::cluster::{Cluster, Placement, Running, Workload};
use crate::history::{AppliedObject, ApplyAction, Outcome, Stage};
use crate::inventory::{digest, group_of, Inventory, InventoryObject, ObjectKey};
use crate::lease::LeaseGuard;
use crate::manifest::{desired_image_from_file, image_in_build};
use crate::rollback::PinChange;
use crate::source::Source;
use crate::store::Claim;

impl Checker {
    /// The check of `claim`'s branch head, stage by stage (see the module
    /// documentation of [`crate::check`]). `pin` is set to
    /// [`PinChange::Clear`] when the source was pinned and the branch has
    /// moved off the pinned commit.
    pub(super) async fn run(
        &self,
        claim: &Claim,
        fresh_since: OffsetDateTime,
        progress: &ProgressCell,
        lease: &LeaseGuard,
        times: &mut StageTimes,
        pin: &mut PinChange,
    ) -> Result<Ended, Failure> {
        let (source, recorded, last_outcome) =
            (&claim.source, &claim.inventory, claim.last_outcome);
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
        let checkout = match git.shared_since(&url, &branch, fresh_since) {
            Some(shared) => shared,
            None => tokio::task::spawn_blocking(move || git.sync_since(&url, &branch, fresh_since))
                .await
                .map_err(|e| fail(Stage::Git, format!("git task failed: {e}")))?
                .map_err(|e| fail(Stage::Git, e.to_string()))?,
        };
        times.git = t.elapsed();
        self.metrics
            .record_git_sync(checkout.fetched, checkout.shared);
        tracing::debug!(commit = %checkout.commit, fetched = checkout.fetched, shared = checkout.shared, "git synced");
        let commit = checkout.commit.clone();
        set(&|p| p.commit = Some(commit.clone()));
        let cluster = &self
            .cluster_for(source)
            .await
            .map_err(|e| fail(Stage::Cluster, e))?;

        // Pinned after a rollback: the same head leaves the cluster alone;
        // any other commit resumes auto-deploy.
        if let Some(pinned) = &claim.pinned {
            if *pinned == commit {
                return self
                    .pinned(
                        cluster,
                        source,
                        recorded,
                        pinned,
                        last_outcome,
                        times,
                        progress,
                    )
                    .await;
            }
            tracing::info!(pinned = %pinned, commit = %commit, "the branch moved off the pinned commit: auto-deploy resumes");
            *pin = PinChange::Clear;
        }

        // 2. The head the recorded inventory was built from: nothing to
        // build while every recorded object is as chump left it (one GET
        // per object, or a LIST per kind holding several) and the container
        // runs the build's image.
        let prune_pending = recorded.objects.iter().any(|o| o.prune_pending);
        let same_head = !recorded.objects.is_empty() && recorded.commit == commit && !prune_pending;
        // Read once, on whichever path needs it first.
        let mut seen: Option<Running> = None;
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
        let build = kustomize
            .build_shared(checkout.dir(), &spec.deploy_path)
            .await
            .map_err(|e| fail(Stage::Build, e.to_string()))?;
        times.build = t.elapsed();
        self.metrics.record_build(build.shared, build.in_process);
        tracing::debug!(shared = build.shared, in_process = build.in_process, elapsed = ?times.build, "built");
        let objects = build.objects;
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
        let placed = self.place(cluster, source, &objects).await?;
        let inventory = inventory_of(&objects, &placed, &commit, desired.clone(), recorded);
        let previous: HashMap<ObjectKey, &InventoryObject> =
            recorded.objects.iter().map(|o| (o.key(), o)).collect();
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

        // 5. Apply (the running image first, for the record: what ran
        // before this deploy), prune, roll out.
        let before = match seen {
            Some(running) => running,
            None => self.running(cluster, source, times, progress).await?,
        };
        let mut ended = self
            .roll_out(
                cluster,
                claim,
                &objects,
                inventory,
                RollOut {
                    before,
                    drift_note,
                    supersede: Some(&commit),
                },
                lease,
                progress,
                times,
            )
            .await?;
        // Every object in place already: nothing was deployed, and the
        // entry (if any) keeps no manifests.
        if matches!(ended.outcome, Outcome::UpToDate | Outcome::Degraded) {
            ended.manifests = None;
        }
        Ok(ended)
    }

    /// Where each rendered object goes (discovery, cached): its API version,
    /// kind, namespace and name as the server knows them.
    pub(super) async fn place(
        &self,
        cluster: &Cluster,
        source: &Source,
        objects: &[Value],
    ) -> Result<Vec<Placement>, Failure> {
        cluster
            .place(objects, &source.spec.namespace)
            .await
            .map_err(|e| match e.failure {
                crate::cluster::ApplyFailure::Cluster { .. } => Failure {
                    stage: Stage::Cluster,
                    message: e.to_string(),
                },
                _ => Failure {
                    stage: Stage::Apply,
                    message: e.to_string(),
                },
            })
    }

    /// Writes a render to the cluster and waits for it: server-side apply
    /// of `objects` (labelled as chump's), the prune of what `claim`'s
    /// recorded inventory holds and `inventory` lacks (unless the source's
    /// `prune` is off), then the rollout of every workload of the render —
    /// failing as soon as one cannot, and stopping as `superseded` when
    /// `how.supersede` names a commit and the branch moves off it. The
    /// ended check carries the new inventory and the packed render (once
    /// the apply started). An apply that changed nothing and pruned nothing
    /// ends like a steady check.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn roll_out(
        &self,
        cluster: &Cluster,
        claim: &Claim,
        objects: &[Value],
        mut inventory: Inventory,
        how: RollOut<'_>,
        lease: &LeaseGuard,
        progress: &ProgressCell,
        times: &mut StageTimes,
    ) -> Result<Ended, Failure> {
        let (source, recorded) = (&claim.source, &claim.inventory);
        let spec = &source.spec;
        let set = |f: &dyn Fn(&mut Progress)| {
            if let Ok(mut p) = progress.lock() {
                f(&mut p);
            }
        };
        let fail = |stage: Stage, message: String| Failure { stage, message };
        set(&|p| p.stage = Some(Stage::Apply));
        // The last moment to give up without touching the cluster.
        if !lease.held() {
            return Err(fail(
                Stage::Apply,
                "the check's lease was lost before the apply: nothing applied".to_string(),
            ));
        }
        self.notifier.deploy_started(crate::notify::DeployStart {
            source: source.clone(),
            commit: inventory.commit.clone(),
            trigger: claim.trigger,
            rollback_to: claim.rollback.as_ref().map(|o| o.to),
            at: OffsetDateTime::now_utc(),
        });
        set(&|p| p.announced = true);
        let manifests = self.pack(objects);
        let labelled: Vec<Value> = objects.iter().map(|o| with_labels(o, source.id)).collect();
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
                let mut ended = Ended::failed(
                    fail(Stage::Apply, e.to_string()),
                    e.applied,
                    changed.then_some(kept),
                );
                ended.manifests = manifests;
                return Ok(ended);
            }
        };
        times.apply = t.elapsed();
        if how.drift_note.is_some() {
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

        // Prune what the recorded inventory holds and the render lacks.
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
                let mut ended = Ended::failed(
                    fail(Stage::Prune, format!("cannot prune: {failures}")),
                    history,
                    Some(inventory),
                );
                ended.manifests = manifests;
                return Ok(ended);
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
                running: how.before.clone(),
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
                .steady(
                    cluster,
                    inventory.desired_image.as_deref(),
                    &look,
                    claim.last_outcome,
                )
                .await?
            {
                tracing::info!("every object was in place already: nothing deployed");
                ended.inventory = Some(inventory);
                ended.manifests = manifests;
                return Ok(ended);
            }
        }

        // Roll out: every workload of the render, failing fast; a newer
        // commit on the branch ends the wait. The inventory is the new
        // render's either way: it is what the cluster was told to run.
        set(&|p| p.stage = Some(Stage::Rollout));
        let t = Instant::now();
        let state = Mutex::new(String::new());
        let waited = match how.supersede {
            Some(commit) => tokio::select! {
                r = cluster.wait_healthy(&workloads, self.rollout_timeout, &state) => Ok(r),
                head = self.branch_moved(source, commit, lease) => Err(head),
            },
            None => Ok(cluster
                .wait_healthy(&workloads, self.rollout_timeout, &state)
                .await),
        };
        times.rollout = t.elapsed();
        let mut ended = match waited {
            Ok(Ok(())) => {
                let mut ended = Ended::ok(Outcome::Deployed, history, Some(inventory));
                ended.note = how.drift_note;
                ended
            }
            Ok(Err(e)) => Ended::failed(
                fail(Stage::Rollout, e.to_string()),
                history,
                Some(inventory),
            ),
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
                tracing::info!(newer = %head, "{note}");
                let mut ended = Ended::ok(Outcome::Superseded, history, Some(inventory));
                ended.note = Some(note);
                ended
            }
        };
        ended.manifests = manifests;
        Ok(ended)
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
}

/// How [`Checker::roll_out`] goes about it.
pub(super) struct RollOut<'a> {
    /// What the source's container ran before (for the record).
    pub before: Running,
    /// The drift the apply undoes (said of a deploy that succeeds).
    pub drift_note: Option<String>,
    /// Stop as `superseded` when the branch moves off this commit.
    pub supersede: Option<&'a str>,
}

/// The inventory of a render: each object where it goes, with its digest;
/// an object `recorded` holds with the same digest keeps the commit that
/// last changed it and its live digest.
pub(super) fn inventory_of(
    objects: &[Value],
    placed: &[Placement],
    commit: &str,
    desired_image: Option<String>,
    recorded: &Inventory,
) -> Inventory {
    let previous: HashMap<ObjectKey, &InventoryObject> =
        recorded.objects.iter().map(|o| (o.key(), o)).collect();
    Inventory {
        commit: commit.to_string(),
        desired_image,
        objects: objects
            .iter()
            .zip(placed)
            .map(|(object, place)| {
                let mut entry = InventoryObject {
                    api_version: place.api_version.clone(),
                    kind: place.kind.clone(),
                    namespace: place.namespace.clone(),
                    name: place.name.clone(),
                    digest: digest(object),
                    commit: commit.to_string(),
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
    }
}
