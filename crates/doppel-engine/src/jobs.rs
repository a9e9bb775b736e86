//! Running operations as persisted jobs.
//!
//! A job is recorded as queued, waits for its target object (jobs on one
//! object run one at a time, in order; jobs on different objects run
//! together), runs, and ends succeeded, failed (with the error a user sees)
//! or canceled. Cancellation is cooperative: job code checks its handle
//! between steps, so a step is never cut in half.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use doppel_model::{ApiError, ErrorCode, EventLevel, Job, JobEvent, JobFilter, JobState};
use doppel_store::Store;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::EngineError;

/// Runs `work`, turning a panic inside it into an internal error, so a bug
/// in a job body fails the job (and, where a body wraps its fallible
/// section in this, reaches that body's undo) instead of unwinding past the
/// code that records the end and releases the target.
pub(crate) async fn unpanicked<T, F>(work: F) -> Result<T, EngineError>
where
    F: Future<Output = Result<T, EngineError>>,
{
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        // The future is dropped right after a panic, never polled again, so
        // whatever state the panic broke is not observed.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                std::task::Poll::Ready(Err(EngineError::Internal(format!(
                    "the engine hit a bug and stopped this operation: {what}"
                ))))
            }
        }
    })
    .await
}

/// What a running job uses to report and to notice cancellation.
#[derive(Clone)]
pub struct JobHandle {
    id: String,
    store: Arc<Store>,
    cancel: CancellationToken,
    changes: Changes,
}

/// Bumped after every recorded change of any job, so followers (the API's
/// event stream) wake at once instead of polling the store.
#[derive(Clone)]
pub(crate) struct Changes(Arc<tokio::sync::watch::Sender<u64>>);

impl Default for Changes {
    fn default() -> Self {
        Changes(Arc::new(tokio::sync::watch::channel(0).0))
    }
}

impl Changes {
    fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl JobHandle {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records progress (0-100) and the step under way, as an event too.
    pub fn progress(&self, percent: u8, step: &str) {
        let recorded = self.store.set_job_progress(&self.id, percent, step);
        self.changes.bump();
        if let Err(e) = recorded {
            tracing::warn!(job = %self.id, error = %e, "cannot record job progress");
        }
        self.event(EventLevel::Info, step);
    }

    pub fn event(&self, level: EventLevel, message: &str) {
        let recorded = self.store.add_job_event(&self.id, level, message);
        self.changes.bump();
        if let Err(e) = recorded {
            tracing::warn!(job = %self.id, error = %e, "cannot record job event");
        }
    }

    /// A sink that records the plugin's INFO and ERROR lines as this job's
    /// events (DEBUG lines stay in the plugin's own log).
    pub fn plugin_log_sink(&self) -> doppel_plugin_host::LogSink {
        let job = self.clone();
        doppel_plugin_host::LogSink(Arc::new(move |level, text| {
            let level = match level {
                doppel_model::PluginLogLevel::Debug => return,
                doppel_model::PluginLogLevel::Info => EventLevel::Info,
                doppel_model::PluginLogLevel::Error => EventLevel::Error,
            };
            job.event(level, &format!("plugin: {text}"));
        }))
    }

    /// Fails with `Canceled` if someone asked to cancel this job.
    pub fn check_canceled(&self) -> Result<(), EngineError> {
        if self.cancel.is_cancelled() {
            Err(EngineError::Canceled)
        } else {
            Ok(())
        }
    }
}

/// A moment in a job's life, as observers see it.
#[derive(Clone, Debug)]
pub enum JobNotice {
    /// The job took its target and its body started.
    Started {
        job: String,
        kind: String,
        target: Option<String>,
        /// The policy (`POLICY-<n>`) whose schedule started it, if one did.
        policy: Option<String>,
    },
    /// The job ended (succeeded, failed or canceled).
    Finished {
        job: String,
        kind: String,
        target: Option<String>,
        policy: Option<String>,
        state: JobState,
        /// What a user sees of the failure.
        error: Option<ApiError>,
        /// From start to end; zero for a job canceled while queued.
        duration: std::time::Duration,
    },
}

thread_local! {
    /// The policy on whose behalf jobs spawned now on this thread run: see
    /// [`started_by`].
    static ORIGIN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, marking every job it spawns as started by `policy`, so that
/// observers (webhooks) know it from the job's first notice on. `f` is
/// synchronous: job spawning is, and the mark stays on this thread.
pub(crate) fn started_by<T>(policy: &str, f: impl FnOnce() -> T) -> T {
    let before = ORIGIN.with(|o| o.replace(Some(policy.to_owned())));
    let out = f();
    ORIGIN.with(|o| *o.borrow_mut() = before);
    out
}

/// Told of every job's start and end (metrics, webhooks).
/// Called on the job's task right after the change is recorded: it must
/// not block; slow work (a POST) belongs on a task of its own or behind a
/// channel.
pub type JobObserver = Arc<dyn Fn(&JobNotice) + Send + Sync>;

#[derive(Clone, Default)]
struct Observers(Arc<std::sync::RwLock<Vec<JobObserver>>>);

impl Observers {
    fn tell(&self, notice: &JobNotice) {
        let list = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        for o in list {
            // An observer's bug must not fail the job it watches.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| o(notice))).is_err() {
                tracing::error!(?notice, "a job observer panicked");
            }
        }
    }
}

#[derive(Default)]
struct Running {
    /// Per target: the lock jobs queue on, and which job holds it.
    targets: HashMap<String, (Arc<tokio::sync::Mutex<()>>, Option<String>)>,
    tokens: HashMap<String, CancellationToken>,
}

pub struct JobRunner {
    store: Arc<Store>,
    running: Arc<Mutex<Running>>,
    changes: Changes,
    observers: Observers,
}

impl JobRunner {
    /// Fails every job a previous run of the engine left unfinished.
    pub fn new(store: Arc<Store>) -> Result<JobRunner, EngineError> {
        let reason = ApiError {
            code: ErrorCode::Internal,
            message: "interrupted: the engine stopped while this job was queued or running; run the operation again".into(),
            action: None,
            details: Vec::new(),
            output: None,
        correlation_id: None,
        };
        let failed = store.fail_interrupted_jobs(&reason)?;
        if !failed.is_empty() {
            tracing::warn!(jobs = ?failed, "marked interrupted jobs failed");
        }
        Ok(JobRunner {
            store,
            running: Default::default(),
            changes: Default::default(),
            observers: Default::default(),
        })
    }

    /// Adds an observer told of every later job start and end.
    pub fn observe(&self, observer: JobObserver) {
        self.observers
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    /// Records a job and runs `work` in the background once `target` is free.
    pub fn spawn<F, Fut>(
        &self,
        kind: &str,
        target: Option<String>,
        work: F,
    ) -> Result<Job, EngineError>
    where
        F: FnOnce(JobHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Value, EngineError>> + Send + 'static,
    {
        let job = self.store.create_job(kind, target.as_deref())?;
        let policy = ORIGIN.with(|o| o.borrow().clone());
        let cancel = CancellationToken::new();
        // Either the target is free and this job takes it now, in call
        // order, or it queues (tokio's mutex is fair) behind the holder.
        enum Claim {
            Free,
            Taken(tokio::sync::OwnedMutexGuard<()>),
            Queued(Arc<tokio::sync::Mutex<()>>),
        }
        let claim = {
            let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
            r.tokens.insert(job.id.clone(), cancel.clone());
            match &target {
                None => Claim::Free,
                Some(t) => {
                    let (lock, holder) = r
                        .targets
                        .entry(t.clone())
                        .or_insert_with(|| (Default::default(), None));
                    match lock.clone().try_lock_owned() {
                        Ok(guard) => {
                            *holder = Some(job.id.clone());
                            Claim::Taken(guard)
                        }
                        Err(_) => {
                            let who = holder.clone().unwrap_or_else(|| "another job".into());
                            let msg = format!("queued behind {who}, which is working on {t}");
                            let _ = self.store.add_job_event(&job.id, EventLevel::Info, &msg);
                            Claim::Queued(lock.clone())
                        }
                    }
                }
            }
        };
        let handle = JobHandle {
            id: job.id.clone(),
            store: self.store.clone(),
            cancel,
            changes: self.changes.clone(),
        };
        let running = self.running.clone();
        let observers = self.observers.clone();
        let kind = kind.to_owned();
        tokio::spawn(async move {
            let _guard = match claim {
                Claim::Free => None,
                Claim::Taken(g) => Some(g),
                Claim::Queued(lock) => {
                    let g = lock.lock_owned().await;
                    if let Some(t) = &target {
                        let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(entry) = r.targets.get_mut(t) {
                            entry.1 = Some(handle.id.clone());
                        }
                    }
                    Some(g)
                }
            };
            let mut started = None;
            let outcome = if handle.cancel.is_cancelled() {
                Err(EngineError::Canceled)
            } else {
                if let Err(e) = handle.store.start_job(&handle.id) {
                    tracing::error!(job = %handle.id, error = %e, "cannot mark job running");
                }
                handle.changes.bump();
                observers.tell(&JobNotice::Started {
                    job: handle.id.clone(),
                    kind: kind.clone(),
                    target: target.clone(),
                    policy: policy.clone(),
                });
                started = Some(std::time::Instant::now());
                unpanicked(work(handle.clone())).await
            };
            let (stored, state, error) = match &outcome {
                Ok(v) => (
                    handle
                        .store
                        .finish_job(&handle.id, JobState::Succeeded, None, Some(v)),
                    JobState::Succeeded,
                    None,
                ),
                Err(EngineError::Canceled) => (
                    handle
                        .store
                        .finish_job(&handle.id, JobState::Canceled, None, None),
                    JobState::Canceled,
                    None,
                ),
                Err(e) => {
                    tracing::warn!(job = %handle.id, error = %e, "job failed");
                    let shown = e.report(&format!("job {}", handle.id));
                    (
                        handle
                            .store
                            .finish_job(&handle.id, JobState::Failed, Some(&shown), None),
                        JobState::Failed,
                        Some(shown),
                    )
                }
            };
            handle.changes.bump();
            if let Err(e) = stored {
                tracing::error!(job = %handle.id, error = %e, "cannot record the end of a job");
            }
            observers.tell(&JobNotice::Finished {
                job: handle.id.clone(),
                kind,
                target: target.clone(),
                policy,
                state,
                error,
                duration: started.map(|s| s.elapsed()).unwrap_or_default(),
            });
            drop(_guard);
            let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
            r.tokens.remove(&handle.id);
            if let Some(t) = &target {
                if let Some(entry) = r.targets.get_mut(t) {
                    entry.1 = None;
                    // Nobody else waits when only the map holds the lock.
                    if Arc::strong_count(&entry.0) == 1 {
                        r.targets.remove(t);
                    }
                }
            }
        });
        Ok(job)
    }

    /// The job holding `target` (or waiting for it) right now, if any.
    pub fn busy_with(&self, target: &str) -> Option<String> {
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        r.targets
            .get(target)
            .map(|(_, holder)| holder.clone().unwrap_or_else(|| "a queued job".into()))
    }

    /// Adds an event to a job from outside it (who started it, and why).
    pub fn note(&self, id: &str, level: EventLevel, message: &str) {
        if let Err(e) = self.store.add_job_event(id, level, message) {
            tracing::warn!(job = %id, error = %e, "cannot record job event");
        }
        self.changes.bump();
    }

    /// Wakes on every later change of any job (state, progress, events).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.0.subscribe()
    }

    pub fn get(&self, id: &str) -> Result<Job, EngineError> {
        self.store
            .get_job(id)?
            .ok_or_else(|| EngineError::NotFound {
                kind: "job",
                id: id.to_owned(),
            })
    }

    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, EngineError> {
        Ok(self.store.list_jobs(filter)?)
    }

    pub fn events(&self, id: &str, after: i64) -> Result<Vec<JobEvent>, EngineError> {
        self.get(id)?;
        Ok(self.store.job_events(id, after)?)
    }

    /// Asks a queued or running job to stop at its next step boundary.
    pub fn cancel(&self, id: &str) -> Result<Job, EngineError> {
        let job = self.get(id)?;
        if job.state.is_finished() {
            return Err(EngineError::Conflict(format!(
                "{id} already {}",
                job.state.as_str()
            )));
        }
        let r = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = r.tokens.get(id) {
            t.cancel();
            let _ = self
                .store
                .add_job_event(id, EventLevel::Warning, "cancel requested");
            self.changes.bump();
        }
        drop(r);
        self.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn wait_finished(r: &JobRunner, id: &str) -> Job {
        for _ in 0..500 {
            let j = r.get(id).unwrap();
            if j.state.is_finished() {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} did not finish");
    }

    #[tokio::test]
    async fn jobs_on_one_target_run_in_order_and_others_run_alongside() {
        let r = JobRunner::new(Arc::new(Store::open_in_memory().unwrap())).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (o1, g1) = (order.clone(), gate.clone());
        let a = r
            .spawn("A", Some("X".into()), move |h| async move {
                h.progress(50, "first half");
                g1.notified().await;
                o1.lock().unwrap().push("a");
                Ok(Value::Null)
            })
            .unwrap();
        let o2 = order.clone();
        let b = r
            .spawn("B", Some("X".into()), move |_| async move {
                o2.lock().unwrap().push("b");
                Ok(serde_json::json!({"made": "b"}))
            })
            .unwrap();
        let o3 = order.clone();
        let c = r
            .spawn("C", Some("Y".into()), move |_| async move {
                o3.lock().unwrap().push("c");
                Ok(Value::Null)
            })
            .unwrap();
        // C, on another object, finishes while A still holds X and B waits.
        assert_eq!(wait_finished(&r, &c.id).await.state, JobState::Succeeded);
        assert_eq!(r.get(&b.id).unwrap().state, JobState::Queued);
        assert_eq!(r.get(&a.id).unwrap().progress, 50);
        let waiting = r.events(&b.id, 0).unwrap();
        assert!(
            waiting[0]
                .message
                .contains(&format!("queued behind {}", a.id)),
            "{waiting:?}"
        );
        gate.notify_one();
        assert_eq!(wait_finished(&r, &b.id).await.result.unwrap()["made"], "b");
        assert_eq!(*order.lock().unwrap(), vec!["c", "a", "b"]);
    }

    #[tokio::test]
    async fn observers_learn_which_policy_started_a_job() {
        let r = JobRunner::new(Arc::new(Store::open_in_memory().unwrap())).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        r.observe(Arc::new(move |n| {
            let (JobNotice::Started { policy, .. } | JobNotice::Finished { policy, .. }) = n;
            s.lock().unwrap().push(policy.clone());
        }));
        let by_policy = started_by("POLICY-7", || {
            r.spawn("A", None, |_| async { Ok(Value::Null) }).unwrap()
        });
        let by_user = r.spawn("B", None, |_| async { Ok(Value::Null) }).unwrap();
        wait_finished(&r, &by_policy.id).await;
        wait_finished(&r, &by_user.id).await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(
            seen,
            [None, None, Some("POLICY-7".into()), Some("POLICY-7".into())]
        );
    }

    #[tokio::test]
    async fn a_panicking_job_fails_as_internal_and_frees_its_target() {
        let r = JobRunner::new(Arc::new(Store::open_in_memory().unwrap())).unwrap();
        let p = r
            .spawn("P", Some("X".into()), |h| async move {
                h.progress(10, "about to trip");
                let missing: Option<u8> = "not a number".parse().ok();
                missing.expect("exists");
                Ok(Value::Null)
            })
            .unwrap();
        let next = r
            .spawn("N", Some("X".into()), |_| async {
                Ok(serde_json::json!("ran"))
            })
            .unwrap();
        let failed = wait_finished(&r, &p.id).await;
        assert_eq!(failed.state, JobState::Failed);
        let err = failed.error.unwrap();
        assert_eq!(err.code, ErrorCode::Internal);
        let id = err.correlation_id.clone().expect("a correlation id");
        assert!(
            err.message.contains(&id) && err.message.contains("exists"),
            "{err:?}"
        );
        // The target's lock was released: the job queued behind it ran.
        assert_eq!(wait_finished(&r, &next.id).await.result.unwrap(), "ran");
    }

    #[tokio::test]
    async fn a_panic_inside_a_fallible_section_reaches_its_undo() {
        let undone = Arc::new(Mutex::new(false));
        let u = undone.clone();
        let outcome: Result<(), EngineError> = async move {
            let section = unpanicked(async {
                let v: Vec<u8> = Vec::new();
                let _ = v[3];
                Ok(())
            })
            .await;
            if section.is_err() {
                *u.lock().unwrap() = true;
            }
            section
        }
        .await;
        assert!(matches!(outcome, Err(EngineError::Internal(m)) if m.contains("out of bounds")));
        assert!(*undone.lock().unwrap());
    }

    #[tokio::test]
    async fn failure_and_cancellation_are_recorded() {
        let r = JobRunner::new(Arc::new(Store::open_in_memory().unwrap())).unwrap();
        let f = r
            .spawn("F", None, |_| async {
                Err(EngineError::NotFound {
                    kind: "thing",
                    id: "t1".into(),
                })
            })
            .unwrap();
        let failed = wait_finished(&r, &f.id).await;
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.error.unwrap().code, ErrorCode::NotFound);

        let started = Arc::new(tokio::sync::Notify::new());
        let s2 = started.clone();
        let c = r
            .spawn("C", None, move |h| async move {
                s2.notify_one();
                loop {
                    h.check_canceled()?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .unwrap();
        started.notified().await;
        r.cancel(&c.id).unwrap();
        assert_eq!(wait_finished(&r, &c.id).await.state, JobState::Canceled);
        assert!(matches!(r.cancel(&c.id), Err(EngineError::Conflict(_))));
        assert!(matches!(
            r.get("JOB-999"),
            Err(EngineError::NotFound { .. })
        ));
    }
}
