//! The server's `/metrics` as numbers (pure): the Prometheus text format parsed into series, the
//! change of each series between two scrapes of one pod, and the sum over a group of pods.

use std::collections::BTreeMap;

/// One series: a metric name and its labels (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Series {
    /// The value of the label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of one scrape (or their changes, or a sum of them).
pub type Samples = BTreeMap<Series, f64>;

/// The samples of a text exposition. Comments and lines that are not samples are skipped (a
/// scrape is read for the series it has; one malformed line must not hide the others).
pub fn parse(text: &str) -> Samples {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(sample)
        .collect()
}

/// One sample line: `name{k="v",...} value [timestamp]`.
fn sample(line: &str) -> Option<(Series, f64)> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let mut labels = labels;
    labels.sort();
    Some((
        Series {
            name: name.into(),
            labels,
        },
        value,
    ))
}

/// The labels after a `{`, and what follows the closing `}`.
fn labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
        let start = s.len() - chars.as_str().len();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key, value));
        s = &s[start + end + 1..];
    }
}

/// What each series of one pod counted between the scrapes `before` (None: the pod was not
/// there yet, so everything it counted is new) and `after`. A counter lower than before means the
/// server restarted: all it counted since is new.
pub fn delta(before: Option<&Samples>, after: &Samples) -> Samples {
    after
        .iter()
        .map(|(series, now)| {
            let then = before.and_then(|b| b.get(series)).copied().unwrap_or(0.0);
            let change = if *now >= then { now - then } else { *now };
            (series.clone(), change)
        })
        .collect()
}

/// The sum of each series over several pods' samples.
pub fn sum<'a>(pods: impl IntoIterator<Item = &'a Samples>) -> Samples {
    let mut total = Samples::new();
    for samples in pods {
        for (series, v) in samples {
            *total.entry(series.clone()).or_default() += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP celestial_predictions Predictions by predicted label.
# TYPE celestial_predictions counter
celestial_predictions_total{label="Mars"} 12
celestial_predictions_total{label="Moon"} 3
celestial_http_requests_total{route="/predict",method="POST",status="200"} 15
celestial_http_request_duration_seconds_bucket{le="+Inf",route="/predict"} 15
celestial_ready 1
odd_label{a="x\"y\\z",b="1"} 2.5 1700000000
this line is not a sample
"#;

    fn series(name: &str, labels: &[(&str, &str)]) -> Series {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        Series {
            name: name.into(),
            labels,
        }
    }

    #[test]
    fn the_text_format_is_read_into_series() {
        let s = parse(SCRAPE);
        assert_eq!(s.len(), 6, "{s:#?}");
        assert_eq!(
            s[&series("celestial_predictions_total", &[("label", "Mars")])],
            12.0
        );
        let requests = series(
            "celestial_http_requests_total",
            &[("route", "/predict"), ("method", "POST"), ("status", "200")],
        );
        assert_eq!(s[&requests], 15.0);
        assert_eq!(requests.label("status"), Some("200"));
        let bucket = series(
            "celestial_http_request_duration_seconds_bucket",
            &[("route", "/predict"), ("le", "+Inf")],
        );
        assert_eq!(s[&bucket], 15.0);
        assert_eq!(s[&series("celestial_ready", &[])], 1.0);
        assert_eq!(
            s[&series("odd_label", &[("a", "x\"y\\z"), ("b", "1")])],
            2.5
        );
    }

    #[test]
    fn deltas_take_restarts_and_new_pods_and_sums_add_pods() {
        let before = parse("a_total 10\nb_total 5\n");
        let after = parse("a_total 25\nb_total 2\nc_total 4\n");
        let d = delta(Some(&before), &after);
        assert_eq!(d[&series("a_total", &[])], 15.0);
        assert_eq!(d[&series("b_total", &[])], 2.0, "restarted: counted anew");
        assert_eq!(d[&series("c_total", &[])], 4.0, "a new series");
        let new_pod = delta(None, &after);
        assert_eq!(new_pod[&series("a_total", &[])], 25.0);
        let total = sum([&d, &new_pod]);
        assert_eq!(total[&series("a_total", &[])], 40.0);
    }
}
