//! `/api/v1/policies`, `/api/v1/schedule-runs` and `/api/v1/test-clock`.
//! Changing a policy needs the owner right on every object it applies to;
//! applying one, on every object named.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use doppel_engine::access::Need;
use doppel_engine::auth::Principal;
use doppel_engine::Engine;
use doppel_model::{
    ApplyOutcome, ApplyPolicy, Policy, PolicySpec, Right, ScheduleRun, SchedulerPass, SetTestClock,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiBody, ApiPath, ApiQuery};
use crate::{parse_body, parse_optional_body, Result};

pub(crate) fn routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(list_policies, add_policy))
        .routes(routes!(get_policy, update_policy, delete_policy))
        .routes(routes!(apply_policy))
        .routes(routes!(unapply_policy))
        .routes(routes!(schedule_runs))
        .routes(routes!(set_test_clock))
}

/// Owner on every object the policy applies to.
fn owns_all(engine: &Engine, who: &Principal, policy: &str) -> Result<()> {
    let objects = engine.policy_objects(policy)?;
    let needs: Vec<Need<'_>> = objects
        .iter()
        .map(|o| Need::Dataset(o, Right::Owner))
        .collect();
    engine.authorize(who, &needs)?;
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", responses((status = 200, body = Vec<Policy>)))]
async fn list_policies(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_policies()?))
}

/// Adds a policy (it applies to nothing until applied).
#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", request_body = PolicySpec,
    responses((status = 201, body = Policy)))]
async fn add_policy(State(engine): State<Arc<Engine>>, body: ApiBody) -> Result<impl IntoResponse> {
    let spec: PolicySpec = parse_body(&body)?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(engine.add_policy(spec)?),
    ))
}

#[utoipa::path(get, path = "/api/v1/policies/{policy}", tag = "policies",
    params(("policy" = String, Path, description = "POLICY-<n> or name")),
    responses((status = 200, body = Policy)))]
async fn get_policy(
    State(engine): State<Arc<Engine>>,
    ApiPath(policy): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_policy(&policy)?))
}

/// Replaces a policy's name and every section.
#[utoipa::path(put, path = "/api/v1/policies/{policy}", tag = "policies",
    params(("policy" = String, Path, description = "POLICY-<n> or name")), request_body = PolicySpec,
    responses((status = 200, body = Policy)))]
async fn update_policy(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(policy): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let spec: PolicySpec = parse_body(&body)?;
    owns_all(&engine, &who, &policy)?;
    Ok(Json(engine.update_policy(&policy, spec)?))
}

/// Deletes a policy; the objects it applied to keep their other one.
#[utoipa::path(delete, path = "/api/v1/policies/{policy}", tag = "policies",
    params(("policy" = String, Path, description = "POLICY-<n> or name")),
    responses((status = 200, description = "The deleted policy", body = Policy)))]
async fn delete_policy(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(policy): ApiPath<String>,
) -> Result<impl IntoResponse> {
    owns_all(&engine, &who, &policy)?;
    Ok(Json(engine.delete_policy(&policy)?))
}

/// Applies a policy to objects (as their base policy or override) and
/// enforces its retention there in jobs; `dry_run` changes nothing and
/// says what retention would delete.
#[utoipa::path(post, path = "/api/v1/policies/{policy}/apply", tag = "policies",
    params(("policy" = String, Path, description = "POLICY-<n> or name")), request_body = ApplyPolicy,
    responses((status = 200, body = ApplyOutcome)))]
async fn apply_policy(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(policy): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: ApplyPolicy = parse_optional_body(&body)?;
    let mut objects = Vec::new();
    for o in &req.objects {
        objects.push(engine.policy_target(o)?);
    }
    if objects.is_empty() {
        objects = engine.policy_objects(&policy)?;
    }
    let needs: Vec<Need<'_>> = objects
        .iter()
        .map(|o| Need::Dataset(o, Right::Owner))
        .collect();
    engine.authorize(&who, &needs)?;
    Ok(Json(engine.apply_policy(&policy, &req).await?))
}

/// Takes a policy off an object.
#[utoipa::path(delete, path = "/api/v1/policies/{policy}/objects/{object}", tag = "policies",
    params(("policy" = String, Path, description = "POLICY-<n> or name"),
           ("object" = String, Path, description = "DSOURCE-<n>, VDB-<n>, dsource:NAME or vdb:NAME")),
    responses((status = 200, body = Policy)))]
async fn unapply_policy(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath((policy, object)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse> {
    let target = engine.policy_target(&object)?;
    engine.authorize(&who, &[Need::Dataset(&target, Right::Owner)])?;
    Ok(Json(engine.unapply_policy(&policy, &object)?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only this object's runs (`DSOURCE-<n>`, `vdb:dev`, ...).
    object: Option<String>,
    /// At most this many, newest first (default 100).
    limit: Option<usize>,
}

/// What the scheduler did with each slot: started (with the job) or
/// skipped (with why), newest first.
#[utoipa::path(get, path = "/api/v1/schedule-runs", tag = "policies", params(RunsQuery),
    responses((status = 200, body = Vec<ScheduleRun>)))]
async fn schedule_runs(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.schedule_runs(
        q.object.as_deref(),
        q.limit.unwrap_or(100),
    )?))
}

/// Sets the scheduler's clock and runs one pass at that time. Only an
/// engine started with `--test-clock` takes it (409 otherwise).
#[utoipa::path(post, path = "/api/v1/test-clock", tag = "policies", request_body = SetTestClock,
    responses((status = 200, body = SchedulerPass)))]
async fn set_test_clock(
    State(engine): State<Arc<Engine>>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: SetTestClock = parse_body(&body)?;
    Ok(Json(engine.set_test_clock(&req.now).await?))
}
