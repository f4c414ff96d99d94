//! The inventory: what chump last applied for a source.
//!
//! After every deploy (and every check whose build turned out identical),
//! the store keeps, per source, the commit the inventory was built from,
//! the image the build gives the source's container, and every object of
//! that build with a digest of its rendered content. A check of a new
//! commit compares the new build's digests with these — not the cluster —
//! to decide whether anything changed; pruning (objects in the recorded
//! inventory that the new build lacks) and drift detection start from it.
//!
//! The inventory is written in the same store call as the check's result
//! ([`crate::store::Store::finish_check`], through
//! [`crate::history::CheckReport::inventory`]), so a crash between apply and
//! record leaves the previous recorded inventory in place.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// One object chump applied for a source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryObject {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// [`digest`] of the object as the build rendered it.
    pub digest: String,
    /// The commit whose deploy last changed (or created) this object.
    pub commit: String,
    /// `live_digest` (crate::cluster) of the object as the API
    /// server returned it from chump's apply: the fields chump manages and
    /// their values. `None`: not known (applied by an older chump, or the
    /// apply failed), so the next check applies it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// No longer rendered, but its deletion failed: the next check tries
    /// to prune it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune_pending: bool,
}

impl InventoryObject {
    /// What identifies the object in a cluster: API group (not version),
    /// kind, namespace and name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: group_of(&self.api_version).to_string(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// An object's identity across versions of its API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

/// "apps" of "apps/v1", "" of "v1".
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// Everything chump last applied for one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The commit whose build this is.
    pub commit: String,
    /// The image the build gives the source's container (None: the build
    /// has no such Deployment and container).
    #[serde(default)]
    pub desired_image: Option<String>,
    pub objects: Vec<InventoryObject>,
}

impl Inventory {
    /// How many objects of each kind ("Deployment" → 2), sorted by kind.
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for o in &self.objects {
            *counts.entry(o.kind.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

/// A digest of an object's rendered content: SHA-256 of its canonical JSON
/// (object keys sorted at every level, no whitespace), as lowercase hex.
pub fn digest(object: &Value) -> String {
    let mut canonical = Vec::with_capacity(512);
    write_canonical(object, &mut canonical);
    hex::encode(Sha256::digest(&canonical))
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digests_ignore_key_order_but_not_content() {
        let a = json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}, "data": {"a": "1", "b": "2"}});
        let b = json!({"data": {"b": "2", "a": "1"}, "metadata": {"namespace": "n", "name": "x"}, "kind": "ConfigMap"});
        assert_eq!(digest(&a), digest(&b));
        let c = json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}, "data": {"a": "1", "b": "3"}});
        assert_ne!(digest(&a), digest(&c));
        // Lists keep their order: it means something in Kubernetes.
        assert_ne!(digest(&json!({"l": [1, 2]})), digest(&json!({"l": [2, 1]})));
        // Types matter: "1" is not 1.
        assert_ne!(digest(&json!({"v": "1"})), digest(&json!({"v": 1})));
        assert_eq!(digest(&a).len(), 64);
    }

    #[test]
    fn keys_ignore_the_version() {
        let o = |v: &str| InventoryObject {
            api_version: v.into(),
            kind: "HorizontalPodAutoscaler".into(),
            namespace: Some("n".into()),
            name: "web".into(),
            digest: String::new(),
            commit: String::new(),
            live: None,
            prune_pending: false,
        };
        assert_eq!(o("autoscaling/v1").key(), o("autoscaling/v2").key());
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("apps/v1"), "apps");
    }
}
