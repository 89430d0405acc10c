//! A real node drained under load: `kubectl drain` evicts the server's pods from one node through
//! the eviction API while clients send predictions through the public URL; the
//! PodDisruptionBudget (`minAvailable: 1`) and `maxUnavailable: 0` keep one pod serving (the HPA is
//! removed first, so that the replica count is the one it checks), the
//! evicted pods come back on the other node, and not one client request fails. Its own test binary:
//! a cordoned node must not surprise another test (cargo runs test binaries one after another).

use std::time::{Duration, Instant};

use celestial_e2e::deployer::*;
use celestial_e2e::{TestEnv, run_testenv};

/// Clients sending predictions one after another during the drain.
const CLIENTS: usize = 2;

/// Uncordons the node when the test ends, whatever happened.
struct Cordoned(String);

impl Drop for Cordoned {
    fn drop(&mut self) {
        if let Err(e) = run_testenv(&["kubectl", "uncordon", &self.0]) {
            eprintln!("uncordon {}: {e}", self.0);
        }
    }
}

/// (pod name, node) of the server's pods that are not terminating.
async fn placement(env: &TestEnv, ns: &str) -> Vec<(String, String)> {
    server_pods(env, ns)
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
            (p.metadata.name.unwrap_or_default(), node)
        })
        .collect()
}

#[tokio::test]
async fn draining_a_node_under_load_fails_no_request() {
    let env = TestEnv::get().await.expect("test environment");
    let (env, _node) = env.real_node().await.expect("the real nodes");
    let ns = env.namespace("cluster-drain").await.unwrap();
    // the repository's manifests as they are: 2 replicas spread over the nodes, the PDB
    let manifests = manifests_edited(|_, text| text.to_owned());
    let (_inputs, mut release) = real_node_release(&env, "drain", manifests.path());
    release.extend(cluster_args(&env, ns.name()));
    let r = run(release, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let url = r.json()["url"].as_str().unwrap().to_string();
    let jpeg = dataset_image_or_fixture("Jupiter");
    let before = placement(&env, ns.name()).await;
    eprintln!("before the drain: {before:?}");
    assert_eq!(before.len(), 2, "{before:?}");
    // the node with the most of the server's pods (both, when the soft spread did not spread); on a
    // tie the first real node, whose node port the load balancer sends every connection to: its
    // kube-proxy then forwards all of them to the other node
    let count = |n: &String| before.iter().filter(|(_, m)| m == n).count();
    let mut nodes: Vec<String> = env
        .info()
        .real_nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    nodes.sort_by_key(|n| std::cmp::Reverse(count(n)));
    let node = nodes[0].clone();

    // The HPA would act on this load's real CPU (metrics-server runs) and change the replica count
    // this test counts; the autoscaler has its own test (cluster_hpa.rs).
    run_testenv(&["kubectl", "-n", ns.name(), "delete", "hpa", "--all"]).unwrap();
    let load = Load::start(&url, &jpeg, CLIENTS);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _guard = Cordoned(node.clone());
    let t = Instant::now();
    let out = run_testenv(&[
        "kubectl",
        "drain",
        &node,
        "--pod-selector=app=celestial-bodies-classifier",
        "--delete-emptydir-data",
        "--ignore-daemonsets",
        "--timeout=240s",
    ])
    .unwrap_or_else(|e| panic!("kubectl drain {node}: {e}"));
    let drained = t.elapsed().as_secs_f64();
    eprintln!(
        "the drain ran from {:.2}s to {:.2}s of the load",
        load.progress().1 - drained,
        load.progress().1
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    // the evicted pods are back, ready, on the other node
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let now = placement(&env, ns.name()).await;
        let ready = env
            .wait_deployment_available(ns.name(), DEPLOYMENT, Duration::from_secs(1))
            .await
            .is_ok();
        if ready && now.len() == 2 && now.iter().all(|(_, n)| *n != node) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "after the drain of {node}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (answered, failures) = load.stop().await;
    eprintln!(
        "measured: drain of {node} took {drained:.1}s; after it {after:?}; {answered} predictions, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during the drain:\n{}\nthe load balancer's warnings (a backend it could not reach shows here):\n{}",
        summary(&failures),
        lb_warnings(&env)
    );
}

/// The load-balancer stand-in's warning lines: where a failed request met a closed backend, and
/// when (to set beside the pods' termination).
fn lb_warnings(env: &TestEnv) -> String {
    let log = std::fs::read_to_string(env.info().state_dir.join("lb.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
