//! The embedded default pool: creation on a loop file, re-open (already
//! mounted, and unmounted → mount again), refusal of a non-pool directory
//! and of a disk too full for the pool file.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Scratch;
use doppel_storage::{
    default_pool_dir, default_pool_image, open_default_pool, unmount_default_pool, DriverKind,
    PoolOptions, StorageError, VolumeId,
};

/// Unmounts the embedded pool and detaches its loop device even if the test fails.
struct DataDir {
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl DataDir {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("doppel-storage-embedded")
            .tempdir()
            .unwrap();
        Self {
            path: tmp.path().join("data"),
            _tmp: tmp,
        }
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        common::teardown(
            &default_pool_dir(&self.path),
            &default_pool_image(&self.path),
        );
    }
}

fn opts() -> PoolOptions {
    PoolOptions {
        size: 512 << 20,
        reserve: 0,
        ..Default::default()
    }
}

fn mounted(p: &Path) -> bool {
    common::sh(&["mountpoint", "-q", p.to_str().unwrap()]).is_ok()
}

#[test]
fn creates_loop_pool_then_reuses_and_remounts_it() {
    let d = DataDir::new();
    let (pool, notices) = open_default_pool(&d.path, &opts()).unwrap();
    assert_eq!(pool.info().kind, DriverKind::Btrfs);
    assert!(
        notices
            .iter()
            .any(|n| n.message.contains("created the embedded btrfs pool")),
        "{notices:?}"
    );
    let img = default_pool_image(&d.path);
    let meta = fs::metadata(&img).unwrap();
    assert_eq!(meta.len(), 512 << 20);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 256 << 20,
        "the pool file is sparse"
    );
    assert!(mounted(&default_pool_dir(&d.path)));
    assert!(!d.path.join("pool.img.new.tmp").exists());
    let vp = pool.create_volume(&VolumeId::new("v").unwrap()).unwrap();
    fs::write(vp.join("f"), b"persisted").unwrap();
    drop(pool);

    // Already mounted: reused as is.
    let (pool, notices) = open_default_pool(&d.path, &opts()).unwrap();
    assert!(
        !notices.iter().any(|n| n.message.contains("mounted")),
        "{notices:?}"
    );
    assert_eq!(
        pool.list_volumes().unwrap(),
        vec![VolumeId::new("v").unwrap()]
    );
    drop(pool);

    // Loop file present but unmounted (a reboot): mounted again.
    assert!(unmount_default_pool(&d.path).unwrap());
    assert!(!mounted(&default_pool_dir(&d.path)));
    assert!(
        common::loop_devices(&img).is_empty(),
        "unmount detached the loop device"
    );
    assert!(!unmount_default_pool(&d.path).unwrap());
    let (pool, notices) = open_default_pool(&d.path, &opts()).unwrap();
    assert!(
        notices.iter().any(|n| n.message.contains("mounted")),
        "{notices:?}"
    );
    assert_eq!(pool.info().kind, DriverKind::Btrfs);
    assert_eq!(
        fs::read(pool.volume_path(&VolumeId::new("v").unwrap()).join("f")).unwrap(),
        b"persisted"
    );
    let st = pool.status().unwrap();
    assert!(st.size > 400 << 20 && st.size <= 512 << 20, "{st:?}");
    drop(pool);
}

#[test]
fn refuses_a_directory_that_is_not_a_pool() {
    let d = DataDir::new();
    let dir = default_pool_dir(&d.path);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("mine"), b"do not touch").unwrap();
    let err = open_default_pool(&d.path, &opts()).unwrap_err();
    assert!(matches!(err, StorageError::NotAPool { .. }), "{err}");
    assert!(
        !default_pool_image(&d.path).exists(),
        "no pool file was made"
    );
    assert_eq!(fs::read(dir.join("mine")).unwrap(), b"do not touch");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn full_disk_is_a_clear_error_and_leaves_nothing() {
    // A 64 MiB filesystem is too small for the pool file's metadata.
    let small = Scratch::tmpfs("64m");
    let data = small.mnt.join("data");
    let err = open_default_pool(&data, &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::InsufficientSpace {
                op: "create pool file",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bytes free"), "{err}");
    let left: Vec<_> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing half-made: {left:?}");
}
