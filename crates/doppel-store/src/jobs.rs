//! Persisted jobs and their events.

use doppel_model::{ApiError, EventLevel, Job, JobEvent, JobFilter, JobState};
use rusqlite::{params, OptionalExtension};

use crate::{Store, StoreError};

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn job_number(id: &str) -> Option<i64> {
    id.strip_prefix("JOB-").and_then(|n| n.parse().ok())
}

fn level_str(l: EventLevel) -> &'static str {
    match l {
        EventLevel::Info => "info",
        EventLevel::Warning => "warning",
        EventLevel::Error => "error",
    }
}

const JOB_COLUMNS: &str =
    "id, kind, target, state, progress, step, created_at, started_at, finished_at, error, result";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let state: String = r.get(3)?;
    let error: Option<String> = r.get(9)?;
    let result: Option<String> = r.get(10)?;
    Ok(Job {
        id: format!("JOB-{}", r.get::<_, i64>(0)?),
        kind: r.get(1)?,
        target: r.get(2)?,
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        progress: r.get::<_, i64>(4)?.clamp(0, 100) as u8,
        step: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        error: error.and_then(|e| serde_json::from_str::<ApiError>(&e).ok()),
        result: result.and_then(|e| serde_json::from_str(&e).ok()),
    })
}

impl Store {
    /// Records a new queued job and returns it.
    pub fn create_job(&self, kind: &str, target: Option<&str>) -> Result<Job, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO job (kind, target, state, created_at) VALUES (?1, ?2, 'queued', ?3)",
            params![kind, target, now()],
        )?;
        let id = conn.last_insert_rowid();
        Ok(conn.query_row(
            &format!("SELECT {JOB_COLUMNS} FROM job WHERE id = ?1"),
            [id],
            row_to_job,
        )?)
    }

    pub fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let Some(n) = job_number(id) else {
            return Ok(None);
        };
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM job WHERE id = ?1"),
                [n],
                row_to_job,
            )
            .optional()?)
    }

    /// Newest first.
    /// How many jobs there are of each (kind, state).
    pub fn job_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT kind, state, COUNT(*) FROM job GROUP BY kind, state ORDER BY kind, state",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM job
             WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR target = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
        let rows = stmt.query_map(
            params![filter.state.map(JobState::as_str), filter.target, limit],
            row_to_job,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn start_job(&self, id: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE job SET state = 'running', started_at = ?2 WHERE id = ?1",
            params![job_number(id), now()],
        )?;
        Ok(())
    }

    pub fn set_job_progress(&self, id: &str, progress: u8, step: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE job SET progress = ?2, step = ?3 WHERE id = ?1",
            params![job_number(id), progress.min(100), step],
        )?;
        Ok(())
    }

    /// Ends a job: its state, and its error or result, in one transaction
    /// with a closing event.
    pub fn finish_job(
        &self,
        id: &str,
        state: JobState,
        error: Option<&ApiError>,
        result: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = job_number(id);
        let progress = if state == JobState::Succeeded {
            100
        } else {
            -1
        };
        tx.execute(
            "UPDATE job SET state = ?2, finished_at = ?3, error = ?4, result = ?5,
               progress = CASE WHEN ?6 >= 0 THEN ?6 ELSE progress END WHERE id = ?1",
            params![
                n,
                state.as_str(),
                now(),
                error.map(|e| serde_json::to_string(e).expect("serialisable")),
                result.map(|r| r.to_string()),
                progress
            ],
        )?;
        let (level, message) = match (state, error) {
            (JobState::Succeeded, _) => (EventLevel::Info, "job succeeded".to_owned()),
            (JobState::Canceled, _) => (EventLevel::Warning, "job canceled".to_owned()),
            (_, Some(e)) => (EventLevel::Error, format!("job failed: {}", e.message)),
            _ => (EventLevel::Error, "job failed".to_owned()),
        };
        insert_event(&tx, n, level, &message)?;
        tx.commit()?;
        Ok(())
    }

    pub fn add_job_event(
        &self,
        id: &str,
        level: EventLevel,
        message: &str,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        insert_event(&conn, job_number(id), level, message)
    }

    /// Events with `seq` greater than `after`, oldest first.
    pub fn job_events(&self, id: &str, after: i64) -> Result<Vec<JobEvent>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT seq, at, level, message FROM job_event WHERE job_id = ?1 AND seq > ?2 ORDER BY seq")?;
        let rows = stmt.query_map(params![job_number(id), after], |r| {
            let level: String = r.get(2)?;
            Ok(JobEvent {
                seq: r.get(0)?,
                at: r.get(1)?,
                level: match level.as_str() {
                    "warning" => EventLevel::Warning,
                    "error" => EventLevel::Error,
                    _ => EventLevel::Info,
                },
                message: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks every job that was queued or running as failed: called at
    /// start-up, when no job can still be running. Returns their ids.
    pub fn fail_interrupted_jobs(&self, error: &ApiError) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT id FROM job WHERE state IN ('queued', 'running') ORDER BY id")?;
            let ids = stmt
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.into_iter().map(|n| format!("JOB-{n}")).collect()
        };
        for id in &ids {
            self.finish_job(id, JobState::Failed, Some(error), None)?;
        }
        Ok(ids)
    }
}

fn insert_event(
    conn: &rusqlite::Connection,
    job: Option<i64>,
    level: EventLevel,
    message: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO job_event (job_id, seq, at, level, message)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM job_event WHERE job_id = ?1), ?2, ?3, ?4)",
        params![job, now(), level_str(level), message],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use doppel_model::ErrorCode;

    #[test]
    fn a_job_goes_from_queued_to_finished_with_events() {
        let s = Store::open_in_memory().unwrap();
        let j = s.create_job("TEST", Some("OBJ-1")).unwrap();
        assert_eq!(j.state, JobState::Queued);
        assert!(j.id.starts_with("JOB-"));
        s.start_job(&j.id).unwrap();
        s.set_job_progress(&j.id, 40, "copying").unwrap();
        s.add_job_event(&j.id, EventLevel::Info, "step one")
            .unwrap();
        let got = s.get_job(&j.id).unwrap().unwrap();
        assert_eq!(
            (got.state, got.progress, got.step.as_str()),
            (JobState::Running, 40, "copying")
        );
        s.finish_job(
            &j.id,
            JobState::Succeeded,
            None,
            Some(&serde_json::json!({"ok": 1})),
        )
        .unwrap();
        let got = s.get_job(&j.id).unwrap().unwrap();
        assert_eq!((got.state, got.progress), (JobState::Succeeded, 100));
        assert_eq!(got.result.unwrap()["ok"], 1);
        let events = s.job_events(&j.id, 0).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(events[1].message, "job succeeded");
        assert_eq!(s.job_events(&j.id, 1).unwrap().len(), 1);
    }

    #[test]
    fn interrupted_jobs_fail_with_the_reason_and_finished_ones_are_kept() {
        let s = Store::open_in_memory().unwrap();
        let a = s.create_job("A", None).unwrap();
        let b = s.create_job("B", None).unwrap();
        let c = s.create_job("C", None).unwrap();
        s.start_job(&b.id).unwrap();
        s.finish_job(&c.id, JobState::Succeeded, None, None)
            .unwrap();
        let reason = ApiError {
            code: ErrorCode::Internal,
            message: "the engine restarted".into(),
            action: None,
            details: vec![],
            output: None,
            correlation_id: None,
        };
        let failed = s.fail_interrupted_jobs(&reason).unwrap();
        assert_eq!(failed, vec![a.id.clone(), b.id.clone()]);
        assert_eq!(
            s.get_job(&b.id).unwrap().unwrap().error.unwrap().message,
            "the engine restarted"
        );
        assert_eq!(
            s.get_job(&c.id).unwrap().unwrap().state,
            JobState::Succeeded
        );
        let running = s
            .list_jobs(&JobFilter {
                state: Some(JobState::Failed),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(running.len(), 2);
        assert_eq!(running[0].id, b.id, "newest first");
    }
}
