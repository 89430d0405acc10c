//! `build` and `push`: an image pushed by digest.

use crate::error::Error;
use crate::oci::publish::Pushed;
use crate::oci::registry::CredentialSource;
use crate::oci::{archive, publish};
use crate::options::{BuildCommand, PushCommand};
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
pub async fn build(c: &BuildCommand) -> Result<ImageReport, Error> {
    let mut progress = Terminal::new();
    let image = build_and_push(c, &mut progress).await?;
    Ok(ImageReport {
        command: "build",
        image,
    })
}

/// Builds and pushes the image of `c` (also the first half of `release`).
pub async fn build_and_push(
    c: &BuildCommand,
    progress: &mut dyn Progress,
) -> Result<Pushed, Error> {
    let creds = CredentialSource::from_options(&c.registry)?;
    Ok(publish::build_and_push(&c.image, &c.build, &c.registry, &creds, progress).await?)
}

/// `deployer push`.
pub async fn push(c: &PushCommand) -> Result<ImageReport, Error> {
    let creds = CredentialSource::from_options(&c.registry)?;
    let mut progress = Terminal::new();
    let image = archive::push_archive(
        &c.archive,
        &c.image,
        &c.platform,
        &c.registry,
        &creds,
        &mut progress,
    )
    .await?;
    Ok(ImageReport {
        command: "push",
        image,
    })
}
