//! Finding and loading the ONNX Runtime shared library, once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::error::InferenceError;

/// ONNX Runtime version this build pins (scripts/onnxruntime.sh installs it).
pub const ORT_PINNED_VERSION: &str = "1.31.1";

/// Find the ONNX Runtime shared library: explicit path (flag / ORT_DYLIB_PATH), then
/// `libonnxruntime.so*` next to the executable, then the scripts/onnxruntime.sh cache.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf, InferenceError> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(InferenceError::LibraryMissing {
                looked: format!("{} (from ORT_DYLIB_PATH/--ort-dylib-path)", p.display()),
            })
        };
    }
    let mut looked = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                    && p.is_file()
            })
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
        looked.push(format!("{}/libonnxruntime.so*", dir.display()));
    }
    let default = default_library_path();
    if default.is_file() {
        return Ok(default);
    }
    looked.push(default.display().to_string());
    Err(InferenceError::LibraryMissing {
        looked: looked.join(", "),
    })
}

/// `${CELESTIAL_CACHE:-~/.cache/celestial}/onnxruntime/<pinned>/libonnxruntime.so.<pinned>`.
pub fn default_library_path() -> PathBuf {
    let cache = match std::env::var_os("CELESTIAL_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/celestial"),
    };
    cache
        .join("onnxruntime")
        .join(ORT_PINNED_VERSION)
        .join(format!("libonnxruntime.so.{ORT_PINNED_VERSION}"))
}

/// The loaded library: its environment (which every session is built in) and its version.
pub(super) struct Runtime {
    pub(super) env: Environment,
    pub(super) version: String,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Load ONNX Runtime once per process (a second server in the same process reuses it).
pub(super) fn runtime(explicit: Option<&Path>) -> Result<&'static Runtime, InferenceError> {
    if let Some(r) = RUNTIME.get() {
        return r.as_ref().map_err(|e| InferenceError::LibraryLoad {
            path: "(earlier attempt)".into(),
            reason: e.clone(),
        });
    }
    let path = locate_library(explicit)?;
    let r = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("celestial-server")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Runtime {
            env,
            version: detect_version(&path),
        })
    });
    r.as_ref().map_err(|e| InferenceError::LibraryLoad {
        path: path.display().to_string(),
        reason: e.clone(),
    })
}

fn detect_version(path: &Path) -> String {
    // The build info string reads like "ORT Build Info: git-branch=rel-1.31.1, ...".
    let info = ort::info();
    if let Some(v) = info
        .split("rel-")
        .nth(1)
        .map(|s| s.split([',', ' ']).next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
    {
        return v;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("libonnxruntime.so.")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_explicit_library_says_what_to_run() {
        let e = locate_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("scripts/onnxruntime.sh")
                && msg.contains("/nonexistent/libonnxruntime.so"),
            "{msg}"
        );
    }

    #[test]
    fn default_library_path_follows_celestial_cache() {
        let p = default_library_path();
        assert!(
            p.ends_with("onnxruntime/1.31.1/libonnxruntime.so.1.31.1"),
            "{}",
            p.display()
        );
    }
}
