//! Hostile and broken clients against the real server in-process (loopback, the fake classifier):
//! how requests are handled. Stalled uploads hold no prediction slot and end in 408
//! `body_timeout` (a client error, never a 504); a slow but steady body is read; clients that go
//! away leave the in-flight gauge and are counted as cancelled; a malformed `Content-Type` is 415;
//! two images on `/predict` are a 400 that points to `/predict/batch`. Every wait is bounded and
//! the time limits are small flags, so each test takes a few seconds at most.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use celestial_server::testing::{FakeClassifier, TestServer};
use common::{error_of, start_with, synthetic_sized};
use image::ImageFormat;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn fake() -> Option<Arc<dyn celestial_server::Classifier>> {
    Some(Arc::new(FakeClassifier::default()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A small PNG the fake classifies.
fn png() -> Vec<u8> {
    synthetic_sized(16, 16, ImageFormat::Png)
}

/// A `side` x `side` PNG of noise (it does not compress: about 3 x side^2 bytes).
fn noise_png(side: u32) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let [a, b, c, _] = x.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// Open a connection and send the head of `POST path` announcing `content_length` bytes.
async fn post_head(s: &TestServer, path: &str, content_type: &str, length: usize) -> TcpStream {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c
}

/// An answer read off a raw connection.
struct Answer {
    status: u16,
    head: String,
    body: serde_json::Value,
}

/// Read one answer (head and `Content-Length` body), within `limit`.
async fn read_answer(c: &mut (impl AsyncRead + Unpin), limit: Duration) -> Answer {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head[9..12].parse().unwrap();
                    let body = serde_json::from_slice(&buf[end + 4..end + 4 + length])
                        .unwrap_or(serde_json::Value::Null);
                    return Answer { status, head, body };
                }
            }
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a whole answer: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("an answer in time")
}

async fn metrics(s: &TestServer) -> String {
    common::get_text(&client(), s, "/metrics").await
}

/// The value of the metric line `series` (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    common::metric(text, series).unwrap_or(0.0)
}

/// Poll `/metrics` until `series` has `value` (within 3 s); the last scrape.
async fn wait_metric(s: &TestServer, series: &str, value: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let m = metrics(s).await;
        if metric(&m, series) == value || Instant::now() > deadline {
            assert_eq!(metric(&m, series), value, "{series} in\n{m}");
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const IN_FLIGHT: &str = "celestial_http_requests_in_flight ";

/// 64 uploads that send 1 KB of an announced 100 KB and stall. Before, they took
/// every prediction slot (`--max-concurrency` 64, admission before the body): everyone else got
/// 429 until they ended in 504 after 30 s. Now a normal client is served at once, and the stalled
/// ones end in 408 `body_timeout`, counted as a client error.
#[tokio::test]
async fn stalled_uploads_do_not_deny_service_and_end_in_408() {
    let s = start_with(&["--body-timeout", "2s", "--request-timeout", "1s"], fake()).await;
    let mut stalled = Vec::new();
    for _ in 0..64 {
        let mut c = post_head(&s, "/predict", "image/png", 100_000).await;
        c.write_all(&[0x89; 1024]).await.unwrap();
        stalled.push(c);
    }
    let started = Instant::now();
    // All 64 are being served (plus the /metrics request itself).
    wait_metric(&s, IN_FLIGHT, 65.0).await;

    let c = client();
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = c
            .post(s.url("/predict"))
            .header("content-type", "image/png")
            .body(png())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        latencies.push(t.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(2), "still stalled");
    latencies.sort();
    eprintln!("normal client while 64 uploads stall: {latencies:?}");
    assert!(latencies[2] < Duration::from_millis(100), "{latencies:?}");

    for mut c in stalled {
        let a = read_answer(&mut c, Duration::from_secs(5)).await;
        assert_eq!(
            (a.status, a.body["code"].as_str()),
            (408, Some("body_timeout"))
        );
        assert!(a.head.contains("connection: close"), "{}", a.head);
    }
    let m = metrics(&s).await;
    let s408 = "celestial_http_requests_total{route=\"/predict\",method=\"POST\",status=\"408\"} ";
    assert_eq!(metric(&m, s408), 64.0, "{m}");
    assert_eq!(
        metric(&m, "celestial_rejections_total{reason=\"body_timeout\"} "),
        64.0
    );
    assert!(
        !m.contains("status=\"504\""),
        "a slow client is not a server timeout:\n{m}"
    );
    assert!(!m.contains("reason=\"timeout\""), "{m}");
    assert_eq!(metric(&m, IN_FLIGHT), 1.0);
    s.stop().await.unwrap();
}

/// Write `body` in `chunk`-byte pieces, one every `every`.
async fn trickle(c: &mut (impl AsyncWrite + Unpin), body: &[u8], chunk: usize, every: Duration) {
    for piece in body.chunks(chunk) {
        if c.write_all(piece).await.is_err() {
            return; // the server answered and closed
        }
        tokio::time::sleep(every).await;
    }
}

/// The body rule is a minimum average rate after a grace time, and the prediction's own
/// time limit starts once the body is in. A body arriving steadily above the rate is read even
/// though it takes longer than both `--body-timeout` and `--request-timeout`; one arriving below
/// the rate gets 408 once the grace time is over (not a 504 at `--request-timeout`).
#[tokio::test]
async fn a_steady_body_is_read_and_a_trickle_is_408_not_504() {
    let s = start_with(
        &[
            "--body-timeout",
            "300ms",
            "--body-min-rate",
            "20000",
            "--request-timeout",
            "100ms",
        ],
        fake(),
    )
    .await;
    let image = noise_png(128);
    assert!(image.len() > 40_000, "{}", image.len());

    // ~80 KB/s, four times the minimum: about 600 ms for the whole body.
    let mut steady = post_head(&s, "/predict", "image/png", image.len()).await;
    let t = Instant::now();
    trickle(&mut steady, &image, 4096, Duration::from_millis(50)).await;
    let a = read_answer(&mut steady, Duration::from_secs(5)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(
        t.elapsed() > Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // ~1 KB/s: cut after the grace time.
    let (mut r, mut w) = post_head(&s, "/predict", "image/png", image.len())
        .await
        .into_split();
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        trickle(&mut w, &image, 100, Duration::from_millis(100)).await;
    });
    let a = read_answer(&mut r, Duration::from_secs(5)).await;
    let waited = t.elapsed();
    writer.abort();
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (408, Some("body_timeout"))
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let message = a.body["error"].as_str().unwrap();
    assert!(message.contains("20000 bytes/s"), "{message}");
    let m = metrics(&s).await;
    assert!(m.contains("status=\"408\"} 1"), "{m}");
    assert!(!m.contains("status=\"504\""), "{m}");
    s.stop().await.unwrap();
}

/// Uploads have their own, larger bound (`--max-uploads`); over it, 429 at once.
#[tokio::test]
async fn uploads_over_max_uploads_get_429() {
    let s = start_with(&["--max-uploads", "2", "--body-timeout", "1s"], fake()).await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(post_head(&s, "/predict", "image/png", 1000).await);
    }
    wait_metric(&s, IN_FLIGHT, 3.0).await;
    let r = client()
        .post(s.url("/predict"))
        .body(png())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(error_of(r).await.1, "overloaded");
    for mut c in stalled {
        let a = read_answer(&mut c, Duration::from_secs(5)).await;
        assert_eq!(a.status, 408);
    }
    let r = client()
        .post(s.url("/predict"))
        .body(png())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();
}

/// A client that goes away while its prediction runs, and one that goes away in the middle
/// of its body. Before, both stayed in `celestial_http_requests_in_flight` for good and were
/// neither counted nor logged. Now the gauge comes back to the /metrics request alone and both are
/// counted as cancelled.
#[tokio::test]
async fn clients_that_disconnect_leave_no_request_in_flight_and_are_counted() {
    let slow = Arc::new(FakeClassifier::slow(Duration::from_secs(3)));
    let s = start_with(&["--body-timeout", "5s"], Some(slow)).await;
    let image = png();
    let mut waiting = post_head(&s, "/predict", "image/png", image.len()).await;
    waiting.write_all(&image).await.unwrap();
    let mut uploading = post_head(&s, "/predict/batch", "image/png", 5000).await;
    uploading.write_all(&image).await.unwrap();
    wait_metric(&s, IN_FLIGHT, 3.0).await;
    drop(waiting);
    drop(uploading);
    let m = wait_metric(&s, IN_FLIGHT, 1.0).await;
    for route in ["/predict", "/predict/batch"] {
        let series = format!(
            "celestial_http_requests_cancelled_total{{route=\"{route}\",method=\"POST\"}} "
        );
        assert_eq!(metric(&m, &series), 1.0, "{series} in\n{m}");
    }
    // Nothing else is counted for them: no status.
    assert!(
        !m.contains("route=\"/predict\",method=\"POST\",status"),
        "{m}"
    );
    s.stop().await.unwrap();
}

/// A `Content-Type` that is not a media type is 415, not a raw body.
#[tokio::test]
async fn a_malformed_content_type_is_415() {
    let s = start_with(&[], fake()).await;
    let c = client();
    for ct in [";;;=;", "image/png; name", "image/png x", "/"] {
        let r = c
            .post(s.url("/predict"))
            .header("content-type", ct)
            .body(png())
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (415, "unsupported_media_type"),
            "{ct}"
        );
        assert!(message.contains("not a valid media type"), "{message}");
    }
    // Valid ones, with parameters, still work.
    for ct in [
        "image/png; charset=binary",
        "Image/PNG;",
        "application/octet-stream ; x=\"y\"",
    ] {
        let r = c
            .post(s.url("/predict"))
            .header("content-type", ct)
            .body(png())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ct}");
    }
    s.stop().await.unwrap();
}

/// Two `image` parts on `/predict` are a 400 that says one image per `/predict` and
/// points to `/predict/batch` (which takes them).
#[tokio::test]
async fn two_images_on_predict_are_400_pointing_to_the_batch_route() {
    let s = start_with(&[], fake()).await;
    let c = client();
    let form = || {
        let part = || reqwest::multipart::Part::bytes(png()).file_name("a.png");
        reqwest::multipart::Form::new()
            .part("image", part())
            .part("image", part())
    };
    let r = c
        .post(s.url("/predict"))
        .multipart(form())
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(r).await;
    assert_eq!((status, code.as_str()), (400, "multiple_images"));
    assert!(
        message.contains("one image") && message.contains("POST /predict/batch"),
        "{message}"
    );
    let r = c
        .post(s.url("/predict/batch"))
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    s.stop().await.unwrap();
}

/// The real binary, for what only its logs show: a stalled upload is answered 408, its connection
/// closed with the answer (not after the read-away budget of the unread body, the header-read
/// timeout, 10 s), and logged at INFO as a client error; a client that disconnects in the middle
/// of its body is logged as cancelled, with its request id, and counted.
#[test]
fn the_binary_logs_408_as_a_client_error_and_cancelled_requests() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = port.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_celestial-server"))
        .args(["--host", "127.0.0.1", "--port", &p, "--workers", "1"])
        .args(["--log-format", "json", "--body-timeout", "300ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", port))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok::<_, std::io::Error>(c)
    };
    let head = |id: &str| {
        format!(
            "POST /predict HTTP/1.1\r\nHost: x\r\nX-Request-Id: {id}\r\nContent-Length: 5000\r\n\r\n"
        )
    };
    let started = Instant::now();
    let mut stalled = loop {
        match connect() {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the binary does not listen: {e}"),
        }
    };
    // One client goes away in the middle of its body, one stalls.
    let mut gone = connect().unwrap();
    gone.write_all(head("gone-1").as_bytes()).unwrap();
    gone.write_all(b"abc").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(gone);
    stalled.write_all(head("stalled-1").as_bytes()).unwrap();
    stalled.write_all(&[0; 100]).unwrap();
    let sent = Instant::now();
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).unwrap();
    let closed_after = sent.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        closed_after < Duration::from_secs(5),
        "the connection closed {closed_after:?} after the stalled body, the 408 is due at 300 ms"
    );
    assert!(answer.contains("\"body_timeout\""), "{answer}");

    let logs = crate::binary::stop(&mut child);
    let line = |id: &str| -> serde_json::Value {
        let l = logs
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no log line for {id} in\n{logs}"));
        serde_json::from_str(l).unwrap()
    };
    let stalled = line("stalled-1");
    assert_eq!(
        (stalled["status"].as_u64(), stalled["level"].as_str()),
        (Some(408), Some("INFO"))
    );
    let gone = line("gone-1");
    assert_eq!(gone["message"], "request cancelled by the client", "{gone}");
    assert_eq!(gone["route"], "/predict");
}
