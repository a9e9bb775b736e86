//! VDBs: writable thin clones of a snapshot, mounted on a target host and
//! configured by the plugin (contract §4, "VDBs"). Provision, snapshot,
//! refresh (to a newer snapshot of the parent) and rewind (to one of its
//! own snapshots) each start from a pool clone or restore; refresh and
//! rewind start a new timeflow and keep the old one.

use doppel_model::{CreateEmptyVdb, MountRequest, ProvisionVdb, Vdb};
use std::sync::Arc;

use doppel_model::{EventLevel, Job};
use doppel_plugin_host::schema::{redact_secrets, ParameterSchema};
use doppel_plugin_host::CallContext;
use doppel_storage::{SnapshotId, SnapshotRef, VolumeId};
use doppel_store::{
    EnvironmentRecord, EnvironmentUserRecord, PluginRecord, SnapshotRecord, VdbRecord,
};

use serde_json::{json, Value};

use crate::auth::Principal;
use crate::environments::connection_json;
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX};
use crate::jobs::JobHandle;

use crate::{now, pdo, pool_task, Engine, EngineError, SNAPSHOT_PREFIX};

const VDB_PREFIX: &str = "VDB-";

/// A mount path claimed by a job (see `Engine::claim_mount_path`); given
/// back when dropped, by then recorded as a mount or not mounted at all.
pub(crate) struct MountClaim {
    claims: Arc<std::sync::Mutex<std::collections::HashMap<(i64, String), String>>>,
    key: (i64, String),
}

impl Drop for MountClaim {
    fn drop(&mut self) {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// What a request for a new VDB (provisioned or empty) says about it.
struct NewVdb<'a> {
    name: &'a str,
    environment: &'a str,
    user: Option<&'a str>,
    parameters: &'a Value,
    hooks: &'a std::collections::BTreeMap<String, String>,
}

struct Ctx {
    vdb: VdbRecord,
    plugin: PluginRecord,
    params: Value,
    repository: Value,
    env: EnvironmentRecord,
    user: EnvironmentUserRecord,
}

impl Engine {
    fn vdb_model(&self, v: &VdbRecord) -> Result<Vdb, EngineError> {
        let schema = self
            .store
            .get_plugin(&v.plugin_id)?
            .map(|p| p.definition["virtualSourceDefinition"]["parameters"].clone())
            .unwrap_or(Value::Null);
        let counts = (
            self.store.vdb_timeflows(v.id)?.len(),
            self.store.list_snapshots(Some(&v.volume))?.len(),
        );
        self.vdb_model_with(v, &schema, counts)
    }

    /// A VDB as shown, from what the caller already loaded (the plugin's
    /// virtual source schema, the timeflow and snapshot counts).
    fn vdb_model_with(
        &self,
        v: &VdbRecord,
        schema: &Value,
        (timeflows, snapshots): (usize, usize),
    ) -> Result<Vdb, EngineError> {
        let params: Value = serde_json::from_str(&self.hosts.secrets.open_sealed(&v.parameters)?)
            .unwrap_or(Value::Null);
        Ok(Vdb {
            reference: format!("{VDB_PREFIX}{}", v.id),
            name: v.name.clone(),
            plugin: v.plugin_id.clone(),
            environment: format!("{ENVIRONMENT_PREFIX}{}", v.environment_id),
            parent_dataset: v.parent_volume.clone(),
            dataset: v.volume.clone(),
            enabled: v.enabled,
            parameters: redact_secrets(schema, &params),
            source_config: v.source_config.clone(),
            timeflows,
            snapshots,
        })
    }

    fn find_vdb(&self, reference: &str) -> Result<VdbRecord, EngineError> {
        let found = match parse_ref(reference, VDB_PREFIX) {
            Some(id) => self.store.get_vdb(id)?,
            None => self.store.find_vdb_by_name(reference)?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            kind: "VDB",
            id: reference.to_owned(),
        })
    }

    /// Every VDB: plugin schemas and counts are read once for the whole list.
    pub fn list_vdbs(&self) -> Result<Vec<Vdb>, EngineError> {
        let counts = self.store.vdb_counts()?;
        let mut schemas: std::collections::HashMap<String, Value> =
            std::collections::HashMap::new();
        let mut out = Vec::new();
        for v in self.store.list_vdbs()? {
            if !schemas.contains_key(&v.plugin_id) {
                let schema = self
                    .store
                    .get_plugin(&v.plugin_id)?
                    .map(|p| p.definition["virtualSourceDefinition"]["parameters"].clone())
                    .unwrap_or(Value::Null);
                schemas.insert(v.plugin_id.clone(), schema);
            }
            out.push(self.vdb_model_with(
                &v,
                &schemas[&v.plugin_id],
                counts.get(&v.id).copied().unwrap_or_default(),
            )?);
        }
        Ok(out)
    }

    pub fn get_vdb(&self, reference: &str) -> Result<Vdb, EngineError> {
        self.vdb_model(&self.find_vdb(reference)?)
    }

    /// The dataset (volume) and plugin of a dSource or VDB named by the user.
    pub(crate) fn dataset_of(&self, reference: &str) -> Result<(String, String), EngineError> {
        if let Some(v) = parse_ref(reference, VDB_PREFIX)
            .and_then(|id| self.store.get_vdb(id).ok().flatten())
            .or(self.store.find_vdb_by_name(reference)?)
        {
            return Ok((v.volume, v.plugin_id));
        }
        let ds = self.get_dsource(reference)?;
        Ok((ds.dataset, ds.plugin))
    }

    /// A snapshot of `volume`: the one named, or the latest.
    fn pick_snapshot(
        &self,
        volume: &str,
        name: Option<&str>,
    ) -> Result<SnapshotRecord, EngineError> {
        let snaps = self.store.list_snapshots(Some(volume))?;
        match name {
            None => snaps.last().cloned().ok_or_else(|| {
                EngineError::Conflict(format!("dataset {volume} has no snapshot yet"))
            }),
            Some(n) => {
                let id =
                    parse_ref(n, SNAPSHOT_PREFIX).ok_or_else(|| EngineError::InvalidInput {
                        field: "snapshot".into(),
                        reason: "must look like SNAPSHOT-<n>".into(),
                    })?;
                snaps
                    .into_iter()
                    .find(|s| s.id == id)
                    .ok_or_else(|| EngineError::NotFound {
                        kind: "snapshot of that dataset",
                        id: n.to_owned(),
                    })
            }
        }
    }

    fn vdb_ctx(&self, vdb: VdbRecord) -> Result<Ctx, EngineError> {
        let plugin =
            self.store
                .get_plugin(&vdb.plugin_id)?
                .ok_or_else(|| EngineError::NotFound {
                    kind: "plugin",
                    id: vdb.plugin_id.clone(),
                })?;
        let repo = self
            .store
            .get_repository(vdb.repository_id)?
            .ok_or_else(|| EngineError::Internal("VDB without repository".into()))?;
        let env = self
            .store
            .get_environment(vdb.environment_id)?
            .ok_or_else(|| EngineError::Internal("VDB without environment".into()))?;
        let user = self
            .store
            .get_environment_user(vdb.user_id)?
            .ok_or_else(|| EngineError::Internal("VDB without user".into()))?;
        let params = serde_json::from_str(&self.hosts.secrets.open_sealed(&vdb.parameters)?)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        Ok(Ctx {
            vdb,
            plugin,
            params,
            repository: repo.parameters,
            env,
            user,
        })
    }

    fn virtual_source(&self, ctx: &Ctx, mounts: &[Value]) -> Value {
        json!({"guid": format!("{VDB_PREFIX}{}", ctx.vdb.id), "connection": connection_json(&ctx.env, &ctx.user),
               "parameters": pdo(&ctx.params), "mounts": mounts})
    }

    async fn vcall(
        &self,
        ctx: &Ctx,
        job: &JobHandle,
        op: &str,
        request: Value,
    ) -> Result<Option<Value>, EngineError> {
        let plugin = self.loaded(&ctx.plugin)?;
        let Ok(op) = self.host.operation(&plugin, op) else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let out = self
            .host
            .invoke(
                &plugin,
                op,
                request,
                &CallContext {
                    job: Some(job.id().to_owned()),
                    sync_target: None,
                    log_sink: Some(job.plugin_log_sink()),
                    ..Default::default()
                },
                None,
            )
            .await;
        self.metrics
            .plugin_operation(&op.name(), out.is_ok(), started.elapsed());
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
        Ok(Some(out?))
    }

    /// Asks the plugin where the VDB goes and mounts it there; returns the
    /// mounts as the plugin's requests describe them.
    async fn mount_vdb(&self, job: &JobHandle, ctx: &Ctx) -> Result<Vec<Value>, EngineError> {
        let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "virtual_source": self.virtual_source(ctx, &[])});
        let spec = self
            .vcall(ctx, job, "virtual.mount_specification", req)
            .await?
            .unwrap_or_default();
        let owner = spec
            .get("ownership_spec")
            .and_then(|o| Some((o["uid"].as_u64()? as u32, o["gid"].as_u64()? as u32)));
        let mut mounts = Vec::new();
        for m in spec["mounts"].as_array().into_iter().flatten() {
            let env_ref = m
                .pointer("/remote_environment/reference")
                .and_then(|r| r.as_str())
                .unwrap_or_default();
            let env = self.find_environment(env_ref)?;
            let path = m["mount_path"].as_str().unwrap_or_default().to_owned();
            let shared = m["shared_path"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned();
            let user = if env.id == ctx.env.id {
                ctx.user.name.clone()
            } else {
                self.env_user(&env, None)?.name
            };
            let already = self
                .store
                .find_mount(env.id, &path)?
                .is_some_and(|m| m.volume == ctx.vdb.volume && m.subdirectory == shared);
            if !already {
                let _claim = self.claim_mount_path(
                    &env,
                    &path,
                    format!("VDB {} ({VDB_PREFIX}{})", ctx.vdb.name, ctx.vdb.id),
                )?;
                job.event(
                    EventLevel::Info,
                    &format!(
                        "mounting dataset {} on {} at {path}",
                        ctx.vdb.volume, env.name
                    ),
                );
                self.mount_volume(MountRequest {
                    environment: format!("{ENVIRONMENT_PREFIX}{}", env.id),
                    user: Some(user),
                    volume: ctx.vdb.volume.clone(),
                    subdirectory: shared.clone(),
                    mount_path: path.clone(),
                    read_only: false,
                    owner,
                })
                .await?;
            }
            let mut entry =
                json!({"remote_environment": m["remote_environment"].clone(), "mount_path": path});
            entry["remote_environment"]["reference"] =
                json!(format!("{ENVIRONMENT_PREFIX}{}", env.id));
            if !shared.is_empty() {
                entry["shared_path"] = json!(shared);
            }
            mounts.push(entry);
        }
        Ok(mounts)
    }

    async fn unmount_vdb(&self, ctx: &Ctx) -> Result<(), EngineError> {
        for m in self
            .store
            .list_mounts(None)?
            .into_iter()
            .filter(|m| m.volume == ctx.vdb.volume)
        {
            self.unmount(m.id).await?;
        }
        Ok(())
    }

    fn current_mounts(&self, ctx: &Ctx) -> Result<Vec<Value>, EngineError> {
        Ok(self
            .store
            .list_mounts(None)?
            .into_iter()
            .filter(|m| m.volume == ctx.vdb.volume)
            .map(|m| {
                let mut v = json!({"remote_environment": {"reference": format!("{ENVIRONMENT_PREFIX}{}", m.environment_id), "name": "", "host": {}}, "mount_path": m.mount_path});
                if !m.subdirectory.is_empty() {
                    v["shared_path"] = json!(m.subdirectory);
                }
                v
            })
            .collect())
    }

    /// Pre-Snapshot hook, the snapshot, and the Post-Snapshot hook (which
    /// runs even when the snapshot failed; the snapshot's error wins).
    async fn snapshot_vdb_steps(&self, job: &JobHandle, ctx: &Ctx) -> Result<String, EngineError> {
        let object = format!("{VDB_PREFIX}{}", ctx.vdb.id);
        self.run_hook(job, &object, "pre-snapshot", &ctx.env, &ctx.user)
            .await?;
        let taken = self.take_vdb_snapshot(job, ctx).await;
        let post = self
            .run_hook(job, &object, "post-snapshot", &ctx.env, &ctx.user)
            .await;
        let out = taken?;
        post?;
        Ok(out)
    }

    /// pre_snapshot → pool snapshot → post_snapshot → recorded on the current timeflow.
    async fn take_vdb_snapshot(&self, job: &JobHandle, ctx: &Ctx) -> Result<String, EngineError> {
        let mounts = self.current_mounts(ctx)?;
        let req = json!({"repository": {"parameters": pdo(&ctx.repository)},
                         "source_config": {"parameters": pdo(ctx.vdb.source_config.as_ref().unwrap_or(&json!({})))},
                         "virtual_source": self.virtual_source(ctx, &mounts)});
        self.vcall(ctx, job, "virtual.pre_snapshot", req.clone())
            .await?;
        let volume = VolumeId::new(ctx.vdb.volume.as_str())?;
        let snap = SnapshotId::new(format!(
            "s{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ))?;
        let (pool, v, s) = (self.pool.clone(), volume.clone(), snap.clone());
        pool_task(move || pool.create_snapshot(&v, &s).map(|_| ())).await?;
        let metadata = match self.vcall(ctx, job, "virtual.post_snapshot", req).await {
            Ok(out) => out
                .and_then(|o| {
                    o.pointer("/snapshot/parameters/json")
                        .and_then(|j| j.as_str())
                        .map(str::to_owned)
                })
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_else(|| json!({})),
            Err(e) => {
                let (pool, r) = (self.pool.clone(), SnapshotRef::new(volume, snap));
                let _ = pool_task(move || pool.destroy_snapshot(&r)).await;
                return Err(e);
            }
        };
        let timeflow = self
            .store
            .current_vdb_timeflow(ctx.vdb.id)?
            .ok_or_else(|| EngineError::Internal("VDB without timeflow".into()))?;
        let id = self.store.insert_snapshot(&SnapshotRecord {
            id: 0,
            timeflow_id: timeflow,
            volume: ctx.vdb.volume.clone(),
            pool_snapshot: snap.to_string(),
            metadata,
            created_at: now(),
        })?;
        Ok(format!("{SNAPSHOT_PREFIX}{id}"))
    }

    /// Refuses `action` on a disabled VDB. Jobs call it on the record they
    /// load under the VDB's lock, so a disable queued before them counts.
    fn vdb_enabled(vdb: &VdbRecord, action: &str) -> Result<(), EngineError> {
        if vdb.enabled {
            Ok(())
        } else {
            Err(EngineError::Conflict(format!(
                "VDB {} is disabled: cannot {action} it; enable it first",
                vdb.name
            )))
        }
    }

    /// Refuses a VDB name another VDB has. Checked when the request comes
    /// and again when its job starts: jobs for one name run one at a time,
    /// so a second request for a name fails there before making anything.
    fn vdb_name_free(&self, name: &str) -> Result<(), EngineError> {
        match self.store.find_vdb_by_name(name)? {
            Some(v) => Err(EngineError::Conflict(format!(
                "a VDB named {name:?} exists already ({VDB_PREFIX}{})",
                v.id
            ))),
            None => Ok(()),
        }
    }

    /// Claims `path` on `env` for `who` (a dSource or VDB, as users name it)
    /// while its job mounts there, and refuses a path that is claimed or
    /// mounted already, naming the holder. Two jobs mounting one path at
    /// once would otherwise both pass the mount's own check, and the loser's
    /// undo would take the winner's mount down with its own.
    pub(crate) fn claim_mount_path(
        &self,
        env: &EnvironmentRecord,
        path: &str,
        who: String,
    ) -> Result<MountClaim, EngineError> {
        let key = (env.id, path.to_owned());
        {
            let mut claims = self.mount_claims.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(holder) = claims.get(&key) {
                return Err(EngineError::Conflict(format!(
                    "{path} on {} is in use by {holder}",
                    env.name
                )));
            }
            claims.insert(key.clone(), who);
        }
        let claim = MountClaim {
            claims: self.mount_claims.clone(),
            key,
        };
        if let Some(holder) = self.mount_path_holder(env.id, path)? {
            return Err(EngineError::Conflict(format!(
                "{path} on {} is in use by {holder}",
                env.name
            )));
        }
        Ok(claim)
    }

    /// Which dSource or VDB holds `path` on `env`, as users name it.
    pub(crate) fn mount_path_holder(
        &self,
        env: i64,
        path: &str,
    ) -> Result<Option<String>, EngineError> {
        let Some(m) = self.store.find_mount(env, path)? else {
            return Ok(None);
        };
        if let Some(v) = self
            .store
            .list_vdbs()?
            .into_iter()
            .find(|v| v.volume == m.volume)
        {
            return Ok(Some(format!("VDB {} ({VDB_PREFIX}{})", v.name, v.id)));
        }
        if let Some(d) = self
            .store
            .list_dsources()?
            .into_iter()
            .find(|d| d.volume == m.volume)
        {
            return Ok(Some(format!("dSource {} (DSOURCE-{})", d.name, d.id)));
        }
        Ok(Some(format!("dataset {}", m.volume)))
    }

    /// Checks what a new VDB needs (its name, the target environment and
    /// user, the plugin's repository there, the parameters and hook points)
    /// and returns the record to create, not yet stored.
    fn new_vdb_record(
        &self,
        new: NewVdb<'_>,
        plugin: &PluginRecord,
        parent_volume: String,
    ) -> Result<VdbRecord, EngineError> {
        let NewVdb {
            name,
            environment,
            user,
            parameters,
            hooks,
        } = new;
        crate::environments::check_name("name", name)?;
        self.vdb_name_free(name)?;
        let env = self.find_environment(environment)?;
        let user = self.env_user(&env, user)?;
        let repo = self
            .store
            .list_repositories(Some(env.id))?
            .into_iter()
            .find(|r| r.plugin_id == plugin.id)
            .ok_or_else(|| EngineError::InvalidInput {
                field: "environment".into(),
                reason: format!(
                    "plugin {} found no repository on {}; refresh the environment",
                    plugin.name, env.name
                ),
            })?;
        Engine::check_hooks(hooks, crate::hooks::HookOwner::Vdb)?;
        crate::limits::check_parameters("parameters", parameters)?;
        let schema =
            ParameterSchema::new(&plugin.definition["virtualSourceDefinition"]["parameters"])
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        schema
            .validate(parameters)
            .map_err(|errs| EngineError::InvalidParameters {
                what: "virtual source parameters".into(),
                violations: errs.violations().iter().map(|v| v.to_string()).collect(),
            })?;
        Ok(VdbRecord {
            id: 0,
            name: name.to_owned(),
            plugin_id: plugin.id.clone(),
            repository_id: repo.id,
            environment_id: env.id,
            user_id: user.id,
            parent_volume,
            parameters: self.hosts.secrets.seal(&parameters.to_string()),
            source_config: None,
            volume: format!("vdb-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            enabled: true,
            created_at: now(),
        })
    }

    /// Stores a new VDB's record (starting a timeflow at `parent`) once its
    /// dataset exists; if that fails the dataset goes too.
    async fn store_new_vdb(
        &self,
        record: &VdbRecord,
        parent: Option<i64>,
    ) -> Result<VdbRecord, EngineError> {
        let stored = self
            .store
            .insert_vdb(record, parent)
            .and_then(|(id, _)| self.store.get_vdb(id));
        match stored {
            Ok(Some(vdb)) => Ok(vdb),
            Ok(None) | Err(_) => {
                if let Err(undo) = self.destroy_dataset(&record.volume).await {
                    tracing::error!(volume = %record.volume, error = %undo, "cannot remove the dataset of a VDB that was not recorded");
                }
                Err(stored
                    .err()
                    .map(Into::into)
                    .unwrap_or_else(|| EngineError::Internal("VDB vanished".into())))
            }
        }
    }

    /// Ends a VDB's creating job: ready when `outcome` succeeded, otherwise
    /// removed with everything it had (the job fails with `outcome`'s error).
    async fn finish_new_vdb(
        &self,
        job: &JobHandle,
        vdb: &VdbRecord,
        outcome: Result<(), EngineError>,
    ) -> Result<Value, EngineError> {
        if let Err(e) = outcome {
            job.event(
                EventLevel::Error,
                &format!("creating VDB {} failed, undoing: {e}", vdb.name),
            );
            if let Err(undo) = self.remove_vdb(vdb).await {
                job.event(
                    EventLevel::Error,
                    &format!("could not undo everything: {undo}"),
                );
            }
            return Err(e);
        }
        self.store.mark_ready("vdb", vdb.id)?;
        let stored = self
            .store
            .get_vdb(vdb.id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "VDB",
                id: vdb.name.clone(),
            })?;
        crate::to_json(&self.vdb_model(&stored)?)
    }

    /// Provisions a VDB in a job: clone, mount, configure, first snapshot.
    /// A failure leaves no clone, mount or record behind.
    pub fn provision_vdb(
        self: &Arc<Self>,
        who: &Principal,
        req: ProvisionVdb,
    ) -> Result<Job, EngineError> {
        self.check_capacity("provision")?;
        let (parent_volume, plugin_id) = self.dataset_of(&req.from)?;
        let snapshot = self.pick_snapshot(&parent_volume, req.snapshot.as_deref())?;
        let plugin = self
            .store
            .get_plugin(&plugin_id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "plugin",
                id: plugin_id.clone(),
            })?;
        let new = NewVdb {
            name: &req.name,
            environment: &req.environment,
            user: req.user.as_deref(),
            parameters: &req.parameters,
            hooks: &req.hooks,
        };
        let record = self.new_vdb_record(new, &plugin, parent_volume)?;
        let hooks = req.hooks.clone();
        let engine = self.clone();
        let who = who.clone();
        self.jobs.spawn("VDB_PROVISION", Some(format!("vdb:{}", req.name)), move |job| async move {
            engine.vdb_name_free(&record.name)?;
            job.progress(5, &format!("cloning {SNAPSHOT_PREFIX}{} into dataset {}", snapshot.id, record.volume));
            let from = SnapshotRef::new(VolumeId::new(snapshot.volume.as_str())?, SnapshotId::new(snapshot.pool_snapshot.as_str())?);
            let to = VolumeId::new(record.volume.as_str())?;
            let pool = engine.pool.clone();
            pool_task(move || pool.create_clone(&from, &to).map(|_| ())).await?;
            let vdb = engine.store_new_vdb(&record, Some(snapshot.id)).await?;
            let id = vdb.id;
            // A panic in here still reaches the undo below.
            let outcome = crate::jobs::unpanicked(async {
                engine.record_owner(&who, &format!("{VDB_PREFIX}{id}"))?;
                engine.store_hooks(&format!("{VDB_PREFIX}{id}"), &hooks)?;
                let ctx = engine.vdb_ctx(vdb.clone())?;
                job.progress(20, "mounting");
                let mounts = engine.mount_vdb(&job, &ctx).await?;
                job.progress(50, "configuring (plugin configure)");
                let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "snapshot": {"parameters": pdo(&snapshot.metadata)},
                                 "virtual_source": engine.virtual_source(&ctx, &mounts)});
                let out = engine.vcall(&ctx, &job, "virtual.configure", req).await?.unwrap_or_default();
                let sc: Value = out.pointer("/source_config/parameters/json").and_then(|j| j.as_str()).and_then(|t| serde_json::from_str(t).ok()).unwrap_or(json!({}));
                engine.store.set_vdb_source_config(id, &sc)?;
                engine.run_hook(&job, &format!("{VDB_PREFIX}{id}"), "configure-clone", &ctx.env, &ctx.user).await?;
                job.progress(80, "taking the first VDB snapshot");
                let ctx = engine.vdb_ctx(engine.store.get_vdb(id)?.ok_or_else(|| EngineError::NotFound { kind: "VDB", id: vdb.name.clone() })?)?;
                engine.snapshot_vdb_steps(&job, &ctx).await
            })
            .await;
            engine.finish_new_vdb(&job, &vdb, outcome.map(|_| ())).await
        })
    }

    /// Creates an empty VDB in a job: an empty dataset, mounted where the
    /// plugin says, initialized by the plugin where it has `initialize`,
    /// then the Configure-Clone hook. A failure leaves nothing behind.
    pub fn create_empty_vdb(
        self: &Arc<Self>,
        who: &Principal,
        req: CreateEmptyVdb,
    ) -> Result<Job, EngineError> {
        self.check_capacity("provision")?;
        let plugin = self.find_plugin(&req.plugin)?;
        if plugin.definition.pointer("/manifest/hasInitialize") != Some(&Value::Bool(true)) {
            return Err(EngineError::InvalidInput {
                field: "plugin".into(),
                reason: format!(
                    "plugin {} has no initialize operation, so it cannot create empty VDBs; provision from a snapshot instead",
                    plugin.name
                ),
            });
        }
        let new = NewVdb {
            name: &req.name,
            environment: &req.environment,
            user: req.user.as_deref(),
            parameters: &req.parameters,
            hooks: &req.hooks,
        };
        let record = self.new_vdb_record(new, &plugin, String::new())?;
        let hooks = req.hooks.clone();
        let engine = self.clone();
        let who = who.clone();
        self.jobs.spawn("VDB_CREATE_EMPTY", Some(format!("vdb:{}", req.name)), move |job| async move {
            engine.vdb_name_free(&record.name)?;
            job.progress(5, &format!("creating the empty dataset {}", record.volume));
            let (pool, v) = (engine.pool.clone(), VolumeId::new(record.volume.as_str())?);
            pool_task(move || pool.create_volume(&v).map(|_| ())).await?;
            let vdb = engine.store_new_vdb(&record, None).await?;
            let id = vdb.id;
            // A panic in here still reaches the undo below.
            let outcome = crate::jobs::unpanicked(async {
                engine.record_owner(&who, &format!("{VDB_PREFIX}{id}"))?;
                engine.store_hooks(&format!("{VDB_PREFIX}{id}"), &hooks)?;
                let ctx = engine.vdb_ctx(vdb.clone())?;
                job.progress(20, "mounting");
                let mounts = engine.mount_vdb(&job, &ctx).await?;
                job.progress(50, "initializing (plugin initialize)");
                let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "virtual_source": engine.virtual_source(&ctx, &mounts)});
                let out = engine.vcall(&ctx, &job, "virtual.initialize", req).await?.unwrap_or_default();
                let sc: Value = out.pointer("/source_config/parameters/json").and_then(|j| j.as_str()).and_then(|t| serde_json::from_str(t).ok()).unwrap_or(json!({}));
                engine.store.set_vdb_source_config(id, &sc)?;
                engine.run_hook(&job, &format!("{VDB_PREFIX}{id}"), "configure-clone", &ctx.env, &ctx.user).await
            })
            .await;
            engine.finish_new_vdb(&job, &vdb, outcome.map(|_| ())).await
        })
    }

    /// What a V2P call of this VDB's plugin needs (see `dsource_v2p_request`).
    pub(crate) fn vdb_v2p_request(
        &self,
        vdb: VdbRecord,
    ) -> Result<(PluginRecord, &'static str, Value), EngineError> {
        let ctx = self.vdb_ctx(vdb)?;
        let mounts = self.current_mounts(&ctx)?;
        let sc = ctx.vdb.source_config.clone().unwrap_or(json!({}));
        let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&sc)},
                         "virtual_source": self.virtual_source(&ctx, &mounts)});
        Ok((ctx.plugin, "virtual.virtual_", req))
    }

    /// Takes a VDB snapshot in a job.
    pub fn snapshot_vdb(self: &Arc<Self>, reference: &str) -> Result<Job, EngineError> {
        self.check_capacity("snapshot")?;
        let vdb = self.find_vdb(reference)?;
        Engine::vdb_enabled(&vdb, "snapshot")?;
        let engine = self.clone();
        self.jobs.spawn(
            "VDB_SNAPSHOT",
            Some(format!("{VDB_PREFIX}{}", vdb.id)),
            move |job| async move {
                let vdb = engine.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
                Engine::vdb_enabled(&vdb, "snapshot")?;
                let ctx = engine.vdb_ctx(vdb)?;
                Ok(json!({"snapshot": engine.snapshot_vdb_steps(&job, &ctx).await?}))
            },
        )
    }

    /// Refresh (to a snapshot of the parent, default its latest) or rewind
    /// (to one of the VDB's own snapshots): unconfigure, unmount, restore the
    /// dataset, new timeflow, mount, configure or reconfigure.
    pub fn refresh_vdb(
        self: &Arc<Self>,
        reference: &str,
        to: Option<&str>,
        rewind: bool,
    ) -> Result<Job, EngineError> {
        let vdb = self.find_vdb(reference)?;
        if !rewind && vdb.parent_volume.is_empty() {
            return Err(EngineError::Conflict(format!(
                "VDB {} was created empty: it has no parent to refresh from",
                vdb.name
            )));
        }
        let source_volume = if rewind {
            vdb.volume.clone()
        } else {
            vdb.parent_volume.clone()
        };
        if rewind && to.is_none() {
            return Err(EngineError::InvalidInput {
                field: "to".into(),
                reason: "rewind needs one of the VDB's snapshots".into(),
            });
        }
        Engine::vdb_enabled(&vdb, if rewind { "rewind" } else { "refresh" })?;
        let target = self.pick_snapshot(&source_volume, to)?;
        let engine = self.clone();
        let kind = if rewind { "VDB_REWIND" } else { "VDB_REFRESH" };
        self.jobs.spawn(kind, Some(format!("{VDB_PREFIX}{}", vdb.id)), move |job| async move {
            let vdb = engine.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
            Engine::vdb_enabled(&vdb, if rewind { "rewind" } else { "refresh" })?;
            let ctx = engine.vdb_ctx(vdb)?;
            let object = format!("{VDB_PREFIX}{}", ctx.vdb.id);
            let (pre, post) = if rewind { ("pre-rollback", "post-rollback") } else { ("pre-refresh", "post-refresh") };
            engine.run_hook(&job, &object, pre, &ctx.env, &ctx.user).await?;
            let mounts = engine.current_mounts(&ctx)?;
            let current_sc = ctx.vdb.source_config.clone().unwrap_or(json!({}));
            job.progress(10, "unconfiguring (plugin unconfigure)");
            let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&current_sc)},
                             "virtual_source": engine.virtual_source(&ctx, &mounts), "deleteFlag": false});
            engine.vcall(&ctx, &job, "virtual.unconfigure", req).await?;
            engine.unmount_vdb(&ctx).await?;
            job.progress(40, &format!("restoring the dataset to {SNAPSHOT_PREFIX}{}", target.id));
            let (pool, vol) = (engine.pool.clone(), VolumeId::new(ctx.vdb.volume.as_str())?);
            let from = SnapshotRef::new(VolumeId::new(target.volume.as_str())?, SnapshotId::new(target.pool_snapshot.as_str())?);
            pool_task(move || pool.restore_volume(&vol, &from)).await?;
            engine.store.new_vdb_timeflow(ctx.vdb.id, target.id, &now())?;
            job.progress(60, "mounting");
            let mounts = engine.mount_vdb(&job, &ctx).await?;
            let (op, req) = if rewind {
                ("virtual.reconfigure", json!({"repository": {"parameters": pdo(&ctx.repository)}, "snapshot": {"parameters": pdo(&target.metadata)},
                    "source_config": {"parameters": pdo(&current_sc)}, "virtual_source": engine.virtual_source(&ctx, &mounts)}))
            } else {
                ("virtual.configure", json!({"repository": {"parameters": pdo(&ctx.repository)}, "snapshot": {"parameters": pdo(&target.metadata)},
                    "virtual_source": engine.virtual_source(&ctx, &mounts)}))
            };
            job.progress(80, &format!("plugin {op}"));
            let out = engine.vcall(&ctx, &job, op, req).await?.unwrap_or_default();
            if let Some(sc) = out.pointer("/source_config/parameters/json").and_then(|j| j.as_str()).and_then(|t| serde_json::from_str::<Value>(t).ok()) {
                engine.store.set_vdb_source_config(ctx.vdb.id, &sc)?;
            }
            if !rewind {
                engine.run_hook(&job, &object, "configure-clone", &ctx.env, &ctx.user).await?;
            }
            engine.run_hook(&job, &object, post, &ctx.env, &ctx.user).await?;
            crate::to_json(&engine.vdb_model(&engine.store.get_vdb(ctx.vdb.id)?.ok_or_else(|| EngineError::NotFound { kind: "VDB", id: ctx.vdb.name.clone() })?)?)
        })
    }

    /// Deletes a VDB: unconfigure (deleteFlag), cleanup, unmount, destroy.
    pub fn delete_vdb(self: &Arc<Self>, reference: &str) -> Result<Job, EngineError> {
        let vdb = self.find_vdb(reference)?;
        let children: Vec<String> = self
            .store
            .list_vdbs()?
            .into_iter()
            .filter(|c| c.parent_volume == vdb.volume)
            .map(|c| c.name)
            .collect();
        if !children.is_empty() {
            return Err(EngineError::Conflict(format!(
                "VDB {} has child VDBs: {}; delete them first",
                vdb.name,
                children.join(", ")
            )));
        }
        let engine = self.clone();
        self.jobs.spawn("VDB_DELETE", Some(format!("{VDB_PREFIX}{}", vdb.id)), move |job| async move {
            let model = engine.vdb_model(&vdb)?;
            let ctx = engine.vdb_ctx(vdb.clone())?;
            let mounts = engine.current_mounts(&ctx)?;
            let sc = ctx.vdb.source_config.clone().unwrap_or(json!({}));
            let base = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&sc)},
                              "virtual_source": engine.virtual_source(&ctx, &mounts)});
            let mut unconf = base.clone();
            unconf["deleteFlag"] = json!(true);
            engine.vcall(&ctx, &job, "virtual.unconfigure", unconf).await?;
            engine.vcall(&ctx, &job, "virtual.cleanup", base).await?;
            engine.remove_vdb(&vdb).await?;
            crate::to_json(&model)
        })
    }

    /// Start (`start`), stop (`stop`), enable (`enable`) or disable
    /// (`disable`) a VDB, in a job (contract §4).
    pub fn vdb_power(self: &Arc<Self>, reference: &str, action: &str) -> Result<Job, EngineError> {
        let vdb = self.find_vdb(reference)?;
        if !["start", "stop", "enable", "disable"].contains(&action) {
            return Err(EngineError::InvalidInput {
                field: "action".into(),
                reason: "must be start, stop, enable or disable".into(),
            });
        }
        let engine = self.clone();
        let action = action.to_owned();
        let kind = format!("VDB_{}", action.to_uppercase());
        self.jobs.spawn(&kind, Some(format!("{VDB_PREFIX}{}", vdb.id)), move |job| async move {
            let vdb = engine.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
            if action == "start" || action == "stop" {
                Engine::vdb_enabled(&vdb, &action)?;
            }
            let ctx = engine.vdb_ctx(vdb)?;
            let object = format!("{VDB_PREFIX}{}", ctx.vdb.id);
            let extended = ctx.plugin.definition["extendedStartStopHooks"] == true;
            let sc = ctx.vdb.source_config.clone().unwrap_or(json!({}));
            let request = |mounts: &[Value]| {
                json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&sc)},
                       "virtual_source": engine.virtual_source(&ctx, mounts)})
            };
            let hook = |point: &'static str| engine.run_hook(&job, &object, point, &ctx.env, &ctx.user);
            match action.as_str() {
                "start" => {
                    hook("pre-start").await?;
                    let mounts = engine.mount_vdb(&job, &ctx).await?;
                    engine.vcall(&ctx, &job, "virtual.start", request(&mounts)).await?;
                    hook("post-start").await?;
                }
                "stop" => {
                    hook("pre-stop").await?;
                    engine.vcall(&ctx, &job, "virtual.stop", request(&engine.current_mounts(&ctx)?)).await?;
                    hook("post-stop").await?;
                }
                "enable" => {
                    // An unimplemented status counts as ACTIVE.
                    let status = engine.vcall(&ctx, &job, "virtual.status", request(&engine.current_mounts(&ctx)?)).await?;
                    let active = status.as_ref().is_none_or(|s| s["status"] != "INACTIVE");
                    if !active && extended {
                        hook("pre-start").await?;
                    }
                    // Disable unmounted the dataset; a plugin that says
                    // ACTIVE anyway (its status may look only at the path)
                    // still needs its files back where they were.
                    let mounts = engine.mount_vdb(&job, &ctx).await?;
                    if !active {
                        let mut req = request(&mounts);
                        let latest = engine.store.list_snapshots(Some(&ctx.vdb.volume))?.pop();
                        req["snapshot"] = json!({"parameters": pdo(&latest.map(|s| s.metadata).unwrap_or(json!({})))});
                        if let Some(out) = engine.vcall(&ctx, &job, "virtual.reconfigure", req).await? {
                            if let Some(sc) = out.pointer("/source_config/parameters/json").and_then(|j| j.as_str()).and_then(|t| serde_json::from_str::<Value>(t).ok()) {
                                engine.store.set_vdb_source_config(ctx.vdb.id, &sc)?;
                            }
                        }
                        if extended {
                            hook("post-start").await?;
                        }
                    }
                    engine.store.set_enabled("vdb", ctx.vdb.id, true)?;
                }
                _ => {
                    if extended {
                        hook("pre-stop").await?;
                    }
                    let mut req = request(&engine.current_mounts(&ctx)?);
                    req["deleteFlag"] = json!(false);
                    engine.vcall(&ctx, &job, "virtual.unconfigure", req).await?;
                    engine.unmount_vdb(&ctx).await?;
                    if extended {
                        hook("post-stop").await?;
                    }
                    engine.store.set_enabled("vdb", ctx.vdb.id, false)?;
                }
            }
            crate::to_json(&engine.vdb_model(&engine.store.get_vdb(ctx.vdb.id)?.ok_or_else(|| EngineError::NotFound { kind: "VDB", id: ctx.vdb.name.clone() })?)?)
        })
    }

    /// Removes a VDB's mounts, dataset and records. Every step is tried; the
    /// first failure is returned (the record stays while its data does).
    pub(crate) async fn remove_vdb(&self, vdb: &VdbRecord) -> Result<(), EngineError> {
        let mut first_error = None;
        for m in self
            .store
            .list_mounts(None)?
            .into_iter()
            .filter(|m| m.volume == vdb.volume)
        {
            if let Err(e) = self.unmount(m.id).await {
                tracing::warn!(mount = m.id, error = %e, "cannot unmount while removing a VDB");
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.destroy_dataset(&vdb.volume).await?;
        self.store
            .delete_hooks(&format!("{VDB_PREFIX}{}", vdb.id), None)?;
        self.store.delete_vdb(vdb.id)?;
        Ok(())
    }
}
