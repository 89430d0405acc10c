//! The pure image build (no I/O): the layer's files, the config (entrypoint, port 3000, non-root
//! user, OCI labels) and the manifest, from the base and the inputs. Reproducible: see
//! [`super::layout`]; `created` comes from SOURCE_DATE_EPOCH or the git commit time.

use std::collections::BTreeMap;

use oci_client::Reference;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde_json::{Value, json};

use super::layout::{Entry, canonical_json, deterministic_gzip, deterministic_tar};
use super::media::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST,
    descriptor, manifest_bytes, sha256_digest,
};

/// Where files go in the image.
pub const APP_DIR: &str = "app";
/// The user the server runs as (distroless `nonroot`).
pub const USER: &str = "65532:65532";
/// The port the server listens on.
pub const PORT: u16 = 3000;

/// The files that go into the layer.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub binary: Vec<u8>,
    pub onnxruntime: Vec<u8>,
    pub onnxruntime_name: String,
    pub model: Option<(Vec<u8>, String)>,
}

impl Inputs {
    /// The layer's files and the environment that points the server at them.
    pub fn entries(&self) -> (BTreeMap<String, Entry>, Vec<String>) {
        let mut e = BTreeMap::new();
        e.insert(
            format!("{APP_DIR}/celestial-server"),
            Entry::File {
                data: self.binary.clone(),
                mode: 0o755,
            },
        );
        e.insert(
            format!("{APP_DIR}/{}", self.onnxruntime_name),
            Entry::File {
                data: self.onnxruntime.clone(),
                mode: 0o644,
            },
        );
        if self.onnxruntime_name != "libonnxruntime.so" {
            e.insert(
                format!("{APP_DIR}/libonnxruntime.so"),
                Entry::Symlink(self.onnxruntime_name.clone()),
            );
        }
        let mut env = vec![format!(
            "ORT_DYLIB_PATH=/{APP_DIR}/{}",
            self.onnxruntime_name
        )];
        if let Some((data, name)) = &self.model {
            e.insert(
                format!("{APP_DIR}/model/{name}"),
                Entry::File {
                    data: data.clone(),
                    mode: 0o644,
                },
            );
            env.push(format!("CELESTIAL_MODEL=/{APP_DIR}/model/{name}"));
        }
        (e, env)
    }
}

/// Labels and creation time.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub created_epoch: i64,
    pub source: Option<String>,
    pub revision: String,
    pub version: String,
}

impl Metadata {
    pub fn created_rfc3339(&self) -> String {
        jiff::Timestamp::from_second(self.created_epoch)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
    }
}

/// The base image: its manifest (one platform) and config.
#[derive(Debug, Clone)]
pub struct Base {
    pub reference: Reference,
    pub manifest: OciImageManifest,
    pub manifest_digest: String,
    /// The image config, kept as JSON: every field the base sets is carried over as it is.
    pub config: Value,
    /// True for Docker v2 schema 2 media types, false for OCI.
    pub docker: bool,
}

impl Base {
    /// The base's layer descriptors, in order.
    pub fn layers(&self) -> &[OciDescriptor] {
        &self.manifest.layers
    }
}

/// A built (not yet pushed) image.
#[derive(Debug, Clone)]
pub struct Built {
    pub layer_gz: Vec<u8>,
    pub layer_digest: String,
    pub diff_id: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: &'static str,
}

/// The one layer this build adds: its uncompressed digest (diff_id), gzip bytes and digest.
struct Layer {
    diff_id: String,
    gz: Vec<u8>,
    digest: String,
}

/// Assembles the image from the base and the inputs (pure: no I/O).
pub fn assemble(base: &Base, inputs: &Inputs, meta: &Metadata) -> Built {
    let (entries, env_add) = inputs.entries();
    let tar = deterministic_tar(&entries, meta.created_epoch.max(0).unsigned_abs());
    let gz = deterministic_gzip(&tar);
    let layer = Layer {
        diff_id: sha256_digest(&tar),
        digest: sha256_digest(&gz),
        gz,
    };
    let config = canonical_json(&image_config(base, &env_add, &layer.diff_id, meta));
    let config_digest = sha256_digest(&config);
    let manifest = image_manifest(base, &config, &layer, meta);
    let manifest_media_type = if base.docker {
        DOCKER_MANIFEST
    } else {
        OCI_MANIFEST
    };
    let manifest = manifest_bytes(&manifest);
    Built {
        manifest_digest: sha256_digest(&manifest),
        layer_gz: layer.gz,
        layer_digest: layer.digest,
        diff_id: layer.diff_id,
        config,
        config_digest,
        manifest,
        manifest_media_type,
    }
}

/// The base's image config with this build's container config, the new layer's diff_id and a
/// history entry.
fn image_config(base: &Base, env_add: &[String], diff_id: &str, meta: &Metadata) -> Value {
    let created = meta.created_rfc3339();
    let mut config = base.config.clone();
    config["created"] = json!(created);
    let c = config
        .get("config")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    config["config"] = container_config(c, env_add, base, meta);
    let mut diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    diff_ids.push(json!(diff_id));
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let mut history = config["history"].as_array().cloned().unwrap_or_default();
    history.push(json!({
        "created": created,
        "created_by": "deployer build: /app/celestial-server, ONNX Runtime, model",
        "comment": format!("deployer {}", env!("CARGO_PKG_VERSION")),
    }));
    config["history"] = json!(history);
    config
}

/// The container config: the base's, with the environment, entrypoint, user, port, health check
/// and OCI labels of this image.
fn container_config(mut c: Value, env_add: &[String], base: &Base, meta: &Metadata) -> Value {
    let mut env: Vec<String> = c["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for e in env_add {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    c["Env"] = json!(env);
    c["Entrypoint"] = json!([format!("/{APP_DIR}/celestial-server")]);
    c["Cmd"] = Value::Null;
    c["User"] = json!(USER);
    c["WorkingDir"] = json!(format!("/{APP_DIR}"));
    c["ExposedPorts"] = json!({ format!("{PORT}/tcp"): {} });
    // The same health check as the Dockerfile's HEALTHCHECK (Docker's image-config field; runtimes
    // that do not know it ignore it): the server's own `healthcheck` subcommand, no curl needed.
    c["Healthcheck"] = json!({
        "Test": ["CMD", format!("/{APP_DIR}/celestial-server"), "healthcheck"],
        "Interval": 10_000_000_000u64,
        "Timeout": 3_000_000_000u64,
        "StartPeriod": 5_000_000_000u64,
        "Retries": 3,
    });
    let mut labels = c["Labels"].as_object().cloned().unwrap_or_default();
    let created = meta.created_rfc3339();
    if let Some(source) = &meta.source {
        labels.insert("org.opencontainers.image.source".into(), json!(source));
    }
    for (k, v) in [
        ("revision", meta.revision.as_str()),
        ("version", meta.version.as_str()),
        ("created", created.as_str()),
        ("title", "celestial-server"),
        ("base.name", &base.reference.whole()),
        ("base.digest", base.manifest_digest.as_str()),
    ] {
        labels.insert(format!("org.opencontainers.image.{k}"), json!(v));
    }
    c["Labels"] = Value::Object(labels);
    if let Some(obj) = c.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    c
}

/// The manifest: the base's layers plus this one, in the base's format (Docker or OCI); an OCI
/// manifest also names its base and creation time in annotations.
fn image_manifest(base: &Base, config: &[u8], layer: &Layer, meta: &Metadata) -> OciImageManifest {
    let (manifest_type, config_type, layer_type) = if base.docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    };
    let mut layers = base.layers().to_vec();
    layers.push(descriptor(layer_type, &layer.digest, layer.gz.len()));
    let annotations = (!base.docker).then(|| {
        BTreeMap::from([
            (
                "org.opencontainers.image.base.name".to_string(),
                base.reference.whole(),
            ),
            (
                "org.opencontainers.image.base.digest".to_string(),
                base.manifest_digest.clone(),
            ),
            (
                "org.opencontainers.image.created".to_string(),
                meta.created_rfc3339(),
            ),
        ])
    });
    OciImageManifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_string()),
        config: descriptor(config_type, &sha256_digest(config), config.len()),
        layers,
        subject: None,
        artifact_type: None,
        annotations,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A base image (OCI or Docker format) as `pull_base` returns it.
    pub(crate) fn base(docker: bool) -> Base {
        Base {
            reference: "127.0.0.1:5000/distroless/cc-debian12:nonroot"
                .parse()
                .unwrap(),
            manifest: serde_json::from_value(json!({"schemaVersion": 2,
                "config": {"mediaType": OCI_CONFIG, "digest": format!("sha256:{}", "4".repeat(64)), "size": 10},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": format!("sha256:{}", "1".repeat(64)), "size": 10}]}))
            .unwrap(),
            manifest_digest: format!("sha256:{}", "2".repeat(64)),
            config: json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin", "ORT_DYLIB_PATH=/old"], "User": "0", "Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "3".repeat(64))]}, "history": [{"created_by": "base"}]}),
            docker,
        }
    }

    pub(crate) fn inputs() -> Inputs {
        Inputs {
            binary: b"binary".to_vec(),
            onnxruntime: b"ort".to_vec(),
            onnxruntime_name: "libonnxruntime.so.1.31.1".into(),
            model: Some((b"onnx".to_vec(), "celestial-bodies.onnx".into())),
        }
    }

    pub(crate) fn meta() -> Metadata {
        Metadata {
            created_epoch: 1_764_000_000,
            source: Some("https://example.invalid/celestial".into()),
            revision: "abc".into(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn assemble_is_reproducible_and_sets_the_config() {
        let a = assemble(&base(false), &inputs(), &meta());
        let b = assemble(&base(false), &inputs(), &meta());
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.manifest, b.manifest);
        let mut other = inputs();
        other.binary.push(b'!');
        assert_ne!(
            assemble(&base(false), &other, &meta()).manifest_digest,
            a.manifest_digest
        );

        let cfg: Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(
            cfg["config"]["Entrypoint"],
            json!(["/app/celestial-server"])
        );
        assert!(cfg["config"].get("Cmd").is_none());
        assert_eq!(cfg["config"]["User"], "65532:65532");
        assert_eq!(cfg["config"]["ExposedPorts"], json!({"3000/tcp": {}}));
        assert_eq!(
            cfg["config"]["Healthcheck"]["Test"],
            json!(["CMD", "/app/celestial-server", "healthcheck"])
        );
        assert_eq!(
            cfg["config"]["Env"],
            json!([
                "PATH=/usr/bin",
                "ORT_DYLIB_PATH=/app/libonnxruntime.so.1.31.1",
                "CELESTIAL_MODEL=/app/model/celestial-bodies.onnx"
            ])
        );
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.revision"],
            "abc"
        );
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.created"],
            "2025-11-24T16:00:00Z"
        );
        assert_eq!(
            cfg["config"]["Labels"]["org.opencontainers.image.source"],
            "https://example.invalid/celestial"
        );
        // Without a known source, no made-up one: the label is left out.
        let unsourced = Metadata {
            source: None,
            ..meta()
        };
        let cfg_unsourced: Value =
            serde_json::from_slice(&assemble(&base(false), &inputs(), &unsourced).config).unwrap();
        assert!(
            cfg_unsourced["config"]["Labels"]
                .get("org.opencontainers.image.source")
                .is_none()
        );
        assert_eq!(cfg["created"], "2025-11-24T16:00:00Z");
        assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
        assert_eq!(cfg["rootfs"]["diff_ids"][1], json!(a.diff_id));
        assert_eq!(cfg["history"].as_array().unwrap().len(), 2);

        let m: Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["mediaType"], OCI_MANIFEST);
        assert_eq!(m["config"]["digest"], json!(a.config_digest));
        assert_eq!(m["layers"][1]["digest"], json!(a.layer_digest));
        assert_eq!(m["layers"][1]["size"], json!(a.layer_gz.len()));
        let d = assemble(&base(true), &inputs(), &meta());
        let m: Value = serde_json::from_slice(&d.manifest).unwrap();
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(m["layers"][1]["mediaType"], DOCKER_LAYER_GZIP);
    }

    /// The digests the build produced before manifests became typed: the pushed bytes must not
    /// change (deterministic builds; published digests stay reproducible).
    #[test]
    fn assembled_bytes_are_stable() {
        let oci = assemble(&base(false), &inputs(), &meta());
        let docker = assemble(&base(true), &inputs(), &meta());
        let config = "sha256:90d30ce320c9ec4466ad9dae1d31a2a8502a776439888ac5e155ed35b58ccb5c";
        assert_eq!(oci.config_digest, config);
        assert_eq!(docker.config_digest, config);
        assert_eq!(
            oci.manifest_digest,
            "sha256:2941b8b27d5e37a74ed591a74f6987b3af1fb8a9b964d6043be2dd446a49732c"
        );
        assert_eq!(
            docker.manifest_digest,
            "sha256:9c101c869bc910442fe4d733b08107c547d2f4c99ce13c579c2b0e8de867aa9d"
        );
    }
}
