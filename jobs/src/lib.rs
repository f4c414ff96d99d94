//! chump's check pipeline and the domain it needs.
//!
//! The service shell (`chump` crate) owns HTTP, configuration and the store
//! implementations; this crate owns everything that decides and deploys:
//! sources and their validation, history, the [`store::Store`] trait the
//! pipeline calls, the scheduler and workers, git, manifest parsing,
//! kustomize and the Kubernetes client.

pub mod redact;
