//! `/api/v1/dsources`, `/api/v1/vdbs`, `/api/v1/snapshots`, `/api/v1/mounts`.
//! Long operations answer `202` with their job.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use doppel_engine::Engine;
use doppel_model::{LinkDSource, ProvisionVdb};
use serde::Deserialize;
use serde_json::Value;

use crate::{accepted, parse_body, Result};

pub(crate) fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/api/v1/dsources", get(list_dsources).post(link_dsource))
        .route("/api/v1/dsources/{ds}", get(get_dsource).delete(delete_dsource))
        .route("/api/v1/dsources/{ds}/sync", post(sync_dsource))
        .route("/api/v1/snapshots", get(list_snapshots))
        .route("/api/v1/vdbs", get(list_vdbs).post(provision_vdb))
        .route("/api/v1/vdbs/{vdb}", get(get_vdb).delete(delete_vdb))
        .route("/api/v1/vdbs/{vdb}/snapshot", post(snapshot_vdb))
        .route("/api/v1/vdbs/{vdb}/refresh", post(refresh_vdb))
        .route("/api/v1/vdbs/{vdb}/rewind", post(rewind_vdb))
        .route("/api/v1/mounts", get(list_mounts))
}

async fn list_dsources(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_dsources()?))
}

async fn link_dsource(State(engine): State<Arc<Engine>>, body: Bytes) -> Result<impl IntoResponse> {
    let req: LinkDSource = parse_body(&body)?;
    Ok(accepted(engine.link_dsource(req)?))
}

async fn get_dsource(State(engine): State<Arc<Engine>>, Path(ds): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_dsource(&ds)?))
}

async fn delete_dsource(State(engine): State<Arc<Engine>>, Path(ds): Path<String>) -> Result<impl IntoResponse> {
    Ok(accepted(engine.delete_dsource(&ds)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    /// The user's snapshot parameters; absent for a policy sync.
    parameters: Option<Value>,
    #[serde(default)]
    resync: bool,
}

async fn sync_dsource(State(engine): State<Arc<Engine>>, Path(ds): Path<String>, body: Bytes) -> Result<impl IntoResponse> {
    let req: SyncBody = if body.is_empty() { SyncBody::default() } else { parse_body(&body)? };
    Ok(accepted(engine.sync_dsource(&ds, req.parameters, req.resync)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotQuery {
    dataset: Option<String>,
}

async fn list_snapshots(State(engine): State<Arc<Engine>>, Query(q): Query<SnapshotQuery>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_snapshots(q.dataset.as_deref())?))
}

async fn list_vdbs(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_vdbs()?))
}

async fn provision_vdb(State(engine): State<Arc<Engine>>, body: Bytes) -> Result<impl IntoResponse> {
    let req: ProvisionVdb = parse_body(&body)?;
    Ok(accepted(engine.provision_vdb(req)?))
}

async fn get_vdb(State(engine): State<Arc<Engine>>, Path(vdb): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_vdb(&vdb)?))
}

async fn delete_vdb(State(engine): State<Arc<Engine>>, Path(vdb): Path<String>) -> Result<impl IntoResponse> {
    Ok(accepted(engine.delete_vdb(&vdb)?))
}

async fn snapshot_vdb(State(engine): State<Arc<Engine>>, Path(vdb): Path<String>) -> Result<impl IntoResponse> {
    Ok(accepted(engine.snapshot_vdb(&vdb)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ToBody {
    /// `SNAPSHOT-<n>`.
    to: Option<String>,
}

async fn refresh_vdb(State(engine): State<Arc<Engine>>, Path(vdb): Path<String>, body: Bytes) -> Result<impl IntoResponse> {
    let req: ToBody = if body.is_empty() { ToBody::default() } else { parse_body(&body)? };
    Ok(accepted(engine.refresh_vdb(&vdb, req.to.as_deref(), false)?))
}

async fn rewind_vdb(State(engine): State<Arc<Engine>>, Path(vdb): Path<String>, body: Bytes) -> Result<impl IntoResponse> {
    let req: ToBody = if body.is_empty() { ToBody::default() } else { parse_body(&body)? };
    Ok(accepted(engine.refresh_vdb(&vdb, req.to.as_deref(), true)?))
}

async fn list_mounts(State(engine): State<Arc<Engine>>) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_mounts()?))
}
