//! What `apply` and `release` report, and its text.

use crate::commands::canary::report::CanaryReport;
use crate::commands::diff::{DiffReport, ObjectReport};
use crate::commands::evaluate::report::EvaluationReport;
use crate::commands::history::Recorded;
use crate::commands::monitoring::MonitoringReport;
use crate::kube::model::ModelInfo;
use crate::kube::rollout::RolloutReport;
use crate::oci::publish::Pushed;
use crate::smoke::SmokeReport;

/// What `apply` and `release` report.
#[derive(Debug, serde::Serialize)]
pub struct ApplyReport {
    pub command: &'static str,
    pub namespace: String,
    /// The server image the manifests run.
    pub image: Option<String>,
    /// The image `release` built and pushed.
    pub pushed: Option<Pushed>,
    pub objects: Vec<ObjectReport>,
    pub changed: usize,
    pub rollouts: Vec<RolloutReport>,
    pub url: Option<String>,
    pub urls: Vec<String>,
    pub smoke: Option<SmokeReport>,
    /// `--evaluate`: what the new model scored before it got traffic (None when not asked, or
    /// nothing new was judged).
    pub evaluation: Option<EvaluationReport>,
    /// `--canary`: what the new model's share of live traffic showed (None when not asked, or
    /// nothing new was judged, or nothing served yet).
    pub canary: Option<CanaryReport>,
    /// The model the new pods serve (their `GET /model`).
    pub model: Option<ModelInfo>,
    /// Why the model could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<String>,
    /// Where the release was recorded (`--history-limit 0`: nowhere).
    pub history: Vec<Recorded>,
    /// `--api-key-secret`: the Secret, and the key only with `--show-api-key`.
    pub api_key: Option<ApiKeyReport>,
    /// `--tls-secret`: the Secret the server serves HTTPS with.
    pub tls_secret: Option<String>,
    /// `--monitoring`: the monitoring objects among `objects`, and those the cluster cannot take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringReport>,
    pub apply_seconds: f64,
    pub seconds: f64,
}

/// Where the API key is, and how to read it.
#[derive(Debug, serde::Serialize)]
pub struct ApiKeyReport {
    pub secret: String,
    /// Created by this run with a generated key (else it was there).
    pub created: bool,
    /// The command that prints the keys file.
    pub read_with: String,
    /// The key the smoke test sent (only with `--show-api-key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What `apply` did: applied and waited, or (`--dry-run`) only showed what would change.
#[derive(Debug)]
pub enum Outcome {
    Done(Box<ApplyReport>),
    DryRun(DiffReport),
}

impl ApplyReport {
    pub fn text(&self) -> String {
        let mut text = format!(
            "applied {} object(s) to namespace {} ({} changed) in {:.1}s; ready after {:.1}s\n",
            self.objects.len(),
            self.namespace,
            self.changed,
            self.apply_seconds,
            self.seconds
        );
        if let Some(img) = &self.image {
            text.push_str(&format!("image: {img}\n"));
        }
        if let Some(r) = &self.smoke {
            text.push_str(&format!(
                "smoke: {} (p={:.3})\n",
                r.prediction, r.probability
            ));
        }
        if let Some(e) = &self.evaluation {
            text.push_str(&e.text());
        }
        if let Some(c) = &self.canary {
            text.push_str(&c.text());
        }
        match (&self.model, &self.model_error) {
            (Some(m), _) => text.push_str(&format!("model: {}\n", m.describe())),
            (None, Some(e)) => text.push_str(&format!("model: unknown ({e})\n")),
            (None, None) => {}
        }
        for h in &self.history {
            text.push_str(&h.text());
        }
        if let Some(k) = &self.api_key {
            let how = if k.created {
                "created with a generated key"
            } else {
                "existing"
            };
            text.push_str(&format!(
                "API key: Secret/{} ({how}); read it with: {}\n",
                k.secret, k.read_with
            ));
            if let Some(key) = &k.key {
                text.push_str(&format!("API key: {key}\n"));
            }
        }
        if let Some(t) = &self.tls_secret {
            text.push_str(&format!("TLS: Secret/{t}\n"));
        }
        if let Some(m) = &self.monitoring {
            text.push_str(&m.text());
        }
        for u in &self.urls {
            text.push_str(&format!("URL: {u}\n"));
        }
        text
    }
}
