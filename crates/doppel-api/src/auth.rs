//! Authentication of `/api/v1`: every route but `/api/v1/health`,
//! `/api/v1/openapi.json` and `/api/v1/login` needs `Authorization: Bearer <token>` (from `POST
//! /api/v1/login`); and the users routes (administrators only).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use doppel_engine::auth::{Principal, TokenKind};
use doppel_engine::{Engine, EngineError};
use doppel_model::{
    AddUser, ApiError, ApiUser, ErrorCode, Grant, GrantRequest, LoginRequest, LoginResponse, Role,
    SetRole,
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{parse_body, rights, Failure, Result};

/// Largest body the login and user routes read.
pub(crate) const MAX_SMALL_BODY: usize = 64 * 1024;

/// Routes that need no token.
const OPEN_ROUTES: &[&str] = &["/api/v1/health", "/api/v1/login", "/api/v1/openapi.json"];

pub(crate) fn routes() -> OpenApiRouter<Arc<Engine>> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(whoami))
        .routes(routes!(list_users, add_user))
        .routes(routes!(delete_user))
        .routes(routes!(set_user_role))
        .routes(routes!(list_grants, add_grant, delete_grant))
}

/// The client's address, for the brake on failed logins.
pub(crate) fn peer(req_ext: &axum::http::Extensions) -> String {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// An engine error as an answer; a rate-limited login also says when to retry.
pub(crate) fn engine_failure(e: EngineError) -> Response {
    let retry = match &e {
        EngineError::RateLimited { retry_after, .. } => Some(*retry_after),
        _ => None,
    };
    let mut resp = Failure::from(e).into_response();
    if let Some(s) = retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(message: &str) -> Response {
    let err = ApiError {
        code: ErrorCode::Unauthorized,
        message: message.into(),
        action: Some("log in with `doppel login --user NAME` (or set DOPPEL_TOKEN)".into()),
        details: Vec::new(),
        output: None,
        correlation_id: None,
    };
    let mut resp = Failure(err).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Middleware: a valid API token for every `/api/v1` route but the open ones,
/// and the role the route needs (see `rights`); the user the token names
/// goes into the request's extensions as a [`Principal`].
pub(crate) async fn require_token(
    State(engine): State<Arc<Engine>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let guarded = path.starts_with("/api/v1/") || path == crate::METRICS_PATH;
    if !guarded || OPEN_ROUTES.contains(&path) {
        return next.run(req).await;
    }
    let Some(token) = bearer(req.headers()) else {
        return unauthorized("this endpoint needs a token: send `Authorization: Bearer <token>`");
    };
    let who = match engine.authenticate(token, &TokenKind::Api) {
        Ok(who) => who,
        Err(EngineError::Unauthorized(m)) => return unauthorized(&m),
        Err(e) => return engine_failure(e),
    };
    // Unrouted paths fall through to the not-found answer.
    if let Some(route) = req.extensions().get::<MatchedPath>() {
        let needed = match rights::rule(req.method(), route.as_str()) {
            Some(rule) => rule.role(),
            // Fail closed: a route nobody gave a rule is nobody's.
            None => Some(Role::Admin),
        };
        if let Some(min) = needed {
            let what = format!("{} {}", req.method(), route.as_str());
            if let Err(e) = doppel_engine::access::require_role(&who, min, &what) {
                return engine_failure(e);
            }
        }
    }
    req.extensions_mut().insert(who);
    next.run(req).await
}

/// Checks a password and answers a bearer token; needs no token. Failed
/// logins are braked per client (`429` with `Retry-After`).
#[utoipa::path(post, path = "/api/v1/login", tag = "auth", security(()), request_body = LoginRequest,
    responses((status = 200, body = LoginResponse)))]
async fn login(State(engine): State<Arc<Engine>>, req: Request) -> Response {
    let peer = peer(req.extensions());
    let body = match axum::body::to_bytes(req.into_body(), MAX_SMALL_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Failure::invalid("body", format!("larger than {MAX_SMALL_BODY} bytes"))
                .into_response()
        }
    };
    let body: LoginRequest = match parse_body(&body) {
        Ok(b) => b,
        Err(f) => return f.into_response(),
    };
    let who = match engine.login(&body.user, &body.password, &peer).await {
        Ok(w) => w,
        Err(e) => return engine_failure(e),
    };
    match engine.issue_token(&who, TokenKind::Api) {
        Ok(t) => Json(LoginResponse {
            token: t.token,
            expires_at: t.expires_at,
            user: who.to_api(),
        })
        .into_response(),
        Err(e) => engine_failure(e),
    }
}

/// Revokes the token sent.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth", responses((status = 204, description = "Logged out")))]
async fn logout(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    if let Some(t) = bearer(&headers) {
        engine.revoke_token(t)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth", responses((status = 200, body = ApiUser)))]
async fn whoami(Extension(who): Extension<Principal>) -> impl IntoResponse {
    Json(who.to_api())
}

/// Administrators only.
#[utoipa::path(get, path = "/api/v1/users", tag = "auth", responses((status = 200, body = Vec<ApiUser>)))]
async fn list_users(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
) -> Result<impl IntoResponse> {
    Ok(Json(engine.list_users(&who)?))
}

/// Administrators only.
#[utoipa::path(post, path = "/api/v1/users", tag = "auth", request_body = AddUser,
    responses((status = 201, body = ApiUser)))]
async fn add_user(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    if body.len() > MAX_SMALL_BODY {
        return Err(Failure::invalid(
            "body",
            format!("larger than {MAX_SMALL_BODY} bytes"),
        ));
    }
    let req: AddUser = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(engine.add_user(&who, req).await?)))
}

/// Administrators only.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "auth",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = DeletedUser)))]
async fn delete_user(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse> {
    engine.delete_user(&who, &name)?;
    Ok(Json(DeletedUser { deleted: name }))
}

/// Administrators only; the last administrator keeps the role.
#[utoipa::path(put, path = "/api/v1/users/{name}/role", tag = "auth", request_body = SetRole,
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, body = ApiUser)))]
async fn set_user_role(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let req: SetRole = parse_body(&body)?;
    Ok(Json(engine.set_user_role(&who, &name, req.role)?))
}

/// Answer of `DELETE /api/v1/users/{name}`.
#[derive(Serialize, ToSchema)]
struct DeletedUser {
    /// The user's name.
    deleted: String,
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GrantQuery {
    /// Only rights on this object (a reference or `KIND:NAME`).
    object: Option<String>,
    /// Only rights of this user.
    user: Option<String>,
}

/// Rights of users on objects.
#[utoipa::path(get, path = "/api/v1/grants", tag = "auth", params(GrantQuery),
    responses((status = 200, body = Vec<Grant>)))]
async fn list_grants(
    State(engine): State<Arc<Engine>>,
    axum::extract::Query(q): axum::extract::Query<GrantQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(
        engine.list_grants(q.object.as_deref(), q.user.as_deref())?,
    ))
}

/// Gives a user a right on an object (its owners and administrators may).
#[utoipa::path(post, path = "/api/v1/grants", tag = "auth", request_body = GrantRequest,
    responses((status = 201, body = Grant)))]
async fn add_grant(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let req: GrantRequest = parse_body(&body)?;
    Ok((StatusCode::CREATED, Json(engine.grant(&who, &req)?)))
}

/// Takes a user's right on an object away (its owners and administrators may).
#[utoipa::path(delete, path = "/api/v1/grants", tag = "auth", request_body = GrantRequest,
    responses((status = 200, description = "What was revoked", body = GrantRequest)))]
async fn delete_grant(
    State(engine): State<Arc<Engine>>,
    Extension(who): Extension<Principal>,
    body: Bytes,
) -> Result<impl IntoResponse> {
    let req: GrantRequest = parse_body(&body)?;
    engine.revoke(&who, &req)?;
    Ok(Json(req))
}
