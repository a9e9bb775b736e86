//! dSources: linking a source config, syncing it into a pool dataset as a
//! line of snapshots, deleting it (contract §4, "Environments and dSources").
//!
//! Staged: the engine mounts the dSource's dataset on the staging host where
//! the plugin's mount specification says, the plugin fills it (pre_snapshot),
//! the pool snapshots it, the plugin describes it (post_snapshot). Direct:
//! the plugin's `run_sync` copies into the dataset, then the same snapshot.

use doppel_model::{DSource, LinkDSource, MountRequest, Snapshot};
use std::sync::Arc;

use doppel_model::{EventLevel, Job, PluginKind};
use doppel_plugin_host::schema::{redact_secrets, ParameterSchema};
use doppel_plugin_host::CallContext;
use doppel_storage::{SnapshotId, SnapshotRef, VolumeId};
use doppel_store::{
    DSourceRecord, EnvironmentRecord, EnvironmentUserRecord, PluginRecord, SnapshotRecord,
};

use serde_json::{json, Value};

use crate::auth::Principal;
use crate::environments::connection_json;
use crate::hosts::{parse_ref, ENVIRONMENT_PREFIX, HOST_PREFIX};
use crate::jobs::JobHandle;

use crate::{now, pdo, pool_task, Engine, EngineError, SNAPSHOT_PREFIX};

const DSOURCE_PREFIX: &str = "DSOURCE-";

fn mount_json(env: &EnvironmentRecord, path: &str) -> Value {
    json!({"remote_environment": {"name": env.name, "reference": format!("{ENVIRONMENT_PREFIX}{}", env.id),
            "host": {"name": env.host, "reference": format!("{HOST_PREFIX}{}", env.id),
                     "binary_path": env.toolkit_path, "scratch_path": env.scratch_path}},
           "mount_path": path})
}

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
        let plugin = self.loaded(&ctx.plugin)?;
        let mut req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&ctx.source_config)}});
        let (status_op, size_op) = if ctx.staging.is_some() {
            let mount = self
                .store
                .list_mounts(None)?
                .into_iter()
                .find(|m| m.volume == ds.volume);
            let env = mount
                .as_ref()
                .and_then(|m| self.store.get_environment(m.environment_id).ok().flatten());
            req["staged_source"] = self.staged_source(
                &ctx,
                env.as_ref()
                    .zip(mount.as_ref())
                    .map(|(e, m)| (e, m.mount_path.as_str())),
            );
            ("linked.status", "linked.staged_source_size")
        } else {
            req["direct_source"] = json!({"connection": connection_json(&ctx.source.0, &ctx.source.1),
                "linked_source": {"guid": format!("{DSOURCE_PREFIX}{}", ds.id), "parameters": pdo(&ctx.params)}});
            ("linked.status", "linked.direct_source_size")
        };
        let call = CallContext::default();
        if let Ok(op) = self.host.operation(&plugin, status_op) {
            let out = self
                .host
                .invoke(&plugin, op, req.clone(), &call, None)
                .await?;
            model.status = out["status"]
                .as_str()
                .map(str::to_owned)
                .or(Some("ACTIVE".into()));
        }
        if let Ok(op) = self.host.operation(&plugin, size_op) {
            let out = self.host.invoke(&plugin, op, req, &call, None).await?;
            // uint64 travels as a string in proto JSON.
            model.size_bytes = out["database_size"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or(out["database_size"].as_u64());
        }
        Ok(model)
    }

    /// Snapshots of one dSource or VDB (or all), oldest first, with their
    /// unique size (measured by the pool on a blocking thread: on btrfs it
    /// walks extents).
    pub async fn list_snapshots(
        &self,
        dataset: Option<&str>,
    ) -> Result<Vec<Snapshot>, EngineError> {
        let volume = dataset
            .map(|d| self.dataset_of(d).map(|(v, _)| v))
            .transpose()?;
        self.snapshots_of_volume(volume.as_deref()).await
    }

    /// Snapshots of one pool volume (or all), as `list_snapshots` shows them.
    async fn snapshots_of_volume(
        &self,
        volume: Option<&str>,
    ) -> Result<Vec<Snapshot>, EngineError> {
        let records = self.store.list_snapshots(volume)?;
        let pool = self.pool.clone();
        pool_task(move || {
            Ok(records
                .into_iter()
                .map(|s| {
                    let unique_bytes = (|| {
                        let r = SnapshotRef::new(
                            VolumeId::new(s.volume.as_str()).ok()?,
                            SnapshotId::new(s.pool_snapshot.as_str()).ok()?,
                        );
                        pool.snapshot_usage(&r).ok().map(|u| u.exclusive)
                    })();
                    Snapshot {
                        reference: format!("{SNAPSHOT_PREFIX}{}", s.id),
                        dataset: s.volume,
                        pool_snapshot: s.pool_snapshot,
                        timeflow: format!("TIMEFLOW-{}", s.timeflow_id),
                        created_at: s.created_at,
                        metadata: s.metadata,
                        unique_bytes,
                    }
                })
                .collect())
        })
        .await
    }

    /// What a V2P call of this dSource's plugin needs: the plugin, the
    /// operations' group prefix, and the request without physical_source
    /// and snapshot.
    pub(crate) fn dsource_v2p_request(
        &self,
        ds: DSourceRecord,
    ) -> Result<(PluginRecord, &'static str, Value), EngineError> {
        let ctx = self.dsource_ctx(ds.clone())?;
        let mut req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&ctx.source_config)}});
        let prefix = if ctx.staging.is_some() {
            let mount = self
                .store
                .list_mounts(None)?
                .into_iter()
                .find(|m| m.volume == ds.volume);
            let env = mount
                .as_ref()
                .and_then(|m| self.store.get_environment(m.environment_id).ok().flatten());
            req["staged_source"] = self.staged_source(
                &ctx,
                env.as_ref()
                    .zip(mount.as_ref())
                    .map(|(e, m)| (e, m.mount_path.as_str())),
            );
            "linked.staged_"
        } else {
            req["direct_source"] = json!({"connection": connection_json(&ctx.source.0, &ctx.source.1),
                "linked_source": {"guid": format!("{DSOURCE_PREFIX}{}", ds.id), "parameters": pdo(&ctx.params)}});
            "linked.direct_"
        };
        Ok((ctx.plugin, prefix, req))
    }

    /// Deletes a snapshot of a dSource or VDB; refused while a VDB's current
    /// timeflow starts at it.
    pub async fn delete_snapshot(&self, reference: &str) -> Result<Snapshot, EngineError> {
        let id =
            parse_ref(reference, SNAPSHOT_PREFIX).ok_or_else(|| EngineError::InvalidInput {
                field: "snapshot".into(),
                reason: "must look like SNAPSHOT-<n>".into(),
            })?;
        let record = self
            .store
            .get_snapshot(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "snapshot",
                id: reference.to_owned(),
            })?;
        let users = self.store.vdbs_on_snapshot(id)?;
        if !users.is_empty() {
            return Err(EngineError::Conflict(format!("{reference} is the base of the current state of VDB(s) {}; refresh or delete them first", users.join(", "))));
        }
        let shown = self
            .snapshots_of_volume(Some(&record.volume))
            .await?
            .into_iter()
            .find(|s| s.reference == reference)
            .ok_or_else(|| EngineError::NotFound {
                kind: "snapshot",
                id: reference.to_owned(),
            })?;
        let r = SnapshotRef::new(
            VolumeId::new(record.volume.as_str())?,
            SnapshotId::new(record.pool_snapshot.as_str())?,
        );
        let pool = self.pool.clone();
        pool_task(move || pool.destroy_snapshot(&r)).await?;
        self.store.delete_snapshot(id)?;
        Ok(shown)
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
        self.jobs.spawn("DSOURCE_LINK", Some(format!("dsource:{}", req.name)), move |job| async move {
            engine.dsource_name_free(&record.name)?;
            let volume = VolumeId::new(record.volume.as_str())?;
            job.progress(5, &format!("creating dataset {volume}"));
            let pool = engine.pool.clone();
            let v = volume.clone();
            pool_task(move || pool.create_volume(&v)).await?;
            let (id, _) = match engine.store.insert_dsource(&record) {
                Ok(ids) => ids,
                Err(e) => {
                    if let Err(undo) = engine.destroy_dataset(&record.volume).await {
                        tracing::error!(volume = %record.volume, error = %undo, "cannot remove the dataset of a failed link");
                    }
                    return Err(e.into());
                }
            };
            let ds = engine.store.get_dsource(id)?.ok_or_else(|| EngineError::Internal("dSource vanished".into()))?;
            // A panic in here still reaches the undo below.
            let outcome = crate::jobs::unpanicked(async {
                engine.record_owner(&who, &format!("{DSOURCE_PREFIX}{id}"))?;
                engine.store_hooks(&format!("{DSOURCE_PREFIX}{id}"), &hooks)?;
                let ctx = engine.dsource_ctx(ds.clone())?;
                if ctx.staging.is_some() {
                    engine.enable_staging(&job, &ctx).await?;
                }
                let resync = engine.default_snapshot_parameters(&ctx.plugin, true);
                engine.sync_steps(&job, &ctx, resync, 30).await
            })
            .await;
            if let Err(e) = outcome {
                job.event(EventLevel::Error, &format!("link failed, undoing: {e}"));
                if let Err(undo) = engine.remove_dsource(&ds).await {
                    job.event(EventLevel::Error, &format!("could not undo everything: {undo}"));
                }
                return Err(e);
            }
            engine.store.mark_ready("dsource", id)?;
            crate::to_json(&engine.dsource_model(&ds)?)
        })
    }

    /// The snapshot parameters of a sync the user gave none for:
    /// `{"resync": <resync>}` when the plugin's snapshot parameters have a
    /// `resync` flag (the docs' convention; published plugins read
    /// `snapshot_parameters.resync` without a None check, so a plain sync
    /// must say `false`, never `null`), else `null`.
    fn default_snapshot_parameters(&self, plugin: &PluginRecord, resync: bool) -> Value {
        if plugin
            .definition
            .pointer("/snapshotParametersDefinition/schema/properties/resync")
            .is_some()
        {
            json!({ "resync": resync })
        } else {
            Value::Null
        }
    }

    fn staged_source(&self, ctx: &Ctx, mount: Option<(&EnvironmentRecord, &str)>) -> Value {
        let (senv, suser) = ctx.staging.as_ref().expect("staged");
        let mut v = json!({
            "linked_source": {"guid": format!("{DSOURCE_PREFIX}{}", ctx.ds.id), "parameters": pdo(&ctx.params)},
            "source_connection": connection_json(&ctx.source.0, &ctx.source.1),
            "staged_connection": connection_json(senv, suser),
        });
        if let Some((env, path)) = mount {
            v["staged_mount"] = mount_json(env, path);
        }
        v
    }

    async fn call(
        &self,
        ctx: &Ctx,
        job: &JobHandle,
        op: &str,
        request: Value,
        sync: bool,
    ) -> Result<Value, EngineError> {
        let plugin = self.loaded(&ctx.plugin)?;
        let op = self.host.operation(&plugin, op)?;
        let sync_target = sync
            .then(|| VolumeId::new(ctx.ds.volume.as_str()).map(|v| self.pool.volume_path(&v)))
            .transpose()?;
        let call = CallContext {
            job: Some(job.id().to_owned()),
            sync_target,
            log_sink: Some(job.plugin_log_sink()),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let out = self.host.invoke(&plugin, op, request, &call, None).await;
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
        Ok(out?)
    }

    fn implements(&self, ctx: &Ctx, op: &str) -> bool {
        self.loaded(&ctx.plugin)
            .is_ok_and(|p| self.host.operation(&p, op).is_ok())
    }

    /// Staged enable: mount where the plugin says, then start_staging.
    async fn enable_staging(&self, job: &JobHandle, ctx: &Ctx) -> Result<(), EngineError> {
        let (env, path) = self.mount_staging(job, ctx).await?;
        if self.implements(ctx, "linked.start_staging") {
            let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&ctx.source_config)},
                             "staged_source": self.staged_source(ctx, Some((&env, &path)))});
            self.call(ctx, job, "linked.start_staging", req, false)
                .await?;
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
        let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "staged_source": self.staged_source(ctx, None)});
        let spec = self
            .call(ctx, job, "linked.mount_specification", req, false)
            .await?;
        let mount = spec
            .get("staged_mount")
            .filter(|m| m.get("mount_path").is_some())
            .or_else(|| spec["mounts"].get(0))
            .cloned()
            .ok_or_else(|| {
                EngineError::Internal(format!("plugin {} gave no staging mount", ctx.plugin.name))
            })?;
        let env_ref = mount
            .pointer("/remote_environment/reference")
            .and_then(|r| r.as_str())
            .unwrap_or_default();
        let path = mount["mount_path"].as_str().unwrap_or_default().to_owned();
        let env = self.find_environment(env_ref)?;
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
        let owner = spec
            .get("ownership_spec")
            .and_then(|o| Some((o["uid"].as_u64()? as u32, o["gid"].as_u64()? as u32)));
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
        let sp = json!({"parameters": pdo(&params)});
        let base = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&ctx.source_config)},
                          "snapshot_parameters": sp});
        let (req, pre, post, sync) = if ctx.staging.is_some() {
            let (env, path) = self.mount_staging(job, ctx).await?;
            let mut r = base.clone();
            r["staged_source"] = self.staged_source(ctx, Some((&env, &path)));
            (
                r,
                "linked.staged_pre_snapshot",
                "linked.staged_post_snapshot",
                false,
            )
        } else {
            let mut r = base.clone();
            r["direct_source"] = json!({"connection": connection_json(&ctx.source.0, &ctx.source.1),
                "linked_source": {"guid": format!("{DSOURCE_PREFIX}{}", ctx.ds.id), "parameters": pdo(&ctx.params)}});
            (
                r,
                "linked.direct_pre_snapshot",
                "linked.direct_post_snapshot",
                true,
            )
        };
        job.check_canceled()?;
        if self.implements(ctx, pre) {
            job.progress(start + 10, "copying data (plugin pre_snapshot)");
            self.call(ctx, job, pre, req.clone(), sync).await?;
        }
        job.check_canceled()?;
        job.progress(start + 50, "taking the snapshot");
        let volume = VolumeId::new(ctx.ds.volume.as_str())?;
        let snap = SnapshotId::new(format!(
            "s{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..12)
                .unwrap_or_default()
        ))?;
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
        let metadata = match self.call(ctx, job, post, req, false).await {
            Ok(out) => out,
            Err(e) => {
                undo().await;
                return Err(e);
            }
        };
        let text = metadata
            .pointer("/snapshot/parameters/json")
            .and_then(|j| j.as_str())
            .unwrap_or("{}");
        let metadata: Value = serde_json::from_str(text)
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
            (_, true) => self.default_snapshot_parameters(&ctx.plugin, true),
            (None, false) => self.default_snapshot_parameters(&ctx.plugin, false),
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
            move |job| async move {
                // A disable queued before this sync has run by now (jobs on
                // one dSource run in turn): what counts is the state now.
                let ds = engine.find_dsource(&format!("{DSOURCE_PREFIX}{}", ctx.ds.id))?;
                if !ds.enabled {
                    return Err(EngineError::Conflict(format!(
                        "dSource {} was disabled before this sync could run; enable it first",
                        ds.name
                    )));
                }
                engine.sync_steps(&job, &ctx, params, 0).await
            },
        )
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
        self.jobs.spawn(kind, Some(format!("{DSOURCE_PREFIX}{}", ds.id)), move |job| async move {
            let ctx = engine.dsource_ctx(ds.clone())?;
            if ctx.staging.is_some() {
                if enable {
                    engine.enable_staging(&job, &ctx).await?;
                } else {
                    let mount = engine.store.list_mounts(None)?.into_iter().find(|m| m.volume == ds.volume);
                    if engine.implements(&ctx, "linked.stop_staging") {
                        let env = mount.as_ref().and_then(|m| engine.store.get_environment(m.environment_id).ok().flatten());
                        let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&ctx.source_config)},
                                         "staged_source": engine.staged_source(&ctx, env.as_ref().zip(mount.as_ref()).map(|(e, m)| (e, m.mount_path.as_str())))});
                        engine.call(&ctx, &job, "linked.stop_staging", req, false).await?;
                    }
                    for m in engine.store.list_mounts(None)?.into_iter().filter(|m| m.volume == ds.volume) {
                        engine.unmount(m.id).await?;
                    }
                }
            }
            engine.store.set_enabled("dsource", ds.id, enable)?;
            crate::to_json(&engine.dsource_model(&engine.store.get_dsource(ds.id)?.ok_or_else(|| EngineError::NotFound { kind: "dSource", id: ds.name.clone() })?)?)
        })
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
        self.jobs.spawn("DSOURCE_DELETE", Some(format!("{DSOURCE_PREFIX}{}", ds.id)), move |job| async move {
            let model = engine.dsource_model(&ds)?;
            let ctx = engine.dsource_ctx(ds.clone())?;
            if ctx.staging.is_some() && engine.implements(&ctx, "linked.stop_staging") {
                job.progress(10, "stopping staging (plugin stop_staging)");
                let mount = engine.store.list_mounts(None)?.into_iter().find(|m| m.volume == ds.volume);
                let env = mount.as_ref().and_then(|m| engine.store.get_environment(m.environment_id).ok().flatten());
                let req = json!({"repository": {"parameters": pdo(&ctx.repository)}, "source_config": {"parameters": pdo(&ctx.source_config)},
                                 "staged_source": engine.staged_source(&ctx, env.as_ref().zip(mount.as_ref()).map(|(e, m)| (e, m.mount_path.as_str())))});
                engine.call(&ctx, &job, "linked.stop_staging", req, false).await?;
            }
            job.progress(40, "unmounting and destroying the dataset");
            for m in engine.store.list_mounts(None)?.into_iter().filter(|m| m.volume == ds.volume) {
                engine.unmount(m.id).await?;
            }
            engine.remove_dsource(&ds).await?;
            crate::to_json(&model)
        })
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

    /// Destroys a pool volume with all its snapshots.
    pub(crate) async fn destroy_dataset(&self, volume: &str) -> Result<(), EngineError> {
        let v = VolumeId::new(volume)?;
        let pool = self.pool.clone();
        pool_task(move || {
            for s in pool.list_snapshots(&v)? {
                pool.destroy_snapshot(&SnapshotRef::new(v.clone(), s))?;
            }
            pool.destroy_volume(&v)
        })
        .await
    }
}
