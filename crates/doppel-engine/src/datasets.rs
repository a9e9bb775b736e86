//! What dSources and VDBs share: their pool datasets and snapshots, and
//! the claims on mount paths their jobs take. Both workflows call in here
//! rather than into each other.

use std::sync::Arc;

use doppel_model::Snapshot;
use doppel_storage::{SnapshotId, SnapshotRef, VolumeId};
use doppel_store::{EnvironmentRecord, SnapshotRecord};

use crate::hosts::parse_ref;
use crate::vdbs::VDB_PREFIX;
use crate::{pool_task, Engine, EngineError, SNAPSHOT_PREFIX};

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

/// A new pool snapshot name, unique enough to never meet another.
pub(crate) fn new_snapshot_id() -> Result<SnapshotId, EngineError> {
    Ok(SnapshotId::new(format!(
        "s{}",
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..12)
            .unwrap_or_default()
    ))?)
}

impl Engine {
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

    /// A snapshot of `volume`: the one named (`SNAPSHOT-<n>` or one of the
    /// dataset's bookmarks), or the latest. Every request that names a
    /// snapshot of a dataset comes through here.
    pub(crate) fn pick_snapshot(
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
                // A bookmark of the dataset names its snapshot.
                let id = match parse_ref(n, SNAPSHOT_PREFIX) {
                    Some(id) => id,
                    None => match self.bookmark_on(volume, n)? {
                        Some(b) => b.snapshot_id,
                        None => {
                            return Err(EngineError::NotFound {
                                kind: "snapshot (SNAPSHOT-<n>) or bookmark of that dataset",
                                id: n.to_owned(),
                            })
                        }
                    },
                };
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
    pub(crate) async fn snapshots_of_volume(
        &self,
        volume: Option<&str>,
    ) -> Result<Vec<Snapshot>, EngineError> {
        let records = self.store.list_snapshots(volume)?;
        let mut kept = self.kept_because(&records)?;
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
                        kept_because: kept.remove(&s.id).unwrap_or_default(),
                    }
                })
                .collect())
        })
        .await
    }

    /// Deletes a snapshot of a dSource or VDB; refused while a VDB's current
    /// timeflow starts at it or a bookmark pins it.
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
        let marks = self.bookmarks_pinning(&record)?;
        if !marks.is_empty() {
            return Err(EngineError::Conflict(format!(
                "{reference} is bookmarked as {}; delete the bookmark first",
                marks.join(", ")
            )));
        }
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
}
