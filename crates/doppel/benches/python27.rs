//! A PYTHON27 plugin's empty-operation round trip against a PYTHON311
//! one's, in one engine, both workers sandboxed and warm.
//!
//! Run: `cargo bench -p doppel --bench python27` (after `scripts/setup.sh --test`).
//! `DOPPEL_BENCH_ROUNDS` sets the number of calls per plugin (default 2000).

#![allow(clippy::unwrap_used)]

#[path = "common/stats.rs"]
mod stats;
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stats::{median, ms, p99};
use support::*;

fn main() {
    let rounds: usize = std::env::var("DOPPEL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    // Both test plugins answer virtual.status to this request with ACTIVE
    // after logging two lines (the operation and what it received): the
    // same work in either language.
    let request = json!({
        "repository": {"parameters": pdo(json!({"name": "r"}))},
        "source_config": {"parameters": pdo(json!({"name": "sc"}))},
        "virtual_source": virtual_source(json!({"behavior": "ok", "mountPath": "/mnt/v"})),
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = rt
        .block_on(doppel_engine::Engine::open(doppel_engine::EngineConfig {
            data_dir: data.path().to_owned(),
            pool: doppel_engine::PoolOptions {
                driver: Some(doppel_engine::DriverKind::Copy),
                ..Default::default()
            },
            python: python(),
            python27: Some(python27()),
            deadlines: Default::default(),
            plugin_workers: 4,
            plugin_worker_idle: Duration::from_secs(300),
            plugin_sandbox: Default::default(),
            auth: Default::default(),
            mount_keeper: None,
            capacity: Default::default(),
            webhooks: Default::default(),
        }))
        .unwrap();
    let admin = engine.principal("admin").unwrap();
    let plugins = [
        (
            "PYTHON311",
            "doppel-all-ops-staged",
            build_plugin("all-ops-staged"),
        ),
        (
            "PYTHON27",
            "doppel-py27-staged",
            build_plugin27("py27-staged"),
        ),
    ];
    for (_, _, artifact) in &plugins {
        rt.block_on(engine.install_plugin(&admin, &std::fs::read(artifact).unwrap()))
            .unwrap();
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); plugins.len()];
    // Alternating halves, so drift on a shared machine falls on both.
    for _half in 0..2 {
        for (i, (_, name, _)) in plugins.iter().enumerate() {
            for n in 0..rounds / 2 + 50 {
                let call = doppel_engine::PluginInvocation {
                    operation: "virtual.status".into(),
                    request: request.clone(),
                    deadline: None,
                    job: None,
                    sync_volume: None,
                };
                let t = Instant::now();
                let out = rt.block_on(engine.invoke_plugin(name, call)).unwrap();
                if n >= 50 {
                    samples[i].push(t.elapsed());
                }
                assert_eq!(out["status"], "ACTIVE");
            }
        }
    }
    rt.block_on(engine.shutdown());

    let base = median(samples[0].clone());
    println!("virtual.status round trip, warm sandboxed worker, {rounds} calls each");
    println!(
        "{:<12} {:>10} {:>10} {:>14}",
        "language", "median ms", "p99 ms", "× PYTHON311"
    );
    for ((language, _, _), s) in plugins.iter().zip(&samples) {
        println!(
            "{:<12} {:>10.3} {:>10.3} {:>14.2}",
            language,
            ms(median(s.clone())),
            ms(p99(s.clone())),
            median(s.clone()).as_secs_f64() / base.as_secs_f64()
        );
    }
}
