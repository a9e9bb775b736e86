//! Library callbacks (contract §3): what a plugin asks of the engine while
//! one of its operations runs.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};

/// One callback from plugin code.
#[derive(Debug)]
pub struct LibraryCall<'a> {
    /// `run_bash`, `run_expect`, `run_sync`, `run_powershell`,
    /// `retrieve_credentials` or `upgrade_password`.
    pub method: &'a str,
    /// The `*Request` message as proto JSON.
    pub request: Value,
    pub job: Option<&'a str>,
    /// Where `run_sync` copies to, when the running operation has a target.
    pub sync_target: Option<&'a std::path::Path>,
    /// Made by a migration during a plugin upgrade.
    pub upgrading: bool,
}

/// Answers library callbacks with the method's `*Response` as proto JSON.
pub trait LibraryHandler: Send + Sync {
    fn call<'a>(
        &'a self,
        call: LibraryCall<'a>,
    ) -> Pin<Box<dyn Future<Output = Value> + Send + 'a>>;
}

/// An actionable library error: the plugin sees a catchable `LibraryError`.
pub fn actionable_error(id: i32, message: impl Into<String>) -> Value {
    json!({"error": {"actionable_error": {"id": id, "message": message.into()}}})
}
