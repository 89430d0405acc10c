//! The drift monitor's flags (flattened into the server's [`crate::Config`]).

use clap::Args;

/// How the drift monitor windows and tests the live answers.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct DriftConfig {
    /// Answers in a drift window: each window of recent predictions is compared with the model's
    /// reference (`celestial.drift`). A multiple of --drift-step (rounded up to one).
    #[arg(long, env = "CELESTIAL_DRIFT_WINDOW", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    pub drift_window: u64,
    /// The window slides by this many answers: the signals are scored every this many
    /// predictions (at most 64 steps per window).
    #[arg(long, env = "CELESTIAL_DRIFT_STEP", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub drift_step: u64,
    /// The chance that one window of traffic like the reference raises any drift alert (shared
    /// equally by the signals); sets every signal's threshold.
    #[arg(long, env = "CELESTIAL_DRIFT_FALSE_ALARM_RATE", default_value_t = 1e-4,
          value_parser = false_alarm_rate)]
    pub drift_false_alarm_rate: f64,
    /// Do not monitor drift, even with a model that has a reference.
    #[arg(long, env = "CELESTIAL_NO_DRIFT")]
    pub no_drift: bool,
}

impl Default for DriftConfig {
    fn default() -> DriftConfig {
        DriftConfig {
            drift_window: 400,
            drift_step: 50,
            drift_false_alarm_rate: 1e-4,
            no_drift: false,
        }
    }
}

/// Most steps a window may have (one block of counters each).
pub const MAX_STEPS: u64 = 64;

impl DriftConfig {
    /// (step, blocks per window): the window rounded up to whole steps, the step raised until a
    /// window has at most [`MAX_STEPS`] of them.
    pub fn blocks(&self) -> (u64, u64) {
        let step = self.drift_step.max(self.drift_window.div_ceil(MAX_STEPS));
        (step, self.drift_window.div_ceil(step).max(1))
    }
}

fn false_alarm_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a probability between 0 and 1 (exclusive)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_steps_and_rates_are_probabilities() {
        let c = |w, s| DriftConfig {
            drift_window: w,
            drift_step: s,
            ..DriftConfig::default()
        };
        assert_eq!(DriftConfig::default().blocks(), (50, 8));
        assert_eq!(c(410, 50).blocks(), (50, 9));
        assert_eq!(c(10_000, 1).blocks(), (157, 64));
        assert_eq!(c(5, 50).blocks(), (50, 1));
        assert!(false_alarm_rate("1e-4").is_ok());
        for bad in ["0", "1", "-0.1", "x", "NaN"] {
            assert!(false_alarm_rate(bad).is_err(), "{bad}");
        }
    }
}
