//! What `apply` and `release` record in the release history once the waits are over: for each
//! applied Deployment, the release that now serves (promoted, with the model its pods report) or
//! how it failed (rolled back, or not).

use super::Waited;
use super::waiting::Waiting;
use crate::commands::history::{Recorded, now, record};
use crate::error::Error;
use crate::kube::apply::Applied;
use crate::kube::history::{Entry, Outcome};
use crate::kube::model::{self, MODEL_READ_TIMEOUT, ModelInfo, Serving, digest_of, server_image};
use crate::kube::rollout::{Rollback, RolloutError};
use crate::progress::Progress;
use crate::smoke::{self, Access};

/// What an apply records, and how.
pub(super) struct Recorder<'a> {
    pub waiting: &'a Waiting<'a>,
    pub command: &'static str,
    /// `--history-limit` (0: nothing is recorded).
    pub limit: usize,
    /// `--container`.
    pub container: Option<&'a str>,
    /// What the smoke test used to get in: the API key (to ask a pod for its model), and the
    /// trust for the public URL (to ask it instead when no pod can be asked).
    pub access: &'a Access,
}

/// What the history got from one apply: where it went, and the model that now serves.
#[derive(Debug, Default)]
pub struct Records {
    pub recorded: Vec<Recorded>,
    pub model: Option<ModelInfo>,
    /// Why the model could not be read.
    pub model_error: Option<String>,
}

impl Recorder<'_> {
    /// Records each applied Deployment's release: promoted when the waits ended well, else how
    /// it failed. Failures that are not the release's own (an API refusal) are not recorded.
    pub async fn record(&self, waited: &Result<Waited, Error>, p: &mut dyn Progress) -> Records {
        let mut records = Records::default();
        if self.limit == 0 {
            return records;
        }
        // The public URL, when the smoke test proved it answers.
        let url = match waited {
            Ok((_, urls, Some(_))) => urls.first().map(String::as_str),
            _ => None,
        };
        for (o, ns) in self.waiting.of_kind("Deployment") {
            let entry = match waited {
                Ok(_) => self.promoted(o, &ns, url, &mut records).await,
                Err(e) => match failed(e) {
                    Some((outcome, reason)) => self.entry(o, outcome, Some(reason)),
                    None => return records,
                },
            };
            let cluster = self.waiting.cluster;
            if let Some(r) = record(cluster, &ns, entry, self.limit, p).await {
                records.recorded.push(r);
            }
        }
        records
    }

    /// The entry of a Deployment that rolled out and passed its checks: what it serves now. The
    /// model comes from one of its pods, else (the API server cannot reach pods) from `url`.
    async fn promoted(
        &self,
        o: &Applied,
        ns: &str,
        url: Option<&str>,
        records: &mut Records,
    ) -> Entry {
        let cluster = self.waiting.cluster;
        let key = self.access.api_key.as_deref();
        let serving = model::serving(cluster, ns, &o.name, self.container, key).await;
        let mut entry = self.entry(o, Outcome::Promoted, None);
        let mut s = match serving {
            Ok(s) => s,
            Err(e) => Serving {
                model_error: Some(e.to_string()),
                ..Serving::default()
            },
        };
        if let (None, Some(url)) = (&s.model, url) {
            match public_model(url, self.access).await {
                Ok(m) => (s.model, s.model_error) = (Some(m), None),
                Err(e) => s.model_error = s.model_error.map(|p| format!("{p}; {e}")),
            }
        }
        if records.model.is_none() {
            records.model.clone_from(&s.model);
            records.model_error.clone_from(&s.model_error);
        }
        entry.revision = s.revision;
        entry.image = s.image.or(entry.image);
        entry.digest = s.digest.or(entry.digest);
        entry.model = s.model;
        entry.template = s.template;
        entry
    }

    /// An entry of the Deployment `o` as applied, with `outcome`.
    fn entry(&self, o: &Applied, outcome: Outcome, reason: Option<String>) -> Entry {
        let template = o.after.pointer("/spec/template");
        let image = template.and_then(|t| server_image(t, self.container));
        Entry {
            time: now(),
            command: self.command.into(),
            deployment: o.name.clone(),
            digest: image.as_deref().and_then(digest_of),
            image,
            model: None,
            revision: None,
            outcome,
            reason,
            template: None,
        }
    }
}

/// The model the server behind the public URL describes (`GET /model`).
async fn public_model(url: &str, access: &Access) -> Result<ModelInfo, String> {
    let j = smoke::get_json(url, "model", MODEL_READ_TIMEOUT, access).await?;
    serde_json::from_value(j).map_err(|e| format!("GET {url}model: not a model description ({e})"))
}

/// How a release that ended in `e` is recorded: rolled back (the previous version serves again)
/// or failed, with the error as its reason. None for errors that are not the release's own.
fn failed(e: &Error) -> Option<(Outcome, String)> {
    let rollback: Option<&Rollback> = match e {
        Error::Rollout(RolloutError::Api(_)) => return None,
        Error::Rollout(r) => r.rollback(),
        Error::SmokeRolledBack { rollback, .. } => Some(rollback),
        Error::Smoke(_) => None,
        _ => return None,
    };
    let outcome = match rollback {
        Some(r) if r.restored => Outcome::RolledBack,
        _ => Outcome::Failed,
    };
    let reason = e
        .to_string()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Some((outcome, reason))
}
