//! The image path a worker runs on every upload: sniff, header checks (pixel limit), decode and
//! preprocess into the model input (`Preprocessor::run`), with the fake classifier's model spec
//! (`testing::spec()`: RGB 64x64, NCHW, scale 1/255) and the server's default `--max-image-pixels`
//! and `--max-decode-bytes`. One `Preprocessor` is kept across inputs, as a worker keeps its own
//! across images.
//!
//! Asserts: no panic (and no abort: no allocation beyond libFuzzer's `-rss_limit_mb`/
//! `-malloc_limit_mb`); an error (`decode_budget_exceeded` included) maps to a 4xx code; on
//! success every input value is finite and in [0, 1].

#![no_main]

use std::sync::{Arc, LazyLock, Mutex};

use libfuzzer_sys::fuzz_target;

use celestial_server::Config;
use celestial_server::errors::image_code;
use celestial_server::preprocess::{DecodeLimits, Preprocessor};
use celestial_server::testing;

static LIMITS: LazyLock<DecodeLimits> = LazyLock::new(|| {
    let config = Config::with_defaults();
    DecodeLimits {
        max_pixels: config.max_image_pixels,
        max_bytes: config.max_decode_bytes,
    }
});

static WORKER: LazyLock<Mutex<(Preprocessor, Vec<f32>)>> = LazyLock::new(|| {
    let spec = Arc::new(testing::spec());
    let out = vec![0f32; spec.tensor_len()];
    Mutex::new((Preprocessor::new(spec), out))
});

fuzz_target!(|data: &[u8]| {
    let mut worker = WORKER.lock().unwrap_or_else(|e| e.into_inner());
    let (pre, out) = &mut *worker;
    out.fill(f32::NAN);
    match pre.run(data, *LIMITS, out) {
        Ok(()) => assert!(
            out.iter().all(|v| (0.0..=1.0).contains(v)),
            "an input value outside [0, 1]"
        ),
        Err(e) => {
            let status = image_code(&e).status();
            assert!(status.is_client_error(), "{e} maps to {status}");
        }
    }
});
