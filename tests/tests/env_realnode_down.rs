//! Tearing the real nodes down leaves nothing on the host, even after every process of them was
//! SIGKILLed (a session that ended abruptly): `testenv stop node` (the same code as `down` runs)
//! kills what is left, unmounts, removes the cgroups and the nodes' network, restores the sysctls
//! and host paths, then checks and fails when anything is left. This test checks the same again
//! from outside, and that `testenv start node` brings both nodes (and metrics-server) back. Its own
//! test binary, so it never runs alongside the other real-node tests (cargo runs test binaries one
//! after another).

use std::path::Path;
use std::time::{Duration, Instant};

use celestial_e2e::{TestEnv, run_testenv};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

/// The nodes' cgroup roots (`/sys/fs/cgroup/<hierarchy>/celestial-real-node-N`) hold their pods.
const CGROUP_ROOT: &str = "celestial-real-node-";

/// pids of every process that belongs to a node: whatever names a node's directory (its daemons,
/// the shims) or runs in a node's cgroup (the pods). Not the LB stand-in, which names node 0's
/// namespace but belongs to the environment.
fn node_processes(state: &Path) -> Vec<(i32, String)> {
    let lb = state.join("bin/testenv-lb").display().to_string();
    let node_dir = state.join("node-").display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A zombie is already dead (no memory, no files; it only waits for its parent, here often
        // PID 1, to reap it): not a process left behind.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
        {
            continue;
        }
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cmd.starts_with(&lb) {
            continue;
        }
        let in_node_cgroup = cgroup
            .lines()
            .any(|l| l.contains(&format!(":/{CGROUP_ROOT}")) || l.contains(":/kubepods"));
        if cmd.contains(&node_dir) || in_node_cgroup {
            out.push((pid, cmd));
        }
    }
    out
}

/// The nodes' cgroups (and any top-level kubepods) in every hierarchy.
fn node_cgroups() -> Vec<String> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for c in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            let name = c.file_name().to_string_lossy().into_owned();
            if c.path().is_dir() && (name.starts_with(CGROUP_ROOT) || name == "kubepods") {
                out.push(c.path().display().to_string());
            }
        }
    }
    out
}

/// Whether the host has a network interface of that name.
fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

fn sysctl(name: &str) -> String {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    std::fs::read_to_string(path).unwrap().trim().to_owned()
}

#[tokio::test]
async fn env_real_node_stop_after_sigkill_of_everything_leaves_nothing_and_start_recovers() {
    let env = TestEnv::get().await.unwrap();
    let (env, node) = env.real_node().await.unwrap();
    let state = env.info().state_dir.clone();
    assert_eq!(
        env.info().real_nodes.len(),
        2,
        "{:?}",
        env.info().real_nodes
    );

    // a running pod, so that there are a shim, mounts, cgroups and a veth to clean up
    let ns = env.namespace("realnode-down").await.unwrap();
    let client = env.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let mut spec = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{ "name": "sleep", "image": &env.info().base_images.debian_slim_registry,
                         "command": ["sleep", "3600"] }]
    });
    for (k, v) in node.placement().as_object().unwrap() {
        spec[k] = v.clone();
    }
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "sleeper" }, "spec": spec
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let start = Instant::now();
    loop {
        let p = pods.get("sleeper").await.unwrap();
        if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the pod never ran"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!node_cgroups().is_empty(), "a running pod has cgroups");
    assert!(!mounts_below(&state).is_empty());
    assert!(link_exists("celbr0") && link_exists("celn0") && link_exists("celn1"));

    // the host's values from before the node (testenv keeps them next to the state directory)
    let record = std::fs::read_to_string(format!("{}.node-host", state.display())).unwrap();
    let sysctls: Vec<(String, String)> = record
        .lines()
        .filter_map(|l| l.strip_prefix("sysctl "))
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    assert!(sysctls.iter().any(|(n, _)| n == "kernel.panic_on_oops"));

    // an abrupt end: SIGKILL to every process of the node at once
    let victims = node_processes(&state);
    assert!(
        victims.iter().any(|(_, c)| c.contains("containerd-shim")),
        "{victims:?}"
    );
    assert!(
        victims.iter().any(|(_, c)| c.contains("kubelet")),
        "{victims:?}"
    );
    for (pid, _) in &victims {
        // SAFETY: kill(2) with a pid read from /proc and a constant signal
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }

    // `stop node` succeeds only when its own check finds nothing left
    let t = Instant::now();
    let out = run_testenv(&["stop", "node"]).unwrap();
    eprintln!(
        "measured: node stop after SIGKILL {:.1}s\n{}",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    let left = node_processes(&state);
    assert!(left.is_empty(), "processes left: {left:?}");
    assert_eq!(node_cgroups(), Vec::<String>::new());
    assert_eq!(mounts_below(&state), Vec::<String>::new());
    for n in &env.info().real_nodes {
        assert!(!n.netns.exists(), "{} still has its namespace", n.name);
    }
    // the nodes' network: the bridge, the veths, and with them the host's routes to the pods
    for link in ["celbr0", "celn0", "celn1"] {
        assert!(!link_exists(link), "{link} left on the host");
    }
    let routes = std::process::Command::new("ip")
        .args(["route"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        !routes.contains("10.245."),
        "routes to pods left:\n{routes}"
    );
    for (name, before) in &sysctls {
        assert_eq!(&sysctl(name), before, "{name} not restored");
    }
    assert!(!Path::new("/var/lib/kubelet/device-plugins/kubelet.sock").exists());

    // the environment itself is untouched
    let lb_pid: i32 = std::fs::read_to_string(state.join("lb.pid"))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        Path::new(&format!("/proc/{lb_pid}")).exists(),
        "the LB stand-in died"
    );

    // and the nodes come back (the pod still bound to one is started again by the new kubelet),
    // with metrics-server behind the aggregation layer
    let t = Instant::now();
    let out = run_testenv(&["start", "node"]).unwrap();
    eprintln!(
        "measured: both nodes and metrics-server back in {:.1}s\n{}",
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Api<Node> = Api::all(client);
    for n in &env.info().real_nodes {
        let got = nodes.get(&n.name).await.unwrap();
        let ready = got
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "node {} not Ready after start", n.name);
    }
    // metrics-server reports both nodes again (its first figures need two kubelet scrapes)
    let raw = [
        "kubectl",
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/nodes",
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while !env.info().real_nodes.iter().all(|n| last.contains(&n.name)) {
        assert!(Instant::now() < deadline, "node metrics incomplete: {last}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        last = run_testenv(&raw)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e.to_string());
    }
}
