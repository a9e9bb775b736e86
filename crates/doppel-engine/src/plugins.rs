//! Plugin operations of the engine: install (and upgrade), list, show,
//! delete, invoke an operation, read logs, validate parameters.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use doppel_model::{PluginKind, PluginLogLevel, PluginSummary};
use doppel_plugin_host::schema::{redact_secrets, ParameterSchema};
use doppel_plugin_host::{
    Artifact, BuildNumber, CallContext, Language, LoadedPlugin, LogContext, LogPage, LogReadError,
    PluginLog, DEFAULT_TAIL, MAX_TAIL,
};
use doppel_store::PluginRecord;
use serde_json::Value;

use crate::auth::Principal;
use crate::{Engine, EngineError};

/// Which of a plugin's schemas user parameters are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterDefinition {
    LinkedSource,
    VirtualSource,
    SnapshotParameters,
    SourceConfig,
    Repository,
    VirtualToPhysical,
    Snapshot,
}

impl ParameterDefinition {
    pub const ALL: [ParameterDefinition; 7] = [
        Self::LinkedSource,
        Self::VirtualSource,
        Self::SnapshotParameters,
        Self::SourceConfig,
        Self::Repository,
        Self::VirtualToPhysical,
        Self::Snapshot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::LinkedSource => "linkedSource",
            Self::VirtualSource => "virtualSource",
            Self::SnapshotParameters => "snapshotParameters",
            Self::SourceConfig => "sourceConfig",
            Self::Repository => "repository",
            Self::VirtualToPhysical => "virtualToPhysical",
            Self::Snapshot => "snapshot",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
    }

    /// Where the schema sits in artifact.json.
    pub(crate) fn pointer(self) -> &'static str {
        match self {
            Self::LinkedSource => "/linkedSourceDefinition/parameters",
            Self::VirtualSource => "/virtualSourceDefinition/parameters",
            Self::SnapshotParameters => "/snapshotParametersDefinition/schema",
            Self::SourceConfig => "/discoveryDefinition/sourceConfigSchema",
            Self::Repository => "/discoveryDefinition/repositorySchema",
            Self::VirtualToPhysical => "/virtualToPhysicalDefinition/parameters",
            Self::Snapshot => "/snapshotSchema",
        }
    }
}

/// One call of a plugin operation through the API (a plugin author's tool,
/// and how the test suite drives every operation).
#[derive(Debug, Clone)]
pub struct PluginInvocation {
    pub operation: String,
    pub request: Value,
    pub deadline: Option<Duration>,
    pub job: Option<String>,
    /// A pool dataset that `run_sync` fills during this call.
    pub sync_volume: Option<String>,
}

impl Engine {
    pub(crate) fn loaded(&self, rec: &PluginRecord) -> Result<LoadedPlugin, EngineError> {
        let kind = match rec
            .definition
            .pointer("/linkedSourceDefinition/type")
            .and_then(|v| v.as_str())
        {
            Some("PluginLinkedDirectSourceDefinition") => PluginKind::Direct,
            _ => PluginKind::Staged,
        };
        // An install checked the language; a record is never of another.
        let language = rec.definition["language"]
            .as_str()
            .and_then(|l| Language::parse(l).ok())
            .unwrap_or(Language::Python311);
        Ok(LoadedPlugin {
            id: rec.id.clone(),
            name: rec.name.clone(),
            build_number: rec.build_number.clone(),
            kind,
            language,
            entry_point: rec.definition["entryPoint"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            manifest: rec
                .definition
                .get("manifest")
                .cloned()
                .unwrap_or(Value::Null),
            code_dir: self.layout.root().join(&rec.code_dir),
            scratch_dir: self.layout.plugin_scratch_dir(&rec.id),
            log: Arc::new(PluginLog::new(self.layout.plugin_log_dir(&rec.id))),
        })
    }

    fn summary(&self, rec: &PluginRecord) -> PluginSummary {
        let d = &rec.definition;
        let kind = self
            .loaded(rec)
            .map(|l| l.kind)
            .unwrap_or(PluginKind::Staged);
        let strs = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let manifest = d.get("manifest").cloned().unwrap_or(Value::Null);
        let operations = doppel_plugin_host::operations::ALL
            .iter()
            .filter(|op| op.manifest_flag.is_some() && op.implemented_by(&manifest, kind))
            .map(|op| op.name())
            .collect();
        let mut migration_ids = strs(&manifest["migrationIdList"]);
        migration_ids.sort_by_key(|m| BuildNumber::parse(m).ok());
        PluginSummary {
            id: rec.id.clone(),
            name: rec.name.clone(),
            build_number: rec.build_number.clone(),
            external_version: d
                .get("externalVersion")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            kind,
            language: d["language"].as_str().unwrap_or_default().to_owned(),
            host_types: strs(&d["hostTypes"]),
            entry_point: d["entryPoint"].as_str().unwrap_or_default().to_owned(),
            operations,
            migration_ids,
            installed_at: rec.installed_at.clone(),
        }
    }

    /// Finds a plugin by id, or by name when the name is unique.
    pub(crate) fn find_plugin(&self, reference: &str) -> Result<PluginRecord, EngineError> {
        if let Some(p) = self.store.get_plugin(&reference.to_ascii_lowercase())? {
            return Ok(p);
        }
        let matches: Vec<PluginRecord> = self
            .store
            .list_plugins()?
            .into_iter()
            .filter(|p| p.name == reference)
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(EngineError::NotFound {
                kind: "plugin",
                id: reference.to_owned(),
            }),
            n => Err(EngineError::InvalidInput {
                field: "plugin".into(),
                reason: format!("{n} plugins are named {reference:?}; use the plugin id"),
            }),
        }
    }

    /// Installs (or upgrades) a plugin in a job, as the Delphix-compatible
    /// upload does, and waits until it ends, so that a refused plugin fails
    /// the upload itself. Returns the job and how the install ended.
    pub async fn install_plugin_in_job(
        self: &Arc<Self>,
        who: &Principal,
        artifact: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<
        (
            doppel_model::Job,
            Result<PluginSummary, doppel_model::ApiError>,
        ),
        EngineError,
    > {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let engine = self.clone();
        let installer = who.clone();
        let job = self
            .jobs
            .spawn("PLUGIN_UPLOAD", None, move |h| async move {
                h.progress(
                    10,
                    &format!("installing the uploaded plugin (by {})", installer.name),
                );
                let outcome = engine.install_plugin(&installer, artifact.as_ref()).await;
                let _ = tx.send(outcome.as_ref().map(Clone::clone).map_err(|e| e.to_api()));
                let summary = outcome?;
                h.progress(
                    100,
                    &format!(
                        "plugin {} build {} is installed",
                        summary.name, summary.build_number
                    ),
                );
                crate::to_json(&summary)
            })?;
        match rx.await {
            Ok(outcome) => Ok((job, outcome)),
            // The job ended without answering: it panicked, and its record
            // says so with a correlation id.
            Err(_) => {
                let ended = self.jobs.get(&job.id)?;
                let err = ended.error.clone().unwrap_or_else(|| {
                    EngineError::Internal(format!("{} ended without an answer", job.id)).to_api()
                });
                Ok((job, Err(err)))
            }
        }
    }

    /// Installs a plugin from artifact.json bytes, or upgrades an installed
    /// one to a higher buildNumber. Nothing is stored unless every check
    /// passes and the plugin's code loads in a worker.
    pub async fn install_plugin(
        &self,
        who: &Principal,
        bytes: &[u8],
    ) -> Result<PluginSummary, EngineError> {
        crate::access::require_role(
            who,
            doppel_model::Role::Admin,
            "install plugins (their code runs on the engine)",
        )?;
        let artifact = Artifact::parse(bytes)?;
        if self.host.config().python_for(artifact.language).is_none() {
            return Err(EngineError::InvalidInput {
                field: "language".into(),
                reason: doppel_plugin_host::NO_PYTHON27.into(),
            });
        }
        let _guard = self.plugin_lock.lock().await;
        let existing = self.store.get_plugin(&artifact.id)?;
        if let Some(old) = &existing {
            let old_build = BuildNumber::parse(&old.build_number)
                .map_err(|e| EngineError::Internal(format!("stored plugin {}: {e}", old.id)))?;
            if artifact.build_number <= old_build {
                return Err(EngineError::Conflict(format!(
                    "plugin {} build {} is installed; build {} is not newer. Raise buildNumber in plugin_config.yml to upgrade, or delete the plugin first",
                    old.name, old.build_number, artifact.build_number
                )));
            }
            let old_ids = self.summary(old).migration_ids;
            let missing: Vec<&String> = old_ids
                .iter()
                .filter(|m| !artifact.migration_ids.contains(m))
                .collect();
            if !missing.is_empty() {
                return Err(EngineError::InvalidInput {
                    field: "manifest.migrationIdList".into(),
                    reason: format!(
                        "the upgrade drops migrations the installed build has: {missing:?}"
                    ),
                });
            }
            self.refuse_upgrade_while_busy(old)?;
        }

        let staging = self.layout.plugin_staging_dir(&artifact.id);
        let probe_logs = staging.with_extension("logs.tmp");
        let probe_scratch = staging.with_extension("scratch.tmp");
        let _cleanup = Cleanup {
            paths: vec![staging.clone(), probe_logs.clone(), probe_scratch.clone()],
            plugin_dir: self.layout.plugin_dir(&artifact.id),
        };
        artifact.extract_source(&staging).inspect_err(|e| {
            if matches!(e, doppel_plugin_host::ArtifactError::Extract { .. }) {
                // The answer names the entry only; the operator needs the place.
                tracing::error!(dir = %staging.display(), error = %e, "cannot extract plugin code");
            }
        })?;
        let probe = LoadedPlugin {
            id: artifact.id.clone(),
            name: artifact.name.clone(),
            build_number: format!("{}.probe-{}", artifact.build_number, uuid::Uuid::new_v4()),
            kind: artifact.kind,
            language: artifact.language,
            entry_point: artifact.entry_point.clone(),
            manifest: artifact.manifest.clone(),
            code_dir: staging.clone(),
            // What a refused plugin's import wrote goes with it.
            scratch_dir: probe_scratch,
            // The load check logs apart: a refused plugin leaves nothing behind.
            log: Arc::new(PluginLog::new(&probe_logs)),
        };
        // Loading in a real worker catches an entry point that names nothing
        // and module code that raises on import.
        let loaded = self.host.ensure_loaded(&probe).await;
        // An upgrade migrates what the old build made, in the new build's
        // worker, before anything is stored.
        let migrated = match (&loaded, &existing) {
            (Ok(_), Some(old)) => {
                let ids = crate::upgrades::new_migrations(
                    &self.summary(old).migration_ids,
                    &artifact.migration_ids,
                );
                self.migrate_objects(old, &probe, &artifact.definition, &ids)
                    .await
            }
            _ => Ok(Vec::new()),
        };
        self.host.stop(&probe).await;
        loaded?;
        let migrated = migrated?;

        let build = artifact.build_number.to_string();
        let code_dir = self.layout.plugin_code_dir(&artifact.id, &build);
        if code_dir.exists() {
            std::fs::remove_dir_all(&code_dir)
                .map_err(EngineError::io(format!("removing {}", code_dir.display())))?;
        }
        std::fs::rename(&staging, &code_dir).map_err(EngineError::io(format!(
            "moving plugin code to {}",
            code_dir.display()
        )))?;
        let rel = code_dir
            .strip_prefix(self.layout.root())
            .unwrap_or(&code_dir)
            .to_string_lossy()
            .into_owned();
        let record = PluginRecord {
            id: artifact.id.clone(),
            name: artifact.name.clone(),
            build_number: build,
            definition: artifact.definition.clone(),
            code_dir: rel,
            installed_at: crate::now(),
        };
        let stored = if existing.is_some() {
            self.store.upgrade_plugin(&record, &migrated)
        } else {
            self.store.put_plugin(&record)
        };
        if let Err(e) = stored
            .map_err(EngineError::from)
            .and_then(|_| self.record_owner(who, &record.id))
        {
            let _ = std::fs::remove_dir_all(&code_dir);
            return Err(e);
        }
        let log = PluginLog::new(self.layout.plugin_log_dir(&record.id));
        let verb = if existing.is_some() {
            "upgraded"
        } else {
            "installed"
        };
        log.write(
            PluginLogLevel::Info,
            &LogContext::default(),
            &format!(
                "plugin {} build {} {verb}{}",
                record.name,
                record.build_number,
                if existing.is_some() {
                    format!(" ({} stored objects migrated)", migrated.len())
                } else {
                    String::new()
                }
            ),
        );
        if let Some(old) = existing {
            self.host.stop(&self.loaded(&old)?).await;
            let old_dir = self.layout.root().join(&old.code_dir);
            if old_dir != code_dir {
                let _ = std::fs::remove_dir_all(old_dir);
            }
        }
        tracing::info!(plugin = %record.id, name = %record.name, build = %record.build_number, "plugin {verb}");
        Ok(self.summary(&record))
    }

    pub fn list_plugins(&self) -> Result<Vec<PluginSummary>, EngineError> {
        Ok(self
            .store
            .list_plugins()?
            .iter()
            .map(|p| self.summary(p))
            .collect())
    }

    pub fn get_plugin(&self, reference: &str) -> Result<PluginSummary, EngineError> {
        Ok(self.summary(&self.find_plugin(reference)?))
    }

    /// The stored artifact definition (schemas, manifest), without code.
    pub fn plugin_definition(&self, reference: &str) -> Result<Value, EngineError> {
        Ok(self.find_plugin(reference)?.definition)
    }

    /// Removes a plugin: its worker, record, code and logs.
    pub async fn delete_plugin(&self, reference: &str) -> Result<PluginSummary, EngineError> {
        let _guard = self.plugin_lock.lock().await;
        let rec = self.find_plugin(reference)?;
        self.refuse_if_in_use(&rec, "delete")?;
        let summary = self.summary(&rec);
        self.host.stop(&self.loaded(&rec)?).await;
        self.store.delete_plugin(&rec.id)?;
        let dir = self.layout.plugin_dir(&rec.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "plugin files not removed");
        }
        tracing::info!(plugin = %rec.id, "plugin deleted");
        Ok(summary)
    }

    /// Calls one operation of a plugin with a request the caller built.
    pub async fn invoke_plugin(
        &self,
        reference: &str,
        call: PluginInvocation,
    ) -> Result<Value, EngineError> {
        let rec = self.find_plugin(reference)?;
        let plugin = self.loaded(&rec)?;
        let op = self.host.operation(&plugin, &call.operation)?;
        if !call.request.is_object() {
            return Err(EngineError::InvalidInput {
                field: "request".into(),
                reason: "must be a JSON object".into(),
            });
        }
        let sync_target = match &call.sync_volume {
            None => None,
            Some(v) => {
                let id = doppel_storage::VolumeId::new(v.as_str())?;
                let path = self.pool.volume_path(&id);
                if !path.is_dir() {
                    return Err(EngineError::NotFound {
                        kind: "dataset",
                        id: v.clone(),
                    });
                }
                Some(path)
            }
        };
        let ctx = CallContext {
            job: call.job,
            sync_target,
            log_sink: None,
            ..Default::default()
        };
        Ok(self
            .host
            .invoke(&plugin, op, call.request, &ctx, call.deadline)
            .await?)
    }

    /// Pids of the plugin's running workers, in ascending order.
    pub fn plugin_worker_pids(&self, reference: &str) -> Result<Vec<u32>, EngineError> {
        let rec = self.find_plugin(reference)?;
        Ok(self.host.worker_pids(&self.loaded(&rec)?))
    }

    /// A page of one of the plugin's log streams: the last `tail` lines
    /// (default `DEFAULT_TAIL`, at most `MAX_TAIL`), or the last ones before
    /// the cursor `before` that an earlier page returned.
    pub fn plugin_logs(
        &self,
        reference: &str,
        level: PluginLogLevel,
        tail: Option<usize>,
        before: Option<&str>,
    ) -> Result<LogPage, EngineError> {
        let tail = tail.unwrap_or(DEFAULT_TAIL);
        if !(1..=MAX_TAIL).contains(&tail) {
            return Err(EngineError::InvalidInput {
                field: "tail".into(),
                reason: format!(
                    "must be between 1 and {MAX_TAIL} lines; page back to older lines with before"
                ),
            });
        }
        let rec = self.find_plugin(reference)?;
        PluginLog::new(self.layout.plugin_log_dir(&rec.id))
            .read(level, tail, before)
            .map_err(|e| match e {
                LogReadError::Io(source) => EngineError::Io {
                    context: format!("reading logs of plugin {}", rec.name),
                    source,
                },
                e => EngineError::InvalidInput {
                    field: "before".into(),
                    reason: e.to_string(),
                },
            })
    }

    /// Checks user parameters against one of the plugin's schemas, reporting
    /// every violation. Returns the parameters with secrets redacted, fit
    /// for logs and answers.
    pub fn validate_parameters(
        &self,
        reference: &str,
        which: ParameterDefinition,
        params: &Value,
    ) -> Result<Value, EngineError> {
        let rec = self.find_plugin(reference)?;
        let schema = rec
            .definition
            .pointer(which.pointer())
            .cloned()
            .ok_or_else(|| EngineError::InvalidInput {
                field: "definition".into(),
                reason: format!("plugin {} has no {} schema", rec.name, which.name()),
            })?;
        let compiled = ParameterSchema::new(&schema).map_err(|e| {
            EngineError::Internal(format!(
                "plugin {} has an unusable {} schema: {e}",
                rec.name,
                which.name()
            ))
        })?;
        compiled
            .validate(params)
            .map_err(|errs| EngineError::InvalidParameters {
                what: format!("{} parameters", which.name()),
                violations: errs.violations().iter().map(|v| v.to_string()).collect(),
            })?;
        Ok(redact_secrets(&schema, params))
    }

    /// Objects made by a plugin tie it down: deleting would orphan them.
    fn refuse_if_in_use(&self, rec: &PluginRecord, what: &str) -> Result<(), EngineError> {
        let (repos, configs) = self.store.plugin_object_counts(&rec.id)?;
        if repos > 0 {
            return Err(EngineError::Conflict(format!(
                "cannot {what} plugin {}: {repos} repositories and {configs} source configs on environments use it; \
                 delete those environments (or their source configs) first",
                rec.name
            )));
        }
        Ok(())
    }

    /// Removes install scratch directories left by a crash.
    pub(crate) fn sweep_plugin_leftovers(&self) -> Result<(), EngineError> {
        let Ok(plugins) = std::fs::read_dir(self.layout.plugins_dir()) else {
            return Ok(());
        };
        for p in plugins.flatten() {
            let Ok(entries) = std::fs::read_dir(p.path()) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    tracing::info!(path = %e.path().display(), "removing an interrupted plugin install");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }
}

/// Removes an install's scratch directories, and the plugin's directory
/// when nothing else is left in it (a first install that was refused).
struct Cleanup {
    paths: Vec<PathBuf>,
    plugin_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_dir_all(p);
        }
        // remove_dir only removes an empty directory, which is exactly the case wanted.
        let _ = std::fs::remove_dir(&self.plugin_dir);
    }
}
