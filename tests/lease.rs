//! The lease keeper and the scheduler's claims on a real SQLite store:
//! leases renewed well past their first end, lost when another process took
//! them, kept for a source deleted mid-check, not reported lost while the
//! result is recorded, lost once their end passes without the store; and a
//! source claimed again while its check is in flight starts no second check.
//!
//! Leases are short (600 ms) so the tests are fast; every wait has a
//! deadline.

mod support;

use std::future::Future;
use std::io::Write;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chump::store::sqlite::SqliteStore;
use chump_jobs::history::{Outcome, Trigger};
use chump_jobs::lease::{keep, LeaseGuard};
use chump_jobs::scheduler::{self, Load, SchedulerConfig};
use chump_jobs::source::SourceId;
use chump_jobs::store::{Claim, Store};
use chump_jobs::worker::CheckJob;
use support::conformance::{report, spec};
use time::OffsetDateTime;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_millis(600);
/// Longest any awaited condition may take.
const DEADLINE: Duration = Duration::from_secs(5);

/// A fresh SQLite store in a temporary directory (removed with the guard).
async fn sqlite() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::Builder::new()
        .prefix("lease-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let store = SqliteStore::open(dir.path().join("chump.db").to_str().unwrap())
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// Creates one source per name (due at once) and claims them all as `owner`.
async fn claimed(store: &SqliteStore, owner: &str, names: &[&str]) -> Vec<Claim> {
    let now = OffsetDateTime::now_utc();
    for name in names {
        store.create_source(&spec(name), now).await.unwrap();
    }
    let claims = store
        .claim_due(OffsetDateTime::now_utc(), names.len(), owner, LEASE)
        .await
        .unwrap();
    assert_eq!(claims.len(), names.len(), "every new source is due");
    claims
}

fn guard(claim: &Claim) -> LeaseGuard {
    LeaseGuard::new(claim.source.id, claim.lease_until)
}

/// The keeper of owner "p1" over `store`, renewing `guards` (as if the
/// scheduler had claimed them); more may be added to the returned load.
fn keeper(store: Arc<SqliteStore>, guards: &[&LeaseGuard]) -> (Arc<Load>, CancellationToken) {
    let load = Arc::new(Load::default());
    for g in guards {
        hold(&load, g);
    }
    let stop = CancellationToken::new();
    tokio::spawn(keep(store, load.clone(), "p1".into(), LEASE, stop.clone()));
    (load, stop)
}

fn hold(load: &Load, g: &LeaseGuard) {
    load.claimed
        .lock()
        .unwrap()
        .insert(g.source_id(), g.clone());
}

async fn lost_within(g: &LeaseGuard, within: Duration) -> bool {
    tokio::time::timeout(within, g.lost()).await.is_ok()
}

/// Polls `probe` every 20 ms until it returns something, for at most
/// [`DEADLINE`].
async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids another owner, "p2", manages to claim now.
async fn p2_claims(store: &SqliteStore) -> Vec<SourceId> {
    store
        .claim_due(OffsetDateTime::now_utc(), 10, "p2", LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.source.id)
        .collect()
}

#[tokio::test]
async fn the_keeper_renews_held_leases_and_loses_taken_ones() {
    let (_dir, store) = sqlite().await;
    let claims = claimed(&store, "p1", &["kept", "taken"]).await;
    let (kept, taken) = (guard(&claims[0]), guard(&claims[1]));
    let first_end = claims[0].lease_until;
    // Only `kept` is renewed: `taken`'s lease expires, and p2 takes it.
    let (load, stop) = keeper(store.clone(), &[&kept]);
    let got = poll("p2 to take the expired lease", || async {
        let got = p2_claims(&store).await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got, vec![claims[1].source.id], "p2 took a renewed lease");
    assert!(OffsetDateTime::now_utc() >= claims[1].lease_until);

    // p1 still thinks it holds `taken`: the keeper finds it is p2's.
    hold(&load, &taken);
    assert!(
        lost_within(&taken, DEADLINE).await,
        "a lease taken by another process was not reported lost"
    );

    // `kept` is renewed well past its first end: p2 never gets it.
    poll("two more leases to pass", || async {
        let got = p2_claims(&store).await;
        assert!(
            !got.contains(&claims[0].source.id),
            "p2 claimed a lease p1's keeper renews"
        );
        (OffsetDateTime::now_utc() > first_end + LEASE * 2).then_some(())
    })
    .await;
    assert!(!kept.is_lost(), "a renewed lease was reported lost");
    assert!(kept.held());
    assert!(kept.until() > first_end + LEASE * 2);
    stop.cancel();
}

#[tokio::test]
async fn a_check_of_a_source_deleted_mid_check_goes_on() {
    let (_dir, store) = sqlite().await;
    let claims = claimed(&store, "p1", &["deleted"]).await;
    let deleted = guard(&claims[0]);
    let first_end = claims[0].lease_until;
    store
        .delete_source(claims[0].source.id, false)
        .await
        .unwrap();
    let (_load, stop) = keeper(store.clone(), &[&deleted]);
    assert!(
        !lost_within(&deleted, LEASE * 2).await,
        "the lease of a deleted source was reported lost"
    );
    // Past its first end: held because the keeper extended it.
    assert!(OffsetDateTime::now_utc() > first_end);
    assert!(deleted.held(), "the lease of a deleted source ran out");
    assert!(deleted.until() > first_end);
    stop.cancel();
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, containing: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(containing))
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test]
async fn a_recording_check_stops_without_being_reported_lost() {
    // This test's runtime is single-threaded: the keeper logs here.
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let (_dir, store) = sqlite().await;
    let claims = claimed(&store, "p1", &["recording", "released"]).await;
    let (recording, released) = (guard(&claims[0]), guard(&claims[1]));
    // The worker marks its guard recording, then records the result, which
    // releases the lease; the other lease is released without a record.
    recording.set_recording();
    let now = OffsetDateTime::now_utc();
    store
        .finish_check(
            &claims[0],
            &report(&claims[0], Outcome::UpToDate, now),
            now + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    store
        .release_claims("p1", &[claims[1].source.id])
        .await
        .unwrap();
    let (_load, stop) = keeper(store.clone(), &[&recording, &released]);
    assert!(lost_within(&released, DEADLINE).await);
    assert!(
        lost_within(&recording, DEADLINE).await,
        "a released lease's check did not stop"
    );
    let lost = logs.lines("lease lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0].contains(&format!("source_id={}", claims[1].source.id)),
        "{lost:?}"
    );
    stop.cancel();
}

#[tokio::test]
async fn without_the_store_a_check_goes_on_until_its_lease_ends() {
    let (_dir, store) = sqlite().await;
    let claims = claimed(&store, "p1", &["outage"]).await;
    let g = guard(&claims[0]);
    let end = claims[0].lease_until;
    // The store cannot be reached any more: every call fails.
    store.close().await;
    assert!(store.ping().await.is_err());
    let (_load, stop) = keeper(store.clone(), &[&g]);
    let before_end = Duration::try_from(end - OffsetDateTime::now_utc()).unwrap_or_default();
    assert!(
        !lost_within(&g, before_end.saturating_sub(Duration::from_millis(50))).await,
        "lost before its end"
    );
    assert!(
        lost_within(&g, DEADLINE).await,
        "a lease past its end without the store was not lost"
    );
    assert!(OffsetDateTime::now_utc() >= end);
    stop.cancel();
}

#[tokio::test]
async fn a_source_claimed_again_while_in_flight_starts_no_second_check() {
    let (_dir, store) = sqlite().await;
    let id = store
        .create_source(&spec("again"), OffsetDateTime::now_utc())
        .await
        .unwrap()
        .id;
    // The scheduler alone, with no keeper and no worker: the test holds the
    // queue, so the claimed check stays in flight, and its lease expires
    // (as in a process paused longer than a lease).
    let load = Arc::new(Load::default());
    let (tx, mut rx) = mpsc::channel::<CheckJob>(8);
    let shutdown = CancellationToken::new();
    let config = SchedulerConfig {
        workers: 4,
        interval: Duration::from_secs(3600),
        lease: LEASE,
        max_sleep: Duration::from_millis(200),
        owner: "p1".into(),
        queue_ahead: true,
    };
    let task = tokio::spawn(scheduler::run(
        store.clone(),
        config,
        load.clone(),
        tx,
        Arc::new(Notify::new()),
        Arc::new(AtomicI64::new(0)),
        shutdown.clone(),
    ));
    let first = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("the due source is queued")
        .unwrap();
    assert_eq!(first.claim.source.id, id);
    // A webhook push arrives while it runs: another check must follow.
    let pushed = store
        .request_check(id, Trigger::Webhook, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(pushed, chump_jobs::store::RequestResult::QueuedAfterRunning);

    // Once the lease expires the store hands the source to p1 again, with
    // the push's request: the running check goes on under the new lease.
    poll("the source to be claimed again", || async {
        (first.lease.until() > first.claim.lease_until).then_some(())
    })
    .await;
    assert!(rx.try_recv().is_err(), "the source was queued twice");
    let held = load.claimed.lock().unwrap().get(&id).cloned().unwrap();
    assert!(held.same(&first.lease), "the running check keeps its lease");
    // The claim took the push's request: it is asked for again, to follow
    // the running check.
    poll("the push's check to be asked for again", || async {
        let st = store.status(id).await.unwrap().unwrap();
        (st.requested == Some(Trigger::Webhook)).then_some(())
    })
    .await;

    // A lost lease no longer counts: the next claim queues a new check.
    first.lease.lose("test");
    let second = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a new check once the old lease is lost")
        .unwrap();
    assert_eq!(second.claim.source.id, id);
    assert!(!second.lease.same(&first.lease));
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the scheduler stops")
        .unwrap();
}

#[tokio::test]
async fn the_scheduler_claims_a_queue_ahead_of_its_workers_and_refills_it() {
    let (_dir, store) = sqlite().await;
    let now = OffsetDateTime::now_utc();
    for i in 0..40 {
        store
            .create_source(&spec(&format!("due-{i}")), now)
            .await
            .unwrap();
    }
    // Two workers: the scheduler holds a check for each and a queue behind
    // them. The test is the worker pool: it takes jobs off the queue.
    let config = SchedulerConfig {
        workers: 2,
        interval: Duration::from_secs(3600),
        lease: Duration::from_secs(60),
        max_sleep: Duration::from_millis(200),
        owner: "p1".into(),
        queue_ahead: true,
    };
    let (ahead, refill_at) = (config.claim_ahead(), config.refill_at());
    assert!(
        ahead > refill_at && refill_at > config.workers,
        "{ahead} {refill_at}"
    );
    assert!(ahead < 40);
    let load = Arc::new(Load::default());
    let (tx, mut rx) = mpsc::channel::<CheckJob>(ahead);
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scheduler::run(
        store.clone(),
        config,
        load.clone(),
        tx,
        wake.clone(),
        Arc::new(AtomicI64::new(0)),
        shutdown.clone(),
    ));
    let in_flight = || async {
        store
            .list_statuses()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, st)| st.in_flight)
            .count()
    };
    let mut jobs = Vec::new();
    for _ in 0..ahead {
        jobs.push(
            tokio::time::timeout(DEADLINE, rx.recv())
                .await
                .expect("a queue's worth of claims")
                .unwrap(),
        );
    }
    assert_eq!(in_flight().await, ahead, "exactly claim_ahead claims held");
    assert_eq!(load.claimed.lock().unwrap().len(), ahead);

    // Checks end (recorded, their claims let go) until half the queue has
    // drained: the scheduler claims again, up to claim_ahead.
    let done = ahead - refill_at;
    for job in jobs.drain(..done) {
        let claim = &job.claim;
        store
            .finish_check(
                claim,
                &report(claim, Outcome::UpToDate, OffsetDateTime::now_utc()),
                OffsetDateTime::now_utc() + Duration::from_secs(3600),
            )
            .await
            .unwrap();
        load.claimed.lock().unwrap().remove(&claim.source.id);
        wake.notify_one();
    }
    for _ in 0..done {
        let job = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("the queue is refilled")
            .unwrap();
        assert!(
            jobs.iter()
                .all(|j| j.claim.source.id != job.claim.source.id),
            "a held source was claimed again"
        );
        jobs.push(job);
    }
    poll("claim_ahead claims held again", || async {
        (in_flight().await == ahead).then_some(())
    })
    .await;
    assert_eq!(load.claimed.lock().unwrap().len(), ahead);
    shutdown.cancel();
    task.await.unwrap();
}

/// Quiet results handed to the recorder before it starts, with its stop
/// already asked for: everything handed over is still written, the claims
/// let go; a result whose lease was lost is not written.
#[tokio::test]
async fn the_recorder_writes_what_it_was_handed_and_lets_go_of_the_claims() {
    use chump_jobs::recorder::{self, QuietRecord};
    let (_dir, store) = sqlite().await;
    let claims = claimed(&store, "p1", &["a", "b", "c", "lost"]).await;
    let load = Arc::new(Load::default());
    let (queue, handed) = mpsc::unbounded_channel();
    let next = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    let mut guards = Vec::new();
    for claim in &claims {
        let lease = guard(claim);
        hold(&load, &lease);
        if claim.source.spec.deployment_name == "lost" {
            lease.lose("taken by another process (test)");
        }
        guards.push(lease.clone());
        queue
            .send(QuietRecord {
                claim: claim.clone(),
                lease,
                report: report(claim, Outcome::UpToDate, OffsetDateTime::now_utc()),
                next_check_at: next,
            })
            .unwrap();
    }
    let stop = CancellationToken::new();
    stop.cancel();
    let wake = Arc::new(Notify::new());
    tokio::time::timeout(
        DEADLINE,
        recorder::run(store.clone(), load.clone(), wake, handed, stop),
    )
    .await
    .expect("the recorder stops once what it was handed is written");
    assert!(
        load.claimed.lock().unwrap().is_empty(),
        "every claim let go"
    );
    for claim in &claims {
        let st = store.status(claim.source.id).await.unwrap().unwrap();
        if claim.source.spec.deployment_name == "lost" {
            assert_eq!(
                st.last_outcome, None,
                "a lost lease's result is written: {st:?}"
            );
        } else {
            assert_eq!(st.last_outcome, Some(Outcome::UpToDate), "{st:?}");
            assert!(!st.in_flight, "the lease is released: {st:?}");
            let due = st.next_check_at.unwrap();
            assert!(
                (due - next).abs() < time::Duration::milliseconds(1),
                "{due} {next}"
            );
        }
    }
    drop(queue);
}

/// Where other processes claim from the store too (a fleet), the scheduler
/// claims only for its free workers: nothing waits in this replica's queue
/// while another replica could run it.
#[tokio::test]
async fn without_a_queue_ahead_the_scheduler_claims_only_for_free_workers() {
    let (_dir, store) = sqlite().await;
    let now = OffsetDateTime::now_utc();
    for i in 0..10 {
        store
            .create_source(&spec(&format!("due-{i}")), now)
            .await
            .unwrap();
    }
    let config = SchedulerConfig {
        workers: 2,
        interval: Duration::from_secs(3600),
        lease: Duration::from_secs(60),
        max_sleep: Duration::from_millis(50),
        owner: "p1".into(),
        queue_ahead: false,
    };
    assert_eq!((config.claim_ahead(), config.refill_at()), (2, 1));
    let load = Arc::new(Load::default());
    let (tx, mut rx) = mpsc::channel::<CheckJob>(config.claim_ahead());
    let wake = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scheduler::run(
        store.clone(),
        config,
        load.clone(),
        tx,
        wake.clone(),
        Arc::new(AtomicI64::new(0)),
        shutdown.clone(),
    ));
    let held = || async {
        store
            .list_statuses()
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, st)| st.in_flight)
            .count()
    };
    let first = next_job(&mut rx).await;
    let _second = next_job(&mut rx).await;
    // Both workers busy: the scheduler, woken and ticking every 50 ms,
    // claims nothing more until one is free.
    wake.notify_one();
    assert_eq!(held().await, 2, "claims for the two workers only");
    let claim = &first.claim;
    store
        .finish_check(
            claim,
            &report(claim, Outcome::UpToDate, OffsetDateTime::now_utc()),
            OffsetDateTime::now_utc() + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    load.claimed.lock().unwrap().remove(&claim.source.id);
    wake.notify_one();
    let third = next_job(&mut rx).await;
    assert_ne!(third.claim.source.id, first.claim.source.id);
    assert_eq!(held().await, 2, "one claim for the one free worker");
    assert!(rx.try_recv().is_err(), "nothing queued ahead");
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the scheduler stops")
        .unwrap();
}

async fn next_job(rx: &mut mpsc::Receiver<CheckJob>) -> CheckJob {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a claim")
        .unwrap()
}
