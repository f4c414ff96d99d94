//! chump's Kubernetes client (`chump_jobs::cluster`) against the test API
//! server: running image, server-side apply, rollout, unreachable cluster.

mod support;

use std::time::{Duration, Instant};

use chump_jobs::cluster::{ApplyFailure, Cluster, RolloutError};
use chump_jobs::history::ApplyAction;
use serde_json::{json, Value};
use support::kube_api::{KubeApi, RolloutMode};
use tempfile::TempDir;

async fn setup() -> (KubeApi, TempDir, Cluster) {
    let api = KubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::from_kubeconfig(&api.kubeconfig(dir.path()))
        .await
        .expect("cluster");
    (api, dir, cluster)
}

fn deployment(ns: Option<&str>, name: &str, image: &str) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]}
            }
        }
    });
    if let Some(ns) = ns {
        d["metadata"]["namespace"] = json!(ns);
    }
    d
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn config_map(ns: Option<&str>, name: &str, value: &str) -> Value {
    let mut c = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"key": value}});
    if let Some(ns) = ns {
        c["metadata"]["namespace"] = json!(ns);
    }
    c
}

fn cluster_role(name: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]
    })
}

fn actions(
    applied: &[chump_jobs::history::AppliedObject],
) -> Vec<(String, Option<String>, String, ApplyAction)> {
    applied
        .iter()
        .map(|a| {
            (
                a.kind.clone(),
                a.namespace.clone(),
                a.name.clone(),
                a.action,
            )
        })
        .collect()
}

#[tokio::test]
async fn running_image_reads_the_deployment_spec() {
    let (api, _dir, cluster) = setup().await;
    api.put_deployment_with(
        "prod",
        "web",
        &[("web", "registry:5000/web:1.2"), ("proxy", "envoy:1")],
    );

    assert_eq!(
        cluster
            .running_image("prod", "web", "web")
            .await
            .unwrap()
            .as_deref(),
        Some("registry:5000/web:1.2")
    );
    assert_eq!(
        cluster
            .running_image("prod", "web", "proxy")
            .await
            .unwrap()
            .as_deref(),
        Some("envoy:1")
    );
    assert_eq!(
        cluster.running_image("prod", "web", "nope").await.unwrap(),
        None,
        "missing container"
    );
    assert_eq!(
        cluster.running_image("prod", "api", "web").await.unwrap(),
        None,
        "missing deployment"
    );
    assert_eq!(
        cluster.running_image("ghost", "web", "web").await.unwrap(),
        None,
        "missing namespace"
    );

    assert!(api.set_image("prod", "web", "web", "registry:5000/web:hand"));
    assert_eq!(
        cluster
            .running_image("prod", "web", "web")
            .await
            .unwrap()
            .as_deref(),
        Some("registry:5000/web:hand")
    );
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn apply_orders_namespaces_first_defaults_namespace_and_reports_actions() {
    let (api, _dir, cluster) = setup().await;
    let objects = vec![
        deployment(None, "web", "web:1"),
        config_map(Some("shop"), "settings", "a"),
        cluster_role("web-reader"),
        namespace("shop"),
    ];

    let applied = cluster
        .apply(&objects, "shop", None)
        .await
        .expect("first apply");
    let shop = Some("shop".to_string());
    assert_eq!(
        actions(&applied),
        vec![
            (
                "Namespace".into(),
                None,
                "shop".into(),
                ApplyAction::Created
            ),
            (
                "Deployment".into(),
                shop.clone(),
                "web".into(),
                ApplyAction::Created
            ),
            (
                "ConfigMap".into(),
                shop.clone(),
                "settings".into(),
                ApplyAction::Created
            ),
            (
                "ClusterRole".into(),
                None,
                "web-reader".into(),
                ApplyAction::Created
            ),
        ]
    );
    assert_eq!(applied[1].api_version, "apps/v1");
    let patches: Vec<_> = api.writes();
    assert_eq!(patches.len(), 4);
    assert_eq!(patches[0].path, "/api/v1/namespaces/shop");
    assert!(patches.iter().all(|r| r.method == "PATCH"
        && r.content_type.as_deref() == Some("application/apply-patch+yaml")
        && r.query.contains("fieldManager=chump")
        && r.query.contains("force=true")));
    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .expect("deployment created");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:1"
    );
    assert!(api
        .get_object(
            "rbac.authorization.k8s.io/v1",
            "clusterroles",
            None,
            "web-reader"
        )
        .is_some());

    // The same build again: nothing changes.
    let rv = api.resource_version();
    api.clear_requests();
    let again = cluster
        .apply(&objects, "shop", None)
        .await
        .expect("second apply");
    assert!(
        again.iter().all(|a| a.action == ApplyAction::Unchanged),
        "{again:?}"
    );
    assert_eq!(api.resource_version(), rv);
    // Discovery is cached: the second apply asked for no API resource lists.
    assert!(
        api.requests().iter().all(|r| !(r.path.starts_with("/apis/")
            && r.path.matches('/').count() == 3)
            && r.path != "/api/v1"),
        "{:?}",
        api.requests().iter().map(|r| &r.path).collect::<Vec<_>>()
    );

    // A new image: only the Deployment is configured, at a new generation.
    let mut changed = objects.clone();
    changed[0] = deployment(None, "web", "web:2");
    let third = cluster
        .apply(&changed, "shop", None)
        .await
        .expect("third apply");
    let by_name: Vec<_> = third.iter().map(|a| (a.name.as_str(), a.action)).collect();
    assert_eq!(
        by_name,
        vec![
            ("shop", ApplyAction::Unchanged),
            ("web", ApplyAction::Configured),
            ("settings", ApplyAction::Unchanged),
            ("web-reader", ApplyAction::Unchanged),
        ]
    );
    let d = api
        .get_object("apps/v1", "deployments", Some("shop"), "web")
        .unwrap();
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        cluster
            .running_image("shop", "web", "web")
            .await
            .unwrap()
            .as_deref(),
        Some("web:2")
    );
}

#[tokio::test]
async fn apply_reverts_drift() {
    let (api, _dir, cluster) = setup().await;
    let objects = vec![namespace("prod"), deployment(Some("prod"), "web", "web:1")];
    cluster.apply(&objects, "prod", None).await.unwrap();
    api.set_image("prod", "web", "web", "web:by-hand");
    let applied = cluster.apply(&objects, "prod", None).await.unwrap();
    assert_eq!(applied[1].action, ApplyAction::Configured);
    assert_eq!(
        cluster
            .running_image("prod", "web", "web")
            .await
            .unwrap()
            .as_deref(),
        Some("web:1")
    );
}

#[tokio::test]
async fn apply_into_a_missing_namespace_names_the_object() {
    let (api, _dir, cluster) = setup().await;
    let objects = vec![
        config_map(None, "first", "ok"),
        config_map(Some("ghost"), "settings", "a"),
    ];
    let err = cluster.apply(&objects, "default", None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("ConfigMap ghost/settings"), "{text}");
    assert!(text.contains("namespaces \"ghost\" not found"), "{text}");
    assert!(
        matches!(err.failure, ApplyFailure::Rejected { code: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.applied.len(),
        1,
        "the first object was applied before the failure"
    );
    assert_eq!(err.applied[0].name, "first");
    assert!(api
        .get_object("v1", "configmaps", Some("ghost"), "settings")
        .is_none());
}

#[tokio::test]
async fn apply_refuses_objects_outside_the_allowed_namespace_before_writing() {
    let (api, _dir, cluster) = setup().await;
    api.put_namespace("team");

    let cases: Vec<(Vec<Value>, &str, &str)> = vec![
        (
            vec![config_map(None, "a", "1"), namespace("team")],
            "team",
            "Namespace team",
        ),
        (
            vec![config_map(None, "a", "1"), cluster_role("r")],
            "team",
            "ClusterRole r",
        ),
        (
            vec![
                config_map(None, "a", "1"),
                config_map(Some("other"), "b", "2"),
            ],
            "team",
            "ConfigMap other/b",
        ),
        (
            vec![config_map(None, "a", "1")],
            "other",
            "ConfigMap other/a",
        ),
    ];
    for (objects, default_ns, named) in cases {
        let err = cluster
            .apply(&objects, default_ns, Some("team"))
            .await
            .unwrap_err();
        assert!(
            matches!(err.failure, ApplyFailure::Refused { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(named), "{err}");
        assert!(err.applied.is_empty());
        assert!(
            api.writes().is_empty(),
            "refused, yet wrote: {:?}",
            api.writes()
        );
    }

    let ok = cluster
        .apply(
            &[
                config_map(None, "a", "1"),
                deployment(Some("team"), "web", "web:1"),
            ],
            "team",
            Some("team"),
        )
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
}

#[tokio::test]
async fn apply_rejects_unknown_kinds_and_invalid_objects_before_writing() {
    let (api, _dir, cluster) = setup().await;
    let unknown =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    let err = cluster
        .apply(&[config_map(None, "a", "1"), unknown], "default", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err.failure, ApplyFailure::UnknownKind { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Widget"), "{err}");

    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    let err = cluster
        .apply(&[nameless], "default", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err.failure, ApplyFailure::Invalid { index: 0, .. }),
        "{err:?}"
    );
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn apply_custom_resources_with_their_definition() {
    let (api, _dir, cluster) = setup().await;
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    });
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
    let applied = cluster
        .apply(&[widget, crd], "default", None)
        .await
        .expect("apply");
    assert_eq!(applied[0].kind, "CustomResourceDefinition");
    assert_eq!(applied[1].namespace.as_deref(), Some("default"));
    assert!(api
        .get_object("example.com/v1", "widgets", Some("default"), "w")
        .is_some());
}

#[tokio::test]
async fn rollout_immediate_never_fail_and_after() {
    let (api, _dir, cluster) = setup().await;
    cluster
        .apply(
            &[namespace("prod"), deployment(None, "web", "web:1")],
            "prod",
            None,
        )
        .await
        .unwrap();
    cluster
        .wait_rollout("prod", "web", Duration::from_secs(5))
        .await
        .expect("immediate rollout");

    // Never: times out, not before the timeout and not long after it.
    api.set_rollout_for("prod", "web", RolloutMode::Never);
    cluster
        .apply(&[deployment(None, "web", "web:2")], "prod", None)
        .await
        .unwrap();
    let started = Instant::now();
    let err = cluster
        .wait_rollout("prod", "web", Duration::from_secs(1))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, RolloutError::Timeout { .. }), "{err:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(
        err.to_string()
            .starts_with("deployment prod/web: not rolled out"),
        "{err}"
    );

    // Fail: ProgressDeadlineExceeded at once.
    api.set_rollout_for("prod", "web", RolloutMode::Fail);
    let started = Instant::now();
    let err = cluster
        .wait_rollout("prod", "web", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, RolloutError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("deployment prod/web: ProgressDeadlineExceeded: "),
        "{err}"
    );

    // After: ready once the delay has passed.
    api.set_rollout_for(
        "prod",
        "web",
        RolloutMode::After(Duration::from_millis(600)),
    );
    cluster
        .apply(&[deployment(None, "web", "web:3")], "prod", None)
        .await
        .unwrap();
    let d = api
        .get_object("apps/v1", "deployments", Some("prod"), "web")
        .unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 0);
    cluster
        .wait_rollout("prod", "web", Duration::from_secs(5))
        .await
        .expect("rollout after a delay");

    let err = cluster
        .wait_rollout("prod", "nope", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RolloutError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_cluster_fails_fast() {
    let (api, dir, cluster) = setup().await;
    api.put_deployment("prod", "web", "web:1");
    assert!(cluster
        .running_image("prod", "web", "web")
        .await
        .unwrap()
        .is_some());

    api.stop().await;
    let started = Instant::now();
    let err = cluster
        .running_image("prod", "web", "web")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_unreachable(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("cannot reach the Kubernetes API: "),
        "{err}"
    );

    let err = cluster
        .apply(&[config_map(None, "a", "1")], "prod", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err.failure, ApplyFailure::Cluster { error, .. } if error.is_unreachable()),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    api.restart().await;
    assert_eq!(
        cluster
            .running_image("prod", "web", "web")
            .await
            .unwrap()
            .as_deref(),
        Some("web:1")
    );

    // A port where nothing listens at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = dir.path().join("closed");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
        ),
    )
    .unwrap();
    let closed = Cluster::from_kubeconfig(&kubeconfig).await.unwrap();
    let started = Instant::now();
    let err = closed
        .running_image("prod", "web", "web")
        .await
        .unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_kubeconfig_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cluster::from_kubeconfig(&dir.path().join("missing"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot load the Kubernetes configuration"),
        "{err}"
    );
}
