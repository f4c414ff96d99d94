//! The REST API of issue #2, through the real binary over HTTP: every route of
//! the original tool, every bad input, ids, persistence and configuration.

mod support;

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use support::chump::{chump_command, Chump, ChumpOptions};

fn seed() -> Value {
    json!({"namespace": "production", "deployment_name": "helloworld",
           "git_url": "https://github.com/stvnorg/helloworld.git", "branch": "master",
           "deploy_path": "./deploy/helloworld/deployment.yaml", "container_name": "helloworld",
           "image_version_file": "./deploy/helloworld/deployment.yaml"})
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

async fn call(c: &Chump, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Client::new().request(method, c.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, json)
}

async fn raw(
    c: &Chump,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Client::new().request(method, c.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, json)
}

async fn sources(c: &Chump) -> Vec<Value> {
    let (status, body) = call(c, Method::GET, "/api/sources", None).await;
    assert_eq!(status, StatusCode::OK);
    body["sources"].as_array().unwrap().clone()
}

async fn create(c: &Chump, body: Value) -> Value {
    let (status, resp) = call(c, Method::POST, "/api/sources/create", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{resp}");
    resp["source"].clone()
}

#[tokio::test]
async fn index_and_health() {
    let c = Chump::start();
    let (s, b) = call(&c, Method::GET, "/api", None).await;
    assert_eq!(s, StatusCode::OK);
    let endpoints = b["endpoints"].as_array().unwrap();
    assert!(
        endpoints.iter().any(|e| e == "POST /api/sources/create"),
        "{b}"
    );
    let (s, b) = call(&c, Method::GET, "/api/health", None).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"status": "healthy"})));
    let (s, _) = call(&c, Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&c, Method::GET, "/readyz", None).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ready")));
}

#[tokio::test]
async fn seed_crud_round_trip() {
    let c = Chump::start();
    assert!(sources(&c).await.is_empty());

    let (s, b) = call(&c, Method::POST, "/api/sources/create", Some(seed())).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["msg"], "[INFO] Add new source success!");
    assert_eq!(b["source"]["id"], 1);
    for (k, v) in seed().as_object().unwrap() {
        assert_eq!(&b["source"][k], v, "{k}");
    }

    // Same target again: 409, nothing stored.
    let (s, b) = call(
        &c,
        Method::POST,
        "/api/sources",
        Some(with(seed(), "branch", json!("main"))),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            StatusCode::CONFLICT,
            json!({"msg": "[WARN] Source already exist!"})
        )
    );
    assert_eq!(sources(&c).await.len(), 1);

    // POST /api/sources works too, and ids count up.
    let (s, b) = call(
        &c,
        Method::POST,
        "/api/sources",
        Some(with(seed(), "container_name", json!("sidecar"))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["source"]["id"], 2);

    let list = sources(&c).await;
    assert_eq!(
        list.iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );

    for path in ["/api/sources/1", "/api/sources/1/"] {
        let (s, b) = call(&c, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(b["deployment_name"], "helloworld");
        assert_eq!(b["id"], 1);
    }

    // The seed's PATCH with all seven fields.
    let changed = with(seed(), "container_name", json!("helloworld-container"));
    let (s, b) = call(&c, Method::PATCH, "/api/sources/1/update", Some(changed)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["msg"], "[INFO] Source has been updated!");
    assert_eq!(b["source"]["container_name"], "helloworld-container");
    let (_, b) = call(&c, Method::GET, "/api/sources/1", None).await;
    assert_eq!(b["container_name"], "helloworld-container");

    // PATCH a subset, on both paths.
    let (s, b) = call(
        &c,
        Method::PATCH,
        "/api/sources/1",
        Some(json!({"branch": "release"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["source"]["branch"], "release");
    assert_eq!(b["source"]["container_name"], "helloworld-container");

    // PUT needs every field.
    let (s, b) = call(
        &c,
        Method::PUT,
        "/api/sources/1/update",
        Some(json!({"branch": "main"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["errors"]["namespace"], "is required");
    let (s, b) = call(
        &c,
        Method::PUT,
        "/api/sources/1",
        Some(with(seed(), "container_name", json!("web"))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["source"]["branch"], "master");
    assert_eq!(b["source"]["container_name"], "web");

    // An update that collides with source 2.
    let (s, b) = call(
        &c,
        Method::PATCH,
        "/api/sources/1/update",
        Some(json!({"container_name": "sidecar"})),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            StatusCode::CONFLICT,
            json!({"msg": "[WARN] Source already exist!"})
        )
    );
    let (_, b) = call(&c, Method::GET, "/api/sources/1", None).await;
    assert_eq!(b["container_name"], "web");

    // Missing ids: 404 everywhere.
    for (m, p) in [
        (Method::GET, "/api/sources/99"),
        (Method::PATCH, "/api/sources/99/update"),
        (Method::PUT, "/api/sources/99"),
        (Method::DELETE, "/api/sources/99/delete"),
        (Method::DELETE, "/api/sources/99"),
    ] {
        let body = (m == Method::PATCH || m == Method::PUT).then(seed);
        let (s, b) = call(&c, m.clone(), p, body).await;
        assert_eq!(
            (s, b),
            (
                StatusCode::NOT_FOUND,
                json!({"msg": "[WARN] Source doesn't exist!"})
            ),
            "{m} {p}"
        );
    }

    // Delete, on both paths.
    let (s, b) = call(&c, Method::DELETE, "/api/sources/1/delete", None).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"msg": "[INFO] Source has been deleted!"})
        )
    );
    let (s, _) = call(&c, Method::GET, "/api/sources/1", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&c, Method::DELETE, "/api/sources/2", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(sources(&c).await.is_empty());

    // Ids are never reused, even the highest one after its delete.
    let b = create(&c, seed()).await;
    assert_eq!(b["id"], 3);
}

#[tokio::test]
async fn bad_sources_are_rejected_and_nothing_is_stored() {
    let c = Chump::start();
    let long = "a".repeat(64);
    let cases: Vec<(Value, &str)> = vec![
        (without(seed(), "namespace"), "namespace"),
        (with(seed(), "namespace", json!("")), "namespace"),
        (with(seed(), "namespace", json!("   ")), "namespace"),
        (with(seed(), "namespace", json!(null)), "namespace"),
        (with(seed(), "namespace", json!(5)), "namespace"),
        (with(seed(), "branch", json!(["master"])), "branch"),
        (with(seed(), "git_url", json!({"url": "x"})), "git_url"),
        (with(seed(), "owner", json!("me")), "owner"),
        (with(seed(), "namespace", json!("Production")), "namespace"),
        (with(seed(), "namespace", json!("prod_1")), "namespace"),
        (with(seed(), "namespace", json!(long)), "namespace"),
        (
            with(seed(), "deployment_name", json!("-web")),
            "deployment_name",
        ),
        (
            with(seed(), "deployment_name", json!("web..x")),
            "deployment_name",
        ),
        (
            with(seed(), "container_name", json!("web.x")),
            "container_name",
        ),
        (
            with(seed(), "git_url", json!("ftp://example.com/x.git")),
            "git_url",
        ),
        (
            with(seed(), "git_url", json!("file:///srv/git/x.git")),
            "git_url",
        ),
        (with(seed(), "git_url", json!("/srv/git/x.git")), "git_url"),
        (with(seed(), "git_url", json!("https://")), "git_url"),
        (with(seed(), "git_url", json!("not a url")), "git_url"),
        (with(seed(), "branch", json!("a..b")), "branch"),
        (with(seed(), "branch", json!("-x")), "branch"),
        (with(seed(), "branch", json!("feature branch")), "branch"),
        (with(seed(), "branch", json!("x.lock")), "branch"),
        (
            with(seed(), "deploy_path", json!("/etc/kubernetes")),
            "deploy_path",
        ),
        (
            with(seed(), "deploy_path", json!("../other")),
            "deploy_path",
        ),
        (
            with(seed(), "deploy_path", json!("deploy/../../x")),
            "deploy_path",
        ),
        (
            with(seed(), "image_version_file", json!("deploy/a\u{0}b.yaml")),
            "image_version_file",
        ),
        (
            with(seed(), "image_version_file", json!("deploy/a\nb.yaml")),
            "image_version_file",
        ),
        (
            with(seed(), "interval_seconds", json!(0)),
            "interval_seconds",
        ),
        (
            with(seed(), "interval_seconds", json!("60")),
            "interval_seconds",
        ),
        (with(seed(), "suspended", json!("yes")), "suspended"),
        (with(seed(), "prune", json!("yes")), "prune"),
        (with(seed(), "prune", json!(1)), "prune"),
        (with(seed(), "prune", json!(null)), "prune"),
        (with(seed(), "deleting", json!(true)), "deleting"),
        (
            with(seed(), "service_account", json!("a/b/c")),
            "service_account",
        ),
        (
            with(seed(), "service_account", json!("Team/x")),
            "service_account",
        ),
        (
            with(seed(), "service_account", json!("")),
            "service_account",
        ),
        (with(seed(), "service_account", json!(7)), "service_account"),
    ];
    for (body, field) in cases {
        let (s, b) = call(&c, Method::POST, "/api/sources/create", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {b}");
        assert!(
            b["msg"].as_str().unwrap().contains(field),
            "msg should name {field}: {b}"
        );
        assert!(
            b["errors"][field].is_string(),
            "errors should name {field}: {b}"
        );
    }
    // Every bad field at once.
    let (s, b) = call(
        &c,
        Method::POST,
        "/api/sources",
        Some(json!({"namespace": "BAD", "branch": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let errors = b["errors"].as_object().unwrap();
    for f in [
        "namespace",
        "branch",
        "git_url",
        "deploy_path",
        "image_version_file",
        "container_name",
        "deployment_name",
    ] {
        assert!(errors.contains_key(f), "{f}: {b}");
    }
    assert!(sources(&c).await.is_empty());

    // Bodies that are not a JSON object.
    let seed_bytes = serde_json::to_vec(&seed()).unwrap();
    let cases: Vec<(Option<&str>, Vec<u8>, StatusCode, &str)> = vec![
        (
            Some("application/json"),
            b"{\"namespace\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
        ),
        (
            Some("application/json"),
            b"not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
        ),
        (
            Some("application/json"),
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            Some("application/json"),
            b"[1, 2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            Some("application/json"),
            b"\"x\"".to_vec(),
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            Some("text/plain"),
            seed_bytes.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            b"namespace=x".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/json",
        ),
    ];
    for (ct, body, status, needle) in cases {
        let (s, b) = raw(&c, Method::POST, "/api/sources/create", ct, body.clone()).await;
        assert_eq!(s, status, "{:?} -> {b}", String::from_utf8_lossy(&body));
        assert!(b["msg"].as_str().unwrap().contains(needle), "{b}");
    }
    // Over 64 KiB, valid JSON otherwise.
    let big = with(seed(), "deployment_name", json!("a".repeat(70 * 1024)));
    let (s, b) = raw(
        &c,
        Method::POST,
        "/api/sources/create",
        Some("application/json"),
        serde_json::to_vec(&big).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    assert!(b["msg"].as_str().unwrap().contains("64 KiB"));
    assert!(sources(&c).await.is_empty());
}

#[tokio::test]
async fn bad_updates_change_nothing() {
    let c = Chump::start();
    let original = create(&c, seed()).await;
    for body in [
        json!({"namespace": "BAD"}),
        json!({"branch": ""}),
        json!({"git_url": "ftp://x/y"}),
        json!({"unknown": 1}),
        json!({"deploy_path": "/abs"}),
    ] {
        for path in ["/api/sources/1/update", "/api/sources/1"] {
            let (s, b) = call(&c, Method::PATCH, path, Some(body.clone())).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body} {b}");
        }
    }
    let (s, _) = raw(
        &c,
        Method::PATCH,
        "/api/sources/1/update",
        Some("application/json"),
        b"{oops".to_vec(),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, now) = call(&c, Method::GET, "/api/sources/1", None).await;
    assert_eq!(now, original);
}

#[tokio::test]
async fn prune_is_stored_shown_and_kept_by_patch() {
    let c = Chump::start();
    // Default: on; never being deleted on its own.
    let a = create(&c, seed()).await;
    assert_eq!(
        (&a["prune"], &a["deleting"]),
        (&json!(true), &json!(false)),
        "{a}"
    );
    let b = create(
        &c,
        with(
            with(seed(), "container_name", json!("two")),
            "prune",
            json!(false),
        ),
    )
    .await;
    assert_eq!(b["prune"], false, "{b}");
    let (_, got) = call(&c, Method::GET, &format!("/api/sources/{}", b["id"]), None).await;
    assert_eq!(
        (&got["prune"], &got["deleting"]),
        (&json!(false), &json!(false)),
        "{got}"
    );
    let list = sources(&c).await;
    assert_eq!(
        list.iter().map(|s| s["prune"].clone()).collect::<Vec<_>>(),
        vec![json!(true), json!(false)]
    );
    // PATCH without it keeps it; with it changes it; PUT without it: on.
    let path = format!("/api/sources/{}", b["id"]);
    let (s, r) = call(&c, Method::PATCH, &path, Some(json!({"branch": "main"}))).await;
    assert_eq!(
        (s, &r["source"]["prune"]),
        (StatusCode::OK, &json!(false)),
        "{r}"
    );
    let (s, r) = call(&c, Method::PATCH, &path, Some(json!({"prune": true}))).await;
    assert_eq!(
        (s, &r["source"]["prune"]),
        (StatusCode::OK, &json!(true)),
        "{r}"
    );
    let (s, r) = call(&c, Method::PATCH, &path, Some(json!({"prune": false}))).await;
    assert_eq!(
        (s, &r["source"]["prune"]),
        (StatusCode::OK, &json!(false)),
        "{r}"
    );
    let (s, r) = call(
        &c,
        Method::PUT,
        &path,
        Some(with(seed(), "container_name", json!("two"))),
    )
    .await;
    assert_eq!(
        (s, &r["source"]["prune"]),
        (StatusCode::OK, &json!(true)),
        "{r}"
    );
    // A bad value changes nothing, and names the field.
    let (s, r) = call(&c, Method::PATCH, &path, Some(json!({"prune": "no"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
    assert_eq!(r["errors"]["prune"], "must be true or false", "{r}");
    let (_, got) = call(&c, Method::GET, &path, None).await;
    assert_eq!(got["prune"], true);
    // The status says whether the source is being deleted.
    let (s, st) = call(&c, Method::GET, &format!("{path}/status"), None).await;
    assert_eq!(
        (s, &st["deleting"]),
        (StatusCode::OK, &json!(false)),
        "{st}"
    );
}

#[tokio::test]
async fn delete_with_prune() {
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_INTERVAL", "600"));
    let a = create(&c, seed()).await;
    let path = format!("/api/sources/{}", a["id"]);
    // prune is true or false, nothing else; other parameters are refused;
    // nothing is deleted.
    for query in [
        "prune=bogus",
        "prune=1",
        "prune=0",
        "prune=TRUE",
        "prune=yes",
        "prune=",
        "prune",
    ] {
        for route in [path.clone(), format!("{path}/delete")] {
            let (s, b) = call(&c, Method::DELETE, &format!("{route}?{query}"), None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{route}?{query}: {b}");
            assert!(b["msg"].as_str().unwrap().contains("'prune'"), "{b}");
            assert_eq!(b["errors"]["prune"], "must be true or false", "{b}");
        }
    }
    let (s, b) = call(&c, Method::DELETE, &format!("{path}?purge=true"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["msg"]
            .as_str()
            .unwrap()
            .contains("Unknown query parameter 'purge'"),
        "{b}"
    );
    let (s, got) = call(&c, Method::GET, &path, None).await;
    assert_eq!((s, &got["deleting"]), (StatusCode::OK, &json!(false)));
    // A bad id still answers as before.
    let (s, b) = call(&c, Method::DELETE, "/api/sources/abc?prune=true", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = call(&c, Method::DELETE, "/api/sources/99?prune=true", None).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::NOT_FOUND,
            json!({"msg": "[WARN] Source doesn't exist!"})
        )
    );

    // Never deployed (nothing recorded as applied): deleted at once.
    let (s, b) = call(&c, Method::DELETE, &format!("{path}?prune=true"), None).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"msg": "[INFO] Source has been deleted!"})
        )
    );
    let (s, _) = call(&c, Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // prune=false, on the legacy route: as without it.
    let b = create(&c, seed()).await;
    let (s, r) = call(
        &c,
        Method::DELETE,
        &format!("/api/sources/{}/delete?prune=false", b["id"]),
        None,
    )
    .await;
    assert_eq!(
        (s, r),
        (
            StatusCode::OK,
            json!({"msg": "[INFO] Source has been deleted!"})
        )
    );
    assert!(sources(&c).await.is_empty());
}

#[tokio::test]
async fn bad_ids() {
    let c = Chump::start();
    create(&c, seed()).await;
    for id in [
        "abc",
        "1.5",
        "0",
        "-1",
        "9007199254740992",
        "99999999999999999999999",
        "1e3",
    ] {
        for (m, p) in [
            (Method::GET, format!("/api/sources/{id}")),
            (Method::PATCH, format!("/api/sources/{id}/update")),
            (Method::DELETE, format!("/api/sources/{id}/delete")),
        ] {
            let body = (m == Method::PATCH).then(seed);
            let (s, b) = call(&c, m.clone(), &p, body).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {p}: {b}");
            assert!(
                b["msg"].as_str().unwrap().contains("Invalid source id"),
                "{b}"
            );
        }
    }
    assert_eq!(sources(&c).await.len(), 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let c = Chump::start();
    let (s, b) = call(&c, Method::GET, "/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b["msg"].as_str().unwrap().contains("/nope"));
    let (s, _) = call(&c, Method::GET, "/api/sources/1/history/x/y", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (m, p) in [
        (Method::DELETE, "/api/sources"),
        (Method::POST, "/api/sources/1"),
        (Method::GET, "/api/sources/1/update"),
        (Method::GET, "/api/sources/1/delete"),
        (Method::POST, "/api/health"),
    ] {
        let resp = Client::new()
            .request(m.clone(), c.url(p))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
        let b: Value = resp.json().await.expect("JSON body");
        assert!(b["msg"].as_str().unwrap().contains("not allowed"), "{b}");
    }
}

#[tokio::test]
async fn credentials_in_git_url_are_never_returned() {
    let c = Chump::start();
    let secret = "tok3n-s3cret-value";
    let url = format!("https://deploy:{secret}@git.example.com/org/app.git");
    let created = create(&c, with(seed(), "git_url", json!(url))).await;
    assert_eq!(
        created["git_url"],
        "https://***@git.example.com/org/app.git"
    );
    // Sending the masked URL back keeps the stored credentials (no change).
    let (s, b) = call(
        &c,
        Method::PATCH,
        "/api/sources/1",
        Some(json!({"git_url": created["git_url"], "branch": "main"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, list) = call(&c, Method::GET, "/api/sources", None).await;
    let (_, one) = call(&c, Method::GET, "/api/sources/1", None).await;
    for text in [list.to_string(), one.to_string(), b.to_string(), c.logs()] {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn file_urls_only_when_allowed() {
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_ALLOW_FILE_URLS", "true"));
    create(
        &c,
        with(seed(), "git_url", json!("file:///srv/git/app.git")),
    )
    .await;
}

#[tokio::test]
async fn concurrent_creates_get_distinct_ids() {
    let c = Chump::start();
    let client = Client::new();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        let url = c.url("/api/sources/create");
        tasks.push(tokio::spawn(async move {
            let body = with(seed(), "deployment_name", json!(format!("app-{i}")));
            let resp = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
            resp.json::<Value>().await.unwrap()["source"]["id"]
                .as_i64()
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids, (1..=64).collect::<Vec<_>>());
    let stored = sources(&c).await;
    assert_eq!(stored.len(), 64);
}

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chump::start_with(ChumpOptions::default().dir(dir.path()));
    create(&c, seed()).await;
    create(&c, with(seed(), "container_name", json!("two"))).await;
    let (s, _) = call(&c, Method::DELETE, "/api/sources/2", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        c.terminate(Duration::from_secs(10)),
        "SIGTERM should stop chump cleanly"
    );
    drop(c);

    let c = Chump::start_with(ChumpOptions::default().dir(dir.path()));
    let list = sources(&c).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["deployment_name"], "helloworld");
    // The deleted id 2 is not handed out again after the restart.
    let b = create(&c, with(seed(), "container_name", json!("three"))).await;
    assert_eq!(b["id"], 3);
}

/// The lines of a shutdown all reach stderr, whole and in order, before the
/// process exits (whatever writes them: a buffered or non-blocking writer
/// must flush before exit).
#[tokio::test]
async fn every_line_logged_up_to_exit_reaches_stderr() {
    let mut c = Chump::start();
    for i in 0..20 {
        create(
            &c,
            with(seed(), "deployment_name", json!(format!("app-{i}"))),
        )
        .await;
    }
    assert!(
        c.terminate(Duration::from_secs(10)),
        "SIGTERM should stop chump cleanly"
    );
    // The reader of chump's stderr may still be taking the last lines in.
    let logs = support::chump::wait_for("the last line logged", Duration::from_secs(10), || {
        let logs = c.logs();
        async move { logs.contains("\"chump stopped\"").then_some(logs) }
    })
    .await;
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn log line ({e}): {l}")))
        .collect();
    let position = |message: &str| {
        lines
            .iter()
            .position(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("{message:?} not logged:\n{logs}"))
    };
    assert!(position("chump listening") < position("SIGTERM: shutting down"));
    assert!(position("SIGTERM: shutting down") < position("chump stopped"));
    assert_eq!(
        lines.last().unwrap()["message"],
        "chump stopped",
        "the last line is the last one logged"
    );
}

#[tokio::test]
async fn api_token_guards_the_api() {
    let token = "a-long-test-token-0123456789";
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_API_TOKEN", token));
    let client = Client::new();
    let resp = client.get(c.url("/api/sources")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.json::<Value>().await.unwrap()["msg"]
        .as_str()
        .unwrap()
        .contains("Unauthorized"));
    let resp = client
        .post(c.url("/api/sources"))
        .bearer_auth("wrong-token-wrong-token")
        .json(&seed())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client
        .post(c.url("/api/sources"))
        .bearer_auth(token)
        .json(&seed())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = client
        .get(c.url("/api/sources"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap()["sources"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let resp = client.get(c.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!c.logs().contains(token));
}

#[test]
fn bad_configuration_stops_startup_naming_the_variable() {
    let cases = [
        ("CHUMP_WORKERS", "many"),
        ("CHUMP_WORKERS", "0"),
        ("CHUMP_BIND", "localhost"),
        ("CHUMP_INTERVAL", "soon"),
        ("CHUMP_CHECK_TIMEOUT", "-5"),
        ("CHUMP_DATABASE", "postgres://x/y"),
        ("CHUMP_DATABASE", "rethinkdb://host/"),
        ("CHUMP_LOG_FORMAT", "xml"),
        ("CHUMP_ALLOW_FILE_URLS", "maybe"),
        ("CHUMP_KUSTOMIZE_IN_PROCESS", "sometimes"),
        ("CHUMP_API_TOKEN", "short"),
    ];
    for (var, value) in cases {
        let out = chump_command()
            .arg("serve")
            .env("CHUMP_BIND", "127.0.0.1:0")
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}={value} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}={value}: {stderr}");
    }
}

#[test]
fn serve_help_lists_every_variable() {
    let out = chump_command().args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "CHUMP_BIND",
        "CHUMP_DATABASE",
        "CHUMP_WORKERS",
        "CHUMP_INTERVAL",
        "CHUMP_CHECK_TIMEOUT",
        "CHUMP_WORKDIR",
        "CHUMP_API_TOKEN",
        "KUBECONFIG",
        "RDB_HOST",
        "RDB_PORT",
        "DB_NAME",
        "TABLE_NAME",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
    assert!(help.contains("127.0.0.1:8000"));
}

#[tokio::test]
async fn a_second_process_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Chump::start_with(ChumpOptions::default().dir(dir.path()));
    let out = chump_command()
        .arg("serve")
        .env("CHUMP_BIND", "127.0.0.1:0")
        .env(
            "CHUMP_DATABASE",
            format!("sqlite://{}", dir.path().join("chump.db").display()),
        )
        .env("CHUMP_WORKDIR", dir.path().join("work2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another chump process"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_source_list_pages_with_limit_and_after_and_stays_whole_by_default() {
    let c = Chump::start();
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = with(seed(), "deployment_name", json!(format!("app-{i}")));
        let (s, b) = call(&c, Method::POST, "/api/sources", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        ids.push(b["source"]["id"].as_i64().unwrap());
    }
    let ids_of = |b: &Value| -> Vec<i64> {
        b["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect()
    };

    // The original answer: every source, no cursor.
    let (s, all) = call(&c, Method::GET, "/api/sources", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids_of(&all), ids);
    assert_eq!(all.as_object().unwrap().len(), 1, "only `sources`: {all}");
    assert!(all["sources"][0]["status"]["next_check_at"].is_string());

    // Pages of two, each the same objects as the whole list.
    let mut seen = Vec::new();
    let mut path = "/api/sources?limit=2".to_string();
    loop {
        let (s, page) = call(&c, Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for src in page["sources"].as_array().unwrap() {
            let whole = all["sources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["id"] == src["id"])
                .unwrap();
            // (The status moves on as checks run; the source does not.)
            let mut a = src.clone();
            let mut b = whole.clone();
            a.as_object_mut().unwrap().remove("status");
            b.as_object_mut().unwrap().remove("status");
            assert_eq!(a, b);
            assert!(src["status"]["next_check_at"].is_string(), "{src}");
        }
        seen.extend(ids_of(&page));
        match page["next_after"].as_i64() {
            Some(after) => path = format!("/api/sources?limit=2&after={after}"),
            None => {
                assert!(page["next_after"].is_null(), "{page}");
                break;
            }
        }
    }
    assert_eq!(seen, ids);
    let (_, tail) = call(
        &c,
        Method::GET,
        &format!("/api/sources?limit=5&after={}", ids[4]),
        None,
    )
    .await;
    assert_eq!(tail, json!({"sources": [], "next_after": null}));

    // Bad parameters: 400 naming the parameter; the sources are untouched.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=two", "limit"),
        ("limit=2&after=-1", "after"),
        ("after=2", "after"),
    ] {
        let (s, b) = call(&c, Method::GET, &format!("/api/sources?{query}"), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        assert!(b["errors"][field].is_string(), "{query}: {b}");
        assert!(b["msg"].as_str().unwrap().starts_with("[WARN]"), "{b}");
    }
    let (s, b) = call(&c, Method::GET, "/api/sources?page=2", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b["msg"].as_str().unwrap().contains("'page'"), "{b}");
    let (_, again) = call(&c, Method::GET, "/api/sources", None).await;
    assert_eq!(ids_of(&again), ids);
}

/// The whole list is read and written 500 sources at a time: across chunk
/// boundaries (an exact multiple of the chunk, and one more) it is still
/// one JSON answer with every source once, in id order, each as a page
/// shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_list_streams_every_source_across_chunks() {
    use futures::StreamExt;
    let c = Chump::start_with(ChumpOptions::default().env("CHUMP_INTERVAL", "1h"));
    let create_n = |from: usize, to: usize| {
        let c = &c;
        futures::stream::iter(from..to)
            .map(move |i| async move {
                let body = with(seed(), "deployment_name", json!(format!("app-{i}")));
                let (s, b) = call(c, Method::POST, "/api/sources", Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{b}");
                b["source"]["id"].as_i64().unwrap()
            })
            .buffer_unordered(16)
            .collect::<Vec<i64>>()
    };
    let ids_of = |b: &Value| -> Vec<i64> {
        b["sources"]
            .as_array()
            .unwrap_or_else(|| panic!("{b}"))
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect()
    };
    let without_status = |list: &Value| -> Vec<Value> {
        list["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| without(s.clone(), "status"))
            .collect()
    };
    let mut ids = create_n(0, 1000).await;
    for round in ["1,000: two whole chunks", "1,001: one more"] {
        ids.sort_unstable();
        let (s, all) = call(&c, Method::GET, "/api/sources", None).await;
        assert_eq!(s, StatusCode::OK, "{round}");
        assert_eq!(all.as_object().unwrap().len(), 1, "{round}: only `sources`");
        assert_eq!(ids_of(&all), ids, "{round}");
        assert!(
            all["sources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["status"]["next_check_at"].is_string()),
            "{round}: every source with its status"
        );
        let (_, first) = call(&c, Method::GET, "/api/sources?limit=1000", None).await;
        let after = first["next_after"].as_i64().unwrap();
        let (_, rest) = call(
            &c,
            Method::GET,
            &format!("/api/sources?limit=1000&after={after}"),
            None,
        )
        .await;
        let mut paged = without_status(&first);
        paged.extend(without_status(&rest));
        assert_eq!(
            without_status(&all),
            paged,
            "{round}: as the pages show them"
        );
        if ids.len() == 1000 {
            ids.extend(create_n(1000, 1001).await);
        }
    }
}
