//! Hostile images against the real `celestial-server` binary: a 16-bit
//! 8000x5000 PNG, a decompression bomb, a huge progressive JPEG, a header-only GIF bomb and a
//! 631-byte JPEG that declares 6000x6000 pixels. Each gets its documented status, and the
//! server's peak RSS (VmHWM) stays under the bound the decode budget promises:
//! `RSS <= baseline + workers x (max-decode-bytes + 17 MiB) + bodies in flight` (docs/server.md, Memory).
//! Loopback only; every image is generated here, small on the wire.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, RgbImage};

const BIN: &str = env!("CARGO_BIN_EXE_celestial-server");
const MIB: u64 = 1 << 20;
const WORKERS: u64 = 2;
const BUDGET: u64 = 32 * MIB;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `POST /predict` with a raw image body; the status and the response body.
fn predict(port: u16, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(240))).unwrap();
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = String::new();
    BufReader::new(s).read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// The server's `/proc/PID/status` field (kB) in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--workers",
            &WORKERS.to_string(),
            "--max-decode-bytes",
            &BUDGET.to_string(),
            "--request-timeout",
            "200s",
            "--log-filter",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut server = Server { child, port };
    let start = Instant::now();
    while !ready(port) {
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server exited"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// A 16-bit RGBA PNG of `w` x `h` written row by row (never whole in memory here): a pattern
/// that repeats every 8 pixels, so it deflates to well under a megabyte.
fn png16(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Sixteen);
    enc.set_filter(png::Filter::NoFilter);
    let mut writer = enc.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row: Vec<u8> = (0..w as usize * 8)
        .map(|i| [0x12, 0x80, 0xF0, 0x0F, 0x33, 0x55, 0xFF, 0xFF][i % 8] ^ ((i / 64) % 2) as u8)
        .collect();
    for _ in 0..h {
        stream.write_all(&row).unwrap();
    }
    stream.finish().unwrap();
    writer.finish().unwrap();
    out
}

/// A decompression bomb: `w` x `h` 8-bit RGB zeros, a few hundred KB of zlib data.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_filter(png::Filter::NoFilter);
    let mut writer = enc.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let row = vec![0u8; w as usize * 3];
    for _ in 0..h {
        stream.write_all(&row).unwrap();
    }
    stream.finish().unwrap();
    writer.finish().unwrap();
    out
}

/// A progressive JPEG of `w` x `h` (4:2:0, a smooth ramp: small on the wire): its coefficients
/// alone take `w * h * 3` bytes.
fn progressive_jpeg(w: usize, h: usize) -> Vec<u8> {
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    comp.set_fastest_defaults();
    comp.set_size(w, h);
    comp.set_progressive_mode();
    let mut started = comp.start_compress(Vec::new()).unwrap();
    let band: Vec<u8> = (0..w * 16 * 3).map(|i| (i / 3 % w / 8) as u8).collect();
    for _ in 0..h / 16 {
        started.write_scanlines(&band).unwrap();
    }
    started.finish().unwrap()
}

/// A baseline JPEG of `w` x `h`, for libjpeg's scaled decoding.
fn baseline_jpeg(w: usize, h: usize) -> Vec<u8> {
    let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    comp.set_fastest_defaults();
    comp.set_size(w, h);
    let mut started = comp.start_compress(Vec::new()).unwrap();
    let band: Vec<u8> = (0..w * 16 * 3).map(|i| (i / 3 % w / 32) as u8).collect();
    for _ in 0..h / 16 {
        started.write_scanlines(&band).unwrap();
    }
    started.finish().unwrap()
}

/// A GIF whose header declares `w` x `h` and whose data is a few bytes.
fn gif_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&w.to_le_bytes());
    gif.extend_from_slice(&h.to_le_bytes());
    gif.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255, 0x2C, 0, 0, 0, 0]);
    gif.extend_from_slice(&w.to_le_bytes());
    gif.extend_from_slice(&h.to_le_bytes());
    gif.extend_from_slice(&[0, 2, 2, 0x44, 0x01, 0, 0x3B]);
    gif
}

/// A truncated JPEG: an 8x8 JPEG (one block per component) whose header says 6000x6000.
fn truncated_jpeg() -> Vec<u8> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, image::Rgb([90, 60, 30])));
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, ImageFormat::Jpeg).unwrap();
    let mut jpeg = buf.into_inner();
    let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]); // 6000 x 6000
    jpeg
}

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["code"].as_str().unwrap_or("").to_string()
}

#[test]
fn hostile_images_get_their_status_within_the_memory_bound() {
    let big16 = png16(8000, 5000);
    assert!(big16.len() < 2_000_000, "{} bytes", big16.len());
    let bomb = png_bomb(6000, 6000);
    let progressive = progressive_jpeg(4000, 3008);
    let baseline = baseline_jpeg(6000, 4000);
    let gif = gif_bomb(6000, 6000);
    let truncated = truncated_jpeg();
    assert!(truncated.len() < 1000, "{} bytes", truncated.len());

    let server = start();
    let (port, pid) = (server.port, server.child.id());
    // Baseline: after a normal prediction (the workers' sessions and buffers are warm).
    let normal = baseline_jpeg(128, 128);
    assert_eq!(predict(port, "image/jpeg", &normal).0, 200);
    let baseline_rss = status_bytes(pid, "VmRSS:");

    // The truncated JPEG: refused from the markers, before any decoding.
    let (status, body) = predict(port, "image/jpeg", &truncated);
    assert_eq!((status, code(&body).as_str()), (400, "truncated_image"));
    assert!(body.contains("coded data"), "{body}");

    for (name, ctype, bytes, want) in [
        ("16-bit 8000x5000 PNG", "image/png", &big16, (200, "")),
        ("6000x6000 PNG bomb", "image/png", &bomb, (200, "")),
        (
            "6000x4000 baseline JPEG",
            "image/jpeg",
            &baseline,
            (200, ""),
        ),
        (
            "4000x3008 progressive JPEG",
            "image/jpeg",
            &progressive,
            (422, "decode_budget_exceeded"),
        ),
        (
            "6000x6000 GIF bomb",
            "image/gif",
            &gif,
            (422, "decode_budget_exceeded"),
        ),
    ] {
        let (status, body) = predict(port, ctype, bytes);
        assert_eq!((status, code(&body).as_str()), want, "{name}: {body}");
        if status == 422 {
            assert!(body.contains("MiB of memory"), "{name}: {body}");
        }
    }

    // In parallel, as an attacker would: every worker busy with a hostile image at once.
    let small16 = png16(3000, 2000); // 48 MB of pixels: over the budget, decoded row by row
    let mix: Vec<(&str, Vec<u8>)> = vec![
        ("image/png", small16.clone()),
        ("image/png", bomb.clone()),
        ("image/jpeg", progressive.clone()),
        ("image/png", small16),
    ];
    let in_flight: u64 = mix.iter().map(|(_, b)| b.len() as u64).sum();
    let threads: Vec<_> = mix
        .into_iter()
        .map(|(ctype, bytes)| std::thread::spawn(move || predict(port, ctype, &bytes).0))
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap(), 200 | 422));
    }

    let peak = status_bytes(pid, "VmHWM:");
    // Bodies are held about twice (the request and its image part) while in flight.
    let bound = baseline_rss + WORKERS * (BUDGET + 17 * MIB) + 2 * in_flight;
    eprintln!(
        "hostile images: baseline RSS {} MiB, peak {} MiB, bound {} MiB",
        baseline_rss / MIB,
        peak / MIB,
        bound / MIB
    );
    assert!(peak <= bound, "peak RSS {peak} over the bound {bound}");
}

/// Not a test: writes the hostile images to `$CELESTIAL_HOSTILE_DIR` for `bench/memory.sh`.
#[test]
#[ignore = "a generator for bench/memory.sh"]
fn write_hostile_images() {
    let Some(dir) = std::env::var_os("CELESTIAL_HOSTILE_DIR") else {
        eprintln!("SKIP write_hostile_images: set CELESTIAL_HOSTILE_DIR");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("png16-8000x5000.png", png16(8000, 5000)),
        ("bomb-6000x6000.png", png_bomb(6000, 6000)),
        ("progressive-6000x6000.jpg", progressive_jpeg(6000, 6000)),
        ("progressive-4000x3008.jpg", progressive_jpeg(4000, 3008)),
        ("baseline-8000x4992.jpg", baseline_jpeg(8000, 4992)),
        ("bomb-6000x6000.gif", gif_bomb(6000, 6000)),
        ("truncated-6000x6000.jpg", truncated_jpeg()),
    ] {
        std::fs::write(dir.join(name), &bytes).unwrap();
        eprintln!("{name}: {} bytes", bytes.len());
    }
}
