//! Shared set-up of the engine's integration tests and benchmarks: an
//! engine on a temporary data directory, environments on fake hosts.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use doppel_engine::{Engine, EngineConfig};
use doppel_model::{AddEnvironment, Job, JobState, UserCredentials};
use doppel_testworld::{plugins, Host};
use serde_json::Value;

/// An engine whose pool uses the copy driver (no loop device to clean up;
/// the pool's own suites test the drivers).
pub async fn open_engine(dir: &Path) -> Arc<Engine> {
    Engine::open(EngineConfig {
        data_dir: dir.to_owned(),
        pool: doppel_engine::PoolOptions {
            driver: Some(doppel_engine::DriverKind::Copy),
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
    .expect("engine opens")
}

/// Waits for a job to end (at most a minute).
pub async fn wait(engine: &Arc<Engine>, job: Job) -> Job {
    for _ in 0..1200 {
        let j = engine.jobs().get(&job.id).unwrap();
        if j.state.is_finished() {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not finish", job.id);
}

/// The median of some measurements.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// For benchmarks: waits for a job that must succeed, polling tightly;
/// returns (wall ms since `start`, ms spent in plugin operations, from the
/// job's events).
pub async fn timed(engine: &Arc<Engine>, start: std::time::Instant, job: Job) -> (f64, f64) {
    loop {
        let j = engine.jobs().get(&job.id).unwrap();
        if j.state.is_finished() {
            assert_eq!(j.state, JobState::Succeeded, "{j:?}");
            let wall = start.elapsed().as_secs_f64() * 1000.0;
            let events = engine.jobs().events(&job.id, 0).unwrap();
            // Where a job's time goes, for whoever hunts a regression.
            if std::env::var_os("DOPPEL_BENCH_EVENTS").is_some() {
                eprintln!("{} {} {wall:.1} ms", j.kind, job.id);
                for e in &events {
                    eprintln!("  {} {}", e.at, e.message);
                }
            }
            let plugin: f64 = events
                .iter()
                .filter_map(|e| {
                    e.message
                        .strip_prefix("plugin ")
                        .and_then(|m| m.rsplit_once(" in "))
                        .and_then(|(_, ms)| ms.trim_end_matches(" ms").parse::<f64>().ok())
                })
                .sum();
            return (wall, plugin);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

/// Adds `host` as environment `name`, logging in as `user` with its
/// password or key; returns the environment as the job produced it.
pub async fn add_env(engine: &Arc<Engine>, name: &str, host: &Host, user: &str) -> Value {
    let u = host.user(user);
    let credentials = match &u.password {
        Some(p) => UserCredentials::Password {
            password: p.clone(),
        },
        None => UserCredentials::Key {
            private_key: u.private_key_pem.clone().unwrap(),
            passphrase: None,
        },
    };
    let job = engine
        .add_environment(
            &engine.principal("admin").unwrap(),
            AddEnvironment {
                name: name.into(),
                host: host.address().to_string(),
                port: host.port(),
                user: user.into(),
                credentials,
                toolkit_path: None,
            },
        )
        .unwrap();
    let j = wait(engine, job).await;
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    j.result.unwrap()
}

/// Lets `user` on `from` log in to `to` as `user` with its key (the
/// tutorial's assumption: the staging host can ssh to the source host).
pub fn trust(from: &Host, to: &Host, user: &str) {
    let home = format!("/home/{user}/.ssh");
    to.mkdir(&home, user);
    to.put_file(
        &format!("{home}/authorized_keys"),
        format!("{}\n", from.user(user).public_key.clone().unwrap()).as_bytes(),
        user,
    );
    from.mkdir(&home, user);
    from.put_file(
        &format!("{home}/id_ed25519"),
        from.user(user).private_key_pem.clone().unwrap().as_bytes(),
        user,
    );
    for (h, p) in [
        (to, format!("{home}/authorized_keys")),
        (from, format!("{home}/id_ed25519")),
    ] {
        h.command(&["chmod", "700", &home]);
        h.command(&["chmod", "600", &p]);
    }
}
