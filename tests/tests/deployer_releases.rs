//! Safe model releases on the real nodes of the test environment (tests/env/): a new model evaluated
//! before it gets traffic (a candidate Deployment, promoted, or refused with exit 8: the guide's
//! weaker recipe, a set no model gets right), a model its server refuses at start rolled back
//! without `--rollback-on-failure` (exit 8), every release recorded in the cluster (ConfigMap
//! `celestial-releases`, with the model the new pods report through the pod proxy), and `deployer
//! rollback` goes back by model version and by revision without any CI artifact. Every deployer
//! command runs as a ServiceAccount holding only the repository's Role, and a client predicting
//! through the public URL the whole time sees no failed request.
//!
//! What the deployer makes of each answer (the model-check exit status, the history's writes and
//! races, each way of choosing a rollback) is proven against a scripted API server
//! (`deployer/src/kube/tests/`, `deployer/src/commands/`); this test keeps the path through the
//! real components: containerd running the real server image, its self-check, the API server's
//! pod proxy.

use celestial_e2e::TestEnv;
use celestial_e2e::deployer::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::Value;

/// `deployer release` of the real server shipping `model`, to the image repository `repo`, with
/// `extra` arguments.
async fn release(
    env: &TestEnv,
    manifests: &Scratch,
    (repo, model): (&str, &std::path::Path),
    extra: &[&str],
    c: &[String],
) -> Run {
    let (_inputs, mut release) = real_node_release(env, repo, manifests.path());
    set_arg(&mut release, "--model", model.to_str().unwrap());
    release.extend(args(extra));
    release.extend(c.iter().cloned());
    run(release, None).await
}

/// The candidate Deployment of an evaluation, if it is (still) there and not being deleted.
async fn candidate_left(env: &TestEnv, ns: &str) -> Option<Deployment> {
    let api = Api::<Deployment>::namespaced(env.client().await.unwrap(), ns);
    let name = format!("{DEPLOYMENT}-candidate");
    for _ in 0..50 {
        match api.get_opt(&name).await.unwrap() {
            Some(d) if d.metadata.deletion_timestamp.is_none() => return Some(d),
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            None => return None,
        }
    }
    api.get_opt(&name).await.unwrap()
}

/// Waits until the public URL answers model version `version` (at most 15 s): a rollout is done
/// when the new pods are available and the old ones terminating, and those still answer the
/// connections that reach them until the Service's endpoints drop them, a moment later.
async fn serves(url: &str, version: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = served_version(url).await;
        if now == version {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the URL still answers version {now}, not {version}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The served model's version through the public URL.
async fn served_version(url: &str) -> String {
    let j: Value = keep_alive_client()
        .get(format!("{url}model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    j["version"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn deployer_judges_new_models_refuses_wrong_ones_records_releases_and_rolls_back_by_model() {
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let ns = env.namespace("deployer-releases").await.unwrap();
    // Every deployer command of this test runs as a CI account holding exactly the repository's
    // Role (kubernetes/rbac/deployer-role.yaml): a verb it lacks fails the scenario.
    let (_account, c) = least_privilege_args(&env, ns.name());
    let on_node = real_node_manifests(&node, str::to_string);
    let f = on_node.path().to_str().unwrap().to_string();
    let models = Scratch::new("models");
    let v1 = shipped_model();
    let version1 = model_version(&v1);
    let (v2, version2) = next_version(&v1, &models);
    let wrong = permuted_labels(&v2, &models);
    let guide = guide_recipe_release(&models);

    // 1. Two good releases: each promoted and recorded, with the model its pods report.
    let r = release(&env, &on_node, ("releases-v1", &v1), &[], &c).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let digest1 = j["pushed"]["image"].as_str().unwrap().to_string();
    let url = j["url"].as_str().unwrap().to_string();
    assert_eq!(j["model"]["version"], version1.as_str(), "{}", r.describe());
    assert_eq!(j["history"][0]["entries"], 1, "{}", r.describe());
    // From here to the end, a client sends a prediction through the public URL every 20 ms: no
    // release, refusal or rollback below may fail one.
    let jpeg = std::fs::read(celestial_e2e::repo_root().join("docs/swagger.png")).unwrap();
    let steady = keep_predicting(&url, &jpeg);
    // v2 is evaluated before it gets traffic: a candidate Deployment of its own, the built-in
    // golden images predicted on it and on a v1 pod through the pod proxy, then promoted.
    let r = release(&env, &on_node, ("releases-v2", &v2), &["--evaluate"], &c).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let digest2 = j["pushed"]["image"].as_str().unwrap().to_string();
    let evaluation = &j["evaluation"];
    assert_eq!(evaluation["verdict"]["promote"], true, "{}", r.describe());
    assert_eq!(
        evaluation["candidate_scores"]["images"],
        10,
        "{}",
        r.describe()
    );
    assert_eq!(
        evaluation["candidate_scores"]["accuracy"],
        1.0,
        "{}",
        r.describe()
    );
    assert_eq!(
        evaluation["serving"]["scores"]["accuracy"],
        1.0,
        "{}",
        r.describe()
    );
    assert_eq!(evaluation["agreement"], 1.0, "{}", r.describe());
    assert_eq!(evaluation["candidate_model"]["version"], version2.as_str());
    eprintln!(
        "measured: evaluation before traffic {:.1}s (candidate up, 2 x 10 predictions through the pod proxy)",
        evaluation["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    assert!(candidate_left(&env, ns.name()).await.is_none());
    serves(&url, &version2).await;

    // 2. A model with permuted labels: its server refuses it at start (exit status 3), and
    // deployer restores v2 although --rollback-on-failure was not given; exit 8. The old pods
    // answer all along (maxUnavailable: 0).
    let r = release(&env, &on_node, ("releases-wrong", &wrong), &[], &c).await;
    assert_eq!(r.code, 8, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["reason"], "ModelCheckFailed", "{}", r.describe());
    assert_eq!(j["category"], "model_rejected", "{}", r.describe());
    assert_eq!(j["rollback"]["restored"], true, "{}", r.describe());
    assert_eq!(j["rollback"]["image"], digest2.as_str(), "{}", r.describe());
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains("the model failed its self-check (exit status 3): "),
        "{}",
        r.describe()
    );
    eprintln!("reported: {}", error.lines().next().unwrap_or_default());
    eprintln!(
        "measured: refused model reported after {:.1}s, rolled back, {:.1}s in all",
        stamp(&r.stderr, "rolling Deployment/").unwrap_or(f64::NAN),
        r.seconds
    );
    assert_eq!(image_of(&deployment(&env, ns.name()).await), digest2);
    serves(&url, &version2).await;

    // 2b. A model right on its own terms (no golden set to contradict it, it starts and turns
    // Ready) but worse: the guide's recipe. The evaluation on the serving model's golden images
    // refuses it before it gets any traffic; exit 8, v2 still serves.
    let r = release(
        &env,
        &on_node,
        ("releases-guide", &guide),
        &["--evaluate"],
        &c,
    )
    .await;
    assert_eq!(r.code, 8, "{}", r.describe());
    let j = r.json();
    let evaluation = &j["evaluation"];
    assert_eq!(evaluation["verdict"]["promote"], false, "{}", r.describe());
    let accuracy = evaluation["candidate_scores"]["accuracy"].as_f64().unwrap();
    assert!(accuracy < 0.9, "{}", r.describe());
    eprintln!(
        "measured: the guide's recipe scored {accuracy:.2} against the serving model's {}, refused after {:.1}s",
        evaluation["serving"]["scores"]["accuracy"], r.seconds
    );
    assert_eq!(image_of(&deployment(&env, ns.name()).await), digest2);
    assert!(candidate_left(&env, ns.name()).await.is_none());
    serves(&url, &version2).await;

    // 3. The history: newest first, both refusals with their reasons, both promoted releases with
    // their models, digests and revisions; the same in the ConfigMap.
    let mut h = args(&["history", "-f", &f, "-o", "json"]);
    h.extend(c.clone());
    let r = run(h, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let entries = j["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{}", r.describe());
    assert_eq!(entries[0]["outcome"], "refused", "{}", r.describe());
    assert_eq!(entries[0]["model"]["version"], "0.1.0", "{}", r.describe());
    assert_eq!(entries[1]["outcome"], "rolled-back", "{}", r.describe());
    assert!(
        entries[1]["reason"]
            .as_str()
            .unwrap()
            .contains("ModelCheckFailed"),
        "{}",
        r.describe()
    );
    for (e, (version, digest, revision)) in entries[2..]
        .iter()
        .zip([(&version2, &digest2, "2"), (&version1, &digest1, "1")])
    {
        assert_eq!(e["outcome"], "promoted", "{}", r.describe());
        assert_eq!(e["model"]["version"], version.as_str(), "{}", r.describe());
        assert_eq!(e["image"], digest.as_str(), "{}", r.describe());
        assert_eq!(e["revision"], revision, "{}", r.describe());
        assert!(e.get("template").is_none(), "{}", r.describe());
    }
    let cm = Api::<ConfigMap>::namespaced(env.client().await.unwrap(), ns.name())
        .get("celestial-releases")
        .await
        .unwrap();
    // oldest first: v1 promoted
    let stored: Vec<Value> = serde_json::from_str(&cm.data.unwrap()["releases.json"]).unwrap();
    assert_eq!(stored.len(), 4);
    assert!(
        stored[0]["template"].is_object(),
        "promoted keeps its template"
    );

    // 4. Back to model version 1 by name alone: its recorded template (image v1) serves again.
    let mut rb = args(&["rollback", "-f", &f, "--to-model", &version1, "-o", "json"]);
    rb.extend(c.clone());
    let r = run(rb, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["image"], digest1.as_str(), "{}", r.describe());
    assert_eq!(j["model"]["version"], version1.as_str(), "{}", r.describe());
    assert_eq!(image_of(&deployment(&env, ns.name()).await), digest1);
    serves(&url, &version1).await;
    eprintln!("measured: rollback --to-model {:.1}s", r.seconds);

    // 5. A plain rollback: the revision before the current one (v2's).
    let mut rb = args(&["rollback", "-f", &f, "-o", "json"]);
    rb.extend(c.clone());
    let r = run(rb, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert_eq!(r.json()["image"], digest2.as_str(), "{}", r.describe());
    serves(&url, &version2).await;

    // 6. An evaluation that refuses: images labelled with a body no model knows, so the candidate
    // (v1's image again) scores 0 against the floor; exit 8, v2 still serves, the candidate is
    // gone and the refusal is recorded.
    let wrongly_labelled = Scratch::new("eval-set");
    let dir = wrongly_labelled.path().join("NoSuchBody");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("swagger.png"), &jpeg).unwrap();
    let set = wrongly_labelled.path().to_str().unwrap();
    let mut a = args(&[
        "apply",
        "-f",
        &f,
        "--image",
        &digest1,
        "--evaluate",
        "--eval-set",
        set,
    ]);
    a.extend(args(&["--smoke=false", "--timeout", "180s", "-o", "json"]));
    a.extend(c.clone());
    let r = run(a, None).await;
    assert_eq!(r.code, 8, "{}", r.describe());
    let j = r.json();
    assert_eq!(
        j["evaluation"]["verdict"]["promote"],
        false,
        "{}",
        r.describe()
    );
    assert_eq!(
        j["evaluation"]["candidate_scores"]["accuracy"],
        0.0,
        "{}",
        r.describe()
    );
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("is below --eval-floor 0.900"),
        "{}",
        r.describe()
    );
    assert_eq!(image_of(&deployment(&env, ns.name()).await), digest2);
    assert!(candidate_left(&env, ns.name()).await.is_none());
    let mut h = args(&["history", "-f", &f, "-o", "json"]);
    h.extend(c.clone());
    let r = run(h, None).await;
    assert_eq!(
        r.json()["entries"][0]["outcome"],
        "refused",
        "{}",
        r.describe()
    );

    // 7. An unknown version: exit 2, listing what there is; nothing changes.
    let mut rb = args(&["rollback", "-f", &f, "--to-model", "0.0.0-none"]);
    rb.extend(c.clone());
    let r = run(rb, None).await;
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(r.stderr.contains(&version1), "{}", r.describe());

    assert_kept_answering(steady, "releases, refusals and rollbacks").await;

    let mut del = args(&["delete", "-f", &f, "--timeout", "120s"]);
    del.extend(c);
    let r = run(del, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
}
