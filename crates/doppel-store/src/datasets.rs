//! dSources, timeflows and snapshots.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct DSourceRecord {
    pub id: i64,
    pub name: String,
    pub plugin_id: String,
    pub source_config_id: i64,
    pub staging_environment_id: Option<i64>,
    pub staging_user_id: Option<i64>,
    /// Sealed by the engine: parameters may hold secrets.
    pub parameters: String,
    /// Pool volume holding the dSource's data.
    pub volume: String,
    pub enabled: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    pub id: i64,
    pub timeflow_id: i64,
    pub volume: String,
    pub pool_snapshot: String,
    /// The plugin's snapshot metadata (validated against snapshotSchema).
    pub metadata: serde_json::Value,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VdbRecord {
    pub id: i64,
    pub name: String,
    pub plugin_id: String,
    pub repository_id: i64,
    pub environment_id: i64,
    pub user_id: i64,
    /// The volume of the dSource or VDB it was provisioned from.
    pub parent_volume: String,
    /// Sealed by the engine.
    pub parameters: String,
    /// What the plugin's configure returned.
    pub source_config: Option<serde_json::Value>,
    pub volume: String,
    pub enabled: bool,
    pub created_at: String,
}

const VDB_COLS: &str =
    "id, name, plugin_id, repository_id, environment_id, user_id, parent_volume, parameters, source_config, volume, enabled, created_at";

fn row_vdb(r: &rusqlite::Row<'_>) -> rusqlite::Result<VdbRecord> {
    let sc: Option<String> = r.get(8)?;
    Ok(VdbRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        plugin_id: r.get(2)?,
        repository_id: r.get(3)?,
        environment_id: r.get(4)?,
        user_id: r.get(5)?,
        parent_volume: r.get(6)?,
        parameters: r.get(7)?,
        source_config: sc.and_then(|t| serde_json::from_str(&t).ok()),
        volume: r.get(9)?,
        enabled: r.get::<_, i64>(10)? != 0,
        created_at: r.get(11)?,
    })
}

const DS_COLS: &str =
    "id, name, plugin_id, source_config_id, staging_environment_id, staging_user_id, parameters, volume, enabled, created_at";

fn row_ds(r: &rusqlite::Row<'_>) -> rusqlite::Result<DSourceRecord> {
    Ok(DSourceRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        plugin_id: r.get(2)?,
        source_config_id: r.get(3)?,
        staging_environment_id: r.get(4)?,
        staging_user_id: r.get(5)?,
        parameters: r.get(6)?,
        volume: r.get(7)?,
        enabled: r.get::<_, i64>(8)? != 0,
        created_at: r.get(9)?,
    })
}

fn row_snap(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    let text: String = r.get(4)?;
    Ok(SnapshotRecord {
        id: r.get(0)?,
        timeflow_id: r.get(1)?,
        volume: r.get(2)?,
        pool_snapshot: r.get(3)?,
        metadata: serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(5)?,
    })
}

impl Store {
    /// Records a dSource with its first timeflow; returns (dSource id, timeflow id).
    pub fn insert_dsource(&self, d: &DSourceRecord) -> Result<(i64, i64), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO dsource (name, plugin_id, source_config_id, staging_environment_id, staging_user_id, parameters, volume, enabled, created_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'creating')",
            params![d.name, d.plugin_id, d.source_config_id, d.staging_environment_id, d.staging_user_id, d.parameters, d.volume, d.enabled, d.created_at],
        )
        .map_err(|e| {
            crate::taken(e, "dSource name", &d.name, || {
                tx.query_row("SELECT id FROM dsource WHERE name = ?1", [&d.name], |r| r.get::<_, i64>(0))
                    .ok()
                    .map(|id| format!("DSOURCE-{id}"))
            })
        })?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO timeflow (dsource_id, created_at) VALUES (?1, ?2)",
            params![id, d.created_at],
        )?;
        let tf = tx.last_insert_rowid();
        tx.commit()?;
        Ok((id, tf))
    }

    pub fn get_dsource(&self, id: i64) -> Result<Option<DSourceRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {DS_COLS} FROM dsource WHERE id = ?1"),
                [id],
                row_ds,
            )
            .optional()?)
    }

    pub fn find_dsource_by_name(&self, name: &str) -> Result<Option<DSourceRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {DS_COLS} FROM dsource WHERE name = ?1"),
                [name],
                row_ds,
            )
            .optional()?)
    }

    pub fn list_dsources(&self) -> Result<Vec<DSourceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {DS_COLS} FROM dsource ORDER BY name"))?;
        let rows = stmt.query_map([], row_ds)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a dSource with its timeflows and snapshot records.
    pub fn delete_dsource(&self, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // Its bookmarks go with it, as in Delphix.
        tx.execute(
            "DELETE FROM bookmark WHERE volume = (SELECT volume FROM dsource WHERE id = ?1)",
            [id],
        )?;
        let n = tx.execute("DELETE FROM dsource WHERE id = ?1", [id])?;
        crate::users::delete_grants_of(&tx, &format!("DSOURCE-{id}"))?;
        crate::policies::forget_object(&tx, &format!("DSOURCE-{id}"))?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// The current (newest) timeflow of a dSource.
    pub fn current_timeflow(&self, dsource_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.conn().query_row(
            "SELECT MAX(id) FROM timeflow WHERE dsource_id = ?1",
            [dsource_id],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO snapshot (timeflow_id, volume, pool_snapshot, metadata, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.timeflow_id, s.volume, s.pool_snapshot, s.metadata.to_string(), s.created_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Snapshots of one volume (all volumes when None), oldest first.
    pub fn list_snapshots(&self, volume: Option<&str>) -> Result<Vec<SnapshotRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, timeflow_id, volume, pool_snapshot, metadata, created_at FROM snapshot
             WHERE ?1 IS NULL OR volume = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([volume], row_snap)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a VDB with its first timeflow, which starts at `parent_snapshot`.
    pub fn insert_vdb(
        &self,
        v: &VdbRecord,
        parent_snapshot: Option<i64>,
    ) -> Result<(i64, i64), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO vdb ({}, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'creating')", &VDB_COLS[4..]),
            params![v.name, v.plugin_id, v.repository_id, v.environment_id, v.user_id, v.parent_volume, v.parameters,
                    v.source_config.as_ref().map(|s| s.to_string()), v.volume, v.enabled, v.created_at],
        )
        .map_err(|e| {
            crate::taken(e, "VDB name", &v.name, || {
                tx.query_row("SELECT id FROM vdb WHERE name = ?1", [&v.name], |r| r.get::<_, i64>(0))
                    .ok()
                    .map(|id| format!("VDB-{id}"))
            })
        })?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO timeflow (vdb_id, parent_snapshot_id, created_at) VALUES (?1, ?2, ?3)",
            params![id, parent_snapshot, v.created_at],
        )?;
        let tf = tx.last_insert_rowid();
        tx.commit()?;
        Ok((id, tf))
    }

    pub fn get_vdb(&self, id: i64) -> Result<Option<VdbRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {VDB_COLS} FROM vdb WHERE id = ?1"),
                [id],
                row_vdb,
            )
            .optional()?)
    }

    pub fn find_vdb_by_name(&self, name: &str) -> Result<Option<VdbRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {VDB_COLS} FROM vdb WHERE name = ?1"),
                [name],
                row_vdb,
            )
            .optional()?)
    }

    pub fn list_vdbs(&self) -> Result<Vec<VdbRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {VDB_COLS} FROM vdb ORDER BY name"))?;
        let rows = stmt.query_map([], row_vdb)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_vdb_source_config(
        &self,
        id: i64,
        source_config: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE vdb SET source_config = ?2 WHERE id = ?1",
            params![id, source_config.to_string()],
        )?;
        Ok(())
    }

    pub fn delete_vdb(&self, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // A rewind's timeflow starts at one of the VDB's own snapshots.
        tx.execute(
            "UPDATE timeflow SET parent_snapshot_id = NULL WHERE vdb_id = ?1",
            [id],
        )?;
        tx.execute(
            "DELETE FROM bookmark WHERE volume = (SELECT volume FROM vdb WHERE id = ?1)",
            [id],
        )?;
        tx.execute("DELETE FROM vdb_lifecycle WHERE vdb_id = ?1", [id])?;
        tx.execute(
            "DELETE FROM snapshot WHERE timeflow_id IN (SELECT id FROM timeflow WHERE vdb_id = ?1)",
            [id],
        )?;
        let n = tx.execute("DELETE FROM vdb WHERE id = ?1", [id])?;
        crate::users::delete_grants_of(&tx, &format!("VDB-{id}"))?;
        crate::policies::forget_object(&tx, &format!("VDB-{id}"))?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Starts a new timeflow of a VDB (refresh, rewind) at a snapshot.
    pub fn new_vdb_timeflow(
        &self,
        vdb_id: i64,
        parent_snapshot: i64,
        created_at: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO timeflow (vdb_id, parent_snapshot_id, created_at) VALUES (?1, ?2, ?3)",
            params![vdb_id, parent_snapshot, created_at],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The current (newest) timeflow of a VDB.
    pub fn current_vdb_timeflow(&self, vdb_id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.conn().query_row(
            "SELECT MAX(id) FROM timeflow WHERE vdb_id = ?1",
            [vdb_id],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    pub fn get_snapshot(&self, id: i64) -> Result<Option<SnapshotRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT id, timeflow_id, volume, pool_snapshot, metadata, created_at FROM snapshot WHERE id = ?1", [id], row_snap)
            .optional()?)
    }

    /// Per VDB id: (timeflows, snapshots), in two queries for all VDBs.
    pub fn vdb_counts(&self) -> Result<std::collections::HashMap<i64, (usize, usize)>, StoreError> {
        let conn = self.conn();
        let mut counts: std::collections::HashMap<i64, (usize, usize)> =
            std::collections::HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT vdb_id, COUNT(*) FROM timeflow WHERE vdb_id IS NOT NULL GROUP BY vdb_id",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, n) = row?;
            counts.entry(id).or_default().0 = n as usize;
        }
        let mut stmt = conn.prepare("SELECT v.id, COUNT(s.id) FROM vdb v JOIN snapshot s ON s.volume = v.volume GROUP BY v.id")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, n) = row?;
            counts.entry(id).or_default().1 = n as usize;
        }
        Ok(counts)
    }

    /// Per VDB id: the snapshot its current timeflow starts at (none once
    /// that snapshot is deleted), in one query for all VDBs.
    pub fn vdb_parent_snapshots(&self) -> Result<std::collections::HashMap<i64, i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT t.vdb_id, t.parent_snapshot_id FROM timeflow t
             WHERE t.id = (SELECT MAX(id) FROM timeflow WHERE vdb_id = t.vdb_id)
               AND t.parent_snapshot_id IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Names of the VDBs whose current timeflow starts at this snapshot.
    pub fn vdbs_on_snapshot(&self, snapshot_id: i64) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT v.name FROM vdb v
             WHERE (SELECT parent_snapshot_id FROM timeflow WHERE vdb_id = v.id ORDER BY id DESC LIMIT 1) = ?1
             ORDER BY v.name",
        )?;
        let rows = stmt.query_map([snapshot_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a snapshot record; older timeflows that started at it lose
    /// that link (their own snapshots stay).
    pub fn delete_snapshot(&self, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE timeflow SET parent_snapshot_id = NULL WHERE parent_snapshot_id = ?1",
            [id],
        )?;
        tx.execute("DELETE FROM bookmark WHERE snapshot_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM snapshot WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Timeflows of a VDB, oldest first.
    pub fn vdb_timeflows(&self, vdb_id: i64) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id FROM timeflow WHERE vdb_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([vdb_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every dSource and VDB volume, for the pool's reconciliation.
    pub fn dataset_volumes(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT volume FROM dsource UNION ALL SELECT volume FROM vdb")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Objects still being created (their job did not finish).
impl Store {
    /// Marks a dSource or VDB (`table` is `dsource` or `vdb`) ready.
    pub fn mark_ready(&self, table: &str, id: i64) -> Result<(), StoreError> {
        let sql = match table {
            "dsource" => "UPDATE dsource SET state = 'ready' WHERE id = ?1",
            _ => "UPDATE vdb SET state = 'ready' WHERE id = ?1",
        };
        self.conn().execute(sql, [id])?;
        Ok(())
    }

    /// Records whether a dSource or VDB is enabled.
    pub fn set_enabled(&self, table: &str, id: i64, enabled: bool) -> Result<(), StoreError> {
        let sql = match table {
            "dsource" => "UPDATE dsource SET enabled = ?2 WHERE id = ?1",
            _ => "UPDATE vdb SET enabled = ?2 WHERE id = ?1",
        };
        self.conn().execute(sql, params![id, enabled])?;
        Ok(())
    }

    /// dSources whose link never finished.
    pub fn unfinished_dsources(&self) -> Result<Vec<DSourceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DS_COLS} FROM dsource WHERE state = 'creating'"
        ))?;
        let rows = stmt.query_map([], row_ds)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// VDBs whose provision never finished.
    pub fn unfinished_vdbs(&self) -> Result<Vec<VdbRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {VDB_COLS} FROM vdb WHERE state = 'creating'"
        ))?;
        let rows = stmt.query_map([], row_vdb)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Hooks.
impl Store {
    /// Sets (or replaces) the script of one hook point of an object.
    pub fn set_hook(&self, object: &str, point: &str, script: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO hook (object, point, script) VALUES (?1, ?2, ?3)
             ON CONFLICT (object, point) DO UPDATE SET script = excluded.script",
            params![object, point, script],
        )?;
        Ok(())
    }

    pub fn get_hook(&self, object: &str, point: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT script FROM hook WHERE object = ?1 AND point = ?2",
                params![object, point],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// (point, script) of an object, by point.
    pub fn list_hooks(&self, object: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT point, script FROM hook WHERE object = ?1 ORDER BY point")?;
        let rows = stmt.query_map([object], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes one hook, or all of an object's when `point` is None.
    pub fn delete_hooks(&self, object: &str, point: Option<&str>) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM hook WHERE object = ?1 AND (?2 IS NULL OR point = ?2)",
            params![object, point],
        )?)
    }
}
