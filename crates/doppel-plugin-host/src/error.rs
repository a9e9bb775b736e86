//! What can go wrong when the engine calls a plugin.

use std::time::Duration;

/// How a plugin operation failed, from the plugin's own `PluginErrorResult`
/// (contract §2.4) or from the engine's side of the worker.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The plugin raised `UserError`: the user can act on it.
    #[error("{message}")]
    User {
        message: String,
        action: String,
        output: String,
    },
    /// A library call failed and the plugin did not catch it.
    #[error("the plugin did not handle a library error (id {error_id}): {message}")]
    UnhandledLibrary {
        error_id: u32,
        message: String,
        call_stack: String,
    },
    /// The SDK wrappers rejected what the plugin did (wrong return type...).
    #[error("plugin runtime error: {message}")]
    Runtime { message: String, call_stack: String },
    /// The plugin's generated schema classes refused a value.
    #[error("plugin schema class error: {message}")]
    GeneratedClasses { message: String, call_stack: String },
    /// Any other exception escaping the plugin, `SystemExit` included.
    #[error("the plugin raised {exception_type}: {message}")]
    Generic {
        exception_type: String,
        message: String,
        call_stack: String,
    },
    /// The plugin's manifest says it does not implement this operation.
    #[error("plugin {plugin} does not implement {operation}")]
    NotImplemented { plugin: String, operation: String },
    /// No such operation in the contract, or it does not apply to this kind of plugin.
    #[error("unknown operation {operation:?} for plugin {plugin}; operations look like linked.staged_pre_snapshot")]
    UnknownOperation { plugin: String, operation: String },
    /// The worker did not answer in time and was killed; the next call starts a new one.
    #[error("{operation} did not finish within its deadline of {}s; the plugin worker was killed and will be restarted on the next call", .deadline.as_secs_f64())]
    Deadline {
        operation: String,
        deadline: Duration,
    },
    /// The worker process exited or was killed while working.
    #[error("the plugin worker died during {operation} ({status}); it will be restarted on the next call.{}", tail_suffix(.stderr_tail))]
    WorkerDied {
        operation: String,
        status: String,
        stderr_tail: String,
    },
    /// The plugin's code could not be imported.
    #[error("the plugin cannot be loaded: {exception_type}: {message}")]
    Load {
        exception_type: String,
        message: String,
        call_stack: String,
    },
    /// The worker could not be started at all (no Python, wrong packages).
    #[error("cannot start the plugin worker: {0}")]
    Start(String),
    /// The worker wrote a protocol line longer than the engine reads; it was killed.
    #[error("the plugin worker sent a protocol line longer than {limit} MiB during {operation}; it was killed and will be restarted on the next call (an operation's input and output may not exceed 4 MiB)")]
    OutputLimit { operation: String, limit: usize },
    /// The worker could not be confined (`--plugin-sandbox on`).
    #[error("cannot start the plugin worker in its sandbox: {0}")]
    Sandbox(String),
    /// The plugin version was deleted or upgraded while the call waited for a worker.
    #[error(
        "plugin {plugin} was deleted or upgraded while this call waited for a worker; run it again"
    )]
    Stopped { plugin: String },
    /// The worker said something the protocol does not allow: an engine bug.
    #[error("plugin worker protocol error: {0}")]
    Protocol(String),
}

fn tail_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(" Last output:\n{tail}")
    }
}

impl InvokeError {
    /// The call stack or output worth keeping in the plugin's error log.
    pub fn detail(&self) -> Option<&str> {
        match self {
            InvokeError::User { output, .. } => Some(output),
            InvokeError::UnhandledLibrary { call_stack, .. }
            | InvokeError::Runtime { call_stack, .. }
            | InvokeError::GeneratedClasses { call_stack, .. }
            | InvokeError::Generic { call_stack, .. }
            | InvokeError::Load { call_stack, .. } => Some(call_stack),
            InvokeError::WorkerDied { stderr_tail, .. } => Some(stderr_tail),
            _ => None,
        }
    }

    /// Maps a `PluginErrorResult` JSON object (one key set) to an error.
    pub(crate) fn from_plugin_error(err: &serde_json::Value) -> InvokeError {
        let s = |v: &serde_json::Value, k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        if let Some(e) = err.get("user_error") {
            return InvokeError::User {
                message: s(e, "message"),
                action: s(e, "action"),
                output: s(e, "output"),
            };
        }
        if let Some(e) = err.get("unhandled_library_error") {
            return InvokeError::UnhandledLibrary {
                error_id: e.get("error_id").and_then(|x| x.as_u64()).unwrap_or(0) as u32,
                message: s(e, "message"),
                call_stack: s(e, "call_stack"),
            };
        }
        if let Some(e) = err.get("plugin_runtime_error") {
            return InvokeError::Runtime {
                message: s(e, "message"),
                call_stack: s(e, "call_stack"),
            };
        }
        if let Some(e) = err.get("generated_classes_error") {
            return InvokeError::GeneratedClasses {
                message: s(e, "message"),
                call_stack: s(e, "call_stack"),
            };
        }
        if let Some(e) = err.get("generic_plugin_error") {
            return InvokeError::Generic {
                exception_type: s(e, "type"),
                message: s(e, "message"),
                call_stack: s(e, "call_stack"),
            };
        }
        InvokeError::Protocol(format!("unrecognised plugin error {err}"))
    }
}
