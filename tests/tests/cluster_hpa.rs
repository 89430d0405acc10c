//! The HorizontalPodAutoscaler of `kubernetes/hpa.yaml` acting on real pods: load through the public
//! URL makes it scale the server out (metrics-server reads the pods' CPU from the kubelets), and
//! back in after the load, without a failed client request. The manifests are the repository's,
//! except the scale-down stabilisation window: 15 s here instead of 300 s, so that the scale-in
//! happens within the test. Its own test binary: nothing else runs on the nodes meanwhile (cargo
//! runs test binaries one after another), so the CPU the HPA sees is the server's.
//!
//! It takes minutes by design (metrics every 15 s, the HPA's 15 s sync, the pods' start and the
//! stabilisation window), so it belongs to the cluster suite (`scripts/cluster-suite`, results in
//! docs/testing.md), not to every CI run; CI keeps the fast path of the same chain: an HPA reading
//! the pods' CPU through metrics-server (tests/tests/env_realnode.rs).

use std::time::{Duration, Instant};

use celestial_e2e::TestEnv;
use celestial_e2e::deployer::*;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::Api;

/// Closed-loop clients: enough to keep both pods busy on two shared cores.
const CLIENTS: usize = 6;
const HPA: &str = "celestial-bodies-classifier-hpa";

/// The HPA's replica counts and CPU figure: (current, desired, average utilisation).
async fn hpa_state(env: &TestEnv, ns: &str) -> (i32, i32, Option<i32>) {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(env.client().await.unwrap(), ns);
    let h = api.get(HPA).await.unwrap();
    let st = h.status.unwrap_or_default();
    let cpu = st
        .current_metrics
        .iter()
        .flatten()
        .find_map(|m| m.resource.as_ref()?.current.average_utilization);
    (st.current_replicas.unwrap_or(0), st.desired_replicas, cpu)
}

/// Ready server pods (not terminating).
async fn ready_pods(env: &TestEnv, ns: &str) -> usize {
    server_pods(env, ns)
        .await
        .iter()
        .filter(|p| serving(p))
        .count()
}

/// Polls `done` every second for up to `limit`; the seconds it took.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let t = Instant::now();
    loop {
        let state = done().await;
        match state {
            None => return t.elapsed().as_secs_f64(),
            Some(s) if t.elapsed() > limit => panic!("{what}: not after {limit:?}: {s}"),
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[tokio::test]
#[ignore = "cluster suite (minutes by design): scripts/cluster-suite"]
async fn the_hpa_scales_the_server_out_under_load_and_back_in_without_a_failed_request() {
    let env = TestEnv::get().await.expect("test environment");
    let (env, _node) = env.real_node().await.expect("the real nodes");
    let ns = env.namespace("cluster-hpa").await.unwrap();
    let manifests = manifests_edited(|file, text| {
        if file == "hpa.yaml" {
            assert!(text.contains("stabilizationWindowSeconds: 300"));
            text.replace(
                "stabilizationWindowSeconds: 300",
                "stabilizationWindowSeconds: 15",
            )
        } else {
            text.to_owned()
        }
    });
    let (_inputs, mut release) = real_node_release(&env, "hpa", manifests.path());
    release.extend(cluster_args(&env, ns.name()));
    let r = run(release, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let url = r.json()["url"].as_str().unwrap().to_string();
    let jpeg = dataset_image_or_fixture("Saturn");

    // metrics-server's figures reach the HPA before any load (about two 15 s scrapes)
    let n = ns.name().to_owned();
    let first = wait_until("the HPA reads CPU", Duration::from_secs(120), || {
        let (env, n) = (env.clone(), n.clone());
        async move {
            let s = hpa_state(&env, &n).await;
            s.2.is_none().then(|| format!("{s:?}"))
        }
    })
    .await;
    eprintln!(
        "measured: the HPA read CPU {first:.0}s after the release: {:?}",
        hpa_state(&env, &n).await
    );

    // load: the HPA scales out, and the new pods become ready
    let load = Load::start(&url, &jpeg, CLIENTS);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (a0, t0) = load.progress();
    let out = wait_until("scale-out", Duration::from_secs(240), || {
        let (env, n) = (env.clone(), n.clone());
        async move {
            let (cur, want, cpu) = hpa_state(&env, &n).await;
            let ready = ready_pods(&env, &n).await;
            (want <= 2 || ready < want as usize)
                .then(|| format!("{cur} -> {want} replicas, {ready} ready, cpu {cpu:?}%"))
        }
    })
    .await;
    let (a1, t1) = load.progress();
    let (_, scaled, cpu) = hpa_state(&env, &n).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (a2, t2) = load.progress();
    let (answered, failures) = load.stop().await;
    eprintln!(
        "measured: scaled out to {scaled} ready replicas {:.0}s into the load (cpu {cpu:?}% of the request); \
         {:.0} req/s before it, {:.0} req/s in the 20 s after; {answered} predictions, {} failed",
        out + 10.0,
        (a1 - a0) as f64 / (t1 - t0),
        (a2 - a1) as f64 / (t2 - t1),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during the scale-out:\n{}",
        summary(&failures)
    );

    // no load: back to the minimum (2) after the shortened stabilisation window, while a client
    // keeps predicting through the scale-in
    let client = keep_predicting(&url, &jpeg);
    let back = wait_until("scale-in", Duration::from_secs(240), || {
        let (env, n) = (env.clone(), n.clone());
        async move {
            let (cur, want, cpu) = hpa_state(&env, &n).await;
            let pods = server_pods(&env, &n).await.len();
            (want != 2 || pods != 2)
                .then(|| format!("{cur} -> {want} replicas, {pods} pods, cpu {cpu:?}%"))
        }
    })
    .await;
    eprintln!("measured: back to 2 replicas {back:.0}s after the load stopped");
    assert_kept_answering(client, "the scale-in").await;
}
