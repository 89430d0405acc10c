//! The analysis' rules on hand-made windows: each check fails on its own signal, with its numbers,
//! the first failed one decides, missing signals are skipped with why, and too little traffic
//! judges nothing.

use std::collections::BTreeMap;

use super::*;

const LIMITS: Limits = Limits {
    alpha: 0.001,
    min_predictions: 50.0,
    error_margin: 0.01,
    latency_factor: 2.0,
};

/// 10 ms to 1 s buckets with `fast` of `n` requests under 10 ms, the rest under 50 ms.
fn latency(n: f64, fast: f64) -> Vec<(f64, f64)> {
    vec![(0.01, fast), (0.05, n), (1.0, n), (f64::INFINITY, n)]
}

/// A window of `n` predictions spread over the labels as `shares`, all answered 200.
fn window(n: f64, shares: &[(&str, f64)]) -> Signals {
    Signals {
        requests: n,
        errors: 0.0,
        latency: latency(n, n * 0.9),
        labels: shares
            .iter()
            .map(|(l, s)| (l.to_string(), (n * s).round()))
            .collect::<BTreeMap<_, _>>(),
        unknown: Some((n * 0.02).round()),
        confidence: Some(vec![
            (0.5, 0.0),
            (0.9, n * 0.2),
            (0.99, n * 0.6),
            (f64::INFINITY, n),
        ]),
    }
}

const EVEN: [(&str, f64); 4] = [
    ("Mars", 0.25),
    ("Moon", 0.25),
    ("Earth", 0.25),
    ("Venus", 0.25),
];

fn check<'a>(a: &'a Analysis, signal: &str) -> &'a Check {
    a.checks.iter().find(|c| c.signal == signal).unwrap()
}

#[test]
fn the_same_behaviour_is_promoted() {
    let a = decide(&window(100.0, &EVEN), &window(200.0, &EVEN), LIMITS);
    assert!(a.promote && a.decided_by.is_none(), "{a:#?}");
    assert_eq!(a.checks.len(), 5);
    assert!(
        a.checks.iter().all(|c| !c.failed && c.skipped.is_none()),
        "{a:#?}"
    );
    assert!(check(&a, "labels").p_value.unwrap() > 0.9);
}

#[test]
fn a_shifted_label_distribution_decides() {
    // The canary answers "Moon" for what the stable pods call "Mars" half of the time.
    let shifted = [
        ("Mars", 0.125),
        ("Moon", 0.375),
        ("Earth", 0.25),
        ("Venus", 0.25),
    ];
    let a = decide(&window(200.0, &shifted), &window(400.0, &EVEN), LIMITS);
    assert!(!a.promote);
    assert_eq!(a.decided_by, Some("labels"));
    let labels = check(&a, "labels");
    assert!(labels.p_value.unwrap() < 0.001, "{labels:?}");
    assert!(
        labels.detail.contains("most moved: Moon 0.375 vs 0.250"),
        "{}",
        labels.detail
    );
}

#[test]
fn errors_latency_unknowns_and_confidence_each_decide() {
    let stable = window(200.0, &EVEN);
    let mut c = window(100.0, &EVEN);
    c.errors = 10.0;
    let a = decide(&c, &stable, LIMITS);
    assert_eq!(a.decided_by, Some("errors"), "{a:#?}");
    let detail = &check(&a, "errors").detail;
    assert!(
        detail
            .starts_with("5xx ratio 0.1000 (10/100) vs 0.0000 (0/200) stable; fails above 0.0100"),
        "{detail}"
    );
    // 3 in 100 is above the margin, but 1 % errors give 3 or more in 100 requests 8 % of the time
    c.errors = 3.0;
    let a = decide(&c, &stable, LIMITS);
    assert!(a.promote, "{a:#?}");
    assert!((check(&a, "errors").p_value.unwrap() - 0.0794).abs() < 1e-3);

    let mut c = window(100.0, &EVEN);
    c.latency = vec![
        (0.01, 0.0),
        (0.05, 0.0),
        (1.0, 100.0),
        (f64::INFINITY, 100.0),
    ];
    let a = decide(&c, &stable, LIMITS);
    assert_eq!(a.decided_by, Some("latency_p99"), "{a:#?}");
    // twice as slow, but by less than the slack: passes
    c.latency = latency(100.0, 0.0);
    assert!(
        decide(&c, &stable, LIMITS).promote,
        "{:#?}",
        decide(&c, &stable, LIMITS)
    );

    let mut c = window(100.0, &EVEN);
    c.unknown = Some(20.0);
    let a = decide(&c, &stable, LIMITS);
    assert_eq!(a.decided_by, Some("unknown_rate"), "{a:#?}");
    assert_eq!(check(&a, "unknown_rate").canary, Some(0.2));
    // fewer unknowns than the stable pods never fail
    let mut s = stable.clone();
    s.unknown = Some(60.0);
    assert!(decide(&window(100.0, &EVEN), &s, LIMITS).promote);

    let mut c = window(100.0, &EVEN);
    c.confidence = Some(vec![
        (0.5, 30.0),
        (0.9, 90.0),
        (0.99, 100.0),
        (f64::INFINITY, 100.0),
    ]);
    let a = decide(&c, &stable, LIMITS);
    assert_eq!(a.decided_by, Some("confidence"), "{a:#?}");
    // more confident is not worse
    let mut s = stable.clone();
    s.confidence = c.confidence.clone();
    assert!(decide(&window(100.0, &EVEN), &s, LIMITS).promote);

    // Several fail: the first in order decides, all are reported.
    let mut c = window(100.0, &[("Mars", 1.0)]);
    c.errors = 50.0;
    let a = decide(&c, &stable, LIMITS);
    assert_eq!(a.decided_by, Some("errors"));
    assert!(check(&a, "labels").failed);
}

#[test]
fn missing_signals_are_skipped_and_too_little_traffic_judges_nothing() {
    let mut c = window(100.0, &EVEN);
    c.confidence = None;
    c.unknown = None;
    let a = decide(&c, &window(200.0, &EVEN), LIMITS);
    assert!(a.promote);
    let conf = check(&a, "confidence");
    assert_eq!(
        conf.skipped.as_deref(),
        Some("the canary pods do not export celestial_prediction_confidence")
    );
    assert!(check(&a, "unknown_rate").skipped.is_some());
    let a = decide(
        &window(49.0, &[("Mars", 1.0)]),
        &window(200.0, &EVEN),
        LIMITS,
    );
    assert!(
        a.promote && a.too_little_traffic && a.checks.is_empty(),
        "{a:#?}"
    );
}
