//! Git sources: what a user registers, and the rules its fields follow.
//!
//! A source names a Deployment container (`namespace`, `deployment_name`,
//! `container_name`), a git repository and branch, the kustomize directory to
//! apply (`deploy_path`) and the file that declares the image
//! (`image_version_file`). These are the original tool's seven fields; chump
//! adds an optional per-source `interval_seconds`, a `suspended` switch,
//! a `prune` switch (default on), an `auto_rollback` switch (null: the
//! service's default, `CHUMP_AUTO_ROLLBACK`) and a `service_account`
//! (`namespace/name`, or a bare `name` in the source's namespace; null: the
//! service's `CHUMP_DEFAULT_SERVICE_ACCOUNT`, if any) that chump impersonates
//! for every request it makes to the cluster for the source.
//!
//! Validation happens here, once, for every way a source can arrive (create,
//! full replace, partial update), and reports every bad field at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::redact::redact_url;

/// A source's id: an integer from 1, assigned by the store, never reused.
pub type SourceId = i64;

/// The largest id chump hands out or accepts: ids must survive a round trip
/// through JSON numbers and RethinkDB (IEEE doubles).
pub const MAX_SOURCE_ID: SourceId = (1 << 53) - 1;

/// Shortest and longest per-source interval a user may set, in seconds.
pub const MIN_INTERVAL_SECONDS: u32 = 5;
pub const MAX_INTERVAL_SECONDS: u32 = 7 * 24 * 3600;

/// The fields a user sets on a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub namespace: String,
    pub deployment_name: String,
    pub git_url: String,
    pub branch: String,
    pub deploy_path: String,
    pub container_name: String,
    pub image_version_file: String,
    /// Overrides the service's check interval for this source.
    #[serde(default)]
    pub interval_seconds: Option<u32>,
    /// A suspended source is not checked by the schedule or webhooks.
    #[serde(default)]
    pub suspended: bool,
    /// Delete objects a new build no longer renders (objects chump applied
    /// for this source only). Default on.
    #[serde(default = "default_prune")]
    pub prune: bool,
    /// Roll back to the last successful deploy when a deploy fails at
    /// `apply` or `rollout` (None: the service's default).
    #[serde(default)]
    pub auto_rollback: Option<bool>,
    /// The ServiceAccount chump impersonates for this source's requests to
    /// the cluster, as the user gave it: `namespace/name`, or a bare `name`
    /// (the source's namespace, whatever it is at the time of a check).
    /// None: the service's default, else chump's own identity.
    #[serde(default)]
    pub service_account: Option<String>,
}

fn default_prune() -> bool {
    true
}

/// A stored source: its spec, the id the store gave it and the server-kept
/// fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: SourceId,
    pub spec: SourceSpec,
    /// Bumped by every update, so a check can tell that the source changed
    /// while it ran.
    pub revision: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Asked to be deleted with its objects (`DELETE ?prune=true`): the
    /// source stays, read-only, until a worker has pruned what chump
    /// applied for it; then the store deletes it.
    pub deleting: bool,
}

/// A source as the API shows it (see [`Source::public`]).
#[derive(Debug, Serialize)]
pub struct PublicSource<'a> {
    pub id: SourceId,
    pub namespace: &'a str,
    pub deployment_name: &'a str,
    pub git_url: String,
    pub branch: &'a str,
    pub deploy_path: &'a str,
    pub container_name: &'a str,
    pub image_version_file: &'a str,
    pub interval_seconds: Option<u32>,
    pub suspended: bool,
    pub prune: bool,
    pub auto_rollback: Option<bool>,
    pub service_account: Option<&'a str>,
    pub deleting: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl Source {
    /// The source as the API shows it: the seven fields, the id and the
    /// server-kept fields, with credentials in `git_url` masked.
    pub fn to_public_json(&self) -> Map<String, Value> {
        match serde_json::to_value(self.public()) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// [`Source::to_public_json`] as a value that serializes itself, for
    /// listings (no JSON tree built per source).
    pub fn public(&self) -> PublicSource<'_> {
        let s = &self.spec;
        PublicSource {
            id: self.id,
            namespace: &s.namespace,
            deployment_name: &s.deployment_name,
            git_url: redact_url(&s.git_url),
            branch: &s.branch,
            deploy_path: &s.deploy_path,
            container_name: &s.container_name,
            image_version_file: &s.image_version_file,
            interval_seconds: s.interval_seconds,
            suspended: s.suspended,
            prune: s.prune,
            auto_rollback: s.auto_rollback,
            service_account: s.service_account.as_deref(),
            deleting: self.deleting,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }

    /// The Kubernetes user chump impersonates for this source
    /// (`system:serviceaccount:<namespace>:<name>`): its own
    /// `service_account`, else `default` (the service's
    /// `CHUMP_DEFAULT_SERVICE_ACCOUNT`), a bare name resolved in the source's
    /// namespace. None: chump's own identity.
    pub fn impersonated_user(&self, default: Option<&str>) -> Option<String> {
        let sa = self.spec.service_account.as_deref().or(default)?;
        let (ns, name) = service_account_parts(sa, &self.spec.namespace);
        Some(service_account_user(ns, name))
    }

    /// `namespace/deployment_name` container `container_name`, for messages.
    pub fn target(&self) -> String {
        format!(
            "{}/{} container {}",
            self.spec.namespace, self.spec.deployment_name, self.spec.container_name
        )
    }
}

/// Formats a timestamp as RFC 3339 (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// What the service allows, beyond the fixed rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationRules {
    /// Accept `file://` URLs and local paths as `git_url`.
    pub allow_file_urls: bool,
    /// Every source must name a `service_account` (the service requires one,
    /// `CHUMP_REQUIRE_SERVICE_ACCOUNT`, and has no default for it).
    pub require_service_account: bool,
}

/// Every bad field of a request, field name → reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ValidationErrors(pub BTreeMap<String, String>);

impl ValidationErrors {
    fn add(&mut self, field: &str, reason: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_insert_with(|| reason.into());
    }
    /// True when no field was rejected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// One line naming every bad field, for the `msg` of an error response.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("[WARN] Invalid source: {}", parts.join("; "))
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

impl std::error::Error for ValidationErrors {}

/// The seven string fields every source has, in the original tool's order.
pub const REQUIRED_FIELDS: [&str; 7] = [
    "namespace",
    "deployment_name",
    "git_url",
    "branch",
    "deploy_path",
    "container_name",
    "image_version_file",
];

const OPTIONAL_FIELDS: [&str; 5] = [
    "interval_seconds",
    "suspended",
    "prune",
    "auto_rollback",
    "service_account",
];

/// How a request body relates to the stored source.
#[derive(Debug, Clone, Copy)]
pub enum Merge<'a> {
    /// Create or full replace (PUT): every required field must be present.
    Full,
    /// Partial update (PATCH): absent fields keep their value in `base`.
    Patch(&'a SourceSpec),
}

impl SourceSpec {
    /// Builds and validates a spec from a JSON request body.
    ///
    /// Rejects (all at once, field → reason): a body that is not an object,
    /// unknown fields, missing or empty required fields, wrong JSON types, and
    /// every field-specific rule below.
    pub fn from_json(
        body: &Value,
        merge: Merge<'_>,
        rules: ValidationRules,
    ) -> Result<SourceSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(obj) = body.as_object() else {
            errors.add("body", "must be a JSON object");
            return Err(errors);
        };
        for key in obj.keys() {
            if !REQUIRED_FIELDS.contains(&key.as_str()) && !OPTIONAL_FIELDS.contains(&key.as_str())
            {
                errors.add(key, "unknown field");
            }
        }

        let base = match merge {
            Merge::Full => None,
            Merge::Patch(base) => Some(base),
        };
        let mut strings: BTreeMap<&str, String> = BTreeMap::new();
        for field in REQUIRED_FIELDS {
            match obj.get(field) {
                None => match base {
                    Some(base) => {
                        strings.insert(field, base.field(field).to_string());
                    }
                    None => errors.add(field, "is required"),
                },
                Some(Value::String(s)) if s.trim().is_empty() => {
                    errors.add(field, "must not be empty")
                }
                Some(Value::String(s)) => {
                    strings.insert(field, s.clone());
                }
                Some(Value::Null) => errors.add(field, "is required"),
                Some(_) => errors.add(field, "must be a string"),
            }
        }

        let interval_seconds = match obj.get("interval_seconds") {
            None => base.and_then(|b| b.interval_seconds),
            Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n)
                    if (MIN_INTERVAL_SECONDS as u64..=MAX_INTERVAL_SECONDS as u64).contains(&n) =>
                {
                    Some(n as u32)
                }
                _ => {
                    errors.add(
                        "interval_seconds",
                        format!(
                            "must be an integer from {MIN_INTERVAL_SECONDS} to {MAX_INTERVAL_SECONDS}, or null"
                        ),
                    );
                    None
                }
            },
        };
        let suspended = match obj.get("suspended") {
            None => base.is_some_and(|b| b.suspended),
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.add("suspended", "must be true or false");
                false
            }
        };

        let prune = match obj.get("prune") {
            None => base.is_none_or(|b| b.prune),
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                errors.add("prune", "must be true or false");
                true
            }
        };

        let auto_rollback = match obj.get("auto_rollback") {
            None => base.and_then(|b| b.auto_rollback),
            Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.add(
                    "auto_rollback",
                    "must be true, false, or null (the service's default)",
                );
                None
            }
        };

        let service_account = match obj.get("service_account") {
            None => base.and_then(|b| b.service_account.clone()),
            Some(Value::Null) => None,
            Some(Value::String(s)) => match validate_service_account(s) {
                Ok(()) => Some(s.clone()),
                Err(reason) => {
                    errors.add("service_account", reason);
                    None
                }
            },
            Some(_) => {
                errors.add(
                    "service_account",
                    "must be a string (namespace/name, or a name in the source's namespace) or null",
                );
                None
            }
        };
        if rules.require_service_account
            && service_account.is_none()
            && !errors.0.contains_key("service_account")
        {
            errors.add(
                "service_account",
                "is required: this server deploys only as a service account (CHUMP_REQUIRE_SERVICE_ACCOUNT); give namespace/name or a name in the source's namespace",
            );
        }

        // Field rules, only for fields that arrived as non-empty strings.
        let check =
            |errors: &mut ValidationErrors, field: &str, f: &dyn Fn(&str) -> Result<(), String>| {
                if let Some(v) = strings.get(field) {
                    if let Err(reason) = f(v) {
                        errors.add(field, reason);
                    }
                }
            };
        check(&mut errors, "namespace", &validate_dns_label);
        check(&mut errors, "deployment_name", &validate_dns_subdomain);
        check(&mut errors, "container_name", &validate_dns_label);
        check(&mut errors, "git_url", &|v| validate_git_url(v, rules));
        check(&mut errors, "branch", &validate_branch);
        check(&mut errors, "deploy_path", &validate_repo_path);
        check(&mut errors, "image_version_file", &validate_repo_path);

        if !errors.is_empty() {
            return Err(errors);
        }
        let mut take = |f: &str| strings.remove(f).unwrap_or_default();
        Ok(SourceSpec {
            namespace: take("namespace"),
            deployment_name: take("deployment_name"),
            git_url: take("git_url"),
            branch: take("branch"),
            deploy_path: take("deploy_path"),
            container_name: take("container_name"),
            image_version_file: take("image_version_file"),
            interval_seconds,
            suspended,
            prune,
            auto_rollback,
            service_account,
        })
    }

    fn field(&self, name: &str) -> &str {
        match name {
            "namespace" => &self.namespace,
            "deployment_name" => &self.deployment_name,
            "git_url" => &self.git_url,
            "branch" => &self.branch,
            "deploy_path" => &self.deploy_path,
            "container_name" => &self.container_name,
            "image_version_file" => &self.image_version_file,
            _ => "",
        }
    }

    /// Validates a spec built in code (not from JSON), with the same rules.
    pub fn validate(&self, rules: ValidationRules) -> Result<(), ValidationErrors> {
        let body = serde_json::to_value(self).unwrap_or(Value::Null);
        Self::from_json(&body, Merge::Full, rules).map(|_| ())
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(|c| c.is_control())
}

/// A Kubernetes DNS-1123 label: lower-case alphanumerics and `-`, starting and
/// ending with an alphanumeric, at most 63 characters (namespaces, containers).
pub fn validate_dns_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err("must be at most 63 characters (a DNS-1123 label)".into());
    }
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

/// A Kubernetes DNS-1123 subdomain: dot-separated labels, at most 253
/// characters (Deployment names).
pub fn validate_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err("must be at most 253 characters (a DNS-1123 subdomain)".into());
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && label
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && label
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', each part starting and ending with a letter or digit".into());
        }
    }
    Ok(())
}

/// A ServiceAccount reference: `namespace/name`, or a bare `name` (in the
/// source's namespace). The namespace is a DNS-1123 label (as Kubernetes
/// requires of namespaces), the name a DNS-1123 subdomain (as it requires of
/// ServiceAccount names).
pub fn validate_service_account(s: &str) -> Result<(), String> {
    let (ns, name) = match s.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, s),
    };
    if let Some(ns) = ns {
        validate_dns_label(ns).map_err(|e| {
            format!("its namespace (before '/') {e}; give namespace/name or a name in the source's namespace")
        })?;
    }
    if name.contains('/') {
        return Err("must be namespace/name or a name, with at most one '/'".into());
    }
    validate_dns_subdomain(name).map_err(|e| format!("its name {e}"))
}

/// A validated ServiceAccount reference split into (namespace, name), a bare
/// name resolved in `namespace`.
pub fn service_account_parts<'a>(sa: &'a str, namespace: &'a str) -> (&'a str, &'a str) {
    match sa.split_once('/') {
        Some((ns, name)) => (ns, name),
        None => (namespace, sa),
    }
}

/// The user name Kubernetes gives a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The kinds of git URL chump takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitUrlKind {
    Https,
    Http,
    Ssh,
    Git,
    /// `user@host:path`
    ScpLike,
    /// `file://…` or a local path; only where the service allows it.
    File,
}

/// Classifies a git URL, or says why it is not one chump takes.
pub fn classify_git_url(s: &str) -> Result<GitUrlKind, String> {
    if s.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    if has_control(s) || s.chars().any(char::is_whitespace) {
        return Err("must not contain spaces or control characters".into());
    }
    if let Some((scheme, _)) = s.split_once("://") {
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "https" => GitUrlKind::Https,
            "http" => GitUrlKind::Http,
            "ssh" | "git+ssh" | "ssh+git" => GitUrlKind::Ssh,
            "git" => GitUrlKind::Git,
            "file" => GitUrlKind::File,
            other => {
                return Err(format!(
                    "scheme '{other}' is not supported: use https, http, ssh, git or user@host:path"
                ))
            }
        };
        let parsed = url::Url::parse(s).map_err(|e| format!("is not a valid URL: {e}"))?;
        if kind == GitUrlKind::File {
            if parsed.path().len() <= 1 {
                return Err("must name a repository path".into());
            }
            return Ok(kind);
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if parsed.path().trim_matches('/').is_empty() {
            return Err("must name a repository path on the host".into());
        }
        return Ok(kind);
    }
    if s.starts_with('/') || s.starts_with('.') {
        return Ok(GitUrlKind::File);
    }
    // scp-like: [user@]host:path, where the host part holds no '/'. The
    // user ends at the last '@' before the path; it cannot hold a password
    // (ssh takes none there), so a ':' or '@' in it is refused.
    let head = s.split('/').next().unwrap_or(s);
    let (user, rest) = match head.rfind('@') {
        Some(i) => (Some(&s[..i]), &s[i + 1..]),
        None => (None, s),
    };
    if user.is_some_and(|u| u.is_empty() || u.contains([':', '@'])) {
        return Err(
            "user@host:path addresses cannot carry a password; use https://user:token@host/path"
                .into(),
        );
    }
    if let Some((host, path)) = rest.split_once(':') {
        let host_ok = !host.is_empty()
            && !host.contains('/')
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']')
            });
        if host_ok && !path.trim_matches('/').is_empty() && !path.starts_with("//") {
            return Ok(GitUrlKind::ScpLike);
        }
    }
    Err("must be an https, http, ssh or git URL, or user@host:path".into())
}

/// A `git_url` chump takes under `rules`.
pub fn validate_git_url(s: &str, rules: ValidationRules) -> Result<(), String> {
    match classify_git_url(s)? {
        GitUrlKind::File if !rules.allow_file_urls => Err(
            "file URLs and local paths are not allowed (the server must be started with CHUMP_ALLOW_FILE_URLS=1)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// A valid git branch name (the rules of `git check-ref-format --branch`).
pub fn validate_branch(s: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("is not a valid git branch name: {why}"));
    if s.is_empty() {
        return bad("empty");
    }
    if s.len() > 255 {
        return bad("longer than 255 characters");
    }
    if s == "HEAD" || s == "@" {
        return bad("reserved name");
    }
    if s.starts_with('-') {
        return bad("starts with '-'");
    }
    if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        return bad("empty path component");
    }
    if s.ends_with('.') {
        return bad("ends with '.'");
    }
    if s.contains("..") {
        return bad("contains '..'");
    }
    if s.contains("@{") {
        return bad("contains '@{'");
    }
    if let Some(c) = s.chars().find(|c| {
        c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\' | '\u{7f}')
    }) {
        return bad(&format!("contains {c:?}"));
    }
    for part in s.split('/') {
        if part.starts_with('.') {
            return bad("a component starts with '.'");
        }
        if part.ends_with(".lock") {
            return bad("a component ends with '.lock'");
        }
    }
    Ok(())
}

/// A path inside the repository: relative, no NUL or control characters, and
/// no `..` that climbs out of the repository root.
pub fn validate_repo_path(s: &str) -> Result<(), String> {
    if s.len() > 1024 {
        return Err("must be at most 1024 characters".into());
    }
    if has_control(s) {
        return Err("must not contain NUL or control characters".into());
    }
    if s.starts_with('/') || s.starts_with('\\') || s.starts_with('~') {
        return Err("must be a path inside the repository, not an absolute path".into());
    }
    if s.contains('\\') {
        return Err("must use '/' as the separator".into());
    }
    let mut depth: i32 = 0;
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("must not leave the repository with '..'".into());
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Parses an id from a URL path segment: an integer from 1 to
/// [`MAX_SOURCE_ID`].
pub fn parse_source_id(raw: &str) -> Result<SourceId, String> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<i128>().ok().filter(|_| digits).ok_or(()) {
        Ok(n) if n >= 1 && n <= MAX_SOURCE_ID as i128 => Ok(n as SourceId),
        Ok(_) => Err(format!(
            "[WARN] Invalid source id '{raw}': must be an integer from 1 to {MAX_SOURCE_ID}"
        )),
        Err(()) => Err(format!(
            "[WARN] Invalid source id '{}': must be an integer",
            raw.chars().take(64).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed() -> Value {
        json!({"namespace": "production", "deployment_name": "helloworld",
               "git_url": "https://github.com/stvnorg/helloworld.git", "branch": "master",
               "deploy_path": "./deploy/helloworld/deployment.yaml", "container_name": "helloworld",
               "image_version_file": "./deploy/helloworld/deployment.yaml"})
    }

    #[test]
    fn seed_source_is_valid() {
        let spec = SourceSpec::from_json(&seed(), Merge::Full, ValidationRules::default()).unwrap();
        assert_eq!(spec.namespace, "production");
        assert_eq!(spec.interval_seconds, None);
        assert!(!spec.suspended);
    }

    #[test]
    fn reports_every_bad_field() {
        let body = json!({"namespace": "Bad_NS", "deployment_name": "", "git_url": 3,
                          "branch": "a..b", "deploy_path": "../x", "container_name": "c",
                          "extra": 1});
        let err =
            SourceSpec::from_json(&body, Merge::Full, ValidationRules::default()).unwrap_err();
        for f in [
            "namespace",
            "deployment_name",
            "git_url",
            "branch",
            "deploy_path",
            "image_version_file",
            "extra",
        ] {
            assert!(err.0.contains_key(f), "{f} missing from {err:?}");
        }
        assert!(!err.0.contains_key("container_name"));
    }

    #[test]
    fn patch_keeps_absent_fields() {
        let base = SourceSpec::from_json(&seed(), Merge::Full, ValidationRules::default()).unwrap();
        let spec = SourceSpec::from_json(
            &json!({"branch": "main", "suspended": true}),
            Merge::Patch(&base),
            ValidationRules::default(),
        )
        .unwrap();
        assert_eq!(spec.branch, "main");
        assert!(spec.suspended);
        assert_eq!(spec.git_url, base.git_url);
    }

    #[test]
    fn git_urls() {
        let r = ValidationRules::default();
        for ok in [
            "https://h/x.git",
            "http://h:8080/x",
            "ssh://git@h:22/x.git",
            "git://127.0.0.1:9418/x.git",
            "git@github.com:org/x.git",
            "h:org/x",
        ] {
            assert!(validate_git_url(ok, r).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://h/x",
            "https://",
            "https://h/",
            "file:///tmp/x",
            "/tmp/x",
            "not a url",
            "x",
            "https://h/x y",
        ] {
            assert!(validate_git_url(bad, r).is_err(), "{bad}");
        }
        assert!(validate_git_url("me:p@ss@example.com:org/a.git", r)
            .unwrap_err()
            .contains("password"));
        let allow = ValidationRules {
            allow_file_urls: true,
            ..ValidationRules::default()
        };
        assert!(validate_git_url("file:///tmp/x", allow).is_ok());
    }

    #[test]
    fn branches() {
        for ok in ["master", "feature/x", "release-1.2", "a.b"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "-x", "a..b", "a b", "a~1", "a^", "a:b", "x.lock", ".x", "a/.b", "x/", "/x", "a//b",
            "@", "a@{1}", "HEAD", "a\u{1}",
        ] {
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_paths() {
        for ok in ["./deploy/x.yaml", "deploy", ".", "a/../b", "a/b/../../c"] {
            assert!(validate_repo_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\0b",
            "a\nb",
            "~/x",
            "a\\b",
        ] {
            assert!(validate_repo_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids() {
        assert_eq!(parse_source_id("1"), Ok(1));
        for bad in [
            "0",
            "-1",
            "abc",
            "1.5",
            "9007199254740992",
            "99999999999999999999999999",
        ] {
            assert!(parse_source_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_accounts() {
        let r = ValidationRules::default();
        let with = |sa: Value| {
            let mut body = seed();
            body["service_account"] = sa;
            SourceSpec::from_json(&body, Merge::Full, r)
        };
        for ok in ["deployer", "team-a/deployer", "team-a/deploy.er"] {
            let spec = with(json!(ok)).unwrap();
            assert_eq!(spec.service_account.as_deref(), Some(ok), "stored as given");
        }
        for bad in [
            json!(""),
            json!("/x"),
            json!("a/"),
            json!("A/x"),
            json!("a/b/c"),
            json!("a b"),
            json!("a_b"),
            json!(3),
            json!(true),
        ] {
            let err = with(bad.clone()).unwrap_err();
            assert!(err.0.contains_key("service_account"), "{bad}: {err:?}");
        }
        assert_eq!(with(Value::Null).unwrap().service_account, None);

        // Resolution: a bare name is in the source's namespace; the source's
        // own account wins over the default.
        let source = |sa: Option<&str>| Source {
            id: 1,
            spec: SourceSpec {
                service_account: sa.map(str::to_string),
                ..with(Value::Null).unwrap()
            },
            revision: 1,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            deleting: false,
        };
        assert_eq!(
            source(Some("deployer"))
                .impersonated_user(Some("x/y"))
                .as_deref(),
            Some("system:serviceaccount:production:deployer")
        );
        assert_eq!(
            source(Some("a/b")).impersonated_user(None).as_deref(),
            Some("system:serviceaccount:a:b")
        );
        assert_eq!(
            source(None).impersonated_user(Some("chump")).as_deref(),
            Some("system:serviceaccount:production:chump")
        );
        assert_eq!(source(None).impersonated_user(None), None);

        // Required: refused without one, on create and on a patch clearing it.
        let required = ValidationRules {
            require_service_account: true,
            ..r
        };
        let err = SourceSpec::from_json(&seed(), Merge::Full, required).unwrap_err();
        assert!(err.0["service_account"].contains("required"), "{err:?}");
        let base = with(json!("deployer")).unwrap();
        assert!(
            SourceSpec::from_json(&json!({"branch": "x"}), Merge::Patch(&base), required).is_ok()
        );
        let err = SourceSpec::from_json(
            &json!({"service_account": null}),
            Merge::Patch(&base),
            required,
        )
        .unwrap_err();
        assert!(err.0.contains_key("service_account"), "{err:?}");
    }

    /// Found by the `source` fuzz target: `git check-ref-format --branch ''`
    /// fails, so the validator must refuse an empty name on its own (not only
    /// because `from_json` screens out empty strings first).
    #[test]
    fn empty_branch_is_rejected() {
        assert!(validate_branch("").is_err());
    }
}
