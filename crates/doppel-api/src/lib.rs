//! Doppel's HTTP JSON API under `/api/v1`.
//!
//! Handlers only parse requests into engine calls and engine answers into
//! JSON; every error leaves as `{"error": ApiError}` with the status its code
//! implies. Architecture invariant: this is the only crate that knows HTTP.

mod datasets;
mod auth;
mod delphix;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use doppel_engine::{Engine, EngineError, ParameterDefinition, PluginInvocation};
use doppel_model::{ApiError, ErrorCode, PluginLogLevel};
use serde::Deserialize;
use serde_json::{json, Value};

/// Largest plugin artifact accepted; real ones are a few MiB.
const MAX_ARTIFACT_BYTES: usize = 256 * 1024 * 1024;

/// An error on its way out.
pub struct Failure(ApiError);

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        if e.code() == ErrorCode::Internal {
            tracing::error!(error = %e, "request failed");
        }
        Failure(e.to_api())
    }
}

impl Failure {
    fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Failure(ApiError {
            code: ErrorCode::InvalidInput,
            message: format!("{field}: {reason}"),
            action: None,
            details: Vec::new(),
            output: None,
        })
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "error": self.0 }))).into_response()
    }
}

pub(crate) type Result<T> = std::result::Result<T, Failure>;

/// Parses a JSON body ourselves so malformed input gets our error shape.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Failure::invalid("body", e))
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route(
            "/api/v1/plugins",
            get(list_plugins).post(install_plugin).layer(DefaultBodyLimit::max(MAX_ARTIFACT_BYTES)),
        )
        .route("/api/v1/plugins/{plugin}", get(get_plugin).delete(delete_plugin))
        .route("/api/v1/plugins/{plugin}/definition", get(plugin_definition))
        .route("/api/v1/plugins/{plugin}/logs", get(plugin_logs))
        .route("/api/v1/plugins/{plugin}/worker", get(plugin_worker))
        .route("/api/v1/plugins/{plugin}/operations/{operation}", post(invoke_operation))
        .route("/api/v1/plugins/{plugin}/validate/{definition}", post(validate_parameters))
        .route("/api/v1/pool", get(pool_status))
        .route("/api/v1/environments", get(list_environments).post(add_environment))
        .route("/api/v1/environments/{env}", get(get_environment).delete(delete_environment))
        .route("/api/v1/environments/{env}/refresh", post(refresh_environment))
        .route("/api/v1/environments/{env}/users", get(list_environment_users).post(add_environment_user))
        .route("/api/v1/environments/{env}/users/{user}", axum::routing::delete(delete_environment_user))
        .route("/api/v1/repositories", get(list_repositories))
        .route("/api/v1/sourceconfigs", get(list_source_configs).post(add_source_config))
        .route("/api/v1/sourceconfigs/{sc}", get(get_source_config).put(update_source_config).delete(delete_source_config))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{job}", get(get_job))
        .route("/api/v1/jobs/{job}/events", get(job_events))
        .route("/api/v1/jobs/{job}/cancel", post(cancel_job))
        .merge(datasets::routes())
        .merge(auth::routes())
        .merge(delphix::routes(engine.clone()))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(engine.clone(), auth::require_token))
        .with_state(engine)
}

async fn not_found() -> Failure {
    Failure(ApiError {
        code: ErrorCode::NotFound,
        message: "no such API endpoint".into(),
        action: None,
        details: Vec::new(),
        output: None,
    })
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn list_plugins(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_plugins()?))
}

async fn install_plugin(State(engine): State<Arc<Engine>>, body: Bytes) -> Result<impl IntoResponse> {
    let summary = engine.install_plugin(&body).await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

async fn get_plugin(State(engine): State<Arc<Engine>>, Path(plugin): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_plugin(&plugin)?))
}

async fn plugin_definition(State(engine): State<Arc<Engine>>, Path(plugin): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.plugin_definition(&plugin)?))
}

async fn delete_plugin(State(engine): State<Arc<Engine>>, Path(plugin): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.delete_plugin(&plugin).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    level: Option<String>,
    tail: Option<usize>,
}

async fn plugin_logs(
    State(engine): State<Arc<Engine>>,
    Path(plugin): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<impl IntoResponse> {
    let level = match q.level.as_deref() {
        None => PluginLogLevel::Info,
        Some(l) => PluginLogLevel::parse(l).ok_or_else(|| Failure::invalid("level", "must be debug, info or error"))?,
    };
    Ok(Json(json!({"level": level, "lines": engine.plugin_logs(&plugin, level, q.tail)?})))
}

async fn plugin_worker(State(engine): State<Arc<Engine>>, Path(plugin): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(json!({"pid": engine.plugin_worker_pid(&plugin).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    #[serde(default = "empty_object")]
    request: Value,
    deadline_seconds: Option<f64>,
    job: Option<String>,
    /// A pool dataset that `run_sync` fills during this call.
    sync_volume: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

async fn invoke_operation(
    State(engine): State<Arc<Engine>>,
    Path((plugin, operation)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let body: InvokeBody = if body.is_empty() { parse_body(b"{}")? } else { parse_body(&body)? };
    let deadline = match body.deadline_seconds {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 7.0 * 86_400.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => return Err(Failure::invalid("deadline_seconds", "must be a number of seconds between 0 and 604800")),
    };
    let call = PluginInvocation { operation, request: body.request, deadline, job: body.job, sync_volume: body.sync_volume };
    let result = engine.invoke_plugin(&plugin, call).await?;
    Ok(Json(json!({ "result": result })))
}

async fn validate_parameters(
    State(engine): State<Arc<Engine>>,
    Path((plugin, definition)): Path<(String, String)>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let which = ParameterDefinition::parse(&definition).ok_or_else(|| {
        let names: Vec<&str> = ParameterDefinition::ALL.iter().map(|d| d.name()).collect();
        Failure::invalid("definition", format!("must be one of {}", names.join(", ")))
    })?;
    let params: Value = parse_body(&body)?;
    let redacted = engine.validate_parameters(&plugin, which, &params)?;
    Ok(Json(json!({"valid": true, "parameters": redacted})))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(engine).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    state: Option<String>,
    target: Option<String>,
    limit: Option<usize>,
}

async fn list_jobs(State(engine): State<Arc<Engine>>, Query(q): Query<JobQuery>) -> Result<impl IntoResponse> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(doppel_model::JobState::parse(s).ok_or_else(|| {
            Failure::invalid("state", "must be queued, running, succeeded, failed or canceled")
        })?),
    };
    let filter = doppel_store::JobFilter { state, target: q.target, limit: Some(q.limit.unwrap_or(100)) };
    Ok(Json(engine.jobs().list(&filter)?))
}

async fn get_job(State(engine): State<Arc<Engine>>, Path(job): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.jobs().get(&job)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    after: Option<i64>,
}

async fn job_events(
    State(engine): State<Arc<Engine>>,
    Path(job): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.jobs().events(&job, q.after.unwrap_or(0))?))
}

async fn cancel_job(State(engine): State<Arc<Engine>>, Path(job): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.jobs().cancel(&job)?))
}

async fn pool_status(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.pool_status().await?))
}

/// A job accepted: `202` with the job, which the client follows.
pub(crate) fn accepted(job: doppel_model::Job) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(job))
}

async fn list_environments(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_environments()?))
}

async fn add_environment(State(engine): State<Arc<Engine>>, body: Bytes) -> Result<impl IntoResponse> {
    let req: doppel_model::AddEnvironment = parse_body(&body)?;
    Ok(accepted(engine.add_environment(req)?))
}

async fn get_environment(State(engine): State<Arc<Engine>>, Path(env): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_environment(&env)?))
}

async fn delete_environment(State(engine): State<Arc<Engine>>, Path(env): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.delete_environment(&env).await?))
}

async fn refresh_environment(State(engine): State<Arc<Engine>>, Path(env): Path<String>) -> Result<impl IntoResponse> {
    Ok(accepted(engine.refresh_environment(&env)?))
}

async fn list_environment_users(State(engine): State<Arc<Engine>>, Path(env): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_environment(&env)?.users))
}

async fn add_environment_user(
    State(engine): State<Arc<Engine>>,
    Path(env): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let req: doppel_model::AddEnvironmentUser = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(engine.add_environment_user(&env, req).await?)))
}

async fn delete_environment_user(
    State(engine): State<Arc<Engine>>,
    Path((env, user)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    engine.delete_environment_user(&env, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentQuery {
    environment: Option<String>,
}

async fn list_repositories(State(engine): State<Arc<Engine>>, Query(q): Query<EnvironmentQuery>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_repositories(q.environment.as_deref())?))
}

async fn list_source_configs(State(engine): State<Arc<Engine>>, Query(q): Query<EnvironmentQuery>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_source_configs(q.environment.as_deref())?))
}

async fn add_source_config(State(engine): State<Arc<Engine>>, body: Bytes) -> Result<impl IntoResponse> {
    let req: doppel_model::AddSourceConfig = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(engine.add_source_config(req)?)))
}

async fn get_source_config(State(engine): State<Arc<Engine>>, Path(sc): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_source_config(&sc)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateSourceConfig {
    parameters: Value,
}

async fn update_source_config(
    State(engine): State<Arc<Engine>>,
    Path(sc): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let req: UpdateSourceConfig = parse_body(&body)?;
    Ok(Json(engine.update_source_config(&sc, req.parameters)?))
}

async fn delete_source_config(State(engine): State<Arc<Engine>>, Path(sc): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.delete_source_config(&sc)?))
}
