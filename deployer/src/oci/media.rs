//! Media types, digests, descriptors and platform selection: the vocabulary of the OCI side.
//! A leaf of `oci/` (imports nothing from the crate).

use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageManifest};
use sha2::{Digest, Sha256};

pub use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE as OCI_CONFIG, IMAGE_DOCKER_CONFIG_MEDIA_TYPE as DOCKER_CONFIG,
    IMAGE_DOCKER_LAYER_GZIP_MEDIA_TYPE as DOCKER_LAYER_GZIP,
    IMAGE_LAYER_GZIP_MEDIA_TYPE as OCI_LAYER_GZIP, IMAGE_LAYER_MEDIA_TYPE as OCI_LAYER_TAR,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE as DOCKER_LIST, IMAGE_MANIFEST_MEDIA_TYPE as DOCKER_MANIFEST,
    OCI_IMAGE_INDEX_MEDIA_TYPE as OCI_INDEX, OCI_IMAGE_MEDIA_TYPE as OCI_MANIFEST,
};

use super::layout::canonical_json;

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The first 19 characters of a digest (`sha256:` and 12 hex digits), for progress messages.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// A descriptor of `size` bytes with `digest`.
pub fn descriptor(media_type: &str, digest: &str, size: usize) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: i64::try_from(size).expect("a blob held in memory is smaller than i64::MAX bytes"),
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

/// The bytes pushed for a manifest: sorted keys, no whitespace, so the digest is stable. This is
/// the serialization the untyped manifests had; the typed struct serializes to the same keys.
pub fn manifest_bytes(manifest: &OciImageManifest) -> Vec<u8> {
    canonical_json(&serde_json::to_value(manifest).expect("a manifest serializes to JSON"))
}

/// True for the index media types (OCI index, Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// The manifest of `platform` (`os/arch[/variant]`) in an index: the first entry whose os and
/// architecture match and, when the platform names a variant, whose variant matches. An index with
/// a single entry that names no platform (an OCI-layout archive's `index.json`) gives that entry.
pub fn select_platform<'a>(
    entries: &'a [ImageIndexEntry],
    platform: &str,
) -> Option<&'a ImageIndexEntry> {
    if let [only] = entries
        && only.platform.is_none()
    {
        return Some(only);
    }
    let mut want = platform.split('/');
    let os = want.next().unwrap_or("linux");
    let arch = want.next().unwrap_or("amd64");
    let variant = want.next();
    entries.iter().find(|e| {
        e.platform.as_ref().is_some_and(|p| {
            p.os.to_string() == os
                && p.architecture.to_string() == arch
                && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: Option<serde_json::Value>, n: char) -> ImageIndexEntry {
        let mut e = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", n.to_string().repeat(64)), "size": 1});
        if let Some(p) = platform {
            e["platform"] = p;
        }
        serde_json::from_value(e).unwrap()
    }

    #[test]
    fn platform_selection_matches_os_arch_and_variant() {
        let entries = vec![
            entry(
                Some(serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"})),
                '1',
            ),
            entry(
                Some(serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})),
                '2',
            ),
            entry(
                Some(serde_json::json!({"os": "linux", "architecture": "amd64"})),
                '3',
            ),
        ];
        let pick = |p: &str| select_platform(&entries, p).map(|e| e.digest.chars().last().unwrap());
        assert_eq!(pick("linux/amd64"), Some('3'));
        assert_eq!(pick("linux/arm64"), Some('2'));
        assert_eq!(pick("linux/arm64/v8"), Some('2'));
        assert_eq!(pick("linux/arm/v6"), None);
        assert_eq!(pick("linux/amd64/v3"), None);
        assert_eq!(pick("windows/amd64"), None);
        // A lone entry without a platform (an OCI-layout archive) is the image; with one, it must match.
        let lone = vec![entry(None, '4')];
        assert_eq!(
            select_platform(&lone, "linux/amd64").unwrap().digest,
            lone[0].digest
        );
        let arm = vec![entry(
            Some(serde_json::json!({"os": "linux", "architecture": "arm64"})),
            '5',
        )];
        assert!(select_platform(&arm, "linux/amd64").is_none());
    }
}
