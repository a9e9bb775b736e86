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
