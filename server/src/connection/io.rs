//! The socket as hyper sees it: every read reports progress (for the timeouts), and hyper's own
//! answers to requests it cannot parse (empty 400, 414 and 431, written before any handler runs)
//! are replaced by the server's JSON errors ([`ProtocolErrors`]). A connection that ends after
//! such an answer closes lingering: it sends FIN and reads what the client still sends for a
//! moment, so the client reads the answer instead of a reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::progress::Progress;
use crate::errors::{ApiError, ErrorBody};

/// How long the server reads (and drops) what a client still sends after an answer that did not
/// need it: a lingering close, or the body of a request refused before its handler ran.
pub const DISCARD_TIME: Duration = Duration::from_secs(1);
/// How much of it the server reads at most.
pub const DISCARD_BYTES: usize = 1 << 20;

/// The JSON answers for the requests hyper's HTTP/1 parser refuses, rendered once.
#[derive(Debug)]
pub struct ProtocolErrors {
    malformed: Bytes,
    uri_too_long: Bytes,
    headers_too_large: Bytes,
}

impl ProtocolErrors {
    /// The answers for a server with these header limits (they appear in the 431 message).
    pub fn new(max_header_bytes: usize, max_headers: usize) -> ProtocolErrors {
        let render = |e: ApiError| -> Bytes {
            serde_json::to_vec(&ErrorBody::from(&e))
                .map(Bytes::from)
                .unwrap_or_default()
        };
        ProtocolErrors {
            malformed: render(ApiError::MalformedRequest),
            uri_too_long: render(ApiError::UriTooLong),
            headers_too_large: render(ApiError::HeadersTooLarge {
                max_bytes: max_header_bytes,
                max_headers,
            }),
        }
    }

    /// The JSON answer replacing `written` when it is one of hyper's automatic error answers (a
    /// complete HTTP/1 head with status 400, 414 or 431 and `content-length: 0`); `None` otherwise.
    pub fn replace(&self, written: &[u8]) -> Option<Bytes> {
        let version = written.get(..9)?;
        if (version != b"HTTP/1.1 " && version != b"HTTP/1.0 ") || !written.ends_with(b"\r\n\r\n") {
            return None;
        }
        let (status, body) = match written.get(9..13)? {
            b"400 " => ("400 Bad Request", &self.malformed),
            b"414 " => ("414 URI Too Long", &self.uri_too_long),
            b"431 " => (
                "431 Request Header Fields Too Large",
                &self.headers_too_large,
            ),
            _ => return None,
        };
        memchr::memmem::find(written, b"\r\ncontent-length: 0\r\n")?;
        let date = header_line(written, b"\r\ndate: ").unwrap_or_default();
        let mut out = Vec::with_capacity(160 + body.len());
        out.extend_from_slice(&written[..9]);
        out.extend_from_slice(status.as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: application/json\r\ncontent-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\nconnection: close");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        Some(Bytes::from(out))
    }
}

/// The line starting with `prefix` (which starts with CRLF), without its final CRLF.
fn header_line<'a>(head: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let start = memchr::memmem::find(head, prefix)?;
    let len = memchr::memmem::find(&head[start + 2..], b"\r\n")?;
    Some(&head[start..start + 2 + len])
}

/// A connection's socket, watched.
pub struct Watched<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    inner: Option<S>,
    progress: Arc<Progress>,
    /// `None`: hyper's error answers pass unchanged (an over-limit connection answers no such).
    errors: Option<Arc<ProtocolErrors>>,
    /// A replacement answer and how much of it is written.
    pending: Option<(Bytes, usize)>,
    /// Close lingering (after an error answer; always for over-limit connections).
    linger: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Watched<S> {
    /// A socket whose hyper error answers become `errors`' JSON answers.
    pub fn new(inner: S, progress: Arc<Progress>, errors: Arc<ProtocolErrors>) -> Watched<S> {
        Watched {
            inner: Some(inner),
            progress,
            errors: Some(errors),
            pending: None,
            linger: false,
        }
    }

    /// A socket that always closes lingering (an over-limit connection answered and closed).
    pub fn lingering(inner: S, progress: Arc<Progress>) -> Watched<S> {
        Watched {
            inner: Some(inner),
            progress,
            errors: None,
            pending: None,
            linger: true,
        }
    }

    fn stream(&mut self) -> io::Result<&mut S> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "socket already closed"))
    }

    /// Write what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = self.pending.take() {
            if done == bytes.len() {
                break;
            }
            let stream = self.stream()?;
            match Pin::new(stream).poll_write(cx, &bytes[done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.pending = Some((bytes, done + n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.pending = Some((bytes, done));
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// hyper's answer to a request that never reached a handler, replaced: only when no request
    /// is in flight on this HTTP/1 connection (hyper writes such answers only then).
    fn replacement(&self, buf: &[u8]) -> Option<Bytes> {
        let errors = self.errors.as_ref()?;
        if self.progress.in_flight() > 0 || self.progress.is_h2() {
            return None;
        }
        errors.replace(buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let stream = this.stream()?;
        ready!(Pin::new(stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.progress.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = this.replacement(buf) {
            this.pending = Some((answer, 0));
            this.linger = true;
            // The bytes are taken over: hyper's flush (or shutdown) writes the rest.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(this.stream()?).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(this.stream()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(this.stream()?).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Watched<S> {
    fn drop(&mut self) {
        if !self.linger {
            return;
        }
        let (Some(stream), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let pending = self.pending.take();
        runtime.spawn(linger(stream, pending));
    }
}

/// Finish writing `pending`, send FIN, then read (and drop) what the client still sends until it
/// closes, for at most [`DISCARD_TIME`] and [`DISCARD_BYTES`].
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, pending: Option<(Bytes, usize)>) {
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        if let Some((bytes, done)) = pending {
            stream.write_all(&bytes[done.min(bytes.len())..]).await?;
        }
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < DISCARD_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 01:00:00 GMT\r\n\r\n";

    #[test]
    fn hyper_error_answers_become_json() {
        let e = ProtocolErrors::new(8192, 50);
        let out = e.replace(HYPER_431).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.ends_with("\r\ndate: Wed, 02 Dec 2026 01:00:00 GMT"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "headers_too_large");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("8192 bytes or 50 header")
        );
        let bad = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let text = String::from_utf8(e.replace(bad).unwrap().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{text}");
        assert!(text.ends_with("\"code\":\"malformed_request\"}"), "{text}");
    }

    #[test]
    fn other_writes_pass_unchanged() {
        let e = ProtocolErrors::new(8192, 100);
        for w in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{\"partial",
            b"{\"error\": \"HTTP/1.1 400 \"}",
            b"",
        ] {
            assert!(e.replace(w).is_none(), "{}", String::from_utf8_lossy(w));
        }
    }

    #[tokio::test]
    async fn the_socket_carries_the_replacement_and_reports_reads() {
        let (client, server) = tokio::io::duplex(4096);
        let progress = Arc::new(Progress::new());
        let errors = Arc::new(ProtocolErrors::new(8192, 100));
        let mut watched = Watched::new(server, Arc::clone(&progress), errors);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(watched.read(&mut buf).await.unwrap() > 0);
        let n = watched.write(HYPER_431).await.unwrap();
        assert_eq!(n, HYPER_431.len(), "hyper sees its bytes written");
        watched.flush().await.unwrap();
        drop(watched);
        drop(client_write);
        let mut got = Vec::new();
        client_read.read_to_end(&mut got).await.unwrap();
        let text = String::from_utf8(got).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        assert!(text.contains("headers_too_large"), "{text}");
    }
}
