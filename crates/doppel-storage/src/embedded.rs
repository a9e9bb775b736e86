//! The embedded default pool, the way LXD/Incus make theirs: under the
//! engine's data directory,
//!
//! ```text
//! <data_dir>/pool.img   sparse file holding a btrfs filesystem (made on first start)
//! <data_dir>/pool       where it is loop-mounted; the pool root
//! ```
//!
//! [`open_default_pool`] decides, in this order:
//! 0. `PoolOptions::driver` names another driver than btrfs: open `pool`
//!    with it (the user asked; a notice says what that costs).
//! 1. `pool.img` exists: reuse it, loop-mounting it at `pool` unless it is
//!    already mounted there.
//! 2. `pool` is (or would be) on btrfs, because the data directory is: use it directly.
//! 3. `pool` already holds a pool (marker present, e.g. an earlier
//!    fallback): reopen it with its driver.
//! 4. Running as root with btrfs support and `mkfs.btrfs`: create
//!    `pool.img` (built as `pool.img.tmp`, sparse, of `PoolOptions::size`),
//!    format and mount it. Every step is undone if a later one fails; a
//!    disk too full for the file is an error, never a fallback.
//! 5. Otherwise fall back to the best driver the data directory's
//!    filesystem allows (reflink, else copy), with a loud warning notice.
//!
//! A `pool` directory that holds something else than a pool is refused
//! before anything is created.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::driver::DriverKind;
use crate::error::{IoContext, Result, StorageError};
use crate::layout::{Layout, MARKER};
use crate::pool::{Notice, Pool, PoolOptions};
use crate::revert::Revert;
use crate::sys;

/// Smallest loop file made (mkfs.btrfs needs about 114 MiB).
pub const MIN_POOL_SIZE: u64 = 256 << 20;
/// Free space the data directory's filesystem must have to create the loop file
/// (the file is sparse; this covers the filesystem's own metadata).
pub const MIN_BACKING_FREE: u64 = 128 << 20;

/// Path of the embedded pool's mount point (the pool root).
pub fn default_pool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pool")
}

/// Path of the embedded pool's loop file.
pub fn default_pool_image(data_dir: &Path) -> PathBuf {
    data_dir.join("pool.img")
}

/// Whether `p` is a mount point (its device differs from its parent's).
fn is_mount_point(p: &Path) -> Result<bool> {
    let m = match fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StorageError::io("stat", p, e)),
    };
    let parent = p.parent().unwrap_or(Path::new("/"));
    let pm = fs::metadata(parent).ctx("stat", parent)?;
    Ok(m.dev() != pm.dev() || m.ino() == pm.ino())
}

fn is_empty_or_missing(p: &Path) -> Result<bool> {
    match fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(StorageError::io("read directory", p, e)),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}

fn mount_loop(img: &Path, dir: &Path) -> Result<()> {
    // `-o loop` lets mount attach a loop device with autoclear, so unmounting
    // also detaches it.
    cmd::run(&["mount", "-t", "btrfs", "-o", "loop", s(img), s(dir)]).map(drop)
}

fn can_make_loop_pool() -> std::result::Result<(), String> {
    if !sys::is_root() {
        return Err("not running as root".into());
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss
        .lines()
        .any(|l| l.split_whitespace().last() == Some("btrfs"))
    {
        return Err("the kernel has no btrfs support".into());
    }
    if cmd::find_program("mkfs.btrfs").is_none() {
        return Err("mkfs.btrfs is not installed (package btrfs-progs)".into());
    }
    Ok(())
}

fn is_enospc(e: &StorageError) -> bool {
    match e {
        StorageError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
        StorageError::Command { stderr, .. } => stderr.contains("No space left"),
        StorageError::InsufficientSpace { .. } => true,
        _ => false,
    }
}

/// Creates, formats and mounts the loop file. Leaves nothing behind on failure.
fn create_loop_pool(data_dir: &Path, opts: &PoolOptions) -> Result<()> {
    let img = default_pool_image(data_dir);
    let dir = default_pool_dir(data_dir);
    let tmp = Layout::tmp_sibling(&img, "new");
    let size = opts.size.max(MIN_POOL_SIZE);
    let backing = sys::fs_space(data_dir).ctx("statvfs", data_dir)?;
    if backing.avail < MIN_BACKING_FREE {
        return Err(StorageError::InsufficientSpace {
            op: "create pool file",
            path: data_dir.into(),
            free: backing.avail,
            needed: MIN_BACKING_FREE,
            reserve: 0,
        });
    }
    let mut revert = Revert::new();
    let _ = fs::remove_file(&tmp);
    // The image holds every dataset: readable by the engine's user only.
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .ctx("create pool file", &tmp)?;
    let t = tmp.clone();
    revert.add("remove pool file", move || {
        let _ = fs::remove_file(&t);
    });
    f.set_len(size).ctx("size pool file", &tmp)?;
    drop(f);
    cmd::run(&["mkfs.btrfs", "-q", "-L", "doppel-pool", s(&tmp)])?;
    fs::rename(&tmp, &img).ctx("rename pool file", &img)?;
    let i = img.clone();
    revert.add("remove pool file", move || {
        let _ = fs::remove_file(&i);
    });
    if !dir.exists() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx("create pool mount point", &dir)?;
        let d = dir.clone();
        revert.add("remove pool mount point", move || {
            let _ = fs::remove_dir(&d);
        });
    }
    mount_loop(&img, &dir)?;
    let d = dir.clone();
    revert.add("unmount pool", move || {
        let _ = unmount(&d);
    });
    // Probe the new filesystem once through the pool (marker, quotas).
    Pool::open(
        &dir,
        &PoolOptions {
            driver: Some(DriverKind::Btrfs),
            ..opts.clone()
        },
    )?;
    revert.success();
    Ok(())
}

fn unmount(dir: &Path) -> Result<()> {
    if cmd::run(&["umount", s(dir)]).is_err() {
        // Busy: detach lazily; the loop device (autoclear) goes with the last user.
        cmd::run(&["umount", "-l", s(dir)])?;
    }
    Ok(())
}

/// Opens the engine's default pool under `data_dir` (see the module docs),
/// creating it on first start. Returns the pool and notices for the user
/// (also kept in the pool's status).
pub fn open_default_pool(data_dir: &Path, opts: &PoolOptions) -> Result<(Pool, Vec<Notice>)> {
    fs::create_dir_all(data_dir).ctx("create data directory", data_dir)?;
    let dir = default_pool_dir(data_dir);
    let img = default_pool_image(data_dir);
    let btrfs_opts = PoolOptions {
        driver: Some(DriverKind::Btrfs),
        ..opts.clone()
    };
    let finish = |mut pool: Pool, notices: Vec<Notice>| {
        for n in notices {
            pool.add_notice(n);
        }
        if img.exists() {
            if let Ok(backing) = sys::fs_space(data_dir) {
                let len = fs::metadata(&img).map(|m| m.len()).unwrap_or(0);
                let allocated = fs::metadata(&img).map(|m| m.blocks() * 512).unwrap_or(0);
                if backing.avail < len.saturating_sub(allocated) {
                    pool.add_notice(Notice::warning(format!(
                        "the pool file {} is sparse ({} bytes) but its disk has only {} bytes free: \
                         the pool can run out of space before it looks full",
                        img.display(),
                        len,
                        backing.avail
                    )));
                }
            }
        }
        let all = pool.notices().to_vec();
        Ok((pool, all))
    };

    // 0. A driver other than btrfs was asked for: no loop file, the pool
    //    lives in the data directory's own filesystem.
    if let Some(kind) = opts.driver.filter(|k| *k != DriverKind::Btrfs) {
        let pool = Pool::open(&dir, opts)?;
        let notice = Notice::warning(format!(
            "the {kind:?} driver was chosen by configuration; clones are {}",
            if pool.info().thin_clone {
                "thin but not instant"
            } else {
                "full copies: neither thin nor instant"
            }
        ));
        return finish(pool, vec![notice]);
    }

    // 1. An existing loop file.
    if img.exists() {
        let mut notices = Vec::new();
        if !is_mount_point(&dir)? {
            if !is_empty_or_missing(&dir)? {
                return Err(StorageError::NotAPool {
                    path: dir,
                    reason: format!("{} exists but the mount point is not empty", img.display()),
                });
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .ctx("create pool mount point", &dir)?;
            mount_loop(&img, &dir)?;
            notices.push(Notice::info(format!(
                "mounted {} at {}",
                img.display(),
                dir.display()
            )));
        }
        return finish(Pool::open(&dir, &btrfs_opts)?, notices);
    }
    // 2./3. A pool directory on btrfs, or an existing pool.
    if !dir.exists() && sys::is_root() && sys::is_btrfs(data_dir).ctx("statfs", data_dir)? {
        return finish(Pool::open(&dir, opts)?, Vec::new());
    }
    if dir.exists() {
        if sys::is_btrfs(&dir).ctx("statfs", &dir)? && sys::is_root() {
            return finish(Pool::open(&dir, opts)?, Vec::new());
        }
        if dir.join(MARKER).exists() {
            return finish(Pool::open(&dir, opts)?, Vec::new());
        }
        if !is_empty_or_missing(&dir)? {
            return Err(StorageError::NotAPool {
                path: dir,
                reason: format!("the directory is not empty and has no {MARKER} marker"),
            });
        }
    }
    // 4. Make the loop pool.
    let why_not = match can_make_loop_pool() {
        Ok(()) => match create_loop_pool(data_dir, opts) {
            Ok(()) => {
                let n = Notice::info(format!(
                    "created the embedded btrfs pool: a sparse {} byte file {} mounted at {}",
                    opts.size.max(MIN_POOL_SIZE),
                    img.display(),
                    dir.display()
                ));
                return finish(Pool::open(&dir, &btrfs_opts)?, vec![n]);
            }
            Err(e) if is_enospc(&e) => return Err(e),
            Err(e) => e.to_string(),
        },
        Err(why) => why,
    };
    // 5. Fall back.
    let pool = Pool::open(
        &dir,
        &PoolOptions {
            driver: None,
            ..opts.clone()
        },
    )?;
    let n = Notice::warning(format!(
        "could not create the embedded btrfs pool ({why_not}); using the {} driver at {} instead",
        pool.info().kind,
        dir.display()
    ));
    finish(pool, vec![n])
}

/// Unmounts the embedded pool (its loop device is detached with it).
/// Returns whether something was unmounted.
pub fn unmount_default_pool(data_dir: &Path) -> Result<bool> {
    let dir = default_pool_dir(data_dir);
    if !is_mount_point(&dir)? {
        return Ok(false);
    }
    unmount(&dir)?;
    Ok(true)
}
