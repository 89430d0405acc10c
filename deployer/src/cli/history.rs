//! The release history: how much of it `apply`, `release` and `rollback` keep, `history` to show
//! it, and `rollback` to go back to a revision or a model version.

use std::time::Duration;

use celestial_common::parse_duration;
use clap::Args;

use super::cluster::{ClusterArgs, ManifestArgs};
use crate::kube::rollout::Limits;

/// How many releases the history keeps.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// How many releases the history keeps (the ConfigMap celestial-releases in the server's
    /// namespace; the oldest go first). 0: record nothing, and need no ConfigMap permissions.
    #[arg(long, env = "DEPLOYER_HISTORY_LIMIT", default_value_t = 20)]
    pub history_limit: usize,
}

/// `deployer history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// `deployer rollback`.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// Restore this revision of the Deployment (`deployer history` lists them): its ReplicaSet's
    /// pod template, else the one the history recorded. Default: the revision before the current.
    #[arg(long, env = "DEPLOYER_TO_REVISION", value_name = "N")]
    pub to_revision: Option<u64>,

    /// Restore the newest promoted release of this model version (`deployer history` lists
    /// them): the pod template, image included, that the history recorded for it.
    #[arg(
        long,
        env = "DEPLOYER_TO_MODEL",
        value_name = "VERSION",
        conflicts_with = "to_revision"
    )]
    pub to_model: Option<String>,

    /// How long the restored revision may take to roll out (e.g. 300s, 5m).
    #[arg(long, env = "DEPLOYER_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How long a pod may stay Unschedulable before the rollout counts as failed (0s: at once).
    #[arg(long, env = "DEPLOYER_UNSCHEDULABLE_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub unschedulable_grace: Duration,

    #[command(flatten)]
    pub record: RecordArgs,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

impl RollbackArgs {
    /// How long the restored revision's rollout may take.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.timeout,
            unschedulable_grace: self.unschedulable_grace,
        }
    }
}
