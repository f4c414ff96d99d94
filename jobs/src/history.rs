//! What a check did: outcomes, stages, triggers and history entries.
//!
//! A check ends in one [`Outcome`]. No-op checks (`up_to_date`) only update the
//! source's status; deploys and failures are also kept as [`HistoryEntry`]s, so
//! history stays small at thousands of sources checked every few minutes. A
//! workload that stays unhealthy (`degraded`) is kept once when it starts and
//! once when it ends (the `up_to_date` check that finds it healthy again):
//! see [`CheckReport::goes_to_history`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::manifests::{ManifestsState, PackedManifests};
use crate::rollback::PinChange;
use crate::source::SourceId;

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The declared image differed from the running one and was applied.
    Deployed,
    /// The declared image is the one running; nothing was written to the cluster.
    UpToDate,
    /// A stage failed; see [`Stage`] and the message.
    Failed,
    /// The source was deleted after its objects were pruned
    /// (`DELETE ?prune=true`).
    Deleted,
    /// Nothing to deploy, but a workload of the build is not healthy (a
    /// pod that cannot pull its image, crashes, cannot be scheduled; a
    /// rollout past its progress deadline…); the message says which and why.
    Degraded,
    /// The branch moved while the deploy waited for its rollout: the wait
    /// stopped, and the new commit is checked at once.
    Superseded,
    /// A recorded deploy's manifests were applied again from the store
    /// (`rollback_to` names it) and rolled out; the source is pinned away
    /// from the commit it left until the branch moves.
    RolledBack,
}

/// What a source's last check says about its workloads' health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every workload of the build rolled out and is available.
    Healthy,
    /// A workload is not healthy: a steady check found it so, or the
    /// deploy's rollout failed.
    Degraded,
    /// A rollout was under way when the check ended (superseded).
    Progressing,
    /// The last check did not get as far as the workloads (or there was
    /// none).
    Unknown,
}

impl Health {
    /// The health a check's outcome (and failed stage) tells.
    pub fn of(outcome: Option<Outcome>, stage: Option<Stage>) -> Health {
        match (outcome, stage) {
            (Some(Outcome::Deployed | Outcome::UpToDate | Outcome::RolledBack), _) => {
                Health::Healthy
            }
            (Some(Outcome::Degraded), _) | (Some(Outcome::Failed), Some(Stage::Rollout)) => {
                Health::Degraded
            }
            (Some(Outcome::Superseded), _) => Health::Progressing,
            _ => Health::Unknown,
        }
    }
}

/// The stage of a check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Asking the remote for its head, fetching, checking out.
    Git,
    /// Reading the desired image from `image_version_file`.
    Manifest,
    /// Reading the running image from the cluster.
    Cluster,
    /// `kustomize build`.
    Build,
    /// Server-side apply of the built objects.
    Apply,
    /// Waiting for the Deployment to roll out.
    Rollout,
    /// Deleting objects the build no longer renders (or, for a source
    /// being deleted, every object chump applied for it).
    Prune,
    /// The check ran past its deadline, or was cut at shutdown.
    Timeout,
}

/// What asked for a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The source's interval came round.
    Schedule,
    /// Someone asked through the API or CLI.
    Manual,
    /// A push event from a git host.
    Webhook,
    /// The source was deleted with `prune=true`: its objects are pruned,
    /// then it goes.
    Delete,
    /// A deploy failed at `apply` or `rollout` on a source with
    /// `auto_rollback`: chump rolls back to the last successful deploy.
    AutoRollback,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value's wire spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The wire and storage spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown value '{other}'")),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(Outcome {
    Deployed => "deployed", UpToDate => "up_to_date", Failed => "failed", Deleted => "deleted",
    Degraded => "degraded", Superseded => "superseded", RolledBack => "rolled_back",
});
str_enum!(Health { Healthy => "healthy", Degraded => "degraded", Progressing => "progressing", Unknown => "unknown" });
str_enum!(Stage {
    Git => "git", Manifest => "manifest", Cluster => "cluster", Build => "build",
    Apply => "apply", Rollout => "rollout", Prune => "prune", Timeout => "timeout",
});
str_enum!(Trigger {
    Schedule => "schedule", Manual => "manual", Webhook => "webhook", Delete => "delete",
    AutoRollback => "auto_rollback",
});

/// What server-side apply did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAction {
    /// The object did not exist before.
    Created,
    /// The object existed and the apply changed it.
    Configured,
    /// The object existed and the apply left it as it was.
    Unchanged,
    /// Pruned: chump had applied it, and the build no longer renders it
    /// (or its source was deleted with `prune=true`).
    Deleted,
}

/// One object of a kustomize build, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub action: ApplyAction,
}

/// The result of one check, as the worker reports it to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub source_id: SourceId,
    pub trigger: Trigger,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub commit: Option<String>,
    pub desired_image: Option<String>,
    pub running_image: Option<String>,
    pub outcome: Outcome,
    pub stage: Option<Stage>,
    pub message: Option<String>,
    pub objects: Vec<AppliedObject>,
    /// The source's new inventory, written with this result (None: the
    /// recorded one stays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<crate::inventory::Inventory>,
    /// A rollback: the history entry whose manifests it applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<i64>,
    /// The render the check applied (or tried to), kept with its history
    /// entry: `Err(TooLarge)` past the cap per entry; `None` when the check
    /// did not get to apply anything.
    #[serde(skip)]
    pub manifests: Option<Result<PackedManifests, ManifestsState>>,
    /// What the check does to the source's pin (see [`crate::rollback`]).
    #[serde(skip)]
    pub pin: PinChange,
    /// A deploy of a source with `auto_rollback` failed after it wrote to
    /// the cluster: the worker asks for a rollback once this is recorded.
    #[serde(skip)]
    pub rollback_wanted: bool,
}

impl CheckReport {
    /// Whether this report becomes a history entry, after a check that
    /// ended in `previous`: deploys, failures, supersessions and deletions
    /// always; `up_to_date` only when it ends a `degraded` spell; `degraded`
    /// only when it starts one (not at every interval while it lasts).
    pub fn goes_to_history(&self, previous: Option<Outcome>) -> bool {
        match self.outcome {
            Outcome::UpToDate => previous == Some(Outcome::Degraded),
            Outcome::Degraded => previous != Some(Outcome::Degraded),
            Outcome::Deployed
            | Outcome::Failed
            | Outcome::Deleted
            | Outcome::Superseded
            | Outcome::RolledBack => true,
        }
    }
}

/// A stored history entry: a [`CheckReport`] of a deploy or a failure, with the
/// id the store gave it and the source's identity at the time (so it stays
/// readable after the source is deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub namespace: String,
    pub deployment_name: String,
    pub container_name: String,
    /// Whether the rendered manifests the check applied are kept (None: it
    /// applied nothing, or was recorded before chump kept them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<ManifestsState>,
    #[serde(flatten)]
    pub report: CheckReport,
}

impl HistoryEntry {
    /// Whether this entry's check applied a whole build that then ran
    /// (what `GET /api/history?at=` calls live): deploys, rollbacks,
    /// supersessions, and failures after the apply (rollout, prune).
    pub fn went_live(&self) -> bool {
        went_live(self.report.outcome, self.report.stage)
    }
}

/// [`HistoryEntry::went_live`], for stores that filter by outcome and stage.
pub fn went_live(outcome: Outcome, stage: Option<Stage>) -> bool {
    match outcome {
        Outcome::Deployed | Outcome::RolledBack | Outcome::Superseded => true,
        Outcome::Failed => matches!(stage, Some(Stage::Rollout | Stage::Prune)),
        Outcome::UpToDate | Outcome::Degraded | Outcome::Deleted => false,
    }
}
