//! `/api/v1/webhooks`: administrators register URLs that receive the
//! engine's events; secrets go in and never come back out.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use doppel_engine::Engine;
use doppel_model::{AddWebhook, Webhook, WebhookDelivery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiBody, ApiPath};
use crate::{parse_body, Result};

pub(crate) fn routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, add_webhook))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(test_webhook))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<Webhook>)))]
async fn list_webhooks(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_webhooks()?))
}

/// Adds a webhook: the events it takes (all when none are named) are
/// POSTed to its URL from then on, signed under its secret.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = AddWebhook,
    responses((status = 201, body = Webhook)))]
async fn add_webhook(
    State(engine): State<Arc<Engine>>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: AddWebhook = parse_body(&body)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(engine.add_webhook(req)?),
    ))
}

/// One webhook with its last deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, description = "WEBHOOK-<n> or name")),
    responses((status = 200, body = Webhook)))]
async fn get_webhook(
    State(engine): State<Arc<Engine>>,
    ApiPath(webhook): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_webhook(&webhook)?))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{webhook}", tag = "webhooks",
    params(("webhook" = String, Path, description = "WEBHOOK-<n> or name")),
    responses((status = 200, description = "The deleted webhook", body = Webhook)))]
async fn delete_webhook(
    State(engine): State<Arc<Engine>>,
    ApiPath(webhook): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.delete_webhook(&webhook)?))
}

/// Sends a `ping` event now, once, and answers how the receiver took it
/// (`delivered` on a 2xx answer, else `failed` with the status or error).
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook}/test", tag = "webhooks",
    params(("webhook" = String, Path, description = "WEBHOOK-<n> or name")),
    responses((status = 200, body = WebhookDelivery)))]
async fn test_webhook(
    State(engine): State<Arc<Engine>>,
    ApiPath(webhook): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.test_webhook(&webhook).await?))
}
