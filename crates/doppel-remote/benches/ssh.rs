//! `cargo bench -p doppel-remote --bench ssh`: run_bash("true") round trip on
//! a warm connection to a fake host, against a local `bash -c true` spawn.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use doppel_remote::{Connection, Credentials, HostKey, HostKeyPolicy};
use doppel_testworld::{World, DELPHIX_PASSWORD};

const RUNS: usize = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let world = World::new(&["bench"]);
    let host = world.host("bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (ssh, login) = rt.block_on(async {
        let pin = HostKeyPolicy::Pinned(HostKey::from_openssh(host.host_public_key()).unwrap());
        let creds = Credentials::Password(DELPHIX_PASSWORD.into());
        let t = Instant::now();
        let conn = Connection::connect(
            &host.address().to_string(),
            host.port(),
            "delphix",
            &creds,
            &pin,
        )
        .await
        .unwrap();
        let login = t.elapsed();
        let none = BTreeMap::new();
        for _ in 0..20 {
            conn.run_bash("true", &none, false).await.unwrap();
        }
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            let out = conn.run_bash("true", &none, false).await.unwrap();
            times.push(t.elapsed());
            assert_eq!(out.exit_code, 0);
        }
        (median(times), login)
    });
    let mut local = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let status = std::process::Command::new("bash")
            .args(["-c", "true"])
            .status()
            .unwrap();
        local.push(t.elapsed());
        assert!(status.success());
    }
    let local = median(local);
    println!(
        "connect+login (password, pinned):      {:>8.2} ms",
        login.as_secs_f64() * 1e3
    );
    println!(
        "run_bash(\"true\") warm, median of {RUNS}:  {:>8.2} ms",
        ssh.as_secs_f64() * 1e3
    );
    println!(
        "local `bash -c true` spawn, median:    {:>8.2} ms",
        local.as_secs_f64() * 1e3
    );
    println!(
        "ratio run_bash / local spawn:          {:>8.1}x",
        ssh.as_secs_f64() / local.as_secs_f64()
    );
    println!(
        "target: run_bash warm median < 10 ms: {}",
        if ssh < Duration::from_millis(10) {
            "met"
        } else {
            "NOT met"
        }
    );
}
