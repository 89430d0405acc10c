//! This repository as the tests see it: its root, and binaries of its crates built for them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::EnvError;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Builds a binary of the workspace (debug profile, `--locked`) and returns its path.
pub fn repo_binary(package: &str, bin: &str) -> Result<PathBuf, EnvError> {
    let out = cargo()
        .current_dir(repo_root())
        .args(["build", "--locked", "-q", "-p", package, "--bin", bin])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::Command(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(EnvError::Command(format!(
            "cargo build -p {package} --bin {bin} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    Ok(target.join("debug").join(bin))
}

/// The pinned ONNX Runtime library, as `scripts/onnxruntime.sh` finds (or fetches and caches) it.
pub fn onnxruntime_library() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/onnxruntime.sh"))
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/onnxruntime.sh");
    assert!(out.status.success(), "scripts/onnxruntime.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `cargo`, without the variables cargo set for the running test (`CARGO_PKG_*`,
/// `CARGO_MANIFEST_*`): build scripts watch some of them (ring's), so a build with them would redo
/// what the same build from a shell made, and the next one from a shell would redo it again.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let set_for_the_test = name
            .to_str()
            .is_some_and(|n| n.starts_with("CARGO_PKG_") || n.starts_with("CARGO_MANIFEST_"));
        if set_for_the_test {
            cmd.env_remove(name);
        }
    }
    cmd
}
