//! Plugin upgrades of objects already made (contract §4, "Plugin upgrade"):
//! the new build's migrations run over every stored repository, source
//! config, linked source, virtual source and snapshot of the plugin, the
//! results are checked against the new build's schemas, and all of it is
//! stored with the new build in one transaction, or nothing is.

use std::collections::BTreeMap;

use doppel_model::{JobFilter, JobState};
use doppel_plugin_host::requests::UpgradeRequest;
use doppel_plugin_host::schema::ParameterSchema;
use doppel_plugin_host::Op;
use doppel_plugin_host::{BuildNumber, CallContext, LoadedPlugin};
use doppel_store::{MigratedKind, MigratedObject, PluginRecord};
use serde_json::Value;

use crate::plugins::ParameterDefinition;
use crate::{Engine, EngineError, SNAPSHOT_PREFIX};

// The references users see (the dSource and VDB modules keep their own).
const DSOURCE_PREFIX: &str = "DSOURCE-";
const VDB_PREFIX: &str = "VDB-";

/// How the plugin names one kind: its upgrade operation, the request's
/// `type`, and the schema its objects must satisfy afterwards.
fn upgrade_type(kind: MigratedKind) -> (Op, &'static str, ParameterDefinition) {
    match kind {
        MigratedKind::Repository => (
            Op::UpgradeRepository,
            "REPOSITORY",
            ParameterDefinition::Repository,
        ),
        MigratedKind::SourceConfig | MigratedKind::VdbSourceConfig => (
            Op::UpgradeSourceConfig,
            "SOURCECONFIG",
            ParameterDefinition::SourceConfig,
        ),
        MigratedKind::LinkedSource => (
            Op::UpgradeLinkedSource,
            "LINKEDSOURCE",
            ParameterDefinition::LinkedSource,
        ),
        MigratedKind::VirtualSource => (
            Op::UpgradeVirtualSource,
            "VIRTUALSOURCE",
            ParameterDefinition::VirtualSource,
        ),
        MigratedKind::Snapshot => (
            Op::UpgradeSnapshot,
            "SNAPSHOT",
            ParameterDefinition::Snapshot,
        ),
    }
}

/// How users name an object in an upgrade's messages (and the key of its
/// value in the plugin's request).
fn reference(kind: MigratedKind, id: i64) -> String {
    match kind {
        MigratedKind::Repository => format!("REPOSITORY-{id}"),
        MigratedKind::SourceConfig => format!("SOURCE_CONFIG-{id}"),
        MigratedKind::VdbSourceConfig => format!("{VDB_PREFIX}{id} source config"),
        MigratedKind::LinkedSource => format!("{DSOURCE_PREFIX}{id}"),
        MigratedKind::VirtualSource => format!("{VDB_PREFIX}{id}"),
        MigratedKind::Snapshot => format!("{SNAPSHOT_PREFIX}{id}"),
    }
}

/// The migration ids of `new` that `old` did not have, in numeric order
/// (the order the platform runs them in).
pub(crate) fn new_migrations(old: &[String], new: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = new.iter().filter(|m| !old.contains(m)).cloned().collect();
    ids.sort_by_key(|m| BuildNumber::parse(m).ok());
    ids
}

impl Engine {
    /// Refuses an upgrade while a job works on one of the plugin's dSources
    /// or VDBs: it would run the old code on objects the upgrade rewrites.
    pub(crate) fn refuse_upgrade_while_busy(&self, old: &PluginRecord) -> Result<(), EngineError> {
        let mine: Vec<String> = self
            .store
            .list_dsources()?
            .into_iter()
            .filter(|d| d.plugin_id == old.id)
            .map(|d| format!("{DSOURCE_PREFIX}{}", d.id))
            .chain(
                self.store
                    .list_vdbs()?
                    .into_iter()
                    .filter(|v| v.plugin_id == old.id)
                    .map(|v| format!("{VDB_PREFIX}{}", v.id)),
            )
            .collect();
        for state in [JobState::Running, JobState::Queued] {
            let jobs = self.jobs.list(&JobFilter {
                state: Some(state),
                ..Default::default()
            })?;
            if let Some(busy) = jobs
                .iter()
                .find(|j| j.target.as_ref().is_some_and(|t| mine.contains(t)))
            {
                return Err(EngineError::Conflict(format!(
                    "cannot upgrade plugin {}: job {} ({}) is {} on {}; wait for it to end",
                    old.name,
                    busy.id,
                    busy.kind,
                    if state == JobState::Running {
                        "running"
                    } else {
                        "queued"
                    },
                    busy.target.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    /// Runs the new build's migrations (`migration_ids`, in order) over
    /// every stored object of `old` in the new build's worker, and checks
    /// each result against the new build's `definition`. Returns the
    /// objects to store (sealed where the store keeps them sealed); an
    /// object the plugin did not change is left out.
    pub(crate) async fn migrate_objects(
        &self,
        old: &PluginRecord,
        new: &LoadedPlugin,
        definition: &Value,
        migration_ids: &[String],
    ) -> Result<Vec<MigratedObject>, EngineError> {
        let stored = self.store.plugin_objects(&old.id)?;
        let sealed =
            |k: MigratedKind| matches!(k, MigratedKind::LinkedSource | MigratedKind::VirtualSource);
        let mut out = Vec::new();
        for kind in MigratedKind::ALL {
            let (op, ty, which) = upgrade_type(kind);
            let op_name = op.name();
            let mut before = BTreeMap::new();
            for o in stored.iter().filter(|o| o.kind == kind) {
                let text = if sealed(kind) {
                    self.hosts.secrets.open_sealed(&o.value)?
                } else {
                    o.value.clone()
                };
                before.insert(reference(kind, o.id), (o.id, text));
            }
            if before.is_empty() {
                continue;
            }
            let after: BTreeMap<String, String> = if migration_ids.is_empty() {
                before
                    .iter()
                    .map(|(r, (_, t))| (r.clone(), t.clone()))
                    .collect()
            } else {
                let texts: BTreeMap<String, String> = before
                    .iter()
                    .map(|(r, (_, t))| (r.clone(), t.clone()))
                    .collect();
                let request = UpgradeRequest {
                    object_type: ty,
                    pre_upgrade_parameters: &texts,
                    migration_ids,
                }
                .message();
                let ctx = CallContext {
                    upgrading: true,
                    ..Default::default()
                };
                let result = self
                    .host
                    .invoke(new, op.spec(), request, &ctx, None)
                    .await?;
                UpgradeRequest::post_upgrade_parameters(&result).map_err(|e| {
                    EngineError::InvalidInput {
                        field: format!("{op_name} result"),
                        reason: format!("post_upgrade_parameters is not a map of JSON texts: {e}"),
                    }
                })?
            };
            let schema_value = definition
                .pointer(which.pointer())
                .cloned()
                .unwrap_or(Value::Null);
            let schema = ParameterSchema::new(&schema_value)
                .map_err(|e| EngineError::Internal(format!("{} schema: {e}", which.name())))?;
            for (r, (id, text)) in &before {
                let migrated = after.get(r).ok_or_else(|| EngineError::InvalidInput {
                    field: format!("{op_name} result"),
                    reason: format!("the migrations returned nothing for {r}"),
                })?;
                let value: Value =
                    serde_json::from_str(migrated).map_err(|e| EngineError::InvalidInput {
                        field: format!("{op_name} result"),
                        reason: format!("{r} is not JSON after the migrations: {e}"),
                    })?;
                schema
                    .validate(&value)
                    .map_err(|errs| EngineError::InvalidParameters {
                        what: format!(
                            "{r} after the upgrade to build {} ({} schema)",
                            new.build_number,
                            which.name()
                        ),
                        violations: errs.violations().iter().map(|v| v.to_string()).collect(),
                    })?;
                let old_value: Option<Value> = serde_json::from_str(text).ok();
                if old_value.as_ref() == Some(&value) {
                    continue;
                }
                let text = value.to_string();
                out.push(MigratedObject {
                    kind,
                    id: *id,
                    value: if sealed(kind) {
                        self.hosts.secrets.seal(&text)
                    } else {
                        text
                    },
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_migrations_run_in_numeric_order() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            new_migrations(&s(&["1.2"]), &s(&["1.10", "1.2", "1.9", "2021.1.1"])),
            s(&["1.9", "1.10", "2021.1.1"])
        );
        assert!(new_migrations(&s(&["1.2"]), &s(&["1.2"])).is_empty());
    }
}
