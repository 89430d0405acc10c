//! Publishing: `deployer build` (pull the base, check the binary runs on it, assemble, push; for
//! several platforms, each image by digest and then their index) and the push every image goes
//! through (blobs the registry lacks, then the manifest by tag or digest).

use std::cell::RefCell;

use oci_client::{Client, Reference};

use super::build::{Base, Built, Inputs, Metadata, assemble};
use super::error::ImageError;
use super::glibc::{binary_info, check_runs_on_base};
use super::index::{PlatformImage, assemble_index};
use super::inputs::{BuildSpec, PlatformSpec, check_same_architecture};
use super::media::short;
use super::platform::Platform;
use super::pull::{fetch_blob, pull_base};
use super::registry::{
    self, CredentialSource, Credentials, RegistryError, Transport, classify, retried,
};
use crate::progress::Progress;
use crate::support::Backoff;

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
    /// A multi-platform build: each platform's image (`image` and `digest` are the index's, the
    /// layer fields the first platform's, the blob counts the sums); empty for one platform.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformPushed>,
}

/// One platform's image in a multi-platform build.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformPushed {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Its manifest's digest (the index lists it).
    pub digest: String,
    pub layer_digest: String,
    pub layer_bytes: usize,
}

/// The image reference to print: `REGISTRY/REPO@sha256:...`.
pub fn by_digest(target: &Reference, digest: &str) -> String {
    format!("{}/{}@{}", target.registry(), target.repository(), digest)
}

/// Where an image goes: the client, the reference and the credentials for it, and how long to
/// retry a registry that cannot be reached.
pub struct Target<'a> {
    pub client: &'a Client,
    pub reference: &'a Reference,
    pub creds: &'a Credentials,
    pub insecure: &'a [String],
    pub backoff: Backoff,
}

impl<'a> Target<'a> {
    pub fn new(
        client: &'a Client,
        reference: &'a Reference,
        creds: &'a Credentials,
        transport: &'a Transport,
    ) -> Self {
        Target {
            client,
            reference,
            creds,
            insecure: &transport.insecure,
            backoff: Backoff::within(transport.retry_timeout),
        }
    }
}

/// An image ready to push: its blobs (config and layers) and its manifest.
pub struct Image<'a> {
    pub blobs: Vec<(String, &'a [u8])>,
    pub manifest: &'a [u8],
    pub manifest_digest: &'a str,
    pub media_type: &'a str,
    /// The layer reported in [`Pushed`] (digest, size).
    pub layer: (String, usize),
    /// Pushed under the reference's tag (`latest` when it has none); else by digest alone (an
    /// image an index lists: the index takes the tag).
    pub tagged: bool,
}

/// Pushes the blobs the registry lacks, then the manifest under the reference's tag (`latest`
/// when it has none); an unreachable or failing registry is retried within the target's backoff
/// (each attempt sends only what the registry still lacks).
pub async fn push_image(
    t: &Target<'_>,
    image: &Image<'_>,
    progress: &mut dyn Progress,
) -> Result<Pushed, RegistryError> {
    let what = format!("push {}", t.reference.whole());
    let progress = RefCell::new(progress);
    retried(t.backoff, &what, || push_image_once(t, image, &progress)).await
}

/// One attempt of [`push_image`] (`progress` is shared by the attempts, borrowed only between
/// awaits).
async fn push_image_once(
    t: &Target<'_>,
    image: &Image<'_>,
    progress: &RefCell<&mut (dyn Progress + '_)>,
) -> Result<Pushed, RegistryError> {
    t.client
        .store_auth_if_needed(t.reference.resolve_registry(), &t.creds.auth)
        .await;
    let (uploaded, present) = push_blobs(t, &image.blobs, progress).await?;
    let tag = t.reference.tag().unwrap_or("latest").to_string();
    let (registry, repository) = (t.reference.registry(), t.reference.repository());
    let destination = if image.tagged {
        Reference::with_tag(registry.into(), repository.into(), tag.clone())
    } else {
        Reference::with_digest(
            registry.into(),
            repository.into(),
            image.manifest_digest.into(),
        )
    };
    let ct = reqwest::header::HeaderValue::from_str(image.media_type)
        .expect("media types are valid header values");
    t.client
        .push_manifest_raw(&destination, image.manifest.to_vec(), ct)
        .await
        .map_err(|e| classify(e, t.reference, "push", t.creds, t.insecure))?;
    Ok(Pushed {
        image: by_digest(t.reference, image.manifest_digest),
        digest: image.manifest_digest.to_string(),
        tag,
        layer_digest: image.layer.0.clone(),
        layer_bytes: image.layer.1,
        blobs_uploaded: uploaded,
        blobs_present: present,
        platforms: Vec::new(),
    })
}

/// Pushes blobs the registry does not have yet; returns (uploaded, already present).
async fn push_blobs(
    t: &Target<'_>,
    blobs: &[(String, &[u8])],
    progress: &RefCell<&mut (dyn Progress + '_)>,
) -> Result<(usize, usize), RegistryError> {
    let (mut uploaded, mut present) = (0, 0);
    for (digest, data) in blobs {
        if blob_exists(t, digest).await? {
            present += 1;
            continue;
        }
        let pushing = format!("pushing {} ({} bytes)", short(digest), data.len());
        progress.borrow_mut().set(&pushing);
        t.client
            .push_blob(t.reference, data.to_vec(), digest)
            .await
            .map_err(|e| classify(e, t.reference, "push", t.creds, t.insecure))?;
        uploaded += 1;
    }
    Ok((uploaded, present))
}

async fn blob_exists(t: &Target<'_>, digest: &str) -> Result<bool, RegistryError> {
    t.client
        .blob_exists(t.reference, digest)
        .await
        .map_err(|e| classify(e, t.reference, "push", t.creds, t.insecure))
}

/// `deployer build`: builds and pushes, returns the pushed image by digest: one image for one
/// platform, else an image index over one image per platform.
pub async fn build_and_push(
    image: &str,
    spec: &BuildSpec,
    transport: &Transport,
    creds: &CredentialSource,
    progress: &mut dyn Progress,
) -> Result<Pushed, ImageError> {
    let target = registry::parse_reference(image)?;
    let base_ref = registry::parse_reference(&spec.base)?;
    // Every platform's files are read and checked before anything is pulled.
    let mut inputs = Vec::new();
    for p in &spec.platforms {
        inputs.push(read_inputs(spec, p)?);
    }
    let meta = Metadata::resolve(spec);
    let client = registry::client_for(
        &[target.resolve_registry(), base_ref.resolve_registry()],
        &transport.insecure,
    );
    let same_registry = target.resolve_registry() == base_ref.resolve_registry();
    let base_creds = creds.for_registry(base_ref.resolve_registry(), same_registry)?;
    let target_creds = creds.for_registry(target.resolve_registry(), true)?;
    let source = Target::new(&client, &base_ref, &base_creds, transport);
    let t = Target::new(&client, &target, &target_creds, transport);
    let mut images = Vec::new();
    for (p, inputs) in spec.platforms.iter().zip(&inputs) {
        let b = BuildOne {
            source: &source,
            target: &t,
            platform: p,
            multi: spec.is_multi_platform(),
        };
        images.push(b.build_and_push(inputs, &meta, progress).await?);
    }
    if !spec.is_multi_platform() {
        let (_, _, pushed) = images.pop().expect("a build has a platform");
        return Ok(pushed);
    }
    push_index(&t, &spec.platforms, &images, &meta, progress).await
}

/// Reads one platform's inputs and checks them: the binary is ELF, the library is built for its
/// architecture and, in a multi-platform build, the binary for the platform (one build keeps its
/// old behaviour: the platform only picks from the base's index, and the binary is checked against
/// the base).
fn read_inputs(spec: &BuildSpec, p: &PlatformSpec) -> Result<Inputs, ImageError> {
    let inputs = Inputs::read(spec, p)?;
    // A binary that is not an ELF executable is refused before anything is pulled.
    let info = binary_info(&inputs.binary).map_err(|m| ImageError::Input {
        what: "server binary",
        path: p.server_binary.clone(),
        message: m,
    })?;
    if spec.is_multi_platform() && info.architecture != p.platform.architecture {
        return Err(ImageError::Input {
            what: "server binary",
            path: p.server_binary.clone(),
            message: format!(
                "built for {}, not for {}: pass --server-binary {}=PATH",
                info.architecture, p.platform, p.platform
            ),
        });
    }
    let library = (p.onnxruntime.clone()).unwrap_or_else(|| inputs.onnxruntime_name.clone().into());
    check_same_architecture(&inputs.binary, &inputs.onnxruntime, &library)?;
    Ok(inputs)
}

/// One platform's image: pulled base, assembled, pushed (by tag alone, by digest in an index).
struct BuildOne<'a> {
    source: &'a Target<'a>,
    target: &'a Target<'a>,
    platform: &'a PlatformSpec,
    multi: bool,
}

impl BuildOne<'_> {
    async fn build_and_push(
        &self,
        inputs: &Inputs,
        meta: &Metadata,
        progress: &mut dyn Progress,
    ) -> Result<(Base, Built, Pushed), ImageError> {
        let (source, t, platform) = (self.source, self.target, &self.platform.platform);
        let on = if self.multi {
            format!(" ({platform})")
        } else {
            String::new()
        };
        progress.set(&format!("pulling base {}{on}", source.reference.whole()));
        let what = format!("pull {}", source.reference.whole());
        let wanted = platform.to_string();
        let (base, base_layers) =
            retried(source.backoff, &what, || pull_with_layers(source, &wanted)).await?;
        if self.multi {
            check_base_platform(&base, platform)?;
        }
        check_runs_on_base(&base, &inputs.binary, &base_layers)?;
        progress.set(&format!(
            "assembling the layer (binary, ONNX Runtime, model){on}"
        ));
        let built = assemble(&base, inputs, meta);
        t.client
            .store_auth_if_needed(t.reference.resolve_registry(), &t.creds.auth)
            .await;
        if t.reference.resolve_registry() == source.reference.resolve_registry()
            && t.reference.repository() != source.reference.repository()
        {
            let what = format!("mount base layers into {}", t.reference.whole());
            let progress = RefCell::new(&mut *progress);
            retried(t.backoff, &what, || mount_base_layers(t, &base, &progress)).await?;
        }
        let mut blobs: Vec<(String, &[u8])> = base
            .layers()
            .iter()
            .zip(&base_layers)
            .map(|(l, (_, data))| (l.digest.clone(), data.as_slice()))
            .collect();
        blobs.push((built.layer_digest.clone(), &built.layer_gz));
        blobs.push((built.config_digest.clone(), &built.config));
        let image = Image {
            blobs,
            manifest: &built.manifest,
            manifest_digest: &built.manifest_digest,
            media_type: built.manifest_media_type,
            layer: (built.layer_digest.clone(), built.layer_gz.len()),
            tagged: !self.multi,
        };
        let pushed = push_image(t, &image, progress).await?;
        Ok((base, built, pushed))
    }
}

/// In a multi-platform build the base must hold each platform: a single-platform base would
/// otherwise be used for all of them.
fn check_base_platform(base: &Base, platform: &Platform) -> Result<(), ImageError> {
    let arch = base.config["architecture"].as_str().unwrap_or("");
    if arch.is_empty() || arch == platform.architecture {
        return Ok(());
    }
    Err(ImageError::Base {
        base: base.reference.whole(),
        message: format!(
            "is {arch}, not {platform}: a multi-platform build needs a base index with every platform"
        ),
    })
}

/// Pushes the index over the platforms' images (already pushed by digest) under the tag; the
/// report names the index and each platform's image.
async fn push_index(
    t: &Target<'_>,
    platforms: &[PlatformSpec],
    images: &[(Base, Built, Pushed)],
    meta: &Metadata,
    progress: &mut dyn Progress,
) -> Result<Pushed, ImageError> {
    let entries: Vec<PlatformImage<'_>> = platforms
        .iter()
        .zip(images)
        .map(|(p, (base, built, _))| PlatformImage {
            platform: &p.platform,
            base,
            built,
        })
        .collect();
    let index = assemble_index(&entries, meta);
    progress.set(&format!("pushing the index of {} platforms", images.len()));
    let (first, pushed) = (&images[0].2, images.iter().map(|(_, _, p)| p));
    let image = Image {
        blobs: Vec::new(),
        manifest: &index.bytes,
        manifest_digest: &index.digest,
        media_type: index.media_type,
        layer: (first.layer_digest.clone(), first.layer_bytes),
        tagged: true,
    };
    let mut out = push_image(t, &image, progress).await?;
    out.blobs_uploaded = pushed.clone().map(|p| p.blobs_uploaded).sum();
    out.blobs_present = pushed.clone().map(|p| p.blobs_present).sum();
    out.platforms = platforms
        .iter()
        .zip(pushed)
        .map(|(p, pushed)| PlatformPushed {
            platform: p.platform.to_string(),
            digest: pushed.digest.clone(),
            layer_digest: pushed.layer_digest.clone(),
            layer_bytes: pushed.layer_bytes,
        })
        .collect();
    Ok(out)
}

/// The base (one platform) and its layers as (media type, bytes).
async fn pull_with_layers(
    source: &Target<'_>,
    platform: &str,
) -> Result<(Base, Vec<(String, Vec<u8>)>), ImageError> {
    let (client, reference, creds, insecure) = (
        source.client,
        source.reference,
        source.creds,
        source.insecure,
    );
    let base = pull_base(client, reference, platform, creds, insecure).await?;
    let mut layers = Vec::new();
    for l in base.layers() {
        let data = fetch_blob(client, reference, &l.digest, creds, insecure).await?;
        layers.push((l.media_type.clone(), data));
    }
    Ok((base, layers))
}

/// Same registry: the base layers are mounted from the base repository, not uploaded again.
async fn mount_base_layers(
    t: &Target<'_>,
    base: &Base,
    progress: &RefCell<&mut (dyn Progress + '_)>,
) -> Result<(), RegistryError> {
    for l in base.layers() {
        if !blob_exists(t, &l.digest).await?
            && t.client
                .mount_blob(t.reference, &base.reference, &l.digest)
                .await
                .is_ok()
        {
            progress.borrow_mut().set(&format!(
                "mounted {} from {}",
                short(&l.digest),
                base.reference.repository()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A small ELF executable of the host's architecture (`true`), else this test executable
    /// (large: read and parsed several times below).
    fn host_elf() -> PathBuf {
        ["/usr/bin/true", "/bin/true"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| std::env::current_exe().unwrap())
    }

    /// A copy of `elf` whose header says aarch64 (e_machine at byte 18): what the checks read.
    fn as_arm64(elf: &std::path::Path, dir: &std::path::Path) -> PathBuf {
        let mut bytes = std::fs::read(elf).unwrap();
        bytes[18..20].copy_from_slice(&goblin::elf::header::EM_AARCH64.to_le_bytes());
        let out = dir.join("arm64-elf");
        std::fs::write(&out, bytes).unwrap();
        out
    }

    fn spec(platforms: &[(&str, PathBuf, PathBuf)]) -> BuildSpec {
        BuildSpec {
            base: "127.0.0.1:5000/base:x".into(),
            platforms: platforms
                .iter()
                .map(|(p, bin, ort)| PlatformSpec {
                    platform: p.parse().unwrap(),
                    server_binary: bin.clone(),
                    onnxruntime: Some(ort.clone()),
                })
                .collect(),
            model: PathBuf::new(),
            source_url: None,
            revision: Some("r".into()),
            image_version: None,
            source_date_epoch: Some(0),
        }
    }

    #[test]
    fn each_platform_needs_a_binary_and_library_of_its_architecture() {
        if crate::oci::platform::host_architecture() != Some("amd64") {
            return; // the fixtures below take the host's executable for the amd64 binary
        }
        let dir = tempfile::tempdir().unwrap();
        let (amd, arm) = (host_elf(), as_arm64(&host_elf(), dir.path()));
        let good = spec(&[
            ("linux/amd64", amd.clone(), amd.clone()),
            ("linux/arm64", arm.clone(), arm.clone()),
        ]);
        for p in &good.platforms {
            read_inputs(&good, p).unwrap();
        }
        // The amd64 binary offered for arm64 (a forgotten `--server-binary linux/arm64=`).
        let wrong = spec(&[
            ("linux/amd64", amd.clone(), amd.clone()),
            ("linux/arm64", amd.clone(), arm.clone()),
        ]);
        let e = read_inputs(&wrong, &wrong.platforms[1]).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::Input {
                    what: "server binary",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().contains(
                "built for amd64, not for linux/arm64: pass --server-binary linux/arm64=PATH"
            ),
            "{e}"
        );
        // A library of another architecture than the binary's.
        let e = read_inputs(&wrong, &wrong.platforms[0]);
        assert!(e.is_ok(), "amd64 is consistent: {e:?}");
        let lib = spec(&[("linux/arm64", arm.clone(), amd.clone())]);
        let e = read_inputs(&lib, &lib.platforms[0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("built for amd64, but the server binary is arm64")
                && e.contains("scripts/onnxruntime.sh arm64"),
            "{e}"
        );
        // One platform keeps the old behaviour: the binary is checked against the base, not
        // against --platform (the base may be a single arm64 image).
        let single = spec(&[("linux/amd64", arm.clone(), arm)]);
        read_inputs(&single, &single.platforms[0]).unwrap();
    }

    #[test]
    fn a_single_platform_base_is_refused_for_another_platform() {
        let base = crate::oci::build::tests::base(false); // amd64
        check_base_platform(&base, &"linux/amd64".parse().unwrap()).unwrap();
        let e = check_base_platform(&base, &"linux/arm64".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is amd64, not linux/arm64: a multi-platform build needs a base index"),
            "{e}"
        );
    }
}
