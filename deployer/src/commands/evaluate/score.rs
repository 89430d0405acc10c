//! What an evaluation measures and decides, from the answers of one pod per model (pure): accuracy
//! (predictions equal to the true label), unknown rate (answers with `known: false`), agreement
//! between the candidate and the serving model; and the verdict against `--eval-floor` and
//! `--eval-margin`.

use serde_json::Value;

/// One image's answer from one server.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Answer {
    /// The true label.
    pub label: String,
    /// The predicted label (None when the server did not answer a prediction).
    pub prediction: Option<String>,
    /// The server's `known` (None for a model without an out-of-distribution rule).
    pub known: Option<bool>,
    /// Why there is no prediction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    /// The answer to the image labelled `label` from a `/predict` result.
    pub fn from_result(label: &str, result: Result<Value, String>) -> Answer {
        match result {
            Ok(j) => Answer {
                label: label.into(),
                prediction: j["prediction"].as_str().map(str::to_string),
                known: j["known"].as_bool(),
                error: j["prediction"]
                    .is_null()
                    .then(|| format!("no prediction in the answer: {j}")),
            },
            Err(e) => Answer {
                label: label.into(),
                prediction: None,
                known: None,
                error: Some(e),
            },
        }
    }

    fn correct(&self) -> bool {
        self.prediction.as_deref() == Some(self.label.as_str())
    }
}

/// One model's scores on the evaluation images.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scores {
    pub images: usize,
    pub correct: usize,
    /// correct / images (an unanswered image counts as wrong).
    pub accuracy: f64,
    /// Answers with `known: false`, of all images.
    pub unknown_rate: f64,
    /// Images without an answer.
    pub errors: usize,
}

/// The scores of `answers`.
pub fn scores(answers: &[Answer]) -> Scores {
    let n = answers.len();
    let correct = answers.iter().filter(|a| a.correct()).count();
    let unknown = answers.iter().filter(|a| a.known == Some(false)).count();
    let rate = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Scores {
        images: n,
        correct,
        accuracy: rate(correct),
        unknown_rate: rate(unknown),
        errors: answers.iter().filter(|a| a.error.is_some()).count(),
    }
}

/// The fraction of images both answered with the same label.
pub fn agreement(candidate: &[Answer], serving: &[Answer]) -> f64 {
    let same = candidate
        .iter()
        .zip(serving)
        .filter(|(c, s)| c.prediction.is_some() && c.prediction == s.prediction)
        .count();
    if candidate.is_empty() {
        0.0
    } else {
        same as f64 / candidate.len() as f64
    }
}

/// Whether the candidate is good enough, and why not.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub promote: bool,
    /// Each rule it broke, with its numbers.
    pub reasons: Vec<String>,
}

/// The limits a candidate must keep.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Limits {
    pub floor: f64,
    pub margin: f64,
}

/// Refuses a candidate below the floor, or (when a model serves) worse than the serving one by
/// more than the margin in accuracy or unknown rate. A tolerance of 1e-9 keeps a tie a tie.
pub fn decide(candidate: &Scores, serving: Option<&Scores>, limits: Limits) -> Verdict {
    const TIE: f64 = 1e-9;
    let mut reasons = Vec::new();
    if candidate.accuracy + TIE < limits.floor {
        reasons.push(format!(
            "accuracy {:.3} is below --eval-floor {:.3}",
            candidate.accuracy, limits.floor
        ));
    }
    if let Some(s) = serving {
        if candidate.accuracy + limits.margin + TIE < s.accuracy {
            reasons.push(format!(
                "accuracy {:.3} is {:.3} below the serving model's {:.3} (--eval-margin {:.3})",
                candidate.accuracy,
                s.accuracy - candidate.accuracy,
                s.accuracy,
                limits.margin
            ));
        }
        if candidate.unknown_rate > s.unknown_rate + limits.margin + TIE {
            reasons.push(format!(
                "unknown rate {:.3} is {:.3} above the serving model's {:.3} (--eval-margin {:.3})",
                candidate.unknown_rate,
                candidate.unknown_rate - s.unknown_rate,
                s.unknown_rate,
                limits.margin
            ));
        }
    }
    Verdict {
        promote: reasons.is_empty(),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answers(pairs: &[(&str, &str, bool)]) -> Vec<Answer> {
        pairs
            .iter()
            .map(|(label, p, known)| {
                Answer::from_result(label, Ok(json!({"prediction": p, "known": known})))
            })
            .collect()
    }

    const LIMITS: Limits = Limits {
        floor: 0.9,
        margin: 0.02,
    };

    #[test]
    fn scores_count_right_labels_unknowns_and_missing_answers() {
        let mut a = answers(&[
            ("Mars", "Mars", true),
            ("Moon", "Mars", false),
            ("Earth", "Earth", true),
        ]);
        a.push(Answer::from_result("Venus", Err("HTTP 503".into())));
        let s = scores(&a);
        assert_eq!((s.images, s.correct, s.errors), (4, 2, 1));
        assert_eq!((s.accuracy, s.unknown_rate), (0.5, 0.25));
        let serving = answers(&[
            ("Mars", "Mars", true),
            ("Moon", "Moon", true),
            ("Earth", "Earth", true),
            ("Venus", "Venus", true),
        ]);
        assert_eq!(agreement(&a, &serving), 0.5);
    }

    #[test]
    fn a_candidate_is_refused_below_the_floor_or_worse_than_the_serving_by_more_than_the_margin() {
        let perfect = scores(&answers(&[("Mars", "Mars", true), ("Moon", "Moon", true)]));
        assert!(
            decide(&perfect, Some(&perfect), LIMITS).promote,
            "a tie passes"
        );
        assert!(
            decide(&perfect, None, LIMITS).promote,
            "a first release: the floor only"
        );
        // labels swapped: both wrong
        let swapped = scores(&answers(&[("Mars", "Moon", true), ("Moon", "Mars", true)]));
        let v = decide(&swapped, Some(&perfect), LIMITS);
        assert!(!v.promote);
        assert_eq!(
            v.reasons,
            [
                "accuracy 0.000 is below --eval-floor 0.900",
                "accuracy 0.000 is 1.000 below the serving model's 1.000 (--eval-margin 0.020)"
            ]
        );
        assert_eq!(decide(&swapped, None, LIMITS).reasons.len(), 1);
        // as accurate, but unsure of everything
        let unsure = scores(&answers(&[
            ("Mars", "Mars", false),
            ("Moon", "Moon", false),
        ]));
        let v = decide(&unsure, Some(&perfect), LIMITS);
        assert_eq!(
            v.reasons,
            ["unknown rate 1.000 is 1.000 above the serving model's 0.000 (--eval-margin 0.020)"]
        );
        // within the margin: 0.9 vs 0.91 with a 0.02 margin passes, with 0 it does not
        let s = |accuracy| Scores {
            images: 100,
            correct: 0,
            accuracy,
            unknown_rate: 0.0,
            errors: 0,
        };
        assert!(decide(&s(0.9), Some(&s(0.91)), LIMITS).promote);
        let strict = Limits {
            floor: 0.0,
            margin: 0.0,
        };
        assert!(!decide(&s(0.9), Some(&s(0.91)), strict).promote);
    }
}
