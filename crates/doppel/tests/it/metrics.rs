//! Prometheus metrics at `/metrics`, read as Prometheus reads them.

use crate::support::*;

/// `/metrics` with `token`: the status and, when it answered, the samples
/// as a Prometheus text parser reads them.
fn scrape(engine: &Engine, token: Option<&str>) -> (u16, Option<prometheus_parse::Scrape>) {
    let mut req = reqwest::blocking::Client::new().get(format!("{}/metrics", engine.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("not the text exposition format ({e}):\n{text}"));
    (status, Some(parsed))
}

/// The value of `name` whose labels include `labels` (0 when absent, as
/// Prometheus reads a series that does not exist yet).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .unwrap_or(0.0)
}

#[test]
fn metrics_parse_as_prometheus_text_for_an_auditor_and_move_after_a_job() {
    let engine = Engine::start();
    assert_eq!(scrape(&engine, None).0, 401, "metrics need a token");
    let auditor = add_user(&engine, "audrey", "auditor");
    let (status, before) = scrape(&engine, Some(&auditor));
    assert_eq!(status, 200);
    let before = before.unwrap();
    assert_eq!(value(&before, "doppel_up", &[]), 1.0);
    assert!(value(&before, "doppel_pool_bytes", &[("kind", "size")]) > 1e9);
    assert!(value(&before, "doppel_pool_bytes", &[("kind", "free")]) > 0.0);
    assert!(value(&before, "doppel_pool_usage_percent", &[]) > 0.0);
    assert_eq!(value(&before, "doppel_objects", &[("kind", "plugin")]), 0.0);
    let env_add = [("type", "ENVIRONMENT_ADD"), ("state", "failed")];
    assert_eq!(value(&before, "doppel_jobs_finished_total", &env_add), 0.0);

    // A job that fails fast: nothing listens on the port.
    let port = free_port().to_string();
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "secret").unwrap();
    engine
        .cli(&[
            "env",
            "add",
            "--name",
            "nowhere",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            "nobody",
            "--password-file",
            pw.path().to_str().unwrap(),
        ])
        .fails(10);
    engine.install(&build_plugin("all-ops-staged"));

    let after = scrape(&engine, Some(&auditor)).1.unwrap();
    assert_eq!(
        value(
            &after,
            "doppel_jobs_started_total",
            &[("type", "ENVIRONMENT_ADD")]
        ),
        1.0
    );
    assert_eq!(value(&after, "doppel_jobs_finished_total", &env_add), 1.0);
    assert_eq!(value(&after, "doppel_jobs", &env_add), 1.0);
    assert_eq!(
        value(&after, "doppel_job_duration_seconds_count", &env_add).max(value(
            &after,
            "doppel_job_duration_seconds",
            &env_add
        )),
        1.0,
        "one duration observed"
    );
    assert_eq!(value(&after, "doppel_objects", &[("kind", "plugin")]), 1.0);
    assert_eq!(
        value(&after, "doppel_objects", &[("kind", "environment")]),
        0.0,
        "a failed add leaves no environment"
    );
    assert_eq!(value(&after, "doppel_mounts", &[("state", "active")]), 0.0);
    assert!(
        after
            .samples
            .iter()
            .any(|x| x.metric == "doppel_plugin_workers"),
        "worker counts are shown per plugin"
    );
}
