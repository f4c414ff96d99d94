//! Running `chump serve`: open the store, start the pipeline and the API, and
//! stop everything through one [`CancellationToken`] (SIGINT/SIGTERM or the
//! caller): the API stops accepting, the pipeline finishes or cuts its
//! running checks, then the store closes.

use std::sync::Arc;

use anyhow::Context;
use chump_jobs::source::ValidationRules;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use chump_jobs::check::{Checker, ClusterConfig};
use chump_jobs::git::{GitCache, GitOptions};
use chump_jobs::kustomize::{Kustomize, KustomizeOptions};
use chump_jobs::metrics::Metrics;
use chump_jobs::pipeline::{Pipeline, PipelineConfig};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::notify::Notifications;
use crate::store;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::open(&config.database, config.manifest_retention)
        .await
        .context("cannot open the store")?;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {} (CHUMP_BIND)", config.bind))?;
    let addr = listener.local_addr()?;
    std::fs::create_dir_all(&config.workdir)
        .with_context(|| format!("cannot create CHUMP_WORKDIR {}", config.workdir.display()))?;
    let wake = Arc::new(Notify::new());
    let metrics = Arc::new(Metrics::new());
    let notifications =
        Notifications::new(config.notify.as_ref(), store.clone(), metrics.clone(), addr);
    // Deliveries go on until the pipeline has stopped (checks recorded in
    // the shutdown grace are still told).
    let notify_stop = CancellationToken::new();
    notifications.start(notify_stop.clone());
    let mut checker = checker(&config, metrics.clone());
    checker.notifier = Arc::new(notifications.clone());
    let pipeline = Pipeline::start(
        store.clone(),
        Arc::new(checker),
        PipelineConfig {
            workers: config.workers,
            interval: config.interval,
            check_timeout: config.check_timeout,
            grace: config.shutdown_grace,
            owner: owner_id(),
            lease: config.lease,
            max_sleep: std::time::Duration::from_secs(1),
        },
        wake.clone(),
        shutdown.clone(),
    );
    let state = AppState {
        store: store.clone(),
        rules: ValidationRules {
            allow_file_urls: config.allow_file_urls,
            require_service_account: config.require_service_account
                && config.default_service_account.is_none(),
        },
        api_token: config.api_token.as_deref().map(Arc::from),
        api_read_token: config.api_read_token.as_deref().map(Arc::from),
        webhook_secret: config.webhook_secret.as_deref().map(Arc::from),
        schedule_changed: wake,
        metrics,
        pipeline: Some(pipeline.probe()),
        notifications,
        push_index: Default::default(),
        whole_list: Default::default(),
    };
    if config.api_token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the API has no token and listens beyond loopback (--insecure-no-auth)");
    }
    tracing::info!(%addr, workers = config.workers, interval = ?config.interval, "chump listening");
    crate::http::serve(
        listener,
        api::router(state),
        crate::http::HttpLimits {
            header_timeout: config.header_timeout,
            max_connections: 1024,
        },
        shutdown.clone(),
    )
    .await;
    // However the server ended, the pipeline stops too.
    shutdown.cancel();
    pipeline.stopped().await;
    notify_stop.cancel();
    tracing::info!("chump stopped");
    Ok(())
}

/// The check runner from the configuration.
fn checker(config: &Config, metrics: Arc<Metrics>) -> Checker {
    let git = GitCache::new(
        config.workdir.clone(),
        GitOptions {
            allow_file_urls: config.allow_file_urls,
            ssh_key: config.ssh_key.clone(),
            ssh_known_hosts: config.ssh_known_hosts.clone(),
            ..GitOptions::default()
        },
    );
    let kustomize = Kustomize::detect(
        config.kustomize.as_deref(),
        KustomizeOptions {
            allow_remote: config.kustomize_allow_remote,
            in_process: config.kustomize_in_process,
            timeout: config.check_timeout,
            ..KustomizeOptions::default()
        },
    )
    .map_err(|e| {
        tracing::error!(error = %e, "no kustomize: deploys will fail at the build stage");
        e.to_string()
    });
    let cluster = match &config.kubeconfig {
        Some(path) => ClusterConfig::Kubeconfig(path.clone()),
        None => ClusterConfig::Infer,
    };
    let mut checker = Checker::new(
        git,
        kustomize,
        cluster,
        config.rollout_timeout,
        config.restrict_namespace,
        metrics,
    );
    checker.self_heal = config.self_heal;
    checker.auto_rollback = config.auto_rollback;
    checker.default_service_account = config.default_service_account.clone();
    checker.require_service_account = config.require_service_account;
    checker.manifest_max_bytes = config.manifest_max_bytes;
    checker
}

/// A name for this process on its leases: host, pid and a random suffix.
fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "chump".into());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// Cancels `token` on SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
            _ = term => tracing::info!("SIGTERM: shutting down"),
        }
        token.cancel();
    });
}
