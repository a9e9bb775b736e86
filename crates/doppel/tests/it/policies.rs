//! Policies and the scheduler on an engine with a test clock: a SnapSync
//! every minute runs once per slot, skips a slot while its dSource is
//! busy, catches up once after a restart; retention deletes what nothing
//! needs and keeps what a VDB needs; bad policies change nothing.

use doppel_testworld::World;
use serde_json::{json, Value};

use crate::support::*;

pub(crate) const T0: &str = "2026-01-01T00:00:30Z";

/// Sets the engine's clock and returns the runs of the pass it triggers.
pub(crate) fn tick(engine: &Engine, now: &str) -> Vec<Value> {
    let pass = engine.client().set_test_clock(now).unwrap();
    serde_json::to_value(pass.runs)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

pub(crate) fn snapshots(engine: &Engine, dataset: &str) -> Vec<String> {
    engine
        .cli(&["snapshot", "list", "--dataset", dataset, "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reference"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) fn wait(engine: &Engine, job: &str) {
    engine.cli(&["job", "wait", job]).ok();
}

/// An engine on the test clock at [`T0`] with the `all-ops-staged` plugin,
/// `world`'s `host` added as the environment `host` (with /srv/stage and
/// /srv/ctl made there), and the dSource `tree` linked with `hooks`
/// (`POINT=SCRIPT`), its first snapshot taken; `extra` are more flags of
/// `doppel serve`.
pub(crate) fn clocked_tree(world: &World, hooks: &[&str], extra: &[&str]) -> Engine {
    let host = world.host("host");
    host.mkdir("/srv/stage", "delphix");
    host.mkdir("/srv/ctl", "delphix");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, host.user("delphix").password.as_deref().unwrap()).unwrap();

    let mut args = vec!["--test-clock", T0];
    args.extend_from_slice(extra);
    let engine = Engine::start_with(&args);
    engine.install(&build_plugin("all-ops-staged"));
    engine.add_env(
        "host",
        host,
        "delphix",
        "--password-file",
        pw.to_str().unwrap(),
    );
    let configs = engine.cli(&["sourceconfig", "list", "-o", "json"]).json();
    let sc = configs[0]["reference"].as_str().unwrap().to_owned();
    let params = json!({"mountPath": "/srv/stage/tree"}).to_string();
    let mut args = vec![
        "dsource",
        "link",
        "--name",
        "tree",
        "--sourceconfig",
        &sc,
        "--staging-env",
        "host",
        "--params",
        &params,
    ];
    for h in hooks {
        args.extend(["--hook", h]);
    }
    engine.cli(&args).ok();
    assert_eq!(snapshots(&engine, "tree").len(), 1);
    engine
}

#[test]
fn a_snapsync_every_minute_runs_once_per_slot_skips_busy_slots_and_catches_up_once() {
    let world = World::new(&["host"]);
    let host = world.host("host");
    // While /srv/ctl/hold exists a sync waits in its Pre-Sync hook for
    // /srv/ctl/go: that is how a test keeps the dSource busy.
    let hook =
        "pre-sync=if [ -e /srv/ctl/hold ]; then while [ ! -e /srv/ctl/go ]; do sleep 0.1; done; fi";
    let mut engine = clocked_tree(&world, &[hook], &[]);

    // Bad input: named, and nothing made.
    let err = engine
        .cli(&["policy", "add", "bad", "--snapsync-cron", "61 * * * *"])
        .fails(3)
        .to_owned();
    assert!(err.contains("snapsync.cron"), "{err}");
    let err = engine
        .cli(&["policy", "add", "bad", "--keep-last", "0"])
        .fails(3)
        .to_owned();
    assert!(err.contains("retention.keep_last"), "{err}");
    assert_eq!(
        engine.cli(&["policy", "list", "-o", "json"]).json(),
        json!([])
    );

    engine
        .cli(&[
            "policy",
            "add",
            "every-minute",
            "--snapsync-cron",
            "* * * * *",
        ])
        .ok();
    let policy = engine
        .cli(&[
            "policy",
            "apply",
            "every-minute",
            "--to",
            "dsource:tree",
            "-o",
            "json",
        ])
        .json()["policy"]
        .as_str()
        .unwrap()
        .to_owned();
    let receiver = Receiver::start(|_| Some(200));
    add_webhook(&engine, "jobs", &receiver.url, &["job.succeeded"]);
    // The slot at 00:00 came before the policy was applied: nothing runs.
    assert!(tick(&engine, "2026-01-01T00:00:50Z").is_empty());

    // The 00:01 slot runs one ordinary sync, which says which policy started it.
    let runs = tick(&engine, "2026-01-01T00:01:05Z");
    assert_eq!(
        runs.len(),
        1,
        "{runs:?} {}",
        engine.cli(&["policy", "list", "-o", "json"]).ok()
    );
    assert_eq!(runs[0]["slot"], "2026-01-01T00:01:00Z");
    assert_eq!(runs[0]["outcome"], "started");
    let job = runs[0]["job"].as_str().unwrap().to_owned();
    wait(&engine, &job);
    let shown = engine.cli(&["job", "show", &job, "-o", "json"]).json();
    assert_eq!(shown["kind"], "DSOURCE_SYNC");
    let events = engine.cli(&["job", "logs", &job, "-o", "json"]).json();
    assert!(
        events.as_array().unwrap().iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("started by policy every-minute")),
        "{events}"
    );
    // Webhooks are told which policy started it.
    let sent = receiver.wait_for("the sync's end", |s| {
        s.iter().any(|r| r.event()["data"]["job"] == job.as_str())
    });
    let e = sent
        .iter()
        .map(Received::event)
        .find(|e| e["data"]["job"] == job.as_str())
        .unwrap();
    assert_eq!(e["kind"], "job.succeeded", "{e}");
    assert_eq!(e["data"]["type"], "DSOURCE_SYNC");
    assert_eq!(e["data"]["policy"], policy.as_str(), "{e}");
    assert_eq!(snapshots(&engine, "tree").len(), 2);
    // The same slot never runs twice.
    assert!(tick(&engine, "2026-01-01T00:01:40Z").is_empty());

    // A busy dSource: the slot is skipped, and that is recorded.
    host.put_file("/srv/ctl/hold", b"", "delphix");
    let manual = engine
        .cli(&["dsource", "sync", "tree", "--no-wait", "-o", "json"])
        .json();
    let runs = tick(&engine, "2026-01-01T00:02:01Z");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["outcome"], "skipped");
    let reason = runs[0]["reason"].as_str().unwrap();
    assert!(reason.contains(manual["id"].as_str().unwrap()), "{reason}");
    host.put_file("/srv/ctl/go", b"", "delphix");
    wait(&engine, manual["id"].as_str().unwrap());
    host.sh("delphix", "rm -f /srv/ctl/hold /srv/ctl/go");
    assert_eq!(snapshots(&engine, "tree").len(), 3);
    let recorded = engine
        .cli(&["policy", "runs", "--object", "dsource:tree", "-o", "json"])
        .json();
    assert_eq!(recorded[0]["outcome"], "skipped", "{recorded}");
    assert_eq!(recorded[1]["outcome"], "started", "{recorded}");

    // Down over five slots: one catch-up run for the newest, then nothing.
    engine.restart();
    let runs = tick(&engine, "2026-01-01T00:07:10Z");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["slot"], "2026-01-01T00:07:00Z");
    wait(&engine, runs[0]["job"].as_str().unwrap());
    assert!(tick(&engine, "2026-01-01T00:07:50Z").is_empty());
    let snaps = snapshots(&engine, "tree");
    assert_eq!(snaps.len(), 4);

    // Retention: keep the last 2, but the first snapshot has a VDB on it.
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "dev",
            "--from",
            &format!("tree@{}", snaps[0]),
            "--env",
            "host",
            "--params",
            &json!({"mountPath": "/srv/stage/dev"}).to_string(),
        ])
        .ok();
    engine
        .cli(&["policy", "add", "keep-2", "--keep-last", "2"])
        .ok();
    let dry = engine
        .cli(&[
            "policy",
            "apply",
            "keep-2",
            "--to",
            "dsource:tree",
            "--override",
            "--dry-run",
            "-o",
            "json",
        ])
        .json();
    let would: Vec<&str> = dry["deletes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(would, vec![snaps[1].as_str()], "{dry}");
    assert_eq!(
        snapshots(&engine, "tree"),
        snaps,
        "a dry run deletes nothing"
    );
    assert_eq!(
        engine
            .cli(&["policy", "show", "keep-2", "-o", "json"])
            .json()["applied_to"],
        json!([]),
        "a dry run applies nothing"
    );
    let applied = engine
        .cli(&[
            "policy",
            "apply",
            "keep-2",
            "--to",
            "dsource:tree",
            "--override",
            "-o",
            "json",
        ])
        .json();
    wait(&engine, applied["jobs"][0].as_str().unwrap());
    assert_eq!(
        snapshots(&engine, "tree"),
        vec![snaps[0].clone(), snaps[2].clone(), snaps[3].clone()]
    );
    // The override changed retention only: SnapSync still comes from the base.
    let runs = tick(&engine, "2026-01-01T00:08:05Z");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["kind"], "snapsync");
    wait(&engine, runs[0]["job"].as_str().unwrap());
    // The next pass lets the oldest unneeded one go; the VDB's stays.
    let runs = tick(&engine, "2026-01-01T00:08:20Z");
    assert_eq!(runs[0]["kind"], "retention", "{runs:?}");
    wait(&engine, runs[0]["job"].as_str().unwrap());
    let left = snapshots(&engine, "tree");
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(left[0], snaps[0]);
    assert!(!left.contains(&snaps[2]));

    engine.cli(&["vdb", "delete", "dev"]).ok();
    engine.cli(&["dsource", "delete", "tree"]).ok();
}

#[test]
fn the_test_clock_is_refused_on_an_engine_on_the_system_clock() {
    let engine = Engine::start();
    let err = engine
        .client()
        .set_test_clock("2026-01-01T00:00:00Z")
        .unwrap_err();
    assert!(err.to_string().contains("--test-clock"), "{err}");
}
