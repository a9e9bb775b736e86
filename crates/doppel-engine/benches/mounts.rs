//! Mount and unmount time of a dataset on a remote (fake) host, through the
//! engine: sshfs in passive mode over SSH, served by the engine's SFTP
//! server. Baseline in the same run: a `run_bash("true")` round trip on the
//! same warm connection, the floor of any remote step.
//!
//! Run: `DOPPEL_TEST_PYTHON=.venv/worker/bin/python cargo bench -p doppel-engine --bench mounts`
//! (as root; `DOPPEL_BENCH_ROUNDS`, default 20).

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use doppel_model::MountRequest;
use doppel_testworld::World;

#[path = "../tests/common/mod.rs"]
mod common;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("DOPPEL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let world = World::new(&["target"]);
    let host = world.host("target");
    host.mkdir("/srv/mnt", "delphix");
    let data = tempfile::tempdir().unwrap();
    let engine = common::open_engine(data.path()).await;
    let env = common::add_env(&engine, "target", host, "delphix").await["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = doppel_storage::VolumeId::new("bench").unwrap();
    let path = engine.pool().create_volume(&v).unwrap();
    std::fs::write(path.join("f"), b"x").unwrap();

    // Baseline: a bare remote command on the warm connection the mounts use.
    let conn = doppel_remote::Connection::connect(
        &host.address().to_string(),
        host.port(),
        "delphix",
        &doppel_remote::Credentials::Password(host.user("delphix").password.clone().unwrap()),
        &doppel_remote::HostKeyPolicy::AcceptFirst,
    )
    .await
    .unwrap();
    let mut bash = Vec::new();
    for _ in 0..rounds * 5 {
        let t = Instant::now();
        conn.run_bash("true", &Default::default(), false)
            .await
            .unwrap();
        bash.push(t.elapsed());
    }

    let (mut mount, mut unmount) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let m = engine
            .mount_volume(MountRequest {
                environment: env.clone(),
                user: None,
                volume: "bench".into(),
                subdirectory: String::new(),
                mount_path: "/srv/mnt/bench".into(),
                read_only: false,
                owner: None,
            })
            .await
            .unwrap();
        mount.push(t.elapsed());
        let t = Instant::now();
        engine.unmount(m.id).await.unwrap();
        unmount.push(t.elapsed());
    }
    let base = median(bash.clone());
    println!("remote dataset mount/unmount through the engine (sshfs passive + engine SFTP), {rounds} rounds");
    println!("{:<36} {:>10} {:>12}", "step", "median ms", "x baseline");
    for (name, v) in [
        ("baseline: run_bash(\"true\"), warm", bash),
        ("mount (ready on the host)", mount),
        ("unmount", unmount),
    ] {
        let m = median(v);
        println!(
            "{name:<36} {:>10.2} {:>12.1}",
            ms(m),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    engine.delete_environment(&env).await.unwrap();
    engine.shutdown().await;
}
