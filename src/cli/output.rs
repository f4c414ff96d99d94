//! Human output of the CLI: hand-padded tables and `key: value` lists made
//! from the server's JSON. Missing or null values show as `-`, so a field the
//! server does not send (an older server) never breaks the output.

use chump_jobs::inventory::{Inventory, InventoryObject};
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Fields of a source in display order; any others follow, sorted.
const SOURCE_FIELDS: &[&str] = &[
    "id",
    "namespace",
    "deployment_name",
    "container_name",
    "git_url",
    "branch",
    "deploy_path",
    "image_version_file",
    "interval_seconds",
    "suspended",
    "prune",
    "deleting",
    "created_at",
    "updated_at",
];

/// Fields of a status in display order; any others follow, sorted.
const STATUS_FIELDS: &[&str] = &[
    "source_id",
    "suspended",
    "deleting",
    "health",
    "health_reason",
    "last_checked_at",
    "last_outcome",
    "last_stage",
    "last_commit",
    "last_message",
    "desired_image",
    "running_image",
    "consecutive_failures",
    "next_check_at",
    "requested",
    "in_flight",
];

/// `GET /api/sources` as a table. A source being deleted shows `deleting`
/// as its last outcome (`chump status ID` has the outcome of its last try).
pub fn source_list(v: &Value) -> String {
    let sources = v["sources"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if sources.is_empty() {
        return "no sources\n".into();
    }
    let rows: Vec<Vec<String>> = sources
        .iter()
        .map(|s| {
            let st = &s["status"];
            vec![
                cell(&s["id"]),
                cell(&s["namespace"]),
                cell(&s["deployment_name"]),
                cell(&s["container_name"]),
                cell(&s["branch"]),
                cell(&s["suspended"]),
                if s["deleting"] == Value::Bool(true) {
                    "deleting".to_string()
                } else {
                    cell(&st["last_outcome"])
                },
                time_cell(&st["next_check_at"]),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAMESPACE",
            "DEPLOYMENT",
            "CONTAINER",
            "BRANCH",
            "SUSPENDED",
            "LAST OUTCOME",
            "NEXT CHECK",
        ],
        &rows,
    )
}

/// One source as `key: value` lines (its status indented, when present).
pub fn source(v: &Value) -> String {
    let mut out = fields(v, SOURCE_FIELDS, &["status"], "");
    if let Some(st) = v.get("status").filter(|s| s.is_object()) {
        out.push_str("status:\n");
        out.push_str(&fields(st, STATUS_FIELDS, &[], "  "));
    }
    out
}

/// The answer of create or update: the message, then the source.
pub fn changed_source(v: &Value) -> String {
    let mut out = message(v);
    if let Some(s) = v.get("source") {
        out.push_str(&source(s));
    }
    out
}

/// The `msg` of an answer.
pub fn message(v: &Value) -> String {
    match v.get("msg") {
        Some(m) => format!("{}\n", text(m)),
        None => String::new(),
    }
}

/// `POST /api/sources/{id}/check`.
pub fn check(v: &Value) -> String {
    let mut out = message(v);
    out.push_str(&format!("result:    {}\n", text(&v["result"])));
    out.push_str(&format!("queued_at: {}\n", text(&v["queued_at"])));
    out
}

/// `GET /api/sources/{id}/status`.
pub fn status(v: &Value) -> String {
    fields(v, STATUS_FIELDS, &[], "")
}

/// `GET /api/sources/{id}/status`, then from `GET /api/sources/{id}/objects`
/// (when the server has it) the inventory's commit and its objects counted
/// by kind.
pub fn status_with_objects(v: &Value, objects: Option<&Value>) -> String {
    let Some(objects) = objects else {
        return status(v);
    };
    let inventory = inventory(objects);
    let counts = inventory.counts();
    let summary = if counts.is_empty() {
        "none".to_string()
    } else {
        let by_kind: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!("{} ({})", inventory.objects.len(), by_kind.join(", "))
    };
    let mut all = v.as_object().cloned().unwrap_or_default();
    all.insert("inventory_commit".into(), objects["commit"].clone());
    all.insert("objects".into(), Value::String(summary));
    let mut order = STATUS_FIELDS.to_vec();
    order.extend(["inventory_commit", "objects"]);
    fields(&Value::Object(all), &order, &[], "")
}

/// The objects answer as an [`Inventory`] (without digests: the API keeps them).
fn inventory(v: &Value) -> Inventory {
    let text = |o: &Value, k: &str| o[k].as_str().unwrap_or("-").to_string();
    Inventory {
        commit: v["commit"].as_str().unwrap_or_default().to_string(),
        desired_image: v["desired_image"].as_str().map(str::to_string),
        objects: v["objects"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .map(|o| InventoryObject {
                api_version: text(o, "api_version"),
                kind: text(o, "kind"),
                namespace: o["namespace"].as_str().map(str::to_string),
                name: text(o, "name"),
                digest: String::new(),
                commit: text(o, "commit"),
                live: None,
                prune_pending: false,
            })
            .collect(),
    }
}

/// A history page as a table; `all`: across sources (adds the target columns).
pub fn history(v: &Value, all: bool) -> String {
    let entries = v["history"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = if entries.is_empty() {
        "no history\n".to_string()
    } else {
        let mut header = vec!["ID"];
        if all {
            header.extend(["SOURCE", "NAMESPACE", "DEPLOYMENT"]);
        }
        header.extend([
            "STARTED", "TRIGGER", "OUTCOME", "STAGE", "COMMIT", "IMAGE", "MESSAGE",
        ]);
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                let mut row = vec![cell(&e["id"])];
                if all {
                    row.extend([
                        cell(&e["source_id"]),
                        cell(&e["namespace"]),
                        cell(&e["deployment_name"]),
                    ]);
                }
                let commit: String = cell(&e["commit"]).chars().take(12).collect();
                row.extend([
                    time_cell(&e["started_at"]),
                    cell(&e["trigger"]),
                    cell(&e["outcome"]),
                    cell(&e["stage"]),
                    commit,
                    cell(&e["desired_image"]),
                    shorten(&cell(&e["message"]), 60),
                ]);
                row
            })
            .collect();
        table(&header, &rows)
    };
    if let Some(next) = v["next_before"].as_i64() {
        out.push_str(&format!("(more: add --before {next})\n"));
    }
    out
}

/// A value as one table cell: strings bare, null as `-`, no control characters.
fn cell(v: &Value) -> String {
    let s = text(v);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A value as text: strings bare, null or missing as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An RFC 3339 time without its fraction of a second, for tables.
fn time_cell(v: &Value) -> String {
    let Some(raw) = v.as_str() else {
        return cell(v);
    };
    let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) else {
        return cell(v);
    };
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| raw.to_string())
}

/// Cuts `s` to `max` characters, marking the cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `key: value` lines of an object: `order` first, then the rest sorted,
/// leaving out `skip`; values aligned.
fn fields(v: &Value, order: &[&str], skip: &[&str], indent: &str) -> String {
    let empty = Map::new();
    let obj = v.as_object().unwrap_or(&empty);
    let mut keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let mut rest: Vec<&str> = obj
        .keys()
        .map(String::as_str)
        .filter(|k| !order.contains(k) && !skip.contains(k))
        .collect();
    rest.sort_unstable();
    keys.extend(rest);
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for k in keys {
        let value = match &obj[k] {
            Value::Object(_) | Value::Array(_) => obj[k].to_string(),
            other => cell(other),
        };
        out.push_str(&format!("{indent}{:<width$} {value}\n", format!("{k}:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_shows_health_and_why_first() {
        let st = json!({"source_id": 3, "suspended": false, "deleting": false,
            "last_outcome": "degraded", "last_stage": null,
            "last_message": "Deployment shop/web: pod web-1 container app: ImagePullBackOff",
            "health": "degraded",
            "health_reason": "Deployment shop/web: pod web-1 container app: ImagePullBackOff"});
        let out = status(&st);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[3], "health:        degraded", "{out}");
        assert_eq!(
            lines[4],
            "health_reason: Deployment shop/web: pod web-1 container app: ImagePullBackOff",
            "{out}"
        );
        assert!(lines[5].starts_with("last_outcome:  degraded"), "{out}");
        // An older server without health: nothing made up.
        let old = json!({"source_id": 3, "last_outcome": "failed"});
        assert!(!status(&old).contains("health"), "{}", status(&old));
    }

    #[test]
    fn the_source_table_shows_every_outcome() {
        let row = |id: i64, outcome: &str| {
            json!({"id": id, "namespace": "shop", "deployment_name": format!("w{id}"),
                "container_name": "app", "branch": "main", "suspended": false, "deleting": false,
                "status": {"last_outcome": outcome, "next_check_at": "2026-01-31T12:00:00.5Z"}})
        };
        let v =
            json!({"sources": [row(1, "degraded"), row(2, "superseded"), row(3, "up_to_date")]});
        let out = source_list(&v);
        let outcomes: Vec<&str> = out
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(6).unwrap())
            .collect();
        assert_eq!(outcomes, ["degraded", "superseded", "up_to_date"], "{out}");
    }

    #[test]
    fn status_with_objects_counts_them_by_kind() {
        let st = json!({"source_id": 1, "suspended": false, "last_outcome": "deployed"});
        let objects = json!({"source_id": 1, "commit": "abc123", "desired_image": "nginx:1", "objects": [
            {"api_version": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web", "commit": "abc123"},
            {"api_version": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "a", "commit": "abc123"},
            {"api_version": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "b", "commit": "0ld"},
            {"api_version": "v1", "kind": "Namespace", "namespace": null, "name": "shop", "commit": "abc123"},
        ]});
        let out = status_with_objects(&st, Some(&objects));
        assert!(out.contains("inventory_commit: abc123\n"), "{out}");
        assert!(
            out.contains("objects:          4 (ConfigMap 2, Deployment 1, Namespace 1)\n"),
            "{out}"
        );
        assert!(out.starts_with("source_id:"), "{out}");
        let none = json!({"source_id": 1, "commit": null, "desired_image": null, "objects": []});
        let out = status_with_objects(&st, Some(&none));
        assert!(
            out.contains("inventory_commit: -\n") && out.contains("objects:          none\n"),
            "{out}"
        );
        // An older server without the route: the status alone.
        assert_eq!(status_with_objects(&st, None), status(&st));
    }
}
