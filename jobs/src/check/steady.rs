//! Checks that write nothing: the recorded objects as the cluster has them
//! (drift, the running image) and the health of their workloads.

use std::time::Instant;

use kube::api::DynamicObject;

use super::{
    describe_object, Checker, Ended, Failure, Progress, ProgressCell, StageTimes, SOURCE_LABEL,
};
use crate::cluster::drift::drift_of;
use crate::cluster::{Cluster, Drift, Running, Verdict, Workload};
use crate::history::{Outcome, Stage};
use crate::image::same_image;
use crate::inventory::{group_of, Inventory, InventoryObject};
use crate::source::Source;

impl Checker {
    /// A check that needs no write: `Some` when the container runs the
    /// image the build gives it (or the build gives it none) — `up_to_date`
    /// when every workload is healthy or rolling out with nothing wrong,
    /// `degraded` (with the reason) when one is not. `None`: deploy.
    pub(super) async fn steady(
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

    /// The recorded objects as the cluster has them: what drifted, and
    /// what the source's Deployment runs (read with them when it is one of
    /// them; one more GET when it is not).
    pub(super) async fn look<'r>(
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
        // The workloads keep what was read (no copy: the rest is done).
        let workloads = recorded
            .objects
            .iter()
            .zip(observed)
            .filter_map(|(o, seen)| Some((workload_of(o)?, seen.into_object())))
            .collect();
        Ok(Looked {
            running,
            drift,
            workloads,
        })
    }

    /// The source's Deployment as the cluster runs it (one GET).
    pub(super) async fn running(
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
pub(super) struct Looked<'r> {
    pub(super) running: Running,
    /// Recorded objects that are not as chump left them.
    pub(super) drift: Vec<(&'r InventoryObject, Drift)>,
    /// The workloads among the recorded objects, as read (`None`: missing).
    pub(super) workloads: Vec<(Workload, Option<Box<DynamicObject>>)>,
}

impl Looked<'_> {
    /// "drift undone: Deployment prod/web changed, Service prod/web missing".
    pub(super) fn note(&self) -> String {
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
