//! The OCI side's error: building, pulling, reading or pushing an image.

use std::path::PathBuf;

use std::time::Duration;

use super::registry::{RegistryError, Retryable};

/// An image build or push problem.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {path}: {message}")]
    Input {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the server binary needs {} but the base image {base} provides glibc up to {newest}: use a newer base (--base), or build the binary against an older glibc", join(.missing))]
    GlibcTooOld {
        base: String,
        /// The GLIBC_x.y versions the binary needs and the base lacks.
        missing: Vec<String>,
        newest: String,
    },
    #[error(
        "the base image {base} has no glibc (libc.so.6) but the server binary is dynamically linked against it; use a glibc base such as gcr.io/distroless/cc-debian12"
    )]
    NoGlibc { base: String },
    #[error("the server binary is built for {binary} but the base image {base} is {base_arch}")]
    Architecture {
        base: String,
        binary: String,
        base_arch: String,
    },
    #[error("base image {base}: {message}")]
    Base { base: String, message: String },
    /// A bad `--platform` list, or a per-platform value (`PLATFORM=PATH`) that names no platform
    /// being built.
    #[error("{flag} {value}: {message}")]
    Platform {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("archive {path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl Retryable for ImageError {
    fn is_transient(&self) -> bool {
        matches!(self, ImageError::Registry(e) if e.is_transient())
    }
    fn gave_up(self, attempts: u32, elapsed: Duration) -> Self {
        match self {
            ImageError::Registry(e) => ImageError::Registry(e.gave_up(attempts, elapsed)),
            e => e,
        }
    }
}

fn join(v: &[String]) -> String {
    v.join(", ")
}
