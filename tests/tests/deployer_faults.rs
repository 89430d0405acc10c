//! `deployer` against faults, on the test environment's real node: the registry down
//! when a push starts, SIGINT during `apply`, and a rolling release (then a scale-down) under load
//! through the public URL that must not lose a request. An API server that restarts during the
//! rollout wait (its watches end, connections are refused, the watch history is gone) is proven
//! against a scripted API server instead (`deployer/src/kube/tests/watches.rs`).
//!
//! These tests stop and restart parts of the shared environment, so they run one at a time
//! ([`SERIAL`]) and in their own test binary (cargo runs test binaries one after the other): no
//! other test sees the API server or the registry go away. A guard starts a stopped component
//! again even when a test fails.

use std::time::{Duration, Instant};

use celestial_e2e::deployer::*;
use celestial_e2e::{RealNode, TestEnv, repo_root, run_testenv};
use tokio::sync::{Mutex, OnceCell};

/// One fault at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Starts the component again when dropped (a test that fails midway leaves no hole).
struct Stopped(&'static str);

impl Stopped {
    fn stop(component: &'static str) -> Stopped {
        run_testenv(&["stop", component]).unwrap();
        Stopped(component)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Err(e) = run_testenv(&["start", self.0]) {
            eprintln!("starting {} again failed: {e}", self.0);
        }
    }
}

/// The real server image, built and pushed once for all the tests here (a reproducible build:
/// the same inputs give the same digest).
async fn server_image(env: &TestEnv) -> String {
    static IMAGE: OnceCell<String> = OnceCell::const_new();
    IMAGE
        .get_or_init(|| async {
            let image = format!(
                "{}/celestial-e2e/faults:{}",
                env.registry(),
                std::process::id()
            );
            let (_inputs, build) = server_build(env, &image);
            let r = run(build, None).await;
            assert_eq!(r.code, 0, "{}", r.describe());
            r.json()["image"]["image"].as_str().unwrap().to_string()
        })
        .await
        .clone()
}

/// `apply` of `manifests` with `image` (JSON output, no smoke test) and `extra` flags.
fn apply_args(
    env: &TestEnv,
    ns: &str,
    manifests: &Scratch,
    image: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut a = args(&[
        "apply",
        "-f",
        manifests.path().to_str().unwrap(),
        "--image",
        image,
        "--smoke=false",
        "--timeout",
        "180s",
        "--lb-timeout",
        "60s",
        "-o",
        "json",
    ]);
    a.extend(args(extra));
    a.extend(cluster_args(env, ns));
    a
}

/// The manifests on the real node with `marker` as the value of an extra container variable: a
/// new value is a new pod template, so a new rollout (the server ignores the variable).
fn revision(node: &RealNode, marker: &str) -> Scratch {
    let marker = marker.to_string();
    real_node_manifests(node, move |t| {
        t.replacen(
            "            - name: CELESTIAL_WORKERS\n",
            &format!("            - name: E2E_REVISION\n              value: \"{marker}\"\n            - name: CELESTIAL_WORKERS\n"),
            1,
        )
    })
}

/// A namespace with the server running on the real node (first revision), and its public URL.
async fn deployed(
    env: &TestEnv,
    node: &RealNode,
    name: &str,
) -> (celestial_e2e::TestNamespace, String, String) {
    let ns = env.namespace(name).await.unwrap();
    let image = server_image(env).await;
    let r = run(
        apply_args(env, ns.name(), &revision(node, "1"), &image, &[]),
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let url = r.json()["url"].as_str().unwrap().to_string();
    (ns, image, url)
}

#[tokio::test]
async fn deployer_retries_a_registry_that_is_down_when_the_push_starts() {
    let _one = SERIAL.lock().await;
    let env = TestEnv::get().await.expect("test environment");
    let image = format!(
        "{}/celestial-e2e/registry-down:{}",
        env.registry(),
        std::process::id()
    );

    // Down at the start, back 5 s later: pull and push are retried and the build succeeds.
    let (_inputs, build) = server_build(&env, &image);
    let down = Stopped::stop("registry");
    let building = spawn(&build);
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(down);
    let back = Instant::now();
    let r = building.finish(Duration::from_secs(180)).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(r.stderr.contains("retrying in"), "{}", r.describe());
    let retries = r.stderr.matches("retrying in").count();
    eprintln!(
        "measured: registry down for 5 s at the start: {retries} retries, pushed {:.1}s after it came back ({:.1}s in all)",
        back.elapsed().as_secs_f64(),
        r.seconds
    );

    // Down for longer than the retry budget: a clear exit 7 that says it gave up.
    let (_inputs, mut build) = server_build(&env, &image);
    build.extend(args(&["--registry-retry-timeout", "3s"]));
    let down = Stopped::stop("registry");
    let r = run(build, None).await;
    drop(down);
    assert_eq!(r.code, 7, "{}", r.describe());
    let j = r.json();
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains("cannot reach the registry 127.0.0.1:5000")
            && error.contains("gave up after")
            && error.contains("--registry-retry-timeout"),
        "{}",
        r.describe()
    );
    eprintln!("reported: {error}");
}

#[tokio::test]
async fn deployer_stops_on_sigint_says_where_the_cluster_is_and_a_rerun_converges() {
    let _one = SERIAL.lock().await;
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let (ns, image, _url) = deployed(&env, &node, "fault-sigint").await;

    let next = revision(&node, "2");
    let again = apply_args(&env, ns.name(), &next, &image, &["--rollback-on-failure"]);
    let apply = spawn(&again)
        .expect_stderr("updated", Duration::from_secs(60))
        .await;
    apply.signal(libc::SIGINT);
    let sent = Instant::now();
    let r = apply.finish(Duration::from_secs(30)).await;
    let stopped = sent.elapsed().as_secs_f64();
    assert_eq!(r.code, 130, "{}", r.describe());
    let j = r.json();
    let i = &j["interrupted"];
    assert_eq!(i["signal"], "SIGINT", "{}", r.describe());
    assert_eq!(i["during"], "waiting for the rollout", "{}", r.describe());
    let state = serde_json::to_string(&i["state"]).unwrap();
    assert!(
        state.contains("Deployment/celestial-bodies-classifier-deployment: rollout in progress")
            && state.contains(&image),
        "{}",
        r.describe()
    );
    let resume = i["resume"].as_str().unwrap();
    assert!(
        resume.contains("run the same `deployer apply` again")
            && resume.contains("no rollback was done"),
        "{}",
        r.describe()
    );
    assert!(stopped < 6.0, "stopped {stopped:.1}s after SIGINT");

    // The same command again: nothing to apply, it waits for the rollout that went on meanwhile.
    let r = run(again, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(r.json()["changed"], 0, "{}", r.describe());
    let d = deployment(&env, ns.name()).await;
    assert!(
        serde_json::to_string(&d.spec.unwrap().template)
            .unwrap()
            .contains("\"2\""),
    );
    eprintln!(
        "measured: SIGINT during the rollout wait: exit 130 after {stopped:.2}s; the re-run converged in {:.1}s",
        r.seconds
    );
}

/// `kubectl scale` of the server's Deployment to `replicas`, then wait until exactly that many of
/// its pods exist (the removed ones gone) and all are ready.
async fn scale(env: &TestEnv, ns: &str, replicas: usize) {
    // The environment has metrics-server, so the manifests' HPA acts on real CPU: under this
    // test's load it would scale the Deployment itself and overrule the manual scale.
    run_testenv(&[
        "kubectl",
        "-n",
        ns,
        "delete",
        "hpa",
        "--all",
        "--ignore-not-found",
    ])
    .unwrap();
    let to = format!("--replicas={replicas}");
    let deployment = "deployment/celestial-bodies-classifier-deployment";
    run_testenv(&["kubectl", "-n", ns, "scale", deployment, &to]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = server_pods(env, ns).await;
        let ready = pods.iter().filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| env.info().real_node_named(n).is_some())
                && serving(p)
        });
        if pods.len() == replicas && ready.count() == replicas {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not {replicas} ready pods after 90 s: {} pods",
            pods.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Concurrent keep-alive clients of the zero-downtime test.
const CLIENTS: usize = 4;

#[tokio::test]
async fn a_rolling_release_and_a_scale_down_under_load_lose_no_request() {
    let _one = SERIAL.lock().await;
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let (ns, image, url) = deployed(&env, &node, "zero-downtime").await;
    let jpeg = dataset_image("Saturn")
        .unwrap_or_else(|| std::fs::read(repo_root().join("docs/swagger.png")).unwrap());
    let clients = CLIENTS;

    // A rolling release: every old pod is drained and replaced while the load runs.
    let traffic = Load::start(&url, &jpeg, clients);
    let r = run(
        apply_args(&env, ns.name(), &revision(&node, "2"), &image, &[]),
        None,
    )
    .await;
    let (answered, failures) = traffic.stop().await;
    assert_eq!(r.code, 0, "{}", r.describe());
    eprintln!(
        "measured: rolling release under load ({clients} clients, {:.1}s): {answered} predictions answered, {} failed",
        r.seconds,
        failures.len()
    );
    assert!(
        answered > 0 && failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        summary(&failures)
    );

    // A scale-down from 3 to 2 (the HorizontalPodAutoscaler keeps at least 2; with no metrics
    // here it only enforces its bounds): the removed pod drains while the load runs.
    scale(&env, ns.name(), 3).await;
    let traffic = Load::start(&url, &jpeg, clients);
    let t = Instant::now();
    scale(&env, ns.name(), 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (answered, failures) = traffic.stop().await;
    eprintln!(
        "measured: scale-down 3 -> 2 under load ({clients} clients, pod gone after {:.1}s): {answered} predictions answered, {} failed",
        t.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        answered > 0 && failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        summary(&failures)
    );
}
