//! Running `chump serve`: open the store, start the API, and stop everything
//! through one [`CancellationToken`] (SIGINT/SIGTERM or the caller).

use std::sync::Arc;

use anyhow::Context;
use chump_jobs::source::ValidationRules;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::store;

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = store::open(&config.database).await.context("cannot open the store")?;
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {} (CHUMP_BIND)", config.bind))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        store: store.clone(),
        rules: ValidationRules { allow_file_urls: config.allow_file_urls },
        api_token: config.api_token.as_deref().map(Arc::from),
        schedule_changed: Arc::new(Notify::new()),
    };
    tracing::info!(%addr, workers = config.workers, interval = ?config.interval, "chump listening");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("chump stopped");
    Ok(())
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
