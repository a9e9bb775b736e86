//! User hooks: shell scripts attached to a dSource or VDB at fixed points of
//! its operations, run with bash on the object's environment as its user
//! (a dSource's staging host, or its source host when direct; a VDB's
//! target host). A failing Pre hook stops its operation before anything
//! changes; Post-Sync and Post-Snapshot run even when the operation failed.

use std::collections::BTreeMap;

use doppel_model::EventLevel;
use doppel_store::{EnvironmentRecord, EnvironmentUserRecord};

use crate::jobs::JobHandle;
use crate::{Engine, EngineError};

/// The hook points of the contract, by their API names.
pub const POINTS: &[&str] = &[
    "pre-sync",
    "post-sync",
    "configure-clone",
    "pre-refresh",
    "post-refresh",
    "pre-rollback",
    "post-rollback",
    "pre-snapshot",
    "post-snapshot",
    "pre-start",
    "post-start",
    "pre-stop",
    "post-stop",
];

/// The points only a dSource's operations reach (sync); all others belong
/// to VDBs.
const DSOURCE_POINTS: &[&str] = &["pre-sync", "post-sync"];

/// Whose hooks are being set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookOwner {
    DSource,
    Vdb,
}

/// Output of a hook kept in the job's events.
const OUTPUT_IN_EVENTS: usize = 4096;

fn check_point(point: &str) -> Result<(), EngineError> {
    if POINTS.contains(&point) {
        Ok(())
    } else {
        Err(EngineError::InvalidInput {
            field: "hook".into(),
            reason: format!(
                "{point:?} is not a hook point; use one of {}",
                POINTS.join(", ")
            ),
        })
    }
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(OUTPUT_IN_EVENTS);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

impl Engine {
    /// `DSOURCE-<n>` or `VDB-<n>` of a dSource or VDB named by the user.
    pub(crate) fn hook_object(&self, reference: &str) -> Result<String, EngineError> {
        if let Ok(v) = self.get_vdb(reference) {
            return Ok(v.reference);
        }
        Ok(self.get_dsource(reference)?.reference)
    }

    /// Sets the hooks given by point name (an empty script removes one).
    pub(crate) fn store_hooks(
        &self,
        object: &str,
        hooks: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        for (point, script) in hooks {
            check_point(point)?;
            if script.trim().is_empty() {
                self.store.delete_hooks(object, Some(point))?;
            } else {
                self.store.set_hook(object, point, script)?;
            }
        }
        Ok(())
    }

    /// Checks every hook before anything is created: a known point, one the
    /// owner's operations reach (a hook that never runs is a mistake to
    /// report, not to keep), and a script within the size limit.
    pub(crate) fn check_hooks(
        hooks: &BTreeMap<String, String>,
        owner: HookOwner,
    ) -> Result<(), EngineError> {
        for (point, script) in hooks {
            check_point(point)?;
            let for_dsource = DSOURCE_POINTS.contains(&point.as_str());
            if for_dsource != (owner == HookOwner::DSource) {
                let (is, other) = match owner {
                    HookOwner::DSource => ("a dSource", "VDBs"),
                    HookOwner::Vdb => ("a VDB", "dSources"),
                };
                return Err(EngineError::InvalidInput {
                    field: format!("hooks.{point}"),
                    reason: format!("{point} is a hook point of {other}; {is} never runs it"),
                });
            }
            crate::limits::check_hook_script(point, script)?;
        }
        Ok(())
    }

    /// Sets or replaces the hooks of a dSource or VDB.
    pub fn set_hooks(
        &self,
        reference: &str,
        hooks: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, EngineError> {
        let object = self.hook_object(reference)?;
        let owner = if object.starts_with("DSOURCE-") {
            HookOwner::DSource
        } else {
            HookOwner::Vdb
        };
        Self::check_hooks(hooks, owner)?;
        self.store_hooks(&object, hooks)?;
        self.hooks(reference)
    }

    /// The hooks of a dSource or VDB, by point.
    pub fn hooks(&self, reference: &str) -> Result<BTreeMap<String, String>, EngineError> {
        let object = self.hook_object(reference)?;
        Ok(self.store.list_hooks(&object)?.into_iter().collect())
    }

    /// Runs `object`'s hook at `point`, if it has one, on `env` as `user`.
    pub(crate) async fn run_hook(
        &self,
        job: &JobHandle,
        object: &str,
        point: &str,
        env: &EnvironmentRecord,
        user: &EnvironmentUserRecord,
    ) -> Result<(), EngineError> {
        let Some(script) = self.store.get_hook(object, point)? else {
            return Ok(());
        };
        job.event(
            EventLevel::Info,
            &format!("running the {point} hook on {} as {}", env.name, user.name),
        );
        let conn = self.hosts.connect(env, user).await?;
        let vars = BTreeMap::from([
            ("DOPPEL_OBJECT".to_owned(), object.to_owned()),
            ("DOPPEL_HOOK".to_owned(), point.to_owned()),
            ("DOPPEL_JOB".to_owned(), job.id().to_owned()),
        ]);
        let out = conn.run_bash(&script, &vars, true).await?;
        let output = format!("{}{}", out.stdout_str(), out.stderr_str());
        if !output.trim().is_empty() {
            job.event(
                EventLevel::Info,
                &format!("{point} hook output:\n{}", tail(output.trim_end())),
            );
        }
        if out.exit_code != 0 {
            return Err(EngineError::HookFailed {
                point: point.to_owned(),
                exit_code: out.exit_code,
                output: tail(&output).to_owned(),
            });
        }
        Ok(())
    }
}
