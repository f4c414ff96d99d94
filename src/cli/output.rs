//! Human output of the CLI: hand-padded tables and `key: value` lists made
//! from the server's JSON. Missing or null values show as `-`, so a field the
//! server does not send (an older server) never breaks the output.

use chump_jobs::inventory::{Inventory, InventoryObject};
use chump_jobs::rollback::short;
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
    "auto_rollback",
    "service_account",
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
    "pinned",
    "pinned_reason",
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
    "rollback_to",
    "in_flight",
];

/// Fields of a history entry in display order (`objects` follows as a
/// list); any others follow, sorted.
const ENTRY_FIELDS: &[&str] = &[
    "id",
    "source_id",
    "namespace",
    "deployment_name",
    "container_name",
    "trigger",
    "started_at",
    "finished_at",
    "outcome",
    "stage",
    "commit",
    "desired_image",
    "running_image",
    "message",
    "rollback_to",
    "manifests",
];

/// `GET /api/sources` as a table. A source being deleted shows `deleting`
/// as its last outcome (`chump status ID` has the outcome of its last try);
/// a pinned one (after a rollback) the commit it stays away from.
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
                match st["pinned"]["commit"].as_str() {
                    Some(commit) => cell(&Value::String(short(commit).to_string())),
                    None => "-".into(),
                },
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
            "PINNED",
        ],
        &rows,
    )
}

/// `GET /api/notifications` as a table (URLs as the server masks them).
pub fn notification_targets(v: &Value) -> String {
    let targets = v["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if targets.is_empty() {
        return "no notification targets (CHUMP_NOTIFY_CONFIG is not set)\n".into();
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            let kind = match t["provider"].as_str() {
                Some(p) => format!("{}/{p}", text(&t["type"])),
                None => text(&t["type"]),
            };
            let events: Vec<String> = t["events"]
                .as_array()
                .map(|e| e.iter().map(text).collect())
                .unwrap_or_default();
            vec![
                cell(&t["name"]),
                kind,
                cell(&t["url"]),
                events.join(","),
                cell(&t["queued"]),
                cell(&t["delivered"]),
                cell(&t["failed"]),
                cell(&t["dropped"]),
                match t["last"]["result"].as_str() {
                    Some(r) => format!("{r} {}", time_cell(&t["last"]["at"])),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TYPE",
            "URL",
            "EVENTS",
            "QUEUED",
            "DELIVERED",
            "FAILED",
            "DROPPED",
            "LAST",
        ],
        &rows,
    )
}

/// `POST /api/notifications/{target}/test`.
pub fn notification_test(v: &Value) -> String {
    let mut out = format!("{}: {}", text(&v["target"]), text(&v["result"]));
    if !v["status"].is_null() {
        out.push_str(&format!(" (HTTP {})", text(&v["status"])));
    }
    if let Some(e) = v["error"].as_str() {
        out.push_str(&format!(": {e}"));
    }
    out.push('\n');
    out
}

/// One source as `key: value` lines (its status indented, when present).
/// `auto_rollback: default`: the server's CHUMP_AUTO_ROLLBACK decides;
/// `service_account: (server default)`: the server's
/// CHUMP_DEFAULT_SERVICE_ACCOUNT, if any (`default` is a ServiceAccount's name).
pub fn source(v: &Value) -> String {
    let mut shown = v.clone();
    if let Some(a) = shown.get_mut("auto_rollback").filter(|a| a.is_null()) {
        *a = Value::String("default".into());
    }
    if let Some(a) = shown.get_mut("service_account").filter(|a| a.is_null()) {
        *a = Value::String("(server default)".into());
    }
    let mut out = fields(&shown, SOURCE_FIELDS, &["status"], "");
    if let Some(st) = v.get("status").filter(|s| s.is_object()) {
        out.push_str("status:\n");
        out.push_str(&fields(&status_view(st), STATUS_FIELDS, &[], "  "));
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

/// `POST /api/sources/{id}/check`, `/rollback` and `/unpin`: the message,
/// the result and when, and for a rollback the entry and commit it goes to.
pub fn queued(v: &Value) -> String {
    let mut out = message(v);
    out.push_str(&format!("result:    {}\n", text(&v["result"])));
    out.push_str(&format!("queued_at: {}\n", text(&v["queued_at"])));
    if let Some(to) = v.get("to") {
        out.push_str(&format!("to:        {}\n", text(to)));
        out.push_str(&format!("commit:    {}\n", text(&v["commit"])));
    }
    out
}

/// `GET /api/sources/{id}/status`.
pub fn status(v: &Value) -> String {
    fields(&status_view(v), STATUS_FIELDS, &[], "")
}

/// A status with its pin as two lines: `pinned` (the commit, short, since
/// when, and the rollback's entry) and `pinned_reason` (null and null when
/// not pinned; neither from a server without pins).
fn status_view(v: &Value) -> Value {
    let mut shown = v.as_object().cloned().unwrap_or_default();
    if let Some(pin) = shown.remove("pinned") {
        let (pinned, reason) = match pin.as_object() {
            Some(p) => {
                let mut line = p
                    .get("commit")
                    .and_then(Value::as_str)
                    .map_or_else(|| "-".to_string(), |c| short(c).to_string());
                if let Some(since) = p.get("since").filter(|s| !s.is_null()) {
                    line.push_str(&format!(" since {}", time_cell(since)));
                }
                if let Some(entry) = p.get("entry").and_then(Value::as_i64) {
                    line.push_str(&format!(" (entry {entry})"));
                }
                (
                    Value::String(line),
                    p.get("reason").cloned().unwrap_or(Value::Null),
                )
            }
            None => (Value::Null, Value::Null),
        };
        shown.insert("pinned".into(), pinned);
        shown.insert("pinned_reason".into(), reason);
    }
    Value::Object(shown)
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
    let mut all = status_view(v).as_object().cloned().unwrap_or_default();
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
    history_table(v, all, "no history\n")
}

/// `GET /api/history?at=`: the entry live at that time, per source.
pub fn history_at(v: &Value) -> String {
    history_table(v, true, "nothing was live then\n")
}

fn history_table(v: &Value, all: bool, empty: &str) -> String {
    let entries = v["history"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = if entries.is_empty() {
        empty.to_string()
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

/// `GET /api/history/{id}` as `key: value` lines (its manifests state and
/// `rollback_to` always, `-` when absent), the objects it applied one per
/// line, then a blank line and `manifests`: the YAML, or why there is none.
pub fn history_entry(v: &Value, manifests: Result<&str, &str>) -> String {
    let mut shown = v.as_object().cloned().unwrap_or_default();
    for key in ["rollback_to", "manifests"] {
        shown.entry(key).or_insert(Value::Null);
    }
    let objects = shown.remove("objects");
    let mut out = fields(&Value::Object(shown), ENTRY_FIELDS, &[], "");
    match objects.as_ref().and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            out.push_str("objects:\n");
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|o| {
                    vec![
                        cell(&o["action"]),
                        cell(&o["api_version"]),
                        cell(&o["kind"]),
                        object_name(o),
                    ]
                })
                .collect();
            for line in table(&["", "", "", ""], &rows).lines().skip(1) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        _ => out.push_str("objects: none\n"),
    }
    out.push('\n');
    match manifests {
        Ok(yaml) => {
            out.push_str(yaml);
            if !yaml.ends_with('\n') {
                out.push('\n');
            }
        }
        Err(why) => out.push_str(&format!("no manifests: {why}\n")),
    }
    out
}

/// `GET /api/history/{id}/diff`: per object a header line (`changed
/// Deployment shop/web (apps/v1)`) and its unified diff, then a summary.
pub fn diff(v: &Value) -> String {
    let objects = v["objects"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = String::new();
    for o in objects {
        out.push_str(&format!(
            "{} {} {} ({})\n",
            cell(&o["change"]),
            cell(&o["kind"]),
            object_name(o),
            cell(&o["api_version"])
        ));
        let text = text(&o["diff"]);
        out.push_str(&text);
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    if !objects.is_empty() {
        out.push('\n');
    }
    let n = objects.len();
    let counted = format!(
        "{n} object{} changed, {} unchanged",
        if n == 1 { "" } else { "s" },
        text(&v["unchanged"])
    );
    match v["against"].as_i64() {
        Some(against) => {
            let commit = v["against_commit"]
                .as_str()
                .map(|c| format!(" (commit {})", cell(&Value::String(short(c).to_string()))))
                .unwrap_or_default();
            out.push_str(&format!("{counted}, against entry {against}{commit}\n"));
        }
        None => out.push_str(&format!(
            "{counted}, against nothing: every object is added\n"
        )),
    }
    out
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn object_name(o: &Value) -> String {
    match o["namespace"].as_str() {
        Some(ns) => cell(&Value::String(format!("{ns}/{}", text(&o["name"])))),
        None => cell(&o["name"]),
    }
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

    #[test]
    fn status_shows_the_pin_and_why() {
        let st = json!({"source_id": 1, "health": "healthy", "health_reason": null,
            "pinned": {"commit": "0123456789abcdef", "reason": "rolled back to entry 2 (commit fedcba9)",
                "entry": 5, "since": "2026-01-31T12:00:00.25Z"},
            "rollback_to": null, "last_outcome": "rolled_back"});
        let out = status(&st);
        assert!(
            out.contains("pinned:        0123456 since 2026-01-31T12:00:00Z (entry 5)\n"),
            "{out}"
        );
        assert!(
            out.contains("pinned_reason: rolled back to entry 2 (commit fedcba9)\n"),
            "{out}"
        );
        assert!(out.contains("rollback_to:   -\n"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[3].starts_with("pinned:"), "{out}");
        // Not pinned: shown as such.
        let st = json!({"source_id": 1, "pinned": null, "rollback_to": 4});
        let out = status(&st);
        assert!(
            out.contains("pinned:        -\n") && out.contains("pinned_reason: -\n"),
            "{out}"
        );
        assert!(out.contains("rollback_to:   4\n"), "{out}");
        // The source table: the pinned commit, short.
        let row = |pinned: Value| {
            json!({"id": 1, "namespace": "shop", "deployment_name": "web", "container_name": "app",
                "branch": "main", "suspended": false, "deleting": false,
                "status": {"last_outcome": "rolled_back", "next_check_at": null, "pinned": pinned}})
        };
        let out = source_list(&json!({"sources": [
            row(json!({"commit": "0123456789abcdef", "reason": "r", "entry": 5, "since": "2026-01-31T12:00:00Z"})),
            row(Value::Null),
        ]}));
        let last: Vec<&str> = out
            .lines()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(last, ["PINNED", "0123456", "-"], "{out}");
        // A source: its auto_rollback, null as the server's default.
        let out = source(&json!({"id": 1, "prune": true, "auto_rollback": null}));
        assert!(out.contains("auto_rollback: default\n"), "{out}");
        let out = source(&json!({"id": 1, "prune": true, "auto_rollback": false}));
        assert!(out.contains("auto_rollback: false\n"), "{out}");
        let out = source(&json!({"id": 1, "service_account": null}));
        assert!(out.contains("service_account: (server default)\n"), "{out}");
        let out = source(&json!({"id": 1, "service_account": "team-a/deployer"}));
        assert!(out.contains("service_account: team-a/deployer\n"), "{out}");
    }

    #[test]
    fn an_entry_with_its_objects_and_manifests() {
        let e = json!({"id": 7, "source_id": 1, "namespace": "shop", "deployment_name": "web",
            "container_name": "app", "trigger": "manual", "outcome": "rolled_back", "stage": null,
            "commit": "abc", "message": "rolled back to entry 2", "rollback_to": 2, "manifests": "kept",
            "objects": [
                {"api_version": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web", "action": "configured"},
                {"api_version": "v1", "kind": "Namespace", "name": "shop", "action": "unchanged"}]});
        let out = history_entry(&e, Ok("---\nkind: Namespace\n"));
        assert!(out.starts_with("id:"), "{out}");
        assert!(out.contains("rollback_to:     2\n"), "{out}");
        assert!(out.contains("manifests:       kept\n"), "{out}");
        assert!(
            out.contains("objects:\n  configured  apps/v1  Deployment  shop/web\n  unchanged   v1       Namespace   shop\n"),
            "{out}"
        );
        assert!(out.ends_with("\n\n---\nkind: Namespace\n"), "{out}");
        // Not kept, and fields an older entry lacks: shown as `-`.
        let e = json!({"id": 8, "outcome": "failed", "objects": []});
        let out = history_entry(&e, Err("[WARN] History entry 8 applied no manifests"));
        assert!(out.contains("manifests:   -\n"), "{out}");
        assert!(out.contains("rollback_to: -\n"), "{out}");
        assert!(out.contains("objects: none\n"), "{out}");
        assert!(
            out.ends_with("\nno manifests: [WARN] History entry 8 applied no manifests\n"),
            "{out}"
        );
    }

    #[test]
    fn a_diff_with_headers_and_a_summary() {
        let d = json!({"entry": 5, "against": 3, "commit": "b", "against_commit": "0123456789",
            "unchanged": 2, "objects": [
                {"api_version": "apps/v1", "kind": "Deployment", "namespace": "shop", "name": "web",
                 "change": "changed", "diff": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-image: a\n+image: b\n"},
                {"api_version": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "extra",
                 "change": "added", "diff": "--- a/y\n+++ b/y\n@@ -0,0 +1 @@\n+kind: ConfigMap"}]});
        let out = diff(&d);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "changed Deployment shop/web (apps/v1)", "{out}");
        assert_eq!(lines[5], "+image: b", "{out}");
        assert_eq!(lines[6], "added ConfigMap shop/extra (v1)", "{out}");
        assert_eq!(lines[10], "+kind: ConfigMap", "{out}");
        assert_eq!(
            lines.last().copied(),
            Some("2 objects changed, 2 unchanged, against entry 3 (commit 0123456)"),
            "{out}"
        );
        let first = json!({"entry": 1, "against": null, "unchanged": 0, "objects": [
            {"api_version": "v1", "kind": "Namespace", "namespace": null, "name": "shop",
             "change": "added", "diff": "+kind: Namespace\n"}]});
        let out = diff(&first);
        assert!(out.starts_with("added Namespace shop (v1)\n"), "{out}");
        assert!(
            out.ends_with(
                "\n1 object changed, 0 unchanged, against nothing: every object is added\n"
            ),
            "{out}"
        );
        let same = json!({"entry": 4, "against": 3, "against_commit": null, "unchanged": 3, "objects": []});
        assert_eq!(
            diff(&same),
            "0 objects changed, 3 unchanged, against entry 3\n"
        );
    }

    #[test]
    fn a_queued_rollback_says_where_to() {
        let out = queued(
            &json!({"msg": "[INFO] Rollback to entry 2 (commit abc1234) queued",
            "result": "queued", "queued_at": "2026-01-31T12:00:00Z", "to": 2, "commit": "abc1234ff"}),
        );
        assert_eq!(
            out,
            "[INFO] Rollback to entry 2 (commit abc1234) queued\nresult:    queued\n\
             queued_at: 2026-01-31T12:00:00Z\nto:        2\ncommit:    abc1234ff\n"
        );
        // A check (or an unpin): no target lines.
        let out = queued(&json!({"msg": "m", "result": "queued", "queued_at": "t"}));
        assert_eq!(out, "m\nresult:    queued\nqueued_at: t\n");
    }
}
