//! Errors of the SSH layer. Every variant names the host, port and user it
//! concerns; exec failures name the command (never variable values).

use std::fmt;
use std::time::Duration;

/// Who a connection is for: `user@host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or address, as given by the caller.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login name.
    pub user: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// How the caller tried to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A password.
    Password,
    /// A private key.
    PublicKey,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::Password => "password",
            AuthMethod::PublicKey => "public key",
        })
    }
}

/// The errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection was refused or failed.
    #[error("{target}: cannot reach host: {source}")]
    Unreachable {
        /// Who.
        target: Target,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connection did not complete in time.
    #[error("{target}: connection timed out after {after:?}")]
    ConnectTimeout {
        /// Who.
        target: Target,
        /// The timeout.
        after: Duration,
    },
    /// The TCP connection opened but no SSH banner came in time.
    #[error("{target}: no SSH banner within {after:?} (is an SSH server listening there?)")]
    BannerTimeout {
        /// Who.
        target: Target,
        /// The timeout.
        after: Duration,
    },
    /// Something answered that is not an SSH server.
    #[error("{target}: not an SSH server (it sent {first_line:?})")]
    NotSsh {
        /// Who.
        target: Target,
        /// What it sent first (at most 64 bytes).
        first_line: String,
    },
    /// The host's key is not the pinned one.
    #[error("{target}: host key changed: pinned {expected}, the host offered {actual}; refusing to connect")]
    HostKeyMismatch {
        /// Who.
        target: Target,
        /// The pinned fingerprint (`SHA256:...`).
        expected: String,
        /// The fingerprint the host offered.
        actual: String,
    },
    /// The server refused the credentials.
    #[error("{target}: authentication failed ({method} refused)")]
    AuthFailed {
        /// Who.
        target: Target,
        /// The method tried.
        method: AuthMethod,
    },
    /// The private key (or its passphrase) could not be read.
    #[error("{target}: cannot use the private key: {reason}")]
    InvalidKey {
        /// Who.
        target: Target,
        /// Why (never the key itself).
        reason: String,
    },
    /// A pinned host key could not be parsed.
    #[error("invalid pinned host key: {reason}")]
    InvalidHostKey {
        /// Why.
        reason: String,
    },
    /// The SSH handshake or an authentication step did not finish in time.
    #[error("{target}: {step} timed out after {after:?}")]
    Timeout {
        /// Who.
        target: Target,
        /// What was going on.
        step: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// An SSH protocol error or a lost connection.
    #[error("{target}: SSH error during {step}: {source}")]
    Ssh {
        /// Who.
        target: Target,
        /// What was going on.
        step: &'static str,
        /// The library's error.
        #[source]
        source: Box<russh::Error>,
    },
    /// A remote command could not be run (not: it ran and exited non-zero).
    #[error("{target}: cannot run `{command}`: {reason}")]
    Exec {
        /// Who.
        target: Target,
        /// The command (variables are not part of it).
        command: String,
        /// Why.
        reason: String,
    },
    /// `bash` is not installed (or not on the PATH) on the host.
    #[error("{target}: bash not found on the host (needed to run `{command}`)")]
    BashNotFound {
        /// Who.
        target: Target,
        /// The command that could not run.
        command: String,
    },
    /// A variable name is not a shell identifier.
    #[error("{target}: invalid variable name {name:?} for `{command}`")]
    InvalidVariableName {
        /// Who.
        target: Target,
        /// The command.
        command: String,
        /// The offending name (its value is never shown).
        name: String,
    },
    /// A path given to a sync is not usable.
    #[error("{target}: invalid sync path {path:?}: {reason}")]
    InvalidSyncPath {
        /// Who.
        target: Target,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A local program failed (rsync's local side).
    #[error("{target}: local command {argv:?} failed ({status}): {stderr}")]
    LocalCommand {
        /// Who the command was talking to.
        target: Target,
        /// The full argv.
        argv: Vec<String>,
        /// Exit status (`exit status: N` or a signal), or the spawn error.
        status: String,
        /// Its stderr (and the remote side's stderr, if any).
        stderr: String,
    },
}

impl Error {
    /// The target the error concerns, when it has one.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Error::Unreachable { target, .. }
            | Error::ConnectTimeout { target, .. }
            | Error::BannerTimeout { target, .. }
            | Error::NotSsh { target, .. }
            | Error::HostKeyMismatch { target, .. }
            | Error::AuthFailed { target, .. }
            | Error::InvalidKey { target, .. }
            | Error::Timeout { target, .. }
            | Error::Ssh { target, .. }
            | Error::Exec { target, .. }
            | Error::BashNotFound { target, .. }
            | Error::InvalidVariableName { target, .. }
            | Error::InvalidSyncPath { target, .. }
            | Error::LocalCommand { target, .. } => Some(target),
            Error::InvalidHostKey { .. } => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
