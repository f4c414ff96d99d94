//! An HTTPS smart-HTTP git server for tests: the real `git http-backend`
//! run as CGI behind a small hyper server with TLS on 127.0.0.1 — its own CA
//! (rcgen), a certificate for `127.0.0.1`, and HTTP basic auth checked
//! against one configured user and token.
//!
//! Every request is recorded with the user it presented and whether its
//! credentials were accepted ([`HttpsGit::requests`]): that is how a test
//! proves the server was asked with a wrong token (and refused it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/app.git/info/refs?service=git-upload-pack`.
    pub path: String,
    /// The user of the basic credentials it presented, if any.
    pub user: Option<String>,
    /// The password of the basic credentials it presented, if any.
    pub password: Option<String>,
    /// Whether the credentials were the configured ones.
    pub authorized: bool,
    pub status: u16,
}

/// The running server; stops when dropped.
pub struct HttpsGit {
    pub port: u16,
    /// The CA that signed the server's certificate, PEM.
    pub ca_pem: String,
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    root: PathBuf,
    home: tempfile::TempDir,
    user: String,
    token: String,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl HttpsGit {
    /// Serves the bare repositories under `root` (`<name>.git`) to `user`
    /// with password `token`, on a free port of 127.0.0.1.
    pub fn start(root: &Path, user: &str, token: &str) -> HttpsGit {
        let (ca_pem, config) = tls_config();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            home: tempfile::tempdir().unwrap(),
            user: user.to_string(),
            token: token.to_string(),
            log: log.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(listener, config, shared, stopped));
        });
        HttpsGit {
            port,
            ca_pem,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT/<repo>.git`, no credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("https://127.0.0.1:{}/{repo}.git", self.port)
    }

    /// `https://<user>:<token>@127.0.0.1:PORT/<repo>.git`.
    pub fn url_with(&self, user: &str, token: &str, repo: &str) -> String {
        format!("https://{user}:{token}@127.0.0.1:{}/{repo}.git", self.port)
    }

    /// Writes the CA into `dir/git-ca.pem` and returns the path.
    pub fn ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("git-ca.pem");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    config: Arc<tokio_rustls::rustls::ServerConfig>,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            // A client that does not trust the CA fails here.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&shared, req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let credentials = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64_decode(b.trim()))
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|text| match text.split_once(':') {
            Some((u, p)) => (u.to_string(), p.to_string()),
            None => (text, String::new()),
        });
    let authorized = credentials
        .as_ref()
        .is_some_and(|(u, p)| *u == shared.user && *p == shared.token);
    let record = |status: u16| Seen {
        method: method.clone(),
        path: path_and_query.clone(),
        user: credentials.as_ref().map(|(u, _)| u.clone()),
        password: credentials.as_ref().map(|(_, p)| p.clone()),
        authorized,
        status,
    };
    if !authorized {
        shared.log.lock().unwrap().push(record(401));
        return Response::builder()
            .status(401)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let headers = req.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (content_type, git_protocol, encoding) = (
        header("content-type"),
        header("git-protocol"),
        header("content-encoding"),
    );
    let query = req.uri().query().unwrap_or("").to_string();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let shared2 = shared.clone();
    let user = shared.user.clone();
    let method2 = method.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", shared2.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_PROJECT_ROOT", &shared2.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method2)
            .env("PATH_INFO", &path)
            .env("QUERY_STRING", &query)
            .env("REMOTE_USER", &user)
            .env("REMOTE_ADDR", peer.ip().to_string())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("CONTENT_TYPE", content_type.unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(p) = git_protocol {
            cmd.env("GIT_PROTOCOL", p);
        }
        if let Some(e) = encoding {
            cmd.env("HTTP_CONTENT_ENCODING", e);
        }
        let mut child = cmd.spawn().expect("run git http-backend");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&body);
        });
        let out = child.wait_with_output().expect("git http-backend output");
        let _ = writer.join();
        out.stdout
    })
    .await
    .unwrap_or_default();
    let (head, body) = split_cgi(&output);
    let mut response = Response::builder();
    let mut status = 200;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    shared.log.lock().unwrap().push(record(status));
    response
        .status(status)
        .body(Full::new(Bytes::from(body.to_vec())))
        .unwrap()
}

/// CGI output: the header text and the body.
fn split_cgi(output: &[u8]) -> (String, &[u8]) {
    for (i, w) in output.windows(2).enumerate() {
        if w == b"\n\n" {
            return (
                String::from_utf8_lossy(&output[..i]).into(),
                &output[i + 2..],
            );
        }
        if w == b"\r\n" && output[i..].starts_with(b"\r\n\r\n") {
            return (
                String::from_utf8_lossy(&output[..i]).into(),
                &output[i + 4..],
            );
        }
    }
    (String::from_utf8_lossy(output).into(), &[])
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A CA and a server certificate for `127.0.0.1` and `localhost` it signed.
fn tls_config() -> (String, Arc<tokio_rustls::rustls::ServerConfig>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "chump test git server CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
        .expect("self-sign the CA");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "git.test");
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = server
        .signed_by(&server_key, &ca)
        .expect("sign the server certificate");
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(config))
}
