//! `kubectl get` columns of the workload kinds, pods, events and nodes, as
//! the API server's printers (`pkg/printers/internalversion`) render them.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{age, now, CellsFn, KindSpec};

fn col(name: &str, ty: &str, priority: u8) -> Value {
    json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" },
           "description": name, "priority": priority})
}

/// `duration.HumanDuration` of the time since `t`.
fn since(t: &Value) -> String {
    let Some(t) = t
        .as_str()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
    else {
        return "<unknown>".into();
    };
    human((now() - t).whole_seconds().max(0))
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 10 * 60 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn containers(o: &Value, field: &str) -> String {
    o["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c[field].as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn selector(o: &Value) -> String {
    let sel = &o["spec"]["selector"];
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = e["key"].as_str().unwrap_or("");
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The STATUS column of a pod (`printPod`).
pub(super) fn pod_status(o: &Value) -> String {
    let st = &o["status"];
    let mut reason = st["reason"]
        .as_str()
        .or(st["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    let mut running = false;
    for c in st["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        let s = &c["state"];
        if let Some(r) = s["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = r.to_string();
        } else if s["terminated"].is_object() {
            let t = &s["terminated"];
            reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => r.to_string(),
                None if n(&t["signal"]) != 0 => format!("Signal:{}", n(&t["signal"])),
                None => format!("ExitCode:{}", n(&t["exitCode"])),
            };
        } else if c["ready"] == true && s["running"].is_object() {
            running = true;
        }
    }
    if reason == "Completed" && running {
        let ready = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        reason = if ready { "Running" } else { "NotReady" }.into();
    }
    if o["metadata"]["deletionTimestamp"].is_string() {
        reason = "Terminating".into();
    }
    reason
}

/// The columns and cells of kind `k`, when it has its own.
pub(super) fn columns(k: &KindSpec) -> Option<(Vec<Value>, CellsFn)> {
    Some(match (k.group, k.plural) {
        ("", "pods") => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            Box::new(|o: &Value| {
                let cs: Vec<Value> = o["status"]["containerStatuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = cs.iter().filter(|c| c["ready"] == true).count();
                let restarts: i64 = cs.iter().map(|c| n(&c["restartCount"])).sum();
                let last = cs
                    .iter()
                    .filter_map(|c| c["lastState"]["terminated"]["finishedAt"].as_str())
                    .max()
                    .map(|t| since(&json!(t)));
                let restarts = match last {
                    Some(ago) if restarts > 0 => format!("{restarts} ({ago} ago)"),
                    _ => restarts.to_string(),
                };
                let or_none = |v: &Value| {
                    v.as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("<none>")
                        .to_string()
                };
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(o)),
                    json!(restarts),
                    json!(age(o)),
                    json!(or_none(&o["status"]["podIP"])),
                    json!(or_none(&o["spec"]["nodeName"])),
                    json!("<none>"),
                    json!("<none>"),
                ]
            }),
        ),
        ("apps", "replicasets") => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!(o["spec"]["replicas"].as_i64().unwrap_or(1)),
                    json!(n(&o["status"]["replicas"])),
                    json!(n(&o["status"]["readyReplicas"])),
                    json!(age(o)),
                    json!(containers(o, "name")),
                    json!(containers(o, "image")),
                    json!(selector(o)),
                ]
            }),
        ),
        ("apps", "statefulsets") => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
            ],
            Box::new(|o: &Value| {
                vec![
                    o["metadata"]["name"].clone(),
                    json!(format!(
                        "{}/{}",
                        n(&o["status"]["readyReplicas"]),
                        o["spec"]["replicas"].as_i64().unwrap_or(1)
                    )),
                    json!(age(o)),
                    json!(containers(o, "name")),
                    json!(containers(o, "image")),
                ]
            }),
        ),
        ("apps", "daemonsets") => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Node Selector", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            Box::new(|o: &Value| {
                let s = &o["status"];
                let node_selector: Vec<String> = o["spec"]["template"]["spec"]["nodeSelector"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                vec![
                    o["metadata"]["name"].clone(),
                    json!(n(&s["desiredNumberScheduled"])),
                    json!(n(&s["currentNumberScheduled"])),
                    json!(n(&s["numberReady"])),
                    json!(n(&s["updatedNumberScheduled"])),
                    json!(n(&s["numberAvailable"])),
                    json!(if node_selector.is_empty() {
                        "<none>".to_string()
                    } else {
                        node_selector.join(",")
                    }),
                    json!(age(o)),
                    json!(containers(o, "name")),
                    json!(containers(o, "image")),
                    json!(selector(o)),
                ]
            }),
        ),
        ("batch", "jobs") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
                col("Containers", "string", 1),
                col("Images", "string", 1),
                col("Selector", "string", 1),
            ],
            Box::new(|o: &Value| {
                let s = &o["status"];
                let has = |t: &str| {
                    s["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == t && c["status"] == "True")
                };
                let status = if has("Complete") {
                    "Complete"
                } else if has("Failed") {
                    "Failed"
                } else if o["metadata"]["deletionTimestamp"].is_string() {
                    "Terminating"
                } else if has("SuccessCriteriaMet") {
                    "SuccessCriteriaMet"
                } else if has("FailureTarget") {
                    "FailureTarget"
                } else if o["spec"]["suspend"] == true {
                    "Suspended"
                } else {
                    "Running"
                };
                let completions = match o["spec"]["completions"].as_i64() {
                    Some(c) => format!("{}/{c}", n(&s["succeeded"])),
                    None => format!(
                        "{}/1 of {}",
                        n(&s["succeeded"]),
                        o["spec"]["parallelism"].as_i64().unwrap_or(1)
                    ),
                };
                let start = s["startTime"]
                    .as_str()
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
                let end = s["completionTime"]
                    .as_str()
                    .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                    .unwrap_or_else(now);
                let duration =
                    start.map_or(String::new(), |st| human((end - st).whole_seconds().max(0)));
                vec![
                    o["metadata"]["name"].clone(),
                    json!(status),
                    json!(completions),
                    json!(duration),
                    json!(age(o)),
                    json!(containers(o, "name")),
                    json!(containers(o, "image")),
                    json!(selector(o)),
                ]
            }),
        ),
        ("", "events") => (
            vec![
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Subobject", "string", 1),
                col("Source", "string", 1),
                col("Message", "string", 0),
                col("First Seen", "string", 1),
                col("Count", "string", 1),
                col("Name", "string", 1),
            ],
            Box::new(|o: &Value| {
                let io = &o["involvedObject"];
                let last = if o["lastTimestamp"].is_string() {
                    &o["lastTimestamp"]
                } else {
                    &o["eventTime"]
                };
                let first = if o["firstTimestamp"].is_string() {
                    &o["firstTimestamp"]
                } else {
                    &o["eventTime"]
                };
                let source = o["source"]["component"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .or(o["reportingComponent"].as_str())
                    .unwrap_or("");
                let source = match o["source"]["host"].as_str() {
                    Some(h) => format!("{source}, {h}"),
                    None => source.to_string(),
                };
                vec![
                    json!(since(last)),
                    o["type"].clone(),
                    o["reason"].clone(),
                    json!(format!(
                        "{}/{}",
                        io["kind"].as_str().unwrap_or("").to_lowercase(),
                        io["name"].as_str().unwrap_or("")
                    )),
                    json!(io["fieldPath"].as_str().unwrap_or("")),
                    json!(source),
                    json!(o["message"].as_str().unwrap_or("").trim()),
                    json!(since(first)),
                    json!(o["count"].as_i64().unwrap_or(1).to_string()),
                    o["metadata"]["name"].clone(),
                ]
            }),
        ),
        ("", "nodes") => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
                col("Internal-IP", "string", 1),
                col("External-IP", "string", 1),
                col("OS-Image", "string", 1),
                col("Kernel-Version", "string", 1),
                col("Container-Runtime", "string", 1),
            ],
            Box::new(|o: &Value| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                let mut status = if ready { "Ready" } else { "NotReady" }.to_string();
                if o["spec"]["unschedulable"] == true {
                    status.push_str(",SchedulingDisabled");
                }
                let ip = o["status"]["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == "InternalIP")
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string();
                let info = &o["status"]["nodeInfo"];
                vec![
                    o["metadata"]["name"].clone(),
                    json!(status),
                    json!("<none>"),
                    json!(age(o)),
                    info["kubeletVersion"].clone(),
                    json!(ip),
                    json!("<none>"),
                    info["osImage"].clone(),
                    info["kernelVersion"].clone(),
                    info["containerRuntimeVersion"].clone(),
                ]
            }),
        ),
        ("apps", "controllerrevisions") => (
            vec![
                col("Name", "string", 0),
                col("Controller", "string", 0),
                col("Revision", "integer", 0),
                col("Age", "string", 0),
            ],
            Box::new(|o: &Value| {
                let owner = o["metadata"]["ownerReferences"]
                    .as_array()
                    .and_then(|rs| rs.iter().find(|r| r["controller"] == true))
                    .map(|r| {
                        format!(
                            "{}.{}/{}",
                            r["kind"].as_str().unwrap_or("").to_lowercase(),
                            r["apiVersion"]
                                .as_str()
                                .unwrap_or("")
                                .split('/')
                                .next()
                                .unwrap_or(""),
                            r["name"].as_str().unwrap_or("")
                        )
                    })
                    .unwrap_or_else(|| "<none>".into());
                vec![
                    o["metadata"]["name"].clone(),
                    json!(owner),
                    json!(n(&o["revision"])),
                    json!(age(o)),
                ]
            }),
        ),
        _ => return None,
    })
}
