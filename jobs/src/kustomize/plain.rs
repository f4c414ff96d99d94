//! Rendering *plain* kustomizations in process, without starting kustomize.
//!
//! Most of a small build is kustomize's process starting: 45–60 ms of CPU
//! for `kubectl kustomize` on this project's machines, against well under a
//! millisecond for what the build itself does when the kustomization only
//! lists files. A kustomization that asks for nothing but its `resources:`
//! files asks kustomize to read them, decode their objects and print them in
//! its default ("legacy") order — and chump does exactly that itself, for
//! the kustomizations where the result is certain to be the one kustomize
//! would print. Everything else is left to kustomize, which has the final
//! word, errors included: [`render_plain`] never fails, it only declines
//! ([`PlainRender::NotPlain`], with the reason for the log).
//!
//! **Plain** means all of:
//!
//! * exactly one kustomization file in the directory (kustomize refuses
//!   several), a regular file, whose only fields are `apiVersion`
//!   (`kustomize.config.k8s.io/v1beta1`), `kind` (`Kustomization`) and a
//!   non-empty `resources:` list;
//! * every entry a relative path without `..`, naming a regular file in or
//!   below the directory with no symbolic link on the way (what
//!   `LoadRestrictionsRootOnly` allows, and less), each named once;
//! * YAML without anchors, aliases or tags, whose every unquoted scalar
//!   means the same to kustomize's decoder (go-yaml v3) as to chump: `null`,
//!   `~` or nothing, `true`, `false`, a decimal integer without leading zeros
//!   or sign tricks, a decimal fraction that is not a whole number, or text
//!   that cannot be read as a number, a time or a keyword. kustomize
//!   re-encodes what it reads (`0755` becomes 493, `1.0` becomes 1,
//!   `2001-12-14` a timestamp, `1_000` 1000); such scalars are declined,
//!   quoted ones are text either way;
//! * mapping keys that are text, never repeated;
//! * every document an object with text `apiVersion`, `kind` and
//!   `metadata.name` (and `metadata.namespace`, if any), not a `List`, not a
//!   kustomize configuration; labels of text; annotations, if present, a
//!   non-empty map of text (kustomize drops an empty one and turns numbers
//!   into text) with none of the `config.kubernetes.io/`,
//!   `internal.config.kubernetes.io/`, `config.k8s.io/` or
//!   `kustomize.config.k8s.io/` annotations kustomize acts on (a
//!   `local-config` object is left out of its output, for one);
//! * no two objects with the same group, kind and name (kustomize refuses
//!   duplicates).
//!
//! The objects then go in kustomize's legacy order: kinds it ranks first
//! (Namespace, ResourceQuota, … PodDisruptionBudget), then every other kind,
//! then the webhook configurations; within a rank by group, version and kind,
//! then by namespace and name — the same comparisons on the same strings as
//! kustomize's `SortOrderTransformer`.
//!
//! The tests render every case both ways, in process and with the real
//! `kubectl kustomize`, and compare the objects.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

use crate::manifest::{KUSTOMIZATION_FILE_NAMES, MAX_DEPTH, MAX_FILE_BYTES};

/// What [`render_plain`] made of a build directory.
#[derive(Debug, Clone, PartialEq)]
pub enum PlainRender {
    /// The objects kustomize would print, in its order.
    Rendered {
        /// The objects.
        objects: Vec<Value>,
        /// Bytes of YAML read.
        bytes: usize,
    },
    /// Not certainly what kustomize would make of it: kustomize builds it.
    NotPlain(String),
}

/// Renders the kustomization in `dir` in process if it is plain (see the
/// module documentation), reading at most `max_bytes` of resource files and
/// `max_documents` documents; else says why not.
pub fn render_plain(dir: &Path, max_bytes: usize, max_documents: usize) -> PlainRender {
    match render(dir, max_bytes, max_documents) {
        Ok((objects, bytes)) => PlainRender::Rendered { objects, bytes },
        Err(reason) => PlainRender::NotPlain(reason),
    }
}

/// The fields a plain kustomization may have.
const KUSTOMIZATION_FIELDS: [&str; 3] = ["apiVersion", "kind", "resources"];
/// Annotation prefixes kustomize (or the KRM functions spec) acts on.
const ACTED_ON_ANNOTATIONS: [&str; 4] = [
    "config.kubernetes.io/",
    "internal.config.kubernetes.io/",
    "config.k8s.io/",
    "kustomize.config.k8s.io/",
];

fn render(
    dir: &Path,
    max_bytes: usize,
    max_documents: usize,
) -> Result<(Vec<Value>, usize), String> {
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut present = KUSTOMIZATION_FILE_NAMES
        .iter()
        .filter(|name| dir.join(name).symlink_metadata().is_ok());
    let (Some(name), None) = (present.next(), present.next()) else {
        return Err("not exactly one kustomization file".to_string());
    };
    let kustomization = read_regular(&dir.join(name), MAX_FILE_BYTES)?;
    let mut docs = parse_plain_yaml(&kustomization, 1).map_err(|e| format!("{name}: {e}"))?;
    let (Some(Value::Object(k)), None) = (docs.pop(), docs.pop()) else {
        return Err(format!("{name} is not one mapping"));
    };
    if let Some(field) = k
        .keys()
        .find(|f| !KUSTOMIZATION_FIELDS.contains(&f.as_str()))
    {
        return Err(format!("{name} has `{field}`"));
    }
    let header_ok =
        |field: &str, expected: &str| k.get(field).is_none_or(|v| v.as_str() == Some(expected));
    if !header_ok("apiVersion", "kustomize.config.k8s.io/v1beta1")
        || !header_ok("kind", "Kustomization")
    {
        return Err(format!("{name} is not a v1beta1 Kustomization"));
    }
    let entries = match k.get("resources") {
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        _ => return Err(format!("{name} lists no resources")),
    };

    let mut objects = Vec::new();
    let mut bytes = 0usize;
    let mut files = HashSet::new();
    for entry in entries {
        let Some(entry) = entry.as_str() else {
            return Err("a resource entry is not text".to_string());
        };
        let rel = plain_relative(entry)
            .ok_or_else(|| format!("resource `{entry}` is not a plain relative path"))?;
        if !files.insert(rel.clone()) {
            return Err(format!("resource `{entry}` is listed twice"));
        }
        let path = dir.join(&rel);
        // No symbolic link anywhere below the directory: the canonical path
        // is the path itself.
        if path.canonicalize().ok().as_deref() != Some(path.as_path()) {
            return Err(format!(
                "resource `{entry}` is missing or behind a symbolic link"
            ));
        }
        let text = read_regular(&path, max_bytes.saturating_sub(bytes))?;
        bytes += text.len();
        let left = max_documents.saturating_sub(objects.len());
        for doc in parse_plain_yaml(&text, left).map_err(|e| format!("{entry}: {e}"))? {
            check_object(&doc).map_err(|e| format!("{entry}: {e}"))?;
            objects.push(doc);
        }
    }
    let mut ids = HashSet::new();
    for o in &objects {
        let (group, _) = group_version(text_at(o, &["apiVersion"]));
        let id = (
            group,
            text_at(o, &["kind"]),
            text_at(o, &["metadata", "name"]),
        );
        if !ids.insert(id) {
            return Err(format!(
                "two objects are {} {}",
                text_at(o, &["kind"]),
                text_at(o, &["metadata", "name"])
            ));
        }
    }
    objects.sort_by(legacy_order);
    Ok((objects, bytes))
}

/// `entry` as a path of normal components (`.` and empty ones dropped), or
/// `None` if it is absolute, climbs (`..`), looks remote or is empty.
fn plain_relative(entry: &str) -> Option<PathBuf> {
    if entry.is_empty() || entry.contains(['\0', '\\', '\n']) || entry.contains("://") {
        return None;
    }
    let mut rel = PathBuf::new();
    for c in Path::new(entry).components() {
        match c {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// A regular file's text (no symbolic link, UTF-8 without a byte order
/// mark, at most `max` bytes).
fn read_regular(path: &Path, max: usize) -> Result<String, String> {
    let shown = path.file_name().unwrap_or_default().to_string_lossy();
    let meta = path
        .symlink_metadata()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > max as u64 {
        return Err(format!("{shown} is larger than {max} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    if text.starts_with('\u{feff}') {
        return Err(format!("{shown} starts with a byte order mark"));
    }
    Ok(text)
}

/// An object as kustomize takes it unchanged (see the module
/// documentation).
fn check_object(doc: &Value) -> Result<(), String> {
    let Value::Object(o) = doc else {
        return Err("a document is not an object".to_string());
    };
    let api_version = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err("an object without apiVersion or kind".to_string());
    }
    if kind.ends_with("List") || api_version.starts_with("kustomize.config.k8s.io") {
        return Err(format!("a {kind}"));
    }
    let Some(Value::Object(meta)) = o.get("metadata") else {
        return Err(format!("a {kind} without metadata"));
    };
    if meta
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!("a {kind} without a name"));
    }
    if meta.get("namespace").is_some_and(|n| !n.is_string()) {
        return Err(format!("a {kind} whose namespace is not text"));
    }
    let all_text = |m: &Map<String, Value>| m.values().all(Value::is_string);
    match meta.get("labels") {
        None => {}
        Some(Value::Object(labels)) if all_text(labels) => {}
        Some(_) => return Err(format!("a {kind} whose labels are not all text")),
    }
    match meta.get("annotations") {
        None => {}
        Some(Value::Object(a)) if !a.is_empty() && all_text(a) => {
            if let Some(key) = a
                .keys()
                .find(|key| ACTED_ON_ANNOTATIONS.iter().any(|p| key.starts_with(p)))
            {
                return Err(format!("a {kind} annotated {key}"));
            }
        }
        Some(_) => {
            return Err(format!(
                "a {kind} whose annotations are empty or not all text"
            ))
        }
    }
    Ok(())
}

/// The text at `path` in `o`, or "".
fn text_at<'a>(o: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(o, |v, key| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An `apiVersion`'s group and version, as kustomize splits it.
fn group_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None if api_version == "builtin" => (api_version, ""),
        None => ("", api_version),
    }
}

// ---------------------------------------------------------------------------
// kustomize's legacy order
// ---------------------------------------------------------------------------

/// Kinds kustomize puts first, in its order.
const ORDER_FIRST: [&str; 22] = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
/// Kinds kustomize puts last, in its order.
const ORDER_LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// A kind's rank: negative for the first kinds, positive for the last, 0
/// for every other.
fn kind_rank(kind: &str) -> i64 {
    if let Some(i) = ORDER_FIRST.iter().position(|k| *k == kind) {
        return i as i64 - ORDER_FIRST.len() as i64;
    }
    ORDER_LAST
        .iter()
        .position(|k| *k == kind)
        .map_or(0, |i| 1 + i as i64)
}

/// An object's group, version and kind.
fn gvk(o: &Value) -> (&str, &str, &str) {
    let (group, version) = group_version(text_at(o, &["apiVersion"]));
    (group, version, text_at(o, &["kind"]))
}

fn or<'a>(s: &'a str, none: &'a str) -> &'a str {
    if s.is_empty() {
        none
    } else {
        s
    }
}

/// kustomize's `legacyIDSorter.Less`, as an ordering.
fn legacy_order(a: &Value, b: &Value) -> Ordering {
    let (ga, va, ka) = gvk(a);
    let (gb, vb, kb) = gvk(b);
    if (ga, va, ka) != (gb, vb, kb) {
        let sort_string = |g, v, k| format!("{}_{}_{}", or(g, "~G"), or(v, "~V"), or(k, "~K"));
        return kind_rank(ka)
            .cmp(&kind_rank(kb))
            .then_with(|| sort_string(ga, va, ka).cmp(&sort_string(gb, vb, kb)));
    }
    let id_string = |o: &Value| {
        let (g, v, k) = gvk(o);
        format!(
            "{}.{}.{}|{}|{}",
            or(k, "[noKind]"),
            or(v, "[noVer]"),
            or(g, "[noGrp]"),
            or(text_at(o, &["metadata", "namespace"]), "~X"),
            or(text_at(o, &["metadata", "name"]), "~N"),
        )
    };
    id_string(a).cmp(&id_string(b))
}

// ---------------------------------------------------------------------------
// YAML, as far as both decoders agree
// ---------------------------------------------------------------------------

/// A node being built.
enum Frame {
    Sequence(Vec<Value>),
    /// A mapping and the key whose value comes next.
    Mapping(Map<String, Value>, Option<String>),
}

/// Parses a YAML stream into its non-null documents, at most
/// `max_documents` of them, or says what kustomize might read otherwise.
fn parse_plain_yaml(text: &str, max_documents: usize) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    for event in Parser::new_from_str(text) {
        let (event, _) = event.map_err(|e| e.to_string())?;
        let value = match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => continue,
            Event::DocumentStart(_) => {
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                match root.take() {
                    None | Some(Value::Null) => {}
                    Some(doc) if docs.len() < max_documents => docs.push(doc),
                    Some(_) => return Err(format!("more than {max_documents} documents")),
                }
                continue;
            }
            Event::Alias(_) => return Err("an alias".to_string()),
            Event::Scalar(text, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return Err("an anchor or a tag".to_string());
                }
                let key_expected = matches!(stack.last(), Some(Frame::Mapping(_, None)));
                let value = match style {
                    ScalarStyle::Plain => resolve_plain(&text)?,
                    _ => Value::String(text.into_owned()),
                };
                if key_expected {
                    let Value::String(key) = value else {
                        return Err(format!("the key `{value}` is not text"));
                    };
                    if let Some(Frame::Mapping(map, pending)) = stack.last_mut() {
                        if map.contains_key(&key) {
                            return Err(format!("the key `{key}` is repeated"));
                        }
                        *pending = Some(key);
                    }
                    continue;
                }
                value
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if anchor != 0 || tag.is_some() {
                    return Err("an anchor or a tag".to_string());
                }
                if matches!(stack.last(), Some(Frame::Mapping(_, None))) {
                    return Err("a key that is not text".to_string());
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nested more than {MAX_DEPTH} levels"));
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Frame::Sequence(Vec::new())
                } else {
                    Frame::Mapping(Map::new(), None)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Sequence(items)) => Value::Array(items),
                Some(Frame::Mapping(map, None)) => Value::Object(map),
                _ => return Err("unbalanced YAML".to_string()),
            },
        };
        match stack.last_mut() {
            None => root = Some(value),
            Some(Frame::Sequence(items)) => items.push(value),
            Some(Frame::Mapping(map, pending)) => {
                let Some(key) = pending.take() else {
                    return Err("a value without a key".to_string());
                };
                map.insert(key, value);
            }
        }
    }
    Ok(docs)
}

/// Characters a go-yaml v3 integer, float or timestamp may hold.
const NUMBER_OR_TIME: &[u8] = b"0123456789+-._: xXoObBaAcCdDeEfFtTzZiInN";

/// An unquoted scalar's value, where kustomize's decoder and chump agree on
/// it.
fn resolve_plain(s: &str) -> Result<Value, String> {
    match s {
        "" | "~" | "null" => return Ok(Value::Null),
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        "True" | "TRUE" | "False" | "FALSE" | "Null" | "NULL" | "=" => {
            return Err(format!("`{s}` reads differently elsewhere"))
        }
        _ => {}
    }
    if s.starts_with("<<") {
        return Err("a merge key".to_string());
    }
    let first = s.as_bytes()[0];
    if !matches!(first, b'0'..=b'9' | b'+' | b'-' | b'.') {
        return Ok(Value::String(s.to_string()));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let decimal = |d: &str| {
        !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (d == "0" || !d.starts_with('0'))
    };
    if decimal(digits) && s != "-0" {
        if let Ok(n) = s.parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
    }
    if let Some((whole, fraction)) = digits.split_once('.') {
        if decimal(whole) && !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(f) = s.parse::<f64>() {
                // kustomize prints a whole float as an integer.
                if f.is_finite() && f.fract() != 0.0 {
                    if let Some(n) = Number::from_f64(f) {
                        return Ok(Value::Number(n));
                    }
                }
            }
        }
    }
    if s.bytes().any(|b| !NUMBER_OR_TIME.contains(&b)) {
        return Ok(Value::String(s.to_string()));
    }
    Err(format!("`{s}` may be a number or a time to kustomize"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_scalars_resolve_only_where_both_decoders_agree() {
        for (text, want) in [
            ("", json!(null)),
            ("~", json!(null)),
            ("null", json!(null)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("0", json!(0)),
            ("80", json!(80)),
            ("-3", json!(-3)),
            ("0.5", json!(0.5)),
            ("-1.25", json!(-1.25)),
            ("100m", json!("100m")),
            ("128Mi", json!("128Mi")),
            ("--port=80", json!("--port=80")),
            ("nginx:1.25", json!("nginx:1.25")),
            ("yes", json!("yes")),
            ("/healthz", json!("/healthz")),
        ] {
            assert_eq!(resolve_plain(text), Ok(want), "{text:?}");
        }
        for text in [
            "0755",
            "0x1F",
            "0o17",
            "1_000",
            "1e3",
            "1.0",
            "2.50e1",
            ".5",
            ".inf",
            "-.inf",
            "-0",
            "+1",
            "2001-12-14",
            "12:30",
            "1.2.3",
            "True",
            "NULL",
            "<<",
            "=",
            "99999999999999999999",
        ] {
            assert!(resolve_plain(text).is_err(), "{text:?} should be declined");
        }
    }

    #[test]
    fn documents_decline_anchors_tags_and_odd_keys() {
        assert_eq!(
            parse_plain_yaml(
                "a: 1\n---\n~\n---\n# only a comment\n---\nb: [x, 'y']\n",
                10
            ),
            Ok(vec![json!({"a": 1}), json!({"b": ["x", "y"]})])
        );
        for text in [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: 1\na: 2\n",
            "1: a\n",
            "? [a]\n: b\n",
            "a: [unclosed\n",
        ] {
            assert!(
                parse_plain_yaml(text, 10).is_err(),
                "{text:?} should be declined"
            );
        }
        assert!(parse_plain_yaml("a: 1\n---\nb: 2\n", 1).is_err());
    }

    #[test]
    fn the_legacy_order_ranks_kinds_then_compares_kustomizes_strings() {
        let o = |api: &str, kind: &str, ns: &str, name: &str| json!({"apiVersion": api, "kind": kind, "metadata": {"namespace": ns, "name": name}});
        let mut objects = [
            o(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "",
                "v",
            ),
            o("example.com/v1", "Widget", "a", "w"),
            o("apps/v1", "Deployment", "a", "z"),
            o("apps/v1", "Deployment", "a-b", "a"),
            o("v1", "Service", "a", "s"),
            o("batch/v1", "Job", "a", "j"),
            o("v1", "Namespace", "", "a"),
        ];
        objects.sort_by(legacy_order);
        let order: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}/{}",
                    text_at(o, &["kind"]),
                    text_at(o, &["metadata", "namespace"]),
                    text_at(o, &["metadata", "name"])
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                "Namespace//a",
                "Service/a/s",
                "Deployment/a-b/a",
                "Deployment/a/z",
                "Job/a/j",
                "Widget/a/w",
                "ValidatingWebhookConfiguration//v",
            ]
        );
    }
}
