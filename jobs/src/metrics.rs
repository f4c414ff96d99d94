//! Prometheus metrics of the pipeline (prometheus-client).
//!
//! Labels are bounded: outcomes (`deployed`, `up_to_date`, `failed`,
//! `deleted`, `degraded`, `superseded`), stages, fetch kinds and source
//! states ([`SOURCE_STATES`]) —
//! never a source id, so the series count does not grow with the number of
//! sources.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::history::{CheckReport, Outcome};
use crate::source::Source;

/// Labels of `chump_checks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub outcome: String,
    /// The failing stage, or `none`.
    pub stage: String,
}

/// Labels of `chump_git_syncs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitLabels {
    /// `fetch` (objects were fetched), `refs_only` (the head was unchanged:
    /// one ref query) or `shared` (another check's fresh ref query served).
    pub kind: String,
}

/// Labels of `chump_builds_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// `built` (this check ran kustomize), `in_process` (this check rendered
    /// a plain kustomization itself) or `shared` (another check's build of
    /// the same directory of the same checkout served).
    pub kind: String,
}

/// Labels of `chump_notifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    /// A target's name, from the notification config file (bounded).
    pub target: String,
    /// One of [`NOTIFY_RESULTS`].
    pub result: String,
}

/// Every value of `chump_notifications_total`'s `result` label:
/// `delivered`, `retried` (an attempt failed, another follows), `failed`
/// (given up after the last attempt), `dropped` (the queue was full: the
/// oldest waiting event went).
pub const NOTIFY_RESULTS: &[&str] = &["delivered", "retried", "failed", "dropped"];

/// Labels of `chump_sources`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// One of [`SOURCE_STATES`].
    pub state: String,
}

/// Every value of `chump_sources`'s `state` label (each is exported, zero
/// when no source is in it): how the last check ended, or what comes before
/// that.
pub const SOURCE_STATES: &[&str] = &[
    "up_to_date",
    "deployed",
    "failed",
    "degraded",
    "superseded",
    "rolled_back",
    "never_checked",
    "suspended",
    "deleting",
];

/// A source's `chump_sources` state: `deleting` and `suspended` first, then
/// its last check's outcome (`never_checked` without one). Always one of
/// [`SOURCE_STATES`].
pub fn source_state(source: &Source, last_outcome: Option<Outcome>) -> &'static str {
    if source.deleting {
        return "deleting";
    }
    if source.spec.suspended {
        return "suspended";
    }
    match last_outcome {
        None => "never_checked",
        // Its prune is done and it is about to go.
        Some(Outcome::Deleted) => "deleting",
        Some(
            o @ (Outcome::UpToDate
            | Outcome::Deployed
            | Outcome::Failed
            | Outcome::Degraded
            | Outcome::Superseded
            | Outcome::RolledBack),
        ) => o.as_str(),
    }
}

/// Every metric chump exports.
pub struct Metrics {
    registry: Registry,
    pub checks: Family<CheckLabels, Counter>,
    pub check_duration: Histogram,
    /// Checks given up because their lease was lost (nothing recorded).
    pub checks_abandoned: Counter,
    pub deploys: Counter,
    /// Objects deleted by prunes.
    pub objects_pruned: Counter,
    /// Checks that found drift and applied the build again.
    pub drift_undone: Counter,
    pub git_syncs: Family<GitLabels, Counter>,
    /// Successful builds by kind (`built`, `shared`).
    pub builds: Family<BuildLabels, Counter>,
    pub queue_depth: Gauge,
    pub busy_workers: Gauge,
    pub sources: Family<StateLabels, Gauge>,
    pub webhooks: Counter<u64, AtomicU64>,
    /// Notifications by target and result ([`NOTIFY_RESULTS`]).
    pub notifications: Family<NotifyLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chump");
        let checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "checks",
            "Checks finished, by outcome (deployed, up_to_date, failed, deleted, degraded, superseded) and failing stage",
            checks.clone(),
        );
        let check_duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "check_duration_seconds",
            "Time one check took",
            check_duration.clone(),
        );
        let checks_abandoned = Counter::default();
        registry.register(
            "checks_abandoned",
            "Checks abandoned because their lease was lost (another process may own the source)",
            checks_abandoned.clone(),
        );
        let deploys = Counter::default();
        registry.register("deploys", "Deploys applied and rolled out", deploys.clone());
        let objects_pruned = Counter::default();
        registry.register(
            "objects_pruned",
            "Objects deleted because the build no longer renders them (or their source was deleted with prune)",
            objects_pruned.clone(),
        );
        let drift_undone = Counter::default();
        registry.register(
            "drift_undone",
            "Checks that found objects changed or deleted in the cluster and applied the build again",
            drift_undone.clone(),
        );
        let git_syncs = Family::<GitLabels, Counter>::default();
        registry.register(
            "git_syncs",
            "Git syncs: fetches of new commits vs ref-only checks of an unchanged head",
            git_syncs.clone(),
        );
        let builds = Family::<BuildLabels, Counter>::default();
        registry.register(
            "builds",
            "Successful kustomize builds: run by the check, or shared with another check of the same directory and commit",
            builds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Checks claimed and waiting for a worker",
            queue_depth.clone(),
        );
        let busy_workers = Gauge::default();
        registry.register(
            "busy_workers",
            "Workers running a check",
            busy_workers.clone(),
        );
        let sources = Family::<StateLabels, Gauge>::default();
        registry.register(
            "sources",
            "Sources by the state of their last check (up_to_date, deployed, failed, degraded, superseded), or never_checked, suspended, deleting",
            sources.clone(),
        );
        let webhooks = Counter::default();
        registry.register(
            "webhook_triggers",
            "Checks triggered by webhooks",
            webhooks.clone(),
        );
        let notifications = Family::<NotifyLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by target (from CHUMP_NOTIFY_CONFIG) and result (delivered, retried, failed, dropped)",
            notifications.clone(),
        );
        Metrics {
            registry,
            notifications,
            checks,
            check_duration,
            checks_abandoned,
            deploys,
            objects_pruned,
            drift_undone,
            git_syncs,
            builds,
            queue_depth,
            busy_workers,
            sources,
            webhooks,
        }
    }

    /// Counts a finished check.
    pub fn record_check(&self, report: &CheckReport) {
        self.checks
            .get_or_create(&CheckLabels {
                outcome: report.outcome.as_str().to_string(),
                stage: report.stage.map_or("none", |s| s.as_str()).to_string(),
            })
            .inc();
        let took = (report.finished_at - report.started_at)
            .as_seconds_f64()
            .max(0.0);
        self.check_duration.observe(took);
        if report.outcome == Outcome::Deployed {
            self.deploys.inc();
        }
        let pruned = report
            .objects
            .iter()
            .filter(|o| o.action == crate::history::ApplyAction::Deleted)
            .count();
        self.objects_pruned.inc_by(pruned as u64);
    }

    /// Counts a notification of `target` ending in `result` (one of
    /// [`NOTIFY_RESULTS`]).
    pub fn record_notification(&self, target: &str, result: &'static str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                target: target.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a git sync.
    pub fn record_git_sync(&self, fetched: bool, shared: bool) {
        let kind = match (fetched, shared) {
            (true, _) => "fetch",
            (false, true) => "shared",
            (false, false) => "refs_only",
        };
        self.git_syncs
            .get_or_create(&GitLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts a successful build: run by kustomize, rendered in process, or
    /// shared.
    pub fn record_build(&self, shared: bool, in_process: bool) {
        let kind = match (shared, in_process) {
            (true, _) => "shared",
            (false, true) => "in_process",
            (false, false) => "built",
        };
        self.builds
            .get_or_create(&BuildLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Stage, Trigger};
    use crate::source::SourceSpec;
    use time::OffsetDateTime;

    fn report(outcome: Outcome, stage: Option<Stage>) -> CheckReport {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        CheckReport {
            source_id: 1,
            trigger: Trigger::Schedule,
            started_at: at,
            finished_at: at,
            commit: None,
            desired_image: None,
            running_image: None,
            outcome,
            stage,
            message: None,
            objects: Vec::new(),
            inventory: None,
            rollback_to: None,
            manifests: None,
            pin: Default::default(),
            rollback_wanted: false,
        }
    }

    #[test]
    fn checks_are_counted_by_outcome() {
        let m = Metrics::new();
        m.record_check(&report(Outcome::Degraded, None));
        m.record_check(&report(Outcome::Degraded, None));
        m.record_check(&report(Outcome::Superseded, None));
        m.record_check(&report(Outcome::Failed, Some(Stage::Rollout)));
        let text = m.encode();
        for needle in [
            "chump_checks_total{outcome=\"degraded\",stage=\"none\"} 2",
            "chump_checks_total{outcome=\"superseded\",stage=\"none\"} 1",
            "chump_checks_total{outcome=\"failed\",stage=\"rollout\"} 1",
            "chump_deploys_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn every_source_state_is_a_listed_label() {
        let mut source = Source {
            id: 1,
            spec: SourceSpec {
                namespace: "production".into(),
                deployment_name: "web".into(),
                git_url: "https://github.com/stvnorg/helloworld.git".into(),
                branch: "master".into(),
                deploy_path: "./deploy".into(),
                container_name: "app".into(),
                image_version_file: "./deploy/deployment.yaml".into(),
                interval_seconds: None,
                suspended: false,
                prune: true,
                auto_rollback: None,
                service_account: None,
            },
            revision: 1,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            deleting: false,
        };
        let outcomes = [
            None,
            Some(Outcome::Deployed),
            Some(Outcome::UpToDate),
            Some(Outcome::Failed),
            Some(Outcome::Deleted),
            Some(Outcome::Degraded),
            Some(Outcome::Superseded),
        ];
        let states: Vec<_> = outcomes.iter().map(|o| source_state(&source, *o)).collect();
        assert_eq!(
            states,
            [
                "never_checked",
                "deployed",
                "up_to_date",
                "failed",
                "deleting",
                "degraded",
                "superseded"
            ]
        );
        for s in &states {
            assert!(SOURCE_STATES.contains(s), "{s}");
        }
        source.spec.suspended = true;
        assert_eq!(source_state(&source, Some(Outcome::Degraded)), "suspended");
        source.deleting = true;
        assert_eq!(source_state(&source, Some(Outcome::Failed)), "deleting");
    }
}
