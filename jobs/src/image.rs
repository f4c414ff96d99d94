//! Container image references: parsing, display and comparison.
//!
//! A reference has the shape `[registry[:port]/]path[:tag][@digest]`, for
//! example `nginx`, `nginx:1.25`, `library/nginx`, `host:5000/app:1.2`,
//! `ghcr.io/org/app@sha256:<64 hex>` or `app:1.2@sha256:<64 hex>`.
//!
//! Two different notions of "the same image" are used in chump, on purpose:
//!
//! * **Name matching, as kustomize does it** ([`ImageRef::name`]): the name is
//!   the reference without tag and digest, *exactly as written*. kustomize
//!   matches `images[].name` against it literally, so `nginx` and
//!   `docker.io/library/nginx` are different names there. The manifest code
//!   uses this to apply `images:` entries, so it behaves like the build.
//! * **Desired vs running** ([`same_image`]): both sides are normalised the
//!   way the container runtime resolves them before comparing (see
//!   [`ImageRef::normalized`]): no registry means `docker.io`, a one-part path
//!   on Docker Hub gets `library/`, `index.docker.io` / `registry-1.docker.io`
//!   mean `docker.io`, registry host names compare case-insensitively, and a
//!   missing tag means `latest`. When both sides carry a digest, the digests
//!   decide (tags are ignored: the digest pins the content); when only one
//!   side has a digest they are different (chump cannot prove otherwise, and a
//!   deploy converges to the pinned form). Unparseable strings compare by
//!   exact (trimmed) text.

use std::fmt;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// The longest reference accepted (Docker's own limit on names is 255; tags
/// and digests come on top).
const MAX_REFERENCE_LEN: usize = 1024;
/// Longest tag accepted (Docker's limit).
const MAX_TAG_LEN: usize = 128;

/// A reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The reference is empty (or only whitespace).
    #[error("image reference is empty")]
    Empty,
    /// The reference is longer than chump accepts.
    #[error("image reference is too long ({len} bytes, at most {MAX_REFERENCE_LEN})")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The reference contains whitespace or control characters.
    #[error("image reference {0:?} contains whitespace or control characters")]
    BadCharacter(String),
    /// The repository path is malformed (empty component, bad character).
    #[error("image reference {reference:?} has an invalid repository name: {reason}")]
    BadName {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tag is malformed.
    #[error("image reference {reference:?} has an invalid tag {tag:?}")]
    BadTag {
        /// The reference as given.
        reference: String,
        /// The offending tag.
        tag: String,
    },
    /// The digest is malformed.
    #[error("image reference {reference:?} has an invalid digest {digest:?} (expected algorithm:hex, e.g. sha256 with 64 hex digits)")]
    BadDigest {
        /// The reference as given.
        reference: String,
        /// The offending digest.
        digest: String,
    },
}

/// A parsed container image reference.
///
/// Keeps the parts exactly as written; [`fmt::Display`] gives the original
/// (canonical, i.e. `registry/path:tag@digest`) string back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: Option<String>,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses `[registry[:port]/]path[:tag][@digest]`.
    ///
    /// The first path component is a registry when the reference has more
    /// than one component and that first one contains a `.` or a `:`, is
    /// `localhost`, or has upper-case letters (Docker's rule).
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let s = reference.trim();
        if s.is_empty() {
            return Err(ImageError::Empty);
        }
        if s.len() > MAX_REFERENCE_LEN {
            return Err(ImageError::TooLong { len: s.len() });
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ImageError::BadCharacter(s.to_string()));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                if !valid_digest(digest) {
                    return Err(ImageError::BadDigest {
                        reference: s.to_string(),
                        digest: digest.to_string(),
                    });
                }
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };

        // A tag is the part after the last ':' that follows the last '/'
        // (a ':' before a '/' is a registry port).
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                let tag = &rest[colon + 1..];
                if !valid_tag(tag) {
                    return Err(ImageError::BadTag {
                        reference: s.to_string(),
                        tag: tag.to_string(),
                    });
                }
                (&rest[..colon], Some(tag.to_string()))
            }
            _ => (rest, None),
        };

        let bad_name = |reason| ImageError::BadName {
            reference: s.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(bad_name("it is empty"));
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => {
                if !valid_registry(first) {
                    return Err(bad_name("the registry host is malformed"));
                }
                (Some(first.to_string()), path)
            }
            _ => (None, name),
        };
        if path.is_empty() {
            return Err(bad_name("the repository path is empty"));
        }
        for component in path.split('/') {
            if component.is_empty() {
                return Err(bad_name("it has an empty path component"));
            }
            if !component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(bad_name(
                    "path components may only hold letters, digits, '.', '_' and '-'",
                ));
            }
        }

        Ok(ImageRef {
            registry,
            path: path.to_string(),
            tag,
            digest,
        })
    }

    /// The registry host (with port) as written, e.g. `host:5000`, if any.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The repository path without the registry, e.g. `org/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository name without tag and digest, as written
    /// (`host:5000/app`, `nginx`). This is what kustomize matches
    /// `images[].name` against.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The tag, if one was written.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if one was written.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The reference as the runtime resolves it: registry `docker.io` when
    /// none is given (and for `index.docker.io` / `registry-1.docker.io`),
    /// `library/` before one-part Docker Hub paths, the registry host in lower
    /// case, and tag `latest` when there is neither tag nor digest.
    pub fn normalized(&self) -> ImageRef {
        let registry = match self.registry.as_deref().map(str::to_ascii_lowercase) {
            None => DOCKER_HUB.to_string(),
            Some(r) if r == "index.docker.io" || r == "registry-1.docker.io" => {
                DOCKER_HUB.to_string()
            }
            Some(r) => r,
        };
        let path = if registry == DOCKER_HUB && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        };
        let tag = match (&self.tag, &self.digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.clone(),
        };
        ImageRef {
            registry: Some(registry),
            path,
            tag,
            digest: self.digest.clone(),
        }
    }

    /// Returns this reference with kustomize's `images:` entry applied:
    /// `new_name` replaces the name; `new_tag` and/or `digest` replace
    /// *both* the old tag and digest (kustomize's rule: setting only a tag
    /// drops an old digest and vice versa).
    pub fn with_override(
        &self,
        new_name: Option<&str>,
        new_tag: Option<&str>,
        digest: Option<&str>,
    ) -> String {
        let name = match new_name {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => self.name(),
        };
        let new_tag = new_tag.filter(|t| !t.is_empty());
        let digest = digest.filter(|d| !d.is_empty());
        let (tag, digest) = match (new_tag, digest) {
            (None, None) => (self.tag.as_deref(), self.digest.as_deref()),
            (t, d) => (t, d),
        };
        join_reference(&name, tag, digest)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// `name[:tag][@digest]`.
pub(crate) fn join_reference(name: &str, tag: Option<&str>, digest: Option<&str>) -> String {
    let mut out = name.to_string();
    if let Some(tag) = tag {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
    out
}

/// Whether the desired image `a` and the running image `b` are the same
/// image, under the rules in the module documentation: normalised
/// registry/path, missing tag = `latest`, digests decide when both have one,
/// only one digest = different, unparseable = exact text. Symmetric.
pub fn same_image(a: &str, b: &str) -> bool {
    match (ImageRef::parse(a), ImageRef::parse(b)) {
        (Ok(a), Ok(b)) => {
            let (a, b) = (a.normalized(), b.normalized());
            if a.registry != b.registry || a.path != b.path {
                return false;
            }
            match (&a.digest, &b.digest) {
                (Some(da), Some(db)) => da.eq_ignore_ascii_case(db),
                (None, None) => a.tag == b.tag,
                _ => false,
            }
        }
        _ => a.trim() == b.trim(),
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn valid_registry(host: &str) -> bool {
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    // Host names, IPv4, or a bracketed IPv6 address.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return !inner.is_empty() && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn valid_tag(tag: &str) -> bool {
    // Docker: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; kustomize also lets `{}`
    // through for templating tools, so we do too.
    !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '{' | '}'))
}

fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '_' | '-')
        });
    if !algorithm_ok || encoded.is_empty() {
        return false;
    }
    match algorithm {
        "sha256" => encoded.len() == 64 && encoded.chars().all(|c| c.is_ascii_hexdigit()),
        "sha512" => encoded.len() == 128 && encoded.chars().all(|c| c.is_ascii_hexdigit()),
        _ => encoded
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '_' | '-')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const E: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn parts(s: &str) -> (Option<String>, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (
            r.registry().map(str::to_string),
            r.path().to_string(),
            r.tag().map(str::to_string),
            r.digest().map(str::to_string),
        )
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(parts("nginx"), (None, "nginx".into(), None, None));
        assert_eq!(parts("nginx:1.25"), (None, "nginx".into(), s("1.25"), None));
        assert_eq!(
            parts("library/nginx"),
            (None, "library/nginx".into(), None, None)
        );
        assert_eq!(
            parts("host:5000/app:1.2"),
            (s("host:5000"), "app".into(), s("1.2"), None)
        );
        assert_eq!(
            parts("host:5000/app"),
            (s("host:5000"), "app".into(), None, None)
        );
        assert_eq!(
            parts(&format!("ghcr.io/org/app@{D}")),
            (s("ghcr.io"), "org/app".into(), None, s(D))
        );
        assert_eq!(
            parts(&format!("app:1.2@{D}")),
            (None, "app".into(), s("1.2"), s(D))
        );
        assert_eq!(
            parts(&format!("localhost:5000/a/b/c:v1@{D}")),
            (s("localhost:5000"), "a/b/c".into(), s("v1"), s(D))
        );
        assert_eq!(
            parts("localhost/app"),
            (s("localhost"), "app".into(), None, None)
        );
        assert_eq!(
            parts("registry.example.com/team/app:2024.01.02-abc_1"),
            (
                s("registry.example.com"),
                "team/app".into(),
                s("2024.01.02-abc_1"),
                None
            )
        );
        assert_eq!(
            parts("10.0.0.1:443/app:1"),
            (s("10.0.0.1:443"), "app".into(), s("1"), None)
        );
        assert_eq!(
            parts("[::1]:5000/app"),
            (s("[::1]:5000"), "app".into(), None, None)
        );
        assert_eq!(
            parts("  nginx:1.25 \n"),
            (None, "nginx".into(), s("1.25"), None)
        );
    }

    #[test]
    fn name_is_without_tag_and_digest() {
        assert_eq!(
            ImageRef::parse("host:5000/app:1.2").unwrap().name(),
            "host:5000/app"
        );
        assert_eq!(
            ImageRef::parse(&format!("app:1@{D}")).unwrap().name(),
            "app"
        );
        assert_eq!(ImageRef::parse("nginx").unwrap().name(), "nginx");
    }

    #[test]
    fn display_round_trips() {
        for r in [
            "nginx".to_string(),
            "nginx:1.25".to_string(),
            "library/nginx".to_string(),
            "host:5000/app:1.2".to_string(),
            "host:5000/app".to_string(),
            format!("ghcr.io/org/app@{D}"),
            format!("app:1.2@{D}"),
        ] {
            assert_eq!(ImageRef::parse(&r).unwrap().to_string(), r);
            assert_eq!(r.parse::<ImageRef>().unwrap().to_string(), r);
        }
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "   ",
            "nginx:",
            "nginx:-bad",
            "ngi nx",
            "a//b",
            "/app",
            "app/",
            "app@sha256:abc",
            "app@nodigest",
            "host:99999999/app",
            "host:/app",
            ":tag",
            "app:1.2:3",
            "app:tag with space",
            "app\0x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let long = "a".repeat(2000);
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ImageError::TooLong { .. })
        ));
        let long_tag = format!("app:{}", "a".repeat(129));
        assert!(matches!(
            ImageRef::parse(&long_tag),
            Err(ImageError::BadTag { .. })
        ));
    }

    #[test]
    fn normalizes_docker_hub() {
        let n = ImageRef::parse("nginx").unwrap().normalized();
        assert_eq!(n.to_string(), "docker.io/library/nginx:latest");
        let n = ImageRef::parse("index.docker.io/org/app:1")
            .unwrap()
            .normalized();
        assert_eq!(n.to_string(), "docker.io/org/app:1");
        let n = ImageRef::parse("Host.Example:5000/app")
            .unwrap()
            .normalized();
        assert_eq!(n.to_string(), "host.example:5000/app:latest");
        let n = ImageRef::parse(&format!("app@{D}")).unwrap().normalized();
        assert_eq!(n.to_string(), format!("docker.io/library/app@{D}"));
    }

    #[test]
    fn same_image_rules() {
        assert!(same_image("nginx:1.25", "docker.io/library/nginx:1.25"));
        assert!(same_image("docker.io/library/nginx:1.25", "nginx:1.25"));
        assert!(same_image("nginx", "nginx:latest"));
        assert!(same_image("nginx", "docker.io/library/nginx:latest"));
        assert!(same_image("index.docker.io/library/nginx:1", "nginx:1"));
        assert!(same_image("org/app:1", "docker.io/org/app:1"));
        assert!(same_image("host:5000/app:1.2", "host:5000/app:1.2"));
        assert!(same_image("HOST:5000/app:1.2", "host:5000/app:1.2"));
        assert!(same_image(&format!("app:1.2@{D}"), &format!("app@{D}")));
        assert!(same_image(&format!("app:1.2@{D}"), &format!("app:9@{D}")));

        assert!(!same_image("nginx:1.25", "nginx:1.26"));
        assert!(!same_image("nginx", "nginx:1.25"));
        assert!(!same_image("host:5000/app:1.2", "host:5001/app:1.2"));
        assert!(!same_image("host:5000/app:1.2", "app:1.2"));
        assert!(!same_image("ghcr.io/org/app:1", "docker.io/org/app:1"));
        assert!(!same_image(&format!("app@{D}"), &format!("app@{E}")));
        assert!(!same_image(&format!("app:1@{D}"), "app:1"));
        assert!(!same_image("app:1", &format!("app:1@{D}")));
        // Unparseable: exact text.
        assert!(same_image("not an image", "not an image"));
        assert!(!same_image("not an image", "nginx"));
    }

    #[test]
    fn kustomize_overrides() {
        let r = ImageRef::parse(&format!("nginx:1.0@{D}")).unwrap();
        assert_eq!(r.with_override(None, Some("2.0"), None), "nginx:2.0");
        assert_eq!(r.with_override(None, None, Some(E)), format!("nginx@{E}"));
        assert_eq!(
            r.with_override(Some("ghcr.io/x/nginx"), Some("2"), Some(E)),
            format!("ghcr.io/x/nginx:2@{E}")
        );
        assert_eq!(
            r.with_override(Some("reg:5000/n"), None, None),
            format!("reg:5000/n:1.0@{D}")
        );
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(r.with_override(None, None, None), "nginx");
    }
}
