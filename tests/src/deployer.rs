//! Running the real `deployer` binary in end-to-end tests (tests/tests/deployer_*.rs): the run and
//! its result, scratch copies of `kubernetes/` (edited, or placed on the real node), the server
//! image build, predictions through a public URL, and reading the server's objects back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::{RealNode, TestEnv, repo_binary, repo_root};

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

pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

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
    let s = Scratch::new("manifests");
    for e in std::fs::read_dir(repo_root().join("kubernetes")).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = if p.file_name().unwrap() == "deployment.yaml" {
            edit(&text)
        } else {
            text
        };
        std::fs::write(s.path().join(p.file_name().unwrap()), text).unwrap();
    }
    s
}

pub fn cluster_args(env: &TestEnv, ns: &str) -> Vec<String> {
    args(&[
        "--kubeconfig",
        env.kubeconfig().to_str().unwrap(),
        "--namespace",
        ns,
    ])
}

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

pub async fn deployment(env: &TestEnv, ns: &str) -> Deployment {
    Api::<Deployment>::namespaced(env.client().await.unwrap(), ns)
        .get(DEPLOYMENT)
        .await
        .unwrap()
}

pub fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// The server's objects of kind `K` (ReplicaSets, Pods) in the namespace, by the app label.
pub async fn server_objects<K>(env: &TestEnv, ns: &str) -> Vec<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(env.client().await.unwrap(), ns)
        .list(&ListParams::default().labels("app=celestial-bodies-classifier"))
        .await
        .unwrap()
        .items
}

pub async fn replica_sets(env: &TestEnv, ns: &str) -> Vec<ReplicaSet> {
    server_objects(env, ns).await
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
    let ort = Command::new(repo_root().join("scripts/onnxruntime.sh"))
        .output()
        .unwrap();
    assert!(ort.status.success(), "scripts/onnxruntime.sh failed");
    let ort = String::from_utf8(ort.stdout).unwrap().trim().to_string();
    let inputs = Scratch::new("inputs");
    let copy = |from: &Path, name: &str| {
        let to = inputs.path().join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {}: {e}", from.display()));
        to.to_str().unwrap().to_string()
    };
    let server = copy(&server, "celestial-server");
    let ort = copy(Path::new(&ort), "libonnxruntime.so.1.31.1");
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

/// `edit` applied to a copy of deployment.yaml that puts the pods on the environment's real node
/// (its toleration and nodeSelector, as [`RealNode::placement`] says) with a CPU request of 100m
/// instead of 500m: the node has 2 CPUs, and two of these tests at once (3 pods each during a
/// rollout) must still fit. Nothing else of the manifests changes.
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

pub fn real_node_manifests(node: &RealNode, edit: impl Fn(&str) -> String) -> Scratch {
    let placement = format!(
        "      automountServiceAccountToken: false\n      nodeSelector:\n        {}: \"true\"\n      tolerations:\n        - key: {}\n          operator: Equal\n          value: \"true\"\n          effect: NoSchedule\n",
        node.label, node.taint
    );
    manifests_with(|t| {
        assert!(t.contains("automountServiceAccountToken: false\n") && t.contains("cpu: 500m"));
        edit(
            &t.replacen("      automountServiceAccountToken: false\n", &placement, 1)
                .replacen("cpu: 500m", "cpu: 100m", 1),
        )
    })
}

/// A dataset image of `label` (raw/LABEL/LABEL_100.jpg) when the shared dataset is there.
pub fn dataset_image(label: &str) -> Option<Vec<u8>> {
    let root = std::env::var_os("CELESTIAL_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dataset"));
    std::fs::read(root.join(format!("raw/{label}/{label}_100.jpg"))).ok()
}

/// One prediction through the public URL (raw JPEG body): the answer's JSON, or why it failed.
pub async fn predict(url: &str, jpeg: &[u8]) -> Result<Value, String> {
    predict_with(&keep_alive_client(), url, jpeg).await
}

/// An HTTP client as real users have one: keep-alive connections reused across requests.
pub fn keep_alive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// [`predict`] with `client` (and its pooled connections).
pub async fn predict_with(
    client: &reqwest::Client,
    url: &str,
    jpeg: &[u8],
) -> Result<Value, String> {
    let r = client
        .post(format!("{url}predict"))
        .header("content-type", "image/jpeg")
        .body(jpeg.to_vec())
        .send()
        .await
        .map_err(|e| format!("POST {url}predict: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("POST {url}predict: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// `n` predictions of `jpeg` through `url`, each must answer with `label` (any label when None).
pub async fn assert_predictions(url: &str, jpeg: &[u8], label: Option<&str>, n: usize) {
    for i in 0..n {
        let j = predict(url, jpeg)
            .await
            .unwrap_or_else(|e| panic!("prediction {i} through {url}: {e}"));
        let got = j["prediction"].as_str().unwrap_or_default();
        assert!(
            j["probabilities"].get(got).is_some(),
            "prediction {i}: no label in {j}"
        );
        if let Some(label) = label {
            assert_eq!(got, label, "prediction {i}: {j}");
        }
    }
}

/// Predictions of `jpeg` through `url`, one after the other, until the returned flag is set; the
/// task returns (answers, failures).
pub fn keep_predicting(
    url: &str,
    jpeg: &[u8],
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<(usize, Vec<String>)>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, url, jpeg) = (stop.clone(), url.to_string(), jpeg.to_vec());
    let task = tokio::spawn(async move {
        let (mut answers, mut failures) = (0, Vec::new());
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match predict(&url, &jpeg).await {
                Ok(_) => answers += 1,
                Err(e) => failures.push(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (answers, failures)
    });
    (stop, task)
}

/// Stops [`keep_predicting`]: every prediction during `what` was answered.
pub async fn assert_kept_answering(
    (stop, task): (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        tokio::task::JoinHandle<(usize, Vec<String>)>,
    ),
    what: &str,
) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answers, failures) = task.await.unwrap();
    assert!(
        failures.is_empty() && answers > 0,
        "{what}: {answers} answered, failed: {failures:?}"
    );
    eprintln!("{what}: the URL answered all {answers} predictions meanwhile");
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

/// The server's pods of the namespace.
pub async fn server_pods(env: &TestEnv, ns: &str) -> Vec<Pod> {
    server_objects(env, ns).await
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

/// A `deployer` run in the background: its output collected as it comes (so a test can act at a
/// given step), its process signalled like a user or a CI runner would.
pub struct Running {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: std::thread::JoinHandle<()>,
    start: Instant,
}

/// Starts deployer (from the repository root) with `args` and no stdin.
pub fn spawn(args: &[String]) -> Running {
    use std::io::{BufRead, Read};
    let mut child = Command::new(deployer())
        .current_dir(repo_root())
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running deployer");
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (sink, err) = (stderr.clone(), child.stderr.take().unwrap());
    let stderr_reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    Running {
        child,
        stdout,
        stderr,
        stderr_reader,
        start: Instant::now(),
    }
}

impl Running {
    /// Waits until deployer's stderr has a line containing `needle`; panics (with the whole run,
    /// deployer stopped) when it does not come in time.
    pub async fn expect_stderr(self, needle: &str, timeout: Duration) -> Running {
        match self.wait_stderr(needle, timeout).await {
            Ok(()) => self,
            Err(e) => {
                let r = self.finish(Duration::from_secs(1)).await;
                panic!("{e}\n{}", r.describe())
            }
        }
    }

    /// Waits until deployer's stderr has a line containing `needle`.
    pub async fn wait_stderr(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.stderr.lock().unwrap().clone();
            if seen.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no `{needle}` on deployer's stderr within {timeout:?}:\n{seen}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to deployer.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for deployer to exit (killing it after `timeout`) and returns the whole run.
    pub async fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let seconds = self.start.elapsed().as_secs_f64();
        let stdout = self.stdout.join().unwrap();
        self.stderr_reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        Run {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout,
            stderr,
            seconds,
        }
    }
}
