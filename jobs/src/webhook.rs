//! Push events from git hosts: parsing their payloads, checking their
//! signatures, and matching them to sources.
//!
//! GitHub, Gitea (GitHub-like payloads), GitLab and a generic format are
//! understood. A push names a repository (in several URL forms) and a ref;
//! a source matches when its `git_url` is the same repository — compared as
//! `host/path`, ignoring scheme, credentials, port, case and a trailing
//! `.git` — and its branch is the pushed branch.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use std::collections::HashMap;

use crate::source::{Source, SourceId};

/// The git hosts whose payloads chump understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Generic,
}

impl Provider {
    /// From the last path segment of `/api/webhooks/{provider}`.
    pub fn from_name(name: &str) -> Option<Provider> {
        match name {
            "github" => Some(Provider::GitHub),
            "gitlab" => Some(Provider::GitLab),
            "gitea" => Some(Provider::Gitea),
            "generic" => Some(Provider::Generic),
            _ => None,
        }
    }

    /// The header that names the event, if the provider sends one.
    pub fn event_header(self) -> Option<&'static str> {
        match self {
            Provider::GitHub => Some("x-github-event"),
            Provider::GitLab => Some("x-gitlab-event"),
            Provider::Gitea => Some("x-gitea-event"),
            Provider::Generic => None,
        }
    }

    /// Whether the event header's value is a push.
    pub fn is_push_event(self, event: Option<&str>) -> bool {
        match self {
            Provider::GitHub | Provider::Gitea => event == Some("push"),
            Provider::GitLab => event == Some("Push Hook"),
            Provider::Generic => event.is_none_or(|e| e == "push"),
        }
    }
}

/// A push: the repository in every URL form the payload gave, and the branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub repo_urls: Vec<String>,
    pub branch: String,
}

/// Why a payload is not a push chump can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    #[error("the payload has no repository URL")]
    NoRepository,
    #[error("the payload has no ref")]
    NoRef,
    #[error("ref '{0}' is not a branch")]
    NotABranch(String),
}

/// Parses a push payload of `provider`.
pub fn parse_push(provider: Provider, body: &[u8]) -> Result<Push, PayloadError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    let strings = |paths: &[&[&str]]| -> Vec<String> {
        paths
            .iter()
            .filter_map(|path| {
                let mut cur = &v;
                for key in *path {
                    cur = cur.get(key)?;
                }
                cur.as_str().filter(|s| !s.is_empty()).map(str::to_string)
            })
            .collect()
    };
    let repo_urls = match provider {
        Provider::GitHub | Provider::Gitea => strings(&[
            &["repository", "clone_url"],
            &["repository", "ssh_url"],
            &["repository", "git_url"],
            &["repository", "html_url"],
            &["repository", "url"],
        ]),
        Provider::GitLab => strings(&[
            &["project", "git_http_url"],
            &["project", "git_ssh_url"],
            &["project", "web_url"],
            &["repository", "git_http_url"],
            &["repository", "git_ssh_url"],
            &["repository", "url"],
            &["repository", "homepage"],
        ]),
        Provider::Generic => strings(&[&["repository"], &["git_url"], &["repository", "url"]]),
    };
    if repo_urls.is_empty() {
        return Err(PayloadError::NoRepository);
    }
    let branch = match strings(&[&["ref"]]).into_iter().next() {
        Some(r) => match r.strip_prefix("refs/heads/") {
            Some(b) if !b.is_empty() => b.to_string(),
            _ if provider == Provider::Generic && !r.starts_with("refs/") => r,
            _ => return Err(PayloadError::NotABranch(r)),
        },
        None => strings(&[&["branch"]])
            .into_iter()
            .next()
            .ok_or(PayloadError::NoRef)?,
    };
    Ok(Push { repo_urls, branch })
}

/// A repository URL reduced to `host/path` for comparison: no scheme,
/// credentials or port, lower case, no trailing `/` or `.git`. scp-like
/// `git@host:org/repo.git` gives `host/org/repo`.
pub fn normalize_repo_url(url: &str) -> Option<String> {
    let (host, path) = repo_host_path(url)?;
    Some(format!(
        "{}/{}",
        host.to_ascii_lowercase(),
        path.to_ascii_lowercase()
    ))
}

/// A repository URL's host and path, as written: no scheme, credentials,
/// port, query, leading or trailing `/` or `.git` (`https://u:t@host:8443/org/repo.git`
/// and scp-like `git@host:org/repo.git` give `("host", "org/repo")`). None
/// when either is empty.
pub fn repo_host_path(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    let (host, path) = if let Some((_, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if host.starts_with('[') {
            host.split_once(']')
                .map_or(host, |(h, _)| h)
                .trim_start_matches('[')
        } else {
            host.split_once(':').map_or(host, |(h, _)| h)
        };
        (host, path)
    } else {
        let (authority, path) = url.split_once(':')?;
        if authority.contains('/') {
            return None;
        }
        (
            authority.rsplit_once('@').map_or(authority, |(_, h)| h),
            path,
        )
    };
    let path = path
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some((host.to_string(), path.to_string()))
}

/// Whether `source` follows the repository and branch of `push`.
pub fn matches(source: &Source, push: &Push) -> bool {
    if source.spec.branch != push.branch {
        return false;
    }
    let Some(ours) = normalize_repo_url(&source.spec.git_url) else {
        return false;
    };
    push.repo_urls
        .iter()
        .filter_map(|u| normalize_repo_url(u))
        .any(|theirs| theirs == ours)
}

/// The sources a push can concern, by normalized repository URL and
/// branch: what [`matches`] finds by reading every source, found by one
/// lookup. Built from the whole source list; valid until a source changes
/// (see [`crate::store::Store::sources_version`]). Suspended sources and
/// sources being deleted are left out, as a push checks neither.
#[derive(Debug, Default)]
pub struct PushIndex {
    by_repo: HashMap<(String, String), Vec<SourceId>>,
}

impl PushIndex {
    pub fn new(sources: &[Source]) -> PushIndex {
        let mut by_repo: HashMap<(String, String), Vec<SourceId>> = HashMap::new();
        for source in sources {
            if source.spec.suspended || source.deleting {
                continue;
            }
            if let Some(repo) = normalize_repo_url(&source.spec.git_url) {
                by_repo
                    .entry((repo, source.spec.branch.clone()))
                    .or_default()
                    .push(source.id);
            }
        }
        PushIndex { by_repo }
    }

    /// The ids of the sources [`matches`] would find for `push`, ascending.
    pub fn sources_for(&self, push: &Push) -> Vec<SourceId> {
        let mut ids: Vec<SourceId> = push
            .repo_urls
            .iter()
            .filter_map(|u| normalize_repo_url(u))
            .filter_map(|repo| self.by_repo.get(&(repo, push.branch.clone())))
            .flatten()
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// How a provider proves a payload came from the configured secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    Valid,
    Missing,
    Invalid,
}

/// Checks a payload's signature header against `secret`:
/// GitHub `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`, Gitea
/// `X-Gitea-Signature: <hex HMAC-SHA256>`, GitLab `X-Gitlab-Token: <secret>`,
/// generic `X-Chump-Signature-256: sha256=<hex HMAC-SHA256>`.
/// `header` looks a header up by lower-case name.
pub fn verify_signature(
    provider: Provider,
    secret: &[u8],
    body: &[u8],
    header: impl Fn(&str) -> Option<String>,
) -> SignatureCheck {
    let hmac_hex = |value: Option<String>, prefix: &str| -> SignatureCheck {
        let Some(value) = value else {
            return SignatureCheck::Missing;
        };
        let Some(hex_sig) = value.trim().strip_prefix(prefix) else {
            return SignatureCheck::Invalid;
        };
        let Ok(sig) = hex::decode(hex_sig) else {
            return SignatureCheck::Invalid;
        };
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
            return SignatureCheck::Invalid;
        };
        mac.update(body);
        if mac.verify_slice(&sig).is_ok() {
            SignatureCheck::Valid
        } else {
            SignatureCheck::Invalid
        }
    };
    match provider {
        Provider::GitHub => hmac_hex(header("x-hub-signature-256"), "sha256="),
        Provider::Gitea => hmac_hex(header("x-gitea-signature"), ""),
        Provider::Generic => hmac_hex(header("x-chump-signature-256"), "sha256="),
        Provider::GitLab => match header("x-gitlab-token") {
            None => SignatureCheck::Missing,
            Some(token) if bool::from(token.as_bytes().ct_eq(secret)) => SignatureCheck::Valid,
            Some(_) => SignatureCheck::Invalid,
        },
    }
}

/// HMAC-SHA256 of `body` with `secret`, hex: what a sender puts in its
/// signature header.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms_of_one_repository_match() {
        let forms = [
            "https://github.com/Org/Repo.git",
            "https://user:token@github.com/org/repo",
            "http://github.com:80/org/repo/",
            "ssh://git@github.com:22/org/repo.git",
            "git@github.com:org/repo.git",
            "git://github.com/org/repo.git",
        ];
        for f in forms {
            assert_eq!(
                normalize_repo_url(f).as_deref(),
                Some("github.com/org/repo"),
                "{f}"
            );
        }
        assert_ne!(
            normalize_repo_url("https://github.com/org/repo2"),
            normalize_repo_url(forms[0])
        );
        assert_eq!(normalize_repo_url("https://github.com/"), None);
        assert_eq!(normalize_repo_url("nonsense"), None);
    }

    #[test]
    fn the_push_index_finds_what_matching_every_source_finds() {
        use crate::source::SourceSpec;
        let urls = [
            "https://github.com/org/app.git",
            "git@github.com:Org/App.git",
            "https://gitlab.example/team/app",
            "https://github.com/org/other",
            "nonsense",
        ];
        let mut sources = Vec::new();
        for (i, url) in urls.iter().cycle().take(40).enumerate() {
            let i = i as i64;
            sources.push(Source {
                id: 100 - i,
                spec: SourceSpec {
                    namespace: "ns".into(),
                    deployment_name: format!("d{i}"),
                    git_url: url.to_string(),
                    branch: if i % 3 == 0 { "main" } else { "dev" }.into(),
                    deploy_path: "./deploy".into(),
                    container_name: "app".into(),
                    image_version_file: "./deploy/d.yaml".into(),
                    interval_seconds: None,
                    suspended: i % 7 == 0,
                    prune: true,
                    auto_rollback: None,
                    service_account: None,
                },
                revision: 1,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                updated_at: time::OffsetDateTime::UNIX_EPOCH,
                deleting: i % 11 == 0,
            });
        }
        let index = PushIndex::new(&sources);
        let pushes = [
            (vec!["https://github.com/org/app"], "main"),
            (
                vec!["https://github.com/org/app", "git@github.com:org/app.git"],
                "dev",
            ),
            (vec!["https://gitlab.example/team/app.git"], "main"),
            (vec!["https://github.com/org/other"], "release"),
            (vec!["https://nowhere.example/x/y"], "main"),
            (vec![], "main"),
        ];
        for (repo_urls, branch) in pushes {
            let push = Push {
                repo_urls: repo_urls.iter().map(|u| u.to_string()).collect(),
                branch: branch.into(),
            };
            let mut expected: Vec<SourceId> = sources
                .iter()
                .filter(|s| !s.spec.suspended && !s.deleting && matches(s, &push))
                .map(|s| s.id)
                .collect();
            expected.sort_unstable();
            assert_eq!(index.sources_for(&push), expected, "{push:?}");
        }
        assert!(!index
            .sources_for(&Push {
                repo_urls: vec!["https://github.com/org/app".into()],
                branch: "main".into(),
            })
            .is_empty());
    }

    #[test]
    fn github_push() {
        let body = br#"{"ref":"refs/heads/main","repository":{"clone_url":"https://h/o/r.git","ssh_url":"git@h:o/r.git"}}"#;
        let push = parse_push(Provider::GitHub, body).unwrap();
        assert_eq!(push.branch, "main");
        assert_eq!(push.repo_urls.len(), 2);
        let tag = br#"{"ref":"refs/tags/v1","repository":{"clone_url":"https://h/o/r.git"}}"#;
        assert_eq!(
            parse_push(Provider::GitHub, tag),
            Err(PayloadError::NotABranch("refs/tags/v1".into()))
        );
        assert!(matches!(
            parse_push(Provider::GitHub, b"{"),
            Err(PayloadError::NotJson(_))
        ));
        assert_eq!(
            parse_push(Provider::GitHub, br#"{"ref":"refs/heads/x"}"#),
            Err(PayloadError::NoRepository)
        );
    }

    #[test]
    fn gitlab_and_generic_pushes() {
        let body = br#"{"object_kind":"push","ref":"refs/heads/dev","project":{"git_http_url":"https://gl/o/r.git"}}"#;
        assert_eq!(parse_push(Provider::GitLab, body).unwrap().branch, "dev");
        let body = br#"{"repository":"https://h/o/r.git","branch":"main"}"#;
        assert_eq!(parse_push(Provider::Generic, body).unwrap().branch, "main");
    }

    #[test]
    fn signatures() {
        let secret = b"s3cret";
        let body = b"{\"a\":1}";
        let sig = sign(secret, body);
        let gh = |v: Option<String>| {
            move |h: &str| (h == "x-hub-signature-256").then(|| v.clone()).flatten()
        };
        assert_eq!(
            verify_signature(
                Provider::GitHub,
                secret,
                body,
                gh(Some(format!("sha256={sig}")))
            ),
            SignatureCheck::Valid
        );
        assert_eq!(
            verify_signature(
                Provider::GitHub,
                secret,
                b"{}",
                gh(Some(format!("sha256={sig}")))
            ),
            SignatureCheck::Invalid
        );
        assert_eq!(
            verify_signature(Provider::GitHub, secret, body, gh(Some(sig.clone()))),
            SignatureCheck::Invalid
        );
        assert_eq!(
            verify_signature(Provider::GitHub, secret, body, gh(None)),
            SignatureCheck::Missing
        );
        let gitea = |h: &str| (h == "x-gitea-signature").then(|| sig.clone());
        assert_eq!(
            verify_signature(Provider::Gitea, secret, body, gitea),
            SignatureCheck::Valid
        );
        let gl = |h: &str| (h == "x-gitlab-token").then(|| "s3cret".to_string());
        assert_eq!(
            verify_signature(Provider::GitLab, secret, body, gl),
            SignatureCheck::Valid
        );
        let gl_bad = |h: &str| (h == "x-gitlab-token").then(|| "nope".to_string());
        assert_eq!(
            verify_signature(Provider::GitLab, secret, body, gl_bad),
            SignatureCheck::Invalid
        );
    }
}
