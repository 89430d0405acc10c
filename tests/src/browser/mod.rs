//! Helpers of the Swagger-page tests (`tests/tests/swagger_*.rs`, issue 7): the real server
//! in-process ([`server`]), headless Chromium through chromedriver ([`webdriver`]), nginx as a
//! reverse proxy ([`nginx`]), and the page's own controls ([`swagger`]).

pub mod nginx;
pub mod server;
pub mod swagger;
pub mod webdriver;
