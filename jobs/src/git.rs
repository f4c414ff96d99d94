//! chump's git client: find out which commit a branch points to, and make the
//! files of that commit available on disk — with gix, never the `git` CLI.
//!
//! A [`GitCache`] lives under `CHUMP_WORKDIR`. Each (repository, branch) pair
//! gets one directory, named after a hash of the normalized URL (credentials
//! removed), the branch and — when the URL carries credentials — a keyed hash
//! of them ([`identity`]), so sources that track the same branch of the same
//! repository *with the same credentials* share it (its ref queries, fetches,
//! objects and trees), and a source never gets what another's credentials
//! fetched:
//!
//! ```text
//! <root>/git/<key>/source   the URL (redacted) and branch, for humans
//! <root>/git/<key>/repo     a bare, shallow gix repository (the fetch target)
//! <root>/git/<key>/trees/<commit>   the files of <commit>, complete
//! <root>/git/<key>/trees/.tmp-*     a tree being written (removed on next sync)
//! <root>/git/identity-key           the key of credential hashes (0600)
//! ```
//!
//! [`GitCache::sync`] asks the remote for the branch head (one `ls-refs`
//! round trip). When the files of that commit are already on disk nothing else
//! touches the network; otherwise it fetches only that branch at depth 1 on
//! the same connection and writes the commit's tree into a temporary directory
//! that is renamed into place when complete. A [`Checkout`] keeps its tree
//! directory alive: older trees are removed by a later `sync` only when no
//! `Checkout` refers to them any more.
//!
//! Credentials in a URL (`https://user:token@host/…`) are given to the HTTP
//! transport directly (no credential helper program is run) and never appear
//! in a [`GitError`], a log line or a `Debug` output; they live only as long
//! as the call that uses them. HTTPS trusts the platform's roots, or only
//! those of `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (rustls-native-certs).
//!
//! `ssh://` and scp-like URLs run OpenSSH's `ssh` with arguments only, the
//! key and known hosts of [`GitOptions`], and no ssh configuration ([`ssh`]).
//!
//! `file://` URLs and plain paths (tests, local mirrors) are read in-process
//! with gix when [`GitOptions::allow_file_urls`] is set — gix's own `file://`
//! transport would spawn `git-upload-pack`, which chump never does.
//!
//! Everything here is blocking; async callers use `spawn_blocking`. One process
//! owns a cache root: the per-key locks are in-process.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use gix::bstr::{BString, ByteSlice};
use gix::protocol::transport::client::blocking_io::Transport;
use gix::ObjectId;
use tracing::debug;

use crate::redact::{redact_secrets, redact_url, url_secrets};

mod identity;
mod ssh;

use identity::IdentityKey;

/// How many packs the cache repository may collect before it is dropped and
/// the next change is fetched into a fresh (shallow) repository. Keeps a
/// long-running cache bounded without running gc.
const MAX_PACKS: usize = 8;

/// Settings of a [`GitCache`].
#[derive(Debug, Clone)]
pub struct GitOptions {
    /// Accept `file://` URLs and plain paths. Off in production: a source
    /// must not read arbitrary directories of chump's host.
    pub allow_file_urls: bool,
    /// Per network operation, best effort: connect, and then any single read
    /// or write that stalls that long, for `git://` (socket timeouts) and
    /// `http(s)://` (the HTTP client's timeouts), and ssh's
    /// `ConnectTimeout` and keep-alives.
    pub timeout: Duration,
    /// The private key ssh offers (`CHUMP_SSH_KEY`); none when unset.
    pub ssh_key: Option<PathBuf>,
    /// The only known hosts ssh accepts (`CHUMP_SSH_KNOWN_HOSTS`); when
    /// unset, every host is unknown and refused.
    pub ssh_known_hosts: Option<PathBuf>,
}

impl Default for GitOptions {
    fn default() -> Self {
        GitOptions {
            allow_file_urls: false,
            timeout: Duration::from_secs(60),
            ssh_key: None,
            ssh_known_hosts: None,
        }
    }
}

/// What went wrong talking to a git remote or the cache. Every URL in it is
/// redacted and every message built from a gix error has the URL's secrets
/// masked.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The URL cannot be parsed.
    #[error("invalid git url '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The URL's scheme is not one chump talks to (or `file` when not allowed).
    #[error("git url scheme '{scheme}' is not allowed: {url}")]
    SchemeNotAllowed { url: String, scheme: String },
    /// The branch name is not a valid git branch name.
    #[error("invalid branch name '{branch}': {reason}")]
    InvalidBranch { branch: String, reason: String },
    /// The remote could not be reached or the handshake failed.
    #[error("cannot connect to remote {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The remote wants credentials, or refused the ones in the URL.
    #[error("authentication failed for remote {url}: {reason}")]
    Auth { url: String, reason: String },
    /// The remote's identity could not be verified: its TLS certificate is
    /// not trusted, or its ssh host key is unknown or differs.
    #[error("remote {url} is not trusted: {reason}")]
    Untrusted { url: String, reason: String },
    /// The remote has no `refs/heads/<branch>`.
    #[error("branch '{branch}' not found on remote {url}")]
    BranchNotFound { url: String, branch: String },
    /// Receiving the branch's objects failed.
    #[error("fetching branch '{branch}' from {url} failed: {reason}")]
    Fetch {
        url: String,
        branch: String,
        reason: String,
    },
    /// Writing the commit's files failed (including unsafe paths in the tree).
    #[error("cannot check out commit {commit}: {reason}")]
    Checkout { commit: String, reason: String },
    /// The local cache directory could not be used.
    #[error("git cache at {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
}

/// A cache of clones and checked-out trees under one root directory.
/// Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct GitCache {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    options: GitOptions,
    keys: Mutex<HashMap<String, Arc<KeyState>>>,
    /// An empty bare repository used by [`GitCache::remote_head`] (gix needs a
    /// repository to talk to a remote), so that asking does not wait for a
    /// running fetch of the same key.
    probe: Mutex<Option<gix::ThreadSafeRepository>>,
    counter: AtomicU64,
    /// The key of credential hashes, read or made on first need.
    identity: Mutex<Option<Arc<IdentityKey>>>,
}

#[derive(Default)]
struct KeyState {
    /// Serializes syncs of one key, and holds the last one: when it started
    /// and what it found (see [`GitCache::sync_since`]).
    lock: Mutex<Option<(OffsetDateTime, Checkout)>>,
    /// Trees handed out in a [`Checkout`], by commit.
    pins: Mutex<HashMap<String, Weak<Pin>>>,
}

struct Pin {
    dir: PathBuf,
}

impl fmt::Debug for GitCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCache")
            .field("root", &self.inner.root)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// The files of one commit of a branch, on disk. The directory stays
/// unchanged while this value (or a clone of it) is alive.
#[derive(Clone)]
pub struct Checkout {
    /// Hex id of the commit whose files are in [`Checkout::dir`].
    pub commit: String,
    /// Whether this sync received objects from the remote (or, for local
    /// repositories, wrote a new tree). `false` means the cached state was
    /// reused and only the refs were asked for.
    pub fetched: bool,
    /// Whether this is the result of another check's sync (no ref query of
    /// its own; see [`GitCache::sync_since`]).
    pub shared: bool,
    pin: Arc<Pin>,
}

impl Checkout {
    /// The directory holding the files of [`Checkout::commit`].
    pub fn dir(&self) -> &Path {
        &self.pin.dir
    }
}

impl fmt::Debug for Checkout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkout")
            .field("commit", &self.commit)
            .field("fetched", &self.fetched)
            .field("dir", &self.pin.dir)
            .finish()
    }
}

/// A parsed, checked URL with what is needed to talk about it safely.
struct Target {
    url: gix::Url,
    /// For messages: the URL with its userinfo masked.
    shown: String,
    /// Strings to mask in any text from gix.
    secrets: Vec<String>,
    /// Set for `file://` URLs and plain paths: the repository's path.
    local: Option<PathBuf>,
    /// What ssh said on stderr, once an ssh connection was started.
    ssh: Mutex<Option<ssh::Stderr>>,
}

impl Target {
    fn clean(&self, text: &str) -> String {
        redact_secrets(text, &self.secrets)
    }

    /// All messages of a gix error, outermost first, secrets masked.
    fn describe(&self, err: &gix::Error) -> String {
        self.clean(&describe_error(err))
    }
}

fn describe_error(err: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.iter_errors() {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p == &s) {
            parts.push(s);
        }
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

impl GitCache {
    /// A cache under `root` (`CHUMP_WORKDIR`); it keeps its data in
    /// `root/git`. Nothing is touched on disk until the first call.
    pub fn new(root: PathBuf, options: GitOptions) -> Self {
        GitCache {
            inner: Arc::new(Inner {
                root,
                options,
                keys: Mutex::new(HashMap::new()),
                probe: Mutex::new(None),
                counter: AtomicU64::new(0),
                identity: Mutex::new(None),
            }),
        }
    }

    /// The options this cache was made with.
    pub fn options(&self) -> &GitOptions {
        &self.inner.options
    }

    /// The directory that caches `branch` of `url` (see the module docs for
    /// its layout). For diagnostics and tests; the layout is not an API.
    pub fn cache_dir(&self, url: &str, branch: &str) -> Result<PathBuf, GitError> {
        let target = self.target(url)?;
        check_branch(branch)?;
        Ok(self.key_dir(&self.key_of(&target, branch)?))
    }

    /// Asks the remote for `refs/heads/<branch>` only — one round trip (a
    /// protocol v2 `ls-refs` with that ref as prefix, or the ref
    /// advertisement of older servers), no pack — and returns the commit it
    /// points to as hex. Blocking.
    pub fn remote_head(&self, url: &str, branch: &str) -> Result<String, GitError> {
        let target = self.target(url)?;
        check_branch(branch)?;
        let _span = tracing::debug_span!("git.remote_head", url = %target.shown, branch).entered();
        let id = match &target.local {
            Some(path) => local_head(&target, path, branch)?,
            None => {
                let repo = self.probe_repo()?;
                let remote = make_remote(&repo, &target, branch)?;
                let connection = self.connect(&remote, &target)?;
                let (ref_map, _handshake) = connection
                    .ref_map(gix::progress::Discard, Default::default())
                    .map_err(|e| connect_error(&target, &e))?;
                find_branch(&ref_map.remote_refs, branch).ok_or_else(|| {
                    GitError::BranchNotFound {
                        url: target.shown.clone(),
                        branch: branch.to_string(),
                    }
                })?
            }
        };
        debug!(commit = %id, "remote head");
        Ok(id.to_string())
    }

    /// Makes the files of the branch head available and returns them.
    ///
    /// Asks the remote for the head; if its tree is already on disk (from an
    /// earlier sync, also of an earlier process), nothing else goes over the
    /// network and `fetched` is `false`. Otherwise fetches only that branch,
    /// shallow (depth 1), on the same connection, and writes the commit's
    /// tree as plain files. Syncs of the same (url, branch) are serialized;
    /// others run in parallel. Blocking.
    pub fn sync(&self, url: &str, branch: &str) -> Result<Checkout, GitError> {
        self.sync_since(url, branch, OffsetDateTime::now_utc())
    }

    /// Like [`GitCache::sync`], but a sync of the same (url, branch) that
    /// *started* at or after `not_before` is as good as a new one: its result
    /// is returned without asking the remote again. Sources that share a
    /// repository and are due together thus cost one ref query between them
    /// (the head they get was read after they became due).
    pub fn sync_since(
        &self,
        url: &str,
        branch: &str,
        not_before: OffsetDateTime,
    ) -> Result<Checkout, GitError> {
        let target = self.target(url)?;
        check_branch(branch)?;
        let key = self.key_of(&target, branch)?;
        let state = self.key_state(&key);
        let mut last = state.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((started, checkout)) = last.as_ref() {
            if *started >= not_before {
                debug!(commit = %checkout.commit, "head read by a sync that started after this check was due: shared");
                return Ok(Checkout {
                    fetched: false,
                    shared: true,
                    ..checkout.clone()
                });
            }
        }
        // The previous result no longer pins its tree: an old tree can go.
        let previous = last.take().map(|(_, c)| c.commit);
        let started = OffsetDateTime::now_utc();
        let _span =
            tracing::debug_span!("git.sync", url = %target.shown, branch, key = %key).entered();

        let dir = self.key_dir(&key);
        let trees = dir.join("trees");
        if previous.is_none() {
            // First sync of this key by this process: set the directory up.
            create_dir_all(&trees)?;
            write_source_note(&dir, &target, branch);
        }

        let (commit, fetched) = match &target.local {
            Some(path) => self.sync_local(&target, path, branch, &trees)?,
            None => self.sync_remote(&target, branch, &dir, &trees)?,
        };
        let hex = commit.to_string();
        let checkout = pin(&state, &hex, trees.join(&hex), fetched);
        remove_unpinned_trees(&state, &trees, &hex);
        debug!(commit = %hex, fetched, dir = %checkout.dir().display(), "synced");
        *last = Some((started, checkout.clone()));
        Ok(checkout)
    }

    /// What [`GitCache::sync_since`] would answer without blocking: the
    /// head a sync that started at or after `not_before` read for `url` and
    /// `branch`, when one did and no sync of the key runs right now. `None`
    /// means call `sync_since` (on a blocking thread). Sources of one
    /// repository due together mostly end here, and skip the hop to a
    /// blocking thread; a URL with credentials only once the cache's
    /// identity key is loaded (that may read a file).
    pub fn shared_since(
        &self,
        url: &str,
        branch: &str,
        not_before: OffsetDateTime,
    ) -> Option<Checkout> {
        let target = self.target(url).ok()?;
        check_branch(branch).ok()?;
        let has_credentials = target.url.user().is_some() || target.url.password().is_some();
        let loaded = self
            .inner
            .identity
            .try_lock()
            .is_ok_and(|slot| slot.is_some());
        if has_credentials && !loaded {
            return None;
        }
        let key = self.key_of(&target, branch).ok()?;
        let state = self.key_state(&key);
        let last = state.lock.try_lock().ok()?;
        let (started, checkout) = last.as_ref()?;
        if *started < not_before {
            return None;
        }
        debug!(commit = %checkout.commit, "head read by a sync that started after this check was due: shared");
        Some(Checkout {
            fetched: false,
            shared: true,
            ..checkout.clone()
        })
    }

    fn sync_remote(
        &self,
        target: &Target,
        branch: &str,
        dir: &Path,
        trees: &Path,
    ) -> Result<(ObjectId, bool), GitError> {
        let repo_dir = dir.join("repo");
        let repo = open_or_init(&repo_dir)?;
        let remote = make_remote(&repo, target, branch)?;
        let connection = self.connect(&remote, target)?;
        let prepare = connection
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| connect_error(target, &e))?;
        let head = find_branch(&prepare.ref_map().remote_refs, branch).ok_or_else(|| {
            GitError::BranchNotFound {
                url: target.shown.clone(),
                branch: branch.to_string(),
            }
        })?;
        debug!(commit = %head, "remote head");

        if trees.join(head.to_string()).is_dir() {
            debug!("tree already checked out, no fetch");
            return Ok((head, false));
        }
        if repo.has_object(head) {
            drop(prepare);
            debug!("commit already in the cache repository, no fetch");
            self.materialize(&repo, head, trees)?;
            return Ok((head, false));
        }

        let interrupt = AtomicBool::new(false);
        let outcome = prepare
            .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(
                std::num::NonZeroU32::MIN,
            ))
            .receive(gix::progress::Discard, &interrupt);
        let fetch_error = |reason: String| GitError::Fetch {
            url: target.shown.clone(),
            branch: branch.to_string(),
            reason,
        };
        match outcome {
            Ok(outcome) => {
                if let gix::remote::fetch::Status::Change {
                    write_pack_bundle, ..
                } = &outcome.status
                {
                    debug!(
                        objects = write_pack_bundle.index.num_objects,
                        "received pack"
                    );
                }
            }
            Err(e) => {
                // Whatever the fetch left behind (a lock file, a ref without
                // its objects) must not break the next sync: start over.
                let reason = target.describe(&e);
                drop(remote);
                drop(repo);
                discard_repo(&repo_dir);
                return Err(fetch_error(reason));
            }
        }
        // Re-open so the object database sees the new pack.
        drop(remote);
        drop(repo);
        let repo = open_or_init(&repo_dir)?;
        if !repo.has_object(head) {
            drop(repo);
            discard_repo(&repo_dir);
            return Err(fetch_error(format!(
                "the remote did not send commit {head}"
            )));
        }
        self.materialize(&repo, head, trees)?;
        if count_packs(&repo_dir) > MAX_PACKS {
            debug!("cache repository has too many packs, starting over next time");
            drop(repo);
            discard_repo(&repo_dir);
        }
        Ok((head, true))
    }

    fn sync_local(
        &self,
        target: &Target,
        path: &Path,
        branch: &str,
        trees: &Path,
    ) -> Result<(ObjectId, bool), GitError> {
        let head = local_head(target, path, branch)?;
        if trees.join(head.to_string()).is_dir() {
            return Ok((head, false));
        }
        let repo = open_local(target, path)?;
        self.materialize(&repo, head, trees)?;
        Ok((head, true))
    }

    /// Writes the tree of `commit` from `repo` to `trees/<commit>`: into a
    /// temporary directory first, renamed when complete.
    fn materialize(
        &self,
        repo: &gix::Repository,
        commit: ObjectId,
        trees: &Path,
    ) -> Result<(), GitError> {
        let hex = commit.to_string();
        let err = |reason: String| GitError::Checkout {
            commit: hex.clone(),
            reason,
        };
        let tree = repo
            .find_object(commit)
            .and_then(|o| o.peel_to_tree())
            .map_err(|e| err(describe_error(&e)))?;
        let mut index = repo
            .index_from_tree(&tree.id)
            .map_err(|e| err(describe_error(&e)))?;
        check_entries(&index).map_err(err)?;

        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = trees.join(format!(".tmp-{hex}-{}-{n}", std::process::id()));
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        create_dir_all(&tmp)?;
        let result = (|| -> Result<(), String> {
            let mut options = repo
                .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
                .map_err(|e| describe_error(&e))?;
            options.destination_is_initially_empty = true;
            options.overwrite_existing = false;
            options.keep_going = false;
            let objects = repo.objects.clone().into_arc().map_err(|e| e.to_string())?;
            let outcome = gix::worktree::state::checkout(
                &mut index,
                &tmp,
                objects,
                &gix::progress::Discard,
                &gix::progress::Discard,
                &AtomicBool::new(false),
                options,
            )
            .map_err(|e| describe_error(&e))?;
            if let Some(c) = outcome.collisions.first() {
                return Err(format!("path collision at '{}'", c.path));
            }
            if let Some(e) = outcome.errors.first() {
                return Err(format!("'{}': {}", e.path, describe_error(&e.error)));
            }
            debug!(
                files = outcome.files_updated,
                bytes = outcome.bytes_written,
                "tree written"
            );
            Ok(())
        })();
        if let Err(reason) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(err(reason));
        }
        let dest = trees.join(&hex);
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            GitError::Cache {
                path: dest.clone(),
                reason: format!("cannot move the checked out tree into place: {e}"),
            }
        })?;
        Ok(())
    }

    fn target(&self, url: &str) -> Result<Target, GitError> {
        let shown = redact_url(url);
        let secrets = url_secrets(url);
        let clean = |s: String| redact_secrets(&s, &secrets);
        let parsed =
            gix::url::parse(url.as_bytes().as_bstr()).map_err(|e| GitError::InvalidUrl {
                url: shown.clone(),
                reason: clean(describe_error(&e)),
            })?;
        use gix::url::Scheme;
        let local = match &parsed.scheme {
            Scheme::Git | Scheme::Http | Scheme::Https | Scheme::Ssh => None,
            Scheme::File if self.inner.options.allow_file_urls => {
                let path = gix::path::from_bstr(parsed.path.as_bstr())
                    .map_err(|e| GitError::InvalidUrl {
                        url: shown.clone(),
                        reason: clean(describe_error(&e)),
                    })?
                    .into_owned();
                let path = if path.is_relative() {
                    std::env::current_dir()
                        .map(|d| d.join(&path))
                        .unwrap_or(path)
                } else {
                    path
                };
                Some(path)
            }
            other => {
                return Err(GitError::SchemeNotAllowed {
                    url: shown,
                    scheme: other.as_str().to_string(),
                })
            }
        };
        if parsed.scheme == Scheme::Http && (parsed.user().is_some() || parsed.password().is_some())
        {
            // gix refuses to send a password over plain http, but the HTTP
            // client would send a user-only token from the URL by itself:
            // refuse both, before anything goes over the wire.
            return Err(GitError::Auth {
                url: shown,
                reason: "will not send credentials in clear text over http; use https".into(),
            });
        }
        if local.is_none() && parsed.host().is_none_or(str::is_empty) {
            return Err(GitError::InvalidUrl {
                url: shown,
                reason: "no host".into(),
            });
        }
        Ok(Target {
            url: parsed,
            shown,
            secrets,
            local,
            ssh: Mutex::new(None),
        })
    }

    /// The cache key of `branch` of the target: see [`cache_key`].
    fn key_of(&self, target: &Target, branch: &str) -> Result<String, GitError> {
        if target.url.user().is_none() && target.url.password().is_none() {
            return Ok(cache_key(&target.url, branch, None));
        }
        let key = self.identity_key()?;
        let tag = key.tag(&target.url);
        Ok(cache_key(&target.url, branch, tag.as_deref()))
    }

    fn identity_key(&self) -> Result<Arc<IdentityKey>, GitError> {
        let mut slot = self
            .inner
            .identity
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(key) = slot.as_ref() {
            return Ok(key.clone());
        }
        let path = self.inner.root.join("git").join("identity-key");
        let key =
            Arc::new(
                IdentityKey::load_or_create(&path).map_err(|reason| GitError::Cache {
                    path: path.clone(),
                    reason,
                })?,
            );
        *slot = Some(key.clone());
        Ok(key)
    }

    fn key_dir(&self, key: &str) -> PathBuf {
        self.inner.root.join("git").join(key)
    }

    fn key_state(&self, key: &str) -> Arc<KeyState> {
        let mut keys = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.entry(key.to_string()).or_default().clone()
    }

    fn probe_repo(&self) -> Result<gix::Repository, GitError> {
        let mut probe = self.inner.probe.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(repo) = probe.as_ref() {
            return Ok(repo.to_thread_local());
        }
        let dir = self.inner.root.join("git").join("probe");
        let repo = open_or_init(&dir)?;
        *probe = Some(repo.clone().into_sync());
        Ok(repo)
    }

    /// Opens a connection for fetching from `remote`, with chump's timeouts
    /// and the URL's credentials (no credential helper is ever run).
    fn connect<'a, 'repo>(
        &self,
        remote: &'a gix::Remote<'repo>,
        target: &Target,
    ) -> Result<gix::remote::Connection<'a, 'static, 'repo, Box<dyn Transport + Send>>, GitError>
    {
        let timeout = self.inner.options.timeout;
        let url = &target.url;
        let connection = match url.scheme {
            gix::url::Scheme::Git => {
                let transport =
                    connect_git_daemon(url, timeout).map_err(|e| GitError::Connect {
                        url: target.shown.clone(),
                        reason: target.clean(&e.to_string()),
                    })?;
                remote.to_connection_with_transport(transport)
            }
            gix::url::Scheme::Ssh => {
                let (transport, stderr) =
                    ssh::connect(url, &self.inner.options).map_err(|reason| GitError::Connect {
                        url: target.shown.clone(),
                        reason: target.clean(&reason),
                    })?;
                *target.ssh.lock().unwrap_or_else(|p| p.into_inner()) = Some(stderr);
                remote.to_connection_with_transport(transport)
            }
            _ => remote
                .connect(gix::remote::Direction::Fetch)
                .map_err(|e| connect_error(target, &e))?,
        };
        let mut connection = connection.with_credentials(url_credentials(url));
        if matches!(url.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https) {
            if let Some(options) = http_options(remote.repo(), url, timeout) {
                connection = connection.with_transport_options(options);
            }
        }
        Ok(connection)
    }
}

/// Connects to a git daemon ourselves, so that connect, reads and writes have
/// chump's timeout (gix's own connector has a fixed connect timeout and none
/// for reads).
fn connect_git_daemon(url: &gix::Url, timeout: Duration) -> io::Result<Box<dyn Transport + Send>> {
    use gix::protocol::transport::client::git;
    let host = url.host().unwrap_or_default();
    let port = url.port;
    let addrs: Vec<_> = (host, port.unwrap_or(9418)).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                let write = stream.try_clone()?;
                let connection = git::blocking_io::Connection::new(
                    stream,
                    write,
                    gix::protocol::transport::Protocol::V2,
                    url.path.clone(),
                    Some((host.to_string(), port)),
                    git::ConnectMode::Daemon,
                    false,
                );
                return Ok(Box::new(connection));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// HTTP transport options from the repository's (isolated) configuration,
/// with chump's timeout for the reqwest client.
fn http_options(
    repo: &gix::Repository,
    url: &gix::Url,
    timeout: Duration,
) -> Option<Box<dyn std::any::Any>> {
    use gix::protocol::transport::client::blocking_io::http;
    let mut options = repo
        .transport_options(url.to_bstring().as_bstr(), None)
        .ok()
        .flatten()?;
    if let Some(http_options) = options.downcast_mut::<http::Options>() {
        http_options.connect_timeout = Some(timeout);
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(move |builder| {
                Ok(builder.connect_timeout(timeout).timeout(timeout))
            })),
            configure_request: None,
        };
        http_options.backend = Some(Arc::new(Mutex::new(backend)));
    }
    Some(options)
}

/// The credentials callback: answers the transport's request for credentials
/// with the user and password of the URL itself, and never runs a helper.
fn url_credentials(
    url: &gix::Url,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>>
       + 'static {
    let user = url.user().map(str::to_owned);
    let password = url.password().map(str::to_owned);
    move |action| match action {
        gix::credentials::helper::Action::Get(context) => match &user {
            Some(user) => Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: user.clone(),
                    password: password.clone().unwrap_or_default(),
                    oauth_refresh_token: None,
                },
                next: context.into(),
            })),
            None => Err(gix::error::unauthenticated(
                "the remote requires credentials and the URL carries none",
            )
            .into()),
        },
        // Store/erase: there is nothing to store credentials in.
        _ => Ok(None),
    }
}

fn make_remote<'repo>(
    repo: &'repo gix::Repository,
    target: &Target,
    branch: &str,
) -> Result<gix::Remote<'repo>, GitError> {
    let spec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    repo.remote_at_without_url_rewrite(target.url.clone())
        .and_then(|r| r.with_refspecs([spec.as_str()], gix::remote::Direction::Fetch))
        .map(|r| r.with_fetch_tags(gix::remote::fetch::Tags::None))
        .map_err(|e| GitError::InvalidUrl {
            url: target.shown.clone(),
            reason: target.describe(&e),
        })
}

fn connect_error(target: &Target, err: &gix::Error) -> GitError {
    use gix::protocol::transport::client::Error as TransportError;
    let reason = target.describe(err);
    let url = target.shown.clone();
    let stderr = target.ssh.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(failure) = stderr.and_then(|s| s.failure(&target.url)) {
        return match failure {
            ssh::Failure::HostKey(reason) => GitError::Untrusted { url, reason },
            ssh::Failure::Auth(reason) => GitError::Auth {
                url,
                reason: target.clean(&reason),
            },
            ssh::Failure::Other(said) => GitError::Connect {
                url,
                reason: target.clean(&format!("{said} ({reason})")),
            },
        };
    }
    if let Some(problem) = certificate_problem(&reason) {
        let host = target.url.host().unwrap_or_default();
        return GitError::Untrusted {
            url,
            reason: format!(
                "certificate not trusted for host {host}: {problem} (a private CA goes into SSL_CERT_FILE)"
            ),
        };
    }
    let refused = err.iter_errors().any(|e| {
        matches!(
            e.downcast_ref::<TransportError>(),
            Some(TransportError::AuthenticationRefused(_))
        )
    });
    if refused || err.is_unauthenticated() {
        GitError::Auth {
            url: target.shown.clone(),
            reason,
        }
    } else {
        GitError::Connect {
            url: target.shown.clone(),
            reason,
        }
    }
}

fn find_branch(refs: &[gix::protocol::handshake::Ref], branch: &str) -> Option<ObjectId> {
    use gix::protocol::handshake::Ref;
    let name = format!("refs/heads/{branch}");
    refs.iter().find_map(|r| match r {
        Ref::Direct {
            full_ref_name,
            object,
        }
        | Ref::Peeled {
            full_ref_name,
            object,
            ..
        }
        | Ref::Symbolic {
            full_ref_name,
            object,
            ..
        } if full_ref_name == name.as_bytes() => Some(*object),
        _ => None,
    })
}

fn check_branch(branch: &str) -> Result<(), GitError> {
    let full = format!("refs/heads/{branch}");
    gix::refs::FullName::try_from(full.as_str())
        .map(|_| ())
        .map_err(|e| GitError::InvalidBranch {
            branch: branch.to_string(),
            reason: e.to_string(),
        })
}

/// What rustls said about the server's certificate, if that is why the
/// connection failed (it says `invalid peer certificate: <why>`).
fn certificate_problem(reason: &str) -> Option<String> {
    let at = reason.find("invalid peer certificate")?;
    let rest = &reason[at + "invalid peer certificate".len()..];
    let why: String = rest
        .trim_start_matches([':', ' '])
        .chars()
        .take_while(|c| *c != ')' && *c != '\n')
        .take(120)
        .collect();
    let why = why
        .split(": ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Some(match why.as_str() {
        "UnknownIssuer" => "signed by an unknown issuer".to_string(),
        "" => "invalid certificate".to_string(),
        other => other.to_string(),
    })
}

/// The cache key of (url, branch, credentials): a hash of the URL without
/// credentials (lower-case host, no trailing slash), the branch, and the
/// keyed hash of the URL's credentials when it has any (public URLs keep the
/// key they always had).
fn cache_key(url: &gix::Url, branch: &str, credentials: Option<&str>) -> String {
    let mut url = url.clone();
    url.set_user(None);
    url.set_password(None);
    url.host = url.host.map(|h| h.to_ascii_lowercase());
    while url.path.len() > 1 && url.path.ends_with(b"/") {
        url.path.pop();
    }
    let mut hasher = gix::hash::hasher(gix::hash::Kind::Sha1);
    hasher.update(&url.to_bstring());
    hasher.update(b"\n");
    hasher.update(branch.as_bytes());
    if let Some(tag) = credentials {
        hasher.update(b"\ncredentials ");
        hasher.update(tag.as_bytes());
    }
    let id = hasher
        .try_finalize()
        .expect("hashing in memory does not fail without collision detection hits");
    id.to_hex_with_len(24).to_string()
}

fn open_options() -> gix::open::Options {
    // Isolated: no system/global git config, no environment — no filter
    // drivers, credential helpers or URL rewrites from the host.
    gix::open::Options::isolated().config_overrides([
        "core.logAllRefUpdates=false",
        "gc.auto=0",
        "protocol.version=2",
    ])
}

fn open_or_init(dir: &Path) -> Result<gix::Repository, GitError> {
    let cache_err = |reason: String| GitError::Cache {
        path: dir.to_path_buf(),
        reason,
    };
    if dir.join("HEAD").is_file() {
        match gix::open_opts(dir, open_options()) {
            Ok(repo) => return Ok(repo),
            Err(e) => {
                debug!(error = %describe_error(&e), "cache repository unusable, starting over");
                discard_repo(dir);
            }
        }
    } else if dir.exists() {
        discard_repo(dir);
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
        remove_leftovers(dir);
    }
    // Create under a temporary name and rename, so a crash never leaves a
    // half-initialized repository at `dir`.
    let tmp = dir.with_extension(format!("init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    gix::ThreadSafeRepository::init_opts(
        &tmp,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        open_options(),
    )
    .map_err(|e| cache_err(describe_error(&e)))?;
    std::fs::rename(&tmp, dir)
        .map_err(|e| cache_err(format!("cannot move new repository into place: {e}")))?;
    gix::open_opts(dir, open_options()).map_err(|e| cache_err(describe_error(&e)))
}

/// Removes a cache repository (renaming it away first, so that a crash
/// half-way through leaves no half-deleted repository in place).
fn discard_repo(dir: &Path) {
    let trash = dir.with_extension(format!("trash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&trash);
    if std::fs::rename(dir, &trash).is_ok() {
        let _ = std::fs::remove_dir_all(&trash);
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes `<dir>.init-*` and `<dir>.trash-*` left by a process that died
/// while creating or discarding the repository at `dir`.
fn remove_leftovers(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let name = name.to_string_lossy();
    let prefixes = [format!("{name}.init-"), format!("{name}.trash-")];
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let entry_name = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| entry_name.starts_with(p.as_str())) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn count_packs(repo_dir: &Path) -> usize {
    std::fs::read_dir(repo_dir.join("objects").join("pack"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0)
}

fn open_local(target: &Target, path: &Path) -> Result<gix::Repository, GitError> {
    gix::open_opts(path, open_options()).map_err(|e| GitError::Connect {
        url: target.shown.clone(),
        reason: format!("not a git repository: {}", target.describe(&e)),
    })
}

fn local_head(target: &Target, path: &Path, branch: &str) -> Result<ObjectId, GitError> {
    let repo = open_local(target, path)?;
    let name = format!("refs/heads/{branch}");
    let reference = repo
        .try_find_reference(name.as_str())
        .map_err(|e| GitError::Connect {
            url: target.shown.clone(),
            reason: target.describe(&e),
        })?
        .ok_or_else(|| GitError::BranchNotFound {
            url: target.shown.clone(),
            branch: branch.to_string(),
        })?;
    let mut reference = reference;
    let id = reference.peel_to_id().map_err(|e| GitError::Connect {
        url: target.shown.clone(),
        reason: target.describe(&e),
    })?;
    Ok(id.detach())
}

/// Refuses trees that would make the checkout write through a symlink of the
/// same tree, or that list a path twice. (`..`, `.git` and absolute paths are
/// already refused by gix when the index is made from the tree.)
fn check_entries(index: &gix::index::File) -> Result<(), String> {
    let mut symlinks = HashSet::new();
    let mut seen = HashSet::new();
    for entry in index.entries() {
        let path = entry.path(index);
        if !seen.insert(path.to_owned()) {
            return Err(format!("the tree lists '{path}' twice"));
        }
        if entry.mode == gix::index::entry::Mode::SYMLINK {
            symlinks.insert(path.to_owned());
        }
    }
    for entry in index.entries() {
        let path = entry.path(index);
        let mut prefix = BString::default();
        for (i, component) in path.split_str("/").enumerate() {
            if i > 0 {
                if symlinks.contains(&prefix) {
                    return Err(format!("'{path}' lies below the symlink '{prefix}'"));
                }
                prefix.push(b'/');
            }
            prefix.extend_from_slice(component);
        }
    }
    Ok(())
}

fn pin(state: &KeyState, commit: &str, dir: PathBuf, fetched: bool) -> Checkout {
    let mut pins = state.pins.lock().unwrap_or_else(|p| p.into_inner());
    let pin = match pins.get(commit).and_then(Weak::upgrade) {
        Some(pin) => pin,
        None => {
            let pin = Arc::new(Pin { dir });
            pins.insert(commit.to_string(), Arc::downgrade(&pin));
            pin
        }
    };
    pins.retain(|_, weak| weak.strong_count() > 0);
    Checkout {
        commit: commit.to_string(),
        fetched,
        shared: false,
        pin,
    }
}

/// Removes tree directories other than `current` that no [`Checkout`] holds,
/// and temporary directories of interrupted checkouts. Called with the key
/// lock held, so no tree is being written.
fn remove_unpinned_trees(state: &KeyState, trees: &Path, current: &str) {
    let pins = state.pins.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(entries) = std::fs::read_dir(trees) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == current || pins.get(&name).is_some_and(|w| w.strong_count() > 0) {
            continue;
        }
        debug!(tree = %name, "removing unused tree");
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

fn write_source_note(dir: &Path, target: &Target, branch: &str) {
    let path = dir.join("source");
    let text = format!("{}\n{}\n", target.shown, branch);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let _ = std::fs::write(path, text);
    }
}

fn create_dir_all(path: &Path) -> Result<(), GitError> {
    std::fs::create_dir_all(path).map_err(|e| GitError::Cache {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(allow_file_urls: bool) -> (tempdir::Dir, GitCache) {
        let dir = tempdir::Dir::new();
        let cache = GitCache::new(
            dir.path().to_path_buf(),
            GitOptions {
                allow_file_urls,
                timeout: Duration::from_secs(5),
                ..GitOptions::default()
            },
        );
        (dir, cache)
    }

    /// A tiny temp dir, so the crate needs no `tempfile` dependency.
    mod tempdir {
        use std::path::{Path, PathBuf};
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Self {
                use std::sync::atomic::{AtomicU64, Ordering};
                static N: AtomicU64 = AtomicU64::new(0);
                let path = std::env::temp_dir().join(format!(
                    "chump-git-unit-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn blob(repo_dir: &Path, data: &[u8]) -> ObjectId {
        let repo = gix::open(repo_dir).unwrap();
        repo.write_blob(data).unwrap().detach()
    }

    fn entry(
        name: &str,
        mode: gix::objs::tree::EntryKind,
        oid: ObjectId,
    ) -> gix::objs::tree::Entry {
        gix::objs::tree::Entry {
            mode: mode.into(),
            filename: name.into(),
            oid,
        }
    }

    #[test]
    fn errors_never_show_credentials() {
        let (_d, cache) = cache(false);
        let err = cache
            .sync("https://bob:hunter2secret@127.0.0.1:1/x.git", "main")
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("hunter2secret") && !text.contains("bob:"),
            "{text}"
        );
        let err = cache.remote_head("file:///tmp/x", "main").unwrap_err();
        assert!(matches!(err, GitError::SchemeNotAllowed { .. }), "{err}");
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<GitCache>();
        check::<Checkout>();
    }

    #[test]
    fn credentials_come_from_the_url() {
        use gix::credentials::{helper::Action, protocol::Context};
        let get = || {
            Action::Get(Context {
                url: Some("https://example.com/a.git".into()),
                ..Default::default()
            })
        };
        let url = gix::url::parse("https://bob:pw@example.com/a.git".as_bytes().as_bstr()).unwrap();
        let outcome = url_credentials(&url)(get()).unwrap().unwrap();
        assert_eq!(outcome.identity.username, "bob");
        assert_eq!(outcome.identity.password, "pw");
        let url = gix::url::parse("https://token@example.com/a.git".as_bytes().as_bstr()).unwrap();
        let outcome = url_credentials(&url)(get()).unwrap().unwrap();
        assert_eq!(outcome.identity.username, "token");
        assert_eq!(outcome.identity.password, "");
        let url = gix::url::parse("https://example.com/a.git".as_bytes().as_bstr()).unwrap();
        assert!(url_credentials(&url)(get())
            .unwrap_err()
            .is_unauthenticated());
    }

    #[test]
    fn key_normalizes_the_url_and_separates_credentials() {
        let a = gix::url::parse("https://u:p@Example.com/a/b.git/".as_bytes().as_bstr()).unwrap();
        let b = gix::url::parse("https://example.com/a/b.git".as_bytes().as_bstr()).unwrap();
        assert_eq!(cache_key(&a, "main", None), cache_key(&b, "main", None));
        assert_ne!(cache_key(&b, "main", None), cache_key(&b, "dev", None));
        assert_ne!(
            cache_key(&a, "main", Some("t1")),
            cache_key(&a, "main", Some("t2"))
        );
        assert_ne!(
            cache_key(&a, "main", Some("t1")),
            cache_key(&a, "main", None)
        );

        // Through a cache: the same credentials share a directory, other
        // credentials (or none) do not, and the directory's name does not
        // change when the cache is made again (a restart).
        let (d, cache) = cache(false);
        let dir = |url: &str| cache.cache_dir(url, "main").unwrap();
        let right = dir("https://bob:right@example.com/a.git");
        assert_eq!(right, dir("https://bob:right@EXAMPLE.com/a.git/"));
        assert_ne!(right, dir("https://bob:wrong@example.com/a.git"));
        assert_ne!(right, dir("https://example.com/a.git"));
        let again = GitCache::new(d.path().to_path_buf(), cache.options().clone());
        assert_eq!(
            right,
            again
                .cache_dir("https://bob:right@example.com/a.git", "main")
                .unwrap()
        );
        let key = std::fs::read_to_string(d.path().join("git/identity-key")).unwrap();
        assert!(!key.contains("right"));
    }

    #[test]
    fn certificate_errors_are_named() {
        assert_eq!(
            certificate_problem("error sending request: client error (Connect): invalid peer certificate: UnknownIssuer").as_deref(),
            Some("signed by an unknown issuer")
        );
        assert_eq!(
            certificate_problem("invalid peer certificate: Expired").as_deref(),
            Some("Expired")
        );
        assert_eq!(certificate_problem("connection refused"), None);
    }

    #[test]
    fn bad_branch_and_urls_are_refused() {
        let (_d, cache) = cache(false);
        assert!(matches!(
            cache.remote_head("git://127.0.0.1:1/x.git", "a..b"),
            Err(GitError::InvalidBranch { .. })
        ));
        assert!(matches!(
            cache.remote_head("/some/path", "main"),
            Err(GitError::SchemeNotAllowed { .. })
        ));
        assert!(matches!(
            cache.remote_head("ext::sh -c evil", "main"),
            Err(GitError::SchemeNotAllowed { .. }) | Err(GitError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn local_repository_is_checked_out_without_git() {
        let (d, cache) = cache(true);
        let src = d.path().join("src.git");
        gix::init_bare(&src).unwrap();
        let a = blob(&src, b"hello\n");
        let commit = commit_tree(
            &src,
            vec![entry("a.txt", gix::objs::tree::EntryKind::Blob, a)],
        );
        let url = format!("file://{}", src.display());
        assert_eq!(cache.remote_head(&url, "main").unwrap(), commit.to_string());
        let checkout = cache.sync(&url, "main").unwrap();
        assert_eq!(checkout.commit, commit.to_string());
        assert!(checkout.fetched);
        assert_eq!(
            std::fs::read_to_string(checkout.dir().join("a.txt")).unwrap(),
            "hello\n"
        );
        let again = cache.sync(&url, "main").unwrap();
        assert!(!again.fetched);
        assert_eq!(again.dir(), checkout.dir());
        assert!(matches!(
            cache.sync(&url, "nope"),
            Err(GitError::BranchNotFound { .. })
        ));
    }

    /// Points `main` of the repository at `dir` to a new commit of `entries`.
    fn commit_tree(dir: &Path, entries: Vec<gix::objs::tree::Entry>) -> ObjectId {
        let repo = gix::open(dir).unwrap();
        let mut tree = gix::objs::Tree { entries };
        tree.entries.sort();
        let tree_id = repo.write_object(&tree).unwrap().detach();
        let sig = gix::actor::Signature {
            name: "t".into(),
            email: "t@example.com".into(),
            time: gix::date::Time::new(1_700_000_000, 0),
        };
        let commit = gix::objs::Commit {
            tree: tree_id,
            parents: Default::default(),
            author: sig.clone(),
            committer: sig,
            encoding: None,
            message: "c".into(),
            extra_headers: vec![],
        };
        let id = repo.write_object(&commit).unwrap().detach();
        repo.reference(
            "refs/heads/main",
            id,
            gix::refs::transaction::PreviousValue::Any,
            "test",
        )
        .unwrap();
        id
    }

    #[test]
    fn trees_that_escape_are_refused() {
        let (d, cache) = cache(true);
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();

        // A `..` entry.
        let src = d.path().join("dotdot.git");
        gix::init_bare(&src).unwrap();
        let b = blob(&src, b"pwned");
        let sub = {
            let repo = gix::open(&src).unwrap();
            let tree = gix::objs::Tree {
                entries: vec![entry("pwned", gix::objs::tree::EntryKind::Blob, b)],
            };
            repo.write_object(&tree).unwrap().detach()
        };
        commit_tree(
            &src,
            vec![entry("..", gix::objs::tree::EntryKind::Tree, sub)],
        );
        let err = cache
            .sync(&format!("file://{}", src.display()), "main")
            .unwrap_err();
        assert!(matches!(err, GitError::Checkout { .. }), "{err}");

        // A symlink to the outside plus a directory of the same name.
        let src = d.path().join("symlink.git");
        gix::init_bare(&src).unwrap();
        let target = blob(&src, outside.to_string_lossy().as_bytes());
        let b = blob(&src, b"pwned");
        let sub = {
            let repo = gix::open(&src).unwrap();
            let tree = gix::objs::Tree {
                entries: vec![entry("pwned", gix::objs::tree::EntryKind::Blob, b)],
            };
            repo.write_object(&tree).unwrap().detach()
        };
        commit_tree(
            &src,
            vec![
                entry("evil", gix::objs::tree::EntryKind::Link, target),
                entry("evil", gix::objs::tree::EntryKind::Tree, sub),
            ],
        );
        let err = cache
            .sync(&format!("file://{}", src.display()), "main")
            .unwrap_err();
        assert!(matches!(err, GitError::Checkout { .. }), "{err}");
        assert!(!outside.join("pwned").exists());

        // A plain symlink is fine and stays a symlink.
        let src = d.path().join("link.git");
        gix::init_bare(&src).unwrap();
        let target = blob(&src, b"a.txt");
        let a = blob(&src, b"A");
        commit_tree(
            &src,
            vec![
                entry("a.txt", gix::objs::tree::EntryKind::Blob, a),
                entry("l", gix::objs::tree::EntryKind::Link, target),
            ],
        );
        let checkout = cache
            .sync(&format!("file://{}", src.display()), "main")
            .unwrap();
        let meta = std::fs::symlink_metadata(checkout.dir().join("l")).unwrap();
        assert!(meta.file_type().is_symlink());
    }

    #[test]
    fn held_checkout_survives_newer_commit() {
        let (d, cache) = cache(true);
        let src = d.path().join("src.git");
        gix::init_bare(&src).unwrap();
        let a = blob(&src, b"one");
        commit_tree(&src, vec![entry("f", gix::objs::tree::EntryKind::Blob, a)]);
        let url = format!("file://{}", src.display());
        let first = cache.sync(&url, "main").unwrap();
        let b = blob(&src, b"two");
        commit_tree(&src, vec![entry("f", gix::objs::tree::EntryKind::Blob, b)]);
        let second = cache.sync(&url, "main").unwrap();
        assert_ne!(first.commit, second.commit);
        assert_eq!(
            std::fs::read_to_string(first.dir().join("f")).unwrap(),
            "one"
        );
        assert_eq!(
            std::fs::read_to_string(second.dir().join("f")).unwrap(),
            "two"
        );
        let first_dir = first.dir().to_path_buf();
        drop(first);
        let third = cache.sync(&url, "main").unwrap();
        assert!(!third.fetched);
        assert!(!first_dir.exists(), "unreferenced old tree is removed");
    }
}
