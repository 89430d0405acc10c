//! The start-up self-check: each image of the model's golden set (`celestial.golden`) goes through
//! [`Classifier::classify`], the decoding, preprocessing, queue and inference `/predict` uses, and
//! its answer is compared with the one the training pipeline recorded, before the server is ever
//! ready. A model whose metadata lost its way (labels permuted, another input size, normalisation
//! or decode rule) so never serves: [`check`] fails with a one-line reason ([`SelfCheckFailure`]),
//! which the binary prints, writes to the termination log and exits with its own status on.
//! [`SelfChecked`] serves a classifier with the outcome, for `/model` and `/metrics`.
//!
//! Imports the classifier seam and the model description.

use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use crate::classifier::{Classification, Classifier, Input, Prediction, SelfCheck};
use crate::model::{GoldenImage, GoldenSet, ModelSpec};

/// How many disagreeing images the reason names (the others are counted): it stays one short
/// line, well within the 4 KiB Kubernetes keeps of a termination message.
const NAMED: usize = 3;

/// One golden image whose answer was not the recorded one.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub name: String,
    /// What differed, in words: expected and served label and logit.
    pub reason: String,
}

/// The golden images that disagree with the model as served, out of `images`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.line())]
pub struct SelfCheckFailure {
    pub images: usize,
    pub disagreements: Vec<Disagreement>,
}

impl SelfCheckFailure {
    /// The reason, one line: how many disagree, then the first [`NAMED`] with what differed.
    fn line(&self) -> String {
        let named: Vec<String> = self
            .disagreements
            .iter()
            .take(NAMED)
            .map(|d| format!("{}: {}", d.name, d.reason))
            .collect();
        let more = self.disagreements.len().saturating_sub(NAMED);
        format!(
            "model self-check failed: {} of {} golden images (celestial.golden) disagree with the \
             model as served: {}{}",
            self.disagreements.len(),
            self.images,
            named.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// Run every image of `golden` through `classifier`, one request at a time as `/predict` would
/// send it; [`SelfCheck::Absent`] without a golden set. An image a configured limit refuses says
/// nothing about the model: it is skipped with a warning.
pub async fn check(
    classifier: &dyn Classifier,
    golden: Option<&GoldenSet>,
) -> Result<SelfCheck, SelfCheckFailure> {
    let Some(golden) = golden else {
        return Ok(SelfCheck::Absent);
    };
    let started = Instant::now();
    let spec = classifier.spec();
    let (mut max_logit_diff, mut skipped) = (0f64, 0);
    let mut disagreements = Vec::new();
    for image in &golden.images {
        let answer = match classifier
            .classify(vec![Input::Encoded(image.file.clone())])
            .await
        {
            Ok(mut out) => match out.results.pop() {
                Some(Ok(p)) => compare(image, spec, &p),
                Some(Err(e)) if e.is_over_a_limit() => {
                    warn!(image = %image.name, "golden image not checked: {e}");
                    skipped += 1;
                    continue;
                }
                Some(Err(e)) => Err(format!("not classified: {e}")),
                None => Err("no answer".into()),
            },
            Err(e) => Err(format!("not classified: {e}")),
        };
        match answer {
            Ok(diff) => max_logit_diff = max_logit_diff.max(diff),
            Err(reason) => disagreements.push(Disagreement {
                name: image.name.clone(),
                reason,
            }),
        }
    }
    if disagreements.is_empty() {
        Ok(SelfCheck::Passed {
            images: golden.images.len() - skipped,
            skipped,
            max_logit_diff,
            seconds: started.elapsed().as_secs_f64(),
        })
    } else {
        Err(SelfCheckFailure {
            images: golden.images.len(),
            disagreements,
        })
    }
}

/// The largest difference of `p`'s output values from `image`'s recorded logits when `p` is its
/// recorded answer (every value within its tolerance, its label when it has one); else what
/// differs, in words.
fn compare(image: &GoldenImage, spec: &ModelSpec, p: &Prediction) -> Result<f64, String> {
    if p.output.len() != image.logits.len() {
        return Err(format!(
            "the model gives {} values, the golden set records {}",
            p.output.len(),
            image.logits.len()
        ));
    }
    let label = |i: usize| spec.labels.get(i).map_or("?", String::as_str);
    // The worst value (a NaN counts as the worst).
    let (worst, diff) = p
        .output
        .iter()
        .zip(&image.logits)
        .map(|(got, want)| (f64::from(*got) - f64::from(*want)).abs())
        .map(|d| if d.is_nan() { f64::INFINITY } else { d })
        .enumerate()
        .fold(
            (0, 0f64),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    let mut problems = Vec::new();
    if let Some(want) = &image.label
        && label(p.best) != want
    {
        problems.push(format!("prediction {}, expected {want}", label(p.best)));
    }
    if diff > image.logit_max_abs {
        problems.push(format!(
            "logit of {} {}, expected {} (difference {diff:.3e} > tolerance {})",
            label(worst),
            p.output[worst],
            image.logits[worst],
            image.logit_max_abs
        ));
    }
    match problems.is_empty() {
        true => Ok(diff),
        false => Err(problems.join(", ")),
    }
}

/// A classifier served with the outcome of its start-up self-check.
pub struct SelfChecked {
    inner: Arc<dyn Classifier>,
    outcome: SelfCheck,
}

impl SelfChecked {
    pub fn new(inner: Arc<dyn Classifier>, outcome: SelfCheck) -> SelfChecked {
        SelfChecked { inner, outcome }
    }
}

impl Classifier for SelfChecked {
    fn spec(&self) -> &Arc<ModelSpec> {
        self.inner.spec()
    }

    fn runtime_version(&self) -> &str {
        self.inner.runtime_version()
    }

    fn workers(&self) -> usize {
        self.inner.workers()
    }

    fn classify(&self, inputs: Vec<Input>) -> Classification<'_> {
        self.inner.classify(inputs)
    }

    fn close(&self) {
        self.inner.close();
    }

    fn self_check(&self) -> Option<&SelfCheck> {
        Some(&self.outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeClassifier, LABELS};

    /// A `w` x 2 PNG: the fake classifier answers label `w % 10` with probability 1.
    fn png(w: u32) -> bytes::Bytes {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::new(w, 2));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner().into()
    }

    /// What the fake answers for [`png`]`(w)`: the one-hot row of label `w % 10`.
    fn golden_image(w: u32, label: Option<&str>) -> GoldenImage {
        let mut logits = vec![0.0; LABELS.len()];
        logits[w as usize % LABELS.len()] = 1.0;
        GoldenImage {
            name: format!("{w}x2.png"),
            label: label.map(str::to_string),
            file: png(w),
            logits,
            logit_max_abs: 1e-4,
        }
    }

    fn set(images: Vec<GoldenImage>) -> GoldenSet {
        GoldenSet { images }
    }

    #[tokio::test]
    async fn recorded_answers_pass_and_say_how_close() {
        let fake = FakeClassifier::default();
        let golden = set(vec![
            golden_image(3, Some("Mercury")),
            golden_image(17, Some("Saturn")),
            golden_image(20, None),
        ]);
        let outcome = check(&fake, Some(&golden)).await.unwrap();
        let SelfCheck::Passed {
            images,
            skipped,
            max_logit_diff,
            seconds,
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!((images, skipped, max_logit_diff), (3, 0, 0.0));
        assert!(seconds >= 0.0);
        assert_eq!(check(&fake, None).await.unwrap(), SelfCheck::Absent);
    }

    #[tokio::test]
    async fn an_image_over_a_configured_limit_is_skipped_not_failed() {
        // 20x2 = 40 pixels is over this server's limit; the 3x2 image still counts.
        let fake = FakeClassifier::default().with_max_image_pixels(30);
        let golden = set(vec![
            golden_image(3, Some("Mercury")),
            golden_image(20, Some("Earth")),
        ]);
        let outcome = check(&fake, Some(&golden)).await.unwrap();
        assert!(
            matches!(
                outcome,
                SelfCheck::Passed {
                    images: 1,
                    skipped: 1,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_wrong_label_a_far_logit_or_an_undecodable_file_fail_with_one_line() {
        let fake = FakeClassifier::default();
        let mut far = golden_image(4, None);
        far.logits[4] = 0.5;
        let mut broken = golden_image(5, None);
        broken.file = bytes::Bytes::from_static(b"not an image");
        let golden = set(vec![
            golden_image(3, Some("Earth")),
            golden_image(13, Some("Mercury")),
            far,
            broken,
            golden_image(6, Some("Mars")),
        ]);
        let e = check(&fake, Some(&golden)).await.unwrap_err();
        assert_eq!((e.images, e.disagreements.len()), (5, 4));
        assert_eq!(e.disagreements[0].name, "3x2.png");
        assert_eq!(
            e.disagreements[0].reason,
            "prediction Mercury, expected Earth"
        );
        assert_eq!(
            e.disagreements[1].reason,
            "logit of Moon 1, expected 0.5 (difference 5.000e-1 > tolerance 0.0001)"
        );
        assert!(e.disagreements[2].reason.starts_with("not classified: "));
        assert_eq!(e.disagreements[3].reason, "prediction Pluto, expected Mars");
        let line = e.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with(
            "model self-check failed: 4 of 5 golden images (celestial.golden) disagree with the model \
             as served: 3x2.png: prediction Mercury, expected Earth; 4x2.png: logit of Moon"
        ));
        assert!(line.ends_with("; and 1 more"), "{line}");
        assert!(
            !line.contains("6x2.png"),
            "only the first three are named: {line}"
        );
    }

    #[tokio::test]
    async fn a_row_of_another_length_fails() {
        let mut image = golden_image(3, None);
        image.logits.pop();
        let e = check(&FakeClassifier::default(), Some(&set(vec![image])))
            .await
            .unwrap_err();
        assert_eq!(
            e.disagreements[0].reason,
            "the model gives 10 values, the golden set records 9"
        );
    }

    #[tokio::test]
    async fn the_outcome_is_served_with_the_classifier() {
        let fake: Arc<dyn Classifier> = Arc::new(FakeClassifier::default());
        assert_eq!(fake.self_check(), None);
        let served = SelfChecked::new(Arc::clone(&fake), SelfCheck::Absent);
        assert_eq!(served.self_check(), Some(&SelfCheck::Absent));
        assert_eq!(served.spec().labels, fake.spec().labels);
        let out = served.classify(vec![Input::Encoded(png(7))]).await.unwrap();
        assert_eq!(out.results[0].as_ref().unwrap().best, 7);
    }
}
