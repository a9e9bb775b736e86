//! Environments, their users, and the repositories and source configs
//! discovered on them (or added by hand).
//!
//! Secrets arrive here already encrypted by the engine; this module stores
//! opaque text.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentRecord {
    pub id: i64,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub toolkit_path: String,
    pub scratch_path: String,
    /// The pinned host key, one OpenSSH `known_hosts`-style line.
    pub host_key: String,
    pub host_key_fingerprint: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentUserRecord {
    pub id: i64,
    pub environment_id: i64,
    pub name: String,
    /// `password` or `key`.
    pub auth: String,
    /// Encrypted by the engine.
    pub secret: String,
    pub is_primary: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RepositoryRecord {
    pub id: i64,
    pub environment_id: i64,
    pub plugin_id: String,
    pub identity: String,
    pub name: String,
    pub parameters: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfigRecord {
    pub id: i64,
    pub repository_id: i64,
    pub identity: String,
    pub name: String,
    pub parameters: serde_json::Value,
    pub discovered: bool,
}

/// One repository and its source configs as discovery found them.
#[derive(Debug, Clone)]
pub struct DiscoveredRepository {
    pub plugin_id: String,
    pub identity: String,
    pub name: String,
    pub parameters: serde_json::Value,
    /// (identity, name, parameters)
    pub source_configs: Vec<(String, String, serde_json::Value)>,
}

fn json_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

const ENV_COLS: &str =
    "id, name, host, port, toolkit_path, scratch_path, host_key, host_key_fingerprint, created_at";

fn row_env(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnvironmentRecord> {
    Ok(EnvironmentRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        host: r.get(2)?,
        port: r.get::<_, i64>(3)? as u16,
        toolkit_path: r.get(4)?,
        scratch_path: r.get(5)?,
        host_key: r.get(6)?,
        host_key_fingerprint: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn row_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnvironmentUserRecord> {
    Ok(EnvironmentUserRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        name: r.get(2)?,
        auth: r.get(3)?,
        secret: r.get(4)?,
        is_primary: r.get::<_, i64>(5)? != 0,
    })
}

fn row_repo(r: &rusqlite::Row<'_>) -> rusqlite::Result<RepositoryRecord> {
    Ok(RepositoryRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        plugin_id: r.get(2)?,
        identity: r.get(3)?,
        name: r.get(4)?,
        parameters: json_col(r, 5)?,
    })
}

fn row_sc(r: &rusqlite::Row<'_>) -> rusqlite::Result<SourceConfigRecord> {
    Ok(SourceConfigRecord {
        id: r.get(0)?,
        repository_id: r.get(1)?,
        identity: r.get(2)?,
        name: r.get(3)?,
        parameters: json_col(r, 4)?,
        discovered: r.get::<_, i64>(5)? != 0,
    })
}

impl Store {
    /// Stores a new environment with its primary user, and what discovery
    /// found, in one transaction. Returns the environment's id.
    pub fn insert_environment(
        &self,
        env: &EnvironmentRecord,
        primary_user: &EnvironmentUserRecord,
        discovered: &[DiscoveredRepository],
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO environment (name, host, port, toolkit_path, scratch_path, host_key, host_key_fingerprint, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![env.name, env.host, env.port, env.toolkit_path, env.scratch_path, env.host_key, env.host_key_fingerprint, env.created_at],
        )
        .map_err(|e| {
            crate::taken(e, "environment name", &env.name, || {
                tx.query_row("SELECT id FROM environment WHERE name = ?1", [&env.name], |r| r.get::<_, i64>(0))
                    .ok()
                    .map(|id| format!("UNIX_HOST_ENVIRONMENT-{id}"))
            })
        })?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO environment_user (environment_id, name, auth, secret, is_primary) VALUES (?1, ?2, ?3, ?4, 1)",
            params![id, primary_user.name, primary_user.auth, primary_user.secret],
        )?;
        merge_discovery(&tx, id, discovered)?;
        tx.commit()?;
        Ok(id)
    }

    pub fn get_environment(&self, id: i64) -> Result<Option<EnvironmentRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {ENV_COLS} FROM environment WHERE id = ?1"),
                [id],
                row_env,
            )
            .optional()?)
    }

    pub fn find_environment_by_name(
        &self,
        name: &str,
    ) -> Result<Option<EnvironmentRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {ENV_COLS} FROM environment WHERE name = ?1"),
                [name],
                row_env,
            )
            .optional()?)
    }

    pub fn list_environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {ENV_COLS} FROM environment ORDER BY name"))?;
        let rows = stmt.query_map([], row_env)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes an environment with its users, repositories and source configs.
    pub fn delete_environment(&self, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM environment WHERE id = ?1", [id])?;
        crate::users::delete_grants_of(&tx, &format!("UNIX_HOST_ENVIRONMENT-{id}"))?;
        tx.commit()?;
        Ok(n > 0)
    }

    pub fn environment_users(
        &self,
        environment_id: i64,
    ) -> Result<Vec<EnvironmentUserRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, environment_id, name, auth, secret, is_primary FROM environment_user
             WHERE environment_id = ?1 ORDER BY is_primary DESC, name",
        )?;
        let rows = stmt.query_map([environment_id], row_user)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_environment_user(
        &self,
        id: i64,
    ) -> Result<Option<EnvironmentUserRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, environment_id, name, auth, secret, is_primary FROM environment_user WHERE id = ?1",
                [id],
                row_user,
            )
            .optional()?)
    }

    pub fn insert_environment_user(&self, user: &EnvironmentUserRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO environment_user (environment_id, name, auth, secret, is_primary) VALUES (?1, ?2, ?3, ?4, 0)",
            params![user.environment_id, user.name, user.auth, user.secret],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn delete_environment_user(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM environment_user WHERE id = ?1 AND is_primary = 0",
            [id],
        )? > 0)
    }

    /// Applies a fresh discovery of one environment in one transaction (see
    /// [`merge_discovery`]).
    pub fn apply_discovery(
        &self,
        environment_id: i64,
        discovered: &[DiscoveredRepository],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        merge_discovery(&tx, environment_id, discovered)?;
        tx.commit()?;
        Ok(())
    }

    pub fn list_repositories(
        &self,
        environment_id: Option<i64>,
    ) -> Result<Vec<RepositoryRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, environment_id, plugin_id, identity, name, parameters FROM repository
             WHERE ?1 IS NULL OR environment_id = ?1 ORDER BY environment_id, name",
        )?;
        let rows = stmt.query_map([environment_id], row_repo)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many repositories and source configs belong to a plugin.
    pub fn plugin_object_counts(&self, plugin_id: &str) -> Result<(i64, i64), StoreError> {
        let conn = self.conn();
        let repos = conn.query_row(
            "SELECT COUNT(*) FROM repository WHERE plugin_id = ?1",
            [plugin_id],
            |r| r.get(0),
        )?;
        let configs = conn.query_row(
            "SELECT COUNT(*) FROM source_config WHERE repository_id IN (SELECT id FROM repository WHERE plugin_id = ?1)",
            [plugin_id],
            |r| r.get(0),
        )?;
        Ok((repos, configs))
    }

    pub fn get_repository(&self, id: i64) -> Result<Option<RepositoryRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, environment_id, plugin_id, identity, name, parameters FROM repository WHERE id = ?1",
                [id],
                row_repo,
            )
            .optional()?)
    }

    pub fn list_source_configs(
        &self,
        repository_id: Option<i64>,
    ) -> Result<Vec<SourceConfigRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, repository_id, identity, name, parameters, discovered FROM source_config
             WHERE ?1 IS NULL OR repository_id = ?1 ORDER BY repository_id, name",
        )?;
        let rows = stmt.query_map([repository_id], row_sc)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn get_source_config(&self, id: i64) -> Result<Option<SourceConfigRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, repository_id, identity, name, parameters, discovered FROM source_config WHERE id = ?1",
                [id],
                row_sc,
            )
            .optional()?)
    }

    /// Adds a source config by hand; refused (unique constraint) when the
    /// repository already has one with the same identity.
    pub fn insert_source_config(&self, sc: &SourceConfigRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO source_config (repository_id, identity, name, parameters, discovered) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![sc.repository_id, sc.identity, sc.name, sc.parameters.to_string(), sc.discovered],
        )?;
        Ok(conn.last_insert_rowid())
    }

    pub fn update_source_config(&self, sc: &SourceConfigRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE source_config SET identity = ?2, name = ?3, parameters = ?4 WHERE id = ?1",
            params![sc.id, sc.identity, sc.name, sc.parameters.to_string()],
        )?;
        Ok(())
    }

    pub fn delete_source_config(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM source_config WHERE id = ?1", [id])?
            > 0)
    }
}

/// Matches discovered records to stored ones by identity: new ones are
/// added, known ones updated, discovered ones that vanished removed. Source
/// configs added by hand are kept. Repositories of plugins not in
/// `discovered` are left alone only if the plugin was not asked (callers
/// pass every plugin they ran discovery for).
fn merge_discovery(
    tx: &Transaction<'_>,
    environment_id: i64,
    discovered: &[DiscoveredRepository],
) -> Result<(), StoreError> {
    let plugins: std::collections::BTreeSet<&str> =
        discovered.iter().map(|d| d.plugin_id.as_str()).collect();
    let mut kept_repos = Vec::new();
    for d in discovered {
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM repository WHERE environment_id = ?1 AND plugin_id = ?2 AND identity = ?3",
                params![environment_id, d.plugin_id, d.identity],
                |r| r.get(0),
            )
            .optional()?;
        let repo_id = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE repository SET name = ?2, parameters = ?3 WHERE id = ?1",
                    params![id, d.name, d.parameters.to_string()],
                )?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO repository (environment_id, plugin_id, identity, name, parameters) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![environment_id, d.plugin_id, d.identity, d.name, d.parameters.to_string()],
                )?;
                tx.last_insert_rowid()
            }
        };
        kept_repos.push(repo_id);
        let mut kept_configs = Vec::new();
        for (identity, name, parameters) in &d.source_configs {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM source_config WHERE repository_id = ?1 AND identity = ?2",
                    params![repo_id, identity],
                    |r| r.get(0),
                )
                .optional()?;
            let id = match existing {
                Some(id) => {
                    tx.execute(
                        "UPDATE source_config SET name = ?2, parameters = ?3 WHERE id = ?1",
                        params![id, name, parameters.to_string()],
                    )?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO source_config (repository_id, identity, name, parameters, discovered) VALUES (?1, ?2, ?3, ?4, 1)",
                        params![repo_id, identity, name, parameters.to_string()],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            kept_configs.push(id);
        }
        // Vanished discovered configs go; hand-added ones stay.
        let mut stmt =
            tx.prepare("SELECT id FROM source_config WHERE repository_id = ?1 AND discovered = 1")?;
        let ids: Vec<i64> = stmt
            .query_map([repo_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids.into_iter().filter(|id| !kept_configs.contains(id)) {
            tx.execute("DELETE FROM source_config WHERE id = ?1", [id])?;
        }
    }
    // Vanished repositories of the plugins asked go, unless a hand-added source config needs them.
    let mut stmt = tx.prepare("SELECT id, plugin_id FROM repository WHERE environment_id = ?1")?;
    let repos: Vec<(i64, String)> = stmt
        .query_map([environment_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, plugin) in repos {
        if kept_repos.contains(&id) || !plugins.contains(plugin.as_str()) {
            continue;
        }
        let manual: i64 = tx.query_row(
            "SELECT COUNT(*) FROM source_config WHERE repository_id = ?1 AND discovered = 0",
            [id],
            |r| r.get(0),
        )?;
        if manual == 0 {
            tx.execute("DELETE FROM repository WHERE id = ?1", [id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvironmentRecord {
        EnvironmentRecord {
            id: 0,
            name: "src".into(),
            host: "127.0.0.2".into(),
            port: 22,
            toolkit_path: "/tk".into(),
            scratch_path: "/sc".into(),
            host_key: "ssh-ed25519 AAAA".into(),
            host_key_fingerprint: "SHA256:x".into(),
            created_at: "t".into(),
        }
    }

    fn user() -> EnvironmentUserRecord {
        EnvironmentUserRecord {
            id: 0,
            environment_id: 0,
            name: "delphix".into(),
            auth: "password".into(),
            secret: "enc".into(),
            is_primary: true,
        }
    }

    fn repo(identity: &str, configs: &[&str]) -> DiscoveredRepository {
        DiscoveredRepository {
            plugin_id: "p1".into(),
            identity: identity.into(),
            name: identity.into(),
            parameters: serde_json::json!({"name": identity}),
            source_configs: configs
                .iter()
                .map(|c| (c.to_string(), c.to_string(), serde_json::json!({"name": c})))
                .collect(),
        }
    }

    fn store_with_plugin() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.put_plugin(&crate::PluginRecord {
            id: "p1".into(),
            name: "p".into(),
            build_number: "1".into(),
            definition: serde_json::json!({}),
            code_dir: "x".into(),
            installed_at: "t".into(),
        })
        .unwrap();
        s
    }

    #[test]
    fn discovery_merges_by_identity_and_keeps_hand_added_configs() {
        let s = store_with_plugin();
        let id = s
            .insert_environment(
                &env(),
                &user(),
                &[repo("r1", &["a", "b"]), repo("r2", &["c"])],
            )
            .unwrap();
        let r1 = s
            .list_repositories(Some(id))
            .unwrap()
            .into_iter()
            .find(|r| r.identity == "r1")
            .unwrap();
        let a_before = s
            .list_source_configs(Some(r1.id))
            .unwrap()
            .into_iter()
            .find(|c| c.identity == "a")
            .unwrap();
        s.insert_source_config(&SourceConfigRecord {
            id: 0,
            repository_id: r1.id,
            identity: "manual".into(),
            name: "manual".into(),
            parameters: serde_json::json!({}),
            discovered: false,
        })
        .unwrap();
        // r2 vanished; in r1, b vanished and d appeared.
        s.apply_discovery(id, &[repo("r1", &["a", "d"])]).unwrap();
        let repos = s.list_repositories(Some(id)).unwrap();
        assert_eq!(
            repos
                .iter()
                .map(|r| r.identity.as_str())
                .collect::<Vec<_>>(),
            vec!["r1"]
        );
        assert_eq!(repos[0].id, r1.id, "a matched repository keeps its id");
        let configs = s.list_source_configs(Some(r1.id)).unwrap();
        let mut idents: Vec<&str> = configs.iter().map(|c| c.identity.as_str()).collect();
        idents.sort();
        assert_eq!(idents, vec!["a", "d", "manual"]);
        assert_eq!(
            configs.iter().find(|c| c.identity == "a").unwrap().id,
            a_before.id
        );
        // A duplicate identity is refused by the store.
        assert!(s
            .insert_source_config(&SourceConfigRecord {
                id: 0,
                repository_id: r1.id,
                identity: "manual".into(),
                name: "again".into(),
                parameters: serde_json::json!({}),
                discovered: false
            })
            .is_err());
        assert!(s.delete_environment(id).unwrap());
        assert!(s.list_repositories(None).unwrap().is_empty(), "cascade");
        assert!(s.list_source_configs(None).unwrap().is_empty(), "cascade");
    }

    #[test]
    fn the_primary_user_cannot_be_deleted_alone() {
        let s = store_with_plugin();
        let id = s.insert_environment(&env(), &user(), &[]).unwrap();
        let users = s.environment_users(id).unwrap();
        assert!(users[0].is_primary);
        assert!(!s.delete_environment_user(users[0].id).unwrap());
        let extra = s
            .insert_environment_user(&EnvironmentUserRecord {
                environment_id: id,
                is_primary: false,
                name: "alice".into(),
                ..user()
            })
            .unwrap();
        assert!(s.delete_environment_user(extra).unwrap());
        assert!(
            s.insert_environment(&env(), &user(), &[]).is_err(),
            "names are unique"
        );
    }
}
