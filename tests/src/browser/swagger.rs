//! What a person does on the Swagger UI page, step by step, driven in a real browser.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use fantoccini::Locator;
use serde_json::{Value, json};

use super::webdriver::Browser;

/// What the page showed after one Execute of `POST /predict`.
#[derive(Debug)]
pub struct Outcome {
    /// The "Request URL" Swagger UI shows (where the request went).
    pub request_url: String,
    pub status: u16,
    pub body: Value,
    pub screenshot: PathBuf,
    /// From choosing the file to the response being shown.
    pub elapsed_ms: u128,
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
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
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
async fn live_response(
    browser: &Browser,
    block_xpath: &str,
    what: &str,
) -> anyhow::Result<(String, u16, Value)> {
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
    Ok((
        v["url"].as_str().unwrap_or_default().to_string(),
        status,
        body,
    ))
}

fn xpath_js(what: &str) -> String {
    format!(
        "const n = document.evaluate(arguments[0], document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue; {what}"
    )
}

/// Open the Swagger UI at `page_url` and check that it shows the title, version and every route
/// of `doc`. Returns the title text shown; saves a screenshot `<name>-page.png`.
pub async fn open_page(
    browser: &Browser,
    page_url: &str,
    doc: &Value,
) -> anyhow::Result<(String, PathBuf)> {
    let c = &browser.client;
    c.goto(page_url)
        .await
        .with_context(|| format!("open {page_url}"))?;
    let title_el = browser
        .wait_css("the API title", ".information-container .info .title")
        .await?;
    let title_text = title_el.text().await?;
    let title = doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .context("document has no info.title")?;
    let version = doc
        .pointer("/info/version")
        .and_then(Value::as_str)
        .context("document has no info.version")?;
    ensure!(
        title_text.contains(title),
        "page title {title_text:?} does not show the document's title {title:?}"
    );
    ensure!(
        title_text.contains(version),
        "page title {title_text:?} does not show the version {version:?}"
    );
    let ops = operations(doc);
    ensure!(!ops.is_empty(), "the document has no operations");
    for (method, path) in &ops {
        let xp = format!(
            "{}//*[contains(@class, 'opblock-summary-method')]",
            opblock_xpath(method, path)
        );
        let shown = browser
            .wait_js(
                &format!("route {} {path} on the page", method.to_uppercase()),
                &xpath_js("return n ? n.innerText : null;"),
                vec![json!(xp)],
            )
            .await?;
        ensure!(
            shown
                .as_str()
                .map(|s| s.eq_ignore_ascii_case(method))
                .unwrap_or(false),
            "route {path}: the page labels it {shown}, not {method}"
        );
    }
    // Everything the page loaded came from the app itself (vendored Swagger UI: no CDN, works offline).
    let origin = c.current_url().await?.origin().ascii_serialization();
    let loaded = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name);",
            vec![],
        )
        .await?;
    let loaded: Vec<&str> = loaded
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        loaded.iter().any(|u| u.contains("swagger-ui")),
        "the page loaded no Swagger UI assets: {loaded:?}"
    );
    let foreign: Vec<&&str> = loaded
        .iter()
        .filter(|u| !u.starts_with(&format!("{origin}/")))
        .collect();
    ensure!(
        foreign.is_empty(),
        "the page loaded resources from elsewhere than {origin}: {foreign:?}"
    );
    let shot = browser.screenshot("page").await?;
    Ok((title_text, shot))
}

/// The API description as the page renders it (Markdown turned into text).
pub async fn description_text(browser: &Browser) -> anyhow::Result<String> {
    let el = browser
        .wait_css(
            "the API description",
            ".information-container .info .description",
        )
        .await?;
    Ok(el.text().await?)
}

/// Expand `POST /predict`, press "Try it out" and choose the multipart/form-data body.
pub async fn try_out_predict(browser: &Browser) -> anyhow::Result<()> {
    let c = &browser.client;
    let block_xp = opblock_xpath("post", "/predict");
    let block = c
        .find(Locator::XPath(&block_xp))
        .await
        .context("the POST /predict block")?;
    block
        .find(Locator::Css(".opblock-summary-control, .opblock-summary"))
        .await
        .context("the POST /predict summary")?
        .click()
        .await?;
    // "Try it out" (unless the UI is configured with tryItOutEnabled, where the block opens in
    // that mode already and the same button reads "Cancel").
    let try_out = browser
        .wait_css(
            "the \"Try it out\" button",
            ".opblock-post.is-open .try-out__btn",
        )
        .await?;
    if try_out
        .text()
        .await?
        .trim()
        .eq_ignore_ascii_case("try it out")
    {
        try_out.click().await?;
    }
    // The guide's contract (and BentoML's client) is multipart/form-data with a part `image`.
    let select_xp =
        format!("{block_xp}//*[contains(@class, 'opblock-section-request-body')]//select");
    if let Ok(select) = c.find(Locator::XPath(&select_xp)).await {
        select
            .select_by_value("multipart/form-data")
            .await
            .context("choose multipart/form-data")?;
    }
    browser
        .wait_js(
            "the file input of POST /predict",
            &xpath_js("return !!n;"),
            vec![json!(format!("{block_xp}//input[@type='file']"))],
        )
        .await?;
    Ok(())
}

/// In the open `POST /predict` block: clear the previous response, choose `file`, Execute, and
/// read the response the page shows. Saves a screenshot of the block as `<name>-<step>.png`.
pub async fn execute_with_file(
    browser: &Browser,
    file: &Path,
    step: &str,
) -> anyhow::Result<Outcome> {
    let c = &browser.client;
    let t = Instant::now();
    let block_xp = opblock_xpath("post", "/predict");
    if let Ok(clear) = c
        .find(Locator::XPath(&format!(
            "{block_xp}//button[contains(@class, 'btn-clear')]"
        )))
        .await
    {
        clear.click().await?;
        browser
            .wait_js(
                "the previous response to be cleared",
                &xpath_js("return n && !n.querySelector('.live-responses-table');"),
                vec![json!(block_xp)],
            )
            .await?;
    }
    let abs = std::fs::canonicalize(file).with_context(|| format!("{}", file.display()))?;
    let input = c
        .find(Locator::XPath(&format!("{block_xp}//input[@type='file']")))
        .await
        .context("the file input")?;
    input
        .send_keys(&abs.display().to_string())
        .await
        .with_context(|| format!("choose {}", abs.display()))?;
    c.find(Locator::XPath(&format!(
        "{block_xp}//button[contains(@class, 'execute')]"
    )))
    .await
    .context("the Execute button")?
    .click()
    .await?;
    let (request_url, status, body) = live_response(
        browser,
        &block_xp,
        &format!("the response to POST /predict with {}", abs.display()),
    )
    .await?;
    let elapsed_ms = t.elapsed().as_millis();
    let block = c.find(Locator::XPath(&block_xp)).await?;
    let screenshot = browser.element_screenshot(&block, step).await?;
    Ok(Outcome {
        request_url,
        status,
        body,
        screenshot,
        elapsed_ms,
    })
}

/// Press the page's "Authorize" button, enter `key` for the first security scheme the dialog
/// shows (either scheme carries the key), authorize and close the dialog, as a person does. Fails when the
/// page has no "Authorize" button (the document has no security scheme).
pub async fn authorize(browser: &Browser, key: &str) -> anyhow::Result<PathBuf> {
    let c = &browser.client;
    browser
        .wait_css("the \"Authorize\" button", ".auth-wrapper .btn.authorize")
        .await?
        .click()
        .await?;
    let input = browser
        .wait_css(
            "the key field of the first security scheme",
            ".dialog-ux .modal-ux .auth-container input",
        )
        .await?;
    input.send_keys(key).await.context("type the key")?;
    c.find(Locator::Css(
        ".dialog-ux .modal-ux .auth-container .auth-btn-wrapper .btn.authorize",
    ))
    .await
    .context("the dialog's Authorize button")?
    .click()
    .await?;
    // Authorized: the scheme's button now reads "Logout".
    browser
        .wait_js(
            "the scheme to show it is authorized",
            "const b = document.querySelector('.dialog-ux .modal-ux .auth-container .auth-btn-wrapper .btn'); \
             return b && /logout/i.test(b.innerText);",
            vec![],
        )
        .await?;
    let shot = browser.screenshot("authorized").await?;
    c.find(Locator::Css(
        ".dialog-ux .modal-ux .btn-done, .dialog-ux .modal-ux .close-modal",
    ))
    .await
    .context("the dialog's Close button")?
    .click()
    .await?;
    Ok(shot)
}
