//! Telling people what happened: the events a check gives, and the
//! [`Notifier`] the worker hands them to.
//!
//! The worker decides the event once a check is recorded
//! ([`event_kind`], from the report and the previous outcome) and calls
//! [`Notifier::notify`]; a deploy about to write to the cluster calls
//! [`Notifier::deploy_started`] (a commit status goes `pending`). Both only
//! enqueue: delivery (webhooks, chat, commit statuses) belongs to the
//! service (`chump::notify`), off the check path, and never blocks a check.

use serde::Serialize;
use time::OffsetDateTime;

use crate::history::{CheckReport, Outcome, Trigger};
use crate::source::Source;

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A deploy rolled out.
    Deployed,
    /// A check failed (every failure is in the history too).
    Failed,
    /// A workload went unhealthy with nothing to deploy (the start of a
    /// degraded spell only).
    Degraded,
    /// A rollback rolled out.
    RolledBack,
    /// The first `deployed` or `up_to_date` after a `failed` or `degraded`.
    Recovered,
    /// The branch moved while a deploy waited for its rollout (only sent
    /// where asked for; closes a commit status left `pending`).
    Superseded,
}

impl EventKind {
    /// Every kind's spelling, in declaration order.
    pub const NAMES: &'static [&'static str] = &[
        "deployed",
        "failed",
        "degraded",
        "rolled_back",
        "recovered",
        "superseded",
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Deployed => "deployed",
            EventKind::Failed => "failed",
            EventKind::Degraded => "degraded",
            EventKind::RolledBack => "rolled_back",
            EventKind::Recovered => "recovered",
            EventKind::Superseded => "superseded",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "deployed" => EventKind::Deployed,
            "failed" => EventKind::Failed,
            "degraded" => EventKind::Degraded,
            "rolled_back" => EventKind::RolledBack,
            "recovered" => EventKind::Recovered,
            "superseded" => EventKind::Superseded,
            other => return Err(format!("unknown event '{other}'")),
        })
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event a recorded check gives, after a check that ended in
/// `previous` (None: none to tell).
///
/// - `rolled_back` for a rollback that rolled out;
/// - `recovered` for a `deployed` or `up_to_date` check after a `failed`
///   or `degraded` one (a target that listens to `deployed` hears a
///   recovery that is a deploy too: see [`Event::matches`]);
/// - `deployed`, `failed` for every deploy and failure;
/// - `degraded` only when a degraded spell starts
///   ([`CheckReport::goes_to_history`]);
/// - `superseded` for a supersession.
pub fn event_kind(report: &CheckReport, previous: Option<Outcome>) -> Option<EventKind> {
    let was_bad = matches!(previous, Some(Outcome::Failed | Outcome::Degraded));
    match report.outcome {
        Outcome::RolledBack => Some(EventKind::RolledBack),
        Outcome::Deployed | Outcome::UpToDate if was_bad => Some(EventKind::Recovered),
        Outcome::Deployed => Some(EventKind::Deployed),
        Outcome::Failed => Some(EventKind::Failed),
        Outcome::Degraded if report.goes_to_history(previous) => Some(EventKind::Degraded),
        Outcome::Superseded => Some(EventKind::Superseded),
        Outcome::UpToDate | Outcome::Degraded | Outcome::Deleted => None,
    }
}

/// A recorded check worth telling (or one that closes an announced
/// deploy: `kind` None, `announced` true).
#[derive(Debug, Clone)]
pub struct Event {
    /// None: nothing to tell people, but the check announced a deploy
    /// ([`Notifier::deploy_started`]) that ended like a steady check, so a
    /// commit status left `pending` is settled.
    pub kind: Option<EventKind>,
    /// The source as it was claimed. Its `git_url` may carry credentials:
    /// receivers get [`Source::to_public_json`] only.
    pub source: Source,
    /// The check's report, as recorded (messages already redacted).
    pub report: CheckReport,
    /// How the check before it ended.
    pub previous: Option<Outcome>,
    /// This check announced a deploy before writing to the cluster.
    pub announced: bool,
}

impl Event {
    /// Whether a target listening to `events` wants this one: its kind is
    /// listed, or it is a recovery that deployed and `deployed` is listed.
    pub fn matches(&self, events: &[EventKind]) -> bool {
        let Some(kind) = self.kind else {
            return false;
        };
        events.contains(&kind)
            || (kind == EventKind::Recovered
                && self.report.outcome == Outcome::Deployed
                && events.contains(&EventKind::Deployed))
    }
}

/// A deploy (or rollback) about to write to the cluster.
#[derive(Debug, Clone)]
pub struct DeployStart {
    /// See [`Event::source`] (credentials may be in `git_url`).
    pub source: Source,
    /// The commit being deployed (a rollback: the commit it goes back to).
    pub commit: String,
    pub trigger: Trigger,
    /// A rollback: the history entry it applies again.
    pub rollback_to: Option<i64>,
    pub at: OffsetDateTime,
}

/// Where events go. Implementations only enqueue: both methods return at
/// once, whatever the receivers do.
pub trait Notifier: Send + Sync + 'static {
    /// A recorded check's event.
    fn notify(&self, event: Event);
    /// A deploy starts writing to the cluster.
    fn deploy_started(&self, start: DeployStart) {
        let _ = start;
    }
}

/// Tells no one (no notification configured).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _event: Event) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Stage;

    fn report(outcome: Outcome) -> CheckReport {
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
            stage: (outcome == Outcome::Failed).then_some(Stage::Rollout),
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
    fn events_follow_the_outcome_and_the_previous_one() {
        use EventKind::*;
        use Outcome as O;
        let cases = [
            (O::Deployed, None, Some(Deployed)),
            (O::Deployed, Some(O::UpToDate), Some(Deployed)),
            (O::Deployed, Some(O::Failed), Some(Recovered)),
            (O::UpToDate, Some(O::Degraded), Some(Recovered)),
            (O::UpToDate, Some(O::Failed), Some(Recovered)),
            (O::UpToDate, Some(O::UpToDate), None),
            (O::Failed, Some(O::Failed), Some(Failed)),
            (O::Degraded, Some(O::UpToDate), Some(Degraded)),
            (O::Degraded, Some(O::Degraded), None),
            (O::RolledBack, Some(O::Failed), Some(RolledBack)),
            (O::Superseded, None, Some(Superseded)),
            (O::Deleted, None, None),
        ];
        for (outcome, previous, want) in cases {
            assert_eq!(
                event_kind(&report(outcome), previous),
                want,
                "{outcome} after {previous:?}"
            );
        }
    }

    #[test]
    fn a_recovery_that_deployed_reaches_deploy_listeners() {
        let source = crate::source::Source {
            id: 1,
            spec: serde_json::from_value(serde_json::json!({
                "namespace": "a", "deployment_name": "b", "git_url": "https://h/o/r.git",
                "branch": "main", "deploy_path": "d", "container_name": "c",
                "image_version_file": "d/x.yaml"
            }))
            .unwrap(),
            revision: 1,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            deleting: false,
        };
        let event = |outcome, previous| Event {
            kind: event_kind(&report(outcome), previous),
            source: source.clone(),
            report: report(outcome),
            previous,
            announced: false,
        };
        let deployed = [EventKind::Deployed];
        assert!(event(Outcome::Deployed, Some(Outcome::Failed)).matches(&deployed));
        assert!(!event(Outcome::UpToDate, Some(Outcome::Failed)).matches(&deployed));
        assert!(!event(Outcome::Deployed, None).matches(&[EventKind::Failed]));
        assert!(event(Outcome::UpToDate, Some(Outcome::Degraded)).matches(&[EventKind::Recovered]));
    }

    #[test]
    fn names_parse_back() {
        for name in EventKind::NAMES {
            assert_eq!(name.parse::<EventKind>().map(EventKind::as_str), Ok(*name));
        }
    }
}
