//! One module per command. Each takes its flags as parsed (the `Args` structs of [`crate::cli`]'s
//! modules), drives the `kube/`, `oci/` and `smoke` layers, and returns a typed report that
//! serializes to the command's JSON document and knows its text form; [`crate::render`] prints it
//! either way.
//!
//! A new command: a module here with its report type, a variant in [`Report`], and its flags in a
//! module of [`crate::cli`] with a variant in [`crate::cli::command::Command`].

pub mod apply;
pub mod canary;
pub mod delete;
pub mod diff;
pub mod evaluate;
pub mod history;
pub mod image;
pub mod monitoring;
pub mod rollback;
pub mod status;

use std::future::Future;

use crate::cli::command::Command;
use crate::error::{Error, Interrupted};
use crate::interrupt::Interrupt;

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
    History(history::HistoryReport),
    /// Boxed: much larger than the others.
    Rollback(Box<rollback::RollbackReport>),
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
            Report::History(r) => r.text(),
            Report::Rollback(r) => r.text(),
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

/// Runs one command; a signal (`interrupt`) stops it with what it left behind and how to resume.
pub async fn run(command: Command, interrupt: &Interrupt) -> Result<Report, Error> {
    const PUSH: &str = "blobs already pushed stay in the registry; no tag or manifest was written unless the push had finished";
    const AGAIN: &str = "run the same command again: it sends only what the registry still lacks";
    Ok(match command {
        Command::Build(c) => {
            let build = image::build(&c);
            Report::Image(whole(interrupt, build, "building and pushing", PUSH, AGAIN).await?)
        }
        Command::Push(c) => {
            let push = image::push(&c);
            Report::Image(whole(interrupt, push, "pushing", PUSH, AGAIN).await?)
        }
        Command::Apply(c) => apply::run(&c, None, None, "apply", interrupt).await?.into(),
        Command::Release(c) => apply::release(&c, interrupt).await?.into(),
        Command::Diff(c) => {
            let (state, again) = ("nothing was changed", "run it again");
            Report::Diff(whole(interrupt, diff::run(&c), "diffing", state, again).await?)
        }
        Command::Status(c) => {
            let (state, again) = ("nothing was changed", "run it again");
            Report::Status(whole(interrupt, status::run(&c), "reading", state, again).await?)
        }
        Command::Delete(c) => {
            let state =
                "the objects deleted so far are gone or terminating; the others are untouched";
            let again = "run the same `deployer delete` again: objects already gone are skipped";
            Report::Delete(whole(interrupt, delete::run(&c), "deleting", state, again).await?)
        }
        Command::History(c) => {
            let (state, again) = ("nothing was changed", "run it again");
            Report::History(whole(interrupt, history::run(&c), "reading", state, again).await?)
        }
        Command::Rollback(c) => {
            let state = "the revision chosen may have been applied: the cluster goes on rolling it out without deployer, and the history has no entry for it";
            let again = "`deployer status` shows where it stands; `deployer rollback --to-revision N` restores a revision again (a plain `deployer rollback` would go one revision further back)";
            let rolling_back = rollback::run(&c);
            Report::Rollback(Box::new(
                whole(interrupt, rolling_back, "rolling back", state, again).await?,
            ))
        }
    })
}

/// A command that is stopped as a whole by a signal, leaving `state`.
async fn whole<T>(
    interrupt: &Interrupt,
    command: impl Future<Output = Result<T, Error>>,
    during: &str,
    state: &str,
    resume: &str,
) -> Result<T, Error> {
    interrupt.run(command).await.map_err(|signal| {
        Error::Interrupted(Interrupted {
            signal,
            during: during.into(),
            state: vec![state.into()],
            resume: resume.into(),
        })
    })?
}
