//! The shipped alert rules in a real Prometheus (built from its pinned Go module), scraping the
//! server's pods on the test environment's real nodes as the shipped PodMonitor says: grayscale
//! photographs sent through the public URL make the server's drift monitor raise
//! `celestial_drift_alert`, Prometheus's `CelestialInputDrift` fires, and clean photographs make it
//! resolve. The alerts' `for:` is cut from 15 minutes to 5 s here (the expressions are the shipped
//! ones); scrapes and evaluations run every second.
//!
//! Needs the shared dataset (`../shared/dataset`, or `CELESTIAL_DATASET`): the drift is judged
//! against pictures like the training ones, which a generated picture is not. Without it the
//! test says so and passes without checking.

use std::path::PathBuf;
use std::time::Duration;

use celestial_e2e::deployer::*;
use celestial_e2e::prometheus::Prometheus;
use celestial_e2e::{TestEnv, repo_root};

/// The validation pictures the model's drift reference was not built from (odd positions per
/// class in model/validation-split.txt; the reference took the even ones): clean traffic.
fn held_out_pictures(dataset: &std::path::Path) -> Vec<Vec<u8>> {
    let split = std::fs::read_to_string(repo_root().join("model/validation-split.txt")).unwrap();
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    let mut out = Vec::new();
    for line in split.lines().filter(|l| !l.is_empty()) {
        let class = line.split('/').next().unwrap();
        let n = seen.entry(class).or_default();
        if *n % 2 == 1 {
            out.push(std::fs::read(dataset.join("raw").join(line)).unwrap());
        }
        *n += 1;
    }
    out
}

/// `jpeg` as a grayscale PNG: the same photograph from a camera without colour.
fn grayscale(jpeg: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(jpeg).unwrap().to_luma8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn dataset() -> Option<PathBuf> {
    let root = std::env::var_os("CELESTIAL_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dataset"));
    root.join("raw").is_dir().then_some(root)
}

/// Sends every picture of `pictures`, round after round, through `url` from 4 concurrent clients
/// until `done` says so (asked after each round), at most `rounds` rounds: how many were sent, and
/// whether `done` said so.
///
/// Each prediction on a connection of its own: the Service balances connections, not requests, so
/// four keep-alive connections could all land on one pod and leave the other's window (and its
/// alert) as the previous phase left it.
async fn send_until<F, Fut>(
    url: &str,
    pictures: &[Vec<u8>],
    rounds: usize,
    done: F,
) -> (usize, bool)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let client = connection_per_request_client();
    let mut sent = 0;
    for _ in 0..rounds {
        for chunk in pictures.chunks(4) {
            let mut set = tokio::task::JoinSet::new();
            for p in chunk {
                let (client, url, p) = (client.clone(), url.to_string(), p.clone());
                set.spawn(async move { predict_with(&client, &url, &p).await });
            }
            while let Some(answer) = set.join_next().await {
                answer
                    .unwrap()
                    .unwrap_or_else(|e| panic!("a prediction failed: {e}"));
            }
            sent += chunk.len();
        }
        if done().await {
            return (sent, true);
        }
    }
    (sent, false)
}

#[tokio::test]
async fn prometheus_fires_the_drift_alert_on_grayscale_photographs_and_resolves_it() {
    let Some(dataset) = dataset() else {
        eprintln!("SKIPPED: the shared dataset (../shared/dataset or CELESTIAL_DATASET) is absent");
        return;
    };
    let env = TestEnv::get().await.expect("test environment");
    let (env, _node) = env.real_node().await.expect("the real nodes");
    let ns = env.namespace("monitoring-prom").await.unwrap();
    let manifests = manifests_edited(|_, text| text.to_owned());
    let (_inputs, mut release) = real_node_release(&env, "monitoring", manifests.path());
    release.extend(cluster_args(&env, ns.name()));
    let r = run(release, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let url = r.json()["url"].as_str().unwrap().to_string();

    let prom = Prometheus::start(&env, ns.name(), "1s", "5s").await;
    let up = "sum(up{namespace=\"".to_string() + ns.name() + "\"})";
    let t = prom
        .wait_until("both pods scraped", Duration::from_secs(60), || async {
            let v = prom.query(&up).await;
            v.first().and_then(|s| s["value"][1].as_str()) == Some("2")
        })
        .await;
    eprintln!(
        "measured: Prometheus scraped both pods {:.1}s after its start",
        t.as_secs_f64()
    );
    let drift_series = prom.query("celestial_drift_alert").await;
    assert!(
        !drift_series.is_empty() && drift_series.iter().all(|s| s["value"][1] == "0"),
        "no drift before any traffic: {drift_series:?}"
    );

    let clean = held_out_pictures(&dataset);
    let gray: Vec<Vec<u8>> = clean.iter().map(|p| grayscale(p)).collect();
    let firing = || async {
        prom.alerts("CelestialInputDrift")
            .await
            .iter()
            .any(|a| a["state"] == "firing")
    };
    // The largest drift alert of the pods, only from an evaluation that has both pods' series: a
    // scrape that failed under load would leave the other pod's value alone, and stopping the
    // traffic on its word would freeze the silent pod's window (and its alert) as it was.
    let drift_now = |value: &'static str| {
        let prom = &prom;
        async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let v = prom
                .query(
                    "max(celestial_drift_alert) \
                     and on() (count(count by (pod) (celestial_drift_alert)) == 2)",
                )
                .await;
            v.first().and_then(|s| s["value"][1].as_str()) == Some(value)
        }
    };
    // Grayscale photographs until a pod's monitor raises its alert (each pod judges its own
    // windows of 400), then Prometheus holds it for the shortened `for:` and fires.
    let per_pod = || async {
        prom.query("max by (pod, signal) (celestial_drift_alert) == 1")
            .await
            .iter()
            .map(|s| format!("{} {}", s["metric"]["pod"], s["metric"]["signal"]))
            .collect::<Vec<_>>()
    };
    let (sent, raised) = send_until(&url, &gray, 10, || drift_now("1")).await;
    assert!(raised, "no drift alert after {sent} grayscale predictions");
    let t = prom
        .wait_until(
            "CelestialInputDrift firing",
            Duration::from_secs(60),
            firing,
        )
        .await;
    let alerts = prom.alerts("CelestialInputDrift").await;
    eprintln!(
        "measured: drift raised after {sent} grayscale predictions, CelestialInputDrift firing {:.1}s later: {alerts:?}",
        t.as_secs_f64()
    );
    assert!(
        alerts.iter().all(|a| a["labels"]["namespace"] == ns.name()),
        "{alerts:?}"
    );

    // Clean photographs again: the windows fill with them and the alert resolves.
    let (sent, cleared) = send_until(&url, &clean, 12, || drift_now("0")).await;
    assert!(
        cleared,
        "drift alerts still raised after {sent} clean predictions: {:?}",
        per_pod().await
    );
    let t = prom
        .wait_until(
            "CelestialInputDrift resolved",
            Duration::from_secs(60),
            || async { prom.alerts("CelestialInputDrift").await.is_empty() },
        )
        .await;
    eprintln!(
        "measured: drift gone after {sent} clean predictions, the alert resolved {:.1}s later",
        t.as_secs_f64()
    );

    let mut del = args(&["delete", "-f", manifests.path().to_str().unwrap()]);
    del.extend(cluster_args(&env, ns.name()));
    assert_eq!(run(del, None).await.code, 0);
}
