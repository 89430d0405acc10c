//! A real nginx reverse proxy on loopback for the path-prefix browser test: Debian's nginx run
//! in the foreground with a config generated from `tests/src/browser/nginx.conf.template` in a fresh
//! temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;

use super::webdriver::{GroupChild, require_executable, wait_for_port};
use crate::free_loopback_port;

const TEMPLATE: &str = include_str!("nginx.conf.template");

pub fn nginx_path() -> anyhow::Result<PathBuf> {
    require_executable(
        "nginx",
        "CELESTIAL_NGINX",
        &["/usr/sbin/nginx", "/usr/bin/nginx"],
    )
}

/// Fill the template's placeholders.
pub fn render_config(
    dir: &Path,
    listen_port: u16,
    upstream_port: u16,
    prefix: &str,
    forward_prefix_header: bool,
) -> String {
    let mut conf = TEMPLATE
        .replace("@DIR@", &dir.display().to_string())
        .replace("@LISTEN_PORT@", &listen_port.to_string())
        .replace("@UPSTREAM_PORT@", &upstream_port.to_string())
        .replace("@PREFIX@", prefix);
    if !forward_prefix_header {
        conf = conf
            .lines()
            .filter(|l| !l.contains("X-Forwarded-Prefix"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    conf
}

/// A running nginx that serves `http://127.0.0.1:<upstream>/` under `http://127.0.0.1:<port><prefix>/`.
pub struct Nginx {
    pub port: u16,
    process: GroupChild,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Start nginx proxying `prefix` (e.g. `/celestial`) to `upstream_port`; with
    /// `forward_prefix_header` it sends `X-Forwarded-Prefix: <prefix>` upstream.
    pub async fn start(
        upstream_port: u16,
        prefix: &str,
        forward_prefix_header: bool,
    ) -> anyhow::Result<Self> {
        let nginx = nginx_path()?;
        let dir = tempfile::Builder::new()
            .prefix("celestial-nginx-")
            .tempdir()?;
        // nginx workers drop root privileges (to `nobody`) and must reach their temp paths.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        for sub in [
            "tmp",
            "tmp/client_body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            let p = dir.path().join(sub);
            std::fs::create_dir_all(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777))?;
        }
        let conf_path = dir.path().join("nginx.conf");
        let mut last_err = None;
        for _attempt in 0..3 {
            let port = free_loopback_port();
            std::fs::write(
                &conf_path,
                render_config(
                    dir.path(),
                    port,
                    upstream_port,
                    prefix,
                    forward_prefix_header,
                ),
            )?;
            let mut cmd = tokio::process::Command::new(&nginx);
            // -e: the error log before the config is read (nginx otherwise opens /var/log/nginx).
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut process = GroupChild::spawn("nginx", cmd)?;
            match wait_for_port(&mut process, port, Duration::from_secs(10)).await {
                Ok(()) => return Ok(Self { port, process, dir }),
                Err(e) => {
                    let log =
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    last_err = Some(e.context(format!("nginx error.log:\n{log}")));
                    process.stop().await;
                }
            }
        }
        Err(last_err.unwrap()).context("start nginx")
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Stop nginx, copying its logs into `tests/artifacts/<name>-nginx-*.log`.
    pub async fn stop(self, name: &str) -> anyhow::Result<()> {
        let artifacts = super::webdriver::artifacts_dir();
        std::fs::write(
            artifacts.join(format!("{name}-nginx-access.log")),
            self.access_log(),
        )?;
        std::fs::write(
            artifacts.join(format!("{name}-nginx-error.log")),
            self.error_log(),
        )?;
        self.process.stop().await;
        Ok(())
    }
}
