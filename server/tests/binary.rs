//! The real `celestial-server` binary: start-up failures are one line and a non-zero exit, SIGTERM
//! drains in-flight requests (a request whose body is still arriving) and exits 0, `healthcheck`
//! reports readiness (plain HTTP and, with `--tls`, HTTPS), unusable keys or TLS files stop the
//! start before the model loads.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_celestial-server");

/// The binary without a termination log (the default `/dev/termination-log` is a file a test
/// run as root would create; the self-check tests name their own).
pub(crate) fn server() -> Command {
    let mut c = Command::new(BIN);
    c.env("CELESTIAL_TERMINATION_LOG", "");
    c
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http(port: u16, request: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_held(port, request, body, Duration::ZERO)
}

/// Send `request` and the first half of `body`, wait `hold`, then the rest: the request is in
/// flight (its body still arriving) all that time.
fn http_held(
    port: u16,
    request: &str,
    body: &[u8],
    hold: Duration,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request.as_bytes())?;
    let (first, rest) = body.split_at(body.len() / 2);
    s.write_all(first)?;
    if !hold.is_zero() {
        std::thread::sleep(hold);
    }
    s.write_all(rest)?;
    let mut out = String::new();
    BufReader::new(s).read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, out))
}

pub(crate) fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

pub(crate) fn spawn(args: &[&str]) -> Child {
    server()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server")
}

/// A spawned server, killed when the test ends (a failed assertion included) if it still runs.
pub(crate) struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The rest of `child`'s stderr (all of it once the child has exited).
pub(crate) fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut err).unwrap();
    }
    err
}

/// SIGTERM to `child`, which must then exit 0; its logs (stderr).
pub(crate) fn stop(child: &mut Child) -> String {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    stderr_of(child)
}

pub(crate) fn wait_ready(port: u16, child: &mut Child) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok((200, _)) = get(port, "/readyz") {
            return start.elapsed();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited with {status}: {}", stderr_of(child));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("server not ready");
}

#[test]
fn unservable_model_fails_with_one_line_and_non_zero_exit() {
    // A height the embedded model's input does not have (model/golden.json: [1, C, H, W]).
    let wrong_height = (common::golden()["input"]["shape"][2].as_u64().unwrap() + 1).to_string();
    for args in [
        vec!["--model", "/nonexistent/model.onnx"],
        vec!["--ort-dylib-path", "/nonexistent/libonnxruntime.so"],
        vec!["--input-height", wrong_height.as_str()],
    ] {
        let port = free_port().to_string();
        let mut full = args.clone();
        full.extend(["--port", &port, "--log-filter", "off"]);
        let out = server().args(&full).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got:\n{err}");
        assert!(lines[0].starts_with("celestial-server: error: "), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let out = server()
        .args([
            "--ort-dylib-path",
            "/nonexistent/libonnxruntime.so",
            "--log-filter",
            "off",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/onnxruntime.sh"));
    // A bad flag value is a usage error (clap), also without a panic.
    let out = server()
        .args(["--request-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let port = free_port();
    let p = port.to_string();
    let mut child = spawn(&[
        "--port",
        &p,
        "--host",
        "127.0.0.1",
        "--drain-delay",
        "1s",
        "--log-format",
        "json",
    ]);
    wait_ready(port, &mut child);
    assert_eq!(
        server()
            .args(["healthcheck", "--address", &format!("127.0.0.1:{port}")])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );

    let body = common::fixture("saturn.webp");
    let slow = std::thread::spawn(move || {
        let req = format!(
            "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/webp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        http_held(port, &req, &body, Duration::from_secs(2)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (status, text) = get(port, "/readyz").unwrap();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"draining\""));
    assert_eq!(
        server()
            .args(["healthcheck", "--address", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code(),
        Some(1)
    );

    let (status, text) = slow.join().unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"prediction\":\"Saturn\""), "{text}");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit {exit}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    // After the drain, nothing listens any more.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    // JSON logs: one line per request with method, route, status, latency and request id.
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let predict_line = logs
        .lines()
        .find(|l| l.contains("\"route\":\"/predict\""))
        .expect("request log line");
    let v: serde_json::Value = serde_json::from_str(predict_line).expect("JSON log line");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["status"], 200);
    // The request was in flight while its body arrived (2 s).
    assert!(v["latency_ms"].as_f64().unwrap() >= 1900.0, "{v}");
    assert!(v["request_id"].is_string());
}

#[test]
fn sigterm_with_no_drain_delay_stops_listening_at_once() {
    let port = free_port();
    let p = port.to_string();
    let mut child = spawn(&["--port", &p, "--host", "127.0.0.1", "--log-filter", "warn"]);
    let ready_after = wait_ready(port, &mut child);
    eprintln!("readyz 200 after {ready_after:?} (debug build, includes polling)");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}");
    assert!(get(port, "/readyz").is_err());
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        let line = line.unwrap();
        assert!(!line.contains("ERROR"), "{line}");
    }
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    let out = server().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--max-body-bytes",
        "--max-image-pixels",
        "--max-concurrency",
        "--request-timeout",
        "--body-timeout",
        "--body-min-rate",
        "--max-uploads",
        "--shutdown-timeout",
        "--log-format",
        "--labels",
        "--workers",
        "--intra-op-threads",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
    assert!(
        help.contains("[env: CELESTIAL_MODEL=]") && help.contains("[env: ORT_DYLIB_PATH"),
        "{help}"
    );
}

/// A self-signed certificate for `localhost` and its key, written to `dir` as `tls.crt` and
/// `tls.key` (the names of a `kubernetes.io/tls` Secret).
fn write_tls_pair(dir: &std::path::Path) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (crt, pem) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    (
        crt.to_str().unwrap().to_string(),
        pem.to_str().unwrap().to_string(),
    )
}

fn healthcheck(args: &[&str]) -> bool {
    server()
        .arg("healthcheck")
        .args(args)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn tls_binary_serves_https_probes_on_the_plain_port_and_healthcheck_speaks_both() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = write_tls_pair(dir.path());
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, "binary-test-key\n").unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let (p, t) = (port.to_string(), tls_port.to_string());
    let mut child = spawn(&[
        "--host",
        "127.0.0.1",
        "--port",
        &p,
        "--tls-port",
        &t,
        "--tls-cert",
        &crt,
        "--tls-key",
        &key,
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--workers",
        "1",
        "--log-filter",
        "warn",
    ]);
    wait_ready(port, &mut child);
    let plain = format!("127.0.0.1:{port}");
    let tls = format!("127.0.0.1:{tls_port}");
    assert!(healthcheck(&["--address", &plain]), "plain probe port");
    assert!(healthcheck(&["--tls", "--address", &tls]), "HTTPS port");
    assert!(
        !healthcheck(&["--address", &tls, "--timeout", "1s"]),
        "plain HTTP to the TLS port"
    );
    assert!(
        !healthcheck(&["--tls", "--address", &plain, "--timeout", "1s"]),
        "TLS to the plain port"
    );
    assert_eq!(
        get(port, "/model").unwrap().0,
        404,
        "the plain port serves probes only"
    );
    assert_eq!(get(port, "/livez").unwrap().0, 200);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("binary-test-key"), "a key in the log:\n{err}");
}

#[test]
fn unusable_keys_or_tls_files_fail_at_once_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, _key) = write_tls_pair(dir.path());
    let empty = dir.path().join("empty-keys");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = write_tls_pair(other.path());
    let port = free_port().to_string();
    for (args, says) in [
        (
            vec!["--api-keys-file", empty.to_str().unwrap()],
            "has no key",
        ),
        (
            vec!["--api-keys-file", "/nonexistent/keys"],
            "cannot read the API keys file",
        ),
        (
            vec!["--tls-cert", &crt, "--tls-key", &other_key],
            "cannot be used together",
        ),
        (
            vec!["--tls-cert", &crt, "--tls-key", "/nonexistent/key"],
            "cannot read",
        ),
        (vec!["--plain-http", "off"], "--plain-http off needs"),
        (
            vec!["--cors-allow-origins", "*,http://a.example"],
            "must be alone",
        ),
    ] {
        let mut full = args.clone();
        full.extend(["--port", &port, "--tls-port", "0", "--log-filter", "off"]);
        let started = Instant::now();
        let out = server().args(&full).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("celestial-server: error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?}");
    }
}
