//! The connection layer against hostile and unlucky clients (silent and slowloris connections,
//! idle keep-alive, too many connections, protocol errors, 429 answers, drain under load, h2c),
//! on loopback with the real server in-process (a fake classifier) or the real binary; each test
//! is bounded to a few seconds by short timeouts set with the server's own flags.

use crate::common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use celestial_server::Classifier;
use celestial_server::connection::OVERFLOW_RESERVE;
use celestial_server::testing::FakeClassifier;
use common::{TestServer, fixture, start_with};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fake() -> Option<Arc<dyn Classifier>> {
    Some(Arc::new(FakeClassifier::default()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One HTTP/1 answer read off a raw socket.
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Read one answer (head, then `Content-Length` bytes of body) within 5 s.
async fn read_answer(s: &mut TcpStream) -> Raw {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "closed before an answer: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head[9..12].parse().expect("status");
        let mut raw = Raw {
            status,
            head,
            body: buf[head_end..].to_vec(),
        };
        let len: usize = raw
            .header("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        while raw.body.len() < len {
            let n = s.read(&mut chunk).await.expect("read body");
            assert!(n > 0, "closed inside the body");
            raw.body.extend_from_slice(&chunk[..n]);
        }
        raw
    })
    .await
    .expect("an answer within 5 s")
}

/// Whether the server closes `s` within `within` (EOF or reset, no answer bytes).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.addr).await.expect("connect")
}

/// A slowloris: a request head one header byte every 100 ms; how long until the server closed it.
async fn slowloris(addr: std::net::SocketAddr, first_request: bool) -> Duration {
    let mut s = TcpStream::connect(addr).await.unwrap();
    if first_request {
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(&mut s).await.status, 200);
    }
    let started = Instant::now();
    if s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .is_err()
    {
        return started.elapsed();
    }
    let mut buf = [0u8; 64];
    while started.elapsed() < Duration::from_secs(8) {
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(_) => return started.elapsed(),
            Err(_) => {
                if s.write_all(b"a").await.is_err() {
                    return started.elapsed();
                }
            }
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_connections_are_closed_and_never_deny_service() {
    let s = start_with(
        &["--header-read-timeout", "1s", "--idle-timeout", "30s"],
        fake(),
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(connect(&s).await);
    }
    let opened = Instant::now();
    // Slowloris on new connections, and on a keep-alive connection after one answer (the header
    // timeout, not the 30 s idle timeout, applies once a head has started).
    let lorises: Vec<_> = (0..20)
        .map(|i| tokio::spawn(slowloris(s.addr, i % 2 == 1)))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let c = client();
    let image = fixture("saturn.webp");
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let r = c
            .post(s.url("/predict"))
            .body(image.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        fastest = fastest.min(t.elapsed());
    }
    eprintln!(
        "POST /predict beside 200 silent and 20 slowloris connections: fastest of 3 {fastest:?}"
    );
    assert!(fastest < Duration::from_millis(100), "{fastest:?}");

    for (i, conn) in silent.iter_mut().enumerate() {
        let left = Duration::from_secs(3).saturating_sub(opened.elapsed());
        assert!(
            closed_within(conn, left).await,
            "silent connection {i} still open"
        );
    }
    let closed_after = opened.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900),
        "{closed_after:?}"
    );
    for l in lorises {
        let lasted = l.await.unwrap();
        assert!(
            (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&lasted),
            "a slowloris lasted {lasted:?} with a 1 s header-read timeout"
        );
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let s = start_with(
        &["--idle-timeout", "1s", "--header-read-timeout", "4s"],
        fake(),
    )
    .await;
    let mut kept = connect(&s).await;
    let mut fresh = connect(&s).await;
    kept.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut kept).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), None, "kept alive");
    let idle = Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(3)).await);
    let lasted = idle.elapsed();
    assert!(lasted >= Duration::from_millis(900), "{lasted:?}");
    // A new connection has the header-read timeout (4 s), not the idle one.
    assert!(!closed_within(&mut fresh, Duration::from_millis(500)).await);
    fresh
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut fresh).await.status, 200);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_cheaply_while_livez_answers() {
    let max = 10;
    let s = start_with(&["--max-connections", &max.to_string()], fake()).await;
    // `max` kept-alive connections, each known to be under the limit (its /readyz answered 200; a
    // connection the server still counted, such as the start-up probe's, could push one over).
    let mut held = Vec::new();
    for _ in 0..3 * max {
        let mut conn = connect(&s).await;
        conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        if read_answer(&mut conn).await.status == 200 {
            held.push(conn);
        }
        if held.len() == max {
            break;
        }
    }
    assert_eq!(held.len(), max);

    let mut over = connect(&s).await;
    over.write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let a = read_answer(&mut over).await;
    assert_eq!(
        a.status,
        503,
        "{}{}",
        a.head,
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json()["code"], "too_many_connections");
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    assert!(closed_within(&mut over, Duration::from_secs(1)).await);

    let mut probe = connect(&s).await;
    probe
        .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut probe).await;
    assert_eq!((a.status, a.json()["status"].clone()), (200, "ok".into()));

    // The reserve taken by silent connections: one more is closed at once, without an answer.
    for _ in 0..OVERFLOW_RESERVE {
        held.push(connect(&s).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = connect(&s).await;
    let t = Instant::now();
    assert!(closed_within(&mut refused, Duration::from_secs(1)).await);
    eprintln!("refused beyond the reserve after {:?}", t.elapsed());

    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client()
        .post(s.url("/predict"))
        .body(fixture("saturn.webp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served again once connections closed");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_json_with_the_right_status() {
    let s = start_with(
        &["--max-header-bytes", "8192", "--max-headers", "20"],
        fake(),
    )
    .await;
    let many_headers: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "head over --max-header-bytes",
            format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000))
                .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "more headers than --max-headers",
            format!("GET /livez HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            "bad Content-Length",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "two different Content-Lengths",
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
                .to_vec(),
            400,
            "malformed_request",
        ),
        (
            "NUL in a header",
            b"GET /livez HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "non-UTF-8 path",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
        (
            "garbage request line",
            b"HELLO THERE\r\n\r\n".to_vec(),
            400,
            "malformed_request",
        ),
    ];
    for (what, request, status, code) in cases {
        let mut conn = connect(&s).await;
        conn.write_all(&request).await.unwrap();
        let a = read_answer(&mut conn).await;
        assert_eq!(a.status, status, "{what}: {}", a.head);
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json"),
            "{what}"
        );
        let v = a.json();
        assert_eq!(v["code"], code, "{what}: {v}");
        let message = v["error"].as_str().unwrap();
        assert!(message.ends_with('.'), "{what}: {message}");
        if status == 431 {
            assert!(
                message.contains("8192 bytes or 20 header fields"),
                "{message}"
            );
        }
        assert_eq!(a.header("connection").as_deref(), Some("close"), "{what}");
        assert!(
            closed_within(&mut conn, Duration::from_secs(2)).await,
            "{what}"
        );
    }
    // The server is unharmed.
    let r = client().get(s.url("/livez")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_429_keep_the_connection_alive() {
    let slow = Arc::new(FakeClassifier::slow(Duration::from_millis(1500)));
    let s = start_with(
        &["--max-concurrency", "1", "--max-uploads", "1"],
        Some(slow),
    )
    .await;
    let busy = tokio::spawn({
        let (c, url) = (client(), s.url("/predict"));
        async move {
            let r = c
                .post(url)
                .body(fixture("saturn.webp"))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The prediction slot is taken: a whole body, then (after --max-queue-wait) a 429 that keeps
    // the connection open.
    let body = vec![0u8; 100_000];
    let head = format!(
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = connect(&s).await;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body).await.unwrap();
    assert_kept_alive_429(&mut conn).await;

    // The upload slot is taken (a stalled upload): the 429 comes before the body, and the rest of
    // the body, sent late, is read away.
    let mut stalled = connect(&s).await;
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&body[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut conn = connect(&s).await;
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..50_000]).await.unwrap();
    let late = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        body[50_000..].to_vec()
    };
    let (rest, ()) = tokio::join!(late, assert_kept_alive_429_then(&mut conn));
    conn.write_all(&rest).await.unwrap();
    assert_livez_on(&mut conn).await;
    drop(stalled);
    assert_eq!(busy.await.unwrap(), 200);
    s.stop().await.unwrap();
}

/// A 429 `overloaded` with `Retry-After` and without `Connection: close`; then the same connection
/// serves the next request.
async fn assert_kept_alive_429(conn: &mut TcpStream) {
    assert_kept_alive_429_then(conn).await;
    assert_livez_on(conn).await;
}

/// The 429 part of [`assert_kept_alive_429`].
async fn assert_kept_alive_429_then(conn: &mut TcpStream) {
    let a = read_answer(conn).await;
    assert_eq!(a.status, 429, "{}", a.head);
    assert_eq!(a.json()["code"], "overloaded");
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        a.header("connection"),
        None,
        "no Connection: close on a 429"
    );
}

/// `GET /livez` on `conn` answers 200.
async fn assert_livez_on(conn: &mut TcpStream) {
    conn.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(conn).await;
    assert_eq!(a.status, 200, "{}", a.head);
}

/// What the clients of the drain test saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    retried: AtomicUsize,
    /// 200 answers from the draining server carrying `Connection: close`.
    closing_answers: AtomicUsize,
}

/// A client that sends to `servers` in turn and, when a connection fails or closes without an
/// answer, retries on the next server (what a load balancer does).
async fn retrying_client(servers: [String; 2], image: Vec<u8>, tally: Arc<Tally>, until: Instant) {
    let c = client();
    let mut turn = 0usize;
    while Instant::now() < until {
        let mut answered = false;
        for attempt in 0..4 {
            let first_server = (turn + attempt).is_multiple_of(2);
            let url = &servers[usize::from(!first_server)];
            match c.post(url).body(image.clone()).send().await {
                Ok(r) => {
                    let close = r.headers().get("connection").is_some_and(|v| v == "close");
                    if r.status() == 200 && close && first_server {
                        tally.closing_answers.fetch_add(1, Ordering::Relaxed);
                    }
                    let counter = if r.status() == 200 {
                        &tally.ok
                    } else {
                        &tally.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    answered = true;
                    break;
                }
                Err(_) => {
                    tally.retried.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !answered {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
        turn += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_load_serves_predictions_with_connection_close_and_loses_nothing() {
    let delay =
        || Some(Arc::new(FakeClassifier::slow(Duration::from_millis(10))) as Arc<dyn Classifier>);
    let mut a = start_with(
        &["--drain-delay", "1s", "--shutdown-timeout", "5s"],
        delay(),
    )
    .await;
    let b = start_with(&[], delay()).await;
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_millis(2500);
    let image = fixture("saturn.webp");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let servers = [a.url("/predict"), b.url("/predict")];
            tokio::spawn(retrying_client(
                servers,
                image.clone(),
                Arc::clone(&tally),
                until,
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // During the drain delay: not ready, but a prediction is served, with Connection: close.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = fresh.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let r = fresh
        .post(a.url("/predict"))
        .body(image.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["connection"], "close");

    for c in clients {
        c.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), a.finished())
        .await
        .expect("the drained server returns")
        .unwrap();
    let (ok, failed, retried, closing) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
        tally.closing_answers.load(Ordering::Relaxed),
    );
    eprintln!(
        "drain under load: {ok} answered 200, {failed} failed, {retried} retried, {closing} closing answers from the draining server"
    );
    assert_eq!(failed, 0);
    assert!(ok >= 20, "{ok}");
    assert!(closing > 0, "predictions served while draining");
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_and_http1_share_the_port() {
    let s = start_with(&[], fake()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = h2.get(s.url("/livez")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
    for _ in 0..3 {
        let r = h2
            .post(s.url("/predict"))
            .body(fixture("saturn.webp"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert!(v["prediction"].is_string(), "{v}");
    }
    let r = h2.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");
    let r = client().get(s.url("/livez")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_11, 200)
    );
    s.stop().await.unwrap();
}

#[test]
fn text_logs_have_no_colours_off_a_terminal_and_the_fd_limit_is_raised() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_celestial-server"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = crate::binary::stop(&mut child);
    assert!(logs.contains("listening"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape codes in redirected logs: {logs:?}"
    );
    let fd_line = logs
        .lines()
        .find(|l| l.contains("open-file limit"))
        .expect("the open-file limit is logged");
    assert!(
        fd_line.contains("soft=") && fd_line.contains("hard="),
        "{fd_line}"
    );
}

#[test]
fn the_server_doc_states_every_flag_and_the_connection_defaults() {
    let doc = std::fs::read_to_string(common::repo_root().join("docs/server.md")).unwrap();
    let row = |flag: &str| {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{flag}` |")))
            .unwrap_or_else(|| panic!("{flag} in docs/server.md's configuration table"))
    };
    // Every flag `--help` lists (the server's and the healthcheck's) has its row, with its
    // environment variable: the table is the one place a reader sees them all.
    for (prefix, args) in [
        ("", &["--help"][..]),
        ("healthcheck ", &["healthcheck", "--help"]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_celestial-server"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "celestial-server {args:?}");
        let help = String::from_utf8(out.stdout).unwrap();
        let mut flags: Vec<(String, Option<String>)> = Vec::new();
        for full in help.lines() {
            // A flag starts its entry ("  -h, --help", "      --host <HOST>"); its text follows on
            // the same line or indented deeper, with "[env: NAME=...]" for its variable.
            let line = full.trim_start();
            if full.len() - line.len() <= 6 && line.starts_with('-') {
                let flag = &line[line.find("--").unwrap_or(0)..];
                let name = flag.split([' ', '=']).next().unwrap().to_string();
                flags.push((name, None));
            }
            if let Some((_, env)) = line.split_once("[env: ") {
                let name = env.split(['=', ']']).next().unwrap().to_string();
                flags.last_mut().expect("[env] after its flag").1 = Some(name);
            }
        }
        let flags: Vec<_> = flags
            .into_iter()
            .filter(|(f, _)| f != "--help" && f != "--version")
            .collect();
        assert!(flags.len() >= 3, "flags parsed from {args:?}: {flags:?}");
        for (flag, env) in &flags {
            let r = row(&format!("{prefix}{flag}"));
            let env = env
                .as_deref()
                .unwrap_or_else(|| panic!("{flag} has no env"));
            assert!(r.contains(&format!("| `{env}` |")), "{r}");
        }
    }
    let d = celestial_server::Config::with_defaults();
    for (flag, default) in [
        ("--max-connections", d.max_connections.to_string()),
        (
            "--header-read-timeout",
            format!("{}s", d.header_read_timeout.as_secs()),
        ),
        ("--idle-timeout", format!("{}s", d.idle_timeout.as_secs())),
        ("--max-header-bytes", d.max_header_bytes.to_string()),
        ("--max-headers", d.max_headers.to_string()),
        (
            "--max-queue-wait",
            format!("{}ms", d.max_queue_wait.as_millis()),
        ),
    ] {
        let r = row(flag);
        assert!(r.contains(&format!("| `{default}` |")), "{r}");
    }
    assert!(doc.contains(&format!("a reserve of {OVERFLOW_RESERVE} more")));
}

/// `GET path` over a new connection with a blocking socket: the status, or 0 when the connection
/// closed without an answer.
fn blocking_get(port: u16, path: &str) -> u16 {
    use std::io::Write as _;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_low_open_file_limit_lowers_the_connection_limit_and_livez_still_answers() {
    use std::os::unix::process::CommandExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_celestial-server"));
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while blocking_get(port, "/readyz") != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // More silent connections than the process has file descriptors.
    let held: Vec<_> = (0..300)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Not unreachable: over-limit connections get an answer, and /livez answers once the reserve
    // has room (its silent connections are cut after 2 s).
    let t = Instant::now();
    let mut livez = 0;
    while livez != 200 && t.elapsed() < Duration::from_secs(5) {
        livez = blocking_get(port, "/livez");
    }
    assert_eq!(
        livez, 200,
        "/livez with 300 connections on 256 file descriptors"
    );
    eprintln!(
        "/livez 200 after {:?} with {} connections held",
        t.elapsed(),
        held.len()
    );
    drop(held);
    let logs = crate::binary::stop(&mut child);
    assert!(logs.contains("does not fit the open-file limit"), "{logs}");
    assert!(!logs.contains("cannot accept connections"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_are_served_while_draining_and_do_not_hold_up_the_shutdown() {
    let mut s = start_with(&["--drain-delay", "1s", "--idle-timeout", "60s"], fake()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = s.url("/predict");
    let predict = || h2.post(&url).body(fixture("saturn.webp")).send();
    assert_eq!(predict().await.unwrap().status(), 200);
    let signalled = Instant::now();
    s.signal();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        let r = predict().await.unwrap();
        assert_eq!(
            (r.version(), r.status().as_u16()),
            (reqwest::Version::HTTP_2, 200)
        );
    }
    // The kept-alive HTTP/2 connection (idle timeout 60 s) does not hold the shutdown up.
    tokio::time::timeout(Duration::from_secs(5), s.finished())
        .await
        .expect("the server returns")
        .unwrap();
    let took = signalled.elapsed();
    assert!(took < Duration::from_millis(3500), "{took:?}");
}
