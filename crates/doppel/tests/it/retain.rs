//! Bookmarks, why retention keeps each snapshot, and VDB protection and
//! expiry, on an engine with a test clock: a bookmark names a snapshot
//! wherever one is taken and pins it against retention (after a refresh
//! and a rewind too) until it expires; a protected VDB survives delete,
//! admin's included, and expiry; an expiring VDB is warned of once (a
//! restart does not repeat it), then deleted by a job on time.

use doppel_testworld::World;
use serde_json::{json, Value};

use crate::policies::{clocked_tree, snapshots, tick, wait};
use crate::support::*;

/// Per snapshot of `dataset`, oldest first: why retention keeps it.
fn kept(engine: &Engine, dataset: &str) -> Vec<Vec<String>> {
    engine
        .cli(&["snapshot", "list", "--dataset", dataset, "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_value(s["kept_because"].clone()).unwrap())
        .collect()
}

fn bookmark_names(engine: &Engine) -> Vec<String> {
    engine
        .cli(&["bookmark", "list", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The runs of `kind` in a pass.
fn of_kind<'a>(runs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["kind"] == kind).collect()
}

fn has(reasons: &[String], text: &str) -> bool {
    reasons.iter().any(|r| r.contains(text))
}

#[test]
fn bookmarks_pin_snapshots_and_protected_or_expiring_vdbs_live_as_long_as_they_should() {
    let world = World::new(&["host"]);
    // Expiring VDBs are warned of 12 hours ahead.
    let mut engine = clocked_tree(&world, &[], &["--vdb-expiry-warning", "43200"]);
    engine.cli(&["dsource", "sync", "tree"]).ok();
    engine.cli(&["dsource", "sync", "tree"]).ok();
    let s = snapshots(&engine, "tree");
    assert_eq!(s.len(), 3);

    let b = engine
        .cli(&[
            "bookmark",
            "add",
            "before-migration",
            "--snapshot",
            &format!("tree@{}", s[0]),
            "-o",
            "json",
        ])
        .json();
    assert_eq!(b["snapshot"], s[0].as_str());
    assert_eq!(b["object_name"], "tree");

    // Bad input: refused naming what is wrong, nothing added.
    let err = engine
        .cli(&["bookmark", "add", "before-migration", "--snapshot", &s[1]])
        .fails(5)
        .to_owned();
    assert!(
        err.contains("bookmark name") && err.contains(b["reference"].as_str().unwrap()),
        "{err}"
    );
    let err = engine
        .cli(&["bookmark", "add", "x", "--snapshot", "SNAPSHOT-999"])
        .fails(4)
        .to_owned();
    assert!(err.contains("SNAPSHOT-999"), "{err}");
    for (when, why) in [("tomorrow", "RFC 3339"), ("2025-06-01T00:00:00Z", "future")] {
        let err = engine
            .cli(&[
                "bookmark",
                "add",
                "x",
                "--snapshot",
                &s[1],
                "--expires-at",
                when,
            ])
            .fails(3)
            .to_owned();
        assert!(err.contains("expires_at") && err.contains(why), "{err}");
    }
    let err = engine
        .cli(&["bookmark", "add", "SNAPSHOT-7", "--snapshot", &s[1]])
        .fails(3)
        .to_owned();
    assert!(err.contains("name"), "{err}");
    assert_eq!(bookmark_names(&engine), vec!["before-migration"]);

    // A bookmark that lasts an hour (the clock stands at T0, 00:00:30).
    engine
        .cli(&[
            "bookmark",
            "add",
            "short",
            "--snapshot",
            &s[1],
            "--expires-in",
            "1h",
        ])
        .ok();
    let k = kept(&engine, "tree");
    assert!(has(&k[0], "bookmark before-migration"), "{k:?}");
    assert!(has(&k[0], "no retention policy applies"), "{k:?}");
    assert!(
        has(&k[1], "bookmark short (until 2026-01-01T01:00:30Z)"),
        "{k:?}"
    );
    assert!(has(&k[2], "newest snapshot of its dataset"), "{k:?}");
    let err = engine
        .cli(&["snapshot", "delete", &s[0]])
        .fails(5)
        .to_owned();
    assert!(err.contains("before-migration"), "{err}");

    // Provisioned from a bookmark: that snapshot.
    let vdb_params = json!({"mountPath": "/srv/stage/dev"}).to_string();
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "dev",
            "--from",
            "tree@before-migration",
            "--env",
            "host",
            "--params",
            &vdb_params,
        ])
        .ok();
    assert!(
        has(&kept(&engine, "tree")[0], "VDB dev's current timeflow"),
        "{:?}",
        kept(&engine, "tree")
    );

    // Keep the newest only: everything on tree is still needed.
    engine
        .cli(&["policy", "add", "keep-1", "--keep-last", "1"])
        .ok();
    let applied = engine
        .cli(&[
            "policy",
            "apply",
            "keep-1",
            "--to",
            "dsource:tree",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(applied["deletes"], json!([]), "{applied}");
    // After a refresh the VDB no longer needs the first snapshot; the
    // bookmark alone keeps it.
    engine.cli(&["vdb", "refresh", "dev"]).ok();
    assert_eq!(
        kept(&engine, "tree")[0],
        vec!["bookmark before-migration".to_owned()]
    );

    // An hour and a half later the short bookmark has expired: it no longer
    // pins, retention lets its snapshot go, and the pass removes it.
    let runs = tick(&engine, "2026-01-01T01:30:30Z");
    let expired = of_kind(&runs, "bookmark_expiry");
    assert_eq!(expired.len(), 1, "{runs:?}");
    assert_eq!(expired[0]["outcome"], "deleted");
    let retention = of_kind(&runs, "retention");
    assert_eq!(retention.len(), 1, "{runs:?}");
    wait(&engine, retention[0]["job"].as_str().unwrap());
    assert_eq!(snapshots(&engine, "tree"), vec![s[0].clone(), s[2].clone()]);
    assert_eq!(bookmark_names(&engine), vec!["before-migration"]);

    // A VDB's bookmark names a snapshot for rewind, and pins it after the
    // VDB moved on.
    let v1 = snapshots(&engine, "dev")[0].clone();
    engine.cli(&["vdb", "snapshot", "dev"]).ok();
    engine
        .cli(&[
            "bookmark",
            "add",
            "golden",
            "--snapshot",
            &format!("dev@{v1}"),
        ])
        .ok();
    engine.cli(&["vdb", "rewind", "dev", "--to", "golden"]).ok();
    assert!(
        has(&kept(&engine, "dev")[0], "VDB dev's current timeflow"),
        "{:?}",
        kept(&engine, "dev")
    );
    engine.cli(&["vdb", "snapshot", "dev"]).ok();
    let v = snapshots(&engine, "dev");
    assert_eq!(v.len(), 3);
    engine.cli(&["vdb", "rewind", "dev", "--to", &v[1]]).ok();
    engine.cli(&["vdb", "snapshot", "dev"]).ok();
    let applied = engine
        .cli(&["policy", "apply", "keep-1", "--to", "vdb:dev", "-o", "json"])
        .json();
    let deletes: Vec<&str> = applied["deletes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["snapshot"].as_str().unwrap())
        .collect();
    assert_eq!(deletes, vec![v[2].as_str()], "{applied}");
    wait(&engine, applied["jobs"][0].as_str().unwrap());
    let left = snapshots(&engine, "dev");
    assert_eq!(left.len(), 3);
    assert_eq!(left[..2], v[..2]);
    let k = kept(&engine, "dev");
    assert_eq!(k[0], vec!["bookmark golden".to_owned()]);
    assert_eq!(k[1], vec!["VDB dev's current timeflow".to_owned()]);
    assert!(has(&k[2], "newest 1 (retention of keep-1"), "{k:?}");
    // A child VDB provisioned from the VDB's bookmark needs that snapshot too.
    let child_params = json!({"mountPath": "/srv/stage/qa"}).to_string();
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "qa",
            "--from",
            "dev@golden",
            "--env",
            "host",
            "--params",
            &child_params,
        ])
        .ok();
    let k = kept(&engine, "dev");
    assert_eq!(
        k[0],
        vec!["child VDB qa".to_owned(), "bookmark golden".to_owned()]
    );
    engine.cli(&["vdb", "delete", "qa"]).ok();

    // Protection: nobody deletes a protected VDB, admin included.
    let err = engine.cli(&["vdb", "protect", "nope"]).fails(4).to_owned();
    assert!(err.contains("nope"), "{err}");
    let err = engine
        .cli(&["vdb", "protect", "dev", "--for", "soon"])
        .fails(3)
        .to_owned();
    assert!(err.contains("for"), "{err}");
    let shown = engine
        .cli(&["vdb", "protect", "dev", "--for", "2h", "-o", "json"])
        .json();
    assert_eq!(shown["protection"]["until"], "2026-01-01T03:30:30Z");
    let err = engine.cli(&["vdb", "delete", "dev"]).fails(5).to_owned();
    assert!(
        err.contains("protected") && err.contains("until 2026-01-01T03:30:30Z"),
        "{err}"
    );

    // An expiry while protected: warned, then skipped, and recorded.
    engine.cli(&["vdb", "expire", "dev", "--in", "1h"]).ok();
    let runs = tick(&engine, "2026-01-01T02:45:30Z");
    let warned = of_kind(&runs, "expiry_warning");
    assert_eq!(warned.len(), 1, "{runs:?}");
    assert!(
        warned[0]["reason"].as_str().unwrap().contains("protected"),
        "{runs:?}"
    );
    let expiry = of_kind(&runs, "expiry");
    assert_eq!(expiry.len(), 1, "{runs:?}");
    assert_eq!(expiry[0]["outcome"], "skipped");
    assert!(
        expiry[0]["reason"]
            .as_str()
            .unwrap()
            .contains("protected until 2026-01-01T03:30:30Z"),
        "{runs:?}"
    );
    assert_eq!(
        engine.cli(&["vdb", "list", "-o", "json"]).json()[0]["name"],
        "dev"
    );

    // Protected until unprotected, then unprotected.
    engine.cli(&["vdb", "protect", "dev"]).ok();
    let err = engine.cli(&["vdb", "delete", "dev"]).fails(5).to_owned();
    assert!(err.contains("until unprotected"), "{err}");
    let shown = engine
        .cli(&["vdb", "unprotect", "dev", "-o", "json"])
        .json();
    assert!(shown.get("protection").is_none(), "{shown}");

    // Expiry on time, warned 12 hours ahead, once, also to webhooks.
    let receiver = Receiver::start(|_| Some(200));
    add_webhook(&engine, "expiry", &receiver.url, &["vdb.expiring"]);
    engine
        .cli(&["vdb", "expire", "dev", "--at", "2026-01-03T00:00:00Z"])
        .ok();
    let runs = tick(&engine, "2026-01-02T00:30:00Z");
    assert!(of_kind(&runs, "expiry_warning").is_empty(), "{runs:?}");
    let runs = tick(&engine, "2026-01-02T12:30:00Z");
    let warned = of_kind(&runs, "expiry_warning");
    assert_eq!(warned.len(), 1, "{runs:?}");
    assert!(
        warned[0]["reason"]
            .as_str()
            .unwrap()
            .contains("expires at 2026-01-03T00:00:00Z"),
        "{runs:?}"
    );
    assert!(of_kind(&runs, "expiry").is_empty(), "{runs:?}");
    let sent = receiver.wait_for("the expiry warning", |s| !s.is_empty());
    sent[0].assert_signed_with(WEBHOOK_SECRET);
    let e = sent[0].event();
    assert_eq!(e["kind"], "vdb.expiring", "{e}");
    assert_eq!(e["data"]["name"], "dev");
    assert_eq!(e["data"]["expires_at"], "2026-01-03T00:00:00Z");
    assert_eq!(e["data"]["protected"], false);
    // What was dealt with is remembered across a restart: no second warning.
    engine.restart();
    let runs = tick(&engine, "2026-01-02T13:00:00Z");
    assert!(of_kind(&runs, "expiry_warning").is_empty(), "{runs:?}");
    let runs = tick(&engine, "2026-01-03T00:00:10Z");
    let expiry = of_kind(&runs, "expiry");
    assert_eq!(expiry.len(), 1, "{runs:?}");
    assert_eq!(expiry[0]["outcome"], "started");
    let job = expiry[0]["job"].as_str().unwrap().to_owned();
    wait(&engine, &job);
    assert_eq!(
        engine.cli(&["job", "show", &job, "-o", "json"]).json()["kind"],
        "VDB_DELETE"
    );
    let events = engine.cli(&["job", "logs", &job, "-o", "json"]).json();
    assert!(
        events.as_array().unwrap().iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("started by the VDB's expiry")),
        "{events}"
    );
    assert_eq!(engine.cli(&["vdb", "list", "-o", "json"]).json(), json!([]));
    // The VDB's bookmarks went with it, and the dSource's go with it.
    assert_eq!(bookmark_names(&engine), vec!["before-migration"]);
    engine.cli(&["dsource", "delete", "tree"]).ok();
    assert!(bookmark_names(&engine).is_empty());
}
