//! `celestial.golden` (optional): the golden set, as the training pipeline writes it
//! (`model/celestial/golden_set.py`), checked so that the self-check can only fail on what the
//! model answers, never on a set it cannot read.

use base64::Engine as _;

use super::meta::{Meta, bad};
use crate::model::golden::{GoldenImage, GoldenSet, NAME_MAX_CHARS};
use crate::model::spec::ModelError;

/// The one format this server reads.
const FORMAT: u32 = 1;

#[derive(serde::Deserialize)]
struct GoldenMetadata {
    format: u32,
    images: Vec<ImageMetadata>,
}

#[derive(serde::Deserialize)]
struct ImageMetadata {
    name: String,
    label: Option<String>,
    file_base64: String,
    logits: Vec<f32>,
    logit_max_abs: f64,
}

/// The golden set of `celestial.golden`, `None` without the key; a set that does not read is
/// refused like any other bad metadata (the value itself is not repeated: it is large).
pub(super) fn golden(meta: &Meta<'_>, labels: usize) -> Result<Option<GoldenSet>, ModelError> {
    let Some(text) = meta.get("golden") else {
        return Ok(None);
    };
    let invalid = |reason: String| bad("golden", "(JSON)", &reason);
    let m: GoldenMetadata =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not the expected JSON: {e}")))?;
    if m.format != FORMAT {
        return Err(invalid(format!(
            "format {} (this server reads format {FORMAT})",
            m.format
        )));
    }
    if m.images.is_empty() {
        return Err(invalid("no images".into()));
    }
    let images = m
        .images
        .into_iter()
        .enumerate()
        .map(|(i, image)| {
            let name = one_line(&image.name);
            let why = |reason: &str| invalid(format!("image {i} ({name}): {reason}"));
            let file = base64::engine::general_purpose::STANDARD
                .decode(image.file_base64.trim())
                .map_err(|e| why(&format!("file_base64 is not base64: {e}")))?;
            if image.logits.len() != labels || !image.logits.iter().all(|v| v.is_finite()) {
                return Err(why(&format!(
                    "{} logits, expected {labels} finite numbers (one per label)",
                    image.logits.len()
                )));
            }
            if !(image.logit_max_abs.is_finite() && image.logit_max_abs >= 0.0) {
                return Err(why("logit_max_abs must be a number >= 0"));
            }
            Ok(GoldenImage {
                name,
                label: image.label,
                file: file.into(),
                logits: image.logits,
                logit_max_abs: image.logit_max_abs,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(GoldenSet { images }))
}

/// `name` on one line (control characters as spaces), cut at [`NAME_MAX_CHARS`] characters.
fn one_line(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    match trimmed.char_indices().nth(NAME_MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(value: serde_json::Value, labels: usize) -> Result<Option<GoldenSet>, ModelError> {
        let map = HashMap::from([("celestial.golden".to_string(), value.to_string())]);
        golden(&Meta(&map), labels)
    }

    fn image(logits: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "name": "Earth/Earth_6.jpg\n(PNG)", "label": "Earth", "file_base64": "iVBORw==",
            "logits": logits, "logit_max_abs": 0.0001
        })
    }

    #[test]
    fn reads_the_set_the_pipeline_writes() {
        let set = parse(
            serde_json::json!({"format": 1, "about": "text", "images": [image(serde_json::json!([1.5, -2.0]))]}),
            2,
        )
        .unwrap()
        .unwrap();
        let img = &set.images[0];
        assert_eq!(img.name, "Earth/Earth_6.jpg (PNG)", "one line");
        assert_eq!(img.label.as_deref(), Some("Earth"));
        assert_eq!(&img.file[..], b"\x89PNG");
        assert_eq!(
            (img.logits.as_slice(), img.logit_max_abs),
            (&[1.5, -2.0][..], 0.0001)
        );
        assert_eq!(golden(&Meta(&HashMap::new()), 2).unwrap(), None);
    }

    #[test]
    fn a_set_that_does_not_read_is_refused_with_the_key_and_the_reason() {
        let ok = image(serde_json::json!([1.0, 2.0]));
        for (value, why) in [
            (
                serde_json::json!({"format": 2, "images": [ok.clone()]}),
                "format 2",
            ),
            (serde_json::json!({"format": 1, "images": []}), "no images"),
            (serde_json::json!({"format": 1}), "not the expected JSON"),
            (
                serde_json::json!({"format": 1, "images": [image(serde_json::json!([1.0]))]}),
                "1 logits, expected 2",
            ),
            (
                serde_json::json!({"format": 1, "images": [ok.clone(), {
                    "name": "x", "label": null, "file_base64": "%%", "logits": [1, 2], "logit_max_abs": 1
                }]}),
                "image 1 (x): file_base64 is not base64",
            ),
            (
                serde_json::json!({"format": 1, "images": [{
                    "name": "y", "label": null, "file_base64": "", "logits": [1, 2], "logit_max_abs": -1
                }]}),
                "logit_max_abs",
            ),
        ] {
            let e = parse(value, 2).unwrap_err().to_string();
            assert!(e.contains("celestial.golden") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn long_names_are_cut() {
        let name = one_line(&"é".repeat(NAME_MAX_CHARS + 5));
        assert_eq!(name.chars().count(), NAME_MAX_CHARS + 3);
        assert!(name.ends_with("..."));
    }
}
