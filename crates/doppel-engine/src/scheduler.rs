//! The scheduler: each pass turns the policies in force into ordinary jobs
//! (sync, VDB snapshot, refresh, retention).
//!
//! Per object and kind the store keeps the last slot dealt with. A pass
//! looks at the newest slot at or before now: if it is newer than that (or,
//! the first time, than when the policy was applied), the slot is recorded
//! first, then its job started, so a slot never runs twice, even across a
//! crash. Slots missed while the engine was down collapse into that newest
//! one: a restart catches up at most once. A slot whose object is busy
//! (a job holds or waits for it) or disabled, or that is older than its
//! SnapSync window, is recorded as skipped, with the reason.
//!
//! Bookmark expiry and VDB expiry (with its warning ahead) are dealt with
//! in the same pass (`retain::lifecycle_pass`).
//!
//! The clock is the system's, except on an engine started with
//! `--test-clock`: there time stands still until an administrator sets it,
//! which also runs one pass, and no pass runs by itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use doppel_model::{EventLevel, ScheduleRun, SchedulerPass};
use doppel_store::RunRecord;

use crate::hosts::parse_ref;
use crate::policies::{effective, parse_duration, parse_time, stamp, InForce, Slots};
use crate::{Engine, EngineError};

/// How often the system-clock scheduler runs a pass: slots are minutes.
const PASS_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Default)]
pub(crate) struct Scheduler {
    /// Some: the test clock's time; None: the system clock.
    test_clock: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Passes never overlap (a slot is read and recorded by one pass).
    pass: tokio::sync::Mutex<()>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// How long before a VDB's expiry it is warned of; None: the default.
    pub(crate) expiry_warning: std::sync::Mutex<Option<chrono::Duration>>,
}

impl Scheduler {
    pub(crate) fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}

impl Engine {
    /// Now, by the scheduler's clock.
    pub fn clock_now(&self) -> DateTime<Utc> {
        self.scheduler
            .test_clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(Utc::now)
    }

    /// Whether the engine runs on the test clock.
    pub fn test_clock(&self) -> bool {
        self.scheduler
            .test_clock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Runs the scheduler on the system clock: a pass now, then one every
    /// few seconds.
    pub fn start_scheduler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                let Some(engine) = weak.upgrade() else { return };
                if let Err(e) = engine.scheduler_pass().await {
                    tracing::warn!(error = %e, "scheduling pass failed");
                }
                drop(engine);
                tokio::time::sleep(PASS_INTERVAL).await;
            }
        });
        *self
            .scheduler
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Puts the engine on the test clock, at `now`; no pass runs until
    /// [`Engine::set_test_clock`]. Only `doppel serve --test-clock` calls it.
    pub fn use_test_clock(&self, now: DateTime<Utc>) {
        *self
            .scheduler
            .test_clock
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// Sets the test clock and runs one scheduling pass at that time.
    pub async fn set_test_clock(self: &Arc<Self>, now: &str) -> Result<SchedulerPass, EngineError> {
        if !self.test_clock() {
            return Err(EngineError::Conflict(
                "this engine runs on the system clock; only an engine started with --test-clock takes a time".into(),
            ));
        }
        let t = parse_time(now).ok_or_else(|| EngineError::InvalidInput {
            field: "now".into(),
            reason: format!("{now:?} is not an RFC 3339 time"),
        })?;
        self.use_test_clock(t);
        self.scheduler_pass().await
    }

    /// What the scheduler did, newest first.
    pub fn schedule_runs(
        &self,
        object: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduleRun>, EngineError> {
        let object = object.map(|o| self.policy_target(o)).transpose()?;
        Ok(self
            .store
            .list_runs(object.as_deref(), limit.clamp(1, 10_000))?
            .into_iter()
            .map(run_model)
            .collect())
    }

    /// One pass over every object with a policy in force.
    pub async fn scheduler_pass(self: &Arc<Self>) -> Result<SchedulerPass, EngineError> {
        let _one = self.scheduler.pass.lock().await;
        let now = self.clock_now();
        let bindings = self.store.list_bindings()?;
        let policies = self.policy_specs()?;
        let slots = self.store.schedule_slots()?;
        let mut pass = SchedulerPass {
            now: stamp(now),
            runs: Vec::new(),
        };
        let mut objects: Vec<_> = effective(&bindings, &policies).into_iter().collect();
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        for (object, e) in objects {
            let (enabled, is_vdb) = if let Some(id) = parse_ref(&object, "DSOURCE-") {
                match self.store.get_dsource(id)? {
                    Some(d) => (d.enabled, false),
                    None => continue,
                }
            } else if let Some(id) = parse_ref(&object, "VDB-") {
                match self.store.get_vdb(id)? {
                    Some(v) => (v.enabled, true),
                    None => continue,
                }
            } else {
                continue;
            };
            let mut due: Vec<(&str, InForce<doppel_model::Schedule>, Option<i64>)> = Vec::new();
            if !is_vdb {
                if let Some(s) = &e.snapsync {
                    let window = s
                        .value
                        .window
                        .as_deref()
                        .and_then(|w| parse_duration("snapsync.window", w).ok());
                    due.push(("snapsync", in_force(s, s.value.schedule()), window));
                }
            } else {
                if let Some(s) = &e.vdb_snapshot {
                    due.push(("vdb_snapshot", s.clone(), None));
                }
                if let Some(s) = &e.refresh {
                    due.push(("refresh", s.clone(), None));
                }
            }
            for (kind, sched, window) in due {
                let slots_of = match Slots::parse(kind, &sched.value, sched.time_zone.as_deref()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(object = %object, kind, error = %e, "a stored schedule does not parse");
                        continue;
                    }
                };
                let Some(slot) = slots_of.latest(now) else {
                    continue;
                };
                let since = slots
                    .get(&(object.clone(), kind.to_owned()))
                    .unwrap_or(&sched.applied_at);
                if parse_time(since).is_some_and(|s| slot <= s) {
                    continue;
                }
                let reason = if window.is_some_and(|w| (now - slot).num_seconds() > w) {
                    Some(format!(
                        "the slot's window ({}) had passed",
                        e.snapsync
                            .as_ref()
                            .and_then(|s| s.value.window.clone())
                            .unwrap_or_default()
                    ))
                } else if !enabled {
                    Some("the object is disabled".to_owned())
                } else {
                    self.jobs
                        .busy_with(&object)
                        .map(|j| format!("the object was busy with {j}"))
                };
                let mut run = RunRecord {
                    object: object.clone(),
                    kind: kind.to_owned(),
                    policy: Some(sched.policy.clone()),
                    slot: stamp(slot),
                    outcome: if reason.is_some() {
                        "skipped"
                    } else {
                        "started"
                    }
                    .into(),
                    job: None,
                    reason: reason.clone(),
                    at: stamp(now),
                };
                // Recorded before the job starts: a crash from here on
                // loses this slot rather than running it twice.
                self.store.record_slot(&run)?;
                if reason.is_none() {
                    let started = crate::jobs::started_by(&sched.policy, || match kind {
                        "snapsync" => self.sync_dsource(
                            &object,
                            e.snapsync.as_ref().and_then(|s| s.value.parameters.clone()),
                            false,
                        ),
                        "vdb_snapshot" => self.snapshot_vdb(&object),
                        _ => self.refresh_vdb(&object, None, false),
                    });
                    match started {
                        Ok(job) => {
                            self.jobs.note(
                                &job.id,
                                EventLevel::Info,
                                &format!(
                                    "started by policy {} ({}) for the slot {}",
                                    sched.policy_name, sched.policy, run.slot
                                ),
                            );
                            self.store.set_run_job(&object, kind, &run.slot, &job.id)?;
                            run.job = Some(job.id);
                        }
                        Err(err) => {
                            run.outcome = "skipped".into();
                            run.reason = Some(format!("the job could not start: {err}"));
                            self.store.record_slot(&run)?;
                        }
                    }
                }
                pass.runs.push(run_model(run));
            }
            if let Some(rule) = &e.retention {
                if self.jobs.busy_with(&object).is_some() {
                    continue;
                }
                let Some(volume) = self.volume_of_object(&object)? else {
                    continue;
                };
                if self.retention_victims(&volume, rule, now)?.is_empty() {
                    continue;
                }
                let job = crate::jobs::started_by(&rule.policy, || {
                    self.enforce_retention(&object, rule)
                })?;
                let run = RunRecord {
                    object: object.clone(),
                    kind: "retention".into(),
                    policy: Some(rule.policy.clone()),
                    slot: stamp(now),
                    outcome: "started".into(),
                    job: Some(job.id),
                    reason: None,
                    at: stamp(now),
                };
                self.store.record_slot(&run)?;
                pass.runs.push(run_model(run));
            }
        }
        pass.runs.extend(self.lifecycle_pass(now, &slots)?);
        Ok(pass)
    }
}

fn in_force<T>(s: &InForce<T>, value: doppel_model::Schedule) -> InForce<doppel_model::Schedule> {
    InForce {
        value,
        policy: s.policy.clone(),
        policy_name: s.policy_name.clone(),
        time_zone: s.time_zone.clone(),
        applied_at: s.applied_at.clone(),
    }
}

pub(crate) fn run_model(r: RunRecord) -> ScheduleRun {
    ScheduleRun {
        object: r.object,
        kind: r.kind,
        policy: r.policy,
        slot: r.slot,
        outcome: r.outcome,
        job: r.job,
        reason: r.reason,
        at: r.at,
    }
}
