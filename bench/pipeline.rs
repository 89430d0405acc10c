//! In-process pipeline benchmark: decode -> preprocess -> inference per image, with one and two
//! threads (each thread owns its ONNX Runtime session, like the server's workers). No HTTP.
//!
//!   cargo bench -p celestial-server --bench pipeline -- [IMAGE] [SECONDS]
//!
//! IMAGE defaults to the first validation image of the dataset; SECONDS (per thread count) to 10.
//! The model is the embedded one, or `CELESTIAL_MODEL` (as for the server), e.g. the v1 model
//! `model/testdata/v1-celestial-bodies.onnx` for an A/B (`bench/pipeline_ab.sh`);
//! `BENCH_THREADS` (default "1 2") chooses the thread counts.

use std::time::{Duration, Instant};

use bytes::Bytes;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let image = args.first().cloned().unwrap_or_else(|| {
        let dataset = std::env::var("CELESTIAL_DATASET")
            .unwrap_or_else(|_| root.join("../shared/dataset").display().to_string());
        let split = std::fs::read_to_string(root.join("model/validation-split.txt"))
            .expect("validation split");
        format!("{dataset}/raw/{}", split.lines().next().unwrap())
    });
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let bytes =
        Bytes::from(std::fs::read(&image).unwrap_or_else(|e| panic!("cannot read {image}: {e}")));
    let config = celestial_server::Config::from_args(["--workers", "1"]).unwrap();
    let engine = celestial_server::load_engine(&config).unwrap_or_else(|e| panic!("{e}"));
    let model = celestial_server::model_bytes(&config).unwrap_or_else(|e| panic!("{e}"));
    let spec = celestial_server::Classifier::spec(&engine);
    println!(
        "image: {image} ({} bytes); {seconds} s per run; model {} {} ({}x{}, JPEG decode {:?})",
        bytes.len(),
        spec.name,
        spec.version,
        spec.width,
        spec.height,
        spec.jpeg_dct_scaling
    );
    let thread_counts: Vec<usize> = std::env::var("BENCH_THREADS")
        .unwrap_or_else(|_| "1 2".into())
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    for threads in thread_counts {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let results: Vec<(u64, Duration, Duration, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let engine = &engine;
                    let model: &[u8] = &model;
                    let bytes = bytes.clone();
                    s.spawn(move || {
                        let mut session = engine.new_worker(model, 1).unwrap();
                        // Warm-up.
                        for _ in 0..50 {
                            engine
                                .predict_blocking(std::slice::from_ref(&bytes), &mut session)
                                .unwrap();
                        }
                        let (mut n, mut pre, mut inf) = (0u64, Duration::ZERO, Duration::ZERO);
                        let mut lat = Vec::with_capacity(200_000);
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            let out = engine
                                .predict_blocking(std::slice::from_ref(&bytes), &mut session)
                                .unwrap();
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                            assert!(out.results[0].is_ok());
                            pre += out.preprocess;
                            inf += out.inference;
                            n += 1;
                        }
                        (n, pre, inf, lat)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let n: u64 = results.iter().map(|r| r.0).sum();
        let pre: Duration = results.iter().map(|r| r.1).sum();
        let inf: Duration = results.iter().map(|r| r.2).sum();
        let mut lat: Vec<f64> = results.into_iter().flat_map(|r| r.3).collect();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize];
        println!(
            "PIPELINE model={} threads={threads} images={n} images_per_s={:.1} p50_ms={:.3} p99_ms={:.3} decode_preprocess_us={:.1} inference_us={:.1}",
            spec.version,
            n as f64 / seconds,
            p(0.5),
            p(0.99),
            pre.as_secs_f64() * 1e6 / n as f64,
            inf.as_secs_f64() * 1e6 / n as f64,
        );
    }
}
