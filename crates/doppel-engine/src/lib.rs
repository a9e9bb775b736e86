//! The engine: the one place that ties the metadata store, the storage pool
//! and the plugin host together into user-facing operations.
//!
//! Architecture invariant: the API and CLI reach the store, the pool and
//! plugins only through [`Engine`]; the engine knows nothing of HTTP.

pub mod access;
pub mod auth;
pub mod capacity;
mod datasets;
pub mod dsources;
mod environments;
mod error;
pub mod exports;
pub mod hooks;
mod hosts;
pub mod jobs;
pub mod keeper;
pub mod layout;
mod limits;
mod metrics;
pub mod mounts;
mod plugins;
pub mod policies;
pub mod retain;
mod scheduler;
mod secrets;
mod steps;
mod toolkit;
mod upgrades;
pub mod vdbs;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use doppel_plugin_host::artifact::MAX_ARTIFACT_BYTES;
pub use doppel_plugin_host::logs::{
    LogPage, DEFAULT_TAIL as DEFAULT_LOG_TAIL, MAX_TAIL as MAX_LOG_TAIL,
};
pub use doppel_plugin_host::SandboxConfig;
pub use doppel_storage::{DriverKind, PoolOptions, DEFAULT_POOL_SIZE, DEFAULT_RESERVE};
pub use error::EngineError;
pub use plugins::{ParameterDefinition, PluginInvocation};

use doppel_plugin_host::{HostConfig, PluginHost, WORKER_SCRIPT};
use doppel_store::Store;
use layout::Layout;

/// How snapshots are referred to: `SNAPSHOT-<n>`.
pub(crate) const SNAPSHOT_PREFIX: &str = "SNAPSHOT-";

/// The current time as RFC 3339, as records keep it.
pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A model as the JSON a job returns.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, EngineError> {
    serde_json::to_value(v).map_err(|e| EngineError::Internal(format!("encoding a result: {e}")))
}

/// Runs pool work (file system calls that may block) off the async threads.
pub(crate) async fn pool_task<T: Send + 'static>(
    f: impl FnOnce() -> doppel_storage::Result<T> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("pool task: {e}")))?
        .map_err(Into::into)
}

/// How the engine is set up; `doppel serve` fills it from flags and env vars.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// The storage pool: size and reserve of the embedded default, or a forced driver.
    pub pool: doppel_storage::PoolOptions,
    /// CPython 3.11 for PYTHON311 plugin workers.
    pub python: PathBuf,
    /// CPython 2.7 for PYTHON27 plugin workers; None refuses such plugins.
    pub python27: Option<PathBuf>,
    pub deadlines: Deadlines,
    /// Workers one plugin version may run at once.
    pub plugin_workers: usize,
    /// How long an extra plugin worker may stay idle before it is stopped
    /// (one per plugin version always stays warm).
    pub plugin_worker_idle: Duration,
    /// How plugin workers are confined (on, 2 GiB, by default).
    pub plugin_sandbox: SandboxConfig,
    /// Users, tokens and the first admin's password.
    pub auth: auth::AuthConfig,
    /// The program run as `<program> mount-keeper <socket>` to serve each
    /// remote mount from its own process, so mounts stay up while the
    /// engine restarts (`doppel serve` passes itself). None serves them
    /// inside the engine: they end with it (tests of the engine alone).
    pub mount_keeper: Option<PathBuf>,
    /// Pool usage thresholds: warn, then refuse new syncs, provisions and snapshots.
    pub capacity: capacity::Capacity,
    /// How webhook deliveries are tried.
    pub webhooks: webhooks::DeliveryConfig,
}

/// Plugin operation deadlines per class.
#[derive(Debug, Clone)]
pub struct Deadlines {
    pub start: Duration,
    pub short: Duration,
    pub normal: Duration,
    pub long: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            start: Duration::from_secs(60),
            short: Duration::from_secs(120),
            normal: Duration::from_secs(30 * 60),
            long: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct Engine {
    layout: Layout,
    store: Arc<Store>,
    jobs: jobs::JobRunner,
    pool: Arc<doppel_storage::Pool>,
    hosts: Arc<hosts::Hosts>,
    mount_sessions: mounts::Sessions,
    mount_keeper: Option<PathBuf>,
    host: PluginHost,
    /// Serialises plugin installs, upgrades and deletes.
    plugin_lock: tokio::sync::Mutex<()>,
    auth: auth::Auth,
    /// The background task that restores mounts at start and then keeps
    /// re-establishing lost ones; stopped by [`Engine::shutdown`].
    mount_watch: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Stops plugin workers idle for longer than the configured time.
    worker_reaper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Mount paths (environment id, path) a dSource or VDB job is mounting
    /// now, with who: see [`Engine::claim_mount_path`].
    mount_claims: Arc<std::sync::Mutex<std::collections::HashMap<(i64, String), String>>>,
    capacity: capacity::Capacity,
    metrics: Arc<metrics::Metrics>,
    /// Turns policies into jobs; see [`Engine::start_scheduler`].
    scheduler: scheduler::Scheduler,
    /// Where events go out to webhooks; see [`Engine::publish`].
    webhooks: webhooks::Webhooks,
    /// The capacity state last seen, so a crossing is told once.
    capacity_seen: std::sync::Mutex<capacity::CapacityState>,
}

/// How often the engine looks for remote mounts whose session ended.
const MOUNT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

impl Engine {
    /// Opens the data directory, creating what is missing, and checks that
    /// plugin workers can run.
    pub async fn open(config: EngineConfig) -> Result<Arc<Engine>, EngineError> {
        config.capacity.validate()?;
        let layout = Layout::new(&config.data_dir);
        layout.create()?;
        layout::write_private(&layout.worker_script(), WORKER_SCRIPT.as_bytes()).map_err(
            EngineError::io(format!("writing {}", layout.worker_script().display())),
        )?;
        check_python(&config.python).await?;
        if let Some(p) = &config.python27 {
            check_python27(p).await?;
        }
        let store = Arc::new(Store::open(&layout.metadata_db())?);
        let jobs = jobs::JobRunner::new(store.clone())?;
        let metrics = Arc::new(metrics::Metrics::new()?);
        let counted = metrics.clone();
        jobs.observe(Arc::new(move |n| counted.job(n)));
        let auth = auth::Auth::open(store.clone(), &layout, config.auth.clone()).await?;
        let secrets = Arc::new(secrets::SecretBox::open(&layout.secrets_key())?);
        let webhooks = webhooks::Webhooks::start(
            store.clone(),
            secrets.clone(),
            metrics.clone(),
            config.webhooks.clone(),
        )?;
        let published = webhooks.publisher();
        jobs.observe(Arc::new(move |n| {
            published.publish(webhooks::Event::job(n))
        }));
        let pool = Arc::new(open_pool(&config, known_datasets(&store)?).await?);
        // A freshly mounted pool shows its own top, not the mount point.
        let _ = layout::tighten_path(pool.root())?;
        let hosts = Arc::new(hosts::Hosts::new(store.clone(), secrets));
        let host = PluginHost::new(
            HostConfig {
                python: config.python.clone(),
                python27: config.python27.clone(),
                worker_script: layout.worker_script(),
                start_deadline: config.deadlines.start,
                max_workers: config.plugin_workers,
                short: config.deadlines.short,
                normal: config.deadlines.normal,
                long: config.deadlines.long,
                sandbox: config.plugin_sandbox.clone(),
            },
            hosts.clone(),
        );
        let engine = Engine {
            layout,
            store,
            jobs,
            pool,
            hosts,
            mount_sessions: Default::default(),
            mount_keeper: config.mount_keeper.clone(),
            host,
            plugin_lock: tokio::sync::Mutex::new(()),
            auth,
            mount_watch: Default::default(),
            worker_reaper: Default::default(),
            mount_claims: Default::default(),
            capacity: config.capacity,
            metrics,
            scheduler: Default::default(),
            webhooks,
            capacity_seen: std::sync::Mutex::new(capacity::CapacityState::Ok),
        };
        engine.sweep_plugin_leftovers()?;
        let engine = Arc::new(engine);
        // Mounts died with the previous engine's SSH sessions; hosts may be
        // slow or away, so this does not hold up the start.
        // A weak handle: the task must not keep a dropped engine alive.
        let weak = Arc::downgrade(&engine);
        let watch = tokio::spawn(async move {
            let Some(engine) = weak.upgrade() else { return };
            let failed = engine.restore_mounts().await;
            if !failed.is_empty() {
                tracing::warn!(
                    count = failed.len(),
                    "some mounts could not be re-established"
                );
            }
            engine.undo_unfinished().await;
            drop(engine);
            // Afterwards a mount whose session ends without an unmount
            // (sshfs killed, host rebooted, connection dropped) comes back.
            loop {
                tokio::time::sleep(MOUNT_WATCH_INTERVAL).await;
                let Some(engine) = weak.upgrade() else { return };
                let healed = engine.heal_mounts().await;
                if healed > 0 {
                    tracing::info!(count = healed, "lost mounts re-established");
                }
            }
        });
        *engine.mount_watch.lock().unwrap_or_else(|p| p.into_inner()) = Some(watch);
        let weak = Arc::downgrade(&engine);
        let max_idle = config.plugin_worker_idle;
        let reaper = tokio::spawn(async move {
            // Checking a few times per idle period is precise enough.
            let every = (max_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
            loop {
                tokio::time::sleep(every).await;
                let Some(engine) = weak.upgrade() else { return };
                let stopped = engine.host.reap_idle(max_idle).await;
                if stopped > 0 {
                    tracing::info!(count = stopped, "stopped idle plugin workers");
                }
            }
        });
        *engine
            .worker_reaper
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reaper);
        Ok(engine)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Jobs: every long operation runs as one.
    pub fn jobs(&self) -> &jobs::JobRunner {
        &self.jobs
    }

    /// The storage pool's driver, capabilities, space and notices.
    pub async fn pool_status(&self) -> Result<capacity::PoolReport, EngineError> {
        self.pool_report().await
    }

    /// The storage pool (datasets, snapshots, clones).
    pub fn pool(&self) -> &Arc<doppel_storage::Pool> {
        &self.pool
    }

    /// Stops every plugin worker. Mounts served by keepers stay up (the
    /// next start adopts them); those served inside the engine end and are
    /// re-established at the next start.
    pub async fn shutdown(&self) {
        self.scheduler.stop();
        for task in [&self.mount_watch, &self.worker_reaper] {
            if let Some(t) = task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                t.abort();
            }
        }
        self.mount_sessions.abort_all();
        self.host.stop_all().await;
    }
}

/// Opens (creating it on first start) the pool, says loudly when it is not
/// the fast thin default, and reconciles it with the records.
/// Every dataset a record points to: reconciliation never moves these.
fn known_datasets(store: &Store) -> Result<doppel_storage::KnownSet, EngineError> {
    let mut known = doppel_storage::KnownSet::default();
    for v in store.dataset_volumes()? {
        match doppel_storage::VolumeId::new(v.as_str()) {
            Ok(id) => {
                known.volumes.insert(id);
            }
            Err(e) => {
                tracing::warn!(volume = %v, error = %e, "a dSource record names an invalid dataset id")
            }
        }
    }
    for s in store.list_snapshots(None)? {
        if let (Ok(v), Ok(id)) = (
            doppel_storage::VolumeId::new(s.volume.as_str()),
            doppel_storage::SnapshotId::new(s.pool_snapshot.as_str()),
        ) {
            known
                .snapshots
                .insert(doppel_storage::SnapshotRef::new(v, id));
        }
    }
    for m in store.list_mounts(None)? {
        match doppel_storage::VolumeId::new(&m.volume) {
            Ok(id) => {
                known.volumes.insert(id);
            }
            Err(e) => {
                tracing::warn!(mount = m.id, error = %e, "a mount record names an invalid dataset id")
            }
        }
    }
    Ok(known)
}

async fn open_pool(
    config: &EngineConfig,
    known: doppel_storage::KnownSet,
) -> Result<doppel_storage::Pool, EngineError> {
    let data_dir = config.data_dir.clone();
    let options = config.pool.clone();
    let (pool, report) = tokio::task::spawn_blocking(move || {
        let (pool, notices) = doppel_storage::open_default_pool(&data_dir, &options)?;
        for n in &notices {
            match n.level {
                doppel_storage::NoticeLevel::Warning => {
                    tracing::warn!("storage pool: {}", n.message)
                }
                _ => tracing::info!("storage pool: {}", n.message),
            }
        }
        // A dataset no record knows is an orphan of a crash between a pool
        // change and its record: it is quarantined, never deleted.
        let report = pool.reconcile(&known);
        Ok::<_, doppel_storage::StorageError>((pool, report))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("pool task: {e}")))??;
    if !report.is_clean() {
        tracing::warn!(report = ?report, "storage pool reconciled with the metadata store");
    }
    let info = pool.info();
    tracing::info!(root = %pool.root().display(), driver = ?info.kind, thin_clone = info.thin_clone, "storage pool ready");
    Ok(pool)
}

/// Checks the worker Python once at start, so a missing package is reported
/// when the engine starts rather than at the first plugin call.
async fn check_python(python: &std::path::Path) -> Result<(), EngineError> {
    let script = "import sys, google.protobuf, six\n\
                  assert sys.version_info[:2] == (3, 11), 'CPython 3.11 is required, this is ' + sys.version.split()[0]\n\
                  v = tuple(int(x) for x in google.protobuf.__version__.split('.')[:2])\n\
                  assert (6, 31) <= v < (7, 0), 'protobuf>=6.31.1,<7 is required, found ' + google.protobuf.__version__\n";
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .await;
    let fix = "run scripts/setup.sh, or point DOPPEL_PYTHON at a CPython 3.11 with protobuf>=6.31.1,<7 and six==1.17.0";
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or_default();
            Err(EngineError::Internal(format!(
                "plugin worker Python {} is not usable ({last}); {fix}",
                python.display()
            )))
        }
        Err(e) => Err(EngineError::Internal(format!(
            "plugin worker Python {} cannot run ({e}); {fix}",
            python.display()
        ))),
    }
}

/// Checks the 2.7 runtime once at start. It needs no packages: PYTHON27
/// plugins bundle protobuf and six.
async fn check_python27(python: &std::path::Path) -> Result<(), EngineError> {
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg("import sys, json, zlib\nassert sys.version_info[:2] == (2, 7), 'CPython 2.7 is required, this is ' + sys.version.split()[0]\n")
        .output()
        .await;
    let fix = "run scripts/setup.sh, or point --python27 (DOPPEL_PYTHON27) at a CPython 2.7";
    let why = match out {
        Ok(o) if o.status.success() => return Ok(()),
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned(),
        Err(e) => e.to_string(),
    };
    Err(EngineError::Internal(format!(
        "plugin worker Python {} for PYTHON27 plugins is not usable ({why}); {fix}",
        python.display()
    )))
}

impl Engine {
    /// Removes the dSources and VDBs whose link or provision job died with
    /// the previous engine: their job is already marked failed, and a
    /// failed job leaves nothing half-made. VDBs first: they hang off dSources.
    async fn undo_unfinished(&self) {
        for v in self.store.unfinished_vdbs().unwrap_or_default() {
            tracing::warn!(vdb = %v.name, "removing a VDB whose provision was interrupted");
            if let Err(e) = self.remove_vdb(&v).await {
                tracing::error!(vdb = %v.name, error = %e, "cannot remove an interrupted VDB");
            }
        }
        for d in self.store.unfinished_dsources().unwrap_or_default() {
            tracing::warn!(dsource = %d.name, "removing a dSource whose link was interrupted");
            if let Err(e) = self.remove_dsource(&d).await {
                tracing::error!(dsource = %d.name, error = %e, "cannot remove an interrupted dSource");
            }
        }
    }
}
