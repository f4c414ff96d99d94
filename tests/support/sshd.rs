//! A real OpenSSH `sshd` for tests, on a loopback address and port of the
//! test's choosing, with its own host key and one authorized client key. It
//! logs in the user running the tests, whose shell runs `git-upload-pack`
//! on the test's bare repositories (absolute paths).
//!
//! [`Sshd::start`] returns `None` (after printing why) when `sshd` is not
//! installed; `.ci/run` installs Debian's `openssh-server`.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    pub addr: String,
    pub port: u16,
    /// The user that may log in (the one running the tests).
    pub user: String,
    /// The private key the server accepts.
    pub client_key: PathBuf,
    /// A known_hosts file holding the server's host key.
    pub known_hosts: PathBuf,
}

/// The sshd binary, if installed.
pub fn sshd_binary() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "chump-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {:?}", out);
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

impl Sshd {
    /// Starts sshd on `addr:port` (`port` 0: a free one). `None` when sshd
    /// is not installed, or (for a fixed port) it cannot listen there.
    pub fn start(addr: &str, port: u16) -> Option<Sshd> {
        let Some(binary) = sshd_binary() else {
            eprintln!("skipping: sshd is not installed (apt-get install openssh-server)");
            return None;
        };
        let port = if port == 0 {
            std::net::TcpListener::bind((addr, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            port
        };
        let dir = tempfile::Builder::new()
            .prefix("chump-sshd-")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_key");
        let host_pub = keygen(&host_key);
        let client_key = dir.path().join("client_key");
        let client_pub = keygen(&client_key);
        std::fs::write(dir.path().join("authorized_keys"), &client_pub).unwrap();
        let host_field = if port == 22 {
            addr.to_string()
        } else {
            format!("[{addr}]:{port}")
        };
        let mut parts = host_pub.split_whitespace();
        let known = format!(
            "{host_field} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, known).unwrap();
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string();
        let config = format!(
            "Port {port}\nListenAddress {addr}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\n\
             AllowTcpForwarding no\nX11Forwarding no\nPrintMotd no\nLogLevel VERBOSE\nAllowUsers {user}\n",
            host_key.display(),
            dir.path().join("sshd.pid").display(),
            dir.path().join("authorized_keys").display(),
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        // sshd started as root wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = dir.path().join("sshd.log");
        let child = Command::new(&binary)
            .args(["-D", "-f"])
            .arg(&config_path)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        let mut sshd = Sshd {
            dir,
            child,
            addr: addr.to_string(),
            port,
            user,
            client_key,
            known_hosts,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect((addr, port)).is_ok() {
                return Some(sshd);
            }
            if let Ok(Some(status)) = sshd.child.try_wait() {
                eprintln!("sshd on {addr}:{port} exited ({status}): {}", sshd.log());
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "sshd does not listen on {addr}:{port}: {}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A known_hosts file naming this server with another (fresh) host key.
    pub fn wrong_known_hosts(&self) -> PathBuf {
        let key = self.dir.path().join("other_host_key");
        let public = keygen(&key);
        let mut parts = public.split_whitespace();
        let host_field = if self.port == 22 {
            self.addr.clone()
        } else {
            format!("[{}]:{}", self.addr, self.port)
        };
        let path = self.dir.path().join("wrong_known_hosts");
        std::fs::write(
            &path,
            format!(
                "{host_field} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ),
        )
        .unwrap();
        path
    }

    /// `ssh://USER@ADDR:PORT<abs path>`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@{}:{}{}",
            self.user,
            self.addr,
            self.port,
            path.display()
        )
    }

    /// The scp-like `USER@ADDR:<abs path>` (port 22 only).
    pub fn scp_url(&self, path: &Path) -> String {
        format!("{}@{}:{}", self.user, self.addr, path.display())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
