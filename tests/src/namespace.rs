//! A namespace of the test cluster that lives as long as a test holds it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A namespace created by [`crate::TestEnv::namespace`]; deleted (without waiting) on drop.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// The guard of the namespace `name`, deleted with `kubectl` and `kubeconfig`.
    pub(crate) fn new(name: String, kubectl: PathBuf, kubeconfig: PathBuf) -> Self {
        Self {
            name,
            kubectl,
            kubeconfig,
        }
    }

    /// The generated name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
