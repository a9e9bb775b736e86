//! Requests per second of the HTTP API with concurrent clients on loopback:
//! listing 1,000 VDBs (`GET /api/v1/vdbs`) and getting one
//! (`GET /api/v1/vdbs/{vdb}`), against a baseline in the same run
//! (`GET /api/v1/health`: routing and HTTP only, no token, no store).
//!
//! There is no quick public way to make 1,000 real VDBs, so the bench
//! installs a real plugin through the API, then writes an environment, a
//! dSource with one snapshot and 1,000 VDB records straight into the running
//! engine's metadata store (parameters sealed with the engine's own key, as
//! the engine seals them). The engine reads them back like any other.
//!
//! Run: `cargo bench -p doppel --bench api` (after `scripts/setup.sh --test`).
//! `DOPPEL_BENCH_CLIENTS` (default 4) and `DOPPEL_BENCH_REQUESTS` (per
//! measurement, default 2000; listing: a tenth of it) tune it.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

#[path = "common/seed.rs"]
mod seed;
#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const VDBS: usize = 1000;

/// `total` GETs of `path` spread over `clients` threads, each with its own
/// keep-alive connection. Returns (requests per second, median, p99).
fn measure(engine: &Engine, path: &str, clients: usize, total: usize) -> (f64, Duration, Duration) {
    let url = format!("{}{path}", engine.url);
    let per = total.div_ceil(clients);
    let start = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let url = url.clone();
                let token = engine.token.clone();
                s.spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let mut lat = Vec::with_capacity(per);
                    for _ in 0..per {
                        let t = Instant::now();
                        let resp = http.get(&url).bearer_auth(&token).send().unwrap();
                        assert!(resp.status().is_success(), "{url}: {}", resp.status());
                        resp.bytes().unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = start.elapsed();
    lat.sort();
    (
        lat.len() as f64 / elapsed.as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
    )
}

fn main() {
    let clients: usize = std::env::var("DOPPEL_BENCH_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let requests: usize = std::env::var("DOPPEL_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let engine = Engine::start();
    let plugin = engine.install(&build_plugin("all-ops-staged"));
    let t = Instant::now();
    seed::vdbs(&engine, plugin["id"].as_str().unwrap(), VDBS, true);
    let seeded = t.elapsed();

    let http = reqwest::blocking::Client::new();
    let list: Vec<Value> = http
        .get(format!("{}/api/v1/vdbs", engine.url))
        .bearer_auth(&engine.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list.len(), VDBS, "the engine lists every seeded VDB");
    let one = list[VDBS / 2]["reference"].as_str().unwrap().to_owned();
    let body_bytes = http
        .get(format!("{}/api/v1/vdbs", engine.url))
        .bearer_auth(&engine.token)
        .send()
        .unwrap()
        .bytes()
        .unwrap()
        .len();

    // Warm up, then measure.
    measure(&engine, "/api/v1/health", clients, 200);
    let rows = [
        (
            "GET /api/v1/health (baseline)",
            "/api/v1/health".to_owned(),
            requests,
        ),
        (
            "GET /api/v1/vdbs/{vdb}",
            format!("/api/v1/vdbs/{one}"),
            requests,
        ),
        (
            "GET /api/v1/vdbs (1,000 VDBs)",
            "/api/v1/vdbs".to_owned(),
            (requests / 10).max(clients),
        ),
    ];
    println!("API throughput: {clients} concurrent clients on 127.0.0.1 (seeded {VDBS} VDBs in {:.1} s; list body {} KiB)", seeded.as_secs_f64(), body_bytes / 1024);
    println!(
        "{:<32} {:>9} {:>10} {:>10} {:>10}",
        "request", "count", "req/s", "median ms", "p99 ms"
    );
    for (name, path, count) in rows {
        let (rps, median, p99) = measure(&engine, &path, clients, count);
        println!(
            "{:<32} {:>9} {:>10.0} {:>10.2} {:>10.2}",
            name,
            count.div_ceil(clients) * clients,
            rps,
            median.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
}
