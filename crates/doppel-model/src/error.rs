//! The one error shape every API answer uses, shared by server and client.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. Scripts match on these, so a code
/// is never renamed once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request itself is malformed or breaks a rule (HTTP 400).
    InvalidInput,
    /// An uploaded plugin artifact was refused (HTTP 400).
    InvalidArtifact,
    /// Parameters break the plugin's schema (HTTP 400).
    InvalidParameters,
    /// No such object (HTTP 404).
    NotFound,
    /// The object is busy or the request conflicts with its state (HTTP 409).
    Conflict,
    /// The plugin refused the operation with a UserError (HTTP 422).
    PluginUserError,
    /// The plugin failed: an uncaught exception, a runtime or library error (HTTP 502).
    PluginFailed,
    /// A user hook exited non-zero; its output is in the error (HTTP 422).
    HookFailed,
    /// The plugin did not answer within the operation's deadline (HTTP 504).
    PluginTimeout,
    /// A host could not be reached, refused the login or its key changed (HTTP 502).
    HostFailed,
    /// The storage pool refused the change, e.g. not enough free space (HTTP 507).
    PoolFull,
    /// A bug or an environment problem on the engine's side (HTTP 500).
    Internal,
    /// No token, or a token or password that is wrong or expired (HTTP 401).
    Unauthorized,
    /// Authenticated, but not allowed to do this, e.g. not an administrator (HTTP 403).
    Forbidden,
    /// Too many failed logins; wait before trying again (HTTP 429).
    RateLimited,
    /// The request body is larger than the endpoint accepts (HTTP 413).
    PayloadTooLarge,
    /// The endpoint exists but not with this HTTP method (HTTP 405).
    MethodNotAllowed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::InvalidArtifact => "invalid_artifact",
            ErrorCode::InvalidParameters => "invalid_parameters",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PluginUserError => "plugin_user_error",
            ErrorCode::PluginFailed => "plugin_failed",
            ErrorCode::PluginTimeout => "plugin_timeout",
            ErrorCode::HookFailed => "hook_failed",
            ErrorCode::HostFailed => "host_failed",
            ErrorCode::PoolFull => "pool_full",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// Body of every error answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub code: ErrorCode,
    /// One human sentence saying what went wrong.
    pub message: String,
    /// What the user can do about it, when known (a plugin's UserError action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Each separate problem, e.g. every schema violation with its field path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Longer output for logs: a plugin's call stack or UserError output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// For internal errors: the id under which the engine logged the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        for d in &self.details {
            write!(f, "\n  - {d}")?;
        }
        if let Some(a) = &self.action {
            write!(f, "\naction: {a}")?;
        }
        Ok(())
    }
}
