//! The store conformance suite: one set of tests that every [`Store`]
//! backend must pass. A backend's test file calls
//! `conformance_tests!(async_constructor)` to get one `#[tokio::test]` per
//! case, each on a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use chump_jobs::history::{
    AppliedObject, ApplyAction, CheckReport, HistoryEntry, Outcome, Stage, Trigger,
};
use chump_jobs::inventory::{Inventory, InventoryObject};
use chump_jobs::manifests::{ManifestsState, PackedManifests};
use chump_jobs::rollback::{Pin, PinChange, RollbackOrder};
use chump_jobs::source::{SourceId, SourceSpec};
use chump_jobs::store::{Claim, Deletion, HistoryQuery, RequestResult, Store, StoreError};
use serde_json::json;
use time::OffsetDateTime;

/// How many entries per source keep their manifests in the stores under
/// test (`with_manifest_retention`).
pub const RETENTION: u32 = 3;

pub fn spec(name: &str) -> SourceSpec {
    SourceSpec {
        namespace: "production".into(),
        deployment_name: name.into(),
        git_url: "https://github.com/stvnorg/helloworld.git".into(),
        branch: "master".into(),
        deploy_path: "./deploy/helloworld/deployment.yaml".into(),
        container_name: "app".into(),
        image_version_file: "./deploy/helloworld/deployment.yaml".into(),
        interval_seconds: None,
        suspended: false,
        prune: true,
        auto_rollback: None,
        service_account: None,
    }
}

fn t(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

const LEASE: Duration = Duration::from_secs(60);

pub fn report(claim: &Claim, outcome: Outcome, at: OffsetDateTime) -> CheckReport {
    CheckReport {
        source_id: claim.source.id,
        trigger: claim.trigger,
        started_at: at,
        finished_at: at + Duration::from_secs(1),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        desired_image: Some("nginx:1.2".into()),
        running_image: Some("nginx:1.1".into()),
        outcome,
        stage: (outcome == Outcome::Failed).then_some(Stage::Apply),
        message: (outcome == Outcome::Failed).then(|| "boom".to_string()),
        objects: if outcome == Outcome::Deployed {
            vec![AppliedObject {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: Some("production".into()),
                name: "web".into(),
                action: ApplyAction::Configured,
            }]
        } else {
            Vec::new()
        },
        inventory: None,
        rollback_to: None,
        manifests: None,
        pin: PinChange::Keep,
        rollback_wanted: false,
    }
}

pub async fn crud(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    assert!(store.list_sources().await.unwrap().is_empty());
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(1)).await.unwrap();
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(a.spec, spec("a"));
    assert_eq!(a.created_at, t(0));
    assert_eq!(store.get_source(1).await.unwrap().unwrap(), a);
    assert!(store.get_source(3).await.unwrap().is_none());
    let listed = store.list_sources().await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);

    let mut changed = spec("a");
    changed.branch = "main".into();
    changed.interval_seconds = Some(30);
    changed.suspended = true;
    let updated = store.update_source(1, &changed, t(5)).await.unwrap();
    assert_eq!(updated.spec, changed);
    assert_eq!(updated.created_at, t(0));
    assert_eq!(updated.updated_at, t(5));
    assert!(updated.revision > a.revision);
    assert_eq!(store.get_source(1).await.unwrap().unwrap().spec, changed);

    assert!(matches!(
        store.update_source(9, &changed, t(5)).await,
        Err(StoreError::NotFound(9))
    ));
    assert!(matches!(
        store.delete_source(9, false).await,
        Err(StoreError::NotFound(9))
    ));
    store.delete_source(2, false).await.unwrap();
    assert!(store.get_source(2).await.unwrap().is_none());
    assert!(store.status(2).await.unwrap().is_none());
    // Never reused, not even the highest.
    assert_eq!(store.create_source(&spec("c"), t(6)).await.unwrap().id, 3);
}

pub async fn duplicates(store: Arc<dyn Store>) {
    store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    let mut same = spec("a");
    same.branch = "other".into();
    assert!(matches!(
        store.create_source(&same, t(0)).await,
        Err(StoreError::Duplicate(_))
    ));
    // An update onto another source's target collides too, and changes nothing.
    assert!(matches!(
        store.update_source(b.id, &spec("a"), t(1)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        store.get_source(b.id).await.unwrap().unwrap().spec,
        spec("b")
    );
    // Another container of the same Deployment is another target.
    let mut other = spec("a");
    other.container_name = "sidecar".into();
    store.create_source(&other, t(0)).await.unwrap();
    // A deleted target can be registered again (with a new id).
    store.delete_source(b.id, false).await.unwrap();
    assert_eq!(store.create_source(&spec("b"), t(0)).await.unwrap().id, 4);
    assert_eq!(store.list_sources().await.unwrap().len(), 3);
}

pub async fn concurrent_creates(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create_source(&spec(&format!("app-{i}")), t(0))
                .await
                .unwrap()
                .id
        }));
    }
    // Racing duplicates: exactly one wins.
    let mut dups = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        dups.push(tokio::spawn(async move {
            store.create_source(&spec("same"), t(0)).await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    let mut wins = 0;
    for d in dups {
        match d.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Duplicate(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 64);
    assert_eq!(store.list_sources().await.unwrap().len(), 65);
}

pub async fn new_sources_are_due_at_once(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(st.next_check_at, Some(t(0)));
    assert_eq!(st.last_checked_at, None);
    assert!(!st.in_flight);
    let b = store.create_source(&spec("b"), t(1)).await.unwrap();
    let all = store.list_statuses().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[&a.id], st);
    assert_eq!(all[&b.id].next_check_at, Some(t(1)));
    store.delete_source(b.id, false).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(0)));
    assert!(store
        .claim_due(t(-1), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
    let claims = store.claim_due(t(0), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].source, a);
    assert_eq!(claims[0].trigger, Trigger::Schedule);
    assert_eq!(claims[0].due_at, t(0));
    assert!(store.status(a.id).await.unwrap().unwrap().in_flight);
}

pub async fn leases_exclude_and_expire(store: Arc<dyn Store>) {
    for n in ["a", "b", "c"] {
        store.create_source(&spec(n), t(0)).await.unwrap();
    }
    let first = store.claim_due(t(1), 2, "p1", LEASE).await.unwrap();
    assert_eq!(
        first.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Another process sees only the unclaimed one.
    let second = store.claim_due(t(1), 10, "p2", LEASE).await.unwrap();
    assert_eq!(
        second.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![3]
    );
    assert!(store
        .claim_due(t(2), 10, "p2", LEASE)
        .await
        .unwrap()
        .is_empty());
    // p1 dies; its leases expire and p2 takes them over.
    let later = t(1) + LEASE + Duration::from_secs(1);
    let taken = store.claim_due(later, 10, "p2", LEASE).await.unwrap();
    assert_eq!(
        taken.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(taken.iter().all(|c| c.owner == "p2"));
    // p1's late report does not overwrite p2's claim.
    store
        .finish_check(
            &first[0],
            &report(&first[0], Outcome::UpToDate, t(3)),
            t(500),
        )
        .await
        .unwrap();
    assert!(store.status(1).await.unwrap().unwrap().in_flight);
    // Released claims are due again at once.
    store.release_claims("p2", &[1]).await.unwrap();
    let again = store.claim_due(later, 10, "p3", LEASE).await.unwrap();
    assert_eq!(
        again.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![1]
    );
}

pub async fn concurrent_claims_never_overlap(store: Arc<dyn Store>) {
    for i in 0..30 {
        store
            .create_source(&spec(&format!("s{i}")), t(0))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for p in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                for c in store
                    .claim_due(t(1), 3, &format!("p{p}"), LEASE)
                    .await
                    .unwrap()
                {
                    got.push(c.source.id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a source was claimed twice");
    assert_eq!(n, 30);
}

pub async fn finishing_records_status_and_history(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);

    // No-op: status only, no history.
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(1)), t(181))
        .await
        .unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(st.last_outcome, Some(Outcome::UpToDate));
    assert_eq!(st.last_checked_at, Some(t(2)));
    assert_eq!(st.next_check_at, Some(t(181)));
    assert_eq!(st.consecutive_failures, 0);
    assert!(!st.in_flight);
    assert!(store
        .history(&HistoryQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_due(t(100), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_due().await.unwrap(), Some(t(181)));

    // Two failures, then a deploy.
    for (i, at) in [200, 400].into_iter().enumerate() {
        let claim = store
            .claim_due(t(at), 1, "p1", LEASE)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(claim.consecutive_failures, i as u32);
        store
            .finish_check(&claim, &report(&claim, Outcome::Failed, t(at)), t(at + 150))
            .await
            .unwrap();
    }
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            st.consecutive_failures,
            st.last_stage,
            st.last_message.as_deref()
        ),
        (2, Some(Stage::Apply), Some("boom"))
    );
    let claim = store
        .claim_due(t(600), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claim.consecutive_failures, 2);
    store
        .finish_check(&claim, &report(&claim, Outcome::Deployed, t(600)), t(780))
        .await
        .unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.running_image.as_deref(), Some("nginx:1.2"));

    let h = store
        .history(&HistoryQuery {
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.iter().map(|e| e.report.outcome).collect::<Vec<_>>(),
        vec![Outcome::Deployed, Outcome::Failed, Outcome::Failed]
    );
    assert!(h[0].id > h[1].id && h[1].id > h[2].id);
    assert_eq!(h[0].report, report(&claim, Outcome::Deployed, t(600)));
    assert_eq!(
        (
            h[0].namespace.as_str(),
            h[0].deployment_name.as_str(),
            h[0].container_name.as_str()
        ),
        ("production", "a", "app")
    );
}

pub async fn changes_during_a_check_make_it_due_again(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    let mut changed = spec("a");
    changed.branch = "main".into();
    store.update_source(a.id, &changed, t(1)).await.unwrap();
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(2)), t(500))
        .await
        .unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        st.next_check_at,
        Some(t(3)),
        "an update during the check makes the source due at once"
    );
    let claim = store
        .claim_due(t(3), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claim.source.spec.branch, "main");
}

pub async fn requested_checks(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(0)), t(300))
        .await
        .unwrap();

    assert_eq!(
        store
            .request_check(a.id, Trigger::Manual, t(10))
            .await
            .unwrap(),
        RequestResult::Queued
    );
    assert_eq!(
        store
            .request_check(a.id, Trigger::Manual, t(11))
            .await
            .unwrap(),
        RequestResult::AlreadyQueued
    );
    assert_eq!(
        store
            .request_check(a.id, Trigger::Webhook, t(11))
            .await
            .unwrap(),
        RequestResult::AlreadyQueued
    );
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (st.requested, st.next_check_at),
        (Some(Trigger::Manual), Some(t(10)))
    );
    let claim = store
        .claim_due(t(12), 5, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claim.trigger, Trigger::Manual);
    assert_eq!(claim.due_at, t(10), "due since the request");
    // Running: a manual request is not queued; a webhook queues a follow-up.
    assert_eq!(
        store
            .request_check(a.id, Trigger::Manual, t(13))
            .await
            .unwrap(),
        RequestResult::AlreadyRunning
    );
    assert_eq!(
        store
            .request_check(a.id, Trigger::Webhook, t(13))
            .await
            .unwrap(),
        RequestResult::QueuedAfterRunning
    );
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(14)), t(400))
        .await
        .unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(st.next_check_at, Some(t(15)));
    let claim = store
        .claim_due(t(15), 5, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claim.trigger, Trigger::Webhook);
    // The request a claim took is not carried into the next one.
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(16)), t(500))
        .await
        .unwrap();
    let claim = store
        .claim_due(t(500), 5, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claim.trigger, Trigger::Schedule);
    assert_eq!(claim.due_at, t(500));
    assert!(matches!(
        store.request_check(99, Trigger::Manual, t(0)).await,
        Err(StoreError::NotFound(99))
    ));
}

pub async fn suspended_sources(store: Arc<dyn Store>) {
    let mut s = spec("a");
    s.suspended = true;
    let a = store.create_source(&s, t(0)).await.unwrap();
    assert!(store
        .claim_due(t(1), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
    // A manual request still runs it.
    assert_eq!(
        store
            .request_check(a.id, Trigger::Manual, t(2))
            .await
            .unwrap(),
        RequestResult::Queued
    );
    let claims = store.claim_due(t(2), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].trigger, Trigger::Manual);
}

pub async fn history_outlives_its_source_and_pages(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let mut other_ns = spec("b");
    other_ns.namespace = "staging".into();
    let b = store.create_source(&other_ns, t(0)).await.unwrap();
    for i in 0..10 {
        for claim in store.claim_due(t(i * 1000), 10, "p1", LEASE).await.unwrap() {
            let outcome = if i % 2 == 0 {
                Outcome::Deployed
            } else {
                Outcome::Failed
            };
            store
                .finish_check(
                    &claim,
                    &report(&claim, outcome, t(i * 1000)),
                    t(i * 1000 + 500),
                )
                .await
                .unwrap();
        }
    }
    let all = store
        .history(&HistoryQuery {
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 20);
    let of_a = store
        .history(&HistoryQuery {
            source_id: Some(a.id),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(of_a.len(), 10);
    assert!(of_a.iter().all(|e| e.report.source_id == a.id));
    let failed = store
        .history(&HistoryQuery {
            outcome: Some(Outcome::Failed),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 10);
    let staging = store
        .history(&HistoryQuery {
            namespace: Some("staging".into()),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(staging.iter().all(|e| e.report.source_id == b.id) && staging.len() == 10);
    let since = store
        .history(&HistoryQuery {
            since: Some(t(5000)),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 10);

    // Paging with the cursor walks every entry once, newest first.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(&HistoryQuery {
                before,
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = Some(page.last().unwrap().id);
        seen.extend(page.iter().map(|e| e.id));
    }
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(seen, ids);

    store.delete_source(a.id, false).await.unwrap();
    let kept = store
        .history(&HistoryQuery {
            source_id: Some(a.id),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(kept.len(), 10);
}

pub async fn deleted_sources_are_never_claimed(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    store.delete_source(a.id, false).await.unwrap();
    // The check in flight finishes after the delete: history kept, no schedule revived.
    store
        .finish_check(&claim, &report(&claim, Outcome::Failed, t(1)), t(2))
        .await
        .unwrap();
    assert!(store.status(a.id).await.unwrap().is_none());
    assert!(store
        .claim_due(t(1000), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .history(&HistoryQuery {
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort();
    ids
}

fn all_history() -> HistoryQuery {
    HistoryQuery {
        limit: 50,
        ..Default::default()
    }
}

pub async fn renewing_keeps_a_lease_past_its_first_end(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    let claims = store.claim_due(t(0), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 2);
    // Renewed before its end: another process finds nothing due past it.
    assert_eq!(
        store.renew_leases("p1", &[a.id], t(100)).await.unwrap(),
        vec![a.id]
    );
    let later = t(0) + LEASE + Duration::from_secs(1);
    // b was not renewed: its lease ended and p2 takes it; a stays p1's.
    let taken = store.claim_due(later, 10, "p2", LEASE).await.unwrap();
    assert_eq!(
        taken.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert!(store.status(a.id).await.unwrap().unwrap().in_flight);
    assert_eq!(store.next_due().await.unwrap(), Some(t(100)));
    // A lease past its end (t(100)) that nobody took is still the owner's
    // to renew.
    assert_eq!(
        store.renew_leases("p1", &[a.id], t(200)).await.unwrap(),
        vec![a.id]
    );
    assert!(store
        .claim_due(t(150), 10, "p2", LEASE)
        .await
        .unwrap()
        .iter()
        .all(|c| c.source.id != a.id));
    // The holder of a renewed lease records its check as usual.
    let claim = claims.iter().find(|c| c.source.id == a.id).unwrap();
    store
        .finish_check(claim, &report(claim, Outcome::Deployed, t(160)), t(400))
        .await
        .unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(st.last_outcome, Some(Outcome::Deployed));
    assert!(!st.in_flight);
    assert_eq!(store.history(&all_history()).await.unwrap().len(), 1);
}

pub async fn leases_taken_by_another_are_not_renewed(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    assert_eq!(
        store.claim_due(t(0), 10, "p1", LEASE).await.unwrap().len(),
        2
    );
    // p1 stalls; its lease on a ends and p2 takes a.
    store.release_claims("p1", &[b.id]).await.unwrap();
    let later = t(0) + LEASE + Duration::from_secs(1);
    let taken = store.claim_due(later, 1, "p2", LEASE).await.unwrap();
    assert_eq!(
        taken.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![a.id]
    );
    // p1 wakes up: both its leases are lost (a taken, b released).
    assert!(store
        .renew_leases("p1", &[a.id, b.id], t(500))
        .await
        .unwrap()
        .is_empty());
    // p2's lease on a was not extended to p1's time.
    let p2_end = later + LEASE;
    assert!(store
        .claim_due(p2_end - Duration::from_secs(1), 10, "p3", LEASE)
        .await
        .unwrap()
        .iter()
        .all(|c| c.source.id != a.id));
    let after = store.claim_due(p2_end, 10, "p3", LEASE).await.unwrap();
    assert_eq!(
        after.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![a.id]
    );
    // And the new holder renews it.
    assert_eq!(
        sorted(
            store
                .renew_leases("p3", &[a.id, b.id], t(900))
                .await
                .unwrap()
        ),
        vec![a.id, b.id]
    );
}

pub async fn renewing_leases_never_held_returns_none(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    let c = store.create_source(&spec("c"), t(0)).await.unwrap();
    assert!(store
        .renew_leases("p1", &[], t(100))
        .await
        .unwrap()
        .is_empty());
    let claims = store.claim_due(t(0), 1, "p1", LEASE).await.unwrap();
    assert_eq!(claims[0].source.id, a.id);
    let claims = store.claim_due(t(0), 1, "p2", LEASE).await.unwrap();
    assert_eq!(claims[0].source.id, b.id);
    // b is p2's, c is nobody's, 99 does not exist: only a is p1's.
    assert_eq!(
        store
            .renew_leases("p1", &[c.id, b.id, a.id, 99], t(100))
            .await
            .unwrap(),
        vec![a.id]
    );
    // Nothing was leased by the attempt: c is still free, b still p2's.
    assert!(!store.status(c.id).await.unwrap().unwrap().in_flight);
    let free = store.claim_due(t(1), 10, "p3", LEASE).await.unwrap();
    assert_eq!(
        free.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![c.id]
    );
    let later = t(0) + LEASE;
    let b_again = store.claim_due(later, 10, "p3", LEASE).await.unwrap();
    assert_eq!(
        b_again.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![b.id],
        "b's lease ended at its own time, not p1's"
    );
}

pub async fn finishing_after_the_lease_was_lost_writes_nothing(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let stale = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    let later = t(0) + LEASE + Duration::from_secs(1);
    let current = store
        .claim_due(later, 1, "p2", LEASE)
        .await
        .unwrap()
        .remove(0);
    // p1's check ends after p2 took the source: nothing of it is written.
    store
        .finish_check(&stale, &report(&stale, Outcome::Deployed, later), t(900))
        .await
        .unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert!(st.in_flight, "p2's lease stays");
    assert_eq!((st.last_outcome, st.last_checked_at), (None, None));
    assert!(store.history(&all_history()).await.unwrap().is_empty());
    // p2 finishes; p1's second late report (the lease is now released)
    // changes nothing either.
    let at = later + Duration::from_secs(2);
    store
        .finish_check(&current, &report(&current, Outcome::UpToDate, at), t(300))
        .await
        .unwrap();
    let done = store.status(a.id).await.unwrap().unwrap();
    store
        .finish_check(&stale, &report(&stale, Outcome::Failed, at), t(901))
        .await
        .unwrap();
    assert_eq!(store.status(a.id).await.unwrap().unwrap(), done);
    assert_eq!(done.last_outcome, Some(Outcome::UpToDate));
    assert_eq!(done.next_check_at, Some(t(300)));
    assert!(store.history(&all_history()).await.unwrap().is_empty());
}

/// An inventory built from `commit`: a Namespace (no namespace of its own),
/// then a ConfigMap per name in `configs`.
pub fn inventory(commit: &str, configs: &[&str]) -> Inventory {
    let object =
        |api_version: &str, kind: &str, namespace: Option<&str>, name: &str| InventoryObject {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
            digest: format!("{:0>64}", format!("{kind}{name}").len()),
            commit: commit.into(),
            live: None,
            prune_pending: false,
        };
    let mut objects = vec![object("v1", "Namespace", None, "production")];
    for c in configs {
        objects.push(object("v1", "ConfigMap", Some("production"), c));
    }
    Inventory {
        commit: commit.into(),
        desired_image: Some("nginx:1.2".into()),
        objects,
    }
}

fn with_inventory(mut report: CheckReport, inventory: &Inventory) -> CheckReport {
    report.inventory = Some(inventory.clone());
    report
}

pub async fn inventories_are_recorded_with_the_status(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    // Nothing applied yet: empty; no such source: none.
    assert_eq!(
        store.inventory(a.id).await.unwrap(),
        Some(Inventory::default())
    );
    assert_eq!(store.inventory(99).await.unwrap(), None);
    let claims = store.claim_due(t(0), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 2);
    assert!(claims.iter().all(|c| c.inventory == Inventory::default()));

    // A deploy records a's inventory with its status; b's check records none.
    let first = inventory("1111111111111111111111111111111111111111", &["x", "y"]);
    let (ca, cb) = (&claims[0], &claims[1]);
    assert_eq!((ca.source.id, cb.source.id), (a.id, b.id));
    store
        .finish_check(
            ca,
            &with_inventory(report(ca, Outcome::Deployed, t(1)), &first),
            t(100),
        )
        .await
        .unwrap();
    store
        .finish_check(cb, &report(cb, Outcome::Failed, t(1)), t(100))
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.inventory(b.id).await.unwrap(),
        Some(Inventory::default())
    );
    // The status and history are as without an inventory.
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (st.last_outcome, st.next_check_at, st.in_flight),
        (Some(Outcome::Deployed), Some(t(100)), false)
    );
    let h = store.history(&all_history()).await.unwrap();
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|e| e.report.inventory.is_none()));
    assert_eq!(store.list_statuses().await.unwrap().len(), 2);

    // The next claims (one call) carry each source's own inventory.
    let claims = store.claim_due(t(100), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 2);
    let of = |id| claims.iter().find(|c| c.source.id == id).unwrap();
    assert_eq!(of(a.id).inventory, first);
    assert_eq!(of(b.id).inventory, Inventory::default());

    // No inventory in the report: the recorded one stays.
    let ca = of(a.id);
    store
        .finish_check(ca, &report(ca, Outcome::UpToDate, t(101)), t(200))
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(first.clone()));
    let ca = store
        .claim_due(t(200), 10, "p1", LEASE)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.source.id == a.id)
        .unwrap();
    assert_eq!(ca.inventory, first);

    // A new inventory replaces the old one whole (an object gone, no image).
    let mut second = inventory("2222222222222222222222222222222222222222", &["y"]);
    second.desired_image = None;
    second.objects[1].commit = first.commit.clone();
    store
        .finish_check(
            &ca,
            &with_inventory(report(&ca, Outcome::Deployed, t(201)), &second),
            t(300),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(second.clone()));
    // Even an empty one.
    let ca = store
        .claim_due(t(300), 10, "p1", LEASE)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.source.id == a.id)
        .unwrap();
    assert_eq!(ca.inventory, second);
    let empty = Inventory {
        commit: "3333333333333333333333333333333333333333".into(),
        ..Default::default()
    };
    store
        .finish_check(
            &ca,
            &with_inventory(report(&ca, Outcome::Deployed, t(301)), &empty),
            t(400),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(empty));
}

pub async fn a_lost_lease_writes_no_inventory(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let stale = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    let later = t(0) + LEASE + Duration::from_secs(1);
    let current = store
        .claim_due(later, 1, "p2", LEASE)
        .await
        .unwrap()
        .remove(0);
    let theirs = inventory("1111111111111111111111111111111111111111", &["old"]);
    // p1's check ends after p2 took the source: no inventory.
    store
        .finish_check(
            &stale,
            &with_inventory(report(&stale, Outcome::Deployed, later), &theirs),
            t(900),
        )
        .await
        .unwrap();
    assert_eq!(
        store.inventory(a.id).await.unwrap(),
        Some(Inventory::default())
    );
    let ours = inventory("2222222222222222222222222222222222222222", &["new"]);
    let at = later + Duration::from_secs(2);
    store
        .finish_check(
            &current,
            &with_inventory(report(&current, Outcome::Deployed, at), &ours),
            t(300),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(ours.clone()));
    // p1 again, the lease now released: still p2's inventory.
    store
        .finish_check(
            &stale,
            &with_inventory(report(&stale, Outcome::Deployed, at), &theirs),
            t(901),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(ours));
}

pub async fn deleted_sources_have_no_inventory(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    let inv = inventory("1111111111111111111111111111111111111111", &["x"]);
    store
        .finish_check(
            &claim,
            &with_inventory(report(&claim, Outcome::Deployed, t(1)), &inv),
            t(10),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(inv.clone()));
    let claim = store
        .claim_due(t(10), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    store.delete_source(a.id, false).await.unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), None);
    // A check in flight during the delete records no inventory either.
    store
        .finish_check(
            &claim,
            &with_inventory(report(&claim, Outcome::Deployed, t(11)), &inv),
            t(20),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), None);
    // The same target registered again starts with nothing applied.
    let again = store.create_source(&spec("a"), t(30)).await.unwrap();
    assert_ne!(again.id, a.id);
    assert_eq!(
        store.inventory(again.id).await.unwrap(),
        Some(Inventory::default())
    );
    let claim = store
        .claim_due(t(30), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claim.inventory, Inventory::default());
}

pub async fn prune_defaults_on_and_round_trips(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    assert!(a.spec.prune && !a.deleting, "{a:?}");
    let mut keep = spec("b");
    keep.prune = false;
    let b = store.create_source(&keep, t(0)).await.unwrap();
    assert_eq!(b.spec, keep);
    let got = store.get_source(b.id).await.unwrap().unwrap();
    assert!(!got.spec.prune && !got.deleting, "{got:?}");
    // Switched on and off again by updates; listed as stored.
    let mut on = keep.clone();
    on.prune = true;
    assert!(
        store
            .update_source(b.id, &on, t(1))
            .await
            .unwrap()
            .spec
            .prune
    );
    assert!(store.get_source(b.id).await.unwrap().unwrap().spec.prune);
    assert!(
        !store
            .update_source(b.id, &keep, t(2))
            .await
            .unwrap()
            .spec
            .prune
    );
    let listed = store.list_sources().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.spec.prune).collect::<Vec<_>>(),
        vec![true, false]
    );
    assert!(listed.iter().all(|s| !s.deleting));
}

/// A time after `t(secs)` and after the wall clock: a delete with prune makes
/// a source due at the real time, which claims at test times must pass.
fn after_now(secs: i64) -> OffsetDateTime {
    t(secs).max(OffsetDateTime::now_utc() + Duration::from_secs(1))
}

/// Source `name` (suspended if asked) deployed once by p1 with an inventory
/// of ConfigMaps `configs`, due next at `t(100)`.
async fn deployed(
    store: &Arc<dyn Store>,
    name: &str,
    suspended: bool,
    configs: &[&str],
) -> (chump_jobs::source::Source, Inventory) {
    let mut s = spec(name);
    s.suspended = suspended;
    let source = store.create_source(&s, t(0)).await.unwrap();
    if suspended {
        store
            .request_check(source.id, Trigger::Manual, t(0))
            .await
            .unwrap();
    }
    let claim = store
        .claim_due(t(0), 10, "p1", LEASE)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.source.id == source.id)
        .unwrap();
    let inv = inventory("1111111111111111111111111111111111111111", configs);
    store
        .finish_check(
            &claim,
            &with_inventory(report(&claim, Outcome::Deployed, t(1)), &inv),
            t(100),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(source.id).await.unwrap(), Some(inv.clone()));
    (source, inv)
}

/// The report of a prune that deleted every object of `inv`.
fn pruned(claim: &Claim, inv: &Inventory, at: OffsetDateTime) -> CheckReport {
    let mut r = report(claim, Outcome::Deleted, at);
    r.desired_image = None;
    r.running_image = None;
    r.objects = inv
        .objects
        .iter()
        .map(|o| AppliedObject {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            action: ApplyAction::Deleted,
        })
        .collect();
    r
}

pub async fn deleting_with_prune_and_nothing_applied_deletes_at_once(store: Arc<dyn Store>) {
    // Never checked: no inventory.
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Deleted
    );
    assert!(store.get_source(a.id).await.unwrap().is_none());
    assert!(store.status(a.id).await.unwrap().is_none());
    assert!(matches!(
        store.delete_source(a.id, true).await,
        Err(StoreError::NotFound(_))
    ));
    // Checked, with an empty inventory recorded.
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    let empty = Inventory {
        commit: "1111111111111111111111111111111111111111".into(),
        ..Default::default()
    };
    store
        .finish_check(
            &claim,
            &with_inventory(report(&claim, Outcome::Deployed, t(1)), &empty),
            t(100),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(b.id).await.unwrap(), Some(empty));
    assert_eq!(
        store.delete_source(b.id, true).await.unwrap(),
        Deletion::Deleted
    );
    assert!(store.get_source(b.id).await.unwrap().is_none());
    assert_eq!(store.inventory(b.id).await.unwrap(), None);
    // Its target is free again.
    store.create_source(&spec("b"), t(2)).await.unwrap();
}

pub async fn deleting_with_prune_waits_for_the_prune(store: Arc<dyn Store>) {
    // Suspended: the prune runs all the same.
    let (a, inv) = deployed(&store, "a", true, &["x", "y"]).await;
    let other = store.create_source(&spec("other"), t(0)).await.unwrap();
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Pruning
    );
    let marked = store.get_source(a.id).await.unwrap().unwrap();
    assert!(marked.deleting, "{marked:?}");
    assert_eq!(
        (marked.spec.clone(), marked.revision),
        (a.spec.clone(), a.revision)
    );
    assert!(store
        .list_sources()
        .await
        .unwrap()
        .iter()
        .any(|s| s.id == a.id && s.deleting));
    let st = store.status(a.id).await.unwrap().unwrap();
    assert!(
        st.next_check_at.unwrap() <= OffsetDateTime::now_utc(),
        "due at once: {st:?}"
    );
    assert_eq!(st.requested, Some(Trigger::Delete));
    assert!(store.next_due().await.unwrap().unwrap() <= OffsetDateTime::now_utc());
    // Asked again with prune: left as it is.
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Pruning
    );

    // Read-only: no updates, no requested checks; its target stays taken.
    let mut changed = a.spec.clone();
    changed.branch = "main".into();
    assert!(matches!(
        store.update_source(a.id, &changed, t(5)).await,
        Err(StoreError::BeingDeleted(id)) if id == a.id
    ));
    for trigger in [Trigger::Manual, Trigger::Webhook] {
        assert!(matches!(
            store.request_check(a.id, trigger, t(5)).await,
            Err(StoreError::BeingDeleted(id)) if id == a.id
        ));
    }
    assert!(matches!(
        store.create_source(&spec("a"), t(5)).await,
        Err(StoreError::Duplicate(_))
    ));
    // Moving another source onto its target collides too.
    assert!(matches!(
        store.update_source(other.id, &spec("a"), t(5)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(store.get_source(a.id).await.unwrap().unwrap(), marked);

    // Claimed, suspended as it is, with trigger delete and its inventory.
    let at = after_now(200);
    let claims = store.claim_due(at, 10, "p1", LEASE).await.unwrap();
    let claim = claims.iter().find(|c| c.source.id == a.id).unwrap().clone();
    assert_eq!(claim.trigger, Trigger::Delete);
    assert!(claim.source.deleting);
    assert_eq!(claim.inventory, inv);
    assert!(store
        .claim_due(at, 10, "p2", LEASE)
        .await
        .unwrap()
        .iter()
        .all(|c| c.source.id != a.id));

    // The prune fails half way: recorded like a check, still deleting.
    let mut left = inv.clone();
    left.objects.retain(|o| o.name != "x");
    left.objects.iter_mut().for_each(|o| o.prune_pending = true);
    let mut failed = report(&claim, Outcome::Failed, at);
    failed.stage = Some(Stage::Prune);
    failed.message = Some("forbidden".into());
    failed.inventory = Some(left.clone());
    let retry_at = at + Duration::from_secs(50);
    store.finish_check(&claim, &failed, retry_at).await.unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            st.last_outcome,
            st.last_stage,
            st.consecutive_failures,
            st.next_check_at,
            st.in_flight
        ),
        (
            Some(Outcome::Failed),
            Some(Stage::Prune),
            1,
            Some(retry_at),
            false
        )
    );
    assert!(store.get_source(a.id).await.unwrap().unwrap().deleting);
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(left.clone()));
    assert!(matches!(
        store.request_check(a.id, Trigger::Manual, at).await,
        Err(StoreError::BeingDeleted(_))
    ));
    // Not before its backoff; then claimed again, with what is left.
    assert!(store
        .claim_due(retry_at - Duration::from_secs(1), 10, "p1", LEASE)
        .await
        .unwrap()
        .iter()
        .all(|c| c.source.id != a.id));
    let claims = store.claim_due(retry_at, 10, "p1", LEASE).await.unwrap();
    let claim = claims.iter().find(|c| c.source.id == a.id).unwrap().clone();
    assert_eq!(
        (claim.trigger, claim.consecutive_failures),
        (Trigger::Delete, 1)
    );
    assert_eq!(claim.inventory, left);

    // Every object pruned: the source goes, with status and inventory.
    let done = pruned(&claim, &left, retry_at);
    store
        .finish_check(&claim, &done, retry_at + Duration::from_secs(300))
        .await
        .unwrap();
    assert!(store.get_source(a.id).await.unwrap().is_none());
    assert!(store.status(a.id).await.unwrap().is_none());
    assert!(!store.list_statuses().await.unwrap().contains_key(&a.id));
    assert_eq!(store.inventory(a.id).await.unwrap(), None);
    assert!(store
        .list_sources()
        .await
        .unwrap()
        .iter()
        .all(|s| s.id != a.id));
    // The history stays: deploy, failed prune, prune; filterable by outcome.
    let h = store
        .history(&HistoryQuery {
            source_id: Some(a.id),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        h.iter()
            .map(|e| (e.report.trigger, e.report.outcome))
            .collect::<Vec<_>>(),
        vec![
            (Trigger::Delete, Outcome::Deleted),
            (Trigger::Delete, Outcome::Failed),
            (Trigger::Manual, Outcome::Deployed)
        ]
    );
    assert_eq!(h[0].report, done);
    assert!(h[0]
        .report
        .objects
        .iter()
        .all(|o| o.action == ApplyAction::Deleted));
    assert_eq!(h[0].report.objects.len(), left.objects.len());
    assert_eq!(h[1].report.stage, Some(Stage::Prune));
    let deleted = store
        .history(&HistoryQuery {
            outcome: Some(Outcome::Deleted),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        deleted
            .iter()
            .map(|e| e.report.source_id)
            .collect::<Vec<_>>(),
        vec![a.id]
    );
    // The target is free; nothing of a is claimed again.
    let again = store.create_source(&spec("a"), at).await.unwrap();
    assert_ne!(again.id, a.id);
    assert!(store
        .claim_due(retry_at + Duration::from_secs(1000), 10, "p1", LEASE)
        .await
        .unwrap()
        .iter()
        .all(|c| c.source.id != a.id));
}

pub async fn a_plain_delete_abandons_a_prune(store: Arc<dyn Store>) {
    let (a, inv) = deployed(&store, "a", false, &["x"]).await;
    let (b, _) = deployed(&store, "b", false, &["y"]).await;
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Pruning
    );
    assert_eq!(
        store.delete_source(b.id, true).await.unwrap(),
        Deletion::Pruning
    );
    // b, not claimed: a plain delete deletes it at once.
    assert_eq!(
        store.delete_source(b.id, false).await.unwrap(),
        Deletion::Deleted
    );
    assert!(store.get_source(b.id).await.unwrap().is_none());
    assert!(store.status(b.id).await.unwrap().is_none());
    assert_eq!(store.inventory(b.id).await.unwrap(), None);
    // a, its prune running: deleted at once too; the prune's report only
    // adds its history entry.
    let at = after_now(200);
    let claims = store.claim_due(at, 10, "p1", LEASE).await.unwrap();
    assert_eq!(
        claims.iter().map(|c| c.source.id).collect::<Vec<_>>(),
        vec![a.id]
    );
    assert_eq!(
        store.delete_source(a.id, false).await.unwrap(),
        Deletion::Deleted
    );
    assert!(store.get_source(a.id).await.unwrap().is_none());
    let done = pruned(&claims[0], &inv, at);
    store
        .finish_check(&claims[0], &done, at + Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.get_source(a.id).await.unwrap().is_none());
    assert!(store.status(a.id).await.unwrap().is_none());
    assert_eq!(store.inventory(a.id).await.unwrap(), None);
    let h = store.history(&all_history()).await.unwrap();
    assert_eq!(h[0].report, done);
    assert!(store
        .claim_due(at + Duration::from_secs(1000), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
}

pub async fn a_prune_whose_lease_was_lost_deletes_nothing(store: Arc<dyn Store>) {
    let (a, inv) = deployed(&store, "a", false, &["x"]).await;
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Pruning
    );
    let at = after_now(200);
    let stale = store.claim_due(at, 1, "p1", LEASE).await.unwrap().remove(0);
    assert_eq!(stale.trigger, Trigger::Delete);
    // p1 stalls past its lease; p2 takes the prune over.
    let later = at + LEASE + Duration::from_secs(1);
    let current = store
        .claim_due(later, 1, "p2", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (current.source.id, current.trigger),
        (a.id, Trigger::Delete)
    );
    let history_before = store.history(&all_history()).await.unwrap();
    // p1's report: nothing written, the source stays (p2's).
    store
        .finish_check(&stale, &pruned(&stale, &inv, later), later)
        .await
        .unwrap();
    assert!(store.get_source(a.id).await.unwrap().unwrap().deleting);
    let st = store.status(a.id).await.unwrap().unwrap();
    assert!(st.in_flight, "p2's lease stays: {st:?}");
    assert_eq!(st.last_outcome, Some(Outcome::Deployed));
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(inv.clone()));
    assert_eq!(store.history(&all_history()).await.unwrap(), history_before);
    // p2's report deletes it.
    store
        .finish_check(&current, &pruned(&current, &inv, later), later)
        .await
        .unwrap();
    assert!(store.get_source(a.id).await.unwrap().is_none());
    assert!(store.status(a.id).await.unwrap().is_none());
    assert_eq!(
        store.history(&all_history()).await.unwrap().len(),
        history_before.len() + 1
    );
}

pub async fn a_check_running_at_a_delete_with_prune_is_followed_by_the_prune(
    store: Arc<dyn Store>,
) {
    let (a, _) = deployed(&store, "a", false, &["x"]).await;
    // A scheduled check is running when the delete with prune comes.
    let running = store
        .claim_due(t(100), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(running.trigger, Trigger::Schedule);
    assert_eq!(
        store.delete_source(a.id, true).await.unwrap(),
        Deletion::Pruning
    );
    // Its deploy is recorded (what it applied is pruned too), and the
    // source is due at once, not at the next interval.
    let newer = inventory("2222222222222222222222222222222222222222", &["x", "z"]);
    let at = after_now(200);
    store
        .finish_check(
            &running,
            &with_inventory(report(&running, Outcome::Deployed, at), &newer),
            at + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(store.inventory(a.id).await.unwrap(), Some(newer.clone()));
    assert!(store.get_source(a.id).await.unwrap().unwrap().deleting);
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(st.next_check_at, Some(at + Duration::from_secs(1)));
    let claim = store
        .claim_due(at + Duration::from_secs(1), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((claim.trigger, &claim.inventory), (Trigger::Delete, &newer));
}

/// A report of `outcome` with `message` (stage none, as degraded and
/// superseded reports have).
fn report_with(claim: &Claim, outcome: Outcome, at: OffsetDateTime, message: &str) -> CheckReport {
    CheckReport {
        stage: None,
        message: Some(message.to_string()),
        ..report(claim, outcome, at)
    }
}

/// Claims source `id` (the only one due) at `at`, checking the claim
/// carries how the previous check ended.
async fn claim_expecting(
    store: &Arc<dyn Store>,
    id: i64,
    at: OffsetDateTime,
    last: Option<Outcome>,
) -> Claim {
    let mut claims = store.claim_due(at, 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 1, "one source due at {at}: {claims:?}");
    let claim = claims.remove(0);
    assert_eq!(claim.source.id, id);
    assert_eq!(
        claim.last_outcome, last,
        "the claim carries the previous check's outcome"
    );
    claim
}

fn outcomes(h: &[chump_jobs::history::HistoryEntry]) -> Vec<Outcome> {
    h.iter().map(|e| e.report.outcome).collect()
}

pub async fn degraded_spells_are_kept_where_they_start_and_end(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = claim_expecting(&store, a.id, t(0), None).await;
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(1)), t(100))
        .await
        .unwrap();
    assert!(store.history(&all_history()).await.unwrap().is_empty());

    // Degraded after up to date: it starts a spell, kept.
    let claim = claim_expecting(&store, a.id, t(100), Some(Outcome::UpToDate)).await;
    let first = report_with(
        &claim,
        Outcome::Degraded,
        t(100),
        "Deployment production/a: pod a-1 container app: ImagePullBackOff",
    );
    store.finish_check(&claim, &first, t(200)).await.unwrap();
    let h = store.history(&all_history()).await.unwrap();
    assert_eq!(outcomes(&h), vec![Outcome::Degraded]);
    assert_eq!(h[0].report, first);
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (st.last_outcome, st.last_stage, st.last_message.as_deref()),
        (Some(Outcome::Degraded), None, first.message.as_deref())
    );
    assert_eq!(st.consecutive_failures, 0, "degraded is not a failure");
    assert_eq!(st.next_check_at, Some(t(200)));

    // Degraded again: the spell goes on, not kept; the status follows it.
    let claim = claim_expecting(&store, a.id, t(200), Some(Outcome::Degraded)).await;
    let second = report_with(
        &claim,
        Outcome::Degraded,
        t(200),
        "Deployment production/a: pod a-2 container app: CrashLoopBackOff",
    );
    store.finish_check(&claim, &second, t(300)).await.unwrap();
    assert_eq!(
        outcomes(&store.history(&all_history()).await.unwrap()),
        vec![Outcome::Degraded],
        "a degraded check after a degraded one is not history"
    );
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            st.last_outcome,
            st.last_message.as_deref(),
            st.last_checked_at
        ),
        (
            Some(Outcome::Degraded),
            second.message.as_deref(),
            Some(t(201))
        )
    );
    assert_eq!(st.consecutive_failures, 0);

    // Up to date ends the spell: kept.
    let claim = claim_expecting(&store, a.id, t(300), Some(Outcome::Degraded)).await;
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(300)), t(400))
        .await
        .unwrap();
    let h = store.history(&all_history()).await.unwrap();
    assert_eq!(outcomes(&h), vec![Outcome::UpToDate, Outcome::Degraded]);
    assert_eq!(h[0].report, report(&claim, Outcome::UpToDate, t(300)));
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (st.last_outcome, st.last_message),
        (Some(Outcome::UpToDate), None)
    );

    // Up to date again: a steady check, not kept.
    let claim = claim_expecting(&store, a.id, t(400), Some(Outcome::UpToDate)).await;
    store
        .finish_check(&claim, &report(&claim, Outcome::UpToDate, t(400)), t(500))
        .await
        .unwrap();
    assert_eq!(store.history(&all_history()).await.unwrap().len(), 2);

    // A failure, then degraded: the failure is kept, degraded starts a new
    // spell (kept) and resets the failure count.
    let claim = claim_expecting(&store, a.id, t(500), Some(Outcome::UpToDate)).await;
    store
        .finish_check(&claim, &report(&claim, Outcome::Failed, t(500)), t(600))
        .await
        .unwrap();
    let claim = claim_expecting(&store, a.id, t(600), Some(Outcome::Failed)).await;
    assert_eq!(claim.consecutive_failures, 1);
    store
        .finish_check(
            &claim,
            &report_with(&claim, Outcome::Degraded, t(600), "still unhealthy"),
            t(700),
        )
        .await
        .unwrap();
    let h = store.history(&all_history()).await.unwrap();
    assert_eq!(
        outcomes(&h),
        vec![
            Outcome::Degraded,
            Outcome::Failed,
            Outcome::UpToDate,
            Outcome::Degraded
        ]
    );
    let degraded_only = store
        .history(&HistoryQuery {
            outcome: Some(Outcome::Degraded),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        degraded_only.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![h[0].id, h[3].id],
        "the outcome filter finds degraded entries"
    );
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (st.consecutive_failures, st.last_outcome),
        (0, Some(Outcome::Degraded))
    );
    let claim = claim_expecting(&store, a.id, t(700), Some(Outcome::Degraded)).await;
    assert_eq!(claim.consecutive_failures, 0);
}

pub async fn superseded_checks_are_kept_and_are_no_failures(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let claim = claim_expecting(&store, a.id, t(0), None).await;
    store
        .finish_check(&claim, &report(&claim, Outcome::Failed, t(0)), t(100))
        .await
        .unwrap();
    let claim = claim_expecting(&store, a.id, t(100), Some(Outcome::Failed)).await;
    assert_eq!(claim.consecutive_failures, 1);
    let moved = report_with(
        &claim,
        Outcome::Superseded,
        t(100),
        "master moved to 89abcdef while the rollout of 01234567 was under way",
    );
    // Due at once: the scheduler's choice, recorded as given.
    store.finish_check(&claim, &moved, t(102)).await.unwrap();
    let st = store.status(a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            st.last_outcome,
            st.last_stage,
            st.last_message.as_deref(),
            st.consecutive_failures,
            st.next_check_at
        ),
        (
            Some(Outcome::Superseded),
            None,
            moved.message.as_deref(),
            0,
            Some(t(102))
        ),
        "superseded is not a failure"
    );
    let h = store.history(&all_history()).await.unwrap();
    assert_eq!(outcomes(&h), vec![Outcome::Superseded, Outcome::Failed]);
    assert_eq!(h[0].report, moved);

    // A second supersession in a row is kept too.
    let claim = claim_expecting(&store, a.id, t(102), Some(Outcome::Superseded)).await;
    assert_eq!(claim.consecutive_failures, 0);
    store
        .finish_check(
            &claim,
            &report_with(&claim, Outcome::Superseded, t(102), "moved again"),
            t(104),
        )
        .await
        .unwrap();
    let only = store
        .history(&HistoryQuery {
            outcome: Some(Outcome::Superseded),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(outcomes(&only), vec![Outcome::Superseded; 2]);
    let claim = claim_expecting(&store, a.id, t(104), Some(Outcome::Superseded)).await;
    store
        .finish_check(&claim, &report(&claim, Outcome::Deployed, t(104)), t(300))
        .await
        .unwrap();
    assert_eq!(
        outcomes(&store.history(&all_history()).await.unwrap()),
        vec![
            Outcome::Deployed,
            Outcome::Superseded,
            Outcome::Superseded,
            Outcome::Failed
        ]
    );
    claim_expecting(&store, a.id, t(300), Some(Outcome::Deployed)).await;
}

// ---------------------------------------------------------------------------
// Manifests, retention, rollbacks, pins and time travel.

/// A 40-character commit id of `c`s.
fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

/// The render of commit `c`: one ConfigMap naming it.
fn render(c: char) -> PackedManifests {
    PackedManifests::pack(&[json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("render-{c}"), "namespace": "production"},
        "data": {"commit": sha(c)},
    })])
    .unwrap()
}

/// A report of `outcome` at `at` that applied commit `c`'s render (image
/// `nginx:<c>`), to be kept with its entry; a failure is a failed rollout.
fn applied(claim: &Claim, outcome: Outcome, at: OffsetDateTime, c: char) -> CheckReport {
    let mut r = report(claim, outcome, at);
    r.commit = Some(sha(c));
    r.desired_image = Some(format!("nginx:{c}"));
    r.manifests = Some(Ok(render(c)));
    if outcome == Outcome::Failed {
        r.stage = Some(Stage::Rollout);
        r.message = Some("Deployment production/web: ImagePullBackOff".into());
    }
    r
}

/// `r` as a history entry gives it back (manifests, pin and rollback wish
/// are not part of the entry's report).
fn as_stored(r: &CheckReport) -> CheckReport {
    CheckReport {
        inventory: None,
        manifests: None,
        pin: PinChange::Keep,
        rollback_wanted: false,
        ..r.clone()
    }
}

/// `r`, started a second before `t(secs)` and finished at it.
fn ending(mut r: CheckReport, secs: i64) -> CheckReport {
    r.started_at = t(secs - 1);
    r.finished_at = t(secs);
    r
}

/// Claims source `id` at `at` (giving back the claims of any other source
/// due), records `make(&claim)` and leaves the source due again at once.
async fn record(
    store: &Arc<dyn Store>,
    id: SourceId,
    at: OffsetDateTime,
    make: impl FnOnce(&Claim) -> CheckReport,
) -> (Claim, CheckReport) {
    let claims = store.claim_due(at, 10, "p1", LEASE).await.unwrap();
    let others: Vec<SourceId> = claims
        .iter()
        .map(|c| c.source.id)
        .filter(|other| *other != id)
        .collect();
    store.release_claims("p1", &others).await.unwrap();
    let claim = claims
        .into_iter()
        .find(|c| c.source.id == id)
        .unwrap_or_else(|| panic!("source {id} is due at {at}"));
    let r = make(&claim);
    store.finish_check(&claim, &r, at).await.unwrap();
    (claim, r)
}

/// Source `id`'s history, newest first.
async fn entries_of(store: &Arc<dyn Store>, id: SourceId) -> Vec<HistoryEntry> {
    store
        .history(&HistoryQuery {
            source_id: Some(id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The id of source `id`'s newest entry.
async fn newest(store: &Arc<dyn Store>, id: SourceId) -> i64 {
    entries_of(store, id).await[0].id
}

fn states(h: &[HistoryEntry]) -> Vec<Option<ManifestsState>> {
    h.iter().map(|e| e.manifests).collect()
}

fn ids(h: &[HistoryEntry]) -> Vec<i64> {
    h.iter().map(|e| e.id).collect()
}

const KEPT: Option<ManifestsState> = Some(ManifestsState::Kept);
const DROPPED: Option<ManifestsState> = Some(ManifestsState::Dropped);

pub async fn manifests_are_kept_with_their_entry(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let (_, deploy) = record(&store, a.id, t(0), |c| {
        applied(c, Outcome::Deployed, t(0), '1')
    })
    .await;
    let h = entries_of(&store, a.id).await;
    assert_eq!(states(&h), vec![KEPT]);
    assert_eq!(h[0].report, as_stored(&deploy));
    assert_eq!(store.manifests(h[0].id).await.unwrap(), Some(render('1')));
    let first = h[0].id;

    // Too large to keep: the entry says so, and there are no bytes.
    let (_, big) = record(&store, a.id, t(100), |c| {
        let mut r = applied(c, Outcome::Failed, t(100), '2');
        r.manifests = Some(Err(ManifestsState::TooLarge));
        r
    })
    .await;
    let h = entries_of(&store, a.id).await;
    assert_eq!(states(&h), vec![Some(ManifestsState::TooLarge), KEPT]);
    assert_eq!(h[0].report, as_stored(&big));
    assert_eq!(store.manifests(h[0].id).await.unwrap(), None);

    // A failure before anything was applied: no manifests at all.
    record(&store, a.id, t(200), |c| {
        let mut r = report(c, Outcome::Failed, t(200));
        r.stage = Some(Stage::Build);
        r
    })
    .await;
    let h = entries_of(&store, a.id).await;
    assert_eq!(states(&h), vec![None, Some(ManifestsState::TooLarge), KEPT]);
    assert_eq!(store.manifests(h[0].id).await.unwrap(), None);

    // An up-to-date check (after a failure) is no history: nothing kept,
    // whatever it carries.
    record(&store, a.id, t(300), |c| {
        let mut r = report(c, Outcome::UpToDate, t(300));
        r.manifests = Some(Ok(render('3')));
        r
    })
    .await;
    assert_eq!(entries_of(&store, a.id).await, h);
    assert_eq!(store.manifests(h[0].id + 1).await.unwrap(), None);
    assert_eq!(store.manifests(first + 1000).await.unwrap(), None);

    // The next deploy keeps its own; the first keeps its bytes.
    record(&store, a.id, t(400), |c| {
        applied(c, Outcome::Deployed, t(400), '4')
    })
    .await;
    let h = entries_of(&store, a.id).await;
    assert_eq!(h.len(), 4);
    assert_eq!(store.manifests(h[0].id).await.unwrap(), Some(render('4')));
    assert_eq!(store.manifests(first).await.unwrap(), Some(render('1')));
    // `applied`: only the entries whose check applied a render.
    let only_applied = store
        .history(&HistoryQuery {
            applied: true,
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&only_applied), vec![h[0].id, h[2].id, h[3].id]);
}

pub async fn old_manifests_are_dropped_but_the_last_success_keeps_them(store: Arc<dyn Store>) {
    assert_eq!(RETENTION, 3, "the stores under test keep 3");
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let b = store.create_source(&spec("b"), t(0)).await.unwrap();
    // b deploys once: a's retention never touches it.
    record(&store, b.id, t(0), |c| {
        applied(c, Outcome::Deployed, t(0), 'b')
    })
    .await;

    let mut deploys = Vec::new();
    for (i, c) in "12345".chars().enumerate() {
        let at = t(100 * (i as i64 + 1));
        record(&store, a.id, at, |cl| applied(cl, Outcome::Deployed, at, c)).await;
        let h = entries_of(&store, a.id).await;
        deploys.push(h[0].id);
        let expected: Vec<_> = (0..=i)
            .map(|k| {
                if k < RETENTION as usize {
                    KEPT
                } else {
                    DROPPED
                }
            })
            .collect();
        assert_eq!(states(&h), expected, "after deploy {}", i + 1);
    }
    for (i, (id, c)) in deploys.iter().zip("12345".chars()).enumerate() {
        let expected = (i >= 2).then(|| render(c));
        assert_eq!(store.manifests(*id).await.unwrap(), expected, "deploy {c}");
    }

    // Failed rollouts: the newest three keep theirs, and the last
    // successful deploy keeps its own however many fail after it.
    let mut failures = Vec::new();
    for (i, c) in "6789".chars().enumerate() {
        let at = t(600 + 100 * i as i64);
        record(&store, a.id, at, |cl| applied(cl, Outcome::Failed, at, c)).await;
        failures.push(newest(&store, a.id).await);
    }
    let h = entries_of(&store, a.id).await;
    assert_eq!(
        states(&h),
        vec![KEPT, KEPT, KEPT, DROPPED, KEPT, DROPPED, DROPPED, DROPPED, DROPPED],
        "the last successful deploy (5) keeps its manifests"
    );
    assert_eq!(
        store.manifests(deploys[4]).await.unwrap(),
        Some(render('5'))
    );
    assert_eq!(store.manifests(failures[0]).await.unwrap(), None);
    assert_eq!(
        store.manifests(failures[3]).await.unwrap(),
        Some(render('9'))
    );

    // A rollback is a success: now it is the one kept, and 5 goes.
    let (_, rolled) = record(&store, a.id, t(1000), |cl| {
        let mut r = applied(cl, Outcome::RolledBack, t(1000), '5');
        r.rollback_to = Some(deploys[4]);
        r
    })
    .await;
    let h = entries_of(&store, a.id).await;
    assert_eq!(h[0].report, as_stored(&rolled));
    assert_eq!(h[0].report.rollback_to, Some(deploys[4]));
    assert_eq!(
        states(&h),
        vec![KEPT, KEPT, KEPT, DROPPED, DROPPED, DROPPED, DROPPED, DROPPED, DROPPED, DROPPED]
    );
    assert_eq!(store.manifests(h[0].id).await.unwrap(), Some(render('5')));
    assert_eq!(store.manifests(deploys[4]).await.unwrap(), None);
    assert_eq!(store.manifests(failures[1]).await.unwrap(), None);
    assert_eq!(
        store.manifests(failures[2]).await.unwrap(),
        Some(render('8'))
    );

    let hb = entries_of(&store, b.id).await;
    assert_eq!(states(&hb), vec![KEPT]);
    assert_eq!(store.manifests(hb[0].id).await.unwrap(), Some(render('b')));
}

pub async fn rollbacks_are_claimed_with_their_order(store: Arc<dyn Store>) {
    assert!(matches!(
        store.request_rollback(9, 1, Trigger::Manual, t(0)).await,
        Err(StoreError::NotFound(9))
    ));
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    record(&store, a.id, t(0), |c| {
        applied(c, Outcome::Deployed, t(0), '1')
    })
    .await;
    let e1 = newest(&store, a.id).await;
    record(&store, a.id, t(100), |c| {
        applied(c, Outcome::Deployed, t(100), '2')
    })
    .await;
    let e2 = newest(&store, a.id).await;
    let status = |store: &Arc<dyn Store>| {
        let store = store.clone();
        async move { store.status(a.id).await.unwrap().unwrap() }
    };
    assert_eq!(status(&store).await.rollback_to, None);

    // Suspended: nothing is due until a rollback (or a manual check) is
    // asked for.
    let mut suspended = spec("a");
    suspended.suspended = true;
    store.update_source(a.id, &suspended, t(150)).await.unwrap();
    assert!(store
        .claim_due(t(150), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);

    // Asked while a check runs: it follows that check.
    assert_eq!(
        store
            .request_check(a.id, Trigger::Manual, t(160))
            .await
            .unwrap(),
        RequestResult::Queued
    );
    let running = claim_expecting(&store, a.id, t(160), Some(Outcome::Deployed)).await;
    assert_eq!(
        (running.trigger, &running.rollback),
        (Trigger::Manual, &None)
    );
    assert_eq!(
        store
            .request_rollback(a.id, e1, Trigger::Manual, t(161))
            .await
            .unwrap(),
        RequestResult::QueuedAfterRunning
    );
    let st = status(&store).await;
    assert_eq!((st.rollback_to, st.in_flight), (Some(e1), true));
    let mut steady = report(&running, Outcome::UpToDate, t(162));
    steady.commit = Some(sha('2'));
    store.finish_check(&running, &steady, t(900)).await.unwrap();
    let st = status(&store).await;
    assert_eq!(
        (st.rollback_to, st.next_check_at, st.in_flight),
        (Some(e1), Some(t(163)), false),
        "the check's finish leaves the rollback pending, due at once"
    );
    assert_eq!(store.next_due().await.unwrap(), Some(t(163)));

    // Claimed although suspended, with what to apply.
    let claim = claim_expecting(&store, a.id, t(163), Some(Outcome::UpToDate)).await;
    assert_eq!(claim.trigger, Trigger::Manual);
    assert_eq!(claim.pinned, None);
    assert_eq!(
        claim.rollback,
        Some(RollbackOrder {
            to: e1,
            trigger: Trigger::Manual,
            commit: Some(sha('1')),
            from_commit: Some(sha('2')),
            desired_image: Some("nginx:1".into()),
            manifests: Some(render('1')),
        })
    );
    let st = status(&store).await;
    assert_eq!(
        (st.rollback_to, st.in_flight),
        (Some(e1), true),
        "pending until recorded"
    );
    assert!(store
        .claim_due(t(163), 10, "p2", LEASE)
        .await
        .unwrap()
        .is_empty());

    // Another rollback asked for while this one runs follows it.
    assert_eq!(
        store
            .request_rollback(a.id, e2, Trigger::AutoRollback, t(164))
            .await
            .unwrap(),
        RequestResult::QueuedAfterRunning
    );
    let mut rolled = applied(&claim, Outcome::RolledBack, t(164), '1');
    rolled.rollback_to = Some(e1);
    store.finish_check(&claim, &rolled, t(900)).await.unwrap();
    let st = status(&store).await;
    assert_eq!(
        (st.rollback_to, st.next_check_at),
        (Some(e2), Some(t(165))),
        "a rollback asked for since is not cleared, and due at once"
    );
    let h = entries_of(&store, a.id).await;
    assert_eq!(h[0].report, as_stored(&rolled));
    assert_eq!(h[0].manifests, KEPT);
    let claim = claim_expecting(&store, a.id, t(165), Some(Outcome::RolledBack)).await;
    assert_eq!(claim.trigger, Trigger::AutoRollback);
    assert_eq!(
        claim.rollback,
        Some(RollbackOrder {
            to: e2,
            trigger: Trigger::AutoRollback,
            commit: Some(sha('2')),
            from_commit: Some(sha('1')),
            desired_image: Some("nginx:2".into()),
            manifests: Some(render('2')),
        })
    );
    // Its finish clears it: nothing pending, nothing due (suspended).
    let mut rolled = applied(&claim, Outcome::RolledBack, t(166), '2');
    rolled.rollback_to = Some(e2);
    store.finish_check(&claim, &rolled, t(900)).await.unwrap();
    let st = status(&store).await;
    assert_eq!((st.rollback_to, st.next_check_at), (None, Some(t(900))));
    assert!(store
        .claim_due(t(1000), 10, "p1", LEASE)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_due().await.unwrap(), None);
    // Four renders, three kept: the first went.
    assert_eq!(
        states(&entries_of(&store, a.id).await),
        vec![KEPT, KEPT, KEPT, DROPPED]
    );

    // Asked twice while idle: queued once, due at once.
    assert_eq!(
        store
            .request_rollback(a.id, e1, Trigger::Manual, t(800))
            .await
            .unwrap(),
        RequestResult::Queued
    );
    assert_eq!(
        store
            .request_rollback(a.id, e1, Trigger::Manual, t(801))
            .await
            .unwrap(),
        RequestResult::AlreadyQueued
    );
    let st = status(&store).await;
    assert_eq!((st.rollback_to, st.next_check_at), (Some(e1), Some(t(800))));
    // Its entry's manifests were dropped: the order says so.
    let claim = claim_expecting(&store, a.id, t(801), Some(Outcome::RolledBack)).await;
    let order = claim.rollback.clone().unwrap();
    assert_eq!(
        (order.to, order.commit.clone(), order.manifests.clone()),
        (e1, Some(sha('1')), None)
    );
    let mut failed = report(&claim, Outcome::Failed, t(802));
    failed.message = Some("the manifests of the entry were dropped".into());
    store.finish_check(&claim, &failed, t(2000)).await.unwrap();
    assert_eq!(status(&store).await.rollback_to, None);

    // Dropped while it waited for a running check: the order says so too.
    assert_eq!(
        store
            .request_check(a.id, Trigger::Manual, t(2000))
            .await
            .unwrap(),
        RequestResult::Queued
    );
    let running = claim_expecting(&store, a.id, t(2000), Some(Outcome::Failed)).await;
    assert_eq!(running.rollback, None);
    // e2's render is the oldest of the three kept; the deploy pushes it out.
    let target = e2;
    assert_eq!(store.manifests(target).await.unwrap(), Some(render('2')));
    assert_eq!(
        store
            .request_rollback(a.id, target, Trigger::Manual, t(2001))
            .await
            .unwrap(),
        RequestResult::QueuedAfterRunning
    );
    let deploy = applied(&running, Outcome::Deployed, t(2002), '3');
    store
        .finish_check(&running, &deploy, t(3000))
        .await
        .unwrap();
    assert_eq!(store.manifests(target).await.unwrap(), None);
    let claim = claim_expecting(&store, a.id, t(2003), Some(Outcome::Deployed)).await;
    assert_eq!(
        claim.rollback,
        Some(RollbackOrder {
            to: target,
            trigger: Trigger::Manual,
            commit: Some(sha('2')),
            from_commit: Some(sha('3')),
            desired_image: Some("nginx:2".into()),
            manifests: None,
        })
    );

    // A source being deleted takes no rollback.
    let (d, _) = deployed(&store, "d", false, &["x"]).await;
    assert_eq!(
        store.delete_source(d.id, true).await.unwrap(),
        Deletion::Pruning
    );
    assert!(matches!(
        store.request_rollback(d.id, e2, Trigger::Manual, t(3000)).await,
        Err(StoreError::BeingDeleted(id)) if id == d.id
    ));
    assert_eq!(store.status(d.id).await.unwrap().unwrap().rollback_to, None);
}

pub async fn pins_are_set_kept_and_cleared(store: Arc<dyn Store>) {
    assert!(matches!(
        store.unpin(9, t(0)).await,
        Err(StoreError::NotFound(9))
    ));
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    record(&store, a.id, t(0), |c| {
        applied(c, Outcome::Deployed, t(0), '1')
    })
    .await;
    let e1 = newest(&store, a.id).await;
    let status = |store: &Arc<dyn Store>| {
        let store = store.clone();
        async move { store.status(a.id).await.unwrap().unwrap() }
    };
    // Not pinned: unpinning changes nothing.
    let before = status(&store).await;
    assert_eq!(before.pinned, None);
    assert_eq!(store.unpin(a.id, t(50)).await.unwrap(), None);
    assert_eq!(status(&store).await, before);

    // A rollback pins the source away from the commit it left.
    let reason = "rolled back from 2222222 to 1111111";
    record(&store, a.id, t(100), |c| {
        let mut r = applied(c, Outcome::RolledBack, t(100), '1');
        r.rollback_to = Some(e1);
        r.pin = PinChange::Set {
            commit: sha('2'),
            reason: reason.into(),
        };
        r
    })
    .await;
    let pin = Pin {
        commit: sha('2'),
        reason: reason.into(),
        entry: Some(newest(&store, a.id).await),
        since: t(101),
    };
    assert_eq!(status(&store).await.pinned, Some(pin.clone()));
    assert_eq!(
        store.list_statuses().await.unwrap()[&a.id].pinned,
        Some(pin.clone())
    );

    // The next check knows it; keeping leaves it as it is.
    let (claim, _) = record(&store, a.id, t(200), |c| {
        let mut r = report(c, Outcome::UpToDate, t(200));
        r.commit = Some(sha('2'));
        r
    })
    .await;
    assert_eq!(claim.pinned, Some(sha('2')));
    assert_eq!(status(&store).await.pinned, Some(pin.clone()));

    // The branch moved on: cleared.
    let (claim, _) = record(&store, a.id, t(300), |c| {
        let mut r = applied(c, Outcome::Deployed, t(300), '3');
        r.pin = PinChange::Clear;
        r
    })
    .await;
    assert_eq!(claim.pinned, Some(sha('2')));
    assert_eq!(status(&store).await.pinned, None);
    let (claim, _) = record(&store, a.id, t(400), |c| {
        report(c, Outcome::UpToDate, t(400))
    })
    .await;
    assert_eq!(claim.pinned, None);

    // Pinned again, then unpinned: a manual check, at once.
    let claim = claim_expecting(&store, a.id, t(500), Some(Outcome::UpToDate)).await;
    let mut r = applied(&claim, Outcome::RolledBack, t(500), '1');
    r.rollback_to = Some(e1);
    r.pin = PinChange::Set {
        commit: sha('3'),
        reason: "again".into(),
    };
    store.finish_check(&claim, &r, t(2000)).await.unwrap();
    let st = status(&store).await;
    assert_eq!(
        st.pinned.as_ref().map(|p| (p.commit.clone(), p.since)),
        Some((sha('3'), t(501)))
    );
    assert_eq!(
        store.unpin(a.id, t(600)).await.unwrap(),
        Some(RequestResult::Queued)
    );
    let st = status(&store).await;
    assert_eq!(
        (st.pinned, st.requested, st.next_check_at),
        (None, Some(Trigger::Manual), Some(t(600)))
    );
    assert_eq!(store.unpin(a.id, t(601)).await.unwrap(), None);
    let claim = claim_expecting(&store, a.id, t(600), Some(Outcome::RolledBack)).await;
    assert_eq!(
        (claim.trigger, claim.pinned.clone()),
        (Trigger::Manual, None)
    );

    // Unpinned while a check runs: the pin goes at once, a manual check
    // follows the running one.
    let mut r = applied(&claim, Outcome::RolledBack, t(610), '1');
    r.rollback_to = Some(e1);
    r.pin = PinChange::Set {
        commit: sha('4'),
        reason: "third".into(),
    };
    store.finish_check(&claim, &r, t(2000)).await.unwrap();
    let running = claim_expecting(&store, a.id, t(2000), Some(Outcome::RolledBack)).await;
    assert_eq!(running.pinned, Some(sha('4')));
    assert_eq!(
        store.unpin(a.id, t(2001)).await.unwrap(),
        Some(RequestResult::QueuedAfterRunning)
    );
    let st = status(&store).await;
    assert_eq!((st.pinned, st.in_flight), (None, true));
    store
        .finish_check(
            &running,
            &report(&running, Outcome::UpToDate, t(2002)),
            t(5000),
        )
        .await
        .unwrap();
    let st = status(&store).await;
    assert_eq!((st.pinned, st.next_check_at), (None, Some(t(2003))));
    let claim = claim_expecting(&store, a.id, t(2003), Some(Outcome::UpToDate)).await;
    assert_eq!((claim.trigger, claim.pinned), (Trigger::Manual, None));

    // A source being deleted cannot be unpinned.
    let (d, _) = deployed(&store, "d", false, &["x"]).await;
    assert_eq!(
        store.delete_source(d.id, true).await.unwrap(),
        Deletion::Pruning
    );
    assert!(matches!(
        store.unpin(d.id, t(3000)).await,
        Err(StoreError::BeingDeleted(id)) if id == d.id
    ));
}

pub async fn history_at_an_instant_shows_what_was_live(store: Arc<dyn Store>) {
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let mut staging = spec("b");
    staging.namespace = "staging".into();
    let b = store.create_source(&staging, t(0)).await.unwrap();
    let inv = inventory("1111111111111111111111111111111111111111", &["x"]);

    // a deploys at 10; its build fails at 12 (nothing applied).
    record(&store, a.id, t(9), |c| {
        ending(applied(c, Outcome::Deployed, t(9), '1'), 10)
    })
    .await;
    let a10 = newest(&store, a.id).await;
    record(&store, a.id, t(11), |c| {
        let mut r = report(c, Outcome::Failed, t(11));
        r.stage = Some(Stage::Build);
        ending(r, 12)
    })
    .await;
    // b deploys at 15 (its manifests not kept).
    record(&store, b.id, t(14), |c| {
        let mut r = with_inventory(report(c, Outcome::Deployed, t(14)), &inv);
        r.commit = Some(sha('b'));
        ending(r, 15)
    })
    .await;
    let b15 = newest(&store, b.id).await;
    // a's next deploy fails its rollout at 20.
    record(&store, a.id, t(19), |c| {
        ending(applied(c, Outcome::Failed, t(19), '2'), 20)
    })
    .await;
    let a20 = newest(&store, a.id).await;
    // b is deleted with its objects at 25.
    assert_eq!(
        store.delete_source(b.id, true).await.unwrap(),
        Deletion::Pruning
    );
    let (claim, _) = record(&store, b.id, t(24), |c| ending(pruned(c, &inv, t(24)), 25)).await;
    assert_eq!(claim.trigger, Trigger::Delete);
    assert!(store.get_source(b.id).await.unwrap().is_none());
    // a is rolled back to its first deploy at 30.
    record(&store, a.id, t(29), |c| {
        let mut r = applied(c, Outcome::RolledBack, t(29), '1');
        r.rollback_to = Some(a10);
        ending(r, 30)
    })
    .await;
    let a30 = newest(&store, a.id).await;

    let at = |secs: i64| HistoryQuery {
        at: Some(t(secs)),
        limit: 50,
        ..Default::default()
    };
    let live = |q: HistoryQuery| {
        let store = store.clone();
        async move { ids(&store.history(&q).await.unwrap()) }
    };
    assert_eq!(live(at(5)).await, Vec::<i64>::new(), "nothing yet");
    assert_eq!(live(at(10)).await, vec![a10], "finished at the instant");
    assert_eq!(
        live(at(13)).await,
        vec![a10],
        "a failed build applied nothing"
    );
    assert_eq!(live(at(16)).await, vec![b15, a10]);
    assert_eq!(live(at(22)).await, vec![a20, b15], "a failed rollout ran");
    assert_eq!(live(at(26)).await, vec![a20], "b was deleted");
    assert_eq!(live(at(40)).await, vec![a30]);
    let whole = store.history(&at(40)).await.unwrap();
    assert_eq!(whole, entries_of(&store, a.id).await[..1].to_vec());

    // The other filters apply to what was live.
    let with = |f: &dyn Fn(&mut HistoryQuery)| {
        let mut q = at(22);
        f(&mut q);
        q
    };
    assert_eq!(live(with(&|q| q.source_id = Some(a.id))).await, vec![a20]);
    assert_eq!(live(with(&|q| q.source_id = Some(b.id))).await, vec![b15]);
    let mut later_b = at(26);
    later_b.source_id = Some(b.id);
    assert_eq!(live(later_b).await, Vec::<i64>::new());
    assert_eq!(
        live(with(&|q| q.namespace = Some("staging".into()))).await,
        vec![b15]
    );
    assert_eq!(
        live(with(&|q| q.namespace = Some("production".into()))).await,
        vec![a20]
    );
    assert_eq!(
        live(with(&|q| q.outcome = Some(Outcome::Deployed))).await,
        vec![b15],
        "a's deploy at 10 was not live at 22"
    );
    assert_eq!(
        live(with(&|q| q.outcome = Some(Outcome::Failed))).await,
        vec![a20]
    );
    assert_eq!(live(with(&|q| q.limit = 1)).await, vec![a20]);
    assert_eq!(live(with(&|q| q.before = Some(a20))).await, vec![b15]);
    assert_eq!(live(with(&|q| q.since = Some(t(16)))).await, vec![a20]);
    assert_eq!(
        live(with(&|q| q.applied = true)).await,
        vec![a20],
        "b's deploy kept no manifests"
    );

    // `applied` without an instant: every entry that applied a render.
    let applied_only = |f: &dyn Fn(&mut HistoryQuery)| {
        let mut q = HistoryQuery {
            applied: true,
            limit: 50,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(live(applied_only(&|_| {})).await, vec![a30, a20, a10]);
    assert_eq!(live(applied_only(&|q| q.limit = 2)).await, vec![a30, a20]);
    assert_eq!(
        live(applied_only(&|q| q.source_id = Some(b.id))).await,
        Vec::<i64>::new()
    );
    assert_eq!(
        live(applied_only(&|q| q.outcome = Some(Outcome::Failed))).await,
        vec![a20]
    );
}

pub async fn auto_rollback_round_trips(store: Arc<dyn Store>) {
    let values = [None, Some(true), Some(false)];
    let mut sources = Vec::new();
    for (name, value) in ["a", "b", "c"].into_iter().zip(values) {
        let mut s = spec(name);
        s.auto_rollback = value;
        let created = store.create_source(&s, t(0)).await.unwrap();
        assert_eq!(created.spec, s);
        assert_eq!(store.get_source(created.id).await.unwrap().unwrap().spec, s);
        sources.push((created.id, s));
    }
    let listed = store.list_sources().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.spec.clone()).collect::<Vec<_>>(),
        sources.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()
    );
    // Each to each other value.
    for (i, (id, s)) in sources.iter_mut().enumerate() {
        for step in 1..=3 {
            s.auto_rollback = values[(i + step) % 3];
            let updated = store.update_source(*id, s, t(step as i64)).await.unwrap();
            assert_eq!(updated.spec, *s);
            assert_eq!(store.get_source(*id).await.unwrap().unwrap().spec, *s);
            let listed = store.list_sources().await.unwrap();
            assert_eq!(listed.iter().find(|l| l.id == *id).unwrap().spec, *s);
        }
    }
}

pub async fn service_account_round_trips(store: Arc<dyn Store>) {
    // Stored as given: a bare name (the source's namespace) stays bare.
    let values = [None, Some("deployer"), Some("team-a/deployer")];
    let mut sources = Vec::new();
    for (name, value) in ["a", "b", "c"].into_iter().zip(values) {
        let mut s = spec(name);
        s.service_account = value.map(str::to_string);
        let created = store.create_source(&s, t(0)).await.unwrap();
        assert_eq!(created.spec, s);
        assert_eq!(store.get_source(created.id).await.unwrap().unwrap().spec, s);
        sources.push((created.id, s));
    }
    let listed = store.list_sources().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.spec.clone()).collect::<Vec<_>>(),
        sources.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()
    );
    // Each to each other value, and claims carry it.
    for (i, (id, s)) in sources.iter_mut().enumerate() {
        for step in 1..=3 {
            s.service_account = values[(i + step) % 3].map(str::to_string);
            let updated = store.update_source(*id, s, t(step as i64)).await.unwrap();
            assert_eq!(updated.spec, *s);
            assert_eq!(store.get_source(*id).await.unwrap().unwrap().spec, *s);
            let listed = store.list_sources().await.unwrap();
            assert_eq!(listed.iter().find(|l| l.id == *id).unwrap().spec, *s);
        }
    }
    let claims = store.claim_due(t(100), 10, "owner-1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 3);
    for c in claims {
        let (_, s) = sources.iter().find(|(id, _)| *id == c.source.id).unwrap();
        assert_eq!(c.source.spec.service_account, s.service_account);
    }
}

/// Listing sources with their statuses: all by id, or a page above an id,
/// each with the status its own list and single reads give.
pub async fn sources_list_with_statuses_in_pages(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        ids.push(store.create_source(&spec(name), t(0)).await.unwrap().id);
    }
    // One source checked (failed), the others only scheduled.
    let claim = store
        .claim_due(t(0), 1, "p1", LEASE)
        .await
        .unwrap()
        .remove(0);
    store
        .finish_check(&claim, &report(&claim, Outcome::Failed, t(1)), t(181))
        .await
        .unwrap();
    store.delete_source(ids[3], false).await.unwrap();
    let live: Vec<i64> = ids.iter().copied().filter(|id| *id != ids[3]).collect();

    let all = store.list_sources_with_status(None, None).await.unwrap();
    assert_eq!(all.iter().map(|(s, _)| s.id).collect::<Vec<_>>(), live);
    let statuses = store.list_statuses().await.unwrap();
    for (source, status) in &all {
        assert_eq!(
            store.get_source(source.id).await.unwrap().as_ref(),
            Some(source)
        );
        assert_eq!(
            Some(status),
            statuses.get(&source.id),
            "source {}",
            source.id
        );
    }
    let checked = all.iter().find(|(s, _)| s.id == claim.source.id).unwrap();
    assert_eq!(checked.1.last_outcome, Some(Outcome::Failed));

    let first = store.list_sources_with_status(None, Some(2)).await.unwrap();
    assert_eq!(
        first.iter().map(|(s, _)| s.id).collect::<Vec<_>>(),
        live[..2]
    );
    let next = store
        .list_sources_with_status(Some(live[1]), Some(2))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|(s, _)| s.id).collect::<Vec<_>>(),
        live[2..4]
    );
    let last = store
        .list_sources_with_status(Some(live[3]), Some(2))
        .await
        .unwrap();
    assert!(last.is_empty(), "{last:?}");
    let past = store
        .list_sources_with_status(Some(i64::MAX - 1), None)
        .await
        .unwrap();
    assert!(past.is_empty());
}

/// Checks asked for many sources at once (a push): each source gets what
/// `request_check` would give it — queued, already queued, queued after the
/// running check or not for a manual request, not found, being deleted —
/// and only the queued ones become due.
pub async fn checks_are_requested_in_batches(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for name in ["idle", "asked", "running", "deleting"] {
        ids.push(store.create_source(&spec(name), t(0)).await.unwrap().id);
    }
    let [idle, asked, running, deleting] = [ids[0], ids[1], ids[2], ids[3]];
    // Everything checked once, due at t(300); then `asked` gets a request,
    // `running` is claimed again, and `deleting` (something to prune) is
    // deleted with prune.
    let claims = store.claim_due(t(0), 4, "p1", LEASE).await.unwrap();
    for claim in &claims {
        let mut r = report(claim, Outcome::UpToDate, t(0));
        if claim.source.id == deleting {
            r = with_inventory(
                report(claim, Outcome::Deployed, t(0)),
                &inventory("c1", &["x"]),
            );
        }
        store.finish_check(claim, &r, t(300)).await.unwrap();
    }
    // `running` was asked for first, so the claim takes it.
    store
        .request_check(running, Trigger::Manual, t(4))
        .await
        .unwrap();
    store
        .request_check(asked, Trigger::Manual, t(5))
        .await
        .unwrap();
    let claim = store.claim_due(t(6), 1, "p1", LEASE).await.unwrap();
    assert_eq!(claim.len(), 1);
    assert_eq!(claim[0].source.id, running);
    assert_eq!(
        store.delete_source(deleting, true).await.unwrap(),
        Deletion::Pruning
    );

    let batch = [idle, asked, running, 999_999, deleting];
    let manual = store
        .request_checks(&batch, Trigger::Manual, t(10))
        .await
        .unwrap();
    assert!(matches!(manual[0], Ok(RequestResult::Queued)), "{manual:?}");
    assert!(
        matches!(manual[1], Ok(RequestResult::AlreadyQueued)),
        "{manual:?}"
    );
    assert!(
        matches!(manual[2], Ok(RequestResult::AlreadyRunning)),
        "{manual:?}"
    );
    assert!(
        matches!(manual[3], Err(StoreError::NotFound(999_999))),
        "{manual:?}"
    );
    assert!(
        matches!(manual[4], Err(StoreError::BeingDeleted(_))),
        "{manual:?}"
    );
    let st = store.status(idle).await.unwrap().unwrap();
    assert_eq!(
        (st.requested, st.next_check_at),
        (Some(Trigger::Manual), Some(t(10)))
    );
    let st = store.status(running).await.unwrap().unwrap();
    assert_eq!(
        st.requested, None,
        "a manual request while running adds nothing"
    );

    let pushed = store
        .request_checks(&[running, idle], Trigger::Webhook, t(11))
        .await
        .unwrap();
    assert!(
        matches!(pushed[0], Ok(RequestResult::QueuedAfterRunning)),
        "{pushed:?}"
    );
    assert!(
        matches!(pushed[1], Ok(RequestResult::AlreadyQueued)),
        "{pushed:?}"
    );
    let st = store.status(running).await.unwrap().unwrap();
    assert_eq!(st.requested, Some(Trigger::Webhook));
    assert_eq!(
        store.status(idle).await.unwrap().unwrap().requested,
        Some(Trigger::Manual),
        "an earlier request is kept"
    );
    assert!(store
        .request_checks(&[], Trigger::Manual, t(12))
        .await
        .unwrap()
        .is_empty());
}

/// Quiet checks recorded in one batch: each as `finish_check` records it —
/// status, schedule and lease released, no history — except where the lease
/// is another's (skipped), and due at once where the source changed or a
/// check was asked for meanwhile. A quiet report through `finish_check`
/// is recorded the same way.
pub async fn quiet_checks_are_recorded_in_batches(store: Arc<dyn Store>) {
    use chump_jobs::store::{is_quiet, QuietCheck};
    let mut ids = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        ids.push(store.create_source(&spec(name), t(0)).await.unwrap().id);
    }
    let claims = store.claim_due(t(0), 5, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 5);
    let claim_of = |id| claims.iter().find(|c| c.source.id == id).unwrap();
    // p1 renews every lease but b's, which expires and p2 takes; c is
    // updated and d gets a check request while their checks run.
    let kept: Vec<_> = [0, 2, 3, 4].map(|i| ids[i]).to_vec();
    let renewed = store.renew_leases("p1", &kept, t(300)).await.unwrap();
    assert_eq!(sorted(renewed), sorted(kept));
    let later = t(0) + LEASE + Duration::from_secs(1);
    let taken = store.claim_due(later, 5, "p2", LEASE).await.unwrap();
    let taken: Vec<_> = taken.iter().map(|c| c.source.id).collect();
    assert_eq!(taken, vec![ids[1]]);
    let mut changed = spec("c");
    changed.branch = "main".into();
    store.update_source(ids[2], &changed, t(1)).await.unwrap();
    assert_eq!(
        store
            .request_check(ids[3], Trigger::Webhook, t(1))
            .await
            .unwrap(),
        RequestResult::QueuedAfterRunning
    );
    let reports: Vec<CheckReport> = ids[..4]
        .iter()
        .map(|&id| {
            let mut r = report(claim_of(id), Outcome::UpToDate, t(2));
            r.message = Some(format!("steady {id}"));
            r
        })
        .collect();
    for (id, r) in ids.iter().zip(&reports) {
        assert!(is_quiet(claim_of(*id), r), "an up_to_date check is quiet");
    }
    let batch: Vec<QuietCheck> = ids[..4]
        .iter()
        .zip(&reports)
        .map(|(&id, report)| QuietCheck {
            claim: claim_of(id),
            report,
            next_check_at: t(600),
        })
        .collect();
    store.finish_quiet_checks(&batch).await.unwrap();

    let a = store.status(ids[0]).await.unwrap().unwrap();
    assert_eq!(a.last_outcome, Some(Outcome::UpToDate));
    assert_eq!(a.last_checked_at, Some(t(3)));
    assert_eq!(
        a.last_message.as_deref(),
        Some(format!("steady {}", ids[0]).as_str())
    );
    assert_eq!(a.running_image.as_deref(), Some("nginx:1.1"));
    assert_eq!(a.next_check_at, Some(t(600)));
    assert!(!a.in_flight, "the lease is released");

    let b = store.status(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (b.last_outcome, b.last_checked_at),
        (None, None),
        "p2 holds b: p1's result is not written"
    );
    assert!(b.in_flight);

    let c = store.status(ids[2]).await.unwrap().unwrap();
    assert_eq!(c.last_outcome, Some(Outcome::UpToDate));
    assert_eq!(
        c.next_check_at,
        Some(t(3)),
        "updated meanwhile: due at once"
    );
    let d = store.status(ids[3]).await.unwrap().unwrap();
    assert_eq!(
        d.next_check_at,
        Some(t(3)),
        "a check was asked for: due at once"
    );
    assert_eq!(
        d.requested,
        Some(Trigger::Webhook),
        "the request stays for its claim"
    );
    assert!(store.history(&all_history()).await.unwrap().is_empty());

    // A quiet failure-free check after a failure resets the count, through
    // finish_check as through the batch; e (never in the batch) is unchanged.
    let e = store.status(ids[4]).await.unwrap().unwrap();
    assert!(e.in_flight && e.last_outcome.is_none(), "{e:?}");
    let claim_e = claim_of(ids[4]);
    let quiet = report(claim_e, Outcome::UpToDate, t(4));
    store.finish_check(claim_e, &quiet, t(700)).await.unwrap();
    let e = store.status(ids[4]).await.unwrap().unwrap();
    assert_eq!(
        (e.last_outcome, e.next_check_at, e.in_flight),
        (Some(Outcome::UpToDate), Some(t(700)), false)
    );
    // An empty batch writes nothing and is no error.
    store.finish_quiet_checks(&[]).await.unwrap();
}

/// The store's data version after a write: it must have moved forward.
async fn moved(store: &Arc<dyn Store>, before: u64, what: &str) -> u64 {
    let after = store
        .data_version()
        .await
        .unwrap()
        .expect("the version stays kept");
    assert!(
        after > before,
        "{what} left the data version at {before} (now {after})"
    );
    after
}

/// A store that keeps a data version moves it forward with every committed
/// write (sources, claims, renewals, reports, requests, deletes) and not
/// with reads; a status in flight says when its lease ends, in `status`
/// and in the listing, and a finished check clears it.
pub async fn data_version_moves_with_every_write(store: Arc<dyn Store>) {
    let Some(v) = store.data_version().await.unwrap() else {
        // A store that cannot tell says so every time.
        store.create_source(&spec("a"), t(0)).await.unwrap();
        assert_eq!(store.data_version().await.unwrap(), None);
        return;
    };
    assert_eq!(
        store.data_version().await.unwrap(),
        Some(v),
        "nothing moved the version"
    );
    let a = store.create_source(&spec("a"), t(0)).await.unwrap();
    let v = moved(&store, v, "create_source").await;
    store.get_source(a.id).await.unwrap();
    store.list_sources_with_status(None, None).await.unwrap();
    store.status(a.id).await.unwrap();
    assert_eq!(
        store.data_version().await.unwrap(),
        Some(v),
        "reads moved the version"
    );
    let claims = store.claim_due(t(1), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    let v = moved(&store, v, "claim_due").await;
    let ms = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    let until = store.status(a.id).await.unwrap().unwrap().in_flight_until;
    assert_eq!(until.map(ms), Some(ms(claims[0].lease_until)));
    let listed = store.list_sources_with_status(None, None).await.unwrap();
    assert_eq!(
        listed[0].1.in_flight_until.map(ms),
        Some(ms(claims[0].lease_until))
    );
    let later = t(1) + LEASE + LEASE;
    store.renew_leases("p1", &[a.id], later).await.unwrap();
    let v = moved(&store, v, "renew_leases").await;
    let until = store.status(a.id).await.unwrap().unwrap().in_flight_until;
    assert_eq!(until.map(ms), Some(ms(later)));
    store
        .finish_check(
            &claims[0],
            &report(&claims[0], Outcome::UpToDate, t(2)),
            t(100),
        )
        .await
        .unwrap();
    let v = moved(&store, v, "finish_check").await;
    let status = store.status(a.id).await.unwrap().unwrap();
    assert!(
        !status.in_flight && status.in_flight_until.is_none(),
        "{status:?}"
    );
    store
        .request_check(a.id, Trigger::Manual, t(3))
        .await
        .unwrap();
    let v = moved(&store, v, "request_check").await;
    // A quiet check recorded in a batch.
    let claims = store.claim_due(t(4), 10, "p1", LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    let v = moved(&store, v, "claim_due").await;
    let quiet = report(&claims[0], Outcome::UpToDate, t(4));
    store
        .finish_quiet_checks(&[chump_jobs::store::QuietCheck {
            claim: &claims[0],
            report: &quiet,
            next_check_at: t(100),
        }])
        .await
        .unwrap();
    let v = moved(&store, v, "finish_quiet_checks").await;
    assert!(!store.status(a.id).await.unwrap().unwrap().in_flight);
    let mut changed = spec("a");
    changed.branch = "main".into();
    store.update_source(a.id, &changed, t(4)).await.unwrap();
    let v = moved(&store, v, "update_source").await;
    store.delete_source(a.id, false).await.unwrap();
    moved(&store, v, "delete_source").await;
}

/// One `#[tokio::test]` per conformance case; `$make` is an async expression
/// giving a fresh `Arc<dyn Store>` (or `None` to skip, e.g. no server).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            crud, duplicates, concurrent_creates, new_sources_are_due_at_once,
            leases_exclude_and_expire, concurrent_claims_never_overlap,
            finishing_records_status_and_history, changes_during_a_check_make_it_due_again,
            requested_checks, suspended_sources, history_outlives_its_source_and_pages,
            deleted_sources_are_never_claimed, renewing_keeps_a_lease_past_its_first_end,
            leases_taken_by_another_are_not_renewed, renewing_leases_never_held_returns_none,
            finishing_after_the_lease_was_lost_writes_nothing,
            inventories_are_recorded_with_the_status, a_lost_lease_writes_no_inventory,
            deleted_sources_have_no_inventory, prune_defaults_on_and_round_trips,
            deleting_with_prune_and_nothing_applied_deletes_at_once,
            deleting_with_prune_waits_for_the_prune, a_plain_delete_abandons_a_prune,
            a_prune_whose_lease_was_lost_deletes_nothing,
            a_check_running_at_a_delete_with_prune_is_followed_by_the_prune,
            degraded_spells_are_kept_where_they_start_and_end,
            superseded_checks_are_kept_and_are_no_failures,
            manifests_are_kept_with_their_entry,
            old_manifests_are_dropped_but_the_last_success_keeps_them,
            rollbacks_are_claimed_with_their_order, pins_are_set_kept_and_cleared,
            history_at_an_instant_shows_what_was_live, auto_rollback_round_trips,
            service_account_round_trips, sources_list_with_statuses_in_pages,
            quiet_checks_are_recorded_in_batches, checks_are_requested_in_batches,
            data_version_moves_with_every_write);
    };
    (@cases $make:expr; $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(store) = $make.await else { return };
                $crate::support::conformance::$case(store).await;
            }
        )+
    };
}
