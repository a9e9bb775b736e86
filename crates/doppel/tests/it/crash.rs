//! The engine killed in the middle of a link and of a provision: at the
//! next start the jobs are failed and nothing half-made is left.

use std::time::{Duration, Instant};

use doppel_testworld::World;
use serde_json::json;

use crate::support::*;

const ALL_OPS: &str = "doppel-all-ops-staged";

/// Plugin workers of the engine whose data directory is `data`.
fn worker_pids(data: &std::path::Path) -> Vec<u32> {
    // Unconfined the worker's --root is under the data directory; confined
    // the bwrap processes that carry it bind it there (`--ro-bind <code> /plugin`).
    let pattern = format!("{}/plugins/", data.display());
    let out = std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_crash_mid_link_and_mid_provision_leaves_nothing_half_made() {
    let world = World::new(&["host"]);
    let host = world.host("host");
    host.mkdir("/srv/stage", "delphix");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, host.user("delphix").password.as_deref().unwrap()).unwrap();

    let mut engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    engine
        .cli(&[
            "env",
            "add",
            "--name",
            "host",
            "--host",
            &host.address().to_string(),
            "--port",
            &host.port().to_string(),
            "--user",
            "delphix",
            "--password-file",
            pw.to_str().unwrap(),
        ])
        .ok();
    let configs = engine.cli(&["sourceconfig", "list", "-o", "json"]).json();
    let (sc1, sc2) = (
        configs[0]["reference"].as_str().unwrap().to_owned(),
        configs[1]["reference"].as_str().unwrap().to_owned(),
    );
    let link = |name: &str, sc: &str, behavior: &str| {
        let params =
            json!({"behavior": behavior, "mountPath": format!("/srv/stage/{name}")}).to_string();
        engine
            .cli(&[
                "dsource",
                "link",
                "--name",
                name,
                "--sourceconfig",
                sc,
                "--staging-env",
                "host",
                "--params",
                &params,
                "--no-wait",
                "-o",
                "json",
            ])
            .json()
    };
    let good = link("good", &sc1, "ok");
    engine
        .cli(&["job", "wait", good["id"].as_str().unwrap()])
        .ok();

    // Three jobs that will be inside a plugin operation when the engine
    // dies: a link, and two provisions from the same snapshot, which run
    // together (different objects, each call in its own plugin worker).
    let stuck_link = link("stuck", &sc2, "hang");
    let provision = |name: &str| {
        let params =
            json!({"behavior": "hang", "mountPath": format!("/srv/stage/{name}")}).to_string();
        engine
            .cli(&[
                "vdb",
                "provision",
                "--name",
                name,
                "--from",
                "good",
                "--env",
                "host",
                "--params",
                &params,
                "--no-wait",
                "-o",
                "json",
            ])
            .json()
    };
    let stuck_vdb = provision("stuckvdb");
    let stuck_vdb2 = provision("stuckvdb2");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // All hang inside the plugin at once: the link with its dataset
        // made, the provisions with their clones and records.
        let log = engine.cli(&["plugin", "logs", ALL_OPS]).ok().to_owned();
        let linking = log.contains(&format!(
            "{}|linked.mount_specification] op linked.mount_specification",
            stuck_link["id"].as_str().unwrap()
        ));
        let provisioning = [&stuck_vdb, &stuck_vdb2]
            .iter()
            .all(|j| log.contains(&format!("{}|virtual.", j["id"].as_str().unwrap())))
            && engine
                .cli(&["vdb", "list", "-o", "json"])
                .json()
                .as_array()
                .is_some_and(|v| v.len() == 2);
        if linking && provisioning {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs never got under way:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let workers_before = worker_pids(engine.data_dir.path());
    assert!(
        workers_before.len() >= 3,
        "one worker per hanging call: {workers_before:?}"
    );
    assert_eq!(
        engine
            .cli(&["dsource", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2,
        "the half-made dSource exists before the crash"
    );

    engine.crash_and_restart();

    // The plugin workers died with the engine.
    std::thread::sleep(Duration::from_millis(300));
    for pid in &workers_before {
        assert!(
            !worker_pids(engine.data_dir.path()).contains(pid),
            "worker {pid} outlived the engine"
        );
    }
    for job in [&stuck_link, &stuck_vdb, &stuck_vdb2] {
        let j = engine
            .cli(&["job", "show", job["id"].as_str().unwrap(), "-o", "json"])
            .json();
        assert_eq!(j["state"], "failed", "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .contains("interrupted"),
            "{j}"
        );
    }
    // Reconciliation runs in the background after the start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dsources = engine.cli(&["dsource", "list", "-o", "json"]).json();
        let vdbs = engine.cli(&["vdb", "list", "-o", "json"]).json();
        if dsources.as_array().unwrap().len() == 1 && vdbs.as_array().unwrap().is_empty() {
            assert_eq!(dsources[0]["name"], "good");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "half-made objects stayed: {dsources} {vdbs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pool = engine.cli(&["pool", "status", "-o", "json"]).json();
    assert_eq!(
        pool["volumes"], 1,
        "only the good dSource's dataset is left: {pool}"
    );
    let mounts = engine.cli(&["mount", "list", "-o", "json"]).json();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(mounts[0]["mount_path"], "/srv/stage/good");
    // The good dSource's staging mount was re-established and works.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host
        .sh_output("delphix", "mountpoint -q /srv/stage/good")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the staging mount did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.cli(&["dsource", "sync", "good"]).ok();
    // show asks the plugin: the all-ops plugin's status and size (8 KiB records by default).
    let shown = engine
        .cli(&["dsource", "show", "good", "-o", "json"])
        .json();
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert_eq!(shown["size_bytes"], 8192, "{shown}");
    assert_eq!(
        shown["staging_mount"],
        format!(
            "{}:/srv/stage/good",
            shown["staging_environment"].as_str().unwrap()
        )
    );

    // A plugin UserError mid-provision: the job fails with the plugin's
    // message and action, and no clone, mount or record is left.
    let before = engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"].clone();
    let failed = engine.cli(&[
        "vdb",
        "provision",
        "--name",
        "refused",
        "--from",
        "good",
        "--env",
        "host",
        "--params",
        r#"{"behavior": "user_error", "mountPath": "/srv/stage/refused"}"#,
    ]);
    let stderr = failed.fails(6);
    assert!(
        stderr.contains("requested user error") && stderr.contains("action: Set behavior to ok."),
        "{stderr}"
    );
    assert_eq!(engine.cli(&["vdb", "list", "-o", "json"]).json(), json!([]));
    assert_eq!(
        engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"],
        before
    );
    assert_eq!(
        engine
            .cli(&["mount", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An empty VDB: mounted where the plugin says, initialized by the plugin.
    let empty = engine
        .cli(&[
            "vdb",
            "create-empty",
            "--name",
            "empty",
            "--plugin",
            ALL_OPS,
            "--env",
            "host",
            "--params",
            r#"{"behavior": "ok", "mountPath": "/srv/stage/empty"}"#,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(empty["source_config"]["origin"], "initialize", "{empty}");
    assert!(host
        .sh_output("delphix", "mountpoint -q /srv/stage/empty")
        .status
        .success());
    host.sh("delphix", "echo fresh > /srv/stage/empty/new.txt");
    let refresh = engine.cli(&["vdb", "refresh", "empty"]);
    assert!(
        refresh.fails(5).contains("created empty"),
        "{}",
        refresh.stderr
    );
    engine.cli(&["vdb", "snapshot", "empty"]).ok();
    engine.cli(&["vdb", "delete", "empty"]).ok();
    engine.cli(&["dsource", "delete", "good"]).ok();
    assert_eq!(
        engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"],
        0
    );
}
