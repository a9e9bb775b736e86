//! Environments (hosts the engine manages over SSH), their users, and the
//! repositories and source configs found on them.

use serde::{Deserialize, Serialize};

/// A Unix host the engine reaches over SSH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    /// `UNIX_HOST_ENVIRONMENT-<n>`: plugins check this format.
    pub reference: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub toolkit_path: String,
    pub scratch_path: String,
    /// `SHA256:...` of the host key pinned on first contact.
    pub host_key_fingerprint: String,
    pub users: Vec<EnvironmentUser>,
    pub created_at: String,
}

/// An OS account on an environment's host. Its secret is never returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvironmentUser {
    /// `HOST_USER-<n>`.
    pub reference: String,
    pub name: String,
    /// `password` or `key`.
    pub auth: String,
    /// Operations run as the primary user unless told otherwise.
    pub primary: bool,
}

/// A plugin's "data dependency" found on a host (a DBMS install, a Unix box).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Repository {
    /// `REPOSITORY-<n>`.
    pub reference: String,
    pub environment: String,
    pub plugin: String,
    /// From the schema's nameField.
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: serde_json::Value,
}

/// One dataset on a host, discovered or added by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceConfig {
    /// `SOURCE_CONFIG-<n>`.
    pub reference: String,
    pub repository: String,
    pub environment: String,
    pub plugin: String,
    pub name: String,
    /// With secrets (`format: password`) redacted.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: serde_json::Value,
    /// False when added by hand: kept across discovery refreshes.
    pub discovered: bool,
}

/// How a new environment user logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UserCredentials {
    Password {
        password: String,
    },
    Key {
        private_key: String,
        passphrase: Option<String>,
    },
}

/// `POST /api/v1/environments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddEnvironment {
    pub name: String,
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    pub credentials: UserCredentials,
    /// Defaults to `~/.doppel/toolkit` of the primary user.
    #[serde(default)]
    pub toolkit_path: Option<String>,
}

fn default_port() -> u16 {
    22
}

/// `POST /api/v1/environments/{env}/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddEnvironmentUser {
    pub name: String,
    pub credentials: UserCredentials,
}

/// `POST /api/v1/sourceconfigs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddSourceConfig {
    pub repository: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: serde_json::Value,
}
