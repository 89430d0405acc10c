//! A tiny static HTTP server (binary `testenv-httpd`): the payload of the container smoke tests.
//! The end-to-end tests put the binary built on the host into an image on the synthesized
//! distroless base (`celestial_e2e::httpd::image_context`), push it to the loopback registry, and
//! podman or the real node pulls and runs it; it answers real HTTP.
//!
//! `GET /healthz` answers `ok`; `GET /PATH` serves `ROOT/PATH` (`index.html` for directories);
//! paths leaving ROOT, and anything that is not a regular file, answer 404.

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// Errors of the static server.
#[derive(Debug, thiserror::Error)]
pub enum HttpdError {
    /// Serving failed.
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Maps a request path to a file below `root`, refusing anything that leaves it.
pub fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in Path::new(request_path.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

async fn handle(State(root): State<PathBuf>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n").into_response();
    }
    if uri.path() == "/healthz" {
        return "ok\n".into_response();
    }
    let Some(mut path) = resolve(&root, uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => {}
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = Response::new(if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(bytes)
            });
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            r
        }
        Err(e) => (
            StatusCode::FORBIDDEN,
            format!("cannot read: {}\n", e.kind()),
        )
            .into_response(),
    }
}

/// Serves `root` on `listener` until `shutdown` resolves.
pub async fn run(
    root: PathBuf,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpdError> {
    let app = Router::new().fallback(handle).with_state(root);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_below_root() {
        let root = Path::new("/srv/www");
        assert_eq!(
            resolve(root, "/a/b.txt").unwrap(),
            Path::new("/srv/www/a/b.txt")
        );
        assert_eq!(resolve(root, "/").unwrap(), Path::new("/srv/www"));
        assert_eq!(resolve(root, "/./x").unwrap(), Path::new("/srv/www/x"));
        assert!(resolve(root, "/../etc/passwd").is_none());
        assert!(resolve(root, "/a/../../etc").is_none());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("i.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.bin")), "application/octet-stream");
    }
}
