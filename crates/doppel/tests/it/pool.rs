//! The engine's embedded storage pool, as a user sees it.

use crate::support::*;

#[test]
fn serve_creates_a_btrfs_pool_on_first_start_and_reuses_it_after_a_restart() {
    let mut engine = Engine::start();
    let status = engine.cli(&["pool", "status", "-o", "json"]).json();
    assert_eq!(status["driver"], "btrfs", "{status}");
    assert_eq!(status["thin_clone"], true);
    assert_eq!(status["instant_snapshot"], true);
    assert_eq!(status["reserve"], 64 * 1024 * 1024);
    let size = status["size"].as_u64().unwrap();
    assert!(
        size > 1024 * 1024 * 1024 && size <= 2 * 1024 * 1024 * 1024,
        "pool size {size}"
    );
    let image = engine.data_dir.path().join("pool.img");
    let meta = std::fs::metadata(&image).unwrap();
    assert_eq!(
        meta.len(),
        2 * 1024 * 1024 * 1024,
        "the pool file has the configured size"
    );
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "the pool file is sparse"
    );

    let table = engine.cli(&["pool", "status"]);
    assert!(
        table.ok().contains("thin clones") && table.stdout.contains("yes"),
        "{}",
        table.stdout
    );

    engine.restart();
    let again = engine.cli(&["pool", "status", "-o", "json"]).json();
    assert_eq!(again["driver"], "btrfs");
    assert_eq!(
        again["size"], status["size"],
        "the same pool is mounted again"
    );
}

#[test]
fn a_forced_copy_driver_says_it_is_neither_thin_nor_instant() {
    let engine = Engine::start_with(&["--pool-driver", "copy"]);
    let status = engine.cli(&["pool", "status", "-o", "json"]).json();
    assert_eq!(status["driver"], "copy");
    assert_eq!(status["thin_clone"], false);
    assert_eq!(status["instant_snapshot"], false);
    let bad = engine.cli(&["pool", "status", "--url", "http://127.0.0.1:1"]);
    assert!(
        bad.fails(1).contains("cannot reach the Doppel engine"),
        "{}",
        bad.stderr
    );
}

/// The pool's usage as `pool status` reports it.
fn capacity(engine: &Engine) -> serde_json::Value {
    engine.cli(&["pool", "status", "-o", "json"]).json()["capacity"].clone()
}

#[test]
fn a_pool_past_the_refusal_threshold_refuses_new_provisions_with_the_numbers_until_space_is_freed()
{
    let world = doppel_testworld::World::new(&["host"]);
    let host = world.host("host");
    host.mkdir("/srv/stage", "delphix");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, host.user("delphix").password.as_deref().unwrap()).unwrap();
    let engine = Engine::start_with(&["--pool-size", "1GiB"]);
    engine.install(&build_plugin("all-ops-staged"));
    engine.add_env(
        "host",
        host,
        "delphix",
        "--password-file",
        pw.to_str().unwrap(),
    );
    let sc = engine.cli(&["sourceconfig", "list", "-o", "json"]).json()[0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let params = serde_json::json!({"behavior": "ok", "mountPath": "/srv/stage/tree"}).to_string();
    engine
        .cli(&[
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
        ])
        .ok();
    let provision = |name: &str| {
        let params =
            serde_json::json!({"behavior": "ok", "mountPath": format!("/srv/stage/{name}")})
                .to_string();
        engine.cli(&[
            "vdb",
            "provision",
            "--name",
            name,
            "--from",
            "tree",
            "--env",
            "host",
            "--params",
            &params,
        ])
    };
    let before = capacity(&engine);
    assert_eq!(before["state"], "ok", "{before}");
    assert_eq!(before["warn_percent"], 78.0);
    assert_eq!(before["refuse_percent"], 85.0);

    // What a staging host writes into the dSource's dataset, as a big sync would.
    let status = engine.cli(&["pool", "status", "-o", "json"]).json();
    let (size, free) = (
        status["size"].as_u64().unwrap(),
        status["free"].as_u64().unwrap(),
    );
    let dataset = engine
        .cli(&["dsource", "show", "tree", "-o", "json"])
        .json()["dataset"]
        .as_str()
        .unwrap()
        .to_owned();
    let filler = dataset_dir(engine.data_dir.path(), &dataset).join("filler");
    let fill = free - size / 10;
    let out = std::process::Command::new("fallocate")
        .args(["-l", &fill.to_string()])
        .arg(&filler)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let full = capacity(&engine);
    assert_eq!(full["state"], "refusing", "{full}");
    let usage = full["usage_percent"].as_f64().unwrap();
    assert!(usage >= 85.0, "{full}");

    let refused = provision("dev");
    let err = refused.fails(8);
    assert!(
        err.contains(&format!("{usage:.1} % full")) && err.contains("85 %"),
        "the refusal names the usage and the threshold: {err}"
    );
    assert!(
        engine.cli(&["vdb", "list", "-o", "json"]).json() == serde_json::json!([]),
        "a refused provision makes nothing"
    );
    let objects = engine.cli(&["pool", "status", "-o", "json"]).json()["objects"].clone();
    let tree = objects
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "tree")
        .unwrap_or_else(|| panic!("the dSource is listed: {objects}"));
    assert!(
        tree["frees"].as_u64().unwrap() >= fill,
        "deleting the dSource would free what it holds: {tree}"
    );

    std::fs::remove_file(&filler).unwrap();
    // The freed extents count once btrfs has committed the deletion.
    let synced = std::process::Command::new("sync")
        .arg("-f")
        .arg(dataset_dir(engine.data_dir.path(), &dataset))
        .status()
        .unwrap();
    assert!(synced.success());
    let after = capacity(&engine);
    assert_eq!(after["state"], "ok", "{after}");
    provision("dev").ok();
}

#[test]
fn thresholds_out_of_order_are_refused_at_start_naming_the_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args([
            "serve",
            "--pool-warn-percent",
            "90",
            "--pool-refuse-percent",
            "80",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--pool-warn-percent") && err.contains("90") && err.contains("80"),
        "{err}"
    );
}
