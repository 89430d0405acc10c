//! The CI side of the tests (tests/tests/ci_*.rs): the cached CI-configuration linters
//! (tests/env/ci-tools.sh), and the GKE authentication mechanisms made real against the test
//! environment: a kubeconfig whose user is an `exec` credential plugin, and a Docker config whose
//! `credHelpers` name a `docker-credential-*` helper (`testenv-exec-credential` and
//! `docker-credential-testenv` of the test environment's programs, see [`crate::programs`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{TestEnv, repo_root};

/// The directory of the cached CI linters (`bin/actionlint`, `bin/check-jsonschema`):
/// `tests/env/ci-tools.sh`, which builds them when the cache lacks them (scripts/setup does that
/// first, so the tests find them).
pub fn ci_tools() -> PathBuf {
    let out = Command::new(repo_root().join("tests/env/ci-tools.sh"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/env/ci-tools.sh");
    assert!(out.status.success(), "tests/env/ci-tools.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The admin bearer token of the test cluster (from its kubeconfig).
pub fn admin_token(env: &TestEnv) -> String {
    let text = std::fs::read_to_string(env.kubeconfig()).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the testenv kubeconfig has a token")
        .trim()
        .to_string()
}

/// Writes `dir/kubeconfig`: the test cluster (server and CA of the environment's kubeconfig) with
/// a user whose credentials come from the `exec` plugin `command args` (client.authentication
/// .k8s.io/v1, as `gcloud container clusters get-credentials` writes for gke-gcloud-auth-plugin).
/// The admin token is put in `dir/token` for the test plugin to hand out.
pub fn exec_kubeconfig(env: &TestEnv, dir: &Path, command: &str, args: &[String]) -> PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, admin_token(env)).unwrap();
    let ca = env.info().state_dir.join("pki/ca.crt");
    let args: String = args.iter().map(|a| format!("\n      - {a:?}")).collect();
    let kc = dir.join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: exec-user
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {command}
      args:{args}
      installHint: Install the test plugin (cargo build -p celestial-testenv)
      provideClusterInfo: true
      interactiveMode: Never
contexts:
- name: testenv-exec
  context: {{cluster: testenv, user: exec-user, namespace: default}}
current-context: testenv-exec
",
            server = env.info().api_server,
            ca = ca.display(),
        ),
    )
    .unwrap();
    kc
}

/// Writes `dir/docker/config.json` with `credHelpers` (registry -> helper name, as
/// `gcloud auth configure-docker` writes `{"LOCATION-docker.pkg.dev": "gcloud"}`) and
/// `dir/credentials.json` for the test helper (registry -> user and secret). Returns the Docker
/// config directory.
pub fn docker_config(
    dir: &Path,
    helpers: &[(&str, &str)],
    secrets: &[(&str, &str, &str)],
) -> PathBuf {
    let cfg = dir.join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let helpers: serde_json::Map<String, serde_json::Value> = helpers
        .iter()
        .map(|(r, h)| (r.to_string(), serde_json::json!(h)))
        .collect();
    std::fs::write(
        cfg.join("config.json"),
        serde_json::json!({ "credHelpers": helpers }).to_string(),
    )
    .unwrap();
    let secrets: serde_json::Map<String, serde_json::Value> = secrets
        .iter()
        .map(|(r, u, s)| {
            (
                r.to_string(),
                serde_json::json!({"Username": u, "Secret": s}),
            )
        })
        .collect();
    std::fs::write(
        dir.join("credentials.json"),
        serde_json::Value::Object(secrets).to_string(),
    )
    .unwrap();
    cfg
}

/// A `bin` directory in `dir` holding only `docker-credential-testenv` (a link to `helper`), to
/// put first on PATH, as gcloud's SDK puts `docker-credential-gcloud` there.
pub fn helper_path(dir: &Path, helper: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("docker-credential-testenv");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(helper, &link).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
