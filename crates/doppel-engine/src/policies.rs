//! Policies: SnapSync, VDB snapshot and refresh schedules and retention,
//! kept as data and applied to dSources and VDBs. Each object has at most a
//! base policy and an override; a section the override sets wins. The
//! scheduler (`scheduler`) turns them into ordinary jobs.
//!
//! Retention is safe-only: a snapshot is deleted only when its rules let it
//! go and nothing needs it (a VDB's or child VDB's current timeflow starts
//! at it, or a bookmark that has not expired is on it); the newest snapshot
//! of a dataset is always kept. Why each is kept is decided in one place,
//! `retain::verdicts`, which `snapshot list` shows.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use doppel_model::{
    AppliedTo, ApplyOutcome, ApplyPolicy, EventLevel, Job, Policy, PolicySpec, Retention,
    RetentionVictim, Schedule,
};
use doppel_store::{BindingRecord, PolicyRecord, SnapshotRecord};
use serde_json::json;

use crate::hosts::parse_ref;
use crate::{Engine, EngineError, SNAPSHOT_PREFIX};

pub(crate) const POLICY_PREFIX: &str = "POLICY-";

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidInput {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `30s`, `15m`, `6h`, `2d`, `1w` as seconds.
pub fn parse_duration(field: &str, text: &str) -> Result<i64, EngineError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n.parse().map_err(|_| {
        invalid(
            field,
            format!("{text:?} is not a duration like 30s, 15m, 6h, 2d or 1w"),
        )
    })?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(invalid(
                field,
                format!("{text:?} is not a duration like 30s, 15m, 6h, 2d or 1w"),
            ))
        }
    };
    if n <= 0 || n > 100 * 365 {
        return Err(invalid(
            field,
            format!("{text:?} must be positive and at most 100 years"),
        ));
    }
    Ok(n * unit)
}

/// A checked schedule: where its slots fall.
#[derive(Debug, Clone)]
pub(crate) enum Slots {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    Every(i64),
}

impl Slots {
    pub(crate) fn parse(field: &str, s: &Schedule, tz: Option<&str>) -> Result<Slots, EngineError> {
        let tz = parse_tz(tz)?;
        match (&s.cron, &s.every) {
            (Some(c), None) => {
                let cron: croner::Cron = c.parse().map_err(|e| {
                    invalid(
                        &format!("{field}.cron"),
                        format!("{c:?} does not parse: {e}"),
                    )
                })?;
                Ok(Slots::Cron(Box::new(cron), tz))
            }
            (None, Some(e)) => {
                let secs = parse_duration(&format!("{field}.every"), e)?;
                if secs < 60 {
                    return Err(invalid(&format!("{field}.every"), "must be at least 1m"));
                }
                Ok(Slots::Every(secs))
            }
            _ => Err(invalid(field, "give exactly one of cron or every")),
        }
    }

    /// The newest slot at or before `now`.
    pub(crate) fn latest(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Slots::Every(secs) => {
                let t = now.timestamp().div_euclid(*secs) * secs;
                DateTime::from_timestamp(t, 0)
            }
            Slots::Cron(cron, tz) => cron
                .find_previous_occurrence(&now.with_timezone(tz), true)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

fn parse_tz(tz: Option<&str>) -> Result<chrono_tz::Tz, EngineError> {
    match tz {
        None => Ok(chrono_tz::UTC),
        Some(t) => t.parse().map_err(|_| {
            invalid(
                "time_zone",
                format!("{t:?} is not an IANA time zone (like UTC or Europe/Paris)"),
            )
        }),
    }
}

/// Checks every section of a policy, naming the field at fault.
pub(crate) fn check_spec(spec: &PolicySpec) -> Result<(), EngineError> {
    let name = &spec.name;
    // The engine's one name rule, so no policy is `..` or looks like a flag.
    crate::environments::check_name("name", name)?;
    if parse_ref(name, POLICY_PREFIX).is_some() {
        return Err(invalid(
            "name",
            "must not look like a reference (POLICY-<n>)",
        ));
    }
    let tz = spec.time_zone.as_deref();
    parse_tz(tz)?;
    if let Some(s) = &spec.snapsync {
        Slots::parse("snapsync", &s.schedule(), tz)?;
        if let Some(w) = &s.window {
            parse_duration("snapsync.window", w)?;
        }
        if let Some(p) = &s.parameters {
            if !p.is_object() {
                return Err(invalid("snapsync.parameters", "must be a JSON object"));
            }
            crate::limits::check_parameters("snapsync.parameters", p)?;
        }
    }
    if let Some(s) = &spec.vdb_snapshot {
        Slots::parse("vdb_snapshot", s, tz)?;
    }
    if let Some(s) = &spec.refresh {
        Slots::parse("refresh", s, tz)?;
    }
    if let Some(r) = &spec.retention {
        if r.keep_last == Some(0) {
            return Err(invalid("retention.keep_last", "must be at least 1"));
        }
        match (&r.keep_last, &r.max_age) {
            (None, None) => {
                return Err(invalid(
                    "retention",
                    "keeps nothing: set keep_last (at least 1), max_age, or both",
                ))
            }
            (_, Some(a)) => {
                parse_duration("retention.max_age", a)?;
            }
            _ => {}
        }
    }
    if spec.snapsync.is_none()
        && spec.vdb_snapshot.is_none()
        && spec.refresh.is_none()
        && spec.retention.is_none()
    {
        return Err(invalid(
            "policy",
            "set at least one of snapsync, vdb_snapshot, refresh or retention",
        ));
    }
    Ok(())
}

/// A stored policy's sections as a spec (the name is kept beside them).
pub(crate) fn spec_of(p: &PolicyRecord) -> PolicySpec {
    let mut v = p.spec.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("name".into(), serde_json::Value::String(p.name.clone()));
    }
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::warn!(policy = %p.name, error = %e, "a stored policy does not read back");
        PolicySpec {
            name: p.name.clone(),
            ..Default::default()
        }
    })
}

/// One section in force on an object, and which policy gave it.
#[derive(Debug, Clone)]
pub(crate) struct InForce<T> {
    pub value: T,
    /// `POLICY-<n>`.
    pub policy: String,
    pub policy_name: String,
    pub time_zone: Option<String>,
    pub applied_at: String,
}

/// What is in force on one object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Effective {
    pub snapsync: Option<InForce<doppel_model::SnapSync>>,
    pub vdb_snapshot: Option<InForce<Schedule>>,
    pub refresh: Option<InForce<Schedule>>,
    pub retention: Option<InForce<Retention>>,
}

/// Per object: the sections in force, from every binding and policy.
pub(crate) fn effective(
    bindings: &[BindingRecord],
    policies: &HashMap<i64, PolicySpec>,
) -> HashMap<String, Effective> {
    let mut out: HashMap<String, Effective> = HashMap::new();
    // Base first, override after: the later one wins each section it sets.
    let mut ordered: Vec<&BindingRecord> = bindings.iter().collect();
    ordered.sort_by_key(|b| b.is_override);
    for b in ordered {
        let Some(spec) = policies.get(&b.policy_id) else {
            continue;
        };
        let e = out.entry(b.object.clone()).or_default();
        let wrap = |v| InForce {
            value: v,
            policy: format!("{POLICY_PREFIX}{}", b.policy_id),
            policy_name: spec.name.clone(),
            time_zone: spec.time_zone.clone(),
            applied_at: b.applied_at.clone(),
        };
        if let Some(s) = &spec.snapsync {
            e.snapsync = Some(wrap(s.clone()));
        }
        if let Some(s) = &spec.vdb_snapshot {
            e.vdb_snapshot = Some(InForce {
                value: s.clone(),
                policy: format!("{POLICY_PREFIX}{}", b.policy_id),
                policy_name: spec.name.clone(),
                time_zone: spec.time_zone.clone(),
                applied_at: b.applied_at.clone(),
            });
        }
        if let Some(s) = &spec.refresh {
            e.refresh = Some(InForce {
                value: s.clone(),
                policy: format!("{POLICY_PREFIX}{}", b.policy_id),
                policy_name: spec.name.clone(),
                time_zone: spec.time_zone.clone(),
                applied_at: b.applied_at.clone(),
            });
        }
        if let Some(r) = &spec.retention {
            e.retention = Some(InForce {
                value: r.clone(),
                policy: format!("{POLICY_PREFIX}{}", b.policy_id),
                policy_name: spec.name.clone(),
                time_zone: spec.time_zone.clone(),
                applied_at: b.applied_at.clone(),
            });
        }
    }
    out
}

pub(crate) fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Engine {
    fn find_policy(&self, p: &str) -> Result<PolicyRecord, EngineError> {
        let found = match parse_ref(p, POLICY_PREFIX) {
            Some(id) => self.store.get_policy(id)?,
            None => self.store.find_policy_by_name(p)?,
        };
        found.ok_or_else(|| EngineError::NotFound {
            kind: "policy",
            id: p.to_owned(),
        })
    }

    fn policy_model(&self, p: &PolicyRecord, bindings: &[BindingRecord]) -> Policy {
        let applied_to = bindings
            .iter()
            .filter(|b| b.policy_id == p.id)
            .map(|b| AppliedTo {
                object: b.object.clone(),
                name: self
                    .object_of_reference(&b.object)
                    .map(|o| o.label)
                    .unwrap_or_else(|_| "(gone)".into()),
                is_override: b.is_override,
                applied_at: b.applied_at.clone(),
            })
            .collect();
        Policy {
            reference: format!("{POLICY_PREFIX}{}", p.id),
            spec: spec_of(p),
            applied_to,
            created_at: p.created_at.clone(),
        }
    }

    pub fn list_policies(&self) -> Result<Vec<Policy>, EngineError> {
        let bindings = self.store.list_bindings()?;
        Ok(self
            .store
            .list_policies()?
            .iter()
            .map(|p| self.policy_model(p, &bindings))
            .collect())
    }

    pub fn get_policy(&self, p: &str) -> Result<Policy, EngineError> {
        let p = self.find_policy(p)?;
        Ok(self.policy_model(&p, &self.store.list_bindings()?))
    }

    fn stored_sections(spec: &PolicySpec) -> serde_json::Value {
        let mut v = serde_json::to_value(spec).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("name");
        }
        v
    }

    pub fn add_policy(&self, spec: PolicySpec) -> Result<Policy, EngineError> {
        check_spec(&spec)?;
        let id = self.store.insert_policy(
            &spec.name,
            &Self::stored_sections(&spec),
            &stamp(self.clock_now()),
        )?;
        self.get_policy(&format!("{POLICY_PREFIX}{id}"))
    }

    /// Replaces a policy's name and every section; the objects it applies to
    /// follow at the next scheduling pass.
    pub fn update_policy(&self, p: &str, spec: PolicySpec) -> Result<Policy, EngineError> {
        let old = self.find_policy(p)?;
        check_spec(&spec)?;
        self.store
            .update_policy(old.id, &spec.name, &Self::stored_sections(&spec))?;
        self.get_policy(&format!("{POLICY_PREFIX}{}", old.id))
    }

    /// Deletes a policy; the objects it applied to keep their other one.
    pub fn delete_policy(&self, p: &str) -> Result<Policy, EngineError> {
        let old = self.find_policy(p)?;
        let shown = self.policy_model(&old, &self.store.list_bindings()?);
        self.store.delete_policy(old.id)?;
        Ok(shown)
    }

    /// The references of the objects a policy is applied to, for the
    /// rights a change of it needs.
    pub fn policy_objects(&self, p: &str) -> Result<Vec<String>, EngineError> {
        let id = self.find_policy(p)?.id;
        Ok(self
            .store
            .list_bindings()?
            .into_iter()
            .filter(|b| b.policy_id == id)
            .map(|b| b.object)
            .collect())
    }

    /// A dSource or VDB a policy can apply to, as its reference.
    pub fn policy_target(&self, s: &str) -> Result<String, EngineError> {
        let o = self.object_of_reference(s).map_err(|e| match e {
            EngineError::InvalidInput { reason, .. } => invalid("objects", reason),
            other => other,
        })?;
        if !(o.reference.starts_with("DSOURCE-") || o.reference.starts_with("VDB-")) {
            return Err(invalid(
                "objects",
                format!("{s}: policies apply to dSources and VDBs only"),
            ));
        }
        Ok(o.reference)
    }

    /// Applies a policy to objects (none: to those it already applies to)
    /// and enforces its retention there at once in jobs; a dry run changes
    /// nothing and says what retention would delete.
    pub async fn apply_policy(
        self: &Arc<Self>,
        p: &str,
        req: &ApplyPolicy,
    ) -> Result<ApplyOutcome, EngineError> {
        let policy = self.find_policy(p)?;
        let mut objects = Vec::new();
        for o in &req.objects {
            let r = self.policy_target(o)?;
            if !objects.contains(&r) {
                objects.push(r);
            }
        }
        let now = self.clock_now();
        let mut bindings = self.store.list_bindings()?;
        let new: Vec<BindingRecord> = objects
            .iter()
            .map(|o| BindingRecord {
                object: o.clone(),
                is_override: req.is_override,
                policy_id: policy.id,
                applied_at: stamp(now),
            })
            .collect();
        bindings.retain(|b| {
            !new.iter()
                .any(|n| n.object == b.object && n.is_override == b.is_override)
        });
        bindings.extend(new.iter().cloned());
        if objects.is_empty() {
            objects = bindings
                .iter()
                .filter(|b| b.policy_id == policy.id)
                .map(|b| b.object.clone())
                .collect();
        }
        if !req.dry_run {
            self.store.bind_policies(&new)?;
        }
        let policies = self.policy_specs()?;
        let in_force = effective(&bindings, &policies);
        let mut outcome = ApplyOutcome {
            policy: format!("{POLICY_PREFIX}{}", policy.id),
            dry_run: req.dry_run,
            objects: objects.clone(),
            deletes: Vec::new(),
            bytes_freed: 0,
            jobs: Vec::new(),
        };
        for o in &objects {
            let Some(rule) = in_force.get(o).and_then(|e| e.retention.clone()) else {
                continue;
            };
            let Some(volume) = self.volume_of_object(o)? else {
                continue;
            };
            let victims = self.retention_victims(&volume, &rule, now)?;
            if victims.is_empty() {
                continue;
            }
            let sizes: HashMap<String, Option<u64>> = self
                .list_snapshots(Some(o))
                .await?
                .into_iter()
                .map(|s| (s.reference, s.unique_bytes))
                .collect();
            for v in &victims {
                let reference = format!("{SNAPSHOT_PREFIX}{}", v.id);
                let unique_bytes = sizes.get(&reference).copied().flatten();
                outcome.bytes_freed += unique_bytes.unwrap_or(0);
                outcome.deletes.push(RetentionVictim {
                    snapshot: reference,
                    object: o.clone(),
                    created_at: v.created_at.clone(),
                    unique_bytes,
                });
            }
            if !req.dry_run {
                let job =
                    crate::jobs::started_by(&rule.policy, || self.enforce_retention(o, &rule))?;
                outcome.jobs.push(job.id);
            }
        }
        Ok(outcome)
    }

    /// Takes a policy off an object.
    pub fn unapply_policy(&self, p: &str, object: &str) -> Result<Policy, EngineError> {
        let policy = self.find_policy(p)?;
        let o = self.policy_target(object)?;
        if !self.store.unbind_policy(&o, policy.id)? {
            return Err(EngineError::NotFound {
                kind: "object with that policy",
                id: object.to_owned(),
            });
        }
        self.get_policy(&format!("{POLICY_PREFIX}{}", policy.id))
    }

    pub(crate) fn policy_specs(&self) -> Result<HashMap<i64, PolicySpec>, EngineError> {
        Ok(self
            .store
            .list_policies()?
            .iter()
            .map(|p| (p.id, spec_of(p)))
            .collect())
    }

    /// The pool volume of `DSOURCE-<n>` or `VDB-<n>`; None when it is gone.
    pub(crate) fn volume_of_object(&self, object: &str) -> Result<Option<String>, EngineError> {
        if let Some(id) = parse_ref(object, "DSOURCE-") {
            return Ok(self.store.get_dsource(id)?.map(|d| d.volume));
        }
        if let Some(id) = parse_ref(object, "VDB-") {
            return Ok(self.store.get_vdb(id)?.map(|v| v.volume));
        }
        Ok(None)
    }

    /// The snapshots of `volume` that `rule` lets go and nothing needs,
    /// oldest first: those for which `verdicts` finds no reason to keep.
    pub(crate) fn retention_victims(
        &self,
        volume: &str,
        rule: &InForce<Retention>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SnapshotRecord>, EngineError> {
        let snaps = self.store.list_snapshots(Some(volume))?;
        Ok(self
            .verdicts(snaps, Some(rule), now)?
            .into_iter()
            .filter(|v| v.kept_because.is_empty())
            .map(|v| v.snapshot)
            .collect())
    }

    /// Deletes, in a job on the object, what its retention lets go; what is
    /// needed is decided again inside the job, under the object's lock.
    pub(crate) fn enforce_retention(
        self: &Arc<Self>,
        object: &str,
        rule: &InForce<Retention>,
    ) -> Result<Job, EngineError> {
        let engine = self.clone();
        let (o, r) = (object.to_owned(), rule.clone());
        let job = self.jobs.spawn(
            "SNAPSHOT_RETENTION",
            Some(object.to_owned()),
            move |job| async move {
                let Some(volume) = engine.volume_of_object(&o)? else {
                    return Ok(json!({"deleted": []}));
                };
                let victims = engine.retention_victims(&volume, &r, engine.clock_now())?;
                let mut deleted = Vec::new();
                for (i, v) in victims.iter().enumerate() {
                    job.check_canceled()?;
                    let reference = format!("{SNAPSHOT_PREFIX}{}", v.id);
                    let pct = (100 * i / victims.len().max(1)) as u8;
                    job.progress(
                        pct,
                        &format!(
                            "deleting {reference} (retention of {} {})",
                            r.policy_name, r.policy
                        ),
                    );
                    engine.delete_snapshot(&reference).await?;
                    deleted.push(reference);
                }
                job.progress(100, &format!("{} snapshot(s) deleted", deleted.len()));
                Ok(json!({"deleted": deleted}))
            },
        )?;
        self.jobs.note(
            &job.id,
            EventLevel::Info,
            &format!("started by policy {} ({})", rule.policy_name, rule.policy),
        );
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PolicySpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn bad_sections_are_refused_naming_the_field() {
        let field = |v| match check_spec(&spec(v)) {
            Err(EngineError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(json!({"name": "p", "snapsync": {"cron": "61 * * * *"}})),
            "snapsync.cron"
        );
        assert_eq!(
            field(json!({"name": "p", "snapsync": {"every": "5 minutes"}})),
            "snapsync.every"
        );
        assert_eq!(
            field(json!({"name": "p", "refresh": {"cron": "* * * * *", "every": "1h"}})),
            "refresh"
        );
        assert_eq!(field(json!({"name": "p", "retention": {}})), "retention");
        assert_eq!(
            field(json!({"name": "p", "retention": {"keep_last": 0}})),
            "retention.keep_last"
        );
        assert_eq!(
            field(json!({"name": "p", "time_zone": "Mars/Olympus", "retention": {"keep_last": 1}})),
            "time_zone"
        );
        assert_eq!(
            field(json!({"name": "POLICY-3", "retention": {"keep_last": 1}})),
            "name"
        );
        assert_eq!(field(json!({"name": "p"})), "policy");
        check_spec(&spec(json!({"name": "p", "time_zone": "Europe/Paris", "snapsync": {"cron": "30 3 * * *", "window": "4h"}, "retention": {"max_age": "7d"}}))).unwrap();
    }

    #[test]
    fn slots_fall_on_the_schedule_in_its_time_zone() {
        let t = |s| parse_time(s).unwrap();
        let every = Slots::parse(
            "s",
            &Schedule {
                cron: None,
                every: Some("15m".into()),
            },
            None,
        )
        .unwrap();
        assert_eq!(
            every.latest(t("2026-03-01T10:44:59Z")),
            Some(t("2026-03-01T10:30:00Z"))
        );
        let cron = Schedule {
            cron: Some("30 3 * * *".into()),
            every: None,
        };
        let utc = Slots::parse("s", &cron, None).unwrap();
        assert_eq!(
            utc.latest(t("2026-03-01T03:30:00Z")),
            Some(t("2026-03-01T03:30:00Z"))
        );
        assert_eq!(
            utc.latest(t("2026-03-01T03:29:59Z")),
            Some(t("2026-02-28T03:30:00Z"))
        );
        let minutely = Slots::parse(
            "s",
            &Schedule {
                cron: Some("* * * * *".into()),
                every: None,
            },
            None,
        )
        .unwrap();
        assert_eq!(
            minutely.latest(t("2026-01-01T00:02:01Z")),
            Some(t("2026-01-01T00:02:00Z"))
        );
        assert_eq!(
            minutely.latest(t("2026-01-01T00:01:05Z")),
            Some(t("2026-01-01T00:01:00Z"))
        );
        // 03:30 in Paris is 02:30 UTC in winter.
        let paris = Slots::parse("s", &cron, Some("Europe/Paris")).unwrap();
        assert_eq!(
            paris.latest(t("2026-03-01T12:00:00Z")),
            Some(t("2026-03-01T02:30:00Z"))
        );
    }

    #[test]
    fn an_override_wins_only_the_sections_it_sets() {
        let mut policies = HashMap::new();
        policies.insert(
            1,
            spec(
                json!({"name": "base", "snapsync": {"every": "1h"}, "retention": {"keep_last": 5}}),
            ),
        );
        policies.insert(
            2,
            spec(json!({"name": "own", "retention": {"keep_last": 2}})),
        );
        let b = |policy_id, is_override| BindingRecord {
            object: "DSOURCE-1".into(),
            is_override,
            policy_id,
            applied_at: "2026-01-01T00:00:00Z".into(),
        };
        let e = effective(&[b(2, true), b(1, false)], &policies);
        let e = &e["DSOURCE-1"];
        assert_eq!(e.snapsync.as_ref().unwrap().policy_name, "base");
        assert_eq!(e.retention.as_ref().unwrap().value.keep_last, Some(2));
    }
}
