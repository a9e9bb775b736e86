//! Prometheus metrics of the engine, rendered in the text exposition format
//! (the API serves them at `/metrics`).
//!
//! Two kinds: what happens (jobs started and finished, their durations,
//! plugin operation durations) is counted as it happens, fed by a job
//! observer and the plugin-call path; what is (jobs by state, pool space,
//! objects, workers, mounts) is read when scraped, so a scrape always shows
//! the state now and nothing has to be kept in step with the store.
//! The registry is the engine's own (not prometheus' global one), so
//! engines in one process (the engine crate's tests) do not mix.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::jobs::JobNotice;
use crate::{pool_task, Engine, EngineError};

/// Job durations span a status call to a day-long sync.
const JOB_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0,
];
/// Plugin operations: from a few milliseconds to hours of copying.
const PLUGIN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
];

pub(crate) struct Metrics {
    registry: Registry,
    jobs_started: IntCounterVec,
    jobs_finished: IntCounterVec,
    job_duration: HistogramVec,
    plugin_duration: HistogramVec,
    jobs: IntGaugeVec,
    pool_bytes: IntGaugeVec,
    pool_usage: prometheus::Gauge,
    objects: IntGaugeVec,
    workers: IntGaugeVec,
    mounts: IntGaugeVec,
    up: IntGauge,
    webhook_deliveries: IntCounterVec,
    webhook_dropped: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: T,
) -> prometheus::Result<T> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Builds the collectors; their names and labels are fixed here, so an
/// error is a bug in this function (caught by its unit test).
fn build() -> prometheus::Result<Metrics> {
    let registry = Registry::new();
    let r = &registry;
    Ok(Metrics {
        jobs_started: register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "doppel_jobs_started_total",
                    "Jobs whose body started, by type.",
                ),
                &["type"],
            )?,
        )?,
        jobs_finished: register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "doppel_jobs_finished_total",
                    "Jobs that ended, by type and final state.",
                ),
                &["type", "state"],
            )?,
        )?,
        job_duration: register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "doppel_job_duration_seconds",
                    "Time from a job's start to its end, by type and final state.",
                )
                .buckets(JOB_BUCKETS.to_vec()),
                &["type", "state"],
            )?,
        )?,
        plugin_duration: register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "doppel_plugin_operation_duration_seconds",
                    "Plugin operations called by jobs, by operation and outcome.",
                )
                .buckets(PLUGIN_BUCKETS.to_vec()),
                &["operation", "outcome"],
            )?,
        )?,
        jobs: register(
            r,
            IntGaugeVec::new(
                Opts::new("doppel_jobs", "Recorded jobs, by type and state."),
                &["type", "state"],
            )?,
        )?,
        pool_bytes: register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "doppel_pool_bytes",
                    "Storage pool space: size, used, free and reclaiming (still being freed).",
                ),
                &["kind"],
            )?,
        )?,
        pool_usage: register(
            r,
            prometheus::Gauge::new(
                "doppel_pool_usage_percent",
                "Percent of the pool not free for new data (what the capacity thresholds compare).",
            )?,
        )?,
        objects: register(
            r,
            IntGaugeVec::new(
                Opts::new("doppel_objects", "Objects the engine keeps, by kind."),
                &["kind"],
            )?,
        )?,
        workers: register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "doppel_plugin_workers",
                    "Running plugin worker processes, by plugin.",
                ),
                &["plugin"],
            )?,
        )?,
        mounts: register(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "doppel_mounts",
                    "Recorded mounts on hosts, by whether they are in place (active) or lost.",
                ),
                &["state"],
            )?,
        )?,
        up: register(
            r,
            IntGauge::new("doppel_up", "1 while the engine answers.")?,
        )?,
        webhook_deliveries: register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "doppel_webhook_deliveries_total",
                    "Webhook deliveries that ended, by outcome (delivered, failed).",
                ),
                &["outcome"],
            )?,
        )?,
        webhook_dropped: register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "doppel_webhook_events_dropped_total",
                    "Events not sent to webhooks because their queue was full, by kind.",
                ),
                &["kind"],
            )?,
        )?,
        registry,
    })
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, EngineError> {
        build().map_err(|e| EngineError::Internal(format!("setting up metrics: {e}")))
    }

    /// Counts a job's start and end (a [`crate::jobs::JobObserver`]).
    pub(crate) fn job(&self, notice: &JobNotice) {
        match notice {
            JobNotice::Started { kind, .. } => {
                self.jobs_started.with_label_values(&[kind]).inc();
            }
            JobNotice::Finished {
                kind,
                state,
                duration,
                ..
            } => {
                let labels = [kind.as_str(), state.as_str()];
                self.jobs_finished.with_label_values(&labels).inc();
                self.job_duration
                    .with_label_values(&labels)
                    .observe(duration.as_secs_f64());
            }
        }
    }

    pub(crate) fn webhook_delivery(&self, outcome: &str) {
        self.webhook_deliveries.with_label_values(&[outcome]).inc();
    }

    pub(crate) fn webhook_dropped(&self, kind: &str) {
        self.webhook_dropped.with_label_values(&[kind]).inc();
    }

    #[cfg(test)]
    pub(crate) fn webhook_dropped_count(&self, kind: &str) -> u64 {
        self.webhook_dropped.with_label_values(&[kind]).get()
    }

    /// Records one plugin operation's duration.
    pub(crate) fn plugin_operation(&self, operation: &str, ok: bool, took: Duration) {
        let outcome = if ok { "succeeded" } else { "failed" };
        self.plugin_duration
            .with_label_values(&[operation, outcome])
            .observe(took.as_secs_f64());
    }
}

impl Engine {
    /// Every metric in the Prometheus text exposition format.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let m = &self.metrics;
        m.up.set(1);
        m.jobs.reset();
        for (kind, state, n) in self.store.job_counts()? {
            m.jobs.with_label_values(&[&kind, &state]).set(n);
        }
        let pool = self.pool.clone();
        let space = pool_task(move || pool.space()).await?;
        for (kind, v) in [
            ("size", space.size),
            ("used", space.used),
            ("free", space.free),
            ("reclaiming", space.reclaiming),
        ] {
            m.pool_bytes
                .with_label_values(&[kind])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        m.pool_usage.set(crate::capacity::usage_percent(&space));
        self.note_capacity(&self.capacity_of(&space));
        let plugins = self.store.list_plugins()?;
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (kind, n) in [
            ("plugin", plugins.len()),
            ("environment", self.store.list_environments()?.len()),
            ("dsource", self.store.list_dsources()?.len()),
            ("vdb", self.store.list_vdbs()?.len()),
            ("snapshot", self.store.list_snapshots(None)?.len()),
        ] {
            m.objects.with_label_values(&[kind]).set(count(n));
        }
        m.workers.reset();
        for p in &plugins {
            let running = self
                .loaded(p)
                .map(|l| self.host.worker_pids(&l).len())
                .unwrap_or(0);
            m.workers.with_label_values(&[&p.id]).set(count(running));
        }
        let mounts = self.list_mounts()?;
        let active = mounts.iter().filter(|x| x.active).count();
        m.mounts.with_label_values(&["active"]).set(count(active));
        m.mounts
            .with_label_values(&["lost"])
            .set(count(mounts.len() - active));
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&m.registry.gather(), &mut out)
            .map_err(|e| EngineError::Internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_collector_registers_under_its_own_name() {
        let m = super::build().unwrap();
        m.up.set(1);
        m.jobs.with_label_values(&["X", "running"]).set(1);
        m.pool_bytes.with_label_values(&["size"]).set(1);
        m.objects.with_label_values(&["vdb"]).set(1);
        m.workers.with_label_values(&["p"]).set(1);
        m.mounts.with_label_values(&["active"]).set(1);
        m.jobs_started.with_label_values(&["X"]).inc();
        m.jobs_finished.with_label_values(&["X", "failed"]).inc();
        m.job_duration
            .with_label_values(&["X", "failed"])
            .observe(1.0);
        m.plugin_duration
            .with_label_values(&["o", "succeeded"])
            .observe(1.0);
        m.pool_usage.set(1.0);
        m.webhook_delivery("failed");
        m.webhook_dropped("job.started");
        assert_eq!(m.registry.gather().len(), 13);
    }
}
