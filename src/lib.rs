//! The chump service shell: configuration, the REST API, the store
//! implementations, and the wiring that runs them with the pipeline from
//! `chump_jobs`. See ARCHITECTURE.md at the repository root.

pub mod api;
pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod notify;
pub mod server;
pub mod store;
pub mod ui;
