//! The model's drift reference (`celestial.drift`): what the model answered on validation
//! pictures, as counts and summaries, which the drift monitor (`crate::drift`) compares recent
//! live answers with. Written by `model/tools/add_drift_reference.py`. A leaf.

use serde::Serialize;

use super::colour::{FEATURES, Features};

/// The reference, as its metadata gives it (checked: consistent counts, increasing edges, positive
/// spreads).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReference {
    /// Pictures it was computed on (at least one).
    pub pictures: u64,
    /// Predictions per label, in output order (they add up to `pictures`).
    pub labels: Vec<u64>,
    /// The confidence's bins: inner edges, increasing; a value `v` is in bin `i` when
    /// `edges[i - 1] <= v < edges[i]`.
    pub confidence_edges: Vec<f64>,
    /// Pictures per confidence bin (`edges + 1` of them, adding up to `pictures`).
    pub confidence_counts: Vec<u64>,
    /// Answers with `known: false`.
    pub unknown: u64,
    /// Each colour statistic's mean over the pictures ([`super::COLOUR_FEATURES`] order).
    pub colour_mean: Features,
    /// Each colour statistic's (population) standard deviation over the pictures, all `> 0`.
    pub colour_std: Features,
}

/// The names of the colour statistics, in their order (as the metadata names them).
pub const COLOUR_STATISTICS: [&str; FEATURES] = [
    "mean_r",
    "mean_g",
    "mean_b",
    "std_r",
    "std_g",
    "std_b",
    "chroma_r",
    "chroma_g",
    "chroma_spread_r",
    "chroma_spread_g",
];

impl DriftReference {
    /// The confidence bin of `v`.
    pub fn confidence_bin(&self, v: f64) -> usize {
        self.confidence_edges.partition_point(|e| *e <= v)
    }
}
