//! `build` and `push`, and the flags of how the image is built.

use std::path::PathBuf;

use clap::Args;

use super::registry::RegistryArgs;
use crate::oci::inputs::BuildSpec;

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

impl ImageBuildArgs {
    /// What the build makes.
    pub fn spec(&self) -> BuildSpec {
        BuildSpec {
            base: self.base.clone(),
            platform: self.platform.clone(),
            server_binary: self.server_binary.clone(),
            onnxruntime: self.onnxruntime.clone(),
            model: self.model.clone(),
            source_url: self.source_url.clone(),
            revision: self.revision.clone(),
            image_version: self.image_version.clone(),
            source_date_epoch: self.source_date_epoch,
        }
    }
}
