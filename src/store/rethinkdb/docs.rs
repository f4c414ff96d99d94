//! chump's documents in RethinkDB: sources (chump's and the Python tool's),
//! statuses, history entries, and the write results RethinkDB answers with.

use chump_jobs::history::{CheckReport, HistoryEntry};
use chump_jobs::inventory::Inventory;
use chump_jobs::manifests::PackedManifests;
use chump_jobs::rollback::Pin;
use chump_jobs::source::{Source, SourceId, SourceSpec};
use chump_jobs::store::{SourceStatus, StoreError, StoreResult};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::terms::{as_int, from_ms, opt_int, opt_str, parse_opt, wall_ms};

pub(super) fn target_key(spec: &SourceSpec) -> String {
    format!(
        "{}/{}/{}",
        spec.namespace, spec.deployment_name, spec.container_name
    )
}

pub(super) fn duplicate(spec: &SourceSpec) -> StoreError {
    StoreError::Duplicate(format!(
        "{}/{} container {}",
        spec.namespace, spec.deployment_name, spec.container_name
    ))
}

pub(super) fn bad_doc(what: &str, id: &Value, why: &str) -> StoreError {
    StoreError::Backend(format!("{what} document {id} {why}"))
}

/// A source document (chump's or the Python tool's) as a [`Source`].
pub(super) fn source_from_doc(doc: &Value) -> StoreResult<Source> {
    let raw_id = doc.get("id").cloned().unwrap_or(Value::Null);
    let id = as_int(&raw_id)
        .filter(|id| *id >= 1)
        .ok_or_else(|| bad_doc("source", &raw_id, "has no integer id"))?;
    let text = |name: &str| {
        opt_str(doc, name).ok_or_else(|| bad_doc("source", &raw_id, &format!("has no text {name}")))
    };
    let interval_seconds = match doc.get("interval_seconds") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            as_int(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad_doc("source", &raw_id, "has a bad interval_seconds"))?,
        ),
    };
    let created_at = opt_int(doc, "created_at").map_or(OffsetDateTime::UNIX_EPOCH, from_ms);
    Ok(Source {
        id,
        spec: SourceSpec {
            namespace: text("namespace")?,
            deployment_name: text("deployment_name")?,
            git_url: text("git_url")?,
            branch: text("branch")?,
            deploy_path: text("deploy_path")?,
            container_name: text("container_name")?,
            image_version_file: text("image_version_file")?,
            interval_seconds,
            suspended: doc
                .get("suspended")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            // The Python tool's documents have none of these: pruning on,
            // the service's auto-rollback default, the service's account
            // (or chump's own), not being deleted.
            prune: doc.get("prune").and_then(Value::as_bool).unwrap_or(true),
            auto_rollback: doc.get("auto_rollback").and_then(Value::as_bool),
            service_account: doc
                .get("service_account")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
        revision: opt_int(doc, "revision").unwrap_or(1),
        created_at,
        updated_at: opt_int(doc, "updated_at").map_or(created_at, from_ms),
        deleting: is_deleting(doc),
    })
}

/// Whether a source (or status) document is marked `deleting` (a missing
/// field: no).
pub(super) fn is_deleting(doc: &Value) -> bool {
    doc.get("deleting")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

pub(super) fn spec_fields(spec: &SourceSpec) -> serde_json::Map<String, Value> {
    let v = json!({
        "namespace": spec.namespace,
        "deployment_name": spec.deployment_name,
        "git_url": spec.git_url,
        "branch": spec.branch,
        "deploy_path": spec.deploy_path,
        "container_name": spec.container_name,
        "image_version_file": spec.image_version_file,
        "interval_seconds": spec.interval_seconds,
        "suspended": spec.suspended,
        "prune": spec.prune,
        "auto_rollback": spec.auto_rollback,
        "service_account": spec.service_account,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

/// A fresh status document of `source`: due at `next_check_at`, no lease,
/// no check yet, with copies of its `suspended`, `deleting` and `revision`.
pub(super) fn new_status(source: &Source, next_check_at: i64) -> Value {
    json!({
        "source_id": source.id,
        "next_check_at": next_check_at,
        "requested_trigger": null,
        "lease_owner": null,
        "lease_until": null,
        "last_checked_at": null,
        "last_commit": null,
        "last_outcome": null,
        "last_stage": null,
        "last_message": null,
        "desired_image": null,
        "running_image": null,
        "consecutive_failures": 0,
        "pinned_commit": null,
        "pinned_reason": null,
        "pinned_entry": null,
        "pinned_at": null,
        "rollback_to": null,
        "rollback_trigger": null,
        "suspended": source.spec.suspended,
        "deleting": source.deleting,
        "revision": source.revision,
    })
}

pub(super) fn status_from_doc(doc: &Value) -> StoreResult<(SourceId, SourceStatus)> {
    let raw_id = doc.get("source_id").cloned().unwrap_or(Value::Null);
    let id = as_int(&raw_id).ok_or_else(|| bad_doc("status", &raw_id, "has no source_id"))?;
    let now = wall_ms();
    Ok((
        id,
        SourceStatus {
            last_checked_at: opt_int(doc, "last_checked_at").map(from_ms),
            last_commit: opt_str(doc, "last_commit"),
            last_outcome: parse_opt(opt_str(doc, "last_outcome")),
            last_stage: parse_opt(opt_str(doc, "last_stage")),
            last_message: opt_str(doc, "last_message"),
            desired_image: opt_str(doc, "desired_image"),
            running_image: opt_str(doc, "running_image"),
            consecutive_failures: opt_int(doc, "consecutive_failures")
                .unwrap_or(0)
                .clamp(0, u32::MAX as i64) as u32,
            next_check_at: opt_int(doc, "next_check_at").map(from_ms),
            requested: parse_opt(opt_str(doc, "requested_trigger")),
            in_flight: opt_int(doc, "lease_until").is_some_and(|t| t > now),
            in_flight_until: opt_int(doc, "lease_until")
                .filter(|t| *t > now)
                .map(from_ms),
            pinned: opt_str(doc, "pinned_commit").map(|commit| Pin {
                commit,
                reason: opt_str(doc, "pinned_reason").unwrap_or_default(),
                entry: opt_int(doc, "pinned_entry"),
                since: from_ms(opt_int(doc, "pinned_at").unwrap_or(0)),
            }),
            rollback_to: opt_int(doc, "rollback_to"),
        },
    ))
}

pub(super) fn history_from_doc(doc: &Value) -> StoreResult<HistoryEntry> {
    let raw_id = doc.get("id").cloned().unwrap_or(Value::Null);
    let bad = |why: &str| bad_doc("history", &raw_id, why);
    let text = |name: &str| opt_str(doc, name).ok_or_else(|| bad(&format!("has no {name}")));
    let int = |name: &str| opt_int(doc, name).ok_or_else(|| bad(&format!("has no {name}")));
    let trigger = text("trigger")?;
    let outcome = text("outcome")?;
    Ok(HistoryEntry {
        id: int("id")?,
        namespace: text("namespace")?,
        deployment_name: text("deployment_name")?,
        container_name: text("container_name")?,
        manifests: parse_opt(opt_str(doc, "manifests")),
        report: CheckReport {
            source_id: int("source_id")?,
            trigger: trigger
                .parse()
                .map_err(|_| bad(&format!("has trigger '{trigger}'")))?,
            started_at: from_ms(int("started_at")?),
            finished_at: from_ms(int("finished_at")?),
            commit: opt_str(doc, "commit"),
            desired_image: opt_str(doc, "desired_image"),
            running_image: opt_str(doc, "running_image"),
            outcome: outcome
                .parse()
                .map_err(|_| bad(&format!("has outcome '{outcome}'")))?,
            stage: parse_opt(opt_str(doc, "stage")),
            message: opt_str(doc, "message"),
            objects: doc
                .get("objects")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            inventory: None,
            rollback_to: opt_int(doc, "rollback_to"),
            manifests: None,
            pin: Default::default(),
            rollback_wanted: false,
        },
    })
}

/// The inventory document of source `id`: the [`Inventory`]'s fields and
/// `source_id`, the primary key.
pub(super) fn inventory_doc(id: SourceId, inv: &Inventory) -> StoreResult<Value> {
    let mut doc = serde_json::to_value(inv)
        .map_err(|e| StoreError::Backend(format!("an inventory as JSON: {e}")))?;
    match doc.as_object_mut() {
        Some(m) => {
            m.insert("source_id".into(), id.into());
        }
        None => return Err(StoreError::Backend("an inventory is not an object".into())),
    }
    Ok(doc)
}

pub(super) fn inventory_from_doc(doc: &Value) -> StoreResult<(SourceId, Inventory)> {
    let raw_id = doc.get("source_id").cloned().unwrap_or(Value::Null);
    let id = as_int(&raw_id).ok_or_else(|| bad_doc("inventory", &raw_id, "has no source_id"))?;
    let inv = serde_json::from_value(doc.clone())
        .map_err(|e| bad_doc("inventory", &raw_id, &format!("is not an inventory: {e}")))?;
    Ok((id, inv))
}

/// Manifests as a RethinkDB binary value (the `BINARY` pseudo-type, which
/// the server stores as bytes and answers with again).
pub(super) fn binary(bytes: &[u8]) -> Value {
    json!({"$reql_type$": "BINARY", "data": base64_encode(bytes)})
}

/// The manifests in a binary value read back ([`binary`]); None when it is
/// not one.
pub(super) fn manifests_from_binary(v: &Value) -> Option<PackedManifests> {
    if v.get("$reql_type$").and_then(Value::as_str) != Some("BINARY") {
        return None;
    }
    let data = v.get("data").and_then(Value::as_str)?;
    base64_decode(data).map(PackedManifests::from_bytes)
}

/// Standard base64 with padding, as RethinkDB's pseudo-type carries it.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of standard base64 (the server breaks its lines every 76
/// characters: line breaks are skipped); None for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let joined: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .ok()
}

/// A write result's counter (`inserted`, `replaced`, `skipped`, …).
pub(super) fn count(result: &Value, name: &str) -> i64 {
    result.get(name).and_then(as_int).unwrap_or(0)
}

/// A write result without errors, or the first error as a backend error.
pub(super) fn no_errors(result: &Value, what: &str) -> StoreResult<()> {
    if count(result, "errors") == 0 {
        return Ok(());
    }
    let first = result
        .get("first_error")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    Err(StoreError::Backend(format!("{what}: {first}")))
}

/// The first `new_val` / `old_val` of a write with `return_changes`.
pub(super) fn change<'a>(result: &'a Value, which: &str) -> Option<&'a Value> {
    result
        .get("changes")?
        .as_array()?
        .first()?
        .get(which)
        .filter(|v| !v.is_null())
}

/// What an insert with the default `conflict: "error"` did.
pub(super) enum Inserted {
    Yes,
    Conflict,
}

pub(super) fn inserted(result: &Value, what: &str) -> StoreResult<Inserted> {
    if count(result, "inserted") >= 1 {
        return Ok(Inserted::Yes);
    }
    let first = result
        .get("first_error")
        .and_then(Value::as_str)
        .unwrap_or("no document inserted");
    if first.contains("Duplicate primary key") {
        Ok(Inserted::Conflict)
    } else {
        Err(StoreError::Backend(format!("inserting {what}: {first}")))
    }
}

pub(super) fn is_already_exists(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(m) | StoreError::Unavailable(m) if m.contains("already exists"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64_encode(&bytes);
            assert_eq!(text.len(), len.div_ceil(3) * 4);
            assert_eq!(base64_decode(&text), Some(bytes), "{text}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm9v\r\nYg=="), Some(b"foob".to_vec()));
        assert_eq!(base64_decode("Zm9*"), None);
        assert_eq!(base64_decode("Zg=a"), None);
    }

    #[test]
    fn manifests_are_binary_values() {
        let packed = PackedManifests::pack(&[json!({"kind": "ConfigMap"})]).unwrap();
        let v = binary(packed.as_bytes());
        assert_eq!(v["$reql_type$"], "BINARY");
        assert_eq!(manifests_from_binary(&v), Some(packed));
        assert_eq!(manifests_from_binary(&json!("abc")), None);
    }
}
