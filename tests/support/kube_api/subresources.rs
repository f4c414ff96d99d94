//! The `scale` subresource of Deployments, StatefulSets and ReplicaSets
//! (`registry/apps/deployment/storage/storage.go` `ScaleREST`: an
//! `autoscaling/v1` `Scale` whose `spec.replicas` is the object's; a write
//! is an Update of `spec.replicas` recorded with subresource `scale`), and
//! a Namespace's `finalize`.

use axum::http::Method;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::fields::{self, Part};
use super::{
    apply_manager, bad_request, content_type, failure, json_response, merge_into,
    modified_conflict, unsupported_patch, Ctx, Failure, Inner, KindSpec, Res,
};

impl Inner {
    /// The `scale` subresource of a Deployment, StatefulSet or ReplicaSet:
    /// an `autoscaling/v1` `Scale` whose `spec.replicas` is the object's.
    pub(super) fn scale(
        &mut self,
        k: &KindSpec,
        ns: Option<&str>,
        name: &str,
        cx: &Ctx,
    ) -> Res<Response> {
        let old = self.get(k, ns, name)?;
        let current = scale_of(&old);
        let (scale, apply) = match *cx.method {
            Method::GET => return Ok(json_response(200, &current)),
            Method::PUT => (self.parse_body(cx)?, None),
            Method::PATCH => {
                let ct = content_type(cx);
                match ct.as_str() {
                    "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                        let patch = self.parse_body(cx)?;
                        let mut s = current.clone();
                        merge_into(&mut s, &patch, ct.starts_with("application/strategic"));
                        (s, None)
                    }
                    "application/apply-patch+yaml" => {
                        let manager = apply_manager(cx)?;
                        let config = self.parse_body(cx)?;
                        let mut s = current.clone();
                        merge_into(&mut s, &config, true);
                        (s, Some((manager, config)))
                    }
                    other => return Err(unsupported_patch(other)),
                }
            }
            _ => {
                return Err(failure(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ))
            }
        };
        if scale["kind"].as_str().is_some_and(|kd| kd != "Scale") {
            return Err(bad_request(format!(
                "the kind in the data ({}) does not match the expected kind (Scale)",
                scale["kind"].as_str().unwrap_or("")
            )));
        }
        if let Some(rv) = scale["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| !rv.is_empty())
        {
            if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("") {
                return Err(modified_conflict(k, name));
            }
        }
        if let Some(uid) = scale["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
            let actual = old["metadata"]["uid"].as_str().unwrap_or("");
            if uid != actual {
                let resource = format!("{}/scale.{}", k.plural, k.group);
                return Err(Failure {
                    code: 409,
                    reason: "Conflict",
                    message: format!("Operation cannot be fulfilled on {resource} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                    details: json!({"name": name, "group": k.group, "kind": format!("{}/scale", k.plural)}),
                });
            }
        }
        let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        if replicas < 0 {
            return Err(Failure {
                code: 422,
                reason: "Invalid",
                message: format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"),
                details: json!({"name": name, "group": "autoscaling", "kind": "Scale", "causes": [{"reason": "FieldValueInvalid", "message": format!("Invalid value: {replicas}: must be greater than or equal to 0"), "field": "spec.replicas"}]}),
            });
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        match apply {
            None => fields::update(&mut new, Some(&old), None, &cx.manager(), Part::Scale, k),
            Some((manager, config)) => {
                let mut parent = json!({});
                if let Some(r) = config["spec"].get("replicas") {
                    parent["spec"] = json!({ "replicas": r });
                }
                fields::apply(
                    &mut new,
                    Some(&old),
                    &parent,
                    &manager,
                    Part::Scale,
                    cx.force(),
                    k,
                )?;
            }
        }
        let out = self.finish_write(k, ns, name, new, cx.dry_run(), false);
        Ok(json_response(200, &scale_of(&out)))
    }

    /// `PUT /api/v1/namespaces/{name}/finalize`: only `spec.finalizers` is
    /// taken from the body.
    pub(super) fn finalize(&mut self, k: &KindSpec, name: &str, cx: &Ctx) -> Res<Response> {
        let mut body = self.parse_body(cx)?;
        self.check_object(k, None, Some(name), &mut body)?;
        let old = self.get(k, None, name)?;
        let mut new = old.clone();
        match body["spec"].get("finalizers") {
            Some(f) => new["spec"]["finalizers"] = f.clone(),
            None => {
                if let Some(m) = new["spec"].as_object_mut() {
                    m.remove("finalizers");
                }
            }
        }
        fields::update(&mut new, Some(&old), None, &cx.manager(), Part::Finalize, k);
        let out = self.finish_write(k, None, name, new, cx.dry_run(), false);
        Ok(json_response(200, &out))
    }
}

/// Kinds with a `scale` subresource.
pub(super) fn has_scale(k: &KindSpec) -> bool {
    k.group == "apps" && matches!(k.plural, "deployments" | "statefulsets" | "replicasets")
}

/// The `autoscaling/v1` `Scale` of a Deployment, StatefulSet or ReplicaSet
/// (`scaleFromDeployment`).
fn scale_of(obj: &Value) -> Value {
    let md = &obj["metadata"];
    let mut meta = Map::new();
    for f in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(f) {
            meta.insert(f.into(), v.clone());
        }
    }
    let mut spec = json!({});
    if let Some(r) = obj["spec"]["replicas"].as_i64().filter(|r| *r != 0) {
        spec["replicas"] = json!(r);
    }
    let mut status = json!({"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)});
    let selector = selector_string(&obj["spec"]["selector"]);
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta, "spec": spec, "status": status})
}

/// A label selector as `labels.Selector.String()` prints it: requirements
/// sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let k = e["key"].as_str().unwrap_or("").to_string();
        let mut vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        vals.sort();
        let r = match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{k} in ({})", vals.join(",")),
            "NotIn" => format!("{k} notin ({})", vals.join(",")),
            "Exists" => k.clone(),
            _ => format!("!{k}"),
        };
        reqs.push((k, r));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}
