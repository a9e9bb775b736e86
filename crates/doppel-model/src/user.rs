//! Users of the engine's API and how they log in.

use serde::{Deserialize, Serialize};

/// What a user of the API may do in general; what they may do to one
/// object also depends on their [`Right`]s on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Auditor,
    /// Adds environments, links dSources and provisions VDBs, and acts on
    /// the objects they own or were granted.
    Operator,
    /// Everything: users, plugins (whose code runs on the engine), every object.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "auditor" => Some(Role::Auditor),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user's right on one object (environment, dSource, VDB or plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Right {
    /// May use the object as a source or a place: provision or link from
    /// it, provision onto it, export from it.
    Provisioner,
    /// Everything a provisioner may do, and change, delete, set hooks on
    /// and grant rights on the object. Whoever creates an object owns it.
    Owner,
}

impl Right {
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Provisioner => "provisioner",
            Right::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Right> {
        match s {
            "provisioner" => Some(Right::Provisioner),
            "owner" => Some(Right::Owner),
            _ => None,
        }
    }
}

impl std::fmt::Display for Right {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A right of one user on one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    /// The object's reference: `UNIX_HOST_ENVIRONMENT-<n>`, `DSOURCE-<n>`,
    /// `VDB-<n>` or a plugin id.
    pub object: String,
    /// The object's kind and name, for people: `vdb dev`.
    pub object_name: String,
    pub user: String,
    pub right: Right,
    /// RFC 3339 time the right was granted.
    pub granted_at: String,
}

/// Body of `POST /api/v1/grants` and `DELETE /api/v1/grants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// A reference (`VDB-3`, `DSOURCE-1`, `UNIX_HOST_ENVIRONMENT-2`, a plugin
    /// id) or `KIND:NAME` with KIND one of `env`, `dsource`, `vdb`, `plugin`.
    pub object: String,
    pub user: String,
    /// Required when granting; ignored when revoking (a user holds one right per object).
    #[serde(default)]
    pub right: Option<Right>,
}

/// A user of the API (not a host user: those belong to environments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiUser {
    pub name: String,
    pub role: Role,
    /// Whether the role is `admin` (kept for older clients).
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

/// Body of `PUT /api/v1/users/{name}/role`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    pub role: Role,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddUser {
    pub name: String,
    pub password: String,
    /// Default `operator`.
    #[serde(default)]
    pub role: Option<Role>,
    /// The same as `role: admin` (kept for older clients).
    #[serde(default)]
    pub admin: bool,
}
