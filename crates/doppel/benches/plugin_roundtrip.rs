//! Round trip of one plugin operation through a warm worker.
//!
//! Target (design §5): under 5 ms at the median for an empty operation.
//! Reported against a baseline measured in the same run: a bare Python
//! process echoing JSON lines over pipes, the floor any pipe protocol pays.
//!
//! Run: `cargo bench -p doppel --bench plugin_roundtrip` (after `scripts/setup.sh --test`).
//! `DOPPEL_BENCH_ROUNDS` sets the number of calls (default 2000).

#[path = "../tests/it/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 99 / 100]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::var("DOPPEL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let artifact = build_plugin("all-ops-staged");
    let request = json!({
        "repository": {"parameters": pdo(json!({"name": "r"}))},
        "source_config": {"parameters": pdo(json!({"name": "sc"}))},
        "virtual_source": virtual_source(json!({"behavior": "ok", "mountPath": "/mnt/v"})),
    });
    let message = json!({"type": "invoke", "id": 1, "group": "virtual", "method": "status",
                         "request_type": "VirtualStatusRequest", "request": request});

    // Baseline: the same message echoed by a bare Python over pipes.
    let mut echo = Command::new(python())
        .args(["-u", "-c", "import sys, json\nfor l in sys.stdin:\n    sys.stdout.write(json.dumps(json.loads(l)) + '\\n')\n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tx = echo.stdin.take().unwrap();
    let mut rx = BufReader::new(echo.stdout.take().unwrap());
    let line = format!("{message}\n");
    let mut baseline = Vec::with_capacity(rounds);
    let mut buf = String::new();
    for i in 0..rounds + 50 {
        let t = Instant::now();
        tx.write_all(line.as_bytes()).unwrap();
        tx.flush().unwrap();
        buf.clear();
        rx.read_line(&mut buf).unwrap();
        if i >= 50 {
            baseline.push(t.elapsed());
        }
    }
    drop(tx);
    echo.wait().unwrap();

    // The engine in-process: plugin host, worker, SDK wrappers, protobuf.
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
            deadlines: Default::default(),
            plugin_workers: 4,
            plugin_worker_idle: std::time::Duration::from_secs(300),
            plugin_sandbox: Default::default(),
            auth: Default::default(),
        }))
        .unwrap();
    rt.block_on(engine.install_plugin(&std::fs::read(&artifact).unwrap()))
        .unwrap();
    let call = || doppel_engine::PluginInvocation {
        operation: "virtual.status".into(),
        request: request.clone(),
        deadline: None,
        job: None,
        sync_volume: None,
    };
    let mut worker = Vec::with_capacity(rounds);
    for i in 0..rounds + 50 {
        let t = Instant::now();
        let out = rt
            .block_on(engine.invoke_plugin("doppel-all-ops-staged", call()))
            .unwrap();
        if i >= 50 {
            worker.push(t.elapsed());
        }
        assert_eq!(out["status"], "ACTIVE");
    }
    // Throughput with several callers at once: each gets its own worker
    // (up to --plugin-workers), so calls of different jobs overlap.
    let engine = std::sync::Arc::new(engine);
    let burst = |callers: usize, calls: usize| {
        rt.block_on(async {
            let tasks: Vec<_> = (0..callers)
                .map(|_| {
                    let (engine, request) = (engine.clone(), request.clone());
                    tokio::spawn(async move {
                        for _ in 0..calls / callers {
                            let call = doppel_engine::PluginInvocation {
                                operation: "virtual.status".into(),
                                request: request.clone(),
                                deadline: None,
                                job: None,
                                sync_volume: None,
                            };
                            engine
                                .invoke_plugin("doppel-all-ops-staged", call)
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        })
    };
    let mut throughput = Vec::new();
    for callers in [1usize, 2, 4] {
        // Warm up: the extra workers start here, not in the timed part.
        burst(callers, callers * 10);
        let t = Instant::now();
        burst(callers, rounds);
        throughput.push((
            callers,
            (rounds / callers * callers) as f64 / t.elapsed().as_secs_f64(),
        ));
    }
    rt.block_on(engine.shutdown());

    // Through the HTTP API, as the CLI and scripts see it.
    let server = Engine::start();
    server.install(&artifact);
    let client = server.client();
    let mut http = Vec::with_capacity(rounds);
    for i in 0..rounds + 50 {
        let t = Instant::now();
        client
            .invoke(
                "doppel-all-ops-staged",
                "virtual.status",
                request.clone(),
                None,
            )
            .unwrap();
        if i >= 50 {
            http.push(t.elapsed());
        }
    }

    let base = median(baseline.clone());
    println!("plugin operation round trip (virtual.status, warm worker), {rounds} calls each");
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "path", "median ms", "p99 ms", "x baseline"
    );
    for (name, v) in [
        ("baseline: python JSON echo", &baseline),
        ("engine -> worker (in-process)", &worker),
        ("HTTP API -> engine -> worker", &http),
    ] {
        let m = median(v.clone());
        println!(
            "{name:<34} {:>10.3} {:>10.3} {:>12.2}",
            ms(m),
            ms(p99(v.clone())),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!("\nconcurrent callers, in-process: calls per second (x one caller)");
    for (callers, rate) in &throughput {
        println!(
            "{callers} caller(s): {rate:>8.0} /s  {:>5.2}",
            rate / throughput[0].1
        );
    }
    let m = median(worker);
    println!(
        "target: engine -> worker median under 5 ms: {}",
        if ms(m) < 5.0 { "met" } else { "NOT met" }
    );
}
