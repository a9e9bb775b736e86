//! dSources: linking a source config, syncing it into a pool dataset as a
//! line of snapshots, deleting it (contract §4, "Environments and dSources").
//!
//! Staged: the engine mounts the dSource's dataset on the staging host where
//! the plugin's mount specification says, the plugin fills it (pre_snapshot),
//! the pool snapshots it, the plugin describes it (post_snapshot). Direct:
//! the plugin's `run_sync` copies into the dataset, then the same snapshot.

use doppel_model::{DSource, LinkDSource, MountRequest};
use std::sync::Arc;

use doppel_model::{EventLevel, Job, PluginKind};
use doppel_plugin_host::requests::{
    default_snapshot_parameters, DirectSource, Mount, Reply, Request, Source, StagedSource,
};
use doppel_plugin_host::schema::{redact_secrets, ParameterSchema};
use doppel_plugin_host::Op;
use doppel_storage::{SnapshotRef, VolumeId};
use doppel_store::{
    DSourceRecord, EnvironmentRecord, EnvironmentUserRecord, PluginRecord, SnapshotRecord,
};

use serde_json::{json, Value};

use crate::auth::Principal;
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX};
use crate::jobs::JobHandle;
use crate::steps::{mount_on, remote_connection};

use crate::{now, pool_task, Engine, EngineError, SNAPSHOT_PREFIX};

const DSOURCE_PREFIX: &str = "DSOURCE-";

fn plugin_kind(p: &PluginRecord) -> PluginKind {
    if p.definition
        .pointer("/linkedSourceDefinition/type")
        .and_then(|t| t.as_str())
        == Some("PluginLinkedDirectSourceDefinition")
    {
        PluginKind::Direct
    } else {
        PluginKind::Staged
    }
}

/// Everything a dSource's plugin calls need, resolved once per job.
struct Ctx {
    ds: DSourceRecord,
    plugin: PluginRecord,
    params: Value,
    repository: Value,
    source_config: Value,
    source: (EnvironmentRecord, EnvironmentUserRecord),
    staging: Option<(EnvironmentRecord, EnvironmentUserRecord)>,
}

impl Ctx {
    /// The request of this dSource's operations; `mount`: where its
    /// staging dataset is mounted, where that is known.
    fn request(&self, mount: Option<Mount>) -> Request {
        let guid = format!("{DSOURCE_PREFIX}{}", self.ds.id);
        let source_connection = remote_connection(&self.source.0, &self.source.1);
        let source = match &self.staging {
            Some((env, user)) => Source::Staged(Box::new(StagedSource {
                guid,
                parameters: self.params.clone(),
                source_connection,
                staged_connection: remote_connection(env, user),
                mount,
            })),
            None => Source::Direct(DirectSource {
                guid,
                parameters: self.params.clone(),
                connection: source_connection,
            }),
        };
        Request {
            repository: Some(self.repository.clone()),
            source_config: Some(self.source_config.clone()),
            source: Some(source),
            ..Default::default()
        }
    }
}

impl Engine {
    fn dsource_model(&self, d: &DSourceRecord) -> Result<DSource, EngineError> {
        let plugin = self.store.get_plugin(&d.plugin_id)?;
        let schema = plugin
            .map(|p| p.definition["linkedSourceDefinition"]["parameters"].clone())
            .unwrap_or(Value::Null);
        let params: Value = serde_json::from_str(&self.hosts.secrets.open_sealed(&d.parameters)?)
            .unwrap_or(Value::Null);
        let snaps = self.store.list_snapshots(Some(&d.volume))?;
        Ok(DSource {
            reference: format!("{DSOURCE_PREFIX}{}", d.id),
            name: d.name.clone(),
            plugin: d.plugin_id.clone(),
            source_config: format!("SOURCE_CONFIG-{}", d.source_config_id),
            staging_environment: d
                .staging_environment_id
                .map(|e| format!("{ENVIRONMENT_PREFIX}{e}")),
            staging_mount: self
                .store
                .list_mounts(None)?
                .into_iter()
                .find(|m| m.volume == d.volume)
                .map(|m| format!("{ENVIRONMENT_PREFIX}{}:{}", m.environment_id, m.mount_path)),
            parameters: redact_secrets(&schema, &params),
            dataset: d.volume.clone(),
            enabled: d.enabled,
            snapshots: snaps.len(),
            latest_snapshot: snaps.last().map(|s| format!("{SNAPSHOT_PREFIX}{}", s.id)),
            status: None,
            size_bytes: None,
        })
    }

    fn find_dsource(&self, reference: &str) -> Result<DSourceRecord, EngineError> {
        let found = match parse_ref(reference, DSOURCE_PREFIX) {
            Some(id) => self.store.get_dsource(id)?,
            None => self.store.find_dsource_by_name(reference)?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            kind: "dSource",
            id: reference.to_owned(),
        })
    }

    pub fn list_dsources(&self) -> Result<Vec<DSource>, EngineError> {
        self.store
            .list_dsources()?
            .iter()
            .map(|d| self.dsource_model(d))
            .collect()
    }

    pub fn get_dsource(&self, reference: &str) -> Result<DSource, EngineError> {
        self.dsource_model(&self.find_dsource(reference)?)
    }

    /// A dSource with what its plugin says now: status and source size
    /// (each only where the plugin implements the operation).
    pub async fn dsource_details(&self, reference: &str) -> Result<DSource, EngineError> {
        let ds = self.find_dsource(reference)?;
        let mut model = self.dsource_model(&ds)?;
        let ctx = self.dsource_ctx(ds.clone())?;
        let (status_op, size_op) = if ctx.staging.is_some() {
            (Some(Op::StagedStatus), Op::StagedSourceSize)
        } else {
            (None, Op::DirectSourceSize)
        };
        let req = ctx.request(self.staging_mount_of(&ds)?);
        let status_op = match status_op {
            Some(op) if self.implements(&ctx.plugin, op)? => Some(op),
            _ => None,
        };
        if let Some(op) = status_op {
            let out = self.run_step(None, &ctx.plugin, op, &req, None).await?;
            model.status = out.status().map(str::to_owned).or(Some("ACTIVE".into()));
        }
        if self.implements(&ctx.plugin, size_op)? {
            let out = self
                .run_step(None, &ctx.plugin, size_op, &req, None)
                .await?;
            model.size_bytes = out.database_size();
        }
        Ok(model)
    }

    /// What a V2P call of this dSource's plugin needs: the plugin, its
    /// pre_source_to_physical and source_to_physical, and the request
    /// without physical_source and snapshot.
    pub(crate) fn dsource_v2p_request(
        &self,
        ds: DSourceRecord,
    ) -> Result<(PluginRecord, [Op; 2], Request), EngineError> {
        let ctx = self.dsource_ctx(ds.clone())?;
        let ops = if ctx.staging.is_some() {
            [Op::StagedPreSourceToPhysical, Op::StagedSourceToPhysical]
        } else {
            [Op::DirectPreSourceToPhysical, Op::DirectSourceToPhysical]
        };
        let req = ctx.request(self.staging_mount_of(&ds)?);
        Ok((ctx.plugin, ops, req))
    }

    /// Where a staged dSource's dataset is mounted now, if it is.
    fn staging_mount_of(&self, ds: &DSourceRecord) -> Result<Option<Mount>, EngineError> {
        let Some(m) = self
            .store
            .list_mounts(None)?
            .into_iter()
            .find(|m| m.volume == ds.volume)
        else {
            return Ok(None);
        };
        Ok(self
            .store
            .get_environment(m.environment_id)
            .ok()
            .flatten()
            .map(|env| mount_on(&env, &m.mount_path)))
    }

    fn dsource_ctx(&self, ds: DSourceRecord) -> Result<Ctx, EngineError> {
        let plugin =
            self.store
                .get_plugin(&ds.plugin_id)?
                .ok_or_else(|| EngineError::NotFound {
                    kind: "plugin",
                    id: ds.plugin_id.clone(),
                })?;
        let sc = self
            .store
            .get_source_config(ds.source_config_id)?
            .ok_or_else(|| EngineError::Internal("dSource without source config".into()))?;
        let repo = self
            .store
            .get_repository(sc.repository_id)?
            .ok_or_else(|| EngineError::Internal("source config without repository".into()))?;
        let env = self
            .store
            .get_environment(repo.environment_id)?
            .ok_or_else(|| EngineError::Internal("repository without environment".into()))?;
        let source = (env.clone(), self.env_user(&env, None)?);
        let staging = match (ds.staging_environment_id, ds.staging_user_id) {
            (Some(e), Some(u)) => {
                let env = self
                    .store
                    .get_environment(e)?
                    .ok_or_else(|| EngineError::Internal("missing staging environment".into()))?;
                let user = self
                    .store
                    .get_environment_user(u)?
                    .ok_or_else(|| EngineError::Internal("missing staging user".into()))?;
                Some((env, user))
            }
            _ => None,
        };
        let params = serde_json::from_str(&self.hosts.secrets.open_sealed(&ds.parameters)?)
            .map_err(|e| EngineError::Internal(format!("dSource parameters: {e}")))?;
        Ok(Ctx {
            ds,
            plugin,
            params,
            repository: repo.parameters,
            source_config: sc.parameters,
            source,
            staging,
        })
    }

    /// Refuses a dSource name another dSource has; checked at the request
    /// and again when the link job starts (links of one name run in turn).
    fn dsource_name_free(&self, name: &str) -> Result<(), EngineError> {
        match self.store.find_dsource_by_name(name)? {
            Some(d) => Err(EngineError::Conflict(format!(
                "a dSource named {name:?} exists already ({DSOURCE_PREFIX}{})",
                d.id
            ))),
            None => Ok(()),
        }
    }

    /// Checks the request, then links in a job: dataset, record, staging
    /// mount and start (staged), first sync as a resync. A failure leaves
    /// no dataset, mount or record behind.
    pub fn link_dsource(
        self: &Arc<Self>,
        who: &Principal,
        req: LinkDSource,
    ) -> Result<Job, EngineError> {
        // A link's first step is a full sync.
        self.check_capacity("sync")?;
        let invalid = |field: &str, reason: String| EngineError::InvalidInput {
            field: field.into(),
            reason,
        };
        crate::environments::check_name("name", &req.name)?;
        self.dsource_name_free(&req.name)?;
        let sc = self.find_source_config(&req.source_config)?;
        let repo = self
            .store
            .get_repository(sc.repository_id)?
            .ok_or_else(|| EngineError::Internal("source config without repository".into()))?;
        let plugin =
            self.store
                .get_plugin(&repo.plugin_id)?
                .ok_or_else(|| EngineError::NotFound {
                    kind: "plugin",
                    id: repo.plugin_id.clone(),
                })?;
        let kind = plugin_kind(&plugin);
        let staging = match (kind, &req.staging_environment) {
            (PluginKind::Staged, None) => {
                return Err(invalid(
                    "staging_environment",
                    format!(
                        "plugin {} is staged: name a staging environment",
                        plugin.name
                    ),
                ))
            }
            (PluginKind::Direct, Some(_)) => {
                return Err(invalid(
                    "staging_environment",
                    format!(
                        "plugin {} is direct: it takes no staging environment",
                        plugin.name
                    ),
                ))
            }
            (PluginKind::Staged, Some(e)) => {
                let env = self.find_environment(e)?;
                let user = self.env_user(&env, req.staging_user.as_deref())?;
                Some((env.id, user.id))
            }
            (PluginKind::Direct, None) => None,
        };
        Engine::check_hooks(&req.hooks, crate::hooks::HookOwner::DSource)?;
        crate::limits::check_parameters("parameters", &req.parameters)?;
        let hooks = req.hooks.clone();
        let schema =
            ParameterSchema::new(&plugin.definition["linkedSourceDefinition"]["parameters"])
                .map_err(|e| EngineError::Internal(format!("plugin {}: {e}", plugin.name)))?;
        schema
            .validate(&req.parameters)
            .map_err(|errs| EngineError::InvalidParameters {
                what: "linked source parameters".into(),
                violations: errs.violations().iter().map(|v| v.to_string()).collect(),
            })?;
        let record = DSourceRecord {
            id: 0,
            name: req.name.clone(),
            plugin_id: plugin.id.clone(),
            source_config_id: sc.id,
            staging_environment_id: staging.map(|s| s.0),
            staging_user_id: staging.map(|s| s.1),
            parameters: self.hosts.secrets.seal(&req.parameters.to_string()),
            volume: format!("ds-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            enabled: true,
            created_at: now(),
        };
        let engine = self.clone();
        let who = who.clone();
        self.jobs.spawn(
            "DSOURCE_LINK",
            Some(format!("dsource:{}", req.name)),
            move |job| async move { engine.link_job(job, record, who, hooks).await },
        )
    }

    /// The link job: dataset, record, staging, first sync; undone on failure.
    async fn link_job(
        &self,
        job: JobHandle,
        record: DSourceRecord,
        who: Principal,
        hooks: std::collections::BTreeMap<String, String>,
    ) -> Result<Value, EngineError> {
        self.dsource_name_free(&record.name)?;
        let volume = VolumeId::new(record.volume.as_str())?;
        job.progress(5, &format!("creating dataset {volume}"));
        let pool = self.pool.clone();
        let v = volume.clone();
        pool_task(move || pool.create_volume(&v)).await?;
        let (id, _) = match self.store.insert_dsource(&record) {
            Ok(ids) => ids,
            Err(e) => {
                if let Err(undo) = self.destroy_dataset(&record.volume).await {
                    tracing::error!(volume = %record.volume, error = %undo, "cannot remove the dataset of a failed link");
                }
                return Err(e.into());
            }
        };
        let ds = self
            .store
            .get_dsource(id)?
            .ok_or_else(|| EngineError::Internal("dSource vanished".into()))?;
        // A panic in here still reaches the undo below.
        let outcome = crate::jobs::unpanicked(async {
            self.record_owner(&who, &format!("{DSOURCE_PREFIX}{id}"))?;
            self.store_hooks(&format!("{DSOURCE_PREFIX}{id}"), &hooks)?;
            let ctx = self.dsource_ctx(ds.clone())?;
            if ctx.staging.is_some() {
                self.enable_staging(&job, &ctx).await?;
            }
            let resync = default_snapshot_parameters(&ctx.plugin.definition, true);
            self.sync_steps(&job, &ctx, resync, 30).await
        })
        .await;
        if let Err(e) = outcome {
            job.event(EventLevel::Error, &format!("link failed, undoing: {e}"));
            if let Err(undo) = self.remove_dsource(&ds).await {
                job.event(
                    EventLevel::Error,
                    &format!("could not undo everything: {undo}"),
                );
            }
            return Err(e);
        }
        self.store.mark_ready("dsource", id)?;
        crate::to_json(&self.dsource_model(&ds)?)
    }

    /// Runs one of the dSource's plugin steps; `sync`: its `run_sync`
    /// fills the dSource's dataset.
    async fn call(
        &self,
        ctx: &Ctx,
        job: &JobHandle,
        op: Op,
        request: &Request,
        sync: bool,
    ) -> Result<Reply, EngineError> {
        let sync_target = sync
            .then(|| VolumeId::new(ctx.ds.volume.as_str()).map(|v| self.pool.volume_path(&v)))
            .transpose()?;
        self.run_step(Some(job), &ctx.plugin, op, request, sync_target)
            .await
    }

    /// Staged enable: mount where the plugin says, then start_staging.
    async fn enable_staging(&self, job: &JobHandle, ctx: &Ctx) -> Result<(), EngineError> {
        let (env, path) = self.mount_staging(job, ctx).await?;
        if self.implements(&ctx.plugin, Op::StartStaging)? {
            let req = ctx.request(Some(mount_on(&env, &path)));
            self.call(ctx, job, Op::StartStaging, &req, false).await?;
        }
        Ok(())
    }

    /// Asks the plugin where the staging dataset goes and makes sure it is
    /// mounted there; returns the environment and path.
    async fn mount_staging(
        &self,
        job: &JobHandle,
        ctx: &Ctx,
    ) -> Result<(EnvironmentRecord, String), EngineError> {
        let spec = self
            .call(
                ctx,
                job,
                Op::StagedMountSpecification,
                &ctx.request(None),
                false,
            )
            .await?
            .staged_mount();
        let mount = spec.mounts.into_iter().next().ok_or_else(|| {
            EngineError::Internal(format!("plugin {} gave no staging mount", ctx.plugin.name))
        })?;
        let path = mount.mount_path;
        let env = self.find_environment(&mount.environment.reference)?;
        let (staging_env, staging_user) = ctx.staging.as_ref().ok_or_else(|| {
            EngineError::Internal(format!(
                "dSource {} has no staging environment",
                ctx.ds.name
            ))
        })?;
        let user = if env.id == staging_env.id {
            staging_user.clone()
        } else {
            self.env_user(&env, None)?
        };
        if let Some(existing) = self.store.find_mount(env.id, &path)? {
            if existing.volume == ctx.ds.volume {
                return Ok((env, path));
            }
        }
        let _claim = self.claim_mount_path(
            &env,
            &path,
            format!("dSource {} ({DSOURCE_PREFIX}{})", ctx.ds.name, ctx.ds.id),
        )?;
        job.progress(
            15,
            &format!(
                "mounting dataset {} on {} at {path}",
                ctx.ds.volume, env.name
            ),
        );
        let owner = spec.owner;
        self.mount_volume(MountRequest {
            environment: format!("{ENVIRONMENT_PREFIX}{}", env.id),
            user: Some(user.name.clone()),
            volume: ctx.ds.volume.clone(),
            subdirectory: String::new(),
            mount_path: path.clone(),
            read_only: false,
            owner,
        })
        .await?;
        Ok((env, path))
    }

    /// Where a dSource's hooks run: the staging host, or the source host when direct.
    fn hook_host<'a>(&self, ctx: &'a Ctx) -> (&'a EnvironmentRecord, &'a EnvironmentUserRecord) {
        match &ctx.staging {
            Some((e, u)) => (e, u),
            None => (&ctx.source.0, &ctx.source.1),
        }
    }

    /// Pre-Sync hook, the sync, and the Post-Sync hook (which runs even when
    /// the sync failed; the sync's error wins).
    async fn sync_steps(
        &self,
        job: &JobHandle,
        ctx: &Ctx,
        params: Value,
        start: u8,
    ) -> Result<Value, EngineError> {
        let object = format!("{DSOURCE_PREFIX}{}", ctx.ds.id);
        let (env, user) = self.hook_host(ctx);
        self.run_hook(job, &object, "pre-sync", env, user).await?;
        let synced = self.sync_data(job, ctx, params, start).await;
        let post = self.run_hook(job, &object, "post-sync", env, user).await;
        let out = synced?;
        post?;
        Ok(out)
    }

    /// pre_snapshot → pool snapshot → post_snapshot → metadata recorded.
    async fn sync_data(
        &self,
        job: &JobHandle,
        ctx: &Ctx,
        params: Value,
        start: u8,
    ) -> Result<Value, EngineError> {
        let (req, pre, post, sync) = if ctx.staging.is_some() {
            let (env, path) = self.mount_staging(job, ctx).await?;
            (
                ctx.request(Some(mount_on(&env, &path))),
                Op::StagedPreSnapshot,
                Op::StagedPostSnapshot,
                false,
            )
        } else {
            (
                ctx.request(None),
                Op::DirectPreSnapshot,
                Op::DirectPostSnapshot,
                true,
            )
        };
        let req = Request {
            snapshot_parameters: Some(params),
            ..req
        };
        job.check_canceled()?;
        if self.implements(&ctx.plugin, pre)? {
            job.progress(start + 10, "copying data (plugin pre_snapshot)");
            self.call(ctx, job, pre, &req, sync).await?;
        }
        job.check_canceled()?;
        job.progress(start + 50, "taking the snapshot");
        let volume = VolumeId::new(ctx.ds.volume.as_str())?;
        let snap = crate::datasets::new_snapshot_id()?;
        let pool = self.pool.clone();
        let (v, s) = (volume.clone(), snap.clone());
        pool_task(move || pool.create_snapshot(&v, &s)).await?;
        let undo = || {
            let pool = self.pool.clone();
            let r = SnapshotRef::new(volume.clone(), snap.clone());
            async move {
                let _ = pool_task(move || pool.destroy_snapshot(&r)).await;
            }
        };
        let metadata = match self.call(ctx, job, post, &req, false).await {
            Ok(out) => out,
            Err(e) => {
                undo().await;
                return Err(e);
            }
        };
        let metadata: Value = metadata
            .snapshot_metadata()
            .unwrap_or(Ok(json!({})))
            .map_err(|e| EngineError::Internal(format!("snapshot metadata is not JSON: {e}")))?;
        if let Ok(schema) = ParameterSchema::new(&ctx.plugin.definition["snapshotSchema"]) {
            if let Err(errs) = schema.validate(&metadata) {
                undo().await;
                return Err(EngineError::InvalidParameters {
                    what: format!("snapshot metadata from plugin {}", ctx.plugin.name),
                    violations: errs.violations().iter().map(|v| v.to_string()).collect(),
                });
            }
        }
        let timeflow = self
            .store
            .current_timeflow(ctx.ds.id)?
            .ok_or_else(|| EngineError::Internal("dSource without timeflow".into()))?;
        let record = SnapshotRecord {
            id: 0,
            timeflow_id: timeflow,
            volume: ctx.ds.volume.clone(),
            pool_snapshot: snap.to_string(),
            metadata: metadata.clone(),
            created_at: now(),
        };
        let id = match self.store.insert_snapshot(&record) {
            Ok(id) => id,
            Err(e) => {
                undo().await;
                return Err(e.into());
            }
        };
        job.progress(100, &format!("snapshot {SNAPSHOT_PREFIX}{id} taken"));
        Ok(json!({"snapshot": format!("{SNAPSHOT_PREFIX}{id}"), "metadata": metadata}))
    }

    /// Syncs a dSource in a job (`params`: the user's snapshot parameters,
    /// checked against the plugin's schema; None for a policy sync).
    pub fn sync_dsource(
        self: &Arc<Self>,
        reference: &str,
        params: Option<Value>,
        resync: bool,
    ) -> Result<Job, EngineError> {
        self.check_capacity("sync")?;
        let ds = self.find_dsource(reference)?;
        if !ds.enabled {
            return Err(EngineError::Conflict(format!(
                "dSource {} is disabled; enable it first",
                ds.name
            )));
        }
        let ctx = self.dsource_ctx(ds)?;
        let params = match (params, resync) {
            (_, true) => default_snapshot_parameters(&ctx.plugin.definition, true),
            (None, false) => default_snapshot_parameters(&ctx.plugin.definition, false),
            (Some(p), false) => {
                crate::limits::check_parameters("parameters", &p)?;
                let schema = ParameterSchema::new(
                    &ctx.plugin.definition["snapshotParametersDefinition"]["schema"],
                )
                .map_err(|e| EngineError::Internal(e.to_string()))?;
                schema
                    .validate(&p)
                    .map_err(|errs| EngineError::InvalidParameters {
                        what: "snapshot parameters".into(),
                        violations: errs.violations().iter().map(|v| v.to_string()).collect(),
                    })?;
                p
            }
        };
        let engine = self.clone();
        let kind = if resync {
            "DSOURCE_RESYNC"
        } else {
            "DSOURCE_SYNC"
        };
        self.jobs.spawn(
            kind,
            Some(format!("{DSOURCE_PREFIX}{}", ctx.ds.id)),
            move |job| async move { engine.sync_job(job, ctx, params).await },
        )
    }

    /// The sync job, run once the dSource is free.
    async fn sync_job(
        &self,
        job: JobHandle,
        ctx: Ctx,
        params: Value,
    ) -> Result<Value, EngineError> {
        // A disable queued before this sync has run by now (jobs on
        // one dSource run in turn): what counts is the state now.
        let ds = self.find_dsource(&format!("{DSOURCE_PREFIX}{}", ctx.ds.id))?;
        if !ds.enabled {
            return Err(EngineError::Conflict(format!(
                "dSource {} was disabled before this sync could run; enable it first",
                ds.name
            )));
        }
        self.sync_steps(&job, &ctx, params, 0).await
    }

    /// Enables (mount where the plugin says, start_staging) or disables
    /// (stop_staging, unmount) a staged dSource, in a job. Direct dSources
    /// make no plugin call.
    pub fn dsource_power(
        self: &Arc<Self>,
        reference: &str,
        enable: bool,
    ) -> Result<Job, EngineError> {
        let ds = self.find_dsource(reference)?;
        let engine = self.clone();
        let kind = if enable {
            "DSOURCE_ENABLE"
        } else {
            "DSOURCE_DISABLE"
        };
        self.jobs.spawn(
            kind,
            Some(format!("{DSOURCE_PREFIX}{}", ds.id)),
            move |job| async move { engine.dsource_power_job(job, ds, enable).await },
        )
    }

    /// The enable or disable job of a dSource.
    async fn dsource_power_job(
        &self,
        job: JobHandle,
        ds: DSourceRecord,
        enable: bool,
    ) -> Result<Value, EngineError> {
        let ctx = self.dsource_ctx(ds.clone())?;
        if ctx.staging.is_some() {
            if enable {
                self.enable_staging(&job, &ctx).await?;
            } else {
                if self.implements(&ctx.plugin, Op::StopStaging)? {
                    let req = ctx.request(self.staging_mount_of(&ds)?);
                    self.call(&ctx, &job, Op::StopStaging, &req, false).await?;
                }
                for m in self
                    .store
                    .list_mounts(None)?
                    .into_iter()
                    .filter(|m| m.volume == ds.volume)
                {
                    self.unmount(m.id).await?;
                }
            }
        }
        self.store.set_enabled("dsource", ds.id, enable)?;
        crate::to_json(
            &self.dsource_model(&self.store.get_dsource(ds.id)?.ok_or_else(|| {
                EngineError::NotFound {
                    kind: "dSource",
                    id: ds.name.clone(),
                }
            })?)?,
        )
    }

    /// Deletes a dSource: stop_staging, unmount, destroy its data and records.
    pub fn delete_dsource(self: &Arc<Self>, reference: &str) -> Result<Job, EngineError> {
        let ds = self.find_dsource(reference)?;
        let vdbs: Vec<String> = self
            .store
            .list_vdbs()?
            .into_iter()
            .filter(|v| v.parent_volume == ds.volume)
            .map(|v| v.name)
            .collect();
        if !vdbs.is_empty() {
            return Err(EngineError::Conflict(format!(
                "dSource {} has VDBs: {}; delete them first",
                ds.name,
                vdbs.join(", ")
            )));
        }
        let engine = self.clone();
        self.jobs.spawn(
            "DSOURCE_DELETE",
            Some(format!("{DSOURCE_PREFIX}{}", ds.id)),
            move |job| async move { engine.delete_dsource_job(job, ds).await },
        )
    }

    /// The delete job of a dSource.
    async fn delete_dsource_job(
        &self,
        job: JobHandle,
        ds: DSourceRecord,
    ) -> Result<Value, EngineError> {
        let model = self.dsource_model(&ds)?;
        let ctx = self.dsource_ctx(ds.clone())?;
        if ctx.staging.is_some() && self.implements(&ctx.plugin, Op::StopStaging)? {
            job.progress(10, "stopping staging (plugin stop_staging)");
            let req = ctx.request(self.staging_mount_of(&ds)?);
            self.call(&ctx, &job, Op::StopStaging, &req, false).await?;
        }
        job.progress(40, "unmounting and destroying the dataset");
        for m in self
            .store
            .list_mounts(None)?
            .into_iter()
            .filter(|m| m.volume == ds.volume)
        {
            self.unmount(m.id).await?;
        }
        self.remove_dsource(&ds).await?;
        crate::to_json(&model)
    }

    /// Best-effort removal of everything a dSource has: mounts, snapshots,
    /// dataset, record. Used to undo a failed link and by delete.
    pub(crate) async fn remove_dsource(&self, ds: &DSourceRecord) -> Result<(), EngineError> {
        for m in self
            .store
            .list_mounts(None)?
            .into_iter()
            .filter(|m| m.volume == ds.volume)
        {
            self.unmount(m.id).await?;
        }
        self.destroy_dataset(&ds.volume).await?;
        self.store
            .delete_hooks(&format!("{DSOURCE_PREFIX}{}", ds.id), None)?;
        self.store.delete_dsource(ds.id)?;
        Ok(())
    }
}
