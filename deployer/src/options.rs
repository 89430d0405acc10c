//! What each command needs, as plain data (no clap): [`crate::cli`] fills these from flags and
//! environment variables; commands and the layers below them take them. A leaf module.

use std::path::PathBuf;
use std::time::Duration;

/// Registry access: credentials and transport.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// User name for the registry pushed to; the password is read from stdin.
    pub username: Option<String>,
    /// Read the password (or token) from standard input.
    pub password_stdin: bool,
    /// Registries (`host[:port]`) that may be reached over plain HTTP (loopback always may).
    pub insecure: Vec<String>,
    /// Docker config directory; default $DOCKER_CONFIG, then ~/.docker.
    pub docker_config: Option<PathBuf>,
    /// How long a pull or push keeps retrying an unreachable or failing (429, 5xx) registry.
    pub retry_timeout: Duration,
}

/// How the image is built.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Base image reference.
    pub base: String,
    /// The celestial-server binary to ship.
    pub server_binary: PathBuf,
    /// The ONNX Runtime library; default $ORT_DYLIB_PATH, then `scripts/onnxruntime.sh`.
    pub onnxruntime: Option<PathBuf>,
    /// The model to ship (empty: none).
    pub model: PathBuf,
    /// `os/arch[/variant]` to pick from a multi-platform base.
    pub platform: String,
    /// org.opencontainers.image.source; default the workspace repository URL.
    pub source_url: Option<String>,
    /// org.opencontainers.image.revision; default `git rev-parse HEAD`.
    pub revision: Option<String>,
    /// org.opencontainers.image.version; default the crate version.
    pub image_version: Option<String>,
    /// Creation time; default the git commit time.
    pub source_date_epoch: Option<i64>,
}

/// Which cluster and namespace.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// Which manifests, and which container is the server.
#[derive(Debug, Clone, Default)]
pub struct ManifestOptions {
    /// Files or directories; empty: `kubernetes/`.
    pub files: Vec<PathBuf>,
    pub container: Option<String>,
}

impl ManifestOptions {
    /// The files to read: the given ones, or `kubernetes/`.
    pub fn paths(&self) -> Vec<PathBuf> {
        if self.files.is_empty() {
            vec![PathBuf::from("kubernetes")]
        } else {
            self.files.clone()
        }
    }
}

/// How `apply` waits and checks after applying.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub unschedulable_grace: Duration,
    pub lb_timeout: Duration,
    pub smoke: bool,
    pub smoke_image: Option<PathBuf>,
    pub smoke_timeout: Duration,
    pub rollback_on_failure: bool,
    pub no_wait_lb: bool,
}

/// Opt-in API keys and TLS for the server (`apply`, `release`).
#[derive(Debug, Clone, Default)]
pub struct SecurityOptions {
    /// Secret holding the server's API keys (created with a generated key when absent).
    pub api_key_secret: Option<String>,
    /// Print the API key the smoke test used.
    pub show_api_key: bool,
    /// `kubernetes.io/tls` Secret the server serves HTTPS with.
    pub tls_secret: Option<String>,
    /// Host name the smoke test checks the certificate against; default the URL's host.
    pub tls_server_name: Option<String>,
}

/// `deployer build`.
#[derive(Debug, Clone)]
pub struct BuildCommand {
    /// `REGISTRY/REPO[:TAG]` to push to.
    pub image: String,
    pub build: BuildOptions,
    pub registry: RegistryOptions,
}

/// `deployer push`.
#[derive(Debug, Clone)]
pub struct PushCommand {
    pub archive: PathBuf,
    pub image: String,
    pub platform: String,
    pub registry: RegistryOptions,
}

/// `deployer apply` (with `dry_run`, the same as `diff`).
#[derive(Debug, Clone)]
pub struct ApplyCommand {
    /// Image for the server container; default the manifest's.
    pub image: Option<String>,
    pub force_conflicts: bool,
    pub dry_run: bool,
    pub cluster: ClusterOptions,
    pub manifests: ManifestOptions,
    pub wait: WaitOptions,
    pub security: SecurityOptions,
}

/// `deployer release`: build, then apply with the pushed digest.
#[derive(Debug, Clone)]
pub struct ReleaseCommand {
    pub build: BuildCommand,
    /// Its `image` is replaced by the pushed digest.
    pub apply: ApplyCommand,
}

/// `deployer diff`.
#[derive(Debug, Clone)]
pub struct DiffCommand {
    pub image: Option<String>,
    pub cluster: ClusterOptions,
    pub manifests: ManifestOptions,
}

/// `deployer status`.
#[derive(Debug, Clone)]
pub struct StatusCommand {
    pub cluster: ClusterOptions,
    pub manifests: ManifestOptions,
}

/// `deployer delete`.
#[derive(Debug, Clone)]
pub struct DeleteCommand {
    pub timeout: Duration,
    pub cluster: ClusterOptions,
    pub manifests: ManifestOptions,
}

/// One command, ready to run.
#[derive(Debug, Clone)]
pub enum Command {
    Build(BuildCommand),
    Push(PushCommand),
    Apply(ApplyCommand),
    /// Boxed: the largest by far, and a command is built once per process.
    Release(Box<ReleaseCommand>),
    Diff(DiffCommand),
    Status(StatusCommand),
    Delete(DeleteCommand),
}
