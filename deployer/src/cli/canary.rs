//! `--canary`: the new model on a share of live traffic, judged on its own signals against the
//! serving model's before it is promoted (docs/deploy.md, "Canary").

use std::time::Duration;

use celestial_common::parse_duration;
use clap::Args;

/// Opt-in canary analysis after the evaluation before traffic.
#[derive(Debug, Clone, Args)]
pub struct CanaryArgs {
    /// After the evaluation before traffic passes (--canary turns --evaluate on), run the new pod
    /// template as the Deployment NAME-canary, selected by the Services like the serving pods, with
    /// as many replicas as give it this share of the traffic (0 < SHARE < 1; the share is by pod
    /// count, per connection: the report gives the achieved one). Its pods' /metrics and the
    /// serving pods' are compared over the window (errors, p99 latency, unknown rate, confidence,
    /// predicted labels); then the new model is promoted, or the canary is deleted and exit 8.
    #[arg(long, env = "DEPLOYER_CANARY", value_name = "SHARE", value_parser = share)]
    pub canary: Option<f64>,

    /// How long the canary window lasts (it ends earlier once --canary-requests are answered).
    #[arg(long, env = "DEPLOYER_CANARY_DURATION", default_value = "2m", value_parser = parse_duration)]
    pub canary_duration: Duration,

    /// End the window as soon as the canary pods have answered this many predictions.
    #[arg(long, env = "DEPLOYER_CANARY_REQUESTS", value_name = "N")]
    pub canary_requests: Option<u64>,

    /// The fewest canary predictions the analysis judges on. With fewer at the window's end (and
    /// after --canary-max-wait), nothing is judged on live traffic: the new model is promoted on
    /// the evaluation alone, and the report says so.
    #[arg(
        long,
        env = "DEPLOYER_CANARY_MIN_REQUESTS",
        value_name = "N",
        default_value_t = 50
    )]
    pub canary_min_requests: u64,

    /// With fewer than --canary-min-requests at the window's end, keep the canary up to this much
    /// longer for them (0s: decide at once, on the evaluation alone).
    #[arg(long, env = "DEPLOYER_CANARY_MAX_WAIT", default_value = "0s", value_parser = parse_duration)]
    pub canary_max_wait: Duration,

    /// The significance level of each statistical test (unknown rate, confidence, labels): the
    /// chance that one test alone aborts a canary no different from the serving model (the
    /// measured rate of the whole analysis is in docs/deploy.md).
    #[arg(long, env = "DEPLOYER_CANARY_ALPHA", default_value_t = 0.001, value_parser = probability)]
    pub canary_alpha: f64,

    /// Abort when the canary's 5xx ratio of prediction requests exceeds the serving pods' by more
    /// than this (a fraction).
    #[arg(long, env = "DEPLOYER_CANARY_ERROR_MARGIN", default_value_t = 0.01, value_parser = probability)]
    pub canary_error_margin: f64,

    /// Abort when the canary's p99 latency is above this many times the serving pods' (and above
    /// theirs plus 100 ms).
    #[arg(long, env = "DEPLOYER_CANARY_LATENCY_FACTOR", default_value_t = 2.0, value_parser = factor)]
    pub canary_latency_factor: f64,
}

/// A share of the traffic: strictly between 0 and 1.
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f < 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a share between 0 and 1 (e.g. 0.25)")),
    }
}

/// A probability or fraction from 0 to 1.
fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a number from 0 to 1 (e.g. 0.01)")),
    }
}

/// A factor of at least 1.
fn factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f >= 1.0 && f.is_finite() => Ok(f),
        _ => Err(format!("{s:?} is not a factor of at least 1 (e.g. 2)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_limits_are_checked() {
        assert_eq!(share("0.25"), Ok(0.25));
        for bad in ["0", "1", "1.5", "-0.1", "half"] {
            assert!(share(bad).is_err(), "{bad}");
        }
        assert!(probability("1.1").is_err() && probability("0").is_ok());
        assert!(factor("0.5").is_err() && factor("inf").is_err() && factor("1.5").is_ok());
    }
}
