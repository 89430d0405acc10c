//! The Dockerfile, proven by a real build and run: `podman build` of the repository's
//! Dockerfile on the synthesized base images (tagged locally under the names the Dockerfile uses),
//! then `podman run` with a read-only root filesystem as the non-root user -> /readyz 200 -> a real
//! prediction; and the image from `deployer build` behaves the same (routes, user, port,
//! entrypoint, health check).
//!
//! Needs the test environment (podman, base images, registry): `TestEnv::get()` brings it up.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use celestial_e2e::podman::Container;
use celestial_e2e::{
    TestEnv, free_loopback_port, http_client, onnxruntime_library, repo_binary, repo_root,
};
use serde_json::Value;

/// The uncompressed size the issue sets as the limit for the final image.
const MAX_IMAGE_BYTES: u64 = 100 * 1000 * 1000;

/// A dataset image and its class, or a generated PNG (no expected label) when the dataset is absent.
fn sample_image() -> (Vec<u8>, &'static str, Option<&'static str>) {
    let root = std::env::var_os("CELESTIAL_DATASET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dataset"));
    let p = root.join("raw/Saturn/Saturn_10.jpg");
    match std::fs::read(&p) {
        Ok(bytes) => (bytes, "Saturn_10.jpg", Some("Saturn")),
        Err(_) => {
            eprintln!(
                "SKIP (partly): dataset image {} absent; predicting a generated PNG without checking its label",
                p.display()
            );
            let mut png = Vec::new();
            let img = image::RgbImage::from_fn(96, 80, |x, y| {
                image::Rgb([(x * 2) as u8, (y * 3) as u8, 40])
            });
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            (png, "generated.png", None)
        }
    }
}

/// What a client sees of a running server image: the answers of its routes.
#[derive(Debug, PartialEq)]
struct Behaviour {
    statuses: Vec<(String, u16)>,
    schema: Value,
    model: Value,
    prediction: Value,
}

async fn behaviour(base: &str) -> Behaviour {
    let c = http_client(Duration::from_secs(20));
    let mut statuses = Vec::new();
    for path in [
        "/livez",
        "/readyz",
        "/healthz",
        "/",
        "/docs",
        "/docs.json",
        "/schema.json",
        "/model",
        "/metrics",
        "/no-such-route",
    ] {
        let r = c
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        statuses.push((format!("GET {path}"), r.status().as_u16()));
    }
    let r = c
        .post(format!("{base}/predict"))
        .header("content-type", "image/jpeg")
        .body("not an image")
        .send()
        .await
        .unwrap();
    statuses.push(("POST /predict (not an image)".into(), r.status().as_u16()));
    let schema: Value = c
        .get(format!("{base}/schema.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut model: Value = c
        .get(format!("{base}/model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // where the model was loaded from is allowed to differ (embedded vs. a file); what it is may not
    if let Some(o) = model.as_object_mut() {
        o.remove("source");
        o.remove("path");
    }
    // how long the start-up self-check took varies from start to start; what it found may not
    if let Some(check) = model.get_mut("self_check").and_then(Value::as_object_mut) {
        check.remove("seconds");
    }
    let (bytes, name, _) = sample_image();
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    let r = c
        .post(format!("{base}/predict"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "prediction through {base}");
    let prediction: Value = r.json().await.unwrap();
    Behaviour {
        statuses,
        schema,
        model,
        prediction,
    }
}

/// `podman image inspect` of `image` as JSON.
fn inspect_image(env: &TestEnv, image: &str) -> Value {
    let out = env
        .podman()
        .run(&["image", "inspect", image])
        .expect("podman image inspect");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

/// The image config of `repo@digest` as the registry serves it (podman's inspect drops the
/// Docker `Healthcheck` field of OCI-format images, so it is read from the source).
async fn registry_image_config(registry: &str, repo: &str, digest: &str) -> Value {
    let c = http_client(Duration::from_secs(20));
    let manifest: Value = c
        .get(format!("http://{registry}/v2/{repo}/manifests/{digest}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let config = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no config in {manifest}"));
    c.get(format!("http://{registry}/v2/{repo}/blobs/{config}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs the image's health-check command (`Test` = ["CMD", argv...]) inside the running container
/// until it succeeds (the server may still be starting).
fn healthcheck(env: &TestEnv, container: &Container, test: &Value) -> Result<(), String> {
    let argv: Vec<&str> = test
        .as_array()
        .expect("Healthcheck.Test is an array")
        .iter()
        .skip(1)
        .map(|v| v.as_str().unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env
            .podman()
            .command()
            .args(["exec", container.name()])
            .args(&argv)
            .output()
            .unwrap();
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The server process's user, in the container and on the host ("nonroot 65532" for the non-root user).
fn process_user(env: &TestEnv, container: &Container) -> String {
    let out = env
        .podman()
        .run(&["top", container.name(), "user", "huser"])
        .expect("podman top");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn dockerfile_image_is_small_runs_read_only_as_non_root_and_behaves_like_deployer_build() {
    let env = TestEnv::get().await.expect("test environment");
    let podman = env.podman();
    let tag = format!("localhost/celestial-e2e/dockerfile:{}", std::process::id());

    // 1. podman build of the Dockerfile, bases resolved from local storage (never pulled).
    let t = Instant::now();
    podman
        .build(
            &repo_root(),
            &repo_root().join("Dockerfile"),
            &tag,
            &["--format", "docker", "--pull=never"],
        )
        .unwrap_or_else(|e| panic!("podman build of the Dockerfile failed: {e}"));
    let built_in = t.elapsed();
    let img = inspect_image(&env, &tag);
    let size = img["Size"].as_u64().unwrap();
    eprintln!(
        "measured: Dockerfile image {tag}: {:.1} MB uncompressed, podman build {:.0}s",
        size as f64 / 1e6,
        built_in.as_secs_f64()
    );
    assert!(
        size <= MAX_IMAGE_BYTES,
        "the image is {size} bytes, over the {MAX_IMAGE_BYTES}-byte target"
    );
    let cfg = &img["Config"];
    assert_eq!(cfg["User"], "65532:65532");
    assert_eq!(
        cfg["Entrypoint"],
        serde_json::json!(["/app/celestial-server"])
    );
    assert!(cfg["ExposedPorts"].get("3000/tcp").is_some(), "{cfg}");
    let labels = &img["Labels"];
    for l in [
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
    ] {
        assert!(labels.get(l).is_some(), "label {l} missing: {labels}");
    }
    let hc = img["Healthcheck"]["Test"].clone();
    assert_eq!(
        hc,
        serde_json::json!(["CMD", "/app/celestial-server", "healthcheck"]),
        "{img}"
    );

    // 2. podman run: read-only root filesystem, the image's own non-root user, all capabilities dropped.
    let port = free_loopback_port();
    let port_env = format!("CELESTIAL_PORT={port}");
    let hc_env = format!("CELESTIAL_HEALTHCHECK_ADDRESS=127.0.0.1:{port}");
    let run_opts = [
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "-e",
        &port_env,
        "-e",
        &hc_env,
    ];
    let t = Instant::now();
    let dockerfile = podman
        .start(&tag, port, &run_opts, &[])
        .unwrap_or_else(|e| panic!("podman run {tag}: {e}"));
    let base = format!("http://{}", dockerfile.addr());
    let r = http_client(Duration::from_secs(20))
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "readyz: {}", dockerfile.logs());
    eprintln!(
        "measured: container listening and ready {:.2}s after podman run",
        t.elapsed().as_secs_f64()
    );
    let user = process_user(&env, &dockerfile);
    assert_eq!(
        user, "nonroot 65532",
        "the server process does not run as the non-root user"
    );
    let out = podman
        .command()
        .args(["healthcheck", "run", dockerfile.name()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman healthcheck run: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let from_dockerfile = behaviour(&base).await;
    if let Some(label) = sample_image().2 {
        assert_eq!(
            from_dockerfile.prediction["prediction"], label,
            "{:?}",
            from_dockerfile.prediction
        );
    }
    assert_eq!(
        from_dockerfile.prediction["probabilities"]
            .as_object()
            .map(|o| o.len()),
        Some(10)
    );

    // 3. The image from `deployer build` (same server, same ONNX Runtime, same base), run the same way.
    let deployer = repo_binary("deployer", "deployer").expect("building deployer");
    let server =
        repo_binary("celestial-server", "celestial-server").expect("building celestial-server");
    let ort = onnxruntime_library();
    let image = format!(
        "{}/celestial-e2e/compare:{}",
        env.registry(),
        std::process::id()
    );
    let out = Command::new(&deployer)
        .current_dir(repo_root())
        .args([
            "build",
            "--image",
            &image,
            "--base",
            &env.info().base_images.distroless_cc_registry,
        ])
        .args([
            "--server-binary",
            server.to_str().unwrap(),
            "--onnxruntime",
            ort.to_str().unwrap(),
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deployer build: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest_ref = j["image"]["image"].as_str().unwrap().to_string();
    let port2 = free_loopback_port();
    let port_env2 = format!("CELESTIAL_PORT={port2}");
    let hc_env2 = format!("CELESTIAL_HEALTHCHECK_ADDRESS=127.0.0.1:{port2}");
    let run_opts2 = [
        "--pull=always",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "-e",
        &port_env2,
        "-e",
        &hc_env2,
    ];
    let built = podman
        .start(&digest_ref, port2, &run_opts2, &[])
        .unwrap_or_else(|e| panic!("podman run {digest_ref}: {e}"));
    let dimg = inspect_image(&env, &digest_ref);
    for key in ["User", "Entrypoint", "ExposedPorts", "WorkingDir"] {
        assert_eq!(
            dimg["Config"][key], cfg[key],
            "{key} differs between the Dockerfile image and deployer's"
        );
    }
    let (repo, digest) = digest_ref
        .strip_prefix(&format!("{}/", env.registry()))
        .unwrap()
        .split_once('@')
        .unwrap();
    let dcfg = registry_image_config(env.registry(), repo, digest).await;
    assert_eq!(
        dcfg["config"]["Healthcheck"]["Test"], hc,
        "the health checks differ"
    );
    healthcheck(&env, &built, &hc)
        .unwrap_or_else(|e| panic!("deployer image health check failed: {e}\n{}", built.logs()));
    healthcheck(&env, &dockerfile, &hc).unwrap_or_else(|e| {
        panic!(
            "Dockerfile image health check failed: {e}\n{}",
            dockerfile.logs()
        )
    });
    assert_eq!(process_user(&env, &built), "nonroot 65532");
    let from_deployer = behaviour(&format!("http://{}", built.addr())).await;
    assert_eq!(
        from_deployer.statuses, from_dockerfile.statuses,
        "the routes answer differently"
    );
    assert_eq!(
        from_deployer.schema, from_dockerfile.schema,
        "/schema.json differs"
    );
    assert_eq!(from_deployer.model, from_dockerfile.model, "/model differs");
    assert_eq!(
        from_deployer.prediction["prediction"],
        from_dockerfile.prediction["prediction"]
    );
    let (a, b) = (
        &from_deployer.prediction["probabilities"],
        &from_dockerfile.prediction["probabilities"],
    );
    for (label, p) in a.as_object().unwrap() {
        let q = b[label].as_f64().unwrap();
        assert!(
            (p.as_f64().unwrap() - q).abs() < 1e-6,
            "probability of {label}: {p} vs {q}"
        );
    }
    eprintln!(
        "measured: deployer image {:.1} MB uncompressed vs Dockerfile image {:.1} MB",
        dimg["Size"].as_u64().unwrap_or(0) as f64 / 1e6,
        size as f64 / 1e6
    );
    drop(built);
    drop(dockerfile);
    let _ = podman.remove_image(&tag);
}
