//! Reaching environments: resolving references to records, logging in with
//! the stored (encrypted) credentials over pinned host keys, and answering
//! plugin library callbacks (`run_bash`, `run_expect`, ...) on the host the
//! plugin names.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use doppel_plugin_host::libs::actionable_error;
use doppel_plugin_host::{LibraryCall, LibraryHandler};
use doppel_remote::{Connection, Credentials, HostKey, HostKeyPolicy};
use doppel_store::{EnvironmentRecord, EnvironmentUserRecord, Store};
use serde_json::{json, Value};

use crate::secrets::SecretBox;
use crate::EngineError;

pub const ENVIRONMENT_PREFIX: &str = "UNIX_HOST_ENVIRONMENT-";
pub const HOST_PREFIX: &str = "UNIX_HOST-";
pub const USER_PREFIX: &str = "HOST_USER-";

/// The id of the actionable library error a plugin sees when a callback
/// could not reach or talk to its host. A plugin that does not catch it
/// fails its operation as `host_failed`, not as a plugin fault.
pub const HOST_LIBRARY_ERROR_ID: i32 = 2;

/// Why a library callback failed: its host, or anything else (bad request,
/// unknown environment...), which the plugin sees with id 1.
#[derive(Debug)]
enum CallbackError {
    Host(String),
    Other(String),
}

impl From<String> for CallbackError {
    fn from(m: String) -> Self {
        CallbackError::Other(m)
    }
}

impl From<&str> for CallbackError {
    fn from(m: &str) -> Self {
        CallbackError::Other(m.to_owned())
    }
}

/// Sorts an engine or SSH failure of a callback by whether the host is at fault.
fn callback_error(e: impl Into<EngineError>) -> CallbackError {
    let e = e.into();
    if e.code() == doppel_model::ErrorCode::HostFailed {
        CallbackError::Host(e.to_string())
    } else {
        CallbackError::Other(e.to_string())
    }
}

/// `PREFIX<n>` → n.
pub fn parse_ref(reference: &str, prefix: &str) -> Option<i64> {
    reference.strip_prefix(prefix).and_then(|n| n.parse().ok())
}

/// The stored secret of a user, decrypted into SSH credentials.
fn credentials(
    secrets: &SecretBox,
    user: &EnvironmentUserRecord,
) -> Result<Credentials, EngineError> {
    let plain = secrets.open_sealed(&user.secret)?;
    Ok(match user.auth.as_str() {
        "key" => {
            let v: Value = serde_json::from_str(&plain)
                .map_err(|e| EngineError::Internal(format!("stored key of {}: {e}", user.name)))?;
            Credentials::KeyPair {
                private_key_pem: v["private_key"].as_str().unwrap_or_default().to_owned(),
                passphrase: v["passphrase"].as_str().map(str::to_owned),
            }
        }
        _ => Credentials::Password(plain),
    })
}

pub struct Hosts {
    pub(crate) store: Arc<Store>,
    pub(crate) secrets: Arc<SecretBox>,
    ssh: doppel_remote::Pool,
}

impl Hosts {
    pub fn new(store: Arc<Store>, secrets: Arc<SecretBox>) -> Hosts {
        Hosts {
            store,
            secrets,
            ssh: doppel_remote::Pool::default(),
        }
    }

    /// A warm connection to `env` as `user`, over its pinned host key.
    pub async fn connect(
        &self,
        env: &EnvironmentRecord,
        user: &EnvironmentUserRecord,
    ) -> Result<Connection, EngineError> {
        let key = HostKey::from_openssh(&env.host_key)?;
        let creds = credentials(&self.secrets, user)?;
        Ok(self
            .ssh
            .get(
                &env.host,
                env.port,
                &user.name,
                &creds,
                &HostKeyPolicy::Pinned(key),
            )
            .await?)
    }

    /// The decrypted credentials of `user`, for a mount keeper.
    pub(crate) fn credentials_of(
        &self,
        user: &EnvironmentUserRecord,
    ) -> Result<Credentials, EngineError> {
        credentials(&self.secrets, user)
    }

    /// Forgets pooled connections to a host (after its users or key changed).
    pub async fn forget(&self, env: &EnvironmentRecord) {
        self.ssh.forget_host(&env.host, env.port).await;
    }

    /// The environment and user a plugin's `RemoteConnection` names; the
    /// user must belong to the environment.
    pub fn resolve_connection(
        &self,
        conn: &Value,
    ) -> Result<(EnvironmentRecord, EnvironmentUserRecord), String> {
        let env_ref = conn
            .pointer("/environment/reference")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let user_ref = conn
            .pointer("/user/reference")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let env_id = parse_ref(env_ref, ENVIRONMENT_PREFIX)
            .ok_or_else(|| format!("{env_ref:?} is not an environment reference"))?;
        let env = self
            .store
            .get_environment(env_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no environment {env_ref}"))?;
        let users = self
            .store
            .environment_users(env.id)
            .map_err(|e| e.to_string())?;
        let user = match parse_ref(user_ref, USER_PREFIX) {
            Some(uid) => users
                .into_iter()
                .find(|u| u.id == uid)
                .ok_or_else(|| format!("{user_ref} is not a user of {env_ref}"))?,
            None => users
                .into_iter()
                .find(|u| u.is_primary)
                .ok_or_else(|| format!("{env_ref} has no primary user"))?,
        };
        Ok((env, user))
    }

    async fn script_call(&self, call: &LibraryCall<'_>) -> Result<Value, CallbackError> {
        let req = &call.request;
        let (env, user) = self.resolve_connection(&req["remote_connection"])?;
        let conn = self.connect(&env, &user).await.map_err(callback_error)?;
        let command = req["command"].as_str().unwrap_or_default();
        let variables: BTreeMap<String, String> = req["variables"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let out = match call.method {
            "run_expect" => conn.run_expect(command, &variables).await,
            _ => {
                conn.run_bash(
                    command,
                    &variables,
                    req["use_login_shell"].as_bool().unwrap_or(false),
                )
                .await
            }
        }
        .map_err(callback_error)?;
        let mut stderr = out.stderr_str();
        if out.truncated {
            // Said, not silently cut: the plugin and its log both see it.
            stderr.push_str(&format!(
                "\n[doppel: output over the {} byte limit was cut: stdout was {} bytes, stderr {} bytes]\n",
                doppel_remote::DEFAULT_OUTPUT_CAP_BYTES,
                out.stdout_bytes,
                out.stderr_bytes
            ));
        }
        Ok(
            json!({"return_value": {"exit_code": out.exit_code, "stdout": out.stdout_str(), "stderr": stderr}}),
        )
    }

    /// Mirrors a directory of the connection's host into the dataset the
    /// running operation fills, over the pinned connection.
    async fn run_sync(&self, call: &LibraryCall<'_>) -> Result<Value, CallbackError> {
        let target = call.sync_target.ok_or(
            "run_sync copies into the dataset being synced, and is only available during a direct dSource's sync",
        )?;
        let req = &call.request;
        let (env, mut user) = self.resolve_connection(&req["remote_connection"])?;
        // rsync_user names the OS user that can read the directory.
        if let Some(name) = req["rsync_user"]
            .as_str()
            .filter(|n| !n.is_empty() && *n != user.name)
        {
            user = self
                .store
                .environment_users(env.id)
                .map_err(|e| e.to_string())?
                .into_iter()
                .find(|u| u.name == name)
                .ok_or_else(|| {
                    format!(
                        "rsync_user {name} is not a user of environment {}",
                        env.name
                    )
                })?;
        }
        let conn = self.connect(&env, &user).await.map_err(callback_error)?;
        let strings = |k: &str| -> Vec<String> {
            req[k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let sync = doppel_remote::SyncRequest {
            source_directory: req["source_directory"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            destination: target.to_owned(),
            exclude_paths: strings("exclude_paths"),
            sym_links_to_follow: strings("sym_links_to_follow"),
        };
        conn.run_sync(&sync).await.map_err(callback_error)?;
        Ok(json!({"return_value": {}}))
    }

    fn retrieve_credentials(&self, call: &LibraryCall<'_>) -> Result<Value, String> {
        let supplier = &call.request["credentials_supplier"];
        let s = |k: &str| supplier.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        match s("type").as_deref() {
            Some("NamedPasswordCredential") => {
                let password = s("password").ok_or("a NamedPasswordCredential needs a password")?;
                Ok(
                    json!({"return_value": {"username": s("username").unwrap_or_default(), "password": password}}),
                )
            }
            Some("NamedKeyPairCredential") => {
                let private_key =
                    s("privateKey").ok_or("a NamedKeyPairCredential needs a privateKey")?;
                Ok(
                    json!({"return_value": {"username": s("username").unwrap_or_default(),
                    "key_pair": {"private_key": private_key, "public_key": s("publicKey").unwrap_or_default()}}}),
                )
            }
            Some(kind @ ("CyberArkVaultCredential" | "HashiCorpVaultCredential")) => Err(format!(
                "{kind} is not supported by this engine yet: no vault is configured"
            )),
            other => Err(format!("unknown credentials supplier type {other:?}")),
        }
    }
}

/// A migration's `upgrade_password(password, username=None)`: the
/// credentials supplier the new schema stores in place of a plain password.
fn upgrade_password(request: &Value) -> Value {
    let mut supplier = json!({
        "type": "NamedPasswordCredential",
        "password": request["password"].as_str().unwrap_or_default(),
    });
    if let Some(user) = request["username"].as_str().filter(|u| !u.is_empty()) {
        supplier["username"] = json!(user);
    }
    json!({"return_value": {"credentials_supplier": supplier}})
}

impl LibraryHandler for Hosts {
    fn call<'a>(
        &'a self,
        call: LibraryCall<'a>,
    ) -> Pin<Box<dyn Future<Output = Value> + Send + 'a>> {
        Box::pin(async move {
            let answer = match call.method {
                "upgrade_password" if call.upgrading => Ok(upgrade_password(&call.request)),
                // Contract: during an upgrade every other library call fails.
                other if call.upgrading => Err(format!(
                    "{other} is not allowed while a plugin upgrade runs; a migration may only call upgrade_password"
                )
                .into()),
                "run_bash" | "run_expect" => self.script_call(&call).await,
                "run_powershell" => Err(
                    "run_powershell needs a Windows host; this environment is a Unix host".into(),
                ),
                "retrieve_credentials" => self.retrieve_credentials(&call).map_err(Into::into),
                "upgrade_password" => {
                    Err("upgrade_password is only allowed while a plugin upgrade runs".into())
                }
                "run_sync" => self.run_sync(&call).await,
                other => Err(format!("unknown library call {other}").into()),
            };
            answer.unwrap_or_else(|e| match e {
                CallbackError::Host(m) => actionable_error(HOST_LIBRARY_ERROR_ID, m),
                CallbackError::Other(m) => actionable_error(1, m),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doppel_store::{EnvironmentRecord, EnvironmentUserRecord};

    #[tokio::test]
    async fn a_callback_on_a_host_that_does_not_answer_is_a_host_failure() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Arc::new(SecretBox::open(&dir.path().join("key")).unwrap());
        let store = Arc::new(Store::open_in_memory().unwrap());
        // A port nothing listens on: connections are refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = EnvironmentRecord {
            id: 0,
            name: "gone".into(),
            host: "127.0.0.1".into(),
            port,
            toolkit_path: "/t".into(),
            scratch_path: "/t/s".into(),
            host_key:
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"
                    .into(),
            host_key_fingerprint: "x".into(),
            created_at: "now".into(),
        };
        let user = EnvironmentUserRecord {
            id: 0,
            environment_id: 0,
            name: "delphix".into(),
            auth: "password".into(),
            secret: secrets.seal("pw"),
            is_primary: true,
        };
        let id = store.insert_environment(&env, &user, &[]).unwrap();
        let hosts = Hosts::new(store, secrets);
        let conn = json!({"environment": {"reference": format!("{ENVIRONMENT_PREFIX}{id}")}});
        for method in ["run_bash", "run_sync"] {
            let answer = hosts
                .call(LibraryCall {
                    method,
                    request: json!({"remote_connection": conn, "command": "true", "source_directory": "/x"}),
                    job: None,
                    sync_target: Some(dir.path()),
                    upgrading: false,
                })
                .await;
            let err = &answer["error"]["actionable_error"];
            assert_eq!(err["id"], HOST_LIBRARY_ERROR_ID, "{method}: {answer}");
            assert!(
                err["message"].as_str().unwrap().contains(&port.to_string()),
                "{method}: the message names the host: {answer}"
            );
        }
        // A callback that is wrong for other reasons keeps id 1.
        let answer = hosts
            .call(LibraryCall {
                method: "run_bash",
                request: json!({"remote_connection": {"environment": {"reference": "nope"}}}),
                job: None,
                sync_target: None,
                upgrading: false,
            })
            .await;
        assert_eq!(answer["error"]["actionable_error"]["id"], 1, "{answer}");
    }
}
