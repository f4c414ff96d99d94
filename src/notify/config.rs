//! The notification config file (`CHUMP_NOTIFY_CONFIG`): YAML (`.yaml`,
//! `.yml`) or TOML (`.toml`), read once at startup. Every field is checked
//! here; a bad one stops startup with the file and the field named. Secrets
//! (webhook secrets, tokens) are read from the file or from environment
//! variables it names, and never appear in a message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chump_jobs::notify::EventKind;
use serde::Deserialize;

/// A config file that cannot be used: the file, the field, why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {}{reason}", file.display(), if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct NotifyConfigError {
    pub file: PathBuf,
    /// `targets[1].url` (empty: the file as a whole).
    pub field: String,
    pub reason: String,
}

/// The checked file.
#[derive(Clone)]
pub struct NotifyConfig {
    pub file: PathBuf,
    /// Base of the links in notifications (`{public_url}/api/history/{id}`);
    /// None: `http://` and the address chump listens on.
    pub public_url: Option<String>,
    pub targets: Vec<TargetConfig>,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.targets.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("NotifyConfig")
            .field("file", &self.file)
            .field("public_url", &self.public_url)
            .field("targets", &names)
            .finish()
    }
}

/// Where a target sends.
#[derive(Clone)]
pub enum TargetKind {
    /// A generic JSON webhook, signed when a secret is set.
    Webhook { url: String, secret: Option<String> },
    /// A Slack-compatible incoming webhook (its URL is a secret).
    Slack { url: String },
    /// Commit statuses on a git host's API.
    CommitStatus {
        provider: Provider,
        /// The API base, no trailing `/`.
        api_url: String,
        token: String,
    },
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Slack { .. } => "slack",
            TargetKind::CommitStatus { .. } => "commit_status",
        }
    }

    /// Every secret of the target (masked out of any error text).
    pub fn secrets(&self) -> Vec<String> {
        match self {
            TargetKind::Webhook { url, secret } => {
                let mut s = url_path_secrets(url);
                s.extend(secret.clone());
                s
            }
            TargetKind::Slack { url } => url_path_secrets(url),
            TargetKind::CommitStatus { token, .. } => vec![token.clone()],
        }
    }
}

/// The parts of a URL that may be secret: its userinfo, path segments
/// and query (for masking error text).
fn url_path_secrets(raw: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(raw) else {
        return vec![raw.to_string()];
    };
    let mut out: Vec<String> = u
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| s.len() >= 6)
        .map(str::to_string)
        .collect();
    out.extend(u.query().map(str::to_string));
    out.extend(u.password().map(str::to_string));
    out
}

/// A git host whose commit-status API chump speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }
}

/// Which sources a target hears about (every list empty: all).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub namespaces: Vec<String>,
    pub sources: Vec<i64>,
    /// Hosts of the source's `git_url` (`github.com`), case-insensitive.
    pub git_hosts: Vec<String>,
}

impl Selector {
    pub fn selects(&self, source: &chump_jobs::source::Source) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(&source.spec.namespace))
            && (self.sources.is_empty() || self.sources.contains(&source.id))
            && (self.git_hosts.is_empty()
                || chump_jobs::webhook::repo_host_path(&source.spec.git_url).is_some_and(
                    |(host, _)| self.git_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)),
                ))
    }
}

/// One target, checked.
#[derive(Clone)]
pub struct TargetConfig {
    /// Unique in the file; `[a-z0-9][a-z0-9_-]*`, at most 63 characters
    /// (a metrics label and a URL path segment).
    pub name: String,
    pub kind: TargetKind,
    pub events: Vec<EventKind>,
    pub selector: Selector,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first, before giving up.
    pub retries: u32,
    /// Wait before the first retry, doubled for each next one (at most 5 min).
    pub backoff: Duration,
    /// Events waiting to be delivered, at most (then the oldest is dropped).
    pub queue: usize,
}

/// Defaults of the per-target settings.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_QUEUE: usize = 100;

/// The events a webhook or chat target hears without `events:`.
pub const DEFAULT_EVENTS: &[EventKind] = &[
    EventKind::Deployed,
    EventKind::Failed,
    EventKind::Degraded,
    EventKind::RolledBack,
    EventKind::Recovered,
];

/// The events a commit-status target posts without `events:` (also
/// `superseded`, which settles the `pending` of a deploy the branch
/// overtook).
pub const DEFAULT_STATUS_EVENTS: &[EventKind] = &[
    EventKind::Deployed,
    EventKind::Failed,
    EventKind::RolledBack,
    EventKind::Recovered,
    EventKind::Superseded,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    public_url: Option<String>,
    timeout: Option<RawDuration>,
    retries: Option<u32>,
    backoff: Option<RawDuration>,
    queue: Option<usize>,
    #[serde(default)]
    targets: Vec<RawTarget>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    provider: Option<String>,
    api_url: Option<String>,
    token: Option<String>,
    token_env: Option<String>,
    events: Option<Vec<String>>,
    selector: Option<RawSelector>,
    timeout: Option<RawDuration>,
    retries: Option<u32>,
    backoff: Option<RawDuration>,
    queue: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default)]
    sources: Vec<i64>,
    #[serde(default)]
    git_hosts: Vec<String>,
}

/// Seconds, or a humantime text (`500ms`, `5s`, `2m`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// Reads and checks `path`; `env` looks up the variables the file names
/// (`secret_env`, `token_env`).
pub fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NotifyConfig, NotifyConfigError> {
    let err = |field: &str, reason: String| NotifyConfigError {
        file: path.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read: {e}")))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: RawFile = match ext.as_str() {
        "yaml" | "yml" => yaml_serde::from_str(&text).map_err(|e| err("", e.to_string()))?,
        "toml" => toml::from_str(&text).map_err(|e| err("", e.to_string().trim().to_string()))?,
        _ => {
            return Err(err(
                "",
                "the file name must end in .yaml, .yml or .toml (its format)".to_string(),
            ))
        }
    };
    check(path, raw, env)
}

fn duration(field: &str, raw: &RawDuration) -> Result<Duration, (String, String)> {
    let d = match raw {
        RawDuration::Seconds(s) => Duration::from_secs(*s),
        RawDuration::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            (
                field.to_string(),
                format!("'{t}' is not a duration such as 5s or 500ms: {e}"),
            )
        })?,
    };
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err((
            field.to_string(),
            "must be more than 0 and at most 1h".to_string(),
        ));
    }
    Ok(d)
}

fn http_url(field: &str, raw: &str) -> Result<String, (String, String)> {
    let u = url::Url::parse(raw.trim()).map_err(|e| {
        // The URL itself may be a secret (Slack's): not quoted.
        (field.to_string(), format!("not a URL: {e}"))
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err((
            field.to_string(),
            "must be an http:// or https:// URL with a host".to_string(),
        ));
    }
    Ok(raw.trim().to_string())
}

fn check(
    path: &Path,
    raw: RawFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NotifyConfig, NotifyConfigError> {
    checked(raw, env)
        .map_err(|(field, reason)| NotifyConfigError {
            file: path.to_path_buf(),
            field,
            reason,
        })
        .map(|(public_url, targets)| NotifyConfig {
            file: path.to_path_buf(),
            public_url,
            targets,
        })
}

type Checked = (Option<String>, Vec<TargetConfig>);

fn checked(
    raw: RawFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Checked, (String, String)> {
    let public_url = raw
        .public_url
        .as_deref()
        .map(|u| http_url("public_url", u).map(|u| u.trim_end_matches('/').to_string()))
        .transpose()?;
    let timeout = raw
        .timeout
        .as_ref()
        .map(|d| duration("timeout", d))
        .transpose()?
        .unwrap_or(DEFAULT_TIMEOUT);
    let backoff = raw
        .backoff
        .as_ref()
        .map(|d| duration("backoff", d))
        .transpose()?
        .unwrap_or(DEFAULT_BACKOFF);
    let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > 20 {
        return Err(("retries".into(), "at most 20".into()));
    }
    let queue = raw.queue.unwrap_or(DEFAULT_QUEUE);
    if !(1..=100_000).contains(&queue) {
        return Err(("queue".into(), "from 1 to 100000".into()));
    }
    let mut targets: Vec<TargetConfig> = Vec::new();
    for (i, t) in raw.targets.into_iter().enumerate() {
        let at = |f: &str| format!("targets[{i}].{f}");
        let name = t
            .name
            .clone()
            .ok_or_else(|| (at("name"), "required".to_string()))?;
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err((
                at("name"),
                format!("'{name}' must be lower-case letters, digits, - and _ (at most 63, starting with a letter or digit)"),
            ));
        }
        if targets.iter().any(|o| o.name == name) {
            return Err((at("name"), format!("'{name}' is used by another target")));
        }
        let secret_from = |value: &Option<String>,
                           var: &Option<String>,
                           field: &str|
         -> Result<Option<String>, (String, String)> {
            match (value, var) {
                (Some(_), Some(_)) => {
                    Err((at(field), format!("give {field} or {field}_env, not both")))
                }
                (Some(v), None) if v.is_empty() => Err((at(field), "must not be empty".into())),
                (Some(v), None) => Ok(Some(v.clone())),
                (None, Some(var)) => match env(var) {
                    Some(v) if !v.is_empty() => Ok(Some(v)),
                    _ => Err((
                        at(&format!("{field}_env")),
                        format!("the environment variable {var} is not set (or empty)"),
                    )),
                },
                (None, None) => Ok(None),
            }
        };
        let kind_name = t.kind.clone().ok_or_else(|| {
            (
                at("type"),
                "required: webhook, slack or commit_status".to_string(),
            )
        })?;
        let refuse = |present: bool, field: &str, kind: &str| {
            if present {
                Err((at(field), format!("not a field of a {kind} target")))
            } else {
                Ok(())
            }
        };
        let kind = match kind_name.as_str() {
            "webhook" | "slack" => {
                refuse(t.provider.is_some(), "provider", &kind_name)?;
                refuse(t.api_url.is_some(), "api_url", &kind_name)?;
                refuse(t.token.is_some(), "token", &kind_name)?;
                refuse(t.token_env.is_some(), "token_env", &kind_name)?;
                let url = http_url(
                    &at("url"),
                    t.url
                        .as_deref()
                        .ok_or_else(|| (at("url"), "required".to_string()))?,
                )?;
                if kind_name == "webhook" {
                    let secret = secret_from(&t.secret, &t.secret_env, "secret")?;
                    TargetKind::Webhook { url, secret }
                } else {
                    refuse(t.secret.is_some(), "secret", &kind_name)?;
                    refuse(t.secret_env.is_some(), "secret_env", &kind_name)?;
                    TargetKind::Slack { url }
                }
            }
            "commit_status" => {
                refuse(t.url.is_some(), "url", "commit_status (use api_url)")?;
                refuse(t.secret.is_some(), "secret", &kind_name)?;
                refuse(t.secret_env.is_some(), "secret_env", &kind_name)?;
                let provider = match t.provider.as_deref() {
                    Some("github") => Provider::Github,
                    Some("gitlab") => Provider::Gitlab,
                    Some("gitea") => Provider::Gitea,
                    Some(other) => {
                        return Err((
                            at("provider"),
                            format!("'{other}' is not github, gitlab or gitea"),
                        ))
                    }
                    None => {
                        return Err((at("provider"), "required: github, gitlab or gitea".into()))
                    }
                };
                let api_url = match (&t.api_url, provider) {
                    (Some(u), _) => http_url(&at("api_url"), u)?,
                    (None, Provider::Github) => "https://api.github.com".to_string(),
                    (None, Provider::Gitlab) => "https://gitlab.com/api/v4".to_string(),
                    (None, Provider::Gitea) => {
                        return Err((
                            at("api_url"),
                            "required for gitea (e.g. https://gitea.example.com/api/v1)".into(),
                        ))
                    }
                };
                let token = secret_from(&t.token, &t.token_env, "token")?
                    .ok_or_else(|| (at("token"), "required: token or token_env".to_string()))?;
                TargetKind::CommitStatus {
                    provider,
                    api_url: api_url.trim_end_matches('/').to_string(),
                    token,
                }
            }
            other => {
                return Err((
                    at("type"),
                    format!("'{other}' is not webhook, slack or commit_status"),
                ))
            }
        };
        let events = match &t.events {
            None => match kind {
                TargetKind::CommitStatus { .. } => DEFAULT_STATUS_EVENTS.to_vec(),
                _ => DEFAULT_EVENTS.to_vec(),
            },
            Some(list) if list.is_empty() => {
                return Err((at("events"), "must list at least one event".into()))
            }
            Some(list) => {
                let mut events = Vec::new();
                for (j, e) in list.iter().enumerate() {
                    let kind: EventKind = e.parse().map_err(|_| {
                        (
                            format!("targets[{i}].events[{j}]"),
                            format!(
                                "'{e}' is not one of {}",
                                crate::api::one_of(EventKind::NAMES)
                            ),
                        )
                    })?;
                    if !events.contains(&kind) {
                        events.push(kind);
                    }
                }
                events
            }
        };
        let selector = match t.selector {
            None => Selector::default(),
            Some(s) => {
                if let Some(bad) = s.sources.iter().find(|id| **id < 1) {
                    return Err((at("selector.sources"), format!("{bad} is not a source id")));
                }
                Selector {
                    namespaces: s.namespaces,
                    sources: s.sources,
                    git_hosts: s.git_hosts,
                }
            }
        };
        let target_retries = t.retries.unwrap_or(retries);
        if target_retries > 20 {
            return Err((at("retries"), "at most 20".into()));
        }
        let target_queue = t.queue.unwrap_or(queue);
        if !(1..=100_000).contains(&target_queue) {
            return Err((at("queue"), "from 1 to 100000".into()));
        }
        targets.push(TargetConfig {
            name,
            kind,
            events,
            selector,
            timeout: t
                .timeout
                .as_ref()
                .map(|d| duration(&at("timeout"), d))
                .transpose()?
                .unwrap_or(timeout),
            retries: target_retries,
            backoff: t
                .backoff
                .as_ref()
                .map(|d| duration(&at("backoff"), d))
                .transpose()?
                .unwrap_or(backoff),
            queue: target_queue,
        });
    }
    if targets.is_empty() {
        return Err(("targets".into(), "the file lists no target".into()));
    }
    Ok((public_url, targets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<NotifyConfig, NotifyConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        load(&path, &|var| {
            (var == "GH_TOKEN").then(|| "ghp_secret".to_string())
        })
    }

    const YAML: &str = "public_url: https://chump.example.com/\ntimeout: 2s\nretries: 1\ntargets:\n\
        - name: ops\n  type: webhook\n  url: https://hooks.example.com/x\n  secret: s3cr3t-value\n  events: [failed]\n  selector:\n    namespaces: [shop]\n\
        - name: chat\n  type: slack\n  url: https://hooks.slack.com/services/T/B/XYZSECRET\n  backoff: 250ms\n\
        - name: gh\n  type: commit_status\n  provider: github\n  token_env: GH_TOKEN\n";

    #[test]
    fn a_yaml_file_with_every_kind() {
        let c = load_text("n.yaml", YAML).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://chump.example.com"));
        assert_eq!(c.targets.len(), 3);
        assert_eq!(c.targets[0].events, [EventKind::Failed]);
        assert_eq!(c.targets[0].timeout, Duration::from_secs(2));
        assert_eq!(c.targets[1].backoff, Duration::from_millis(250));
        assert_eq!(c.targets[1].events, DEFAULT_EVENTS);
        match &c.targets[2].kind {
            TargetKind::CommitStatus { api_url, token, .. } => {
                assert_eq!(api_url, "https://api.github.com");
                assert_eq!(token, "ghp_secret");
            }
            _ => panic!("not a commit status"),
        }
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_toml_file() {
        let c = load_text(
            "n.toml",
            "[[targets]]\nname = \"gl\"\ntype = \"commit_status\"\nprovider = \"gitlab\"\napi_url = \"http://127.0.0.1:9/api/v4/\"\ntoken = \"glpat\"\nevents = [\"deployed\", \"failed\"]\n",
        )
        .unwrap();
        match &c.targets[0].kind {
            TargetKind::CommitStatus { api_url, .. } => {
                assert_eq!(api_url, "http://127.0.0.1:9/api/v4")
            }
            _ => panic!(),
        }
    }

    #[test]
    fn errors_name_the_file_and_the_field_and_no_secret() {
        let cases = [
            ("targets:\n- name: a\n  type: webhook\n", "targets[0].url: required"),
            ("targets:\n- name: a\n  type: pager\n  url: http://x\n", "targets[0].type"),
            ("targets:\n- name: a\n  type: webhook\n  url: http://x\n  events: [deploy]\n", "targets[0].events[0]"),
            ("targets:\n- name: a\n  type: commit_status\n  provider: github\n  token_env: NOPE\n", "targets[0].token_env"),
            ("targets:\n- name: a\n  type: commit_status\n  provider: gitea\n  token: t0ken-value\n", "targets[0].api_url"),
            ("targets:\n- name: a\n  type: webhook\n  url: http://x\n- name: a\n  type: slack\n  url: http://y\n", "targets[1].name"),
            ("targets:\n- name: a\n  type: webhook\n  url: http://x\n  secret: sup3rsecret\n  timeout: soon\n", "targets[0].timeout"),
            ("targets: []\n", "targets: the file lists no target"),
            ("targets:\n- name: a\n  typo: webhook\n", "unknown field"),
        ];
        for (text, want) in cases {
            let e = load_text("bad.yaml", text).unwrap_err().to_string();
            assert!(e.contains("bad.yaml: "), "{e}");
            assert!(e.contains(want), "{want} not in: {e}");
            assert!(
                !e.contains("sup3rsecret") && !e.contains("t0ken-value"),
                "{e}"
            );
        }
        let e = load_text("n.json", "{}").unwrap_err().to_string();
        assert!(e.contains(".toml"), "{e}");
    }
}
