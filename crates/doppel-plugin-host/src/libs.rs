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

/// `run_bash`'s (and `run_expect`'s) answer: a `RunBashResult`.
pub fn command_result(exit_code: i32, stdout: &str, stderr: &str) -> Value {
    json!({"return_value": {"exit_code": exit_code, "stdout": stdout, "stderr": stderr}})
}

/// The answer of a callback that returns nothing (`run_sync`).
pub fn empty_result() -> Value {
    json!({"return_value": {}})
}

/// Credentials as `retrieve_credentials` answers them (`CredentialsResult`).
#[derive(Debug, Clone)]
pub enum Credentials {
    Password {
        username: String,
        password: String,
    },
    KeyPair {
        username: String,
        private_key: String,
        public_key: String,
    },
}

/// `retrieve_credentials`'s answer.
pub fn credentials_result(c: &Credentials) -> Value {
    match c {
        Credentials::Password { username, password } => {
            json!({"return_value": {"username": username, "password": password}})
        }
        Credentials::KeyPair {
            username,
            private_key,
            public_key,
        } => json!({"return_value": {"username": username,
            "key_pair": {"private_key": private_key, "public_key": public_key}}}),
    }
}

/// `upgrade_password`'s answer: the credentials supplier a migration
/// stores in place of a plain password.
pub fn upgrade_password_result(password: &str, username: Option<&str>) -> Value {
    let mut supplier = json!({"type": "NamedPasswordCredential", "password": password});
    if let Some(user) = username {
        supplier["username"] = json!(user);
    }
    json!({"return_value": {"credentials_supplier": supplier}})
}
