//! podman (Debian's, with runc) configured for the test environment: build, push, pull, and run
//! containers on the host network whose ports are reachable on loopback.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Label on every container started through [`Podman::start`]; `testenv down` removes them all.
pub const CONTAINER_LABEL: &str = "dev.celestial.testenv=1";

/// Errors of the podman helper.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    /// podman could not be started.
    #[error("cannot run podman: {0}")]
    Spawn(#[from] std::io::Error),
    /// podman ran and failed.
    #[error("`podman {args}` failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    /// The container did not start listening in time.
    #[error("container {name} did not listen on {addr} within {secs}s; logs:\n{logs}")]
    NotListening {
        name: String,
        addr: SocketAddr,
        secs: u64,
        logs: String,
    },
}

/// podman with the environment's `containers.conf` and `registries.conf`.
#[derive(Debug, Clone)]
pub struct Podman {
    containers_conf: PathBuf,
    registries_conf: PathBuf,
}

impl Podman {
    /// podman using the given configuration files.
    pub fn new(containers_conf: impl Into<PathBuf>, registries_conf: impl Into<PathBuf>) -> Self {
        Self {
            containers_conf: containers_conf.into(),
            registries_conf: registries_conf.into(),
        }
    }

    /// A `podman` command with the environment's configuration.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.containers_conf)
            .env("CONTAINERS_REGISTRIES_CONF", &self.registries_conf)
            .stdin(Stdio::null());
        c
    }

    /// Runs podman with `args`; the output on success, the stderr in the error otherwise.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<Output, PodmanError> {
        let out = self.command().args(args).output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(PodmanError::Failed {
                args: args
                    .iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// `podman build --network host -t TAG -f CONTAINERFILE CONTEXT` plus `extra` arguments.
    pub fn build(
        &self,
        context: &Path,
        containerfile: &Path,
        tag: &str,
        extra: &[&str],
    ) -> Result<(), PodmanError> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "build".into(),
            "-q".into(),
            "--network".into(),
            "host".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        args.extend([
            "-t".into(),
            tag.into(),
            "-f".into(),
            containerfile.into(),
            context.into(),
        ]);
        self.run(&args).map(|_| ())
    }

    /// Pushes a local image to `dest` (plain HTTP on loopback), optionally with credentials.
    pub fn push(
        &self,
        local: &str,
        dest: &str,
        creds: Option<(&str, &str)>,
    ) -> Result<(), PodmanError> {
        let mut args = vec!["push".to_owned(), "-q".into(), "--tls-verify=false".into()];
        if let Some((u, p)) = creds {
            args.push(format!("--creds={u}:{p}"));
        }
        args.extend([local.to_owned(), format!("docker://{dest}")]);
        self.run(&args).map(|_| ())
    }

    /// Pulls `image` (plain HTTP on loopback).
    pub fn pull(&self, image: &str) -> Result<(), PodmanError> {
        self.run(&["pull", "-q", "--tls-verify=false", image])
            .map(|_| ())
    }

    /// Removes a local image (ignores a missing one).
    pub fn remove_image(&self, image: &str) -> Result<(), PodmanError> {
        self.run(&["rmi", "-f", "--ignore", image]).map(|_| ())
    }

    /// Starts `image` detached on the host network with `args` (podman run options before the
    /// image, `cmd` after it) and waits until something listens on 127.0.0.1:`port`. The
    /// container is removed when the returned handle drops.
    pub fn start(
        &self,
        image: &str,
        port: u16,
        args: &[&str],
        cmd: &[&str],
    ) -> Result<Container, PodmanError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "celestial-e2e-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut full: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            CONTAINER_LABEL,
            "--network",
            "host",
        ];
        full.extend_from_slice(args);
        full.push(image);
        full.extend_from_slice(cmd);
        self.run(&full)?;
        let c = Container {
            name,
            podman: self.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        c.wait_listening(Duration::from_secs(60))?;
        Ok(c)
    }
}

/// A running container; removed (`podman rm -f`) on drop.
#[derive(Debug)]
pub struct Container {
    name: String,
    podman: Podman,
    addr: SocketAddr,
}

impl Container {
    /// The container's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the container listens (host network).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The container's output so far.
    pub fn logs(&self) -> String {
        match self.podman.command().args(["logs", &self.name]).output() {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// `podman inspect --format FORMAT` of the container.
    pub fn inspect(&self, format: &str) -> Result<String, PodmanError> {
        let out = self
            .podman
            .run(&["inspect", "--format", format, &self.name])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn running(&self) -> bool {
        self.inspect("{{.State.Running}}")
            .is_ok_and(|s| s == "true")
    }

    fn wait_listening(&self, timeout: Duration) -> Result<(), PodmanError> {
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout || !self.running() {
                return Err(PodmanError::NotListening {
                    name: self.name.clone(),
                    addr: self.addr,
                    secs: start.elapsed().as_secs(),
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self
            .podman
            .command()
            .args(["rm", "-f", "-t", "2", &self.name])
            .output();
    }
}
