//! What keeps data: bookmarks on snapshots, and the deletion protection
//! and expiry of VDBs.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

/// A name on a snapshot, unique within its dataset (pool volume).
#[derive(Debug, Clone, PartialEq)]
pub struct BookmarkRecord {
    pub id: i64,
    pub name: String,
    /// The snapshot's dataset.
    pub volume: String,
    pub snapshot_id: i64,
    /// RFC 3339; after it the bookmark no longer pins its snapshot.
    pub expires_at: Option<String>,
    pub created_at: String,
}

/// A VDB's protection and expiry (no row: neither).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LifecycleRecord {
    pub vdb_id: i64,
    pub protected: bool,
    /// RFC 3339; None with `protected`: until unprotected.
    pub protected_until: Option<String>,
    /// RFC 3339: when the scheduler deletes the VDB.
    pub expires_at: Option<String>,
}

const BOOKMARK_COLS: &str = "id, name, volume, snapshot_id, expires_at, created_at";

fn row_bookmark(r: &rusqlite::Row<'_>) -> rusqlite::Result<BookmarkRecord> {
    Ok(BookmarkRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        volume: r.get(2)?,
        snapshot_id: r.get(3)?,
        expires_at: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn row_lifecycle(r: &rusqlite::Row<'_>) -> rusqlite::Result<LifecycleRecord> {
    Ok(LifecycleRecord {
        vdb_id: r.get(0)?,
        protected: r.get::<_, i64>(1)? != 0,
        protected_until: r.get(2)?,
        expires_at: r.get(3)?,
    })
}

impl Store {
    /// Records a bookmark; a name its dataset already has is `Taken`.
    pub fn insert_bookmark(&self, b: &BookmarkRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO bookmark (name, volume, snapshot_id, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![b.name, b.volume, b.snapshot_id, b.expires_at, b.created_at],
        )
        .map_err(|e| {
            crate::taken(e, "bookmark name", &b.name, || {
                conn.query_row(
                    "SELECT id FROM bookmark WHERE volume = ?1 AND name = ?2",
                    params![b.volume, b.name],
                    |r| r.get::<_, i64>(0),
                )
                .ok()
                .map(|id| format!("BOOKMARK-{id}"))
            })
        })?;
        Ok(conn.last_insert_rowid())
    }

    pub fn get_bookmark(&self, id: i64) -> Result<Option<BookmarkRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BOOKMARK_COLS} FROM bookmark WHERE id = ?1"),
                [id],
                row_bookmark,
            )
            .optional()?)
    }

    /// Bookmarks of one dataset (all when None), by dataset and name.
    pub fn list_bookmarks(&self, volume: Option<&str>) -> Result<Vec<BookmarkRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {BOOKMARK_COLS} FROM bookmark WHERE ?1 IS NULL OR volume = ?1 ORDER BY volume, name"
        ))?;
        let rows = stmt.query_map([volume], row_bookmark)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_bookmark(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM bookmark WHERE id = ?1", [id])?
            > 0)
    }

    /// A VDB's protection and expiry (default: neither).
    pub fn vdb_lifecycle(&self, vdb_id: i64) -> Result<LifecycleRecord, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT vdb_id, protected, protected_until, expires_at FROM vdb_lifecycle WHERE vdb_id = ?1",
                [vdb_id],
                row_lifecycle,
            )
            .optional()?
            .unwrap_or(LifecycleRecord {
                vdb_id,
                ..Default::default()
            }))
    }

    /// Every VDB that is protected or expires.
    pub fn list_lifecycles(&self) -> Result<Vec<LifecycleRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT vdb_id, protected, protected_until, expires_at FROM vdb_lifecycle ORDER BY vdb_id",
        )?;
        let rows = stmt.query_map([], row_lifecycle)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces a VDB's protection and expiry.
    pub fn set_vdb_lifecycle(&self, l: &LifecycleRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO vdb_lifecycle (vdb_id, protected, protected_until, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (vdb_id) DO UPDATE SET protected = excluded.protected,
               protected_until = excluded.protected_until, expires_at = excluded.expires_at",
            params![l.vdb_id, l.protected, l.protected_until, l.expires_at],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DSourceRecord, SnapshotRecord};

    #[test]
    fn bookmark_names_are_unique_per_dataset_and_go_with_their_snapshot() {
        let s = Store::open_in_memory().unwrap();
        s.put_plugin(&crate::PluginRecord {
            id: "p".into(),
            name: "p".into(),
            build_number: "1".into(),
            definition: serde_json::json!({}),
            code_dir: "c".into(),
            installed_at: "t".into(),
        })
        .unwrap();
        let sc = {
            let c = s.conn();
            c.execute_batch(
                "INSERT INTO environment (name, host, port, toolkit_path, scratch_path, host_key, host_key_fingerprint, created_at)
                   VALUES ('e', 'h', 22, '/t', '/s', 'k', 'f', 't');
                 INSERT INTO repository (environment_id, plugin_id, identity, name, parameters) VALUES (1, 'p', 'r', 'r', '{}');
                 INSERT INTO source_config (repository_id, identity, name, parameters, discovered) VALUES (1, 'sc', 'sc', '{}', 0);",
            )
            .unwrap();
            1
        };
        let (ds, tf) = s
            .insert_dsource(&DSourceRecord {
                id: 0,
                name: "tree".into(),
                plugin_id: "p".into(),
                source_config_id: sc,
                staging_environment_id: None,
                staging_user_id: None,
                parameters: "{}".into(),
                volume: "ds-1".into(),
                enabled: true,
                created_at: "t".into(),
            })
            .unwrap();
        let snap = |pool: &str| {
            s.insert_snapshot(&SnapshotRecord {
                id: 0,
                timeflow_id: tf,
                volume: "ds-1".into(),
                pool_snapshot: pool.into(),
                metadata: serde_json::json!({}),
                created_at: "t".into(),
            })
            .unwrap()
        };
        let (a, b) = (snap("a"), snap("b"));
        let mark = |name: &str, snapshot_id| BookmarkRecord {
            id: 0,
            name: name.into(),
            volume: "ds-1".into(),
            snapshot_id,
            expires_at: None,
            created_at: "t".into(),
        };
        let first = s.insert_bookmark(&mark("before", a)).unwrap();
        match s.insert_bookmark(&mark("before", b)) {
            Err(StoreError::Taken { holder, .. }) => {
                assert_eq!(holder, format!("BOOKMARK-{first}"))
            }
            other => panic!("{other:?}"),
        }
        s.insert_bookmark(&mark("after", b)).unwrap();
        assert!(s.delete_snapshot(a).unwrap());
        let left: Vec<String> = s
            .list_bookmarks(Some("ds-1"))
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(left, vec!["after".to_owned()]);
        assert!(s.delete_dsource(ds).unwrap());
        assert!(s.list_bookmarks(None).unwrap().is_empty());
    }
}
