//! The stored objects a plugin upgrade migrates (contract §4, "Plugin
//! upgrade"): every repository, source config, linked source, virtual
//! source and snapshot of one plugin, read together and written back
//! together with the new plugin version, so an upgrade is all or nothing.

use rusqlite::params;

use crate::{PluginRecord, Store, StoreError};

/// Which stored value a migrated object is. The plugin sees five upgrade
/// types; a VDB's source config is one more place of the source-config type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigratedKind {
    Repository,
    SourceConfig,
    /// What `virtual.configure` returned for a VDB.
    VdbSourceConfig,
    LinkedSource,
    VirtualSource,
    Snapshot,
}

/// One stored value of a plugin, as the JSON text the store holds (sealed by
/// the engine for linked and virtual sources, whose parameters may hold
/// secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct MigratedObject {
    pub kind: MigratedKind,
    /// The row id in the kind's table.
    pub id: i64,
    pub value: String,
}

impl MigratedKind {
    /// (SELECT of (id, value) rows of one plugin, UPDATE of one row's value).
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            MigratedKind::Repository => (
                "SELECT id, parameters FROM repository WHERE plugin_id = ?1 ORDER BY id",
                "UPDATE repository SET parameters = ?2 WHERE id = ?1",
            ),
            MigratedKind::SourceConfig => (
                "SELECT id, parameters FROM source_config
                 WHERE repository_id IN (SELECT id FROM repository WHERE plugin_id = ?1) ORDER BY id",
                "UPDATE source_config SET parameters = ?2 WHERE id = ?1",
            ),
            MigratedKind::VdbSourceConfig => (
                "SELECT id, source_config FROM vdb
                 WHERE plugin_id = ?1 AND source_config IS NOT NULL ORDER BY id",
                "UPDATE vdb SET source_config = ?2 WHERE id = ?1",
            ),
            MigratedKind::LinkedSource => (
                "SELECT id, parameters FROM dsource WHERE plugin_id = ?1 ORDER BY id",
                "UPDATE dsource SET parameters = ?2 WHERE id = ?1",
            ),
            MigratedKind::VirtualSource => (
                "SELECT id, parameters FROM vdb WHERE plugin_id = ?1 ORDER BY id",
                "UPDATE vdb SET parameters = ?2 WHERE id = ?1",
            ),
            MigratedKind::Snapshot => (
                "SELECT s.id, s.metadata FROM snapshot s JOIN timeflow t ON t.id = s.timeflow_id
                 WHERE t.dsource_id IN (SELECT id FROM dsource WHERE plugin_id = ?1)
                    OR t.vdb_id IN (SELECT id FROM vdb WHERE plugin_id = ?1)
                 ORDER BY s.id",
                "UPDATE snapshot SET metadata = ?2 WHERE id = ?1",
            ),
        }
    }

    pub const ALL: [MigratedKind; 6] = [
        MigratedKind::Repository,
        MigratedKind::SourceConfig,
        MigratedKind::VdbSourceConfig,
        MigratedKind::LinkedSource,
        MigratedKind::VirtualSource,
        MigratedKind::Snapshot,
    ];
}

impl Store {
    /// Every stored value of `plugin_id` an upgrade migrates, kind by kind.
    pub fn plugin_objects(&self, plugin_id: &str) -> Result<Vec<MigratedObject>, StoreError> {
        let conn = self.conn();
        let mut out = Vec::new();
        for kind in MigratedKind::ALL {
            let mut stmt = conn.prepare(kind.sql().0)?;
            let rows = stmt.query_map([plugin_id], |r| {
                Ok(MigratedObject {
                    kind,
                    id: r.get(0)?,
                    value: r.get(1)?,
                })
            })?;
            for row in rows {
                out.push(row?);
            }
        }
        Ok(out)
    }

    /// Stores a new version of a plugin and its migrated objects in one
    /// transaction.
    pub fn upgrade_plugin(
        &self,
        plugin: &PluginRecord,
        migrated: &[MigratedObject],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        crate::put_plugin_in(&tx, plugin)?;
        for m in migrated {
            let changed = tx.execute(m.kind.sql().1, params![m.id, m.value])?;
            if changed != 1 {
                // The object went away while the upgrade ran: storing the
                // rest would mix versions.
                return Err(StoreError::Changed(format!(
                    "{:?} {} was deleted while the plugin upgrade ran",
                    m.kind, m.id
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_of_other_plugins_are_left_alone_and_a_vanished_one_stores_nothing() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.conn();
        conn.execute_batch(
            "INSERT INTO plugin VALUES ('p', 'p', '1', '{}', 'c', 'now'), ('q', 'q', '1', '{}', 'c', 'now');
             INSERT INTO environment (id, name, host, port, toolkit_path, scratch_path, host_key, host_key_fingerprint, created_at)
               VALUES (1, 'e', 'h', 22, '/t', '/s', 'k', 'f', 'now');
             INSERT INTO repository VALUES (1, 1, 'p', 'a', 'a', '{\"v\":1}'), (2, 1, 'q', 'b', 'b', '{\"v\":2}');
             INSERT INTO source_config VALUES (1, 1, 'sc', 'sc', '{\"s\":1}', 0);",
        )
        .unwrap();
        drop(conn);
        let objects = store.plugin_objects("p").unwrap();
        assert_eq!(
            objects,
            vec![
                MigratedObject {
                    kind: MigratedKind::Repository,
                    id: 1,
                    value: "{\"v\":1}".into()
                },
                MigratedObject {
                    kind: MigratedKind::SourceConfig,
                    id: 1,
                    value: "{\"s\":1}".into()
                },
            ]
        );
        let plugin = PluginRecord {
            id: "p".into(),
            name: "p".into(),
            build_number: "2".into(),
            definition: serde_json::json!({}),
            code_dir: "c2".into(),
            installed_at: "later".into(),
        };
        let mut migrated = objects.clone();
        migrated[0].value = "{\"v\":10}".into();
        migrated.push(MigratedObject {
            kind: MigratedKind::LinkedSource,
            id: 99,
            value: "x".into(),
        });
        assert!(store.upgrade_plugin(&plugin, &migrated).is_err());
        assert_eq!(store.get_plugin("p").unwrap().unwrap().build_number, "1");
        assert_eq!(store.plugin_objects("p").unwrap(), objects);

        migrated.pop();
        store.upgrade_plugin(&plugin, &migrated).unwrap();
        assert_eq!(store.get_plugin("p").unwrap().unwrap().build_number, "2");
        assert_eq!(store.plugin_objects("p").unwrap()[0].value, "{\"v\":10}");
        assert_eq!(store.plugin_objects("q").unwrap()[0].value, "{\"v\":2}");
    }
}
