//! `apply` and `release`, and their flags of how to wait and check, and of API keys and TLS.

use std::path::PathBuf;
use std::time::Duration;

use celestial_common::parse_duration;
use clap::Args;

use super::canary::CanaryArgs;
use super::cluster::{ClusterArgs, ManifestArgs};
use super::history::RecordArgs;
use super::image::ImageBuildArgs;
use super::registry::RegistryArgs;
use crate::kube::rollout::Limits;

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

    /// If the rollout or the smoke test fails, restore the previous Deployment spec and wait for
    /// it. A model the server refuses at start (its self-check) is rolled back in any case.
    #[arg(long, env = "DEPLOYER_ROLLBACK_ON_FAILURE")]
    pub rollback_on_failure: bool,

    /// Do not wait for the load balancer address (and skip the smoke test).
    #[arg(long, env = "DEPLOYER_NO_WAIT_LB")]
    pub no_wait_lb: bool,
}

/// Opt-in evaluation of a new model before it gets traffic (docs/deploy.md, "Evaluation before
/// traffic").
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Before a new server image gets traffic, run it as the Deployment NAME-candidate (its pods
    /// selected by no Service), predict the evaluation images on it and on the serving pods, and
    /// promote it only when it is good enough (--eval-floor, --eval-margin); else delete the
    /// candidate, change nothing and exit 8.
    #[arg(long, env = "DEPLOYER_EVALUATE")]
    pub evaluate: bool,

    /// Labelled evaluation images, DIR/<Label>/*.jpg (also .jpeg, .png, .webp, .bmp); default the
    /// golden images of model/golden.json (one validation image per label), built into deployer.
    #[arg(
        long,
        env = "DEPLOYER_EVAL_SET",
        value_name = "DIR",
        requires = "evaluate"
    )]
    pub eval_set: Option<PathBuf>,

    /// Refuse a candidate whose accuracy is lower than the serving model's by more than this, or
    /// whose unknown rate is higher by more than this (fractions, 0..1).
    #[arg(long, env = "DEPLOYER_EVAL_MARGIN", default_value_t = 0.02, value_parser = fraction)]
    pub eval_margin: f64,

    /// Refuse a candidate whose accuracy is below this (a fraction, 0..1), also on a first
    /// release (nothing serves yet to compare with).
    #[arg(long, env = "DEPLOYER_EVAL_FLOOR", default_value_t = 0.9, value_parser = fraction)]
    pub eval_floor: f64,
}

/// A fraction: a number from 0 to 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0 to 1 (e.g. 0.02)")),
    }
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

    /// Also apply the monitoring of kubernetes/monitoring/ (built into deployer) to the
    /// release's namespace, fitted to its Deployment: the Grafana dashboard's ConfigMap, and the
    /// PrometheusRule (alerts) and PodMonitor (scraping) when the cluster has prometheus-operator's
    /// CRDs; without them a warning says so, and the command does not fail for it.
    #[arg(long, env = "DEPLOYER_MONITORING")]
    pub monitoring: bool,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub record: RecordArgs,

    #[command(flatten)]
    pub eval: EvalArgs,

    #[command(flatten)]
    pub canary: CanaryArgs,
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

    /// Also apply the monitoring of kubernetes/monitoring/ (built into deployer) to the
    /// release's namespace, fitted to its Deployment: the Grafana dashboard's ConfigMap, and the
    /// PrometheusRule (alerts) and PodMonitor (scraping) when the cluster has prometheus-operator's
    /// CRDs; without them a warning says so, and the command does not fail for it.
    #[arg(long, env = "DEPLOYER_MONITORING")]
    pub monitoring: bool,

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

    #[command(flatten)]
    pub record: RecordArgs,

    #[command(flatten)]
    pub eval: EvalArgs,

    #[command(flatten)]
    pub canary: CanaryArgs,
}

impl WaitArgs {
    /// How long a rollout (or a rollback's) may take.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            unschedulable_grace: self.unschedulable_grace,
        }
    }
}

impl ReleaseArgs {
    /// The `apply` half of a release: its cluster, manifests, waits and security, with `image`
    /// for the server (the pushed digest).
    pub fn apply(&self, image: Option<String>) -> ApplyArgs {
        ApplyArgs {
            image,
            force_conflicts: self.force_conflicts,
            dry_run: false,
            monitoring: self.monitoring,
            cluster: self.cluster.clone(),
            manifests: self.manifests.clone(),
            wait: self.wait.clone(),
            security: self.security.clone(),
            record: self.record.clone(),
            eval: self.eval.clone(),
            canary: self.canary.clone(),
        }
    }
}
