//! `GET /api/v1/jobs/{job}/stream`: a job's progress as server-sent events.
//!
//! Events, in order: `job` (the job, each time its state, progress or step
//! changes), `event` (each recorded [`doppel_model::JobEvent`], its `seq` as the SSE id),
//! and last `end` (the finished job), after which the stream closes. The
//! stream reads the store each time the engine announces a job change; a
//! `Last-Event-ID` header resumes after that event.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;

use crate::extract::ApiPath;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use doppel_engine::Engine;
use doppel_model::{Job, JobState};
use futures_util::stream::{self, Stream};

use crate::{Failure, Result};

/// The stream wakes on every job change the engine records; this bounds
/// the wait should a change ever go unannounced.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

struct Follow {
    engine: Arc<Engine>,
    changes: tokio::sync::watch::Receiver<u64>,
    job: String,
    after: i64,
    last: Option<(JobState, u8, String)>,
    ready: VecDeque<Event>,
    done: bool,
}

fn json_event(kind: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(kind)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(kind).data("null"))
}

impl Follow {
    /// Reads the job, then the events recorded since the last look: a job
    /// seen finished has recorded all its events, so none is missed.
    fn look(&mut self) {
        let job: Job = match self.engine.jobs().get(&self.job) {
            Ok(j) => j,
            Err(e) => {
                self.ready
                    .push_back(json_event("error", &Failure::from(e).0));
                self.done = true;
                return;
            }
        };
        match self.engine.jobs().events(&self.job, self.after) {
            Ok(events) => {
                for e in events {
                    self.after = self.after.max(e.seq);
                    self.ready
                        .push_back(json_event("event", &e).id(e.seq.to_string()));
                }
            }
            Err(e) => {
                self.ready
                    .push_back(json_event("error", &Failure::from(e).0));
                self.done = true;
                return;
            }
        }
        if job.state.is_finished() {
            self.ready.push_back(json_event("end", &job));
            self.done = true;
            return;
        }
        let now = (job.state, job.progress, job.step.clone());
        if self.last.as_ref() != Some(&now) {
            self.ready.push_back(json_event("job", &job));
            self.last = Some(now);
        }
    }
}

/// Follows a job until it ends, as server-sent events: `job` (the job, when
/// its state, progress or step changes), `event` (a `JobEvent`, id = its
/// `seq`) and finally `end` (the finished `Job`); then the stream closes.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/stream", tag = "jobs",
    params(("job" = String, Path, description = "`JOB-<n>`"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event's `seq`")),
    responses((status = 200, description = "`text/event-stream` of `job` (Job), `event` (JobEvent) and a last `end` (Job)",
        content_type = "text/event-stream", body = String)))]
pub(crate) async fn stream_job(
    State(engine): State<Arc<Engine>>,
    ApiPath(job): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    engine.jobs().get(&job)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let follow = Follow {
        // Subscribed before the first look, so no change falls in between.
        changes: engine.jobs().subscribe(),
        engine,
        job,
        after,
        last: None,
        ready: VecDeque::new(),
        done: false,
    };
    let events = stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(e) = f.ready.pop_front() {
                return Some((Ok(e), f));
            }
            if f.done {
                return None;
            }
            // Marks what this look will see as seen, before looking.
            f.changes.borrow_and_update();
            f.look();
            if f.ready.is_empty() {
                let _ = tokio::time::timeout(FALLBACK_POLL, f.changes.changed()).await;
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
