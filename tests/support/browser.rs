//! A real headless browser for the dashboard tests: Debian's `chromium`,
//! driven over WebDriver by its `chromedriver` (package `chromium-driver`,
//! which `.ci/run` installs) through fantoccini. Each [`Browser`] has its
//! own driver process, port and empty profile.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long the page gets to show what a test waits for.
pub const PAGE_WAIT: Duration = Duration::from_secs(30);

fn binary(env: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} not found: the dashboard tests need Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver; .ci/run installs them), or {env}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a Chromium session with a window of
    /// `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = binary("CHUMP_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("CHUMP_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        // Its own process group, so Chromium goes with it.
        let driver = Command::new(chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // The flags that keep Chromium off a closed network
                // (no background connections, no update checks).
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--disable-default-apps", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + PAGE_WAIT;
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                // The driver is not listening yet.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver on {url}: {e}"),
            }
        };
        let browser = Browser {
            client,
            driver,
            _profile: profile,
        };
        browser.client.set_window_size(width, height).await.unwrap();
        browser
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something other than null, false or
    /// undefined, and returns it; panics with `what` and the last value
    /// after [`PAGE_WAIT`].
    pub async fn wait(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let v = self.eval(script).await;
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            if Instant::now() > deadline {
                let dom = self
                    .eval("return document.querySelector('main')?.innerText ?? document.body.innerText")
                    .await;
                panic!("the page never showed {what} within {PAGE_WAIT:?}; it shows:\n{dom}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` names.
    pub async fn click(&self, css: &str) {
        self.element(css).await.click().await.unwrap();
    }

    pub async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Writes a screenshot of the window to `target/dashboard/{name}.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("dashboard");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }

    /// Ends the session (Chromium exits), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// The driver's whole process group: chromedriver and the Chromium it
    /// started, even when a test panicked mid-session.
    fn drop(&mut self) {
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}
