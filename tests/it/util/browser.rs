//! A real headless browser for tests: Debian's `chromium`, driven over W3C WebDriver by
//! `chromedriver`, with a client of a few calls written on the harness's own HTTP
//! client ([`Call`]).
//!
//! Why WebDriver with a small client rather than a crate: the tests need six commands
//! (open a URL, find an element, click, read text, read the URL, take a screenshot),
//! each one JSON request; fantoccini or thirtyfour would bring a second HTTP stack and
//! dozens of crates for that, and the DevTools protocol needs a WebSocket client. It is
//! test code only: nothing of it reaches the release binary.
//!
//! [`Browser::start`] returns `None` (with a notice on stderr) when chromium or
//! chromedriver is missing, so `cargo test` runs on a machine without them, and panics
//! instead under CI (`CI` set): `.ci/run` installs both.

use super::{Call, WAIT_LIMIT};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one browser session; both end on [`Browser::close`]
/// (or on drop, without waiting).
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session, or `None` when this
    /// machine has neither (never under CI).
    pub async fn start(test: &str) -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|program| !Path::new(program).exists())
            .collect();
        if !missing.is_empty() {
            if std::env::var("CI").is_ok_and(|value| value == "true") {
                panic!(
                    "{test}: {} missing under CI: .ci/run must install chromium and chromium-driver",
                    missing.join(" and ")
                );
            }
            // Straight to stderr: the harness captures eprintln! of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: {} missing (apt-get install chromium chromium-driver). CI runs it. ***\n",
                missing.join(" and ")
            );
            return None;
        }
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {CHROMEDRIVER}: {error}"));
        let profile = std::env::temp_dir().join(format!(
            "linepay-it-chromium-{}-{}",
            std::process::id(),
            port
        ));
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        browser.wait_until_ready().await;
        browser.session = browser.new_session().await;
        Some(browser)
    }

    async fn wait_until_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                let status = Call::get("/status").send(self.addr).await;
                if status.status == 200 && status.json()["value"]["ready"] == true {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver on {} was not ready within {WAIT_LIMIT:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn new_session(&self) -> String {
        // Chromium as root needs --no-sandbox; the background-networking flags keep it
        // from reaching for the (closed) network; a fresh profile per browser.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            &format!("--user-data-dir={}", self.profile.display()),
        ];
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            }}
        });
        let answer = self.command("POST", "/session", Some(capabilities)).await;
        answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned()
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error.
    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let call = match method {
            "POST" => Call::post(path, body.unwrap_or_else(|| json!({})).to_string()),
            "DELETE" => Call::new(http::Method::DELETE, path),
            _ => Call::get(path),
        };
        let reply = call.send(self.addr).await;
        let answer = reply.json();
        assert_eq!(
            reply.status, 200,
            "WebDriver {method} {path}: {}",
            answer["value"]
        );
        answer["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        let value = self.command("GET", &self.at("/url"), None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        let value = self.command("GET", &self.at("/source"), None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Whether an element matching `css` is on the page.
    pub async fn has(&self, css: &str) -> bool {
        let found = self
            .command(
                "POST",
                &self.at("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array().is_some_and(|found| !found.is_empty())
    }

    pub async fn click(&self, css: &str) {
        let element = self.element(css).await;
        self.command("POST", &self.at(&format!("/element/{element}/click")), None)
            .await;
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let element = self.element(css).await;
        let value = self
            .command("GET", &self.at(&format!("/element/{element}/text")), None)
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The `id` of the element that has the keyboard focus.
    pub async fn focused_id(&self) -> String {
        let active = self.command("GET", &self.at("/element/active"), None).await;
        let element = active[ELEMENT_KEY].as_str().unwrap_or_default().to_owned();
        let value = self
            .command(
                "GET",
                &self.at(&format!("/element/{element}/attribute/id")),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits (bounded) until the browser's URL starts with `prefix`; returns it.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the browser did not reach {prefix}: it is at {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page to `path` (best effort: for a failing test's artefacts).
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let call = Call::get(&self.at("/screenshot"));
        let reply = call.send(self.addr).await;
        let png = reply.json()["value"]
            .as_str()
            .and_then(|data| BASE64.decode(data).ok())
            .ok_or_else(|| format!("no screenshot: {}", reply.text()))?;
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|error| error.to_string())?;
        }
        std::fs::write(path, png).map_err(|error| error.to_string())
    }

    /// Ends the session (the browser exits) and chromedriver.
    pub async fn close(mut self) {
        let _ = Call::new(http::Method::DELETE, &self.at(""))
            .send(self.addr)
            .await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Killing chromedriver ends the browser it started too.
        self.stop_driver();
    }
}

/// Where a failing browser test leaves its screenshot:
/// `target/tmp/browser-artefacts/<test>.png` (Cargo's CARGO_TARGET_TMPDIR).
pub fn artefact_path(test: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-artefacts")
        .join(format!("{test}.png"))
}

/// A loopback port free at the time of asking (chromedriver takes a port number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
}
