//! `celestial.drift` (optional): the drift reference, as `model/celestial/drift_reference.py`
//! writes it, checked so that the monitor never divides by a zero count or spread.

use super::meta::{Meta, bad};
use crate::model::colour::FEATURES;
use crate::model::drift::{COLOUR_STATISTICS, DriftReference};
use crate::model::spec::ModelError;

/// The one format this server reads.
const FORMAT: u32 = 1;

#[derive(serde::Deserialize)]
struct DriftMetadata {
    format: u32,
    pictures: u64,
    labels: Vec<u64>,
    confidence: Confidence,
    unknown: u64,
    colour: Colour,
}

#[derive(serde::Deserialize)]
struct Confidence {
    edges: Vec<f64>,
    counts: Vec<u64>,
}

#[derive(serde::Deserialize)]
struct Colour {
    statistics: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
}

/// Bins of the confidence a reference may have (the monitor keeps a counter per bin).
const MAX_BINS: usize = 32;

/// The drift reference of `celestial.drift`, `None` without the key; one that does not read is
/// refused like any other bad metadata.
pub(super) fn drift(meta: &Meta<'_>, labels: usize) -> Result<Option<DriftReference>, ModelError> {
    let Some(text) = meta.get("drift") else {
        return Ok(None);
    };
    let invalid = |reason: String| bad("drift", "(JSON)", &reason);
    let m: DriftMetadata =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not the expected JSON: {e}")))?;
    if m.format != FORMAT {
        return Err(invalid(format!(
            "format {} (this server reads format {FORMAT})",
            m.format
        )));
    }
    check(&m, labels).map_err(invalid)?;
    let features = |v: &[f64]| -> [f64; FEATURES] { std::array::from_fn(|i| v[i]) };
    Ok(Some(DriftReference {
        pictures: m.pictures,
        labels: m.labels,
        confidence_edges: m.confidence.edges,
        confidence_counts: m.confidence.counts,
        unknown: m.unknown,
        colour_mean: features(&m.colour.mean),
        colour_std: features(&m.colour.std),
    }))
}

/// Why the reference cannot be used, if it cannot.
fn check(m: &DriftMetadata, labels: usize) -> Result<(), String> {
    if m.pictures == 0 {
        return Err("no pictures".into());
    }
    if m.labels.len() != labels {
        return Err(format!(
            "{} label counts, expected {labels} (one per label)",
            m.labels.len()
        ));
    }
    let sum = |v: &[u64]| v.iter().try_fold(0u64, |s, c| s.checked_add(*c));
    if sum(&m.labels) != Some(m.pictures) {
        return Err("the label counts do not add up to `pictures`".into());
    }
    let c = &m.confidence;
    if c.edges.len() + 1 != c.counts.len() || c.counts.len() > MAX_BINS {
        return Err(format!(
            "confidence: {} edges and {} counts (expected one count more than edges, at most {MAX_BINS})",
            c.edges.len(),
            c.counts.len()
        ));
    }
    if !c.edges.iter().all(|e| e.is_finite()) || !c.edges.windows(2).all(|w| w[0] < w[1]) {
        return Err("confidence: the edges must be finite and increasing".into());
    }
    if sum(&c.counts) != Some(m.pictures) {
        return Err("confidence: the counts do not add up to `pictures`".into());
    }
    if m.unknown > m.pictures {
        return Err("more unknown answers than pictures".into());
    }
    let names: Vec<&str> = m.colour.statistics.iter().map(String::as_str).collect();
    if names != COLOUR_STATISTICS {
        return Err(format!(
            "colour: statistics {names:?}, expected {COLOUR_STATISTICS:?}"
        ));
    }
    if m.colour.mean.len() != FEATURES
        || m.colour.std.len() != FEATURES
        || !m.colour.mean.iter().all(|v| v.is_finite())
        || !m.colour.std.iter().all(|s| s.is_finite() && *s > 0.0)
    {
        return Err(format!(
            "colour: {FEATURES} finite means and {FEATURES} finite spreads above 0 expected"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::collections::HashMap;

    fn valid() -> Value {
        json!({
            "format": 1, "about": "text", "pictures": 4, "labels": [3, 1],
            "confidence": {"edges": [0.5, 0.9], "counts": [1, 1, 2]},
            "unknown": 1,
            "colour": {"statistics": COLOUR_STATISTICS, "mean": vec![0.1; 10], "std": vec![0.2; 10]}
        })
    }

    fn read(value: &Value) -> Result<Option<DriftReference>, ModelError> {
        let map = HashMap::from([("celestial.drift".to_string(), value.to_string())]);
        drift(&Meta(&map), 2)
    }

    #[test]
    fn a_valid_reference_reads_and_bins() {
        assert_eq!(drift(&Meta(&HashMap::new()), 2).unwrap(), None);
        let r = read(&valid()).unwrap().unwrap();
        assert_eq!(
            (r.pictures, r.unknown, r.labels.clone()),
            (4, 1, vec![3, 1])
        );
        assert_eq!(r.colour_std, [0.2; 10]);
        let bins: Vec<usize> = [0.0, 0.5, 0.7, 0.9, 1.0]
            .iter()
            .map(|v| r.confidence_bin(*v))
            .collect();
        assert_eq!(bins, [0, 1, 1, 2, 2]);
    }

    #[test]
    fn inconsistent_references_are_refused_with_the_reason() {
        for (path, value, why) in [
            ("/format", json!(2), "format 2"),
            ("/pictures", json!(0), "no pictures"),
            ("/labels", json!([4]), "expected 2"),
            ("/labels", json!([3, 2]), "label counts do not add up"),
            ("/confidence/edges", json!([0.9, 0.5]), "increasing"),
            (
                "/confidence/counts",
                json!([1, 3]),
                "expected one count more",
            ),
            (
                "/confidence/counts",
                json!([1, 1, 1]),
                "counts do not add up",
            ),
            ("/unknown", json!(5), "more unknown"),
            ("/colour/std", json!(vec![0.0; 10]), "above 0"),
            ("/colour/mean", json!(vec![0.1; 9]), "finite means"),
            ("/colour/statistics", json!(["r"]), "statistics"),
        ] {
            let mut v = valid();
            *v.pointer_mut(path).unwrap() = value;
            let e = read(&v).unwrap_err().to_string();
            assert!(
                e.contains("celestial.drift") && e.contains(why),
                "{path}: {e}"
            );
        }
        let e = read(&json!("nope")).unwrap_err().to_string();
        assert!(e.contains("not the expected JSON"), "{e}");
    }
}
