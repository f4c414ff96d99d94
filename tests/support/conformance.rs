//! The store conformance suite: one set of tests that every [`Store`]
//! backend must pass. A backend's test file calls
//! `conformance_tests!(async_constructor)` to get one `#[tokio::test]` per
//! case, each on a fresh, empty store.

use std::sync::Arc;
use std::time::Duration;

use chump_jobs::history::{AppliedObject, ApplyAction, CheckReport, Outcome, Stage, Trigger};
use chump_jobs::inventory::{Inventory, InventoryObject};
use chump_jobs::source::SourceSpec;
use chump_jobs::store::{Claim, Deletion, HistoryQuery, RequestResult, Store, StoreError};
use time::OffsetDateTime;

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
            superseded_checks_are_kept_and_are_no_failures);
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
