//! Tearing the real node down leaves nothing on the host, even after every process of it was
//! SIGKILLed (a session that ended abruptly): `testenv stop node` (the same code as `down` runs)
//! kills what is left, unmounts, removes the cgroups, restores the sysctls and host paths, then
//! checks and fails when anything is left. This test checks the same again from outside, and that
//! `testenv start node` brings the node back. Its own test binary, so it never runs alongside the
//! other real-node tests (cargo runs test binaries one after another).

use std::path::Path;
use std::time::{Duration, Instant};

use celestial_e2e::{TestEnv, run_testenv};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

/// pids of every process that belongs to the node: whatever names the node's directory (its
/// daemons, the shims) or runs in a kubepods cgroup (the pods). Not the LB stand-in, which names
/// the node's namespace but belongs to the environment.
fn node_processes(state: &Path) -> Vec<(i32, String)> {
    let lb = state.join("bin/testenv-lb").display().to_string();
    let node_dir = state.join("node").display().to_string();
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
        if cmd.contains(&node_dir) || cgroup.lines().any(|l| l.contains(":/kubepods")) {
            out.push((pid, cmd));
        }
    }
    out
}

fn kubepods_cgroups() -> Vec<String> {
    let mut out = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if h.path().join("kubepods").is_dir() {
            out.push(h.path().join("kubepods").display().to_string());
        }
    }
    out
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
    assert!(!kubepods_cgroups().is_empty(), "a running pod has cgroups");
    assert!(!mounts_below(&state.join("node")).is_empty());

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
    assert_eq!(kubepods_cgroups(), Vec::<String>::new());
    assert_eq!(mounts_below(&state), Vec::<String>::new());
    assert!(!state.join("node").exists());
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

    // and the node comes back (the pod still bound to it is started again by the new kubelet)
    let out = run_testenv(&["start", "node"]).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let nodes: Api<Node> = Api::all(client);
    let n = nodes.get(&node.name).await.unwrap();
    let ready = n
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "node {} not Ready after start", node.name);
}
