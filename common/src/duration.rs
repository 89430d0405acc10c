//! The duration syntax of the flags (`--request-timeout`, `--drain-delay`, ...): a bare number of
//! seconds (`30`, `0.5`), or numbers with units `ms`, `s`, `m`, `h` (also `sec`, `min`), several
//! of them adding up (`1m30s`, `1h2m3.5s`). Both binaries take their duration flags through it.

use std::time::Duration;

const EXAMPLES: &str = "use e.g. 30, 1.5s, 500ms, 2m, 1h or 1m30s";

/// Longest accepted duration, in seconds (about 31 years).
const MAX_SECONDS: f64 = 1e9;

/// Seconds per `unit`, if it is one.
fn unit_seconds(unit: &str) -> Option<f64> {
    match unit {
        "ms" => Some(0.001),
        "s" | "sec" => Some(1.0),
        "m" | "min" => Some(60.0),
        "h" => Some(3600.0),
        _ => None,
    }
}

/// Parse a duration (see the module documentation).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err(format!("empty duration ({EXAMPLES})"));
    }
    let mut seconds = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration `{text}` ({EXAMPLES})"))?;
        let after = rest[digits..].trim_start();
        let letters = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let unit = &after[..letters];
        rest = after[letters..].trim_start();
        let scale = match unit_seconds(unit) {
            Some(scale) => scale,
            // A bare number alone is seconds.
            None if number.len() == text.len() => 1.0,
            None if unit.is_empty() => {
                return Err(format!(
                    "invalid duration `{text}`: {number} has no unit (use ms, s, m or h)"
                ));
            }
            None => {
                return Err(format!(
                    "invalid duration unit `{unit}` in `{text}` (use ms, s, m or h)"
                ));
            }
        };
        seconds += value * scale;
    }
    if !seconds.is_finite() || seconds > MAX_SECONDS {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_units_and_compounds_parse() {
        for (input, millis) in [
            ("30s", 30_000),
            ("1500ms", 1_500),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1.5s", 1_500),
            ("0.5", 500),
            ("30", 30_000),
            ("0s", 0),
            ("1m30s", 90_000),
            ("1h2m3.5s", 3_723_500),
            ("2m500ms", 120_500),
            (" 30 s ", 30_000),
            ("1min 30sec", 90_000),
        ] {
            let parsed = parse_duration(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(parsed, Duration::from_millis(millis), "{input}");
        }
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        for (input, reason) in [
            ("", "empty duration"),
            ("soon", "use e.g."),
            ("-1s", "use e.g."),
            ("1.2.3s", "use e.g."),
            ("5y", "unit `y`"),
            ("1m30", "30 has no unit"),
            ("1e3", "unit `e`"),
            ("99999999999h", "out of range"),
        ] {
            let e = parse_duration(input).expect_err(input);
            assert!(e.contains(reason), "{input}: {e}");
        }
    }
}
