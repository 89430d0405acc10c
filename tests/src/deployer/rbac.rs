//! The deployer as a CI job with least privilege: a ServiceAccount of the test namespace bound to
//! the repository's Role (`kubernetes/rbac/deployer-role.yaml`), and a kubeconfig holding only its
//! token (from the TokenRequest API), so that every verb the deployer uses must be in that Role.

use std::process::Command;

use serde_json::{Value, json};

use super::Scratch;
use crate::{TestEnv, repo_root};

/// The Role file the docs tell users to bind.
pub fn deployer_role_file() -> std::path::PathBuf {
    repo_root().join("kubernetes/rbac/deployer-role.yaml")
}

/// Runs `kubectl` and returns its stdout; panics with its stderr.
fn kubectl(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("kubectl {what}: {e}"));
    assert!(
        out.status.success(),
        "kubectl {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `--kubeconfig` and `--namespace` of a ServiceAccount `deployer` in `ns` that holds exactly the
/// repository's deployer Role there; the kubeconfig lives as long as the returned [`Scratch`].
pub fn least_privilege_args(env: &TestEnv, ns: &str) -> (Scratch, Vec<String>) {
    let role = deployer_role_file();
    let mut c = env.kubectl();
    c.args(["-n", ns, "apply", "-f"]).arg(&role);
    kubectl(c, "apply the deployer Role");
    let mut c = env.kubectl();
    c.args(["-n", ns, "create", "serviceaccount", "deployer"]);
    kubectl(c, "create serviceaccount");
    let mut c = env.kubectl();
    c.args(["-n", ns, "create", "rolebinding", "deployer"]);
    c.args([
        "--role=celestial-deployer",
        &format!("--serviceaccount={ns}:deployer"),
    ]);
    kubectl(c, "create rolebinding");
    let mut c = env.kubectl();
    c.args(["-n", ns, "create", "token", "deployer", "--duration=2h"]);
    let token = kubectl(c, "create token").trim().to_string();

    // The admin kubeconfig's cluster (address, CA) with the token as the only credential.
    let mut c = env.kubectl();
    c.args(["config", "view", "--raw", "--minify", "-o", "json"]);
    let admin: Value = serde_json::from_str(&kubectl(c, "config view")).unwrap();
    let cluster = admin["clusters"][0].clone();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "deployer", "user": {"token": token}}],
        "contexts": [{"name": "deployer", "context": {
            "cluster": cluster["name"], "user": "deployer", "namespace": ns}}],
        "current-context": "deployer",
    });
    let dir = Scratch::new("least-privilege");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let args = vec![
        "--kubeconfig".to_string(),
        path.to_str().unwrap().to_string(),
        "--namespace".to_string(),
        ns.to_string(),
    ];
    (dir, args)
}
