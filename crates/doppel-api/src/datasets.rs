//! `/api/v1/dsources`, `/api/v1/vdbs`, `/api/v1/snapshots`, `/api/v1/mounts`.
//! Long operations answer `202` with their job.

use std::sync::Arc;

use axum::extract::State;

use crate::extract::{ApiBody, ApiPath, ApiQuery};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use doppel_engine::access::Need;
use doppel_engine::auth::Principal;
use doppel_engine::Engine;
use doppel_model::{DSource, Job, LinkDSource, Mount, ProvisionVdb, Right, Snapshot, Vdb};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{accepted, parse_body, parse_optional_body, Result};

pub(crate) fn routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(list_dsources, link_dsource))
        .routes(routes!(get_dsource, delete_dsource))
        .routes(routes!(sync_dsource))
        .routes(routes!(list_snapshots))
        .routes(routes!(list_vdbs, provision_vdb))
        .routes(routes!(get_vdb, delete_vdb))
        .routes(routes!(snapshot_vdb))
        .routes(routes!(refresh_vdb))
        .routes(routes!(rewind_vdb))
        .routes(routes!(list_mounts))
        .routes(routes!(dsource_power))
        .routes(routes!(vdb_power))
        .routes(routes!(get_hooks, set_hooks))
        .routes(routes!(delete_snapshot))
        .routes(routes!(create_empty_vdb))
        .routes(routes!(export_snapshot))
}

/// Exports a snapshot as a physical copy into a directory of a host (V2P): a job.
#[utoipa::path(post, path = "/api/v1/exports", tag = "datasets", request_body = doppel_model::ExportSnapshot,
    responses((status = 202, description = "The job", body = Job)))]
async fn export_snapshot(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let mut req: doppel_model::ExportSnapshot = parse_body(&body)?;
    req.snapshot = engine.resolve_snapshot(&req.snapshot)?;
    engine.authorize(
        &who,
        &[
            Need::Snapshot(&req.snapshot, Right::Provisioner),
            Need::Environment(&req.environment, Right::Provisioner),
        ],
    )?;
    Ok(accepted(engine.export_snapshot(req)?))
}

/// Creates a VDB with no data, initialized by the plugin: a job.
#[utoipa::path(post, path = "/api/v1/empty-vdbs", tag = "datasets", request_body = doppel_model::CreateEmptyVdb,
    responses((status = 202, description = "The job", body = Job)))]
async fn create_empty_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: doppel_model::CreateEmptyVdb = parse_body(&body)?;
    engine.authorize(
        &who,
        &[Need::Environment(&req.environment, Right::Provisioner)],
    )?;
    Ok(accepted(engine.create_empty_vdb(&who, req)?))
}

/// Deletes a snapshot (refused while a VDB's current timeflow starts at it).
#[utoipa::path(delete, path = "/api/v1/snapshots/{snapshot}", tag = "datasets",
    params(("snapshot" = String, Path, description = "SNAPSHOT-<n>")),
    responses((status = 200, description = "The deleted snapshot", body = Snapshot)))]
async fn delete_snapshot(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(snapshot): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Snapshot(&snapshot, Right::Owner)])?;
    Ok(Json(engine.delete_snapshot(&snapshot).await?))
}

/// Enables or disables a dSource (`action`: `enable` or `disable`).
#[utoipa::path(post, path = "/api/v1/dsources/{ds}/{action}", tag = "datasets",
    params(("ds" = String, Path, description = "dSource reference or name"), ("action" = String, Path, description = "enable or disable")),
    responses((status = 202, description = "The job", body = Job)))]
async fn dsource_power(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath((ds, action)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::DSource(&ds, Right::Owner)])?;
    let enable = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => {
            return Err(crate::Failure::invalid(
                "action",
                "must be enable or disable",
            ))
        }
    };
    Ok(accepted(engine.dsource_power(&ds, enable)?))
}

/// Starts, stops, enables or disables a VDB (`action`).
#[utoipa::path(post, path = "/api/v1/vdbs/{vdb}/power/{action}", tag = "datasets",
    params(("vdb" = String, Path, description = "VDB reference or name"), ("action" = String, Path, description = "start, stop, enable or disable")),
    responses((status = 202, description = "The job", body = Job)))]
async fn vdb_power(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath((vdb, action)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(accepted(engine.vdb_power(&vdb, &action)?))
}

/// The hook scripts of a dSource or VDB, by point.
#[utoipa::path(get, path = "/api/v1/hooks/{object}", tag = "datasets",
    params(("object" = String, Path, description = "dSource or VDB reference or name")),
    responses((status = 200, body = std::collections::BTreeMap<String, String>)))]
async fn get_hooks(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(object): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Dataset(&object, Right::Owner)])?;
    Ok(Json(engine.hooks(&object)?))
}

/// Sets hook scripts by point (an empty script removes one); returns them all.
#[utoipa::path(put, path = "/api/v1/hooks/{object}", tag = "datasets",
    params(("object" = String, Path, description = "dSource or VDB reference or name")),
    request_body = std::collections::BTreeMap<String, String>,
    responses((status = 200, body = std::collections::BTreeMap<String, String>)))]
async fn set_hooks(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(object): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let hooks: std::collections::BTreeMap<String, String> = parse_body(&body)?;
    engine.authorize(&who, &[Need::Dataset(&object, Right::Owner)])?;
    Ok(Json(engine.set_hooks(&object, &hooks)?))
}

#[utoipa::path(get, path = "/api/v1/dsources", tag = "datasets", responses((status = 200, body = Vec<DSource>)))]
async fn list_dsources(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_dsources()?))
}

/// Links a source config as a dSource: a job that ingests it.
#[utoipa::path(post, path = "/api/v1/dsources", tag = "datasets", request_body = LinkDSource,
    responses((status = 202, description = "The linking job", body = Job)))]
async fn link_dsource(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: LinkDSource = parse_body(&body)?;
    let mut needs = vec![Need::SourceConfigEnvironment(
        &req.source_config,
        Right::Provisioner,
    )];
    if let Some(staging) = &req.staging_environment {
        needs.push(Need::Environment(staging, Right::Provisioner));
    }
    engine.authorize(&who, &needs)?;
    Ok(accepted(engine.link_dsource(&who, req)?))
}

#[utoipa::path(get, path = "/api/v1/dsources/{ds}", tag = "datasets", params(("ds" = String, Path, description = "dSource reference or name")),
    responses((status = 200, body = DSource)))]
async fn get_dsource(
    State(engine): State<Arc<Engine>>,
    ApiPath(ds): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.dsource_details(&ds).await?))
}

#[utoipa::path(delete, path = "/api/v1/dsources/{ds}", tag = "datasets", params(("ds" = String, Path, description = "dSource reference or name")),
    responses((status = 202, description = "The deleting job", body = Job)))]
async fn delete_dsource(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(ds): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::DSource(&ds, Right::Owner)])?;
    Ok(accepted(engine.delete_dsource(&ds)?))
}

/// Body of `POST /api/v1/dsources/{ds}/sync` (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    /// The user's snapshot parameters; absent for a policy sync.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    #[serde(default)]
    resync: bool,
}

/// Takes a new snapshot of the source.
#[utoipa::path(post, path = "/api/v1/dsources/{ds}/sync", tag = "datasets", params(("ds" = String, Path, description = "dSource reference or name")),
    request_body(content = Option<SyncBody>), responses((status = 202, description = "The sync job", body = Job)))]
async fn sync_dsource(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(ds): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: SyncBody = parse_optional_body(&body)?;
    engine.authorize(&who, &[Need::DSource(&ds, Right::Owner)])?;
    Ok(accepted(engine.sync_dsource(
        &ds,
        req.parameters,
        req.resync,
    )?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SnapshotQuery {
    /// Only the snapshots of this dataset (dSource or VDB).
    dataset: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/snapshots", tag = "datasets", params(SnapshotQuery),
    responses((status = 200, body = Vec<Snapshot>)))]
async fn list_snapshots(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<SnapshotQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_snapshots(q.dataset.as_deref()).await?))
}

#[utoipa::path(get, path = "/api/v1/vdbs", tag = "datasets", responses((status = 200, body = Vec<Vdb>)))]
async fn list_vdbs(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_vdbs()?))
}

/// Provisions a VDB from a snapshot of a dSource or VDB.
#[utoipa::path(post, path = "/api/v1/vdbs", tag = "datasets", request_body = ProvisionVdb,
    responses((status = 202, description = "The provisioning job", body = Job)))]
async fn provision_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: ProvisionVdb = parse_body(&body)?;
    engine.authorize(
        &who,
        &[
            Need::Dataset(&req.from, Right::Provisioner),
            Need::Environment(&req.environment, Right::Provisioner),
        ],
    )?;
    Ok(accepted(engine.provision_vdb(&who, req)?))
}

#[utoipa::path(get, path = "/api/v1/vdbs/{vdb}", tag = "datasets", params(("vdb" = String, Path, description = "VDB reference or name")),
    responses((status = 200, body = Vdb)))]
async fn get_vdb(
    State(engine): State<Arc<Engine>>,
    ApiPath(vdb): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_vdb(&vdb)?))
}

#[utoipa::path(delete, path = "/api/v1/vdbs/{vdb}", tag = "datasets", params(("vdb" = String, Path, description = "VDB reference or name")),
    responses((status = 202, description = "The deleting job", body = Job)))]
async fn delete_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(accepted(engine.delete_vdb(&vdb)?))
}

#[utoipa::path(post, path = "/api/v1/vdbs/{vdb}/snapshot", tag = "datasets", params(("vdb" = String, Path, description = "VDB reference or name")),
    responses((status = 202, description = "The snapshot job", body = Job)))]
async fn snapshot_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(accepted(engine.snapshot_vdb(&vdb)?))
}

/// Body of a refresh or rewind (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ToBody {
    /// `SNAPSHOT-<n>` or a bookmark of the dataset it comes from.
    to: Option<String>,
}

/// Refreshes the VDB from its parent (a snapshot of it; default: the latest).
#[utoipa::path(post, path = "/api/v1/vdbs/{vdb}/refresh", tag = "datasets", params(("vdb" = String, Path, description = "VDB reference or name")),
    request_body(content = Option<ToBody>), responses((status = 202, description = "The refresh job", body = Job)))]
async fn refresh_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: ToBody = parse_optional_body(&body)?;
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(accepted(engine.refresh_vdb(
        &vdb,
        req.to.as_deref(),
        false,
    )?))
}

/// Rewinds the VDB to one of its own snapshots (default: the latest).
#[utoipa::path(post, path = "/api/v1/vdbs/{vdb}/rewind", tag = "datasets", params(("vdb" = String, Path, description = "VDB reference or name")),
    request_body(content = Option<ToBody>), responses((status = 202, description = "The rewind job", body = Job)))]
async fn rewind_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: ToBody = parse_optional_body(&body)?;
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(accepted(engine.refresh_vdb(
        &vdb,
        req.to.as_deref(),
        true,
    )?))
}

#[utoipa::path(get, path = "/api/v1/mounts", tag = "datasets", responses((status = 200, body = Vec<Mount>)))]
async fn list_mounts(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_mounts()?))
}
