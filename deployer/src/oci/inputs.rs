//! What a build takes ([`BuildSpec`]: per platform, [`PlatformSpec`]), and reading it: the server
//! binary, the ONNX Runtime library and the model it names, and the labels' values (given, then
//! git, then the crate's metadata).

use std::path::{Path, PathBuf};

use super::build::{Inputs, Metadata};
use super::error::ImageError;
use super::glibc::binary_info;
use super::platform::{Platform, host_architecture};

/// What `build` makes: the base it starts from and the files and label values it adds (unset
/// ones are looked up: [`Inputs::read`], [`Metadata::resolve`]).
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Base image reference (an index holding every platform, for a multi-platform build).
    pub base: String,
    /// The platforms to build, in order, each with its own binary and library: one gives a
    /// single image (as before multi-platform builds), more give an image index.
    pub platforms: Vec<PlatformSpec>,
    /// The model to ship (empty: none); the same file on every platform.
    pub model: PathBuf,
    /// org.opencontainers.image.source; default the git remote `origin` when it is a web URL.
    pub source_url: Option<String>,
    /// org.opencontainers.image.revision; default `git rev-parse HEAD`.
    pub revision: Option<String>,
    /// org.opencontainers.image.version; default the crate version.
    pub image_version: Option<String>,
    /// Creation time; default the git commit time.
    pub source_date_epoch: Option<i64>,
}

/// One platform of a build and its own files.
#[derive(Debug, Clone)]
pub struct PlatformSpec {
    /// `os/arch[/variant]`, also what is picked from a multi-platform base.
    pub platform: Platform,
    /// The celestial-server binary to ship.
    pub server_binary: PathBuf,
    /// The ONNX Runtime library; default $ORT_DYLIB_PATH (this machine's architecture only), then
    /// `scripts/onnxruntime.sh ARCH`.
    pub onnxruntime: Option<PathBuf>,
}

impl BuildSpec {
    /// True when the build makes an image index (more than one platform).
    pub fn is_multi_platform(&self) -> bool {
        self.platforms.len() > 1
    }
}

impl Inputs {
    /// Reads the binary, ONNX Runtime library and model the spec names for one platform.
    pub fn read(spec: &BuildSpec, p: &PlatformSpec) -> Result<Inputs, ImageError> {
        let read = |what: &'static str, p: &Path| {
            std::fs::read(p).map_err(|e| ImageError::Input {
                what,
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        let binary = read("server binary", &p.server_binary).map_err(|e| match e {
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
        let ort_path = match &p.onnxruntime {
            Some(path) => path.clone(),
            None => default_onnxruntime(&p.platform.architecture)?,
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

/// An ONNX Runtime library of another architecture than the binary would only fail when the
/// server starts: refused before the build. (An input that is not ELF is left to the binary's own
/// check.)
pub fn check_same_architecture(
    binary: &[u8],
    library: &[u8],
    path: &Path,
) -> Result<(), ImageError> {
    let (Ok(bin), Ok(lib)) = (binary_info(binary), binary_info(library)) else {
        return Ok(());
    };
    if bin.architecture == lib.architecture {
        return Ok(());
    }
    Err(ImageError::Input {
        what: "ONNX Runtime library",
        path: path.to_path_buf(),
        message: format!(
            "built for {}, but the server binary is {} (scripts/onnxruntime.sh {} fetches the right one)",
            lib.architecture, bin.architecture, bin.architecture
        ),
    })
}

/// For this machine's architecture $ORT_DYLIB_PATH, else what `scripts/onnxruntime.sh ARCH`
/// prints (it fetches and caches the pinned library of that architecture).
fn default_onnxruntime(architecture: &str) -> Result<PathBuf, ImageError> {
    if host_architecture() == Some(architecture)
        && let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty())
    {
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
            "not found: pass --onnxruntime [PLATFORM=]PATH or set ORT_DYLIB_PATH (or run from the repository root)".into(),
        ));
    }
    let out = std::process::Command::new(&script)
        .arg(architecture)
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

/// An address a person can open: the OCI label is a URL, while a git remote may also be an scp-like
/// `user@host:path` or a local path, which would mislead as a label.
fn is_web_url(u: &str) -> bool {
    u.starts_with("https://") || u.starts_with("http://")
}

impl Metadata {
    /// From the spec, then git, then the crate's metadata (the source only from the spec or git:
    /// a made-up repository address would be worse than none).
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
                .or_else(|| git(&["remote", "get-url", "origin"]).filter(|u| is_web_url(u))),
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

#[cfg(test)]
mod tests {
    use super::is_web_url;

    #[test]
    fn only_a_web_address_is_a_source_label() {
        assert!(is_web_url("https://git.example.org/team/celestial.git"));
        assert!(is_web_url("http://git.internal/celestial"));
        assert!(!is_web_url("git@git.example.org:team/celestial.git"));
        assert!(!is_web_url("/srv/git/celestial.git"));
        assert!(!is_web_url("ssh://git@git.example.org/team/celestial.git"));
    }
}
