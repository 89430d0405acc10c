//! A scripted Kubernetes API server: a `tower-test` mock service behind a real `kube::Client`, so
//! the kube/ code runs unchanged (its requests, kube's watcher and its backoff) against answers a
//! test writes down.
//!
//! A [`Scenario`] is the list of requests the code is expected to make, in order, each with its
//! answer: a status and a JSON body, or a watch stream (events at given times, then the stream
//! stays open or ends). The order is kept per URL path: the deployer follows a Deployment, its
//! ReplicaSets and its pods at once, and those requests interleave as their answers arrive, while
//! each one's list, watch and re-list come in a fixed order. A request that is not the next one
//! expected on its path is answered with a 500 and reported by [`ApiServer::verify`], which also
//! reports expected requests that never came.
//!
//! Watch events are timed on tokio's clock: under `#[tokio::test(start_paused = true)]` the clock
//! jumps to the next event (or deadline, or backoff) as soon as everything waits, so a scenario
//! that spans minutes runs in milliseconds, and in the same order every time.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use crate::kube::cluster::Cluster;

/// The namespace the scripted cluster's client defaults to.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A response body that may arrive in parts over time (a watch).
type StreamedBody = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// How a scripted watch ends once its events are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The connection stays open and quiet (the code under test decides when to stop).
    Open,
    /// The API server closes the stream (as at the end of its watch timeout, or a restart).
    Close,
}

/// The answer to one expected request.
#[derive(Debug, Clone)]
enum Reply {
    /// A status and a JSON body, the body sent after a delay (a slow answer).
    Json(u16, Value, Duration),
    /// 200 and a plain-text body (a server's `/metrics` through the pod proxy).
    Text(String),
    Watch {
        events: Vec<(Duration, Value)>,
        end: End,
    },
    /// No answer: the connection is refused (an API server that is down or restarting).
    Refused,
}

/// One expected request (method, path, query parameters that must be there or must not) and its
/// answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    absent: Vec<String>,
    reply: Option<Reply>,
}

impl Exchange {
    /// The request must carry the query parameter `key=value`.
    pub fn query(&mut self, key: &str, value: &str) -> &mut Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Answers with `status` and the JSON `body`.
    pub fn reply(&mut self, status: u16, body: Value) {
        self.reply = Some(Reply::Json(status, body, Duration::ZERO));
    }

    /// Answers 200 with the plain text `body`.
    pub fn reply_text(&mut self, body: &str) {
        self.reply = Some(Reply::Text(body.into()));
    }

    /// Answers with `status` and the JSON `body`, `after` the request came.
    pub fn reply_after(&mut self, after: Duration, status: u16, body: Value) {
        self.reply = Some(Reply::Json(status, body, after));
    }

    /// Refuses the connection instead of answering (the API server is down).
    pub fn refuse(&mut self) {
        self.reply = Some(Reply::Refused);
    }

    /// Answers with a watch stream: each event at its time after the watch started (as kube
    /// reads them, one JSON object a line), then `end`.
    pub fn stream(&mut self, events: Vec<(Duration, Value)>, end: End) {
        self.reply = Some(Reply::Watch { events, end });
    }

    fn matches(&self, method: &Method, query: &[(String, String)]) -> bool {
        *method == self.method
            && self.query.iter().all(|q| query.contains(q))
            && self
                .absent
                .iter()
                .all(|k| query.iter().all(|(q, _)| q != k))
    }

    fn describe(&self) -> String {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} {}?{}", self.method, self.path, query.join("&"))
    }
}

/// The requests a test expects, in order per path, with their answers.
#[derive(Debug, Default)]
pub struct Scenario {
    exchanges: Vec<Exchange>,
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    /// Expects a `method` request for `path`.
    pub fn on(&mut self, method: Method, path: &str) -> &mut Exchange {
        self.exchanges.push(Exchange {
            method,
            path: path.into(),
            query: Vec::new(),
            absent: Vec::new(),
            reply: None,
        });
        self.exchanges.last_mut().expect("just pushed")
    }

    /// Expects a GET of `path` that is not a watch (a get, a list, a discovery).
    pub fn get(&mut self, path: &str) -> &mut Exchange {
        let e = self.on(Method::GET, path);
        e.absent.push("watch".into());
        e
    }

    /// Expects a watch of `path` from `resource_version`.
    pub fn watch(&mut self, path: &str, resource_version: &str) -> &mut Exchange {
        self.on(Method::GET, path)
            .query("watch", "true")
            .query("resourceVersion", resource_version)
    }

    /// Starts answering: a cluster whose client talks to this scenario, and the server to verify.
    pub fn serve(self) -> (Cluster, ApiServer) {
        let mut lanes: HashMap<String, VecDeque<Exchange>> = HashMap::new();
        for e in self.exchanges {
            assert!(e.reply.is_some(), "{}: no reply scripted", e.describe());
            lanes.entry(e.path.clone()).or_default().push_back(e);
        }
        let state = Arc::new(Mutex::new(State {
            lanes,
            ..State::default()
        }));
        let (service, handle) = mock::pair::<Request<Body>, Response<StreamedBody>>();
        let task = tokio::spawn(answer_all(handle, state.clone()));
        let cluster = Cluster {
            client: kube::Client::new(service, DEFAULT_NAMESPACE),
            namespace: DEFAULT_NAMESPACE.into(),
            url: "https://scripted.invalid".into(),
        };
        (cluster, ApiServer { state, task })
    }
}

/// A request the code made.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
    pub headers: http::HeaderMap,
}

#[derive(Debug, Default)]
struct State {
    lanes: HashMap<String, VecDeque<Exchange>>,
    seen: Vec<Seen>,
    unexpected: Vec<String>,
}

/// The running scripted API server (stops when dropped).
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Panics, listing them, when a request was not the one expected, or an expected one is
    /// still to come.
    pub fn verify(&self) {
        let state = self.state.lock().expect("not poisoned");
        let mut missing: Vec<String> = state
            .lanes
            .values()
            .flatten()
            .map(Exchange::describe)
            .collect();
        missing.sort();
        let seen: Vec<String> = state
            .seen
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect();
        assert!(
            state.unexpected.is_empty() && missing.is_empty(),
            "unexpected requests: {:#?}\nexpected but not made: {missing:#?}\nall requests: {seen:#?}",
            state.unexpected
        );
    }

    /// The requests made so far with `method` whose path is `path`.
    pub fn requests(&self, method: Method, path: &str) -> Vec<Seen> {
        let state = self.state.lock().expect("not poisoned");
        state
            .seen
            .iter()
            .filter(|s| s.method == method && s.uri.split('?').next() == Some(path))
            .cloned()
            .collect()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers every request the client sends, until the client is gone.
async fn answer_all(
    mut handle: mock::Handle<Request<Body>, Response<StreamedBody>>,
    state: Arc<Mutex<State>>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match state.lock().expect("not poisoned").answer(&parts, body) {
            Reply::Refused => send.send_error(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "tcp connect error: Connection refused (os error 111)",
            )),
            reply => send.send_response(respond(reply)),
        }
    }
}

impl State {
    /// The scripted reply to a request, or a 500 that says what was expected instead.
    fn answer(&mut self, parts: &http::request::Parts, body: Value) -> Reply {
        let uri = parts.uri.to_string();
        let path = parts.uri.path().to_string();
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        self.seen.push(Seen {
            method: parts.method.clone(),
            uri: uri.clone(),
            body,
            headers: parts.headers.clone(),
        });
        let lane = self.lanes.get_mut(&path);
        let problem = match lane.as_ref().and_then(|l| l.front()) {
            Some(next) if next.matches(&parts.method, &query) => {
                let next = lane.and_then(VecDeque::pop_front).expect("just seen");
                return next.reply.expect("checked by serve");
            }
            Some(next) => format!("{} {uri} (expected {})", parts.method, next.describe()),
            None => format!(
                "{} {uri} (nothing more expected on this path)",
                parts.method
            ),
        };
        self.unexpected.push(problem.clone());
        Reply::Json(500, status(500, "InternalError", &problem), Duration::ZERO)
    }
}

/// A `Status` object, as the API server answers errors.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

fn respond(reply: Reply) -> Response<StreamedBody> {
    let content_type = match reply {
        Reply::Text(_) => "text/plain; version=0.0.4",
        _ => "application/json",
    };
    let (code, body): (u16, BoxStream<'static, _>) = match reply {
        Reply::Text(text) => (
            200,
            stream::once(async { Ok(Frame::data(Bytes::from(text))) }).boxed(),
        ),
        Reply::Json(code, value, after) => {
            let bytes = Bytes::from(serde_json::to_vec(&value).expect("JSON serializes"));
            let body = async move {
                tokio::time::sleep(after).await;
                Ok(Frame::data(bytes))
            };
            (code, stream::once(body).boxed())
        }
        Reply::Refused => unreachable!("answered without a response"),
        Reply::Watch { events, end } => {
            let start = tokio::time::Instant::now();
            let timed = stream::iter(events).then(move |(at, event)| async move {
                tokio::time::sleep_until(start + at).await;
                let mut line = serde_json::to_vec(&event).expect("JSON serializes");
                line.push(b'\n');
                Ok(Frame::data(Bytes::from(line)))
            });
            let events = match end {
                End::Open => timed.chain(stream::pending()).boxed(),
                End::Close => timed.boxed(),
            };
            (200, events)
        }
    };
    Response::builder()
        .status(StatusCode::from_u16(code).expect("a valid status"))
        .header("content-type", content_type)
        .body(StreamBody::new(body))
        .expect("a valid response")
}

/// The fixture itself: a request not expected (another path, or other query parameters) and one
/// expected but never made each fail the verification, which names them.
#[tokio::test(start_paused = true)]
async fn unexpected_and_missing_requests_fail_verification() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};

    let pods = "/api/v1/namespaces/prod/pods";
    let mut s = Scenario::new();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}});
    s.get(&format!("{pods}/a")).reply(200, pod);
    s.get(&format!("{pods}/b")).reply(200, json!({}));
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
    s.get(pods).query("labelSelector", "app=a").reply(200, list);
    let (cluster, server) = s.serve();
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), "prod");
    api.get("a").await.expect("scripted");
    api.get("c").await.expect_err("not scripted");
    let other = ListParams::default().labels("app=b");
    api.list(&other).await.expect_err("other query parameters");
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.verify()));
    let panic = verdict.expect_err("the verification fails");
    let message = panic.downcast_ref::<String>().expect("a message");
    for part in [
        "GET /api/v1/namespaces/prod/pods/c (nothing more expected on this path)",
        "GET /api/v1/namespaces/prod/pods?&labelSelector=app%3Db (expected GET /api/v1/namespaces/prod/pods?labelSelector=app=a)",
        "GET /api/v1/namespaces/prod/pods/b?",
    ] {
        assert!(message.contains(part), "{part} in {message}");
    }
}
