//! What a deployer run builds or deploys: `deployer build` arguments of the real server image (and
//! of one nothing should ever reach), fake image references, and dataset images to predict.

use std::path::{Path, PathBuf};

use super::{Scratch, args};
use crate::{TestEnv, onnxruntime_library, repo_binary, repo_root};

/// `deployer build` of `server` + `ort` on `base` to a repository nothing should ever reach.
pub fn never_build(env: &TestEnv, base: &str, server: &Path, ort: &Path) -> Vec<String> {
    let image = format!("{}/celestial-e2e/never:1", env.registry());
    let (server, ort) = (server.to_str().unwrap(), ort.to_str().unwrap());
    args(&[
        "build",
        "--image",
        &image,
        "--base",
        base,
        "--server-binary",
        server,
        "--onnxruntime",
        ort,
    ])
}
/// A fake but well-formed image reference (kwok does not pull images).
pub fn fake_image(env: &TestEnv, n: u8) -> String {
    format!(
        "{}/celestial-e2e/fake@sha256:{}",
        env.registry(),
        format!("{n:02x}").repeat(32)
    )
}

/// The dataset image for the smoke test when the shared dataset is there (else deployer's own).
pub fn smoke_image() -> Option<PathBuf> {
    let root = std::env::var_os("CELESTIAL_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dataset"));
    let p = root.join("raw/Earth/Earth_0.jpg");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP (partly): dataset image {} absent; the smoke test uses deployer's generated image",
            p.display()
        );
        None
    }
}

/// `deployer build` of the real server image to `image`: the server binary of this workspace (debug
/// profile: what `cargo test` already built), the pinned ONNX Runtime library and the model,
/// snapshotted into the returned scratch directory (the shared working tree's binary or model may
/// be rebuilt meanwhile), on the synthesized distroless-cc base in the local registry.
pub fn server_build(env: &TestEnv, image: &str) -> (Scratch, Vec<String>) {
    let server =
        repo_binary("celestial-server", "celestial-server").expect("building celestial-server");
    let ort = onnxruntime_library();
    let inputs = Scratch::new("inputs");
    let copy = |from: &Path, name: &str| {
        let to = inputs.path().join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        to.to_str().unwrap().to_string()
    };
    let server = copy(&server, "celestial-server");
    let ort = copy(&ort, "libonnxruntime.so.1.31.1");
    let model = copy(
        &repo_root().join("model/celestial-bodies.onnx"),
        "celestial-bodies.onnx",
    );
    let build = args(&[
        "build",
        "--image",
        image,
        "--base",
        &env.info().base_images.distroless_cc_registry,
        "--server-binary",
        &server,
        "--onnxruntime",
        &ort,
        "--model",
        &model,
        "--source-date-epoch",
        "1764000000",
        "--revision",
        "e2e",
        "-o",
        "json",
    ]);
    (inputs, build)
}

/// `deployer release` of the real server to the real node: the image `REGISTRY/celestial-e2e/REPO:PID`,
/// the manifests in `manifests` (see [`real_node_manifests`]) and waits long enough for a loaded
/// machine. Returns the build inputs (keep them until the run ends) and the arguments, to which a
/// test adds its own and the cluster's.
pub fn real_node_release(env: &TestEnv, repo: &str, manifests: &Path) -> (Scratch, Vec<String>) {
    let image = format!(
        "{}/celestial-e2e/{repo}:{}",
        env.registry(),
        std::process::id()
    );
    let (inputs, mut release) = server_build(env, &image);
    release[0] = "release".into();
    release.extend(args(&[
        "-f",
        manifests.to_str().unwrap(),
        "--timeout",
        "180s",
        "--lb-timeout",
        "60s",
        "--smoke-timeout",
        "60s",
    ]));
    (inputs, release)
}

/// A dataset image of `label`, else the committed Saturn fixture: for load, where any real
/// photograph does.
pub fn dataset_image_or_fixture(label: &str) -> Vec<u8> {
    dataset_image(label).unwrap_or_else(|| {
        std::fs::read(repo_root().join("server/tests/fixtures/saturn-progressive.jpg")).unwrap()
    })
}

/// A dataset image of `label` (raw/LABEL/LABEL_100.jpg) when the shared dataset is there.
pub fn dataset_image(label: &str) -> Option<Vec<u8>> {
    std::fs::read(dataset_root().join(format!("raw/{label}/{label}_100.jpg"))).ok()
}

/// The first `n` dataset images of `label` by file name (fewer when the dataset is not there).
pub fn dataset_images(label: &str, n: usize) -> Vec<Vec<u8>> {
    let dir = dataset_root().join("raw").join(label);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    names.sort();
    names
        .iter()
        .take(n)
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// The shared dataset: `CELESTIAL_DATASET`, else `../shared/dataset` beside the repository.
fn dataset_root() -> PathBuf {
    std::env::var_os("CELESTIAL_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dataset"))
}
