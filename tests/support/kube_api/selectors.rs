//! Label and field selectors as the API server parses and applies them.
//!
//! Label selectors (`labels.Parse`): `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists) and
//! `!key` (absent), joined by commas; `!=` and `notin` also match objects
//! without the label. A `metav1.LabelSelector` (`matchLabels`,
//! `matchExpressions`) is matched by [`selector_matches`].
//!
//! Field selectors (`fields.ParseSelector`): `=`, `==` and `!=` only, on the
//! fields each kind supports — `metadata.name` and `metadata.namespace`
//! everywhere, plus the kind's own (`GetAttrs` of its registry strategy):
//! Pods `spec.nodeName`, `spec.restartPolicy`, `spec.schedulerName`,
//! `spec.serviceAccountName`, `spec.hostNetwork`, `status.phase`,
//! `status.podIP`, `status.nominatedNodeName`; Events `involvedObject.*`,
//! `reason`, `reportingComponent`, `source`, `type`; Secrets `type`;
//! Namespaces `status.phase`; Nodes `spec.unschedulable`; ReplicaSets
//! `status.replicas`; Jobs `status.successful`; Services `spec.clusterIP`,
//! `spec.type`. Any other field is a 400 `field label not supported`, and a
//! supported field an object lacks has the value `""`.

use serde_json::Value;

use super::{bad_request, KindSpec, Res};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    Absent,
}

/// One requirement of a selector.
#[derive(Debug, Clone)]
pub(super) struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    /// Whether a label (or field) with value `actual` (`None`: absent)
    /// satisfies the requirement.
    pub fn matches(&self, actual: Option<String>) -> bool {
        match self.op {
            Op::Eq | Op::In => actual.is_some_and(|a| self.values.contains(&a)),
            Op::NotEq | Op::NotIn => actual.is_none_or(|a| !self.values.contains(&a)),
            Op::Exists => actual.is_some(),
            Op::Absent => actual.is_none(),
        }
    }
}

/// Split on the commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn unparsable(part: &str, why: &str) -> super::Failure {
    bad_request(format!("unable to parse requirement: {why}: {part:?}"))
}

/// A label selector string.
pub(super) fn parse_labels(s: &str) -> Res<Vec<Requirement>> {
    let mut out = Vec::new();
    for part in split_top(s) {
        let req = if let Some(open) = part.find('(') {
            let close = part
                .rfind(')')
                .filter(|c| *c == part.len() - 1)
                .ok_or_else(|| unparsable(part, "found end of string, expected: ')'"))?;
            let head = part[..open].trim();
            let (key, op) = if let Some(k) = head.strip_suffix(" notin") {
                (k.trim(), Op::NotIn)
            } else if let Some(k) = head.strip_suffix(" in") {
                (k.trim(), Op::In)
            } else {
                return Err(unparsable(part, "expected: in, notin"));
            };
            let values: Vec<String> = part[open + 1..close]
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() && op == Op::In {
                return Err(unparsable(
                    part,
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Requirement {
                key: key.to_string(),
                op,
                values,
            }
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement {
                key: k.trim().into(),
                op: Op::NotEq,
                values: vec![v.trim().into()],
            }
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement {
                key: k.trim().into(),
                op: Op::Eq,
                values: vec![v.trim().into()],
            }
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement {
                key: k.trim().into(),
                op: Op::Eq,
                values: vec![v.trim().into()],
            }
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement {
                key: k.trim().into(),
                op: Op::Absent,
                values: Vec::new(),
            }
        } else {
            Requirement {
                key: part.into(),
                op: Op::Exists,
                values: Vec::new(),
            }
        };
        if !valid_key(&req.key) {
            return Err(unparsable(part, "invalid label key"));
        }
        if let Some(bad) = req.values.iter().find(|v| !valid_value(v)) {
            return Err(bad_request(format!(
                "unable to parse requirement: values[0][{}]: Invalid value: {bad:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                req.key
            )));
        }
        out.push(req);
    }
    Ok(out)
}

/// The field labels kind `k` can be selected by, beyond `metadata.name` and
/// `metadata.namespace`.
fn kind_fields(k: &KindSpec) -> &'static [&'static str] {
    match (k.group, k.plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "secrets") => &["type"],
        ("", "namespaces") => &["status.phase"],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "services") => &["spec.clusterIP", "spec.type"],
        ("", "replicationcontrollers") => &["status.replicas"],
        ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

/// A field selector string for kind `k`.
pub(super) fn parse_fields(k: &KindSpec, s: &str) -> Res<Vec<Requirement>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, op, value) = if let Some((a, b)) = part.split_once("!=") {
            (a, Op::NotEq, b)
        } else if let Some((a, b)) = part.split_once("==") {
            (a, Op::Eq, b)
        } else if let Some((a, b)) = part.split_once('=') {
            (a, Op::Eq, b)
        } else {
            return Err(bad_request(format!(
                "invalid selector: '{s}'; can't understand '{part}'"
            )));
        };
        let key = key.trim();
        if !matches!(key, "metadata.name" | "metadata.namespace") && !kind_fields(k).contains(&key)
        {
            return Err(bad_request(format!("field label not supported: {key}")));
        }
        out.push(Requirement {
            key: key.to_string(),
            op,
            values: vec![value.trim().to_string()],
        });
    }
    Ok(out)
}

fn path<'a>(o: &'a Value, p: &str) -> &'a Value {
    let mut cur = o;
    for seg in p.split('.') {
        cur = &cur[seg];
    }
    cur
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The value of field `label` of `o` as the kind's field set has it
/// (every supported field is there, `""` when unset).
pub(super) fn field_value(k: &KindSpec, o: &Value, label: &str) -> Option<String> {
    Some(match (k.group, k.plural, label) {
        (_, _, "metadata.name") => text(&o["metadata"]["name"]),
        (_, _, "metadata.namespace") => text(&o["metadata"]["namespace"]),
        ("", "pods", "spec.hostNetwork") => o["spec"]["hostNetwork"]
            .as_bool()
            .unwrap_or(false)
            .to_string(),
        ("", "pods", "status.podIPs") => text(&o["status"]["podIPs"][0]["ip"]),
        ("", "nodes", "spec.unschedulable") => o["spec"]["unschedulable"]
            .as_bool()
            .unwrap_or(false)
            .to_string(),
        ("", "events", "source") => text(&o["source"]["component"]),
        ("apps", "replicasets", "status.replicas") => {
            o["status"]["replicas"].as_i64().unwrap_or(0).to_string()
        }
        ("batch", "jobs", "status.successful") => {
            o["status"]["succeeded"].as_i64().unwrap_or(0).to_string()
        }
        (_, _, l) => text(path(o, l)),
    })
}

/// Whether `labels` (an object's `metadata.labels`) satisfy the
/// `metav1.LabelSelector` `sel`. An empty selector matches everything, a
/// missing one nothing (as controllers read their selectors).
pub(super) fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if !sel.is_object() {
        return false;
    }
    let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
    let labels_ok = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k).as_deref() == v.as_str());
    labels_ok
        && sel["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or("");
                let values: Vec<String> = e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                let op = match e["operator"].as_str().unwrap_or("") {
                    "In" => Op::In,
                    "NotIn" => Op::NotIn,
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::Absent,
                    _ => return false,
                };
                Requirement {
                    key: key.to_string(),
                    op,
                    values,
                }
                .matches(label(key))
            })
}
