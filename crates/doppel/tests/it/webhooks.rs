//! Webhooks against real HTTP receivers on 127.0.0.1: signed job events
//! arrive (checked with the secret here, independently of the engine),
//! a receiver that fails twice gets each event on the third try, a
//! receiver that never answers does not hold up a job, `webhook test`
//! reports the receiver's answer, capacity crossings are sent, and bad
//! webhooks are refused naming the field.

use doppel_testworld::World;
use serde_json::Value;

use crate::support::*;

fn events_of<'a>(seen: &'a [Received], kind: &str, job: &str) -> Vec<&'a Received> {
    seen.iter()
        .filter(|r| {
            let e = r.event();
            e["kind"] == kind && e["data"]["job"] == job
        })
        .collect()
}

#[test]
fn signed_job_events_arrive_on_the_third_try_and_a_dead_receiver_holds_up_no_job() {
    let world = World::new(&["host"]);
    let host = world.host("host");
    let dir = tempfile::tempdir().unwrap();
    let pw = secret_file(
        dir.path(),
        "pw",
        host.user("delphix").password.as_deref().unwrap(),
    );
    let engine = Engine::start_with(&["--webhook-first-retry", "0.1", "--webhook-timeout", "60"]);
    let flaky = Receiver::start(|n| Some(if n <= 2 { 500 } else { 200 }));
    let dead = Receiver::start(|_| None);
    let fine = Receiver::start(|_| Some(204));
    add_webhook(&engine, "ops", &flaky.url, &[]);
    add_webhook(&engine, "dead", &dead.url, &["job.failed"]);
    add_webhook(&engine, "fine", &fine.url, &[]);

    // A job that succeeds, and one that fails (nothing listens there).
    engine.add_env("host", host, "delphix", "--password-file", &pw);
    let port = free_port().to_string();
    let failing = [
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
        &pw,
    ];
    engine.cli(&failing).fails(10);
    let jobs = engine.cli(&["job", "list", "-o", "json"]).json();
    let job_of = |state: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "ENVIRONMENT_ADD" && j["state"] == state)
            .unwrap_or_else(|| panic!("no {state} ENVIRONMENT_ADD in {jobs}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ok_job, failed_job) = (job_of("succeeded"), job_of("failed"));

    // The failed job ended while the dead receiver still holds its
    // delivery: the try is under way, recorded pending.
    dead.wait_for("the failed job's event at the dead receiver", |s| {
        !events_of(s, "job.failed", &failed_job).is_empty()
    });
    assert_eq!(
        engine.client().get_job(&failed_job).unwrap().state.as_str(),
        "failed"
    );
    let shown = engine
        .cli(&["webhook", "show", "dead", "-o", "json"])
        .json();
    let pending = &shown["deliveries"][0];
    assert_eq!(pending["event"], "job.failed", "{shown}");
    assert_eq!(pending["state"], "pending", "{shown}");
    // Its filter keeps everything else away.
    assert!(dead
        .seen()
        .iter()
        .all(|r| r.event()["kind"] == "job.failed"));

    // Each event reaches the flaky receiver on its third try, the same
    // delivery, body and signature each time, signed with the secret.
    let seen = flaky.wait_for("four job events, three tries each", |s| {
        [
            ("job.started", &ok_job),
            ("job.succeeded", &ok_job),
            ("job.started", &failed_job),
            ("job.failed", &failed_job),
        ]
        .iter()
        .all(|(k, j)| events_of(s, k, j).len() == 3)
    });
    for (kind, job) in [("job.succeeded", &ok_job), ("job.failed", &failed_job)] {
        let tries = events_of(&seen, kind, job);
        for t in &tries {
            t.assert_signed_with(WEBHOOK_SECRET);
            assert_eq!(t.header("x-doppel-event"), kind);
            assert_eq!(t.body, tries[0].body);
            assert_eq!(
                t.header("x-doppel-delivery"),
                tries[0].header("x-doppel-delivery")
            );
            let stamp: u64 = t.header("x-doppel-timestamp").parse().unwrap();
            assert!(stamp > 1_700_000_000);
        }
        let e = tries[0].event();
        assert_eq!(e["data"]["type"], "ENVIRONMENT_ADD");
        assert_eq!(e["data"]["policy"], Value::Null, "a user started it");
        assert!(!e["id"].as_str().unwrap().is_empty() && e["at"].is_string());
    }
    let failed = events_of(&seen, "job.failed", &failed_job)[0].event();
    assert_eq!(failed["data"]["state"], "failed");
    assert_eq!(failed["data"]["error"]["code"], "host_failed", "{failed}");
    assert!(failed["data"]["error"]["message"].is_string());

    // `webhook show` lists the deliveries with how they went; never the secret.
    let shown = engine.cli(&["webhook", "show", "ops", "-o", "json"]).json();
    assert!(!shown.to_string().contains(WEBHOOK_SECRET));
    let deliveries = shown["deliveries"].as_array().unwrap();
    assert!(deliveries.len() >= 4, "{shown}");
    assert!(deliveries
        .iter()
        .all(|d| d["state"] == "delivered" && d["attempts"] == 3 && d["status"] == 200));
    let table = engine.cli(&["webhook", "show", "ops"]).ok().to_owned();
    assert!(
        table.contains("delivered") && table.contains("job.failed"),
        "{table}"
    );

    // `webhook test`: a signed ping, and what the receiver answered.
    let out = engine.cli(&["webhook", "test", "fine"]).ok().to_owned();
    assert!(
        out.contains("delivered: the receiver answered 204"),
        "{out}"
    );
    let ping = fine.wait_for("the ping", |s| {
        s.iter().any(|r| r.event()["kind"] == "ping")
    });
    let ping = ping.iter().find(|r| r.event()["kind"] == "ping").unwrap();
    ping.assert_signed_with(WEBHOOK_SECRET);
    let refused = engine.cli(&["webhook", "test", "ops"]);
    let err = refused.fails(1);
    assert!(
        refused.stdout.contains("the receiver answered 500"),
        "{}{err}",
        refused.stdout
    );
}

#[test]
fn capacity_crossings_are_sent_and_bad_webhooks_are_refused_naming_the_field() {
    // Any pool is past a warning threshold this low.
    let engine = Engine::start_with(&["--pool-warn-percent", "0.001"]);
    let receiver = Receiver::start(|_| Some(200));
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", WEBHOOK_SECRET);
    let add = |name: &str, url: &str, extra: &[&str]| {
        let mut args = vec!["webhook", "add", name, url, "--secret-file", &secret];
        args.extend_from_slice(extra);
        engine.cli(&args)
    };
    for (name, url, extra, field) in [
        ("a", "ftp://127.0.0.1/x", &[][..], "url"),
        ("a", "http://user:pw@127.0.0.1/x", &[], "url"),
        ("a", "127.0.0.1:80", &[], "url"),
        (
            "a",
            &receiver.url,
            &["--event", "job.exploded"],
            "events[0]",
        ),
        ("bad/name", &receiver.url, &[], "name"),
    ] {
        let err = add(name, url, extra).fails(3).to_owned();
        assert!(err.contains(field), "{url} {extra:?}: {err}");
    }
    let short = secret_file(dir.path(), "short", "short");
    let err = engine
        .cli(&[
            "webhook",
            "add",
            "a",
            &receiver.url,
            "--secret-file",
            &short,
        ])
        .fails(3)
        .to_owned();
    assert!(err.contains("secret"), "{err}");
    // Only administrators manage webhooks.
    let operator = add_user(&engine, "olga", "operator");
    engine
        .cli_as(
            &["webhook", "add", "a", &receiver.url],
            Some(&operator),
            None,
            Some(&format!("{WEBHOOK_SECRET}\n")),
        )
        .fails(12);
    assert_eq!(
        engine.cli(&["webhook", "list", "-o", "json"]).json(),
        serde_json::json!([])
    );

    // The secret may come on stdin; a name in use is refused.
    engine
        .cli_as(
            &[
                "webhook",
                "add",
                "cap",
                &receiver.url,
                "--event",
                "capacity.warning",
            ],
            Some(&engine.token),
            None,
            Some(&format!("{WEBHOOK_SECRET}\n")),
        )
        .ok();
    let err = add("cap", &receiver.url, &[]).fails(5).to_owned();
    assert!(err.contains("cap"), "{err}");
    assert_eq!(
        engine.cli(&["webhook", "list", "-o", "json"]).json()[0]["events"],
        serde_json::json!(["capacity.warning"])
    );

    // Measuring the pool finds it past the warning threshold: one event.
    engine.cli(&["pool", "status"]).ok();
    let seen = receiver.wait_for("the capacity warning", |s| !s.is_empty());
    seen[0].assert_signed_with(WEBHOOK_SECRET);
    let e = seen[0].event();
    assert_eq!(e["kind"], "capacity.warning");
    assert_eq!(e["data"]["state"], "warning");
    assert_eq!(e["data"]["warn_percent"], 0.001);
    assert!(e["data"]["usage_percent"].as_f64().unwrap() > 0.001);

    engine.cli(&["webhook", "delete", "cap"]).ok();
    engine.cli(&["webhook", "show", "cap"]).fails(4);
}
