//! The dashboard, end to end: `chump serve` gives API clients the original
//! tool's JSON at `/` and browsers the page; a real headless Chromium
//! (Debian's, over WebDriver) shows the sources in their states, a source's
//! history with its objects and diffs, the global history with the API's
//! filters, changes without a reload, and asks for a token when the API
//! wants one. Screenshots go to `target/dashboard/`; the load time with
//! 1,000 sources is printed, not asserted.

mod support;

use std::time::{Duration, Instant};

use fantoccini::key::Key;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::browser::Browser;
use support::chump::{wait_for, Chump, ChumpOptions};
use support::env::*;
use support::kube_api::PodBehaviour;

const BAD_IMAGE: &str = "nginx:does-not-exist";

/// The rows of the sources table as the page shows them.
const ROWS: &str = r#"return [...document.querySelectorAll('#sources tbody tr[data-id]')].map(r => ({
    id: Number(r.dataset.id), state: r.dataset.state,
    word: r.querySelector('.badge').childNodes[0].textContent.trim(),
    name: r.cells[0].querySelector('a').textContent.trim(),
    image: r.cells[3].textContent.trim(),
    commit: r.cells[4].querySelector('code')?.getAttribute('title') ?? null,
    shown: r.cells[4].textContent.trim(),
  }))"#;

async fn status(c: &Chump, id: i64) -> Value {
    get(c, &format!("/api/sources/{id}/status")).await
}

async fn wait_status(c: &Chump, id: i64, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, WAIT, || async {
        let st = status(c, id).await;
        pred(&st).then_some(st)
    })
    .await
}

/// Every form control has a label, every image a text alternative, every
/// table a caption and column headers: what a screen reader needs.
const A11Y: &str = r#"const problems = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (!el.labels || !el.labels.length) problems.push(`unlabelled ${el.tagName} #${el.id}`);
  }
  for (const img of document.querySelectorAll('img')) if (!img.hasAttribute('alt')) problems.push(`img without alt ${img.src}`);
  for (const t of document.querySelectorAll('main table')) {
    if (!t.caption) problems.push('table without caption');
    if (!t.querySelector('thead th[scope=col]')) problems.push('table without column headers');
  }
  for (const b of document.querySelectorAll('.badge')) if (!b.textContent.trim()) problems.push('badge without a word');
  if (!document.documentElement.lang) problems.push('no lang');
  if (!document.querySelector('main') || !document.querySelector('nav')) problems.push('no main or nav landmark');
  return problems"#;

async fn assert_accessible(b: &Browser, page: &str) {
    let problems = b.eval(A11Y).await;
    assert_eq!(problems, json!([]), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_gives_api_clients_the_original_json_and_browsers_the_page() {
    let c = Chump::start_with(
        ChumpOptions::default()
            .env("CHUMP_API_TOKEN", "full-token-0123456789")
            .env("CHUMP_API_READ_TOKEN", "read-token-0123456789"),
    );
    let http = Client::new();
    let original = json!({"app_name": "chump", "description": "autodeploy k8s based on flux-gitops principal"});
    for accept in [
        None,
        Some("application/json"),
        Some("*/*"),
        Some("text/html;q=0"),
    ] {
        let mut req = http.get(c.url("/"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{accept:?}");
        assert_eq!(resp.headers()["vary"], "Accept");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            original,
            "Accept: {accept:?}"
        );
    }
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let page = http
        .get(c.url("/"))
        .header("accept", browser_accept)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<main id="main""#), "{html}");

    // /ui/ always serves it, with a strict policy, and needs no token: the
    // page holds no data (the API still does).
    let ui = http.get(c.url("/ui/")).send().await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    let csp = ui.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(ui.headers()["x-content-type-options"], "nosniff");
    assert_eq!(ui.text().await.unwrap(), html);
    let api = http.get(c.url("/api/sources")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(c.url("/ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(redirect.headers()["location"], "/ui/");

    // Every file the page loads is served, with its type and a tag that
    // makes a second load a 304; nothing refers to another origin.
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        assert!(html.contains(&format!("/ui/{file}")), "{file} is linked");
        let resp = http
            .get(c.url(&format!("/ui/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{file}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        // (An SVG names its XML namespace by URI; nothing is fetched.)
        let body = resp
            .text()
            .await
            .unwrap()
            .replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{file} refers to another origin"
        );
        let again = http
            .get(c.url(&format!("/ui/{file}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{file}");
    }
    for (method, path, code) in [
        ("GET", "/ui/nothing.js", StatusCode::NOT_FOUND),
        ("GET", "/ui/../api/sources", StatusCode::NOT_FOUND),
        ("POST", "/ui/", StatusCode::METHOD_NOT_ALLOWED),
        ("POST", "/", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let resp = http
            .request(method.parse().unwrap(), c.url(path))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        // `..` is resolved by the client: it asks for /api/sources (401).
        if path.contains("..") {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
            continue;
        }
        assert_eq!(status, code, "{method} {path}: {body}");
        assert!(
            body["msg"].as_str().unwrap().starts_with("[WARN]"),
            "{body}"
        );
    }
}

/// A source in each state the table knows, and a browser on the page.
struct Fleet {
    env: Env,
    c: Chump,
    deployed: i64,
    up_to_date: i64,
    failed: i64,
    degraded: i64,
    pinned: i64,
    suspended: i64,
    pinned_commit: String,
}

async fn fleet() -> Fleet {
    let env = Env::new().await;
    env.kube
        .set_pod_behaviour(BAD_IMAGE, PodBehaviour::ImagePullBackOff);
    env.app_repo("calm", "calm", "web", "nginx:1");
    env.app_repo("busy", "busy", "api", "nginx:1.27");
    env.app_repo("broken", "broken", "worker", BAD_IMAGE);
    env.app_repo("pin", "shop", "web", "nginx:1");
    env.app_repo("paused", "paused", "web", "nginx:1");
    let c = env.chump_with(env.options().env("CHUMP_ROLLOUT_TIMEOUT", "60"));

    // Checked once an hour: stays `deployed`.
    let mut calm = env.source("calm", "calm", "web");
    calm["interval_seconds"] = json!(3600);
    let deployed = create(&c, &calm).await;
    let up_to_date = create(&c, &env.source("busy", "busy", "api")).await;
    let failed = create(&c, &env.source("no-such-repo", "ghost", "web")).await;
    let degraded = create(&c, &env.source("broken", "broken", "worker")).await;
    let pinned = create(&c, &env.source("pin", "shop", "web")).await;
    let mut paused = env.source("paused", "paused", "web");
    paused["suspended"] = json!(true);
    let suspended = create(&c, &paused).await;

    // Pinned: a good deploy, a bad one, a rollback.
    wait_history(&c, pinned, "the good deploy", |e| {
        e["outcome"] == "deployed"
    })
    .await;
    let pinned_commit = env.git.commit_files(
        "pin",
        "main",
        [(
            "deploy/deployment.yaml",
            deployment("shop", "web", BAD_IMAGE),
        )],
        "a tag that does not exist",
    );
    wait_history(&c, pinned, "the bad deploy failing", |e| {
        e["outcome"] == "failed" && e["commit"] == pinned_commit.as_str()
    })
    .await;
    let resp = Client::new()
        .post(c.url(&format!("/api/sources/{pinned}/rollback")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    // Pinned, and checked once since (what every later check repeats).
    wait_status(&c, pinned, "pinned and checked", |st| {
        st["pinned"].is_object() && st["last_outcome"] == "up_to_date"
    })
    .await;

    for (id, outcome) in [
        (deployed, "deployed"),
        (up_to_date, "up_to_date"),
        (failed, "failed"),
        (degraded, "degraded"),
    ] {
        wait_status(&c, id, outcome, |st| st["last_outcome"] == outcome).await;
    }
    Fleet {
        env,
        c,
        deployed,
        up_to_date,
        failed,
        degraded,
        pinned,
        suspended,
        pinned_commit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_sources_their_history_and_changes_without_a_reload() {
    let f = fleet().await;
    let c = &f.c;
    let b = Browser::start(1280, 860).await;
    b.goto(&c.url("/ui/")).await;
    b.wait(
        "the sources table",
        "return document.querySelector('main[data-view=sources][data-loaded]') !== null",
    )
    .await;

    // Every source with its state, as word and data.
    let expected = [
        (f.deployed, "deployed", "deployed"),
        (f.up_to_date, "up_to_date", "up to date"),
        (f.failed, "failed", "failed"),
        (f.degraded, "degraded", "degraded"),
        (f.pinned, "pinned", "pinned"),
        (f.suspended, "suspended", "suspended"),
    ];
    let shown = b
        .wait(
            "every source in its state",
            &format!(
                "const want = {}; const rows = (() => {{ {ROWS} }})();
                 return want.every(([id, state]) => rows.some(r => r.id === id && r.state === state)) && rows",
                json!(expected.iter().map(|(id, s, _)| json!([id, s])).collect::<Vec<_>>())
            ),
        )
        .await;
    let shown = shown.as_array().unwrap();
    assert_eq!(shown.len(), 6, "{shown:?}");
    for (id, state, word) in expected {
        let row = shown.iter().find(|r| r["id"] == id).unwrap();
        assert_eq!(row["word"], word, "{row}");
        let st = status(c, id).await;
        // After a successful deploy or rollback the spec runs what it
        // applied (the record itself keeps the image found before it).
        let live = ["deployed", "rolled_back"].contains(&st["last_outcome"].as_str().unwrap_or(""));
        let want_image = if live {
            &st["desired_image"]
        } else {
            &st["running_image"]
        }
        .as_str()
        .unwrap_or("—");
        assert_eq!(row["image"], want_image, "{state}: {row} vs {st}");
        assert_eq!(row["commit"], st["last_commit"], "{state}: {row}");
        if let Some(sha) = st["last_commit"].as_str() {
            assert_eq!(row["shown"], &sha[..8], "a short SHA: {row}");
        }
    }
    let calm = shown.iter().find(|r| r["id"] == f.deployed).unwrap();
    assert_eq!(calm["name"], "calm/web");
    assert_eq!(calm["image"], "nginx:1");
    assert_accessible(&b, "sources").await;
    b.screenshot("sources").await;

    // Filters: by namespace, by state, and the search box.
    b.element("#f-ns")
        .await
        .select_by_value("broken")
        .await
        .unwrap();
    let only = b
        .wait(
            "only the broken namespace",
            &format!("const r = (() => {{ {ROWS} }})(); return r.length === 1 && r"),
        )
        .await;
    assert_eq!(only[0]["id"], f.degraded);
    b.element("#f-ns").await.select_by_value("").await.unwrap();
    b.element("#f-state")
        .await
        .select_by_value("failed")
        .await
        .unwrap();
    let only = b
        .wait(
            "only failed sources",
            &format!("const r = (() => {{ {ROWS} }})(); return r.length === 1 && r"),
        )
        .await;
    assert_eq!(only[0]["id"], f.failed);
    let count = b
        .eval("return document.querySelector('#count').textContent")
        .await;
    assert_eq!(count, "Showing 1 of 6 sources");
    b.element("#f-state")
        .await
        .select_by_value("")
        .await
        .unwrap();
    b.element("#f-q").await.send_keys("1.27").await.unwrap();
    let only = b
        .wait(
            "only the source running 1.27",
            &format!("const r = (() => {{ {ROWS} }})(); return r.length === 1 && r"),
        )
        .await;
    assert_eq!(only[0]["id"], f.up_to_date);
    b.element("#f-q").await.clear().await.unwrap();
    b.element("#f-q").await.send_keys(" ").await.unwrap();
    b.wait(
        "all six again",
        &format!("return (() => {{ {ROWS} }})().length === 6"),
    )
    .await;

    // Live: a change through the API shows up without a reload, and the
    // "updated" time moves on.
    b.eval("window.__sameDocument = 'yes'; return true").await;
    let before = b
        .eval("return Number(document.documentElement.dataset.updatedAt)")
        .await;
    let resp = Client::new()
        .patch(c.url(&format!("/api/sources/{}", f.up_to_date)))
        .json(&json!({"suspended": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    b.wait(
        "the suspended source's new state",
        &format!(
            "return document.querySelector('tr[data-id=\"{}\"]')?.dataset.state === 'suspended'",
            f.up_to_date
        ),
    )
    .await;
    assert_eq!(b.eval("return window.__sameDocument ?? null").await, "yes");
    let after = b
        .eval("return Number(document.documentElement.dataset.updatedAt)")
        .await;
    assert!(after.as_f64() > before.as_f64(), "{before} → {after}");
    let live = b
        .eval("return document.querySelector('#live-text').textContent")
        .await;
    assert!(live.as_str().unwrap().contains("updated"), "{live}");

    // The keyboard reaches a source page: its link, Enter.
    let link = b
        .element(&format!("tr[data-id=\"{}\"] th a", f.pinned))
        .await;
    b.eval(&format!(
        "document.querySelector('tr[data-id=\"{}\"] th a').focus(); return true",
        f.pinned
    ))
    .await;
    link.send_keys(&Key::Enter.to_string()).await.unwrap();
    b.wait(
        "the pinned source's page",
        "return document.querySelector('main[data-view=source][data-loaded]') !== null",
    )
    .await;

    // Its history as a timeline: the API's entries, newest first.
    let api_history = history(c, f.pinned).await;
    let ids: Vec<i64> = api_history
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let outcomes: Vec<&str> = api_history
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    let at = |o: &str| outcomes.iter().position(|x| *x == o);
    assert!(
        at("rolled_back") < at("failed")
            && at("failed") < at("deployed")
            && at("rolled_back").is_some(),
        "a rollback after a failure after a deploy, newest first: {outcomes:?}"
    );
    let timeline = b
        .wait(
            "the timeline",
            &format!(
                "const ids = [...document.querySelectorAll('#src-history li.entry')].map(li => Number(li.dataset.id));
                 return ids.length === {} && ids",
                ids.len()
            ),
        )
        .await;
    assert_eq!(timeline, json!(ids));
    let pin = b
        .eval("return document.querySelector('#pin')?.textContent ?? ''")
        .await;
    assert!(
        pin.as_str().unwrap().contains(&f.pinned_commit[..8]),
        "the pin names the commit it keeps away from: {pin}"
    );
    assert_eq!(
        b.eval("return document.querySelector('#src-state .badge').dataset.state")
            .await,
        "pinned"
    );

    // The failed deploy: its objects with their actions, and its diff
    // against the good deploy (the image it changed).
    let failed_entry = api_history
        .iter()
        .find(|e| e["outcome"] == "failed")
        .unwrap();
    let fid = failed_entry["id"].as_i64().unwrap();
    let good_entry = api_history
        .iter()
        .find(|e| e["outcome"] == "deployed")
        .unwrap();
    let gid = good_entry["id"].as_i64().unwrap();
    b.click(&format!(
        "li.entry[data-id=\"{gid}\"] details.objects-details summary"
    ))
    .await;
    let objects = b
        .eval(&format!(
            "return [...document.querySelectorAll('li.entry[data-id=\"{gid}\"] .objects li')].map(li => li.textContent.replace(/\\s+/g, ' ').trim())"
        ))
        .await;
    let want: Vec<String> = good_entry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let ns = o["namespace"]
                .as_str()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            format!(
                "{} {} {ns}{}",
                o["action"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(objects, json!(want));
    assert!(
        want.iter().any(|o| o == "created Deployment shop/web"),
        "{want:?}"
    );
    b.click(&format!(
        "li.entry[data-id=\"{fid}\"] details.diff-details summary"
    ))
    .await;
    let diff = b
        .wait(
            "the failed deploy's diff",
            &format!(
                "const d = document.querySelector('li.entry[data-id=\"{fid}\"] details.diff-details');
                 return d.dataset.loaded === 'true' && {{
                   added: [...d.querySelectorAll('pre.diff .add')].map(s => s.textContent),
                   removed: [...d.querySelectorAll('pre.diff .del')].map(s => s.textContent),
                   text: d.querySelector('.diff-body').textContent }}"
            ),
        )
        .await;
    let has = |side: &str, needle: &str| {
        diff[side]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains(needle))
    };
    assert!(has("added", BAD_IMAGE), "{diff}");
    assert!(has("removed", "nginx:1"), "{diff}");
    assert!(
        diff["text"]
            .as_str()
            .unwrap()
            .contains(&format!("entry #{gid}")),
        "against the good deploy: {diff}"
    );
    assert_accessible(&b, "source page").await;
    // Tall enough to show the timeline and the open diff.
    b.client.set_window_size(1280, 1500).await.unwrap();
    b.eval("window.scrollTo(0, 0); return true").await;
    b.screenshot("source").await;
    b.client.set_window_size(1280, 860).await.unwrap();

    // A failure's reason is on its source page, as the API says it. (A
    // degraded workload's reason moves on as its pod does, ErrImagePull to
    // ImagePullBackOff: compare the page with the API until they agree.)
    for id in [f.failed, f.degraded] {
        b.goto(&c.url(&format!("/ui/#/sources/{id}"))).await;
        let mut last = (Value::Null, String::new());
        let agreed = tokio::time::timeout(WAIT, async {
            loop {
                let text = b
                    .eval("return document.querySelector('main[data-view=source][data-loaded] #failure')?.textContent ?? null")
                    .await;
                let st = status(c, id).await;
                let reason = st["health_reason"]
                    .as_str()
                    .or(st["last_message"].as_str())
                    .unwrap_or_default()
                    .to_string();
                if !reason.is_empty() && text.as_str().is_some_and(|t| t.contains(&reason)) {
                    return;
                }
                last = (text, reason);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(agreed.is_ok(), "{} should say {}", last.0, last.1);
    }

    // The global history, with the API's filters; a bad filter shows the
    // API's own error.
    // (The failing source adds entries as it retries: compare until both
    // are read between two of its checks.)
    b.goto(&c.url("/ui/#/history?outcome=failed")).await;
    wait_for("the page's failures to be the API's", WAIT, || async {
        let api: Vec<Value> = get(c, "/api/history?outcome=failed&limit=20").await["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!([e["id"], "failed"]))
            .collect();
        let page = b
            .eval(
                "const m = document.querySelector('main[data-view=history][data-loaded]');
                 return m && [...m.querySelectorAll('li.entry')].map(li => [Number(li.dataset.id), li.dataset.outcome])",
            )
            .await;
        (!api.is_empty() && page == json!(api)).then_some(())
    })
    .await;
    assert_eq!(
        b.eval("return document.querySelector('#h-outcome').value")
            .await,
        "failed"
    );
    b.element("#h-namespace")
        .await
        .send_keys("shop")
        .await
        .unwrap();
    b.click("#h-filters button[type=submit]").await;
    // Only shop's failures, once the filtered view has loaded (a poll of
    // the view before may still be landing: wait for the answer, not the
    // first list).
    wait_for("the failures in shop, and only those", WAIT, || async {
        let shown = b
            .eval(
                "const m = document.querySelector('main[data-view=history][data-loaded]');
                 return location.hash.includes('namespace=shop') && m && [...m.querySelectorAll('li.entry')].map(li => li.querySelector('.entry-head a').textContent)",
            )
            .await;
        (shown == json!(["shop/web"])).then_some(())
    })
    .await;
    let bad = Client::new()
        .get(c.url("/api/history?source_id=abc"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    b.goto(&c.url("/ui/#/history?source_id=abc")).await;
    let shown = b
        .wait(
            "the API's error",
            "return document.querySelector('#h-error [role=alert]')?.textContent ?? null",
        )
        .await;
    assert!(
        shown
            .as_str()
            .unwrap()
            .contains(bad["msg"].as_str().unwrap()),
        "{shown} vs {bad}"
    );

    // A phone's width: no sideways scrolling, rows become labelled cards.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&c.url("/ui/")).await;
    b.wait(
        "the sources on a phone",
        "return document.querySelector('main[data-view=sources][data-loaded]') !== null",
    )
    .await;
    let layout = b
        .eval(
            "const r = document.querySelector('#sources tbody tr');
             return { overflow: document.documentElement.scrollWidth - window.innerWidth,
                      display: getComputedStyle(r).display,
                      label: getComputedStyle(r.cells[1], '::before').content }",
        )
        .await;
    assert!(layout["overflow"].as_i64().unwrap() <= 0, "{layout}");
    assert_eq!(layout["display"], "block", "{layout}");
    assert!(
        layout["label"].as_str().unwrap().contains("Branch"),
        "{layout}"
    );
    b.screenshot("sources-phone").await;
    b.close().await;
    drop(f.env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_asks_for_a_token_once_and_the_read_only_token_is_enough() {
    let c = Chump::start_with(
        ChumpOptions::default()
            .env("CHUMP_API_TOKEN", "full-token-0123456789")
            .env("CHUMP_API_READ_TOKEN", "read-token-0123456789"),
    );
    let resp = Client::new()
        .post(c.url("/api/sources"))
        .bearer_auth("full-token-0123456789")
        .json(&json!({"namespace": "shop", "deployment_name": "web", "git_url": "git://127.0.0.1:9/app",
            "branch": "main", "deploy_path": "deploy", "container_name": "app",
            "image_version_file": "deploy/deployment.yaml", "suspended": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let b = Browser::start(1024, 768).await;
    b.goto(&c.url("/ui/")).await;
    b.wait(
        "the token prompt",
        "return document.querySelector('#token-dialog').open",
    )
    .await;
    assert_eq!(
        b.eval("return document.querySelectorAll('#sources tbody tr[data-id]').length")
            .await,
        0,
        "nothing is shown without a token"
    );
    assert_eq!(
        b.eval("return document.activeElement.id").await,
        "token-input",
        "the prompt has the focus"
    );

    // A wrong token: asked again, saying so.
    b.element("#token-input")
        .await
        .send_keys("wrong")
        .await
        .unwrap();
    b.click("#token-form button[type=submit]").await;
    let error = b
        .wait(
            "the refusal",
            "const e = document.querySelector('#token-error');
             return document.querySelector('#token-dialog').open && !e.hidden && e.textContent",
        )
        .await;
    assert!(error.as_str().unwrap().contains("refused"), "{error}");

    // The read-only token is enough to see everything.
    b.element("#token-input")
        .await
        .send_keys("read-token-0123456789")
        .await
        .unwrap();
    b.element("#token-input")
        .await
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    let rows = b
        .wait(
            "the sources behind the token",
            &format!("const r = (() => {{ {ROWS} }})(); return r.length === 1 && r"),
        )
        .await;
    assert_eq!(rows[0]["name"], "shop/web");
    assert_eq!(rows[0]["state"], "suspended");
    assert_eq!(
        b.eval("return document.querySelector('#token-dialog').open")
            .await,
        false
    );

    // Kept for the session only: a reload does not ask again; nothing is
    // in the browser's long-lived storage.
    b.client.refresh().await.unwrap();
    b.wait(
        "the table after a reload",
        "return document.querySelector('main[data-view=sources][data-loaded]') !== null",
    )
    .await;
    assert_eq!(
        b.eval("return document.querySelector('#token-dialog').open")
            .await,
        false
    );
    assert_eq!(
        b.eval("return [localStorage.length, document.cookie]")
            .await,
        json!([0, ""])
    );

    // Forgetting it asks again.
    b.click("#forget-token").await;
    b.wait(
        "the prompt again",
        "return document.querySelector('#token-dialog').open",
    )
    .await;
    assert_eq!(
        b.eval("return sessionStorage.length").await,
        0,
        "the token is gone"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_with_a_thousand_sources_loads_and_its_time_is_printed() {
    const N: usize = 1000;
    let env = Env::new().await;
    // One check each (an hour's interval): every source fails at git on a
    // repository the server does not have, so each has a status.
    let c = env.chump_with(env.options().env("CHUMP_INTERVAL", "3600"));
    let http = Client::new();
    let created = Instant::now();
    let mut pending = Vec::new();
    for i in 0..N {
        let body = json!({"namespace": format!("team-{}", i % 25), "deployment_name": format!("app-{i}"),
            "git_url": env.git.url(&format!("missing-{}", i % 50)), "branch": "main", "deploy_path": "deploy",
            "container_name": "app", "image_version_file": "deploy/deployment.yaml"});
        let req = http.post(c.url("/api/sources")).json(&body).send();
        pending.push(tokio::spawn(req));
        if pending.len() == 16 {
            for p in pending.drain(..) {
                assert_eq!(p.await.unwrap().unwrap().status(), StatusCode::CREATED);
            }
        }
    }
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap().status(), StatusCode::CREATED);
    }
    wait_for("every source checked", Duration::from_secs(300), || async {
        let all = get(&c, "/api/sources").await;
        let checked = all["sources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"]["last_checked_at"].is_string())
            .count();
        (checked == N).then_some(())
    })
    .await;
    println!(
        "{N} sources created and checked in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    let b = Browser::start(1280, 860).await;
    let mut loads = Vec::new();
    for round in 0..6 {
        // A new document each time (the first with an empty cache).
        b.goto("about:blank").await;
        b.goto(&c.url(&format!("/ui/?round={round}"))).await;
        let t = b
            .wait(
                "1,000 rows",
                "const m = performance.getEntriesByName('chump:sources-rendered')[0];
                 if (!m) return null;
                 const api = performance.getEntriesByType('resource').find(r => r.name.endsWith('/api/sources'));
                 const fetched = performance.getEntriesByName('chump:sources-fetched')[0];
                 return { rendered: m.startTime, api: api ? api.duration : null,
                          render: m.startTime - fetched.startTime,
                          rows: document.querySelectorAll('#sources tbody tr[data-id]').length,
                          count: document.querySelector('#count').textContent }",
            )
            .await;
        assert_eq!(t["rows"], N, "{t}");
        assert_eq!(t["count"], format!("{N} sources"), "{t}");
        loads.push((
            t["rendered"].as_f64().unwrap(),
            t["api"].as_f64().unwrap_or(f64::NAN),
            t["render"].as_f64().unwrap(),
        ));
    }
    let (cold, warm) = loads.split_first().unwrap();
    let mut warm_render: Vec<f64> = warm.iter().map(|l| l.0).collect();
    warm_render.sort_by(f64::total_cmp);
    let mut warm_api: Vec<f64> = warm.iter().map(|l| l.1).collect();
    warm_api.sort_by(f64::total_cmp);
    let mut warm_dom: Vec<f64> = warm.iter().map(|l| l.2).collect();
    warm_dom.sort_by(f64::total_cmp);
    println!(
        "dashboard with {N} sources, from navigation to the table rendered: first load {:.0} ms \
         (GET /api/sources {:.0} ms); {} more loads: median {:.0} ms, min {:.0}, max {:.0} \
         (GET /api/sources median {:.0} ms, building the table {:.0} ms); goal under 200 ms \
         (chump built {})",
        cold.0,
        cold.1,
        warm.len(),
        warm_render[warm_render.len() / 2],
        warm_render[0],
        warm_render[warm_render.len() - 1],
        warm_api[warm_api.len() / 2],
        warm_dom[warm_dom.len() / 2],
        if cfg!(debug_assertions) {
            "without optimizations: cargo test --release for release figures"
        } else {
            "with --release"
        },
    );
    b.close().await;
}
