//! Scheduler overhead: the time of one scheduling pass with 1,000
//! policies applied to 1,000 VDBs (one each, a VDB snapshot every minute),
//! against baselines in the same run: the same pass with 1 and with 10.
//!
//! Two passes are measured at each size, through the test clock
//! (`POST /api/v1/test-clock` sets the time and runs one pass):
//! - *due*: the clock moves to the next minute, so every object has a due
//!   slot; the VDBs are disabled, so each slot is decided and recorded as
//!   skipped, and no job runs (what is measured is the scheduler, not
//!   snapshots);
//! - *idle*: the clock moves 30 s within that minute, so nothing is due:
//!   the pass the engine runs every 15 s most of the time.
//!
//! The VDBs are records written into the engine's store (`common/seed.rs`);
//! policies are added and applied through the API like any.
//!
//! Run: `cargo bench -p doppel --bench scheduler` (after
//! `scripts/setup.sh --test`). `DOPPEL_BENCH_ROUNDS` (default 15) passes
//! of each kind per size.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

#[path = "common/seed.rs"]
mod seed;
#[path = "common/stats.rs"]
mod stats;
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use doppel_model::{ApplyPolicy, PolicySpec, Schedule};
use stats::{median, ms, p99};
use support::*;

const OBJECTS: usize = 1000;
const SIZES: [usize; 3] = [1, 10, OBJECTS];

/// 2026-01-01 at `minute`:`second`, minutes counted on past the hour.
fn at(minute: usize, second: u32) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{second:02}Z",
        minute / 60,
        minute % 60
    )
}

fn main() {
    let rounds: usize = std::env::var("DOPPEL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let mut minute = 0;
    let engine = Engine::start_with(&["--test-clock", &at(minute, 30)]);
    let plugin = engine.install(&build_plugin("all-ops-staged"));
    seed::vdbs(&engine, plugin["id"].as_str().unwrap(), OBJECTS, false);
    let client = engine.client();
    let vdbs: Vec<String> = client
        .list_vdbs()
        .unwrap()
        .into_iter()
        .map(|v| v.reference)
        .collect();
    assert_eq!(vdbs.len(), OBJECTS, "the engine lists every seeded VDB");

    let mut results: Vec<(usize, Vec<Duration>, Vec<Duration>)> = Vec::new();
    let mut applied = 0;
    for size in SIZES {
        for (i, vdb) in vdbs.iter().enumerate().take(size).skip(applied) {
            let name = format!("every-minute-{i:04}");
            client
                .add_policy(&PolicySpec {
                    name: name.clone(),
                    vdb_snapshot: Some(Schedule {
                        cron: None,
                        every: Some("1m".into()),
                    }),
                    ..Default::default()
                })
                .unwrap();
            client
                .apply_policy(
                    &name,
                    &ApplyPolicy {
                        objects: vec![vdb.clone()],
                        is_override: false,
                        dry_run: false,
                    },
                )
                .unwrap();
        }
        applied = size;
        let (mut due, mut idle) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            minute += 1;
            let t = Instant::now();
            let pass = client.set_test_clock(&at(minute, 5)).unwrap();
            due.push(t.elapsed());
            assert_eq!(pass.runs.len(), size, "one slot per object");
            assert!(
                pass.runs
                    .iter()
                    .all(|r| r.outcome == "skipped" && r.job.is_none()),
                "disabled objects run no job"
            );
            let t = Instant::now();
            let pass = client.set_test_clock(&at(minute, 35)).unwrap();
            idle.push(t.elapsed());
            assert!(pass.runs.is_empty(), "nothing is due within the minute");
        }
        results.push((size, due, idle));
    }

    println!(
        "Scheduler pass, through POST /api/v1/test-clock ({rounds} passes of each kind per size; \
         one policy per object, a VDB snapshot every minute)"
    );
    println!(
        "{:>8} {:>14} {:>14} {:>10} {:>14} {:>14} {:>10}",
        "policies", "due median", "due p99", "due ×", "idle median", "idle p99", "idle ×"
    );
    let (base_due, base_idle) = (median(results[0].1.clone()), median(results[0].2.clone()));
    for (size, due, idle) in &results {
        let (d, i) = (median(due.clone()), median(idle.clone()));
        println!(
            "{size:>8} {:>11.2} ms {:>11.2} ms {:>9.1}× {:>11.2} ms {:>11.2} ms {:>9.1}×",
            ms(d),
            ms(p99(due.clone())),
            d.as_secs_f64() / base_due.as_secs_f64(),
            ms(i),
            ms(p99(idle.clone())),
            i.as_secs_f64() / base_idle.as_secs_f64(),
        );
    }
    let (_, due, idle) = results.last().unwrap();
    let per = |all: &Vec<Duration>, base: Duration| {
        (median(all.clone()).as_secs_f64() - base.as_secs_f64()) * 1e6 / (OBJECTS - 1) as f64
    };
    println!(
        "per object beyond the first: {:.1} µs in a due pass, {:.1} µs in an idle pass",
        per(due, base_due),
        per(idle, base_idle)
    );
}
