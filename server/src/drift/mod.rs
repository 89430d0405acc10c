//! The drift monitor: sliding windows of the live answers compared with the model's reference
//! (`celestial.drift`), per signal a score and an alert on `/metrics` and `GET /model/drift`.
//!
//! Inside: `stats` (chi-squared and normal quantiles; a leaf), `window` (the lock-free window of
//! counts; imports the model's colour features), `signals` (the tests; imports `stats`, `window`
//! and the model's reference), `config` (the flags; a leaf); this file holds the monitor. Imports
//! the model, the prediction type and the metrics.

mod config;
mod signals;
mod stats;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;

pub use config::DriftConfig;
pub use signals::Signal;
pub use window::{Observation, Snapshot, Window};

use self::signals::{Test, evaluate, tests};
use crate::classifier::Prediction;
use crate::metrics::Metrics;
use crate::model::{COLOUR_STATISTICS, DriftReference, ModelSpec};

/// Watches the live answers of one model (or says why it does not).
pub struct Monitor {
    state: State,
}

enum State {
    Off(&'static str),
    On(Box<Active>),
}

struct Active {
    reference: Arc<DriftReference>,
    window: Window,
    step: u64,
    blocks: u64,
    false_alarm_rate: f64,
    tests: Vec<Test>,
    published: Vec<Published>,
    /// The last block a window ended with when published (`u64::MAX`: none yet).
    last_block: AtomicU64,
    window_answers: AtomicU64,
}

/// A signal's last outcome: its metrics series and what `/model/drift` adds.
struct Published {
    score: Gauge<f64, AtomicU64>,
    alert: Gauge,
    statistic: AtomicU64,
    /// Index into [`COLOUR_STATISTICS`] of the statistic that moved most, or `usize::MAX`.
    worst: AtomicUsize,
}

/// Why a model is not watched, without a reference.
const NO_REFERENCE: &str = "the model has no drift reference (celestial.drift metadata)";
const SWITCHED_OFF: &str = "switched off (--no-drift)";

impl Monitor {
    /// A monitor of `spec`'s answers under `config`, its series in `metrics`; off for a model
    /// without a reference.
    pub fn new(spec: &ModelSpec, config: &DriftConfig, metrics: &Metrics) -> Monitor {
        let state = match &spec.drift {
            _ if config.no_drift => State::Off(SWITCHED_OFF),
            None => State::Off(NO_REFERENCE),
            Some(reference) => State::On(Box::new(Active::new(
                Arc::clone(reference),
                spec,
                config,
                metrics,
            ))),
        };
        Monitor { state }
    }

    /// Count one live answer (probes excluded by the caller); when the answer completes a step
    /// and the window is scored, each signal's score (in [`DriftStatus::signals`] order).
    pub fn observe(&self, p: &Prediction) -> Option<Vec<(Signal, f64)>> {
        let State::On(a) = &self.state else {
            return None;
        };
        let o = Observation {
            label: p.best,
            confidence_bin: p
                .confidence
                .map(|c| a.reference.confidence_bin(f64::from(c))),
            known: p.known,
            colours: p.colours,
        };
        let (block, snapshot) = a.window.observe(&o)?;
        Some(a.publish(block, &snapshot))
    }

    /// What `GET /model/drift` answers.
    pub fn status(&self) -> DriftStatus {
        match &self.state {
            State::Off(reason) => DriftStatus {
                enabled: false,
                reason: Some(reason),
                ..DriftStatus::default()
            },
            State::On(a) => a.status(),
        }
    }
}

impl Active {
    fn new(
        reference: Arc<DriftReference>,
        spec: &ModelSpec,
        config: &DriftConfig,
        metrics: &Metrics,
    ) -> Active {
        let (step, blocks) = config.blocks();
        let present = [
            spec.calibration.temperature.is_some(),
            spec.calibration.ood.is_some(),
            spec.channels() == 3,
        ];
        let signals = 1 + present.iter().filter(|p| **p).count() + usize::from(present[2]);
        let tail = config.drift_false_alarm_rate / signals as f64;
        let tests = tests(&reference, tail, present);
        let published = tests
            .iter()
            .map(|t| {
                let (score, alert) = metrics.drift_series(t.signal.name());
                Published {
                    score,
                    alert,
                    statistic: AtomicU64::new(0),
                    worst: AtomicUsize::new(usize::MAX),
                }
            })
            .collect();
        Active {
            window: Window::new(
                spec.labels.len(),
                reference.confidence_counts.len(),
                step,
                blocks,
            ),
            reference,
            step,
            blocks,
            false_alarm_rate: config.drift_false_alarm_rate,
            tests,
            published,
            last_block: AtomicU64::new(u64::MAX),
            window_answers: AtomicU64::new(0),
        }
    }

    /// Score the window ending with `block`; publish the scores unless a later window was
    /// published already (two windows can end at once under concurrent answers).
    fn publish(&self, block: u64, s: &Snapshot) -> Vec<(Signal, f64)> {
        let outcomes: Vec<_> = self
            .tests
            .iter()
            .map(|t| evaluate(t, &self.reference, s))
            .collect();
        let scores = self
            .tests
            .iter()
            .zip(&outcomes)
            .map(|(t, o)| (t.signal, o.score))
            .collect();
        let last = self.last_block.load(Relaxed);
        if last != u64::MAX && last >= block {
            return scores;
        }
        self.last_block.store(block, Relaxed);
        self.window_answers.store(s.answers, Relaxed);
        for (o, p) in outcomes.into_iter().zip(&self.published) {
            p.score.set(o.score);
            p.alert.set(i64::from(o.score >= 1.0));
            p.statistic.store(o.statistic.to_bits(), Relaxed);
            let worst = o
                .worst
                .and_then(|w| COLOUR_STATISTICS.iter().position(|n| *n == w));
            p.worst.store(worst.unwrap_or(usize::MAX), Relaxed);
        }
        scores
    }

    fn status(&self) -> DriftStatus {
        let scored = self.last_block.load(Relaxed) != u64::MAX;
        DriftStatus {
            enabled: true,
            reason: None,
            window: Some(self.step * self.blocks),
            step: Some(self.step),
            false_alarm_rate: Some(self.false_alarm_rate),
            reference_pictures: Some(self.reference.pictures),
            answers: Some(self.window.observed()),
            window_answers: Some(self.window_answers.load(Relaxed)),
            scored: Some(scored),
            signals: self
                .tests
                .iter()
                .zip(&self.published)
                .map(|(t, p)| SignalStatus {
                    signal: t.signal,
                    test: t.test.clone(),
                    threshold: t.threshold,
                    statistic: f64::from_bits(p.statistic.load(Relaxed)),
                    score: p.score.get(),
                    alert: p.alert.get() == 1,
                    worst: COLOUR_STATISTICS.get(p.worst.load(Relaxed)).copied(),
                })
                .collect(),
        }
    }
}

/// The answer of `GET /model/drift`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftStatus {
    pub enabled: bool,
    /// Why the monitor is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub false_alarm_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_pictures: Option<u64>,
    /// Live answers counted since start (probes excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<u64>,
    /// Answers in the last scored window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_answers: Option<u64>,
    /// Whether a whole window has been scored yet (until then every score is 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scored: Option<bool>,
    pub signals: Vec<SignalStatus>,
}

/// One signal's last outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SignalStatus {
    pub signal: Signal,
    pub test: String,
    pub threshold: f64,
    pub statistic: f64,
    /// `statistic / threshold`; the alert is on at 1 or more.
    pub score: f64,
    pub alert: bool,
    /// The colour statistic that moved most (brightness and colour).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst: Option<&'static str>,
}
