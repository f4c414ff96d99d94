//! A source deleted with `prune=true`: every object chump applied for it
//! is deleted (no git, no build), then the store deletes the source.

use std::time::Instant;

use super::{Checker, Ended, Failure, ProgressCell, StageTimes, MANAGED_BY, SOURCE_LABEL};
use crate::cluster::PruneScope;
use crate::history::{Outcome, Stage};
use crate::inventory::Inventory;
use crate::lease::LeaseGuard;
use crate::source::Source;

impl Checker {
    /// Whose objects a prune of `source` may delete, and where.
    pub(super) fn prune_scope<'a>(&self, source: &'a Source, id: &'a str) -> PruneScope<'a> {
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
    pub(super) async fn run_delete(
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
        let cluster = &self
            .cluster_for(source)
            .await
            .map_err(|e| fail(Stage::Cluster, e))?;
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
}
