//! Helpers of the Swagger-page tests (`tests/tests/swagger_*.rs`): the real server
//! in-process ([`server`]), headless Chromium through chromedriver ([`webdriver`]), nginx as a
//! reverse proxy ([`nginx`]), the page's own controls ([`swagger`]), and a page of another origin
//! calling the API with `fetch` ([`cross_origin`], the CORS tests).

pub mod cross_origin;
pub mod nginx;
pub mod server;
pub mod swagger;
pub mod webdriver;
