//! Deploying as a service account, end to end through `chump serve`, the
//! git daemon and the Kubernetes API stand-in (whose RBAC for impersonated
//! requests decides): a source whose ServiceAccount may not write a kind
//! fails at `apply` naming the object and the verb, with nothing written;
//! every request chump makes for it carries `Impersonate-User`; with the
//! RBAC a team's Role needs (including the health reads: pods, events,
//! ReplicaSets) it deploys and its broken rollouts fail with the reason;
//! `CHUMP_DEFAULT_SERVICE_ACCOUNT` covers sources without one (a bare name
//! in each source's namespace); `CHUMP_REQUIRE_SERVICE_ACCOUNT` refuses
//! sources without one.

mod support;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use support::chump::Chump;
use support::env::*;
use support::kube_api::{KubeApi, PodBehaviour};

const SA: &str = "system:serviceaccount:team-a:deployer";

/// A ServiceAccount, a ConfigMap and a Deployment in `ns` (no Namespace:
/// the team's ServiceAccount may not write cluster-scoped objects).
/// kustomize orders them ServiceAccount, ConfigMap, Deployment: without a
/// dry run first, a forbidden ConfigMap would come after a written
/// ServiceAccount.
fn team_app(ns: &str, image: &str) -> Vec<(String, String)> {
    vec![
        (
            "deploy/kustomization.yaml".into(),
            "resources:\n- deployment.yaml\n- config.yaml\n- account.yaml\n".into(),
        ),
        (
            "deploy/account.yaml".into(),
            format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  namespace: {ns}\n"),
        ),
        ("deploy/deployment.yaml".into(), deployment(ns, "web", image)),
        (
            "deploy/config.yaml".into(),
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\n  namespace: {ns}\ndata:\n  greeting: hello\n"),
        ),
    ]
}

/// What a team's Role needs for chump to deploy its source as the
/// ServiceAccount: the kinds it ships (get: read before applying and the
/// Deployment's image and rollout; create and patch: server-side apply;
/// list: drift; delete: prune) and, read-only, the health reads. Without
/// `configmaps` when `with_configmaps` is false.
fn team_role(ns: &str, with_configmaps: bool) -> Value {
    let mut rules = vec![
        json!({"apiGroups": ["apps"], "resources": ["deployments"],
               "verbs": ["get", "list", "create", "patch", "delete"]}),
        json!({"apiGroups": [""], "resources": ["serviceaccounts"],
               "verbs": ["get", "list", "create", "patch", "delete"]}),
        json!({"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]}),
        json!({"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list"]}),
    ];
    if with_configmaps {
        rules.push(json!({"apiGroups": [""], "resources": ["configmaps"],
                          "verbs": ["get", "list", "create", "patch", "delete"]}));
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
           "metadata": {"name": "deployer", "namespace": ns}, "rules": rules})
}

fn team_binding(ns: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
           "metadata": {"name": "deployer", "namespace": ns},
           "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}],
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"}})
}

fn team(kube: &KubeApi, ns: &str, with_configmaps: bool) {
    kube.put_namespace(ns);
    kube.put_object(team_role(ns, with_configmaps));
    kube.put_object(team_binding(ns));
}

/// Every request recorded so far was made as `user` (at least one was).
fn all_as(kube: &KubeApi, user: &str) {
    let requests = kube.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.impersonate_user.as_deref(),
            Some(user),
            "{} {}?{}",
            r.method,
            r.path,
            r.query
        );
    }
}

async fn call(c: &Chump, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Client::new().request(method, c.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_kind_fails_at_apply_writes_nothing_then_the_rbac_allows_the_deploy() {
    let env = Env::new().await;
    team(&env.kube, "team-a", false);
    env.git
        .create_repo("web", "main", team_app("team-a", "nginx:1"));
    let c = env.chump();
    env.kube.clear_requests();
    let mut source = env.source("web", "team-a", "web");
    source["service_account"] = json!("deployer"); // in the source's namespace
    let id = create(&c, &source).await;

    // The ConfigMap is forbidden: the apply fails naming it and the verb,
    // from the dry run, before anything is written.
    let failed = wait_history(&c, id, "the forbidden apply", |e| e["outcome"] == "failed").await;
    assert_eq!(failed["stage"], "apply", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "ConfigMap team-a/web-config: configmaps \"web-config\" is forbidden: User \"{SA}\" cannot patch resource \"configmaps\" in API group \"\" in the namespace \"team-a\""
        )),
        "{message}"
    );
    assert!(
        env.deployed_image("team-a", "web").is_none(),
        "nothing applied"
    );
    assert!(env
        .kube
        .get_object("v1", "serviceaccounts", Some("team-a"), "web")
        .is_none());
    assert!(env
        .kube
        .get_object("v1", "configmaps", Some("team-a"), "web-config")
        .is_none());
    let writes = env.kube.writes();
    assert!(!writes.is_empty());
    for w in &writes {
        assert!(
            w.query.contains("dryRun=All"),
            "only dry runs before the refusal: {} {}?{}",
            w.method,
            w.path,
            w.query
        );
    }
    all_as(&env.kube, SA);

    // The team's Role now allows ConfigMaps: the next check deploys, every
    // request still as the ServiceAccount.
    env.kube.put_object(team_role("team-a", true));
    let (s, b) = call(&c, Method::POST, &format!("/api/sources/{id}/check"), None).await;
    assert!(s.is_success(), "{s} {b}");
    wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    assert_eq!(
        env.deployed_image("team-a", "web").as_deref(),
        Some("nginx:1")
    );
    let cm = env
        .kube
        .get_object("v1", "configmaps", Some("team-a"), "web-config")
        .unwrap();
    assert_eq!(cm["data"]["greeting"], "hello");
    all_as(&env.kube, SA);

    // A broken rollout: the health reads (pods, events, ReplicaSets) as the
    // ServiceAccount tell why.
    env.kube
        .set_pod_behaviour("nginx:2", PodBehaviour::ImagePullBackOff);
    env.kube.clear_requests();
    env.git.commit_files(
        "web",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("team-a", "web", "nginx:2"),
        )],
        "a tag the registry lacks",
    );
    let broken = wait_history(&c, id, "the broken rollout", |e| {
        e["outcome"] == "failed" && e["stage"] == "rollout"
    })
    .await;
    let message = broken["message"].as_str().unwrap();
    assert!(
        message.contains("nginx:2") && !message.contains("forbidden"),
        "{message}"
    );
    let requests = env.kube.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/namespaces/team-a/pods"),
        "pods were listed"
    );
    all_as(&env.kube, SA);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_service_account_is_used_in_each_sources_namespace() {
    let env = Env::new().await;
    team(&env.kube, "team-a", true);
    env.kube.put_namespace("team-b"); // no RBAC for team-b's deployer
    env.git
        .create_repo("a", "main", team_app("team-a", "nginx:1"));
    env.git
        .create_repo("b", "main", team_app("team-b", "nginx:1"));
    let c = env.chump_with(
        env.options()
            .env("CHUMP_DEFAULT_SERVICE_ACCOUNT", "deployer"),
    );
    env.kube.clear_requests();
    let a = create(&c, &env.source("a", "team-a", "web")).await;
    let b = create(&c, &env.source("b", "team-b", "web")).await;
    wait_history(&c, a, "team-a deploys", |e| e["outcome"] == "deployed").await;
    let failed = wait_history(&c, b, "team-b is refused", |e| e["outcome"] == "failed").await;
    // Its first read (the Deployment whose image it compares) is refused
    // already: stage `cluster`, the API server's message.
    assert_eq!(failed["stage"], "cluster", "{failed}");
    assert!(
        failed["message"].as_str().unwrap().contains(
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:team-b:deployer\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"team-b\""
        ),
        "{failed}"
    );
    assert!(env.deployed_image("team-b", "web").is_none());
    // The source's own service_account shows null: the default applies.
    let (_, s) = call(&c, Method::GET, &format!("/api/sources/{a}"), None).await;
    assert_eq!(s["source"]["service_account"], Value::Null, "{s}");
    for r in env.kube.requests() {
        let user = r.impersonate_user.as_deref().unwrap_or("none");
        assert!(
            user == SA || user == "system:serviceaccount:team-b:deployer",
            "{} {} as {user}",
            r.method,
            r.path
        );
        for ns in ["team-a", "team-b"] {
            if r.path.contains(&format!("/namespaces/{ns}/")) {
                assert_eq!(user, format!("system:serviceaccount:{ns}:deployer"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_service_account_refuses_sources_without_one() {
    let env = Env::new().await;
    team(&env.kube, "team-a", true);
    env.git
        .create_repo("web", "main", team_app("team-a", "nginx:1"));
    let c = env.chump_with(env.options().env("CHUMP_REQUIRE_SERVICE_ACCOUNT", "true"));
    let source = env.source("web", "team-a", "web");
    let (s, b) = call(&c, Method::POST, "/api/sources", Some(source.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["errors"]["service_account"]
        .as_str()
        .unwrap()
        .contains("required"));
    assert!(
        b["msg"].as_str().unwrap().contains("service_account"),
        "{b}"
    );
    let (_, list) = call(&c, Method::GET, "/api/sources", None).await;
    assert_eq!(list["sources"], json!([]), "nothing stored: {list}");

    // With one it is taken and deploys; clearing it is refused.
    let mut with = source.clone();
    with["service_account"] = json!("team-a/deployer");
    let id = create(&c, &with).await;
    let (s, b) = call(
        &c,
        Method::PATCH,
        &format!("/api/sources/{id}"),
        Some(json!({"service_account": null})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["errors"]["service_account"].is_string(), "{b}");
    wait_history(&c, id, "the deploy", |e| e["outcome"] == "deployed").await;
    all_as(&env.kube, SA);

    // The OpenAPI document has the field.
    let (_, doc) = call(&c, Method::GET, "/api/openapi.json", None).await;
    for schema in ["SourceBody", "Source"] {
        assert!(
            doc["components"]["schemas"][schema]["properties"]["service_account"].is_object(),
            "{schema}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chump_without_the_right_to_impersonate_fails_at_cluster_naming_it() {
    let env = Env::new().await;
    team(&env.kube, "team-a", true);
    env.kube.set_may_impersonate(false);
    env.git
        .create_repo("web", "main", team_app("team-a", "nginx:1"));
    let c = env.chump();
    let mut source = env.source("web", "team-a", "web");
    source["service_account"] = json!("team-a/deployer");
    let id = create(&c, &source).await;
    let failed = wait_history(&c, id, "the refused impersonation", |e| {
        e["outcome"] == "failed"
    })
    .await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("cannot impersonate resource \"serviceaccounts\""),
        "{failed}"
    );
    assert!(env.kube.writes().is_empty(), "nothing written");
}
