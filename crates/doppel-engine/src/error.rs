//! The engine's error type: every failure carries what a user needs to act,
//! and maps to exactly one API error code.

use doppel_model::{ApiError, ErrorCode};
use doppel_plugin_host::{ArtifactError, InvokeError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    InvalidArtifact(#[from] ArtifactError),
    #[error("{field}: {reason}")]
    InvalidInput { field: String, reason: String },
    #[error("{what} do not match the plugin's schema")]
    InvalidParameters {
        what: String,
        violations: Vec<String>,
    },
    #[error("no {kind} named {id:?}")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Plugin(#[from] InvokeError),
    #[error(transparent)]
    Store(#[from] doppel_store::StoreError),
    #[error(transparent)]
    Host(#[from] doppel_remote::Error),
    #[error("storage pool: {0}")]
    Storage(#[from] doppel_storage::StorageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
    /// The pool is past a capacity threshold (the message names both figures).
    #[error("{0}")]
    PoolFull(String),
    /// A user hook exited non-zero.
    #[error("the {point} hook failed (exit {exit_code})")]
    HookFailed {
        point: String,
        exit_code: i32,
        output: String,
    },
    /// The job was canceled at a step boundary.
    #[error("canceled")]
    Canceled,
    /// No credentials, or wrong or expired ones.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins from one place for one user.
    #[error("too many failed logins for {user:?}; try again in {retry_after} s")]
    RateLimited { user: String, retry_after: u64 },
}

impl EngineError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
        let context = context.into();
        move |source| EngineError::Io { context, source }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::InvalidArtifact(ArtifactError::Extract { .. }) => ErrorCode::Internal,
            EngineError::InvalidArtifact(_) => ErrorCode::InvalidArtifact,
            EngineError::InvalidInput { .. } => ErrorCode::InvalidInput,
            EngineError::InvalidParameters { .. } => ErrorCode::InvalidParameters,
            EngineError::NotFound { .. } => ErrorCode::NotFound,
            EngineError::Conflict(_)
            | EngineError::Canceled
            | EngineError::Plugin(InvokeError::Stopped { .. }) => ErrorCode::Conflict,
            EngineError::HookFailed { .. } => ErrorCode::HookFailed,
            EngineError::Plugin(e) => match e {
                InvokeError::User { .. } => ErrorCode::PluginUserError,
                InvokeError::Deadline { .. } => ErrorCode::PluginTimeout,
                InvokeError::NotImplemented { .. } | InvokeError::UnknownOperation { .. } => {
                    ErrorCode::InvalidInput
                }
                // A plugin that cannot load is refused at install: the artifact is at fault.
                InvokeError::Load { .. } => ErrorCode::InvalidArtifact,
                InvokeError::Start(_) | InvokeError::Sandbox(_) | InvokeError::Protocol(_) => {
                    ErrorCode::Internal
                }
                // The plugin let the engine's "host does not answer" through.
                InvokeError::UnhandledLibrary { error_id, .. }
                    if i64::from(*error_id) == i64::from(crate::hosts::HOST_LIBRARY_ERROR_ID) =>
                {
                    ErrorCode::HostFailed
                }
                _ => ErrorCode::PluginFailed,
            },
            EngineError::Host(doppel_remote::Error::InvalidHostKey { .. }) => ErrorCode::Internal,
            EngineError::Host(_) => ErrorCode::HostFailed,
            EngineError::Storage(e) => match e {
                doppel_storage::StorageError::InsufficientSpace { .. } => ErrorCode::PoolFull,
                doppel_storage::StorageError::InvalidId { .. } => ErrorCode::InvalidInput,
                doppel_storage::StorageError::VolumeNotFound(_)
                | doppel_storage::StorageError::SnapshotNotFound { .. } => ErrorCode::NotFound,
                doppel_storage::StorageError::VolumeExists(_)
                | doppel_storage::StorageError::SnapshotExists { .. }
                | doppel_storage::StorageError::HasSnapshots { .. } => ErrorCode::Conflict,
                _ => ErrorCode::Internal,
            },
            EngineError::Store(
                doppel_store::StoreError::Taken { .. } | doppel_store::StoreError::Changed(_),
            ) => ErrorCode::Conflict,
            EngineError::Store(_) | EngineError::Io { .. } | EngineError::Internal(_) => {
                ErrorCode::Internal
            }
            EngineError::PoolFull(_) => ErrorCode::PoolFull,
            EngineError::Unauthorized(_) => ErrorCode::Unauthorized,
            EngineError::Forbidden(_) => ErrorCode::Forbidden,
            EngineError::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }

    /// The API's view of this error, as a user is shown it: an internal
    /// error gets a correlation id that is logged with the whole error
    /// (`what` says what failed), so the answer says only what the log can
    /// be searched for. Requests and jobs both report through this.
    pub fn report(&self, what: &str) -> ApiError {
        let mut api = self.to_api();
        if api.code == ErrorCode::Internal {
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            tracing::error!(correlation_id = %id, error = %self, "{what} failed");
            api.message = format!("internal error (correlation id {id}): {}", api.message);
            api.correlation_id = Some(id);
        }
        api
    }

    /// The API's view of this error.
    pub fn to_api(&self) -> ApiError {
        let mut err = ApiError {
            code: self.code(),
            message: self.to_string(),
            action: None,
            details: Vec::new(),
            output: None,
            correlation_id: None,
        };
        match self {
            EngineError::InvalidArtifact(a) => err.details = a.details(),
            EngineError::InvalidParameters { violations, .. } => err.details = violations.clone(),
            EngineError::Plugin(InvokeError::User { action, output, .. }) => {
                err.action = Some(action.clone()).filter(|a| !a.is_empty());
                err.output = Some(output.clone()).filter(|o| !o.is_empty());
            }
            EngineError::Plugin(e) => {
                err.output = e.detail().map(str::to_owned).filter(|d| !d.is_empty())
            }
            EngineError::HookFailed { output, .. } => {
                err.output = Some(output.clone()).filter(|o| !o.is_empty())
            }
            _ => {}
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unhandled_host_library_error_is_a_host_failure() {
        let unhandled = |error_id| {
            EngineError::Plugin(InvokeError::UnhandledLibrary {
                error_id,
                message: "connecting to 10.0.0.9:22: connection refused".into(),
                call_stack: String::new(),
            })
        };
        let id = crate::hosts::HOST_LIBRARY_ERROR_ID as u32;
        assert_eq!(unhandled(id).code(), ErrorCode::HostFailed);
        assert_eq!(unhandled(1).code(), ErrorCode::PluginFailed);
    }
}
