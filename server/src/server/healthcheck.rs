//! The `healthcheck` subcommand's probe: GET /readyz over a blocking HTTP/1.1 connection (plain or
//! TLS), so a container's health check needs no other program.

use std::time::Duration;

use crate::connection::tls;

/// `celestial-server healthcheck`: GET /readyz over plain HTTP/1.1; true when it answers 200.
pub fn healthcheck(address: &str, timeout: Duration) -> Result<bool, String> {
    probe(address, timeout, false)
}

/// `celestial-server healthcheck [--tls]`: GET /readyz over HTTP/1.1, over TLS with `tls` (any
/// certificate accepted); true when it answers 200.
pub fn probe(address: &str, timeout: Duration, tls: bool) -> Result<bool, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {address}"))?;
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn ReadWrite> = if tls {
        let config = tls::probe_client_config().map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Box::new(rustls::StreamOwned::new(conn, stream))
    } else {
        Box::new(stream)
    };
    write!(stream, "GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: celestial-healthcheck\r\n\r\n").map_err(|e| format!("cannot send request: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("cannot read response: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&got);
    Ok(status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200"))
}

/// A blocking stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
