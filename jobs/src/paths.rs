//! Paths from users and repositories, kept inside the checkout.
//!
//! [`resolve_inside`] is the one guard every path from a source
//! (`deploy_path`, `image_version_file`) or from a repository (a
//! kustomization's `resources:`) goes through: no absolute paths, no NUL, no
//! `..` above the root, and after resolving symlinks the real path must still
//! be inside the checkout.

use std::path::{Component, Path, PathBuf};

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// A path from a source or a repository that may not be used.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path contains a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// The path is absolute; paths are relative to the checkout.
    #[error("path {0:?} is absolute; it must be relative to the repository root")]
    Absolute(String),
    /// `..` climbs above the checkout.
    #[error("path {0:?} leaves the repository ('..' above its root)")]
    Escapes(String),
    /// After resolving symlinks the path is outside the checkout.
    #[error("path {0:?} resolves (through a symlink) to a place outside the repository")]
    OutsideRoot(String),
    /// Nothing exists at the path.
    #[error("path {0:?} does not exist in the repository")]
    NotFound(String),
    /// The checkout root itself cannot be resolved.
    #[error("repository checkout {root} cannot be resolved: {source}")]
    Root {
        /// The checkout directory.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O error while resolving.
    #[error("path {path:?} cannot be resolved: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Resolves `rel` (a path from a user or a repository) inside `root` and
/// returns the canonical path (symlinks resolved).
///
/// Refused: NUL bytes, absolute paths, `..` that climbs above `root`
/// (checked lexically first), and any path whose canonical form is not
/// inside the canonical `root` (a symlink leading outside). The path must
/// exist. An empty path or `.` is the root itself.
pub fn resolve_inside(root: &Path, rel: &str) -> Result<PathBuf, PathError> {
    if rel.contains('\0') {
        return Err(PathError::Nul(rel.to_string()));
    }
    let rel_path = Path::new(rel);
    if rel_path.is_absolute() || rel.starts_with('/') {
        return Err(PathError::Absolute(rel.to_string()));
    }
    let mut normalized = PathBuf::new();
    for component in rel_path.components() {
        match component {
            Component::Normal(part) => normalized.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !normalized.pop() {
                    return Err(PathError::Escapes(rel.to_string()));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Absolute(rel.to_string()))
            }
        }
    }
    let root = root.canonicalize().map_err(|source| PathError::Root {
        root: root.to_path_buf(),
        source,
    })?;
    let candidate = root.join(&normalized);
    let resolved = match candidate.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling symlink also lands here; say "outside" when it
            // points outside, so the message is right.
            if let Ok(target) = std::fs::read_link(&candidate) {
                let target = candidate.parent().unwrap_or(&root).join(target);
                if !lexically_inside(&root, &target) {
                    return Err(PathError::OutsideRoot(rel.to_string()));
                }
            }
            return Err(PathError::NotFound(rel.to_string()));
        }
        Err(source) => {
            return Err(PathError::Io {
                path: rel.to_string(),
                source,
            })
        }
    };
    if !resolved.starts_with(&root) {
        return Err(PathError::OutsideRoot(rel.to_string()));
    }
    Ok(resolved)
}

pub(crate) fn lexically_inside(root: &Path, path: &Path) -> bool {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.starts_with(root)
}

/// `path` relative to `root` for messages (both canonical).
pub(crate) fn display_rel(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}
