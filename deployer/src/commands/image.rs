//! `build` and `push`: an image pushed by digest.

use crate::cli::image::{BuildArgs, ImageBuildArgs, PushArgs};
use crate::cli::registry::RegistryArgs;
use crate::error::Error;
use crate::oci::publish::Pushed;
use crate::oci::{archive, publish};
use crate::progress::{Progress, Terminal};

/// What `build` and `push` report.
#[derive(Debug, serde::Serialize)]
pub struct ImageReport {
    pub command: &'static str,
    pub image: Pushed,
}

impl ImageReport {
    pub fn text(&self) -> String {
        self.image.image.clone()
    }
}

/// `deployer build`.
pub async fn build(c: &BuildArgs) -> Result<ImageReport, Error> {
    let mut progress = Terminal::new();
    let image = build_and_push(&c.image, &c.build, &c.registry, &mut progress).await?;
    Ok(ImageReport {
        command: "build",
        image,
    })
}

/// Builds the image and pushes it to `image` (also the first half of `release`).
pub async fn build_and_push(
    image: &str,
    build: &ImageBuildArgs,
    registry: &RegistryArgs,
    progress: &mut dyn Progress,
) -> Result<Pushed, Error> {
    let creds = registry.credentials()?;
    let (spec, transport) = (build.spec()?, registry.transport());
    Ok(publish::build_and_push(image, &spec, &transport, &creds, progress).await?)
}

/// `deployer push`.
pub async fn push(c: &PushArgs) -> Result<ImageReport, Error> {
    let creds = c.registry.credentials()?;
    let mut progress = Terminal::new();
    let image = archive::push_archive(
        &c.archive,
        &c.image,
        &c.platform,
        &c.registry.transport(),
        &creds,
        &mut progress,
    )
    .await?;
    Ok(ImageReport {
        command: "push",
        image,
    })
}
