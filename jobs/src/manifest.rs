//! The desired image: read from a source's `image_version_file`, safely.
//!
//! Everything read here comes from a user's repository and is untrusted:
//! paths go through [`crate::paths::resolve_inside`] and YAML through the
//! bounded reader [`crate::yaml::parse_documents`] (both re-exported here).
//!
//! # Finding the image
//!
//! The file is either
//!
//! * a **workload manifest** (multi-document YAML): Deployment, StatefulSet,
//!   DaemonSet, ReplicaSet, ReplicationController, Job (`spec.template.spec`),
//!   CronJob (`spec.jobTemplate.spec.template.spec`), Pod (`spec`),
//!   PodTemplate (`template.spec`), `kind: List` items, and any other kind
//!   with a `spec.template.spec` (e.g. Argo Rollouts). The container named
//!   `container_name` is looked for in `containers`, then `initContainers`.
//!   **When several documents have such a container, the first one whose kind
//!   is `Deployment` wins; if none is a Deployment, the first in file order.**
//! * a **kustomization** (file named `kustomization.yaml`,
//!   `kustomization.yml` or `Kustomization`; or `kind: Kustomization`; or an
//!   `apiVersion` of `kustomize.config.k8s.io/…`; or, without a `kind`, both
//!   an `images:` and a `resources:` list). Its `resources:` (and the
//!   deprecated `bases:`, and `components:`) are followed — local files and
//!   directories holding a kustomization, inside the checkout only, at most
//!   [`MAX_KUSTOMIZATION_DEPTH`] levels deep — to find the container's
//!   original image with the same preference rule; then the `images:` entries
//!   of each kustomization on the way are applied, innermost first, as
//!   kustomize does: an entry applies when its `name` equals the image name
//!   exactly as written (no registry normalisation, see [`crate::image`]);
//!   `newName` replaces the name, `newTag` and/or `digest` replace the tag and
//!   digest. Remote resources are skipped (they cannot be read here).
//!   **Fallback:** when the container is not found in the resources but the
//!   kustomization's `images:` has exactly one entry, that entry gives the
//!   image (`newName` or else `name`, plus `newTag`/`digest`).
//!   Patches that change images are not evaluated.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de;
use serde::Deserialize;
use serde_json::Value;

use crate::image::{join_reference, ImageError, ImageRef};

/// Largest `image_version_file` (or kustomization / resource file) read.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most YAML documents in one file.
pub const MAX_DOCUMENTS: usize = 1000;
/// Deepest nesting of sequences and mappings in a document.
pub const MAX_DEPTH: usize = 64;
/// How many kustomization levels `resources:` are followed.
pub const MAX_KUSTOMIZATION_DEPTH: usize = 16;
/// Most files read while following one kustomization's resources.
pub const MAX_FILES_FOLLOWED: usize = 256;

/// File names kustomize recognises as a kustomization, in its order.
pub const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

use crate::paths::display_rel;
pub use crate::paths::{resolve_inside, PathError};
pub use crate::yaml::{parse_documents, YamlError, YamlLimits};

// ---------------------------------------------------------------------------
// Desired image
// ---------------------------------------------------------------------------

/// Why the desired image could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The path is unsafe or missing.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The path names something other than a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path, relative to the checkout.
        path: String,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is too large ({size} bytes, at most {limit})")]
    TooBig {
        /// The path, relative to the checkout.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path, relative to the checkout.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The path, relative to the checkout.
        path: String,
    },
    /// The file is not (acceptable) YAML.
    #[error("{path}: {source}")]
    Yaml {
        /// The path, relative to the checkout.
        path: String,
        /// The parse error or exceeded limit.
        source: YamlError,
    },
    /// A kustomization file has the wrong shape.
    #[error("{path} is not a valid kustomization: {reason}")]
    BadKustomization {
        /// The path, relative to the checkout.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No container with that name in a workload manifest.
    #[error("no container named '{container}' in {path} (found: {})", list_or_none(.found))]
    NoContainer {
        /// The container name looked for.
        container: String,
        /// The file, relative to the checkout.
        path: String,
        /// The container names that are there.
        found: Vec<String>,
    },
    /// No container with that name in a kustomization's resources, and its
    /// `images:` list cannot stand in (it has not exactly one entry).
    #[error("no container named '{container}' in the resources of {path} (found: {}), and its images: list has {images} entries (the fallback needs exactly one)", list_or_none(.found))]
    NoContainerInKustomization {
        /// The container name looked for.
        container: String,
        /// The kustomization file, relative to the checkout.
        path: String,
        /// The container names found in its resources.
        found: Vec<String>,
        /// How many `images:` entries it has.
        images: usize,
    },
    /// The container has no usable `image`.
    #[error("container '{container}' in {path} has no image")]
    NoImage {
        /// The container name.
        container: String,
        /// The file, relative to the checkout.
        path: String,
    },
    /// The image reference does not parse.
    #[error("container '{container}' in {path} has an invalid image: {source}")]
    BadImage {
        /// The container name.
        container: String,
        /// The file, relative to the checkout.
        path: String,
        /// Why.
        source: ImageError,
    },
    /// Following `resources:` went too deep or read too many files.
    #[error("{path}: kustomization resources nest too deep or are too many (at most {MAX_KUSTOMIZATION_DEPTH} levels and {MAX_FILES_FOLLOWED} files)")]
    TooManyResources {
        /// The kustomization where it stopped.
        path: String,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The image of the container named `container_name` in `yaml`, the content
/// of an `image_version_file` (see the module documentation for the rules).
///
/// A kustomization given here cannot follow its `resources:` (there is no
/// checkout), so only the single-entry `images:` fallback applies; use
/// [`desired_image_from_file`] for the full rule.
pub fn desired_image(yaml: &str, container_name: &str) -> Result<String, ManifestError> {
    const LABEL: &str = "image_version_file";
    let docs =
        parse_documents(yaml, &YamlLimits::default()).map_err(|source| ManifestError::Yaml {
            path: LABEL.to_string(),
            source,
        })?;
    if looks_like_kustomization(&docs) {
        let k = parse_kustomization(yaml, LABEL)?;
        return choose_or_fallback(Vec::new(), Vec::new(), &k, LABEL, container_name);
    }
    workload_image(&docs, container_name, LABEL)
}

/// What a kustomize build says about Deployment `deployment`'s container
/// `container`: `None` when the build has no Deployment of that name;
/// `Some(Err(..))` when it has one without that container (or without an
/// image for it); `Some(Ok(image))` otherwise.
pub fn image_in_build(
    objects: &[Value],
    deployment: &str,
    container: &str,
) -> Option<Result<String, String>> {
    let d = objects.iter().find(|o| {
        o["kind"] == "Deployment"
            && o["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("apps/"))
            && o["metadata"]["name"] == deployment
    })?;
    let found = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container));
    Some(match found.map(|c| c["image"].as_str()) {
        Some(Some(image)) => Ok(image.to_string()),
        Some(None) => Err(format!(
            "the build's Deployment {deployment}: container '{container}' has no image"
        )),
        None => Err(format!(
            "the build's Deployment {deployment} has no container named '{container}'"
        )),
    })
}

/// Reads `rel_path` inside `checkout_dir` safely (see [`resolve_inside`];
/// at most [`MAX_FILE_BYTES`]), then finds the desired image as
/// [`desired_image`] does, following a kustomization's `resources:` inside
/// the checkout. A directory holding a kustomization file stands for that
/// file.
pub fn desired_image_from_file(
    checkout_dir: &Path,
    rel_path: &str,
    container_name: &str,
) -> Result<String, ManifestError> {
    let root = checkout_dir
        .canonicalize()
        .map_err(|source| PathError::Root {
            root: checkout_dir.to_path_buf(),
            source,
        })?;
    let mut path = resolve_inside(&root, rel_path)?;
    if path.is_dir() {
        // A directory holding a kustomization stands for that file.
        let dir_rel = display_rel(&root, &path);
        if let Some(name) = KUSTOMIZATION_FILE_NAMES
            .iter()
            .find(|n| path.join(n).is_file())
        {
            path = resolve_inside(&root, &format!("{dir_rel}/{name}"))?;
        }
    }
    let label = display_rel(&root, &path);
    let text = read_bounded(&path, &label)?;
    let docs =
        parse_documents(&text, &YamlLimits::default()).map_err(|source| ManifestError::Yaml {
            path: label.clone(),
            source,
        })?;
    let named_like_kustomization = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| KUSTOMIZATION_FILE_NAMES.contains(&n));
    if named_like_kustomization || looks_like_kustomization(&docs) {
        let k = parse_kustomization(&text, &label)?;
        let mut walk = Walk {
            root: &root,
            container: container_name,
            files_read: 1,
            visited: HashSet::from([path.clone()]),
            found: Vec::new(),
        };
        let dir = path.parent().unwrap_or(&root).to_path_buf();
        let candidates = walk.kustomization(&dir, &k, &label, 0)?;
        let mut found = std::mem::take(&mut walk.found);
        dedup_keep_order(&mut found);
        return choose_or_fallback(candidates, found, &k, &label, container_name);
    }
    workload_image(&docs, container_name, &label)
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`] as UTF-8 (`label`
/// names it in errors). The path should come from [`resolve_inside`].
pub(crate) fn read_bounded(path: &Path, label: &str) -> Result<String, ManifestError> {
    let meta = std::fs::metadata(path).map_err(|source| ManifestError::Read {
        path: label.to_string(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ManifestError::NotAFile {
            path: label.to_string(),
        });
    }
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(ManifestError::TooBig {
            path: label.to_string(),
            size: meta.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let file = std::fs::File::open(path).map_err(|source| ManifestError::Read {
        path: label.to_string(),
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ManifestError::Read {
            path: label.to_string(),
            source,
        })?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ManifestError::TooBig {
            path: label.to_string(),
            size: bytes.len() as u64,
            limit: MAX_FILE_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| ManifestError::NotText {
        path: label.to_string(),
    })
}

/// A container found in a workload document.
#[derive(Debug, Clone)]
struct Candidate {
    kind: String,
    image: String,
}

/// The image of the preferred candidate: first Deployment, else first.
fn choose(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates
        .iter()
        .find(|c| c.kind == "Deployment")
        .or_else(|| candidates.first())
}

fn workload_image(docs: &[Value], container: &str, label: &str) -> Result<String, ManifestError> {
    let mut found = Vec::new();
    let candidates = containers_in(docs, container, label, &mut found)?;
    match choose(&candidates) {
        Some(c) => Ok(c.image.clone()),
        None => {
            dedup_keep_order(&mut found);
            Err(ManifestError::NoContainer {
                container: container.to_string(),
                path: label.to_string(),
                found,
            })
        }
    }
}

/// Every container named `container` in `docs` (in order), recording all
/// container names seen in `found`.
fn containers_in(
    docs: &[Value],
    container: &str,
    label: &str,
    found: &mut Vec<String>,
) -> Result<Vec<Candidate>, ManifestError> {
    let mut out = Vec::new();
    let mut workloads: Vec<&Value> = Vec::new();
    for doc in docs {
        if kind_of(doc) == "List" {
            if let Some(items) = doc.get("items").and_then(Value::as_array) {
                workloads.extend(items.iter());
            }
        } else {
            workloads.push(doc);
        }
    }
    for doc in workloads {
        let Some(spec) = pod_spec(doc) else { continue };
        for field in ["containers", "initContainers"] {
            let Some(list) = spec.get(field).and_then(Value::as_array) else {
                continue;
            };
            for c in list {
                let Some(name) = c.get("name").and_then(Value::as_str) else {
                    continue;
                };
                found.push(name.to_string());
                if name != container {
                    continue;
                }
                let image = match c.get("image").and_then(Value::as_str).map(str::trim) {
                    Some(image) if !image.is_empty() => image,
                    _ => {
                        return Err(ManifestError::NoImage {
                            container: container.to_string(),
                            path: label.to_string(),
                        })
                    }
                };
                ImageRef::parse(image).map_err(|source| ManifestError::BadImage {
                    container: container.to_string(),
                    path: label.to_string(),
                    source,
                })?;
                out.push(Candidate {
                    kind: kind_of(doc).to_string(),
                    image: image.to_string(),
                });
            }
        }
    }
    Ok(out)
}

fn kind_of(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// Where a workload keeps its pod spec.
fn pod_spec(doc: &Value) -> Option<&Value> {
    let path: &[&str] = match kind_of(doc) {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => &["spec", "template", "spec"],
    };
    path.iter()
        .try_fold(doc, |v, key| v.get(key))
        .filter(|v| v.is_object())
}

fn dedup_keep_order(names: &mut Vec<String>) {
    let mut seen = HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
}

// ---------------------------------------------------------------------------
// Kustomizations
// ---------------------------------------------------------------------------

/// The parts of a kustomization file this module reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    #[serde(default, deserialize_with = "null_as_default")]
    resources: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    bases: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    components: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    images: Vec<ImageEntry>,
}

/// One `images:` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageEntry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    new_tag: Option<String>,
    #[serde(default)]
    digest: Option<String>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn looks_like_kustomization(docs: &[Value]) -> bool {
    let Some(doc) = docs.first() else {
        return false;
    };
    let kind = doc.get("kind").and_then(Value::as_str);
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    kind == Some("Kustomization")
        || api.starts_with("kustomize.config.k8s.io/")
        || (kind.is_none()
            && doc.get("images").is_some_and(Value::is_array)
            && doc.get("resources").is_some_and(Value::is_array))
}

/// Typed parse of a kustomization whose text already passed
/// [`parse_documents`] (so its size and expansion are bounded).
fn parse_kustomization(text: &str, label: &str) -> Result<Kustomization, ManifestError> {
    let bad = |reason: String| ManifestError::BadKustomization {
        path: label.to_string(),
        reason,
    };
    let mut documents = yaml_serde::Deserializer::from_str(text);
    let Some(first) = documents.next() else {
        return Ok(Kustomization::default());
    };
    if documents.next().is_some() {
        return Err(bad("it has more than one YAML document".to_string()));
    }
    let parsed: Option<Kustomization> =
        Option::deserialize(first).map_err(|e| bad(e.to_string()))?;
    Ok(parsed.unwrap_or_default())
}

/// Applies the first `images:` entry whose `name` equals the image's name
/// (exactly, as kustomize does).
fn apply_images(image: &str, entries: &[ImageEntry]) -> String {
    let Ok(parsed) = ImageRef::parse(image) else {
        return image.to_string();
    };
    let name = parsed.name();
    match entries.iter().find(|e| e.name == name) {
        Some(e) => parsed.with_override(
            e.new_name.as_deref(),
            e.new_tag.as_deref(),
            e.digest.as_deref(),
        ),
        None => image.to_string(),
    }
}

/// Chooses among resource candidates, else the single-entry fallback.
fn choose_or_fallback(
    candidates: Vec<Candidate>,
    found: Vec<String>,
    k: &Kustomization,
    label: &str,
    container: &str,
) -> Result<String, ManifestError> {
    if let Some(c) = choose(&candidates) {
        return Ok(c.image.clone());
    }
    if let [only] = k.images.as_slice() {
        let name = only
            .new_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&only.name);
        let image = join_reference(
            name,
            only.new_tag.as_deref().filter(|t| !t.is_empty()),
            only.digest.as_deref().filter(|d| !d.is_empty()),
        );
        ImageRef::parse(&image).map_err(|source| ManifestError::BadImage {
            container: container.to_string(),
            path: label.to_string(),
            source,
        })?;
        tracing::debug!(
            kustomization = label,
            container,
            image,
            "container not found in resources; using the only images: entry"
        );
        return Ok(image);
    }
    Err(ManifestError::NoContainerInKustomization {
        container: container.to_string(),
        path: label.to_string(),
        found,
        images: k.images.len(),
    })
}

/// Whether a kustomization `resources:` entry is remote (a URL, a git
/// address, or a `host/org/repo` shorthand that kustomize would fetch).
pub fn is_remote_reference(entry: &str) -> bool {
    let e = entry.trim();
    e.contains("://")
        || e.starts_with("git@")
        || e.starts_with("git::")
        || e.starts_with("github.com/")
        || e.starts_with("gitlab.com/")
        || e.starts_with("bitbucket.org/")
        || e.contains("?ref=")
        || e.contains("?version=")
        || e.contains(".git//")
        || e.contains("_git/")
}

/// State while following a kustomization's resources.
struct Walk<'a> {
    root: &'a Path,
    container: &'a str,
    files_read: usize,
    visited: HashSet<PathBuf>,
    found: Vec<String>,
}

impl Walk<'_> {
    /// Candidates from the resources of kustomization `k` (in directory
    /// `dir`, canonical), after `k`'s own `images:` are applied.
    fn kustomization(
        &mut self,
        dir: &Path,
        k: &Kustomization,
        label: &str,
        depth: usize,
    ) -> Result<Vec<Candidate>, ManifestError> {
        if depth >= MAX_KUSTOMIZATION_DEPTH {
            return Err(ManifestError::TooManyResources {
                path: label.to_string(),
            });
        }
        let dir_rel = dir
            .strip_prefix(self.root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let mut candidates = Vec::new();
        for entry in k.resources.iter().chain(&k.bases).chain(&k.components) {
            if entry.contains('\n') || is_remote_reference(entry) {
                tracing::debug!(kustomization = label, resource = %entry, "skipping a remote or inline resource");
                continue;
            }
            let Some(joined) = dir_rel.join(entry).to_str().map(str::to_string) else {
                continue;
            };
            let path = match resolve_inside(self.root, &joined) {
                Ok(path) => path,
                Err(PathError::NotFound(_)) => {
                    tracing::debug!(kustomization = label, resource = %entry, "resource not in the checkout; skipped");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !self.visited.insert(path.clone()) {
                continue;
            }
            self.files_read += 1;
            if self.files_read > MAX_FILES_FOLLOWED {
                return Err(ManifestError::TooManyResources {
                    path: label.to_string(),
                });
            }
            let rel = display_rel(self.root, &path);
            if path.is_dir() {
                let Some(kfile) = KUSTOMIZATION_FILE_NAMES
                    .iter()
                    .map(|n| path.join(n))
                    .find(|p| p.is_file())
                else {
                    continue;
                };
                let kfile_rel = format!(
                    "{rel}/{}",
                    kfile.file_name().and_then(|n| n.to_str()).unwrap_or("")
                );
                // Same rule for the kustomization file itself (a symlink).
                let kfile = resolve_inside(self.root, &kfile_rel)?;
                let text = read_bounded(&kfile, &kfile_rel)?;
                parse_documents(&text, &YamlLimits::default()).map_err(|source| {
                    ManifestError::Yaml {
                        path: kfile_rel.clone(),
                        source,
                    }
                })?;
                let inner = parse_kustomization(&text, &kfile_rel)?;
                candidates.extend(self.kustomization(&path, &inner, &kfile_rel, depth + 1)?);
            } else {
                let text = read_bounded(&path, &rel)?;
                let docs = parse_documents(&text, &YamlLimits::default()).map_err(|source| {
                    ManifestError::Yaml {
                        path: rel.clone(),
                        source,
                    }
                })?;
                candidates.extend(containers_in(&docs, self.container, &rel, &mut self.found)?);
            }
        }
        for c in &mut candidates {
            c.image = apply_images(&c.image, &k.images);
        }
        Ok(candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::{Duration, Instant};

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn workload(kind: &str, container: &str, image: &str) -> String {
        let spec = format!("containers:\n- name: {container}\n  image: {image}\n");
        let indent = |s: &str, n: usize| {
            s.lines()
                .map(|l| format!("{}{l}\n", " ".repeat(n)))
                .collect::<String>()
        };
        let api = match kind {
            "Pod" => "v1",
            "Job" | "CronJob" => "batch/v1",
            _ => "apps/v1",
        };
        let body = match kind {
            "Pod" => format!("spec:\n{}", indent(&spec, 2)),
            "CronJob" => format!(
                "spec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n{}",
                indent(&spec, 10)
            ),
            _ => format!("spec:\n  template:\n    spec:\n{}", indent(&spec, 6)),
        };
        format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: x\n{body}")
    }

    #[test]
    fn every_workload_kind() {
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "Pod",
        ] {
            let yaml = workload(kind, "app", "host:5000/app:1.2");
            assert_eq!(
                desired_image(&yaml, "app").unwrap(),
                "host:5000/app:1.2",
                "{kind}"
            );
        }
    }

    #[test]
    fn multi_document_prefers_first_deployment() {
        let yaml = format!(
            "---\n{}---\n# comment only\n---\n{}---\n{}",
            workload("StatefulSet", "app", "app:sts"),
            workload("Deployment", "app", "app:dep"),
            workload("Deployment", "app", "app:dep2"),
        );
        assert_eq!(desired_image(&yaml, "app").unwrap(), "app:dep");
        let yaml = format!(
            "{}---\n{}",
            workload("StatefulSet", "app", "app:sts"),
            workload("DaemonSet", "app", "app:ds"),
        );
        assert_eq!(desired_image(&yaml, "app").unwrap(), "app:sts");
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{ports: [{{port: 80}}]}}\n---\n{}",
            workload("Deployment", "web", "web:2")
        );
        assert_eq!(desired_image(&yaml, "web").unwrap(), "web:2");
    }

    #[test]
    fn init_containers_and_lists() {
        let yaml = "kind: Deployment\nspec:\n  template:\n    spec:\n      initContainers:\n      - {name: migrate, image: 'app-migrate:3'}\n      containers:\n      - {name: app, image: 'app:3'}\n";
        assert_eq!(desired_image(yaml, "migrate").unwrap(), "app-migrate:3");
        assert_eq!(desired_image(yaml, "app").unwrap(), "app:3");
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            serde_json::to_string(
                &parse_documents(&workload("Deployment", "a", "a:1"), &YamlLimits::default())
                    .unwrap()[0]
            )
            .unwrap()
        );
        assert_eq!(desired_image(&list, "a").unwrap(), "a:1");
    }

    #[test]
    fn missing_container_lists_found_names() {
        let yaml = format!(
            "{}---\n{}",
            workload("Deployment", "a", "a:1"),
            workload("Deployment", "b", "b:1")
        );
        let err = desired_image(&yaml, "x").unwrap_err();
        assert!(matches!(err, ManifestError::NoContainer { .. }));
        assert_eq!(
            err.to_string(),
            "no container named 'x' in image_version_file (found: a, b)"
        );
        let err = desired_image("kind: ConfigMap\ndata: {a: b}\n", "x").unwrap_err();
        assert!(err.to_string().contains("(found: none)"), "{err}");
    }

    #[test]
    fn container_without_image_or_bad_image() {
        let yaml = "kind: Pod\nspec:\n  containers:\n  - name: app\n";
        assert!(matches!(
            desired_image(yaml, "app"),
            Err(ManifestError::NoImage { .. })
        ));
        let yaml = "kind: Pod\nspec:\n  containers:\n  - name: app\n    image: 'bad image'\n";
        assert!(matches!(
            desired_image(yaml, "app"),
            Err(ManifestError::BadImage { .. })
        ));
    }

    #[test]
    fn not_yaml_and_odd_inputs_never_panic() {
        for input in [
            "{",
            "key: [unclosed",
            "\t- bad indentation\n  x",
            "a: *undefined",
            "!!binary xyz",
            "a: 1\na: 2\n",
            "? [a, b]\n: c\n",
            "--- !tag\nkind: Pod\n",
            "",
            "---\n---\n",
            "[1, 2, 3]",
            "just a string",
            "kind: Deployment\nspec: 3\n",
            "kind: Deployment\nspec: {template: {spec: {containers: 5}}}\n",
            "kind: Deployment\nspec: {template: {spec: {containers: [1, {name: 2}, {name: app, image: 7}]}}}\n",
        ] {
            let _ = desired_image(input, "app");
        }
        let err = desired_image("key: [unclosed", "app").unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::Yaml {
                    source: YamlError::Syntax(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not valid YAML"), "{err}");
        let err = desired_image("a: 1\na: 2\n", "app").unwrap_err();
        assert!(err.to_string().contains("duplicate key"), "{err}");
    }

    #[test]
    fn mutated_manifests_never_panic() {
        // A small deterministic fuzz: flip, insert and delete bytes of a
        // real manifest with YAML-significant characters.
        let seed = format!(
            "a: &x [1, {{b: *x}}]\n---\n{}---\nresources: [a]\nimages: [{{name: app, newTag: '2'}}]\n",
            workload("Deployment", "app", "host:5000/app:1.2")
        );
        let alphabet = b"-:[]{}&*!|>'\"#,?@ \n\tx0";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes[at] = c,
                    1 => bytes.insert(at, c),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = desired_image(&text, "app");
            }
        }
    }

    #[test]
    fn tags_keys_and_numbers_are_kept_as_data() {
        let docs = parse_documents(
            "--- !custom\nkind: !!str Pod\n1: one\ntrue: yes\nn: 1.5\nbig: 123456789012345678901234567890\n",
            &YamlLimits::default(),
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["kind"], "Pod");
        assert_eq!(docs[0]["1"], "one");
        assert_eq!(docs[0]["true"], "yes");
        assert_eq!(docs[0]["n"], 1.5);
    }

    #[test]
    fn billion_laughs_fails_fast() {
        let mut yaml = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            yaml.push_str(&format!(
                "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        yaml.push_str("kind: Pod\n");
        let started = Instant::now();
        let err = parse_documents(&yaml, &YamlLimits::default()).unwrap_err();
        assert!(matches!(err, YamlError::AliasExpansion { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        let err = desired_image(&yaml, "app").unwrap_err();
        assert!(err.to_string().contains("alias"), "{err}");
    }

    #[test]
    fn yaml_serde_alone_on_billion_laughs() {
        // What yaml_serde (serde_yaml 0.9) does by itself: it counts alias jumps and stops
        // at 100 × the number of events ("repetition limit exceeded"), which
        // catches the classic nested bomb...
        let mut yaml = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (p, n) = (pair[0], pair[1]);
            yaml.push_str(&format!(
                "{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            ));
        }
        let err = yaml_serde::from_str::<yaml_serde::Value>(&yaml).unwrap_err();
        assert!(err.to_string().contains("repetition limit"), "{err}");
        // ...but not a flat one: few jumps, each to a big node, is a
        // quadratic blow-up it lets through (a 1 MiB file could expand to
        // tens of GiB), hence the byte budget in `parse_documents`
        // (`quadratic_alias_blowup_fails_fast`). Shown here at a harmless
        // size: 300 aliases to a 1,000-item list expand to 300,000 nodes.
        let mut flat = format!("a: &a [{}]\nb: [", "x,".repeat(1000));
        flat.push_str(&"*a,".repeat(300));
        flat.push_str("]\n");
        let v: yaml_serde::Value = yaml_serde::from_str(&flat).unwrap();
        assert_eq!(v["b"].as_sequence().unwrap().len(), 300);
        assert!(matches!(
            parse_documents(&flat, &YamlLimits::for_size(flat.len())),
            Err(YamlError::AliasExpansion { .. })
        ));
    }

    #[test]
    fn quadratic_alias_blowup_fails_fast() {
        // One large anchored string referenced many times: few jumps (so
        // yaml_serde's own repetition limit does not fire), huge expansion.
        let big = "x".repeat(400 * 1024);
        let mut yaml = format!("a: &a \"{big}\"\nb: [");
        for _ in 0..50_000 {
            yaml.push_str("*a,");
        }
        yaml.push_str("]\n");
        let started = Instant::now();
        let err = parse_documents(&yaml, &YamlLimits::default()).unwrap_err();
        assert!(matches!(err, YamlError::AliasExpansion { .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn small_aliases_are_fine() {
        let yaml =
            "base: &img 'app:1'\nkind: Pod\nspec:\n  containers:\n  - name: app\n    image: *img\n";
        assert_eq!(desired_image(yaml, "app").unwrap(), "app:1");
    }

    #[test]
    fn too_deep_is_refused() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(matches!(
            parse_documents(&deep, &YamlLimits::default()),
            Err(YamlError::TooDeep { limit: 64 })
        ));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse_documents(&ok, &YamlLimits::default()).is_ok());
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
        }
        assert!(matches!(
            parse_documents(&block, &YamlLimits::default()),
            Err(YamlError::TooDeep { .. })
        ));
        // Very deep input fails at once (the pre-check), without the parser.
        let started = Instant::now();
        let huge = "[".repeat(1_000_000);
        assert!(matches!(
            parse_documents(&huge, &YamlLimits::default()),
            Err(YamlError::TooDeep { .. })
        ));
        let huge = format!("a: {}", "{a: ".repeat(200_000));
        assert!(matches!(
            parse_documents(&huge, &YamlLimits::default()),
            Err(YamlError::TooDeep { .. })
        ));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        // Brackets in strings, comments and block scalars do not count as
        // nesting (beyond the pre-check's margin).
        let text = format!(
            "a: \"{b}\"\nb: '{b}'\n# {b}\nc: |\n  {s}\n",
            b = "[".repeat(500),
            s = "[".repeat(100)
        );
        assert!(parse_documents(&text, &YamlLimits::default()).is_ok());
    }

    #[test]
    fn too_big_and_too_many_documents() {
        let big = format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
        assert!(matches!(
            parse_documents(&big, &YamlLimits::default()),
            Err(YamlError::TooBig { .. })
        ));
        let many = "a: 1\n---\n".repeat(1001);
        assert!(matches!(
            parse_documents(&many, &YamlLimits::default()),
            Err(YamlError::TooManyDocuments { limit: 1000 })
        ));
        let fine = "---\na: 1\n".repeat(1000);
        assert_eq!(
            parse_documents(&fine, &YamlLimits::default())
                .unwrap()
                .len(),
            1000
        );
    }

    #[test]
    fn kustomization_content_single_entry_fallback() {
        let k = format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [deployment.yaml]\nimages:\n- name: app\n  newName: ghcr.io/org/app\n  newTag: \"1.10\"\n  digest: {D}\n");
        assert_eq!(
            desired_image(&k, "app").unwrap(),
            format!("ghcr.io/org/app:1.10@{D}")
        );
        let k =
            "resources: [d.yaml]\nimages:\n- {name: a, newTag: 1.10}\n- {name: b, newTag: '2'}\n";
        let err = desired_image(k, "app").unwrap_err();
        assert!(
            matches!(
                err,
                ManifestError::NoContainerInKustomization { images: 2, .. }
            ),
            "{err}"
        );
    }

    // ----- files -----

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    #[test]
    fn reads_a_manifest_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "deploy/app.yaml",
            &workload("Deployment", "app", "app:7"),
        );
        assert_eq!(
            desired_image_from_file(dir.path(), "deploy/app.yaml", "app").unwrap(),
            "app:7"
        );
        assert_eq!(
            desired_image_from_file(dir.path(), "./deploy/../deploy/app.yaml", "app").unwrap(),
            "app:7"
        );
        let err = desired_image_from_file(dir.path(), "deploy/app.yaml", "nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no container named 'nope' in deploy/app.yaml (found: app)"
        );
        let err = desired_image_from_file(dir.path(), "deploy/missing.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::NotFound(_))),
            "{err}"
        );
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = desired_image_from_file(dir.path(), "deploy", "app").unwrap_err();
        assert!(matches!(err, ManifestError::NotAFile { .. }), "{err}");
        // A directory with a kustomization stands for it.
        write(
            dir.path(),
            "deploy/kustomization.yaml",
            "resources: [app.yaml]\n",
        );
        assert_eq!(
            desired_image_from_file(dir.path(), "deploy", "app").unwrap(),
            "app:7"
        );
    }

    #[test]
    fn file_too_big_not_text_not_yaml() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "big.yaml",
            &format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES)),
        );
        let err = desired_image_from_file(dir.path(), "big.yaml", "app").unwrap_err();
        assert!(matches!(err, ManifestError::TooBig { .. }), "{err}");
        fs::write(dir.path().join("bin.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
        let err = desired_image_from_file(dir.path(), "bin.yaml", "app").unwrap_err();
        assert!(matches!(err, ManifestError::NotText { .. }), "{err}");
        write(dir.path(), "bad.yaml", "kind: [Deployment\n");
        let err = desired_image_from_file(dir.path(), "bad.yaml", "app").unwrap_err();
        assert!(
            err.to_string().starts_with("bad.yaml: not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn path_escapes_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("checkout");
        fs::create_dir(&root).unwrap();
        write(
            outer.path(),
            "secret.yaml",
            &workload("Deployment", "app", "evil:1"),
        );
        write(&root, "ok.yaml", &workload("Deployment", "app", "ok:1"));

        let err = desired_image_from_file(&root, "../secret.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::Escapes(_))),
            "{err}"
        );
        let err = desired_image_from_file(&root, "a/../../secret.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::Escapes(_))),
            "{err}"
        );
        let abs = outer.path().join("secret.yaml");
        let err = desired_image_from_file(&root, abs.to_str().unwrap(), "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::Absolute(_))),
            "{err}"
        );
        let err = desired_image_from_file(&root, "ok.yaml\0", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::Nul(_))),
            "{err}"
        );

        std::os::unix::fs::symlink(outer.path().join("secret.yaml"), root.join("link.yaml"))
            .unwrap();
        let err = desired_image_from_file(&root, "link.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::OutsideRoot(_))),
            "{err}"
        );
        std::os::unix::fs::symlink(outer.path(), root.join("up")).unwrap();
        let err = desired_image_from_file(&root, "up/secret.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::OutsideRoot(_))),
            "{err}"
        );
        std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling.yaml")).unwrap();
        let err = desired_image_from_file(&root, "dangling.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::OutsideRoot(_))),
            "{err}"
        );

        // A symlink that stays inside is fine.
        std::os::unix::fs::symlink("ok.yaml", root.join("inside.yaml")).unwrap();
        assert_eq!(
            desired_image_from_file(&root, "inside.yaml", "app").unwrap(),
            "ok:1"
        );

        // resolve_inside itself.
        let canon = root.canonicalize().unwrap();
        assert_eq!(resolve_inside(&root, "").unwrap(), canon);
        assert_eq!(resolve_inside(&root, ".").unwrap(), canon);
        assert_eq!(
            resolve_inside(&root, "ok.yaml").unwrap(),
            canon.join("ok.yaml")
        );
        assert!(matches!(
            resolve_inside(&root, ".."),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            resolve_inside(&root, "/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
    }

    #[test]
    fn kustomization_images_new_name_tag_digest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "deploy/deployment.yaml",
            &workload("Deployment", "app", "app:1.0"),
        );
        write(
            root,
            "deploy/kustomization.yaml",
            "resources:\n- deployment.yaml\nimages:\n- name: other\n  newTag: '9'\n- name: app\n  newName: host:5000/team/app\n  newTag: \"1.10\"\n",
        );
        assert_eq!(
            desired_image_from_file(root, "deploy/kustomization.yaml", "app").unwrap(),
            "host:5000/team/app:1.10"
        );
        write(
            root,
            "deploy/kustomization.yaml",
            &format!("resources: [deployment.yaml]\nimages:\n- name: app\n  digest: {D}\n"),
        );
        assert_eq!(
            desired_image_from_file(root, "deploy/kustomization.yaml", "app").unwrap(),
            format!("app@{D}")
        );
        write(
            root,
            "deploy/kustomization.yaml",
            &format!(
                "resources: [deployment.yaml]\nimages:\n- name: app\n  newTag: v2\n  digest: {D}\n"
            ),
        );
        assert_eq!(
            desired_image_from_file(root, "deploy/kustomization.yaml", "app").unwrap(),
            format!("app:v2@{D}")
        );
        // No matching entry: the image stays as in the base (as kustomize
        // would leave it), even with exactly one entry.
        write(
            root,
            "deploy/kustomization.yaml",
            "resources: [deployment.yaml]\nimages:\n- name: docker.io/library/app\n  newTag: v3\n",
        );
        assert_eq!(
            desired_image_from_file(root, "deploy/kustomization.yaml", "app").unwrap(),
            "app:1.0"
        );
        // Not found in resources, single entry: fallback.
        write(
            root,
            "deploy/kustomization.yaml",
            "resources: [deployment.yaml]\nimages:\n- name: sidecar\n  newTag: v4\n",
        );
        assert_eq!(
            desired_image_from_file(root, "deploy/kustomization.yaml", "sidecar").unwrap(),
            "sidecar:v4"
        );
        // Not found, two entries: a clear error listing what is there.
        write(
            root,
            "deploy/kustomization.yaml",
            "resources: [deployment.yaml]\nimages:\n- {name: a, newTag: '1'}\n- {name: b, newTag: '2'}\n",
        );
        let err = desired_image_from_file(root, "deploy/kustomization.yaml", "x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no container named 'x' in the resources of deploy/kustomization.yaml (found: app), and its images: list has 2 entries (the fallback needs exactly one)"
        );
    }

    #[test]
    fn kustomization_with_base_in_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "base/deploy.yaml",
            &workload("Deployment", "app", "registry.io/app:1.0"),
        );
        write(
            root,
            "base/sts.yaml",
            &workload("StatefulSet", "app", "registry.io/app:sts"),
        );
        write(
            root,
            "base/kustomization.yaml",
            "resources: [sts.yaml, deploy.yaml]\nimages:\n- {name: registry.io/app, newName: registry.io/app2}\n",
        );
        write(
            root,
            "overlays/prod/kustomization.yml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../../base\n- https://github.com/org/repo//x?ref=v1\n- missing.yaml\nimages:\n- {name: registry.io/app2, newTag: '2.0'}\n",
        );
        assert_eq!(
            desired_image_from_file(root, "overlays/prod/kustomization.yml", "app").unwrap(),
            "registry.io/app2:2.0"
        );
        // A resource that climbs out of the checkout is refused.
        write(
            root,
            "overlays/evil/kustomization.yaml",
            "resources: [../../../outside]\nimages: [{name: app, newTag: '1'}]\n",
        );
        let err =
            desired_image_from_file(root, "overlays/evil/kustomization.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::Escapes(_))),
            "{err}"
        );
        // ... also through a symlink.
        let outside = tempfile::tempdir().unwrap();
        write(
            outside.path(),
            "kustomization.yaml",
            "resources: [d.yaml]\n",
        );
        write(
            outside.path(),
            "d.yaml",
            &workload("Deployment", "app", "evil:1"),
        );
        std::os::unix::fs::symlink(outside.path(), root.join("overlays/linked")).unwrap();
        write(
            root,
            "overlays/sym/kustomization.yaml",
            "resources: [../linked]\n",
        );
        let err =
            desired_image_from_file(root, "overlays/sym/kustomization.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::Path(PathError::OutsideRoot(_))),
            "{err}"
        );
    }

    #[test]
    fn kustomization_cycles_and_depth_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a/kustomization.yaml", "resources: [../b]\n");
        write(root, "b/kustomization.yaml", "resources: [../a]\n");
        let err = desired_image_from_file(root, "a/kustomization.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::NoContainerInKustomization { .. }),
            "{err}"
        );
        for i in 0..20 {
            write(
                root,
                &format!("d{i}/kustomization.yaml"),
                &format!("resources: [../d{}]\n", i + 1),
            );
        }
        let err = desired_image_from_file(root, "d0/kustomization.yaml", "app").unwrap_err();
        assert!(
            matches!(err, ManifestError::TooManyResources { .. }),
            "{err}"
        );
    }
}
