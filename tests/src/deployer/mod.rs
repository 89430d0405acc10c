//! Running the real `deployer` binary in end-to-end tests (tests/tests/deployer_*.rs): the run and
//! its result ([`Run`], in the background [`Running`]), scratch copies of `kubernetes/` (edited, or
//! placed on the real node), the server image build, variants of its model, predictions through a
//! public URL, reading the server's objects back, and running as a least-privilege CI account.

mod cluster;
mod images;
mod load;
mod manifests;
mod models;
mod predict;
mod rbac;
mod running;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

use crate::{TestEnv, repo_binary, repo_root};

pub use cluster::*;
pub use images::*;
pub use load::*;
pub use manifests::*;
pub use models::*;
pub use predict::*;
pub use rbac::*;
pub use running::*;

pub const DEPLOYMENT: &str = "celestial-bodies-classifier-deployment";
pub const SERVICE: &str = "celestial-bodies-classifier-service";

/// The `deployer` binary, built once per test process.
pub fn deployer() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| repo_binary("deployer", "deployer").expect("building deployer"))
        .clone()
}

/// A finished `deployer` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    pub fn describe(&self) -> String {
        format!(
            "exit {} after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.seconds, self.stdout, self.stderr
        )
    }
}

/// Runs deployer (from the repository root, so `kubernetes/` is the default) with `stdin`.
pub async fn run(args: Vec<String>, stdin: Option<String>) -> Run {
    let bin = deployer();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut cmd = Command::new(bin);
        cmd.current_dir(repo_root())
            .args(&args)
            .env_remove("DOCKER_CONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running deployer");
        if let Some(s) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        let out: Output = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            seconds: start.elapsed().as_secs_f64(),
        }
    })
    .await
    .unwrap()
}

/// Owned arguments of a command line.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `--kubeconfig` of the test cluster and `--namespace NS`.
pub fn cluster_args(env: &TestEnv, ns: &str) -> Vec<String> {
    args(&[
        "--kubeconfig",
        env.kubeconfig().to_str().unwrap(),
        "--namespace",
        ns,
    ])
}
/// The `[ 12.3s]` timestamp of deployer's first stderr line containing `needle`.
pub fn stamp(stderr: &str, needle: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains(needle))?;
    line.strip_prefix('[')?
        .split_once("s]")?
        .0
        .trim()
        .parse()
        .ok()
}

/// A failed apply with `--rollback-on-failure`: exit 4, one of `reasons` reported (in the JSON
/// and its error text, naming a pod), the previous spec (`image`) restored and available again.
/// Returns (seconds to the failure, seconds of the rollback) from deployer's own progress lines.
pub fn assert_rolled_back(r: &Run, reasons: &[&str], image: &str) -> (f64, f64) {
    assert_eq!(r.code, 4, "{}", r.describe());
    let j = r.json();
    let reason = j["reason"].as_str().unwrap_or_default();
    assert!(reasons.contains(&reason), "{}", r.describe());
    let error = j["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(reason) && error.contains("pod celestial-bodies-classifier-deployment-"),
        "{}",
        r.describe()
    );
    assert_eq!(j["rollback"]["restored"], true, "{}", r.describe());
    assert_eq!(j["rollback"]["image"], image, "{}", r.describe());
    let failed = stamp(&r.stderr, "rolling Deployment/")
        .unwrap_or_else(|| panic!("no rollback line: {}", r.describe()));
    (failed, r.seconds - failed)
}
