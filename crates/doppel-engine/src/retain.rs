//! What keeps data, and what lets it go: bookmarks (a name on a snapshot,
//! pinning it against retention until it expires), why retention keeps
//! each snapshot (the one reasoning both `snapshot list` and retention's
//! deletions use), and the deletion protection and expiry of VDBs.
//!
//! The scheduler's pass calls [`Engine::lifecycle_pass`]: expired
//! bookmarks are removed, VDBs expiring within the warning period (24 h
//! unless set otherwise) are warned of
//! ([`Engine::warn_expiring`], once per expiry time), and expired VDBs are
//! deleted by an ordinary delete job, unless protected (then the skip is
//! recorded). Each of these is recorded like a scheduled slot, so it
//! happens once per expiry time even across restarts.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use doppel_model::{
    AddBookmark, Bookmark, EventLevel, ExpireVdb, ProtectVdb, Protection, Retention, ScheduleRun,
    Vdb,
};
use doppel_store::{BookmarkRecord, LifecycleRecord, RunRecord, SnapshotRecord, VdbRecord};

use crate::hosts::parse_ref;
use crate::policies::{parse_duration, parse_time, stamp, InForce};
use crate::vdbs::VDB_PREFIX;
use crate::{Engine, EngineError, SNAPSHOT_PREFIX};

pub(crate) const BOOKMARK_PREFIX: &str = "BOOKMARK-";

/// How long before a VDB's expiry its warning is recorded, unless
/// `doppel serve --vdb-expiry-warning` says otherwise.
pub const EXPIRY_WARNING_AHEAD: chrono::Duration = chrono::Duration::hours(24);

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidInput {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A time given as an RFC 3339 `at` or a duration `after` from `now`
/// (at most one; None when neither), which must lie in the future.
fn future_time(
    (at_field, at): (&str, Option<&str>),
    (after_field, after): (&str, Option<&str>),
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, EngineError> {
    let t = match (at, after) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                at_field,
                format!("give {at_field} or {after_field}, not both"),
            ))
        }
        (Some(a), None) => parse_time(a).ok_or_else(|| {
            invalid(
                at_field,
                format!("{a:?} is not an RFC 3339 time (like 2026-03-01T12:00:00Z)"),
            )
        })?,
        (None, Some(d)) => now + chrono::Duration::seconds(parse_duration(after_field, d)?),
        (None, None) => return Ok(None),
    };
    if t <= now {
        return Err(invalid(
            if at.is_some() { at_field } else { after_field },
            format!("{} is not in the future (now is {})", stamp(t), stamp(now)),
        ));
    }
    Ok(Some(t))
}

/// Whether a stored expiry time has passed; one that does not parse never
/// has (keeping is the safe side).
fn passed(expires_at: Option<&str>, now: DateTime<Utc>) -> bool {
    expires_at.and_then(parse_time).is_some_and(|t| t <= now)
}

/// The protection in force at `now`, if any.
pub(crate) fn protection_at(l: &LifecycleRecord, now: DateTime<Utc>) -> Option<Protection> {
    (l.protected && !passed(l.protected_until.as_deref(), now)).then(|| Protection {
        until: l.protected_until.clone(),
    })
}

fn describe(p: &Protection) -> String {
    match &p.until {
        Some(t) => format!("until {t}"),
        None => "until unprotected".into(),
    }
}

/// One snapshot and why retention keeps it (empty: it may go).
pub(crate) struct Verdict {
    pub snapshot: SnapshotRecord,
    pub kept_because: Vec<String>,
}

impl Engine {
    /// Sets how long before its expiry a VDB is warned of.
    pub fn set_expiry_warning(&self, ahead: std::time::Duration) {
        *self
            .scheduler
            .expiry_warning
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some(chrono::Duration::from_std(ahead).unwrap_or(EXPIRY_WARNING_AHEAD));
    }

    fn expiry_warning(&self) -> chrono::Duration {
        self.scheduler
            .expiry_warning
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(EXPIRY_WARNING_AHEAD)
    }

    /// The dSource or VDB a pool volume belongs to: (reference, name).
    pub(crate) fn object_of_volume(
        &self,
        volume: &str,
    ) -> Result<Option<(String, String)>, EngineError> {
        if let Some(d) = self
            .store
            .list_dsources()?
            .into_iter()
            .find(|d| d.volume == volume)
        {
            return Ok(Some((format!("DSOURCE-{}", d.id), d.name)));
        }
        Ok(self
            .store
            .list_vdbs()?
            .into_iter()
            .find(|v| v.volume == volume)
            .map(|v| (format!("{VDB_PREFIX}{}", v.id), v.name)))
    }

    /// The retention in force per pool volume.
    pub(crate) fn retention_by_volume(
        &self,
    ) -> Result<HashMap<String, InForce<Retention>>, EngineError> {
        let in_force =
            crate::policies::effective(&self.store.list_bindings()?, &self.policy_specs()?);
        let mut out = HashMap::new();
        for (object, e) in in_force {
            if let (Some(rule), Some(volume)) = (e.retention, self.volume_of_object(&object)?) {
                out.insert(volume, rule);
            }
        }
        Ok(out)
    }

    /// Why each snapshot of one dataset (`snaps`, oldest first) is kept
    /// under `rule` at `now`. What something needs (a VDB's current
    /// timeflow, a child VDB, a bookmark that has not expired) and the
    /// newest snapshot are kept whatever the rule; without a rule nothing
    /// is deleted.
    pub(crate) fn verdicts(
        &self,
        snaps: Vec<SnapshotRecord>,
        rule: Option<&InForce<Retention>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Verdict>, EngineError> {
        let n = snaps.len();
        let max_age = rule
            .and_then(|r| r.value.max_age.as_deref())
            .map(|a| parse_duration("retention.max_age", a))
            .transpose()?;
        let volume = snaps.first().map(|s| s.volume.clone()).unwrap_or_default();
        let bookmarks = self.store.list_bookmarks(Some(&volume))?;
        let is_vdb_snapshot = self.store.list_vdbs()?.iter().any(|v| v.volume == volume);
        let mut out = Vec::with_capacity(n);
        for (i, s) in snaps.into_iter().enumerate() {
            let mut why = Vec::new();
            for name in self.store.vdbs_on_snapshot(s.id)? {
                let own = self
                    .store
                    .find_vdb_by_name(&name)?
                    .is_some_and(|v| v.volume == s.volume);
                why.push(if is_vdb_snapshot && !own {
                    format!("child VDB {name}")
                } else {
                    format!("VDB {name}'s current timeflow")
                });
            }
            for b in bookmarks.iter().filter(|b| b.snapshot_id == s.id) {
                if passed(b.expires_at.as_deref(), now) {
                    continue;
                }
                why.push(match &b.expires_at {
                    Some(t) => format!("bookmark {} (until {t})", b.name),
                    None => format!("bookmark {}", b.name),
                });
            }
            if i + 1 == n {
                why.push("newest snapshot of its dataset".into());
            }
            match rule {
                None => why.push("no retention policy applies".into()),
                Some(r) => {
                    let by = format!("retention of {} {}", r.policy_name, r.policy);
                    if let Some(k) = r.value.keep_last.filter(|k| i + *k as usize >= n) {
                        why.push(format!("newest {k} ({by})"));
                    }
                    if let (Some(a), Some(text)) = (max_age, r.value.max_age.as_deref()) {
                        let young =
                            parse_time(&s.created_at).is_none_or(|t| (now - t).num_seconds() < a);
                        if young {
                            why.push(format!("younger than {text} ({by})"));
                        }
                    }
                }
            }
            out.push(Verdict {
                snapshot: s,
                kept_because: why,
            });
        }
        Ok(out)
    }

    /// Why each snapshot with an id in `records` is kept, by id.
    pub(crate) fn kept_because(
        &self,
        records: &[SnapshotRecord],
    ) -> Result<HashMap<i64, Vec<String>>, EngineError> {
        let rules = self.retention_by_volume()?;
        let now = self.clock_now();
        let mut volumes: Vec<&str> = records.iter().map(|s| s.volume.as_str()).collect();
        volumes.sort_unstable();
        volumes.dedup();
        let mut out = HashMap::new();
        for v in volumes {
            // The whole dataset counts (newest N), not just what is listed.
            let snaps = self.store.list_snapshots(Some(v))?;
            for verdict in self.verdicts(snaps, rules.get(v), now)? {
                out.insert(verdict.snapshot.id, verdict.kept_because);
            }
        }
        Ok(out)
    }

    /// The unexpired bookmarks on a snapshot, by name.
    pub(crate) fn bookmarks_pinning(
        &self,
        snapshot: &SnapshotRecord,
    ) -> Result<Vec<String>, EngineError> {
        let now = self.clock_now();
        Ok(self
            .store
            .list_bookmarks(Some(&snapshot.volume))?
            .into_iter()
            .filter(|b| b.snapshot_id == snapshot.id && !passed(b.expires_at.as_deref(), now))
            .map(|b| b.name)
            .collect())
    }

    /// The unexpired bookmark `name` of a dataset.
    pub(crate) fn bookmark_on(
        &self,
        volume: &str,
        name: &str,
    ) -> Result<Option<BookmarkRecord>, EngineError> {
        let now = self.clock_now();
        Ok(self
            .store
            .list_bookmarks(Some(volume))?
            .into_iter()
            .find(|b| b.name == name && !passed(b.expires_at.as_deref(), now)))
    }

    fn bookmark_model(&self, b: BookmarkRecord) -> Result<Bookmark, EngineError> {
        let (object, object_name) = self
            .object_of_volume(&b.volume)?
            .unwrap_or_else(|| (String::new(), "(gone)".into()));
        Ok(Bookmark {
            reference: format!("{BOOKMARK_PREFIX}{}", b.id),
            expired: passed(b.expires_at.as_deref(), self.clock_now()),
            name: b.name,
            snapshot: format!("{SNAPSHOT_PREFIX}{}", b.snapshot_id),
            object,
            object_name,
            expires_at: b.expires_at,
            created_at: b.created_at,
        })
    }

    /// `BOOKMARK-<n>`, or `DATASET@NAME`, or a name only one dataset has.
    fn find_bookmark(&self, b: &str) -> Result<BookmarkRecord, EngineError> {
        let not_found = || EngineError::NotFound {
            kind: "bookmark",
            id: b.to_owned(),
        };
        if let Some(id) = parse_ref(b, BOOKMARK_PREFIX) {
            return self.store.get_bookmark(id)?.ok_or_else(not_found);
        }
        if let Some((dataset, name)) = b.split_once('@') {
            let (volume, _) = self.dataset_of(dataset)?;
            return self
                .store
                .list_bookmarks(Some(&volume))?
                .into_iter()
                .find(|x| x.name == name)
                .ok_or_else(not_found);
        }
        let mut found: Vec<BookmarkRecord> = self
            .store
            .list_bookmarks(None)?
            .into_iter()
            .filter(|x| x.name == b)
            .collect();
        match found.len() {
            0 => Err(not_found()),
            1 => Ok(found.remove(0)),
            _ => Err(invalid(
                "bookmark",
                format!(
                    "{b:?} names bookmarks of several datasets: say DATASET@{b} or BOOKMARK-<n>"
                ),
            )),
        }
    }

    /// A snapshot as users name it outside a dataset's context
    /// (`SNAPSHOT-<n>`, a dataset for its latest, `DATASET@SNAPSHOT-<n>` or
    /// `DATASET@BOOKMARK`), as `SNAPSHOT-<n>`: what the API resolves
    /// before checking rights on it and calling the operation.
    pub fn resolve_snapshot(&self, snapshot: &str) -> Result<String, EngineError> {
        Ok(format!(
            "{SNAPSHOT_PREFIX}{}",
            self.named_snapshot(snapshot)?.id
        ))
    }

    fn named_snapshot(&self, snapshot: &str) -> Result<SnapshotRecord, EngineError> {
        if let Some(id) = parse_ref(snapshot, SNAPSHOT_PREFIX) {
            return self
                .store
                .get_snapshot(id)?
                .ok_or_else(|| EngineError::NotFound {
                    kind: "snapshot",
                    id: snapshot.to_owned(),
                });
        }
        let (dataset, name) = match snapshot.split_once('@') {
            Some((d, n)) => (d, Some(n)),
            None => (snapshot, None),
        };
        let (volume, _) = self.dataset_of(dataset).map_err(|e| match e {
            EngineError::NotFound { .. } => invalid(
                "snapshot",
                format!("{snapshot:?} is neither SNAPSHOT-<n> nor a dSource or VDB"),
            ),
            other => other,
        })?;
        self.pick_snapshot(&volume, name)
    }

    pub fn add_bookmark(&self, req: &AddBookmark) -> Result<Bookmark, EngineError> {
        crate::environments::check_name("name", &req.name)?;
        if parse_ref(&req.name, SNAPSHOT_PREFIX).is_some()
            || parse_ref(&req.name, BOOKMARK_PREFIX).is_some()
        {
            return Err(invalid(
                "name",
                "must not look like a reference (SNAPSHOT-<n>, BOOKMARK-<n>)",
            ));
        }
        let now = self.clock_now();
        let expires = future_time(
            ("expires_at", req.expires_at.as_deref()),
            ("expires_in", req.expires_in.as_deref()),
            now,
        )?;
        let snap = self.named_snapshot(&req.snapshot)?;
        let id = self.store.insert_bookmark(&BookmarkRecord {
            id: 0,
            name: req.name.clone(),
            volume: snap.volume.clone(),
            snapshot_id: snap.id,
            expires_at: expires.map(stamp),
            created_at: stamp(now),
        })?;
        let stored = self
            .store
            .get_bookmark(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "bookmark",
                id: req.name.clone(),
            })?;
        self.bookmark_model(stored)
    }

    /// Bookmarks of one dSource or VDB (or all), by dataset and name.
    pub fn list_bookmarks(&self, dataset: Option<&str>) -> Result<Vec<Bookmark>, EngineError> {
        let volume = dataset
            .map(|d| self.dataset_of(d).map(|(v, _)| v))
            .transpose()?;
        self.store
            .list_bookmarks(volume.as_deref())?
            .into_iter()
            .map(|b| self.bookmark_model(b))
            .collect()
    }

    pub fn get_bookmark(&self, b: &str) -> Result<Bookmark, EngineError> {
        self.bookmark_model(self.find_bookmark(b)?)
    }

    /// The snapshot a bookmark is on (`SNAPSHOT-<n>`), for the rights a
    /// change of it needs.
    pub fn bookmark_snapshot_ref(&self, b: &str) -> Result<String, EngineError> {
        Ok(format!(
            "{SNAPSHOT_PREFIX}{}",
            self.find_bookmark(b)?.snapshot_id
        ))
    }

    pub fn delete_bookmark(&self, b: &str) -> Result<Bookmark, EngineError> {
        let found = self.find_bookmark(b)?;
        let shown = self.bookmark_model(found.clone())?;
        self.store.delete_bookmark(found.id)?;
        Ok(shown)
    }

    /// Refuses while `vdb` is protected, naming the protection.
    pub(crate) fn refuse_if_protected(&self, vdb: &VdbRecord) -> Result<(), EngineError> {
        let l = self.store.vdb_lifecycle(vdb.id)?;
        match protection_at(&l, self.clock_now()) {
            None => Ok(()),
            Some(p) => Err(EngineError::Conflict(format!(
                "VDB {} is protected against deletion {}; unprotect it first",
                vdb.name,
                describe(&p)
            ))),
        }
    }

    /// Protects a VDB against deletion, until a time or until unprotected.
    pub fn protect_vdb(&self, vdb: &str, req: &ProtectVdb) -> Result<Vdb, EngineError> {
        let record = self.find_vdb(vdb)?;
        let until = future_time(
            ("until", req.until.as_deref()),
            ("for", req.for_.as_deref()),
            self.clock_now(),
        )?;
        let mut l = self.store.vdb_lifecycle(record.id)?;
        l.protected = true;
        l.protected_until = until.map(stamp);
        self.store.set_vdb_lifecycle(&l)?;
        self.get_vdb(vdb)
    }

    pub fn unprotect_vdb(&self, vdb: &str) -> Result<Vdb, EngineError> {
        let record = self.find_vdb(vdb)?;
        let mut l = self.store.vdb_lifecycle(record.id)?;
        l.protected = false;
        l.protected_until = None;
        self.store.set_vdb_lifecycle(&l)?;
        self.get_vdb(vdb)
    }

    /// Sets when the scheduler deletes a VDB (`None` for both: never).
    pub fn expire_vdb(&self, vdb: &str, req: &ExpireVdb) -> Result<Vdb, EngineError> {
        let record = self.find_vdb(vdb)?;
        let at = future_time(
            ("at", req.at.as_deref()),
            ("after", req.after.as_deref()),
            self.clock_now(),
        )?;
        let mut l = self.store.vdb_lifecycle(record.id)?;
        l.expires_at = at.map(stamp);
        self.store.set_vdb_lifecycle(&l)?;
        self.get_vdb(vdb)
    }

    /// Records that VDB `vdb` will be deleted at `at`: the one place the
    /// warning is emitted (a schedule run of kind `expiry_warning`, and the
    /// log), so other channels (webhooks) can be added here.
    pub(crate) fn warn_expiring(
        &self,
        vdb: &VdbRecord,
        at: &str,
        protection: Option<&Protection>,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRun, EngineError> {
        let object = format!("{VDB_PREFIX}{}", vdb.id);
        let reason = match protection {
            None => format!("VDB {} expires at {at} and will then be deleted", vdb.name),
            Some(p) => format!(
                "VDB {} expires at {at}, but is protected {}: it will not be deleted while protected",
                vdb.name,
                describe(p)
            ),
        };
        tracing::warn!(vdb = %vdb.name, expires_at = %at, "{reason}");
        let run = RunRecord {
            object,
            kind: "expiry_warning".into(),
            policy: None,
            slot: at.to_owned(),
            outcome: "warned".into(),
            job: None,
            reason: Some(reason),
            at: stamp(now),
        };
        self.store.record_slot(&run)?;
        self.publish(crate::webhooks::Event::vdb_expiring(
            &run.object,
            &vdb.name,
            at,
            protection.is_some(),
        ));
        Ok(crate::scheduler::run_model(run))
    }

    /// The scheduler's part for bookmarks and VDB lifecycles at `now`;
    /// `slots` are the marks the pass read (what was dealt with).
    pub(crate) fn lifecycle_pass(
        self: &Arc<Self>,
        now: DateTime<Utc>,
        slots: &HashMap<(String, String), String>,
    ) -> Result<Vec<ScheduleRun>, EngineError> {
        let mut runs = Vec::new();
        for b in self.store.list_bookmarks(None)? {
            if !passed(b.expires_at.as_deref(), now) {
                continue;
            }
            let object = self
                .object_of_volume(&b.volume)?
                .map(|(r, _)| r)
                .unwrap_or_else(|| b.volume.clone());
            self.store.delete_bookmark(b.id)?;
            let run = RunRecord {
                object,
                kind: "bookmark_expiry".into(),
                policy: None,
                slot: b.expires_at.clone().unwrap_or_default(),
                outcome: "deleted".into(),
                job: None,
                reason: Some(format!(
                    "bookmark {} on {SNAPSHOT_PREFIX}{} expired",
                    b.name, b.snapshot_id
                )),
                at: stamp(now),
            };
            self.store.record_slot(&run)?;
            runs.push(crate::scheduler::run_model(run));
        }
        let ahead = self.expiry_warning();
        for l in self.store.list_lifecycles()? {
            let Some(at) = l.expires_at.clone() else {
                continue;
            };
            let Some(t) = parse_time(&at) else { continue };
            let Some(vdb) = self.store.get_vdb(l.vdb_id)? else {
                continue;
            };
            let object = format!("{VDB_PREFIX}{}", vdb.id);
            let dealt = |kind: &str| slots.get(&(object.clone(), kind.to_owned())) == Some(&at);
            let protection = protection_at(&l, now);
            if now >= t - ahead && !dealt("expiry_warning") {
                runs.push(self.warn_expiring(&vdb, &at, protection.as_ref(), now)?);
            }
            if now < t || dealt("expiry") {
                continue;
            }
            let mut run = RunRecord {
                object: object.clone(),
                kind: "expiry".into(),
                policy: None,
                slot: at.clone(),
                outcome: "skipped".into(),
                job: None,
                reason: protection
                    .as_ref()
                    .map(|p| format!("the VDB is protected {}", describe(p))),
                at: stamp(now),
            };
            if run.reason.is_some() {
                self.store.record_slot(&run)?;
                runs.push(crate::scheduler::run_model(run));
                continue;
            }
            run.outcome = "started".into();
            // Recorded before the job starts, as every slot is.
            self.store.record_slot(&run)?;
            match self.delete_vdb(&object) {
                Ok(job) => {
                    self.jobs.note(
                        &job.id,
                        EventLevel::Info,
                        &format!("started by the VDB's expiry at {at}"),
                    );
                    self.store.set_run_job(&object, "expiry", &at, &job.id)?;
                    run.job = Some(job.id);
                }
                Err(e) => {
                    run.outcome = "skipped".into();
                    run.reason = Some(format!("the job could not start: {e}"));
                    self.store.record_slot(&run)?;
                }
            }
            runs.push(crate::scheduler::run_model(run));
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn times_are_absolute_or_from_now_in_the_future_and_refusals_name_the_field() {
        let now = t("2026-01-01T00:00:00Z");
        let field = |at, after| match future_time(("at", at), ("after", after), now) {
            Err(EngineError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            future_time(("at", None), ("after", Some("2h")), now).unwrap(),
            Some(t("2026-01-01T02:00:00Z"))
        );
        assert_eq!(
            future_time(
                ("at", Some("2026-01-02T00:00:00+01:00")),
                ("after", None),
                now
            )
            .unwrap(),
            Some(t("2026-01-01T23:00:00Z"))
        );
        assert_eq!(
            future_time(("at", None), ("after", None), now).unwrap(),
            None
        );
        assert_eq!(field(Some("tomorrow"), None), "at");
        assert_eq!(field(Some("2025-12-31T23:59:59Z"), None), "at");
        assert_eq!(field(None, Some("2 hours")), "after");
        assert_eq!(field(Some("2026-01-02T00:00:00Z"), Some("1h")), "at");
    }

    #[test]
    fn protection_holds_until_its_end_or_forever() {
        let now = t("2026-01-01T12:00:00Z");
        let l = |protected, until: Option<&str>| LifecycleRecord {
            vdb_id: 1,
            protected,
            protected_until: until.map(str::to_owned),
            expires_at: None,
        };
        assert!(protection_at(&l(false, None), now).is_none());
        assert_eq!(
            protection_at(&l(true, None), now),
            Some(Protection { until: None })
        );
        assert!(protection_at(&l(true, Some("2026-01-01T13:00:00Z")), now).is_some());
        assert!(protection_at(&l(true, Some("2026-01-01T12:00:00Z")), now).is_none());
        // An end that does not read back keeps protecting: the safe side.
        assert!(protection_at(&l(true, Some("someday")), now).is_some());
    }
}
