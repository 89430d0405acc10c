//! `--canary SHARE`: once the evaluation before traffic has passed, the new model serves a share of
//! live traffic before it is promoted. Its pod template runs as the Deployment `NAME-canary`
//! ([`crate::kube::canary`]: its pods keep the template's labels, so the Services send them
//! traffic; as many replicas as make SHARE by pod count). Over the window (`--canary-duration`,
//! ended early by `--canary-requests`, extended by `--canary-max-wait` while the canary has fewer
//! than `--canary-min-requests` predictions) every canary pod's and stable pod's `/metrics` is read
//! at the start and at the end through the API server's pod proxy; the changes of the counters
//! ([`exposition`]) give each group's [`signals`], which [`analysis`] compares ([`stats`]: the
//! chi-squared tests). Promoted: the canary is deleted and `apply` goes on to update the serving
//! Deployment. Aborted: the canary is deleted, its pods are waited for until gone (the previous
//! model then serves every request), the release is recorded as `aborted`, exit 8.

pub mod analysis;
pub mod exposition;
pub mod report;
pub mod signals;
pub mod stats;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::evaluate::server_deployment;
use super::history::{now, record};
use crate::cli::canary::CanaryArgs;
use crate::error::{Error, Interrupted};
use crate::interrupt::Interrupt;
use crate::kube::canary::{self as kube_canary, GroupPod};
use crate::kube::candidate;
use crate::kube::cluster::Cluster;
use crate::kube::history::{Entry, Outcome};
use crate::kube::manifests::Manifest;
use crate::kube::model::{ModelInfo, digest_of, server_image};
use crate::kube::rollout::{self, Rollback, selector_string};
use crate::progress::Progress;
use analysis::{decide, with_restarts};
use exposition::Samples;
pub use report::CanaryReport;
use signals::Signals;

/// How often the pods are scraped during the window (to end it once enough was answered).
const POLL: Duration = Duration::from_secs(5);
/// How long an aborted canary's pods may take to be gone (they drain like any pod).
const GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long removing the canary after a signal may take.
const CLEANUP: Duration = Duration::from_secs(5);

/// What a canary needs from `apply`.
pub struct Canary<'a> {
    pub cluster: &'a Cluster,
    pub ns: &'a str,
    pub manifests: &'a [Manifest],
    pub args: &'a CanaryArgs,
    pub limits: rollout::Limits,
    pub container: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// The model the evaluation's candidate reported, for the history.
    pub model: Option<ModelInfo>,
    /// The command and its `--history-limit`, to record an abort.
    pub command: &'static str,
    pub history_limit: usize,
}

/// The canary, stopped by a signal with what it leaves (the canary is deleted first, within a
/// few seconds). `Ok(None)`: nothing serves yet, so there is nothing to compare with.
pub async fn during_traffic(
    c: &Canary<'_>,
    share: f64,
    p: &mut dyn Progress,
    interrupt: &Interrupt,
) -> Result<Option<CanaryReport>, Error> {
    match interrupt.run(run(c, share, p)).await {
        Ok(r) => r,
        Err(signal) => {
            let d = server_deployment(c.manifests)?;
            let name = kube_canary::name_of(&d.name);
            let removed = tokio::time::timeout(CLEANUP, candidate::remove(c.cluster, c.ns, &name));
            let left = match removed.await {
                Ok(Ok(())) => format!("Deployment/{name} (the canary) deleted; its pods drain"),
                _ => format!(
                    "Deployment/{name} (the canary, serving a share of traffic) may be left: `kubectl delete deployment {name} -n {}`",
                    c.ns
                ),
            };
            Err(Error::Interrupted(Interrupted {
                signal,
                during: "judging the new model on a share of live traffic (canary)".into(),
                state: vec![left, format!("Deployment/{} was not changed", d.name)],
                resume: "run the same command again: it evaluates and runs the canary again".into(),
            }))
        }
    }
}

/// The two groups of pods and how to reach them.
struct Groups {
    /// The canary's selector and pod template.
    canary: (String, Value),
    /// The serving Deployment's.
    stable: (String, Value),
}

/// One scrape of both groups: each Ready pod's samples, the canary's restarts.
#[derive(Debug, Clone, Default)]
struct Scrape {
    canary: BTreeMap<String, Samples>,
    stable: BTreeMap<String, Samples>,
    canary_restarts: i32,
    failures: Vec<String>,
}

/// Runs and judges the canary (see the module's documentation).
async fn run(
    c: &Canary<'_>,
    share: f64,
    p: &mut dyn Progress,
) -> Result<Option<CanaryReport>, Error> {
    let start = Instant::now();
    let d = server_deployment(c.manifests)?;
    let Some(live) = kube_canary::serving(c.cluster, c.ns, &d.name).await? else {
        p.line("canary: nothing serves yet (a first release), so nothing to compare with: the evaluation decides");
        return Ok(None);
    };
    let spec = live.spec.as_ref();
    let serving_replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let (replicas, achieved) = kube_canary::replicas(share, serving_replicas);
    let name = kube_canary::name_of(&d.name);
    let object = kube_canary::canary_object(d, c.ns, replicas);
    let what = format!(
        "the canary: {replicas} replica(s) beside {serving_replicas} serving, {:.1} % of the traffic by pod count",
        achieved * 100.0
    );
    let old_image = spec.and_then(|s| server_image(&serde_json::json!(s.template), c.container));
    if let Err(failed) = candidate::start(c.cluster, c.ns, (&object, &what), c.limits, p).await {
        remove(c, &d.name, true, p).await;
        return Err(not_started(failed, &d.name, &name, old_image).into());
    }
    let stable_template = spec
        .map(|s| serde_json::json!(s.template))
        .unwrap_or_default();
    let stable_selector = spec
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(selector_string)
        .unwrap_or_default();
    let groups = Groups {
        canary: (
            selector_string(&kube_canary::selector(&d.name)),
            object["spec"]["template"].clone(),
        ),
        stable: (stable_selector, stable_template),
    };
    let window = observe(c, &groups, p).await;
    let aborted = window.as_ref().map(|w| !w.analysis.promote).unwrap_or(true);
    let gone = remove(c, &d.name, aborted, p).await;
    let mut report = window?;
    report.deployment = d.name.clone();
    report.canary = name.clone();
    report.image = d
        .object
        .pointer("/spec/template")
        .and_then(|t| server_image(t, c.container));
    (report.share, report.achieved_share) = (share, achieved);
    (report.replicas, report.serving_replicas) = (replicas, serving_replicas);
    report.seconds = start.elapsed().as_secs_f64();
    if !gone {
        report.notes.push(format!(
            "the canary's pods were not all gone after {}s",
            GONE_TIMEOUT.as_secs()
        ));
    }
    p.line(report.text().trim_end());
    if report.analysis.promote {
        return Ok(Some(report));
    }
    aborted_entry(c, &report, p).await;
    Err(Error::Aborted(Box::new(report)))
}

/// A canary that did not become available, as the rollout failure it is; nothing serving was
/// changed (the note says so).
fn not_started(
    failed: rollout::RolloutError,
    deployment: &str,
    name: &str,
    image: Option<String>,
) -> rollout::RolloutError {
    if !failed.is_rollout_failure() {
        return failed;
    }
    failed.with_rollback(Rollback {
        restored: true,
        image,
        message: format!(
            "the canary Deployment/{name} was deleted; Deployment/{deployment} was not changed"
        ),
    })
}

/// Scrapes both groups at the start and at the end of the window and judges what changed.
async fn observe(
    c: &Canary<'_>,
    groups: &Groups,
    p: &mut dyn Progress,
) -> Result<CanaryReport, Error> {
    let first = scrape(c, groups).await?;
    let started = Instant::now();
    let a = c.args;
    let (end, hard_end) = (a.canary_duration, a.canary_duration + a.canary_max_wait);
    let mut last = first.clone();
    loop {
        let n = signals(&first.canary, &last.canary).predictions();
        let elapsed = started.elapsed();
        let enough = a.canary_requests.is_some_and(|r| n >= r as f64);
        let min_met = n >= a.canary_min_requests as f64;
        if enough || (elapsed >= end && (min_met || elapsed >= hard_end)) {
            break;
        }
        let stop = if elapsed < end { end } else { hard_end };
        tokio::time::sleep(POLL.min(stop - elapsed)).await;
        last = scrape(c, groups).await?;
        p.set(&format!(
            "canary: {n} predictions on the canary pods after {:.0}s (window {}s)",
            started.elapsed().as_secs_f64(),
            end.as_secs()
        ));
    }
    Ok(judge(c, &first, &last, started.elapsed().as_secs_f64()))
}

/// The report of a window from its first and last scrape (the fields of the Deployments are
/// filled in by the caller).
fn judge(c: &Canary<'_>, first: &Scrape, last: &Scrape, seconds: f64) -> CanaryReport {
    let canary = signals(&first.canary, &last.canary);
    let stable = signals(&first.stable, &last.stable);
    let restarts = (last.canary_restarts - first.canary_restarts).max(0);
    let limits = limits(c.args);
    let analysis = with_restarts(decide(&canary, &stable, limits), restarts);
    let mut notes: Vec<String> = first
        .failures
        .iter()
        .chain(&last.failures)
        .cloned()
        .collect();
    for (group, a, b) in [
        ("canary", &first.canary, &last.canary),
        ("stable", &first.stable, &last.stable),
    ] {
        for pod in a.keys().filter(|p| !b.contains_key(*p)) {
            notes.push(format!(
                "{group} pod {pod} was not scraped at the end: what it answered is not counted"
            ));
        }
    }
    let total = canary.predictions() + stable.predictions();
    CanaryReport {
        deployment: String::new(),
        canary: String::new(),
        image: None,
        share: 0.0,
        achieved_share: 0.0,
        replicas: 0,
        serving_replicas: 0,
        observed_share: (total > 0.0).then(|| canary.predictions() / total),
        canary_pods: last.canary.keys().cloned().collect(),
        stable_pods: last.stable.keys().cloned().collect(),
        window_seconds: seconds,
        canary_signals: canary,
        stable_signals: stable,
        canary_restarts: restarts,
        limits,
        analysis,
        notes,
        seconds: 0.0,
    }
}

/// What the analysis holds the canary to (the `--canary-*` flags).
pub fn limits(a: &CanaryArgs) -> analysis::Limits {
    analysis::Limits {
        alpha: a.canary_alpha,
        min_predictions: a.canary_min_requests as f64,
        error_margin: a.canary_error_margin,
        latency_factor: a.canary_latency_factor,
    }
}

/// What a group's pods counted between two scrapes, summed.
fn signals(first: &BTreeMap<String, Samples>, last: &BTreeMap<String, Samples>) -> Signals {
    let deltas: Vec<Samples> = last
        .iter()
        .map(|(pod, s)| exposition::delta(first.get(pod), s))
        .collect();
    Signals::read(&exposition::sum(&deltas))
}

/// Every Ready pod's `/metrics` in both groups, and the canary's restarts. A pod that cannot be
/// scraped is a note (its counts are missing), not a failure.
async fn scrape(c: &Canary<'_>, groups: &Groups) -> Result<Scrape, Error> {
    let mut s = Scrape::default();
    for (stable, (selector, template)) in [(false, &groups.canary), (true, &groups.stable)] {
        let pods: Vec<GroupPod> = kube_canary::group(c.cluster, c.ns, selector, stable).await?;
        for pod in pods {
            if !stable {
                s.canary_restarts += pod.restarts;
            }
            if !pod.ready {
                continue;
            }
            let target = (pod.name.as_str(), template);
            match kube_canary::scrape(c.cluster, c.ns, target, c.api_key).await {
                Ok(text) => {
                    let group = if stable { &mut s.stable } else { &mut s.canary };
                    group.insert(pod.name, exposition::parse(&text));
                }
                Err(e) => s.failures.push(e),
            }
        }
    }
    Ok(s)
}

/// Deletes the canary of the Deployment `deployment`; when `wait`, until its pods are gone (true
/// when they are). A failure to delete is a warning.
async fn remove(c: &Canary<'_>, deployment: &str, wait: bool, p: &mut dyn Progress) -> bool {
    let name = &kube_canary::name_of(deployment);
    if let Err(err) = candidate::remove(c.cluster, c.ns, name).await {
        p.line(&format!("warning: the canary was not deleted: {err}"));
        return false;
    }
    if !wait {
        p.line(&format!("Deployment/{name}: canary deleted"));
        return true;
    }
    p.set(&format!(
        "Deployment/{name}: canary deleted, waiting for its pods to be gone"
    ));
    let selector = selector_string(&kube_canary::selector(deployment));
    let gone = kube_canary::wait_gone(c.cluster, c.ns, &selector, GONE_TIMEOUT).await;
    if gone {
        p.line(&format!("Deployment/{name}: canary deleted, its pods are gone: the previous model serves every request"));
    }
    gone
}

/// Records an aborted release (it served only its share, for the window).
async fn aborted_entry(c: &Canary<'_>, report: &CanaryReport, p: &mut dyn Progress) {
    let entry = Entry {
        time: now(),
        command: c.command.into(),
        deployment: report.deployment.clone(),
        image: report.image.clone(),
        digest: report.image.as_deref().and_then(digest_of),
        model: c.model.clone(),
        revision: None,
        outcome: Outcome::Aborted,
        reason: Some(report.summary()),
        template: None,
    };
    record(c.cluster, c.ns, entry, c.history_limit, p).await;
}

#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;
