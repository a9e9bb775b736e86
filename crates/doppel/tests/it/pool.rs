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

/// An engine with the all-ops plugin, the host `host` as an environment
/// and the dSource `tree` linked with its staging mount at
/// `/srv/stage/tree` there. The engine comes second, so it is dropped first.
fn staged_tree(extra: &[&str]) -> (doppel_testworld::World, Engine) {
    let world = doppel_testworld::World::new(&["host"]);
    let host = world.host("host");
    host.mkdir("/srv/stage", "delphix");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, host.user("delphix").password.as_deref().unwrap()).unwrap();
    let engine = Engine::start_with(extra);
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
    (world, engine)
}

/// The pool's usage as `pool status` reports it.
fn capacity(engine: &Engine) -> serde_json::Value {
    engine.cli(&["pool", "status", "-o", "json"]).json()["capacity"].clone()
}

#[test]
fn a_pool_past_the_refusal_threshold_refuses_new_provisions_with_the_numbers_until_space_is_freed()
{
    let (_world, engine) = staged_tree(&["--pool-size", "1GiB"]);
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

#[test]
fn a_host_writing_into_a_mount_stops_at_the_reserve_instead_of_filling_the_pool() {
    // Without the guard the write ran the pool to 0 bytes free and every
    // writer of every mount got EIO.
    let reserve: u64 = 200 << 20;
    let (world, engine) = staged_tree(&["--pool-size", "1GiB", "--pool-reserve", "200MiB"]);
    let host = world.host("host");
    // What the host is told it may use leaves the reserve out.
    let df = host.sh_output("delphix", "df -B1 --output=avail /srv/stage/tree | tail -1");
    let avail: u64 = String::from_utf8_lossy(&df.stdout).trim().parse().unwrap();
    let pool_free = engine.cli(&["pool", "status", "-o", "json"]).json()["free"]
        .as_u64()
        .unwrap();
    assert!(
        avail + reserve <= pool_free + (8 << 20),
        "df on the host shows {avail} bytes available, the pool has {pool_free} free and keeps {reserve}"
    );
    let out = host.sh_output(
        "delphix",
        "dd if=/dev/zero of=/srv/stage/tree/fill bs=1M count=2048 conv=fsync 2>&1",
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the write must be stopped: {said}");
    let status = engine.cli(&["pool", "status", "-o", "json"]).json();
    let free = status["free"].as_u64().unwrap();
    // The guard reads a flushed figure near the reserve; what may slip past
    // it is the last few writes in flight (sshfs keeps several outstanding).
    assert!(
        free + (16 << 20) >= reserve,
        "the pool keeps its reserve ({reserve} bytes) but has {free} bytes free; dd said: {said}\n{}",
        engine.log()
    );
    let written = std::fs::metadata(
        dataset_dir(
            engine.data_dir.path(),
            engine
                .cli(&["dsource", "show", "tree", "-o", "json"])
                .json()["dataset"]
                .as_str()
                .unwrap(),
        )
        .join("fill"),
    )
    .unwrap()
    .len();
    println!("stopped with {free} bytes free (reserve {reserve}), {written} bytes written");
    assert!(
        written > 512 * 1024 * 1024,
        "the host could use the space above the reserve: {written} bytes written"
    );
    // Space given back is usable again at once: the refusal is not sticky.
    host.sh("delphix", "rm /srv/stage/tree/fill && sync");
    host.sh(
        "delphix",
        "dd if=/dev/zero of=/srv/stage/tree/again bs=1M count=64 conv=fsync 2>&1",
    );
}

#[test]
fn a_sync_that_outgrows_the_room_above_the_reserve_fails_saying_why_and_keeps_the_reserve() {
    let reserve: u64 = 200 << 20;
    let world = doppel_testworld::World::new(&["source", "staging", "target"]);
    let (source, staging, target) = (
        world.host("source"),
        world.host("staging"),
        world.host("target"),
    );
    source.mkdir("/srv/data/tree", "alice");
    source.put_file("/srv/data/tree/hello.txt", b"hello\n", "alice");
    let engine = Engine::start_with(&["--pool-size", "1GiB", "--pool-reserve", "200MiB"]);
    engine.install(&doppel_testworld::plugins::build_example("directory"));
    let sc = add_directory_envs(&engine, source, staging, target);
    let params = serde_json::json!({"sourceHost": source.address().to_string(), "sourceUser": "alice", "sshPort": source.port()})
        .to_string();
    engine
        .cli(&[
            "dsource",
            "link",
            "--name",
            "tree",
            "--sourceconfig",
            &sc,
            "--staging-env",
            "staging",
            "--params",
            &params,
        ])
        .ok();
    // More than the pool can take above its reserve (random, so that no
    // layer can make it smaller).
    source.sh(
        "alice",
        "head -c 900M /dev/urandom > /srv/data/tree/big.bin",
    );
    let refused = engine.cli(&["dsource", "sync", "tree"]);
    refused.fails(6);
    let jobs = engine.cli(&["job", "list", "-o", "json"]).json();
    let sync = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "DSOURCE_SYNC")
        .unwrap_or_else(|| panic!("no sync job in {jobs}"));
    let events = engine
        .cli(&["job", "logs", sync["id"].as_str().unwrap(), "-o", "json"])
        .stdout;
    assert!(
        events.contains("at its free-space reserve"),
        "the job must say the pool's reserve stopped the copy: {events}\n{}",
        refused.stderr
    );
    let status = engine.cli(&["pool", "status", "-o", "json"]).json();
    let free = status["free"].as_u64().unwrap();
    assert!(
        free + (16 << 20) >= reserve,
        "{free} bytes free, reserve {reserve}"
    );
    // The failed sync took no snapshot.
    let snapshots = engine
        .cli(&["snapshot", "list", "--dataset", "tree", "-o", "json"])
        .json();
    assert_eq!(snapshots.as_array().unwrap().len(), 1, "{snapshots}");
}
