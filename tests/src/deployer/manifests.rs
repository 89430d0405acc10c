//! Scratch copies of `kubernetes/` for a deployer run: edited, or placed on the real node.

use std::path::{Path, PathBuf};

use crate::{RealNode, repo_root};

/// A scratch directory under the target dir, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("deployer-e2e-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of kubernetes/ with `edit` applied to deployment.yaml.
pub fn manifests_with(edit: impl Fn(&str) -> String) -> Scratch {
    manifests_edited(|file, text| {
        if file == "deployment.yaml" {
            edit(text)
        } else {
            text.to_owned()
        }
    })
}

/// A copy of kubernetes/ with `edit(FILE NAME, TEXT)` applied to every file.
pub fn manifests_edited(edit: impl Fn(&str, &str) -> String) -> Scratch {
    let s = Scratch::new("manifests");
    for e in std::fs::read_dir(repo_root().join("kubernetes")).unwrap() {
        let p = e.unwrap().path();
        if !p.is_file() {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(s.path().join(&name), edit(&name, &text)).unwrap();
    }
    s
}

/// `edit` applied to a copy of deployment.yaml that keeps the pods on the environment's real nodes
/// (their label, as [`RealNode::placement`] says) with a CPU request of 100m instead of 500m: each
/// node has 2 CPUs, and several of these tests at once (3 pods each during a rollout) must still
/// fit. Nothing else of the manifests changes.
pub fn real_node_manifests(node: &RealNode, edit: impl Fn(&str) -> String) -> Scratch {
    let placement = format!(
        "      automountServiceAccountToken: false\n      nodeSelector:\n        {}: \"true\"\n",
        node.label
    );
    manifests_with(|t| {
        assert!(t.contains("automountServiceAccountToken: false\n") && t.contains("cpu: 500m"));
        edit(
            &t.replacen("      automountServiceAccountToken: false\n", &placement, 1)
                .replacen("cpu: 500m", "cpu: 100m", 1),
        )
    })
}
