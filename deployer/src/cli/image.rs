//! `build` and `push`, and the flags of how the image is built.

use std::path::{Path, PathBuf};

use clap::Args;

use super::registry::RegistryArgs;
use crate::oci::error::ImageError;
use crate::oci::inputs::{BuildSpec, PlatformSpec};
use crate::oci::platform::{parse_per_platform, parse_platforms};

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

    /// The release celestial-server binary to ship: PATH for every platform, or PLATFORM=PATH
    /// for one of a multi-platform build (repeat the flag), e.g.
    /// `--server-binary linux/arm64=target/aarch64-unknown-linux-gnu/release/celestial-server`.
    /// A platform without its own takes the plain PATH (default target/release/celestial-server).
    #[arg(long, env = "DEPLOYER_SERVER_BINARY", value_name = "[PLATFORM=]PATH")]
    pub server_binary: Vec<String>,

    /// The ONNX Runtime shared library to ship next to the binary: PATH, or PLATFORM=PATH as for
    /// --server-binary. Default for this machine's architecture $ORT_DYLIB_PATH, then (for every
    /// architecture) the cached library `scripts/onnxruntime.sh ARCH` fetches.
    #[arg(long, env = "DEPLOYER_ONNXRUNTIME", value_name = "[PLATFORM=]PATH")]
    pub onnxruntime: Vec<String>,

    /// The ONNX model to ship (the server also embeds one); the image points CELESTIAL_MODEL at it.
    #[arg(
        long,
        env = "DEPLOYER_MODEL",
        default_value = "model/celestial-bodies.onnx"
    )]
    pub model: PathBuf,

    /// The platform to build (and to pick from a multi-platform base), or several,
    /// comma-separated (`linux/amd64,linux/arm64`): one image per platform, pushed as one image
    /// index under the tag; the base must then be an index holding every platform.
    #[arg(long, env = "DEPLOYER_PLATFORM", default_value = "linux/amd64")]
    pub platform: String,

    /// Value of the org.opencontainers.image.source label; default the git remote `origin` when it
    /// is an http(s) URL, else no such label.
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

/// The server binary when --server-binary gives none for a platform.
const DEFAULT_SERVER_BINARY: &str = "target/release/celestial-server";

impl ImageBuildArgs {
    /// What the build makes: the platforms and each one's files (a bad `--platform` or
    /// `PLATFORM=PATH` value is an error here, before anything is read).
    pub fn spec(&self) -> Result<BuildSpec, ImageError> {
        let platforms = parse_platforms(&self.platform)?;
        let binaries = parse_per_platform("--server-binary", &self.server_binary, &platforms)?;
        let libraries = parse_per_platform("--onnxruntime", &self.onnxruntime, &platforms)?;
        let platforms = platforms
            .into_iter()
            .map(|platform| PlatformSpec {
                server_binary: binaries
                    .get(&platform)
                    .map_or_else(|| PathBuf::from(DEFAULT_SERVER_BINARY), Path::to_path_buf),
                onnxruntime: libraries.get(&platform).map(Path::to_path_buf),
                platform,
            })
            .collect();
        Ok(BuildSpec {
            base: self.base.clone(),
            platforms,
            model: self.model.clone(),
            source_url: self.source_url.clone(),
            revision: self.revision.clone(),
            image_version: self.image_version.clone(),
            source_date_epoch: self.source_date_epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;
    use crate::cli::command::Command;
    use crate::error::Error;
    use crate::exit::ExitCode;

    fn build_args(args: &[&str]) -> ImageBuildArgs {
        let mut argv = vec!["deployer", "build", "--image", "127.0.0.1:5000/x:y"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Build(b) => b.build,
            other => panic!("not build: {other:?}"),
        }
    }

    #[test]
    fn one_platform_is_the_old_build() {
        let spec = build_args(&[]).spec().unwrap();
        assert!(!spec.is_multi_platform());
        assert_eq!(spec.platforms.len(), 1);
        let p = &spec.platforms[0];
        assert_eq!(p.platform.to_string(), "linux/amd64");
        assert_eq!(
            p.server_binary,
            PathBuf::from("target/release/celestial-server")
        );
        assert_eq!(p.onnxruntime, None);
        let spec = build_args(&["--server-binary", "bin/x", "--onnxruntime", "lib/o.so"])
            .spec()
            .unwrap();
        assert_eq!(spec.platforms[0].server_binary, PathBuf::from("bin/x"));
        assert_eq!(
            spec.platforms[0].onnxruntime,
            Some(PathBuf::from("lib/o.so"))
        );
    }

    #[test]
    fn several_platforms_take_their_own_files() {
        let spec = build_args(&[
            "--platform",
            "linux/amd64,linux/arm64",
            "--server-binary",
            "linux/arm64=target/aarch64-unknown-linux-gnu/release/celestial-server",
            "--onnxruntime",
            "linux/arm64=/cache/aarch64/libonnxruntime.so.1.31.1",
            "--onnxruntime",
            "linux/amd64=/cache/libonnxruntime.so.1.31.1",
        ])
        .spec()
        .unwrap();
        assert!(spec.is_multi_platform());
        let got: Vec<(String, String, Option<PathBuf>)> = spec
            .platforms
            .iter()
            .map(|p| {
                let bin = p.server_binary.display().to_string();
                (p.platform.to_string(), bin, p.onnxruntime.clone())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "linux/amd64".into(),
                    "target/release/celestial-server".into(),
                    Some("/cache/libonnxruntime.so.1.31.1".into())
                ),
                (
                    "linux/arm64".into(),
                    "target/aarch64-unknown-linux-gnu/release/celestial-server".into(),
                    Some("/cache/aarch64/libonnxruntime.so.1.31.1".into())
                ),
            ]
        );
    }

    /// A bad `--platform` or `PLATFORM=PATH` is a usage error (exit 2) with its reason, mapped
    /// where every error is.
    #[test]
    fn bad_platform_values_are_usage_errors() {
        for (args, says) in [
            (
                vec!["--platform", "linux/x86_64"],
                "--platform linux/x86_64: unknown architecture \"x86_64\": OCI calls it \"amd64\"",
            ),
            (vec!["--platform", "linux/amd64,"], "an empty platform"),
            (vec!["--platform", "darwin/arm64"], "only linux/... images"),
            (
                vec!["--server-binary", "linux/arm64=x"],
                "--server-binary linux/arm64=x: linux/arm64 is not built (--platform linux/amd64)",
            ),
            (
                vec![
                    "--platform",
                    "linux/amd64,linux/arm64",
                    "--onnxruntime",
                    "linux/arm/v7=x",
                ],
                "--onnxruntime linux/arm/v7=x: linux/arm/v7 is not built",
            ),
        ] {
            let e = Error::from(build_args(&args).spec().unwrap_err());
            assert!(e.to_string().contains(says), "{args:?}: {e}");
            assert_eq!(e.exit_code(), ExitCode::Usage, "{args:?}");
        }
    }
}
