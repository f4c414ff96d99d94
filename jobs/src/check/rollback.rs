//! Rollbacks — a history entry's kept manifests applied again, with no git
//! and no build — and the checks of a source pinned after one.

use super::deploy::{inventory_of, RollOut};
use super::{short, Checker, Ended, Failure, Progress, ProgressCell, StageTimes};
use crate::cluster::Cluster;
use crate::history::{Outcome, Stage};
use crate::inventory::Inventory;
use crate::lease::LeaseGuard;
use crate::rollback::{PinChange, RollbackOrder};
use crate::source::Source;
use crate::store::Claim;

impl Checker {
    /// Applies `order`'s manifests through the deploy's write path (apply,
    /// prune, rollout; never superseded), as `rolled_back` or `failed`
    /// with `rollback_to` set. Once anything was applied the source is
    /// pinned away from the commit it ran before (`order.from_commit`),
    /// whatever the rollout does: a failed rollback must not bring back
    /// the commit it left.
    pub(super) async fn run_rollback(
        &self,
        claim: &Claim,
        order: &RollbackOrder,
        progress: &ProgressCell,
        lease: &LeaseGuard,
        times: &mut StageTimes,
        pin: &mut PinChange,
    ) -> Result<Ended, Failure> {
        let source = &claim.source;
        let to = order.to;
        let set = |f: &dyn Fn(&mut Progress)| {
            if let Ok(mut p) = progress.lock() {
                f(&mut p);
            }
        };
        let fail = |stage: Stage, message: String| Failure {
            stage,
            message: format!("rollback to entry {to}: {message}"),
        };
        set(&|p| {
            p.stage = Some(Stage::Apply);
            p.commit = order.commit.clone();
            p.desired_image = order.desired_image.clone();
        });
        let manifests = order.manifests.as_ref().ok_or_else(|| {
            fail(
                Stage::Apply,
                "its manifests were dropped by retention since the rollback was asked for: nothing applied"
                    .to_string(),
            )
        })?;
        let objects = manifests.unpack().map_err(|e| {
            fail(
                Stage::Apply,
                format!("cannot read its manifests: {e}; nothing applied"),
            )
        })?;
        let cluster = &self
            .cluster_for(source)
            .await
            .map_err(|e| fail(Stage::Cluster, e))?;
        let placed = self
            .place(cluster, source, &objects)
            .await
            .map_err(|f| fail(f.stage, f.message))?;
        let commit = order.commit.clone().unwrap_or_default();
        let inventory = inventory_of(
            &objects,
            &placed,
            &commit,
            order.desired_image.clone(),
            &claim.inventory,
        );
        let before = self.running(cluster, source, times, progress).await?;
        tracing::info!(to, commit = %commit, trigger = %order.trigger, "rolling back");
        let mut ended = self
            .roll_out(
                cluster,
                claim,
                &objects,
                inventory,
                RollOut {
                    before,
                    drift_note: None,
                    supersede: None,
                },
                lease,
                progress,
                times,
            )
            .await
            .map_err(|f| fail(f.stage, f.message))?;

        let from = order.from_commit.as_deref();
        let said = format!(
            "rolled back to entry {to} (commit {}){}",
            short(&commit),
            from.map(|f| format!(" from {}", short(f)))
                .unwrap_or_default()
        );
        match ended.outcome {
            Outcome::Deployed | Outcome::UpToDate => {
                ended.outcome = Outcome::RolledBack;
                ended.note = Some(match ended.note.take() {
                    Some(note) => format!("{said}; {note}"),
                    None => said.clone(),
                });
            }
            Outcome::Degraded => {
                let why = ended.note.take().unwrap_or_default();
                ended.outcome = Outcome::Failed;
                ended.failure = Some(fail(Stage::Rollout, why));
            }
            _ => {
                if let Some(f) = ended.failure.take() {
                    ended.failure = Some(fail(f.stage, f.message));
                }
            }
        }
        ended.rollback_to = Some(to);
        if ended.manifests.is_some() {
            if let Some(from) = from {
                *pin = PinChange::Set {
                    commit: from.to_string(),
                    reason: format!(
                        "{said} ({}); auto-deploy resumes when the branch moves off {}",
                        order.trigger,
                        short(from)
                    ),
                };
            }
        }
        Ok(ended)
    }

    /// A check of a source whose branch is still at the commit it is
    /// pinned away from: nothing is applied (drift is not undone either);
    /// the workloads of the rolled-back render are assessed as in a steady
    /// check, and the message says the source is pinned.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pinned(
        &self,
        cluster: &Cluster,
        source: &Source,
        recorded: &Inventory,
        pinned: &str,
        last_outcome: Option<Outcome>,
        times: &mut StageTimes,
        progress: &ProgressCell,
    ) -> Result<Ended, Failure> {
        let desired = recorded.desired_image.clone();
        if let Ok(mut p) = progress.lock() {
            p.desired_image = desired.clone();
        }
        let look = self
            .look(cluster, source, recorded, times, progress)
            .await?;
        let pinned_note = format!(
            "pinned away from {} after a rollback: the cluster is left alone until the branch moves (or the source is unpinned)",
            short(pinned)
        );
        let mut ended = match self
            .steady(cluster, desired.as_deref(), &look, last_outcome)
            .await?
        {
            Some(ended) => ended,
            None => {
                let mut ended = Ended::ok(Outcome::Degraded, Vec::new(), None);
                ended.note = Some(format!(
                    "the container runs {}, not the rolled-back {}",
                    look.running.image.as_deref().unwrap_or("nothing"),
                    desired.as_deref().unwrap_or("image")
                ));
                ended
            }
        };
        let mut parts: Vec<String> = Vec::new();
        // A degraded reason comes first: it is the status's health reason.
        if ended.outcome == Outcome::Degraded {
            parts.extend(ended.note.take());
            parts.push(pinned_note);
        } else {
            parts.push(pinned_note);
            parts.extend(ended.note.take());
        }
        if !look.drift.is_empty() {
            parts.push(
                format!("{} (not undone while pinned)", look.note()).replacen(
                    "drift undone: ",
                    "drift: ",
                    1,
                ),
            );
        }
        ended.note = Some(parts.join("; "));
        Ok(ended)
    }
}
