//! The `tests/env/testenv` script, run by the helpers: `up` once per test process (it reuses a
//! running environment and serialises concurrent callers with a file lock), `start node` once, and
//! any other command a test runs.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::{EnvInfo, repo_root};

/// The `testenv` script.
pub fn testenv_script() -> PathBuf {
    repo_root().join("tests/env/testenv")
}

fn state_dir() -> PathBuf {
    std::env::var_os("TESTENV_STATE")
        .map_or_else(|| PathBuf::from("/tmp/celestial-testenv"), PathBuf::from)
}

/// Runs `testenv ARGS` (stdin closed); its output in the error when it fails.
pub fn run_testenv(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(testenv_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", testenv_script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "`tests/env/testenv {}` exited with {}:\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// `testenv up`, once per process: what `env.json` says afterwards.
pub(crate) fn up() -> Result<EnvInfo, String> {
    static UP: OnceLock<Result<EnvInfo, String>> = OnceLock::new();
    UP.get_or_init(|| {
        eprintln!("celestial-e2e: tests/env/testenv up (reuses a running environment)");
        let t = Instant::now();
        run_testenv(&["up"])?;
        eprintln!(
            "celestial-e2e: test environment ready in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        read_env_json()
    })
    .clone()
}

/// `testenv start node`, once per process: what `env.json` says afterwards.
pub(crate) fn start_node() -> Result<EnvInfo, String> {
    static NODE: OnceLock<Result<EnvInfo, String>> = OnceLock::new();
    NODE.get_or_init(|| {
        let t = Instant::now();
        run_testenv(&["start", "node"])?;
        eprintln!(
            "celestial-e2e: real node ready in {:.1}s (testenv start node)",
            t.elapsed().as_secs_f64()
        );
        read_env_json()
    })
    .clone()
}

fn read_env_json() -> Result<EnvInfo, String> {
    let path = state_dir().join("env.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}
