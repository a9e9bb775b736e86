//! Policies, the objects they apply to, and the scheduler's slots and runs.
//!
//! A policy's sections are kept as one JSON text: the engine checks them
//! before they get here, and they are read and written whole.

use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    pub id: i64,
    pub name: String,
    /// The policy's sections (a `PolicySpec` without its name) as JSON.
    pub spec: serde_json::Value,
    pub created_at: String,
}

/// A policy applied to an object (`DSOURCE-<n>`, `VDB-<n>`): each object
/// has at most one base policy and one override.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRecord {
    pub object: String,
    pub is_override: bool,
    pub policy_id: i64,
    pub applied_at: String,
}

/// One slot the scheduler dealt with.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub object: String,
    pub kind: String,
    pub policy: Option<String>,
    pub slot: String,
    pub outcome: String,
    pub job: Option<String>,
    pub reason: Option<String>,
    pub at: String,
}

fn row_policy(r: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRecord> {
    let text: String = r.get(2)?;
    Ok(PolicyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        spec: serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(3)?,
    })
}

/// Forgets where an object's policies apply and its slots, when the object
/// is deleted (its run history stays, as job history does).
pub(crate) fn forget_object(tx: &rusqlite::Transaction<'_>, object: &str) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM policy_binding WHERE object = ?1", [object])?;
    tx.execute("DELETE FROM schedule_slot WHERE object = ?1", [object])?;
    Ok(())
}

impl Store {
    pub fn insert_policy(
        &self,
        name: &str,
        spec: &serde_json::Value,
        created_at: &str,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO policy (name, spec, created_at) VALUES (?1, ?2, ?3)",
            params![name, spec.to_string(), created_at],
        )
        .map_err(|e| {
            crate::taken(e, "policy name", name, || {
                conn.query_row("SELECT id FROM policy WHERE name = ?1", [name], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
                .map(|id| format!("POLICY-{id}"))
            })
        })?;
        Ok(conn.last_insert_rowid())
    }

    /// Replaces a policy's name and sections.
    pub fn update_policy(
        &self,
        id: i64,
        name: &str,
        spec: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE policy SET name = ?2, spec = ?3 WHERE id = ?1",
            params![id, name, spec.to_string()],
        )
        .map_err(|e| {
            crate::taken(e, "policy name", name, || {
                conn.query_row("SELECT id FROM policy WHERE name = ?1", [name], |r| {
                    r.get::<_, i64>(0)
                })
                .ok()
                .map(|id| format!("POLICY-{id}"))
            })
        })?;
        Ok(())
    }

    pub fn get_policy(&self, id: i64) -> Result<Option<PolicyRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, spec, created_at FROM policy WHERE id = ?1",
                [id],
                row_policy,
            )
            .optional()?)
    }

    pub fn find_policy_by_name(&self, name: &str) -> Result<Option<PolicyRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, spec, created_at FROM policy WHERE name = ?1",
                [name],
                row_policy,
            )
            .optional()?)
    }

    pub fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, name, spec, created_at FROM policy ORDER BY name")?;
        let rows = stmt.query_map([], row_policy)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a policy and where it applies.
    pub fn delete_policy(&self, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM policy_binding WHERE policy_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM policy WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Applies policies to objects in one transaction, replacing the base
    /// policy (or the override) each had.
    pub fn bind_policies(&self, bindings: &[BindingRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for b in bindings {
            tx.execute(
                "INSERT INTO policy_binding (object, is_override, policy_id, applied_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (object, is_override) DO UPDATE SET policy_id = excluded.policy_id, applied_at = excluded.applied_at",
                params![b.object, b.is_override, b.policy_id, b.applied_at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Takes a policy off an object; returns whether it was applied there.
    pub fn unbind_policy(&self, object: &str, policy_id: i64) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM policy_binding WHERE object = ?1 AND policy_id = ?2",
            params![object, policy_id],
        )? > 0)
    }

    /// Every binding, by object.
    pub fn list_bindings(&self) -> Result<Vec<BindingRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT object, is_override, policy_id, applied_at FROM policy_binding ORDER BY object, is_override",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(BindingRecord {
                object: r.get(0)?,
                is_override: r.get::<_, i64>(1)? != 0,
                policy_id: r.get(2)?,
                applied_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last slot dealt with, per (object, kind).
    pub fn schedule_slots(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT object, kind, last_slot FROM schedule_slot")?;
        let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a slot as dealt with, and how, in one transaction: once
    /// recorded, the slot is never run again, whatever happens next.
    pub fn record_slot(&self, run: &RunRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO schedule_slot (object, kind, last_slot) VALUES (?1, ?2, ?3)
             ON CONFLICT (object, kind) DO UPDATE SET last_slot = excluded.last_slot",
            params![run.object, run.kind, run.slot],
        )?;
        tx.execute(
            "INSERT INTO schedule_run (object, kind, policy, slot, outcome, job, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![run.object, run.kind, run.policy, run.slot, run.outcome, run.job, run.reason, run.at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Sets the job a recorded run started.
    pub fn set_run_job(
        &self,
        object: &str,
        kind: &str,
        slot: &str,
        job: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE schedule_run SET job = ?4 WHERE id = (SELECT MAX(id) FROM schedule_run WHERE object = ?1 AND kind = ?2 AND slot = ?3)",
            params![object, kind, slot, job],
        )?;
        Ok(())
    }

    /// Recorded runs, newest first (of one object when given).
    pub fn list_runs(
        &self,
        object: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT object, kind, policy, slot, outcome, job, reason, at FROM schedule_run
             WHERE ?1 IS NULL OR object = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![object, limit as i64], |r| {
            Ok(RunRecord {
                object: r.get(0)?,
                kind: r.get(1)?,
                policy: r.get(2)?,
                slot: r.get(3)?,
                outcome: r.get(4)?,
                job: r.get(5)?,
                reason: r.get(6)?,
                at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_slot_is_remembered_and_bindings_replace_per_layer() {
        let s = Store::open_in_memory().unwrap();
        let spec = serde_json::json!({"snapsync": {"every": "1m"}});
        let p = s
            .insert_policy("daily", &spec, "2026-01-01T00:00:00Z")
            .unwrap();
        assert!(matches!(
            s.insert_policy("daily", &spec, "2026-01-01T00:00:00Z"),
            Err(StoreError::Taken { .. })
        ));
        let q = s
            .insert_policy("other", &spec, "2026-01-01T00:00:00Z")
            .unwrap();
        let bind = |policy_id, is_override| BindingRecord {
            object: "DSOURCE-1".into(),
            is_override,
            policy_id,
            applied_at: "2026-01-01T00:00:00Z".into(),
        };
        s.bind_policies(&[bind(p, false)]).unwrap();
        s.bind_policies(&[bind(q, false), bind(p, true)]).unwrap();
        let b = s.list_bindings().unwrap();
        assert_eq!(
            b.iter()
                .map(|b| (b.policy_id, b.is_override))
                .collect::<Vec<_>>(),
            vec![(q, false), (p, true)]
        );
        let run = RunRecord {
            object: "DSOURCE-1".into(),
            kind: "snapsync".into(),
            policy: Some("POLICY-1".into()),
            slot: "2026-01-01T00:01:00Z".into(),
            outcome: "started".into(),
            job: None,
            reason: None,
            at: "2026-01-01T00:01:02Z".into(),
        };
        s.record_slot(&run).unwrap();
        s.set_run_job("DSOURCE-1", "snapsync", &run.slot, "JOB-7")
            .unwrap();
        let slots = s.schedule_slots().unwrap();
        assert_eq!(
            slots[&("DSOURCE-1".to_owned(), "snapsync".to_owned())],
            run.slot
        );
        assert_eq!(
            s.list_runs(None, 10).unwrap()[0].job.as_deref(),
            Some("JOB-7")
        );
        assert!(s.delete_policy(p).unwrap());
        assert_eq!(s.list_bindings().unwrap().len(), 1);
    }
}
