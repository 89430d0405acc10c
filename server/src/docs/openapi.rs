//! The OpenAPI 3.1 document of `/docs.json`, generated from the served model with utoipa's
//! builders: the description ([`super::description`]), then one path per documented route
//! ([`super::operations`]) and the component schemas ([`super::components`]).

use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, Paths, PathsBuilder, Tag};

use super::common::{error_response, example_prediction};
use super::components::components;
use super::description::{DocLimits, description, labels_md};
use super::{operations, v2};
use crate::auth::{API_KEY_HEADER, BEARER};
use crate::errors::ErrorCode;
use crate::model::ModelSpec;
use crate::routes;

/// The names of the two security schemes (the Swagger page's "Authorize" dialog shows both).
pub const SECURITY_SCHEMES: [&str; 2] = ["bearer", "api_key"];

/// Mark the operations of `protected` routes as needing a key (either scheme), with their 401.
fn secure(paths: &mut Paths, protected: &[&str]) {
    let unauthorized = error_response(
        &format!(
            "No valid API key: send `Authorization: {BEARER} <key>` or `{API_KEY_HEADER}: <key>` \
             (see `WWW-Authenticate`). Checked before the body is read."
        ),
        &[
            ErrorCode::ApiKeyMissing,
            ErrorCode::ApiKeyInvalid,
            ErrorCode::ApiKeyMalformed,
        ],
    );
    for route in protected {
        let Some(item) = paths.paths.get_mut(*route) else {
            continue;
        };
        let ops: [&mut Option<Operation>; 2] = [&mut item.get, &mut item.post];
        for op in ops.into_iter().flatten() {
            op.security = Some(
                SECURITY_SCHEMES
                    .iter()
                    .map(|s| SecurityRequirement::new(*s, Vec::<String>::new()))
                    .collect(),
            );
            op.responses
                .responses
                .insert("401".into(), unauthorized.clone().into());
        }
    }
}

/// The two ways to send a key, as OpenAPI security schemes.
fn security_schemes() -> [(&'static str, SecurityScheme); 2] {
    [
        (
            SECURITY_SCHEMES[0],
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!(
                        "An API key as `Authorization: {BEARER} <key>` (what BentoML's client sends with `token=`)."
                    )))
                    .build(),
            ),
        ),
        (
            SECURITY_SCHEMES[1],
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                API_KEY_HEADER.to_string(),
                format!("An API key as `{API_KEY_HEADER}: <key>`."),
            ))),
        ),
    ]
}

/// Build the OpenAPI document for the served model (no API keys).
pub fn openapi(spec: &ModelSpec, limits: &DocLimits) -> OpenApi {
    openapi_secured(spec, limits, &[])
}

/// Build the OpenAPI document for the served model; the operations of `protected` routes need an
/// API key (none: keys are off, and the document has no security scheme).
pub fn openapi_secured(spec: &ModelSpec, limits: &DocLimits, protected: &[&str]) -> OpenApi {
    let labels_md = labels_md(spec);
    let example = example_prediction(spec);
    let get = |op| PathItem::new(HttpMethod::Get, op);
    let paths = PathsBuilder::new()
        .path(
            routes::PREDICT,
            PathItem::new(HttpMethod::Post, operations::predict(&labels_md, &example)),
        )
        .path(
            routes::PREDICT_BATCH,
            PathItem::new(
                HttpMethod::Post,
                operations::predict_batch(limits.max_batch, &example),
            ),
        )
        .path(routes::LIVEZ, get(operations::livez()))
        .path(routes::READYZ, get(operations::readyz()))
        .path(routes::HEALTHZ, get(operations::healthz()))
        .path(routes::METRICS, get(operations::metrics()))
        .path(routes::MODEL, get(operations::model()))
        .path(routes::MODEL_DRIFT, get(operations::model_drift()))
        .path(routes::SCHEMA_JSON, get(operations::schema_json()))
        .path(routes::DOCS_JSON, get(operations::docs_json()))
        .path(routes::DOCS, get(operations::docs_ui()));
    let paths = v2::paths(spec, limits.max_batch)
        .into_iter()
        .fold(paths, |paths, (route, item)| paths.path(route, item));
    let mut paths = paths.build();
    let mut components = components(spec, &example);
    for (name, schema) in v2::schemas(spec) {
        components.schemas.insert(name.into(), schema.into());
    }
    if !protected.is_empty() {
        secure(&mut paths, protected);
        for (name, scheme) in security_schemes() {
            components
                .security_schemes
                .insert(name.into(), scheme.into());
        }
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Celestial bodies classifier")
                .version(spec.version.clone())
                .description(Some(description(spec, limits, !protected.is_empty())))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .tags(Some(
            operations::TAGS
                .into_iter()
                .chain([v2::TAG])
                .map(Tag::new)
                .collect::<Vec<_>>(),
        ))
        .build()
}
