//! Reading the Kubernetes manifests (`kubernetes/*.yaml` or `-f` files): multi-document YAML,
//! checked against the Kubernetes API types so that a mistake names its file and field, and setting
//! the server container's image without sed or yq.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A manifest problem: always names the file (and document and field when known).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no manifests (*.yaml, *.yml, *.json) found in {0}")]
    NoFiles(PathBuf),
    #[error("{path}: invalid YAML{location}: {message}")]
    Yaml {
        path: PathBuf,
        location: String,
        message: String,
    },
    #[error("{origin}: field `{field}`: {message}")]
    Field {
        origin: Origin,
        field: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Object { origin: Origin, message: String },
    #[error("no Deployment in the manifests: cannot set the server image")]
    NoDeployment,
    #[error(
        "{origin}: cannot tell which container is the server: {message}; pass --container NAME"
    )]
    Container { origin: Origin, message: String },
    #[error("invalid image reference {0:?}: expected REGISTRY/REPO[:TAG][@sha256:DIGEST]")]
    BadImage(String),
    #[error("{0} and {1} both define {2}")]
    Duplicate(Origin, Origin, String),
    /// `--monitoring` cannot fit the monitoring objects to the manifests.
    #[error("--monitoring: {0}")]
    Monitoring(String),
}

/// Where an object came from: file and 1-based document number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.path.display(), self.document)
    }
}

/// One Kubernetes object from a manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub origin: Origin,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `metadata.namespace` as written (None: the command's namespace applies).
    pub namespace: Option<String>,
    /// The whole object as JSON.
    pub object: Value,
}

impl Manifest {
    /// `Kind/name`, as kubectl prints it.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// The API group (empty for the core group) and version.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        }
    }
}

/// Reads every manifest in `paths` (files, or directories whose *.yaml/*.yml/*.json files are read
/// in name order), validates them and returns them in apply order.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| ManifestError::Read {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| ManifestError::Read {
                    path: p.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && matches!(
                            f.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            if found.is_empty() {
                return Err(ManifestError::NoFiles(p.clone()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut out: Vec<Manifest> = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| ManifestError::Read {
            path: f.clone(),
            source,
        })?;
        for m in parse_str(f, &text)? {
            if let Some(prev) = out.iter().find(|o| {
                o.kind == m.kind
                    && o.name == m.name
                    && o.namespace == m.namespace
                    && o.api_version == m.api_version
            }) {
                return Err(ManifestError::Duplicate(
                    prev.origin.clone(),
                    m.origin.clone(),
                    m.display_name(),
                ));
            }
            out.push(m);
        }
    }
    sort_for_apply(&mut out);
    Ok(out)
}

/// Puts `manifests` in apply order (stable: the order of their files otherwise).
pub fn sort_for_apply(manifests: &mut [Manifest]) {
    manifests.sort_by_key(|m| kind_order(&m.kind));
}

/// Apply order: what others depend on first (namespaces, config), workloads, then autoscalers.
/// Monitoring objects count as config: nothing depends on them, and applied before the workload
/// an apply they refuse (RBAC, validation) stops before the pods change.
fn kind_order(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "ServiceAccount" | "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => 1,
        "ConfigMap" | "Secret" | "PrometheusRule" | "PodMonitor" | "ServiceMonitor" => 2,
        "Service" => 3,
        "PodDisruptionBudget" => 4,
        "Deployment" | "StatefulSet" | "DaemonSet" => 5,
        "HorizontalPodAutoscaler" => 6,
        _ => 7,
    }
}

/// Parses one file's text (multi-document YAML or JSON); empty documents are skipped.
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            path: path.to_path_buf(),
            document: i + 1,
        };
        let yaml = serde_yaml_ng::Value::deserialize(doc).map_err(|e| ManifestError::Yaml {
            path: path.to_path_buf(),
            location: e
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default(),
            message: strip_location(&e.to_string()),
        })?;
        if yaml.is_null() {
            continue;
        }
        let object: Value = serde_json::to_value(&yaml).map_err(|e| ManifestError::Object {
            origin: origin.clone(),
            message: format!("not representable as JSON: {e}"),
        })?;
        out.push(check_object(origin, object)?);
    }
    Ok(out)
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn required_str(
    origin: &Origin,
    object: &Value,
    pointer: &str,
    field: &str,
) -> Result<String, ManifestError> {
    match object.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(ManifestError::Field {
            origin: origin.clone(),
            field: field.into(),
            message: "is required".into(),
        }),
        Some(other) => Err(ManifestError::Field {
            origin: origin.clone(),
            field: field.into(),
            message: format!("must be a string, found {}", json_type(other)),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn check_object(origin: Origin, object: Value) -> Result<Manifest, ManifestError> {
    if !object.is_object() {
        return Err(ManifestError::Object {
            origin,
            message: format!(
                "a Kubernetes object must be a mapping, found {}",
                json_type(&object)
            ),
        });
    }
    let api_version = required_str(&origin, &object, "/apiVersion", "apiVersion")?;
    let kind = required_str(&origin, &object, "/kind", "kind")?;
    let name = required_str(&origin, &object, "/metadata/name", "metadata.name")?;
    let namespace = match object.pointer("/metadata/namespace") {
        None | Some(Value::Null) => None,
        Some(_) => Some(required_str(
            &origin,
            &object,
            "/metadata/namespace",
            "metadata.namespace",
        )?),
    };
    // Check the well-known kinds against the API types: a wrong type or a missing required field
    // is reported with its path (the API server's strict field validation catches unknown fields).
    use k8s_openapi::api;
    let typed = match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => typed_check::<api::apps::v1::Deployment>(&origin, &object),
        ("v1", "Service") => typed_check::<api::core::v1::Service>(&origin, &object),
        ("v1", "ConfigMap") => typed_check::<api::core::v1::ConfigMap>(&origin, &object),
        ("v1", "ServiceAccount") => typed_check::<api::core::v1::ServiceAccount>(&origin, &object),
        ("policy/v1", "PodDisruptionBudget") => {
            typed_check::<api::policy::v1::PodDisruptionBudget>(&origin, &object)
        }
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            typed_check::<api::autoscaling::v2::HorizontalPodAutoscaler>(&origin, &object)
        }
        _ => Ok(()),
    };
    typed?;
    if kind == "Deployment" {
        check_deployment(&origin, &object)?;
    }
    Ok(Manifest {
        origin,
        api_version,
        kind,
        name,
        namespace,
        object,
    })
}

fn typed_check<T: DeserializeOwned>(origin: &Origin, object: &Value) -> Result<(), ManifestError> {
    let de = object.clone();
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(_) => Ok(()),
        Err(e) => {
            let field = e.path().to_string();
            Err(ManifestError::Field {
                origin: origin.clone(),
                field,
                message: e.into_inner().to_string(),
            })
        }
    }
}

fn check_deployment(origin: &Origin, object: &Value) -> Result<(), ManifestError> {
    let containers = object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        return Err(ManifestError::Field {
            origin: origin.clone(),
            field: "spec.template.spec.containers".into(),
            message: "a Deployment needs at least one container".into(),
        });
    };
    for (i, c) in containers.iter().enumerate() {
        for key in ["name", "image"] {
            required_str(
                origin,
                c,
                &format!("/{key}"),
                &format!("spec.template.spec.containers[{i}].{key}"),
            )?;
        }
    }
    Ok(())
}

/// Checks that `image` looks like an image reference a kubelet can pull.
pub fn validate_image_ref(image: &str) -> Result<(), ManifestError> {
    let ok = !image.is_empty()
        && !image.chars().any(|c| c.is_whitespace() || c.is_control())
        && !image.starts_with(['/', ':', '@'])
        && !image.ends_with([':', '@', '/'])
        && match image.split_once('@') {
            Some((_, d)) => {
                d.starts_with("sha256:")
                    && d.len() == 71
                    && d[7..].chars().all(|c| c.is_ascii_hexdigit())
            }
            None => true,
        };
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadImage(image.to_string()))
    }
}

/// Sets the server container's image in every Deployment (see [`server_container_index`]).
/// Returns the Deployments changed.
pub fn set_image(
    manifests: &mut [Manifest],
    image: &str,
    container: Option<&str>,
) -> Result<Vec<String>, ManifestError> {
    validate_image_ref(image)?;
    let mut changed = Vec::new();
    for m in manifests.iter_mut().filter(|m| m.kind == "Deployment") {
        let idx = server_container_index(m, container)?;
        m.object["spec"]["template"]["spec"]["containers"][idx]["image"] =
            Value::String(image.to_string());
        changed.push(m.display_name());
    }
    if changed.is_empty() {
        return Err(ManifestError::NoDeployment);
    }
    Ok(changed)
}

/// The index of the server container in a Deployment: the one named `container` if given, else
/// the only container, else the one named `celestial-server`.
pub fn server_container_index(
    m: &Manifest,
    container: Option<&str>,
) -> Result<usize, ManifestError> {
    let containers = m
        .object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let find = |n: &str| names.iter().position(|x| *x == n);
    match container {
        Some(n) => find(n).ok_or_else(|| ManifestError::Container {
            origin: m.origin.clone(),
            message: format!(
                "no container named {n:?} (containers: {})",
                names.join(", ")
            ),
        }),
        None if names.len() == 1 => Ok(0),
        None => find("celestial-server").ok_or_else(|| ManifestError::Container {
            origin: m.origin.clone(),
            message: format!(
                "{} containers ({}) and none is named celestial-server",
                names.len(),
                names.join(", ")
            ),
        }),
    }
}

/// The server image currently written in the manifests (first Deployment).
pub fn current_image(manifests: &[Manifest], container: Option<&str>) -> Option<String> {
    let m = manifests.iter().find(|m| m.kind == "Deployment")?;
    let idx = server_container_index(m, container).ok()?;
    m.object["spec"]["template"]["spec"]["containers"][idx]["image"]
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: celestial-server
          image: example.invalid/placeholder:latest
        - name: sidecar
          image: busybox
---
# empty documents are skipped
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 3000}]
"#;

    fn p() -> PathBuf {
        PathBuf::from("kubernetes/app.yaml")
    }

    #[test]
    fn multi_document_and_order() {
        let ms = parse_str(&p(), DEPLOY).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].display_name(), "Deployment/web");
        assert_eq!(ms[1].origin.document, 3);
        assert_eq!(ms[1].group_version(), ("", "v1"));
        assert_eq!(ms[0].group_version(), ("apps", "v1"));
    }

    #[test]
    fn set_image_picks_the_server_container() {
        let mut ms = parse_str(&p(), DEPLOY).unwrap();
        let img = format!("127.0.0.1:5000/celestial/server@sha256:{}", "a".repeat(64));
        let changed = set_image(&mut ms, &img, None).unwrap();
        assert_eq!(changed, vec!["Deployment/web"]);
        assert_eq!(current_image(&ms, None).unwrap(), img);
        assert_eq!(
            ms[0].object["spec"]["template"]["spec"]["containers"][1]["image"],
            "busybox"
        );
        set_image(&mut ms, "other:1", Some("sidecar")).unwrap();
        assert_eq!(
            ms[0].object["spec"]["template"]["spec"]["containers"][1]["image"],
            "other:1"
        );
        let err = set_image(&mut ms, "x:1", Some("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no container named \"nope\""), "{err}");
    }

    #[test]
    fn bad_image_refs() {
        for bad in ["", "a b", "repo@sha256:123", "repo:", "/x"] {
            assert!(validate_image_ref(bad).is_err(), "{bad:?}");
        }
        for good in [
            "nginx",
            "127.0.0.1:5000/a/b:tag",
            "r/x@sha256:0123456789012345678901234567890123456789012345678901234567890123",
        ] {
            validate_image_ref(good).unwrap();
        }
    }

    #[test]
    fn wrong_field_type_names_file_and_field() {
        let bad = DEPLOY.replace("replicas: 2", "replicas: two");
        let err = parse_str(&p(), &bad).unwrap_err().to_string();
        assert!(
            err.starts_with("kubernetes/app.yaml (document 1): field `spec.replicas`"),
            "{err}"
        );
        let bad = DEPLOY.replace("port: 80,", "port: eighty,");
        let err = parse_str(&p(), &bad).unwrap_err().to_string();
        assert!(
            err.contains("(document 3): field `spec.ports[0].port`"),
            "{err}"
        );
    }

    #[test]
    fn missing_fields_and_yaml_errors() {
        let err = parse_str(&p(), "apiVersion: v1\nkind: Service\nmetadata: {}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "kubernetes/app.yaml (document 1): field `metadata.name`: is required"
        );
        let err = parse_str(&p(), "kind: Service\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field `apiVersion`: is required"), "{err}");
        let err = parse_str(&p(), "apiVersion: v1\nkind: [Service\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("kubernetes/app.yaml: invalid YAML at line"),
            "{err}"
        );
        let err = parse_str(&p(), "- 1\n- 2\n").unwrap_err().to_string();
        assert!(err.contains("must be a mapping"), "{err}");
        let no_image = DEPLOY.replace("          image: busybox\n", "");
        let err = parse_str(&p(), &no_image).unwrap_err().to_string();
        assert!(
            err.contains("field `spec.template.spec.containers[1].image`: is required"),
            "{err}"
        );
    }

    #[test]
    fn load_reads_directories_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), DEPLOY).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let ms = load(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            ms.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(),
            ["Service", "Deployment"]
        );
        std::fs::write(dir.path().join("c.yml"), DEPLOY).unwrap();
        let err = load(&[dir.path().to_path_buf()]).unwrap_err().to_string();
        assert!(err.contains("both define"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(&[empty.path().to_path_buf()]),
            Err(ManifestError::NoFiles(_))
        ));
    }
}
