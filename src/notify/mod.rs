//! Notifications and commit statuses: chump's [`Notifier`].
//!
//! The worker hands over events ([`Notifier::notify`]) and deploy starts
//! ([`Notifier::deploy_started`]); both only put an item in the bounded
//! queue of every target that wants it (the oldest item dropped when full,
//! counted) and return. One tokio task per target delivers its queue in
//! order: a timeout per attempt, retries with a doubling backoff, then it
//! gives up. A target's first failure after a success is logged (once per
//! outage) and its recovery too; every result is counted in
//! `chump_notifications_total{target,result}`. Queues live in memory: a
//! restart loses what was waiting.
//!
//! Secrets (webhook secrets, tokens, Slack URLs) are in requests only:
//! error texts are masked before they are logged or shown.

pub mod config;
pub mod targets;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chump_jobs::history::HistoryEntry;
use chump_jobs::metrics::Metrics;
use chump_jobs::notify::{DeployStart, Event, Notifier};
use chump_jobs::redact::redact_secrets;
use chump_jobs::source::rfc3339;
use chump_jobs::store::{HistoryQuery, Store};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use config::{NotifyConfig, TargetConfig, TargetKind};
use targets::{Message, What};

/// An event or start, shared by the queues of every target that wants it;
/// its history entry is looked up once, by the first target to send it.
struct Item {
    what: ItemWhat,
    entry: OnceCell<Option<HistoryEntry>>,
}

enum ItemWhat {
    Event(Box<Event>),
    Start(Box<DeployStart>),
}

/// A target and its queue.
struct Target {
    config: TargetConfig,
    queue: Mutex<VecDeque<Arc<Item>>>,
    wake: Notify,
    state: Mutex<TargetState>,
}

/// What `GET /api/notifications` tells of a target.
#[derive(Default)]
struct TargetState {
    last_result: Option<&'static str>,
    last_at: Option<OffsetDateTime>,
    last_status: Option<u16>,
    last_error: Option<String>,
    /// The last delivery failed (its failures are not logged again).
    failing: bool,
    delivered: u64,
    failed: u64,
    dropped: u64,
    /// A delivery is being attempted now.
    sending: bool,
}

/// The notification service (cheap to clone).
#[derive(Clone)]
pub struct Notifications {
    inner: Arc<Inner>,
}

struct Inner {
    file: Option<std::path::PathBuf>,
    targets: Vec<Arc<Target>>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    /// Base of links: `{base}/api/history/{id}`.
    base: String,
}

/// Why a test delivery could not be made.
pub enum TestError {
    NoSuchTarget,
    Unsupported(String),
}

impl Notifications {
    /// The service over `config` (None: no target); call
    /// [`Notifications::start`] to run the deliveries.
    pub fn new(
        config: Option<&NotifyConfig>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        listen: std::net::SocketAddr,
    ) -> Notifications {
        let targets = config
            .map(|c| c.targets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|config| {
                Arc::new(Target {
                    config,
                    queue: Mutex::new(VecDeque::new()),
                    wake: Notify::new(),
                    state: Mutex::new(TargetState::default()),
                })
            })
            .collect();
        let base = config
            .and_then(|c| c.public_url.clone())
            .unwrap_or_else(|| format!("http://{listen}"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("chump/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Notifications {
            inner: Arc::new(Inner {
                file: config.map(|c| c.file.clone()),
                targets,
                store,
                metrics,
                http,
                base,
            }),
        }
    }

    /// Starts one delivery task per target; they end with `stop`.
    pub fn start(&self, stop: CancellationToken) {
        for target in &self.inner.targets {
            let (inner, target, stop) = (self.inner.clone(), target.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = deliver_forever(&inner, &target) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
        if !self.inner.targets.is_empty() {
            let names: Vec<&str> = self
                .inner
                .targets
                .iter()
                .map(|t| t.config.name.as_str())
                .collect();
            tracing::info!(targets = ?names, "notifications configured");
        }
    }

    /// Puts `item` in the queue of every target `wanted` marks (one flag
    /// per target, in order).
    fn enqueue(&self, item: Item, wanted: &[bool]) {
        if !wanted.contains(&true) {
            return;
        }
        let item = Arc::new(item);
        for (t, _) in self.inner.targets.iter().zip(wanted).filter(|(_, w)| **w) {
            let dropped = {
                let Ok(mut q) = t.queue.lock() else { continue };
                let dropped = if q.len() >= t.config.queue {
                    q.pop_front().is_some()
                } else {
                    false
                };
                q.push_back(item.clone());
                dropped
            };
            if dropped {
                self.inner
                    .metrics
                    .record_notification(&t.config.name, "dropped");
                if let Ok(mut s) = t.state.lock() {
                    s.dropped += 1;
                }
            }
            t.wake.notify_one();
        }
    }

    /// `GET /api/notifications`: every target (URLs masked, no secret),
    /// its queue and its last delivery.
    pub fn describe(&self) -> Value {
        let targets: Vec<Value> = self
            .inner
            .targets
            .iter()
            .map(|t| {
                let c = &t.config;
                let queued = t.queue.lock().map(|q| q.len()).unwrap_or(0);
                let s = t.state.lock();
                let s = s.as_deref();
                let mut v = json!({
                    "name": c.name,
                    "type": c.kind.type_name(),
                    "url": targets::masked_url(&c.kind),
                    "events": c.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                    "selector": {
                        "namespaces": c.selector.namespaces,
                        "sources": c.selector.sources,
                        "git_hosts": c.selector.git_hosts,
                    },
                    "timeout_ms": c.timeout.as_millis() as u64,
                    "retries": c.retries,
                    "backoff_ms": c.backoff.as_millis() as u64,
                    "queue_capacity": c.queue,
                    "queued": queued + usize::from(s.is_ok_and(|s| s.sending)),
                    "delivered": s.map_or(0, |s| s.delivered),
                    "failed": s.map_or(0, |s| s.failed),
                    "dropped": s.map_or(0, |s| s.dropped),
                    "last": s.ok().and_then(|s| s.last_result.map(|r| json!({
                        "result": r,
                        "at": s.last_at.map(rfc3339),
                        "status": s.last_status,
                        "error": s.last_error,
                    }))),
                });
                match &c.kind {
                    TargetKind::Webhook { secret, .. } => {
                        v["signed"] = json!(secret.is_some());
                    }
                    TargetKind::CommitStatus { provider, .. } => {
                        v["provider"] = json!(provider.as_str());
                    }
                    TargetKind::Slack { .. } => {}
                }
                v
            })
            .collect();
        json!({
            "config": self.inner.file.as_ref().map(|f| f.display().to_string()),
            "targets": targets,
        })
    }

    /// `POST /api/notifications/{target}/test`: one attempt of a test
    /// event, now (not queued). The answer: result, HTTP status, error.
    pub async fn test(&self, name: &str) -> Result<Value, TestError> {
        let t = self
            .inner
            .targets
            .iter()
            .find(|t| t.config.name == name)
            .ok_or(TestError::NoSuchTarget)?;
        let msg = Message {
            what: What::Test,
            entry: Value::Null,
            link: format!("{}/api/notifications", self.inner.base),
        };
        let request = targets::request(&t.config.kind, &msg)
            .map_err(TestError::Unsupported)?
            .ok_or_else(|| TestError::Unsupported("nothing to send".into()))?;
        let result = attempt(&self.inner.http, &t.config, &request).await;
        let answer = match &result {
            Ok(status) => json!({"target": name, "result": "delivered", "status": status}),
            Err(f) => json!({
                "msg": format!("[WARN] The test notification to {name} was not delivered: {}", f.error),
                "target": name, "result": "failed", "status": f.status, "error": f.error,
            }),
        };
        note_result(t, &result);
        tracing::info!(
            target_name = name,
            ok = result.is_ok(),
            "test notification sent"
        );
        Ok(answer)
    }
}

impl Notifier for Notifications {
    fn notify(&self, event: Event) {
        let item = Item {
            what: ItemWhat::Event(Box::new(event)),
            entry: OnceCell::new(),
        };
        let ItemWhat::Event(e) = &item.what else {
            return;
        };
        let wants = |c: &TargetConfig| {
            c.selector.selects(&e.source)
                && (e.matches(&c.events)
                    || (e.announced && matches!(c.kind, TargetKind::CommitStatus { .. })))
        };
        let wanted: Vec<bool> = self
            .inner
            .targets
            .iter()
            .map(|t| wants(&t.config))
            .collect();
        self.enqueue(item, &wanted);
    }

    fn deploy_started(&self, start: DeployStart) {
        let selected: Vec<bool> = self
            .inner
            .targets
            .iter()
            .map(|t| {
                matches!(t.config.kind, TargetKind::CommitStatus { .. })
                    && t.config.selector.selects(&start.source)
            })
            .collect();
        self.enqueue(
            Item {
                what: ItemWhat::Start(Box::new(start)),
                entry: OnceCell::new(),
            },
            &selected,
        );
    }
}

/// A failed attempt: the HTTP status (if any answer came) and why, masked.
struct Failed {
    status: Option<u16>,
    error: String,
}

async fn deliver_forever(inner: &Inner, target: &Target) {
    loop {
        let next = target.queue.lock().ok().and_then(|mut q| {
            let item = q.pop_front();
            if item.is_some() {
                if let Ok(mut s) = target.state.lock() {
                    s.sending = true;
                }
            }
            item
        });
        let Some(item) = next else {
            target.wake.notified().await;
            continue;
        };
        deliver(inner, target, &item).await;
        if let Ok(mut s) = target.state.lock() {
            s.sending = false;
        }
    }
}

/// Sends `item` to `target`: attempts with backoff, then gives up.
async fn deliver(inner: &Inner, target: &Target, item: &Item) {
    let c = &target.config;
    let entry = item.entry.get_or_init(|| entry_of(inner, item)).await;
    let msg = message(inner, item, entry.as_ref());
    let request = match targets::request(&c.kind, &msg) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(target_name = %c.name, "notification not sent: {e}");
            inner.metrics.record_notification(&c.name, "failed");
            note_result(
                target,
                &Err(Failed {
                    status: None,
                    error: e,
                }),
            );
            return;
        }
    };
    let mut delay = c.backoff;
    for n in 0..=c.retries {
        let result = attempt(&inner.http, c, &request).await;
        match result {
            Ok(status) => {
                inner.metrics.record_notification(&c.name, "delivered");
                let was_failing = note_result(target, &Ok(status));
                if was_failing {
                    tracing::info!(target_name = %c.name, "notification target delivers again");
                }
                return;
            }
            Err(f) => {
                let last = n == c.retries;
                let was_failing = target.state.lock().is_ok_and(|s| s.failing);
                if !was_failing {
                    tracing::warn!(
                        target_name = %c.name,
                        status = f.status,
                        error = %f.error,
                        "notification target failing; its next failures are not logged until it delivers again"
                    );
                }
                if last {
                    inner.metrics.record_notification(&c.name, "failed");
                    note_result(target, &Err(f));
                    tracing::debug!(target_name = %c.name, attempts = n + 1, "notification given up");
                    return;
                }
                inner.metrics.record_notification(&c.name, "retried");
                if let Ok(mut s) = target.state.lock() {
                    s.failing = true;
                    s.last_error = Some(f.error.clone());
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(300));
            }
        }
    }
}

/// Records a delivery's result; returns whether the target was failing.
fn note_result(target: &Target, result: &Result<u16, Failed>) -> bool {
    let Ok(mut s) = target.state.lock() else {
        return false;
    };
    let was = s.failing;
    s.last_at = Some(OffsetDateTime::now_utc());
    match result {
        Ok(status) => {
            s.last_result = Some("delivered");
            s.last_status = Some(*status);
            s.last_error = None;
            s.failing = false;
            s.delivered += 1;
        }
        Err(f) => {
            s.last_result = Some("failed");
            s.last_status = f.status;
            s.last_error = Some(f.error.clone());
            s.failing = true;
            s.failed += 1;
        }
    }
    was
}

/// One attempt, under the target's timeout: Ok with the 2xx status.
async fn attempt(
    http: &reqwest::Client,
    c: &TargetConfig,
    request: &targets::Request,
) -> Result<u16, Failed> {
    let mut req = http
        .post(&request.url)
        .timeout(c.timeout)
        .body(request.body.clone());
    for (k, v) in &request.headers {
        req = req.header(*k, v);
    }
    let secrets = c.kind.secrets();
    let mask = |text: String| redact_secrets(&text, &secrets);
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                Ok(status.as_u16())
            } else {
                Err(Failed {
                    status: Some(status.as_u16()),
                    error: mask(format!("the receiver answered {status}")),
                })
            }
        }
        Err(e) => {
            let why = if e.is_timeout() {
                format!("no answer within {} ms", c.timeout.as_millis())
            } else if e.is_connect() {
                format!("cannot connect: {}", chain(&e.without_url()))
            } else {
                chain(&e.without_url())
            };
            Err(Failed {
                status: None,
                error: mask(why),
            })
        }
    }
}

/// An error and its causes, in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The history entry an event's check made (None: it made none, or the
/// store did not say in time).
async fn entry_of(inner: &Inner, item: &Item) -> Option<HistoryEntry> {
    let ItemWhat::Event(e) = &item.what else {
        return None;
    };
    let r = &e.report;
    if !r.goes_to_history(e.previous) {
        return None;
    }
    let query = HistoryQuery {
        source_id: Some(e.source.id),
        limit: 10,
        ..Default::default()
    };
    let found = tokio::time::timeout(Duration::from_secs(5), inner.store.history(&query)).await;
    match found {
        Ok(Ok(entries)) => entries.into_iter().find(|h| {
            h.report.outcome == r.outcome
                && h.report.trigger == r.trigger
                && (h.report.started_at - r.started_at).abs() < time::Duration::seconds(1)
        }),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "no history entry for a notification");
            None
        }
        Err(_) => None,
    }
}

fn message<'a>(inner: &Inner, item: &'a Item, entry: Option<&HistoryEntry>) -> Message<'a> {
    match &item.what {
        ItemWhat::Event(e) => {
            let (entry, link) = match entry {
                Some(h) => (
                    serde_json::to_value(h).unwrap_or(Value::Null),
                    format!("{}/api/history/{}", inner.base, h.id),
                ),
                None => {
                    // No entry (an up_to_date recovery): the report as an
                    // entry without id.
                    let mut v = serde_json::to_value(&e.report).unwrap_or(Value::Null);
                    if let Some(m) = v.as_object_mut() {
                        m.insert("id".into(), Value::Null);
                        m.insert("namespace".into(), e.source.spec.namespace.clone().into());
                        m.insert(
                            "deployment_name".into(),
                            e.source.spec.deployment_name.clone().into(),
                        );
                        m.insert(
                            "container_name".into(),
                            e.source.spec.container_name.clone().into(),
                        );
                    }
                    (
                        v,
                        format!("{}/api/sources/{}/status", inner.base, e.source.id),
                    )
                }
            };
            Message {
                what: What::Event(e),
                entry,
                link,
            }
        }
        ItemWhat::Start(s) => Message {
            what: What::Start(s),
            entry: Value::Null,
            link: format!("{}/api/sources/{}/status", inner.base, s.source.id),
        },
    }
}
