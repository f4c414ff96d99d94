//! The client side of the `chump` binary: subcommands that talk to a running
//! chump server over its REST API (`sources`, `check`, `history`, `diff`,
//! `rollback`, `unpin`, `status`, `notify`).
//!
//! Every command takes `--url` (`CHUMP_URL`), `--token` (`CHUMP_API_TOKEN`)
//! and `--json`. Output is a human table or key/value list by default; with
//! `--json` it is the server's JSON, pretty-printed. Exit status: 0 on
//! success, 1 when the server refuses or cannot be reached (its `msg` and
//! `errors` on stderr), 2 for a usage error.

pub mod client;
pub mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use client::{CliError, Client};

/// Options shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// URL of the chump server.
    #[arg(
        long,
        env = "CHUMP_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub url: String,
    /// Bearer token for a server started with CHUMP_API_TOKEN.
    #[arg(long, env = "CHUMP_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer (pretty) instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The client commands, flattened into `chump`'s top-level commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Manage git sources: list, get, add, update, delete, suspend, resume.
    Sources(SourcesArgs),
    /// Ask for a check of a source now (it runs as soon as a worker is free).
    Check(CheckArgs),
    /// Deploys, rollbacks, failures, supersessions, deletions and degraded
    /// spells (their start and end), newest first: of one source, or of all.
    ///
    /// With --at, what was live at a moment (one entry per source).
    /// `chump history show ID`: one entry and the manifests it applied.
    History(HistoryArgs),
    /// How the manifests a history entry applied differ from an earlier
    /// entry's, object by object.
    ///
    /// The earlier entry is --against, or by default the source's previous
    /// one with kept manifests. Each object added, removed or changed gets a
    /// header line and a unified diff of its YAML (Secret values masked),
    /// then a summary line.
    Diff(DiffArgs),
    /// Roll a source back to a recorded deploy, keeping auto-deploy on.
    ///
    /// The target is --to, or by default the last successful deploy of
    /// another commit before the live one. A worker applies that deploy's
    /// kept manifests again and waits for the rollout; the source then stays
    /// pinned away from the commit it left until the branch moves off it (or
    /// `chump unpin`).
    Rollback(RollbackArgs),
    /// Lift the pin a rollback left: auto-deploy resumes with a check now.
    Unpin(UnpinArgs),
    /// A source's last check, its workloads' health (and why, when
    /// degraded), its pin after a rollback (the commit and why), its next
    /// check, and what chump last applied (object counts by kind, and the
    /// commit).
    Status(StatusArgs),
    /// Notification targets (CHUMP_NOTIFY_CONFIG): list them with their
    /// last delivery, or send one a test event.
    Notify(NotifyArgs),
}

/// `chump notify ...`
#[derive(Debug, Args)]
pub struct NotifyArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: NotifyCommand,
}

/// What to do with notification targets.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Every target: type, URL (masked), events, queue and last delivery.
    List,
    /// Send a test event to a webhook or slack target now (one attempt);
    /// exit status 1 when it is not delivered.
    Test {
        /// The target's name.
        target: String,
    },
}

/// `chump sources ...`
#[derive(Debug, Args)]
pub struct SourcesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: SourcesCommand,
}

/// What to do with sources.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Every source, with its last outcome and next check.
    List,
    /// One source.
    Get {
        /// Source id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
    /// Register a source: the seven fields as flags, or a JSON/YAML file.
    Add {
        #[command(flatten)]
        fields: SourceFields,
        /// JSON or YAML document with the source's fields ('-' for stdin);
        /// flags given too override its values.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Change some fields of a source (PATCH): flags, or a JSON/YAML file.
    Update {
        /// Source id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        #[command(flatten)]
        fields: SourceFields,
        /// JSON or YAML document with the fields to change ('-' for stdin);
        /// flags given too override its values.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Delete a source (its history stays readable). With --prune, the
    /// objects chump applied for it are deleted from the cluster first: the
    /// server answers at once, and the source goes once they are pruned
    /// (`chump sources get ID` shows `deleting: true` until then).
    Delete {
        /// Source id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// Prune the source's objects first (--prune, or --prune=false: the
        /// default, leaving them in the cluster).
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        prune: Option<bool>,
    },
    /// Stop scheduled and webhook checks of a source (a manual check still runs).
    Suspend {
        /// Source id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
    /// Resume scheduled checks of a suspended source.
    Resume {
        /// Source id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
}

/// The fields of a source, as flags.
#[derive(Debug, Clone, Default, Args)]
pub struct SourceFields {
    /// Kubernetes namespace of the Deployment.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Name of the Deployment.
    #[arg(long)]
    pub deployment_name: Option<String>,
    /// Git repository URL.
    #[arg(long)]
    pub git_url: Option<String>,
    /// Branch to follow.
    #[arg(long)]
    pub branch: Option<String>,
    /// Kustomize directory (or a file in it), relative to the repository.
    #[arg(long)]
    pub deploy_path: Option<String>,
    /// Container whose image is compared.
    #[arg(long)]
    pub container_name: Option<String>,
    /// Manifest or kustomization declaring the image, relative to the repository.
    #[arg(long)]
    pub image_version_file: Option<String>,
    /// Time between two checks (5 to 604800 seconds; default: the server's).
    #[arg(long)]
    pub interval_seconds: Option<u64>,
    /// Suspend the source (--suspended, or --suspended=false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub suspended: Option<bool>,
    /// Delete objects a new build no longer renders (--prune=false to keep
    /// them; server default: true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub prune: Option<bool>,
    /// Roll back to the last successful deploy when a deploy fails at apply
    /// or rollout: true (--auto-rollback), false, or default (the server's
    /// CHUMP_AUTO_ROLLBACK).
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = ["true", "false", "default"]
    )]
    pub auto_rollback: Option<String>,
    /// The ServiceAccount chump deploys this source as (Kubernetes
    /// impersonation): namespace/name, or a name in the source's namespace;
    /// an empty value ('') clears it (the server's
    /// CHUMP_DEFAULT_SERVICE_ACCOUNT, if any).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub service_account: Option<String>,
}

/// The seven required fields: JSON name and flag.
const REQUIRED: [(&str, &str); 7] = [
    ("namespace", "--namespace"),
    ("deployment_name", "--deployment-name"),
    ("git_url", "--git-url"),
    ("branch", "--branch"),
    ("deploy_path", "--deploy-path"),
    ("container_name", "--container-name"),
    ("image_version_file", "--image-version-file"),
];

/// Fields the server sets; dropped from a `-f` document so that the output
/// of `chump sources get ID --json` can be edited and sent back.
const READ_ONLY: [&str; 5] = ["id", "created_at", "updated_at", "status", "deleting"];

impl SourceFields {
    fn into_json(self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v));
            }
        };
        put("namespace", self.namespace);
        put("deployment_name", self.deployment_name);
        put("git_url", self.git_url);
        put("branch", self.branch);
        put("deploy_path", self.deploy_path);
        put("container_name", self.container_name);
        put("image_version_file", self.image_version_file);
        if let Some(i) = self.interval_seconds {
            m.insert("interval_seconds".into(), i.into());
        }
        if let Some(s) = self.suspended {
            m.insert("suspended".into(), s.into());
        }
        if let Some(p) = self.prune {
            m.insert("prune".into(), p.into());
        }
        if let Some(a) = self.auto_rollback {
            let value = match a.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::Null,
            };
            m.insert("auto_rollback".into(), value);
        }
        if let Some(sa) = self.service_account {
            let value = if sa.is_empty() {
                Value::Null
            } else {
                Value::String(sa)
            };
            m.insert("service_account".into(), value);
        }
        m
    }
}

/// `chump check ID`
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Source id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
}

/// `chump history [ID]`, `chump history show ID`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Option<HistoryCommand>,
    /// Source id (default: every source).
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub id: Option<u64>,
    /// Entries per page (1 to 500; server default 50).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// Only entries older than this entry id (the next page).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub before: Option<u64>,
    /// Only this outcome: deployed, rolled_back (a recorded deploy applied
    /// again), up_to_date (only the check that ended a degraded spell is
    /// kept), failed, deleted, degraded (the check that started a spell) or
    /// superseded (the branch moved during a rollout).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(crate::api::OUTCOME_NAMES.iter().copied()))]
    pub outcome: Option<String>,
    /// Only sources in this namespace (all sources only).
    #[arg(long, conflicts_with = "id")]
    pub namespace: Option<String>,
    /// Only entries since this time: RFC 3339 (2026-01-31T12:00:00Z) or a
    /// duration ago (90m, 2h, 7d) (all sources only).
    #[arg(long, conflicts_with = "id")]
    pub since: Option<String>,
    /// What was live at this time, one entry per source (its newest deploy,
    /// rollback, supersession or failure after the apply that had finished
    /// by then): RFC 3339 or a duration ago (90m, 2h, 7d).
    #[arg(long, conflicts_with_all = ["before", "since"])]
    pub at: Option<String>,
}

/// `chump history show ID`
#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// One history entry (with its manifests state and, for a rollback, the
    /// entry it went back to), then the manifests it applied as YAML (Secret
    /// values masked) when they are kept, or why they are not. With --json:
    /// the entry alone.
    Show {
        /// History entry id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
    },
}

/// `chump diff ID [--against ID]`
#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// History entry id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The entry to compare with (default: the source's previous entry with
    /// kept manifests; none: every object is added).
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub against: Option<u64>,
}

/// `chump rollback SOURCE [--to ENTRY]`
#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Source id.
    #[arg(value_name = "SOURCE", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
    /// The history entry to go back to (one of this source's, with kept
    /// manifests; `chump history SOURCE` lists them).
    #[arg(long, value_name = "ENTRY", value_parser = clap::value_parser!(u64).range(1..))]
    pub to: Option<u64>,
}

/// `chump unpin SOURCE`
#[derive(Debug, Args)]
pub struct UnpinArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Source id.
    #[arg(value_name = "SOURCE", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
}

/// `chump status ID`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Source id.
    #[arg(value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,
}

/// Runs a client command; prints its output and errors, returns the exit status.
pub async fn run(command: ClientCommand) -> ExitCode {
    match execute(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprint!("{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn execute(command: ClientCommand) -> Result<(), CliError> {
    match command {
        ClientCommand::Sources(SourcesArgs { client, command }) => {
            let c = Client::new(&client)?;
            sources(&c, client.json, command).await
        }
        ClientCommand::Check(args) => {
            let c = Client::new(&args.client)?;
            let v = c
                .post(&format!("/api/sources/{}/check", args.id), None)
                .await?;
            emit(args.client.json, &v, output::queued)
        }
        ClientCommand::History(args) => {
            let c = Client::new(&args.client)?;
            if let Some(HistoryCommand::Show { id }) = args.command {
                return history_show(&c, args.client.json, id).await;
            }
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(l) = args.limit {
                query.push(("limit", l.to_string()));
            }
            if let Some(b) = args.before {
                query.push(("before", b.to_string()));
            }
            if let Some(o) = &args.outcome {
                query.push(("outcome", o.clone()));
            }
            if let Some(n) = &args.namespace {
                query.push(("namespace", n.clone()));
            }
            if let Some(s) = &args.since {
                query.push(("since", time_arg("--since", s)?));
            }
            if let Some(at) = &args.at {
                // One entry per source: only the all-sources route has it.
                query.push(("at", time_arg("--at", at)?));
                if let Some(id) = args.id {
                    query.push(("source_id", id.to_string()));
                }
                let v = c.get_query("/api/history", &query).await?;
                return emit(args.client.json, &v, output::history_at);
            }
            let path = match args.id {
                Some(id) => format!("/api/sources/{id}/history"),
                None => "/api/history".to_string(),
            };
            let v = c.get_query(&path, &query).await?;
            let all = args.id.is_none();
            emit(args.client.json, &v, |v| output::history(v, all))
        }
        ClientCommand::Diff(args) => {
            let c = Client::new(&args.client)?;
            let query: Vec<(&str, String)> = args
                .against
                .map(|a| ("against", a.to_string()))
                .into_iter()
                .collect();
            let v = c
                .get_query(&format!("/api/history/{}/diff", args.id), &query)
                .await?;
            emit(args.client.json, &v, output::diff)
        }
        ClientCommand::Rollback(args) => {
            let c = Client::new(&args.client)?;
            let body = args.to.map(|to| serde_json::json!({ "to": to }));
            let v = c
                .post(&format!("/api/sources/{}/rollback", args.id), body)
                .await?;
            emit(args.client.json, &v, output::queued)
        }
        ClientCommand::Unpin(args) => {
            let c = Client::new(&args.client)?;
            let v = c
                .post(&format!("/api/sources/{}/unpin", args.id), None)
                .await?;
            emit(args.client.json, &v, output::queued)
        }
        ClientCommand::Notify(NotifyArgs { client, command }) => {
            let c = Client::new(&client)?;
            match command {
                NotifyCommand::List => {
                    let v = c.get("/api/notifications").await?;
                    emit(client.json, &v, output::notification_targets)
                }
                NotifyCommand::Test { target } => {
                    let path = format!(
                        "/api/notifications/{}/test",
                        url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
                    );
                    let v = c.post(&path, None).await?;
                    emit(client.json, &v, output::notification_test)
                }
            }
        }
        ClientCommand::Status(args) => {
            let c = Client::new(&args.client)?;
            let v = c.get(&format!("/api/sources/{}/status", args.id)).await?;
            if args.client.json {
                return emit(true, &v, output::status);
            }
            let objects = match c.get(&format!("/api/sources/{}/objects", args.id)).await {
                Ok(objects) => Some(objects),
                // A server older than the route: the status alone.
                Err(CliError::Server { status, msg, .. })
                    if status == reqwest::StatusCode::NOT_FOUND
                        && msg.contains("No such endpoint") =>
                {
                    None
                }
                Err(e) => return Err(e),
            };
            emit(false, &v, |v| {
                output::status_with_objects(v, objects.as_ref())
            })
        }
    }
}

/// `chump history show ID`: the entry, then its manifests (or why there
/// are none).
async fn history_show(c: &Client, json: bool, id: u64) -> Result<(), CliError> {
    let entry = c.get(&format!("/api/history/{id}")).await?;
    if json {
        return emit(true, &entry, |_| String::new());
    }
    let manifests = match c.get_text(&format!("/api/history/{id}/manifests")).await {
        Ok(yaml) => Ok(yaml),
        // None kept: the server says why (dropped, too large, none applied).
        Err(CliError::Server { status, msg, .. }) if status == reqwest::StatusCode::NOT_FOUND => {
            Err(msg)
        }
        Err(e) => return Err(e),
    };
    emit(false, &entry, |v| {
        output::history_entry(v, manifests.as_deref().map_err(String::as_str))
    })
}

async fn sources(c: &Client, json: bool, command: SourcesCommand) -> Result<(), CliError> {
    match command {
        SourcesCommand::List => {
            let v = c.get("/api/sources").await?;
            emit(json, &v, output::source_list)
        }
        SourcesCommand::Get { id } => {
            let v = c.get(&format!("/api/sources/{id}")).await?;
            emit(json, &v, output::source)
        }
        SourcesCommand::Add { fields, file } => {
            let body = body_from(file.as_deref(), fields)?;
            if file.is_none() {
                let missing: Vec<&str> = REQUIRED
                    .iter()
                    .filter(|(k, _)| !body.contains_key(*k))
                    .map(|(_, flag)| *flag)
                    .collect();
                if !missing.is_empty() {
                    return Err(CliError::Usage(format!(
                        "missing {} (or give the source as a file with -f FILE)",
                        missing.join(", ")
                    )));
                }
            }
            let v = c.post("/api/sources", Some(Value::Object(body))).await?;
            emit(json, &v, output::changed_source)
        }
        SourcesCommand::Update { id, fields, file } => {
            let body = body_from(file.as_deref(), fields)?;
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to update: give at least one field flag or -f FILE".into(),
                ));
            }
            patch(c, json, id, body).await
        }
        SourcesCommand::Delete { id, prune } => {
            let query: Vec<(&str, String)> = prune
                .map(|p| ("prune", p.to_string()))
                .into_iter()
                .collect();
            let v = c.delete(&format!("/api/sources/{id}"), &query).await?;
            emit(json, &v, output::message)
        }
        SourcesCommand::Suspend { id } => {
            patch(
                c,
                json,
                id,
                Map::from_iter([("suspended".into(), true.into())]),
            )
            .await
        }
        SourcesCommand::Resume { id } => {
            patch(
                c,
                json,
                id,
                Map::from_iter([("suspended".into(), false.into())]),
            )
            .await
        }
    }
}

async fn patch(c: &Client, json: bool, id: u64, body: Map<String, Value>) -> Result<(), CliError> {
    let v = c
        .patch(&format!("/api/sources/{id}"), Value::Object(body))
        .await?;
    emit(json, &v, output::changed_source)
}

/// Prints `v` as pretty JSON, or through `human`.
fn emit(json: bool, v: &Value, human: impl FnOnce(&Value) -> String) -> Result<(), CliError> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        s.push('\n');
        s
    } else {
        human(v)
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`chump sources list | head`) is not an error.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(())
}

/// The request body: the `-f` document (if any), then the flags over it.
fn body_from(
    file: Option<&std::path::Path>,
    fields: SourceFields,
) -> Result<Map<String, Value>, CliError> {
    let mut body = match file {
        Some(path) => read_document(path)?,
        None => Map::new(),
    };
    for key in READ_ONLY {
        body.remove(key);
    }
    body.extend(fields.into_json());
    Ok(body)
}

/// Reads a JSON or YAML mapping from `path` (`-`: stdin).
fn read_document(path: &std::path::Path) -> Result<Map<String, Value>, CliError> {
    let shown = path.display();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {shown}: {e}")))?
    };
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    let value: Value = if is_json {
        serde_json::from_str(&text)
            .map_err(|e| CliError::Usage(format!("{shown} is not valid JSON: {e}")))?
    } else {
        yaml_serde::from_str(&text)
            .map_err(|e| CliError::Usage(format!("{shown} is not valid YAML: {e}")))?
    };
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(CliError::Usage(format!(
            "{shown} must hold one mapping of source fields (namespace: ..., branch: ...)"
        ))),
    }
}

/// `--since`, `--at`: an RFC 3339 time as is, or a duration ago.
fn time_arg(flag: &str, raw: &str) -> Result<String, CliError> {
    let raw = raw.trim();
    if OffsetDateTime::parse(raw, &Rfc3339).is_ok() {
        return Ok(raw.to_string());
    }
    let ago = humantime::parse_duration(raw).map_err(|_| {
        CliError::Usage(format!(
            "{flag} '{raw}' is neither an RFC 3339 time (2026-01-31T12:00:00Z) nor a duration (90m, 2h, 7d)"
        ))
    })?;
    time::Duration::try_from(ago)
        .ok()
        .and_then(|ago| OffsetDateTime::now_utc().checked_sub(ago))
        .and_then(|at| at.format(&Rfc3339).ok())
        .ok_or_else(|| CliError::Usage(format!("{flag} '{raw}' is too long ago")))
}
