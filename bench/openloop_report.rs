//! The open-loop generator's results: one JSON object for scripts and a few lines for people.

use serde_json::{Value, json};

use super::{Args, Cpu, Dispatched, Tally};

/// The `p`-quantile of sorted microseconds, in ms (None without any).
fn quantile_ms(sorted: &[u32], p: f64) -> Option<f64> {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).map(|&us| f64::from(us) / 1000.0)
}

/// p50, p99 and max of sorted latencies, in ms.
fn latencies(sorted: &[u32]) -> Value {
    json!({
        "p50_ms": quantile_ms(sorted, 0.5),
        "p90_ms": quantile_ms(sorted, 0.9),
        "p99_ms": quantile_ms(sorted, 0.99),
        "max_ms": quantile_ms(sorted, 1.0),
    })
}

/// Per-second rate of `n` over the measured window, rounded.
fn per_second(args: &Args, n: impl Into<f64>) -> f64 {
    (n.into() / args.duration).round()
}

/// The results as one JSON object (counts over the measured window).
pub fn results(args: &Args, mut tally: Tally, dispatched: &Dispatched, cpu: &Cpu) -> Value {
    tally.ok.sort_unstable();
    tally.refused.sort_unstable();
    let scheduled = dispatched.measured;
    let sent = scheduled - dispatched.dropped;
    let other: u64 = tally.other.values().sum();
    let ok = tally.ok.len() as u64;
    let answered = ok + tally.refused.len() as u64 + other;
    let per = |cpu: f64, n: u64| (cpu * 1e7 / n.max(1) as f64).round() / 10.0;
    let mut server = Value::Null;
    if args.server_pid.is_some() {
        server = json!({
            "cores": cpu.server / args.duration,
            "us_per_ok": per(cpu.server, ok),
            "us_per_answer": per(cpu.server, answered),
        });
    }
    json!({
        "offered_rps": per_second(args, scheduled as f64),
        "arrivals": format!("{:?}", args.arrivals).to_lowercase(),
        "connections": args.connections,
        "duration_s": args.duration,
        "scheduled": scheduled,
        "dropped_by_client": dispatched.dropped,
        "sent": sent,
        "ok": ok,
        "goodput_rps": per_second(args, ok as f64),
        "r429": tally.refused.len(),
        "r429_rps": per_second(args, tally.refused.len() as f64),
        "r429_without_retry_after": tally.refused_without_retry_after,
        "other": other,
        "other_statuses": tally.other,
        "connection_errors": tally.errors,
        "unanswered": tally.unanswered,
        "reconnects": tally.reconnects,
        "ok_latency": latencies(&tally.ok),
        "r429_latency": latencies(&tally.refused),
        "dispatch_lag": {
            "mean_us": (dispatched.lag_sum.as_secs_f64() * 1e6 / scheduled.max(1) as f64).round(),
            "max_ms": dispatched.lag_max.as_secs_f64() * 1e3,
            "over_1ms": dispatched.lag_over_1ms,
        },
        "generator": {
            "cores": cpu.generator / args.duration,
            "us_per_request": per(cpu.generator, scheduled),
        },
        "server": server,
    })
}

/// A few lines for people; the JSON has everything.
pub fn summary(r: &Value) -> String {
    let ms = |v: &Value| v.as_f64().map_or("-".into(), |ms| format!("{ms:.1}"));
    let (ok, refused) = (&r["ok_latency"], &r["r429_latency"]);
    let mut s = format!(
        "offered {} req/s ({} scheduled, {} dropped by the client) -> goodput {} req/s (200: {}), \
         429: {} ({} without Retry-After), other: {}, connection errors: {}, unanswered: {}\n",
        r["offered_rps"],
        r["scheduled"],
        r["dropped_by_client"],
        r["goodput_rps"],
        r["ok"],
        r["r429"],
        r["r429_without_retry_after"],
        r["other"],
        r["connection_errors"],
        r["unanswered"],
    );
    s += &format!(
        "served latency from the scheduled time: p50 {} ms, p99 {} ms, max {} ms; \
         429 latency: p50 {} ms, p99 {} ms\n",
        ms(&ok["p50_ms"]),
        ms(&ok["p99_ms"]),
        ms(&ok["max_ms"]),
        ms(&refused["p50_ms"]),
        ms(&refused["p99_ms"]),
    );
    s += &format!(
        "generator: {:.2} cores, {} us per request; dispatch lag max {} ms",
        r["generator"]["cores"].as_f64().unwrap_or(0.0),
        r["generator"]["us_per_request"],
        ms(&r["dispatch_lag"]["max_ms"]),
    );
    if let Some(cores) = r["server"]["cores"].as_f64() {
        s += &format!(
            "; server: {cores:.2} cores, {} us per 200",
            r["server"]["us_per_ok"]
        );
    }
    s
}
