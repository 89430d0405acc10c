//! Opt-in API keys and TLS for the server, as changes to the manifests (a leaf: pure functions on
//! [`Manifest`]s). `--api-key-secret NAME` mounts the Secret NAME as the server's keys file;
//! `--tls-secret NAME` mounts a `kubernetes.io/tls` Secret as its certificate and key and turns
//! the Services to `443 -> https`. Both mount the Secret as a volume (never `subPath`, never env
//! variables): the kubelet then updates the files in place when the Secret changes, and the server
//! re-reads them, so keys and certificates rotate without a restart.

use celestial_common::server_env;
use serde_json::{Value, json};

use super::manifests::{Manifest, ManifestError, server_container_index};

/// The key in the API-key Secret's data holding the keys file (one key per line).
pub const API_KEYS_DATA_KEY: &str = "api-keys";
/// Where the API-key Secret is mounted in the server container.
pub const API_KEYS_DIR: &str = "/etc/celestial/api-keys";
/// Where the TLS Secret is mounted in the server container (`tls.crt`, `tls.key`).
pub const TLS_DIR: &str = "/etc/celestial/tls";
/// The name of the server container's HTTPS port, and of the Services' port to it.
pub const HTTPS_PORT_NAME: &str = "https";
/// The port the Services expose HTTPS on.
pub const HTTPS_SERVICE_PORT: i64 = 443;

const API_KEYS_VOLUME: &str = "celestial-api-keys";
const TLS_VOLUME: &str = "celestial-tls";

/// Mounts the Secret `secret` into every Deployment's server container as its API keys file.
pub fn mount_api_keys(
    manifests: &mut [Manifest],
    secret: &str,
    container: Option<&str>,
) -> Result<(), ManifestError> {
    let file = format!("{API_KEYS_DIR}/{API_KEYS_DATA_KEY}");
    for_each_server(manifests, container, |pod, idx| {
        upsert(
            pod,
            "volumes",
            API_KEYS_VOLUME,
            secret_volume(API_KEYS_VOLUME, secret),
        );
        let c = &mut pod["containers"][idx];
        upsert(
            c,
            "volumeMounts",
            API_KEYS_VOLUME,
            mount(API_KEYS_VOLUME, API_KEYS_DIR),
        );
        upsert(
            c,
            "env",
            server_env::API_KEYS_FILE,
            env(server_env::API_KEYS_FILE, &file),
        );
    })
}

/// Mounts the TLS Secret `secret` into every Deployment's server container as its certificate and
/// key, opens its HTTPS port, and turns every Service's ports into `443 -> https`. The plain port
/// stays for the probes (the server serves only them there once TLS is on).
pub fn enable_tls(
    manifests: &mut [Manifest],
    secret: &str,
    container: Option<&str>,
) -> Result<(), ManifestError> {
    for_each_server(manifests, container, |pod, idx| {
        upsert(
            pod,
            "volumes",
            TLS_VOLUME,
            secret_volume(TLS_VOLUME, secret),
        );
        let c = &mut pod["containers"][idx];
        upsert(c, "volumeMounts", TLS_VOLUME, mount(TLS_VOLUME, TLS_DIR));
        let cert = format!("{TLS_DIR}/tls.crt");
        let key = format!("{TLS_DIR}/tls.key");
        upsert(
            c,
            "env",
            server_env::TLS_CERT,
            env(server_env::TLS_CERT, &cert),
        );
        upsert(
            c,
            "env",
            server_env::TLS_KEY,
            env(server_env::TLS_KEY, &key),
        );
        let port = server_env::DEFAULT_TLS_PORT.to_string();
        upsert(
            c,
            "env",
            server_env::TLS_PORT,
            env(server_env::TLS_PORT, &port),
        );
        let https = json!({"name": HTTPS_PORT_NAME, "containerPort": server_env::DEFAULT_TLS_PORT, "protocol": "TCP"});
        upsert(c, "ports", HTTPS_PORT_NAME, https);
    })?;
    for m in manifests.iter_mut().filter(|m| m.kind == "Service") {
        m.object["spec"]["ports"] = json!([{
            "name": HTTPS_PORT_NAME,
            "port": HTTPS_SERVICE_PORT,
            "targetPort": HTTPS_PORT_NAME,
            "protocol": "TCP",
        }]);
    }
    Ok(())
}

/// The API-key Secret a pod template mounts (what `--api-key-secret` set), if any: what a
/// command that did not apply the template needs to ask its server.
pub fn api_key_secret_of(template: &Value) -> Option<&str> {
    template
        .pointer("/spec/volumes")?
        .as_array()?
        .iter()
        .find(|v| v["name"] == API_KEYS_VOLUME)?
        .pointer("/secret/secretName")?
        .as_str()
}

/// Calls `change(pod spec, server container index)` for every Deployment.
fn for_each_server(
    manifests: &mut [Manifest],
    container: Option<&str>,
    mut change: impl FnMut(&mut Value, usize),
) -> Result<(), ManifestError> {
    let mut any = false;
    for m in manifests.iter_mut().filter(|m| m.kind == "Deployment") {
        let idx = server_container_index(m, container)?;
        change(&mut m.object["spec"]["template"]["spec"], idx);
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(ManifestError::NoDeployment)
    }
}

/// Sets the entry named `name` of the list `field` of `parent` to `entry` (added when absent), so
/// a re-run changes nothing.
fn upsert(parent: &mut Value, field: &str, name: &str, entry: Value) {
    if !parent[field].is_array() {
        parent[field] = json!([]);
    }
    let list = parent[field].as_array_mut().expect("made an array above");
    match list.iter_mut().find(|e| e["name"] == name) {
        Some(e) => *e = entry,
        None => list.push(entry),
    }
}

fn secret_volume(name: &str, secret: &str) -> Value {
    json!({"name": name, "secret": {"secretName": secret}})
}

fn mount(name: &str, path: &str) -> Value {
    json!({"name": name, "mountPath": path, "readOnly": true})
}

fn env(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::manifests::parse_str;
    use std::path::Path;

    const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: celestial-server
          image: x/y:z
          ports: [{name: http, containerPort: 3000}]
          env: [{name: CELESTIAL_PORT, value: "3000"}]
        - name: sidecar
          image: x/s:1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

    fn manifests() -> Vec<Manifest> {
        parse_str(Path::new("m.yaml"), MANIFESTS).unwrap()
    }

    fn names(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn api_keys_mount_the_secret_as_the_keys_file_once() {
        let mut m = manifests();
        mount_api_keys(&mut m, "keys", None).unwrap();
        mount_api_keys(&mut m, "keys", None).unwrap(); // a re-run changes nothing
        let pod = &m[0].object["spec"]["template"]["spec"];
        assert_eq!(
            pod["volumes"],
            json!([{"name": API_KEYS_VOLUME, "secret": {"secretName": "keys"}}])
        );
        let c = &pod["containers"][0];
        assert_eq!(names(&c["volumeMounts"]), [API_KEYS_VOLUME]);
        assert_eq!(c["volumeMounts"][0]["mountPath"], API_KEYS_DIR);
        assert_eq!(
            names(&c["env"]),
            ["CELESTIAL_PORT", server_env::API_KEYS_FILE]
        );
        assert_eq!(c["env"][1]["value"], "/etc/celestial/api-keys/api-keys");
        assert!(
            pod["containers"][1].get("env").is_none(),
            "the sidecar is left alone"
        );
        assert_eq!(
            m[1].object["spec"]["ports"][0]["port"], 80,
            "keys alone keep the Service"
        );
    }

    #[test]
    fn the_api_key_secret_is_found_in_a_template_that_mounts_it() {
        let mut m = manifests();
        let template = m[0].object["spec"]["template"].clone();
        assert_eq!(api_key_secret_of(&template), None);
        mount_api_keys(&mut m, "keys", None).unwrap();
        let template = &m[0].object["spec"]["template"];
        assert_eq!(api_key_secret_of(template), Some("keys"));
    }

    #[test]
    fn tls_mounts_the_secret_and_turns_the_service_to_443() {
        let mut m = manifests();
        enable_tls(&mut m, "cert", Some("celestial-server")).unwrap();
        let pod = &m[0].object["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["secret"]["secretName"], "cert");
        let c = &pod["containers"][0];
        assert_eq!(names(&c["ports"]), ["http", HTTPS_PORT_NAME]);
        assert_eq!(c["ports"][1]["containerPort"], 3443);
        let env = names(&c["env"]);
        for var in [
            server_env::TLS_CERT,
            server_env::TLS_KEY,
            server_env::TLS_PORT,
        ] {
            assert!(env.contains(&var), "{env:?}");
        }
        assert_eq!(
            m[1].object["spec"]["ports"],
            json!([{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}])
        );
    }

    #[test]
    fn without_a_deployment_or_a_known_container_it_says_so() {
        let mut services: Vec<Manifest> = manifests().split_off(1);
        assert!(matches!(
            mount_api_keys(&mut services, "k", None),
            Err(ManifestError::NoDeployment)
        ));
        let mut m = manifests();
        assert!(matches!(
            enable_tls(&mut m, "c", Some("nope")),
            Err(ManifestError::Container { .. })
        ));
    }
}
