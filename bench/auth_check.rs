//! The cost of the API-key check alone, in-process: `auth::check` on a request with
//! `Authorization: Bearer <key>` against 1 and 16 accepted keys, valid and invalid keys.
//!
//!   cargo bench -p celestial-server --bench auth_check [-- ITERATIONS]
//!
//! Prints ns per check; compare with the CPU time of one prediction (bench/README.md).

use std::hint::black_box;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, header};
use celestial_server::auth::{self, ApiKey, ApiKeys};

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    for n_keys in [1usize, 16] {
        let listed: Vec<ApiKey> = (0..n_keys)
            .map(|i| format!("{i:02}-{}", "k".repeat(45)).parse().unwrap())
            .collect();
        let keys = ApiKeys::new(&listed, None).unwrap().unwrap();
        for (what, key) in [
            ("valid", format!("00-{}", "k".repeat(45))),
            ("invalid", "x".repeat(48)),
        ] {
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
            headers.insert(header::AUTHORIZATION, value);
            let started = Instant::now();
            let mut passed = 0u32;
            for _ in 0..iterations {
                passed += u32::from(auth::check(black_box(&keys), black_box(&headers)).is_ok());
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(iterations);
            println!(
                "{n_keys:>2} key(s), {what:>7} key: {ns:.0} ns per check ({passed} passed of {iterations})"
            );
        }
    }
}
