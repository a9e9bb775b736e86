//! `cargo bench -p doppel-remote --bench ssh`: run_bash("true") round trip on
//! a warm connection to a fake host, against a local `bash -c true` spawn.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use doppel_remote::{Connection, Credentials, HostKey, HostKeyPolicy};
use doppel_testworld::{World, DELPHIX_PASSWORD};

const RUNS: usize = 200;
const ECHOES: usize = 2000;

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
    let (ssh, login, echo) = rt.block_on(async {
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
        // The data path of a remote mount: bytes through an exec channel
        // and back (the host runs `cat`), one small message at a time.
        let (mut stream, _wait) = conn.exec_duplex("exec cat").await.unwrap().into_parts();
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        let mut echo = Vec::with_capacity(ECHOES);
        for i in 0..ECHOES + 100 {
            let t = Instant::now();
            stream.write_all(&msg).await.unwrap();
            stream.read_exact(&mut back).await.unwrap();
            if i >= 100 {
                echo.push(t.elapsed());
            }
        }
        (median(times), login, median(echo))
    });
    // The same through OpenSSH's client, as sshfs uses it on its own.
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        key.path(),
        host.user("alice").private_key_pem.clone().unwrap(),
    )
    .unwrap();
    let mut ssh_cat = std::process::Command::new("ssh")
        .arg("-i")
        .arg(key.path())
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-p",
        ])
        .arg(host.port().to_string())
        .arg(format!("alice@{}", host.address()))
        .arg("exec cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut to, mut from) = (
        ssh_cat.stdin.take().unwrap(),
        ssh_cat.stdout.take().unwrap(),
    );
    let mut openssh = Vec::with_capacity(ECHOES);
    for i in 0..ECHOES + 100 {
        let t = Instant::now();
        std::io::Write::write_all(&mut to, &[7u8; 64]).unwrap();
        std::io::Read::read_exact(&mut from, &mut [0u8; 64]).unwrap();
        if i >= 100 {
            openssh.push(t.elapsed());
        }
    }
    drop(to);
    let _ = ssh_cat.wait();
    let openssh = median(openssh);
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
        "exec channel echo, 64 B, median:       {:>8.3} ms",
        echo.as_secs_f64() * 1e3
    );
    println!(
        "  OpenSSH client echo, median:         {:>8.3} ms  (ratio {:.2})",
        openssh.as_secs_f64() * 1e3,
        echo.as_secs_f64() / openssh.as_secs_f64()
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
