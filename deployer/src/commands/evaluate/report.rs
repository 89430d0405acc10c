//! What an evaluation reports: the deciding numbers of the candidate and of the serving model,
//! and the verdict. (Apart from the evaluation itself, so that the error of a refusal can carry it
//! without the error module depending on the commands.)

use super::score::{self, Scores, Verdict};
use crate::kube::model::ModelInfo;

/// What an evaluation measured and decided.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvaluationReport {
    /// The serving Deployment.
    pub deployment: String,
    /// The candidate Deployment (deleted once judged).
    pub candidate: String,
    /// The new server image.
    pub image: Option<String>,
    /// Where the images come from.
    pub set: String,
    pub limits: score::Limits,
    pub candidate_pod: String,
    /// The model the candidate reports (`GET /model`).
    pub candidate_model: Option<ModelInfo>,
    pub candidate_scores: Scores,
    /// The serving model's pod and scores (None on a first release).
    pub serving: Option<Served>,
    /// The fraction of images both answered alike.
    pub agreement: Option<f64>,
    pub verdict: Verdict,
    pub seconds: f64,
}

/// The serving side of an evaluation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Served {
    pub pod: String,
    pub image: Option<String>,
    pub scores: Scores,
}

impl EvaluationReport {
    /// The deciding numbers, on one line.
    pub fn numbers(&self) -> String {
        let c = &self.candidate_scores;
        let mut s = format!(
            "candidate accuracy {:.3} ({}/{} {}), unknown rate {:.3}",
            c.accuracy, c.correct, c.images, self.set, c.unknown_rate
        );
        match &self.serving {
            Some(v) => s.push_str(&format!(
                "; serving accuracy {:.3}, unknown rate {:.3}; agreement {:.3}",
                v.scores.accuracy,
                v.scores.unknown_rate,
                self.agreement.unwrap_or_default()
            )),
            None => s.push_str("; nothing serves yet (first release: --eval-floor only)"),
        }
        s
    }

    pub fn text(&self) -> String {
        let verdict = if self.verdict.promote {
            "promoted"
        } else {
            "refused"
        };
        format!("evaluation: {verdict}: {}\n", self.numbers())
    }
}
