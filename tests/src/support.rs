//! Small helpers of every kind of test: free loopback ports, unique names, a plain HTTP client.

use std::time::Duration;

/// A loopback port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A name no other test run uses: `PREFIX-<pid>-<nanoseconds>`.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An HTTP client for the tests' loopback traffic: no proxy from the environment, `timeout` per
/// request.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("a plain-HTTP client builds")
}
