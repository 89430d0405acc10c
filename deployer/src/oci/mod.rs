//! The image side: everything OCI. Imports `progress` and `support`, never `kube/` or `cli/`.
//!
//! - [`media`]: media types, digests, descriptors, platform selection (leaf)
//! - [`layout`]: deterministic tar/gzip/JSON bytes (leaf)
//! - [`platform`]: platforms and the per-platform flags' values (`PLATFORM=PATH`)
//! - [`build`]: the pure build: layer files, config and manifest from the base and the inputs
//! - [`index`]: the pure image index of a multi-platform build
//! - [`inputs`]: what a build takes, and reading it (binary, ONNX Runtime, model, labels)
//! - [`registry`]: credentials, transport, retrying, and explaining registry errors
//! - [`pull`]: the base image's manifest and config, blobs through a digest-checked cache
//! - [`glibc`]: does the binary run on the base (architecture, glibc symbol versions)
//! - [`publish`]: `build` end to end (one image, or one per platform and their index), and the
//!   push every image goes through
//! - [`archive`]: images built elsewhere (`docker save`, OCI layout)
//! - [`error`]: the side's error type
//!
//! A new image format (a new archive kind, zstd layers) goes in `archive.rs` or `layout.rs`, its
//! media types in `media.rs`; pushing stays in `publish.rs`.

pub mod archive;
pub mod build;
pub mod error;
pub mod glibc;
pub mod index;
pub mod inputs;
pub mod layout;
pub mod media;
pub mod platform;
pub mod publish;
pub mod pull;
pub mod registry;
