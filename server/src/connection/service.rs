//! The service hyper calls for each request of a connection: it counts the request in flight until
//! its answer is sent ([`Tracked`]), marks HTTP/1 answers `Connection: close` while the server
//! drains, and reads away a request body a handler answered without reading ([`Unread`]), so
//! that an early answer (a 429 before the upload arrived, a 404 to a POST) keeps the connection
//! open instead of forcing the client to reconnect. An answer that closes its connection (a 408
//! to a stalled upload, any answer while draining) drops the rest of the body instead: reading it
//! would keep the connection, and the stalled client, for the whole read-away budget.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, Version, header};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;

use super::progress::Progress;

/// What every connection's service needs to know about the server.
pub trait ServerView: Send + Sync + 'static {
    /// Whether answers should close their HTTP/1 connection (the server is draining).
    fn closing_connections(&self) -> bool;
    /// How much of an unread request body is read away, and for how long at most.
    fn unread_budget(&self) -> (u64, Duration);
}

/// The service of one connection.
pub struct ConnService<V: ServerView> {
    router: Router,
    progress: Arc<Progress>,
    server: Arc<V>,
    /// One for the connection: hyper serves an HTTP/1 connection's requests one after the other,
    /// and the next head is not read before the last body ended or was dropped.
    leftover: Arc<Leftover>,
}

impl<V: ServerView> ConnService<V> {
    pub fn new(router: Router, progress: Arc<Progress>, server: Arc<V>) -> ConnService<V> {
        let (max, within) = server.unread_budget();
        ConnService {
            router,
            progress,
            server,
            leftover: Arc::new(Leftover::new(max, within)),
        }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

impl<V: ServerView> hyper::service::Service<Request<Incoming>> for ConnService<V> {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, req: Request<Incoming>) -> Answer {
        let h1 = req.version() < Version::HTTP_2;
        let guard = InFlight::start(Arc::clone(&self.progress), !h1);
        let (req, leftover) = if h1 {
            let leftover = Arc::clone(&self.leftover);
            leftover.start();
            let body = |b| Body::new(Unread::new(b, Arc::clone(&leftover)));
            (req.map(body), Some(leftover))
        } else {
            (req.map(Body::new), None)
        };
        let router = self.router.clone();
        let server = Arc::clone(&self.server);
        Box::pin(async move {
            let mut resp = router.oneshot(req).await?;
            if h1 && server.closing_connections() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let Some(leftover) = leftover {
                leftover.decide(!closes(&resp));
            }
            Ok(resp.map(|inner| Tracked {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A request counted in flight on its connection until dropped.
struct InFlight(Arc<Progress>);

impl InFlight {
    fn start(progress: Arc<Progress>, h2: bool) -> InFlight {
        progress.request_started(h2);
        InFlight(progress)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// An answer's body that keeps its request in flight until hyper has sent (and dropped) it.
pub struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether an answer ends its HTTP/1 connection.
fn closes<B>(resp: &Response<B>) -> bool {
    resp.headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// What becomes of a request body dropped before its end. The handler usually drops it before its
/// answer exists, so the body waits here until the service has seen the answer: read away (at
/// most `max` bytes within `within`) if the connection stays open, dropped if it closes.
struct Leftover {
    max: u64,
    within: Duration,
    state: Mutex<LeftoverState>,
}

enum LeftoverState {
    Undecided,
    Parked(Incoming),
    Decided { keep_connection: bool },
}

impl Leftover {
    fn new(max: u64, within: Duration) -> Leftover {
        Leftover {
            max,
            within,
            state: Mutex::new(LeftoverState::Undecided),
        }
    }

    /// A new request: its answer is not known yet.
    fn start(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = LeftoverState::Undecided;
    }

    /// A body dropped before its end (by its [`Unread`]).
    fn left(&self, body: Incoming) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            LeftoverState::Undecided => *state = LeftoverState::Parked(body),
            LeftoverState::Decided {
                keep_connection: true,
            } => self.read_away(body),
            _ => {}
        }
    }

    /// The answer is known: `keep_connection` when it leaves the connection open.
    fn decide(&self, keep_connection: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = std::mem::replace(&mut *state, LeftoverState::Decided { keep_connection });
        if let (LeftoverState::Parked(body), true) = (before, keep_connection) {
            self.read_away(body);
        }
    }

    fn read_away(&self, body: Incoming) {
        // A body declared longer than the budget is not worth reading: the connection closes.
        if body.size_hint().lower() > self.max {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (max, within) = (self.max, self.within);
        runtime.spawn(async move {
            let _ = tokio::time::timeout(within, discard(body, max)).await;
        });
    }
}

/// An HTTP/1 request body that, dropped before its end, goes to its request's [`Leftover`].
struct Unread {
    inner: Option<Incoming>,
    leftover: Arc<Leftover>,
}

impl Unread {
    fn new(inner: Incoming, leftover: Arc<Leftover>) -> Unread {
        Unread {
            inner: Some(inner),
            leftover,
        }
    }
}

impl HttpBody for Unread {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        match self.inner.take() {
            Some(body) if !body.is_end_stream() => self.leftover.left(body),
            _ => {}
        }
    }
}

/// Read `body` to its end or until more than `max` bytes came.
async fn discard(mut body: Incoming, max: u64) {
    let mut seen = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
            if seen > max {
                return;
            }
        }
    }
}
