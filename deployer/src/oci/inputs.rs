//! What a build takes ([`BuildSpec`]), and reading it: the server binary, the ONNX Runtime library
//! and the model it names, and the labels' values (given, then git, then the crate's metadata).

use std::path::{Path, PathBuf};

use super::build::{Inputs, Metadata};
use super::error::ImageError;

/// What `build` makes: the base it starts from and the files and label values it adds (unset
/// ones are looked up: [`Inputs::read`], [`Metadata::resolve`]).
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Base image reference.
    pub base: String,
    /// `os/arch[/variant]` to pick from a multi-platform base.
    pub platform: String,
    /// The celestial-server binary to ship.
    pub server_binary: PathBuf,
    /// The ONNX Runtime library; default $ORT_DYLIB_PATH, then `scripts/onnxruntime.sh`.
    pub onnxruntime: Option<PathBuf>,
    /// The model to ship (empty: none).
    pub model: PathBuf,
    /// org.opencontainers.image.source; default the workspace repository URL.
    pub source_url: Option<String>,
    /// org.opencontainers.image.revision; default `git rev-parse HEAD`.
    pub revision: Option<String>,
    /// org.opencontainers.image.version; default the crate version.
    pub image_version: Option<String>,
    /// Creation time; default the git commit time.
    pub source_date_epoch: Option<i64>,
}

impl Inputs {
    /// Reads the binary, ONNX Runtime library and model the spec names.
    pub fn read(spec: &BuildSpec) -> Result<Inputs, ImageError> {
        let read = |what: &'static str, p: &Path| {
            std::fs::read(p).map_err(|e| ImageError::Input {
                what,
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        let binary = read("server binary", &spec.server_binary).map_err(|e| match e {
            ImageError::Input {
                what,
                path,
                message,
            } => ImageError::Input {
                what,
                path,
                message: format!(
                    "{message} (build it with `cargo build --release -p celestial-server`)"
                ),
            },
            other => other,
        })?;
        let ort_path = match &spec.onnxruntime {
            Some(p) => p.clone(),
            None => default_onnxruntime()?,
        };
        let onnxruntime = read("ONNX Runtime library", &ort_path)?;
        let onnxruntime_name = ort_path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("libonnxruntime.so"))
            .map(str::to_string)
            .unwrap_or_else(|| "libonnxruntime.so".to_string());
        let model = if spec.model.as_os_str().is_empty() {
            None
        } else {
            let name = spec
                .model
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model.onnx")
                .to_string();
            Some((read("model", &spec.model)?, name))
        };
        Ok(Inputs {
            binary,
            onnxruntime,
            onnxruntime_name,
            model,
        })
    }
}

/// $ORT_DYLIB_PATH, else what `scripts/onnxruntime.sh` prints (it fetches and caches the pinned library).
fn default_onnxruntime() -> Result<PathBuf, ImageError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let script = PathBuf::from("scripts/onnxruntime.sh");
    let err = |message: String| ImageError::Input {
        what: "ONNX Runtime library",
        path: script.clone(),
        message,
    };
    if !script.exists() {
        return Err(err(
            "not found: pass --onnxruntime PATH or set ORT_DYLIB_PATH (or run from the repository root)".into(),
        ));
    }
    let out = std::process::Command::new(&script)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    if path.is_empty() {
        return Err(err("printed no path".into()));
    }
    Ok(PathBuf::from(path))
}

impl Metadata {
    /// From the spec, then git, then the crate's metadata.
    pub fn resolve(spec: &BuildSpec) -> Metadata {
        let git = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new("git").args(args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let created_epoch = spec
            .source_date_epoch
            .or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        Metadata {
            created_epoch,
            source: spec
                .source_url
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_REPOSITORY").to_string()),
            revision: spec
                .revision
                .clone()
                .or_else(|| git(&["rev-parse", "HEAD"]))
                .unwrap_or_else(|| "unknown".into()),
            version: spec
                .image_version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        }
    }
}
