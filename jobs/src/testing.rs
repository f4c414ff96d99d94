//! A scripted [`Store`] for the unit tests of the scheduler and the lease
//! keeper: it answers only what those call, from what the test set up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::history::{CheckReport, HistoryEntry, Trigger};
use crate::source::{Source, SourceId, SourceSpec};
use crate::store::{
    Claim, HistoryQuery, RequestResult, SourceStatus, Store, StoreError, StoreResult,
};

#[derive(Default)]
pub struct FakeStore {
    /// Handed out by the next `claim_due`.
    pub claims: Mutex<Vec<Claim>>,
    /// What `renew_leases` keeps; None: the store is unavailable.
    pub keep: Mutex<Option<Vec<SourceId>>>,
    pub renewals: AtomicUsize,
    /// `request_check` calls.
    pub requests: Mutex<Vec<(SourceId, Trigger)>>,
    /// `release_claims` calls.
    pub released: Mutex<Vec<SourceId>>,
    /// Sources `get_source` does not find (deleted); it finds all others.
    pub gone: Mutex<Vec<SourceId>>,
}

impl FakeStore {
    pub fn renewals(&self) -> usize {
        self.renewals.load(Ordering::SeqCst)
    }
}

pub fn claim(id: SourceId, trigger: Trigger, lease: Duration) -> Claim {
    let now = OffsetDateTime::now_utc();
    Claim {
        source: Source {
            id,
            spec: SourceSpec {
                namespace: "ns".into(),
                deployment_name: format!("app-{id}"),
                git_url: "https://example.com/repo.git".into(),
                branch: "main".into(),
                deploy_path: "deploy".into(),
                container_name: "app".into(),
                image_version_file: "deploy/deployment.yaml".into(),
                interval_seconds: None,
                suspended: false,
            },
            revision: 1,
            created_at: now,
            updated_at: now,
        },
        trigger,
        consecutive_failures: 0,
        due_at: now,
        owner: "p1".into(),
        lease_until: now + lease,
    }
}

fn unused<T>() -> StoreResult<T> {
    Err(StoreError::Backend("not scripted".into()))
}

#[async_trait]
impl Store for FakeStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn create_source(&self, _: &SourceSpec, _: OffsetDateTime) -> StoreResult<Source> {
        unused()
    }
    async fn get_source(&self, id: SourceId) -> StoreResult<Option<Source>> {
        let gone = self.gone.lock().unwrap().contains(&id);
        Ok((!gone).then(|| claim(id, Trigger::Schedule, Duration::ZERO).source))
    }
    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        unused()
    }
    async fn update_source(
        &self,
        _: SourceId,
        _: &SourceSpec,
        _: OffsetDateTime,
    ) -> StoreResult<Source> {
        unused()
    }
    async fn delete_source(&self, _: SourceId) -> StoreResult<()> {
        unused()
    }
    async fn request_check(
        &self,
        id: SourceId,
        trigger: Trigger,
        _: OffsetDateTime,
    ) -> StoreResult<RequestResult> {
        self.requests.lock().unwrap().push((id, trigger));
        Ok(RequestResult::QueuedAfterRunning)
    }
    async fn claim_due(
        &self,
        _: OffsetDateTime,
        limit: usize,
        _: &str,
        _: Duration,
    ) -> StoreResult<Vec<Claim>> {
        let mut claims = self.claims.lock().unwrap();
        let n = limit.min(claims.len());
        Ok(claims.drain(..n).collect())
    }
    async fn finish_check(&self, _: &Claim, _: &CheckReport, _: OffsetDateTime) -> StoreResult<()> {
        unused()
    }
    async fn release_claims(&self, _: &str, ids: &[SourceId]) -> StoreResult<()> {
        self.released.lock().unwrap().extend_from_slice(ids);
        Ok(())
    }
    async fn renew_leases(
        &self,
        _: &str,
        ids: &[SourceId],
        _: OffsetDateTime,
    ) -> StoreResult<Vec<SourceId>> {
        self.renewals.fetch_add(1, Ordering::SeqCst);
        match &*self.keep.lock().unwrap() {
            Some(keep) => Ok(ids.iter().copied().filter(|i| keep.contains(i)).collect()),
            None => Err(StoreError::Unavailable("scripted outage".into())),
        }
    }
    async fn next_due(&self) -> StoreResult<Option<OffsetDateTime>> {
        Ok(None)
    }
    async fn status(&self, _: SourceId) -> StoreResult<Option<SourceStatus>> {
        unused()
    }
    async fn list_statuses(&self) -> StoreResult<HashMap<SourceId, SourceStatus>> {
        unused()
    }
    async fn history(&self, _: &HistoryQuery) -> StoreResult<Vec<HistoryEntry>> {
        unused()
    }
}
