//! User impersonation and RBAC, for impersonated requests.
//!
//! The stand-in's own caller is its administrator (`kubernetes-admin`, in
//! `system:masters`): it may do anything, and may impersonate any user —
//! unless a test takes that away ([`super::KubeApi::set_may_impersonate`]),
//! when an impersonating request gets the 403 the real impersonation filter
//! gives (`serviceaccounts "…" is forbidden: User "kubernetes-admin" cannot
//! impersonate resource "serviceaccounts" …`).
//!
//! A request carrying `Impersonate-User` is then made as that user, as the
//! API server's impersonation filter does: a ServiceAccount user
//! (`system:serviceaccount:<ns>:<name>`) without `Impersonate-Group` gets
//! the groups `system:serviceaccounts` and `system:serviceaccounts:<ns>`;
//! every user is in `system:authenticated`. What it may do is decided as
//! the RBAC authorizer decides, from the Roles, ClusterRoles, RoleBindings
//! and ClusterRoleBindings stored in the stand-in:
//!
//! - the request's attributes as the API server's `RequestInfoFactory`
//!   reads them from the path: verb (`get`, `list`, `watch`, `create`,
//!   `update`, `patch`, `delete`, `deletecollection`), API group, resource,
//!   subresource, namespace (for `…/namespaces/{ns}` itself too), name;
//! - ClusterRoleBindings grant their ClusterRole everywhere; RoleBindings
//!   in the request's namespace grant their Role (of that namespace) or
//!   ClusterRole there; subjects `ServiceAccount` (name and namespace),
//!   `User` and `Group`;
//! - a rule allows when its `verbs`, `apiGroups` and `resources` hold the
//!   request's (or `*`; `resource/subresource`, `*/subresource`) and its
//!   `resourceNames` are empty or hold the name;
//! - non-resource requests (discovery: `/api`, `/apis`, `/version`,
//!   `/openapi`, `/healthz`…) are allowed to every authenticated user, as
//!   the default `system:discovery` and `system:public-info-viewer`
//!   bindings allow them.
//!
//! Anything else is a 403 `Status` with reason `Forbidden` and the real
//! message: `configmaps "web" is forbidden: User
//! "system:serviceaccount:team-a:deployer" cannot patch resource
//! "configmaps" in API group "" in the namespace "team-a"`.
//!
//! Approximations: no aggregated ClusterRoles (`aggregationRule` is not
//! evaluated), no `nonResourceURLs` rules (non-resource requests are always
//! allowed), no default roles or bindings other than discovery's (a
//! `ClusterRole` the test does not store does not exist), and no
//! escalation checks on writes of RBAC objects (the administrator makes
//! them).

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderMap, Method};
use serde_json::{json, Value};

use super::{Failure, Key};

/// The stand-in's administrator, who may impersonate.
pub const ADMIN: &str = "kubernetes-admin";

/// Who an impersonated request is made as.
#[derive(Debug, Clone)]
pub struct Impersonation {
    pub user: String,
    pub groups: Vec<String>,
}

/// `Impersonate-User` and `Impersonate-Group`, as the impersonation filter
/// reads them (groups without a user: the filter's 500).
pub fn impersonation(headers: &HeaderMap) -> Result<Option<Impersonation>, Failure> {
    let user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let Some(user) = user else {
        if groups.is_empty() {
            return Ok(None);
        }
        return Err(Failure {
            code: 500,
            reason: "InternalError",
            message: format!(
                "Internal error occurred: requested {groups:?} without impersonating a user"
            ),
            details: Value::Null,
        });
    };
    if groups.is_empty() {
        if let Some((ns, _)) = service_account_of(&user) {
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(Some(Impersonation { user, groups }))
}

/// (namespace, name) of a ServiceAccount user name.
fn service_account_of(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

/// The 403 the impersonation filter gives a caller that may not
/// impersonate `user`.
pub fn cannot_impersonate(user: &str) -> Failure {
    let (resource, ns, name) = match service_account_of(user) {
        Some((ns, name)) => ("serviceaccounts", Some(ns), name),
        None => ("users", None, user),
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    Failure {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{resource} \"{name}\" is forbidden: User \"{ADMIN}\" cannot impersonate resource \"{resource}\" in API group \"\" {scope}"
        ),
        details: json!({"name": name, "kind": resource}),
    }
}

/// A request's authorization attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub resource_request: bool,
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub path: String,
}

/// The attributes of a request, as `RequestInfoFactory` reads them.
pub fn attributes(method: &Method, path: &str, query: &HashMap<String, String>) -> Attributes {
    let mut a = Attributes {
        resource_request: false,
        verb: method.as_str().to_ascii_lowercase(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: path.to_string(),
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return a;
    }
    let mut rest = &parts[1..];
    if parts[0] == "apis" {
        if rest.len() < 3 {
            return a;
        }
        a.group = rest[0].to_string();
        rest = &rest[1..];
    }
    a.resource_request = true;
    rest = &rest[1..]; // the version
    if rest.first() == Some(&"namespaces") {
        if let Some(ns) = rest.get(1) {
            a.namespace = ns.to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
    }
    if let Some(r) = rest.first() {
        a.resource = r.to_string();
    }
    if let Some(n) = rest.get(1) {
        a.name = n.to_string();
    }
    if let Some(s) = rest.get(2) {
        a.subresource = s.to_string();
    }
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    a.verb = match *method {
        Method::GET | Method::HEAD if a.name.is_empty() && watch => "watch",
        Method::GET | Method::HEAD if a.name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if a.name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    }
    .to_string();
    a
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(s: &Value, who: &Impersonation, binding_ns: &str) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str() {
        Some("User") => name == who.user,
        Some("Group") => who.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            // A RoleBinding's ServiceAccount subject without a namespace
            // is refused by validation; the binding's own is no default.
            let ns = s["namespace"].as_str().unwrap_or(binding_ns);
            service_account_of(&who.user) == Some((ns, name))
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strings(&rule["verbs"]);
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    let groups = strings(&rule["apiGroups"]);
    if !groups.iter().any(|g| *g == "*" || *g == a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resources = strings(&rule["resources"]);
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
    });
    if !resource_ok {
        return false;
    }
    let names = strings(&rule["resourceNames"]);
    names.is_empty() || names.contains(&a.name.as_str())
}

fn rbac_key(plural: &str, ns: &str, name: &str) -> Key {
    (
        "rbac.authorization.k8s.io".into(),
        "v1".into(),
        plural.into(),
        ns.into(),
        name.into(),
    )
}

/// Whether the stored RBAC objects let `who` make a request with `a`.
pub fn allowed(objects: &BTreeMap<Key, Value>, who: &Impersonation, a: &Attributes) -> bool {
    if !a.resource_request {
        return true;
    }
    let role_rules = |kind: &str, name: &str, ns: &str| -> Vec<Value> {
        let key = match kind {
            "ClusterRole" => rbac_key("clusterroles", "", name),
            "Role" => rbac_key("roles", ns, name),
            _ => return Vec::new(),
        };
        objects
            .get(&key)
            .and_then(|r| r["rules"].as_array().cloned())
            .unwrap_or_default()
    };
    let grants = |binding: &Value, ns: &str| -> bool {
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects.iter().any(|s| subject_matches(s, who, ns)) {
            return false;
        }
        let kind = binding["roleRef"]["kind"].as_str().unwrap_or("");
        let name = binding["roleRef"]["name"].as_str().unwrap_or("");
        role_rules(kind, name, ns).iter().any(|r| rule_allows(r, a))
    };
    let bindings = |plural: &'static str| {
        objects
            .iter()
            .filter(move |((g, v, p, _, _), _)| {
                g == "rbac.authorization.k8s.io" && v == "v1" && p == plural
            })
            .map(|((_, _, _, ns, _), o)| (ns.as_str(), o))
    };
    if bindings("clusterrolebindings")
        .any(|(_, b)| b["roleRef"]["kind"] == "ClusterRole" && grants(b, ""))
    {
        return true;
    }
    !a.namespace.is_empty()
        && bindings("rolebindings")
            .filter(|(ns, _)| *ns == a.namespace)
            .any(|(_, b)| grants(b, &a.namespace))
}

/// The 403 the RBAC authorizer's denial becomes.
pub fn forbidden(who: &Impersonation, a: &Attributes) -> Failure {
    if !a.resource_request {
        return Failure {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                who.user, a.verb, a.path
            ),
            details: Value::Null,
        };
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        who.user, a.verb, a.group
    );
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let message = if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", a.name)
    };
    Failure {
        code: 403,
        reason: "Forbidden",
        message,
        details: json!({"name": a.name, "group": a.group, "kind": a.resource}),
    }
}
