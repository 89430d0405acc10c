//! `deployer`: builds and pushes the celestial-server image without a Docker daemon, server-side
//! applies the Kubernetes manifests, waits for the rollout and the load balancer, smoke-tests the
//! public URL, and reports in text or JSON with documented exit codes (see [`exit::ExitCode`]).
//!
//! # Layers
//!
//! ```text
//! main.rs ─> cli ─> commands/* ─> kube/*  (Kubernetes side)
//!             │         │     └─> oci/*   (image side)
//!             │         │     └─> smoke
//!             │         └─> cli::{command, image, registry, cluster, apply}  (the flags, as the
//!             │              commands take them; each turns its flags into kube's and oci's inputs)
//!             └─> render (text or JSON, success or error; the one place output is shaped)
//!             └─> error  (the one place each layer's error becomes an exit code)
//! leaves: exit, interrupt, progress, support (no crate imports)
//! ```
//!
//! - [`cli`]: the only module that knows clap. Its top ([`cli::main_with`]) parses the command
//!   line, runs the command and prints what [`render`] makes of it; its modules hold the flags
//!   (`Args` structs), each turning its flags into the plain inputs of `kube/` and `oci/` where
//!   those need them ([`kube::cluster::Connection`], [`oci::inputs::BuildSpec`],
//!   [`oci::registry::Transport`], [`kube::rollout::Limits`]).
//! - [`commands`]: one module per command; each takes its flags as parsed and returns a typed,
//!   serializable report.
//! - [`kube`] and [`oci`]: the two sides. Each has its own error type and never imports the other
//!   side, [`cli`], [`commands`], [`error`] or [`render`]. Long steps report through
//!   [`progress::Progress`].
//! - [`error`] maps every side's error to an exit code; [`exit`] holds the codes.
//!
//! What a module may import: only modules below it in the picture, and the leaves. No module
//! imports one that (directly or not) imports it back; `scripts/check-structure` (run by
//! `scripts/test`) checks this, the leaves, the kube/oci separation, that no function outside the
//! tests is longer than 80 lines, and that no file has more than 500 lines before its tests.
//!
//! # Where things go
//!
//! - A new command: its flags in a module of [`cli`] (and a variant in [`cli::command::Command`]),
//!   a module in [`commands`] with its report type (and a variant in [`commands::Report`]);
//!   Kubernetes or OCI work it needs goes in [`kube`] or [`oci`], with a plain input type of
//!   theirs when it needs more than a few values.
//! - A new image format: media types in [`oci::media`], reading it in [`oci::archive`] (or
//!   [`oci::layout`] for a layer encoding); pushing stays [`oci::publish`].
//! - A new failure: a variant of the side's error type, and its exit code in [`error`].

pub mod cli;
pub mod commands;
pub mod error;
pub mod exit;
pub mod interrupt;
pub mod kube;
pub mod oci;
pub mod progress;
pub mod render;
pub mod smoke;
pub mod support;

pub use cli::main_with;
