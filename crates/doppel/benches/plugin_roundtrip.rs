//! Round trip of one plugin operation through a warm worker.
//!
//! Target (design §5): under 5 ms at the median for an empty operation.
//! Reported against a baseline measured in the same run: a bare Python
//! process echoing JSON lines over pipes, the floor any pipe protocol pays.
//!
//! Run: `cargo bench -p doppel --bench plugin_roundtrip` (after `scripts/setup.sh --test`).
//! `DOPPEL_BENCH_ROUNDS` sets the number of calls (default 2000).

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

#[path = "common/stats.rs"]
mod stats;
#[path = "../tests/it/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use stats::{median, ms, p99};
use support::*;

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

    // The engine in-process: plugin host, worker, SDK wrappers, protobuf;
    // confined (the default) and unconfined, alternating halves so that
    // drift on a shared machine falls on both.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let open = |sandbox: bool| {
        let data = tempfile::tempdir().unwrap();
        let engine = rt
            .block_on(doppel_engine::Engine::open(doppel_engine::EngineConfig {
                data_dir: data.path().to_owned(),
                pool: doppel_engine::PoolOptions {
                    driver: Some(doppel_engine::DriverKind::Copy),
                    ..Default::default()
                },
                python: python(),
                python27: None,
                deadlines: Default::default(),
                plugin_workers: 4,
                plugin_worker_idle: std::time::Duration::from_secs(300),
                plugin_sandbox: doppel_engine::SandboxConfig {
                    enabled: sandbox,
                    ..Default::default()
                },
                auth: Default::default(),
                mount_keeper: None,
                capacity: Default::default(),
                webhooks: Default::default(),
            }))
            .unwrap();
        rt.block_on(engine.install_plugin(
            &engine.principal("admin").unwrap(),
            &std::fs::read(&artifact).unwrap(),
        ))
        .unwrap();
        (engine, data)
    };
    let call = || doppel_engine::PluginInvocation {
        operation: "virtual.status".into(),
        request: request.clone(),
        deadline: None,
        job: None,
        sync_volume: None,
    };
    let (engine, _data) = open(true);
    let (plain, _plain_data) = open(false);
    let mut worker = Vec::with_capacity(rounds);
    let mut unconfined = Vec::with_capacity(rounds);
    for _half in 0..2 {
        for (e, samples) in [(&plain, &mut unconfined), (&engine, &mut worker)] {
            for i in 0..rounds / 2 + 50 {
                let t = Instant::now();
                let out = rt
                    .block_on(e.invoke_plugin("doppel-all-ops-staged", call()))
                    .unwrap();
                if i >= 50 {
                    samples.push(t.elapsed());
                }
                assert_eq!(out["status"], "ACTIVE");
            }
        }
    }
    rt.block_on(plain.shutdown());
    drop(plain);
    let starts = worker_starts(&rt, &std::fs::read(&artifact).unwrap());
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
        ("engine -> worker, unconfined", &unconfined),
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
    println!(
        "\nsandboxed / unconfined round trip: {:.2} (target under 2)",
        median(worker.clone()).as_secs_f64() / median(unconfined.clone()).as_secs_f64()
    );
    println!("\nworker start (load the plugin, answer ready), {WORKER_STARTS} starts each");
    for (name, v) in [("unconfined", &starts.0), ("sandboxed", &starts.1)] {
        let mut sorted = v.clone();
        sorted.sort();
        println!(
            "{name:<12} median {:>8.1} ms  p90 {:>8.1} ms",
            ms(median(v.clone())),
            ms(sorted[sorted.len() * 9 / 10])
        );
    }
    println!(
        "sandboxed / unconfined start: {:.2}",
        median(starts.1.clone()).as_secs_f64() / median(starts.0.clone()).as_secs_f64()
    );
    let m = median(worker);
    println!(
        "target: engine -> worker median under 5 ms: {}",
        if ms(m) < 5.0 { "met" } else { "NOT met" }
    );
}

const WORKER_STARTS: usize = 20;

/// Times fresh worker starts through the plugin host (unconfined, sandboxed),
/// alternating, each stopped before the next.
fn worker_starts(rt: &tokio::runtime::Runtime, artifact: &[u8]) -> (Vec<Duration>, Vec<Duration>) {
    use doppel_plugin_host::{HostConfig, LoadedPlugin, PluginHost, PluginLog};
    /// Worker starts make no library calls: any that came would be refused.
    struct NoHosts;
    impl doppel_plugin_host::LibraryHandler for NoHosts {
        fn call<'a>(
            &'a self,
            _call: doppel_plugin_host::LibraryCall<'a>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = serde_json::Value> + Send + 'a>>
        {
            Box::pin(async { doppel_plugin_host::libs::actionable_error(1, "no hosts here") })
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let parsed = doppel_plugin_host::Artifact::parse(artifact).unwrap();
    let code = dir.path().join("code");
    parsed.extract_source(&code).unwrap();
    let script = dir.path().join("doppel_worker.py");
    std::fs::write(&script, doppel_plugin_host::WORKER_SCRIPT).unwrap();
    let host = |enabled: bool| {
        PluginHost::new(
            HostConfig {
                python: python(),
                python27: None,
                worker_script: script.clone(),
                start_deadline: Duration::from_secs(60),
                max_workers: 1,
                short: Duration::from_secs(60),
                normal: Duration::from_secs(60),
                long: Duration::from_secs(60),
                sandbox: doppel_plugin_host::SandboxConfig {
                    enabled,
                    ..Default::default()
                },
            },
            std::sync::Arc::new(NoHosts),
        )
    };
    let plugin = LoadedPlugin {
        id: parsed.id.clone(),
        name: parsed.name.clone(),
        build_number: parsed.build_number.to_string(),
        kind: parsed.kind,
        language: parsed.language,
        entry_point: parsed.entry_point.clone(),
        manifest: parsed.manifest.clone(),
        code_dir: code,
        scratch_dir: dir.path().join("scratch"),
        log: std::sync::Arc::new(PluginLog::new(dir.path().join("logs"))),
    };
    let hosts = [host(false), host(true)];
    let mut out = (Vec::new(), Vec::new());
    // One start each first: the sandbox looks its runtime up once.
    for i in 0..=WORKER_STARTS {
        for (h, samples) in hosts.iter().zip([&mut out.0, &mut out.1]) {
            let t = Instant::now();
            rt.block_on(h.ensure_loaded(&plugin)).unwrap();
            let took = t.elapsed();
            rt.block_on(h.stop(&plugin));
            if i > 0 {
                samples.push(took);
            }
        }
    }
    out
}
