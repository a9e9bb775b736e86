//! VDBs: writable thin clones of a snapshot, mounted on a target host and
//! configured by the plugin (contract §4, "VDBs"). Provision, snapshot,
//! refresh (to a newer snapshot of the parent) and rewind (to one of its
//! own snapshots) each start from a pool clone or restore; refresh and
//! rewind start a new timeflow and keep the old one.

use doppel_model::{CreateEmptyVdb, MountRequest, ProvisionVdb, Vdb};
use std::sync::Arc;

use doppel_model::{EventLevel, Job};
use doppel_plugin_host::requests::{Mount, Reply, Request, Source, VirtualSource};
use doppel_plugin_host::schema::{redact_secrets, ParameterSchema};
use doppel_plugin_host::Op;
use doppel_storage::{SnapshotId, SnapshotRef, VolumeId};
use doppel_store::{
    EnvironmentRecord, EnvironmentUserRecord, PluginRecord, SnapshotRecord, VdbRecord,
};

use serde_json::{json, Value};

use crate::auth::Principal;
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX};
use crate::jobs::JobHandle;
use crate::steps::remote_connection;

use crate::{now, pool_task, Engine, EngineError, SNAPSHOT_PREFIX};

pub(crate) const VDB_PREFIX: &str = "VDB-";

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

impl Ctx {
    /// The request of this VDB's operations, with its current source
    /// config (`{}` before configure made one) and `mounts`.
    fn request(&self, mounts: Vec<Mount>) -> Request {
        Request {
            repository: Some(self.repository.clone()),
            source_config: Some(self.vdb.source_config.clone().unwrap_or(json!({}))),
            source: Some(Source::Virtual(VirtualSource {
                guid: format!("{VDB_PREFIX}{}", self.vdb.id),
                parameters: self.params.clone(),
                connection: remote_connection(&self.env, &self.user),
                mounts,
            })),
            ..Default::default()
        }
    }
}

/// The source config a configure, reconfigure or initialize returned, if
/// it returned one that is JSON.
fn returned_source_config(out: Option<&Reply>) -> Option<Value> {
    out?.source_config()?.ok()
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
        let parent = self.store.vdb_parent_snapshots()?.get(&v.id).copied();
        self.vdb_model_with(v, &schema, counts, parent)
    }

    /// A VDB as shown, from what the caller already loaded (the plugin's
    /// virtual source schema, the timeflow and snapshot counts).
    fn vdb_model_with(
        &self,
        v: &VdbRecord,
        schema: &Value,
        (timeflows, snapshots): (usize, usize),
        parent_snapshot: Option<i64>,
    ) -> Result<Vdb, EngineError> {
        let params: Value = serde_json::from_str(&self.hosts.secrets.open_sealed(&v.parameters)?)
            .unwrap_or(Value::Null);
        let lifecycle = self.store.vdb_lifecycle(v.id)?;
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
            protection: crate::retain::protection_at(&lifecycle, self.clock_now()),
            expires_at: lifecycle.expires_at,
            parent_snapshot: parent_snapshot.map(|id| format!("{SNAPSHOT_PREFIX}{id}")),
        })
    }

    pub(crate) fn find_vdb(&self, reference: &str) -> Result<VdbRecord, EngineError> {
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
        let parents = self.store.vdb_parent_snapshots()?;
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
                parents.get(&v.id).copied(),
            )?);
        }
        Ok(out)
    }

    pub fn get_vdb(&self, reference: &str) -> Result<Vdb, EngineError> {
        self.vdb_model(&self.find_vdb(reference)?)
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

    /// Runs one of the VDB's plugin steps, where the plugin implements it.
    async fn vcall(
        &self,
        ctx: &Ctx,
        job: &JobHandle,
        op: Op,
        request: &Request,
    ) -> Result<Option<Reply>, EngineError> {
        self.plugin_step_if_implemented(job, &ctx.plugin, op, request)
            .await
    }

    /// Asks the plugin where the VDB goes and mounts it there; returns the
    /// mounts as the plugin's requests describe them.
    async fn mount_vdb(&self, job: &JobHandle, ctx: &Ctx) -> Result<Vec<Mount>, EngineError> {
        let spec = self
            .vcall(
                ctx,
                job,
                Op::VirtualMountSpecification,
                &ctx.request(Vec::new()),
            )
            .await?
            .map(|r| r.virtual_mounts())
            .unwrap_or_default();
        let owner = spec.owner;
        let mut mounts = Vec::new();
        for m in spec.mounts {
            let env = self.find_environment(&m.environment.reference)?;
            let path = m.mount_path.clone();
            let shared = m
                .shared_path
                .as_deref()
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
            let mut environment = m.environment;
            environment.reference = format!("{ENVIRONMENT_PREFIX}{}", env.id);
            mounts.push(Mount {
                environment,
                mount_path: path,
                shared_path: Some(shared).filter(|s| !s.is_empty()),
            });
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

    /// The VDB's recorded mounts, as requests describe them (the
    /// environment by reference only, as it always was).
    fn current_mounts(&self, ctx: &Ctx) -> Result<Vec<Mount>, EngineError> {
        Ok(self
            .store
            .list_mounts(None)?
            .into_iter()
            .filter(|m| m.volume == ctx.vdb.volume)
            .map(|m| Mount {
                environment: doppel_plugin_host::requests::RemoteEnvironment {
                    reference: format!("{ENVIRONMENT_PREFIX}{}", m.environment_id),
                    ..Default::default()
                },
                mount_path: m.mount_path,
                shared_path: Some(m.subdirectory).filter(|s| !s.is_empty()),
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
        let req = ctx.request(self.current_mounts(ctx)?);
        self.vcall(ctx, job, Op::VirtualPreSnapshot, &req).await?;
        let volume = VolumeId::new(ctx.vdb.volume.as_str())?;
        let snap = crate::datasets::new_snapshot_id()?;
        let (pool, v, s) = (self.pool.clone(), volume.clone(), snap.clone());
        pool_task(move || pool.create_snapshot(&v, &s).map(|_| ())).await?;
        let metadata = match self.vcall(ctx, job, Op::VirtualPostSnapshot, &req).await {
            Ok(out) => out
                .and_then(|o| o.snapshot_metadata()?.ok())
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
        self.jobs.spawn(
            "VDB_PROVISION",
            Some(format!("vdb:{}", req.name)),
            move |job| async move {
                engine
                    .provision_job(job, record, snapshot, who, hooks)
                    .await
            },
        )
    }

    /// The provision job: clone, mount, configure, first snapshot; undone on failure.
    async fn provision_job(
        &self,
        job: JobHandle,
        record: VdbRecord,
        snapshot: SnapshotRecord,
        who: Principal,
        hooks: std::collections::BTreeMap<String, String>,
    ) -> Result<Value, EngineError> {
        self.vdb_name_free(&record.name)?;
        job.progress(
            5,
            &format!(
                "cloning {SNAPSHOT_PREFIX}{} into dataset {}",
                snapshot.id, record.volume
            ),
        );
        let from = SnapshotRef::new(
            VolumeId::new(snapshot.volume.as_str())?,
            SnapshotId::new(snapshot.pool_snapshot.as_str())?,
        );
        let to = VolumeId::new(record.volume.as_str())?;
        let pool = self.pool.clone();
        pool_task(move || pool.create_clone(&from, &to).map(|_| ())).await?;
        let vdb = self.store_new_vdb(&record, Some(snapshot.id)).await?;
        let id = vdb.id;
        // A panic in here still reaches the undo below.
        let outcome =
            crate::jobs::unpanicked(async {
                self.record_owner(&who, &format!("{VDB_PREFIX}{id}"))?;
                self.store_hooks(&format!("{VDB_PREFIX}{id}"), &hooks)?;
                let ctx = self.vdb_ctx(vdb.clone())?;
                job.progress(20, "mounting");
                let mounts = self.mount_vdb(&job, &ctx).await?;
                job.progress(50, "configuring (plugin configure)");
                let req = Request {
                    snapshot: Some(snapshot.metadata.clone()),
                    ..ctx.request(mounts)
                };
                let out = self.vcall(&ctx, &job, Op::Configure, &req).await?;
                let sc = returned_source_config(out.as_ref()).unwrap_or(json!({}));
                self.store.set_vdb_source_config(id, &sc)?;
                self.run_hook(
                    &job,
                    &format!("{VDB_PREFIX}{id}"),
                    "configure-clone",
                    &ctx.env,
                    &ctx.user,
                )
                .await?;
                job.progress(80, "taking the first VDB snapshot");
                let ctx = self.vdb_ctx(self.store.get_vdb(id)?.ok_or_else(|| {
                    EngineError::NotFound {
                        kind: "VDB",
                        id: vdb.name.clone(),
                    }
                })?)?;
                self.snapshot_vdb_steps(&job, &ctx).await
            })
            .await;
        self.finish_new_vdb(&job, &vdb, outcome.map(|_| ())).await
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
        self.jobs.spawn(
            "VDB_CREATE_EMPTY",
            Some(format!("vdb:{}", req.name)),
            move |job| async move { engine.create_empty_job(job, record, who, hooks).await },
        )
    }

    /// The job creating an empty VDB; undone on failure.
    async fn create_empty_job(
        &self,
        job: JobHandle,
        record: VdbRecord,
        who: Principal,
        hooks: std::collections::BTreeMap<String, String>,
    ) -> Result<Value, EngineError> {
        self.vdb_name_free(&record.name)?;
        job.progress(5, &format!("creating the empty dataset {}", record.volume));
        let (pool, v) = (self.pool.clone(), VolumeId::new(record.volume.as_str())?);
        pool_task(move || pool.create_volume(&v).map(|_| ())).await?;
        let vdb = self.store_new_vdb(&record, None).await?;
        let id = vdb.id;
        // A panic in here still reaches the undo below.
        let outcome = crate::jobs::unpanicked(async {
            self.record_owner(&who, &format!("{VDB_PREFIX}{id}"))?;
            self.store_hooks(&format!("{VDB_PREFIX}{id}"), &hooks)?;
            let ctx = self.vdb_ctx(vdb.clone())?;
            job.progress(20, "mounting");
            let mounts = self.mount_vdb(&job, &ctx).await?;
            job.progress(50, "initializing (plugin initialize)");
            let out = self
                .vcall(&ctx, &job, Op::Initialize, &ctx.request(mounts))
                .await?;
            let sc = returned_source_config(out.as_ref()).unwrap_or(json!({}));
            self.store.set_vdb_source_config(id, &sc)?;
            self.run_hook(
                &job,
                &format!("{VDB_PREFIX}{id}"),
                "configure-clone",
                &ctx.env,
                &ctx.user,
            )
            .await
        })
        .await;
        self.finish_new_vdb(&job, &vdb, outcome.map(|_| ())).await
    }

    /// What a V2P call of this VDB's plugin needs (see `dsource_v2p_request`).
    pub(crate) fn vdb_v2p_request(
        &self,
        vdb: VdbRecord,
    ) -> Result<(PluginRecord, [Op; 2], Request), EngineError> {
        let ctx = self.vdb_ctx(vdb)?;
        let req = ctx.request(self.current_mounts(&ctx)?);
        Ok((
            ctx.plugin,
            [Op::VirtualPreSourceToPhysical, Op::VirtualSourceToPhysical],
            req,
        ))
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
            move |job| async move { engine.snapshot_vdb_job(job, vdb).await },
        )
    }

    /// The VDB snapshot job.
    async fn snapshot_vdb_job(&self, job: JobHandle, vdb: VdbRecord) -> Result<Value, EngineError> {
        let vdb = self.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
        Engine::vdb_enabled(&vdb, "snapshot")?;
        let ctx = self.vdb_ctx(vdb)?;
        Ok(json!({"snapshot": self.snapshot_vdb_steps(&job, &ctx).await?}))
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
        self.jobs.spawn(
            kind,
            Some(format!("{VDB_PREFIX}{}", vdb.id)),
            move |job| async move { engine.refresh_job(job, vdb, target, rewind).await },
        )
    }

    /// The refresh or rewind job, to `target`.
    async fn refresh_job(
        &self,
        job: JobHandle,
        vdb: VdbRecord,
        target: SnapshotRecord,
        rewind: bool,
    ) -> Result<Value, EngineError> {
        let vdb = self.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
        Engine::vdb_enabled(&vdb, if rewind { "rewind" } else { "refresh" })?;
        let ctx = self.vdb_ctx(vdb)?;
        let object = format!("{VDB_PREFIX}{}", ctx.vdb.id);
        let (pre, post) = if rewind {
            ("pre-rollback", "post-rollback")
        } else {
            ("pre-refresh", "post-refresh")
        };
        self.run_hook(&job, &object, pre, &ctx.env, &ctx.user)
            .await?;
        job.progress(10, "unconfiguring (plugin unconfigure)");
        let req = Request {
            delete_flag: Some(false),
            ..ctx.request(self.current_mounts(&ctx)?)
        };
        self.vcall(&ctx, &job, Op::Unconfigure, &req).await?;
        self.unmount_vdb(&ctx).await?;
        job.progress(
            40,
            &format!("restoring the dataset to {SNAPSHOT_PREFIX}{}", target.id),
        );
        let (pool, vol) = (self.pool.clone(), VolumeId::new(ctx.vdb.volume.as_str())?);
        let from = SnapshotRef::new(
            VolumeId::new(target.volume.as_str())?,
            SnapshotId::new(target.pool_snapshot.as_str())?,
        );
        pool_task(move || pool.restore_volume(&vol, &from)).await?;
        self.store.new_vdb_timeflow(ctx.vdb.id, target.id, &now())?;
        job.progress(60, "mounting");
        let mounts = self.mount_vdb(&job, &ctx).await?;
        let op = if rewind {
            Op::Reconfigure
        } else {
            Op::Configure
        };
        let req = Request {
            snapshot: Some(target.metadata.clone()),
            ..ctx.request(mounts)
        };
        job.progress(80, &format!("plugin {}", op.name()));
        let out = self.vcall(&ctx, &job, op, &req).await?;
        if let Some(sc) = returned_source_config(out.as_ref()) {
            self.store.set_vdb_source_config(ctx.vdb.id, &sc)?;
        }
        if !rewind {
            self.run_hook(&job, &object, "configure-clone", &ctx.env, &ctx.user)
                .await?;
        }
        self.run_hook(&job, &object, post, &ctx.env, &ctx.user)
            .await?;
        crate::to_json(
            &self.vdb_model(&self.store.get_vdb(ctx.vdb.id)?.ok_or_else(|| {
                EngineError::NotFound {
                    kind: "VDB",
                    id: ctx.vdb.name.clone(),
                }
            })?)?,
        )
    }

    /// Deletes a VDB: unconfigure (deleteFlag), cleanup, unmount, destroy;
    /// refused while it is protected (for everyone) or has child VDBs. Its
    /// bookmarks go with it.
    pub fn delete_vdb(self: &Arc<Self>, reference: &str) -> Result<Job, EngineError> {
        let vdb = self.find_vdb(reference)?;
        self.refuse_if_protected(&vdb)?;
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
        self.jobs.spawn(
            "VDB_DELETE",
            Some(format!("{VDB_PREFIX}{}", vdb.id)),
            move |job| async move { engine.delete_vdb_job(job, vdb).await },
        )
    }

    /// The delete job of a VDB.
    async fn delete_vdb_job(&self, job: JobHandle, vdb: VdbRecord) -> Result<Value, EngineError> {
        // A protection set while the job waited for the VDB counts.
        let vdb = self.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
        self.refuse_if_protected(&vdb)?;
        let model = self.vdb_model(&vdb)?;
        let ctx = self.vdb_ctx(vdb.clone())?;
        let base = ctx.request(self.current_mounts(&ctx)?);
        let unconf = Request {
            delete_flag: Some(true),
            ..base.clone()
        };
        self.vcall(&ctx, &job, Op::Unconfigure, &unconf).await?;
        self.vcall(&ctx, &job, Op::Cleanup, &base).await?;
        self.remove_vdb(&vdb).await?;
        crate::to_json(&model)
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
        self.jobs.spawn(
            &kind,
            Some(format!("{VDB_PREFIX}{}", vdb.id)),
            move |job| async move { engine.vdb_power_job(job, vdb, action).await },
        )
    }

    /// The start, stop, enable or disable job of a VDB.
    async fn vdb_power_job(
        &self,
        job: JobHandle,
        vdb: VdbRecord,
        action: String,
    ) -> Result<Value, EngineError> {
        let vdb = self.find_vdb(&format!("{VDB_PREFIX}{}", vdb.id))?;
        if action == "start" || action == "stop" {
            Engine::vdb_enabled(&vdb, &action)?;
        }
        let ctx = self.vdb_ctx(vdb)?;
        let object = format!("{VDB_PREFIX}{}", ctx.vdb.id);
        let extended = ctx.plugin.definition["extendedStartStopHooks"] == true;
        let hook = |point: &'static str| self.run_hook(&job, &object, point, &ctx.env, &ctx.user);
        match action.as_str() {
            "start" => {
                hook("pre-start").await?;
                let mounts = self.mount_vdb(&job, &ctx).await?;
                self.vcall(&ctx, &job, Op::Start, &ctx.request(mounts))
                    .await?;
                hook("post-start").await?;
            }
            "stop" => {
                hook("pre-stop").await?;
                self.vcall(
                    &ctx,
                    &job,
                    Op::Stop,
                    &ctx.request(self.current_mounts(&ctx)?),
                )
                .await?;
                hook("post-stop").await?;
            }
            "enable" => {
                // An unimplemented status counts as ACTIVE.
                let status = self
                    .vcall(
                        &ctx,
                        &job,
                        Op::VirtualStatus,
                        &ctx.request(self.current_mounts(&ctx)?),
                    )
                    .await?;
                let active = status
                    .as_ref()
                    .is_none_or(|s| s.status() != Some("INACTIVE"));
                if !active && extended {
                    hook("pre-start").await?;
                }
                // Disable unmounted the dataset; a plugin that says
                // ACTIVE anyway (its status may look only at the path)
                // still needs its files back where they were.
                let mounts = self.mount_vdb(&job, &ctx).await?;
                if !active {
                    let latest = self.store.list_snapshots(Some(&ctx.vdb.volume))?.pop();
                    let req = Request {
                        snapshot: Some(latest.map(|s| s.metadata).unwrap_or(json!({}))),
                        ..ctx.request(mounts)
                    };
                    let out = self.vcall(&ctx, &job, Op::Reconfigure, &req).await?;
                    if let Some(sc) = returned_source_config(out.as_ref()) {
                        self.store.set_vdb_source_config(ctx.vdb.id, &sc)?;
                    }
                    if extended {
                        hook("post-start").await?;
                    }
                }
                self.store.set_enabled("vdb", ctx.vdb.id, true)?;
            }
            _ => {
                if extended {
                    hook("pre-stop").await?;
                }
                let req = Request {
                    delete_flag: Some(false),
                    ..ctx.request(self.current_mounts(&ctx)?)
                };
                self.vcall(&ctx, &job, Op::Unconfigure, &req).await?;
                self.unmount_vdb(&ctx).await?;
                if extended {
                    hook("post-stop").await?;
                }
                self.store.set_enabled("vdb", ctx.vdb.id, false)?;
            }
        }
        crate::to_json(
            &self.vdb_model(&self.store.get_vdb(ctx.vdb.id)?.ok_or_else(|| {
                EngineError::NotFound {
                    kind: "VDB",
                    id: ctx.vdb.name.clone(),
                }
            })?)?,
        )
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
