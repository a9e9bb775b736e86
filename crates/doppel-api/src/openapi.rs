//! The OpenAPI document of `/api/v1`, generated from the handlers'
//! `#[utoipa::path]` annotations and the types' `ToSchema` derives, and
//! served at `GET /api/v1/openapi.json`. A copy is checked in at
//! `docs/openapi.json`; a test fails when the two differ.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use doppel_model::ApiError;
use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

/// Body of every error answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ApiError,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A token from `POST /api/v1/login`"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Doppel API",
        description = "Doppel's resource-oriented JSON API. Every route but `health`, `login` and \
            `openapi.json` needs `Authorization: Bearer <token>`. Errors answer \
            `{\"error\": ApiError}` with the status their code implies. Long operations answer \
            `202` with their job, which can be polled (`/api/v1/jobs/{job}`, \
            `/api/v1/jobs/{job}/events`) or followed as server-sent events \
            (`/api/v1/jobs/{job}/stream`)."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "engine", description = "The engine itself"),
        (name = "auth", description = "Logging in and API users"),
        (name = "plugins", description = "Installed plugins"),
        (name = "environments", description = "Hosts, their users, repositories and source configs"),
        (name = "datasets", description = "dSources, VDBs, snapshots and mounts"),
        (name = "jobs", description = "Long operations"),
        (name = "policies", description = "Schedules and retention applied to dSources and VDBs, and the scheduler"),
        (name = "webhooks", description = "URLs that receive the engine's events as signed JSON POSTs"),
    )
)]
pub(crate) struct ApiDoc;

/// The OpenAPI document of `/api/v1`.
pub fn openapi() -> Document {
    let mut doc = crate::documented_routes().into_openapi();
    let error = ResponseBuilder::new()
        .description("An error: `{\"error\": ApiError}`, with the status its code implies")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| error.clone().into());
            // OpenAPI requires every response to say something.
            for (status, response) in op.responses.responses.iter_mut() {
                if let RefOr::T(r) = response {
                    if r.description.is_empty() {
                        r.description = match status.as_str() {
                            "200" => "OK",
                            "201" => "Created",
                            "202" => "Accepted: the job doing it",
                            "204" => "Done; no content",
                            _ => "",
                        }
                        .into();
                    }
                }
            }
        }
    }
    doc
}

/// [`openapi`] as pretty JSON with a final newline: what `docs/openapi.json` holds.
pub fn openapi_json() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    s.push('\n');
    s
}

/// This document; needs no token.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "engine", security(()),
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json", body = Object)))]
pub(crate) async fn serve_document() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(openapi_json).as_str(),
    )
}
