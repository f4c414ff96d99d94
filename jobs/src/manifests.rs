//! The rendered manifests of a deploy, as the store keeps them, and as
//! people read them.
//!
//! Every check that reaches the apply stage (a deploy, a rollback, and the
//! failures of either after their apply started) keeps the objects it
//! applied — the build as kustomize rendered it, before chump's labels —
//! with its history entry: gzip of a JSON array ([`PackedManifests`]),
//! up to a cap per entry, and for a number of entries per source (the
//! store drops older ones and marks their entries [`ManifestsState::Dropped`]).
//! A rollback re-applies them from the store, so it needs neither git nor
//! the commit.
//!
//! Reading them ([`to_yaml`], [`diff`]) always masks: every value of a
//! `Secret`'s `data` and `stringData`, and the credentials of URLs in any
//! string (`https://user:token@host`). A diff still shows that a Secret's
//! value changed, never what it was or became.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::inventory::{group_of, ObjectKey};
use crate::redact::{redact_url, MASK};

/// The largest render chump unpacks (a guard against a corrupt or hostile
/// row: a cap per entry holds the compressed size, this the expanded one).
pub const MAX_UNPACKED_BYTES: usize = 256 << 20;

/// What a history entry says about its manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestsState {
    /// Kept: `GET /api/history/{id}/manifests` returns them, a rollback can
    /// re-apply them.
    Kept,
    /// Dropped by the per-source retention (`CHUMP_MANIFEST_RETENTION`).
    Dropped,
    /// Never kept: larger, compressed, than the cap per entry
    /// (`CHUMP_MANIFEST_MAX_BYTES`).
    TooLarge,
}

impl ManifestsState {
    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ManifestsState::Kept => "kept",
            ManifestsState::Dropped => "dropped",
            ManifestsState::TooLarge => "too_large",
        }
    }
}

impl std::str::FromStr for ManifestsState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kept" => Ok(ManifestsState::Kept),
            "dropped" => Ok(ManifestsState::Dropped),
            "too_large" => Ok(ManifestsState::TooLarge),
            other => Err(format!("unknown manifests state '{other}'")),
        }
    }
}

/// Why manifests cannot be packed or read back.
#[derive(Debug, thiserror::Error)]
pub enum ManifestsError {
    #[error("cannot compress the manifests: {0}")]
    Pack(#[source] std::io::Error),
    #[error("the stored manifests are corrupt: {0}")]
    Corrupt(String),
    #[error("the stored manifests expand past {MAX_UNPACKED_BYTES} bytes")]
    TooLarge,
}

/// A render as the store keeps it: gzip of the JSON array of its objects.
#[derive(Clone, PartialEq, Eq)]
pub struct PackedManifests(Vec<u8>);

impl std::fmt::Debug for PackedManifests {
    // Never the content: it may hold Secret data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedManifests({} bytes)", self.0.len())
    }
}

impl PackedManifests {
    /// Packs `objects` (the build as rendered).
    pub fn pack(objects: &[Value]) -> Result<Self, ManifestsError> {
        let json = serde_json::to_vec(objects)
            .map_err(|e| ManifestsError::Pack(std::io::Error::other(e)))?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json).map_err(ManifestsError::Pack)?;
        gz.finish()
            .map(PackedManifests)
            .map_err(ManifestsError::Pack)
    }

    /// Stored bytes, as [`PackedManifests::as_bytes`] gave them.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        PackedManifests(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The compressed size.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The objects, as rendered (unmasked: for a rollback; see [`mask`]).
    pub fn unpack(&self) -> Result<Vec<Value>, ManifestsError> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(self.0.as_slice())
            .take(MAX_UNPACKED_BYTES as u64 + 1)
            .read_to_end(&mut json)
            .map_err(|e| ManifestsError::Corrupt(e.to_string()))?;
        if json.len() > MAX_UNPACKED_BYTES {
            return Err(ManifestsError::TooLarge);
        }
        let objects: Vec<Value> =
            serde_json::from_slice(&json).map_err(|e| ManifestsError::Corrupt(e.to_string()))?;
        if objects.iter().any(|o| !o.is_object()) {
            return Err(ManifestsError::Corrupt(
                "an element is not an object".to_string(),
            ));
        }
        Ok(objects)
    }
}

/// `object` safe to show: a `Secret`'s `data` and `stringData` values
/// replaced by `***` (the keys stay), and every string that holds a URL
/// with credentials redacted.
pub fn mask(object: &Value) -> Value {
    let mut masked = redact_strings(object);
    if is_secret(object) {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(values)) = masked.get_mut(field) {
                for v in values.values_mut() {
                    *v = Value::String(MASK.to_string());
                }
            }
        }
    }
    masked
}

fn is_secret(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Secret")
        && object.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

fn redact_strings(v: &Value) -> Value {
    match v {
        Value::String(s) if s.contains("://") && s.contains('@') => {
            Value::String(s.split_whitespace().fold(s.clone(), |text, word| {
                let redacted = redact_url(word);
                if redacted == word {
                    text
                } else {
                    text.replace(word, &redacted)
                }
            }))
        }
        Value::Array(items) => Value::Array(items.iter().map(redact_strings).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The render as multi-document YAML, masked ([`mask`]).
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&object_yaml(&mask(object)));
    }
    out
}

fn object_yaml(object: &Value) -> String {
    let mut text =
        yaml_serde::to_string(object).unwrap_or_else(|e| format!("# unprintable: {e}\n"));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// How one object differs between two renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// One object that differs between two renders, with its unified diff
/// (masked YAML, `a/` the older render, `b/` the newer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectDiff {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub change: Change,
    pub diff: String,
}

/// What changed from render `old` to render `new`: one [`ObjectDiff`] per
/// object added, removed or changed (sorted by kind, namespace, name), and
/// how many objects are the same in both. Objects are matched by API group,
/// kind, namespace and name; a Secret value that changed shows as
/// `*** (changed)`, never its content.
pub fn diff(old: &[Value], new: &[Value]) -> (Vec<ObjectDiff>, usize) {
    let index = |objects: &[Value]| -> BTreeMap<ObjectKey, Value> {
        objects.iter().map(|o| (key_of(o), o.clone())).collect()
    };
    let (old, new) = (index(old), index(new));
    let mut keys: Vec<&ObjectKey> = old.keys().chain(new.keys()).collect();
    keys.sort_by(|a, b| {
        (&a.kind, &a.namespace, &a.name, &a.group).cmp(&(&b.kind, &b.namespace, &b.name, &b.group))
    });
    keys.dedup();
    let mut diffs = Vec::new();
    let mut same = 0;
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a == b {
            same += 1;
            continue;
        }
        let (a_text, b_text) = match (a, b) {
            (Some(a), Some(b)) => {
                let (a, b) = masked_pair(a, b);
                (object_yaml(&a), object_yaml(&b))
            }
            (Some(a), None) => (object_yaml(&mask(a)), String::new()),
            (None, Some(b)) => (String::new(), object_yaml(&mask(b))),
            (None, None) => continue,
        };
        let label = describe(key);
        let text = similar::TextDiff::from_lines(&a_text, &b_text)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{label}"), &format!("b/{label}"))
            .to_string();
        let object = b.or(a).unwrap_or(&Value::Null);
        diffs.push(ObjectDiff {
            api_version: object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kind: key.kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            change: match (a, b) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                _ => Change::Changed,
            },
            diff: text,
        });
    }
    (diffs, same)
}

/// Both sides masked; where a Secret's value differs, the newer side says
/// `*** (changed)`.
fn masked_pair(a: &Value, b: &Value) -> (Value, Value) {
    let (ma, mut mb) = (mask(a), mask(b));
    if is_secret(a) && is_secret(b) {
        for field in ["data", "stringData"] {
            let old = a.get(field).and_then(Value::as_object);
            if let (Some(old), Some(Value::Object(values))) = (old, mb.get_mut(field)) {
                for (k, v) in values.iter_mut() {
                    let raw_new = b.get(field).and_then(|d| d.get(k));
                    if old.contains_key(k) && old.get(k) != raw_new {
                        *v = Value::String(format!("{MASK} (changed)"));
                    }
                }
            }
        }
    }
    (ma, mb)
}

fn key_of(object: &Value) -> ObjectKey {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let metadata = object.get("metadata");
    ObjectKey {
        group: group_of(&text(object.get("apiVersion"))).to_string(),
        kind: text(object.get("kind")),
        namespace: metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string),
        name: text(metadata.and_then(|m| m.get("name"))),
    }
}

/// `Deployment/prod/web`, `Namespace/prod`.
fn describe(key: &ObjectKey) -> String {
    match &key.namespace {
        Some(ns) => format!("{}/{ns}/{}", key.kind, key.name),
        None => format!("{}/{}", key.kind, key.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "prod"},
               "data": {"password": value, "user": "YWRtaW4="}})
    }

    #[test]
    fn packs_and_unpacks() {
        let objects = vec![
            secret("c2VjcmV0"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}),
        ];
        let packed = PackedManifests::pack(&objects).unwrap();
        assert_eq!(packed.unpack().unwrap(), objects);
        assert!(!format!("{packed:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn corrupt_bytes_are_an_error() {
        let err = PackedManifests::from_bytes(b"not gzip".to_vec())
            .unpack()
            .unwrap_err();
        assert!(matches!(err, ManifestsError::Corrupt(_)), "{err}");
    }

    #[test]
    fn secrets_and_url_credentials_are_masked() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
                        "data": {"url": "postgres://app:hunter2@db:5432/app", "plain": "x"}});
        let yaml = to_yaml(&[secret("c2VjcmV0"), cm]);
        assert!(
            !yaml.contains("c2VjcmV0") && !yaml.contains("YWRtaW4="),
            "{yaml}"
        );
        assert!(!yaml.contains("hunter2"), "{yaml}");
        assert!(
            yaml.contains("password: '***'") || yaml.contains("password: \"***\""),
            "{yaml}"
        );
        assert!(yaml.contains("plain: x"), "{yaml}");
        assert_eq!(yaml.matches("---\n").count(), 2);
    }

    #[test]
    fn diff_names_each_changed_object_and_hides_secret_values() {
        let deploy = |image: &str| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "prod"},
                   "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
        };
        let extra = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra", "namespace": "prod"}});
        let old = vec![deploy("web:1"), secret("b2xk")];
        let new = vec![deploy("web:2"), secret("bmV3"), extra];
        let (diffs, same) = diff(&old, &new);
        assert_eq!(same, 0);
        let kinds: Vec<(&str, Change)> =
            diffs.iter().map(|d| (d.kind.as_str(), d.change)).collect();
        assert_eq!(
            kinds,
            vec![
                ("ConfigMap", Change::Added),
                ("Deployment", Change::Changed),
                ("Secret", Change::Changed)
            ]
        );
        let deployment = &diffs[1].diff;
        assert!(
            deployment.contains("-") && deployment.contains("image: web:1"),
            "{deployment}"
        );
        assert!(
            deployment.contains("+") && deployment.contains("image: web:2"),
            "{deployment}"
        );
        assert!(
            deployment.starts_with("--- a/Deployment/prod/web\n+++ b/Deployment/prod/web\n"),
            "{deployment}"
        );
        let secret_diff = &diffs[2].diff;
        assert!(secret_diff.contains("*** (changed)"), "{secret_diff}");
        assert!(
            !secret_diff.contains("b2xk") && !secret_diff.contains("bmV3"),
            "{secret_diff}"
        );
        assert!(
            !secret_diff.contains("user: '*** (changed)'"),
            "an unchanged value is not marked: {secret_diff}"
        );
        let (none, same) = diff(&new, &new);
        assert!(none.is_empty());
        assert_eq!(same, 3);
    }
}
