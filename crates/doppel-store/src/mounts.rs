//! Engine storage mounted on environments: recorded so that unmounting is
//! exact and every mount can be re-established when the engine restarts.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct MountRecord {
    pub id: i64,
    pub environment_id: i64,
    pub user_id: i64,
    /// Pool volume id.
    pub volume: String,
    /// Part of the volume that is mounted ("" for all of it).
    pub subdirectory: String,
    pub mount_path: String,
    /// `sshfs` or `bind`.
    pub kind: String,
    pub read_only: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub created_at: String,
}

const COLS: &str = "id, environment_id, user_id, volume, subdirectory, mount_path, kind, read_only, uid, gid, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MountRecord> {
    Ok(MountRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        user_id: r.get(2)?,
        volume: r.get(3)?,
        subdirectory: r.get(4)?,
        mount_path: r.get(5)?,
        kind: r.get(6)?,
        read_only: r.get::<_, i64>(7)? != 0,
        uid: r.get::<_, Option<i64>>(8)?.map(|v| v as u32),
        gid: r.get::<_, Option<i64>>(9)?.map(|v| v as u32),
        created_at: r.get(10)?,
    })
}

impl Store {
    /// Records a mount; refused when that path on that environment is taken.
    pub fn insert_mount(&self, m: &MountRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO mount (environment_id, user_id, volume, subdirectory, mount_path, kind, read_only, uid, gid, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![m.environment_id, m.user_id, m.volume, m.subdirectory, m.mount_path, m.kind, m.read_only, m.uid, m.gid, m.created_at],
        )
        .map_err(|e| {
            crate::taken(e, "mount path", &m.mount_path, || {
                conn.query_row(
                    "SELECT id, volume FROM mount WHERE environment_id = ?1 AND mount_path = ?2",
                    rusqlite::params![m.environment_id, m.mount_path],
                    |r| Ok(format!("mount {} of dataset {}", r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .ok()
            })
        })?;
        Ok(conn.last_insert_rowid())
    }

    pub fn get_mount(&self, id: i64) -> Result<Option<MountRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLS} FROM mount WHERE id = ?1"),
                [id],
                row,
            )
            .optional()?)
    }

    pub fn find_mount(
        &self,
        environment_id: i64,
        mount_path: &str,
    ) -> Result<Option<MountRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {COLS} FROM mount WHERE environment_id = ?1 AND mount_path = ?2"),
                params![environment_id, mount_path],
                row,
            )
            .optional()?)
    }

    pub fn list_mounts(&self, environment_id: Option<i64>) -> Result<Vec<MountRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLS} FROM mount WHERE ?1 IS NULL OR environment_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([environment_id], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_mount(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM mount WHERE id = ?1", [id])?
            > 0)
    }

    /// How many mounts use an environment (it cannot be deleted meanwhile).
    pub fn count_mounts(&self, environment_id: i64) -> Result<i64, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM mount WHERE environment_id = ?1",
            [environment_id],
            |r| r.get(0),
        )?)
    }
}
