//! `--evaluate`: a new server image is judged before it gets any traffic. Its pod template runs as
//! the Deployment `NAME-candidate` ([`crate::kube::candidate`]: one replica, selected by no
//! Service); once it is available, one of its pods and one serving pod predict the same labelled
//! images ([`set`]) through the API server's pod proxy; [`score`] measures accuracy, unknown rate
//! and agreement and decides. The candidate is deleted either way. Promoted: `apply` goes on and
//! updates the serving Deployment (its new pods are the template just judged). Refused, or the
//! candidate did not come up: nothing serving was changed, the refusal is recorded in the release
//! history, exit 8 (exit 4 for a candidate that could not run for another reason than its model).
//!
//! A server image the serving Deployment already runs is not judged again.

pub mod report;
pub mod score;
pub mod set;

use std::time::Instant;

use futures::StreamExt;

use crate::cli::apply::EvalArgs;
use crate::commands::history::{now, record};
use crate::error::{Error, Interrupted};
use crate::interrupt::Interrupt;
use crate::kube::candidate;
use crate::kube::cluster::Cluster;
use crate::kube::history::{Entry, Outcome};
use crate::kube::manifests::{Manifest, ManifestError};
use crate::kube::model::{self, ModelInfo, digest_of, server_image};
use crate::kube::predict::{self, Target};
use crate::kube::rollout::{self, Rollback, RolloutError};
use crate::progress::Progress;
pub use report::{EvaluationReport, Served};
use score::Answer;
use set::EvalSet;

/// How many predictions are in flight at once, per pod.
const IN_FLIGHT: usize = 4;
/// How long removing the candidate after a signal may take.
const CLEANUP: std::time::Duration = std::time::Duration::from_secs(5);

/// What an evaluation needs from `apply`.
pub struct Evaluation<'a> {
    pub cluster: &'a Cluster,
    pub ns: &'a str,
    pub manifests: &'a [Manifest],
    pub args: &'a EvalArgs,
    pub limits: rollout::Limits,
    /// `--container`.
    pub container: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// The command and its `--history-limit`, to record a refusal.
    pub command: &'static str,
    pub history_limit: usize,
}

/// The evaluation before traffic, stopped by a signal with what it leaves (the candidate is
/// deleted first, within a few seconds).
pub async fn before_traffic(
    e: &Evaluation<'_>,
    p: &mut dyn Progress,
    interrupt: &Interrupt,
) -> Result<Option<EvaluationReport>, Error> {
    match interrupt.run(evaluate(e, p)).await {
        Ok(r) => r,
        Err(signal) => {
            let name = candidate::name_of(&server_deployment(e.manifests)?.name);
            let removed = tokio::time::timeout(CLEANUP, candidate::remove(e.cluster, e.ns, &name));
            let left = match removed.await {
                Ok(Ok(())) => format!("Deployment/{name} (the candidate) deleted"),
                _ => format!(
                    "Deployment/{name} (the candidate, no traffic) may be left: `kubectl delete deployment {name} -n {}`",
                    e.ns
                ),
            };
            Err(Error::Interrupted(Interrupted {
                signal,
                during: "evaluating the new model before traffic".into(),
                state: vec![left, "nothing serving was changed".into()],
                resume: "run the same command again: it evaluates again".into(),
            }))
        }
    }
}

/// The manifests' (first) Deployment: the server's.
pub(crate) fn server_deployment(manifests: &[Manifest]) -> Result<&Manifest, ManifestError> {
    manifests
        .iter()
        .find(|m| m.kind == "Deployment")
        .ok_or(ManifestError::NoDeployment)
}

/// Runs and judges the candidate (see the module's documentation). `Ok(None)`: nothing new to
/// judge.
pub async fn evaluate(
    e: &Evaluation<'_>,
    p: &mut dyn Progress,
) -> Result<Option<EvaluationReport>, Error> {
    let start = Instant::now();
    let d = server_deployment(e.manifests)?;
    let template = d.object.pointer("/spec/template");
    let image = template.and_then(|t| server_image(t, e.container));
    let serving = predict::target(e.cluster, e.ns, &d.name, e.container).await?;
    if let Some(s) = serving.as_ref().filter(|s| s.image == image) {
        p.line(&format!(
            "evaluation: Deployment/{} already serves {}; nothing new to judge",
            d.name,
            s.image.as_deref().unwrap_or("?")
        ));
        return Ok(None);
    }
    let set = set::load(e.args.eval_set.as_deref()).map_err(Error::Usage)?;
    let keys = candidate::selected_keys(e.manifests, d);
    let object = candidate::candidate_object(d, e.ns, &keys);
    let name = candidate::name_of(&d.name);
    let what = (&object, "the candidate (no Service selects its pods)");
    if let Err(failed) = candidate::start(e.cluster, e.ns, what, e.limits, p).await {
        remove(e, &name, p).await;
        let error = not_started(failed, &d.name, &name, serving.as_ref());
        refused(e, &d.name, &image, None, &error.to_string(), p).await;
        return Err(error.into());
    }
    let judged = judge(e, &set, &name, serving.as_ref(), p).await;
    remove(e, &name, p).await;
    let mut report = judged?;
    report.deployment = d.name.clone();
    report.image = image.clone();
    report.seconds = start.elapsed().as_secs_f64();
    p.line(report.text().trim_end());
    if report.verdict.promote {
        return Ok(Some(report));
    }
    let error = Error::Refused(Box::new(report.clone()));
    let model = report.candidate_model.clone();
    refused(e, &d.name, &image, model, &error.to_string(), p).await;
    Err(error)
}

/// A candidate that did not become available, as the rollout failure it is; nothing serving was
/// changed (the note says so), so a refused model is exit 8 and anything else exit 4.
fn not_started(
    failed: RolloutError,
    deployment: &str,
    name: &str,
    serving: Option<&Target>,
) -> RolloutError {
    if !failed.is_rollout_failure() {
        return failed;
    }
    failed.with_rollback(Rollback {
        restored: true,
        image: serving.and_then(|s| s.image.clone()),
        message: format!(
            "the candidate Deployment/{name} was deleted; Deployment/{deployment} was not changed"
        ),
    })
}

/// Deletes the candidate; a failure to is a warning (it serves nothing).
async fn remove(e: &Evaluation<'_>, name: &str, p: &mut dyn Progress) {
    match candidate::remove(e.cluster, e.ns, name).await {
        Ok(()) => p.line(&format!("Deployment/{name}: candidate deleted")),
        Err(err) => p.line(&format!("warning: the candidate was not deleted: {err}")),
    }
}

/// Asks one candidate pod and one serving pod (when a model serves) for every image.
async fn judge(
    e: &Evaluation<'_>,
    set: &EvalSet,
    name: &str,
    serving: Option<&Target>,
    p: &mut dyn Progress,
) -> Result<EvaluationReport, Error> {
    let Some(candidate) = predict::target(e.cluster, e.ns, name, e.container).await? else {
        // It rolled out, then its pod stopped being Ready: as a rollout that failed.
        return Err(Error::Rollout(RolloutError::Failed {
            deployment: name.into(),
            reason: "NotReady".into(),
            message: "the candidate rolled out, but none of its pods is Ready to ask".into(),
            rollback: None,
        }));
    };
    let n = set.images.len();
    p.set(&format!(
        "evaluation: {n} images on the candidate pod {}",
        candidate.pod
    ));
    let candidate_answers = ask(e, &candidate, set).await;
    let served = match serving {
        Some(s) => {
            p.set(&format!(
                "evaluation: {n} images on the serving pod {}",
                s.pod
            ));
            Some((s, ask(e, s, set).await))
        }
        None => None,
    };
    let candidate_scores = score::scores(&candidate_answers);
    let limits = score::Limits {
        floor: e.args.eval_floor,
        margin: e.args.eval_margin,
    };
    let serving_scores = served.as_ref().map(|(_, a)| score::scores(a));
    let verdict = score::decide(&candidate_scores, serving_scores.as_ref(), limits);
    let model = model::serving(e.cluster, e.ns, name, e.container, e.api_key).await;
    Ok(EvaluationReport {
        deployment: String::new(),
        candidate: name.into(),
        image: None,
        set: set.source.clone(),
        limits,
        candidate_pod: candidate.pod.clone(),
        candidate_model: model.ok().and_then(|m| m.model),
        agreement: served
            .as_ref()
            .map(|(_, a)| score::agreement(&candidate_answers, a)),
        serving: served.map(|(s, a)| Served {
            pod: s.pod.clone(),
            image: s.image.clone(),
            scores: score::scores(&a),
        }),
        candidate_scores,
        verdict,
        seconds: 0.0,
    })
}

/// Every image of `set`, predicted by `target`'s server (a few at once), in order.
async fn ask(e: &Evaluation<'_>, target: &Target, set: &EvalSet) -> Vec<Answer> {
    futures::stream::iter(&set.images)
        .map(|img| async move {
            let image = (img.bytes.as_slice(), img.mime);
            let result = predict::predict(e.cluster, e.ns, target, e.api_key, image).await;
            Answer::from_result(&img.label, result)
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

/// Records a refused release (it never served).
async fn refused(
    e: &Evaluation<'_>,
    deployment: &str,
    image: &Option<String>,
    model: Option<ModelInfo>,
    reason: &str,
    p: &mut dyn Progress,
) {
    let entry = Entry {
        time: now(),
        command: e.command.into(),
        deployment: deployment.into(),
        image: image.clone(),
        digest: image.as_deref().and_then(digest_of),
        model,
        revision: None,
        outcome: Outcome::Refused,
        reason: Some(reason.lines().map(str::trim).collect::<Vec<_>>().join("; ")),
        template: None,
    };
    record(e.cluster, e.ns, entry, e.history_limit, p).await;
}

#[cfg(test)]
mod tests;
