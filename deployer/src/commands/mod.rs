//! One module per command. Each takes its plain options (from [`crate::options`]), drives the
//! `kube/`, `oci/` and `smoke` layers, and returns a typed report that serializes to the command's
//! JSON document and knows its text form; [`crate::render`] prints it either way.
//!
//! A new command: a module here with its report type, a variant in [`Report`] and in
//! [`crate::options::Command`], and its flags in [`crate::cli`].

pub mod apply;
pub mod delete;
pub mod diff;
pub mod image;
pub mod status;

use crate::error::Error;
use crate::options::Command;

/// What a command reports: its JSON document (`--output json`) and its text.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum Report {
    Image(image::ImageReport),
    /// Boxed: much larger than the others.
    Apply(Box<apply::ApplyReport>),
    Diff(diff::DiffReport),
    Status(status::StatusReport),
    Delete(delete::DeleteReport),
}

impl Report {
    /// The human-readable result.
    pub fn text(&self) -> String {
        match self {
            Report::Image(r) => r.text(),
            Report::Apply(r) => r.text(),
            Report::Diff(r) => r.text(),
            Report::Status(r) => r.text(),
            Report::Delete(r) => r.text(),
        }
    }
}

impl From<apply::Outcome> for Report {
    fn from(a: apply::Outcome) -> Report {
        match a {
            apply::Outcome::Done(r) => Report::Apply(r),
            apply::Outcome::DryRun(r) => Report::Diff(r),
        }
    }
}

/// Runs one command.
pub async fn run(command: Command) -> Result<Report, Error> {
    Ok(match command {
        Command::Build(c) => Report::Image(image::build(&c).await?),
        Command::Push(c) => Report::Image(image::push(&c).await?),
        Command::Apply(c) => apply::run(&c, None, "apply").await?.into(),
        Command::Release(c) => apply::release(&c).await?.into(),
        Command::Diff(c) => Report::Diff(diff::run(&c).await?),
        Command::Status(c) => Report::Status(status::run(&c).await?),
        Command::Delete(c) => Report::Delete(delete::run(&c).await?),
    })
}
