//! The real node of the test environment (tests/env/node.sh): a Deployment of an image pushed to
//! the loopback registry really runs there (containerd pulls it, runc starts it, the kubelet's
//! readiness probe passes), and the LoadBalancer Service's address answers through the node port
//! and kube-proxy, without the stand-in's backend annotation. The node is added to the
//! environment when it is not part of it yet (`testenv start node`).

use std::path::Path;
use std::time::{Duration, Instant};

use celestial_e2e::{RealNode, TestEnv, http_client, httpd, programs, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};

/// testenv-httpd on the synthesized distroless base, serving a page with `token`, pushed to the
/// plain registry and removed from podman's storage (so only the registry has it).
fn push_httpd_image(env: &TestEnv, token: &str) -> String {
    let podman = env.podman();
    let base = &env.info().base_images.distroless_cc_registry;
    let ctx = httpd::image_context(&programs::path("testenv-httpd"), base, token).unwrap();
    let local = format!("localhost/celestial-e2e/{}:1", unique_name("realnode"));
    podman
        .build(ctx.path(), &ctx.path().join("Containerfile"), &local, &[])
        .unwrap();
    let remote = format!("{}/e2e/realnode-httpd:{token}", env.registry());
    podman.push(&local, &remote, None).unwrap();
    podman.remove_image(&local).unwrap();
    remote
}

fn deployment(node: &RealNode, image: &str) -> Deployment {
    let mut pod_spec = serde_json::json!({
        "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "web",
            "image": image,
            "imagePullPolicy": "Always",
            "args": ["--listen=0.0.0.0:8080", "--root=/srv/www"],
            "ports": [{ "name": "http", "containerPort": 8080 }],
            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" },
                                "periodSeconds": 1, "failureThreshold": 2 },
            "resources": { "requests": { "cpu": "10m", "memory": "16Mi" },
                           "limits": { "memory": "64Mi" } },
            "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                 "runAsNonRoot": true, "capabilities": { "drop": ["ALL"] } }
        }]
    });
    let placement = node.placement();
    for (k, v) in placement.as_object().unwrap() {
        pod_spec[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": { "metadata": { "labels": { "app": "web" } }, "spec": pod_spec }
        }
    }))
    .unwrap()
}

/// Processes whose command line starts with `exe` and whose cgroup is the pod's (kubepods/.../pod<UID>).
fn processes_of_pod(uid: &str, exe: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let dir = entry.path();
        let cmd = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if !cmd.starts_with(exe.as_bytes()) {
            continue;
        }
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        if cgroup.contains("/kubepods/") && cgroup.contains(&format!("pod{uid}")) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn env_real_node_runs_the_pushed_image_and_its_lb_address_answers_through_kube_proxy() {
    let env = TestEnv::get().await.unwrap();
    let (env, node) = env.real_node().await.unwrap();
    let token = unique_name("served-by-a-real-pod");
    let image = push_httpd_image(&env, &token);

    let ns = env.namespace("realnode").await.unwrap();
    let client = env.client().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns.name());
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web" },
        "spec": { "type": "LoadBalancer", "selector": { "app": "web" },
                  "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] }
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let t = Instant::now();
    deployments
        .create(&PostParams::default(), &deployment(&node, &image))
        .await
        .unwrap();
    env.wait_deployment_available(ns.name(), "web", Duration::from_secs(120))
        .await
        .unwrap();
    eprintln!(
        "measured: 2-replica Deployment Available on the real node in {:.1}s (pull + start + readiness)",
        t.elapsed().as_secs_f64()
    );

    // real containers: on the real node, started by containerd, ready, with a pod IP of the node's
    // range, a process in the pod's cgroup, and their output in the kubelet's log files
    let pods: Api<Pod> = Api::namespaced(client, ns.name());
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    let prefix = node.pod_cidr.rsplit_once('.').unwrap().0.to_owned() + ".";
    for p in &list.items {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some(node.name.as_str()));
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"), "{st:?}");
        let ip = st.pod_ip.clone().unwrap();
        assert!(
            ip.starts_with(&prefix),
            "pod IP {ip} outside {}",
            node.pod_cidr
        );
        let cs = &st.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true), "{cs:?}");
        let id = cs.container_id.as_deref().unwrap_or_default();
        assert!(id.starts_with("containerd://"), "container id {id:?}");
        assert!(cs.image_id.contains("sha256:"), "{cs:?}");
        let uid = p.metadata.uid.as_deref().unwrap();
        let procs = processes_of_pod(uid, "/usr/local/bin/testenv-httpd");
        assert_eq!(
            procs.len(),
            1,
            "no testenv-httpd process in pod {uid}'s cgroup"
        );
        let name = p.metadata.name.as_deref().unwrap();
        let log = node
            .pod_logs
            .join(format!("{}_{name}_{uid}", ns.name()))
            .join("web/0.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains("testenv-httpd: serving /srv/www on http://0.0.0.0:8080"),
            "{}: {text:?}",
            log.display()
        );
    }

    // the LoadBalancer address: the stand-in forwards ADDRESS:80 to the node port, kube-proxy
    // DNATs to a ready pod
    let ip = env
        .wait_lb_address(ns.name(), "web", Duration::from_secs(30))
        .await
        .unwrap();
    let url = format!("http://{ip}:80/");
    let mut last = String::new();
    let mut answered = 0;
    for _ in 0..100 {
        match http_client(Duration::from_secs(10)).get(&url).send().await {
            Ok(r) if r.status() == 200 => {
                let text = r.text().await.unwrap();
                assert!(text.contains(&token), "{text}");
                answered += 1;
                if answered == 5 {
                    break;
                }
                continue;
            }
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        answered, 5,
        "{url} did not answer through the node port: {last}"
    );
    assert!(Path::new(&node.netns).exists());
}
