//! `apply` and `release`: judge the new model first when asked (`--evaluate`, `--canary`),
//! server-side apply, wait for each rollout (rolling back on request) and each load balancer's
//! address, smoke-test the public URL.
//!
//! - `report.rs`: what they report
//! - `record.rs`: what they record in the release history
//! - `secrets.rs`: the Secrets of `--api-key-secret` and `--tls-secret`
//! - `waiting.rs`: the waits after applying, and the cluster's state after a signal
//! - `interrupted.rs`: what a signal leaves, and how to resume

use std::time::Instant;

use super::canary::{Canary, CanaryReport, during_traffic};
use super::diff::{self, ObjectReport, load_manifests};
use super::evaluate::{Evaluation, EvaluationReport, before_traffic};
use super::image::build_and_push;
use super::monitoring::{self, Monitoring};
use crate::cli::apply::{ApplyArgs, ReleaseArgs, SecurityArgs};
use crate::cli::cluster::ManifestArgs;
use crate::cli::history::RecordArgs;
use crate::error::{Error, Interrupted};
use crate::interrupt::Interrupt;
use crate::kube::apply::{self, Action, Applied};
use crate::kube::cluster::Cluster;
use crate::kube::history;
use crate::kube::manifests::{Manifest, ManifestError};
use crate::kube::rollout::RolloutReport;
use crate::kube::secure;
use crate::oci::publish::Pushed;
use crate::progress::{Progress, Terminal};
use crate::smoke::{self, SmokeReport};

mod interrupted;
mod record;
mod report;
mod secrets;
#[cfg(test)]
pub(crate) mod tests;
mod waiting;

use interrupted::{interrupted_applying, interrupted_recording, interrupted_waiting};
use record::Recorder;
pub use report::{ApiKeyReport, ApplyReport, Outcome};
pub use secrets::Secrets;
use waiting::{Waiting, smoke_test};

/// The namespace of the server's objects: the first Deployment's own, else the command's.
fn server_namespace(manifests: &[Manifest], cluster: &Cluster) -> String {
    manifests
        .iter()
        .find(|m| m.kind == "Deployment")
        .and_then(|m| m.namespace.clone())
        .unwrap_or_else(|| cluster.namespace.clone())
}

/// Turns on what `--api-key-secret` and `--tls-secret` ask for in the manifests.
fn secure_manifests(
    manifests: &mut [Manifest],
    m: &ManifestArgs,
    security: &SecurityArgs,
) -> Result<(), ManifestError> {
    let container = m.container.as_deref();
    if let Some(name) = &security.api_key_secret {
        secure::mount_api_keys(manifests, name, container)?;
    }
    if let Some(name) = &security.tls_secret {
        secure::enable_tls(manifests, name, container)?;
    }
    Ok(())
}

/// Reads the release history before anything changes (unless `limit` is 0), so that one that
/// cannot be kept (no permission, a ConfigMap that is not a history) is said now, not after a
/// rollout nobody could record.
async fn check_history(cluster: &Cluster, ns: &str, limit: usize) -> Result<(), Error> {
    if limit > 0 {
        history::read(cluster, ns).await?;
    }
    Ok(())
}

/// What is read from the cluster before anything changes.
pub struct Prepared {
    pub cluster: Cluster,
    pub secrets: Secrets,
    /// `--monitoring`: the objects the cluster can take, and what it cannot.
    pub monitoring: Option<Monitoring>,
}

/// Reads what must be known before anything changes: the Secrets, the release history, and
/// with `--monitoring` (its `fitted` objects) which of prometheus-operator's kinds the cluster
/// serves.
pub(crate) async fn prepare(
    cluster: Cluster,
    manifests: &[Manifest],
    fitted: Option<Vec<Manifest>>,
    security: &SecurityArgs,
    record: &RecordArgs,
) -> Result<Prepared, Error> {
    let ns = server_namespace(manifests, &cluster);
    let secrets = Secrets::prepare(&cluster, &ns, security).await?;
    check_history(&cluster, &ns, record.history_limit).await?;
    let tls = secrets.tls_scrape(security);
    let monitoring = match fitted {
        Some(fitted) => Some(monitoring::plan(&cluster, fitted, tls.as_ref()).await?),
        None => None,
    };
    Ok(Prepared {
        cluster,
        secrets,
        monitoring,
    })
}

/// With `--monitoring`, its objects fitted to the release in `manifests`.
fn fitted(on: bool, manifests: &[Manifest]) -> Result<Option<Vec<Manifest>>, ManifestError> {
    on.then(|| monitoring::fitted(manifests)).transpose()
}

/// `deployer release`: build and push, then apply with the pushed digest. The manifests are read
/// and the cluster is reached (its credentials and the release history checked) first, so a
/// release that cannot apply says so before it spends a build and a push; a bad `--platform`
/// says so before the cluster is reached.
pub async fn release(c: &ReleaseArgs, interrupt: &Interrupt) -> Result<Outcome, Error> {
    c.build.spec()?;
    let (mut manifests, _) = load_manifests(&c.manifests, Some(&c.image))?;
    secure_manifests(&mut manifests, &c.manifests, &c.security)?;
    let fitted = fitted(c.monitoring, &manifests)?;
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let prepared = prepare(cluster, &manifests, fitted, &c.security, &c.record).await?;
    let mut progress = Terminal::new();
    let building = build_and_push(&c.image, &c.build, &c.registry, &mut progress);
    let pushed = match interrupt.run(building).await {
        Ok(pushed) => pushed?,
        Err(signal) => {
            return Err(Error::Interrupted(Interrupted {
                signal,
                during: "building and pushing the image".into(),
                state: vec![
                    "nothing was applied to the cluster".into(),
                    "blobs already pushed stay in the registry".into(),
                ],
                resume: "run the same `deployer release` again: it sends only what the registry still lacks".into(),
            }));
        }
    };
    progress.line(&format!("pushed {}", pushed.image));
    drop(progress);
    let apply = c.apply(Some(pushed.image.clone()));
    run(&apply, Some(pushed), Some(prepared), "release", interrupt).await
}

/// `deployer apply` (a dry run reports like `diff`). A signal stops it where it stands: between or
/// during the server-side applies, or while waiting; the error says what the cluster holds then.
/// `prepared` is what [`prepare`] read when the caller has done it already.
pub async fn run(
    c: &ApplyArgs,
    pushed: Option<Pushed>,
    prepared: Option<Prepared>,
    command: &'static str,
    interrupt: &Interrupt,
) -> Result<Outcome, Error> {
    let (mut manifests, server_image) = load_manifests(&c.manifests, c.image.as_deref())?;
    secure_manifests(&mut manifests, &c.manifests, &c.security)?;
    check_smoke_image(c).map_err(Error::Usage)?;
    let fitted = fitted(c.monitoring, &manifests)?;
    if c.dry_run {
        return dry_run(c, &manifests, fitted, command).await;
    }
    let Prepared {
        cluster,
        secrets,
        monitoring,
    } = match prepared {
        Some(prepared) => prepared,
        None => {
            let cluster = Cluster::connect(&c.cluster.connection()).await?;
            prepare(cluster, &manifests, fitted, &c.security, &c.record).await?
        }
    };
    let start = Instant::now();
    let mut p = Terminal::new();
    let access = secrets.access(&c.security);
    let judge = (&cluster, manifests.as_slice(), &access);
    let evaluation = evaluate_step(c, judge, command, &mut p, interrupt).await?;
    let canary = canary_step(c, judge, evaluation.as_ref(), command, &mut p, interrupt).await?;
    let to_apply = (manifests.as_slice(), monitoring.as_ref());
    let applied = apply_step(&cluster, to_apply, c, &mut p, command, interrupt).await?;
    let apply_seconds = start.elapsed().as_secs_f64();
    let waiting = Waiting {
        cluster: &cluster,
        applied: &applied,
        wait: &c.wait,
    };
    let waited = wait_all(&waiting, &access, &mut p, command, interrupt).await?;
    let recorder = Recorder {
        waiting: &waiting,
        command,
        limit: c.record.history_limit,
        container: c.manifests.container.as_deref(),
        access: &access,
    };
    let records = match interrupt.run(recorder.record(&waited, &mut p)).await {
        Ok(records) => records,
        Err(signal) => return Err(interrupted_recording(signal, &waited).into()),
    };
    drop(p);
    let (rollouts, urls, smoke) = waited?;
    Ok(Outcome::Done(Box::new(ApplyReport {
        command,
        namespace: cluster.namespace,
        image: server_image,
        pushed,
        objects: applied.iter().map(|o| ObjectReport::new(o, None)).collect(),
        changed: applied
            .iter()
            .filter(|o| o.action != Action::Unchanged)
            .count(),
        rollouts,
        url: urls.first().cloned(),
        urls,
        smoke,
        evaluation,
        canary,
        model: records.model,
        model_error: records.model_error,
        history: records.recorded,
        api_key: secrets.api_key_report(&c.security),
        tls_secret: c.security.tls_secret.clone(),
        monitoring: monitoring.map(|m| m.report),
        apply_seconds,
        seconds: start.elapsed().as_secs_f64(),
    })))
}

/// `apply --dry-run`: what `apply` would change (with `--monitoring`'s `fitted` objects the
/// cluster can take), as `diff` reports it.
async fn dry_run(
    c: &ApplyArgs,
    manifests: &[Manifest],
    fitted: Option<Vec<Manifest>>,
    command: &'static str,
) -> Result<Outcome, Error> {
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let monitoring = match fitted {
        Some(fitted) => {
            let ns = server_namespace(manifests, &cluster);
            let tls = secrets::tls_scrape(&cluster, &ns, &c.security).await?;
            Some(monitoring::plan(&cluster, fitted, tls.as_ref()).await?)
        }
        None => None,
    };
    let (force, warnings) = (c.force_conflicts, &mut Terminal::new());
    let r = diff::dry_run(&cluster, manifests, monitoring, force, command, warnings).await?;
    Ok(Outcome::DryRun(r))
}

/// What the waits came to: every rollout, every URL, the smoke test.
pub(crate) type Waited = (Vec<RolloutReport>, Vec<String>, Option<SmokeReport>);

/// The waits after applying: the rollouts, the load balancers' addresses, the smoke test. Their
/// outcome (`Ok` inside), or (outside) the error of a signal that stopped them, with the
/// cluster's state then.
async fn wait_all(
    waiting: &Waiting<'_>,
    access: &smoke::Access,
    p: &mut dyn Progress,
    command: &str,
    interrupt: &Interrupt,
) -> Result<Result<Waited, Error>, Error> {
    let step = std::cell::Cell::new("waiting for the rollout");
    let waited = interrupt
        .run(async {
            let rollouts = waiting.rollouts(p).await?;
            step.set("waiting for the load balancer's address");
            let urls = waiting.urls(p).await?;
            step.set("smoke-testing the public URL");
            let smoke = smoke_test(waiting, urls.first(), access, p).await?;
            Ok::<_, Error>((rollouts, urls, smoke))
        })
        .await;
    match waited {
        Ok(done) => Ok(done),
        Err(signal) => {
            let state = waiting.state().await;
            let rollback = waiting.wait.rollback_on_failure;
            Err(interrupted_waiting(signal, step.get(), state, command, rollback).into())
        }
    }
}

/// `--smoke-image` names a file.
fn check_smoke_image(c: &ApplyArgs) -> Result<(), String> {
    match &c.wait.smoke_image {
        Some(s) if !s.is_file() => Err(format!("--smoke-image {}: no such file", s.display())),
        _ => Ok(()),
    }
}

/// With `--evaluate` (or `--canary`, which needs it), judges the new model before anything
/// changes (see [`super::evaluate`]).
async fn evaluate_step(
    c: &ApplyArgs,
    (cluster, manifests, access): (&Cluster, &[Manifest], &smoke::Access),
    command: &'static str,
    p: &mut dyn Progress,
    interrupt: &Interrupt,
) -> Result<Option<EvaluationReport>, Error> {
    if !c.eval.evaluate && c.canary.canary.is_none() {
        return Ok(None);
    }
    let ns = server_namespace(manifests, cluster);
    let e = Evaluation {
        cluster,
        ns: &ns,
        manifests,
        args: &c.eval,
        limits: c.wait.limits(),
        container: c.manifests.container.as_deref(),
        api_key: access.api_key.as_deref(),
        command,
        history_limit: c.record.history_limit,
    };
    before_traffic(&e, p, interrupt).await
}

/// With `--canary`, once the evaluation passed a new model, gives it a share of live traffic and
/// judges it there before anything serving changes (see [`super::canary`]).
async fn canary_step(
    c: &ApplyArgs,
    (cluster, manifests, access): (&Cluster, &[Manifest], &smoke::Access),
    evaluation: Option<&EvaluationReport>,
    command: &'static str,
    p: &mut dyn Progress,
    interrupt: &Interrupt,
) -> Result<Option<CanaryReport>, Error> {
    let (Some(share), Some(evaluation)) = (c.canary.canary, evaluation) else {
        return Ok(None);
    };
    let ns = server_namespace(manifests, cluster);
    let canary = Canary {
        cluster,
        ns: &ns,
        manifests,
        args: &c.canary,
        limits: c.wait.limits(),
        container: c.manifests.container.as_deref(),
        api_key: access.api_key.as_deref(),
        model: evaluation.candidate_model.clone(),
        command,
        history_limit: c.record.history_limit,
    };
    during_traffic(&canary, share, p, interrupt).await
}

/// Server-side applies the manifests and `--monitoring`'s objects (saying first what it cannot
/// apply), unless a signal comes first.
async fn apply_step(
    cluster: &Cluster,
    (release, objects): (&[Manifest], Option<&Monitoring>),
    c: &ApplyArgs,
    p: &mut dyn Progress,
    command: &str,
    interrupt: &Interrupt,
) -> Result<Vec<Applied>, Error> {
    if let Some(m) = objects {
        m.warn(p);
    }
    let manifests = &monitoring::with(release, objects);
    let mut applied = Vec::new();
    let force = c.force_conflicts;
    let applying = apply::apply_all(cluster, manifests, force, false, p, &mut applied);
    match interrupt.run(applying).await {
        Ok(r) => r.map(|()| applied).map_err(Error::from),
        Err(signal) => Err(interrupted_applying(signal, manifests, &applied, command).into()),
    }
}
