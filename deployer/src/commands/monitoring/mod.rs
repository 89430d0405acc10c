//! `--monitoring` (`apply`, `release`, `diff`): the monitoring objects that go with the release's
//! manifests. prometheus-operator's kinds are applied only when the cluster serves them (API
//! discovery, before anything changes); when it does not, the Grafana dashboard's ConfigMap (a
//! core object) is applied alone, and a warning says which kinds are missing, what was applied
//! and how to get the rest. That is no failure (exit 0): the release itself is what was asked
//! for, and monitoring can follow once the operator is there. With `--tls-secret` the PodMonitor
//! scrapes the pods' HTTPS port (their plain one then serves only the probes).

use crate::error::Error;
use crate::kube::cluster::Cluster;
use crate::kube::manifests::{self, Manifest, ManifestError};
use crate::kube::monitoring::{self as built_in, TlsScrape};
use crate::progress::Progress;

/// How to get the kinds a cluster lacks.
pub const INSTALL_HINT: &str = "install prometheus-operator (kube-prometheus-stack, or the \
    operator's bundle.yaml: docs/monitoring.md, \"Install\"), then run the same command again";

/// What `--monitoring` applied (or, on a dry run, would apply), and what it could not.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MonitoringReport {
    /// The monitoring objects applied with the release (`Kind/name`).
    pub objects: Vec<String>,
    /// prometheus-operator's kinds the cluster does not serve (`monitoring.coreos.com/v1`).
    pub missing_kinds: Vec<String>,
    /// The objects not applied for want of their kind (`Kind/name`).
    pub skipped: Vec<String>,
    /// What is missing and how to get it, and what may keep the scrapes from working: the
    /// lines said on stderr.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl MonitoringReport {
    /// The report's line.
    pub fn text(&self) -> String {
        let mut text = format!("monitoring: {}", self.objects.join(", "));
        if !self.skipped.is_empty() {
            text.push_str(&format!(
                "; not applied: {} (the cluster does not serve {})",
                self.skipped.join(", "),
                self.missing_kinds.join(", ")
            ));
        }
        text.push('\n');
        text
    }
}

/// The monitoring objects to apply with the release, and what to report about them.
#[derive(Debug)]
pub struct Monitoring {
    pub objects: Vec<Manifest>,
    pub report: MonitoringReport,
}

/// The monitoring objects fitted to the release in `release` (no cluster needed, so a problem is
/// a usage error before anything else). An object `release` already holds (`-f
/// kubernetes/monitoring/` besides `--monitoring`) is refused, naming where it is.
pub fn fitted(release: &[Manifest]) -> Result<Vec<Manifest>, ManifestError> {
    let fitted = built_in::for_release(release)?;
    for m in &fitted {
        let same = release.iter().find(|r| {
            r.api_version == m.api_version
                && r.kind == m.kind
                && r.name == m.name
                && r.namespace == m.namespace
        });
        if let Some(r) = same {
            return Err(ManifestError::Monitoring(format!(
                "{} defines {} too, which --monitoring applies: give one or the other",
                r.origin,
                m.display_name()
            )));
        }
    }
    Ok(fitted)
}

/// Asks the cluster which of prometheus-operator's kinds it serves, and keeps the objects it can
/// take; with `tls` (`--tls-secret`), the PodMonitor scrapes over TLS.
pub async fn plan(
    cluster: &Cluster,
    mut fitted: Vec<Manifest>,
    tls: Option<&TlsScrape>,
) -> Result<Monitoring, Error> {
    let missing = built_in::missing_kinds(cluster).await?;
    if let Some(tls) = tls {
        built_in::scrape_tls(&mut fitted, tls);
    }
    let mut monitoring = keep_served(fitted, &missing);
    let scrapes = monitoring.objects.iter().any(|m| m.kind == "PodMonitor");
    if let Some(tls) = tls.filter(|t| scrapes && t.server_name.is_none()) {
        monitoring.report.warnings.push(format!(
            "warning: --monitoring: without --tls-server-name, Prometheus checks the pods' \
             certificate (Secret/{}) against their IP address, which a certificate for a host \
             name fails (alert CelestialTargetDown): give --tls-server-name HOST, a name the \
             certificate holds",
            tls.secret
        ));
    }
    Ok(monitoring)
}

/// `fitted` without the objects of the `missing` kinds.
fn keep_served(fitted: Vec<Manifest>, missing: &[&str]) -> Monitoring {
    let (skipped, objects): (Vec<Manifest>, Vec<Manifest>) = fitted
        .into_iter()
        .partition(|m| built_in::is_operator_kind(m) && missing.contains(&m.kind.as_str()));
    let names = |ms: &[Manifest]| ms.iter().map(Manifest::display_name).collect::<Vec<_>>();
    let missing_kinds = (!skipped.is_empty()).then(|| {
        let applied = match names(&objects) {
            none if none.is_empty() => "nothing".to_string(),
            some => some.join(", "),
        };
        format!(
            "warning: --monitoring: the cluster does not serve {} {} (prometheus-operator's \
             CRDs are not installed): applied {applied}, not {}; for the alerts and the \
             scraping, {INSTALL_HINT}",
            built_in::GROUP_VERSION,
            missing.join(", "),
            names(&skipped).join(", "),
        )
    });
    Monitoring {
        report: MonitoringReport {
            objects: names(&objects),
            missing_kinds: missing.iter().map(|k| k.to_string()).collect(),
            skipped: names(&skipped),
            warnings: missing_kinds.into_iter().collect(),
        },
        objects,
    }
}

impl Monitoring {
    /// The release's manifests and the monitoring objects, in apply order.
    pub fn with(&self, release: &[Manifest]) -> Vec<Manifest> {
        let mut all: Vec<Manifest> = release.iter().chain(&self.objects).cloned().collect();
        manifests::sort_for_apply(&mut all);
        all
    }

    /// Says what is missing, and what may keep the scrapes from working: a line each.
    pub fn warn(&self, p: &mut dyn Progress) {
        for w in &self.report.warnings {
            p.line(w);
        }
    }
}

/// The release's manifests with `monitoring`'s objects, when there are any.
pub fn with(release: &[Manifest], monitoring: Option<&Monitoring>) -> Vec<Manifest> {
    match monitoring {
        Some(m) => m.with(release),
        None => release.to_vec(),
    }
}

#[cfg(test)]
mod tests;
