//! The model's own signals in what a group of pods counted over the canary window (pure): the
//! prediction requests and their server errors, the latency histogram, the predicted labels, the
//! unknown answers and the confidence histogram, read from the server's metrics by name.

use std::collections::BTreeMap;

use super::exposition::Samples;

/// HTTP requests by route, method and status (the server's `celestial_http_requests`).
pub const REQUESTS: &str = "celestial_http_requests_total";
/// HTTP latency by route, the cumulative buckets.
pub const LATENCY_BUCKETS: &str = "celestial_http_request_duration_seconds_bucket";
/// Predictions by predicted label (without the deployer's own probe requests).
pub const PREDICTIONS: &str = "celestial_predictions_total";
/// Answers with `known: false` by predicted label (only for a model with an OOD rule).
pub const UNKNOWN: &str = "celestial_unknown_predictions_total";
/// The predicted label's probability, the cumulative buckets (servers that have it).
pub const CONFIDENCE_BUCKETS: &str = "celestial_prediction_confidence_bucket";
/// The routes whose requests are predictions: their errors and latency are the signals.
pub const PREDICTION_ROUTES: [&str; 4] = [
    "/predict",
    "/predict/batch",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
];

/// What one group of pods (the canary's, or the stable ones) counted over the window.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Signals {
    /// Prediction requests answered.
    pub requests: f64,
    /// Of them, answered with a 5xx status.
    pub errors: f64,
    /// Their latency: cumulative (upper bound in seconds, count), ascending.
    #[serde(skip)]
    pub latency: Vec<(f64, f64)>,
    /// Predictions by label (an image each; a batch request counts each image).
    pub labels: BTreeMap<String, f64>,
    /// Answers with `known: false`; None when the model has no OOD rule (no such series).
    pub unknown: Option<f64>,
    /// The predicted label's probability: cumulative (upper bound, count), ascending; None when
    /// the server does not export it.
    #[serde(skip)]
    pub confidence: Option<Vec<(f64, f64)>>,
}

impl Signals {
    /// The signals in `samples` (one group's changes over the window).
    pub fn read(samples: &Samples) -> Signals {
        let mut s = Signals::default();
        let mut latency: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        let mut confidence: Option<BTreeMap<u64, (f64, f64)>> = None;
        let prediction_route = |r: Option<&str>| r.is_some_and(|r| PREDICTION_ROUTES.contains(&r));
        for (series, v) in samples {
            match series.name.as_str() {
                REQUESTS if prediction_route(series.label("route")) => {
                    s.requests += v;
                    if series.label("status").is_some_and(|c| c.starts_with('5')) {
                        s.errors += v;
                    }
                }
                LATENCY_BUCKETS if prediction_route(series.label("route")) => {
                    add_bucket(&mut latency, series.label("le"), *v);
                }
                PREDICTIONS => {
                    let label = series.label("label").unwrap_or("?").to_string();
                    *s.labels.entry(label).or_default() += v;
                }
                UNKNOWN => *s.unknown.get_or_insert(0.0) += v,
                CONFIDENCE_BUCKETS => {
                    add_bucket(confidence.get_or_insert_default(), series.label("le"), *v);
                }
                _ => {}
            }
        }
        s.latency = latency.into_values().collect();
        s.confidence = confidence.map(|c| c.into_values().collect());
        s
    }

    /// All predictions (images).
    pub fn predictions(&self) -> f64 {
        self.labels.values().sum()
    }
}

/// Adds `v` to the bucket of upper bound `le` (keyed by its bits, ordered as the bounds are: all
/// are non-negative).
fn add_bucket(buckets: &mut BTreeMap<u64, (f64, f64)>, le: Option<&str>, v: f64) {
    let bound = match le {
        Some("+Inf") => f64::INFINITY,
        Some(b) => match b.parse::<f64>() {
            Ok(b) if b >= 0.0 => b,
            _ => return,
        },
        None => return,
    };
    buckets.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += v;
}

/// The `q` quantile of a cumulative histogram, interpolated linearly within its bucket (as
/// Prometheus' `histogram_quantile`): None without observations; the highest finite bound when
/// it falls in the `+Inf` bucket.
pub fn quantile(q: f64, cumulative: &[(f64, f64)]) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in cumulative {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let fraction = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// A cumulative histogram as the count of each bucket.
pub fn per_bucket(cumulative: &[(f64, f64)]) -> Vec<f64> {
    let mut previous = 0.0;
    cumulative
        .iter()
        .map(|&(_, c)| {
            let n = (c - previous).max(0.0);
            previous = c;
            n
        })
        .collect()
}

/// The mean of a cumulative histogram, each bucket at the middle of its bounds (the last finite
/// bound for `+Inf`).
pub fn mean(cumulative: &[(f64, f64)]) -> Option<f64> {
    let counts = per_bucket(cumulative);
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let mut lower = 0.0;
    let mut sum = 0.0;
    for (&(bound, _), n) in cumulative.iter().zip(&counts) {
        let middle = if bound.is_infinite() {
            lower
        } else {
            (lower + bound) / 2.0
        };
        sum += middle * n;
        if bound.is_finite() {
            lower = bound;
        }
    }
    Some(sum / total)
}

#[cfg(test)]
mod tests {
    use super::super::exposition::parse;
    use super::*;

    const WINDOW: &str = r#"
celestial_http_requests_total{route="/predict",method="POST",status="200"} 95
celestial_http_requests_total{route="/predict",method="POST",status="503"} 3
celestial_http_requests_total{route="/predict",method="POST",status="422"} 2
celestial_http_requests_total{route="/metrics",method="GET",status="500"} 7
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.01"} 50
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.1"} 90
celestial_http_request_duration_seconds_bucket{route="/predict",le="1"} 100
celestial_http_request_duration_seconds_bucket{route="/predict",le="+Inf"} 100
celestial_http_request_duration_seconds_bucket{route="/metrics",le="+Inf"} 7
celestial_predictions_total{label="Mars"} 60
celestial_predictions_total{label="Moon"} 40
celestial_unknown_predictions_total{label="Mars"} 4
celestial_unknown_predictions_total{label="Moon"} 1
"#;

    #[test]
    fn signals_are_read_from_the_prediction_routes_and_the_models_series() {
        let s = Signals::read(&parse(WINDOW));
        assert_eq!(
            (s.requests, s.errors),
            (100.0, 3.0),
            "/metrics is not a prediction"
        );
        assert_eq!(
            s.latency,
            [
                (0.01, 50.0),
                (0.1, 90.0),
                (1.0, 100.0),
                (f64::INFINITY, 100.0)
            ]
        );
        assert_eq!(s.predictions(), 100.0);
        assert_eq!(s.labels["Moon"], 40.0);
        assert_eq!(s.unknown, Some(5.0));
        assert_eq!(s.confidence, None, "no such series: not exported");
        let with = format!(
            "{WINDOW}celestial_prediction_confidence_bucket{{le=\"0.5\"}} 10\ncelestial_prediction_confidence_bucket{{le=\"+Inf\"}} 100\n"
        );
        let s = Signals::read(&parse(&with));
        assert_eq!(
            s.confidence,
            Some(vec![(0.5, 10.0), (f64::INFINITY, 100.0)])
        );
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = [
            (0.01, 50.0),
            (0.1, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // the 99th of 100 is the 9th of the 10 in (0.1, 1]
        let p99 = quantile(0.99, &h).unwrap();
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert!((quantile(0.5, &h).unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
        assert_eq!(per_bucket(&h), [50.0, 40.0, 10.0, 0.0]);
        let confidence = [(0.5, 0.0), (0.9, 50.0), (1.0, 100.0)];
        assert!((mean(&confidence).unwrap() - 0.825).abs() < 1e-12);
    }
}
