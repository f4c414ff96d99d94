//! Builds shared between sources: one `kustomize build` per checkout and
//! build directory.
//!
//! A checkout's directory holds one commit's files and never changes while
//! it is in use (`git::Checkout`), and a build reads nothing else: no
//! network (remote bases are refused), an empty `HOME`, a scrubbed
//! environment. So the render of a directory of a checkout is a function of
//! that directory's path, and sources on the same repository, branch,
//! credentials and commit that build the same deploy directory (one app in
//! several namespaces, say) need it only once. The first check to ask runs
//! the build; checks asking while it runs wait for it; later ones take the
//! kept render.
//!
//! With remote bases allowed (`CHUMP_KUSTOMIZE_ALLOW_REMOTE`), a render also
//! depends on what the remote serves at the time, so nothing is shared.
//!
//! What is kept is bounded: at most [`MAX_KEPT_RENDERS`] renders and
//! [`MAX_KEPT_BYTES`] of kustomize output in all, the oldest dropped first.
//! A failure that would repeat (kustomize's own error, a refused resource,
//! output too large or not objects) is kept like a render; one that might
//! not (a timeout, the binary not starting, I/O) is given to the checks
//! that waited for that build and then forgotten.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::OnceCell;

use super::{KustomizeError, Render};

/// Most renders kept.
pub const MAX_KEPT_RENDERS: usize = 512;
/// Most kustomize output kept, in bytes, over all kept renders.
pub const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;

/// A build's result as the checks that share it see it.
pub type SharedResult = Result<Arc<Vec<Value>>, Arc<KustomizeError>>;

/// One build, run once, its result handed to every check that asks.
#[derive(Debug)]
pub struct SharedBuild {
    /// The rendered objects.
    pub objects: Arc<Vec<Value>>,
    /// Whether another check ran the build (this one only waited or read
    /// it).
    pub shared: bool,
    /// Whether it was rendered in process (a plain kustomization).
    pub in_process: bool,
}

/// What one build produced, with the output size it is accounted at.
struct Kept {
    result: SharedResult,
    bytes: usize,
    in_process: bool,
}

/// The builds of one process, keyed by the canonical build directory.
#[derive(Default)]
pub(crate) struct SharedBuilds {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    builds: HashMap<PathBuf, Arc<OnceCell<Kept>>>,
    /// Finished builds, oldest first, for dropping.
    order: VecDeque<PathBuf>,
    bytes: usize,
}

impl fmt::Debug for SharedBuilds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SharedBuilds")
            .field("kept", &state.order.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

impl SharedBuilds {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The build of `dir`: run by `build` if no check has run or is running
    /// it, else that check's result.
    pub(crate) async fn get_or_build<F, Fut>(
        &self,
        dir: PathBuf,
        build: F,
    ) -> Result<SharedBuild, Arc<KustomizeError>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Render, KustomizeError>>,
    {
        let cell = Arc::clone(self.lock().builds.entry(dir.clone()).or_default());
        let mut ran = false;
        let kept = cell
            .get_or_init(|| {
                ran = true;
                async move {
                    match build().await {
                        Ok(render) => Kept {
                            result: Ok(Arc::new(render.objects)),
                            bytes: render.bytes,
                            in_process: render.in_process,
                        },
                        Err(e) => Kept {
                            bytes: e.to_string().len(),
                            result: Err(Arc::new(e)),
                            in_process: false,
                        },
                    }
                }
            })
            .await;
        if ran {
            self.settle(&dir, &cell, kept);
        }
        kept.result.clone().map(|objects| SharedBuild {
            objects,
            shared: !ran,
            in_process: kept.in_process,
        })
    }

    /// After `cell`'s build ended: keep it (dropping the oldest past the
    /// bounds), or forget it when it should not be reused.
    fn settle(&self, dir: &PathBuf, cell: &Arc<OnceCell<Kept>>, kept: &Kept) {
        let mut state = self.lock();
        let current = state.builds.get(dir).is_some_and(|c| Arc::ptr_eq(c, cell));
        if !current {
            return;
        }
        let keep = match &kept.result {
            Ok(_) => kept.bytes <= MAX_KEPT_BYTES,
            Err(e) => repeats(e),
        };
        if !keep {
            state.builds.remove(dir);
            return;
        }
        state.order.push_back(dir.clone());
        state.bytes += kept.bytes;
        while state.order.len() > MAX_KEPT_RENDERS || state.bytes > MAX_KEPT_BYTES {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some(cell) = state.builds.remove(&oldest) {
                let bytes = cell.get().map_or(0, |k| k.bytes);
                state.bytes = state.bytes.saturating_sub(bytes);
            }
        }
    }
}

/// Whether building again would fail the same way.
fn repeats(e: &KustomizeError) -> bool {
    match e {
        KustomizeError::Path(_)
        | KustomizeError::Kustomization(_)
        | KustomizeError::RemoteRefused { .. }
        | KustomizeError::MissingResource { .. }
        | KustomizeError::ResourceRefused { .. }
        | KustomizeError::TooManyKustomizations(_)
        | KustomizeError::OutputTooLarge { .. }
        | KustomizeError::Failed { .. }
        | KustomizeError::Output(_)
        | KustomizeError::NotAnObject { .. } => true,
        KustomizeError::NotFound(_)
        | KustomizeError::Spawn { .. }
        | KustomizeError::Io(_)
        | KustomizeError::Timeout(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn object(n: usize) -> Vec<Value> {
        vec![serde_json::json!({"kind": "ConfigMap", "n": n})]
    }

    fn render(n: usize, bytes: usize) -> Render {
        Render {
            objects: object(n),
            bytes,
            in_process: false,
        }
    }

    #[tokio::test]
    async fn concurrent_asks_run_one_build() {
        let builds = SharedBuilds::default();
        let runs = AtomicUsize::new(0);
        let ask = || {
            builds.get_or_build(PathBuf::from("/c/1/app"), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(render(1, 10))
            })
        };
        let (a, b, c) = tokio::join!(ask(), ask(), ask());
        let shared: Vec<bool> = [a, b, c].into_iter().map(|r| r.unwrap().shared).collect();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(shared.iter().filter(|s| !**s).count(), 1, "{shared:?}");
        let again = ask().await.unwrap();
        assert!(again.shared);
        assert_eq!(*again.objects, object(1));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn other_directories_build_apart() {
        let builds = SharedBuilds::default();
        for n in 0..3 {
            let got = builds
                .get_or_build(PathBuf::from(format!("/c/{n}/app")), || async move {
                    Ok(render(n, 10))
                })
                .await
                .unwrap();
            assert!(!got.shared);
            assert_eq!(*got.objects, object(n));
        }
    }

    #[tokio::test]
    async fn failures_that_may_pass_are_forgotten_and_others_kept() {
        let builds = SharedBuilds::default();
        let dir = PathBuf::from("/c/1/app");
        let timeout = builds
            .get_or_build(dir.clone(), || async {
                Err(KustomizeError::Timeout(Duration::from_secs(1)))
            })
            .await
            .unwrap_err();
        assert!(matches!(*timeout, KustomizeError::Timeout(_)));
        let failed = builds
            .get_or_build(dir.clone(), || async {
                Err(KustomizeError::Failed {
                    status: "exit status: 1".into(),
                    stderr: "bad".into(),
                })
            })
            .await
            .unwrap_err();
        assert!(matches!(*failed, KustomizeError::Failed { .. }));
        let kept = builds
            .get_or_build(dir, || async { Ok(render(1, 10)) })
            .await
            .unwrap_err();
        assert!(Arc::ptr_eq(&kept, &failed), "the failure is kept");
    }

    #[tokio::test]
    async fn the_oldest_renders_are_dropped_past_the_bounds() {
        let builds = SharedBuilds::default();
        let big = MAX_KEPT_BYTES / 2 + 1;
        for n in 0..3 {
            builds
                .get_or_build(PathBuf::from(format!("/c/{n}")), || async move {
                    Ok(render(n, big))
                })
                .await
                .unwrap();
        }
        {
            let state = builds.lock();
            assert_eq!(state.order, [PathBuf::from("/c/2")]);
            assert_eq!(state.bytes, big);
            assert_eq!(state.builds.len(), 1);
        }
        let rebuilt = builds
            .get_or_build(PathBuf::from("/c/0"), || async { Ok(render(9, 1)) })
            .await
            .unwrap();
        assert!(!rebuilt.shared, "a dropped render is built again");
        let too_big = builds
            .get_or_build(PathBuf::from("/c/huge"), || async {
                Ok(render(0, MAX_KEPT_BYTES + 1))
            })
            .await
            .unwrap();
        assert!(!too_big.shared);
        assert!(!builds.lock().builds.contains_key(&PathBuf::from("/c/huge")));
    }
}
