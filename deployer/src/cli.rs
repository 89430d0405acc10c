//! Command line: every flag has an environment variable, so CI can configure `deployer` without flags.

use std::path::PathBuf;
use std::time::Duration;

use celestial_common::parse_duration;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::ExitCode;
use crate::interrupt::Interrupt;
use crate::render::{Format, render};
use crate::{commands, options};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  internal error (a bug or an unexpected I/O error)
  2  usage or configuration error (flags, malformed manifest, kubeconfig, registry configuration)
  3  the Kubernetes API refused the request or could not be reached (apply, diff, status, delete)
  4  rollout failed (pod reason or ProgressDeadlineExceeded), rolled back or not
  5  timed out (rollout, load-balancer address, deletion)
  6  smoke test through the public URL failed
  7  image build, pull or push failed (registry unreachable after retries, credentials refused,
       base too old)
130  interrupted by SIGINT (Ctrl-C): stopped, printed the cluster's state and how to resume
143  terminated by SIGTERM: the same";

/// The default log filter: warnings, without the client libraries' own error lines.
pub const DEFAULT_LOG: &str = "warn,kube_client=off,oci_client=off";

/// Build and push the celestial-server image, apply the Kubernetes manifests, wait until it serves.
#[derive(Debug, Parser)]
#[command(name = "deployer", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Output format: human-readable text, or one JSON document on stdout for CI (progress stays on stderr).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text, env = "DEPLOYER_OUTPUT")]
    pub output: OutputFormat,

    /// Log filter for diagnostics on stderr (tracing syntax, e.g. `deployer=debug,kube=debug`).
    /// Errors are reported once by deployer itself, so library error logs are off by default.
    #[arg(long, global = true, default_value = DEFAULT_LOG, env = "DEPLOYER_LOG")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// Output format of a command's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines; live progress (a spinner on a terminal, plain lines otherwise).
    Text,
    /// One JSON object on stdout with the result or the error and its exit code.
    Json,
}

/// The subcommands (parsed once per process, so the size difference of the variants does not matter).
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Build the server image without a Docker daemon and push it; prints REGISTRY/REPO@sha256:...
    Build(BuildArgs),
    /// Push an image built elsewhere (`docker save` tarball or OCI-layout tarball) to a registry.
    Push(PushArgs),
    /// Server-side apply the manifests, wait for the rollout and the load balancer, smoke-test the URL.
    Apply(ApplyArgs),
    /// Build, push and apply in one command (what CI runs on a release).
    Release(ReleaseArgs),
    /// Show what `apply` would change (server-side dry run), without changing anything.
    Diff(DiffArgs),
    /// Show the deployed image, replicas, pods and the public URL.
    Status(StatusArgs),
    /// Delete everything `apply` created and wait until it is gone.
    Delete(DeleteArgs),
}

/// Registry access: credentials and transport.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry user name; the password is read from stdin with --registry-password-stdin.
    /// Without it, credentials come from the Docker config (auths, credsStore, credHelpers).
    #[arg(
        long,
        env = "DEPLOYER_REGISTRY_USERNAME",
        requires = "registry_password_stdin"
    )]
    pub registry_username: Option<String>,

    /// Read the registry password (or token) from standard input (never from a flag or the log).
    #[arg(
        long,
        env = "DEPLOYER_REGISTRY_PASSWORD_STDIN",
        requires = "registry_username"
    )]
    pub registry_password_stdin: bool,

    /// Registries (host[:port]) that may be reached over plain HTTP. Loopback registries
    /// (localhost, 127.0.0.0/8, [::1]) always may; anything else uses HTTPS unless listed here.
    #[arg(long, env = "DEPLOYER_INSECURE_REGISTRY", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,

    /// Docker config directory (holding config.json); default $DOCKER_CONFIG, then ~/.docker.
    #[arg(long, env = "DEPLOYER_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,

    /// How long pulls and pushes retry a registry that cannot be reached or answers 429/5xx
    /// (pauses 0.5 s, 1 s, 2 s, 4 s, then 5 s; blobs already pushed are not sent again); 0: no retry.
    #[arg(long, env = "DEPLOYER_REGISTRY_RETRY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub registry_retry_timeout: Duration,
}

/// How the image is built.
#[derive(Debug, Clone, Args)]
pub struct ImageBuildArgs {
    /// Base image; its libc must be at least as new as the binary requires.
    #[arg(
        long,
        env = "DEPLOYER_BASE",
        default_value = "gcr.io/distroless/cc-debian12:nonroot"
    )]
    pub base: String,

    /// The release celestial-server binary to ship.
    #[arg(
        long,
        env = "DEPLOYER_SERVER_BINARY",
        default_value = "target/release/celestial-server"
    )]
    pub server_binary: PathBuf,

    /// The ONNX Runtime shared library to ship next to the binary; default $ORT_DYLIB_PATH, then
    /// the cached library that scripts/onnxruntime.sh fetches.
    #[arg(long, env = "DEPLOYER_ONNXRUNTIME")]
    pub onnxruntime: Option<PathBuf>,

    /// The ONNX model to ship (the server also embeds one); the image points CELESTIAL_MODEL at it.
    #[arg(
        long,
        env = "DEPLOYER_MODEL",
        default_value = "model/celestial-bodies.onnx"
    )]
    pub model: PathBuf,

    /// Platform of the base image to use when the base is a multi-platform index.
    #[arg(long, env = "DEPLOYER_PLATFORM", default_value = "linux/amd64")]
    pub platform: String,

    /// Value of the org.opencontainers.image.source label; default the workspace repository URL.
    #[arg(long, env = "DEPLOYER_SOURCE_URL")]
    pub source_url: Option<String>,

    /// Value of the org.opencontainers.image.revision label; default `git rev-parse HEAD`.
    #[arg(long, env = "DEPLOYER_REVISION")]
    pub revision: Option<String>,

    /// Value of the org.opencontainers.image.version label; default the deployer crate version.
    #[arg(long = "image-version", env = "DEPLOYER_IMAGE_VERSION")]
    pub image_version: Option<String>,

    /// Image creation time (seconds since the epoch) for the created label and the file times;
    /// default the git commit time, so the same commit always gives the same digest.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<i64>,
}

/// `deployer build`.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Where to push: REGISTRY/REPO[:TAG] (default tag `latest`).
    #[arg(long, env = "DEPLOYER_IMAGE")]
    pub image: String,

    #[command(flatten)]
    pub build: ImageBuildArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `deployer push`.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    /// A `docker save` tarball or an OCI-layout tarball (e.g. `podman save --format oci-archive`).
    #[arg(long, env = "DEPLOYER_ARCHIVE")]
    pub archive: PathBuf,

    /// Where to push: REGISTRY/REPO[:TAG].
    #[arg(long, env = "DEPLOYER_IMAGE")]
    pub image: String,

    /// Platform to push when the archive holds a multi-platform index.
    #[arg(long, env = "DEPLOYER_PLATFORM", default_value = "linux/amd64")]
    pub platform: String,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Which cluster and namespace.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file; default $KUBECONFIG, then ~/.kube/config, then in-cluster.
    #[arg(long, env = "DEPLOYER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context; default the current context.
    #[arg(long, env = "DEPLOYER_CONTEXT")]
    pub context: Option<String>,

    /// Namespace for objects that do not set one; default the context's namespace, then `default`.
    #[arg(long, short = 'n', env = "DEPLOYER_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Which manifests.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Manifest files or directories (YAML, multi-document); default the kubernetes/ directory.
    #[arg(
        long = "filename",
        short = 'f',
        env = "DEPLOYER_FILES",
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,

    /// Name of the server container whose image is set (default: the Deployment's only container,
    /// or the one named `celestial-server`).
    #[arg(long, env = "DEPLOYER_CONTAINER")]
    pub container: Option<String>,
}

/// How `apply` waits and checks.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// How long the rollout may take (e.g. 300s, 5m).
    #[arg(long, env = "DEPLOYER_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How long a new pod may stay Unschedulable before the rollout counts as failed (0s: at
    /// once). A cluster that adds nodes on demand (cluster autoscaler, GKE Autopilot) shows
    /// Unschedulable until the node is there: raise it above the node provisioning time.
    #[arg(long, env = "DEPLOYER_UNSCHEDULABLE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub unschedulable_grace: Duration,

    /// How long to wait for the load balancer's address after the rollout (e.g. 3m).
    #[arg(long, env = "DEPLOYER_LB_TIMEOUT", default_value = "3m", value_parser = parse_duration)]
    pub lb_timeout: Duration,

    /// Check /readyz and one real prediction through the public URL (`--smoke=false` to skip).
    #[arg(long, env = "DEPLOYER_SMOKE", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub smoke: bool,

    /// Image file posted to /predict by the smoke test; default a small generated image.
    #[arg(long, env = "DEPLOYER_SMOKE_IMAGE")]
    pub smoke_image: Option<PathBuf>,

    /// How long the smoke test may wait for the URL to answer (the load balancer may still be
    /// programming its forwarding when the address appears).
    #[arg(long, env = "DEPLOYER_SMOKE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub smoke_timeout: Duration,

    /// If the rollout fails, restore the previous Deployment spec and wait for it.
    #[arg(long, env = "DEPLOYER_ROLLBACK_ON_FAILURE")]
    pub rollback_on_failure: bool,

    /// Do not wait for the load balancer address (and skip the smoke test).
    #[arg(long, env = "DEPLOYER_NO_WAIT_LB")]
    pub no_wait_lb: bool,
}

/// Opt-in API keys and TLS (docs/security.md).
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Require an API key for predictions: mount the Secret NAME (data key `api-keys`, one key per
    /// line) into the server as its keys file. Created with a generated key when it does not
    /// exist (never overwritten; edit it to rotate keys, the pods re-read it without a restart).
    /// The smoke test sends its first key.
    #[arg(long, env = "DEPLOYER_API_KEY_SECRET", value_name = "NAME")]
    pub api_key_secret: Option<String>,

    /// Print the API key (text and JSON output); without it the key is never printed, only how
    /// to read it from the Secret.
    #[arg(long, env = "DEPLOYER_SHOW_API_KEY", requires = "api_key_secret")]
    pub show_api_key: bool,

    /// Serve HTTPS: mount the kubernetes.io/tls Secret NAME (tls.crt, tls.key; cert-manager's
    /// rotates in place and the pods re-read it) into the server and turn the Services into
    /// 443 -> the server's TLS port. The Secret must exist. The smoke test trusts its ca.crt (else
    /// its tls.crt).
    #[arg(long, env = "DEPLOYER_TLS_SECRET", value_name = "NAME")]
    pub tls_secret: Option<String>,

    /// Host name the smoke test checks the server's certificate against, connecting to the load
    /// balancer's address (e.g. the DNS name the certificate is for, before DNS points there);
    /// default the address itself.
    #[arg(
        long,
        env = "DEPLOYER_TLS_SERVER_NAME",
        value_name = "HOST",
        requires = "tls_secret"
    )]
    pub tls_server_name: Option<String>,
}

/// `deployer apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Image for the server container (REGISTRY/REPO@sha256:... preferred); default the manifest's.
    #[arg(long, env = "DEPLOYER_IMAGE")]
    pub image: Option<String>,

    /// Take over fields another field manager owns (after reading the conflict explanation).
    #[arg(long, env = "DEPLOYER_FORCE_CONFLICTS")]
    pub force_conflicts: bool,

    /// Server-side dry run: show what would change and stop.
    #[arg(long, env = "DEPLOYER_DRY_RUN")]
    pub dry_run: bool,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `deployer release`.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// Where to push: REGISTRY/REPO[:TAG]; the manifests get the pushed digest.
    #[arg(long, env = "DEPLOYER_IMAGE")]
    pub image: String,

    /// Take over fields another field manager owns.
    #[arg(long, env = "DEPLOYER_FORCE_CONFLICTS")]
    pub force_conflicts: bool,

    #[command(flatten)]
    pub build: ImageBuildArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub security: SecurityArgs,
}

/// `deployer diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// Image for the server container; default the manifest's.
    #[arg(long, env = "DEPLOYER_IMAGE")]
    pub image: Option<String>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// `deployer status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// `deployer delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// How long to wait until everything is gone.
    #[arg(long, env = "DEPLOYER_TIMEOUT", default_value = "3m", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// Runs the parsed command line: logging, the async runtime, the command, its output. Returns
/// the process exit code.
pub fn main_with(cli: Cli) -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    // Err: a subscriber is already set (only when called twice in one process, as tests may).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Internal.code());
        }
    };
    let format = match cli.output {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
    };
    let command = cli.into_command();
    let result = runtime.block_on(async {
        let interrupt = Interrupt::install()
            .map_err(|e| anyhow::anyhow!("cannot install the SIGINT/SIGTERM handlers: {e}"))?;
        commands::run(command, &interrupt).await
    });
    let out = render(&result, format);
    if let Some(s) = out.stdout {
        println!("{s}");
    }
    if let Some(s) = out.stderr {
        eprintln!("{s}");
    }
    std::process::ExitCode::from(out.code.code())
}

impl Cli {
    /// The command as plain options (what the rest of the crate takes).
    pub fn into_command(self) -> options::Command {
        match self.command {
            Command::Build(a) => options::Command::Build(a.into()),
            Command::Push(a) => options::Command::Push(options::PushCommand {
                archive: a.archive,
                image: a.image,
                platform: a.platform,
                registry: a.registry.into(),
            }),
            Command::Apply(a) => options::Command::Apply(a.into()),
            Command::Release(a) => options::Command::Release(Box::new(a.into())),
            Command::Diff(a) => options::Command::Diff(options::DiffCommand {
                image: a.image,
                cluster: a.cluster.into(),
                manifests: a.manifests.into(),
            }),
            Command::Status(a) => options::Command::Status(options::StatusCommand {
                cluster: a.cluster.into(),
                manifests: a.manifests.into(),
            }),
            Command::Delete(a) => options::Command::Delete(options::DeleteCommand {
                timeout: a.timeout,
                cluster: a.cluster.into(),
                manifests: a.manifests.into(),
            }),
        }
    }
}

impl From<RegistryArgs> for options::RegistryOptions {
    fn from(a: RegistryArgs) -> Self {
        options::RegistryOptions {
            username: a.registry_username,
            password_stdin: a.registry_password_stdin,
            insecure: a.insecure_registry,
            docker_config: a.docker_config,
            retry_timeout: a.registry_retry_timeout,
        }
    }
}

impl From<ImageBuildArgs> for options::BuildOptions {
    fn from(a: ImageBuildArgs) -> Self {
        options::BuildOptions {
            base: a.base,
            server_binary: a.server_binary,
            onnxruntime: a.onnxruntime,
            model: a.model,
            platform: a.platform,
            source_url: a.source_url,
            revision: a.revision,
            image_version: a.image_version,
            source_date_epoch: a.source_date_epoch,
        }
    }
}

impl From<ClusterArgs> for options::ClusterOptions {
    fn from(a: ClusterArgs) -> Self {
        options::ClusterOptions {
            kubeconfig: a.kubeconfig,
            context: a.context,
            namespace: a.namespace,
        }
    }
}

impl From<ManifestArgs> for options::ManifestOptions {
    fn from(a: ManifestArgs) -> Self {
        options::ManifestOptions {
            files: a.files,
            container: a.container,
        }
    }
}

impl From<WaitArgs> for options::WaitOptions {
    fn from(a: WaitArgs) -> Self {
        options::WaitOptions {
            timeout: a.timeout,
            unschedulable_grace: a.unschedulable_grace,
            lb_timeout: a.lb_timeout,
            smoke: a.smoke,
            smoke_image: a.smoke_image,
            smoke_timeout: a.smoke_timeout,
            rollback_on_failure: a.rollback_on_failure,
            no_wait_lb: a.no_wait_lb,
        }
    }
}

impl From<SecurityArgs> for options::SecurityOptions {
    fn from(a: SecurityArgs) -> Self {
        options::SecurityOptions {
            api_key_secret: a.api_key_secret,
            show_api_key: a.show_api_key,
            tls_secret: a.tls_secret,
            tls_server_name: a.tls_server_name,
        }
    }
}

impl From<BuildArgs> for options::BuildCommand {
    fn from(a: BuildArgs) -> Self {
        options::BuildCommand {
            image: a.image,
            build: a.build.into(),
            registry: a.registry.into(),
        }
    }
}

impl From<ApplyArgs> for options::ApplyCommand {
    fn from(a: ApplyArgs) -> Self {
        options::ApplyCommand {
            image: a.image,
            force_conflicts: a.force_conflicts,
            dry_run: a.dry_run,
            cluster: a.cluster.into(),
            manifests: a.manifests.into(),
            wait: a.wait.into(),
            security: a.security.into(),
        }
    }
}

impl From<ReleaseArgs> for options::ReleaseCommand {
    fn from(a: ReleaseArgs) -> Self {
        options::ReleaseCommand {
            build: options::BuildCommand {
                image: a.image,
                build: a.build.into(),
                registry: a.registry.into(),
            },
            apply: options::ApplyCommand {
                image: None,
                force_conflicts: a.force_conflicts,
                dry_run: false,
                cluster: a.cluster.into(),
                manifests: a.manifests.into(),
                wait: a.wait.into(),
                security: a.security.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_every_flag_has_an_env_var() {
        Cli::command().debug_assert();
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_positional() {
                    continue;
                }
                assert!(arg.get_env().is_some(), "{path} --{id} has no env var");
                assert!(arg.get_help().is_some(), "{path} --{id} has no doc");
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "deployer");
    }

    #[test]
    fn duration_flags_take_the_shared_syntax() {
        let c = Cli::try_parse_from([
            "deployer",
            "apply",
            "--timeout",
            "1m30s",
            "--lb-timeout",
            "1.5s",
            "--smoke-timeout",
            "90",
        ])
        .unwrap();
        let Command::Apply(a) = c.command else {
            panic!("not apply")
        };
        assert_eq!(a.wait.timeout, Duration::from_secs(90));
        assert_eq!(a.wait.lb_timeout, Duration::from_millis(1500));
        assert_eq!(a.wait.smoke_timeout, Duration::from_secs(90));
        let e = Cli::try_parse_from(["deployer", "delete", "--timeout", "5 minutes"]).unwrap_err();
        assert!(
            e.to_string().contains("invalid duration unit `minutes`"),
            "{e}"
        );
    }

    #[test]
    fn exit_codes_are_in_help() {
        for c in ExitCode::ALL {
            assert!(
                EXIT_CODES.contains(&format!("\n{:>3}  ", c.code())),
                "exit code {} not in --help",
                c.code()
            );
        }
    }

    #[test]
    fn smoke_flag_forms() {
        let c = Cli::try_parse_from(["deployer", "apply", "--smoke=false"]).unwrap();
        let Command::Apply(a) = c.command else {
            panic!()
        };
        assert!(!a.wait.smoke);
        let c = Cli::try_parse_from(["deployer", "apply"]).unwrap();
        let Command::Apply(a) = c.command else {
            panic!()
        };
        assert!(a.wait.smoke);
        assert!(Cli::try_parse_from(["deployer", "apply", "--registry-username", "x"]).is_err());
    }
}
