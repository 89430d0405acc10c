//! `deployer push --archive`: pushes an image built elsewhere, from a `docker save` tarball or an
//! OCI-layout tarball (`podman save --format oci-archive`, `skopeo copy ... oci-archive:`).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::{Value, json};

use crate::image::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_LIST, DOCKER_MANIFEST, ImageError, OCI_INDEX,
    OCI_MANIFEST, Pushed, Say, by_digest, canonical_json, deterministic_gzip, push_blobs,
    push_manifest, sha256_digest,
};
use crate::options::RegistryOptions;
use crate::registry::{self, CredentialSource};

/// An image read from an archive, ready to push.
#[derive(Debug)]
pub struct ArchiveImage {
    /// (digest, bytes) of every blob: config and layers.
    pub blobs: Vec<(String, Vec<u8>)>,
    pub manifest: Vec<u8>,
    pub media_type: &'static str,
}

/// Reads every file of a (possibly gzip-compressed) tarball.
fn read_tar(path: &Path) -> Result<HashMap<String, Vec<u8>>, ImageError> {
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
        let json = |name: &str| -> Result<Value, ImageError> {
            let b = files
                .get(name)
                .ok_or_else(|| err(format!("missing {name}")))?;
            serde_json::from_slice(b).map_err(|e| err(format!("{name} is not JSON: {e}")))
        };
        let mut node = json("index.json")?;
        let mut manifest_bytes = Vec::new();
        let mut media = OCI_INDEX.to_string();
        // Descend through indexes to one image manifest (choosing the platform when several).
        for _ in 0..4 {
            if media != OCI_INDEX && media != DOCKER_LIST {
                break;
            }
            let entries = node["manifests"].as_array().cloned().unwrap_or_default();
            let (os, arch) = platform.split_once('/').unwrap_or(("linux", "amd64"));
            let pick = if entries.len() == 1 {
                entries[0].clone()
            } else {
                entries
                    .iter()
                    .find(|m| {
                        m["platform"]["os"] == os
                            && m["platform"]["architecture"]
                                == arch.split('/').next().unwrap_or(arch)
                    })
                    .cloned()
                    .ok_or_else(|| {
                        err(format!(
                            "{} manifests in the index and none for {platform}",
                            entries.len()
                        ))
                    })?
            };
            let d = pick["digest"]
                .as_str()
                .ok_or_else(|| err("index entry without digest".into()))?;
            manifest_bytes = files
                .get(&blob_path(d))
                .cloned()
                .ok_or_else(|| err(format!("missing blob {d}")))?;
            if sha256_digest(&manifest_bytes) != d {
                return Err(err(format!("blob {d} does not match its digest")));
            }
            node = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| err(format!("manifest {d} is not JSON: {e}")))?;
            media = pick["mediaType"]
                .as_str()
                .or(node["mediaType"].as_str())
                .unwrap_or(OCI_MANIFEST)
                .to_string();
        }
        let media_type = match media.as_str() {
            OCI_MANIFEST => OCI_MANIFEST,
            DOCKER_MANIFEST => DOCKER_MANIFEST,
            other => return Err(err(format!("unsupported manifest media type {other}"))),
        };
        let mut blobs = Vec::new();
        let descriptors = std::iter::once(node["config"].clone())
            .chain(node["layers"].as_array().cloned().unwrap_or_default());
        for d in descriptors {
            let digest = d["digest"]
                .as_str()
                .ok_or_else(|| err("descriptor without digest".into()))?
                .to_string();
            let data = files
                .get(&blob_path(&digest))
                .cloned()
                .ok_or_else(|| err(format!("missing blob {digest}")))?;
            if sha256_digest(&data) != digest {
                return Err(err(format!("blob {digest} does not match its digest")));
            }
            blobs.push((digest, data));
        }
        return Ok(ArchiveImage {
            blobs,
            manifest: manifest_bytes,
            media_type,
        });
    }
    if let Some(m) = files.get("manifest.json") {
        let list: Value = serde_json::from_slice(m)
            .map_err(|e| err(format!("manifest.json is not JSON: {e}")))?;
        let entry = list
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| err("manifest.json lists no image".into()))?;
        let config_name = entry["Config"]
            .as_str()
            .ok_or_else(|| err("manifest.json entry has no Config".into()))?;
        let config = files
            .get(config_name)
            .cloned()
            .ok_or_else(|| err(format!("missing {config_name}")))?;
        let config_json: Value = serde_json::from_slice(&config)
            .map_err(|e| err(format!("{config_name} is not JSON: {e}")))?;
        let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let layer_names: Vec<&str> = entry["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if layer_names.len() != diff_ids.len() {
            return Err(err(format!(
                "{} layers but the config lists {} diff_ids",
                layer_names.len(),
                diff_ids.len()
            )));
        }
        let config_digest = sha256_digest(&config);
        let mut blobs = vec![(config_digest.clone(), config.clone())];
        let mut layers = Vec::new();
        for (name, diff_id) in layer_names.iter().zip(&diff_ids) {
            let raw = files
                .get(*name)
                .ok_or_else(|| err(format!("missing layer {name}")))?;
            let (tar, gz) = if raw.starts_with(&[0x1f, 0x8b]) {
                let mut t = Vec::new();
                flate2::read::GzDecoder::new(raw.as_slice())
                    .read_to_end(&mut t)
                    .map_err(|e| err(format!("layer {name}: {e}")))?;
                (t, raw.clone())
            } else {
                (raw.clone(), deterministic_gzip(raw))
            };
            if sha256_digest(&tar) != *diff_id {
                return Err(err(format!(
                    "layer {name} does not match its diff_id {diff_id}"
                )));
            }
            let digest = sha256_digest(&gz);
            layers
                .push(json!({"mediaType": DOCKER_LAYER_GZIP, "digest": digest, "size": gz.len()}));
            blobs.push((digest, gz));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": layers,
        });
        return Ok(ArchiveImage {
            blobs,
            manifest: canonical_json(&manifest),
            media_type: DOCKER_MANIFEST,
        });
    }
    Err(err(
        "neither an OCI layout (index.json + oci-layout) nor a `docker save` archive (manifest.json)".into(),
    ))
}

/// `deployer push --archive`.
pub async fn push_archive(
    path: &Path,
    image: &str,
    platform: &str,
    reg: &RegistryOptions,
    creds: &CredentialSource,
    say: Say<'_>,
) -> Result<Pushed, ImageError> {
    let target = registry::parse_reference(image)?;
    let archive = read_archive(path, platform)?;
    let insecure = &reg.insecure;
    let client = registry::client_for(&[target.resolve_registry()], insecure);
    let target_creds = creds.for_registry(target.resolve_registry(), true)?;
    client
        .store_auth_if_needed(target.resolve_registry(), &target_creds.auth)
        .await;
    let blobs: Vec<(String, Option<Vec<u8>>)> = archive
        .blobs
        .iter()
        .map(|(d, b)| (d.clone(), Some(b.clone())))
        .collect();
    let (uploaded, present) =
        push_blobs(&client, &target, &blobs, &target_creds, insecure, say).await?;
    let tag = target.tag().unwrap_or("latest").to_string();
    push_manifest(
        &client,
        &target,
        &tag,
        &archive.manifest,
        archive.media_type,
        &target_creds,
        insecure,
    )
    .await?;
    let digest = sha256_digest(&archive.manifest);
    let last = archive
        .blobs
        .last()
        .map(|(d, b)| (d.clone(), b.len()))
        .unwrap_or_default();
    Ok(Pushed {
        image: by_digest(&target, &digest),
        digest,
        tag,
        layer_digest: last.0,
        layer_bytes: last.1,
        blobs_uploaded: uploaded,
        blobs_present: present,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{Entry, deterministic_tar};
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
