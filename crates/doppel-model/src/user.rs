//! Users of the engine's API and how they log in.

use serde::{Deserialize, Serialize};

/// A user of the API (not a host user: those belong to environments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiUser {
    pub name: String,
    /// Administrators may add and delete users.
    pub admin: bool,
    /// RFC 3339 time the user was added.
    pub created_at: String,
}

/// Body of `POST /api/v1/login`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

/// Answer of `POST /api/v1/login`: a bearer token for `Authorization`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    pub token: String,
    /// When the token stops working (RFC 3339, UTC).
    pub expires_at: String,
    pub user: ApiUser,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    pub name: String,
    pub password: String,
    #[serde(default)]
    pub admin: bool,
}
