//! `deployer push --archive`: pushes an image built elsewhere, from a `docker save` tarball or an
//! OCI-layout tarball (`podman save --format oci-archive`, `skopeo copy ... oci-archive:`).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use serde::de::DeserializeOwned;

use super::error::ImageError;
use super::layout::deterministic_gzip;
use super::media::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_MANIFEST, descriptor, is_index,
    manifest_bytes, select_platform, sha256_digest,
};
use super::publish::{Image, Pushed, Target, push_image};
use super::registry::{self, CredentialSource, Transport};
use crate::progress::Progress;

/// The files of an archive by path.
type Files = HashMap<String, Vec<u8>>;

/// An image read from an archive, ready to push.
#[derive(Debug)]
pub struct ArchiveImage {
    /// (digest, bytes) of every blob: config and layers.
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
}

/// Reads every file of a (possibly gzip-compressed) tarball.
fn read_tar(path: &Path) -> Result<Files, ImageError> {
    let err = |message: String| ImageError::Archive {
        path: path.into(),
        message,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let reader: Box<dyn Read> = if data.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(data.as_slice()))
    } else {
        Box::new(data.as_slice())
    };
    let mut files = HashMap::new();
    let mut ar = tar::Archive::new(reader);
    for entry in ar
        .entries()
        .map_err(|e| err(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| err(format!("not a tar archive: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| err(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        entry
            .read_to_end(&mut buf)
            .map_err(|e| err(e.to_string()))?;
        files.insert(name, buf);
    }
    if files.is_empty() {
        return Err(err("not a tar archive (or an empty one)".into()));
    }
    Ok(files)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Reads an OCI-layout or `docker save` archive.
pub fn read_archive(path: &Path, platform: &str) -> Result<ArchiveImage, ImageError> {
    let files = read_tar(path)?;
    let err = |message: String| ImageError::Archive {
        path: path.into(),
        message,
    };
    if files.contains_key("index.json") && files.contains_key("oci-layout") {
        return read_oci_layout(&files, platform).map_err(err);
    }
    if files.contains_key("manifest.json") {
        return read_docker_save(&files).map_err(err);
    }
    Err(err(
        "neither an OCI layout (index.json + oci-layout) nor a `docker save` archive (manifest.json)".into(),
    ))
}

/// A file of the archive, parsed as JSON of type `T`.
fn json_file<T: DeserializeOwned>(files: &Files, name: &str) -> Result<T, String> {
    let b = files.get(name).ok_or_else(|| format!("missing {name}"))?;
    serde_json::from_slice(b).map_err(|e| format!("{name} is not valid: {e}"))
}

/// A blob of an OCI layout, checked against its digest.
fn blob<'a>(files: &'a Files, digest: &str) -> Result<&'a Vec<u8>, String> {
    let data = files
        .get(&blob_path(digest))
        .ok_or_else(|| format!("missing blob {digest}"))?;
    if sha256_digest(data) != digest {
        return Err(format!("blob {digest} does not match its digest"));
    }
    Ok(data)
}

/// An OCI layout: from `index.json` down through indexes to one image manifest (choosing the
/// platform when there are several), then its config and layers.
fn read_oci_layout(files: &Files, platform: &str) -> Result<ArchiveImage, String> {
    let mut index: OciImageIndex = json_file(files, "index.json")?;
    // An index may point at another index (a multi-platform image): at most a few levels.
    for _ in 0..4 {
        let entries = &index.manifests;
        let pick = select_platform(entries, platform).ok_or_else(|| {
            format!(
                "{} manifests in the index and none for {platform}",
                entries.len()
            )
        })?;
        let manifest = blob(files, &pick.digest)?.clone();
        if is_index(&pick.media_type) {
            index = serde_json::from_slice(&manifest)
                .map_err(|e| format!("index {} is not valid: {e}", pick.digest))?;
            continue;
        }
        let media_type = match pick.media_type.as_str() {
            OCI_MANIFEST => OCI_MANIFEST,
            DOCKER_MANIFEST => DOCKER_MANIFEST,
            other => return Err(format!("unsupported manifest media type {other}")),
        };
        let parsed: OciImageManifest = serde_json::from_slice(&manifest)
            .map_err(|e| format!("manifest {} is not valid: {e}", pick.digest))?;
        let mut blobs = Vec::new();
        for d in std::iter::once(&parsed.config).chain(&parsed.layers) {
            blobs.push((d.digest.clone(), blob(files, &d.digest)?.clone()));
        }
        return Ok(ArchiveImage {
            blobs,
            manifest,
            media_type,
        });
    }
    Err("indexes nested too deep".into())
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(serde::Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The part of an image config that lists the layers' uncompressed digests.
#[derive(serde::Deserialize)]
struct RootFs {
    rootfs: DiffIds,
}

#[derive(serde::Deserialize)]
struct DiffIds {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A `docker save` archive: the first image's config and layers (gzipped deterministically when
/// stored plain), under a Docker v2 schema 2 manifest made here.
fn read_docker_save(files: &Files) -> Result<ArchiveImage, String> {
    let list: Vec<DockerSaveEntry> = json_file(files, "manifest.json")?;
    let entry = list.first().ok_or("manifest.json lists no image")?;
    let config = files
        .get(&entry.config)
        .cloned()
        .ok_or_else(|| format!("missing {}", entry.config))?;
    let diff_ids = json_file::<RootFs>(files, &entry.config)?.rootfs.diff_ids;
    if entry.layers.len() != diff_ids.len() {
        return Err(format!(
            "{} layers but the config lists {} diff_ids",
            entry.layers.len(),
            diff_ids.len()
        ));
    }
    let config_digest = sha256_digest(&config);
    let mut layers = Vec::new();
    let mut blobs = vec![(config_digest.clone(), config.clone())];
    for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let gz = gzipped_layer(files, name, diff_id)?;
        let digest = sha256_digest(&gz);
        layers.push(descriptor(DOCKER_LAYER_GZIP, &digest, gz.len()));
        blobs.push((digest, gz));
    }
    let manifest = OciImageManifest {
        schema_version: 2,
        media_type: Some(DOCKER_MANIFEST.to_string()),
        config: descriptor(DOCKER_CONFIG, &config_digest, config.len()),
        layers,
        subject: None,
        artifact_type: None,
        annotations: None,
    };
    Ok(ArchiveImage {
        blobs,
        manifest: manifest_bytes(&manifest),
        media_type: DOCKER_MANIFEST,
    })
}

/// A `docker save` layer, gzipped, after checking its tar against the config's diff_id.
fn gzipped_layer(files: &Files, name: &str, diff_id: &str) -> Result<Vec<u8>, String> {
    let raw = files
        .get(name)
        .ok_or_else(|| format!("missing layer {name}"))?;
    let (tar, gz) = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut t = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut t)
            .map_err(|e| format!("layer {name}: {e}"))?;
        (t, raw.clone())
    } else {
        (raw.clone(), deterministic_gzip(raw))
    };
    if sha256_digest(&tar) != diff_id {
        return Err(format!("layer {name} does not match its diff_id {diff_id}"));
    }
    Ok(gz)
}

/// `deployer push --archive`.
pub async fn push_archive(
    path: &Path,
    image: &str,
    platform: &str,
    transport: &Transport,
    creds: &CredentialSource,
    progress: &mut dyn Progress,
) -> Result<Pushed, ImageError> {
    let target = registry::parse_reference(image)?;
    let archive = read_archive(path, platform)?;
    let client = registry::client_for(&[target.resolve_registry()], &transport.insecure);
    let target_creds = creds.for_registry(target.resolve_registry(), true)?;
    let t = Target::new(&client, &target, &target_creds, transport);
    let digest = sha256_digest(&archive.manifest);
    let image = Image {
        blobs: archive
            .blobs
            .iter()
            .map(|(d, b)| (d.clone(), b.as_slice()))
            .collect(),
        manifest: &archive.manifest,
        manifest_digest: &digest,
        media_type: archive.media_type,
        layer: archive
            .blobs
            .last()
            .map(|(d, b)| (d.clone(), b.len()))
            .unwrap_or_default(),
        tagged: true,
    };
    Ok(push_image(&t, &image, progress).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::layout::{Entry, canonical_json, deterministic_tar};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    fn tarball(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut e = BTreeMap::new();
        for (n, d) in files {
            e.insert(
                n.to_string(),
                Entry::File {
                    data: d.clone(),
                    mode: 0o644,
                },
            );
        }
        deterministic_tar(&e, 0)
    }

    #[test]
    fn docker_save_archives() {
        let layer = tarball(&[("hello.txt", b"hi".to_vec())]);
        let config = serde_json::to_vec(
            &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256_digest(&layer)]}}),
        )
        .unwrap();
        let manifest = serde_json::to_vec(
            &json!([{"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": ["abc/layer.tar"]}]),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("save.tar");
        std::fs::write(
            &p,
            tarball(&[
                ("manifest.json", manifest),
                ("cfg.json", config.clone()),
                ("abc/layer.tar", layer.clone()),
            ]),
        )
        .unwrap();
        let img = read_archive(&p, "linux/amd64").unwrap();
        assert_eq!(img.media_type, DOCKER_MANIFEST);
        assert_eq!(img.blobs.len(), 2);
        assert_eq!(img.blobs[0].0, sha256_digest(&config));
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m["layers"][0]["digest"], json!(img.blobs[1].0));
        // The bytes the archive push produced before manifests became typed.
        assert_eq!(
            sha256_digest(&img.manifest),
            "sha256:87da2937aa029af2b1ea7ace5a3fe7eb3ebaecc602dc7dbe649f229b6c04a19c"
        );
        // Reading twice gives the same manifest (deterministic gzip).
        assert_eq!(
            read_archive(&p, "linux/amd64").unwrap().manifest,
            img.manifest
        );
        // A corrupted layer is refused.
        let bad = serde_json::to_vec(
            &json!({"rootfs": {"diff_ids": [format!("sha256:{}", "0".repeat(64))]}}),
        )
        .unwrap();
        let manifest =
            serde_json::to_vec(&json!([{"Config": "cfg.json", "Layers": ["abc/layer.tar"]}]))
                .unwrap();
        std::fs::write(
            &p,
            tarball(&[
                ("manifest.json", manifest),
                ("cfg.json", bad),
                ("abc/layer.tar", layer),
            ]),
        )
        .unwrap();
        assert!(
            read_archive(&p, "linux/amd64")
                .unwrap_err()
                .to_string()
                .contains("does not match its diff_id")
        );
    }

    #[test]
    fn oci_layout_archives() {
        let layer = deterministic_gzip(&tarball(&[("a", b"a".to_vec())]));
        let config = b"{\"architecture\":\"amd64\"}".to_vec();
        let manifest = canonical_json(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256_digest(&layer), "size": layer.len()}]}));
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256_digest(&manifest), "size": manifest.len()}]})).unwrap();
        let bp = |b: &[u8]| blob_path(&sha256_digest(b));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("oci.tar");
        std::fs::write(
            &p,
            tarball(&[
                ("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}".to_vec()),
                ("index.json", index),
                (&bp(&manifest), manifest.clone()),
                (&bp(&config), config.clone()),
                (&bp(&layer), layer.clone()),
            ]),
        )
        .unwrap();
        let img = read_archive(&p, "linux/amd64").unwrap();
        assert_eq!(img.media_type, OCI_MANIFEST);
        assert_eq!(img.manifest, manifest);
        assert_eq!(
            img.blobs.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
            vec![sha256_digest(&config), sha256_digest(&layer)]
        );
        std::fs::write(&p, b"not a tar at all, just text that is long enough to fail the header check........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................").unwrap();
        assert!(read_archive(&p, "linux/amd64").is_err());
    }
}
