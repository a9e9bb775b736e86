//! `/api/v1/bookmarks` and a VDB's `protection` and `expiry`. Changing a
//! bookmark needs the owner right on its snapshot's dSource or VDB;
//! protecting or expiring a VDB, on that VDB.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use doppel_engine::access::Need;
use doppel_engine::auth::Principal;
use doppel_engine::Engine;
use doppel_model::{AddBookmark, Bookmark, ExpireVdb, ProtectVdb, Right, Vdb};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{ApiBody, ApiPath, ApiQuery};
use crate::{parse_body, parse_optional_body, Result};

pub(crate) fn routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(list_bookmarks, add_bookmark))
        .routes(routes!(get_bookmark, delete_bookmark))
        .routes(routes!(protect_vdb, unprotect_vdb))
        .routes(routes!(expire_vdb, unexpire_vdb))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BookmarkQuery {
    /// Only the bookmarks of this dSource or VDB.
    dataset: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/bookmarks", tag = "policies", params(BookmarkQuery),
    responses((status = 200, body = Vec<Bookmark>)))]
async fn list_bookmarks(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<BookmarkQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_bookmarks(q.dataset.as_deref())?))
}

/// Puts a name on a snapshot; it pins the snapshot against retention
/// until it expires.
#[utoipa::path(post, path = "/api/v1/bookmarks", tag = "policies", request_body = AddBookmark,
    responses((status = 201, body = Bookmark)))]
async fn add_bookmark(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: AddBookmark = parse_body(&body)?;
    let snapshot = engine.resolve_snapshot(&req.snapshot)?;
    engine.authorize(&who, &[Need::Snapshot(&snapshot, Right::Owner)])?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(engine.add_bookmark(&req)?),
    ))
}

#[utoipa::path(get, path = "/api/v1/bookmarks/{bookmark}", tag = "policies",
    params(("bookmark" = String, Path, description = "BOOKMARK-<n>, DATASET@NAME, or a name only one dataset has")),
    responses((status = 200, body = Bookmark)))]
async fn get_bookmark(
    State(engine): State<Arc<Engine>>,
    ApiPath(bookmark): ApiPath<String>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.get_bookmark(&bookmark)?))
}

#[utoipa::path(delete, path = "/api/v1/bookmarks/{bookmark}", tag = "policies",
    params(("bookmark" = String, Path, description = "BOOKMARK-<n>, DATASET@NAME, or a name only one dataset has")),
    responses((status = 200, description = "The deleted bookmark", body = Bookmark)))]
async fn delete_bookmark(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(bookmark): ApiPath<String>,
) -> Result<impl IntoResponse> {
    let snapshot = engine.bookmark_snapshot_ref(&bookmark)?;
    engine.authorize(&who, &[Need::Snapshot(&snapshot, Right::Owner)])?;
    Ok(Json(engine.delete_bookmark(&bookmark)?))
}

/// Protects a VDB against deletion (by anyone, administrators included),
/// until a time or until unprotected.
#[utoipa::path(post, path = "/api/v1/vdbs/{vdb}/protection", tag = "policies",
    params(("vdb" = String, Path, description = "VDB reference or name")),
    request_body(content = Option<ProtectVdb>), responses((status = 200, body = Vdb)))]
async fn protect_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: ProtectVdb = parse_optional_body(&body)?;
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(Json(engine.protect_vdb(&vdb, &req)?))
}

#[utoipa::path(delete, path = "/api/v1/vdbs/{vdb}/protection", tag = "policies",
    params(("vdb" = String, Path, description = "VDB reference or name")),
    responses((status = 200, body = Vdb)))]
async fn unprotect_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(Json(engine.unprotect_vdb(&vdb)?))
}

/// Sets when the scheduler deletes the VDB (a warning is recorded 24 h
/// before); a protected VDB is not deleted then.
#[utoipa::path(put, path = "/api/v1/vdbs/{vdb}/expiry", tag = "policies",
    params(("vdb" = String, Path, description = "VDB reference or name")),
    request_body = ExpireVdb, responses((status = 200, body = Vdb)))]
async fn expire_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
    body: ApiBody,
) -> Result<impl IntoResponse> {
    let req: ExpireVdb = parse_body(&body)?;
    if req.at.is_none() && req.after.is_none() {
        return Err(crate::Failure::invalid(
            "at",
            "give at (RFC 3339) or after (a duration); DELETE the expiry to remove it",
        ));
    }
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(Json(engine.expire_vdb(&vdb, &req)?))
}

/// Removes the VDB's expiry.
#[utoipa::path(delete, path = "/api/v1/vdbs/{vdb}/expiry", tag = "policies",
    params(("vdb" = String, Path, description = "VDB reference or name")),
    responses((status = 200, body = Vdb)))]
async fn unexpire_vdb(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    ApiPath(vdb): ApiPath<String>,
) -> Result<impl IntoResponse> {
    engine.authorize(&who, &[Need::Vdb(&vdb, Right::Owner)])?;
    Ok(Json(engine.expire_vdb(&vdb, &ExpireVdb::default())?))
}
