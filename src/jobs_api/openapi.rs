//! The OpenAPI 3 document of the Jobs API, generated from the handlers and the wire types.
//! `docs/openapi.json` is this document, committed; a test fails when they drift apart.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;
use super::wire;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "datajob-operator Jobs API",
        description = "The seed's Jobs REST API, served over DataJobs. The Bearer token is the \
                       caller's Kubernetes credential; every call is made to the Kubernetes API \
                       server with it. Errors share one JSON shape (ErrorBody).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        handlers::list_jobs,
        handlers::get_job,
        handlers::create_job,
        handlers::request_cancellation,
        handlers::cancel,
    ),
    components(schemas(wire::Job, wire::ErrorBody, wire::ErrorCode)),
    modifiers(&BearerAuth),
    tags((name = "jobs", description = "Data jobs: create, read, request cancellation, cancel"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A Kubernetes token of the caller (ServiceAccount token, OIDC id token, \
                         ...): `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as served at `/v1/openapi.json` and committed as `docs/openapi.json`.
pub fn document_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut text = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
