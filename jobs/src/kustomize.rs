//! Runs `kustomize build` on a source's deploy directory, sandboxed.
//!
//! The kustomization comes from a user's repository and is untrusted, so the
//! build runs:
//!
//! * with **no shell**: the binary and its arguments only, via
//!   [`tokio::process::Command`];
//! * in the deploy directory, resolved inside the checkout with
//!   [`resolve_inside`];
//! * with `--load-restrictor LoadRestrictionsRootOnly` (every file a
//!   kustomization loads must be in or below its own directory) and **no
//!   plugins** (`--enable-alpha-plugins`, `--enable-exec`, `--enable-helm`
//!   are never passed);
//! * with a **scrubbed environment**: only `PATH`, `HOME` (a fresh, empty
//!   temporary directory) and the Go runtime's `GOGC` and `GOMEMLIMIT`, so no
//!   chump token, database or cloud credential reaches it;
//! * with a **timeout** (the process is killed on expiry; `kill_on_drop` too)
//!   and an **output cap** (reading stops and the process is killed when
//!   stdout exceeds it).
//!
//! **Remote bases.** kustomize itself fetches any `resources:` entry that is
//! a URL or a git address (`github.com/org/repo//dir?ref=v1`) — and also tries
//! a local path that does not exist as a remote one — and has no switch to
//! forbid it. So before running, chump walks the kustomization files reachable
//! from the deploy directory (`resources`, `bases`, `components`,
//! `generators`, `transformers`, `validators`; at most
//! [`MAX_SCAN_DEPTH`] levels and [`MAX_SCAN_DIRS`] directories) and, unless
//! [`KustomizeOptions::allow_remote`], refuses any remote entry and any local
//! entry that does not exist. Local entries must resolve inside the checkout
//! whether remote is allowed or not (a `../../..` base or a symlink leading
//! out is refused), which the load restrictor alone would not catch for
//! directories.
//!
//! The output is parsed with the same bounded YAML reader as manifests
//! ([`parse_documents`]).
//!
//! **Cost.** Both binaries are Go programs that live for one build, and on a
//! small kustomization most of a build is the process starting and its
//! garbage collector running. The child gets `GOGC=off` with a soft
//! `GOMEMLIMIT` ([`GO_MEMORY_LIMIT`]): no collection until its heap nears the
//! limit, so small builds never collect and large ones stay bounded (a
//! third less CPU per build with `kubectl kustomize`). A *plain*
//! kustomization (only local files under `resources:`, YAML both decoders
//! read alike) is not given to the binary at all: it is rendered in process
//! (the `plain` module; [`KustomizeOptions::in_process`]). Sources that
//! build the same directory of the same checkout share one build
//! ([`Kustomize::build_shared`], the `shared` module).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::manifest::{
    is_remote_reference, parse_documents, read_bounded, resolve_inside, ManifestError, PathError,
    YamlError, YamlLimits, KUSTOMIZATION_FILE_NAMES,
};

mod plain;
mod shared;

pub use plain::{render_plain, PlainRender};
use shared::SharedBuilds;
pub use shared::{SharedBuild, MAX_KEPT_BYTES, MAX_KEPT_RENDERS};

/// The soft memory limit a build's Go runtime collects garbage at (it does
/// not collect before: `GOGC=off`).
pub const GO_MEMORY_LIMIT: &str = "256MiB";
/// How many kustomization levels the remote-base scan follows.
pub const MAX_SCAN_DEPTH: usize = 16;
/// How many kustomization directories the remote-base scan visits at most.
pub const MAX_SCAN_DIRS: usize = 256;
/// Most stderr kept from a build (the tail).
const STDERR_CAP: usize = 64 * 1024;
/// Lines of stderr put into an error message.
const STDERR_LINES: usize = 10;
/// Most YAML documents accepted from a build.
const MAX_BUILD_DOCUMENTS: usize = 10_000;
/// `PATH` for the child when chump's own is unset.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Limits and switches for builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KustomizeOptions {
    /// Longest a build may run; it is killed after that.
    pub timeout: Duration,
    /// Most bytes of output accepted; the build is killed past that.
    pub max_output_bytes: usize,
    /// Whether remote bases may be used (`CHUMP_KUSTOMIZE_ALLOW_REMOTE=1`).
    pub allow_remote: bool,
    /// Whether plain kustomizations are rendered in process instead of by
    /// the binary (`CHUMP_KUSTOMIZE_IN_PROCESS`; the `plain` module says
    /// which).
    pub in_process: bool,
}

impl Default for KustomizeOptions {
    /// 120 s, 32 MiB, no remote bases, plain kustomizations in process.
    fn default() -> Self {
        KustomizeOptions {
            timeout: Duration::from_secs(120),
            max_output_bytes: 32 * 1024 * 1024,
            allow_remote: false,
            in_process: true,
        }
    }
}

/// A build that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    /// No usable binary.
    #[error("no kustomize binary: {0}")]
    NotFound(String),
    /// `deploy_path` is unsafe or missing.
    #[error("deploy path: {0}")]
    Path(#[from] PathError),
    /// A kustomization file could not be read or parsed by the pre-check.
    #[error("{0}")]
    Kustomization(#[from] ManifestError),
    /// A remote base while remote bases are off.
    #[error("{kustomization}: remote resource '{resource}' refused (remote bases are disabled; set CHUMP_KUSTOMIZE_ALLOW_REMOTE=1 to allow them)")]
    RemoteRefused {
        /// The kustomization file naming it, relative to the checkout.
        kustomization: String,
        /// The entry.
        resource: String,
    },
    /// A local entry that does not exist (kustomize would try it as remote).
    #[error("{kustomization}: resource '{resource}' does not exist in the repository (kustomize would try to fetch it remotely; remote bases are disabled)")]
    MissingResource {
        /// The kustomization file naming it, relative to the checkout.
        kustomization: String,
        /// The entry.
        resource: String,
    },
    /// A local entry that leaves the checkout.
    #[error("{kustomization}: resource '{resource}' refused: {source}")]
    ResourceRefused {
        /// The kustomization file naming it, relative to the checkout.
        kustomization: String,
        /// The entry.
        resource: String,
        /// Why.
        source: PathError,
    },
    /// The kustomizations nest too deep or are too many.
    #[error("kustomization tree under {0} is too deep or too large (at most {MAX_SCAN_DEPTH} levels and {MAX_SCAN_DIRS} directories)")]
    TooManyKustomizations(String),
    /// The binary could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The binary.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading its output or waiting for it failed.
    #[error("kustomize build I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// It ran longer than the timeout and was killed.
    #[error("kustomize build timed out after {0:?} and was killed")]
    Timeout(Duration),
    /// It printed more than the cap and was killed.
    #[error("kustomize build output exceeds {limit} bytes; killed")]
    OutputTooLarge {
        /// The cap.
        limit: usize,
    },
    /// It exited unsuccessfully.
    #[error("kustomize build failed ({status}): {stderr}")]
    Failed {
        /// The exit status.
        status: String,
        /// The last lines of its stderr, trimmed.
        stderr: String,
    },
    /// Its output is not acceptable YAML.
    #[error("kustomize build output: {0}")]
    Output(#[source] YamlError),
    /// Its output holds something other than objects.
    #[error("kustomize build output document {index} is not an object")]
    NotAnObject {
        /// Zero-based index among the non-empty documents.
        index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// `kustomize build …`
    Standalone,
    /// `kubectl kustomize …`
    Kubectl,
}

/// A kustomize runner: which binary, how to call it, and its limits.
#[derive(Debug, Clone)]
pub struct Kustomize {
    program: PathBuf,
    flavor: Flavor,
    options: KustomizeOptions,
    /// Builds shared by clones of this runner.
    shared: Arc<SharedBuilds>,
}

impl Kustomize {
    /// `CHUMP_KUSTOMIZE` override (a path or name of a binary; if its file
    /// name is `kubectl` use `kubectl kustomize`), else `kustomize` on PATH,
    /// else `kubectl kustomize`.
    pub fn detect(
        override_bin: Option<&str>,
        options: KustomizeOptions,
    ) -> Result<Self, KustomizeError> {
        let (program, flavor) = match override_bin.map(str::trim).filter(|b| !b.is_empty()) {
            Some(bin) => {
                let program = if bin.contains('/') {
                    let p = PathBuf::from(bin);
                    if !is_executable(&p) {
                        return Err(KustomizeError::NotFound(format!(
                            "CHUMP_KUSTOMIZE={bin} is not an executable file"
                        )));
                    }
                    p
                } else {
                    find_on_path(bin).ok_or_else(|| {
                        KustomizeError::NotFound(format!("CHUMP_KUSTOMIZE={bin} is not on PATH"))
                    })?
                };
                let flavor =
                    if Path::new(bin).file_name().and_then(|n| n.to_str()) == Some("kubectl") {
                        Flavor::Kubectl
                    } else {
                        Flavor::Standalone
                    };
                (program, flavor)
            }
            None => {
                if let Some(p) = find_on_path("kustomize") {
                    (p, Flavor::Standalone)
                } else if let Some(p) = find_on_path("kubectl") {
                    (p, Flavor::Kubectl)
                } else {
                    return Err(KustomizeError::NotFound(
                        "neither kustomize nor kubectl is on PATH (set CHUMP_KUSTOMIZE)"
                            .to_string(),
                    ));
                }
            }
        };
        tracing::debug!(program = %program.display(), kubectl = flavor == Flavor::Kubectl, "kustomize runner");
        Ok(Kustomize {
            program,
            flavor,
            options,
            shared: Arc::default(),
        })
    }

    /// The binary that is run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Whether builds run as `kubectl kustomize` (else `kustomize build`).
    pub fn uses_kubectl(&self) -> bool {
        self.flavor == Flavor::Kubectl
    }

    /// The limits in force.
    pub fn options(&self) -> &KustomizeOptions {
        &self.options
    }

    /// The arguments passed to [`Kustomize::program`] (the directory is `.`,
    /// the working directory).
    pub fn args(&self) -> Vec<&'static str> {
        let mut args = match self.flavor {
            Flavor::Standalone => vec!["build"],
            Flavor::Kubectl => vec!["kustomize"],
        };
        args.extend(["--load-restrictor", "LoadRestrictionsRootOnly", "."]);
        args
    }

    /// Builds `deploy_path` (the kustomize directory, or a file in it) of the
    /// checkout and returns the objects, parsed from the YAML stream (empty
    /// and null documents skipped).
    pub async fn build(
        &self,
        checkout_dir: &Path,
        deploy_path: &str,
    ) -> Result<Vec<Value>, KustomizeError> {
        let (root, dir) = Self::locate(checkout_dir, deploy_path)?;
        self.build_dir(root, dir).await.map(|render| render.objects)
    }

    /// Like [`Kustomize::build`], but one build per build directory of a
    /// checkout, shared by every check that asks while it runs or after (see
    /// the `shared` module for what is kept, and for how long). With remote
    /// bases allowed every call builds.
    pub async fn build_shared(
        &self,
        checkout_dir: &Path,
        deploy_path: &str,
    ) -> Result<SharedBuild, Arc<KustomizeError>> {
        let (root, dir) = Self::locate(checkout_dir, deploy_path)?;
        if self.options.allow_remote {
            let render = self.build_dir(root, dir).await?;
            return Ok(SharedBuild {
                objects: Arc::new(render.objects),
                shared: false,
                in_process: render.in_process,
            });
        }
        self.shared
            .get_or_build(dir.clone(), || self.build_dir(root, dir))
            .await
    }

    /// The canonical checkout root and the directory to build in it.
    fn locate(
        checkout_dir: &Path,
        deploy_path: &str,
    ) -> Result<(PathBuf, PathBuf), KustomizeError> {
        let root = checkout_dir
            .canonicalize()
            .map_err(|source| PathError::Root {
                root: checkout_dir.to_path_buf(),
                source,
            })?;
        let dir = build_dir(&root, deploy_path)?;
        Ok((root, dir))
    }

    /// Checks the kustomizations under `dir` and builds it: in process if
    /// it is plain and that is allowed, else with the binary.
    async fn build_dir(&self, root: PathBuf, dir: PathBuf) -> Result<Render, KustomizeError> {
        let limits = YamlLimits {
            max_documents: MAX_BUILD_DOCUMENTS,
            ..YamlLimits::for_size(self.options.max_output_bytes)
        };
        let plain = {
            let (dir, options) = (dir.clone(), self.options);
            tokio::task::spawn_blocking(move || {
                check_kustomizations(&root, &dir, options.allow_remote)?;
                Ok::<_, KustomizeError>(
                    options
                        .in_process
                        .then(|| render_plain(&dir, limits.max_bytes, limits.max_documents)),
                )
            })
            .await
            .map_err(|e| KustomizeError::Io(std::io::Error::other(e)))??
        };
        match plain {
            Some(PlainRender::Rendered { objects, bytes }) => {
                tracing::debug!(objects = objects.len(), bytes, "rendered in process");
                return Ok(Render {
                    objects,
                    bytes,
                    in_process: true,
                });
            }
            Some(PlainRender::NotPlain(reason)) => {
                tracing::debug!(%reason, "not plain: kustomize builds it");
            }
            None => {}
        }
        let stdout = self.run(&dir).await?;
        let bytes = stdout.len();
        let text = String::from_utf8(stdout).map_err(|_| {
            KustomizeError::Output(YamlError::Syntax("output is not UTF-8".to_string()))
        })?;
        let objects = parse_documents(&text, &limits).map_err(KustomizeError::Output)?;
        if let Some(index) = objects.iter().position(|o| !o.is_object()) {
            return Err(KustomizeError::NotAnObject { index });
        }
        Ok(Render {
            objects,
            bytes,
            in_process: false,
        })
    }

    /// Runs the binary in `dir`; returns its stdout.
    async fn run(&self, dir: &Path) -> Result<Vec<u8>, KustomizeError> {
        let home = TempHome::create().map_err(KustomizeError::Io)?;
        let path_var = std::env::var_os("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let mut cmd = Command::new(&self.program);
        cmd.args(self.args())
            .current_dir(dir)
            .env_clear()
            .env("PATH", path_var)
            .env("HOME", home.path())
            .env("GOGC", "off")
            .env("GOMEMLIMIT", GO_MEMORY_LIMIT)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tracing::debug!(program = %self.program.display(), args = ?self.args(), dir = %dir.display(), "running kustomize");
        let started = std::time::Instant::now();
        let mut child = cmd.spawn().map_err(|source| KustomizeError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.start_kill();
            return Err(KustomizeError::Io(std::io::Error::other(
                "child pipes are missing",
            )));
        };
        let stderr_task = tokio::spawn(read_tail(stderr, STDERR_CAP));
        let max = self.options.max_output_bytes;
        let outcome = tokio::time::timeout(self.options.timeout, async {
            let out = read_capped(stdout, max).await.map_err(KustomizeError::Io)?;
            let Some(out) = out else {
                return Err(KustomizeError::OutputTooLarge { limit: max });
            };
            let status = child.wait().await.map_err(KustomizeError::Io)?;
            Ok((out, status))
        })
        .await
        .unwrap_or(Err(KustomizeError::Timeout(self.options.timeout)));

        let (out, status) = match outcome {
            Ok(done) => done,
            Err(err) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                stderr_task.abort();
                tracing::debug!(error = %err, "kustomize build stopped");
                return Err(err);
            }
        };
        // A grandchild could hold stderr open; do not wait for it forever.
        let stderr = match tokio::time::timeout(Duration::from_secs(2), stderr_task).await {
            Ok(Ok(bytes)) => bytes,
            _ => Vec::new(),
        };
        tracing::debug!(elapsed = ?started.elapsed(), %status, bytes = out.len(), "kustomize build finished");
        if !status.success() {
            return Err(KustomizeError::Failed {
                status: status.to_string(),
                stderr: stderr_tail(&stderr),
            });
        }
        Ok(out)
    }
}

/// One build's output.
#[derive(Debug)]
pub(crate) struct Render {
    /// The objects.
    pub(crate) objects: Vec<Value>,
    /// The size it is accounted at: kustomize's output, or the YAML read.
    pub(crate) bytes: usize,
    /// Rendered in process (a plain kustomization), not by the binary.
    pub(crate) in_process: bool,
}

/// The directory to build for `deploy_path`: itself when it is a
/// directory, else its parent; inside the checkout either way.
pub fn build_dir(root: &Path, deploy_path: &str) -> Result<PathBuf, KustomizeError> {
    let resolved = resolve_inside(root, deploy_path)?;
    if resolved.is_dir() {
        return Ok(resolved);
    }
    // The parent of a canonical path inside the (canonical) root is the root
    // or inside it.
    Ok(resolved.parent().map(Path::to_path_buf).unwrap_or(resolved))
}

/// The pre-check described in the module documentation.
fn check_kustomizations(root: &Path, top: &Path, allow_remote: bool) -> Result<(), KustomizeError> {
    const FIELDS: [&str; 6] = [
        "resources",
        "bases",
        "components",
        "generators",
        "transformers",
        "validators",
    ];
    let mut queue = VecDeque::from([(top.to_path_buf(), 0usize)]);
    let mut visited = HashSet::from([top.to_path_buf()]);
    let rel = |p: &Path| -> PathBuf { p.strip_prefix(root).unwrap_or(Path::new("")).to_path_buf() };
    while let Some((dir, depth)) = queue.pop_front() {
        let Some(name) = KUSTOMIZATION_FILE_NAMES
            .iter()
            .find(|n| dir.join(n).is_file())
        else {
            // kustomize reports a missing kustomization itself.
            continue;
        };
        let kfile_rel = rel(&dir).join(name);
        let label = kfile_rel.display().to_string();
        let kfile_str = kfile_rel.to_str().unwrap_or_default().to_string();
        let kfile = resolve_inside(root, &kfile_str)?;
        let text = read_bounded(&kfile, &label)?;
        let docs = parse_documents(&text, &YamlLimits::default()).map_err(|source| {
            ManifestError::Yaml {
                path: label.clone(),
                source,
            }
        })?;
        let Some(doc) = docs.first() else { continue };
        let entries = FIELDS
            .iter()
            .filter_map(|f| doc.get(*f).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str);
        for entry in entries {
            if entry.contains('\n') {
                continue; // inline generator/transformer config
            }
            if is_remote_reference(entry) {
                if allow_remote {
                    continue;
                }
                return Err(KustomizeError::RemoteRefused {
                    kustomization: label,
                    resource: entry.to_string(),
                });
            }
            let joined = rel(&dir).join(entry);
            let resolved = resolve_inside(root, joined.to_str().unwrap_or("\0"));
            match resolved {
                Ok(path) if path.is_dir() => {
                    if depth + 1 >= MAX_SCAN_DEPTH || visited.len() >= MAX_SCAN_DIRS {
                        return Err(KustomizeError::TooManyKustomizations(label));
                    }
                    if visited.insert(path.clone()) {
                        queue.push_back((path, depth + 1));
                    }
                }
                Ok(_) => {}
                Err(PathError::NotFound(_)) if allow_remote => {}
                Err(PathError::NotFound(_)) => {
                    return Err(KustomizeError::MissingResource {
                        kustomization: label,
                        resource: entry.to_string(),
                    })
                }
                Err(source) => {
                    return Err(KustomizeError::ResourceRefused {
                        kustomization: label,
                        resource: entry.to_string(),
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

/// Reads all of `r`, or `None` as soon as it exceeds `cap` bytes.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    cap: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(out));
        }
        if out.len() + n > cap {
            return Ok(None);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads all of `r` (so the writer never blocks), keeping the last `cap`
/// bytes or so.
async fn read_tail<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 2 * cap {
            out.drain(..out.len() - cap);
        }
    }
    out
}

/// The last few non-empty lines of stderr, trimmed.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(STDERR_LINES);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "(no error output)".to_string()
    } else {
        tail
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// An empty, private temporary directory used as the child's `HOME`,
/// removed on drop.
struct TempHome(PathBuf);

impl TempHome {
    fn create() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "chump-kustomize-{}-{nanos}-{n}",
                std::process::id()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(TempHome(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("cannot create a temporary HOME")))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn stderr_tail_keeps_last_lines() {
        let text: String = (0..30).map(|i| format!("  line {i}  \n\n")).collect();
        let tail = stderr_tail(text.as_bytes());
        assert!(tail.starts_with("line 20\nline 21"), "{tail}");
        assert!(tail.ends_with("line 29"), "{tail}");
        assert_eq!(stderr_tail(b"\n \n"), "(no error output)");
    }

    #[test]
    fn detect_honours_override_and_kubectl_name() {
        let k = Kustomize::detect(Some("kubectl"), KustomizeOptions::default()).unwrap();
        assert!(k.uses_kubectl());
        assert_eq!(
            k.args(),
            [
                "kustomize",
                "--load-restrictor",
                "LoadRestrictionsRootOnly",
                "."
            ]
        );
        let k = Kustomize::detect(Some("/bin/true"), KustomizeOptions::default()).unwrap();
        assert!(!k.uses_kubectl());
        assert_eq!(
            k.args(),
            [
                "build",
                "--load-restrictor",
                "LoadRestrictionsRootOnly",
                "."
            ]
        );
        assert!(matches!(
            Kustomize::detect(Some("/nonexistent/kustomize"), KustomizeOptions::default()),
            Err(KustomizeError::NotFound(_))
        ));
        assert!(matches!(
            Kustomize::detect(Some("no-such-binary-chump"), KustomizeOptions::default()),
            Err(KustomizeError::NotFound(_))
        ));
        // No override: something is found on this machine (kubectl at least).
        assert!(Kustomize::detect(None, KustomizeOptions::default()).is_ok());
    }

    #[test]
    fn build_dir_uses_parent_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "deploy/kustomization.yaml", "resources: []\n");
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(build_dir(&root, "deploy").unwrap(), root.join("deploy"));
        assert_eq!(
            build_dir(&root, "deploy/kustomization.yaml").unwrap(),
            root.join("deploy")
        );
        assert_eq!(build_dir(&root, "").unwrap(), root);
        assert!(matches!(
            build_dir(&root, "../x"),
            Err(KustomizeError::Path(_))
        ));
    }

    #[test]
    fn scan_refuses_remote_missing_and_outside() {
        let outer = tempfile::tempdir().unwrap();
        let root_path = outer.path().join("repo");
        write(
            &root_path,
            "base/kustomization.yaml",
            "resources: [d.yaml]\n",
        );
        write(&root_path, "base/d.yaml", "kind: ConfigMap\n");
        let root = root_path.canonicalize().unwrap();
        let check = |body: &str, allow: bool| {
            write(&root, "ov/kustomization.yaml", body);
            check_kustomizations(&root, &root.join("ov"), allow)
        };
        assert!(check("resources: [../base]\n", false).is_ok());
        for remote in [
            "https://github.com/org/repo//deploy?ref=v1",
            "github.com/org/repo/deploy?ref=main",
            "git@github.com:org/repo.git",
            "ssh://git@host/repo.git",
            "https://example.com/manifest.yaml",
        ] {
            let body = format!("resources:\n- ../base\n- {remote}\n");
            let err = check(&body, false).unwrap_err();
            assert!(
                matches!(err, KustomizeError::RemoteRefused { .. }),
                "{remote}: {err}"
            );
            assert!(check(&body, true).is_ok(), "{remote}");
        }
        // Remote bases deeper down are found too.
        write(
            &root,
            "base/kustomization.yaml",
            "resources: [d.yaml, 'github.com/a/b?ref=x']\n",
        );
        assert!(matches!(
            check("resources: [../base]\n", false),
            Err(KustomizeError::RemoteRefused { .. })
        ));
        write(&root, "base/kustomization.yaml", "resources: [d.yaml]\n");
        assert!(matches!(
            check("resources: [example.com/org/repo]\n", false),
            Err(KustomizeError::MissingResource { .. })
        ));
        assert!(matches!(
            check("resources: [../../outside]\n", true),
            Err(KustomizeError::ResourceRefused { .. })
        ));
        write(outer.path(), "evil/kustomization.yaml", "resources: []\n");
        std::os::unix::fs::symlink(outer.path().join("evil"), root.join("evil")).unwrap();
        assert!(matches!(
            check("resources: [../evil]\n", true),
            Err(KustomizeError::ResourceRefused { .. })
        ));
        // Cycles terminate.
        write(&root, "base/kustomization.yaml", "resources: [../ov]\n");
        assert!(check("resources: [../base]\n", false).is_ok());
    }
}
