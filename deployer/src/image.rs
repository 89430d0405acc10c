//! `deployer build`: a daemonless, reproducible image build in the spirit of ko/jib. Fetches the
//! base image, adds ONE layer (server binary, ONNX Runtime library, model), writes the config
//! (entrypoint, port 3000, non-root user, OCI labels), pushes blobs and manifest.
//!
//! Reproducible: the layer tar has sorted entries with fixed times, owners and modes; gzip has no
//! timestamp or name; the JSON is serialized deterministically; `created` comes from
//! SOURCE_DATE_EPOCH or the git commit time. The same inputs give the same digest.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oci_client::{Client, Reference};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::glibc;
use crate::options::{BuildOptions, RegistryOptions};
use crate::registry::{self, CredentialSource, Credentials, RegistryError, classify};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Where files go in the image.
pub const APP_DIR: &str = "app";
/// The user the server runs as (distroless `nonroot`).
pub const USER: &str = "65532:65532";
/// The port the server listens on.
pub const PORT: u16 = 3000;

/// An image build or push problem.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {path}: {message}")]
    Input {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the server binary needs {} but the base image {base} provides glibc up to {newest}: use a newer base (--base), or build the binary against an older glibc", join(.missing))]
    GlibcTooOld {
        base: String,
        missing: Vec<glibc::GlibcVersion>,
        newest: String,
    },
    #[error(
        "the base image {base} has no glibc (libc.so.6) but the server binary is dynamically linked against it; use a glibc base such as gcr.io/distroless/cc-debian12"
    )]
    NoGlibc { base: String },
    #[error("the server binary is built for {binary} but the base image {base} is {base_arch}")]
    Architecture {
        base: String,
        binary: String,
        base_arch: String,
    },
    #[error("base image {base}: {message}")]
    Base { base: String, message: String },
    #[error("archive {path}: {message}")]
    Archive { path: PathBuf, message: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

fn join(v: &[glibc::GlibcVersion]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One entry of the layer.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A deterministic tar: entries sorted by path, parent directories added, uid/gid 0, fixed mtime.
pub fn deterministic_tar(entries: &BTreeMap<String, Entry>, mtime: u64) -> Vec<u8> {
    let mut all = entries.clone();
    for path in entries.keys() {
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            all.entry(parent.to_string()).or_insert(Entry::Dir);
            p = parent;
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    for (path, entry) in &all {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(mtime);
        h.set_username("root").expect("short name");
        h.set_groupname("root").expect("short name");
        match entry {
            Entry::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .expect("writing to memory");
            }
            Entry::File { data, mode } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
                    .expect("writing to memory");
            }
            Entry::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
                    .expect("writing to memory");
            }
        }
    }
    b.into_inner().expect("writing to memory")
}

/// Deterministic gzip: no timestamp, no file name, fixed OS byte, fixed level.
pub fn deterministic_gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).expect("writing to memory");
    enc.finish().expect("writing to memory")
}

/// Serializes JSON with sorted keys and no whitespace (canonical enough for a stable digest).
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).expect("JSON serializes")
}

/// The files that go into the layer.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub binary: Vec<u8>,
    pub onnxruntime: Vec<u8>,
    pub onnxruntime_name: String,
    pub model: Option<(Vec<u8>, String)>,
}

impl Inputs {
    /// Reads the binary, ONNX Runtime library and model named by the options.
    pub fn read(opts: &BuildOptions) -> Result<Inputs, ImageError> {
        let read = |what: &'static str, p: &Path| {
            std::fs::read(p).map_err(|e| ImageError::Input {
                what,
                path: p.to_path_buf(),
                message: e.to_string(),
            })
        };
        let binary = read("server binary", &opts.server_binary).map_err(|e| match e {
            ImageError::Input {
                what,
                path,
                message,
            } => ImageError::Input {
                what,
                path,
                message: format!(
                    "{message} (build it with `cargo build --release -p celestial-server`)"
                ),
            },
            other => other,
        })?;
        let ort_path = match &opts.onnxruntime {
            Some(p) => p.clone(),
            None => default_onnxruntime()?,
        };
        let onnxruntime = read("ONNX Runtime library", &ort_path)?;
        let onnxruntime_name = ort_path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("libonnxruntime.so"))
            .map(str::to_string)
            .unwrap_or_else(|| "libonnxruntime.so".to_string());
        let model = if opts.model.as_os_str().is_empty() {
            None
        } else {
            let name = opts
                .model
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model.onnx")
                .to_string();
            Some((read("model", &opts.model)?, name))
        };
        Ok(Inputs {
            binary,
            onnxruntime,
            onnxruntime_name,
            model,
        })
    }

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

/// $ORT_DYLIB_PATH, else what `scripts/onnxruntime.sh` prints (it fetches and caches the pinned library).
fn default_onnxruntime() -> Result<PathBuf, ImageError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let script = PathBuf::from("scripts/onnxruntime.sh");
    let err = |message: String| ImageError::Input {
        what: "ONNX Runtime library",
        path: script.clone(),
        message,
    };
    if !script.exists() {
        return Err(err(
            "not found: pass --onnxruntime PATH or set ORT_DYLIB_PATH (or run from the repository root)".into(),
        ));
    }
    let out = std::process::Command::new(&script)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    if path.is_empty() {
        return Err(err("printed no path".into()));
    }
    Ok(PathBuf::from(path))
}

/// Labels and creation time.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub created_epoch: i64,
    pub source: String,
    pub revision: String,
    pub version: String,
}

impl Metadata {
    /// From the flags, then git, then the crate's metadata.
    pub fn resolve(opts: &BuildOptions) -> Metadata {
        let git = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new("git").args(args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let created_epoch = opts
            .source_date_epoch
            .or_else(|| git(&["log", "-1", "--format=%ct"]).and_then(|s| s.parse().ok()))
            .unwrap_or(0);
        Metadata {
            created_epoch,
            source: opts
                .source_url
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_REPOSITORY").to_string()),
            revision: opts
                .revision
                .clone()
                .or_else(|| git(&["rev-parse", "HEAD"]))
                .unwrap_or_else(|| "unknown".into()),
            version: opts
                .image_version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        }
    }

    pub fn created_rfc3339(&self) -> String {
        jiff::Timestamp::from_second(self.created_epoch)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
    }
}

/// A descriptor in a manifest.
fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// The base image: its manifest (one platform) and config.
#[derive(Debug, Clone)]
pub struct Base {
    pub reference: Reference,
    pub manifest: Value,
    pub manifest_digest: String,
    pub config: Value,
    /// True for Docker v2 schema 2 media types, false for OCI.
    pub docker: bool,
}

impl Base {
    pub fn layers(&self) -> Vec<Value> {
        self.manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Parses `os/arch[/variant]`.
fn parse_platform(p: &str) -> (String, String, Option<String>) {
    let mut it = p.split('/');
    let os = it.next().unwrap_or("linux").to_string();
    let arch = it.next().unwrap_or("amd64").to_string();
    (os, arch, it.next().map(str::to_string))
}

/// Fetches a blob, through a content-addressed cache (verified by digest).
pub async fn fetch_blob(
    client: &Client,
    reference: &Reference,
    digest: &str,
    creds: &Credentials,
    insecure: &[String],
) -> Result<Vec<u8>, RegistryError> {
    let cache = blob_cache_path(digest);
    if let Some(p) = &cache
        && let Ok(data) = std::fs::read(p)
        && sha256_digest(&data) == digest
    {
        return Ok(data);
    }
    let mut out: Vec<u8> = Vec::new();
    client
        .pull_blob(reference, digest, &mut out)
        .await
        .map_err(|e| classify(e, reference, "pull", creds, insecure))?;
    if sha256_digest(&out) != digest {
        return Err(RegistryError::Protocol {
            registry: reference.resolve_registry().into(),
            message: format!("blob {digest} does not match its digest"),
        });
    }
    if let Some(p) = cache
        && let Some(dir) = p.parent()
    {
        let _ = std::fs::create_dir_all(dir);
        let tmp = p.with_extension("partial");
        if std::fs::write(&tmp, &out).is_ok() {
            let _ = std::fs::rename(&tmp, &p);
        }
    }
    Ok(out)
}

fn blob_cache_path(digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    let root = std::env::var_os("CELESTIAL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/celestial")))?;
    Some(root.join("oci-blobs/v1/sha256").join(hex))
}

/// Pulls the base image's manifest (choosing `platform` from an index) and config.
pub async fn pull_base(
    client: &Client,
    reference: &Reference,
    platform: &str,
    creds: &Credentials,
    insecure: &[String],
) -> Result<Base, ImageError> {
    let base = reference.whole();
    let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let (bytes, digest) = client
        .pull_manifest_raw(reference, &creds.auth, &accepted)
        .await
        .map_err(|e| classify(e, reference, "pull", creds, insecure))?;
    let bad = |message: String| ImageError::Base {
        base: base.clone(),
        message,
    };
    let mut manifest: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
    let mut manifest_digest = digest;
    let mut media = manifest["mediaType"].as_str().unwrap_or("").to_string();
    if media.is_empty() && manifest.get("manifests").is_some() {
        media = OCI_INDEX.into();
    }
    if media == OCI_INDEX || media == DOCKER_LIST {
        let (os, arch, variant) = parse_platform(platform);
        let entry = manifest["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                let p = &m["platform"];
                p["os"] == os.as_str()
                    && p["architecture"] == arch.as_str()
                    && variant.as_deref().is_none_or(|v| p["variant"] == v)
            })
            .cloned()
            .ok_or_else(|| bad(format!("no {platform} image in its index")))?;
        let d = entry["digest"]
            .as_str()
            .ok_or_else(|| bad("index entry without digest".into()))?
            .to_string();
        let by_digest = reference.clone_with_digest(d.clone());
        let (bytes, _) = client
            .pull_manifest_raw(&by_digest, &creds.auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
            .await
            .map_err(|e| classify(e, reference, "pull", creds, insecure))?;
        manifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
        manifest_digest = d;
        media = manifest["mediaType"]
            .as_str()
            .unwrap_or(OCI_MANIFEST)
            .to_string();
    }
    let docker = match media.as_str() {
        DOCKER_MANIFEST => true,
        OCI_MANIFEST | "" => false,
        other => return Err(bad(format!("unsupported manifest media type {other}"))),
    };
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("manifest has no config".into()))?
        .to_string();
    let config_bytes = fetch_blob(client, reference, &config_digest, creds, insecure).await?;
    let config: Value = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(format!("config is not JSON: {e}")))?;
    Ok(Base {
        reference: reference.clone(),
        manifest,
        manifest_digest,
        config,
        docker,
    })
}

/// Reads a layer blob's tar stream (gzip or plain).
fn layer_reader<'a>(media_type: &str, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, String> {
    if media_type.ends_with("gzip") || data.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(data)))
    } else if media_type.ends_with("zstd") {
        Err(format!(
            "cannot inspect a {media_type} layer (only gzip and plain tar)"
        ))
    } else {
        Ok(Box::new(data))
    }
}

/// Finds the base's libc.so.6 (following a symlink to libc-2.x.so) and returns its bytes.
pub fn find_libc(layers: &[(String, Vec<u8>)]) -> Result<Option<Vec<u8>>, String> {
    let mut regular: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for (media_type, data) in layers {
        let mut ar = tar::Archive::new(layer_reader(media_type, data)?);
        for entry in ar
            .entries()
            .map_err(|e| format!("layer is not a tar: {e}"))?
        {
            let mut entry = entry.map_err(|e| format!("layer is not a tar: {e}"))?;
            let path = entry
                .path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_string();
            let name = path.rsplit('/').next().unwrap_or("");
            if !(name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so"))) {
                continue;
            }
            match entry.header().entry_type() {
                tar::EntryType::Regular => {
                    let mut buf = Vec::new();
                    entry.read_to_end(&mut buf).map_err(|e| e.to_string())?;
                    links.remove(&path);
                    regular.insert(path, buf);
                }
                tar::EntryType::Symlink => {
                    if let Ok(Some(t)) = entry.link_name() {
                        regular.remove(&path);
                        links.insert(path, t.to_string_lossy().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    if let Some((_, data)) = regular
        .iter()
        .find(|(p, _)| p.ends_with("/libc.so.6") || *p == "libc.so.6")
    {
        return Ok(Some(data.clone()));
    }
    for (path, target) in &links {
        if !path.ends_with("libc.so.6") {
            continue;
        }
        let target_name = target.rsplit('/').next().unwrap_or(target);
        if let Some((_, data)) = regular
            .iter()
            .find(|(p, _)| p.rsplit('/').next() == Some(target_name))
        {
            return Ok(Some(data.clone()));
        }
    }
    Ok(None)
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

/// Assembles the image from the base and the inputs (pure: no I/O).
pub fn assemble(base: &Base, inputs: &Inputs, meta: &Metadata) -> Built {
    let (entries, env_add) = inputs.entries();
    let mtime = meta.created_epoch.max(0) as u64;
    let tar = deterministic_tar(&entries, mtime);
    let diff_id = sha256_digest(&tar);
    let layer_gz = deterministic_gzip(&tar);
    let layer_digest = sha256_digest(&layer_gz);
    let created = meta.created_rfc3339();

    let mut config = base.config.clone();
    config["created"] = json!(created);
    let mut c = config
        .get("config")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut env: Vec<String> = c["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for e in &env_add {
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
    labels.insert("org.opencontainers.image.source".into(), json!(meta.source));
    labels.insert(
        "org.opencontainers.image.revision".into(),
        json!(meta.revision),
    );
    labels.insert(
        "org.opencontainers.image.version".into(),
        json!(meta.version),
    );
    labels.insert("org.opencontainers.image.created".into(), json!(created));
    labels.insert(
        "org.opencontainers.image.title".into(),
        json!("celestial-server"),
    );
    labels.insert(
        "org.opencontainers.image.base.name".into(),
        json!(base.reference.whole()),
    );
    labels.insert(
        "org.opencontainers.image.base.digest".into(),
        json!(base.manifest_digest),
    );
    c["Labels"] = Value::Object(labels);
    if let Some(obj) = c.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    config["config"] = c;
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
    let config_bytes = canonical_json(&config);
    let config_digest = sha256_digest(&config_bytes);

    let (manifest_type, config_type, layer_type) = if base.docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER_GZIP)
    } else {
        (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    };
    let mut layers = base.layers();
    layers.push(descriptor(layer_type, &layer_digest, layer_gz.len()));
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(config_type, &config_digest, config_bytes.len()),
        "layers": layers,
    });
    if !base.docker {
        manifest["annotations"] = json!({
            "org.opencontainers.image.base.name": base.reference.whole(),
            "org.opencontainers.image.base.digest": base.manifest_digest,
            "org.opencontainers.image.created": created,
        });
    }
    let manifest_bytes = canonical_json(&manifest);
    Built {
        manifest_digest: sha256_digest(&manifest_bytes),
        layer_gz,
        layer_digest,
        diff_id,
        config: config_bytes,
        config_digest,
        manifest: manifest_bytes,
        manifest_media_type: manifest_type,
    }
}

/// Checks that the binary's architecture and glibc needs match the base.
pub fn check_runs_on_base(
    base: &Base,
    binary: &[u8],
    base_layers: &[(String, Vec<u8>)],
) -> Result<(), ImageError> {
    let name = base.reference.whole();
    let info = glibc::binary_info(binary).map_err(|m| ImageError::Input {
        what: "server binary",
        path: PathBuf::from("--server-binary"),
        message: m,
    })?;
    let base_arch = base.config["architecture"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if !base_arch.is_empty() && base_arch != info.architecture {
        return Err(ImageError::Architecture {
            base: name,
            binary: info.architecture.into(),
            base_arch,
        });
    }
    if !info.dynamic || info.required.is_empty() {
        return Ok(());
    }
    let libc = find_libc(base_layers).map_err(|m| ImageError::Base {
        base: name.clone(),
        message: m,
    })?;
    let Some(libc) = libc else {
        return Err(ImageError::NoGlibc { base: name });
    };
    let provided = glibc::libc_versions(&libc).map_err(|m| ImageError::Base {
        base: name.clone(),
        message: m,
    })?;
    let missing = glibc::missing(&info.required, &provided);
    if !missing.is_empty() {
        let newest = provided
            .iter()
            .max()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(ImageError::GlibcTooOld {
            base: name,
            missing,
            newest,
        });
    }
    Ok(())
}

/// Progress callback for builds.
pub type Say<'a> = &'a mut dyn FnMut(&str);

/// The result of a build or push.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// `REGISTRY/REPO@sha256:...`
    pub image: String,
    pub digest: String,
    pub tag: String,
    pub layer_digest: String,
    pub layer_bytes: usize,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
}

/// The image reference to print: `REGISTRY/REPO@sha256:...`.
pub fn by_digest(target: &Reference, digest: &str) -> String {
    format!("{}/{}@{}", target.registry(), target.repository(), digest)
}

/// `deployer build`: builds and pushes, returns the pushed image by digest.
pub async fn build_and_push(
    image: &str,
    opts: &BuildOptions,
    reg: &RegistryOptions,
    creds: &CredentialSource,
    say: Say<'_>,
) -> Result<Pushed, ImageError> {
    let target = registry::parse_reference(image)?;
    let base_ref = registry::parse_reference(&opts.base)?;
    let inputs = Inputs::read(opts)?;
    // A binary that is not an ELF executable is refused before anything is pulled.
    glibc::binary_info(&inputs.binary).map_err(|m| ImageError::Input {
        what: "server binary",
        path: opts.server_binary.clone(),
        message: m,
    })?;
    let meta = Metadata::resolve(opts);
    let insecure = &reg.insecure;
    let client = registry::client_for(
        &[target.resolve_registry(), base_ref.resolve_registry()],
        insecure,
    );
    let same_registry = target.resolve_registry() == base_ref.resolve_registry();
    let base_creds = creds.for_registry(base_ref.resolve_registry(), same_registry)?;
    let target_creds = creds.for_registry(target.resolve_registry(), true)?;

    say(&format!("pulling base {}", base_ref.whole()));
    let base = pull_base(&client, &base_ref, &opts.platform, &base_creds, insecure).await?;
    let mut base_layers = Vec::new();
    for l in base.layers() {
        let d = l["digest"].as_str().unwrap_or_default().to_string();
        let mt = l["mediaType"].as_str().unwrap_or_default().to_string();
        base_layers.push((
            mt,
            fetch_blob(&client, &base_ref, &d, &base_creds, insecure).await?,
        ));
    }
    check_runs_on_base(&base, &inputs.binary, &base_layers)?;
    say("assembling the layer (binary, ONNX Runtime, model)");
    let built = assemble(&base, &inputs, &meta);

    client
        .store_auth_if_needed(target.resolve_registry(), &target_creds.auth)
        .await;
    let mut blobs: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for (l, (_, data)) in base.layers().iter().zip(base_layers) {
        blobs.push((
            l["digest"].as_str().unwrap_or_default().to_string(),
            Some(data),
        ));
    }
    blobs.push((built.layer_digest.clone(), Some(built.layer_gz.clone())));
    blobs.push((built.config_digest.clone(), Some(built.config.clone())));
    if same_registry && target.repository() != base_ref.repository() {
        // Same registry: base layers are mounted from the base repository, not uploaded again.
        for l in base.layers() {
            let d = l["digest"].as_str().unwrap_or_default();
            let present = client
                .blob_exists(&target, d)
                .await
                .map_err(|e| classify(e, &target, "push", &target_creds, insecure))?;
            if !present && client.mount_blob(&target, &base_ref, d).await.is_ok() {
                say(&format!(
                    "mounted {} from {}",
                    short(d),
                    base_ref.repository()
                ));
            }
        }
    }
    let (uploaded, present) =
        push_blobs(&client, &target, &blobs, &target_creds, insecure, say).await?;
    let tag = target.tag().unwrap_or("latest").to_string();
    push_manifest(
        &client,
        &target,
        &tag,
        &built.manifest,
        built.manifest_media_type,
        &target_creds,
        insecure,
    )
    .await?;
    Ok(Pushed {
        image: by_digest(&target, &built.manifest_digest),
        digest: built.manifest_digest.clone(),
        tag,
        layer_digest: built.layer_digest.clone(),
        layer_bytes: built.layer_gz.len(),
        blobs_uploaded: uploaded,
        blobs_present: present,
    })
}

/// Pushes blobs the registry does not have yet; returns (uploaded, already present).
pub async fn push_blobs(
    client: &Client,
    target: &Reference,
    blobs: &[(String, Option<Vec<u8>>)],
    creds: &Credentials,
    insecure: &[String],
    say: Say<'_>,
) -> Result<(usize, usize), RegistryError> {
    let (mut uploaded, mut present) = (0, 0);
    for (digest, data) in blobs {
        let exists = client
            .blob_exists(target, digest)
            .await
            .map_err(|e| classify(e, target, "push", creds, insecure))?;
        if exists {
            present += 1;
            continue;
        }
        let Some(data) = data else { continue };
        say(&format!("pushing {} ({} bytes)", short(digest), data.len()));
        client
            .push_blob(target, data.clone(), digest)
            .await
            .map_err(|e| classify(e, target, "push", creds, insecure))?;
        uploaded += 1;
    }
    Ok((uploaded, present))
}

/// Pushes a manifest under `tag`.
pub async fn push_manifest(
    client: &Client,
    target: &Reference,
    tag: &str,
    manifest: &[u8],
    media_type: &str,
    creds: &Credentials,
    insecure: &[String],
) -> Result<(), RegistryError> {
    let tagged = Reference::with_tag(
        target.registry().to_string(),
        target.repository().to_string(),
        tag.to_string(),
    );
    let ct = reqwest::header::HeaderValue::from_str(media_type).expect("a valid media type");
    client
        .push_manifest_raw(&tagged, manifest.to_vec(), ct)
        .await
        .map_err(|e| classify(e, target, "push", creds, insecure))?;
    Ok(())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> BTreeMap<String, Entry> {
        let mut e = BTreeMap::new();
        e.insert(
            "app/z".into(),
            Entry::File {
                data: b"zz".to_vec(),
                mode: 0o644,
            },
        );
        e.insert(
            "app/a/bin".into(),
            Entry::File {
                data: b"\x7fELF".to_vec(),
                mode: 0o755,
            },
        );
        e.insert("app/link".into(), Entry::Symlink("z".into()));
        e
    }

    #[test]
    fn tar_is_deterministic_sorted_and_owned_by_root() {
        let a = deterministic_tar(&entries(), 1_700_000_000);
        let b = deterministic_tar(&entries(), 1_700_000_000);
        assert_eq!(a, b);
        assert_ne!(a, deterministic_tar(&entries(), 1_700_000_001));
        let mut ar = tar::Archive::new(a.as_slice());
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 1_700_000_000)
            );
            seen.push((
                e.path().unwrap().to_string_lossy().to_string(),
                h.mode().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("app/".to_string(), 0o755),
                ("app/a/".to_string(), 0o755),
                ("app/a/bin".to_string(), 0o755),
                ("app/link".to_string(), 0o777),
                ("app/z".to_string(), 0o644),
            ]
        );
    }

    #[test]
    fn gzip_and_json_are_deterministic() {
        let data = vec![7u8; 100_000];
        assert_eq!(deterministic_gzip(&data), deterministic_gzip(&data));
        let gz = deterministic_gzip(&data);
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "no timestamp");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [2, {"z": 0, "y": 1}], "c": null}}"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":{"c":null,"d":[2,{"y":1,"z":0}]},"b":1}"#
        );
    }

    fn base(docker: bool) -> Base {
        Base {
            reference: "127.0.0.1:5000/distroless/cc-debian12:nonroot"
                .parse()
                .unwrap(),
            manifest: json!({"schemaVersion": 2, "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": format!("sha256:{}", "1".repeat(64)), "size": 10}]}),
            manifest_digest: format!("sha256:{}", "2".repeat(64)),
            config: json!({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin", "ORT_DYLIB_PATH=/old"], "User": "0", "Cmd": ["/bin/sh"]},
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "3".repeat(64))]}, "history": [{"created_by": "base"}]}),
            docker,
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            binary: b"binary".to_vec(),
            onnxruntime: b"ort".to_vec(),
            onnxruntime_name: "libonnxruntime.so.1.31.1".into(),
            model: Some((b"onnx".to_vec(), "celestial-bodies.onnx".into())),
        }
    }

    fn meta() -> Metadata {
        Metadata {
            created_epoch: 1_764_000_000,
            source: "https://example.invalid/celestial".into(),
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

    #[test]
    fn finds_libc_through_symlinks() {
        let mut e = BTreeMap::new();
        e.insert(
            "lib/x86_64-linux-gnu/libc-2.31.so".into(),
            Entry::File {
                data: b"LIBC".to_vec(),
                mode: 0o755,
            },
        );
        e.insert(
            "lib/x86_64-linux-gnu/libc.so.6".into(),
            Entry::Symlink("libc-2.31.so".into()),
        );
        let layer = deterministic_gzip(&deterministic_tar(&e, 0));
        assert_eq!(
            find_libc(&[(OCI_LAYER_GZIP.into(), layer)])
                .unwrap()
                .unwrap(),
            b"LIBC"
        );
        let mut e = BTreeMap::new();
        e.insert(
            "usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            Entry::File {
                data: b"L6".to_vec(),
                mode: 0o755,
            },
        );
        let layer = deterministic_tar(&e, 0);
        assert_eq!(
            find_libc(&[(OCI_LAYER_TAR.into(), layer)])
                .unwrap()
                .unwrap(),
            b"L6"
        );
        let empty = deterministic_tar(&BTreeMap::new(), 0);
        assert!(
            find_libc(&[(OCI_LAYER_TAR.into(), empty)])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn glibc_check_against_a_real_libc() {
        // The real test binary against the host's real libc, packed like a base layer.
        let Some(libc) = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .iter()
        .find(|p| Path::new(p).exists()) else {
            eprintln!("SKIP: no x86_64 glibc on this host");
            return;
        };
        let mut e = BTreeMap::new();
        e.insert(
            "usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            Entry::File {
                data: std::fs::read(libc).unwrap(),
                mode: 0o755,
            },
        );
        let layers = vec![(
            OCI_LAYER_GZIP.to_string(),
            deterministic_gzip(&deterministic_tar(&e, 0)),
        )];
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        check_runs_on_base(&base(false), &exe, &layers).unwrap();
        let no_libc = vec![(
            OCI_LAYER_TAR.to_string(),
            deterministic_tar(&BTreeMap::new(), 0),
        )];
        assert!(matches!(
            check_runs_on_base(&base(false), &exe, &no_libc),
            Err(ImageError::NoGlibc { .. })
        ));
        let mut arm = base(false);
        arm.config["architecture"] = json!("arm64");
        assert!(matches!(
            check_runs_on_base(&arm, &exe, &layers),
            Err(ImageError::Architecture { .. })
        ));
    }
}
