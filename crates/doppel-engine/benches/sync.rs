//! Syncing a dSource against plain rsync: the tutorial directory plugin
//! (staged: rsync over SSH from the source host, run on the staging host,
//! into the dataset mounted there) on two fake hosts, against the same
//! rsync command into a plain directory of the staging host, for the first
//! full copy and for incremental syncs after 1% of the files changed.
//!
//! The sync job's wall time includes everything a user waits for: the
//! plugin's rsync writing through the staging mount (sshfs served by the
//! engine), its file count for the snapshot metadata, and the engine's
//! snapshot and records; the engine's own part is reported separately
//! (wall time minus plugin operations, from the job's events).
//!
//! Run as root: `DOPPEL_TEST_PYTHON=.venv/worker/bin/python DOPPEL_TEST_DVP=.venv/dvp/bin/dvp \
//!   cargo bench -p doppel-engine --bench sync` (`DOPPEL_BENCH_QUICK=1`: 20 MiB in 400 files;
//! `DOPPEL_BENCH_ROUNDS`, default 5).

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use doppel_engine::{Engine, EngineConfig};
use doppel_model::{AddSourceConfig, LinkDSource};
use doppel_testworld::{plugins, Host, World};
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{median, timed};

/// Writes `files` files of `size` bytes below `dir` on the host, in
/// directories of 200; `seed` makes the contents differ between calls.
fn write_files(host: &Host, dir: &str, range: std::ops::Range<u64>, size: usize, seed: u64) {
    for i in range {
        let body: Vec<u8> = (0..size)
            .map(|k| {
                ((k as u64)
                    .wrapping_mul(2654435761)
                    .wrapping_add(i * 7919 + seed)
                    >> 7) as u8
            })
            .collect();
        host.put_file(&format!("{dir}/d{}/f{i}", i / 200), &body, "alice");
    }
}

/// Runs the plugin's rsync command (see the plugin's `shell.rsync_pull`)
/// on the staging host into a plain directory; returns its wall time in ms.
fn plain_rsync(staging: &Host, source: &Host) -> f64 {
    let cmd = format!(
        "rsync -a -s --inplace --delete -e 'ssh -p {} -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=30' -- alice@{}:/srv/data/tree/ /srv/plain/",
        source.port(),
        source.address()
    );
    let t = Instant::now();
    staging.sh("alice", &cmd);
    t.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var("DOPPEL_BENCH_QUICK").is_ok();
    let rounds: usize = std::env::var("DOPPEL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (files, size) = if quick {
        (400u64, 50 << 10)
    } else {
        (4_000u64, 50 << 10)
    };
    let changed = files / 100;

    let world = World::new(&["source", "staging"]);
    let (source, staging) = (world.host("source"), world.host("staging"));
    source.mkdir("/srv/data/tree", "alice");
    write_files(source, "/srv/data/tree", 0..files, size, 0);
    staging.mkdir("/srv/plain", "alice");
    common::trust(staging, source, "alice");

    let data = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineConfig {
        data_dir: data.path().to_owned(),
        pool: doppel_engine::PoolOptions {
            size: 8 << 30,
            reserve: 64 << 20,
            ..Default::default()
        },
        python: plugins::python(),
        python27: None,
        deadlines: Default::default(),
        plugin_workers: 4,
        plugin_worker_idle: std::time::Duration::from_secs(300),
        plugin_sandbox: Default::default(),
        auth: Default::default(),
        mount_keeper: None,
        capacity: Default::default(),
        webhooks: Default::default(),
    })
    .await
    .unwrap();
    engine
        .install_plugin(
            &engine.principal("admin").unwrap(),
            &std::fs::read(plugins::build_example("directory")).unwrap(),
        )
        .await
        .unwrap();
    common::add_env(&engine, "source", source, "delphix").await;
    common::add_env(&engine, "staging", staging, "alice").await;
    let repo = engine
        .list_repositories(Some("source"))
        .unwrap()
        .pop()
        .unwrap();
    let sc = engine
        .add_source_config(AddSourceConfig {
            repository: repo.reference,
            parameters: json!({"name": "tree", "path": "/srv/data/tree"}),
        })
        .unwrap();

    // The first, full copy: plain rsync, then the link (whose first sync copies everything).
    let full_plain = plain_rsync(staging, source);
    let link = LinkDSource {
        name: "tree".into(),
        source_config: sc.reference,
        staging_environment: Some("staging".into()),
        staging_user: None,
        parameters: json!({"sourceHost": source.address().to_string(), "sourceUser": "alice", "sshPort": source.port()}),
        hooks: Default::default(),
    };
    let job = engine
        .link_dsource(&engine.principal("admin").unwrap(), link)
        .unwrap();
    let (full_sync, _) = timed(&engine, Instant::now(), job.clone()).await;
    if std::env::var("DOPPEL_BENCH_EVENTS").is_ok() {
        for e in engine.jobs().events(&job.id, 0).unwrap() {
            eprintln!("{} {}", e.at, e.message);
        }
    }

    // Incremental: 1% of the files rewritten, then plain rsync and a sync see the same change.
    let (mut plain, mut sync, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds as u64 {
        let first = (r * 997) % (files - changed);
        write_files(
            source,
            "/srv/data/tree",
            first..first + changed,
            size,
            r + 1,
        );
        plain.push(plain_rsync(staging, source));
        let (w, p) = timed(
            &engine,
            Instant::now(),
            engine.sync_dsource("tree", None, false).unwrap(),
        )
        .await;
        sync.push(w);
        overhead.push(w - p);
    }
    let mib = (files * size as u64) >> 20;
    println!("dSource sync with the directory plugin against plain rsync: {mib} MiB in {files} files, source -> staging host");
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "", "plain ms", "sync ms", "ratio"
    );
    println!(
        "{:<40} {:>12.0} {:>12.0} {:>8.2}",
        "first full copy (link)",
        full_plain,
        full_sync,
        full_sync / full_plain
    );
    let (p, s) = (median(plain), median(sync));
    println!(
        "{:<40} {:>12.0} {:>12.0} {:>8.2}",
        format!("incremental, {changed} files changed (median of {rounds})"),
        p,
        s,
        s / p
    );
    println!(
        "engine's own part of an incremental sync (wall minus plugin operations): {:.1} ms",
        median(overhead)
    );

    timed(
        &engine,
        Instant::now(),
        engine.delete_dsource("tree").unwrap(),
    )
    .await;
    engine.shutdown().await;
    drop(engine);
    doppel_storage::unmount_default_pool(data.path()).unwrap();
}
