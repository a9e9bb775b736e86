//! PostgreSQL VDBs through a real engine (design §5, issue "Real
//! databases"): time from `doppel vdb provision` until the VDB accepts
//! connections, for a small and a big database, against `pg_basebackup` of
//! the same database into a local directory; 20 provisions of one snapshot
//! at once; the pool usage of those 20 after 10 MiB written in each; and a
//! sync's snapshot step (plugin pre_snapshot end to post_snapshot end).
//!
//! Source, staging and target are fake hosts of the test world (the target
//! is remote: its VDBs are served over the engine's sshfs mounts). The
//! source cluster lives on disk (a directory exposed into the source host).
//!
//! Run as root: `DOPPEL_TEST_PYTHON=.venv/worker/bin/python DOPPEL_TEST_DVP=.venv/dvp/bin/dvp \
//!   cargo bench -p doppel --bench postgres`. `DOPPEL_BENCH_PG_SCALES` (default `70,700`:
//! pgbench scales of about 1 GiB and 10 GiB), `DOPPEL_BENCH_ROUNDS` (default 5),
//! `DOPPEL_BENCH_PG_PARALLEL` (default 20).
//!
//! Last, the engine's own machine: a second engine runs inside a fourth
//! host's mount namespace (so that host is the engine's machine, its pool a
//! btrfs loop file there) and provisions VDBs of the first database onto it
//! as bind mounts (`DOPPEL_BENCH_PG_OWN=0` skips this).

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

#[path = "../tests/it/support.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use doppel_testworld::{plugins, Host, World};
use serde_json::json;
use support::Engine;

const BIN: &str = "/usr/lib/postgresql/15/bin";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sh(host: &Host, script: &str) -> String {
    let out = host.sh_output("delphix", script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn accepts(host: &Host, port: u16) -> bool {
    Command::new(format!("{BIN}/psql"))
        .args(["-X", "-A", "-t", "-h", &host.address().to_string()])
        .args(["-p", &port.to_string(), "-U", "delphix", "-d", "postgres"])
        .args(["-c", "SELECT 1"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn wait_accepting(host: &Host, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !accepts(host, port) {
        assert!(Instant::now() < deadline, "port {port} never accepted");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A pgbench database of `scale` on `host` in `dir`, on `port`.
fn make_cluster(host: &Host, dir: &str, port: u16, scale: u32) -> f64 {
    sh(
        host,
        &format!(
            "set -e; {BIN}/initdb -D {dir} -A trust -U delphix >/dev/null
printf \"listen_addresses = '{addr}'\\nport = {port}\\nunix_socket_directories = '{dir}'\\nmax_wal_size = '4GB'\\n\" >> {dir}/postgresql.conf
printf 'local all all trust\\nlocal replication all trust\\nhost replication repl 127.0.0.0/8 scram-sha-256\\nhost all all 127.0.0.0/8 trust\\n' > {dir}/pg_hba.conf
{BIN}/pg_ctl -D {dir} -l {dir}.log -w start >/dev/null
{BIN}/psql -X -q -h {dir} -p {port} -d postgres -c \"CREATE ROLE repl REPLICATION LOGIN PASSWORD 'bench'\" -c 'GRANT pg_checkpoint TO repl'
{BIN}/pgbench -q -i -s {scale} -h {dir} -p {port} postgres >/dev/null 2>&1",
            addr = host.address()
        ),
    );
    let bytes: f64 = sh(
        host,
        &format!("{BIN}/psql -X -A -t -h {dir} -p {port} -d postgres -c 'SELECT pg_database_size(current_database())'"),
    )
    .trim()
    .parse()
    .unwrap();
    bytes / (1u64 << 30) as f64
}

fn main() {
    let scales: Vec<u32> = env_or("DOPPEL_BENCH_PG_SCALES", "70,700")
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let rounds: usize = env_or("DOPPEL_BENCH_ROUNDS", "5").parse().unwrap();
    let parallel: u16 = env_or("DOPPEL_BENCH_PG_PARALLEL", "20").parse().unwrap();
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(
        disk.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let world = World::builder()
        .host("source")
        .host("staging")
        .host("target")
        .expose(disk.path())
        .build();
    let (source, target) = (world.host("source"), world.host("target"));
    target.mkdir("/srv/vdbs", "delphix");
    let total_gib: u64 = scales.iter().map(|s| *s as u64 / 60 + 1).sum();
    let pool = format!("{}GiB", total_gib * 3 + 8);
    let engine = Engine::start_with(&["--pool-size", &pool]);
    engine.install(&plugins::build_example("postgres"));
    let pw = disk.path().join("pw");
    std::fs::write(&pw, source.user("delphix").password.as_deref().unwrap()).unwrap();
    for name in ["source", "staging", "target"] {
        let h = world.host(name);
        engine.add_env(name, h, "delphix", "--password-file", pw.to_str().unwrap());
    }
    let repo = postgres_repository(&engine, "source");

    println!("| database | GiB | pg_basebackup s | provision → accepting, median ms | ratio to pg_basebackup | sync snapshot step ms |");
    println!("|---|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (i, scale) in scales.iter().enumerate() {
        let dir = format!("{}/src{i}", disk.path().display());
        let port = 5432 + i as u16;
        let gib = make_cluster(source, &dir, port, *scale);
        let copy = format!("{}/copy{i}", disk.path().display());
        let t = Instant::now();
        sh(
            source,
            &format!("{BIN}/pg_basebackup -h {dir} -p {port} -D {copy} -X stream -c fast"),
        );
        let basebackup = t.elapsed().as_secs_f64();
        sh(source, &format!("rm -rf {copy}"));
        let name = format!("db{i}");
        let sc = engine
            .cli(&[
                "sourceconfig",
                "add",
                "--env",
                "source",
                "--repository",
                &repo,
                "--params",
                &json!({"name": name, "host": source.address().to_string(), "port": port})
                    .to_string(),
                "-o",
                "json",
            ])
            .json()["reference"]
            .as_str()
            .unwrap()
            .to_owned();
        let params = json!({"replicationUser": "repl", "replicationPassword": "bench", "stagingPort": 6543 + i});
        engine
            .cli(&[
                "dsource",
                "link",
                "--sourceconfig",
                &sc,
                "--staging-env",
                "staging",
                "--params",
                &params.to_string(),
            ])
            .ok();
        // A sync's snapshot step: from the end of pre_snapshot (the standby
        // paused) to the end of post_snapshot (resumed).
        engine.cli(&["dsource", "sync", &name]).ok();
        let jobs = engine.cli(&["job", "list", "-o", "json"]).json();
        let step_ms = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "DSOURCE_SYNC")
            .map(|j| snapshot_step_ms(&engine, j["id"].as_str().unwrap()))
            .unwrap_or(f64::NAN);
        let mut times = Vec::new();
        for r in 0..rounds {
            let vdb = format!("{name}v{r}");
            let vport = 7000 + r as u16;
            let t = Instant::now();
            engine
                .cli(&[
                    "vdb", "provision", "--name", &vdb, "--from", &name, "--env", "target",
                    "--params",
                    &json!({"mountPath": format!("/srv/vdbs/{vdb}"), "port": vport, "listenAddresses": target.address().to_string()}).to_string(),
                ])
                .ok();
            wait_accepting(target, vport);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            engine.cli(&["vdb", "delete", &vdb]).ok();
        }
        let m = median(times);
        medians.push(m);
        println!(
            "| pgbench scale {scale} | {gib:.2} | {basebackup:.1} | {m:.0} | {:.4} | {step_ms:.0} |",
            m / 1000.0 / basebackup
        );
    }
    if medians.len() == 2 {
        println!(
            "\nbig / small provision time: {:.2} (target under 1.2)",
            medians[1] / medians[0]
        );
    }

    // Many at once from the first database's latest snapshot.
    let used = |e: &Engine| -> f64 {
        e.cli(&["pool", "status", "-o", "json"]).json()["used"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let before = used(&engine);
    let t = Instant::now();
    let children: Vec<_> = (0..parallel)
        .map(|k| {
            let url = engine.url.clone();
            let token = engine.token.clone();
            let params = json!({"mountPath": format!("/srv/vdbs/p{k}"), "port": 8000 + k, "listenAddresses": target.address().to_string()}).to_string();
            std::thread::spawn(move || {
                let out = Command::new(env!("CARGO_BIN_EXE_doppel"))
                    .args(["vdb", "provision", "--name", &format!("p{k}"), "--from", "db0", "--env", "target", "--params", &params])
                    .env("DOPPEL_URL", url)
                    .env("DOPPEL_TOKEN", token)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            })
        })
        .collect();
    for c in children {
        c.join().unwrap();
    }
    for k in 0..parallel {
        wait_accepting(target, 8000 + k);
    }
    let all = t.elapsed().as_secs_f64();
    for k in 0..parallel {
        Command::new(format!("{BIN}/psql"))
            .args([
                "-X",
                "-q",
                "-h",
                &target.address().to_string(),
                "-p",
                &(8000 + k).to_string(),
            ])
            .args(["-U", "delphix", "-d", "postgres", "-c"])
            .arg("CREATE TABLE w AS SELECT repeat('x', 1000) AS pad FROM generate_series(1, 10000)")
            .status()
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = used(&engine);
    println!(
        "\n{parallel} provisions of one snapshot at once: all accepting connections after {all:.1} s (target under 20 s)"
    );
    println!(
        "pool usage of those {parallel} VDBs after about 10 MiB written in each: {:.0} MiB",
        (after - before) / (1u64 << 20) as f64
    );
    drop(engine);
    drop(world);

    if env_or("DOPPEL_BENCH_PG_OWN", "1") != "0" {
        own_machine(scales[0], rounds, &disk);
    }
}

/// Provision → accepting on the engine's own machine: the VDBs are bind
/// mounts of the engine's pool, no SSH in the data path.
fn own_machine(scale: u32, rounds: usize, disk: &tempfile::TempDir) {
    let world = support::own_machine_world(&[disk.path()]);
    let local = world.host("local");
    local.mkdir("/srv/vdbs", "delphix");
    let dir = format!("{}/own", disk.path().display());
    let gib = make_cluster(local, &dir, 5432, scale);
    let pool = format!("{}GiB", scale as u64 / 60 * 3 + 8);
    let engine = Engine::start_in_namespace_of(local, &["--pool-size", &pool]);
    engine.install(&plugins::build_example("postgres"));
    let pw = disk.path().join("pw-local");
    std::fs::write(&pw, local.user("delphix").password.as_deref().unwrap()).unwrap();
    engine.add_env(
        "local",
        local,
        "delphix",
        "--password-file",
        pw.to_str().unwrap(),
    );
    let repo = postgres_repository(&engine, "local");
    let sc = engine
        .cli(&[
            "sourceconfig",
            "add",
            "--env",
            "local",
            "--repository",
            &repo,
            "--params",
            &json!({"name": "own", "host": local.address().to_string(), "port": 5432}).to_string(),
            "-o",
            "json",
        ])
        .json()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let params =
        json!({"replicationUser": "repl", "replicationPassword": "bench", "stagingPort": 6543});
    engine
        .cli(&[
            "dsource",
            "link",
            "--sourceconfig",
            &sc,
            "--staging-env",
            "local",
            "--params",
            &params.to_string(),
        ])
        .ok();
    let driver = engine.cli(&["pool", "status", "-o", "json"]).json()["driver"]
        .as_str()
        .unwrap_or("unknown")
        .to_owned();
    let mut times = Vec::new();
    for r in 0..rounds {
        let vdb = format!("own{r}");
        let vport = 7100 + r as u16;
        let t = Instant::now();
        engine
            .cli(&[
                "vdb", "provision", "--name", &vdb, "--from", "own", "--env", "local", "--params",
                &json!({"mountPath": format!("/srv/vdbs/{vdb}"), "port": vport, "listenAddresses": local.address().to_string()}).to_string(),
            ])
            .ok();
        wait_accepting(local, vport);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        engine.cli(&["vdb", "delete", &vdb]).ok();
    }
    println!(
        "\nengine's own machine ({driver} pool, bind mounts): pgbench scale {scale} ({gib:.2} GiB), \
         provision → accepting, median of {rounds}: {:.0} ms (target under 2 s)",
        median(times)
    );
    engine.cli(&["dsource", "delete", "own"]).ok();
}

/// The reference of the PostgreSQL 15 installation discovered on `env`.
fn postgres_repository(engine: &Engine, env: &str) -> String {
    let repos = engine
        .cli(&["repository", "list", "--env", env, "-o", "json"])
        .json();
    repos
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["parameters"]["binDir"] == BIN)
        .unwrap()["reference"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// How long the sync kept the standby's replay paused (pause for the
/// snapshot to resume), as the plugin logs it into the job's events.
fn snapshot_step_ms(engine: &Engine, job: &str) -> f64 {
    let events = engine.cli(&["job", "logs", job, "-o", "json"]).json();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find_map(|m| {
            m.split("replay was paused for ")
                .nth(1)
                .and_then(|rest| rest.trim_end_matches(" ms").trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}
