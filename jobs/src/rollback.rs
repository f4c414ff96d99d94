//! Rollback and pins: going back to a recorded deploy without switching
//! auto-deploy off.
//!
//! A rollback re-applies a history entry's kept manifests
//! ([`crate::manifests`]) — from the store, so git is not needed — prunes
//! what they lack, and waits for the rollout. It then *pins* the source
//! away from the commit the cluster ran before: checks that find the branch
//! still at that commit leave the cluster alone, and the first check that
//! finds any other commit deploys it and drops the pin. Unpinning
//! (`POST /api/sources/{id}/unpin`) resumes at once.
//!
//! With `auto_rollback`, a deploy that fails after it wrote to the cluster
//! (stage `apply` or `rollout`) asks for a rollback to the last successful
//! deploy; the pin keeps chump from trying that commit again, and a
//! rollback never asks for another, so nothing loops.

use serde::Serialize;
use time::OffsetDateTime;

use crate::history::{HistoryEntry, Outcome, Trigger};
use crate::manifests::{ManifestsState, PackedManifests};

/// A source's pin, as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    /// The commit chump stays away from while the branch is at it.
    pub commit: String,
    /// Why, in words (the rollback, from what to what).
    pub reason: String,
    /// The rollback's history entry.
    pub entry: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// What a check does to its source's pin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PinChange {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Pin away from `commit` (a rollback ran): the store records it with
    /// the check's history entry.
    Set { commit: String, reason: String },
    /// The branch moved off the pinned commit: the pin is gone.
    Clear,
}

/// A rollback a claim carries: what to apply, from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackOrder {
    /// The history entry whose manifests are applied again.
    pub to: i64,
    /// Who asked: [`Trigger::Manual`] or [`Trigger::AutoRollback`].
    pub trigger: Trigger,
    /// The entry's commit and the image it gave the container.
    pub commit: Option<String>,
    /// The branch head chump last saw for the source when the rollback was
    /// claimed (its status's last commit): the commit to pin away from.
    pub from_commit: Option<String>,
    pub desired_image: Option<String>,
    /// `None`: dropped (by retention) since the rollback was asked for.
    pub manifests: Option<PackedManifests>,
}

/// Why there is nothing to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    #[error("nothing was deployed yet")]
    NothingDeployed,
    #[error("no successful deploy of another commit before entry {0}")]
    NoEarlierDeploy(i64),
    #[error(
        "the manifests of entry {0}, the last successful deploy before, were dropped by retention"
    )]
    Dropped(i64),
    #[error(
        "the manifests of entry {0}, the last successful deploy before, were too large to keep"
    )]
    TooLarge(i64),
    #[error("the last successful deploy (entry {0}) is of the same commit")]
    SameCommit(i64),
}

/// A successful deploy: something a rollback may go back to by default.
fn successful(e: &HistoryEntry) -> bool {
    matches!(e.report.outcome, Outcome::Deployed | Outcome::RolledBack)
}

/// The default target of a rollback, from the source's entries that applied
/// something (each with its manifests state), newest first: the newest
/// successful deploy (`deployed` or `rolled_back`) of another commit than
/// the live one, older than the live render's own deploy — so a second
/// rollback goes further back, it does not toggle. The live entry is the
/// newest one; a rollback's render is its target's.
pub fn default_target(applied: &[HistoryEntry]) -> Result<&HistoryEntry, NoTarget> {
    let live = applied.first().ok_or(NoTarget::NothingDeployed)?;
    let origin = live.report.rollback_to.unwrap_or(live.id);
    let mut candidate = applied
        .iter()
        .filter(|e| e.id < origin && successful(e) && e.report.commit != live.report.commit);
    let first = candidate.next().ok_or(NoTarget::NoEarlierDeploy(origin))?;
    match first.manifests {
        Some(ManifestsState::Kept) => Ok(first),
        // Dropped ones are all older than kept ones; one too large may
        // have a kept one before it.
        Some(ManifestsState::TooLarge) => candidate
            .find(|e| e.manifests == Some(ManifestsState::Kept))
            .ok_or(NoTarget::TooLarge(first.id)),
        _ => Err(NoTarget::Dropped(first.id)),
    }
}

/// The target of an automatic rollback after the newest of `applied`
/// (newest first) failed: [`default_target`], unless the last successful
/// deploy is of the failed commit itself (a redeploy of the same commit,
/// undoing drift, failed: going back to an older commit is not what the
/// failure asks for).
pub fn auto_target(applied: &[HistoryEntry]) -> Result<&HistoryEntry, NoTarget> {
    let failed = applied.first().ok_or(NoTarget::NothingDeployed)?;
    let last_success = applied.iter().skip(1).find(|e| successful(e));
    if let Some(last) = last_success {
        if last.report.commit == failed.report.commit {
            return Err(NoTarget::SameCommit(last.id));
        }
    }
    default_target(applied)
}

/// The first 7 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{CheckReport, Stage};

    fn entry(id: i64, outcome: Outcome, commit: &str, manifests: ManifestsState) -> HistoryEntry {
        HistoryEntry {
            id,
            namespace: "ns".into(),
            deployment_name: "web".into(),
            container_name: "app".into(),
            manifests: Some(manifests),
            report: CheckReport {
                source_id: 1,
                trigger: Trigger::Schedule,
                started_at: OffsetDateTime::UNIX_EPOCH,
                finished_at: OffsetDateTime::UNIX_EPOCH,
                commit: Some(commit.into()),
                desired_image: None,
                running_image: None,
                outcome,
                stage: (outcome == Outcome::Failed).then_some(Stage::Rollout),
                message: None,
                objects: Vec::new(),
                inventory: None,
                rollback_to: None,
                manifests: None,
                pin: PinChange::Keep,
                rollback_wanted: false,
            },
        }
    }

    use ManifestsState::*;
    use Outcome::*;

    #[test]
    fn goes_back_past_a_failure_to_the_last_success() {
        let h = [entry(3, Failed, "b", Kept), entry(1, Deployed, "a", Kept)];
        assert_eq!(default_target(&h).unwrap().id, 1);
        let h = [
            entry(3, Deployed, "b", Kept),
            entry(2, Deployed, "b", Kept),
            entry(1, Deployed, "a", Kept),
        ];
        assert_eq!(
            default_target(&h).unwrap().id,
            1,
            "a redeploy of the same commit is not a target"
        );
    }

    #[test]
    fn a_second_rollback_goes_further_back() {
        let mut r = entry(4, RolledBack, "b", Kept);
        r.report.rollback_to = Some(2);
        let h = [
            r,
            entry(3, Failed, "c", Kept),
            entry(2, Deployed, "b", Kept),
            entry(1, Deployed, "a", Kept),
        ];
        assert_eq!(default_target(&h).unwrap().id, 1);
        let mut r = entry(3, RolledBack, "a", Kept);
        r.report.rollback_to = Some(1);
        let h = [
            r,
            entry(2, Failed, "b", Kept),
            entry(1, Deployed, "a", Kept),
        ];
        assert_eq!(default_target(&h), Err(NoTarget::NoEarlierDeploy(1)));
    }

    #[test]
    fn an_automatic_rollback_needs_a_new_commit_to_have_failed() {
        let h = [
            entry(3, Failed, "b", Kept),
            entry(2, Deployed, "a", Kept),
            entry(1, Deployed, "z", Kept),
        ];
        assert_eq!(auto_target(&h).unwrap().id, 2);
        let h = [
            entry(3, Failed, "a", Kept),
            entry(2, Deployed, "a", Kept),
            entry(1, Deployed, "z", Kept),
        ];
        assert_eq!(auto_target(&h), Err(NoTarget::SameCommit(2)));
    }

    #[test]
    fn says_why_there_is_nothing() {
        assert_eq!(default_target(&[]), Err(NoTarget::NothingDeployed));
        let h = [
            entry(2, Deployed, "b", Kept),
            entry(1, Deployed, "a", Dropped),
        ];
        assert_eq!(default_target(&h), Err(NoTarget::Dropped(1)));
        let h = [
            entry(3, Deployed, "c", Kept),
            entry(2, Deployed, "b", TooLarge),
            entry(1, Deployed, "a", Kept),
        ];
        assert_eq!(default_target(&h).unwrap().id, 1);
        let h = [entry(2, Deployed, "b", Kept), entry(1, Failed, "a", Kept)];
        assert_eq!(default_target(&h), Err(NoTarget::NoEarlierDeploy(2)));
    }
}
