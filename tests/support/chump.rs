//! Running the real `chump` binary for black-box tests: a fresh data
//! directory, the listen address read from its JSON log, and helpers to stop
//! it gently (SIGTERM) or not (SIGKILL).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `chump serve`.
pub struct Chump {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A last change to chump's command before it is spawned.
pub type CommandHook = Box<dyn FnOnce(&mut Command) + Send>;

/// Options for starting chump.
#[derive(Default)]
pub struct ChumpOptions {
    /// Directory for the database and the git cache (a new temp dir if None).
    pub dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Last changes to the command before it is spawned.
    pub command: Option<CommandHook>,
}

impl ChumpOptions {
    /// Changes the command before it is spawned (e.g. a `pre_exec`).
    pub fn command(mut self, f: impl FnOnce(&mut Command) + Send + 'static) -> Self {
        self.command = Some(Box::new(f));
        self
    }
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }
}

/// The path of the built binary.
pub fn chump_bin() -> &'static str {
    env!("CARGO_BIN_EXE_chump")
}

/// A `Command` for the chump binary with a clean chump environment.
pub fn chump_command() -> Command {
    let mut cmd = Command::new(chump_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("CHUMP_")
            || key.starts_with("RDB_")
            || key == "DB_NAME"
            || key == "TABLE_NAME"
            || key == "KUBECONFIG"
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

impl Chump {
    /// Starts chump on 127.0.0.1:0 with a fresh SQLite database.
    pub fn start() -> Chump {
        Self::start_with(ChumpOptions::default())
    }

    /// Starts chump with `options`, waiting (up to 30 s) until it listens.
    pub fn start_with(options: ChumpOptions) -> Chump {
        Self::try_start_with(options).expect("spawn chump")
    }

    /// Like [`Chump::start_with`], but a failure to spawn the process is
    /// returned (everything after the spawn still panics).
    pub fn try_start_with(options: ChumpOptions) -> std::io::Result<Chump> {
        let (tmp, dir) = match options.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().expect("tempdir");
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut cmd = chump_command();
        cmd.arg("serve")
            .env("CHUMP_BIND", "127.0.0.1:0")
            .env(
                "CHUMP_DATABASE",
                format!("sqlite://{}", dir.join("chump.db").display()),
            )
            .env("CHUMP_WORKDIR", dir.join("work"))
            .env("CHUMP_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,chump=debug,chump_jobs=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        if let Some(f) = options.command {
            f(&mut cmd);
        }
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["message"] == "chump listening" {
                            if let Some(addr) = v["addr"]
                                .as_str()
                                .and_then(|a| a.parse::<SocketAddr>().ok())
                            {
                                if let Some(tx) = tx.take() {
                                    let _ = tx.send(addr);
                                }
                            }
                        }
                    }
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "chump exited with {status} before listening:\n{}",
                    logs.lock().unwrap()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "chump did not listen within 30 s:\n{}",
                    logs.lock().unwrap()
                );
            }
        };
        Ok(Chump {
            child,
            addr,
            logs,
            dir,
            _tmp: tmp,
        })
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process id of the running `chump serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything chump logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// How many bytes have been logged so far (an offset for
    /// [`Chump::logs_since`]).
    pub fn logs_len(&self) -> usize {
        self.logs.lock().unwrap().len()
    }

    /// What was logged from byte `offset` on (lines are added whole), without
    /// copying what came before: a benchmark waiting on a long log.
    pub fn logs_since(&self, offset: usize) -> String {
        self.logs
            .lock()
            .unwrap()
            .get(offset..)
            .unwrap_or_default()
            .to_string()
    }

    /// Sends SIGTERM and waits (up to `within`) for a clean exit; returns
    /// whether it exited successfully.
    pub fn terminate(&mut self, within: Duration) -> bool {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Takes the data directory (so a restarted chump can reuse it).
    pub fn keep_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for Chump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
