//! The subcommands, each with its flags.

use clap::Subcommand;

use super::apply::{ApplyArgs, ReleaseArgs};
use super::cluster::{DeleteArgs, DiffArgs, StatusArgs};
use super::history::{HistoryArgs, RollbackArgs};
use super::image::{BuildArgs, PushArgs};

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
    /// Show the release history (ConfigMap celestial-releases): time, image, model, outcome.
    History(HistoryArgs),
    /// Restore an earlier release: the previous revision, --to-revision N or --to-model VERSION.
    Rollback(RollbackArgs),
}
