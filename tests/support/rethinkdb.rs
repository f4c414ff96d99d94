//! The RethinkDB server tests run against, when there is one.
//!
//! `CHUMP_TEST_RETHINKDB=host:port` names it (user `admin`, no password).
//! Every test works in a database of its own (random name), so tests run in
//! parallel. Without the variable [`fresh_config`] says once, on the
//! process's stderr (past the test harness's capture), that the RethinkDB
//! tests were skipped, and returns None.

use chump::config::RethinkConfig;
use futures::TryStreamExt;
use reql::r;
use serde_json::{json, Value};

pub const SKIPPED: &str = "skipped: CHUMP_TEST_RETHINKDB is not set (no RethinkDB server)";

/// The server under test, or None (and a note) when there is none.
pub fn server() -> Option<(String, u16)> {
    let Ok(addr) = std::env::var("CHUMP_TEST_RETHINKDB") else {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            use std::io::Write;
            let test = std::env::args()
                .next()
                .and_then(|p| {
                    std::path::Path::new(&p)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                })
                // target/debug/deps/fleet-0123abcd: the test file's name.
                .map(|f| f.rsplit_once('-').map_or(f.clone(), |(name, _)| name.to_string()))
                .unwrap_or_default();
            let _ = writeln!(
                std::io::stderr(),
                "\n{test}: every RethinkDB test {SKIPPED}; set CHUMP_TEST_RETHINKDB=host:port to run them\n"
            );
        });
        return None;
    };
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse().expect("CHUMP_TEST_RETHINKDB=host:port"),
        ),
        None => (addr, 28015),
    };
    Some((host, port))
}

/// A config for a new database with a random name on the test server.
pub fn fresh_config() -> Option<RethinkConfig> {
    let (host, port) = server()?;
    Some(RethinkConfig {
        host,
        port,
        db: format!("chump_test_{:016x}", fastrand::u64(..)),
        table: "sources".into(),
        user: None,
        password: None,
        replicas: 1,
        pool: chump::config::DEFAULT_RETHINKDB_POOL,
    })
}

/// `CHUMP_DATABASE` for `chump serve` on `config`'s database.
pub fn database_url(config: &RethinkConfig) -> String {
    format!("rethinkdb://{}:{}/{}", config.host, config.port, config.db)
}

/// A raw reql session to the test server: another client, as the Python
/// tool or an operator would be.
pub async fn raw_session(config: &RethinkConfig) -> reql::Session {
    r.connect(
        reql::cmd::connect::Options::new()
            .host(config.host.clone())
            .port(config.port),
    )
    .await
    .expect("connect to CHUMP_TEST_RETHINKDB")
}

/// Runs `query`, returning its first value (Null for none); panics on errors.
pub async fn raw_run(session: &reql::Session, query: reql::Command) -> Value {
    try_raw_run(session, query).await.expect("query")
}

/// Runs `query`, returning its first value or the error's text.
pub async fn try_raw_run(session: &reql::Session, query: reql::Command) -> Result<Value, String> {
    query
        .run::<_, Value>(session)
        .try_next()
        .await
        .map(|v| v.unwrap_or(Value::Null))
        .map_err(|e| e.to_string())
}

/// A source document exactly as the Python tool wrote it: seven fields and
/// an integer id, nothing else.
pub fn python_doc(id: i64, name: &str) -> Value {
    json!({
        "id": id,
        "namespace": "production",
        "deployment_name": name,
        "git_url": "https://github.com/stvnorg/helloworld.git",
        "branch": "master",
        "deploy_path": "./deploy/helloworld/deployment.yaml",
        "container_name": "app",
        "image_version_file": "./deploy/helloworld/deployment.yaml",
    })
}

/// Runs `query`, returning every value it yields (arrays flattened).
pub async fn raw_all(session: &reql::Session, query: reql::Command) -> Vec<Value> {
    let values: Vec<Value> = query
        .run::<_, Value>(session)
        .try_collect()
        .await
        .expect("query");
    values
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items,
            other => vec![other],
        })
        .collect()
}

/// `query.delete()`.
pub fn delete(query: reql::Command) -> reql::Command {
    reql::Command::new(ql2::term::TermType::Delete).with_arg(query)
}
