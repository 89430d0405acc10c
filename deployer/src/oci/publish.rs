//! Publishing: `deployer build` (pull the base, check the binary runs on it, assemble, push) and
//! the push every image goes through (blobs the registry lacks, then the manifest by tag).

use std::cell::RefCell;

use oci_client::{Client, Reference};

use super::build::{Base, Inputs, Metadata, assemble};
use super::error::ImageError;
use super::glibc::{binary_info, check_runs_on_base};
use super::inputs::BuildSpec;
use super::media::short;
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
    let tagged = Reference::with_tag(
        t.reference.registry().to_string(),
        t.reference.repository().to_string(),
        tag.clone(),
    );
    let ct = reqwest::header::HeaderValue::from_str(image.media_type)
        .expect("media types are valid header values");
    t.client
        .push_manifest_raw(&tagged, image.manifest.to_vec(), ct)
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

/// `deployer build`: builds and pushes, returns the pushed image by digest.
pub async fn build_and_push(
    image: &str,
    spec: &BuildSpec,
    transport: &Transport,
    creds: &CredentialSource,
    progress: &mut dyn Progress,
) -> Result<Pushed, ImageError> {
    let target = registry::parse_reference(image)?;
    let base_ref = registry::parse_reference(&spec.base)?;
    let inputs = Inputs::read(spec)?;
    // A binary that is not an ELF executable is refused before anything is pulled.
    binary_info(&inputs.binary).map_err(|m| ImageError::Input {
        what: "server binary",
        path: spec.server_binary.clone(),
        message: m,
    })?;
    let meta = Metadata::resolve(spec);
    let insecure = &transport.insecure;
    let client = registry::client_for(
        &[target.resolve_registry(), base_ref.resolve_registry()],
        insecure,
    );
    let same_registry = target.resolve_registry() == base_ref.resolve_registry();
    let base_creds = creds.for_registry(base_ref.resolve_registry(), same_registry)?;
    let target_creds = creds.for_registry(target.resolve_registry(), true)?;
    let source = Target::new(&client, &base_ref, &base_creds, transport);
    progress.set(&format!("pulling base {}", base_ref.whole()));
    let what = format!("pull {}", base_ref.whole());
    let (base, base_layers) = retried(source.backoff, &what, || {
        pull_with_layers(&source, &spec.platform)
    })
    .await?;
    check_runs_on_base(&base, &inputs.binary, &base_layers)?;
    progress.set("assembling the layer (binary, ONNX Runtime, model)");
    let built = assemble(&base, &inputs, &meta);
    let t = Target::new(&client, &target, &target_creds, transport);
    client
        .store_auth_if_needed(target.resolve_registry(), &target_creds.auth)
        .await;
    if same_registry && target.repository() != base_ref.repository() {
        let what = format!("mount base layers into {}", target.whole());
        let progress = RefCell::new(&mut *progress);
        retried(t.backoff, &what, || mount_base_layers(&t, &base, &progress)).await?;
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
    };
    Ok(push_image(&t, &image, progress).await?)
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
