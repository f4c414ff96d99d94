//! The kept whole list (`chump::api::whole_list`) through the crate's
//! router on a real socket, for any store that keeps a data version: every
//! write, over the API or straight to the store as a worker's (on this
//! process's store or another replica's), is in the next answer, and a
//! lease that ends with nothing written turns `in_flight` false on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chump::api::AppState;
use chump::http::HttpLimits;
use chump_jobs::history::Outcome;
use chump_jobs::metrics::Metrics;
use chump_jobs::store::Store;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::chump::wait_for;

/// The crate's API on `store`, served on 127.0.0.1 until dropped.
pub struct ApiServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    pub async fn start(store: Arc<dyn Store>) -> ApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let state = AppState {
            store: store.clone(),
            rules: Default::default(),
            api_token: None,
            api_read_token: None,
            webhook_secret: None,
            schedule_changed: Default::default(),
            metrics: metrics.clone(),
            pipeline: None,
            notifications: chump::notify::Notifications::new(None, store, metrics, addr),
            push_index: Default::default(),
            whole_list: Default::default(),
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(chump::http::serve(
            listener,
            chump::api::router(state),
            HttpLimits {
                header_timeout: Duration::from_secs(5),
                max_connections: 64,
            },
            shutdown.clone(),
        ));
        ApiServer {
            addr,
            shutdown,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /api/sources`: the `sources` array.
    pub async fn list(&self) -> Vec<Value> {
        let resp = reqwest::get(self.url("/api/sources")).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<Value>().await.unwrap()["sources"]
            .as_array()
            .unwrap()
            .clone()
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Every kind of write shows in the next answer of `api`'s whole list.
/// `served` is the store `api` serves; `worker` claims and reports as a
/// worker does (the same store, or another replica's on one database).
pub async fn follows_every_write_and_lease_end(
    api: &ApiServer,
    served: &Arc<dyn Store>,
    worker: &Arc<dyn Store>,
) {
    let http = reqwest::Client::new();
    assert_eq!(api.list().await, Vec::<Value>::new());
    // Created over the API.
    let created: Value = http
        .post(api.url("/api/sources"))
        .json(&json!({"namespace": "production", "deployment_name": "web",
            "git_url": "https://example.com/shop.git", "branch": "master",
            "deploy_path": "deploy", "container_name": "web",
            "image_version_file": "deploy/web.yaml"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["source"]["id"].as_i64().unwrap();
    let once = api.list().await;
    assert_eq!(once.len(), 1);
    assert_eq!(once[0]["branch"], "master");
    assert_eq!(once[0]["status"]["in_flight"], false);
    // The same answer again while nothing changed.
    assert_eq!(api.list().await, once);
    // Changed over the API.
    let resp = http
        .patch(api.url(&format!("/api/sources/{id}")))
        .json(&json!({"branch": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(api.list().await[0]["branch"], "main");
    // Claimed straight in the store, as a worker does, with a short lease.
    let claims = worker
        .claim_due(OffsetDateTime::now_utc(), 1, "p1", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(api.list().await[0]["status"]["in_flight"], true);
    // The lease ends with nothing written: the answer follows the clock.
    let version = served.data_version().await.unwrap();
    assert!(version.is_some(), "the served store keeps no version");
    wait_for(
        "the lapsed lease to leave the list",
        Duration::from_secs(15),
        || async { (api.list().await[0]["status"]["in_flight"] == false).then_some(()) },
    )
    .await;
    assert_eq!(
        served.data_version().await.unwrap(),
        version,
        "nothing was written"
    );
    // A worker's report, written straight to the store.
    let claims = worker
        .claim_due(OffsetDateTime::now_utc(), 1, "p2", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(api.list().await[0]["status"]["in_flight"], true);
    let now = OffsetDateTime::now_utc();
    worker
        .finish_check(
            &claims[0],
            &super::conformance::report(&claims[0], Outcome::UpToDate, now),
            now + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let after = api.list().await;
    assert_eq!(after[0]["status"]["in_flight"], false);
    assert_eq!(after[0]["status"]["last_outcome"], "up_to_date");
    // Deleted over the API.
    let resp = http
        .delete(api.url(&format!("/api/sources/{id}")))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(api.list().await, Vec::<Value>::new());
}
