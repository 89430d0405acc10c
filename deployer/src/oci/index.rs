//! The image index of a multi-platform build (pure: no I/O): one entry per platform's manifest,
//! with its platform, in the order the platforms were asked for. Deterministic like the
//! manifests (see [`super::layout`]): the same images give the same index digest.

use std::collections::BTreeMap;

use oci_client::manifest::{ImageIndexEntry, OciImageIndex};
use serde_json::json;

use super::build::{Base, Built, Metadata};
use super::layout::canonical_json;
use super::media::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, sha256_digest};
use super::platform::Platform;

/// One platform's image, built from its base.
pub struct PlatformImage<'a> {
    pub platform: &'a Platform,
    pub base: &'a Base,
    pub built: &'a Built,
}

/// An assembled (not yet pushed) index.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: &'static str,
}

/// The index listing `images`: a Docker manifest list when every image is a Docker manifest (a
/// Docker-format base), else an OCI image index with the creation time and revision.
pub fn assemble_index(images: &[PlatformImage<'_>], meta: &Metadata) -> BuiltIndex {
    let docker = images
        .iter()
        .all(|i| i.built.manifest_media_type == DOCKER_MANIFEST);
    let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
    let manifests = images.iter().map(entry).collect();
    let annotations = (!docker).then(|| {
        BTreeMap::from([
            (
                "org.opencontainers.image.created".to_string(),
                meta.created_rfc3339(),
            ),
            (
                "org.opencontainers.image.revision".to_string(),
                meta.revision.clone(),
            ),
        ])
    });
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(media_type.to_string()),
        manifests,
        artifact_type: None,
        annotations,
    };
    let bytes = canonical_json(&serde_json::to_value(&index).expect("an index serializes to JSON"));
    BuiltIndex {
        digest: sha256_digest(&bytes),
        bytes,
        media_type,
    }
}

/// The index entry of one image: its manifest and platform. The variant is the one asked for,
/// else the base's own (`linux/arm64` on a `v8` base is listed as `linux/arm64/v8`, as the base is).
fn entry(image: &PlatformImage<'_>) -> ImageIndexEntry {
    let p = image.platform;
    let variant = p.variant.clone().or_else(|| {
        image.base.config["variant"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    });
    let mut platform = json!({"os": p.os, "architecture": p.architecture});
    if let Some(v) = variant {
        platform["variant"] = json!(v);
    }
    ImageIndexEntry {
        media_type: image.built.manifest_media_type.to_string(),
        digest: image.built.manifest_digest.clone(),
        size: i64::try_from(image.built.manifest.len()).expect("a manifest is small"),
        platform: Some(serde_json::from_value(platform).expect("os and architecture are strings")),
        annotations: None,
        artifact_type: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::build::tests::{base, inputs, meta};
    use crate::oci::build::{Built, assemble};
    use crate::oci::media::{OCI_MANIFEST, select_platform};
    use serde_json::Value;

    fn arm_base(docker: bool) -> Base {
        let mut b = base(docker);
        b.config["architecture"] = json!("arm64");
        b.config["variant"] = json!("v8");
        b
    }

    fn built_pair(docker: bool) -> (Base, Built, Base, Built) {
        let (amd, arm) = (base(docker), arm_base(docker));
        let mut arm_inputs = inputs();
        arm_inputs.binary = b"arm64 binary".to_vec();
        let a = assemble(&amd, &inputs(), &meta());
        let r = assemble(&arm, &arm_inputs, &meta());
        (amd, a, arm, r)
    }

    #[test]
    fn the_index_lists_every_platform_in_order_and_is_reproducible() {
        let (amd, a, arm, r) = built_pair(false);
        let (pa, pr): (Platform, Platform) = (
            "linux/amd64".parse().unwrap(),
            "linux/arm64".parse().unwrap(),
        );
        let images = [
            PlatformImage {
                platform: &pa,
                base: &amd,
                built: &a,
            },
            PlatformImage {
                platform: &pr,
                base: &arm,
                built: &r,
            },
        ];
        let index = assemble_index(&images, &meta());
        assert_eq!(index.media_type, OCI_INDEX);
        assert_eq!(index.digest, sha256_digest(&index.bytes));
        assert_eq!(assemble_index(&images, &meta()).bytes, index.bytes);

        let v: Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_INDEX);
        assert_eq!(v["annotations"]["org.opencontainers.image.revision"], "abc");
        let m = v["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["digest"], json!(a.manifest_digest));
        assert_eq!(m[0]["size"], json!(a.manifest.len()));
        assert_eq!(m[0]["mediaType"], OCI_MANIFEST);
        assert_eq!(
            m[0]["platform"],
            json!({"os": "linux", "architecture": "amd64"})
        );
        assert_eq!(m[1]["digest"], json!(r.manifest_digest));
        // the base's variant is carried into the entry
        assert_eq!(
            m[1]["platform"],
            json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
        );
        assert_ne!(a.manifest_digest, r.manifest_digest);

        // What a runtime does with it: each platform finds its own manifest.
        let parsed: OciImageIndex = serde_json::from_slice(&index.bytes).unwrap();
        let pick = |p: &str| select_platform(&parsed.manifests, p).map(|e| e.digest.clone());
        assert_eq!(pick("linux/amd64"), Some(a.manifest_digest.clone()));
        assert_eq!(pick("linux/arm64"), Some(r.manifest_digest.clone()));
        assert_eq!(pick("linux/arm64/v8"), Some(r.manifest_digest.clone()));
        assert_eq!(pick("linux/s390x"), None);

        // Another order is another index (the order asked for is kept).
        let swapped = [
            PlatformImage {
                platform: &pr,
                base: &arm,
                built: &r,
            },
            PlatformImage {
                platform: &pa,
                base: &amd,
                built: &a,
            },
        ];
        assert_ne!(assemble_index(&swapped, &meta()).digest, index.digest);
    }

    #[test]
    fn docker_images_make_a_docker_manifest_list() {
        let (amd, a, arm, r) = built_pair(true);
        let (pa, pr): (Platform, Platform) = (
            "linux/amd64".parse().unwrap(),
            "linux/arm64/v8".parse().unwrap(),
        );
        let images = [
            PlatformImage {
                platform: &pa,
                base: &amd,
                built: &a,
            },
            PlatformImage {
                platform: &pr,
                base: &arm,
                built: &r,
            },
        ];
        let index = assemble_index(&images, &meta());
        assert_eq!(index.media_type, DOCKER_LIST);
        let v: Value = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(v["mediaType"], DOCKER_LIST);
        assert!(v.get("annotations").is_none());
        assert_eq!(v["manifests"][0]["mediaType"], DOCKER_MANIFEST);
        assert_eq!(v["manifests"][1]["platform"]["variant"], "v8");
    }
}
