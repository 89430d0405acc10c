//! kubernetes/monitoring/ checked without a cluster (tests/tests/monitoring.rs): its YAML read as
//! JSON values, prometheus-operator's CRDs (from their pinned Go module, tests/env/crds.sh) turned
//! into the per-kind JSON schemas kubeconform looks up, and the cached tools that check them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::repo_root;

/// The directory of kubernetes/monitoring/.
pub fn monitoring_dir() -> PathBuf {
    repo_root().join("kubernetes/monitoring")
}

/// Every YAML document of `path`, as JSON values (empty documents left out).
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// The one YAML document of `path`.
pub fn yaml_document(path: &Path) -> Value {
    let mut docs = yaml_documents(path);
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.remove(0)
}

/// What a repository script prints on stdout (a cache directory); its progress goes to stderr.
fn script_output(script: &str) -> PathBuf {
    let out = Command::new(repo_root().join(script))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The directory of prometheus-operator's CRD files (tests/env/crds.sh: the pinned module in the
/// Go module cache, downloaded when missing; scripts/setup does that first).
pub fn crd_dir() -> PathBuf {
    script_output("tests/env/crds.sh")
}

/// kubeconform of the test environment's cached tools (tests/env/build-tools.sh, which scripts/setup
/// builds; the environment need not run).
pub fn kubeconform() -> PathBuf {
    script_output("tests/env/build-tools.sh").join("kubeconform")
}

/// The file name kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` gives a kind of
/// `group`/`version`: `prometheusrule-monitoring-v1.json` for monitoring.coreos.com/v1.
pub fn schema_file_name(kind: &str, group: &str, version: &str) -> String {
    let group = group.split('.').next().unwrap_or_default();
    format!("{}-{group}-{version}.json", kind.to_lowercase())
}

/// Writes the JSON schema of every served version of the CRD `crd` into `dir` under its
/// [`schema_file_name`], strict: an object schema that lists its properties refuses others (what
/// kubeconform's `-strict` means for the built-in kinds, and what the apiserver's pruning would
/// silently do to a misspelt field). Returns the file names.
pub fn write_crd_schemas(crd: &Value, dir: &Path) -> Vec<String> {
    assert_eq!(crd["kind"], "CustomResourceDefinition", "{crd}");
    let spec = &crd["spec"];
    let (group, kind) = (
        spec["group"].as_str().unwrap(),
        spec["names"]["kind"].as_str().unwrap(),
    );
    let mut names = Vec::new();
    for version in spec["versions"].as_array().unwrap() {
        if version["served"] != true {
            continue;
        }
        let mut schema = version["schema"]["openAPIV3Schema"].clone();
        strict(&mut schema);
        let name = schema_file_name(kind, group, version["name"].as_str().unwrap());
        std::fs::write(dir.join(&name), schema.to_string()).unwrap();
        names.push(name);
    }
    names
}

/// `additionalProperties: false` on every object schema with `properties` and no word of its own
/// on other properties (`additionalProperties`, `x-kubernetes-preserve-unknown-fields`).
fn strict(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("x-kubernetes-preserve-unknown-fields")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

/// The alerting rules of a PrometheusRule, by name (in file order).
pub fn alerts(rule: &Value) -> Vec<(String, Map<String, Value>)> {
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .filter_map(|r| {
            let name = r["alert"].as_str()?;
            Some((name.to_string(), r.as_object().unwrap().clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_names_are_the_ones_kubeconform_looks_up() {
        assert_eq!(
            schema_file_name("PrometheusRule", "monitoring.coreos.com", "v1"),
            "prometheusrule-monitoring-v1.json"
        );
        assert_eq!(
            schema_file_name("PodMonitor", "monitoring.coreos.com", "v1"),
            "podmonitor-monitoring-v1.json"
        );
    }

    #[test]
    fn strict_closes_objects_that_list_their_properties_only() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {}}}},
                "any": {"type": "object"}
            }
        });
        strict(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(
            s["properties"]["labels"]["additionalProperties"]["type"],
            "string"
        );
        assert!(
            s["properties"]["free"]
                .get("additionalProperties")
                .is_none()
        );
        assert_eq!(
            s["properties"]["list"]["items"]["additionalProperties"],
            false
        );
        assert!(s["properties"]["any"].get("additionalProperties").is_none());
    }

    #[test]
    fn every_served_version_gets_a_schema() {
        let crd = json!({
            "kind": "CustomResourceDefinition",
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget"},
                "versions": [
                    {"name": "v1", "served": true, "schema": {"openAPIV3Schema": {"properties": {"spec": {}}}}},
                    {"name": "v1beta1", "served": false, "schema": {"openAPIV3Schema": {}}}
                ]
            }
        });
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            write_crd_schemas(&crd, dir.path()),
            ["widget-example-v1.json"]
        );
        let text = std::fs::read_to_string(dir.path().join("widget-example-v1.json")).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(schema["additionalProperties"], false);
    }
}
