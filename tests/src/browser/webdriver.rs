//! Headless Chromium driven over WebDriver, for the Swagger UI browser tests.
//!
//! Each [`Browser`] starts its own `chromedriver` on a free loopback port, in its own process
//! group (so dropping it kills chromedriver *and* the Chromium it spawned, even when a test
//! panics), with a fresh `--user-data-dir`. The WebDriver protocol is spoken over plain HTTP on
//! loopback, so no TLS stack is linked. Chromium and chromedriver are Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/setup` from `scripts/apt-packages.txt`; when they are
//! missing the test fails (it never skips) with a message saying what to run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

/// Chromium flags that work on these machines (root, no GPU, no display, no outside network).
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
    "--window-size=1280,1800",
];

/// How long to wait for chromedriver to listen and for page conditions to become true.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where screenshots and driver logs go: `tests/artifacts/` (gitignored).
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("create tests/artifacts");
    dir
}

/// Find a required executable: `$env_var` if set, else the first of `candidates` that exists.
pub fn require_executable(
    what: &str,
    env_var: &str,
    candidates: &[&str],
) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!(
            "{env_var}={} does not exist; unset it or point it at {what}",
            p.display()
        );
    }
    for c in candidates {
        let p = Path::new(c);
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
    }
    bail!(
        "{what} not found (looked at {}; override with {env_var}). The Swagger UI browser tests \
         need Debian's chromium, chromium-driver and nginx: run `scripts/setup` (it installs \
         scripts/apt-packages.txt)",
        candidates.join(", ")
    )
}

pub fn chromium_path() -> anyhow::Result<PathBuf> {
    require_executable(
        "Chromium",
        "CELESTIAL_CHROMIUM",
        &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
    )
}

pub fn chromedriver_path() -> anyhow::Result<PathBuf> {
    require_executable(
        "chromedriver",
        "CELESTIAL_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    )
}

/// A child process in its own process group, killed with its whole group on drop.
pub struct GroupChild {
    child: tokio::process::Child,
    name: &'static str,
}

impl GroupChild {
    pub fn spawn(name: &'static str, mut cmd: tokio::process::Command) -> anyhow::Result<Self> {
        cmd.process_group(0).kill_on_drop(true).stdin(Stdio::null());
        let child = cmd.spawn().with_context(|| format!("start {name}"))?;
        Ok(Self { child, name })
    }

    /// Fails if the process already exited (e.g. it could not bind its port).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited early with {status}", self.name),
            None => Ok(()),
        }
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain syscall on the process group we created in `spawn`.
            unsafe {
                libc::killpg(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
    }

    /// Stop the process group and reap the leader.
    pub async fn stop(mut self) {
        self.kill_group();
        let _ = self.child.wait().await;
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Wait until something accepts TCP connections on `127.0.0.1:port`.
pub async fn wait_for_port(
    child: &mut GroupChild,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.check_running()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on 127.0.0.1:{port} within {timeout:?}",
                child.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A headless Chromium session behind its own chromedriver.
pub struct Browser {
    pub client: Client,
    driver: GroupChild,
    _profile: tempfile::TempDir,
    /// Prefix of this browser's artifact files (screenshots, chromedriver log).
    name: String,
}

impl Browser {
    /// Start chromedriver + Chromium. `name` prefixes the artifact files.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let chromium = chromium_path()?;
        let chromedriver = chromedriver_path()?;
        let profile = tempfile::Builder::new()
            .prefix("celestial-chromium-")
            .tempdir()?;
        let log = artifacts_dir().join(format!("{name}-chromedriver.log"));

        let mut last_err = None;
        for _attempt in 0..3 {
            let port = crate::free_loopback_port();
            let mut cmd = tokio::process::Command::new(&chromedriver);
            cmd.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut driver = GroupChild::spawn("chromedriver", cmd)?;
            if let Err(e) = wait_for_port(&mut driver, port, DEFAULT_TIMEOUT).await {
                last_err = Some(e);
                driver.stop().await;
                continue;
            }
            let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
            args.push(format!("--user-data-dir={}", profile.path().display()));
            let caps = serde_json::Map::from_iter([
                ("browserName".to_string(), json!("chrome")),
                (
                    "goog:chromeOptions".to_string(),
                    json!({ "binary": chromium, "args": args }),
                ),
            ]);
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let client = ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
                .with_context(|| {
                    format!(
                        "open a Chromium session (chromedriver log: {})",
                        log.display()
                    )
                })?;
            return Ok(Self {
                client,
                driver,
                _profile: profile,
                name: name.to_string(),
            });
        }
        Err(last_err.unwrap()).context("start chromedriver")
    }

    /// Save a PNG screenshot of the viewport to `tests/artifacts/<name>-<step>.png`.
    pub async fn screenshot(&self, step: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await.context("take screenshot")?;
        let path = artifacts_dir().join(format!("{}-{step}.png", self.name));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Screenshot of one element (the whole element, scrolled into view).
    pub async fn element_screenshot(&self, el: &Element, step: &str) -> anyhow::Result<PathBuf> {
        let png = el.screenshot().await.context("take element screenshot")?;
        let path = artifacts_dir().join(format!("{}-{step}.png", self.name));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Evaluate `script` (a function body; `arguments[i]` are `args`) until it returns something
    /// truthy, and return that. On timeout, screenshot the page and fail naming `what`.
    pub async fn wait_js(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        loop {
            let v = self
                .client
                .execute(script, args.clone())
                .await
                .with_context(|| format!("evaluate JS for: {what}"))?;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Array(_) | Value::Object(_) => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout").await.ok();
                bail!(
                    "timed out after {DEFAULT_TIMEOUT:?} waiting for: {what} (last value {v}; screenshot {shot:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait for a CSS selector to match a displayed element.
    pub async fn wait_css(&self, what: &str, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && el.is_displayed().await.unwrap_or(false)
            {
                return Ok(el);
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout").await.ok();
                bail!(
                    "timed out after {DEFAULT_TIMEOUT:?} waiting for {what} (`{css}`; screenshot {shot:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// End the session (Chromium exits) and stop chromedriver.
    pub async fn close(self) {
        let Self { client, driver, .. } = self;
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        driver.stop().await;
    }
}
