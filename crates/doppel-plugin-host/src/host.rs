//! The plugin host: one long-lived worker per installed plugin version,
//! started on first use and replaced after it dies or overruns a deadline.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use doppel_model::PluginKind;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::error::InvokeError;
use crate::libs::LibraryHandler;
use crate::logs::PluginLog;
use crate::operations::{Applies, DeadlineClass, Operation};
use crate::worker::{CallContext, Worker, WorkerSpec};

/// The worker script, shipped inside the engine binary.
pub const WORKER_SCRIPT: &str = include_str!("../python/doppel_worker.py");

/// Deadlines per operation class, and how workers are started.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// CPython 3.11 with `protobuf>=6.31.1,<7` and `six==1.17.0`.
    pub python: PathBuf,
    /// Where [`WORKER_SCRIPT`] has been written.
    pub worker_script: PathBuf,
    pub start_deadline: Duration,
    pub short: Duration,
    pub normal: Duration,
    pub long: Duration,
}

impl HostConfig {
    pub fn deadline(&self, class: DeadlineClass) -> Duration {
        match class {
            DeadlineClass::Short => self.short,
            DeadlineClass::Normal => self.normal,
            DeadlineClass::Long => self.long,
        }
    }
}

/// One installed plugin version, as the host needs it.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    pub id: String,
    pub name: String,
    pub build_number: String,
    pub kind: PluginKind,
    pub entry_point: String,
    pub manifest: Value,
    /// The extracted `sourceCode`.
    pub code_dir: PathBuf,
    pub log: Arc<PluginLog>,
}

impl LoadedPlugin {
    fn key(&self) -> String {
        format!("{}@{}", self.id, self.build_number)
    }
}

type Slot = Arc<Mutex<Option<Worker>>>;

pub struct PluginHost {
    config: HostConfig,
    libs: Arc<dyn LibraryHandler>,
    slots: std::sync::Mutex<HashMap<String, Slot>>,
}

impl PluginHost {
    pub fn new(config: HostConfig, libs: Arc<dyn LibraryHandler>) -> Self {
        PluginHost {
            config,
            libs,
            slots: std::sync::Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    fn slot(&self, plugin: &LoadedPlugin) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(plugin.key()).or_default().clone()
    }

    fn spec(&self, plugin: &LoadedPlugin) -> WorkerSpec {
        WorkerSpec {
            python: self.config.python.clone(),
            script: self.config.worker_script.clone(),
            root: plugin.code_dir.clone(),
            entry_point: plugin.entry_point.clone(),
            start_deadline: self.config.start_deadline,
        }
    }

    /// Starts a worker for `plugin` (if none runs) to prove its code loads.
    pub async fn ensure_loaded(&self, plugin: &LoadedPlugin) -> Result<u32, InvokeError> {
        let slot = self.slot(plugin);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(Worker::start(&self.spec(plugin), plugin.log.clone()).await?);
        }
        Ok(guard.as_ref().expect("set above").pid())
    }

    /// Resolves `group.method` for this plugin, checking kind and manifest.
    pub fn operation(
        &self,
        plugin: &LoadedPlugin,
        name: &str,
    ) -> Result<&'static Operation, InvokeError> {
        let unknown = || InvokeError::UnknownOperation {
            plugin: plugin.name.clone(),
            operation: name.to_owned(),
        };
        let op = Operation::find(name).ok_or_else(unknown)?;
        if let Applies::Only(kind) = op.applies {
            if kind != plugin.kind {
                return Err(InvokeError::UnknownOperation {
                    plugin: plugin.name.clone(),
                    operation: format!(
                        "{name} (only for {} plugins; this one is {})",
                        kind.as_str(),
                        plugin.kind.as_str()
                    ),
                });
            }
        }
        if !op.implemented_by(&plugin.manifest, plugin.kind) {
            return Err(InvokeError::NotImplemented {
                plugin: plugin.name.clone(),
                operation: name.to_owned(),
            });
        }
        Ok(op)
    }

    /// Calls one operation and returns its `return_value` as proto JSON.
    /// Calls to one plugin version are served one at a time.
    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        op: &Operation,
        request: Value,
        call: &CallContext,
        deadline: Option<Duration>,
    ) -> Result<Value, InvokeError> {
        let deadline = deadline.unwrap_or_else(|| self.config.deadline(op.deadline));
        let slot = self.slot(plugin);
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(Worker::start(&self.spec(plugin), plugin.log.clone()).await?);
        }
        let worker = guard.as_mut().expect("set above");
        let result = worker
            .invoke(op, request, call, deadline, self.libs.as_ref())
            .await;
        if matches!(
            result,
            Err(InvokeError::Deadline { .. }
                | InvokeError::WorkerDied { .. }
                | InvokeError::Protocol(_))
        ) {
            guard.take();
        }
        result
    }

    /// The pid of the running worker of `plugin`, if one runs.
    pub async fn worker_pid(&self, plugin: &LoadedPlugin) -> Option<u32> {
        let slot = self.slot(plugin);
        let guard = slot.lock().await;
        guard.as_ref().map(Worker::pid)
    }

    /// Stops the worker of one plugin version (on delete or upgrade).
    pub async fn stop(&self, plugin: &LoadedPlugin) {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.remove(&plugin.key())
        };
        if let Some(slot) = slot {
            if let Some(w) = slot.lock().await.take() {
                w.shutdown().await;
            }
        }
    }

    /// Stops every worker (engine shutdown).
    pub async fn stop_all(&self) {
        let slots: Vec<Slot> = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.drain().map(|(_, s)| s).collect()
        };
        for slot in slots {
            if let Some(w) = slot.lock().await.take() {
                w.shutdown().await;
            }
        }
    }
}
