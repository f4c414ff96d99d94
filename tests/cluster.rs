//! chump's Kubernetes client (`chump_jobs::cluster`) against the test API
//! server: running image, server-side apply, rollout, unreachable cluster.

mod support;

use std::time::{Duration, Instant};

use chump_jobs::cluster::drift::drift_of;
use chump_jobs::cluster::{ApplyFailure, Cluster, Drift, Kept, Observed, PruneScope, RolloutError};
use chump_jobs::history::ApplyAction;
use chump_jobs::inventory::InventoryObject;
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

/// [`Cluster::apply`], keeping what happened to each object.
async fn apply_objects(
    cluster: &Cluster,
    objects: &[Value],
    default_ns: &str,
    allowed: Option<&str>,
) -> Result<Vec<chump_jobs::history::AppliedObject>, chump_jobs::cluster::ApplyError> {
    let applied = cluster.apply(objects, default_ns, allowed).await?;
    Ok(applied.into_iter().map(|a| a.object).collect())
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

    let applied = apply_objects(&cluster, &objects, "shop", None)
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

    // The same build again: nothing changes (once the controllers have
    // finished with the first apply).
    assert!(
        api.settle(Duration::from_secs(10)).await,
        "controllers settle"
    );
    let rv = api.resource_version();
    api.clear_requests();
    let again = apply_objects(&cluster, &objects, "shop", None)
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
    let third = apply_objects(&cluster, &changed, "shop", None)
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
    apply_objects(&cluster, &objects, "prod", None)
        .await
        .unwrap();
    api.set_image("prod", "web", "web", "web:by-hand");
    let applied = apply_objects(&cluster, &objects, "prod", None)
        .await
        .unwrap();
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
    let err = apply_objects(&cluster, &objects, "default", None)
        .await
        .unwrap_err();
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
        let err = apply_objects(&cluster, &objects, default_ns, Some("team"))
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

    let ok = apply_objects(
        &cluster,
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
    let err = apply_objects(
        &cluster,
        &[config_map(None, "a", "1"), unknown],
        "default",
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err.failure, ApplyFailure::UnknownKind { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("Widget"), "{err}");

    let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    let err = apply_objects(&cluster, &[nameless], "default", None)
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
    let applied = apply_objects(&cluster, &[widget, crd], "default", None)
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
    apply_objects(
        &cluster,
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
    apply_objects(&cluster, &[deployment(None, "web", "web:2")], "prod", None)
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
    assert!(matches!(err, RolloutError::Failed { .. }), "{err:?}");
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
    apply_objects(&cluster, &[deployment(None, "web", "web:3")], "prod", None)
        .await
        .unwrap();
    let d = api
        .get_object("apps/v1", "deployments", Some("prod"), "web")
        .unwrap();
    assert!(
        d["status"]["observedGeneration"].as_i64() < d["metadata"]["generation"].as_i64(),
        "the controller has not seen web:3 yet: {d}"
    );
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

    let err = apply_objects(&cluster, &[config_map(None, "a", "1")], "prod", None)
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

/// `o` with chump's labels for source `id` (what a check applies).
fn chumps(mut o: Value, id: &str) -> Value {
    o["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("chump");
    o["metadata"]["labels"]["chump.dev/source"] = json!(id);
    o
}

/// The inventory entries of `applied` (digests of chump's fields as the
/// server returned them).
fn recorded(applied: &[chump_jobs::cluster::Applied]) -> Vec<InventoryObject> {
    applied
        .iter()
        .map(|a| InventoryObject {
            api_version: a.object.api_version.clone(),
            kind: a.object.kind.clone(),
            namespace: a.object.namespace.clone(),
            name: a.object.name.clone(),
            digest: String::new(),
            commit: "c1".into(),
            live: Some(a.live.clone()),
            prune_pending: false,
        })
        .collect()
}

/// Replace an object as another client would (`kubectl replace`, manager
/// `test`), after `change`.
fn edit(
    api: &KubeApi,
    gv: &str,
    plural: &str,
    ns: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) {
    let mut o = api
        .get_object(gv, plural, Some(ns), name)
        .expect("the object");
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    change(&mut o);
    api.put_object(o);
}

fn drifts(objects: &[InventoryObject], observed: &[Observed]) -> Vec<(String, Option<Drift>)> {
    objects
        .iter()
        .zip(observed)
        .map(|(o, seen)| (o.name.clone(), drift_of(o, seen)))
        .collect()
}

#[tokio::test]
async fn observe_tells_drift_of_the_fields_chump_applies_and_nothing_else() {
    let (api, _dir, cluster) = setup().await;
    let objects = vec![
        chumps(namespace("prod"), "7"),
        chumps(deployment(Some("prod"), "web", "web:1"), "7"),
        chumps(config_map(Some("prod"), "a", "1"), "7"),
        chumps(config_map(Some("prod"), "b", "1"), "7"),
    ];
    let applied = cluster.apply(&objects, "prod", None).await.unwrap();
    let inventory = recorded(&applied);
    let names = |d: Vec<(String, Option<Drift>)>| -> Vec<(String, Drift)> {
        d.into_iter()
            .filter_map(|(n, d)| d.map(|d| (n, d)))
            .collect()
    };

    // As applied: no drift; one GET per single object, one LIST for the two
    // ConfigMaps, and no write.
    api.clear_requests();
    let seen = cluster
        .observe(&inventory, "chump.dev/source", "7")
        .await
        .unwrap();
    assert_eq!(names(drifts(&inventory, &seen)), vec![]);
    let reqs = api.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert!(api.writes().is_empty());
    let list = reqs
        .iter()
        .find(|r| r.path.ends_with("/configmaps"))
        .expect("a LIST");
    assert!(
        list.query.contains("labelSelector=chump.dev%2Fsource%3D7"),
        "{}",
        list.query
    );

    // The Deployment's status, a label of someone else's and an annotation
    // a controller adds are not drift.
    edit(&api, "apps/v1", "deployments", "prod", "web", |d| {
        d["metadata"]["labels"]["team"] = json!("x");
        d["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "3"});
    });
    let seen = cluster
        .observe(&inventory, "chump.dev/source", "7")
        .await
        .unwrap();
    assert_eq!(names(drifts(&inventory, &seen)), vec![]);

    // A changed field chump applies, and a deleted object, are.
    assert!(api.set_image("prod", "web", "web", "web:by-hand"));
    edit(&api, "v1", "configmaps", "prod", "a", |a| {
        a["data"]["key"] = json!("edited")
    });
    let req = reqwest::Client::new()
        .delete(format!("{}/api/v1/namespaces/prod/configmaps/b", api.url()))
        .send()
        .await
        .unwrap();
    assert!(req.status().is_success());
    let seen = cluster
        .observe(&inventory, "chump.dev/source", "7")
        .await
        .unwrap();
    assert_eq!(
        names(drifts(&inventory, &seen)),
        vec![
            ("web".to_string(), Drift::Changed),
            ("a".to_string(), Drift::Changed),
            ("b".to_string(), Drift::Missing)
        ]
    );

    // Applying again puts it right, and the new digests match again.
    let again = cluster.apply(&objects, "prod", None).await.unwrap();
    let inventory = recorded(&again);
    let seen = cluster
        .observe(&inventory, "chump.dev/source", "7")
        .await
        .unwrap();
    assert_eq!(names(drifts(&inventory, &seen)), vec![]);
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
async fn prune_deletes_only_what_chump_applied_for_the_source() {
    let (api, _dir, cluster) = setup().await;
    let mut keep = chumps(config_map(Some("prod"), "keep", "1"), "7");
    keep["metadata"]["annotations"] = json!({"chump.dev/prune": "disabled"});
    let objects = vec![
        chumps(namespace("prod"), "7"),
        chumps(namespace("other"), "7"),
        chumps(config_map(Some("prod"), "gone", "1"), "7"),
        keep,
        chumps(config_map(Some("prod"), "theirs", "1"), "8"),
        chumps(config_map(Some("prod"), "unlabelled", "1"), "7"),
        chumps(config_map(Some("other"), "elsewhere", "1"), "7"),
        chumps(deployment(Some("prod"), "web", "web:1"), "7"),
    ];
    let applied = cluster.apply(&objects, "prod", None).await.unwrap();
    let inventory = recorded(&applied);
    // Someone takes "unlabelled" over: it no longer says it is chump's.
    edit(&api, "v1", "configmaps", "prod", "unlabelled", |u| {
        u["metadata"]["labels"] = json!({"owner": "someone"})
    });
    // Someone deleted "gone" already.
    let client = reqwest::Client::new();
    client
        .delete(format!(
            "{}/api/v1/namespaces/prod/configmaps/gone",
            api.url()
        ))
        .send()
        .await
        .unwrap();

    let scope = PruneScope {
        managed_by: ("app.kubernetes.io/managed-by", "chump"),
        source: ("chump.dev/source", "7"),
        allowed_namespace: Some("prod"),
    };
    api.clear_requests();
    let report = cluster.prune(&inventory, scope).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let deleted: Vec<(&str, ApplyAction)> = report
        .deleted
        .iter()
        .map(|o| (o.name.as_str(), o.action))
        .collect();
    assert_eq!(deleted, vec![("web", ApplyAction::Deleted)]);
    let kept: Vec<(&str, Kept)> = report
        .kept
        .iter()
        .map(|(o, k)| (o.name.as_str(), k.clone()))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("keep", Kept::Disabled),
            ("theirs", Kept::NotOurs),
            ("unlabelled", Kept::NotOurs),
            ("elsewhere", Kept::Restricted),
            ("prod", Kept::Restricted),
            ("other", Kept::Restricted),
        ]
    );
    assert_eq!(report.gone.len(), 1);
    // Deletes are background, conditional on the uid read.
    let deletes: Vec<_> = api
        .writes()
        .into_iter()
        .filter(|w| w.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    let options: Value = serde_json::from_str(&deletes[0].body).unwrap();
    assert_eq!(options["propagationPolicy"], "Background", "{options}");
    assert!(options["preconditions"]["uid"].is_string(), "{options}");
    assert!(api
        .get_object("apps/v1", "deployments", Some("prod"), "web")
        .is_none());
    for name in ["keep", "theirs", "unlabelled"] {
        assert!(
            api.get_object("v1", "configmaps", Some("prod"), name)
                .is_some(),
            "{name}"
        );
    }

    // Unrestricted, the namespaces go too: last, after what is inside them.
    let scope = PruneScope {
        allowed_namespace: None,
        ..scope
    };
    api.clear_requests();
    let report = cluster.prune(&inventory, scope).await;
    let deleted: Vec<&str> = report.deleted.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(deleted, vec!["elsewhere", "prod", "other"]);
}

#[tokio::test]
async fn prune_reports_failures_and_keeps_going() {
    let (api, _dir, cluster) = setup().await;
    let objects = vec![
        chumps(namespace("prod"), "7"),
        chumps(config_map(Some("prod"), "a", "1"), "7"),
        chumps(config_map(Some("prod"), "b", "1"), "7"),
    ];
    let applied = cluster.apply(&objects, "prod", None).await.unwrap();
    let inventory = recorded(&applied);
    api.stop().await;
    let scope = PruneScope {
        managed_by: ("app.kubernetes.io/managed-by", "chump"),
        source: ("chump.dev/source", "7"),
        allowed_namespace: Some("prod"),
    };
    let report = cluster.prune(&inventory, scope).await;
    let failed: Vec<&str> = report.failed.iter().map(|(o, _)| o.name.as_str()).collect();
    assert_eq!(failed, vec!["a", "b"]);
    assert!(
        report.failures().contains("ConfigMap prod/a: cannot reach"),
        "{}",
        report.failures()
    );
    api.restart().await;
    let report = cluster.prune(&inventory, scope).await;
    assert_eq!(report.deleted.len(), 2, "{report:?}");
}
