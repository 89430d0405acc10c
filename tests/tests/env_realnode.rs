//! The real nodes of the test environment (tests/env/node.sh): a Deployment of an image pushed to
//! the loopback registry really runs on both (containerd pulls it, runc starts it, the kubelet's
//! readiness probe passes, the topology spread puts one pod on each node), pods reach each other
//! across nodes, the LoadBalancer Service's address answers through the node port and kube-proxy,
//! and the API server on the host reaches every pod and kubelet: `kubectl logs`, `exec`,
//! `port-forward` and the pod proxy. metrics-server answers through the aggregation layer:
//! `kubectl top` and a HorizontalPodAutoscaler's CPU figure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use celestial_e2e::{RealNode, TestEnv, http_client, httpd, programs, run_testenv, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
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
    // one pod per node, strictly (the server's own manifests ask for the spread softly)
    pod_spec["topologySpreadConstraints"] = serde_json::json!([{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": { "matchLabels": { "app": "web" } }
    }]);
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

/// Processes whose command line starts with `exe` and whose cgroup is the pod's
/// (celestial-real-node-N/kubepods/.../pod<UID>).
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

/// `kubectl ARGS...` against the test cluster: stdout, or a panic with stderr.
fn kubectl(env: &TestEnv, args: &[&str]) -> String {
    let out = env.kubectl().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl port-forward pod/NAME :8080` until dropped; its local port. The reader of its stdout
/// stays open: kubectl writes a line per connection, and a closed pipe would end it.
struct PortForward {
    child: std::process::Child,
    port: u16,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl PortForward {
    fn start(env: &TestEnv, ns: &str, pod: &str) -> PortForward {
        let mut child = env
            .kubectl()
            .args(["-n", ns, "port-forward", &format!("pod/{pod}"), ":8080"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // "Forwarding from 127.0.0.1:PORT -> 8080"
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let port = line
            .split_once("127.0.0.1:")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
        PortForward {
            child,
            port,
            _stdout: out,
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A debian-slim pod named `name` that sleeps, bound to `node` (no scheduler involved).
fn shell_pod(env: &TestEnv, name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "spec": { "nodeName": node, "terminationGracePeriodSeconds": 1,
                  "containers": [{ "name": "sh", "image": &env.info().base_images.debian_slim_registry,
                                   "command": ["sleep", "3600"],
                                   "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } } }] }
    }))
    .unwrap()
}

async fn wait_running(pods: &Api<Pod>, name: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = pods.get(name).await.unwrap();
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never ran: {:?}",
            p.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn env_real_nodes_spread_a_deployment_and_the_api_server_reaches_every_pod() {
    let env = TestEnv::get().await.unwrap();
    let (env, node) = env.real_node().await.unwrap();
    assert_eq!(
        env.info().real_nodes.len(),
        2,
        "{:?}",
        env.info().real_nodes
    );
    let status = String::from_utf8_lossy(&run_testenv(&["status"]).unwrap().stdout).into_owned();
    for n in &env.info().real_nodes {
        assert!(
            status.contains(&format!("real node {}", n.name)),
            "{status}"
        );
    }
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
        "measured: 2-replica Deployment Available on the real nodes in {:.1}s (pull + start + readiness)",
        t.elapsed().as_secs_f64()
    );

    // real containers: one on each real node, started by containerd, ready, with a pod IP of its
    // node's range, a process in the pod's cgroup, and their output in that kubelet's log files
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);
    let mut placed = Vec::new();
    for p in &list.items {
        let spec = p.spec.as_ref().unwrap();
        let on = spec.node_name.clone().unwrap_or_default();
        let real = env
            .info()
            .real_node_named(&on)
            .unwrap_or_else(|| panic!("pod on {on}, not a real node"));
        let st = p.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"), "{st:?}");
        let ip = st.pod_ip.clone().unwrap();
        assert!(
            real.has_pod_ip(&ip),
            "pod IP {ip} outside {}",
            real.pod_cidr
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
        let name = p.metadata.name.clone().unwrap();
        let log = real
            .pod_logs
            .join(format!("{}_{name}_{uid}", ns.name()))
            .join("web/0.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains("testenv-httpd: serving /srv/www on http://0.0.0.0:8080"),
            "{}: {text:?}",
            log.display()
        );
        placed.push((name, on, ip));
    }
    assert_ne!(
        placed[0].1, placed[1].1,
        "both pods on one node: {placed:?}"
    );

    // the LoadBalancer address: the stand-in forwards ADDRESS:80 to node 0's node port, kube-proxy
    // DNATs to a ready pod on either node
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

    // the API server reaches every pod, on both nodes: through the kubelet (logs, exec,
    // port-forward) and directly (the pod proxy)
    let t = Instant::now();
    for (name, on, _) in &placed {
        let logs = kubectl(&env, &["-n", ns.name(), "logs", name]);
        assert!(
            logs.contains("testenv-httpd: serving"),
            "{name} on {on}: {logs}"
        );
        let help = kubectl(
            &env,
            &[
                "-n",
                ns.name(),
                "exec",
                name,
                "--",
                "/usr/local/bin/testenv-httpd",
                "--version",
            ],
        );
        assert!(
            help.starts_with("celestial-testenv "),
            "{name} on {on}: {help}"
        );
        let raw = format!("/api/v1/namespaces/{}/pods/{name}:8080/proxy/", ns.name());
        let page = kubectl(&env, &["get", "--raw", &raw]);
        assert!(page.contains(&token), "{name} on {on}: {page}");
        let pf = PortForward::start(&env, ns.name(), name);
        let page = http_client(Duration::from_secs(10))
            .get(format!("http://127.0.0.1:{}/", pf.port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&token),
            "{name} on {on} (port-forward): {page}"
        );
    }
    eprintln!(
        "measured: logs + exec + pod proxy + port-forward of 2 pods on 2 nodes in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // pod to pod across nodes: a shell on each node fetches the page of the web pod on the
    // other node by its pod IP (bash's /dev/tcp: the slim image has no HTTP client)
    for (i, (_, on, _)) in placed.iter().enumerate() {
        let other = &placed[1 - i];
        let shell = format!("sh-{i}");
        pods.create(&PostParams::default(), &shell_pod(&env, &shell, on))
            .await
            .unwrap();
        wait_running(&pods, &shell).await;
        let get = format!(
            "exec 3<>/dev/tcp/{}/8080 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
            other.2
        );
        let page = kubectl(
            &env,
            &["-n", ns.name(), "exec", &shell, "--", "bash", "-c", &get],
        );
        assert!(
            page.contains(&token),
            "{on} -> {} ({}): {page}",
            other.1,
            other.2
        );
    }
}

/// CPU usage of the HPA's target as a percentage of the request, once the HPA has read it.
fn hpa_cpu(h: &HorizontalPodAutoscaler) -> Option<i32> {
    let m = h.status.as_ref()?.current_metrics.as_ref()?.first()?;
    m.resource.as_ref()?.current.average_utilization
}

#[tokio::test]
async fn env_metrics_server_answers_kubectl_top_and_an_hpa_reads_cpu() {
    let env = TestEnv::get().await.unwrap();
    let (env, node) = env.real_node().await.unwrap();
    let ms = &env.info().metrics_server;
    assert!(
        ms.starts_with("https://"),
        "no metrics-server in env.json: {ms:?}"
    );
    let available = kubectl(
        &env,
        &[
            "get",
            "apiservice",
            "v1beta1.metrics.k8s.io",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Available\")].status}",
        ],
    );
    assert_eq!(available, "True");

    // kubectl top nodes: both real nodes with CPU and memory figures (kwok nodes have none)
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut top = String::new();
    while !env.info().real_nodes.iter().all(|n| top.contains(&n.name)) {
        assert!(Instant::now() < deadline, "kubectl top nodes: {top}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let out = env
            .kubectl()
            .args(["top", "nodes", "--no-headers"])
            .output()
            .unwrap();
        top = String::from_utf8_lossy(&out.stdout).into_owned();
    }
    eprintln!("kubectl top nodes:\n{top}");

    // a Deployment that burns a little CPU, and an HPA on it: the HPA reads its CPU through
    // metrics.k8s.io (kubectl top pods shows the same pods)
    let ns = env.namespace("metrics").await.unwrap();
    let client = env.client().await.unwrap();
    let mut pod_spec = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{ "name": "burn", "image": &env.info().base_images.debian_slim_registry,
            "command": ["bash", "-c", "while :; do for i in $(seq 2000); do :; done; sleep 0.05; done"],
            "resources": { "requests": { "cpu": "20m", "memory": "16Mi" } } }]
    });
    for (k, v) in node.placement().as_object().unwrap() {
        pod_spec[k] = v.clone();
    }
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "burn" },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "burn" } },
                  "template": { "metadata": { "labels": { "app": "burn" } }, "spec": pod_spec } }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": { "name": "burn" },
        "spec": { "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "burn" },
                  "minReplicas": 1, "maxReplicas": 1,
                  "metrics": [{ "type": "Resource", "resource": { "name": "cpu",
                      "target": { "type": "Utilization", "averageUtilization": 80 } } }] }
    }))
    .unwrap();
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client, ns.name());
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(150);
    let cpu = loop {
        let h = hpas.get("burn").await.unwrap();
        if let Some(cpu) = hpa_cpu(&h) {
            break cpu;
        }
        assert!(
            Instant::now() < deadline,
            "the HPA never read CPU: {:?}",
            h.status
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!(
        "measured: the HPA read {cpu}% of the CPU request {:.0}s after it was created",
        t.elapsed().as_secs_f64()
    );
    assert!(cpu > 0, "{cpu}");
    let pods = kubectl(&env, &["-n", ns.name(), "top", "pods", "--no-headers"]);
    assert!(pods.contains("burn-"), "kubectl top pods: {pods}");
}
