//! The release job of .github/workflows/release.yml and .gitlab-ci.yml, run for real:
//! `scripts/release-job`, exactly what both CI systems call, against the real test environment
//! with the job's environment variables set. The local registry stands in for Artifact Registry
//! and the test apiserver for GKE; the cluster credentials come from a kubeconfig `exec` plugin
//! (as gke-gcloud-auth-plugin) and the registry credentials from a Docker config `credHelpers`
//! helper (as docker-credential-gcloud), both speaking the real protocols.
//!
//! Also `deployer release` through both mechanisms to the htpasswd registry, and its clear
//! failures (exit 2 for the exec plugin, 7 for the credential helper) when either is missing or
//! fails, also when the plugin's token refresh fails in the middle of a release.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use celestial_e2e::ci::{docker_config, exec_kubeconfig, helper_path};
use celestial_e2e::deployer::*;
use celestial_e2e::{TestEnv, programs, repo_root};

/// The kubeconfig `exec` credential plugin of the test environment's programs.
fn plugin() -> String {
    programs::path("testenv-exec-credential")
        .display()
        .to_string()
}

/// The Docker credential helper of the test environment's programs.
fn helper() -> std::path::PathBuf {
    programs::path("docker-credential-testenv")
}

/// A finished run of a program with the job's environment.
fn run_with(program: &Path, args: &[String], envs: &BTreeMap<String, String>) -> Run {
    let start = Instant::now();
    let out = Command::new(program)
        .current_dir(repo_root())
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .env_remove("KUBECONFIG")
        .envs(envs)
        .stdin(Stdio::null())
        .output()
        .expect("running the release job");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn plugin_args(s: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&[
        "--token-file",
        s.join("token").to_str().unwrap(),
        "--log",
        s.join("plugin.log").to_str().unwrap(),
    ]);
    a.extend(args(extra));
    a
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The build inputs of [`server_build`] as deployer's environment variables.
fn build_env(build: &[String]) -> BTreeMap<String, String> {
    let flag = |f: &str| {
        let i = build.iter().position(|a| a == f).unwrap();
        build[i + 1].clone()
    };
    [
        ("DEPLOYER_BASE", "--base"),
        ("DEPLOYER_SERVER_BINARY", "--server-binary"),
        ("DEPLOYER_ONNXRUNTIME", "--onnxruntime"),
        ("DEPLOYER_MODEL", "--model"),
        ("SOURCE_DATE_EPOCH", "--source-date-epoch"),
    ]
    .into_iter()
    .map(|(k, f)| (k.to_string(), flag(f)))
    .collect()
}

#[tokio::test]
async fn release_job_script_releases_to_real_pods_through_an_exec_plugin_and_a_credential_helper() {
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let ns = env.namespace("ci-release-job").await.unwrap();
    let s = Scratch::new("release-job");
    let sp = s.path();
    // The job's credentials, as the GitHub/GitLab steps before it leave them: a kubeconfig whose
    // user is an exec plugin (its first token stale and expired: it must be refreshed before use),
    // a Docker config whose credHelpers name the helper for the registry.
    let kc = exec_kubeconfig(&env, sp, &plugin(), &plugin_args(sp, &["--expire-first"]));
    let registry = env.registry().to_string();
    let docker = docker_config(
        sp,
        &[(&registry, "testenv")],
        &[(&registry, "ci", "unused")],
    );
    let on_node = real_node_manifests(&node, str::to_string);
    let image = format!(
        "{registry}/celestial-e2e/release-job-{}",
        std::process::id()
    );
    let tag = format!("v0.0.{}-e2e", std::process::id());
    let (_inputs, build) = server_build(&env, "unused");

    let mut envs = build_env(&build);
    let job = |k: &str, v: &str| (k.to_string(), v.to_string());
    envs.extend([
        job("RELEASE_IMAGE", &image),
        job("GITHUB_REF_NAME", &tag),
        job("DEPLOYER", deployer().to_str().unwrap()),
        job("RELEASE_REPORT", sp.join("deploy.json").to_str().unwrap()),
        job(
            "GITHUB_STEP_SUMMARY",
            sp.join("summary.md").to_str().unwrap(),
        ),
        job("GITHUB_OUTPUT", sp.join("output").to_str().unwrap()),
        job("KUBECONFIG", kc.to_str().unwrap()),
        job("DOCKER_CONFIG", docker.to_str().unwrap()),
        job("PATH", &helper_path(sp, &helper())),
        job(
            "TESTENV_CREDENTIALS",
            sp.join("credentials.json").to_str().unwrap(),
        ),
        job(
            "TESTENV_CREDENTIALS_LOG",
            sp.join("helper.log").to_str().unwrap(),
        ),
        job("DEPLOYER_NAMESPACE", ns.name()),
        job("DEPLOYER_FILES", on_node.path().to_str().unwrap()),
        job("DEPLOYER_TIMEOUT", "180s"),
        job("DEPLOYER_LB_TIMEOUT", "60s"),
    ]);
    if let Some(img) = smoke_image() {
        envs.insert("DEPLOYER_SMOKE_IMAGE".into(), img.to_str().unwrap().into());
    }
    let script = repo_root().join("scripts/release-job");
    let r = run_with(&script, &[], &envs);
    assert_eq!(r.code, 0, "{}", r.describe());

    // The URL: the last stdout line, GITHUB_OUTPUT's `url=`, the report's, and it answers.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sp.join("deploy.json")).unwrap()).unwrap();
    let url = report["url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.1."), "{url}");
    assert_eq!(r.stdout.trim(), url, "{}", r.describe());
    assert_eq!(lines(&sp.join("output")), vec![format!("url={url}")]);
    let pushed = report["pushed"]["image"].as_str().unwrap();
    assert!(pushed.starts_with(&format!("{image}@sha256:")), "{report}");
    let summary = std::fs::read_to_string(sp.join("summary.md")).unwrap();
    for want in [
        format!("## Released {tag}"),
        format!("| URL | <{url}> |"),
        format!("| image | `{pushed}` |"),
        format!("| namespace | `{}` |", ns.name()),
    ] {
        assert!(
            summary.contains(&want),
            "no {want:?} in the summary:\n{summary}"
        );
    }
    if let Some(jpeg) = dataset_image("Earth") {
        assert_predictions(&url, &jpeg, Some("Earth"), 3).await;
    }
    // The pods run the pushed digest on the real nodes.
    for p in server_pods(&env, ns.name()).await {
        let on = p
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .as_deref()
            .unwrap_or_default();
        assert!(env.info().real_node_named(on).is_some(), "on {on}");
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some(pushed)
        );
    }
    // The plugin ran first with a stale, expired token, then again before the first request (the
    // apiserver accepted only the second); the helper was asked for the registry.
    let calls = lines(&sp.join("plugin.log"));
    assert!(
        calls.len() >= 2 && calls[0] == "1 stale" && calls[1] == "2 valid",
        "{calls:?}"
    );
    let helper_calls = lines(&sp.join("helper.log"));
    assert!(
        helper_calls.contains(&format!("get {registry}")),
        "{helper_calls:?}"
    );
    eprintln!(
        "measured: scripts/release-job to real pods {:.1}s (plugin runs {}, helper runs {})",
        r.seconds,
        calls.len(),
        helper_calls.len()
    );

    // The same job when the cluster's exec plugin is missing: exit 2, the summary says why.
    let gone = exec_kubeconfig(&env, sp, "gke-gcloud-auth-plugin-e2e-missing", &[]);
    envs.insert("KUBECONFIG".into(), gone.to_str().unwrap().into());
    envs.insert(
        "GITHUB_STEP_SUMMARY".into(),
        sp.join("summary-failed.md").to_str().unwrap().into(),
    );
    envs.insert(
        "GITHUB_OUTPUT".into(),
        sp.join("output-failed").to_str().unwrap().into(),
    );
    let r = run_with(&script, &[], &envs);
    assert_eq!(r.code, 2, "{}", r.describe());
    let summary = std::fs::read_to_string(sp.join("summary-failed.md")).unwrap();
    assert!(
        summary.contains(&format!("## Release {tag} failed (exit 2)"))
            && summary.contains("`gke-gcloud-auth-plugin-e2e-missing` could not be started")
            && summary.contains("Is it installed and on PATH?"),
        "{summary}"
    );
    assert!(
        !sp.join("output-failed").exists(),
        "no URL output on failure"
    );
}

/// `deployer release` (kwok nodes, no smoke test) with the given kubeconfig and job environment.
fn release_args(image: &str, ns: &str, kc: &Path, docker: &Path) -> Vec<String> {
    args(&[
        "release",
        "--image",
        image,
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--docker-config",
        docker.to_str().unwrap(),
        "--namespace",
        ns,
        "--smoke=false",
        "--timeout",
        "120s",
        "--lb-timeout",
        "60s",
        "-o",
        "json",
    ])
}

fn error_of(r: &Run) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

/// What the two auth tests share: the htpasswd registry (its address), a Docker config whose
/// `credHelpers` name the test helper for it, and the job's environment (build inputs, PATH with the
/// helper, its credentials file). The returned Scratch holds the build inputs.
fn auth_setup(
    env: &TestEnv,
    sp: &Path,
) -> (
    String,
    std::path::PathBuf,
    BTreeMap<String, String>,
    Scratch,
) {
    let (registry, user, password) = env.registry_auth();
    let registry = registry.to_string();
    let docker = docker_config(
        sp,
        &[(&registry, "testenv")],
        &[(&registry, user, password)],
    );
    let (inputs, build) = server_build(env, "unused");
    let mut envs = build_env(&build);
    envs.insert("PATH".into(), helper_path(sp, &helper()));
    envs.insert(
        "TESTENV_CREDENTIALS".into(),
        sp.join("credentials.json").to_str().unwrap().into(),
    );
    (registry, docker, envs, inputs)
}

#[tokio::test]
async fn deployer_release_works_through_exec_plugin_and_credential_helper_and_fails_clearly_without()
 {
    let env = TestEnv::get().await.expect("test environment");
    let ns = env.kwok_namespace("ci-auth").await.unwrap();
    let s = Scratch::new("auth");
    let sp = s.path();
    let kc = exec_kubeconfig(&env, sp, &plugin(), &plugin_args(sp, &[]));
    let (registry, docker, mut envs, _inputs) = auth_setup(&env, sp);
    envs.insert(
        "TESTENV_CREDENTIALS_LOG".into(),
        sp.join("helper.log").to_str().unwrap().into(),
    );
    let image = format!("{registry}/celestial-e2e/auth:{}", std::process::id());
    let deployer = deployer();

    // 1. Through both: pushed to the htpasswd registry with the helper's credentials, applied with
    // the plugin's token.
    let r = run_with(
        &deployer,
        &release_args(&image, ns.name(), &kc, &docker),
        &envs,
    );
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    assert!(
        j["pushed"]["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{registry}/celestial-e2e/auth@sha256:")),
        "{}",
        r.describe()
    );
    assert!(lines(&sp.join("helper.log")).contains(&format!("get {registry}")));
    assert!(!lines(&sp.join("plugin.log")).is_empty());
    let password = env.registry_auth().2;
    assert!(!r.stdout.contains(password) && !r.stderr.contains(password));
    eprintln!(
        "measured: release through exec plugin + credential helper {:.1}s",
        r.seconds
    );

    // 2. The credential helper is not installed: exit 7, naming it.
    let missing = docker_config(&sp.join("missing"), &[(&registry, "e2e-missing")], &[]);
    let r = run_with(
        &deployer,
        &release_args(&image, ns.name(), &kc, &missing),
        &envs,
    );
    assert_eq!(r.code, 7, "{}", r.describe());
    let e = error_of(&r);
    assert!(
        e.contains("credential helper docker-credential-e2e-missing failed for 127.0.0.1:5001")
            && e.contains("is it installed and on PATH?"),
        "{e}"
    );
    eprintln!("helper missing, exit 7: {e}");

    // 3. The helper fails (an expired login): exit 7 with its message.
    let mut failing = envs.clone();
    failing.insert("TESTENV_CREDENTIALS_FAIL".into(), "1".into());
    let r = run_with(
        &deployer,
        &release_args(&image, ns.name(), &kc, &docker),
        &failing,
    );
    assert_eq!(r.code, 7, "{}", r.describe());
    let e = error_of(&r);
    assert!(
        e.contains("docker-credential-testenv failed") && e.contains("gcloud auth login"),
        "{e}"
    );
    eprintln!("helper fails, exit 7: {e}");

    // 4. The exec plugin is not installed: exit 2, naming it and how to install it.
    let gone = exec_kubeconfig(
        &env,
        &sp.join("missing"),
        "gke-gcloud-auth-plugin-e2e-missing",
        &[],
    );
    let r = run_with(
        &deployer,
        &release_args(&image, ns.name(), &gone, &docker),
        &envs,
    );
    assert_eq!(r.code, 2, "{}", r.describe());
    let e = error_of(&r);
    assert!(
        e.contains(
            "exec credential plugin `gke-gcloud-auth-plugin-e2e-missing` could not be started"
        ) && e.contains("gcloud components install gke-gcloud-auth-plugin"),
        "{e}"
    );
    // ... before building or pushing anything: the cluster is checked first.
    assert!(
        !r.stderr.contains("assembling the layer"),
        "{}",
        r.describe()
    );

    // 5. The plugin fails: exit 2 with what it said.
    let fails = sp.join("fails");
    std::fs::create_dir_all(&fails).unwrap();
    let kc_fails = exec_kubeconfig(
        &env,
        &fails,
        &plugin(),
        &plugin_args(&fails, &["--fail-after", "0"]),
    );
    let r = run_with(
        &deployer,
        &release_args(&image, ns.name(), &kc_fails, &docker),
        &envs,
    );
    assert_eq!(r.code, 2, "{}", r.describe());
    let e = error_of(&r);
    assert!(
        e.contains(&format!("exec credential plugin `{}` failed", plugin()))
            && e.contains("the login has expired; run `gcloud auth login`"),
        "{e}"
    );
    eprintln!("plugin fails, exit 2: {e}");
}

/// The plugin's refresh fails in the middle of a release. This once hung deployer past `--timeout`:
/// the load-balancer wait looked up the Service's events while its watch was suspended holding
/// kube's exec-credential lock. Both now run side by side (kube/service.rs).
#[tokio::test]
async fn deployer_release_fails_clearly_when_the_exec_plugin_refresh_fails_mid_release() {
    let env = TestEnv::get().await.expect("test environment");
    let s = Scratch::new("auth-mid");
    let sp = s.path();
    let (registry, docker, envs, _inputs) = auth_setup(&env, sp);
    let image = format!("{registry}/celestial-e2e/auth:{}", std::process::id());
    let deployer = deployer();
    // 6. The plugin's refresh fails in the middle of a release: its tokens live 61 s, so kube's
    // client (which refreshes a token 60 s before it expires) runs it again after a second; the
    // third run fails. Exit 2, the plugin's message, not a retry loop or an API error.
    let mid = sp.join("mid");
    std::fs::create_dir_all(&mid).unwrap();
    let kc_mid = exec_kubeconfig(
        &env,
        &mid,
        &plugin(),
        &plugin_args(&mid, &["--valid-for", "61", "--fail-after", "2"]),
    );
    let ns2 = env.kwok_namespace("ci-auth-mid").await.unwrap();
    let r = run_with(
        &deployer,
        &release_args(&image, ns2.name(), &kc_mid, &docker),
        &envs,
    );
    assert_eq!(r.code, 2, "{}", r.describe());
    let e = error_of(&r);
    assert!(e.contains("the login has expired"), "{e}\n{}", r.describe());
    // Not a retry loop: the requests in flight when the login expired (the watch and an event
    // lookup) each ran the plugin once, then deployer stopped.
    let calls = lines(&mid.join("plugin.log"));
    let failed = calls.iter().filter(|c| c.ends_with(" failed")).count();
    assert!(
        calls.last().is_some_and(|c| c.ends_with(" failed")) && (1..=3).contains(&failed),
        "{calls:?}"
    );
}
