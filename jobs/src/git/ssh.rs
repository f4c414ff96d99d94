//! git over ssh: chump starts OpenSSH's `ssh` itself, with arguments only
//! (never a shell, never the host's or user's ssh configuration), and talks
//! the git protocol over its stdin and stdout.
//!
//! The invocation is fixed: `-F /dev/null` (no config), `BatchMode=yes` (no
//! prompts), `StrictHostKeyChecking=yes` against `CHUMP_SSH_KNOWN_HOSTS`
//! only (no file: every host is unknown and refused), `IdentitiesOnly=yes`
//! with `CHUMP_SSH_KEY` as the only key (no agent), the URL's port (`-p`)
//! and user (`-l`) as separate arguments, `--` before the host. The remote
//! command is `git-upload-pack '<path>'`, the path single-quoted for the
//! remote shell as git quotes it.
//!
//! ssh's stderr is kept (bounded) to explain a failure: an unknown or
//! changed host key, a refused key, a refused connection.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::bstr::ByteSlice;
use gix::protocol::transport::client::blocking_io::Transport;

use super::GitOptions;

/// How much of ssh's stderr is kept.
const MAX_STDERR: usize = 16 * 1024;

/// What ssh said on stderr, for explaining failures.
#[derive(Clone, Default)]
pub(super) struct Stderr(Arc<Mutex<String>>);

/// Why ssh failed, from what it said.
pub(super) enum Failure {
    /// The host key is not in the known hosts, or differs from it.
    HostKey(String),
    /// The server refused the key.
    Auth(String),
    /// Anything else ssh complained about (its last words).
    Other(String),
}

impl Stderr {
    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What went wrong, if ssh said so.
    pub(super) fn failure(&self, url: &gix::Url) -> Option<Failure> {
        let text = self.text();
        let host = url.host().unwrap_or_default();
        let shown_host = match url.port {
            Some(port) => format!("{host} port {port}"),
            None => host.to_string(),
        };
        if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || text.contains("Host key for") && text.contains("has changed")
        {
            return Some(Failure::HostKey(format!(
                "host key for {shown_host} does not match CHUMP_SSH_KNOWN_HOSTS (ssh: Host key verification failed)"
            )));
        }
        if text.contains("Host key verification failed")
            || text.contains("host key is known for")
            || text.contains("No matching host key")
        {
            return Some(Failure::HostKey(format!(
                "host key for {shown_host} is not known (CHUMP_SSH_KNOWN_HOSTS)"
            )));
        }
        let last = last_words(&text)?;
        if text.contains("Permission denied") {
            return Some(Failure::Auth(format!(
                "the server refused the URL's user with CHUMP_SSH_KEY (ssh: {last})"
            )));
        }
        Some(Failure::Other(format!("ssh: {last}")))
    }
}

/// The last non-empty lines of ssh's stderr, joined, at most 300 characters.
fn last_words(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .collect();
    let tail = lines[lines.len().saturating_sub(2)..].join("; ");
    if tail.is_empty() {
        return None;
    }
    Some(tail.chars().take(300).collect())
}

/// The `ssh` command for fetching from `url` (scheme ssh, with a host).
pub(super) fn command(url: &gix::Url, options: &GitOptions) -> Result<Command, String> {
    let host = url.host().filter(|h| !h.is_empty()).ok_or("no host")?;
    if host.starts_with('-') {
        return Err(format!("host name '{host}' looks like an option"));
    }
    if url.password().is_some() {
        return Err(
            "a password in an ssh URL is not used; give chump a key (CHUMP_SSH_KEY)".into(),
        );
    }
    let path = gix::url::expand_path::for_shell(url.path.clone());
    if path.is_empty() {
        return Err("no repository path".into());
    }
    if path.starts_with(b"-") {
        return Err("the repository path looks like an option".into());
    }
    let path = path
        .to_str()
        .map_err(|_| "the repository path is not UTF-8".to_string())?;

    let secs = options.timeout.as_secs().max(1);
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-T", "-x", "-a"]);
    let known_hosts = match &options.ssh_known_hosts {
        Some(path) => config_path(path)?,
        None => "/dev/null".to_string(),
    };
    for option in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        format!("UserKnownHostsFile={known_hosts}"),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "UpdateHostKeys=no".to_string(),
        "IdentitiesOnly=yes".to_string(),
        "IdentityAgent=none".to_string(),
        "PasswordAuthentication=no".to_string(),
        "KbdInteractiveAuthentication=no".to_string(),
        "ControlMaster=no".to_string(),
        "ControlPath=none".to_string(),
        "ClearAllForwardings=yes".to_string(),
        format!("ConnectTimeout={secs}"),
        format!("ServerAliveInterval={}", secs.div_ceil(3)),
        "ServerAliveCountMax=3".to_string(),
        "SendEnv=GIT_PROTOCOL".to_string(),
    ] {
        cmd.arg("-o").arg(option);
    }
    match &options.ssh_key {
        Some(key) => {
            cmd.arg("-i").arg(config_path(key)?);
        }
        None => {
            cmd.args(["-o", "IdentityFile=none"]);
        }
    }
    if let Some(port) = url.port {
        cmd.arg("-p").arg(port.to_string());
    }
    if let Some(user) = url.user().filter(|u| !u.is_empty()) {
        if user.starts_with('-') {
            return Err(format!("user name '{user}' looks like an option"));
        }
        cmd.arg("-l").arg(user);
    }
    cmd.arg("--")
        .arg(host)
        .arg(format!("git-upload-pack {}", quote(path)));
    // Nothing from chump's environment but PATH: no agent, no locale.
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("LANG", "C")
        .env("LC_ALL", "C")
        .env("GIT_PROTOCOL", "version=2");
    Ok(cmd)
}

/// A path as ssh's option parser takes it: `%` doubled (ssh expands
/// `%`-tokens in these options), quoted when it holds blanks.
fn config_path(path: &Path) -> Result<String, String> {
    let text = path
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if text.contains('"') || text.contains('\n') {
        return Err(format!("ssh cannot be given the path {text}"));
    }
    let text = text.replace('%', "%%");
    Ok(if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    })
}

/// Single-quotes `s` for a POSIX shell, as git's `sq_quote` does.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '!' => out.push_str("'\\!'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Starts ssh for `url` and returns the git transport over it, and the
/// stderr that explains its failures.
pub(super) fn connect(
    url: &gix::Url,
    options: &GitOptions,
) -> Result<(Box<dyn Transport + Send>, Stderr), String> {
    use gix::protocol::transport::client::git;
    let mut cmd = command(url, options)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run ssh: {e}"))?;
    let stderr = Stderr::default();
    let (done_tx, done) = std::sync::mpsc::channel();
    {
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::Builder::new()
            .name("chump ssh stderr".into())
            .spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let mut text = sink.0.lock().unwrap_or_else(|p| p.into_inner());
                    if text.len() < MAX_STDERR {
                        text.push_str(&String::from_utf8_lossy(&line));
                    }
                    line.clear();
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let read = SshOut {
        stdout,
        child,
        done: Some(done),
    };
    let path = gix::url::expand_path::for_shell(url.path.clone());
    let connection = git::blocking_io::Connection::new(
        read,
        stdin,
        gix::protocol::transport::Protocol::V2,
        path,
        None::<(String, Option<u16>)>,
        git::ConnectMode::Process,
        false,
    )
    .custom_url(Some(url.to_bstring()));
    Ok((Box::new(connection), stderr))
}

/// ssh's stdout; owns the process, which is ended when this is dropped.
struct SshOut {
    stdout: ChildStdout,
    child: Child,
    /// Signalled when ssh's stderr is closed (ssh has exited).
    done: Option<Receiver<()>>,
}

impl SshOut {
    /// Once stdout ended or broke: give ssh a moment to finish saying why.
    fn settle(&mut self) {
        if let Some(done) = self.done.take() {
            match done.recv_timeout(Duration::from_secs(3)) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) | Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

impl Read for SshOut {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let result = self.stdout.read(buf);
        if !buf.is_empty() && matches!(result, Ok(0) | Err(_)) {
            self.settle();
        }
        result
    }
}

impl Drop for SshOut {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gix::bstr::ByteSlice;

    fn args(url: &str, options: &GitOptions) -> Vec<String> {
        let url = gix::url::parse(url.as_bytes().as_bstr()).unwrap();
        let cmd = command(&url, options).unwrap();
        assert_eq!(cmd.get_program(), "ssh");
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn ssh_gets_arguments_never_a_shell_line() {
        let options = GitOptions {
            ssh_key: Some("/keys/id %d".into()),
            ssh_known_hosts: Some("/keys/known_hosts".into()),
            ..GitOptions::default()
        };
        let a = args("ssh://git@example.com:2222/~/it's!.git", &options);
        let tail: Vec<&str> = a[a.len() - 8..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "\"/keys/id %%d\"",
                "-p",
                "2222",
                "-l",
                "git",
                "--",
                "example.com",
                "git-upload-pack '~/it'\\''s'\\!'.git'",
            ]
        );
        assert!(a.starts_with(&["-F".to_string(), "/dev/null".to_string()]));
        for o in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/keys/known_hosts",
            "IdentitiesOnly=yes",
        ] {
            assert!(a.iter().any(|x| x == o), "{o} in {a:?}");
        }

        // scp-like: no port, the path relative to the user's home.
        let a = args("me@example.com:team/app.git", &GitOptions::default());
        assert_eq!(
            a[a.len() - 5..],
            [
                "-l",
                "me",
                "--",
                "example.com",
                "git-upload-pack 'team/app.git'"
            ]
        );
        // No known hosts: every host is unknown; no key: none is offered.
        assert!(a.iter().any(|x| x == "UserKnownHostsFile=/dev/null"));
        assert!(a.iter().any(|x| x == "IdentityFile=none"));
        assert!(!a.iter().any(|x| x == "-p"));
    }

    #[test]
    fn option_like_parts_are_refused() {
        let o = GitOptions::default();
        for url in [
            "ssh://-oProxyCommand=x/repo",
            "ssh://-lx@example.com/repo",
            "ssh://u:pw@example.com/repo",
        ] {
            if let Ok(parsed) = gix::url::parse(url.as_bytes().as_bstr()) {
                assert!(command(&parsed, &o).is_err(), "{url}");
            }
        }
    }

    #[test]
    fn stderr_explains_host_keys_and_refusals() {
        let url = gix::url::parse(b"ssh://git@127.0.0.1:2222/r.git".as_bstr()).unwrap();
        let said = |text: &str| {
            let s = Stderr::default();
            s.0.lock().unwrap().push_str(text);
            s.failure(&url)
        };
        let Some(Failure::HostKey(m)) = said("No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n") else { panic!() };
        assert_eq!(
            m,
            "host key for 127.0.0.1 port 2222 is not known (CHUMP_SSH_KNOWN_HOSTS)"
        );
        let Some(Failure::HostKey(m)) = said("@@@\nWARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!\nHost key verification failed.\n") else { panic!() };
        assert!(m.contains("does not match"), "{m}");
        let Some(Failure::Auth(m)) = said("git@127.0.0.1: Permission denied (publickey).\n") else {
            panic!()
        };
        assert!(m.contains("refused the URL's user"), "{m}");
        assert!(said("").is_none());
    }
}
