//! A real git server for tests: bare repositories made with the `git` CLI
//! under a temporary directory, served by `git daemon` on 127.0.0.1.
//!
//! Tests may use the git CLI (chump itself never does). Every git command
//! runs without system or global configuration and with a fixed identity, so
//! it works on a fresh machine.
//!
//! The daemon runs with `GIT_TRACE_PACKET` pointing at a file, so a test can
//! see which protocol commands `upload-pack` served
//! ([`GitServer::upload_pack_commands`], [`GitServer::fetch_count`]): that is
//! how "no pack was fetched" is proven.
//!
//! [`CutProxy`] sits between a client and the daemon and can cut the
//! server's answer after a number of bytes, to break a fetch half-way.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A file mode (`100644`, `120000`) and contents.
type Blob<'a> = (&'a str, Vec<u8>);

/// `git daemon` serving the bare repositories of a temporary directory.
pub struct GitServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    counter: AtomicU64,
}

impl GitServer {
    /// Starts a daemon on a free port of 127.0.0.1 and waits until it
    /// accepts connections.
    pub fn start() -> GitServer {
        let dir = tempfile::Builder::new()
            .prefix("chump-git-server-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let port = free_port();
        let mut server = GitServer {
            dir,
            port,
            child: None,
            counter: AtomicU64::new(0),
        };
        server.restart();
        server
    }

    /// The daemon's process id, while it runs.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The port the daemon listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `git://127.0.0.1:PORT/<repo>.git`.
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}.git", self.port)
    }

    /// `file://` URL of the bare repository (for `allow_file_urls` tests).
    pub fn file_url(&self, repo: &str) -> String {
        format!("file://{}", self.repo_path(repo).display())
    }

    /// Path of the bare repository `<repo>.git`.
    pub fn repo_path(&self, repo: &str) -> PathBuf {
        self.dir.path().join("repos").join(format!("{repo}.git"))
    }

    /// Creates the bare repository `repo` with one commit of `files` on
    /// `branch` (which becomes its HEAD). Returns the commit id.
    pub fn create_repo<P, C>(
        &self,
        repo: &str,
        branch: &str,
        files: impl IntoIterator<Item = (P, C)>,
    ) -> String
    where
        P: AsRef<str>,
        C: AsRef<[u8]>,
    {
        let path = self.repo_path(repo);
        self.git(
            None,
            &[
                "init",
                "--quiet",
                "--bare",
                &format!("--initial-branch={branch}"),
                path.to_str().unwrap(),
            ],
            None,
        );
        self.commit_files(repo, branch, files, "initial commit")
    }

    /// Commits `files` (path → contents; other files stay as they are) on top
    /// of `branch` (or as its first commit when it does not exist yet) and
    /// moves the branch there, as a push would. Returns the commit id.
    pub fn commit_files<P, C>(
        &self,
        repo: &str,
        branch: &str,
        files: impl IntoIterator<Item = (P, C)>,
        message: &str,
    ) -> String
    where
        P: AsRef<str>,
        C: AsRef<[u8]>,
    {
        let changes: Vec<(String, Option<Vec<u8>>)> = files
            .into_iter()
            .map(|(p, c)| (p.as_ref().to_string(), Some(c.as_ref().to_vec())))
            .collect();
        self.commit_changes(repo, branch, changes, message)
    }

    /// Commits the removal of `paths` on `branch`. Returns the commit id.
    pub fn remove_files(&self, repo: &str, branch: &str, paths: &[&str], message: &str) -> String {
        let changes = paths.iter().map(|p| (p.to_string(), None)).collect();
        self.commit_changes(repo, branch, changes, message)
    }

    /// Commits a symlink `path` → `target` on `branch`. Returns the commit id.
    pub fn commit_symlink(
        &self,
        repo: &str,
        branch: &str,
        path: &str,
        target: &str,
        message: &str,
    ) -> String {
        self.commit_entries(
            repo,
            branch,
            vec![(
                path.to_string(),
                Some(("120000", target.as_bytes().to_vec())),
            )],
            message,
        )
    }

    /// Commits `changes` (path → new contents, or `None` to delete) with
    /// plumbing on the bare repository and a temporary index: no worktree.
    pub fn commit_changes(
        &self,
        repo: &str,
        branch: &str,
        changes: Vec<(String, Option<Vec<u8>>)>,
        message: &str,
    ) -> String {
        let entries = changes
            .into_iter()
            .map(|(path, contents)| (path, contents.map(|c| ("100644", c))))
            .collect();
        self.commit_entries(repo, branch, entries, message)
    }

    fn commit_entries(
        &self,
        repo: &str,
        branch: &str,
        entries: Vec<(String, Option<Blob<'_>>)>,
        message: &str,
    ) -> String {
        let git_dir = self.repo_path(repo);
        let git_dir = git_dir.to_str().unwrap();
        let index = self.dir.path().join(format!(
            "index-{}",
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let index_env = [("GIT_INDEX_FILE", index.to_str().unwrap())];
        let g = |args: &[&str], stdin: Option<&[u8]>| {
            self.git_env(Some(git_dir), args, stdin, &index_env)
        };
        let reference = format!("refs/heads/{branch}");
        let parent = self.try_git(
            Some(git_dir),
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{reference}^{{commit}}"),
            ],
        );
        match &parent {
            Some(parent) => g(&["read-tree", parent], None),
            None => g(&["read-tree", "--empty"], None),
        };
        for (path, contents) in &entries {
            match contents {
                Some((mode, data)) => {
                    let blob = g(&["hash-object", "-w", "--stdin"], Some(data));
                    g(
                        &[
                            "update-index",
                            "--add",
                            "--cacheinfo",
                            &format!("{mode},{blob},{path}"),
                        ],
                        None,
                    );
                }
                None => {
                    // Mode 0 removes the entry; `--force-remove` wants a work tree.
                    let line = format!("0 {}\t{path}\n", "0".repeat(40));
                    g(&["update-index", "--index-info"], Some(line.as_bytes()));
                }
            }
        }
        let tree = g(&["write-tree"], None);
        let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
        if let Some(parent) = &parent {
            args.extend(["-p", parent.as_str()]);
        }
        let commit = g(&args, None);
        let old = parent.clone().unwrap_or_default();
        g(&["update-ref", &reference, &commit, &old], None);
        let _ = std::fs::remove_file(&index);
        commit
    }

    /// The commit `branch` of `repo` points to.
    pub fn head(&self, repo: &str, branch: &str) -> String {
        let git_dir = self.repo_path(repo);
        self.git(
            Some(git_dir.to_str().unwrap()),
            &[
                "rev-parse",
                "--verify",
                &format!("refs/heads/{branch}^{{commit}}"),
            ],
            None,
        )
    }

    /// Whether the daemon process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Stops the daemon (connections are refused until [`GitServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Wait until the port no longer accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "git daemon still accepts connections after stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (Re)starts the daemon on the same port and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.daemon_log_path())
            .unwrap();
        let repos = self.dir.path().join("repos");
        // Run `git-daemon` itself: `git daemon` would run it as a child
        // process that survives killing `git`.
        let exec_path = self.git(None, &["--exec-path"], None);
        let mut cmd = Command::new(PathBuf::from(exec_path).join("git-daemon"));
        cmd.args([
            "--export-all",
            "--reuseaddr",
            "--verbose",
            "--informative-errors",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={}", self.port))
        .arg(format!("--base-path={}", repos.display()))
        .env("GIT_TRACE_PACKET", self.trace_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
        self.isolate(&mut cmd);
        let mut child = cmd.spawn().expect("spawn git daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("git daemon exited with {status}: {}", self.daemon_log());
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "git daemon did not accept connections on port {}: {}",
                self.port,
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// What the daemon logged (`--verbose`): connections and requests.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.daemon_log_path()).unwrap_or_default()
    }

    /// The protocol commands `upload-pack` received so far, in order, e.g.
    /// `["ls-refs", "ls-refs", "fetch"]` (protocol v2), from the packet trace.
    pub fn upload_pack_commands(&self) -> Vec<String> {
        let trace = std::fs::read_to_string(self.trace_path()).unwrap_or_default();
        trace
            .lines()
            .filter(|l| l.contains("upload-pack<"))
            .filter_map(|l| l.split("command=").nth(1))
            .map(|c| c.trim().to_string())
            .collect()
    }

    /// How many `fetch` commands (pack requests) `upload-pack` served so far.
    pub fn fetch_count(&self) -> usize {
        self.upload_pack_commands()
            .iter()
            .filter(|c| *c == "fetch")
            .count()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn trace_path(&self) -> PathBuf {
        self.dir.path().join("packet-trace.log")
    }

    fn daemon_log_path(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    fn isolate(&self, cmd: &mut Command) {
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("HOME", self.dir.path().join("home"))
            .env("GIT_AUTHOR_NAME", "chump test")
            .env("GIT_AUTHOR_EMAIL", "test@chump.invalid")
            .env("GIT_COMMITTER_NAME", "chump test")
            .env("GIT_COMMITTER_EMAIL", "test@chump.invalid")
            .env("LC_ALL", "C")
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE");
    }

    /// Runs `git [--git-dir=D] ARGS` and returns its trimmed stdout; panics
    /// with stderr when it fails.
    pub fn git(&self, git_dir: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> String {
        self.git_env(git_dir, args, stdin, &[])
    }

    fn try_git(&self, git_dir: Option<&str>, args: &[&str]) -> Option<String> {
        let output = self
            .command(git_dir, args, &[])
            .stdin(Stdio::null())
            .output()
            .expect("run git");
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    fn command(&self, git_dir: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("git");
        self.isolate(&mut cmd);
        if let Some(dir) = git_dir {
            cmd.arg(format!("--git-dir={dir}"));
        }
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn git_env(
        &self,
        git_dir: Option<&str>,
        args: &[&str],
        stdin: Option<&[u8]>,
        env: &[(&str, &str)],
    ) -> String {
        let mut cmd = self.command(git_dir, args, env);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run git");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(data).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound once by the OS, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy on 127.0.0.1 in front of `target`. While a cut is set, each
/// connection forwards at most that many bytes of the server's answer and is
/// then closed on both sides — a fetch dies half-way. Stops on drop.
pub struct CutProxy {
    port: u16,
    cut_after: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CutProxy {
    /// Starts a proxy to `127.0.0.1:target_port`, passing everything through.
    pub fn start(target_port: u16) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut_after = Arc::new(AtomicUsize::new(usize::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let cut_after = cut_after.clone();
            let stop = stop.clone();
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let limit = cut_after.load(Ordering::Relaxed);
                            std::thread::spawn(move || {
                                proxy_connection(client, target_port, limit)
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => break,
                    }
                }
            }
        });
        CutProxy {
            port,
            cut_after,
            stop,
            thread: Some(thread),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `git://127.0.0.1:<proxy port>/<repo>.git`.
    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}.git", self.port)
    }

    /// New connections forward at most `bytes` of the server's answer
    /// (`None`: everything).
    pub fn set_cut_after(&self, bytes: Option<usize>) {
        self.cut_after
            .store(bytes.unwrap_or(usize::MAX), Ordering::Relaxed);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxy_connection(client: TcpStream, target_port: u16, limit: usize) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
        return;
    };
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    let mut sent = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min(limit - sent);
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if sent >= limit {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// `n` bytes that do not compress (xorshift), for packs big enough to cut.
pub fn incompressible(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
