//! Storage pool benchmark: snapshot, clone and destroy times per driver for
//! a small and a large dataset of many files, clone time against `cp -a`,
//! and pool usage after 20 clones with 10 MiB written each.
//!
//! Run as root: `cargo bench -p doppel-storage --bench pool`.
//! `DOPPEL_BENCH_QUICK=1` uses small sizes for a smoke run.
//! `DOPPEL_BENCH_COPY_BIG=1` also runs the copy driver on the big dataset.
//! Each driver gets its own filesystem: btrfs and XFS (reflink) on sparse
//! loop files, copy on a plain directory of the data directory's filesystem.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Scratch;
use doppel_storage::{DriverKind, Pool, PoolOptions, SnapshotId, SnapshotRef, VolumeId};

const MIB: u64 = 1 << 20;

struct Size {
    label: &'static str,
    bytes: u64,
    files: u64,
}

#[derive(Default, Clone)]
struct Row {
    driver: &'static str,
    size: &'static str,
    snapshot: Duration,
    clone: Duration,
    destroy_clone: Duration,
    destroy_snapshot: Duration,
    cp_a: Duration,
    usage_ratio: f64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let r = f();
    (t.elapsed(), r)
}

fn vid(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}

fn fill(root: &Path, size: &Size) {
    let per_file = (size.bytes / size.files) as usize;
    let noise = common::noise(per_file + 4096, 42);
    for i in 0..size.files {
        let dir = root.join(format!("d{:03}", i / 500));
        if i % 500 == 0 {
            fs::create_dir(&dir).unwrap();
        }
        let mut f = fs::File::create(dir.join(format!("f{i:05}"))).unwrap();
        // A distinct first block per file; the rest is shared noise (no fs here dedups).
        let off = (i as usize * 8) % 4096;
        f.write_all(&noise[off..off + per_file]).unwrap();
    }
    sync();
}

fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

fn used(pool: &Pool) -> u64 {
    sync();
    pool.status().unwrap().used
}

fn run(kind: DriverKind, size: &Size, reps: usize) -> Row {
    let fs_ = match kind {
        DriverKind::Btrfs => {
            Scratch::loop_fs_sized(&["mkfs.btrfs", "-q"], size.bytes * 3 + (2 << 30))
        }
        DriverKind::Reflink => Scratch::loop_fs_sized(
            &["mkfs.xfs", "-q", "-m", "reflink=1"],
            size.bytes * 3 + (2 << 30),
        ),
        DriverKind::Copy => Scratch::plain(),
    };
    let pool = Pool::open(
        fs_.pool_root(),
        &PoolOptions {
            reserve: 0,
            driver: Some(kind),
            ..Default::default()
        },
    )
    .unwrap();
    let used_empty = used(&pool);
    let src = pool.create_volume(&vid("src")).unwrap();
    eprintln!(
        "  {kind} {}: writing {} files, {} MiB",
        size.label,
        size.files,
        size.bytes / MIB
    );
    fill(&src, size);
    let base = SnapshotRef::new(vid("src"), SnapshotId::new("base").unwrap());
    pool.create_snapshot(&base.volume, &base.snapshot).unwrap();

    let (mut snap, mut dsnap, mut clone, mut dclone, mut cp) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..reps {
        let s = SnapshotId::new(format!("s{i}")).unwrap();
        snap.push(time(|| pool.create_snapshot(&vid("src"), &s).unwrap()).0);
        dsnap.push(
            time(|| {
                pool.destroy_snapshot(&SnapshotRef::new(vid("src"), s.clone()))
                    .unwrap()
            })
            .0,
        );
        let c = vid(&format!("c{i}"));
        clone.push(time(|| pool.create_clone(&base, &c).unwrap()).0);
        dclone.push(time(|| pool.destroy_volume(&c).unwrap()).0);
    }
    let cp_reps = if size.bytes > (1 << 30) { 1 } else { reps };
    for _ in 0..cp_reps {
        let dst = pool.root().join("cp-a-copy");
        let (t, st) = time(|| {
            Command::new("cp")
                .arg("-a")
                .arg(&src)
                .arg(&dst)
                .status()
                .unwrap()
        });
        assert!(st.success());
        cp.push(t);
        fs::remove_dir_all(&dst).unwrap();
    }
    pool.wait_reclaimed().unwrap();

    // 20 clones with 10 MiB written in each.
    let before = used(&pool);
    for i in 0..20 {
        let c = pool.create_clone(&base, &vid(&format!("vdb{i}"))).unwrap();
        common::write_noise(&c.join("written"), 10 * MIB as usize, 1000 + i);
    }
    let after = used(&pool);
    let dataset = before.saturating_sub(used_empty);
    let logical = size.bytes + 20 * 10 * MIB;
    let usage_ratio = (after.saturating_sub(used_empty)) as f64 / logical as f64;
    eprintln!(
        "  usage: empty {} MiB, with dataset {} MiB (+{} MiB), after 20 clones {} MiB; ratio {:.3}",
        used_empty / MIB,
        before / MIB,
        dataset / MIB,
        after / MIB,
        usage_ratio
    );
    drop(pool);
    Row {
        driver: kind.name(),
        size: size.label,
        snapshot: median(snap),
        clone: median(clone),
        destroy_clone: median(dclone),
        destroy_snapshot: median(dsnap),
        cp_a: median(cp),
        usage_ratio,
    }
}

/// btrfs snapshot and clone times as the pool fills with live clones of one
/// dataset: (clones already there, snapshot, clone). A btrfs snapshot commits
/// a transaction whose work grows with the subvolumes and the back references
/// the source's blocks carry, so it is not constant in the number of VDBs.
fn crowding(size: &Size, levels: &[usize]) -> Vec<(usize, Duration, Duration)> {
    let fs_ = Scratch::loop_fs_sized(&["mkfs.btrfs", "-q"], size.bytes * 3 + (2 << 30));
    let pool = Pool::open(
        fs_.pool_root(),
        &PoolOptions {
            reserve: 0,
            driver: Some(DriverKind::Btrfs),
            ..Default::default()
        },
    )
    .unwrap();
    fill(&pool.create_volume(&vid("src")).unwrap(), size);
    let base = SnapshotRef::new(vid("src"), SnapshotId::new("base").unwrap());
    pool.create_snapshot(&base.volume, &base.snapshot).unwrap();
    let (mut live, mut out) = (0, Vec::new());
    for &level in levels {
        while live < level {
            pool.create_clone(&base, &vid(&format!("keep{live}")))
                .unwrap();
            live += 1;
        }
        let (mut snap, mut clone) = (vec![], vec![]);
        for i in 0..10 {
            let c = vid(&format!("probe{level}x{i}"));
            clone.push(time(|| pool.create_clone(&base, &c).unwrap()).0);
            let s = SnapshotId::new("s").unwrap();
            snap.push(time(|| pool.create_snapshot(&c, &s).unwrap()).0);
            pool.destroy_snapshot(&SnapshotRef::new(c.clone(), s))
                .unwrap();
            pool.destroy_volume(&c).unwrap();
        }
        out.push((level, median(snap), median(clone)));
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the storage benchmark needs root (loop devices, mounts)");
        std::process::exit(1);
    }
    let quick = std::env::var_os("DOPPEL_BENCH_QUICK").is_some_and(|v| v != "0");
    let copy_big = std::env::var_os("DOPPEL_BENCH_COPY_BIG").is_some_and(|v| v != "0");
    let sizes = if quick {
        [
            Size {
                label: "20MiB/400 files",
                bytes: 20 * MIB,
                files: 400,
            },
            Size {
                label: "200MiB/2000 files",
                bytes: 200 * MIB,
                files: 2000,
            },
        ]
    } else {
        [
            Size {
                label: "100MiB/2000 files",
                bytes: 100 * MIB,
                files: 2000,
            },
            Size {
                label: "4GiB/20000 files",
                bytes: 4096 * MIB,
                files: 20000,
            },
        ]
    };
    let reps = if quick { 3 } else { 5 };
    let mut rows = Vec::new();
    for kind in [DriverKind::Btrfs, DriverKind::Reflink, DriverKind::Copy] {
        for (i, size) in sizes.iter().enumerate() {
            if kind == DriverKind::Copy && i == 1 && !copy_big {
                continue;
            }
            rows.push(run(kind, size, reps));
        }
    }
    println!(
        "\nmedian of {reps} runs (cp -a: {} run(s) on the big dataset)\n",
        1
    );
    println!("| driver | dataset | snapshot ms | clone ms | destroy clone ms | destroy snapshot ms | cp -a ms | clone / cp -a | usage ratio (20 clones + 10 MiB each) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.4} | {:.3} |",
            r.driver,
            r.size,
            ms(r.snapshot),
            ms(r.clone),
            ms(r.destroy_clone),
            ms(r.destroy_snapshot),
            ms(r.cp_a),
            r.clone.as_secs_f64() / r.cp_a.as_secs_f64(),
            r.usage_ratio
        );
    }
    let b: Vec<_> = rows.iter().filter(|r| r.driver == "btrfs").collect();
    if b.len() == 2 {
        println!(
            "\nbtrfs clone time, big / small: {:.2} (target < 1.2); snapshot: {:.2}",
            b[1].clone.as_secs_f64() / b[0].clone.as_secs_f64(),
            b[1].snapshot.as_secs_f64() / b[0].snapshot.as_secs_f64()
        );
        println!("btrfs pool usage after 20 clones with 10 MiB written, over dataset + writes: {:.3} (target < 1.07)", b[1].usage_ratio);
    }
    let levels: &[usize] = if quick { &[0, 50] } else { &[0, 100, 200, 400] };
    let rows = crowding(&sizes[0], levels);
    println!(
        "\nbtrfs, {}: median of 10 with N live clones of the dataset already in the pool\n",
        sizes[0].label
    );
    println!("| live clones | snapshot of a clone ms | clone ms | snapshot / at 0 |");
    println!("|---|---|---|---|");
    for (n, snap, clone) in &rows {
        println!(
            "| {n} | {} | {} | {:.2} |",
            ms(*snap),
            ms(*clone),
            snap.as_secs_f64() / rows[0].1.as_secs_f64()
        );
    }
}
