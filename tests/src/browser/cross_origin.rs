//! A web page of another origin: a tiny app served from its own loopback port that
//! calls the server's `POST /predict` with `fetch` (multipart `image` drawn on a canvas, the key
//! as `Authorization: Bearer`) and shows what it got, for the CORS tests in a real browser.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::webdriver::Browser;

/// The page: `predict(url, key)` draws an image, posts it and writes `{status, body}` (or
/// `{error}` when the browser refuses the answer) into `#result`.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Another origin</title></head>
<body><h1>A web app on another origin</h1><pre id="result"></pre>
<script>
async function predict(url, key) {
  const out = document.getElementById('result');
  out.textContent = '';
  const canvas = document.createElement('canvas');
  canvas.width = 96; canvas.height = 96;
  const ctx = canvas.getContext('2d');
  const g = ctx.createRadialGradient(48, 48, 4, 48, 48, 44);
  g.addColorStop(0, '#d9b38c'); g.addColorStop(1, '#000');
  ctx.fillStyle = g; ctx.fillRect(0, 0, 96, 96);
  const blob = await new Promise(resolve => canvas.toBlob(resolve, 'image/png'));
  const form = new FormData();
  form.append('image', blob, 'drawn.png');
  const headers = key ? { 'Authorization': 'Bearer ' + key } : {};
  try {
    const r = await fetch(url, { method: 'POST', headers, body: form });
    out.textContent = JSON.stringify({ status: r.status, body: await r.json() });
  } catch (e) {
    out.textContent = JSON.stringify({ error: String(e) });
  }
}
</script></body></html>"#;

/// The page, served on a free loopback port until dropped.
pub struct Page {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Page {
    pub async fn start() -> anyhow::Result<Page> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().route("/", get(|| async { Html(PAGE) }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Page { addr, task })
    }

    /// The page's origin, as the browser sends it in `Origin`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Open the page in `browser`, call `predict(url, key)` and return what it shows.
    pub async fn predict(
        &self,
        browser: &Browser,
        url: &str,
        key: Option<&str>,
    ) -> anyhow::Result<Value> {
        browser
            .client
            .goto(&format!("{}/", self.origin()))
            .await
            .context("open the other origin's page")?;
        browser
            .client
            .execute(
                "predict(arguments[0], arguments[1]); return true;",
                vec![json!(url), json!(key)],
            )
            .await
            .context("call predict() on the page")?;
        let shown = browser
            .wait_js(
                "the page's result",
                "return document.getElementById('result').textContent;",
                vec![],
            )
            .await?;
        let text = shown.as_str().unwrap_or_default();
        serde_json::from_str(text).with_context(|| format!("the page shows {text:?}"))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        self.task.abort();
    }
}
