//! The plugin host: for each installed plugin version, a small pool of
//! long-lived workers, started on demand up to a limit, so that calls of
//! different jobs run side by side. A worker that dies or overruns a deadline
//! is dropped (killed) and a later call starts a fresh one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use doppel_model::PluginKind;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::artifact::Language;
use crate::error::InvokeError;
use crate::libs::LibraryHandler;
use crate::logs::PluginLog;
use crate::operations::{Applies, DeadlineClass, Op, Operation};
use crate::requests::{Generation, Reply, Request};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::worker::{CallContext, Worker, WorkerSpec};

/// The worker script, shipped inside the engine binary.
pub const WORKER_SCRIPT: &str = include_str!("../python/doppel_worker.py");

/// Deadlines per operation class, and how workers are started.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// CPython 3.11 with `protobuf>=6.31.1,<7` and `six==1.17.0`, for
    /// PYTHON311 plugins.
    pub python: PathBuf,
    /// CPython 2.7 for PYTHON27 plugins (they bring protobuf and six in
    /// their bundle); None: such plugins cannot run here.
    pub python27: Option<PathBuf>,
    /// Where [`WORKER_SCRIPT`] has been written.
    pub worker_script: PathBuf,
    pub start_deadline: Duration,
    /// Workers one plugin version may run at once (at least 1): calls beyond
    /// that wait for a free worker.
    pub max_workers: usize,
    pub short: Duration,
    pub normal: Duration,
    pub long: Duration,
    /// How workers are confined.
    pub sandbox: SandboxConfig,
}

/// How to tell an operator that no 2.7 runtime is configured.
pub const NO_PYTHON27: &str = "PYTHON27 plugins (dvp 0.3 to 3.x) need a CPython 2.7 runtime and this engine has none; \
     install it with scripts/setup.sh and start the engine with --python27 PATH (or DOPPEL_PYTHON27)";

impl HostConfig {
    /// The interpreter for plugins of `language`.
    pub fn python_for(&self, language: Language) -> Option<&std::path::Path> {
        match language {
            Language::Python311 => Some(&self.python),
            Language::Python27 => self.python27.as_deref(),
        }
    }

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
    /// Which interpreter its workers run on.
    pub language: Language,
    pub entry_point: String,
    pub manifest: Value,
    /// The extracted `sourceCode`.
    pub code_dir: PathBuf,
    /// The plugin's private writable directory; made (and handed to the
    /// plugin's uid) when a worker starts.
    pub scratch_dir: PathBuf,
    pub log: Arc<PluginLog>,
}

impl LoadedPlugin {
    fn key(&self) -> String {
        format!("{}@{}", self.id, self.build_number)
    }
}

/// The workers of one plugin version.
struct Workers {
    /// One permit per worker that may run; a call holds one while it runs.
    permits: Arc<Semaphore>,
    state: std::sync::Mutex<WorkerState>,
}

#[derive(Default)]
struct WorkerState {
    /// Idle workers with the time each came back, most recent last: calls
    /// take the most recent, so extra workers age out (see `reap_idle`).
    idle: Vec<(Worker, std::time::Instant)>,
    /// Pids of workers serving a call right now.
    busy: Vec<u32>,
}

impl Workers {
    fn state(&self) -> std::sync::MutexGuard<'_, WorkerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker taken out of its pool for one call. Dropping it without
/// [`Lease::give_back`] (an error, or the call's future dropped mid-way)
/// kills the process, so a worker in an unknown state is never reused.
struct Lease {
    workers: Arc<Workers>,
    worker: Option<Worker>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Lease {
    fn worker(&mut self) -> &mut Worker {
        self.worker.as_mut().expect("present until given back")
    }

    fn give_back(mut self) {
        let worker = self.worker.take().expect("present until given back");
        let mut st = self.workers.state();
        st.busy.retain(|p| *p != worker.pid());
        // A closed pool (plugin stopped meanwhile) keeps no workers.
        if !self.workers.permits.is_closed() {
            st.idle.push((worker, std::time::Instant::now()));
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            self.workers.state().busy.retain(|p| *p != w.pid());
        }
    }
}

pub struct PluginHost {
    config: HostConfig,
    libs: Arc<dyn LibraryHandler>,
    pools: std::sync::Mutex<HashMap<String, Arc<Workers>>>,
    /// Found at the first worker start; an error is not kept, so installing
    /// bwrap helps without a restart.
    sandbox: tokio::sync::OnceCell<Arc<Sandbox>>,
    sandbox27: tokio::sync::OnceCell<Arc<Sandbox>>,
}

impl PluginHost {
    pub fn new(config: HostConfig, libs: Arc<dyn LibraryHandler>) -> Self {
        if !config.sandbox.enabled {
            tracing::warn!(
                "PLUGIN SANDBOX OFF: plugin code runs unconfined as the engine's user and can read the engine's secrets, metadata and host credentials; use --plugin-sandbox off only to diagnose the sandbox"
            );
        }
        PluginHost {
            config,
            libs,
            pools: std::sync::Mutex::new(HashMap::new()),
            sandbox: tokio::sync::OnceCell::new(),
            sandbox27: tokio::sync::OnceCell::new(),
        }
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    fn workers(&self, plugin: &LoadedPlugin) -> Arc<Workers> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools
            .entry(plugin.key())
            .or_insert_with(|| {
                Arc::new(Workers {
                    permits: Arc::new(Semaphore::new(self.config.max_workers.max(1))),
                    state: Default::default(),
                })
            })
            .clone()
    }

    async fn spec(&self, plugin: &LoadedPlugin) -> Result<WorkerSpec, InvokeError> {
        let python = self
            .config
            .python_for(plugin.language)
            .ok_or_else(|| InvokeError::Start(NO_PYTHON27.into()))?
            .to_owned();
        let sandbox = if self.config.sandbox.enabled {
            // One sandbox per runtime: each binds its own interpreter's tree.
            let cell = match plugin.language {
                Language::Python311 => &self.sandbox,
                Language::Python27 => &self.sandbox27,
            };
            let sb = cell
                .get_or_try_init(|| async {
                    Sandbox::prepare(self.config.sandbox.clone(), &python)
                        .await
                        .map(Arc::new)
                })
                .await
                .map_err(|e| InvokeError::Sandbox(e.to_string()))?;
            Some(sb.clone())
        } else {
            None
        };
        Ok(WorkerSpec {
            plugin_id: plugin.id.clone(),
            python,
            script: self.config.worker_script.clone(),
            root: plugin.code_dir.clone(),
            scratch: plugin.scratch_dir.clone(),
            entry_point: plugin.entry_point.clone(),
            start_deadline: self.config.start_deadline,
            sandbox,
        })
    }

    /// Waits for a free slot, then takes an idle worker or starts one.
    async fn lease(&self, plugin: &LoadedPlugin) -> Result<Lease, InvokeError> {
        let workers = self.workers(plugin);
        let permit =
            workers
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| InvokeError::Stopped {
                    plugin: plugin.name.clone(),
                })?;
        let idle = workers.state().idle.pop();
        let worker = match idle {
            Some((w, _)) => w,
            None => Worker::start(&self.spec(plugin).await?, plugin.log.clone()).await?,
        };
        workers.state().busy.push(worker.pid());
        Ok(Lease {
            workers,
            worker: Some(worker),
            _permit: permit,
        })
    }

    /// Makes sure a worker of `plugin` runs, to prove its code loads.
    pub async fn ensure_loaded(&self, plugin: &LoadedPlugin) -> Result<u32, InvokeError> {
        let lease = self.lease(plugin).await?;
        let pid = lease.worker.as_ref().expect("just leased").pid();
        lease.give_back();
        Ok(pid)
    }

    /// Resolves `group.method` for this plugin, checking kind and manifest.
    pub fn operation(
        &self,
        plugin: &LoadedPlugin,
        name: &str,
    ) -> Result<&'static Operation, InvokeError> {
        let op = Operation::find(name).ok_or_else(|| InvokeError::UnknownOperation {
            plugin: plugin.name.clone(),
            operation: name.to_owned(),
        })?;
        if !self.implements(plugin, op.id)? {
            return Err(InvokeError::NotImplemented {
                plugin: plugin.name.clone(),
                operation: name.to_owned(),
            });
        }
        Ok(op)
    }

    /// Whether the plugin's manifest says it implements `op`. An operation
    /// of the other kind of dSource is an error, not a "no": asking a
    /// direct plugin for a staged step is a bug of the caller.
    pub fn implements(&self, plugin: &LoadedPlugin, op: Op) -> Result<bool, InvokeError> {
        let spec = op.spec();
        if let Applies::Only(kind) = spec.applies {
            if kind != plugin.kind {
                return Err(InvokeError::UnknownOperation {
                    plugin: plugin.name.clone(),
                    operation: format!(
                        "{} (only for {} plugins; this one is {})",
                        spec.name(),
                        kind.as_str(),
                        plugin.kind.as_str()
                    ),
                });
            }
        }
        Ok(spec.implemented_by(&plugin.manifest, plugin.kind))
    }

    /// Calls `op` with its message built from `request` for this plugin's
    /// SDK generation; an operation the manifest lacks is `NotImplemented`.
    pub async fn call(
        &self,
        plugin: &LoadedPlugin,
        op: Op,
        request: &Request,
        call: &CallContext,
    ) -> Result<Reply, InvokeError> {
        if !self.implements(plugin, op)? {
            return Err(InvokeError::NotImplemented {
                plugin: plugin.name.clone(),
                operation: op.name(),
            });
        }
        let generation = Generation::from(plugin.language);
        let message = request.message(op, generation)?;
        let out = self.invoke(plugin, op.spec(), message, call, None).await?;
        Ok(Reply::new(out, generation))
    }

    /// Calls one operation and returns its `return_value` as proto JSON.
    /// Up to [`HostConfig::max_workers`] calls of one plugin version run at
    /// once, each in its own worker.
    pub async fn invoke(
        &self,
        plugin: &LoadedPlugin,
        op: &Operation,
        request: Value,
        call: &CallContext,
        deadline: Option<Duration>,
    ) -> Result<Value, InvokeError> {
        let deadline = deadline.unwrap_or_else(|| self.config.deadline(op.deadline));
        let mut lease = self.lease(plugin).await?;
        let result = lease
            .worker()
            .invoke(op, request, call, deadline, self.libs.as_ref())
            .await;
        // After a deadline, a death or a protocol error the worker's state is
        // unknown: dropping the lease kills it.
        if !matches!(
            result,
            Err(InvokeError::Deadline { .. }
                | InvokeError::WorkerDied { .. }
                | InvokeError::OutputLimit { .. }
                | InvokeError::Protocol(_))
        ) {
            lease.give_back();
        }
        result
    }

    /// The pids of the running workers of `plugin`, serving a call or idle,
    /// in ascending order.
    pub fn worker_pids(&self, plugin: &LoadedPlugin) -> Vec<u32> {
        // Looking does not make a pool for a plugin that never ran.
        let Some(workers) = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&plugin.key())
            .cloned()
        else {
            return Vec::new();
        };
        let st = workers.state();
        let mut pids: Vec<u32> = st
            .idle
            .iter()
            .map(|(w, _)| w.pid())
            .chain(st.busy.iter().copied())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Stops the workers of one plugin version (on delete or upgrade): idle
    /// ones now, busy ones when their call ends; waiting calls fail.
    pub async fn stop(&self, plugin: &LoadedPlugin) {
        let workers = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.remove(&plugin.key())
        };
        if let Some(w) = workers {
            Self::close(&w).await;
        }
    }

    async fn close(workers: &Workers) {
        workers.permits.close();
        let idle = std::mem::take(&mut workers.state().idle);
        for (w, _) in idle {
            w.shutdown().await;
        }
    }

    /// Stops workers idle for longer than `max_idle`, keeping the most
    /// recently used one of each plugin version warm: a burst of parallel
    /// jobs starts extra workers, and they should not stay for good.
    /// Returns how many stopped.
    pub async fn reap_idle(&self, max_idle: Duration) -> usize {
        let all: Vec<Arc<Workers>> = {
            let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.values().cloned().collect()
        };
        let mut stopped = 0;
        for workers in all {
            let old: Vec<Worker> = {
                let mut st = workers.state();
                let keep_newest = st.idle.len().saturating_sub(1);
                let (mut old, mut kept) = (Vec::new(), Vec::new());
                for (i, (w, since)) in std::mem::take(&mut st.idle).into_iter().enumerate() {
                    if i < keep_newest && since.elapsed() > max_idle {
                        old.push(w);
                    } else {
                        kept.push((w, since));
                    }
                }
                st.idle = kept;
                old
            };
            for w in old {
                stopped += 1;
                w.shutdown().await;
            }
        }
        stopped
    }

    /// Stops every worker (engine shutdown).
    pub async fn stop_all(&self) {
        let all: Vec<Arc<Workers>> = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            pools.drain().map(|(_, w)| w).collect()
        };
        for w in all {
            Self::close(&w).await;
        }
    }
}
