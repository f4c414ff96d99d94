//! chump's check pipeline and the domain it needs.
//!
//! The service shell (`chump` crate) owns HTTP, configuration and the store
//! implementations; this crate owns everything that decides and deploys:
//! sources and their validation, history, the [`store::Store`] trait the
//! pipeline calls, the scheduler and workers, git, manifest parsing,
//! kustomize and the Kubernetes client.

pub mod check;
pub mod cluster;
pub mod git;
pub mod history;
pub mod image;
pub mod inventory;
pub mod kustomize;
pub mod lease;
pub mod manifest;
pub mod manifests;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod pipeline;
pub mod recorder;
pub mod redact;
pub mod rollback;
pub mod scheduler;
pub mod source;
pub mod store;
pub mod webhook;
pub mod worker;
pub mod yaml;
