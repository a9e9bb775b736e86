//! Throughput through a real sshfs in passive mode over pipes, against the
//! same work on the plain directory and through OpenSSH's own sftp-server
//! (the reference implementation) in the same run.
//!
//! `cargo bench -p doppel-sftp --bench sshfs`; DOPPEL_SFTP_BENCH_MIB sets
//! the sequential file size (default 512), DOPPEL_SFTP_BENCH_FILES the number
//! of 4 KiB files (default 2000).

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use common::{Mount, Server};
use doppel_sftp::ServeOptions;

struct Figures {
    write_mbs: f64,
    read_mbs: f64,
    creates_per_s: f64,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `work` is where files are written/read (a mountpoint or the plain root);
/// `root` is the directory behind it, used to prepare the file to read.
fn run(work: &Path, root: &Path, mib: usize, files: usize) -> Figures {
    let chunk = common::pattern(1 << 20, 42);
    let bytes = (mib << 20) as f64;

    let t = Instant::now();
    {
        let mut f = fs::File::create(work.join("seq-write")).unwrap();
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
    }
    let write_mbs = bytes / t.elapsed().as_secs_f64() / 1e6;

    {
        let mut f = fs::File::create(root.join("seq-read")).unwrap();
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
    }
    let t = Instant::now();
    let mut f = fs::File::open(work.join("seq-read")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, mib << 20);
    let read_mbs = bytes / t.elapsed().as_secs_f64() / 1e6;

    let dir = work.join("small");
    fs::create_dir(&dir).unwrap();
    let small = &chunk[..4096];
    let t = Instant::now();
    for i in 0..files {
        let mut f = fs::File::create(dir.join(format!("f{i:05}"))).unwrap();
        f.write_all(small).unwrap();
    }
    let creates_per_s = files as f64 / t.elapsed().as_secs_f64();
    assert_eq!(fs::read_dir(root.join("small")).unwrap().count(), files);

    for n in ["seq-write", "seq-read"] {
        fs::remove_file(root.join(n)).unwrap();
    }
    fs::remove_dir_all(root.join("small")).unwrap();
    Figures {
        write_mbs,
        read_mbs,
        creates_per_s,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !common::tools_available() {
        eprintln!("sshfs bench skipped: sshfs, fusermount3 or /dev/fuse missing");
        return;
    }
    // `cargo bench` passes --bench; run as a test (cargo test --benches),
    // only a quick smoke pass.
    let full = std::env::args().any(|a| a == "--bench");
    let mib = env_usize("DOPPEL_SFTP_BENCH_MIB", if full { 512 } else { 8 });
    let files = env_usize("DOPPEL_SFTP_BENCH_FILES", if full { 2000 } else { 50 });
    let sc = common::scratch();
    let mut rows: Vec<(&str, Figures)> = vec![];

    rows.push(("plain directory", run(&sc.root, &sc.root, mib, files)));

    let m = Mount::new(
        Server::Doppel(ServeOptions::default()),
        &sc.root,
        &sc.mnt,
        "",
    );
    rows.push(("sshfs + doppel-sftp", run(&sc.mnt, &sc.root, mib, files)));
    drop(m);

    let openssh = Path::new("/usr/lib/openssh/sftp-server").exists();
    if openssh {
        let m = Mount::new(Server::OpenSsh, &sc.root, &sc.mnt, "");
        rows.push((
            "sshfs + openssh sftp-server",
            run(&sc.mnt, &sc.root, mib, files),
        ));
        drop(m);
    }

    println!("sshfs passive over pipes: {mib} MiB sequential, {files} x 4 KiB creates");
    println!(
        "{:<30} {:>12} {:>12} {:>14}",
        "", "write MB/s", "read MB/s", "creates/s"
    );
    for (name, f) in &rows {
        println!(
            "{name:<30} {:>12.0} {:>12.0} {:>14.0}",
            f.write_mbs, f.read_mbs, f.creates_per_s
        );
    }
    let ours = &rows[1].1;
    let ratio = |base: &Figures, label: &str| {
        println!(
            "doppel-sftp / {label:<20} write {:>5.2}  read {:>5.2}  creates {:>5.2}",
            ours.write_mbs / base.write_mbs,
            ours.read_mbs / base.read_mbs,
            ours.creates_per_s / base.creates_per_s
        );
    };
    ratio(&rows[0].1, "plain directory");
    if openssh {
        ratio(&rows[2].1, "openssh sftp-server");
    }
}
