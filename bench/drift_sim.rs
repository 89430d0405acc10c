//! The drift monitor's false alarms and detection delays, measured with the server's own code: every
//! picture of a set is classified once by the served model (decode, preprocessing, ONNX Runtime,
//! confidence, known and colour statistics as `/predict` computes them), then streams resampled
//! from those answers (a seeded generator, with replacement) go through `drift::Monitor` with the
//! server's default flags (or `CELESTIAL_DRIFT_*`).
//!
//!   cargo bench -p celestial-server --bench drift_sim -- PICTURES [WINDOWS] [TRIALS]
//!
//! PICTURES is the folder `bench/drift_pictures.py` writes (clean, grayscale, dimmed, unseen).
//! False alarms: WINDOWS scored windows (default 1,000,000) of a clean stream. Detection: TRIALS
//! runs (default 1,000) per kind, each a full window of clean answers then the drifted stream,
//! counting the drifted answers until the first alert (any signal); the single-body streams are the
//! clean pictures of one label, every label in turn.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use celestial_server::classifier::Prediction;
use celestial_server::drift::{DriftConfig, Monitor};
use celestial_server::metrics::Metrics;
use clap::Parser;

/// splitmix64: a small seeded generator (the benchmark needs no other randomness).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// The drift flags as the server would read them (defaults, or `CELESTIAL_DRIFT_*`).
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    drift: DriftConfig,
}

fn classify(
    engine: &celestial_server::Engine,
    model: &[u8],
    dir: &Path,
) -> Vec<(String, Prediction)> {
    let mut session = engine.new_worker(model, 1).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let bytes = Bytes::from(std::fs::read(&f).unwrap());
            let mut out = engine.predict_blocking(&[bytes], &mut session).unwrap();
            let p = out.results.pop().unwrap().unwrap();
            (f.file_name().unwrap().to_string_lossy().into_owned(), p)
        })
        .collect()
}

fn monitor(spec: &celestial_server::ModelSpec, config: &DriftConfig) -> Monitor {
    let metrics = Metrics::new(&spec.labels, "m", "1", "none", true, true);
    Monitor::new(spec, config, &metrics)
}

/// Answers until the first alert once `drifted` follows a window of `clean` (None: none within
/// `limit`), and the signal that fired.
fn detect(
    m: &Monitor,
    clean: &[&Prediction],
    drifted: &[&Prediction],
    window: u64,
    limit: u64,
    rng: &mut Rng,
) -> Option<(u64, &'static str)> {
    for _ in 0..window {
        m.observe(clean[rng.below(clean.len())]);
    }
    for n in 1..=limit {
        if let Some(scores) = m.observe(drifted[rng.below(drifted.len())])
            && let Some((s, _)) = scores.iter().find(|(_, v)| *v >= 1.0)
        {
            return Some((n, s.name()));
        }
    }
    None
}

fn report(kind: &str, mut delays: Vec<Option<u64>>, signals: &BTreeMap<&str, u64>) {
    let trials = delays.len();
    let within = delays
        .iter()
        .filter(|d| d.is_some_and(|d| d <= 500))
        .count();
    delays.sort_by_key(|d| d.unwrap_or(u64::MAX));
    let at = |q: f64| {
        delays[((trials - 1) as f64 * q) as usize].map_or("none".into(), |d| d.to_string())
    };
    println!(
        "DETECT kind={kind} trials={trials} within_500={within} median={} p99={} max={} signals={signals:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = Path::new(
        args.first()
            .expect("usage: drift_sim PICTURES [WINDOWS] [TRIALS]"),
    );
    let windows: u64 = args.get(1).map_or(1_000_000, |s| s.parse().unwrap());
    let trials: usize = args.get(2).map_or(1_000, |s| s.parse().unwrap());
    let config = Flags::parse_from(["drift_sim"]).drift;
    let server = celestial_server::Config::from_args(["--workers", "1"]).unwrap();
    let engine = celestial_server::load_engine(&server).unwrap_or_else(|e| panic!("{e}"));
    let model = celestial_server::model_bytes(&server).unwrap_or_else(|e| panic!("{e}"));
    let spec = celestial_server::Classifier::spec(&engine).clone();
    let sets: BTreeMap<&str, Vec<(String, Prediction)>> =
        ["clean", "grayscale", "dimmed", "unseen"]
            .into_iter()
            .map(|s| (s, classify(&engine, &model, &dir.join(s))))
            .collect();
    let (step, blocks) = config.blocks();
    let window = step * blocks;
    println!(
        "# drift simulation: window {window}, step {step}, false-alarm rate {}; {} clean answers, {} unknown",
        config.drift_false_alarm_rate,
        sets["clean"].len(),
        sets["clean"]
            .iter()
            .filter(|(_, p)| p.known == Some(false))
            .count()
    );
    let clean: Vec<&Prediction> = sets["clean"].iter().map(|(_, p)| p).collect();

    // False alarms: one long clean stream, every scored window counted.
    let m = monitor(&spec, &config);
    let mut rng = Rng(1);
    let (mut scored, mut alarms, mut max_score) = (0u64, 0u64, BTreeMap::<&str, f64>::new());
    let mut by_signal = BTreeMap::<&str, u64>::new();
    while scored < windows {
        if let Some(scores) = m.observe(clean[rng.below(clean.len())]) {
            scored += 1;
            let mut alarm = false;
            for (s, v) in scores {
                let e = max_score.entry(s.name()).or_insert(0.0);
                *e = e.max(v);
                if v >= 1.0 {
                    alarm = true;
                    *by_signal.entry(s.name()).or_insert(0) += 1;
                }
            }
            alarms += u64::from(alarm);
        }
    }
    let max: Vec<String> = max_score
        .iter()
        .map(|(k, v)| format!("{k}:{v:.3}"))
        .collect();
    println!(
        "FALSE_ALARMS windows={scored} alarms={alarms} per_10000={:.4} by_signal={by_signal:?} max_score={}",
        alarms as f64 * 1e4 / scored as f64,
        max.join(",")
    );

    // Detection.
    let mut streams: Vec<(String, Vec<&Prediction>)> = ["grayscale", "dimmed", "unseen"]
        .iter()
        .map(|k| (k.to_string(), sets[k].iter().map(|(_, p)| p).collect()))
        .collect();
    for label in &spec.labels {
        let one: Vec<&Prediction> = sets["clean"]
            .iter()
            .filter(|(f, _)| f.starts_with(&format!("{label}_")))
            .map(|(_, p)| p)
            .collect();
        streams.push((format!("single-{label}"), one));
    }
    for (kind, drifted) in &streams {
        let mut rng = Rng(7);
        let mut signals = BTreeMap::new();
        let delays = (0..trials)
            .map(|_| {
                let m = monitor(&spec, &config);
                let d = detect(&m, &clean, drifted, window, 5 * window, &mut rng);
                if let Some((_, s)) = d {
                    *signals.entry(s).or_insert(0u64) += 1;
                }
                d.map(|(n, _)| n)
            })
            .collect();
        report(kind, delays, &signals);
    }
}
