//! A real Prometheus (built from its pinned Go module by `tests/env/build-addon.sh prometheus`) on
//! loopback, scraping the server's pods on the test environment's real nodes the way the shipped
//! PodMonitor says (`kubernetes/monitoring/podmonitor.yaml`: pods labelled
//! `app=celestial-bodies-classifier`, port `http`, `/metrics`), found through the API server
//! (`kubernetes_sd_configs`, role pod, with the environment's kubeconfig), and evaluating the
//! shipped PrometheusRule's `spec.groups`. The host routes every pod CIDR to its node, so a host
//! process reaches the pods as an in-cluster Prometheus would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::monitoring::{monitoring_dir, yaml_document};
use crate::{TestEnv, free_loopback_port, repo_root};

/// The bin directory of the cached Prometheus build (built when missing).
pub fn prometheus_bin() -> PathBuf {
    let out = Command::new(repo_root().join("tests/env/build-addon.sh"))
        .arg("prometheus")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("running tests/env/build-addon.sh prometheus");
    assert!(out.status.success(), "build-addon.sh prometheus failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The shipped rule groups, each alert's `for:` replaced by `hold` when given (an end-to-end test
/// cannot wait the production 15 minutes; the expressions stay the shipped ones).
pub fn rule_groups(hold: Option<&str>) -> Value {
    let rule = yaml_document(&monitoring_dir().join("prometheus-rule.yaml"));
    let mut groups = rule["spec"]["groups"].clone();
    if let Some(hold) = hold {
        for g in groups.as_array_mut().expect("spec.groups") {
            for r in g["rules"].as_array_mut().expect("rules") {
                if r.get("alert").is_some() {
                    r["for"] = json!(hold);
                }
            }
        }
    }
    json!({ "groups": groups })
}

/// The scrape configuration of the shipped PodMonitor for namespace `ns`, every `interval`.
fn config(env: &TestEnv, ns: &str, interval: &str) -> Value {
    let monitor = yaml_document(&monitoring_dir().join("podmonitor.yaml"));
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let labels = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the PodMonitor selects by labels");
    let mut relabel: Vec<Value> = labels
        .iter()
        .map(|(k, v)| {
            json!({"source_labels": [format!("__meta_kubernetes_pod_label_{}", sanitize(k))],
                   "regex": v, "action": "keep"})
        })
        .collect();
    relabel.extend([
        json!({"source_labels": ["__meta_kubernetes_pod_container_port_name"],
               "regex": endpoint["port"], "action": "keep"}),
        json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
        json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
    ]);
    json!({
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": interval},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [{
            "job_name": monitor["metadata"]["name"],
            "metrics_path": endpoint["path"],
            "scheme": endpoint["scheme"],
            "kubernetes_sd_configs": [{
                "role": "pod",
                "kubeconfig_file": env.kubeconfig(),
                "namespaces": {"names": [ns]},
            }],
            "relabel_configs": relabel,
        }],
    })
}

/// A Kubernetes label name as Prometheus's service discovery spells it in a meta label.
fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A running Prometheus; stopped (and its data removed) on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus for the server's pods in `ns`, scraping and evaluating every `interval`
    /// (e.g. `1s`), the alerts' `for:` set to `hold`; returns once it is ready.
    pub async fn start(env: &TestEnv, ns: &str, interval: &str, hold: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, v: &Value| {
            // JSON is YAML: Prometheus reads these files as written.
            std::fs::write(dir.path().join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
        };
        write("prometheus.yml", &config(env, ns, interval));
        write("rules.yaml", &rule_groups(Some(hold)));
        let port = free_loopback_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_bin().join("prometheus"))
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}/"),
            _dir: dir,
        };
        p.wait_ready().await;
        p
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}-/ready", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("prometheus not ready within 30 s:\n{}", self.log());
    }

    /// Prometheus's own log (warnings and errors), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with `query`: its `data`.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let j: Value = reqwest::Client::new()
            .get(format!("{}api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(j["status"], "success", "{path}: {j}");
        j["data"].clone()
    }

    /// The result vector of an instant query.
    pub async fn query(&self, q: &str) -> Vec<Value> {
        let data = self.api("query", &[("query", q)]).await;
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The active alerts named `name` (pending or firing), as `/api/v1/alerts` lists them.
    pub async fn alerts(&self, name: &str) -> Vec<Value> {
        let data = self.api("alerts", &[]).await;
        let all = data["alerts"].as_array().cloned().unwrap_or_default();
        all.into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect()
    }

    /// Waits until `check` holds (polled every 500 ms) for at most `timeout`: how long it took.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, check: F) -> Duration
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if check().await {
                return t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "{what}: not within {timeout:?}\nprometheus log:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_groups_keep_the_expressions_and_shorten_only_the_hold() {
        let shipped = rule_groups(None);
        let short = rule_groups(Some("5s"));
        let alerts = |v: &Value| -> Vec<Value> {
            v["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap().clone())
                .filter(|r| r.get("alert").is_some())
                .collect()
        };
        let (a, b) = (alerts(&shipped), alerts(&short));
        assert!(!a.is_empty());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x["expr"], y["expr"]);
            assert_eq!(y["for"], "5s");
        }
        assert!(a.iter().any(|r| r["alert"] == "CelestialInputDrift"));
    }

    #[test]
    fn label_names_are_sanitized_as_prometheus_does() {
        assert_eq!(sanitize("app.kubernetes.io/name"), "app_kubernetes_io_name");
    }
}
