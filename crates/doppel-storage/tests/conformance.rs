//! One conformance suite of behaviours, run against every driver on a real
//! filesystem: btrfs on a loop file, reflink on XFS on a loop file, copy on
//! a plain temporary directory. Every test makes its own filesystem.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{noise, write_noise, Scratch};
use doppel_storage::{
    DriverKind, KnownSet, Pool, PoolOptions, SnapshotId, SnapshotRef, StorageError, VolumeId,
};

const MIB: u64 = 1 << 20;

fn vid(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}
fn sref(v: &str, s: &str) -> SnapshotRef {
    SnapshotRef::new(vid(v), SnapshotId::new(s).unwrap())
}

struct Env {
    pool: Pool,
    kind: DriverKind,
    // Dropped last: unmounts and detaches.
    _fs: Scratch,
}

fn env(kind: DriverKind) -> Env {
    let fs = match kind {
        DriverKind::Btrfs => Scratch::btrfs(),
        DriverKind::Reflink => Scratch::xfs(),
        DriverKind::Copy => Scratch::plain(),
    };
    let opts = PoolOptions {
        reserve: 0,
        driver: Some(kind),
        ..Default::default()
    };
    let pool = Pool::open(fs.pool_root(), &opts).unwrap();
    assert_eq!(pool.info().kind, kind);
    Env {
        pool,
        kind,
        _fs: fs,
    }
}

fn mtime() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
}

/// A small tree with a subdirectory, permissions, ownership, timestamps,
/// a symlink, a hard link and a fifo.
fn write_tree(root: &Path) {
    let d = root.join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("f.txt"), b"hello").unwrap();
    fs::set_permissions(d.join("f.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(d.join("f.txt"), Some(1234), Some(5678)).unwrap();
    fs::File::options()
        .write(true)
        .open(d.join("f.txt"))
        .unwrap()
        .set_modified(mtime())
        .unwrap();
    fs::hard_link(d.join("f.txt"), d.join("h.txt")).unwrap();
    std::os::unix::fs::symlink("d/f.txt", root.join("link")).unwrap();
    common::sh(&["mkfifo", root.join("fifo").to_str().unwrap()]).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
}

fn check_tree(root: &Path) {
    let f = root.join("d/f.txt");
    assert_eq!(fs::read(&f).unwrap(), b"hello");
    let m = fs::metadata(&f).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.modified().unwrap(), mtime());
    assert_eq!(m.nlink(), 2, "hard link kept");
    assert_eq!(fs::metadata(root.join("d/h.txt")).unwrap().ino(), m.ino());
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("d/f.txt")
    );
    assert!(fs::symlink_metadata(root.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    assert_eq!(fs::metadata(root.join("d")).unwrap().mode() & 0o7777, 0o750);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

fn create_snapshot_clone_keep_contents(e: Env) {
    let p = &e.pool;
    let vp = p.create_volume(&vid("src")).unwrap();
    assert_eq!(vp, p.volume_path(&vid("src")));
    write_tree(&vp);
    let sp = p
        .create_snapshot(&vid("src"), &SnapshotId::new("s1").unwrap())
        .unwrap();
    assert_eq!(sp, p.snapshot_path(&sref("src", "s1")));
    check_tree(&sp);
    let cp = p.create_clone(&sref("src", "s1"), &vid("clone")).unwrap();
    check_tree(&cp);
    // The clone is writable.
    fs::write(cp.join("new"), b"x").unwrap();
    fs::write(cp.join("d/f.txt"), b"changed").unwrap();
}

fn clone_is_independent(e: Env) {
    let p = &e.pool;
    let vp = p.create_volume(&vid("v")).unwrap();
    write_noise(&vp.join("data"), MIB as usize, 1);
    p.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    let a = p.create_clone(&sref("v", "s"), &vid("a")).unwrap();
    let b = p.create_clone(&sref("v", "s"), &vid("b")).unwrap();
    fs::write(a.join("data"), b"a wrote this").unwrap();
    fs::write(vp.join("data"), b"origin changed").unwrap();
    fs::remove_file(b.join("data")).unwrap();
    assert_eq!(fs::read(a.join("data")).unwrap(), b"a wrote this");
    assert_eq!(fs::read(vp.join("data")).unwrap(), b"origin changed");
    assert!(!b.join("data").exists());
    assert_eq!(
        fs::read(p.snapshot_path(&sref("v", "s")).join("data")).unwrap(),
        noise(MIB as usize, 1)
    );
    // Destroying the snapshot leaves clones intact.
    p.destroy_snapshot(&sref("v", "s")).unwrap();
    assert_eq!(fs::read(a.join("data")).unwrap(), b"a wrote this");
}

fn snapshot_is_read_only(e: Env) {
    let p = &e.pool;
    assert!(
        p.info().enforced_read_only,
        "tests run as root: snapshots must be enforced read-only"
    );
    let vp = p.create_volume(&vid("v")).unwrap();
    write_tree(&vp);
    let sp = p
        .create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    let denied = |r: std::io::Result<()>, what: &str| {
        let err = r.expect_err(what);
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::EROFS) | Some(libc::EPERM) | Some(libc::EACCES)
            ),
            "{what}: {err}"
        );
    };
    denied(fs::write(sp.join("d/f.txt"), b"no"), "overwrite a file");
    denied(
        fs::OpenOptions::new()
            .append(true)
            .open(sp.join("d/f.txt"))
            .map(drop),
        "append to a file",
    );
    denied(fs::write(sp.join("new"), b"no"), "create at the root");
    denied(
        fs::write(sp.join("d/new"), b"no"),
        "create in a subdirectory",
    );
    denied(fs::remove_file(sp.join("link")), "delete a symlink");
    denied(fs::rename(sp.join("d"), sp.join("e")), "rename a directory");
    check_tree(&sp);
}

fn restore_rewinds_and_refreshes(e: Env) {
    let p = &e.pool;
    let vp = p.create_volume(&vid("v")).unwrap();
    fs::write(vp.join("f"), b"one").unwrap();
    p.create_snapshot(&vid("v"), &SnapshotId::new("s1").unwrap())
        .unwrap();
    fs::write(vp.join("f"), b"two").unwrap();
    fs::write(vp.join("extra"), b"extra").unwrap();
    p.create_snapshot(&vid("v"), &SnapshotId::new("s2").unwrap())
        .unwrap();
    // A VDB made from s2, then rewound to its parent's s1, then refreshed to s2.
    let vdb = p.create_clone(&sref("v", "s2"), &vid("vdb")).unwrap();
    fs::write(vdb.join("vdb-only"), b"x").unwrap();
    p.restore_volume(&vid("vdb"), &sref("v", "s1")).unwrap();
    assert_eq!(fs::read(vdb.join("f")).unwrap(), b"one");
    assert!(!vdb.join("extra").exists() && !vdb.join("vdb-only").exists());
    p.restore_volume(&vid("vdb"), &sref("v", "s2")).unwrap();
    assert_eq!(fs::read(vdb.join("extra")).unwrap(), b"extra");
    // Rewind the origin to its own snapshot; the volume stays writable.
    p.restore_volume(&vid("v"), &sref("v", "s1")).unwrap();
    assert_eq!(fs::read(vp.join("f")).unwrap(), b"one");
    fs::write(vp.join("f"), b"three").unwrap();
    assert_eq!(
        fs::read(p.snapshot_path(&sref("v", "s1")).join("f")).unwrap(),
        b"one"
    );
    // No temporaries left behind.
    let names: Vec<_> = fs::read_dir(p.layout().volumes_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Bad input changes nothing.
    assert!(matches!(
        p.restore_volume(&vid("nope"), &sref("v", "s1")),
        Err(StorageError::VolumeNotFound(_))
    ));
    assert!(matches!(
        p.restore_volume(&vid("v"), &sref("v", "nope")),
        Err(StorageError::SnapshotNotFound { .. })
    ));
    assert_eq!(fs::read(vp.join("f")).unwrap(), b"three");
}

fn destroy_and_list(e: Env) {
    let p = &e.pool;
    for v in ["b", "a", "c"] {
        p.create_volume(&vid(v)).unwrap();
    }
    assert_eq!(
        p.list_volumes().unwrap(),
        vec![vid("a"), vid("b"), vid("c")]
    );
    fs::write(p.volume_path(&vid("a")).join("f"), b"x").unwrap();
    p.create_snapshot(&vid("a"), &SnapshotId::new("s2").unwrap())
        .unwrap();
    p.create_snapshot(&vid("a"), &SnapshotId::new("s1").unwrap())
        .unwrap();
    assert_eq!(
        p.list_snapshots(&vid("a")).unwrap(),
        vec![
            SnapshotId::new("s1").unwrap(),
            SnapshotId::new("s2").unwrap()
        ]
    );
    assert_eq!(
        p.list_all_snapshots().unwrap(),
        vec![sref("a", "s1"), sref("a", "s2")]
    );
    assert!(p.list_snapshots(&vid("b")).unwrap().is_empty());

    // A volume with snapshots cannot be destroyed; nothing changes.
    let err = p.destroy_volume(&vid("a")).unwrap_err();
    assert!(
        matches!(&err, StorageError::HasSnapshots { snapshots, .. } if snapshots.len() == 2),
        "{err}"
    );
    assert!(err.to_string().contains("s1, s2"), "{err}");
    assert!(p.volume_path(&vid("a")).join("f").exists());

    p.destroy_snapshot(&sref("a", "s1")).unwrap();
    p.destroy_snapshot(&sref("a", "s2")).unwrap();
    assert!(p.list_all_snapshots().unwrap().is_empty());
    p.destroy_volume(&vid("a")).unwrap();
    p.destroy_volume(&vid("b")).unwrap();
    assert_eq!(p.list_volumes().unwrap(), vec![vid("c")]);
    assert!(!p.volume_path(&vid("a")).exists());

    // Destroying what does not exist is a clear error.
    assert!(
        matches!(p.destroy_volume(&vid("a")), Err(StorageError::VolumeNotFound(v)) if v == vid("a"))
    );
    let err = p.destroy_snapshot(&sref("c", "s1")).unwrap_err();
    assert!(
        err.to_string()
            .contains("snapshot s1 of volume c does not exist"),
        "{err}"
    );
    p.wait_reclaimed().unwrap();
    assert_eq!(p.status().unwrap().reclaiming, 0);
    // Only the layout's directories remain.
    let mut names: Vec<_> = fs::read_dir(p.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [".doppel-pool", "quarantine", "snapshots", "volumes"]
    );
}

fn approx(actual: u64, expected: u64, tolerance: f64) -> bool {
    (actual as f64 - expected as f64).abs() <= expected as f64 * tolerance
}

fn space_accounting(e: Env) {
    let p = &e.pool;
    let thin = p.info().thin_clone;
    let vp = p.create_volume(&vid("v")).unwrap();
    write_noise(&vp.join("data"), 10 * MIB as usize, 7);
    let u = p.volume_usage(&vid("v")).unwrap();
    assert!(
        approx(u.exclusive + u.shared, 10 * MIB, 0.1),
        "volume with 10 MiB: {u:?}"
    );
    p.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    let cp = p.create_clone(&sref("v", "s"), &vid("c")).unwrap();
    let fresh = p.volume_usage(&vid("c")).unwrap();
    if thin {
        assert!(
            fresh.exclusive < MIB,
            "a fresh thin clone costs ~nothing: {fresh:?}"
        );
    } else {
        assert!(
            approx(fresh.exclusive, 10 * MIB, 0.1),
            "a copy costs the data: {fresh:?}"
        );
    }
    write_noise(&cp.join("more"), 10 * MIB as usize, 8);
    let written = p.volume_usage(&vid("c")).unwrap();
    let delta = written.exclusive - fresh.exclusive;
    assert!(
        approx(delta, 10 * MIB, 0.1),
        "writing 10 MiB costs ~10 MiB: {fresh:?} -> {written:?}"
    );
    if thin {
        // Overwriting shared data in the clone makes it exclusive to the clone.
        let before = p.snapshot_usage(&sref("v", "s")).unwrap();
        assert!(before.exclusive + before.shared <= 11 * MIB, "{before:?}");
    }
    let st = p.status().unwrap();
    assert!(
        st.size > 0 && st.used > 0 && st.free > 0 && st.used <= st.size,
        "{st:?}"
    );
    assert_eq!((st.volumes, st.snapshots), (2, 1));
    assert_eq!(st.thin_clone, thin);
    assert_eq!(st.driver, e.kind);
    let json = format!("{:?}", st);
    assert!(json.contains("reclaiming"));
}

fn reserve_refusal(e: Env) {
    let p = &e.pool;
    let vp = p.create_volume(&vid("v")).unwrap();
    fs::write(vp.join("f"), b"x").unwrap();
    p.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    let free = p.status().unwrap().free;
    p.set_reserve(free * 4);
    let err = p.create_volume(&vid("w")).unwrap_err();
    match &err {
        StorageError::InsufficientSpace {
            free: f, reserve, ..
        } => {
            assert_eq!(*reserve, free * 4);
            assert!(*f > 0);
        }
        other => panic!("expected InsufficientSpace, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&(free * 4).to_string()) && msg.contains("reserve"),
        "{msg}"
    );
    assert!(matches!(
        p.create_clone(&sref("v", "s"), &vid("w")),
        Err(StorageError::InsufficientSpace { .. })
    ));
    assert!(matches!(
        p.create_snapshot(&vid("v"), &SnapshotId::new("t").unwrap()),
        Err(StorageError::InsufficientSpace { .. })
    ));
    assert_eq!(
        p.list_volumes().unwrap(),
        vec![vid("v")],
        "nothing was created"
    );
    assert_eq!(p.list_snapshots(&vid("v")).unwrap().len(), 1);
    assert!(p
        .status()
        .unwrap()
        .notices
        .iter()
        .any(|n| n.message.contains("below the reserve")));
    p.set_reserve(0);
    p.create_clone(&sref("v", "s"), &vid("w")).unwrap();
}

fn reconcile_finds_orphans_and_missing(e: Env) {
    let p = &e.pool;
    for v in ["a", "b"] {
        let vp = p.create_volume(&vid(v)).unwrap();
        fs::write(vp.join("f"), v).unwrap();
    }
    p.create_snapshot(&vid("a"), &SnapshotId::new("s1").unwrap())
        .unwrap();
    p.create_snapshot(&vid("a"), &SnapshotId::new("s2").unwrap())
        .unwrap();
    // A half-made clone left by a crash.
    let leftover = p.layout().volumes_dir().join("x.create.tmp");
    fs::create_dir(&leftover).unwrap();
    fs::write(leftover.join("junk"), b"junk").unwrap();

    let known = KnownSet {
        volumes: BTreeSet::from([vid("a"), vid("c")]),
        snapshots: BTreeSet::from([sref("a", "s1"), sref("a", "s9")]),
    };
    let r = p.reconcile(&known);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        r.orphan_volumes
            .iter()
            .map(|q| q.id.clone())
            .collect::<Vec<_>>(),
        vec![vid("b")]
    );
    assert_eq!(
        r.orphan_snapshots
            .iter()
            .map(|q| q.id.clone())
            .collect::<Vec<_>>(),
        vec![sref("a", "s2")]
    );
    assert_eq!(r.missing_volumes, vec![vid("c")]);
    assert_eq!(r.missing_snapshots, vec![sref("a", "s9")]);
    assert_eq!(r.removed_temporaries, vec![leftover.clone()]);
    assert!(!leftover.exists());
    // Orphans are moved aside, not deleted; what the records name is untouched.
    assert_eq!(
        fs::read(r.orphan_volumes[0].moved_to.join("f")).unwrap(),
        b"b"
    );
    assert_eq!(
        fs::read(r.orphan_snapshots[0].moved_to.join("f")).unwrap(),
        b"a"
    );
    assert_eq!(p.list_volumes().unwrap(), vec![vid("a")]);
    assert_eq!(p.list_all_snapshots().unwrap(), vec![sref("a", "s1")]);
    assert_eq!(
        fs::read(p.snapshot_path(&sref("a", "s1")).join("f")).unwrap(),
        b"a"
    );
    assert_eq!(p.list_quarantine().unwrap().len(), 2);
    // A second pass only reports what is still missing.
    let r2 = p.reconcile(&known);
    assert!(
        r2.orphan_volumes.is_empty()
            && r2.orphan_snapshots.is_empty()
            && r2.removed_temporaries.is_empty()
    );
    assert_eq!(r2.missing_volumes, vec![vid("c")]);
    // Quarantined entries can be purged.
    for q in p.list_quarantine().unwrap() {
        p.purge_quarantined(q.file_name().unwrap().to_str().unwrap())
            .unwrap();
    }
    assert!(p.list_quarantine().unwrap().is_empty());
}

fn bad_input_changes_nothing(e: Env) {
    let p = &e.pool;
    assert!(matches!(
        VolumeId::new("Bad"),
        Err(StorageError::InvalidId { .. })
    ));
    assert!(matches!(
        SnapshotId::new("../x"),
        Err(StorageError::InvalidId { .. })
    ));
    let vp = p.create_volume(&vid("v")).unwrap();
    fs::write(vp.join("f"), b"keep").unwrap();
    p.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    assert!(matches!(
        p.create_volume(&vid("v")),
        Err(StorageError::VolumeExists(_))
    ));
    assert!(matches!(
        p.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap()),
        Err(StorageError::SnapshotExists { .. })
    ));
    assert!(matches!(
        p.create_snapshot(&vid("nope"), &SnapshotId::new("s").unwrap()),
        Err(StorageError::VolumeNotFound(_))
    ));
    assert!(matches!(
        p.create_clone(&sref("v", "nope"), &vid("c")),
        Err(StorageError::SnapshotNotFound { .. })
    ));
    assert!(matches!(
        p.create_clone(&sref("v", "s"), &vid("v")),
        Err(StorageError::VolumeExists(_))
    ));
    assert!(matches!(
        p.volume_usage(&vid("nope")),
        Err(StorageError::VolumeNotFound(_))
    ));
    assert_eq!(p.list_volumes().unwrap(), vec![vid("v")]);
    assert_eq!(p.list_all_snapshots().unwrap(), vec![sref("v", "s")]);
    assert_eq!(fs::read(vp.join("f")).unwrap(), b"keep");
    assert!(matches!(
        p.set_quota(&vid("v"), Some(MIB)),
        Err(StorageError::NotSupported {
            op: "set_quota",
            ..
        })
    ));
}

fn reopen_keeps_datasets_and_sweeps_temporaries(e: Env) {
    let Env { pool, kind, _fs } = e;
    let vp = pool.create_volume(&vid("v")).unwrap();
    fs::write(vp.join("f"), b"kept").unwrap();
    pool.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    let root = pool.root().to_path_buf();
    // Leftovers of a crashed snapshot, made through the driver so that they
    // have the driver's shape (subvolume / immutable tree).
    pool.create_snapshot(&vid("v"), &SnapshotId::new("t").unwrap())
        .unwrap();
    let t = pool.snapshot_path(&sref("v", "t"));
    let leftover = root.join("snapshots/v/t.create.tmp");
    pool.layout();
    doppel_storage::sys::set_immutable(&t, false).ok();
    fs::rename(&t, &leftover).unwrap();
    drop(pool);
    // The marker decides the driver.
    let pool = Pool::open(
        &root,
        &PoolOptions {
            reserve: 0,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(pool.info().kind, kind);
    assert!(!leftover.exists(), "the leftover was swept");
    assert!(
        pool.notices()
            .iter()
            .any(|n| n.message.contains("t.create.tmp")),
        "{:?}",
        pool.notices()
    );
    assert_eq!(
        fs::read(pool.volume_path(&vid("v")).join("f")).unwrap(),
        b"kept"
    );
    assert_eq!(pool.list_all_snapshots().unwrap(), vec![sref("v", "s")]);
    // Asking for another driver than the marker's is refused.
    let other = if kind == DriverKind::Copy {
        DriverKind::Reflink
    } else {
        DriverKind::Copy
    };
    let err = Pool::open(
        &root,
        &PoolOptions {
            driver: Some(other),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::DriverMismatch { .. }), "{err}");
}

macro_rules! conformance {
    ($($driver:ident => $kind:expr),*) => {$(
        mod $driver {
            use super::*;
            #[test] fn create_snapshot_clone_keep_contents() { super::create_snapshot_clone_keep_contents(env($kind)) }
            #[test] fn clone_is_independent() { super::clone_is_independent(env($kind)) }
            #[test] fn snapshot_is_read_only() { super::snapshot_is_read_only(env($kind)) }
            #[test] fn restore_rewinds_and_refreshes() { super::restore_rewinds_and_refreshes(env($kind)) }
            #[test] fn destroy_and_list() { super::destroy_and_list(env($kind)) }
            #[test] fn space_accounting() { super::space_accounting(env($kind)) }
            #[test] fn reserve_refusal() { super::reserve_refusal(env($kind)) }
            #[test] fn reconcile_finds_orphans_and_missing() { super::reconcile_finds_orphans_and_missing(env($kind)) }
            #[test] fn bad_input_changes_nothing() { super::bad_input_changes_nothing(env($kind)) }
            #[test] fn reopen_keeps_datasets_and_sweeps_temporaries() { super::reopen_keeps_datasets_and_sweeps_temporaries(env($kind)) }
        }
    )*};
}

conformance!(btrfs => DriverKind::Btrfs, reflink_xfs => DriverKind::Reflink, copy => DriverKind::Copy);

#[test]
fn copy_driver_reserve_counts_the_copy() {
    // tmpfs gives exact, private free-space numbers.
    let fs_ = Scratch::tmpfs("64m");
    let pool = Pool::open(
        fs_.pool_root(),
        &PoolOptions {
            reserve: 0,
            driver: Some(DriverKind::Copy),
            ..Default::default()
        },
    )
    .unwrap();
    let vp = pool.create_volume(&vid("v")).unwrap();
    write_noise(&vp.join("data"), 10 * MIB as usize, 3);
    let free = pool.status().unwrap().free;
    pool.set_reserve(free - 5 * MIB);
    // A copy of 10 MiB would eat into the reserve; an empty volume would not.
    let err = pool
        .create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap_err();
    assert!(
        matches!(err, StorageError::InsufficientSpace { needed, .. } if needed >= 10 * MIB),
        "{err}"
    );
    pool.create_volume(&vid("w")).unwrap();
    assert!(pool.list_snapshots(&vid("v")).unwrap().is_empty());
    drop(pool);
}

#[test]
fn btrfs_full_qgroups_report_exclusive_and_shared() {
    let fs_ = Scratch::btrfs();
    let opts = PoolOptions {
        reserve: 0,
        driver: Some(DriverKind::Btrfs),
        quota: doppel_storage::QuotaMode::Full,
        ..Default::default()
    };
    let pool = Pool::open(fs_.pool_root(), &opts).unwrap();
    assert_eq!(
        pool.info().accounting,
        doppel_storage::Accounting::BtrfsQgroups
    );
    let vp = pool.create_volume(&vid("v")).unwrap();
    write_noise(&vp.join("data"), 10 * MIB as usize, 5);
    pool.create_snapshot(&vid("v"), &SnapshotId::new("s").unwrap())
        .unwrap();
    let s = pool.snapshot_usage(&sref("v", "s")).unwrap();
    assert!(
        s.exclusive < MIB && approx(s.shared, 10 * MIB, 0.1),
        "fresh snapshot shares everything: {s:?}"
    );
    // Once the volume drops the data, the snapshot alone holds it: deleting it would free 10 MiB.
    fs::remove_file(vp.join("data")).unwrap();
    let s = pool.snapshot_usage(&sref("v", "s")).unwrap();
    assert!(approx(s.exclusive, 10 * MIB, 0.1), "{s:?}");
    drop(pool);
}

#[test]
fn btrfs_reports_reclaiming_until_cleaned() {
    let fs_ = Scratch::btrfs();
    let opts = PoolOptions {
        reserve: 0,
        driver: Some(DriverKind::Btrfs),
        quota: doppel_storage::QuotaMode::Full,
        ..Default::default()
    };
    let pool = Pool::open(fs_.pool_root(), &opts).unwrap();
    let vp = pool.create_volume(&vid("v")).unwrap();
    for i in 0..4 {
        write_noise(&vp.join(format!("d{i}")), 8 * MIB as usize, i);
    }
    pool.volume_usage(&vid("v")).unwrap(); // commits
    let before = pool.status().unwrap();
    pool.destroy_volume(&vid("v")).unwrap();
    let during = pool.status().unwrap();
    // The cleaner may already be done; if not, what it still holds is reported.
    assert!(
        during.reclaiming == 0 || approx(during.reclaiming, 32 * MIB, 0.1),
        "{during:?}"
    );
    pool.wait_reclaimed().unwrap();
    let after = pool.status().unwrap();
    assert_eq!(after.reclaiming, 0);
    assert!(
        after.used + 24 * MIB < before.used,
        "space came back: {before:?} -> {after:?}"
    );
    drop(pool);
}

#[test]
fn not_a_pool_is_refused_untouched() {
    let fs_ = Scratch::plain();
    let root = fs_.pool_root();
    fs::create_dir(&root).unwrap();
    fs::write(root.join("precious"), b"data").unwrap();
    let err = Pool::open(&root, &PoolOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::NotAPool { .. }), "{err}");
    assert!(err.to_string().contains("precious"), "{err}");
    let names: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["precious"]);
    // A file where the pool should be is refused too.
    let f = fs_.mnt.join("file");
    fs::write(&f, b"x").unwrap();
    assert!(matches!(
        Pool::open(&f, &PoolOptions::default()),
        Err(StorageError::NotAPool { .. })
    ));
    let _ = ErrorKind::NotFound;
}
