//! End-to-end tests of `deployer` against the real test environment (tests/env/):
//! kube-apiserver + kwok nodes, the load-balancer stand-in, Debian's docker-registry (plain on
//! 127.0.0.1:5000, htpasswd on 127.0.0.1:5001) and podman. They run the real `deployer` binary
//! (built by `cargo build -p deployer` from here) and check its exit codes, output and the cluster.
//!
//! Tests that need no environment (malformed manifest, unreachable API server) are plain tests.
//!
//! What the deployer makes of the API server's answers (each way a rollout fails, the
//! unschedulable grace, watches that break, rollback, apply refusals, the delete and
//! load-balancer waits) is proven in milliseconds against a scripted API server
//! (`deployer/src/kube/tests/`); these tests keep one path per feature through the real components.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use celestial_e2e::deployer::*;
use celestial_e2e::{TestEnv, free_loopback_port, repo_root};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

#[tokio::test]
async fn deployer_apply_rolls_out_gets_an_address_is_idempotent_and_deletes() {
    let env = TestEnv::get().await.expect("test environment");
    let ns = env.kwok_namespace("deployer-apply").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let img1 = fake_image(&env, 1);

    // 1. First apply: everything created, rollout complete on the kwok nodes, URL printed.
    let mut a = args(&[
        "apply",
        "--image",
        &img1,
        "--smoke=false",
        "--timeout",
        "120s",
        "--lb-timeout",
        "60s",
    ]);
    a.extend(c.clone());
    let r = run(a.clone(), None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let url_line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("URL: http://"))
        .unwrap_or_else(|| panic!("no URL line: {}", r.describe()));
    let ip = env
        .wait_lb_address(ns.name(), SERVICE, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(url_line, format!("URL: http://{ip}:80/"));
    assert!(r.stderr.contains("rolled out"), "{}", r.describe());
    let d = deployment(&env, ns.name()).await;
    assert_eq!(image_of(&d), img1);
    let st = d.status.clone().unwrap();
    assert_eq!(
        (st.replicas, st.updated_replicas, st.available_replicas),
        (Some(2), Some(2), Some(2))
    );
    eprintln!(
        "measured: first apply + rollout + LB address: {:.2}s",
        r.seconds
    );

    // 2. Second apply of the same input: a no-op (nothing changed, no new ReplicaSet), JSON for CI.
    let generation = d.metadata.generation;
    let mut a2 = a.clone();
    a2.extend(args(&["--output", "json"]));
    let r = run(a2, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["changed"], 0, "{}", r.describe());
    assert!(
        j["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["action"] == "unchanged"),
        "{}",
        r.describe()
    );
    assert_eq!(j["url"], format!("http://{ip}:80/"));
    assert_eq!(
        deployment(&env, ns.name()).await.metadata.generation,
        generation
    );
    assert_eq!(replica_sets(&env, ns.name()).await.len(), 1);
    eprintln!("measured: no-op apply: {:.2}s", r.seconds);

    // 3. status shows it.
    let mut s = args(&["status"]);
    s.extend(c.clone());
    let r = run(s, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(
        r.stdout.contains(&img1)
            && r.stdout.contains("rollout complete")
            && r.stdout.contains(&format!("http://{ip}:80/")),
        "{}",
        r.describe()
    );

    // 4. delete removes everything apply created and waits until it is gone.
    let mut del = args(&["delete", "--timeout", "120s"]);
    del.extend(c.clone());
    let r = run(del, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let client = env.client().await.unwrap();
    assert!(
        Api::<Deployment>::namespaced(client.clone(), ns.name())
            .get_opt(DEPLOYMENT)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Service>::namespaced(client.clone(), ns.name())
            .get_opt(SERVICE)
            .await
            .unwrap()
            .is_none()
    );
    let pods = Api::<Pod>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        pods.items.is_empty(),
        "pods left: {:?}",
        pods.items
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    assert!(replica_sets(&env, ns.name()).await.is_empty());
    eprintln!("measured: delete and wait: {:.2}s", r.seconds);
    // Deleting again is fine: nothing left.
    let mut del = args(&["delete"]);
    del.extend(c);
    let r = run(del, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(r.stdout.contains("4 already absent"), "{}", r.describe());
}

/// One failing rollout end to end, against the real scheduler's answer and clock. Each pod reason
/// that fails a rollout, the grace within and past, watches that break, and rolling back are
/// proven against a scripted API server in milliseconds (`deployer/src/kube/tests/`); rolling back
/// real failures on real pods is `deployer_releases_to_real_pods_and_rolls_back_real_failures`.
#[tokio::test]
async fn deployer_reports_an_unschedulable_rollout_after_the_grace() {
    let env = TestEnv::get().await.expect("test environment");
    let ns = env.kwok_namespace("deployer-fail").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let good = fake_image(&env, 3);
    let mut a = args(&["apply", "--image", &good, "--smoke=false", "--no-wait-lb"]);
    a.extend(c.clone());
    let r = run(a, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());

    // A request no kwok node can hold (they have 8 CPUs): the rollout fails fast with the reason.
    let huge = manifests_with(|t| {
        t.replace("cpu: 500m", "cpu: \"64\"")
            .replace("cpu: \"1\"", "cpu: \"64\"")
    });
    let bad = fake_image(&env, 4);
    let mut a = args(&[
        "apply",
        "-f",
        huge.path().to_str().unwrap(),
        "--image",
        &bad,
        "--smoke=false",
        "--timeout",
        "120s",
        "--unschedulable-grace",
        "3s",
    ]);
    a.extend(c);
    let r = run(a, None).await;
    assert_eq!(r.code, 4, "{}", r.describe());
    assert!(
        r.stderr.contains("Unschedulable (waiting up to")
            && r.stderr.contains("Insufficient cpu")
            && r.stderr.contains("(for 3s, the --unschedulable-grace)"),
        "{}",
        r.describe()
    );
    assert!(
        (3.0..100.0).contains(&r.seconds),
        "failed after the grace, not at once nor by the timeout: {}",
        r.describe()
    );
    eprintln!(
        "measured: unschedulable reported after {:.2}s (grace 3s)",
        r.seconds
    );
    // maxUnavailable 0: the old pods kept serving.
    let d = deployment(&env, ns.name()).await;
    assert_eq!(d.status.as_ref().unwrap().available_replicas, Some(2));
}

#[tokio::test]
async fn deployer_diff_shows_changes_without_applying() {
    let env = TestEnv::get().await.expect("test environment");
    let ns = env.kwok_namespace("deployer-diff").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let mut d = args(&["diff", "--image", &fake_image(&env, 7)]);
    d.extend(c.clone());
    let r = run(d, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(
        r.stdout
            .contains("Deployment/celestial-bodies-classifier-deployment: would be created"),
        "{}",
        r.describe()
    );
    let client = env.client().await.unwrap();
    assert!(
        Api::<Deployment>::namespaced(client, ns.name())
            .get_opt(DEPLOYMENT)
            .await
            .unwrap()
            .is_none(),
        "diff applied something"
    );

    let mut a = args(&[
        "apply",
        "--image",
        &fake_image(&env, 7),
        "--smoke=false",
        "--no-wait-lb",
    ]);
    a.extend(c.clone());
    assert_eq!(run(a, None).await.code, 0);
    let mut d = args(&["apply", "--dry-run", "--image", &fake_image(&env, 8)]);
    d.extend(c);
    let r = run(d, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(
        r.stdout
            .contains(&format!("-        image: {}", fake_image(&env, 7))),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains(&format!("+        image: {}", fake_image(&env, 8))),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("1 of 4 object(s) would change"),
        "{}",
        r.describe()
    );
    assert_eq!(
        image_of(&deployment(&env, ns.name()).await),
        fake_image(&env, 7)
    );
}

#[tokio::test]
async fn deployer_reports_a_malformed_manifest_with_file_and_field() {
    let bad = manifests_with(|t| t.replace("replicas: 2", "replicas: two"));
    let r = run(
        args(&[
            "apply",
            "-f",
            bad.path().to_str().unwrap(),
            "--kubeconfig",
            "/nonexistent",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{}", r.describe());
    let file = bad.path().join("deployment.yaml");
    assert!(
        r.stderr.contains(&format!(
            "{} (document 1): field `spec.replicas`",
            file.display()
        )),
        "{}",
        r.describe()
    );
    let yaml = manifests_with(|t| t.replace("  replicas: 2", "  replicas: [2"));
    let r = run(args(&["diff", "-f", yaml.path().to_str().unwrap()]), None).await;
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(
        r.stderr.contains("deployment.yaml: invalid YAML at line"),
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn deployer_says_clearly_when_the_api_server_is_unreachable() {
    let s = Scratch::new("kubeconfig");
    let port = free_loopback_port(); // nothing listens there
    let kc = s.path().join("kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: not-a-secret\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let r = run(
        args(&["apply", "--kubeconfig", kc.to_str().unwrap(), "-o", "json"]),
        None,
    )
    .await;
    assert_eq!(r.code, 3, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["exit_code"], 3);
    let e = j["error"].as_str().unwrap();
    assert!(
        e.contains(&format!(
            "cannot reach the Kubernetes API server at https://127.0.0.1:{port}"
        )) && e.contains("Connection refused"),
        "{e}"
    );
    let r = run(
        args(&[
            "status",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--context",
            "missing",
        ]),
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(r.stderr.contains("missing"), "{}", r.describe());
}

/// A tiny `docker save` archive (one layer with one file), made with tar(1).
fn docker_save_archive(dir: &Path) -> PathBuf {
    let root = dir.join("img");
    std::fs::create_dir_all(root.join("layer")).unwrap();
    std::fs::write(
        root.join("layer/hello.txt"),
        format!("hello from {}\n", std::process::id()),
    )
    .unwrap();
    let layer_tar = root.join("layer.tar");
    let ok = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
        .arg(&layer_tar)
        .arg("-C")
        .arg(root.join("layer"))
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    let sha = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let diff_id = sha(&layer_tar);
    std::fs::create_dir_all(root.join("out/abc")).unwrap();
    std::fs::rename(&layer_tar, root.join("out/abc/layer.tar")).unwrap();
    std::fs::write(
        root.join("out/config.json"),
        format!(r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#),
    )
    .unwrap();
    std::fs::write(
        root.join("out/manifest.json"),
        r#"[{"Config":"config.json","RepoTags":["e2e:1"],"Layers":["abc/layer.tar"]}]"#,
    )
    .unwrap();
    let archive = dir.join("image.tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(root.join("out"))
        .args(["manifest.json", "config.json", "abc/layer.tar"])
        .status()
        .unwrap();
    assert!(ok.success());
    archive
}

#[tokio::test]
async fn deployer_push_uses_credentials_and_refuses_wrong_ones_clearly() {
    let env = TestEnv::get().await.expect("test environment");
    let (registry, user, password) = env.registry_auth();
    let s = Scratch::new("push");
    let archive = docker_save_archive(s.path());
    let target = format!("{registry}/celestial-e2e/pushed:{}", std::process::id());
    let base = args(&[
        "push",
        "--archive",
        archive.to_str().unwrap(),
        "--image",
        &target,
    ]);

    // Wrong password on stdin: a clear refusal, exit 7, the password never printed.
    let mut a = base.clone();
    a.extend(args(&[
        "--registry-username",
        user,
        "--registry-password-stdin",
    ]));
    let r = run(a.clone(), Some("definitely-wrong-password\n".into())).await;
    assert_eq!(r.code, 7, "{}", r.describe());
    assert!(
        r.stderr.contains(&format!(
            "the registry {registry} refused the credentials (--registry-username {user})"
        )),
        "{}",
        r.describe()
    );
    assert!(
        !r.stderr.contains("definitely-wrong-password")
            && !r.stdout.contains("definitely-wrong-password")
    );
    // No credentials at all: refused too.
    let r = run(base.clone(), None).await;
    assert_eq!(r.code, 7, "{}", r.describe());
    assert!(
        r.stderr.contains("refused the credentials (anonymous)"),
        "{}",
        r.describe()
    );

    // The right password on stdin works and prints the digest reference.
    let r = run(a, Some(format!("{password}\n"))).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let pushed = r.stdout.trim().to_string();
    assert!(
        pushed.starts_with(&format!("{registry}/celestial-e2e/pushed@sha256:")),
        "{}",
        r.describe()
    );
    assert!(!r.stderr.contains(password) && !r.stdout.contains(password));

    // The Docker way: credentials from DOCKER_CONFIG's config.json `auths`.
    let cfg = s.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut child = out;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{user}:{password}").as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    std::fs::write(
        cfg.join("config.json"),
        format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let mut a = base.clone();
    a.extend(args(&[
        "--docker-config",
        cfg.to_str().unwrap(),
        "-o",
        "json",
    ]));
    let r = run(a, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    assert_eq!(
        j["image"]["image"],
        pushed.as_str(),
        "same archive, same digest"
    );
    assert_eq!(
        j["image"]["blobs_uploaded"],
        0,
        "everything was already there: {}",
        r.describe()
    );
}

#[tokio::test]
async fn deployer_build_is_reproducible_runs_in_podman_and_serves_a_prediction_through_the_lb() {
    let env = TestEnv::get().await.expect("test environment");
    let image = format!(
        "{}/celestial-e2e/server:{}",
        env.registry(),
        std::process::id()
    );
    let (_inputs, build) = server_build(&env, &image);
    let r1 = run(build.clone(), None).await;
    assert_eq!(r1.code, 0, "{}", r1.describe());
    let j1 = r1.json();
    let digest_ref = j1["image"]["image"].as_str().unwrap().to_string();
    assert!(digest_ref.starts_with(&format!("{}/celestial-e2e/server@sha256:", env.registry())));

    // The same inputs again, through `release` (build + push + apply): the identical digest, no
    // blob uploaded again, and the Deployment gets that digest.
    let ns = env.kwok_namespace("deployer-e2e").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let mut release = build.clone();
    release[0] = "release".into();
    release.extend(args(&["--smoke=false"]));
    release.extend(c.clone());
    let r2 = run(release, None).await;
    assert_eq!(r2.code, 0, "{}", r2.describe());
    let j2 = r2.json();
    assert_eq!(j2["command"], "release");
    assert_eq!(
        digest_ref,
        j2["pushed"]["image"].as_str().unwrap(),
        "two builds of the same inputs differ"
    );
    assert_eq!(
        j2["pushed"]["blobs_uploaded"], 0,
        "the second build uploaded blobs again"
    );
    assert_eq!(image_of(&deployment(&env, ns.name()).await), digest_ref);
    eprintln!(
        "measured: build+push {:.1}s; release (rebuild, identical digest, + apply) {:.1}s; layer {} bytes; {digest_ref}",
        r1.seconds, r2.seconds, j1["image"]["layer_bytes"]
    );

    // podman pulls the image by digest and runs it (read-only root, as in the Deployment).
    let podman = env.podman();
    let port = free_loopback_port();
    let port_env = format!("CELESTIAL_PORT={port}");
    let container = podman
        .start(
            &digest_ref,
            port,
            &["--pull=always", "--read-only", "-e", &port_env],
            &[],
        )
        .unwrap_or_else(|e| panic!("podman could not run {digest_ref}: {e}"));
    let user = container.inspect("{{.Config.User}}").unwrap();
    assert_eq!(user, "65532:65532");

    // The LB stand-in forwards the Service address to the container; the smoke test gets a real
    // prediction through the "public" URL.
    env.set_lb_backend(ns.name(), SERVICE, container.addr())
        .await
        .unwrap();
    let mut a = args(&[
        "apply",
        "--image",
        &digest_ref,
        "--smoke-timeout",
        "30s",
        "-o",
        "json",
    ]);
    if let Some(img) = smoke_image() {
        a.extend(args(&["--smoke-image", img.to_str().unwrap()]));
    }
    a.extend(c.clone());
    let r = run(a, None).await;
    assert_eq!(
        r.code,
        0,
        "{}\ncontainer logs:\n{}",
        r.describe(),
        container.logs()
    );
    let j = r.json();
    let smoke = &j["smoke"];
    assert_eq!(smoke["labels"], 10, "{}", r.describe());
    if smoke_image().is_some() {
        assert_eq!(smoke["prediction"], "Earth", "{}", r.describe());
    }
    eprintln!(
        "measured: smoke prediction {} in {:.1} ms through {}",
        smoke["prediction"],
        smoke["latency_ms"].as_f64().unwrap_or(0.0),
        j["url"]
    );

    // A smoke test that cannot succeed (the backend stops) fails with exit code 6.
    drop(container);
    let mut a = args(&["apply", "--image", &digest_ref, "--smoke-timeout", "3s"]);
    a.extend(c.clone());
    let r = run(a, None).await;
    assert_eq!(r.code, 6, "{}", r.describe());
    assert!(
        r.stderr.contains("readyz did not answer 200"),
        "{}",
        r.describe()
    );
    let mut del = args(&["delete"]);
    del.extend(c);
    assert_eq!(run(del, None).await.code, 0);
}

#[tokio::test]
async fn deployer_build_refuses_a_binary_the_base_cannot_run() {
    let env = TestEnv::get().await.expect("test environment");
    let s = Scratch::new("notelf");
    let script = s.path().join("celestial-server");
    std::fs::write(&script, "#!/bin/sh\necho not an ELF binary\n").unwrap();
    let ort = s.path().join("libonnxruntime.so.1");
    std::fs::write(&ort, b"x").unwrap();
    let base = &env.info().base_images.distroless_cc_registry;
    let r = run(never_build(&env, base, &script, &ort), None).await;
    assert_eq!(r.code, 2, "{}", r.describe());
    assert!(
        r.stderr.contains("not an ELF executable"),
        "{}",
        r.describe()
    );
    // A real ELF binary that needs a newer glibc than the base has: deployer's own binary with its
    // GLIBC_2.xx version needs renamed to GLIBC_9.99 (same length, the ELF stays valid).
    let mut elf = std::fs::read(deployer()).unwrap();
    let mut patched = 0;
    let mut i = 0;
    while let Some(pos) = elf[i..]
        .windows(8)
        .position(|w| w == b"GLIBC_2.")
        .map(|p| p + i)
    {
        let end = pos
            + 8
            + elf[pos + 8..]
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'.')
                .count();
        if elf[end] == 0 && end - pos == 10 {
            elf[pos + 6..end].copy_from_slice(b"9.99");
            patched += 1;
        }
        i = end;
    }
    assert!(
        patched > 0,
        "no GLIBC_2.xx version need found in the deployer binary"
    );
    let new_glibc = s.path().join("celestial-server-new-glibc");
    std::fs::write(&new_glibc, &elf).unwrap();
    let r = run(never_build(&env, base, &new_glibc, &ort), None).await;
    assert_eq!(r.code, 7, "{}", r.describe());
    assert!(
        r.stderr
            .contains("the server binary needs GLIBC_9.99 but the base image"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("provides glibc up to GLIBC_2."),
        "{}",
        r.describe()
    );

    // A base that does not exist: a clear registry error.
    let missing = format!("{}/no/such-base:1", env.registry());
    let r = run(never_build(&env, &missing, &deployer(), &ort), None).await; // any real ELF executable
    assert_eq!(r.code, 7, "{}", r.describe());
    assert!(
        r.stderr.contains("not found in the registry"),
        "{}",
        r.describe()
    );
}

#[tokio::test]
async fn deployer_manifests_pass_kubeconform() {
    let env = TestEnv::get().await.expect("test environment");
    // The files deployer applies: those directly in kubernetes/ (kubeconform would also walk
    // kubernetes/monitoring/, whose prometheus-operator kinds tests/tests/monitoring.rs checks),
    // and the deployer's own Role (kubernetes/rbac/).
    let files: Vec<_> = ["kubernetes", "kubernetes/rbac"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo_root().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    let out = env.kubeconform().args(&files).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubeconform failed:\n{text}");
    assert!(text.contains("Valid: 5"), "{text}");
}

#[tokio::test]
async fn deployer_explains_field_conflicts_and_takes_over_with_force_conflicts() {
    let env = TestEnv::get().await.expect("test environment");
    let ns = env.kwok_namespace("deployer-conflict").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let mut a = args(&[
        "apply",
        "--image",
        &fake_image(&env, 10),
        "--smoke=false",
        "--no-wait-lb",
    ]);
    a.extend(c.clone());
    assert_eq!(run(a.clone(), None).await.code, 0);

    // Someone else takes the Service's targetPort over with their own server-side apply.
    let other = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {SERVICE}, namespace: {}}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}\n",
        ns.name()
    );
    let mut k = env.kubectl();
    k.args([
        "apply",
        "--server-side",
        "--field-manager=someone-else",
        "--force-conflicts",
        "-f",
        "-",
    ])
    .stdin(Stdio::piped());
    let mut child = k.stdout(Stdio::null()).spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(other.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success());

    // deployer's apply now conflicts: exit 3, the field and the other manager named, the way out given.
    let r = run(a.clone(), None).await;
    assert_eq!(r.code, 3, "{}", r.describe());
    assert!(
        r.stderr.contains("someone-else")
            && r.stderr.contains("targetPort")
            && r.stderr.contains("--force-conflicts"),
        "{}",
        r.describe()
    );
    // --force-conflicts takes the field back.
    let mut f = a.clone();
    f.push("--force-conflicts".into());
    let r = run(f, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let svc = Api::<Service>::namespaced(env.client().await.unwrap(), ns.name())
        .get(SERVICE)
        .await
        .unwrap();
    let port = &svc.spec.unwrap().ports.unwrap()[0];
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3000))
    );
}

#[tokio::test]
async fn deployer_leaves_the_replica_count_to_the_autoscaler() {
    let env = TestEnv::get().await.expect("test environment");
    let ns = env.kwok_namespace("deployer-hpa").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let mut a = args(&[
        "apply",
        "--image",
        &fake_image(&env, 11),
        "--smoke=false",
        "--no-wait-lb",
        "-o",
        "json",
    ]);
    a.extend(c.clone());
    assert_eq!(run(a.clone(), None).await.code, 0);
    // The autoscaler (here: a person, through the same scale subresource) sets 3 replicas.
    let out = env
        .kubectl()
        .args([
            "-n",
            ns.name(),
            "scale",
            "deployment",
            DEPLOYMENT,
            "--replicas=3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_deployment_available(ns.name(), DEPLOYMENT, Duration::from_secs(60))
        .await
        .unwrap();
    // Re-applying the manifests (replicas: 2) keeps the 3 replicas and reports no change.
    let r = run(a, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let d = deployment(&env, ns.name()).await;
    assert_eq!(d.spec.unwrap().replicas, Some(3), "{}", r.describe());
    assert_eq!(r.json()["rollouts"][0]["replicas"], 3, "{}", r.describe());
}

#[tokio::test]
async fn deployer_releases_to_real_pods_and_rolls_back_real_failures() {
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let ns = env.namespace("deployer-real").await.unwrap();
    let c = cluster_args(&env, ns.name());
    let on_node = real_node_manifests(&node, str::to_string);
    let f = on_node.path().to_str().unwrap().to_string();

    // 1. release: build + push the real server image, apply with its digest, the pods run on the
    // real node (containerd pulls the digest), and the smoke prediction goes through the LB
    // address -> node port -> kube-proxy -> a pod. No backend annotation anywhere.
    let (_inputs, mut release) = real_node_release(&env, "realpods", on_node.path());
    if let Some(img) = smoke_image() {
        release.extend(args(&["--smoke-image", img.to_str().unwrap()]));
    }
    release.extend(c.clone());
    let r = run(release, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let digest_ref = j["pushed"]["image"].as_str().unwrap().to_string();
    let url = j["url"].as_str().unwrap().to_string();
    assert_eq!(j["smoke"]["labels"], 10, "{}", r.describe());
    if smoke_image().is_some() {
        assert_eq!(j["smoke"]["prediction"], "Earth", "{}", r.describe());
    }
    let rollout = j["rollouts"][0]["seconds"].as_f64().unwrap_or(f64::NAN);
    eprintln!(
        "measured: release to real pods {:.1}s (build+push {:.1}s, rollout on the real node {rollout:.1}s, smoke {:.0} ms)",
        r.seconds,
        stamp(&r.stderr, "pushed ").unwrap_or(f64::NAN),
        j["smoke"]["latency_ms"].as_f64().unwrap_or(f64::NAN)
    );
    let svc = Api::<Service>::namespaced(env.client().await.unwrap(), ns.name())
        .get(SERVICE)
        .await
        .unwrap();
    let annotations = svc.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key(&env.info().lb_backend_annotation),
        "{annotations:?}"
    );

    // The Kubernetes API: the pods run on the real node, their container started by containerd
    // from the pushed digest, and ready.
    let pods = server_pods(&env, ns.name()).await;
    assert_eq!(pods.len(), 2, "{pods:?}");
    let mut names = Vec::new();
    for p in &pods {
        let name = p.metadata.name.clone().unwrap();
        let on = p
            .spec
            .as_ref()
            .unwrap()
            .node_name
            .clone()
            .unwrap_or_default();
        assert!(env.info().real_node_named(&on).is_some(), "{name} on {on}");
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"), "{name}: {st:?}");
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.restart_count == 0, "{name}: {cs:?}");
        assert!(
            cs.container_id
                .as_deref()
                .unwrap_or_default()
                .starts_with("containerd://"),
            "{name}: {cs:?}"
        );
        // the node pulled the pushed digest (containerd names the image by its config digest
        // when it has no tag for it; the image ID is the reference pulled)
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some(digest_ref.as_str())
        );
        // (by digest: the builds are reproducible, so another test may have pushed the same
        // digest under another repository name first, and containerd reports the name it pulled)
        let digest = digest_ref.rsplit_once('@').unwrap().1;
        assert!(
            cs.image_id.ends_with(&format!("@{digest}")),
            "{name}: {cs:?}"
        );
        names.push((name, on));
    }

    // `deployer status` shows those pods, on the real node, ready, and the URL.
    let mut s = args(&["status", "-f", &f]);
    s.extend(c.clone());
    let r = run(s.clone(), None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    for (name, on) in &names {
        assert!(
            r.stdout
                .contains(&format!("pod {name} Running ready restarts 0 on {on}")),
            "{}",
            r.describe()
        );
    }
    assert!(
        r.stdout.contains(&digest_ref) && r.stdout.contains(&format!("URL: {url}")),
        "{}",
        r.describe()
    );
    s.extend(args(&["-o", "json"]));
    let r = run(s, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let d = &r.json()["deployments"][0];
    assert_eq!(d["rollout"], "complete", "{}", r.describe());
    let listed = d["pods"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{}", r.describe());
    for p in listed {
        assert!(
            names
                .iter()
                .any(|(n, on)| p["pod"] == format!("{n} Running") && p["node"] == on.as_str()),
            "{}",
            r.describe()
        );
        assert_eq!(p["ready"], true, "{}", r.describe());
    }

    // A real prediction through the public URL.
    let (jpeg, label) = match dataset_image("Saturn") {
        Some(b) => (b, Some("Saturn")),
        None => (
            std::fs::read(repo_root().join("docs/swagger.png")).unwrap(),
            None,
        ),
    };
    assert_predictions(&url, &jpeg, label, 5).await;

    // 2. A digest the registry does not have: the node's pull fails (ErrImagePull, then
    // ImagePullBackOff), deployer says so and restores the working version.
    let missing = format!(
        "{}@sha256:{}",
        digest_ref.split_once('@').unwrap().0,
        "0badc0de".repeat(8)
    );
    let mut a = args(&[
        "apply",
        "-f",
        &f,
        "--image",
        &missing,
        "--smoke=false",
        "--timeout",
        "60s",
        "--rollback-on-failure",
        "-o",
        "json",
    ]);
    a.extend(c.clone());
    let serving = keep_predicting(&url, &jpeg);
    let r = run(a, None).await;
    assert_kept_answering(serving, "missing digest").await;
    let (failed, rollback) =
        assert_rolled_back(&r, &["ErrImagePull", "ImagePullBackOff"], &digest_ref);
    assert!(
        r.json()["error"].as_str().unwrap().contains(&missing),
        "{}",
        r.describe()
    );
    eprintln!(
        "reported: {}",
        r.json()["error"].as_str().unwrap().lines().next().unwrap()
    );
    eprintln!(
        "measured: missing digest: {} reported after {failed:.1}s, rolled back in {rollback:.1}s",
        r.json()["reason"]
    );
    assert_eq!(image_of(&deployment(&env, ns.name()).await), digest_ref);
    assert_predictions(&url, &jpeg, label, 5).await;

    // 3. A working image whose server exits at start (a model path that does not exist): the
    // container restarts until the kubelet backs off (CrashLoopBackOff); rolled back the same way.
    let crashing = real_node_manifests(&node, |t| {
        t.replacen(
            "            - name: CELESTIAL_WORKERS\n",
            "            - name: CELESTIAL_MODEL\n              value: /nonexistent/model.onnx\n            - name: CELESTIAL_WORKERS\n",
            1,
        )
    });
    let mut a = args(&[
        "apply",
        "-f",
        crashing.path().to_str().unwrap(),
        "--image",
        &digest_ref,
        "--smoke=false",
        "--timeout",
        "90s",
        "--rollback-on-failure",
        "-o",
        "json",
    ]);
    a.extend(c.clone());
    let serving = keep_predicting(&url, &jpeg);
    let r = run(a, None).await;
    assert_kept_answering(serving, "crash loop").await;
    let (failed, rollback) = assert_rolled_back(&r, &["CrashLoopBackOff"], &digest_ref);
    // how the server's last run ended: its exit code and its own start-up error line (the
    // manifests' terminationMessagePolicy: FallbackToLogsOnError)
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("last exit code 1 (Error): celestial-server: error:")
            && error.contains("/nonexistent/model.onnx"),
        "{}",
        r.describe()
    );
    eprintln!("reported: {}", error.lines().next().unwrap_or_default());
    eprintln!(
        "measured: server exiting at start: CrashLoopBackOff reported after {failed:.1}s, rolled back in {rollback:.1}s"
    );
    let live = deployment(&env, ns.name()).await;
    assert_eq!(image_of(&live), digest_ref);
    let env_vars =
        serde_json::to_string(&live.spec.unwrap().template.spec.unwrap().containers[0].env)
            .unwrap();
    assert!(!env_vars.contains("CELESTIAL_MODEL"), "{env_vars}");
    assert_predictions(&url, &jpeg, label, 5).await;
    // The pods serving now are the release's own (never replaced by a failed rollout).
    let now: Vec<String> = server_pods(&env, ns.name())
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.iter().all(|n| names.iter().any(|(m, _)| m == n)),
        "{now:?} vs {names:?}"
    );

    // 4. delete: the real pods go first, then everything else.
    let mut del = args(&["delete", "-f", &f, "--timeout", "120s"]);
    del.extend(c);
    let r = run(del, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    assert!(server_pods(&env, ns.name()).await.is_empty());
    eprintln!(
        "measured: delete of the real pods and wait: {:.1}s",
        r.seconds
    );
}
