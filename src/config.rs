//! Command line and environment: what `chump serve` is told, checked once.
//!
//! Every option is a flag with an environment variable (clap). Values arrive
//! as text and are checked here, so that a bad one stops startup with a
//! message that names the variable. The original tool's `RDB_HOST`,
//! `RDB_PORT`, `DB_NAME` and `TABLE_NAME` pick RethinkDB when
//! `CHUMP_DATABASE` is unset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// chump: a GitOps deployer for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "chump", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
// Parsed once at startup: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the service: REST API, scheduler and workers.
    Serve(ServeArgs),
    /// Commands that talk to a running chump server.
    #[command(flatten)]
    Client(crate::cli::ClientCommand),
}

/// Options of `chump serve`. All are also environment variables.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port the REST API listens on.
    #[arg(long, env = "CHUMP_BIND", default_value = "127.0.0.1:8000")]
    pub bind: String,
    /// Database: sqlite://PATH or rethinkdb://[user[:password]@]host[:port]/db
    /// [default: sqlite://chump.db, or RethinkDB when RDB_HOST is set]
    #[arg(long, env = "CHUMP_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Checks run at once, at most.
    #[arg(long, env = "CHUMP_WORKERS", default_value = "4")]
    pub workers: String,
    /// Time between two checks of a source (seconds, or 90s, 3m, 1h).
    #[arg(long, env = "CHUMP_INTERVAL", default_value = "180")]
    pub interval: String,
    /// Deadline of one check; a check past it is cancelled and recorded as failed.
    #[arg(long, env = "CHUMP_CHECK_TIMEOUT", default_value = "300")]
    pub check_timeout: String,
    /// How long a check's lease lasts unless renewed (renewed every third of
    /// it while the check runs): a check on a replica that died is taken
    /// over about this long after (3s to 1h).
    #[arg(long, env = "CHUMP_LEASE", default_value = "30")]
    pub lease: String,
    /// How long a deploy waits for its Deployment to roll out.
    #[arg(long, env = "CHUMP_ROLLOUT_TIMEOUT", default_value = "120")]
    pub rollout_timeout: String,
    /// Directory for the git cache.
    #[arg(long, env = "CHUMP_WORKDIR", default_value = "chump-work")]
    pub workdir: PathBuf,
    /// Bearer token every API request must carry (unset: no authentication).
    #[arg(long, env = "CHUMP_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File holding the API token (instead of CHUMP_API_TOKEN).
    #[arg(long, env = "CHUMP_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// A second token that may read (GET) but not change anything (403).
    #[arg(long, env = "CHUMP_API_READ_TOKEN", hide_env_values = true)]
    pub api_read_token: Option<String>,
    /// Listen on a non-loopback address without an API token (anyone who
    /// reaches the port can then deploy to your cluster).
    #[arg(long, env = "CHUMP_INSECURE_NO_AUTH", default_value = "false")]
    pub insecure_no_auth: String,
    /// A client must send its request headers within this time.
    #[arg(long, env = "CHUMP_HEADER_TIMEOUT", default_value = "10")]
    pub header_timeout: String,
    /// Shared secret of webhooks: GitHub/Gitea/generic HMAC signatures and
    /// GitLab's token are checked against it (unset: webhooks follow the API token).
    #[arg(long, env = "CHUMP_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Private key file ssh offers for ssh:// and scp-like git URLs (no
    /// agent, no other key).
    #[arg(long, env = "CHUMP_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file of the ssh git hosts; hosts not in it are refused
    /// (unset: every ssh host is refused).
    #[arg(long, env = "CHUMP_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Accept file:// URLs and local paths as git_url (for local testing).
    #[arg(long, env = "CHUMP_ALLOW_FILE_URLS", default_value = "false")]
    pub allow_file_urls: String,
    /// kustomize binary to run (default: kustomize on PATH, else kubectl kustomize).
    #[arg(long, env = "CHUMP_KUSTOMIZE")]
    pub kustomize: Option<String>,
    /// Kubeconfig file (default: in-cluster service account).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// How long running checks may finish after SIGTERM before they are cut.
    #[arg(long, env = "CHUMP_SHUTDOWN_GRACE", default_value = "30")]
    pub shutdown_grace: String,
    /// Apply only objects in the source's own namespace (cluster-scoped and
    /// other namespaces' objects fail the deploy).
    #[arg(long, env = "CHUMP_RESTRICT_NAMESPACE", default_value = "false")]
    pub restrict_namespace: String,
    /// Undo changes made in the cluster to fields chump applies (drift),
    /// within one interval. Off: only a differing image is redeployed
    /// between commits (the original tool's behaviour).
    #[arg(long, env = "CHUMP_SELF_HEAL", default_value = "true")]
    pub self_heal: String,
    /// Roll back to the last successful deploy when a deploy fails at apply
    /// or rollout, for sources that do not set `auto_rollback`.
    #[arg(long, env = "CHUMP_AUTO_ROLLBACK", default_value = "false")]
    pub auto_rollback: String,
    /// The ServiceAccount chump impersonates for sources that do not set
    /// `service_account`: namespace/name, or a name (in each source's own
    /// namespace). Empty: such sources deploy as chump itself.
    #[arg(long, env = "CHUMP_DEFAULT_SERVICE_ACCOUNT", default_value = "")]
    pub default_service_account: String,
    /// Refuse (400) sources without a `service_account` when there is no
    /// CHUMP_DEFAULT_SERVICE_ACCOUNT; checks of such sources already stored
    /// fail before touching the cluster.
    #[arg(long, env = "CHUMP_REQUIRE_SERVICE_ACCOUNT", default_value = "false")]
    pub require_service_account: String,
    /// How many of each source's newest history entries keep the rendered
    /// manifests they applied (for rollback, manifests and diff).
    #[arg(long, env = "CHUMP_MANIFEST_RETENTION", default_value = "20")]
    pub manifest_retention: String,
    /// The largest render kept with a history entry, compressed, in bytes
    /// (suffixes KiB, MiB accepted).
    #[arg(long, env = "CHUMP_MANIFEST_MAX_BYTES", default_value = "1MiB")]
    pub manifest_max_bytes: String,
    /// Let kustomize load remote bases (URLs in resources:).
    #[arg(long, env = "CHUMP_KUSTOMIZE_ALLOW_REMOTE", default_value = "false")]
    pub kustomize_allow_remote: String,
    /// Render plain kustomizations (only local files under resources:, no
    /// transformers) in process instead of starting kustomize for each.
    #[arg(long, env = "CHUMP_KUSTOMIZE_IN_PROCESS", default_value = "true")]
    pub kustomize_in_process: String,
    /// Notification targets (webhooks, Slack-compatible chat, commit
    /// statuses): a YAML (.yaml, .yml) or TOML (.toml) file. Unset: none.
    #[arg(long, env = "CHUMP_NOTIFY_CONFIG")]
    pub notify_config: Option<PathBuf>,
    /// Log format: text or json (verbosity from RUST_LOG, default info).
    #[arg(long, env = "CHUMP_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// RethinkDB: replicas of each table chump creates (at most the servers
    /// of the cluster).
    #[arg(long, env = "CHUMP_RETHINKDB_REPLICAS", default_value = "1")]
    pub rethinkdb_replicas: String,
    /// RethinkDB: connections the store keeps (a connection runs one query
    /// at a time).
    #[arg(long, env = "CHUMP_RETHINKDB_POOL", default_value = "16")]
    pub rethinkdb_pool: String,
    /// Original tool: RethinkDB host (used when CHUMP_DATABASE is unset).
    #[arg(long, env = "RDB_HOST")]
    pub rdb_host: Option<String>,
    /// Original tool: RethinkDB port.
    #[arg(long, env = "RDB_PORT", default_value = "28015")]
    pub rdb_port: String,
    /// Original tool: RethinkDB database.
    #[arg(long, env = "DB_NAME", default_value = "git-sources")]
    pub db_name: String,
    /// Original tool: RethinkDB table of sources.
    #[arg(long, env = "TABLE_NAME", default_value = "sources")]
    pub table_name: String,
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    Sqlite { path: String },
    RethinkDb(RethinkConfig),
}

/// A RethinkDB connection, from `CHUMP_DATABASE` or the `RDB_*` variables.
#[derive(Clone, PartialEq, Eq)]
pub struct RethinkConfig {
    pub host: String,
    pub port: u16,
    pub db: String,
    pub table: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Replicas of each table chump creates (`CHUMP_RETHINKDB_REPLICAS`).
    pub replicas: u32,
    /// Connections the store keeps (`CHUMP_RETHINKDB_POOL`).
    pub pool: usize,
}

/// Default of [`RethinkConfig::pool`]: as many connections as a busy API's
/// clients (a connection runs one query at a time, and the driver's lock
/// on it is not fair: with 4, 16 clients saw a p99 of 300 ms).
pub const DEFAULT_RETHINKDB_POOL: usize = 16;

impl std::fmt::Debug for RethinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RethinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("table", &self.table)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("replicas", &self.replicas)
            .field("pool", &self.pool)
            .finish()
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The checked configuration of `chump serve`.
#[derive(Clone)]
pub struct Config {
    pub bind: SocketAddr,
    pub database: DatabaseConfig,
    pub workers: usize,
    pub interval: Duration,
    pub check_timeout: Duration,
    /// A check's lease, renewed while it runs (`CHUMP_LEASE`).
    pub lease: Duration,
    pub rollout_timeout: Duration,
    pub workdir: PathBuf,
    pub api_token: Option<String>,
    pub api_read_token: Option<String>,
    pub webhook_secret: Option<String>,
    pub header_timeout: Duration,
    pub allow_file_urls: bool,
    /// `CHUMP_SSH_KEY` and `CHUMP_SSH_KNOWN_HOSTS`, readable files.
    pub ssh_key: Option<PathBuf>,
    pub ssh_known_hosts: Option<PathBuf>,
    pub kustomize: Option<String>,
    pub kustomize_allow_remote: bool,
    pub kustomize_in_process: bool,
    pub kubeconfig: Option<PathBuf>,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub restrict_namespace: bool,
    pub self_heal: bool,
    pub auto_rollback: bool,
    pub default_service_account: Option<String>,
    pub require_service_account: bool,
    pub manifest_retention: u32,
    pub manifest_max_bytes: usize,
    /// `CHUMP_NOTIFY_CONFIG`, read and checked (secrets resolved).
    pub notify: Option<crate::notify::config::NotifyConfig>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("database", &self.database)
            .field("workers", &self.workers)
            .field("interval", &self.interval)
            .field("check_timeout", &self.check_timeout)
            .field("lease", &self.lease)
            .field("rollout_timeout", &self.rollout_timeout)
            .field("workdir", &self.workdir)
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field(
                "api_read_token",
                &self.api_read_token.as_ref().map(|_| "***"),
            )
            .field("header_timeout", &self.header_timeout)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .field("allow_file_urls", &self.allow_file_urls)
            .field("ssh_key", &self.ssh_key)
            .field("ssh_known_hosts", &self.ssh_known_hosts)
            .field("kustomize", &self.kustomize)
            .field("kustomize_allow_remote", &self.kustomize_allow_remote)
            .field("kustomize_in_process", &self.kustomize_in_process)
            .field("kubeconfig", &self.kubeconfig)
            .field("log_format", &self.log_format)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("restrict_namespace", &self.restrict_namespace)
            .field("self_heal", &self.self_heal)
            .field("auto_rollback", &self.auto_rollback)
            .field("default_service_account", &self.default_service_account)
            .field("require_service_account", &self.require_service_account)
            .field("manifest_retention", &self.manifest_retention)
            .field("manifest_max_bytes", &self.manifest_max_bytes)
            .field("notify", &self.notify)
            .finish()
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var} (--{flag}): {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub flag: &'static str,
    pub reason: String,
}

fn invalid(var: &'static str, flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        flag,
        reason: reason.into(),
    }
}

/// An optional file that must exist and be readable (an empty value is unset).
fn readable_file(
    var: &'static str,
    flag: &'static str,
    path: Option<&PathBuf>,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(None);
    };
    std::fs::File::open(path)
        .and_then(|f| f.metadata())
        .map_err(|e| invalid(var, flag, format!("cannot read {}: {e}", path.display())))
        .and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(invalid(
                    var,
                    flag,
                    format!("{} is not a file", path.display()),
                ))
            }
        })?;
    Ok(Some(path.clone()))
}

/// Parses a duration: plain seconds (`180`) or humantime (`90s`, `3m`, `1h30m`).
fn duration(
    var: &'static str,
    flag: &'static str,
    raw: &str,
    min: Duration,
) -> Result<Duration, ConfigError> {
    let raw = raw.trim();
    let d = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|e| {
            invalid(
                var,
                flag,
                format!("'{raw}' is not a duration ({e}); use seconds or e.g. 90s, 3m, 1h"),
            )
        })?,
    };
    if d < min {
        return Err(invalid(
            var,
            flag,
            format!(
                "'{raw}' is shorter than the minimum of {}",
                humantime::format_duration(min)
            ),
        ));
    }
    if d > Duration::from_secs(30 * 24 * 3600) {
        return Err(invalid(
            var,
            flag,
            format!("'{raw}' is longer than 30 days"),
        ));
    }
    Ok(d)
}

/// Parses a lease length: a duration from 3 s to 1 h.
fn lease(raw: &str) -> Result<Duration, ConfigError> {
    let d = duration("CHUMP_LEASE", "lease", raw, Duration::from_secs(3))?;
    if d > Duration::from_secs(3600) {
        return Err(invalid(
            "CHUMP_LEASE",
            "lease",
            format!("'{}' is longer than the maximum of 1h", raw.trim()),
        ));
    }
    Ok(d)
}

/// `65536`, `64KiB`, `1MiB`: from 1 KiB to 64 MiB.
fn byte_size(var: &'static str, flag: &'static str, raw: &str) -> Result<usize, ConfigError> {
    let text = raw.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let scale = match unit.trim() {
        "" | "B" => Some(1),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        _ => None,
    };
    scale
        .zip(digits.parse::<usize>().ok())
        .and_then(|(s, n)| n.checked_mul(s))
        .filter(|n| (1 << 10..=64 << 20).contains(n))
        .ok_or_else(|| {
            invalid(
                var,
                flag,
                format!("'{text}' is not a size from 1KiB to 64MiB (bytes, or with KiB or MiB)"),
            )
        })
}

fn boolean(var: &'static str, flag: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(invalid(
            var,
            flag,
            format!("'{other}' is not a boolean; use true or false"),
        )),
    }
}

/// Parses `rethinkdb://[user[:password]@]host[:port]/db`.
pub fn parse_rethinkdb_url(raw: &str, table: &str) -> Result<RethinkConfig, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL names no host")?;
    let db = url.path().trim_start_matches('/');
    if db.is_empty() || db.contains('/') {
        return Err("the URL must name one database: rethinkdb://host:28015/DB".into());
    }
    let decode = |s: &str| {
        percent_decode(s)
            .ok_or_else(|| "the URL's credentials are not valid percent-encoding".to_string())
    };
    Ok(RethinkConfig {
        host: host.trim_matches(['[', ']']).to_string(),
        port: url.port().unwrap_or(28015),
        db: decode(db)?,
        table: table.to_string(),
        user: (!url.username().is_empty())
            .then(|| decode(url.username()))
            .transpose()?,
        password: url.password().map(decode).transpose()?,
        replicas: 1,
        pool: DEFAULT_RETHINKDB_POOL,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Config {
    /// Checks every option of `chump serve`.
    pub fn from_args(args: &ServeArgs) -> Result<Config, ConfigError> {
        let bind: SocketAddr = args.bind.trim().parse().map_err(|_| {
            invalid(
                "CHUMP_BIND",
                "bind",
                format!(
                    "'{}' is not an address:port such as 127.0.0.1:8000",
                    args.bind
                ),
            )
        })?;
        let workers: usize = args
            .workers
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .ok_or_else(|| {
                invalid(
                    "CHUMP_WORKERS",
                    "workers",
                    format!("'{}' is not an integer from 1 to 256", args.workers),
                )
            })?;
        let database = match (&args.database, &args.rdb_host) {
            (Some(raw), _) => {
                let raw = raw.trim();
                if let Some(path) = raw.strip_prefix("sqlite://") {
                    if path.is_empty() {
                        return Err(invalid(
                            "CHUMP_DATABASE",
                            "database",
                            "sqlite:// needs a file path, e.g. sqlite://chump.db",
                        ));
                    }
                    DatabaseConfig::Sqlite {
                        path: path.to_string(),
                    }
                } else if raw.starts_with("rethinkdb://") {
                    DatabaseConfig::RethinkDb(
                        parse_rethinkdb_url(raw, &args.table_name)
                            .map_err(|reason| invalid("CHUMP_DATABASE", "database", reason))?,
                    )
                } else {
                    return Err(invalid(
                        "CHUMP_DATABASE",
                        "database",
                        "must start with sqlite:// or rethinkdb://",
                    ));
                }
            }
            (None, Some(host)) if !host.trim().is_empty() => {
                let port = args
                    .rdb_port
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| {
                        invalid(
                            "RDB_PORT",
                            "rdb-port",
                            format!("'{}' is not a port number", args.rdb_port),
                        )
                    })?;
                if args.db_name.trim().is_empty() {
                    return Err(invalid("DB_NAME", "db-name", "must not be empty"));
                }
                DatabaseConfig::RethinkDb(RethinkConfig {
                    host: host.trim().to_string(),
                    port,
                    db: args.db_name.trim().to_string(),
                    table: args.table_name.trim().to_string(),
                    user: None,
                    password: None,
                    replicas: 1,
                    pool: DEFAULT_RETHINKDB_POOL,
                })
            }
            _ => DatabaseConfig::Sqlite {
                path: "chump.db".into(),
            },
        };
        let mut database = database;
        if let DatabaseConfig::RethinkDb(rc) = &mut database {
            rc.replicas = args
                .rethinkdb_replicas
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "CHUMP_RETHINKDB_REPLICAS",
                        "rethinkdb-replicas",
                        format!(
                            "'{}' is not an integer from 1 to 64",
                            args.rethinkdb_replicas
                        ),
                    )
                })?;
            rc.pool = args
                .rethinkdb_pool
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "CHUMP_RETHINKDB_POOL",
                        "rethinkdb-pool",
                        format!("'{}' is not an integer from 1 to 256", args.rethinkdb_pool),
                    )
                })?;
        }
        if let DatabaseConfig::RethinkDb(rc) = &database {
            let ok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            if !ok(&rc.table) {
                return Err(invalid(
                    "TABLE_NAME",
                    "table-name",
                    "must be letters, digits, '_' or '-'",
                ));
            }
            if !ok(&rc.db) {
                return Err(invalid(
                    "DB_NAME",
                    "db-name",
                    "the database name must be letters, digits, '_' or '-'",
                ));
            }
        }
        let interval = duration(
            "CHUMP_INTERVAL",
            "interval",
            &args.interval,
            Duration::from_secs(1),
        )?;
        let check_timeout = duration(
            "CHUMP_CHECK_TIMEOUT",
            "check-timeout",
            &args.check_timeout,
            Duration::from_secs(1),
        )?;
        let lease = lease(&args.lease)?;
        let rollout_timeout = duration(
            "CHUMP_ROLLOUT_TIMEOUT",
            "rollout-timeout",
            &args.rollout_timeout,
            Duration::from_secs(1),
        )?;
        let log_format = match args.log_format.trim() {
            "text" | "" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "CHUMP_LOG_FORMAT",
                    "log-format",
                    format!("'{other}' is not text or json"),
                ))
            }
        };
        if args.workdir.as_os_str().is_empty() {
            return Err(invalid("CHUMP_WORKDIR", "workdir", "must not be empty"));
        }
        let from_file = match &args.api_token_file {
            Some(path) if !path.as_os_str().is_empty() => {
                if args
                    .api_token
                    .as_deref()
                    .is_some_and(|t| !t.trim().is_empty())
                {
                    return Err(invalid(
                        "CHUMP_API_TOKEN_FILE",
                        "api-token-file",
                        "set either CHUMP_API_TOKEN or CHUMP_API_TOKEN_FILE, not both",
                    ));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "CHUMP_API_TOKEN_FILE",
                        "api-token-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Some(text)
            }
            _ => None,
        };
        let token_var = if from_file.is_some() {
            ("CHUMP_API_TOKEN_FILE", "api-token-file")
        } else {
            ("CHUMP_API_TOKEN", "api-token")
        };
        let api_token = match from_file
            .as_deref()
            .or(args.api_token.as_deref())
            .map(str::trim)
        {
            None | Some("") => None,
            Some(t) if t.len() < 16 => {
                return Err(invalid(
                    token_var.0,
                    token_var.1,
                    "the token must be at least 16 characters",
                ))
            }
            Some(t) => Some(t.to_string()),
        };
        let api_read_token = match args.api_read_token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(_) if api_token.is_none() => {
                return Err(invalid(
                    "CHUMP_API_READ_TOKEN",
                    "api-read-token",
                    "needs CHUMP_API_TOKEN too (without it the API is open to all)",
                ))
            }
            Some(t) if t.len() < 16 => {
                return Err(invalid(
                    "CHUMP_API_READ_TOKEN",
                    "api-read-token",
                    "must be at least 16 characters",
                ))
            }
            Some(t) if Some(t) == api_token.as_deref() => {
                return Err(invalid(
                    "CHUMP_API_READ_TOKEN",
                    "api-read-token",
                    "must differ from the API token",
                ))
            }
            Some(t) => Some(t.to_string()),
        };
        let insecure_no_auth = boolean(
            "CHUMP_INSECURE_NO_AUTH",
            "insecure-no-auth",
            &args.insecure_no_auth,
        )?;
        if api_token.is_none() && !bind.ip().is_loopback() && !insecure_no_auth {
            return Err(invalid(
                "CHUMP_API_TOKEN",
                "api-token",
                format!(
                    "refusing to listen on {bind} without a token: anyone who can reach it could deploy to your cluster. \
                     Set CHUMP_API_TOKEN (or CHUMP_API_TOKEN_FILE), or pass --insecure-no-auth (CHUMP_INSECURE_NO_AUTH=true)"
                ),
            ));
        }
        let header_timeout = duration(
            "CHUMP_HEADER_TIMEOUT",
            "header-timeout",
            &args.header_timeout,
            Duration::from_secs(1),
        )?;
        let webhook_secret = match args.webhook_secret.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) if s.len() < 8 => {
                return Err(invalid(
                    "CHUMP_WEBHOOK_SECRET",
                    "webhook-secret",
                    "must be at least 8 characters",
                ))
            }
            Some(s) => Some(s.to_string()),
        };
        let ssh_key = readable_file("CHUMP_SSH_KEY", "ssh-key", args.ssh_key.as_ref())?;
        let ssh_known_hosts = readable_file(
            "CHUMP_SSH_KNOWN_HOSTS",
            "ssh-known-hosts",
            args.ssh_known_hosts.as_ref(),
        )?;
        let notify = match args
            .notify_config
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            None => None,
            Some(path) => Some(
                crate::notify::config::load(path, &|var| std::env::var(var).ok())
                    .map_err(|e| invalid("CHUMP_NOTIFY_CONFIG", "notify-config", e.to_string()))?,
            ),
        };
        Ok(Config {
            notify,
            ssh_key,
            ssh_known_hosts,
            webhook_secret,
            bind,
            database,
            workers,
            interval,
            check_timeout,
            lease,
            rollout_timeout,
            workdir: args.workdir.clone(),
            api_token,
            api_read_token,
            header_timeout,
            allow_file_urls: boolean(
                "CHUMP_ALLOW_FILE_URLS",
                "allow-file-urls",
                &args.allow_file_urls,
            )?,
            kustomize: args.kustomize.clone().filter(|k| !k.trim().is_empty()),
            kustomize_allow_remote: boolean(
                "CHUMP_KUSTOMIZE_ALLOW_REMOTE",
                "kustomize-allow-remote",
                &args.kustomize_allow_remote,
            )?,
            kustomize_in_process: boolean(
                "CHUMP_KUSTOMIZE_IN_PROCESS",
                "kustomize-in-process",
                &args.kustomize_in_process,
            )?,
            shutdown_grace: duration(
                "CHUMP_SHUTDOWN_GRACE",
                "shutdown-grace",
                &args.shutdown_grace,
                Duration::ZERO,
            )?,
            restrict_namespace: boolean(
                "CHUMP_RESTRICT_NAMESPACE",
                "restrict-namespace",
                &args.restrict_namespace,
            )?,
            self_heal: boolean("CHUMP_SELF_HEAL", "self-heal", &args.self_heal)?,
            auto_rollback: boolean("CHUMP_AUTO_ROLLBACK", "auto-rollback", &args.auto_rollback)?,
            default_service_account: match args.default_service_account.trim() {
                "" => None,
                sa => Some(
                    chump_jobs::source::validate_service_account(sa)
                        .map(|()| sa.to_string())
                        .map_err(|reason| {
                            invalid(
                                "CHUMP_DEFAULT_SERVICE_ACCOUNT",
                                "default-service-account",
                                reason,
                            )
                        })?,
                ),
            },
            require_service_account: boolean(
                "CHUMP_REQUIRE_SERVICE_ACCOUNT",
                "require-service-account",
                &args.require_service_account,
            )?,
            manifest_retention: args
                .manifest_retention
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "CHUMP_MANIFEST_RETENTION",
                        "manifest-retention",
                        format!(
                            "'{}' is not an integer from 1 to 1000",
                            args.manifest_retention.trim()
                        ),
                    )
                })?,
            manifest_max_bytes: byte_size(
                "CHUMP_MANIFEST_MAX_BYTES",
                "manifest-max-bytes",
                &args.manifest_max_bytes,
            )?,
            kubeconfig: args
                .kubeconfig
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rethinkdb_urls() {
        let c = parse_rethinkdb_url("rethinkdb://admin:p%40ss@db.example:29015/chump", "sources")
            .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.db.as_str()),
            ("db.example", 29015, "chump")
        );
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert!(!format!("{c:?}").contains("p@ss"));
        assert_eq!(
            parse_rethinkdb_url("rethinkdb://h/db", "t").unwrap().port,
            28015
        );
        assert!(parse_rethinkdb_url("rethinkdb://h/", "t").is_err());
    }

    fn serve(args: &[String]) -> Result<Config, ConfigError> {
        let argv = ["chump".to_string(), "serve".to_string()];
        let cli = Cli::try_parse_from(argv.iter().chain(args)).unwrap();
        let Command::Serve(serve) = cli.command else {
            panic!("not serve")
        };
        Config::from_args(&serve)
    }

    #[test]
    fn lease_durations() {
        assert_eq!(serve(&[]).unwrap().lease, Duration::from_secs(30));
        for (raw, secs) in [("3", 3), ("5s", 5), ("2m", 120), ("1h", 3600), (" 45 ", 45)] {
            assert_eq!(
                serve(&[format!("--lease={raw}")]).unwrap().lease,
                Duration::from_secs(secs),
                "{raw}"
            );
        }
        for raw in ["2", "2500ms", "61m", "2h", "soon", "", "-5"] {
            let e = serve(&[format!("--lease={raw}")])
                .err()
                .unwrap_or_else(|| panic!("{raw} accepted"));
            assert_eq!((e.var, e.flag), ("CHUMP_LEASE", "lease"), "{raw}: {e}");
            assert!(e.to_string().contains("CHUMP_LEASE"), "{e}");
        }
    }

    #[test]
    fn rethinkdb_replicas() {
        let db = "--database=rethinkdb://127.0.0.1/chump".to_string();
        let replicas = |c: &Config| match &c.database {
            DatabaseConfig::RethinkDb(rc) => rc.replicas,
            other => panic!("{other:?}"),
        };
        assert_eq!(replicas(&serve(std::slice::from_ref(&db)).unwrap()), 1);
        let three = serve(&[db.clone(), "--rethinkdb-replicas=3".into()]).unwrap();
        assert_eq!(replicas(&three), 3);
        for raw in ["0", "65", "three", "", "-1"] {
            let e = serve(&[db.clone(), format!("--rethinkdb-replicas={raw}")])
                .err()
                .unwrap_or_else(|| panic!("{raw} accepted"));
            assert_eq!(
                (e.var, e.flag),
                ("CHUMP_RETHINKDB_REPLICAS", "rethinkdb-replicas"),
                "{raw}: {e}"
            );
        }
    }

    #[test]
    fn rethinkdb_pool() {
        let db = "--database=rethinkdb://127.0.0.1/chump".to_string();
        let pool = |c: &Config| match &c.database {
            DatabaseConfig::RethinkDb(rc) => rc.pool,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pool(&serve(std::slice::from_ref(&db)).unwrap()),
            DEFAULT_RETHINKDB_POOL
        );
        let two = serve(&[db.clone(), "--rethinkdb-pool=2".into()]).unwrap();
        assert_eq!(pool(&two), 2);
        for raw in ["0", "257", "many", "", "-1"] {
            let e = serve(&[db.clone(), format!("--rethinkdb-pool={raw}")])
                .err()
                .unwrap_or_else(|| panic!("{raw} accepted"));
            assert_eq!(
                (e.var, e.flag),
                ("CHUMP_RETHINKDB_POOL", "rethinkdb-pool"),
                "{raw}: {e}"
            );
        }
    }
}
