//! Doppel's metadata store: one SQLite file in WAL mode with versioned
//! migrations. The only crate that speaks SQL.
//!
//! Architecture invariant: every state change is one transaction; no other
//! crate opens the database. SQL stays portable (no SQLite-only syntax beyond
//! the pragmas in [`Store::open`]) so PostgreSQL can follow.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

mod datasets;
mod environments;
mod jobs;
mod mounts;
mod policies;
mod retain;
pub use doppel_model::JobFilter;
pub use environments::{
    DiscoveredRepository, EnvironmentRecord, EnvironmentUserRecord, RepositoryRecord,
    SourceConfigRecord,
};
mod upgrades;
pub use policies::{BindingRecord, PolicyRecord, RunRecord};
pub use retain::{BookmarkRecord, LifecycleRecord};
mod users;
mod webhooks;
pub use datasets::{DSourceRecord, SnapshotRecord, VdbRecord};
pub use mounts::MountRecord;
pub use upgrades::{MigratedKind, MigratedObject};
pub use users::{GrantRecord, RoleChange, TokenRecord, UserDeletion, UserRecord};
pub use webhooks::{DeliveryRecord, WebhookRecord};

/// Schema versions, applied in order; a released entry is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: plugins
    "CREATE TABLE plugin (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        build_number TEXT NOT NULL,
        definition TEXT NOT NULL,
        code_dir TEXT NOT NULL,
        installed_at TEXT NOT NULL
    );",
    // 2: jobs and their events
    "CREATE TABLE job (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT,
        state TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        step TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        error TEXT,
        result TEXT
    );
    CREATE INDEX job_state ON job (state);
    CREATE TABLE job_event (
        job_id INTEGER NOT NULL REFERENCES job (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );",
    // 3: environments, their users, and what discovery found on them
    "CREATE TABLE environment (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        toolkit_path TEXT NOT NULL,
        scratch_path TEXT NOT NULL,
        host_key TEXT NOT NULL,
        host_key_fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE environment_user (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        environment_id INTEGER NOT NULL REFERENCES environment (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        auth TEXT NOT NULL,
        secret TEXT NOT NULL,
        is_primary INTEGER NOT NULL DEFAULT 0,
        UNIQUE (environment_id, name)
    );
    CREATE TABLE repository (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        environment_id INTEGER NOT NULL REFERENCES environment (id) ON DELETE CASCADE,
        plugin_id TEXT NOT NULL REFERENCES plugin (id) ON DELETE CASCADE,
        identity TEXT NOT NULL,
        name TEXT NOT NULL,
        parameters TEXT NOT NULL,
        UNIQUE (environment_id, plugin_id, identity)
    );
    CREATE TABLE source_config (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        repository_id INTEGER NOT NULL REFERENCES repository (id) ON DELETE CASCADE,
        identity TEXT NOT NULL,
        name TEXT NOT NULL,
        parameters TEXT NOT NULL,
        discovered INTEGER NOT NULL,
        UNIQUE (repository_id, identity)
    );",
    // 4: API users, their tokens, Delphix-compatible sessions and upload tokens
    "CREATE TABLE api_user (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_token (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES api_user (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used INTEGER NOT NULL DEFAULT 0
    );",
    // 5: engine storage mounted on environments
    "CREATE TABLE mount (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        environment_id INTEGER NOT NULL REFERENCES environment (id),
        user_id INTEGER NOT NULL REFERENCES environment_user (id),
        volume TEXT NOT NULL,
        subdirectory TEXT NOT NULL DEFAULT '',
        mount_path TEXT NOT NULL,
        kind TEXT NOT NULL,
        read_only INTEGER NOT NULL DEFAULT 0,
        uid INTEGER,
        gid INTEGER,
        created_at TEXT NOT NULL,
        UNIQUE (environment_id, mount_path)
    );",
    // 6: dSources, their timeflows and snapshots
    "CREATE TABLE dsource (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        plugin_id TEXT NOT NULL REFERENCES plugin (id),
        source_config_id INTEGER NOT NULL REFERENCES source_config (id),
        staging_environment_id INTEGER REFERENCES environment (id),
        staging_user_id INTEGER REFERENCES environment_user (id),
        parameters TEXT NOT NULL,
        volume TEXT NOT NULL UNIQUE,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE TABLE timeflow (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dsource_id INTEGER REFERENCES dsource (id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    );
    CREATE TABLE snapshot (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        timeflow_id INTEGER NOT NULL REFERENCES timeflow (id) ON DELETE CASCADE,
        volume TEXT NOT NULL,
        pool_snapshot TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at TEXT NOT NULL,
        UNIQUE (volume, pool_snapshot)
    );",
    // 7: VDBs; timeflows belong to a dSource or a VDB and may start at a snapshot
    "CREATE TABLE vdb (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        plugin_id TEXT NOT NULL REFERENCES plugin (id),
        repository_id INTEGER NOT NULL REFERENCES repository (id),
        environment_id INTEGER NOT NULL REFERENCES environment (id),
        user_id INTEGER NOT NULL REFERENCES environment_user (id),
        parent_volume TEXT NOT NULL,
        parameters TEXT NOT NULL,
        source_config TEXT,
        volume TEXT NOT NULL UNIQUE,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    ALTER TABLE timeflow ADD COLUMN vdb_id INTEGER REFERENCES vdb (id) ON DELETE CASCADE;
    ALTER TABLE timeflow ADD COLUMN parent_snapshot_id INTEGER REFERENCES snapshot (id);",
    // 8: user hooks of dSources and VDBs (object is DSOURCE-<n> or VDB-<n>)
    "CREATE TABLE hook (
        object TEXT NOT NULL,
        point TEXT NOT NULL,
        script TEXT NOT NULL,
        PRIMARY KEY (object, point)
    );",
    // 9: dSources and VDBs are `creating` until their link or provision job
    // ends, so a crash in between is found and undone at the next start.
    "ALTER TABLE dsource ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';
    ALTER TABLE vdb ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';",
    // 10: roles of API users, and rights of users on objects (an object is
    // named by its reference: UNIX_HOST_ENVIRONMENT-<n>, DSOURCE-<n>,
    // VDB-<n> or a plugin id). Users who were not administrators become
    // operators; objects made before have no owner, so only administrators
    // act on them until someone is granted a right.
    "ALTER TABLE api_user ADD COLUMN role TEXT NOT NULL DEFAULT 'operator';
    UPDATE api_user SET role = 'admin' WHERE is_admin = 1;
    CREATE TABLE object_grant (
        object TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES api_user (id) ON DELETE CASCADE,
        grant_right TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        PRIMARY KEY (object, user_id)
    );",
    // 11: policies, the objects they apply to (DSOURCE-<n>, VDB-<n>: a base
    // policy and an override each), the last slot the scheduler dealt with
    // per object and kind, and what it did with each slot.
    "CREATE TABLE policy (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE policy_binding (
        object TEXT NOT NULL,
        is_override INTEGER NOT NULL,
        policy_id INTEGER NOT NULL REFERENCES policy (id) ON DELETE CASCADE,
        applied_at TEXT NOT NULL,
        PRIMARY KEY (object, is_override)
    );
    CREATE TABLE schedule_slot (
        object TEXT NOT NULL,
        kind TEXT NOT NULL,
        last_slot TEXT NOT NULL,
        PRIMARY KEY (object, kind)
    );
    CREATE TABLE schedule_run (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        object TEXT NOT NULL,
        kind TEXT NOT NULL,
        policy TEXT,
        slot TEXT NOT NULL,
        outcome TEXT NOT NULL,
        job TEXT,
        reason TEXT,
        at TEXT NOT NULL
    );",
    // 12: bookmarks (a name on a snapshot, unique per dataset, optionally
    // until a time), and per VDB its deletion protection (optionally until
    // a time) and expiry.
    "CREATE TABLE bookmark (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        volume TEXT NOT NULL,
        snapshot_id INTEGER NOT NULL REFERENCES snapshot (id) ON DELETE CASCADE,
        expires_at TEXT,
        created_at TEXT NOT NULL,
        UNIQUE (volume, name)
    );
    CREATE TABLE vdb_lifecycle (
        vdb_id INTEGER PRIMARY KEY REFERENCES vdb (id) ON DELETE CASCADE,
        protected INTEGER NOT NULL DEFAULT 0,
        protected_until TEXT,
        expires_at TEXT
    );",
    // 13: webhooks (the secret sealed like host credentials; events a JSON
    // list, empty for all) and their last deliveries.
    "CREATE TABLE webhook (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        events TEXT NOT NULL,
        ca_cert TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE webhook_delivery (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        webhook_id INTEGER NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
        event TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        status INTEGER,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("metadata store {path}: cannot create it: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("metadata store is at schema version {found}, newer than this engine knows ({known}); upgrade the engine")]
    TooNew { found: i64, known: i64 },
    #[error("metadata store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("metadata store holds a corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// A name or path that must be unique is held by another record (one
    /// that appeared between a caller's check and its insert).
    #[error("{what} {value:?} is already used by {holder}")]
    Taken {
        what: &'static str,
        value: String,
        /// Who holds it, as users name it (`VDB-3`, `dataset vdb-...`).
        holder: String,
    },
    /// Records a multi-record change depends on changed while it was
    /// prepared; nothing was stored.
    #[error("{0}; nothing was changed, try again")]
    Changed(String),
}

/// Whether `e` is the violation of a UNIQUE constraint (or primary key).
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

/// Turns a unique violation of an insert into `Taken`, naming the holder
/// `find_holder` reports (asked only then); other errors pass.
pub(crate) fn taken(
    e: rusqlite::Error,
    what: &'static str,
    value: &str,
    find_holder: impl FnOnce() -> Option<String>,
) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Taken {
            what,
            value: value.to_owned(),
            holder: find_holder().unwrap_or_else(|| "another record".into()),
        }
    } else {
        StoreError::Sql(e)
    }
}

/// Inserts a plugin, or replaces the stored version of the same id, on a
/// connection or inside a transaction.
pub(crate) fn put_plugin_in(conn: &Connection, p: &PluginRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO plugin (id, name, build_number, definition, code_dir, installed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, build_number = excluded.build_number,
           definition = excluded.definition, code_dir = excluded.code_dir, installed_at = excluded.installed_at",
        params![p.id, p.name, p.build_number, p.definition.to_string(), p.code_dir, p.installed_at],
    )?;
    Ok(())
}

/// A stored plugin version.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRecord {
    pub id: String,
    pub name: String,
    pub build_number: String,
    /// artifact.json without `sourceCode`.
    pub definition: serde_json::Value,
    pub code_dir: String,
    pub installed_at: String,
}

pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        // SQLite makes its -wal and -shm files with the database file's
        // mode, so a database made 0600 keeps all three private.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::Create {
                    path: path.display().to_string(),
                    source: e,
                })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    /// An in-memory store, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let store = Store {
            conn: Mutex::new(Connection::open_in_memory()?),
        };
        store.migrate()?;
        Ok(store)
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = i + 1, "metadata store migrated");
        }
        Ok(())
    }

    /// Inserts a plugin, or replaces the stored version of the same id.
    pub fn put_plugin(&self, p: &PluginRecord) -> Result<(), StoreError> {
        put_plugin_in(&self.conn(), p)
    }

    pub fn get_plugin(&self, id: &str) -> Result<Option<PluginRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, name, build_number, definition, code_dir, installed_at FROM plugin WHERE id = ?1",
                [id],
                row_to_plugin,
            )
            .optional()?
            .transpose()
    }

    pub fn list_plugins(&self) -> Result<Vec<PluginRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, name, build_number, definition, code_dir, installed_at FROM plugin ORDER BY name, id")?;
        let rows = stmt.query_map([], row_to_plugin)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Deletes a plugin; returns whether it existed.
    pub fn delete_plugin(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM plugin WHERE id = ?1", [id])?;
        users::delete_grants_of(&tx, id)?;
        tx.commit()?;
        Ok(n > 0)
    }
}

fn row_to_plugin(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PluginRecord, StoreError>> {
    let definition: String = r.get(3)?;
    let id: String = r.get(0)?;
    Ok(match serde_json::from_str(&definition) {
        Ok(definition) => Ok(PluginRecord {
            id,
            name: r.get(1)?,
            build_number: r.get(2)?,
            definition,
            code_dir: r.get(4)?,
            installed_at: r.get(5)?,
        }),
        Err(e) => Err(StoreError::Corrupt {
            what: format!("plugin {id}"),
            detail: e.to_string(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(build: &str) -> PluginRecord {
        PluginRecord {
            id: "e477c622-434b-4224-aa27-54aee3bee187".into(),
            name: "p".into(),
            build_number: build.into(),
            definition: serde_json::json!({"name": "p"}),
            code_dir: "plugins/x".into(),
            installed_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn plugins_round_trip_and_replace() {
        let s = Store::open_in_memory().unwrap();
        s.put_plugin(&record("1.0")).unwrap();
        s.put_plugin(&record("1.1")).unwrap();
        let all = s.list_plugins().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].build_number, "1.1");
        assert_eq!(
            s.get_plugin(&all[0].id).unwrap().unwrap().definition["name"],
            "p"
        );
        assert!(s.delete_plugin(&all[0].id).unwrap());
        assert!(!s.delete_plugin(&all[0].id).unwrap());
        assert!(s.get_plugin(&all[0].id).unwrap().is_none());
    }

    #[test]
    fn reopening_a_file_keeps_data_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        Store::open(&path)
            .unwrap()
            .put_plugin(&record("2"))
            .unwrap();
        assert_eq!(Store::open(&path).unwrap().list_plugins().unwrap().len(), 1);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
