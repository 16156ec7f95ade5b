//! A real headless Chromium, driven through chromedriver (WebDriver) with
//! fantoccini. Each [`Chrome`] has its own chromedriver on a free loopback
//! port and its own fresh profile; both go when it is dropped.

use super::free_port;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a page gets to show what a test waits for.
pub const WAIT: Duration = Duration::from_secs(15);

/// Flags Chromium needs on these machines (no sandbox in containers, no
/// GPU, nothing phoning home).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    // Tests talk to loopback only: any other host (an avatar on the web,
    // say) fails to resolve instead of leaving the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
];

/// Desktop window size.
pub const DESKTOP: (u32, u32) = (1280, 900);

/// Browsers open at once: the machine is small and shared.
static BROWSERS: Semaphore = Semaphore::const_new(2);
static PROFILES: AtomicUsize = AtomicUsize::new(0);

fn chromium_binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

fn chromedriver_binary() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".to_owned())
}

/// Where screenshots go: `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// A chromedriver process, killed on drop.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A profile directory, removed on drop.
struct Profile(PathBuf);

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A chromedriver command that fantoccini does not have built in.
#[derive(Debug)]
struct RawCommand {
    method: http::Method,
    /// Path under the session, e.g. `goog/cdp/execute`.
    path: &'static str,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for RawCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session}/{}", self.path))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|body| body.to_string()),
        )
    }
}

/// A headless Chromium and the WebDriver client driving it.
pub struct Chrome {
    /// The WebDriver session.
    pub client: Client,
    /// The application's base URL (`http://127.0.0.1:PORT`).
    pub base: String,
    name: String,
    // Dropped in this order, after the client: the driver, then the profile.
    _driver: Driver,
    _profile: Profile,
    _permit: SemaphorePermit<'static>,
}

impl Chrome {
    /// Starts chromedriver and a fresh Chromium for the test `name`, whose
    /// pages live under `base`.
    pub async fn start(name: &str, base: &str) -> Self {
        let permit = BROWSERS.acquire().await.expect("browser semaphore");
        let profile = Profile(std::env::temp_dir().join(format!(
            "ocs-chromium-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        )));
        let port = free_port();
        let driver = Driver(
            Command::new(chromedriver_binary())
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts (install the chromium-driver package)"),
        );
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|&flag| flag.to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.0.display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium_binary(), "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!("a JSON object"),
        };
        let started = Instant::now();
        let client = loop {
            let mut builder = ClientBuilder::new(HttpConnector::new());
            builder.capabilities(capabilities.clone());
            match builder.connect(&webdriver).await {
                Ok(client) => break client,
                // chromedriver takes a moment to listen.
                Err(error) if started.elapsed() < WAIT => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("no WebDriver session on {webdriver}: {error}"),
            }
        };
        Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            name: name.to_owned(),
            _driver: driver,
            _profile: profile,
            _permit: permit,
        }
    }

    /// Runs `test` with a browser for the test `name`; when it panics, saves
    /// a screenshot of the page as it was, then fails.
    pub async fn run<F, Fut>(name: &str, base: String, test: F)
    where
        F: FnOnce(Page) -> Fut,
        Fut: Future<Output = ()>,
    {
        let chrome = Self::start(name, &base).await;
        let outcome = AssertUnwindSafe(test(chrome.page())).catch_unwind().await;
        if let Err(panic) = outcome {
            chrome.page().screenshot("failure").await;
            chrome.page().dump_console().await;
            let _ = chrome.client.clone().close().await;
            std::panic::resume_unwind(panic);
        }
        let _ = chrome.client.clone().close().await;
    }

    /// A handle on the current page.
    pub fn page(&self) -> Page {
        Page {
            client: self.client.clone(),
            base: self.base.clone(),
            name: self.name.clone(),
        }
    }
}

/// The browser's current page, with what tests do to it. Cheap to clone.
#[derive(Clone)]
pub struct Page {
    /// The WebDriver session.
    pub client: Client,
    /// The application's base URL.
    pub base: String,
    name: String,
}

impl Page {
    /// Opens `path` of the application.
    pub async fn open(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.client
            .goto(&url)
            .await
            .unwrap_or_else(|error| panic!("open {url}: {error}"));
    }

    /// The current URL's path.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .expect("current URL")
            .path()
            .to_owned()
    }

    /// Waits (at most [`WAIT`]) for an element matching `css`.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no element {css} within {WAIT:?}: {error}"))
    }

    /// Clicks the element matching `css`, as a person would: brought to the
    /// middle of the view at once (the stylesheet's smooth scrolling would
    /// still be moving the page under the click), and clicked again a moment
    /// later while something else is over it (a layout still moving as live
    /// lines arrive).
    pub async fn click(&self, css: &str) {
        let started = Instant::now();
        loop {
            let element = self.find(css).await;
            if let Ok(argument) = serde_json::to_value(&element) {
                let _ = self
                    .client
                    .execute(
                        "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})",
                        vec![argument],
                    )
                    .await;
            }
            match element.click().await {
                Ok(_) => return,
                Err(error)
                    if error.to_string().contains("click intercepted")
                        && started.elapsed() < WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("click {css}: {error}"),
            }
        }
    }

    /// Scrolls the element matching `css` to the middle of the view at once,
    /// to see it in a screenshot.
    pub async fn scroll_to(&self, css: &str) {
        let element = self.find(css).await;
        let argument = serde_json::to_value(&element).expect("an element as a script argument");
        self.js(
            "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'})",
            vec![argument],
        )
        .await;
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css)
            .await
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("type into {css}: {error}"));
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Runs asynchronous `script`: it ends by calling
    /// `arguments[arguments.length - 1](result)`.
    pub async fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|error| panic!("script failed: {error}\n{script}"))
    }

    /// Waits (at most [`WAIT`]) until `condition` returns something, and
    /// returns it; `what` names the wait in the failure message.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut condition: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = condition().await {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of `css` satisfies `predicate`, and returns it.
    pub async fn wait_for_text(&self, css: &str, predicate: impl Fn(&str) -> bool) -> String {
        self.wait_until(&format!("the text of {css}"), || async {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.ok()?,
                Err(_) => return None,
            };
            predicate(&text).then_some(text)
        })
        .await
    }

    /// Waits until `script` (a function body) returns a truthy value.
    pub async fn wait_for_js(&self, what: &str, script: &str) -> Value {
        self.wait_until(what, || async {
            let value = self.client.execute(script, Vec::new()).await.ok()?;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(flag) => *flag,
                Value::Number(number) => number.as_f64() != Some(0.0),
                Value::String(text) => !text.is_empty(),
                _ => true,
            };
            truthy.then_some(value)
        })
        .await
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(RawCommand {
                method: http::Method::POST,
                path: "goog/cdp/execute",
                body: Some(json!({ "cmd": cmd, "params": params })),
            })
            .await
            .unwrap_or_else(|error| panic!("CDP {cmd}: {error}"))
    }

    /// The browser's console messages since the last call.
    pub async fn console(&self) -> Vec<String> {
        let logs = self
            .client
            .issue_cmd(RawCommand {
                method: http::Method::POST,
                path: "se/log",
                body: Some(json!({ "type": "browser" })),
            })
            .await
            .unwrap_or(Value::Null);
        logs.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        format!(
                            "{} {}",
                            entry["level"].as_str().unwrap_or_default(),
                            entry["message"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn dump_console(&self) {
        for line in self.console().await {
            eprintln!("browser console: {line}");
        }
    }

    /// Renders like a phone (390 × 844, touch, 3× pixels) or back to desktop.
    pub async fn emulate_phone(&self, phone: bool) {
        if phone {
            self.cdp(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
            )
            .await;
        } else {
            self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
                .await;
        }
    }

    /// Emulates `prefers-color-scheme: dark` (or light).
    pub async fn emulate_dark(&self, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        )
        .await;
    }

    /// Lets the page read and write the clipboard without a prompt.
    pub async fn grant_clipboard(&self) {
        self.cdp(
            "Browser.grantPermissions",
            json!({
                "origin": self.base,
                "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"],
            }),
        )
        .await;
    }

    /// Saves a PNG of the page as `target/screenshots/{test}-{label}.png`.
    pub async fn screenshot(&self, label: &str) {
        let dir = screenshot_dir();
        let path = dir.join(format!("{}-{label}.png", self.name));
        match self.client.screenshot().await {
            Ok(png) => {
                let _ = std::fs::create_dir_all(&dir);
                if std::fs::write(&path, png).is_ok() {
                    eprintln!("screenshot: {}", path.display());
                }
            }
            Err(error) => eprintln!("no screenshot for {}: {error}", self.name),
        }
    }

    /// Saves screenshots of the whole page, not just the window, in
    /// slices short enough to be looked at: `{test}-{label}-{n}.png`.
    pub async fn full_screenshot(&self, label: &str) {
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let width = size["width"].as_f64().unwrap_or(1280.0);
        let height = size["height"].as_f64().unwrap_or(900.0);
        let slice: f64 = if width < 600.0 { 900.0 } else { 1400.0 };
        let dir = screenshot_dir();
        let _ = std::fs::create_dir_all(&dir);
        let mut top: f64 = 0.0;
        let mut n = 1;
        while top < height {
            let shot = self
                .cdp(
                    "Page.captureScreenshot",
                    json!({
                        "format": "png",
                        "captureBeyondViewport": true,
                        "clip": { "x": 0, "y": top, "width": width, "height": slice.min(height - top), "scale": 1 },
                    }),
                )
                .await;
            let png = shot["data"].as_str().and_then(|data| {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).ok()
            });
            let path = dir.join(format!("{}-{label}-{n}.png", self.name));
            if let Some(png) = png
                && std::fs::write(&path, png).is_ok()
            {
                eprintln!("screenshot: {}", path.display());
            }
            top += slice;
            n += 1;
        }
    }
}
