//! What each kind of target sends: the generic webhook's signed JSON, the
//! Slack-compatible message, the commit status calls of GitHub, GitLab and
//! Gitea — and how a target's URL is shown (masked).

use chump_jobs::history::Outcome;
use chump_jobs::notify::{DeployStart, Event, EventKind};
use chump_jobs::redact::MASK;
use serde_json::{json, Value};

use super::config::{Provider, TargetKind};

/// One HTTP request, ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What a queued item says, everything a target needs to build its request.
pub struct Message<'a> {
    pub what: What<'a>,
    /// The history entry as the API shows it (`id` null when the check
    /// made none, e.g. an `up_to_date` recovery after a failure).
    pub entry: Value,
    /// Where to read more: the entry, else the source's status.
    pub link: String,
}

pub enum What<'a> {
    Event(&'a Event),
    Start(&'a DeployStart),
    /// `POST /api/notifications/{target}/test`.
    Test,
}

/// The header carrying a webhook's signature.
pub const SIGNATURE_HEADER: &str = "X-Chump-Signature-256";

/// The request `kind` sends for `msg`; None: nothing to send (a commit
/// status for a check without a commit, a start for a webhook…).
pub fn request(kind: &TargetKind, msg: &Message<'_>) -> Result<Option<Request>, String> {
    match kind {
        TargetKind::Webhook { url, secret } => {
            let body = match &msg.what {
                What::Event(e) => webhook_body(e, msg),
                What::Start(_) => return Ok(None),
                What::Test => json!({
                    "event": "test",
                    "message": "a test notification from chump",
                    "sent_at": now(),
                }),
            };
            let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            if let Some(secret) = secret {
                headers.push((
                    SIGNATURE_HEADER,
                    format!(
                        "sha256={}",
                        chump_jobs::webhook::sign(secret.as_bytes(), &body)
                    ),
                ));
            }
            Ok(Some(Request {
                url: url.clone(),
                headers,
                body,
            }))
        }
        TargetKind::Slack { url } => {
            let text = match &msg.what {
                What::Event(e) => match slack_text(e, msg) {
                    Some(t) => t,
                    None => return Ok(None),
                },
                What::Start(_) => return Ok(None),
                What::Test => "chump: a test notification".to_string(),
            };
            Ok(Some(Request {
                url: url.clone(),
                headers: vec![("Content-Type", "application/json".to_string())],
                body: serde_json::to_vec(&json!({ "text": text })).map_err(|e| e.to_string())?,
            }))
        }
        TargetKind::CommitStatus {
            provider,
            api_url,
            token,
        } => {
            let (source, commit, state, description) = match &msg.what {
                What::Event(e) => {
                    let Some(commit) = e.report.commit.clone() else {
                        return Ok(None);
                    };
                    let Some((state, description)) = status_of(e) else {
                        return Ok(None);
                    };
                    (&e.source, commit, state, description)
                }
                What::Start(s) => {
                    let what = match s.rollback_to {
                        Some(to) => format!("rolling back to entry {to}"),
                        None => "deploying".to_string(),
                    };
                    (&s.source, s.commit.clone(), State::Pending, what)
                }
                What::Test => return Err(
                    "a commit status needs a commit: test events go to webhook and slack targets"
                        .to_string(),
                ),
            };
            if commit.is_empty() {
                return Ok(None);
            }
            let Some((_, repo)) = chump_jobs::webhook::repo_host_path(&source.spec.git_url) else {
                return Err(format!(
                    "source {}: no repository path in its git_url",
                    source.id
                ));
            };
            let context = format!(
                "chump/{}/{}",
                source.spec.namespace, source.spec.deployment_name
            );
            let description = truncate(&description, 140);
            let (url, headers, body) = match provider {
                Provider::Github | Provider::Gitea => {
                    let (owner, name) = owner_repo(&repo).ok_or_else(|| {
                        format!(
                            "source {}: its git_url names no owner/repository",
                            source.id
                        )
                    })?;
                    let auth = match provider {
                        Provider::Github => format!("Bearer {token}"),
                        _ => format!("token {token}"),
                    };
                    let mut headers = vec![
                        ("Content-Type", "application/json".to_string()),
                        ("Authorization", auth),
                    ];
                    if *provider == Provider::Github {
                        headers.push(("Accept", "application/vnd.github+json".to_string()));
                        headers.push(("X-GitHub-Api-Version", "2022-11-28".to_string()));
                    }
                    (
                        format!("{api_url}/repos/{owner}/{name}/statuses/{commit}"),
                        headers,
                        json!({
                            "state": state.github(),
                            "target_url": msg.link,
                            "description": description,
                            "context": context,
                        }),
                    )
                }
                Provider::Gitlab => (
                    format!(
                        "{api_url}/projects/{}/statuses/{commit}",
                        url::form_urlencoded::byte_serialize(repo.as_bytes()).collect::<String>()
                    ),
                    vec![
                        ("Content-Type", "application/json".to_string()),
                        ("PRIVATE-TOKEN", token.clone()),
                    ],
                    json!({
                        "state": state.gitlab(),
                        "target_url": msg.link,
                        "description": description,
                        "name": context,
                    }),
                ),
            };
            Ok(Some(Request {
                url,
                headers,
                body: serde_json::to_vec(&body).map_err(|e| e.to_string())?,
            }))
        }
    }
}

/// A commit status's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Success,
    Failure,
    /// The deploy was overtaken by a newer commit.
    Superseded,
}

impl State {
    fn github(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Superseded => "error",
        }
    }
    fn gitlab(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failed",
            State::Superseded => "canceled",
        }
    }
}

/// The state and description an event gives its commit.
fn status_of(e: &Event) -> Option<(State, String)> {
    let r = &e.report;
    let message = || {
        let stage = r.stage.map(|s| format!("{s}: ")).unwrap_or_default();
        format!("{stage}{}", r.message.as_deref().unwrap_or(""))
    };
    Some(match (e.kind, r.outcome) {
        (_, Outcome::Deployed) => (
            State::Success,
            match &r.desired_image {
                Some(image) => format!("deployed {image}"),
                None => "deployed".to_string(),
            },
        ),
        (_, Outcome::RolledBack) => (
            State::Success,
            r.message.clone().unwrap_or_else(|| "rolled back".into()),
        ),
        (_, Outcome::Failed) => (State::Failure, format!("failed at {}", message())),
        (_, Outcome::Degraded) => (
            State::Failure,
            format!("degraded: {}", r.message.as_deref().unwrap_or("")),
        ),
        (_, Outcome::Superseded) => (
            State::Superseded,
            "superseded by a newer commit during its rollout".to_string(),
        ),
        (_, Outcome::UpToDate) => (State::Success, "running and healthy".to_string()),
        (_, Outcome::Deleted) => return None,
    })
}

fn owner_repo(path: &str) -> Option<(&str, &str)> {
    let (owner, name) = path.rsplit_once('/')?;
    (!owner.is_empty() && !name.is_empty()).then_some((owner, name))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn now() -> String {
    chump_jobs::source::rfc3339(time::OffsetDateTime::now_utc())
}

/// The generic webhook's JSON.
fn webhook_body(e: &Event, msg: &Message<'_>) -> Value {
    json!({
        "event": e.kind.map(EventKind::as_str),
        "source": Value::Object(e.source.to_public_json()),
        "entry": msg.entry,
        "previous_outcome": e.previous.map(Outcome::as_str),
        "link": msg.link,
        "sent_at": now(),
    })
}

/// One readable line (Slack mrkdwn; Mattermost, Rocket.Chat and Teams'
/// Slack connectors read it too).
fn slack_text(e: &Event, msg: &Message<'_>) -> Option<String> {
    let kind = e.kind?;
    let r = &e.report;
    let s = &e.source.spec;
    let (icon, verb) = match kind {
        EventKind::Deployed => (":white_check_mark:", "deployed"),
        EventKind::Failed => (":x:", "failed"),
        EventKind::Degraded => (":warning:", "is degraded"),
        EventKind::RolledBack => (":leftwards_arrow_with_hook:", "rolled back"),
        EventKind::Recovered => (":large_green_circle:", "recovered"),
        EventKind::Superseded => (":fast_forward:", "superseded"),
    };
    let mut text = format!(
        "{icon} *{}/{}* {verb} (source {})",
        s.namespace, s.deployment_name, e.source.id
    );
    if let Some(commit) = &r.commit {
        text.push_str(&format!(" at `{}`", &commit[..commit.len().min(12)]));
    }
    if let Some(image) = &r.desired_image {
        text.push_str(&format!(", image `{image}`"));
    }
    if let Some(stage) = r.stage {
        text.push_str(&format!("\nstage {stage}"));
        if let Some(m) = &r.message {
            text.push_str(&format!(": {}", truncate(m, 500)));
        }
    } else if let Some(m) = &r.message {
        text.push_str(&format!("\n{}", truncate(m, 500)));
    }
    let label = match msg.entry["id"].as_i64() {
        Some(id) => format!("history entry {id}"),
        None => "status".to_string(),
    };
    text.push_str(&format!("\n<{}|{label}>", msg.link));
    Some(text)
}

/// A target's URL as `GET /api/notifications` shows it: webhook and Slack
/// URLs keep only scheme, host and port (their path and query may be the
/// secret: Slack's are); an API base keeps its path but no userinfo or
/// query.
pub fn masked_url(kind: &TargetKind) -> String {
    let (raw, keep_path) = match kind {
        TargetKind::Webhook { url, .. } | TargetKind::Slack { url } => (url.as_str(), false),
        TargetKind::CommitStatus { api_url, .. } => (api_url.as_str(), true),
    };
    let Ok(u) = url::Url::parse(raw) else {
        return MASK.to_string();
    };
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = u.path();
    if keep_path {
        out.push_str(path.trim_end_matches('/'));
        if u.query().is_some() {
            out.push_str("?***");
        }
    } else if path != "/" || u.query().is_some() {
        out.push_str("/***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_masked() {
        let slack = TargetKind::Slack {
            url: "https://hooks.slack.com/services/T0/B0/SECRET".into(),
        };
        assert_eq!(masked_url(&slack), "https://hooks.slack.com/***");
        let hook = TargetKind::Webhook {
            url: "http://user:pw@127.0.0.1:9000/".into(),
            secret: None,
        };
        assert_eq!(masked_url(&hook), "http://127.0.0.1:9000");
        let gl = TargetKind::CommitStatus {
            provider: Provider::Gitlab,
            api_url: "https://gitlab.example.com/api/v4".into(),
            token: "t".into(),
        };
        assert_eq!(masked_url(&gl), "https://gitlab.example.com/api/v4");
    }

    #[test]
    fn owner_and_repository() {
        assert_eq!(owner_repo("acme/app"), Some(("acme", "app")));
        assert_eq!(owner_repo("group/sub/app"), Some(("group/sub", "app")));
        assert_eq!(owner_repo("app"), None);
        for url in [
            "https://x:y@github.com/acme/app.git",
            "ssh://git@github.com:22/acme/app.git",
            "git@github.com:acme/app.git",
        ] {
            let (host, path) = chump_jobs::webhook::repo_host_path(url).unwrap();
            assert_eq!(
                (host.as_str(), path.as_str()),
                ("github.com", "acme/app"),
                "{url}"
            );
        }
    }
}
