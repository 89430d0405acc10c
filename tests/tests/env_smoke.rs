//! Smoke tests of the real test environment (tests/env/): they need it up, and bring it up
//! through `TestEnv::get()` when it is not (scripts/test does that before the suite).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use celestial_e2e::{TestEnv, free_loopback_port, http_client, httpd, programs, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, ListParams, PostParams};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "web", "image": "127.0.0.1:5000/e2e/placeholder:1",
                                            "ports": [{ "containerPort": 8080 }] }] }
            }
        }
    }))
    .unwrap()
}

fn lb_service(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "type": "LoadBalancer", "selector": { "app": name },
                  "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] }
    }))
    .unwrap()
}

#[tokio::test]
async fn env_two_replica_deployment_becomes_available_on_kwok_nodes() {
    let env = TestEnv::get().await.unwrap();
    let ns = env.kwok_namespace("smoke-deploy").await.unwrap();
    let client = env.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();

    let d = env
        .wait_deployment_available(ns.name(), "web", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().available_replicas, Some(2));

    // the replicas are real Pod objects, scheduled onto the fake nodes and Ready there
    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(
        list.items.len(),
        2,
        "{:?}",
        list.items
            .iter()
            .map(|p| &p.metadata.name)
            .collect::<Vec<_>>()
    );
    let mut ips = Vec::new();
    for p in &list.items {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("scheduled");
        assert!(
            env.info().kwok_nodes.contains(&node),
            "pod on unexpected node {node}"
        );
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let ready = st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "pod not Ready: {st:?}");
        ips.push(st.pod_ip.clone().expect("kwok assigns a pod IP"));
    }
    assert_ne!(ips[0], ips[1]);
}

#[tokio::test]
async fn env_load_balancer_service_gets_a_loopback_address_or_stays_pending() {
    let env = TestEnv::get().await.unwrap();
    let ns = env.namespace("smoke-lb").await.unwrap();
    let services: Api<Service> = Api::namespaced(env.client().await.unwrap(), ns.name());
    services
        .create(&PostParams::default(), &lb_service("a"))
        .await
        .unwrap();
    services
        .create(&PostParams::default(), &lb_service("b"))
        .await
        .unwrap();

    let a = env
        .wait_lb_address(ns.name(), "a", Duration::from_secs(30))
        .await
        .unwrap();
    let b = env
        .wait_lb_address(ns.name(), "b", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(a.is_loopback() && b.is_loopback(), "{a} {b}");
    assert_ne!(a, b, "each Service gets its own address");

    // nothing answers without a backend: the address refuses connections, or, when the
    // environment has a real node, the stand-in forwards to the Service's node port, where
    // kube-proxy rejects the connection (no ready pod), and the stand-in closes it unanswered
    if let Ok(mut conn) = tokio::net::TcpStream::connect(SocketAddr::new(a, 80)).await {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        assert!(
            !env.info().real_nodes.is_empty(),
            "no backend was set and there is no real node, yet {a}:80 accepted"
        );
        let _ = conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{a}:80 answered without a ready pod: {read:?} {buf:?}"
        );
    }

    // simulated "pending": the address is withdrawn, and comes back when allowed
    env.set_lb_pending(ns.name(), "b", true).await.unwrap();
    let mut withdrawn = false;
    for _ in 0..100 {
        let svc = services.get("b").await.unwrap();
        let ingress = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default();
        if ingress.is_empty() {
            withdrawn = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        withdrawn,
        "the pending annotation did not withdraw the address"
    );
    env.set_lb_pending(ns.name(), "b", false).await.unwrap();
    env.wait_lb_address(ns.name(), "b", Duration::from_secs(30))
        .await
        .unwrap();

    // like a cloud controller, the stand-in explains itself in the Service's events
    let events: Api<Event> = Api::namespaced(env.client().await.unwrap(), ns.name());
    let mut reasons = Vec::new();
    for _ in 0..50 {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=b"))
            .await
            .unwrap();
        reasons = list
            .items
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect::<Vec<_>>();
        if reasons.iter().any(|r| r == "EnsuringLoadBalancer")
            && reasons.iter().any(|r| r == "EnsuredLoadBalancer")
        {
            let pending = list
                .items
                .iter()
                .find(|e| e.reason.as_deref() == Some("EnsuringLoadBalancer"))
                .unwrap();
            assert!(
                pending
                    .message
                    .as_deref()
                    .unwrap_or_default()
                    .contains("pending"),
                "{pending:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "expected EnsuringLoadBalancer and EnsuredLoadBalancer events on Service b, got {reasons:?}"
    );
}

/// The full chain: an image built on the synthesized distroless base, pushed to the registry,
/// removed locally, pulled back and run by podman, answering HTTP on loopback; then reached
/// through a LoadBalancer Service's "external" address.
#[tokio::test]
async fn env_image_from_registry_runs_in_podman_and_serves_through_the_lb_address() {
    let env = TestEnv::get().await.unwrap();
    let podman = env.podman();
    let token = unique_name("hello-from-the-registry");

    let base = &env.info().base_images.distroless_cc_registry;
    let ctx = httpd::image_context(&programs::path("testenv-httpd"), base, &token).unwrap();
    let local = format!("localhost/celestial-e2e/{}:1", unique_name("httpd"));
    podman
        .build(
            ctx.path(),
            &ctx.path().join("Containerfile"),
            &local,
            &["--pull=always"],
        )
        .unwrap();
    let user = String::from_utf8(
        podman
            .run(&["image", "inspect", "--format", "{{.Config.User}}", &local])
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        user.trim(),
        "65532:65532",
        "the distroless stand-in runs as nonroot"
    );

    let remote = format!("{}/e2e/httpd:{}", env.registry(), token);
    podman.push(&local, &remote, None).unwrap();
    podman.remove_image(&local).unwrap();

    // run: podman pulls from the registry (the image is not in local storage any more)
    let port = free_loopback_port();
    let listen = format!("--listen=127.0.0.1:{port}");
    let container = podman
        .start(&remote, port, &["--pull=always", "--read-only"], &[&listen])
        .unwrap();
    let body = http_client(Duration::from_secs(10))
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    assert!(body.text().await.unwrap().contains(&token));

    // and through the load-balancer stand-in's "external IP" on the Service port
    let ns = env.namespace("smoke-chain").await.unwrap();
    let services: Api<Service> = Api::namespaced(env.client().await.unwrap(), ns.name());
    services
        .create(&PostParams::default(), &lb_service("web"))
        .await
        .unwrap();
    let ip = env
        .wait_lb_address(ns.name(), "web", Duration::from_secs(30))
        .await
        .unwrap();
    env.set_lb_backend(ns.name(), "web", container.addr())
        .await
        .unwrap();
    let url = format!("http://{ip}:80/");
    let mut last = String::new();
    for _ in 0..50 {
        match http_client(Duration::from_secs(10)).get(&url).send().await {
            Ok(r) if r.status() == 200 => {
                let text = r.text().await.unwrap();
                assert!(text.contains(&token), "{text}");
                drop(container);
                podman.remove_image(&remote).unwrap();
                return;
            }
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{url} never answered through the LB stand-in: {last}; container logs:\n{}",
        container.logs()
    );
}

#[tokio::test]
async fn env_htpasswd_registry_rejects_wrong_credentials() {
    let env = TestEnv::get().await.unwrap();
    let (addr, user, password) = env.registry_auth();
    let url = format!("http://{addr}/v2/");
    let none = http_client(Duration::from_secs(10))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert!(
        none.headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let wrong = http_client(Duration::from_secs(10))
        .get(&url)
        .basic_auth(user, Some("not-the-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = http_client(Duration::from_secs(10))
        .get(&url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    // the same through podman: a push with wrong credentials is refused, the right ones work
    let podman = env.podman();
    let image = &env.info().base_images.distroless_cc;
    let dest = format!("{addr}/e2e/auth-check:{}", unique_name("t"));
    let err = podman
        .push(image, &dest, Some((user, "not-the-password")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401")
            || err.to_lowercase().contains("unauthorized")
            || err.contains("authentication required"),
        "{err}"
    );
    podman.push(image, &dest, Some((user, password))).unwrap();
}

#[tokio::test]
async fn env_kubeconform_validates_with_schemas_from_the_apiserver() {
    let env = TestEnv::get().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    let good_doc = serde_json::to_string(&deployment("ok", 2)).unwrap();
    std::fs::write(&good, &good_doc).unwrap();
    // a typo'd field and a wrong type: both must be caught
    let bad_doc = good_doc
        .replace("\"replicas\":2", "\"replicas\":\"two\"")
        .replace("\"containerPort\"", "\"containerPortt\"");
    assert_ne!(bad_doc, good_doc);
    std::fs::write(&bad, &bad_doc).unwrap();

    let ok = env.kubeconform().arg(&good).output().unwrap();
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let no = env.kubeconform().arg(&bad).output().unwrap();
    let text = String::from_utf8_lossy(&no.stdout);
    assert!(!no.status.success());
    assert!(
        text.contains("replicas") && text.contains("containerPortt"),
        "{text}"
    );
    assert!(Path::new(env.kubeconfig()).exists());
}

/// `testenv stop|start|restart COMPONENT`: unknown names are refused with the list of the known
/// ones, and starting a running component changes nothing.
#[tokio::test]
async fn env_component_verbs_refuse_unknown_names_and_leave_running_ones_alone() {
    let env = TestEnv::get().await.unwrap();
    let err = celestial_e2e::run_testenv(&["stop", "frobnicator"]).unwrap_err();
    assert!(
        err.contains("unknown component 'frobnicator'")
            && err.contains("kube-apiserver")
            && err.contains("kubelet")
            && err.contains("node"),
        "{err}"
    );
    let err = celestial_e2e::run_testenv(&["restart"]).unwrap_err();
    assert!(err.contains("usage:"), "{err}");
    let pid = |c: &str| std::fs::read_to_string(env.info().state_dir.join(format!("{c}.pid")));
    let before = pid("registry").unwrap();
    let out = celestial_e2e::run_testenv(&["start", "registry"]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("registry is already running"),
        "{out:?}"
    );
    assert_eq!(pid("registry").unwrap(), before);
}
