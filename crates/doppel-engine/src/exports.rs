//! V2P: a snapshot exported as a plain physical copy into a directory of a
//! host (contract §4, "V2P"): the parameters are checked against the
//! plugin's virtualToPhysicalDefinition, the snapshot owner's
//! pre_source_to_physical may refuse the target, the engine copies the
//! files, and source_to_physical finishes.
//!
//! The copy: a temporary thin clone of the snapshot, mounted read-only on
//! the host, copied with rsync by the host into the target directory, then
//! unmounted and destroyed. A copy cut short by a crash leaves its mount
//! record; the next start removes that mount and clone instead of
//! re-establishing them.

use std::sync::Arc;

use doppel_model::{EventLevel, ExportSnapshot, Job, MountRequest};
use doppel_plugin_host::schema::ParameterSchema;
use doppel_plugin_host::CallContext;
use doppel_storage::{SnapshotId, SnapshotRef, VolumeId};
use serde_json::json;

use crate::environments::{connection_json, sh_quote};
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX};
use crate::{Engine, EngineError};

/// Names of the temporary clones a V2P copies from.
const TEMP_CLONE_PREFIX: &str = "v2p-";

/// Whether a dataset is a V2P's temporary clone, never kept across starts.
pub(crate) fn is_temp_clone(volume: &str) -> bool {
    volume.starts_with(TEMP_CLONE_PREFIX)
}

impl Engine {
    /// Exports a snapshot into a host directory, in a job.
    pub fn export_snapshot(self: &Arc<Self>, req: ExportSnapshot) -> Result<Job, EngineError> {
        let invalid = |field: &str, reason: &str| EngineError::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        };
        let snap_id = parse_ref(&req.snapshot, crate::SNAPSHOT_PREFIX)
            .ok_or_else(|| invalid("snapshot", "must look like SNAPSHOT-<n>"))?;
        let snapshot = self
            .store
            .get_snapshot(snap_id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "snapshot",
                id: req.snapshot.clone(),
            })?;
        if !req.target_directory.starts_with('/')
            || req.target_directory.contains(['\0', '\n'])
            || req.target_directory == "/"
        {
            return Err(invalid(
                "target_directory",
                "must be an absolute directory other than /",
            ));
        }
        let env = self.find_environment(&req.environment)?;
        let user = match &req.user {
            None => self
                .store
                .environment_users(env.id)?
                .into_iter()
                .find(|u| u.is_primary),
            Some(u) => self
                .store
                .environment_users(env.id)?
                .into_iter()
                .find(|x| &x.name == u),
        }
        .ok_or_else(|| EngineError::NotFound {
            kind: "environment user",
            id: req.user.clone().unwrap_or_default(),
        })?;
        // The snapshot's owner decides the operations.
        let (plugin, prefix, mut request, target) = if let Some(ds) = self
            .store
            .list_dsources()?
            .into_iter()
            .find(|d| d.volume == snapshot.volume)
        {
            let target = format!("DSOURCE-{}", ds.id);
            let (p, prefix, r) = self.dsource_v2p_request(ds)?;
            (p, prefix, r, target)
        } else if let Some(v) = self
            .store
            .list_vdbs()?
            .into_iter()
            .find(|v| v.volume == snapshot.volume)
        {
            let target = format!("VDB-{}", v.id);
            let (p, prefix, r) = self.vdb_v2p_request(v)?;
            (p, prefix, r, target)
        } else {
            return Err(EngineError::Internal(format!(
                "{} belongs to no dSource or VDB",
                req.snapshot
            )));
        };
        // SDKs before dvp 4 had no V2P: their plugins have no schema for it
        // and no operations to check or finish a copy.
        let Some(schema) = plugin
            .definition
            .pointer("/virtualToPhysicalDefinition/parameters")
        else {
            return Err(EngineError::Conflict(format!(
                "plugin {} build {} ({}) has no V2P: its artifact has no virtualToPhysicalDefinition                  (SDKs before dvp 4.0 had none); upgrade the plugin to a build made with dvp 4 or later to export snapshots",
                plugin.name,
                plugin.build_number,
                plugin.definition["language"].as_str().unwrap_or("?")
            )));
        };
        {
            let schema =
                ParameterSchema::new(schema).map_err(|e| EngineError::Internal(e.to_string()))?;
            schema
                .validate(&req.parameters)
                .map_err(|errs| EngineError::InvalidParameters {
                    what: "V2P parameters".into(),
                    violations: errs.violations().iter().map(|v| v.to_string()).collect(),
                })?;
        }
        request["snapshot"] = json!({"parameters": {"json": snapshot.metadata.to_string()}});
        request["physical_source"] = json!({"guid": format!("V2P-{}", uuid::Uuid::new_v4().simple()), "connection": connection_json(&env, &user),
            "target_directory": req.target_directory, "parameters": {"json": req.parameters.to_string()}});
        let engine = self.clone();
        self.jobs.spawn("V2P_EXPORT", Some(target), move |job| async move {
            let loaded = engine.loaded(&plugin)?;
            let call = CallContext { job: Some(job.id().to_owned()), sync_target: None, log_sink: Some(job.plugin_log_sink()), ..Default::default() };
            let pre = format!("{prefix}pre_source_to_physical");
            if let Ok(op) = engine.host.operation(&loaded, &pre) {
                job.progress(10, &format!("plugin {pre}"));
                engine.host.invoke(&loaded, op, request.clone(), &call, None).await?;
            }
            job.progress(30, &format!("copying {} to {} on {}", req.snapshot, req.target_directory, env.name));
            engine.copy_snapshot(&job, &snapshot, &env, &user.name, &req.target_directory).await?;
            let post = format!("{prefix}source_to_physical");
            if let Ok(op) = engine.host.operation(&loaded, &post) {
                job.progress(90, &format!("plugin {post}"));
                engine.host.invoke(&loaded, op, request, &call, None).await?;
            }
            Ok(json!({"environment": format!("{ENVIRONMENT_PREFIX}{}", env.id), "target_directory": req.target_directory}))
        })
    }

    /// A temporary clone of the snapshot, mounted read-only on the host and
    /// copied there into `target`; the clone and mount are always removed.
    async fn copy_snapshot(
        &self,
        job: &crate::jobs::JobHandle,
        snapshot: &doppel_store::SnapshotRecord,
        env: &doppel_store::EnvironmentRecord,
        user: &str,
        target: &str,
    ) -> Result<(), EngineError> {
        let temp = VolumeId::new(format!(
            "{TEMP_CLONE_PREFIX}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))?;
        let from = SnapshotRef::new(
            VolumeId::new(snapshot.volume.as_str())?,
            SnapshotId::new(snapshot.pool_snapshot.as_str())?,
        );
        let (pool, to) = (self.pool.clone(), temp.clone());
        crate::pool_task(move || pool.create_clone(&from, &to)).await?;
        let mount_path = format!(
            "{}/doppel-v2p-{}",
            env.scratch_path.trim_end_matches('/'),
            temp
        );
        let copied = async {
            let mount = self
                .mount_volume(MountRequest {
                    environment: format!("{ENVIRONMENT_PREFIX}{}", env.id),
                    user: Some(user.to_owned()),
                    volume: temp.to_string(),
                    subdirectory: String::new(),
                    mount_path: mount_path.clone(),
                    read_only: true,
                    owner: None,
                })
                .await?;
            // Whatever the copy does, the mount goes before the clone.
            let copy = self.copy_from(env, user, &mount_path, target).await;
            let unmounted = self.unmount(mount.id).await;
            copy.and(unmounted.map(|_| ()))
        }
        .await;
        if let Err(e) = self.destroy_dataset(temp.as_str()).await {
            job.event(
                EventLevel::Warning,
                &format!("the temporary clone {temp} was not removed: {e}"),
            );
        }
        copied
    }

    /// Copies the mounted clone at `from` into `target`, on the host.
    async fn copy_from(
        &self,
        env: &doppel_store::EnvironmentRecord,
        user: &str,
        from: &str,
        target: &str,
    ) -> Result<(), EngineError> {
        let users = self.store.environment_users(env.id)?;
        let u = users
            .iter()
            .find(|x| x.name == user)
            .ok_or_else(|| EngineError::InvalidInput {
                field: "user".into(),
                reason: format!("{user} is not a user of environment {}", env.name),
            })?;
        let conn = self.hosts.connect(env, u).await?;
        let script = format!(
            "mkdir -p -- {t} && if command -v rsync >/dev/null; then rsync -a -- {m}/ {t}/; else cp -a -- {m}/. {t}/; fi",
            t = sh_quote(target),
            m = sh_quote(from)
        );
        let out = conn.run_bash(&script, &Default::default(), false).await?;
        if out.exit_code != 0 {
            return Err(EngineError::InvalidInput {
                field: "target_directory".into(),
                reason: format!(
                    "cannot copy into {target} on {}: {}",
                    env.name,
                    out.stderr_str().trim()
                ),
            });
        }
        Ok(())
    }

    /// Removes what V2P copies cut short by a crash left: their mounts (the
    /// server side died with the old engine), records and clones.
    pub(crate) async fn remove_temp_clone_mounts(&self, mounts: Vec<doppel_store::MountRecord>) {
        for m in mounts {
            tracing::warn!(mount = m.id, path = %m.mount_path, volume = %m.volume, "removing the mount and clone of an interrupted V2P copy");
            if let Err(e) = self.drop_mount(&m).await {
                tracing::error!(mount = m.id, error = %e, "cannot remove the mount of an interrupted V2P copy");
                continue;
            }
            if let Err(e) = self.destroy_dataset(&m.volume).await {
                tracing::error!(volume = %m.volume, error = %e, "cannot remove the clone of an interrupted V2P copy");
            }
        }
    }
}
