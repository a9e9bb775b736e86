//! Doppel's HTTP JSON API under `/api/v1`.
//!
//! Handlers only parse requests into engine calls and engine answers into
//! JSON; every error leaves as `{"error": ApiError}` with the status its code
//! implies. Architecture invariant: this is the only crate that knows HTTP.

mod auth;
mod datasets;
mod delphix;
mod extract;
mod listen;
mod openapi;
mod policies;
mod retain;
mod rights;
mod stream;
pub mod tls;
mod ui;
mod webhooks;

pub use listen::{delphix_router, serve_listeners, Listeners};
pub use openapi::{openapi, openapi_json};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use doppel_engine::access::Need;
use doppel_engine::auth::Principal;
use doppel_engine::{
    Engine, EngineError, ParameterDefinition, PluginInvocation, MAX_ARTIFACT_BYTES,
};
use doppel_model::{
    AddEnvironment, AddEnvironmentUser, AddSourceConfig, ApiError, Environment, EnvironmentUser,
    ErrorCode, Job, JobEvent, PluginLogLevel, PluginSummary, Repository, Right, SourceConfig,
};
use extract::{ApiBody, ApiPath, ApiQuery};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// An error on its way out.
pub struct Failure(ApiError);

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure(e.report("request"))
    }
}

impl Failure {
    pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Failure(ApiError {
            code: ErrorCode::InvalidInput,
            message: format!("{field}: {reason}"),
            action: None,
            details: Vec::new(),
            output: None,
            correlation_id: None,
        })
    }
}

/// The HTTP status an error code answers with (the client goes by the code).
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput | ErrorCode::InvalidArtifact | ErrorCode::InvalidParameters => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::PluginUserError | ErrorCode::HookFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::PluginFailed | ErrorCode::HostFailed => StatusCode::BAD_GATEWAY,
        ErrorCode::PluginTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::PoolFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = http_status(self.0.code);
        (status, Json(json!({ "error": self.0 }))).into_response()
    }
}

pub(crate) type Result<T> = std::result::Result<T, Failure>;

/// Parses a JSON body ourselves so malformed input gets our error shape.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Failure::invalid("body", e))
}

/// A body that may be left out: an empty one reads as `{}`.
pub(crate) fn parse_optional_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    parse_body(if bytes.is_empty() { b"{}" } else { bytes })
}

/// Every documented `/api/v1` route. Each comes from its handler's
/// `#[utoipa::path]`, which also puts it in the OpenAPI document: a route
/// cannot be served without being documented, nor documented without being
/// served.
pub(crate) fn documented_routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::with_openapi(<openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi::serve_document))
        .routes(routes!(list_plugins, install_plugin))
        .routes(routes!(get_plugin, delete_plugin))
        .routes(routes!(plugin_definition))
        .routes(routes!(plugin_logs))
        .routes(routes!(plugin_worker))
        .routes(routes!(invoke_operation))
        .routes(routes!(validate_parameters))
        .routes(routes!(pool_status))
        .routes(routes!(metrics))
        .routes(routes!(list_environments, add_environment))
        .routes(routes!(get_environment, delete_environment))
        .routes(routes!(refresh_environment))
        .routes(routes!(list_environment_users, add_environment_user))
        .routes(routes!(delete_environment_user))
        .routes(routes!(list_repositories))
        .routes(routes!(list_source_configs, add_source_config))
        .routes(routes!(
            get_source_config,
            update_source_config,
            delete_source_config
        ))
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(job_events))
        .routes(routes!(stream::stream_job))
        .routes(routes!(cancel_job))
        .merge(datasets::routes())
        .merge(policies::routes())
        .merge(retain::routes())
        .merge(webhooks::routes())
        .merge(auth::routes())
}

pub fn router(engine: Arc<Engine>) -> Router {
    let (api, _) = documented_routes().split_for_parts();
    api.merge(delphix::routes(engine.clone()))
        // Paths no route takes: the web UI's files, else the API's 404.
        .fallback(ui::fallback)
        // After every route is in: it applies to the routes there are.
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by `ApiBody`, which sets each endpoint's limit.
        .layer(axum::extract::DefaultBodyLimit::max(
            extract::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(extract::json_errors))
        .with_state(engine)
}

pub(crate) async fn not_found() -> Failure {
    Failure(ApiError {
        code: ErrorCode::NotFound,
        message: "no such API endpoint".into(),
        action: None,
        details: Vec::new(),
        output: None,
        correlation_id: None,
    })
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Failure {
    Failure(ApiError {
        code: ErrorCode::MethodNotAllowed,
        message: format!("{method} is not allowed on {}", uri.path()),
        action: Some("the Allow header lists the methods this endpoint takes; the API is described at /api/v1/openapi.json".into()),
        details: Vec::new(),
        output: None,
        correlation_id: None,
    })
}

/// Answer of `GET /api/v1/health`.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
    /// The engine's version.
    version: &'static str,
}

/// Whether the engine answers; needs no token.
#[utoipa::path(get, path = "/api/v1/health", tag = "engine", security(()),
    responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = Vec<PluginSummary>)))]
async fn list_plugins(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_plugins()?))
}

/// Installs or upgrades a plugin from its artifact (as `dvp build` makes it).
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The plugin artifact"),
    responses((status = 201, body = PluginSummary)))]
async fn install_plugin(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody<MAX_ARTIFACT_BYTES>,
) -> Result<impl IntoResponse> {
    let summary = engine.install_plugin(&who, &body).await?;
    Ok((StatusCode::CREATED, Json(summary)))
}

#[utoipa::path(get, path = "/api/v1/plugins/{plugin}", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name")),
    responses((status = 200, body = PluginSummary)))]
async fn get_plugin(
    State(engine): State<Arc<Engine>>,
    ApiPath(plugin): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_plugin(&plugin)?))
}

/// The plugin's schemas and manifest, as its artifact declares them.
#[utoipa::path(get, path = "/api/v1/plugins/{plugin}/definition", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name")),
    responses((status = 200, body = Object)))]
async fn plugin_definition(
    State(engine): State<Arc<Engine>>,
    ApiPath(plugin): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.plugin_definition(&plugin)?))
}

#[utoipa::path(delete, path = "/api/v1/plugins/{plugin}", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name")),
    responses((status = 200, description = "The deleted plugin", body = PluginSummary)))]
async fn delete_plugin(
    State(engine): State<Arc<Engine>>,
    ApiPath(plugin): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.delete_plugin(&plugin).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// `debug`, `info` (default) or `error`.
    level: Option<String>,
    /// How many of the last lines (default 1000, at most 10000).
    tail: Option<usize>,
    /// Only lines before this cursor: the `before` of the previous page.
    before: Option<String>,
}

/// Answer of `GET /api/v1/plugins/{plugin}/logs`: a page of lines, oldest
/// first.
#[derive(Serialize, ToSchema)]
struct PluginLogs {
    level: PluginLogLevel,
    lines: Vec<String>,
    /// Pass as `before` for the lines before these; absent when these start
    /// at the oldest line kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<String>,
}

/// A page of one of the plugin's logs, read from the end: the last `tail`
/// lines, or the last ones before the cursor `before`. Logs rotate at
/// 10 MiB, keeping 3 older files, which paging walks through.
#[utoipa::path(get, path = "/api/v1/plugins/{plugin}/logs", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name"), LogQuery),
    responses((status = 200, body = PluginLogs)))]
async fn plugin_logs(
    State(engine): State<Arc<Engine>>,
    ApiPath(plugin): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<impl IntoResponse> {
    let level = match q.level.as_deref() {
        None => PluginLogLevel::Info,
        Some(l) => PluginLogLevel::parse(l)
            .ok_or_else(|| Failure::invalid("level", "must be debug, info or error"))?,
    };
    let page = engine.plugin_logs(&plugin, level, q.tail, q.before.as_deref())?;
    Ok(Json(PluginLogs {
        level,
        lines: page.lines,
        before: page.before,
    }))
}

/// Answer of `GET /api/v1/plugins/{plugin}/worker`.
#[derive(Serialize, ToSchema)]
struct PluginWorker {
    /// The lowest process id among the plugin's workers, if one runs.
    pid: Option<u32>,
    /// Every running worker of the plugin, in ascending order: up to
    /// `doppel serve --plugin-workers` serve calls side by side.
    pids: Vec<u32>,
}

#[utoipa::path(get, path = "/api/v1/plugins/{plugin}/worker", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name")),
    responses((status = 200, body = PluginWorker)))]
async fn plugin_worker(
    State(engine): State<Arc<Engine>>,
    ApiPath(plugin): ApiPath<String>,
) -> Result<impl IntoResponse> {
    let pids = engine.plugin_worker_pids(&plugin)?;
    Ok(Json(PluginWorker {
        pid: pids.first().copied(),
        pids,
    }))
}

/// Body of `POST /api/v1/plugins/{plugin}/operations/{operation}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    /// The operation's input (default: `{}`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    request: Value,
    /// At most 604800.
    deadline_seconds: Option<f64>,
    job: Option<String>,
    /// A pool dataset that `run_sync` fills during this call.
    sync_volume: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

/// Answer of an operation call.
#[derive(Serialize, ToSchema)]
struct InvokeResult {
    /// What the plugin returned.
    #[schema(value_type = Object)]
    result: Value,
}

/// Calls one plugin operation directly (a debugging aid).
#[utoipa::path(post, path = "/api/v1/plugins/{plugin}/operations/{operation}", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name"),
        ("operation" = String, Path, description = "`group.method`")),
    request_body(content = Option<InvokeBody>),
    responses((status = 200, body = InvokeResult)))]
async fn invoke_operation(
    State(engine): State<Arc<Engine>>,
    ApiPath((plugin, operation)): ApiPath<(String, String)>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let body: InvokeBody = parse_optional_body(&body)?;
    let deadline = match body.deadline_seconds {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 && s <= 7.0 * 86_400.0 => {
            Some(Duration::from_secs_f64(s))
        }
        Some(_) => {
            return Err(Failure::invalid(
                "deadline_seconds",
                "must be a number of seconds between 0 and 604800",
            ))
        }
    };
    let call = PluginInvocation {
        operation,
        request: body.request,
        deadline,
        job: body.job,
        sync_volume: body.sync_volume,
    };
    let result = engine.invoke_plugin(&plugin, call).await?;
    Ok(Json(InvokeResult { result }))
}

/// Answer of a parameter validation.
#[derive(Serialize, ToSchema)]
struct Validated {
    /// Always true (invalid parameters answer an error).
    valid: bool,
    /// The parameters with secrets redacted.
    #[schema(value_type = Object)]
    parameters: Value,
}

/// Checks parameters against one of the plugin's schemas.
#[utoipa::path(post, path = "/api/v1/plugins/{plugin}/validate/{definition}", tag = "plugins",
    params(("plugin" = String, Path, description = "Plugin id or name"),
        ("definition" = String, Path, description = "Which schema, e.g. `virtual_source`")),
    request_body(content = Object, description = "The parameters"),
    responses((status = 200, body = Validated)))]
async fn validate_parameters(
    State(engine): State<Arc<Engine>>,
    ApiPath((plugin, definition)): ApiPath<(String, String)>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let which = ParameterDefinition::parse(&definition).ok_or_else(|| {
        let names: Vec<&str> = ParameterDefinition::ALL.iter().map(|d| d.name()).collect();
        Failure::invalid("definition", format!("must be one of {}", names.join(", ")))
    })?;
    let params: Value = parse_body(&body)?;
    let redacted = engine.validate_parameters(&plugin, which, &params)?;
    Ok(Json(Validated {
        valid: true,
        parameters: redacted,
    }))
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(engine).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct JobQuery {
    /// `queued`, `running`, `succeeded`, `failed` or `canceled`.
    state: Option<String>,
    /// The object the jobs work on.
    target: Option<String>,
    /// At most this many (default 100), newest first.
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = Vec<Job>)))]
async fn list_jobs(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<JobQuery>,
) -> Result<impl IntoResponse> {
    let state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(doppel_model::JobState::parse(s).ok_or_else(|| {
            Failure::invalid(
                "state",
                "must be queued, running, succeeded, failed or canceled",
            )
        })?),
    };
    let filter = doppel_model::JobFilter {
        state,
        target: q.target,
        limit: Some(q.limit.unwrap_or(100)),
    };
    Ok(Json(engine.jobs().list(&filter)?))
}

#[utoipa::path(get, path = "/api/v1/jobs/{job}", tag = "jobs",
    params(("job" = String, Path, description = "`JOB-<n>`")),
    responses((status = 200, body = Job)))]
async fn get_job(
    State(engine): State<Arc<Engine>>,
    ApiPath(job): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.jobs().get(&job)?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EventQuery {
    /// Only events with a greater `seq`.
    after: Option<i64>,
}

/// The job's events, oldest first (poll with `after`, or use `/stream`).
#[utoipa::path(get, path = "/api/v1/jobs/{job}/events", tag = "jobs",
    params(("job" = String, Path, description = "`JOB-<n>`"), EventQuery),
    responses((status = 200, body = Vec<JobEvent>)))]
async fn job_events(
    State(engine): State<Arc<Engine>>,
    ApiPath(job): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.jobs().events(&job, q.after.unwrap_or(0))?))
}

/// Asks a queued or running job to stop at its next step.
#[utoipa::path(post, path = "/api/v1/jobs/{job}/cancel", tag = "jobs",
    params(("job" = String, Path, description = "`JOB-<n>`")),
    responses((status = 200, body = Job)))]
async fn cancel_job(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(job): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Job(&job)])?;
    Ok(Json(engine.jobs().cancel(&job)?))
}

/// Size, use and health of the storage pool: driver and capabilities,
/// space, the capacity thresholds and where usage stands against them
/// (`capacity`: `usage_percent`, `warn_percent`, `refuse_percent`, `state`
/// ok, warning or refusing), and per dSource and VDB the bytes it uses and
/// those its deletion would free (`objects`).
#[utoipa::path(get, path = "/api/v1/pool", tag = "engine",
    responses((status = 200, body = Object)))]
async fn pool_status(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.pool_status().await?))
}

/// Where Prometheus scrapes: outside `/api/v1`, as scrapers expect, but
/// behind the same token check (`auth::require_token`).
pub(crate) const METRICS_PATH: &str = "/metrics";

/// Prometheus metrics in the text exposition format: jobs by type and state
/// (`doppel_jobs`), started and finished counts and durations, pool bytes by
/// kind (size, used, free, reclaiming) and usage, objects by kind, plugin
/// operation durations, plugin workers per plugin, mounts active and lost.
/// Any role's token is enough (send it as a bearer token).
#[utoipa::path(get, path = "/metrics", tag = "engine",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    let text = engine.metrics_text().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// A job accepted: `202` with the job, which the client follows.
pub(crate) fn accepted(job: doppel_model::Job) -> impl IntoResponse {
    (StatusCode::ACCEPTED, Json(job))
}

#[utoipa::path(get, path = "/api/v1/environments", tag = "environments",
    responses((status = 200, body = Vec<Environment>)))]
async fn list_environments(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_environments()?))
}

/// Adds a host: a job that connects, pins its key and discovers it.
#[utoipa::path(post, path = "/api/v1/environments", tag = "environments",
    request_body = AddEnvironment,
    responses((status = 202, description = "The job adding it", body = Job)))]
async fn add_environment(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: AddEnvironment = parse_body(&body)?;
    Ok(accepted(engine.add_environment(&who, req)?))
}

#[utoipa::path(get, path = "/api/v1/environments/{env}", tag = "environments",
    params(("env" = String, Path, description = "Reference or name")),
    responses((status = 200, body = Environment)))]
async fn get_environment(
    State(engine): State<Arc<Engine>>,
    ApiPath(env): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_environment(&env)?))
}

#[utoipa::path(delete, path = "/api/v1/environments/{env}", tag = "environments",
    params(("env" = String, Path, description = "Reference or name")),
    responses((status = 200, description = "The deleted environment", body = Environment)))]
async fn delete_environment(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(env): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Environment(&env, Right::Owner)])?;
    Ok(Json(engine.delete_environment(&env).await?))
}

/// Discovers the host's repositories and source configs again.
#[utoipa::path(post, path = "/api/v1/environments/{env}/refresh", tag = "environments",
    params(("env" = String, Path, description = "Reference or name")),
    responses((status = 202, description = "The refresh job", body = Job)))]
async fn refresh_environment(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(env): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Environment(&env, Right::Owner)])?;
    Ok(accepted(engine.refresh_environment(&env)?))
}

#[utoipa::path(get, path = "/api/v1/environments/{env}/users", tag = "environments",
    params(("env" = String, Path, description = "Reference or name")),
    responses((status = 200, body = Vec<EnvironmentUser>)))]
async fn list_environment_users(
    State(engine): State<Arc<Engine>>,
    ApiPath(env): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_environment(&env)?.users))
}

#[utoipa::path(post, path = "/api/v1/environments/{env}/users", tag = "environments",
    params(("env" = String, Path, description = "Reference or name")),
    request_body = AddEnvironmentUser,
    responses((status = 201, body = EnvironmentUser)))]
async fn add_environment_user(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(env): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: AddEnvironmentUser = parse_body(&body)?;
    engine.authorize(&who, &[Need::Environment(&env, Right::Owner)])?;
    Ok((
        StatusCode::CREATED,
        Json(engine.add_environment_user(&env, req).await?),
    ))
}

#[utoipa::path(delete, path = "/api/v1/environments/{env}/users/{user}", tag = "environments",
    params(("env" = String, Path, description = "Reference or name"),
        ("user" = String, Path, description = "`HOST_USER-<n>` or name")),
    responses((status = 204, description = "Deleted")))]
async fn delete_environment_user(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath((env, user)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Environment(&env, Right::Owner)])?;
    engine.delete_environment_user(&env, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct EnvironmentQuery {
    /// Only those of this environment (reference or name).
    environment: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/repositories", tag = "environments", params(EnvironmentQuery),
    responses((status = 200, body = Vec<Repository>)))]
async fn list_repositories(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<EnvironmentQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_repositories(q.environment.as_deref())?))
}

#[utoipa::path(get, path = "/api/v1/sourceconfigs", tag = "environments", params(EnvironmentQuery),
    responses((status = 200, body = Vec<SourceConfig>)))]
async fn list_source_configs(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<EnvironmentQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_source_configs(q.environment.as_deref())?))
}

#[utoipa::path(post, path = "/api/v1/sourceconfigs", tag = "environments",
    request_body = AddSourceConfig,
    responses((status = 201, body = SourceConfig)))]
async fn add_source_config(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: AddSourceConfig = parse_body(&body)?;
    engine.authorize(
        &who,
        &[Need::RepositoryEnvironment(&req.repository, Right::Owner)],
    )?;
    Ok((StatusCode::CREATED, Json(engine.add_source_config(req)?)))
}

#[utoipa::path(get, path = "/api/v1/sourceconfigs/{sc}", tag = "environments",
    params(("sc" = String, Path, description = "`SOURCE_CONFIG-<n>`")),
    responses((status = 200, body = SourceConfig)))]
async fn get_source_config(
    State(engine): State<Arc<Engine>>,
    ApiPath(sc): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_source_config(&sc)?))
}

/// Body of `PUT /api/v1/sourceconfigs/{sc}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateSourceConfig {
    #[schema(value_type = Object)]
    parameters: Value,
}

#[utoipa::path(put, path = "/api/v1/sourceconfigs/{sc}", tag = "environments",
    params(("sc" = String, Path, description = "`SOURCE_CONFIG-<n>`")),
    request_body = UpdateSourceConfig,
    responses((status = 200, body = SourceConfig)))]
async fn update_source_config(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(sc): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: UpdateSourceConfig = parse_body(&body)?;
    engine.authorize(&who, &[Need::SourceConfigEnvironment(&sc, Right::Owner)])?;
    Ok(Json(engine.update_source_config(&sc, req.parameters)?))
}

#[utoipa::path(delete, path = "/api/v1/sourceconfigs/{sc}", tag = "environments",
    params(("sc" = String, Path, description = "`SOURCE_CONFIG-<n>`")),
    responses((status = 200, description = "The deleted source config", body = SourceConfig)))]
async fn delete_source_config(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(sc): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::SourceConfigEnvironment(&sc, Right::Owner)])?;
    Ok(Json(engine.delete_source_config(&sc)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_answer_500_with_a_correlation_id() {
        let resp = Failure::from(EngineError::Internal("disk on fire".into())).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let id = v["error"]["correlation_id"]
            .as_str()
            .expect("a correlation id");
        assert_eq!(id.len(), 12);
        assert_eq!(v["error"]["code"], "internal");
        assert!(v["error"]["message"].as_str().unwrap().contains(id));
        // Other errors carry none.
        let resp = Failure::from(EngineError::NotFound {
            kind: "vdb",
            id: "x".into(),
        })
        .into_response();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].get("correlation_id").is_none());
    }
}
