//! Environments: adding hosts (pinning their key, preparing the toolkit
//! and scratch directories), their users, discovery of repositories and
//! source configs through every installed plugin, and source configs added
//! by hand.

use std::sync::Arc;

use doppel_model::{
    AddEnvironment, AddEnvironmentUser, AddSourceConfig, Environment, EnvironmentUser, EventLevel,
    Job, Repository, SourceConfig, UserCredentials,
};
use doppel_plugin_host::schema::{redact_secrets, ParameterSchema};
use doppel_plugin_host::CallContext;
use doppel_remote::{Connection, Credentials, HostKeyPolicy};
use doppel_store::{
    DiscoveredRepository, EnvironmentRecord, EnvironmentUserRecord, PluginRecord, RepositoryRecord,
    SourceConfigRecord,
};
use serde_json::{json, Value};

use crate::auth::Principal;
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX, HOST_PREFIX, USER_PREFIX};
use crate::jobs::JobHandle;
use crate::{now, pdo, Engine, EngineError};

const REPOSITORY_PREFIX: &str = "REPOSITORY-";
const SOURCE_CONFIG_PREFIX: &str = "SOURCE_CONFIG-";

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidInput {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Shell-quotes one word for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<(), EngineError> {
    check_name_with(field, name, "")
}

/// The one name rule: 1 to 128 letters, digits, `-`, `_`, `.` and the
/// `extra` characters, starting with a letter or digit (so that no name is
/// `.`, `..` or looks like a command-line flag).
pub(crate) fn check_name_with(field: &str, name: &str, extra: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > 128 {
        return Err(invalid(field, "must be 1 to 128 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(c))
    {
        let extra: String = extra.chars().map(|c| format!(", '{c}'")).collect();
        return Err(invalid(
            field,
            format!("may contain only letters, digits, '-', '_'{extra} and '.'"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(field, "must start with a letter or a digit"));
    }
    Ok(())
}

fn check_user_name(field: &str, name: &str) -> Result<(), EngineError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            field,
            "must be an OS user name (letters, digits, '-', '_', '.')",
        ));
    }
    Ok(())
}

/// The secret as stored (sealed), and the SSH credentials to try now.
fn seal_credentials(
    engine: &Engine,
    creds: &UserCredentials,
) -> Result<(String, String, Credentials), EngineError> {
    match creds {
        UserCredentials::Password { password } => {
            if password.is_empty() {
                return Err(invalid("credentials.password", "must not be empty"));
            }
            Ok((
                "password".into(),
                engine.hosts.secrets.seal(password),
                Credentials::Password(password.clone()),
            ))
        }
        UserCredentials::Key {
            private_key,
            passphrase,
        } => {
            if !private_key.contains("PRIVATE KEY") {
                return Err(invalid(
                    "credentials.private_key",
                    "must be a private key in OpenSSH or PEM form",
                ));
            }
            let stored = json!({"private_key": private_key, "passphrase": passphrase}).to_string();
            Ok((
                "key".into(),
                engine.hosts.secrets.seal(&stored),
                Credentials::KeyPair {
                    private_key_pem: private_key.clone(),
                    passphrase: passphrase.clone(),
                },
            ))
        }
    }
}

/// The `RemoteConnection` a plugin gets for `env` as `user`.
pub(crate) fn connection_json(env: &EnvironmentRecord, user: &EnvironmentUserRecord) -> Value {
    json!({
        "environment": {
            "name": env.name,
            "reference": format!("{ENVIRONMENT_PREFIX}{}", env.id),
            "host": {"name": env.host, "reference": format!("{HOST_PREFIX}{}", env.id),
                     "binary_path": env.toolkit_path, "scratch_path": env.scratch_path},
        },
        "user": {"name": user.name, "reference": format!("{USER_PREFIX}{}", user.id)},
    })
}

/// identity = the identity fields' values as a JSON array; name = the name field.
fn identity_and_name(
    params: &Value,
    identity_fields: &Value,
    name_field: &Value,
) -> (String, String) {
    let fields: Vec<&str> = match identity_fields {
        Value::Array(a) => a.iter().filter_map(|f| f.as_str()).collect(),
        Value::String(s) => vec![s.as_str()],
        _ => Vec::new(),
    };
    let identity = Value::Array(
        fields
            .iter()
            .map(|f| params.get(*f).cloned().unwrap_or(Value::Null))
            .collect(),
    )
    .to_string();
    let name = name_field
        .as_str()
        .and_then(|f| params.get(f))
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .unwrap_or_default();
    (identity, name)
}

fn plugin_runs_on_unix(p: &PluginRecord) -> bool {
    p.definition["hostTypes"]
        .as_array()
        .is_some_and(|a| a.iter().any(|h| h == "UNIX"))
}

impl Engine {
    fn environment_model(&self, env: &EnvironmentRecord) -> Result<Environment, EngineError> {
        let users = self
            .store
            .environment_users(env.id)?
            .into_iter()
            .map(|u| EnvironmentUser {
                reference: format!("{USER_PREFIX}{}", u.id),
                name: u.name,
                auth: u.auth,
                primary: u.is_primary,
            })
            .collect();
        Ok(Environment {
            reference: format!("{ENVIRONMENT_PREFIX}{}", env.id),
            name: env.name.clone(),
            host: env.host.clone(),
            port: env.port,
            toolkit_path: env.toolkit_path.clone(),
            scratch_path: env.scratch_path.clone(),
            host_key_fingerprint: env.host_key_fingerprint.clone(),
            users,
            created_at: env.created_at.clone(),
        })
    }

    /// An environment by reference or name.
    pub(crate) fn find_environment(
        &self,
        reference: &str,
    ) -> Result<EnvironmentRecord, EngineError> {
        let found = match parse_ref(reference, ENVIRONMENT_PREFIX) {
            Some(id) => self.store.get_environment(id)?,
            None => self.store.find_environment_by_name(reference)?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            kind: "environment",
            id: reference.to_owned(),
        })
    }

    /// A user of `env`: the one named (by name or `HOST_USER-<n>`), or the
    /// primary user when none is named.
    pub(crate) fn env_user(
        &self,
        env: &EnvironmentRecord,
        name: Option<&str>,
    ) -> Result<EnvironmentUserRecord, EngineError> {
        let users = self.store.environment_users(env.id)?;
        let found = match name {
            None => users.into_iter().find(|u| u.is_primary),
            Some(n) => users
                .into_iter()
                .find(|u| u.name == n || format!("{USER_PREFIX}{}", u.id) == n),
        };
        found.ok_or_else(|| EngineError::NotFound {
            kind: "environment user",
            id: name.unwrap_or("(primary)").to_owned(),
        })
    }

    pub fn list_environments(&self) -> Result<Vec<Environment>, EngineError> {
        self.store
            .list_environments()?
            .iter()
            .map(|e| self.environment_model(e))
            .collect()
    }

    pub fn get_environment(&self, reference: &str) -> Result<Environment, EngineError> {
        self.environment_model(&self.find_environment(reference)?)
    }

    /// Checks the request, then adds the environment in a job: connect and
    /// pin the host key, check bash, create the toolkit and scratch
    /// directories, run discovery, store everything. A failure stores nothing.
    pub fn add_environment(
        self: &Arc<Self>,
        who: &Principal,
        req: AddEnvironment,
    ) -> Result<Job, EngineError> {
        check_name("name", &req.name)?;
        if parse_ref(&req.name, ENVIRONMENT_PREFIX).is_some() {
            return Err(invalid(
                "name",
                "must not look like an environment reference",
            ));
        }
        crate::limits::check_host("host", &req.host)?;
        if req.port == 0 {
            return Err(invalid("port", "must be between 1 and 65535"));
        }
        check_user_name("user", &req.user)?;
        if let Some(t) = &req.toolkit_path {
            if !t.starts_with('/') || t.contains('\0') {
                return Err(invalid("toolkit_path", "must be an absolute path"));
            }
        }
        if self.store.find_environment_by_name(&req.name)?.is_some() {
            return Err(EngineError::Conflict(format!(
                "an environment named {:?} exists already",
                req.name
            )));
        }
        let (auth, sealed, creds) = seal_credentials(self, &req.credentials)?;
        let engine = self.clone();
        let who = who.clone();
        self.jobs.spawn(
            "ENVIRONMENT_ADD",
            Some(format!("environment:{}", req.name)),
            move |job| async move {
                engine
                    .add_environment_job(&job, &who, req, auth, sealed, creds)
                    .await
            },
        )
    }

    async fn add_environment_job(
        &self,
        job: &JobHandle,
        who: &Principal,
        req: AddEnvironment,
        auth: String,
        sealed: String,
        creds: Credentials,
    ) -> Result<Value, EngineError> {
        job.progress(
            5,
            &format!("connecting to {}:{} as {}", req.host, req.port, req.user),
        );
        let conn = Connection::connect(
            &req.host,
            req.port,
            &req.user,
            &creds,
            &HostKeyPolicy::AcceptFirst,
        )
        .await?;
        let key = conn.host_key().clone();
        job.event(
            EventLevel::Info,
            &format!("host key {} pinned", key.fingerprint()),
        );
        job.check_canceled()?;
        job.progress(
            20,
            "checking bash and preparing the toolkit and scratch directories",
        );
        if !conn.has_bash().await? {
            return Err(invalid(
                "host",
                format!(
                    "{} has no bash for {}: plugins need bash on the host",
                    req.host, req.user
                ),
            ));
        }
        let home = conn
            .run_bash("printf %s \"$HOME\"", &Default::default(), false)
            .await?
            .stdout_str();
        let toolkit = req
            .toolkit_path
            .clone()
            .unwrap_or_else(|| format!("{}/.doppel/toolkit", home.trim_end_matches('/')));
        let scratch = format!("{}/scratch", toolkit.trim_end_matches('/'));
        let mk = conn
            .run_bash(
                &format!(
                    "mkdir -p {} {} && test -w {}",
                    sh_quote(&toolkit),
                    sh_quote(&scratch),
                    sh_quote(&toolkit)
                ),
                &Default::default(),
                false,
            )
            .await?;
        if mk.exit_code != 0 {
            return Err(invalid(
                "toolkit_path",
                format!(
                    "cannot create {toolkit} on {} as {}: {}",
                    req.host,
                    req.user,
                    mk.stderr_str().trim()
                ),
            ));
        }
        drop(conn);
        job.check_canceled()?;

        // Discovery needs the environment's reference, so the records go in
        // first and come out again if anything below fails.
        let record = EnvironmentRecord {
            id: 0,
            name: req.name.clone(),
            host: req.host.clone(),
            port: req.port,
            toolkit_path: toolkit,
            scratch_path: scratch,
            host_key: key.openssh().to_owned(),
            host_key_fingerprint: key.fingerprint().to_owned(),
            created_at: now(),
        };
        let user = EnvironmentUserRecord {
            id: 0,
            environment_id: 0,
            name: req.user.clone(),
            auth,
            secret: sealed,
            is_primary: true,
        };
        let id = self.store.insert_environment(&record, &user, &[])?;
        let undo = |e: EngineError| {
            if let Err(d) = self.store.delete_environment(id) {
                tracing::error!(environment = id, error = %d, "cannot remove a half-added environment");
            }
            e
        };
        // A panic in here still reaches the undo.
        let env = crate::jobs::unpanicked(async {
            self.record_owner(who, &format!("{ENVIRONMENT_PREFIX}{id}"))?;
            let env = self
                .store
                .get_environment(id)?
                .ok_or_else(|| EngineError::Internal("environment vanished".into()))?;
            let found = self.discover(job, &env, 40).await?;
            self.store.apply_discovery(id, &found)?;
            Ok(env)
        })
        .await
        .map_err(undo)?;
        let model = self.environment_model(&env)?;
        job.progress(
            100,
            &format!("environment {} added as {}", model.name, model.reference),
        );
        crate::to_json(&model)
    }

    /// Runs discovery for every installed Unix plugin on `env` as its
    /// primary user; validates every result against the plugin's schemas.
    async fn discover(
        &self,
        job: &JobHandle,
        env: &EnvironmentRecord,
        start: u8,
    ) -> Result<Vec<DiscoveredRepository>, EngineError> {
        let user = self.env_user(env, None)?;
        let conn_json = connection_json(env, &user);
        let plugins: Vec<PluginRecord> = self
            .store
            .list_plugins()?
            .into_iter()
            .filter(plugin_runs_on_unix)
            .collect();
        let mut found = Vec::new();
        let ctx = CallContext {
            job: Some(job.id().to_owned()),
            sync_target: None,
            log_sink: Some(job.plugin_log_sink()),
            ..Default::default()
        };
        for (i, p) in plugins.iter().enumerate() {
            job.check_canceled()?;
            let pct = start + ((100 - start as usize - 5) * i / plugins.len().max(1)) as u8;
            job.progress(pct, &format!("discovery with plugin {}", p.name));
            let plugin = self.loaded(p)?;
            let d = &p.definition["discoveryDefinition"];
            let manifest = &p.definition["manifest"];
            if manifest["hasRepositoryDiscovery"] != true {
                continue;
            }
            let repo_schema = ParameterSchema::new(&d["repositorySchema"]).map_err(|e| {
                EngineError::Internal(format!("plugin {}: repository schema: {e}", p.name))
            })?;
            let sc_schema = ParameterSchema::new(&d["sourceConfigSchema"]).map_err(|e| {
                EngineError::Internal(format!("plugin {}: source config schema: {e}", p.name))
            })?;
            let op = self.host.operation(&plugin, "discovery.repository")?;
            let out = self
                .host
                .invoke(
                    &plugin,
                    op,
                    json!({"source_connection": conn_json}),
                    &ctx,
                    None,
                )
                .await?;
            for r in out["repositories"].as_array().into_iter().flatten() {
                let params = checked_output(
                    &repo_schema,
                    &r["parameters"],
                    &format!("repository discovered by plugin {} on {}", p.name, env.name),
                )?;
                let (identity, name) = identity_and_name(
                    &params,
                    &d["repositoryIdentityFields"],
                    &d["repositoryNameField"],
                );
                let mut repo = DiscoveredRepository {
                    plugin_id: p.id.clone(),
                    identity,
                    name,
                    parameters: params.clone(),
                    source_configs: Vec::new(),
                };
                if manifest["hasSourceConfigDiscovery"] == true {
                    let op = self.host.operation(&plugin, "discovery.source_config")?;
                    let req = json!({"source_connection": conn_json, "repository": {"parameters": pdo(&params)}});
                    let out = self.host.invoke(&plugin, op, req, &ctx, None).await?;
                    for sc in out["source_configs"].as_array().into_iter().flatten() {
                        let what = format!(
                            "source config discovered by plugin {} on {}",
                            p.name, env.name
                        );
                        let sp = checked_output(&sc_schema, &sc["parameters"], &what)?;
                        let (identity, name) = identity_and_name(
                            &sp,
                            &d["sourceConfigIdentityFields"],
                            &d["sourceConfigNameField"],
                        );
                        repo.source_configs.push((identity, name, sp));
                    }
                }
                job.event(
                    EventLevel::Info,
                    &format!(
                        "plugin {} found repository {} with {} source config(s)",
                        p.name,
                        repo.name,
                        repo.source_configs.len()
                    ),
                );
                found.push(repo);
            }
        }
        Ok(found)
    }

    /// Re-runs discovery on an environment, in a job.
    pub fn refresh_environment(self: &Arc<Self>, reference: &str) -> Result<Job, EngineError> {
        let env = self.find_environment(reference)?;
        let engine = self.clone();
        let target = format!("{ENVIRONMENT_PREFIX}{}", env.id);
        self.jobs
            .spawn("ENVIRONMENT_REFRESH", Some(target), move |job| async move {
                job.progress(5, &format!("connecting to {}", env.name));
                let user = engine.env_user(&env, None)?;
                engine.hosts.connect(&env, &user).await?;
                let found = engine.discover(&job, &env, 20).await?;
                engine.store.apply_discovery(env.id, &found)?;
                crate::to_json(&engine.environment_model(&env)?)
            })
    }

    /// Removes an environment and everything found on it.
    pub async fn delete_environment(&self, reference: &str) -> Result<Environment, EngineError> {
        let env = self.find_environment(reference)?;
        let model = self.environment_model(&env)?;
        let repos: Vec<i64> = self
            .store
            .list_repositories(Some(env.id))?
            .iter()
            .map(|r| r.id)
            .collect();
        let configs: Vec<i64> = self
            .store
            .list_source_configs(None)?
            .into_iter()
            .filter(|c| repos.contains(&c.repository_id))
            .map(|c| c.id)
            .collect();
        let mut users: Vec<String> = self
            .store
            .list_dsources()?
            .into_iter()
            .filter(|d| {
                d.staging_environment_id == Some(env.id) || configs.contains(&d.source_config_id)
            })
            .map(|d| format!("dSource {}", d.name))
            .collect();
        users.extend(
            self.store
                .list_vdbs()?
                .into_iter()
                .filter(|v| v.environment_id == env.id)
                .map(|v| format!("VDB {}", v.name)),
        );
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "{} is used by {}; delete those first",
                env.name,
                users.join(", ")
            )));
        }
        let mounts = self.store.count_mounts(env.id)?;
        if mounts > 0 {
            return Err(EngineError::Conflict(format!(
                "{} has {mounts} dataset mount(s); unmount them first",
                env.name
            )));
        }
        self.store.delete_environment(env.id)?;
        self.hosts.forget(&env).await;
        Ok(model)
    }

    /// Adds a user after checking it can log in.
    pub async fn add_environment_user(
        &self,
        reference: &str,
        req: AddEnvironmentUser,
    ) -> Result<EnvironmentUser, EngineError> {
        let env = self.find_environment(reference)?;
        check_user_name("name", &req.name)?;
        if self
            .store
            .environment_users(env.id)?
            .iter()
            .any(|u| u.name == req.name)
        {
            return Err(EngineError::Conflict(format!(
                "{} already has a user {}",
                env.name, req.name
            )));
        }
        let (auth, sealed, creds) = seal_credentials(self, &req.credentials)?;
        let key = doppel_remote::HostKey::from_openssh(&env.host_key)?;
        Connection::connect(
            &env.host,
            env.port,
            &req.name,
            &creds,
            &HostKeyPolicy::Pinned(key),
        )
        .await?;
        let id = self.store.insert_environment_user(&EnvironmentUserRecord {
            id: 0,
            environment_id: env.id,
            name: req.name.clone(),
            auth: auth.clone(),
            secret: sealed,
            is_primary: false,
        })?;
        Ok(EnvironmentUser {
            reference: format!("{USER_PREFIX}{id}"),
            name: req.name,
            auth,
            primary: false,
        })
    }

    pub async fn delete_environment_user(
        &self,
        reference: &str,
        user: &str,
    ) -> Result<(), EngineError> {
        let env = self.find_environment(reference)?;
        let users = self.store.environment_users(env.id)?;
        let u = users
            .iter()
            .find(|u| u.name == user || format!("{USER_PREFIX}{}", u.id) == user)
            .ok_or_else(|| EngineError::NotFound {
                kind: "environment user",
                id: user.to_owned(),
            })?;
        if u.is_primary {
            return Err(EngineError::Conflict(format!(
                "{} is the primary user of {}; delete the environment instead",
                u.name, env.name
            )));
        }
        self.store.delete_environment_user(u.id)?;
        self.hosts.forget(&env).await;
        Ok(())
    }

    fn repository_model(&self, r: &RepositoryRecord) -> Result<Repository, EngineError> {
        Ok(Repository {
            reference: format!("{REPOSITORY_PREFIX}{}", r.id),
            environment: format!("{ENVIRONMENT_PREFIX}{}", r.environment_id),
            plugin: r.plugin_id.clone(),
            name: r.name.clone(),
            parameters: r.parameters.clone(),
        })
    }

    pub fn list_repositories(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<Repository>, EngineError> {
        let env = environment.map(|e| self.find_environment(e)).transpose()?;
        self.store
            .list_repositories(env.map(|e| e.id))?
            .iter()
            .map(|r| self.repository_model(r))
            .collect()
    }

    fn find_repository(&self, reference: &str) -> Result<RepositoryRecord, EngineError> {
        let id = parse_ref(reference, REPOSITORY_PREFIX)
            .ok_or_else(|| invalid("repository", "must look like REPOSITORY-<n>"))?;
        self.store
            .get_repository(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "repository",
                id: reference.to_owned(),
            })
    }

    fn source_config_model(&self, sc: &SourceConfigRecord) -> Result<SourceConfig, EngineError> {
        let repo = self
            .store
            .get_repository(sc.repository_id)?
            .ok_or_else(|| EngineError::Internal("source config without repository".into()))?;
        let plugin = self.store.get_plugin(&repo.plugin_id)?;
        let schema = plugin
            .as_ref()
            .map(|p| p.definition["discoveryDefinition"]["sourceConfigSchema"].clone())
            .unwrap_or(Value::Null);
        Ok(SourceConfig {
            reference: format!("{SOURCE_CONFIG_PREFIX}{}", sc.id),
            repository: format!("{REPOSITORY_PREFIX}{}", repo.id),
            environment: format!("{ENVIRONMENT_PREFIX}{}", repo.environment_id),
            plugin: repo.plugin_id.clone(),
            name: sc.name.clone(),
            parameters: redact_secrets(&schema, &sc.parameters),
            discovered: sc.discovered,
        })
    }

    pub fn list_source_configs(
        &self,
        environment: Option<&str>,
    ) -> Result<Vec<SourceConfig>, EngineError> {
        let env = environment.map(|e| self.find_environment(e)).transpose()?;
        let repos: Vec<i64> = self
            .store
            .list_repositories(env.map(|e| e.id))?
            .iter()
            .map(|r| r.id)
            .collect();
        self.store
            .list_source_configs(None)?
            .iter()
            .filter(|sc| repos.contains(&sc.repository_id))
            .map(|sc| self.source_config_model(sc))
            .collect()
    }

    pub(crate) fn find_source_config(
        &self,
        reference: &str,
    ) -> Result<SourceConfigRecord, EngineError> {
        let id = parse_ref(reference, SOURCE_CONFIG_PREFIX)
            .ok_or_else(|| invalid("source config", "must look like SOURCE_CONFIG-<n>"))?;
        self.store
            .get_source_config(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "source config",
                id: reference.to_owned(),
            })
    }

    pub fn get_source_config(&self, reference: &str) -> Result<SourceConfig, EngineError> {
        self.source_config_model(&self.find_source_config(reference)?)
    }

    /// Checks parameters against the plugin's source config schema and
    /// returns (identity, name).
    fn check_source_config(
        &self,
        repo: &RepositoryRecord,
        params: &Value,
    ) -> Result<(String, String), EngineError> {
        crate::limits::check_parameters("parameters", params)?;
        let plugin =
            self.store
                .get_plugin(&repo.plugin_id)?
                .ok_or_else(|| EngineError::NotFound {
                    kind: "plugin",
                    id: repo.plugin_id.clone(),
                })?;
        let d = &plugin.definition["discoveryDefinition"];
        if d["manualSourceConfigDiscovery"] == false {
            return Err(invalid(
                "repository",
                format!(
                    "plugin {} does not allow source configs added by hand",
                    plugin.name
                ),
            ));
        }
        let schema = ParameterSchema::new(&d["sourceConfigSchema"])
            .map_err(|e| EngineError::Internal(format!("plugin {}: {e}", plugin.name)))?;
        schema
            .validate(params)
            .map_err(|errs| EngineError::InvalidParameters {
                what: "source config parameters".into(),
                violations: errs.violations().iter().map(|v| v.to_string()).collect(),
            })?;
        Ok(identity_and_name(
            params,
            &d["sourceConfigIdentityFields"],
            &d["sourceConfigNameField"],
        ))
    }

    pub fn add_source_config(&self, req: AddSourceConfig) -> Result<SourceConfig, EngineError> {
        let repo = self.find_repository(&req.repository)?;
        let (identity, name) = self.check_source_config(&repo, &req.parameters)?;
        if self
            .store
            .list_source_configs(Some(repo.id))?
            .iter()
            .any(|sc| sc.identity == identity)
        {
            return Err(EngineError::Conflict(format!(
                "{} already has a source config with identity {identity}",
                req.repository
            )));
        }
        let id = self.store.insert_source_config(&SourceConfigRecord {
            id: 0,
            repository_id: repo.id,
            identity,
            name,
            parameters: req.parameters,
            discovered: false,
        })?;
        self.get_source_config(&format!("{SOURCE_CONFIG_PREFIX}{id}"))
    }

    pub fn update_source_config(
        &self,
        reference: &str,
        parameters: Value,
    ) -> Result<SourceConfig, EngineError> {
        let mut sc = self.find_source_config(reference)?;
        let repo = self
            .store
            .get_repository(sc.repository_id)?
            .ok_or_else(|| EngineError::Internal("source config without repository".into()))?;
        let (identity, name) = self.check_source_config(&repo, &parameters)?;
        if self
            .store
            .list_source_configs(Some(repo.id))?
            .iter()
            .any(|o| o.identity == identity && o.id != sc.id)
        {
            return Err(EngineError::Conflict(format!(
                "another source config of {REPOSITORY_PREFIX}{} has identity {identity}",
                repo.id
            )));
        }
        sc.identity = identity;
        sc.name = name;
        sc.parameters = parameters;
        self.store.update_source_config(&sc)?;
        self.get_source_config(reference)
    }

    pub fn delete_source_config(&self, reference: &str) -> Result<SourceConfig, EngineError> {
        let sc = self.find_source_config(reference)?;
        let users: Vec<String> = self
            .store
            .list_dsources()?
            .into_iter()
            .filter(|d| d.source_config_id == sc.id)
            .map(|d| d.name)
            .collect();
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!(
                "{reference} is linked by dSource(s) {}; delete them first",
                users.join(", ")
            )));
        }
        let model = self.source_config_model(&sc)?;
        self.store.delete_source_config(sc.id)?;
        Ok(model)
    }
}

/// A plugin's output object (`PluginDefinedObject`), parsed and checked
/// against its schema: plugins are not trusted to honour their own schemas.
fn checked_output(schema: &ParameterSchema, pdo: &Value, what: &str) -> Result<Value, EngineError> {
    let text = pdo["json"].as_str().unwrap_or("null");
    let params: Value = serde_json::from_str(text)
        .map_err(|e| EngineError::Internal(format!("{what}: parameters are not JSON ({e})")))?;
    schema
        .validate(&params)
        .map_err(|errs| EngineError::InvalidParameters {
            what: what.to_owned(),
            violations: errs.violations().iter().map(|v| v.to_string()).collect(),
        })?;
    Ok(params)
}
