//! Runs Delphix Virtualization SDK plugins, as built by the real `dvp build`,
//! in CPython 3.11 worker processes, and checks everything a plugin brings
//! (artifact fields, schemas) or is given (user parameters).
//!
//! - [`artifact`]: parse and check artifact.json, extract its code.
//! - [`schema`]: the plugin's JSON schemas: install-time rules and
//!   validation of user parameters with the SDK's formats.
//! - [`operations`]: every operation of the contract as data, named by [`Op`].
//! - [`requests`]: requests built from typed inputs, results read back,
//!   the one place that knows each SDK generation's shapes.
//! - [`host`] and [`worker`]: worker processes, deadlines, restarts.
//! - [`libs`]: library callbacks the plugin makes while it runs.
//! - [`logs`]: the plugin's debug/info/error streams.
//! - [`sandbox`]: how workers are confined.
//!
//! Architecture invariant: plugin code never runs in the engine's process;
//! this crate knows nothing of SQL, HTTP or the storage pool.

pub mod artifact;
pub mod error;
pub mod host;
pub mod libs;
pub mod logs;
pub mod operations;
pub mod requests;
pub mod sandbox;
pub mod schema;
pub mod worker;

pub use artifact::{Artifact, ArtifactError, BuildNumber, Language, MAX_ARTIFACT_BYTES};
pub use error::InvokeError;
pub use host::{HostConfig, LoadedPlugin, PluginHost, NO_PYTHON27, WORKER_SCRIPT};
pub use libs::{LibraryCall, LibraryHandler};
pub use logs::{LogContext, LogPage, LogReadError, PluginLog, DEFAULT_TAIL, MAX_TAIL};
pub use operations::{Op, Operation};
pub use sandbox::{SandboxConfig, SandboxError};
pub use worker::{CallContext, LogSink};
