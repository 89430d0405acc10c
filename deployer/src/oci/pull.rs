//! Pulling the base image: its manifest (choosing the platform from an index), its config, and its
//! blobs through a content-addressed cache verified by digest.

use std::path::PathBuf;

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_client::{Client, Reference};

use super::build::Base;
use super::error::ImageError;
use super::media::{
    DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, is_index, select_platform, sha256_digest,
};
use super::registry::{Credentials, RegistryError, classify};

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
    // The cache is an optimisation: when it cannot be written, the next build pulls again.
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
    let bad = |message: String| ImageError::Base {
        base: reference.whole(),
        message,
    };
    let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let (mut bytes, mut manifest_digest) = client
        .pull_manifest_raw(reference, &creds.auth, &accepted)
        .await
        .map_err(|e| classify(e, reference, "pull", creds, insecure))?;
    let head: Head =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
    if head.media_type.as_deref().is_some_and(is_index) || head.manifests.is_some() {
        let index: OciImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid image index: {e}")))?;
        let entry = select_platform(&index.manifests, platform)
            .ok_or_else(|| bad(format!("no {platform} image in its index")))?;
        let by_digest = reference.clone_with_digest(entry.digest.clone());
        (bytes, _) = client
            .pull_manifest_raw(&by_digest, &creds.auth, &[OCI_MANIFEST, DOCKER_MANIFEST])
            .await
            .map_err(|e| classify(e, reference, "pull", creds, insecure))?;
        manifest_digest = entry.digest.clone();
    }
    let manifest: OciImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid image manifest: {e}")))?;
    let docker = match manifest.media_type.as_deref() {
        Some(DOCKER_MANIFEST) => true,
        Some(OCI_MANIFEST) | None => false,
        Some(other) => return Err(bad(format!("unsupported manifest media type {other}"))),
    };
    let config_bytes =
        fetch_blob(client, reference, &manifest.config.digest, creds, insecure).await?;
    let config = serde_json::from_slice(&config_bytes)
        .map_err(|e| bad(format!("config is not JSON: {e}")))?;
    Ok(Base {
        reference: reference.clone(),
        manifest,
        manifest_digest,
        config,
        docker,
    })
}

/// What a manifest is, before parsing it as an image manifest or an index.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
}
