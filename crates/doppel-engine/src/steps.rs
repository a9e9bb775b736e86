//! The one way a workflow runs a plugin operation: the request is built by
//! the plugin host from typed inputs, the call's log lines go to the job,
//! the job records the operation with its duration, and a failure becomes
//! the `EngineError` of the plugin's error. Every workflow (dSources, VDBs,
//! discovery, V2P) goes through [`Engine::plugin_step`] or its variants.

use std::path::PathBuf;

use doppel_model::EventLevel;
use doppel_plugin_host::requests::{
    Mount, RemoteConnection, RemoteEnvironment, RemoteHost, RemoteUser, Reply, Request,
};
use doppel_plugin_host::{CallContext, Op};
use doppel_store::{EnvironmentRecord, EnvironmentUserRecord, PluginRecord};

use crate::hosts::{ENVIRONMENT_PREFIX, HOST_PREFIX, USER_PREFIX};
use crate::jobs::JobHandle;
use crate::{Engine, EngineError};

/// An environment as plugins see it.
pub(crate) fn remote_environment(env: &EnvironmentRecord) -> RemoteEnvironment {
    RemoteEnvironment {
        name: env.name.clone(),
        reference: format!("{ENVIRONMENT_PREFIX}{}", env.id),
        host: RemoteHost {
            name: env.host.clone(),
            reference: format!("{HOST_PREFIX}{}", env.id),
            binary_path: env.toolkit_path.clone(),
            scratch_path: env.scratch_path.clone(),
        },
    }
}

/// The `RemoteConnection` a plugin gets for `env` as `user`.
pub(crate) fn remote_connection(
    env: &EnvironmentRecord,
    user: &EnvironmentUserRecord,
) -> RemoteConnection {
    RemoteConnection {
        environment: remote_environment(env),
        user: RemoteUser {
            name: user.name.clone(),
            reference: format!("{USER_PREFIX}{}", user.id),
        },
    }
}

/// A dataset mounted at `path` on `env`, as requests describe it.
pub(crate) fn mount_on(env: &EnvironmentRecord, path: &str) -> Mount {
    Mount {
        environment: remote_environment(env),
        mount_path: path.to_owned(),
        shared_path: None,
    }
}

impl Engine {
    /// Whether `plugin` implements `op`; an operation of the other kind of
    /// dSource is an error (a bug here), never a silent "no".
    pub(crate) fn implements(&self, plugin: &PluginRecord, op: Op) -> Result<bool, EngineError> {
        Ok(self.host.implements(&self.loaded(plugin)?, op)?)
    }

    /// Runs `op` as a step of `job`.
    pub(crate) async fn plugin_step(
        &self,
        job: &JobHandle,
        plugin: &PluginRecord,
        op: Op,
        request: &Request,
    ) -> Result<Reply, EngineError> {
        self.run_step(Some(job), plugin, op, request, None).await
    }

    /// Runs `op` as a step of `job` where the plugin implements it.
    pub(crate) async fn plugin_step_if_implemented(
        &self,
        job: &JobHandle,
        plugin: &PluginRecord,
        op: Op,
        request: &Request,
    ) -> Result<Option<Reply>, EngineError> {
        if !self.implements(plugin, op)? {
            return Ok(None);
        }
        self.plugin_step(job, plugin, op, request).await.map(Some)
    }

    /// Runs `op`, in `job` if there is one (a question outside any job
    /// records nothing), with `sync_target` as the dataset its `run_sync`
    /// fills.
    pub(crate) async fn run_step(
        &self,
        job: Option<&JobHandle>,
        plugin: &PluginRecord,
        op: Op,
        request: &Request,
        sync_target: Option<PathBuf>,
    ) -> Result<Reply, EngineError> {
        let loaded = self.loaded(plugin)?;
        let call = CallContext {
            job: job.map(|j| j.id().to_owned()),
            sync_target,
            log_sink: job.map(|j| j.plugin_log_sink()),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let out = self.host.call(&loaded, op, request, &call).await;
        self.metrics
            .plugin_operation(&op.name(), out.is_ok(), started.elapsed());
        if let Some(job) = job {
            job.event(
                if out.is_ok() {
                    EventLevel::Info
                } else {
                    EventLevel::Error
                },
                &format!(
                    "plugin {} {} in {:.3} ms",
                    op.name(),
                    if out.is_ok() { "succeeded" } else { "failed" },
                    started.elapsed().as_secs_f64() * 1000.0
                ),
            );
            if out.is_err() {
                self.say_if_at_reserve(job).await;
            }
        }
        Ok(out?)
    }

    /// A plugin that writes into a mount while the pool is at its reserve
    /// has its writes refused (the host sees EPERM or EIO) and fails with
    /// whatever its copy tool said: the job's events say why.
    async fn say_if_at_reserve(&self, job: &JobHandle) {
        let pool = self.pool.clone();
        let Ok(space) = crate::pool_task(move || pool.space()).await else {
            return;
        };
        let reserve = self.pool.reserve();
        // Within 1 % of the reserve (or 16 MiB): the guard stops writes
        // just short of it.
        let margin = (reserve / 100).max(16 << 20);
        if reserve > 0 && space.free <= reserve.saturating_add(margin) {
            job.event(
                EventLevel::Error,
                &format!(
                    "the pool is at its free-space reserve ({} bytes free, {reserve} bytes kept): \
                     writes into its mounts were refused, which is likely why the plugin failed; \
                     free space (delete VDBs, snapshots or dSources) or lower --pool-reserve",
                    space.free
                ),
            );
        }
    }
}
