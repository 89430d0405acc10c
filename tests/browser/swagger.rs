//! What a person does on the Swagger UI page, step by step, driven in a real browser.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use fantoccini::Locator;
use serde_json::{Value, json};

use crate::webdriver::Browser;

/// Timings of one walk through the page, printed by the tests (not asserted).
#[derive(Debug, Default)]
pub struct Timings {
    pub page_ready_ms: u128,
    pub predict_ms: u128,
    pub bad_input_ms: u128,
}

/// What the browser saw.
#[derive(Debug)]
pub struct Seen {
    pub title_text: String,
    pub predict_request_url: String,
    pub predict_status: u16,
    pub predict_body: Value,
    pub bad_request_url: String,
    pub bad_status: u16,
    pub bad_body: Value,
    pub screenshots: Vec<PathBuf>,
    pub timings: Timings,
}

/// Resolve a `$ref` like `#/components/schemas/X` inside `doc`.
pub fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|ptr| doc.pointer(ptr))
            .unwrap_or(&Value::Null),
        None => v,
    }
}

/// Every `(METHOD, path)` in the document.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
                if item.get(method).is_some() {
                    ops.push((method.to_string(), path.clone()));
                }
            }
        }
    }
    ops
}

/// XPath of the operation block for `method path`.
fn opblock_xpath(method: &str, path: &str) -> String {
    format!(
        "//div[contains(concat(' ', normalize-space(@class), ' '), ' opblock-{method} ')]\
         [.//*[contains(@class, 'opblock-summary-path') and @data-path='{path}']]"
    )
}

/// Read the live response (status code, body) shown under an executed operation.
async fn live_response(browser: &Browser, block_xpath: &str, what: &str) -> anyhow::Result<(String, u16, Value)> {
    let v = browser
        .wait_js(
            what,
            r#"
            const block = document.evaluate(arguments[0], document, null,
                XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
            if (!block) return null;
            const row = block.querySelector('.live-responses-table tbody .response');
            if (!row) return null;
            const status = row.querySelector('.response-col_status');
            const body = row.querySelector('.response-col_description .highlight-code pre, .response-col_description .highlight-code code');
            const url = block.querySelector('.request-url pre') || block.querySelector('.request-url');
            if (!status || !body) return null;
            return { status: status.innerText.trim(), body: body.innerText,
                     url: url ? url.innerText.trim() : '' };
            "#,
            vec![json!(block_xpath)],
        )
        .await?;
    let status_text = v["status"].as_str().unwrap_or_default();
    let status: u16 = status_text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{what}: status cell is {status_text:?}, not an HTTP status"))?;
    let body_text = v["body"].as_str().unwrap_or_default();
    let body: Value = serde_json::from_str(body_text)
        .with_context(|| format!("{what}: response body shown is not JSON: {body_text:?}"))?;
    Ok((v["url"].as_str().unwrap_or_default().to_string(), status, body))
}

/// Walk the Swagger UI at `page_url` the way a person does: see the title, version and every
/// route of `doc`; open `POST /predict`, "Try it out", choose `image`, Execute; then choose
/// `not_image`, Execute. Returns what the page showed; screenshots go to tests/artifacts/.
pub async fn walk(browser: &Browser, page_url: &str, doc: &Value, image: &Path, not_image: &Path) -> anyhow::Result<Seen> {
    let c = &browser.client;
    let mut screenshots = Vec::new();
    let mut timings = Timings::default();

    // 1. The page: title, version, every route.
    let t = Instant::now();
    c.goto(page_url).await.with_context(|| format!("open {page_url}"))?;
    let title_el = browser.wait_css("the API title", ".information-container .info .title").await?;
    let title_text = title_el.text().await?;
    let title = doc.pointer("/info/title").and_then(Value::as_str).context("document has no info.title")?;
    let version = doc.pointer("/info/version").and_then(Value::as_str).context("document has no info.version")?;
    ensure!(title_text.contains(title), "page title {title_text:?} does not show the document's title {title:?}");
    ensure!(title_text.contains(version), "page title {title_text:?} does not show the version {version:?}");
    let ops = operations(doc);
    ensure!(!ops.is_empty(), "the document has no operations");
    for (method, path) in &ops {
        let xp = format!("{}//*[contains(@class, 'opblock-summary-method')]", opblock_xpath(method, path));
        let el = browser
            .wait_js(
                &format!("route {} {path} on the page", method.to_uppercase()),
                "const n = document.evaluate(arguments[0], document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue; return n ? n.innerText : null;",
                vec![json!(xp)],
            )
            .await?;
        ensure!(
            el.as_str().map(|s| s.eq_ignore_ascii_case(method)).unwrap_or(false),
            "route {path}: method label {el} is not {method}"
        );
    }
    timings.page_ready_ms = t.elapsed().as_millis();
    screenshots.push(browser.screenshot("page").await?);

    // 2. POST /predict: expand, "Try it out", choose the image, Execute.
    let t = Instant::now();
    let block_xp = opblock_xpath("post", "/predict");
    let block = c.find(Locator::XPath(&block_xp)).await.context("the POST /predict block")?;
    block
        .find(Locator::Css(".opblock-summary-control, .opblock-summary"))
        .await
        .context("POST /predict summary")?
        .click()
        .await?;
    let try_out = browser.wait_css("the \"Try it out\" button", ".opblock-post.is-open .try-out__btn").await?;
    try_out.click().await?;
    // Choose multipart/form-data (the guide's contract) when the body offers several types.
    let select_xp = format!("{block_xp}//*[contains(@class, 'opblock-section-request-body')]//select");
    if let Ok(select) = c.find(Locator::XPath(&select_xp)).await {
        select.select_by_value("multipart/form-data").await.context("choose multipart/form-data")?;
    }
    let file_xp = format!("{block_xp}//input[@type='file']");
    browser
        .wait_js(
            "the file input of POST /predict",
            "return !!document.evaluate(arguments[0], document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;",
            vec![json!(file_xp)],
        )
        .await?;
    let file_input = c.find(Locator::XPath(&file_xp)).await?;
    let image_abs = std::fs::canonicalize(image).with_context(|| format!("{}", image.display()))?;
    file_input.send_keys(&image_abs.display().to_string()).await.context("choose the image file")?;
    let execute_xp = format!("{block_xp}//button[contains(@class, 'execute')]");
    c.find(Locator::XPath(&execute_xp)).await.context("the Execute button")?.click().await?;
    let (predict_request_url, predict_status, predict_body) =
        live_response(browser, &block_xp, "the response to POST /predict with an image").await?;
    timings.predict_ms = t.elapsed().as_millis();
    let block = c.find(Locator::XPath(&block_xp)).await?;
    screenshots.push(browser.element_screenshot(&block, "predict").await?);

    // 3. The same with a file that is not an image.
    let t = Instant::now();
    if let Ok(clear) = c.find(Locator::XPath(&format!("{block_xp}//button[contains(@class, 'btn-clear')]"))).await {
        clear.click().await?;
        browser
            .wait_js(
                "the previous response to be cleared",
                "const b = document.evaluate(arguments[0], document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue; return b && !b.querySelector('.live-responses-table');",
                vec![json!(block_xp)],
            )
            .await?;
    }
    let not_image_abs = std::fs::canonicalize(not_image)?;
    let file_input = c.find(Locator::XPath(&file_xp)).await?;
    file_input.send_keys(&not_image_abs.display().to_string()).await.context("choose the non-image file")?;
    c.find(Locator::XPath(&execute_xp)).await?.click().await?;
    let (bad_request_url, bad_status, bad_body) =
        live_response(browser, &block_xp, "the response to POST /predict with a non-image").await?;
    timings.bad_input_ms = t.elapsed().as_millis();
    let block = c.find(Locator::XPath(&block_xp)).await?;
    screenshots.push(browser.element_screenshot(&block, "bad-input").await?);

    Ok(Seen {
        title_text,
        predict_request_url,
        predict_status,
        predict_body,
        bad_request_url,
        bad_status,
        bad_body,
        screenshots,
        timings,
    })
}
