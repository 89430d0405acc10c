//! What a canary reports: the share asked and achieved, the window, each group's signals, and the
//! analysis with the check that decided. (Apart from the orchestration, so that the error of an
//! aborted canary can carry it without the error module depending on the commands.)

use super::analysis::{Analysis, Limits};
use super::signals::Signals;

/// What a canary measured and decided.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryReport {
    /// The serving Deployment.
    pub deployment: String,
    /// The canary Deployment (deleted once judged).
    pub canary: String,
    /// The new server image.
    pub image: Option<String>,
    /// `--canary`: the share asked for.
    pub share: f64,
    /// The share by pod count: canary replicas / all replicas.
    pub achieved_share: f64,
    pub replicas: i32,
    pub serving_replicas: i32,
    /// The share of the window's predictions the canary pods answered.
    pub observed_share: Option<f64>,
    pub canary_pods: Vec<String>,
    pub stable_pods: Vec<String>,
    pub window_seconds: f64,
    pub canary_signals: Signals,
    pub stable_signals: Signals,
    /// Restarts of the canary's containers during the window (any aborts the canary).
    pub canary_restarts: i32,
    pub limits: Limits,
    pub analysis: Analysis,
    /// What the analysis could not use (a pod that could not be scraped, a signal not exported).
    pub notes: Vec<String>,
    /// From the canary's start to its deletion.
    pub seconds: f64,
}

impl CanaryReport {
    /// The decision and the deciding numbers, on one line.
    pub fn summary(&self) -> String {
        let a = &self.analysis;
        let verdict = match (a.promote, a.too_little_traffic, a.decided_by) {
            (_, true, _) => format!(
                "promoted on the evaluation alone: too little traffic ({} canary predictions, --canary-min-requests {})",
                self.canary_signals.predictions(),
                self.limits.min_predictions
            ),
            (true, _, _) => "promoted: every signal within its limit".to_string(),
            (false, _, Some(signal)) => {
                let detail = a
                    .checks
                    .iter()
                    .find(|c| c.signal == signal)
                    .map(|c| c.detail.as_str())
                    .unwrap_or_default();
                format!("aborted by {signal}: {detail}")
            }
            (false, _, None) => "aborted".to_string(),
        };
        format!(
            "canary: {verdict} ({} vs {} predictions in {:.0}s; share {:.3} asked, {:.3} by pods ({} beside {}), {} observed)",
            self.canary_signals.predictions(),
            self.stable_signals.predictions(),
            self.window_seconds,
            self.share,
            self.achieved_share,
            self.replicas,
            self.serving_replicas,
            self.observed_share
                .map(|s| format!("{s:.3}"))
                .unwrap_or_else(|| "none".into()),
        )
    }

    /// The summary and one line per check.
    pub fn text(&self) -> String {
        let mut text = format!("{}\n", self.summary());
        for c in &self.analysis.checks {
            let mark = match (c.failed, &c.skipped) {
                (true, _) => "FAIL",
                (false, Some(_)) => "skip",
                (false, None) => "ok",
            };
            text.push_str(&format!("  {mark:<4} {}: {}\n", c.signal, c.detail));
        }
        for n in &self.notes {
            text.push_str(&format!("  note: {n}\n"));
        }
        text
    }
}
