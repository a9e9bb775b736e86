//! The `reflink` and `copy` drivers: datasets are plain directory trees.
//!
//! * `reflink` (XFS with `reflink=1`, btrfs without subvolume rights): a
//!   snapshot or clone is a tree walk that FICLONEs every file, so it is thin
//!   in space but takes time proportional to the number of files (not their
//!   size). Usage comes from FIEMAP's shared flag.
//! * `copy`: the same walk copying every byte; neither thin nor instant, and
//!   its capabilities say so. Usage is allocated blocks.
//!
//! Neither is atomic: writers must be quiesced during a snapshot. Snapshots
//! are read-only by `FS_IMMUTABLE_FL` on every file and directory (which
//! needs CAP_LINUX_IMMUTABLE and filesystem support, probed at open); where
//! that is unavailable `enforced_read_only` is false and snapshots are
//! read-only by convention only. Every snapshot, clone or restore is built in
//! a `.tmp` sibling and renamed into place, so a crash leaves only a `.tmp`
//! that the next open sweeps.

use std::fs;
use std::path::{Path, PathBuf};

use crate::driver::{Accounting, DriverInfo, DriverKind, PoolSpace, StorageDriver, Usage};
use crate::error::{IoContext, Result, StorageError};
use crate::id::{SnapshotId, SnapshotRef, VolumeId};
use crate::layout::Layout;
use crate::revert::Revert;
use crate::sys;
use crate::tree::{self, FileCopy};

/// A driver whose datasets are directory trees (`reflink` or `copy`).
#[derive(Debug)]
pub struct TreeDriver {
    layout: Layout,
    info: DriverInfo,
    mode: FileCopy,
}

/// Whether FICLONE works in `dir` (tries it on two scratch files).
pub fn probe_reflink(dir: &Path) -> Result<()> {
    let a = dir.join(".probe-reflink-a.tmp");
    let b = dir.join(".probe-reflink-b.tmp");
    let res = (|| {
        fs::write(&a, [7u8; 4096]).ctx("write probe file", &a)?;
        let fa = fs::File::open(&a).ctx("open", &a)?;
        let fb = fs::File::create(&b).ctx("create probe file", &b)?;
        sys::ficlone(&fb, &fa).ctx("FICLONE", &b)
    })();
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    res
}

/// Whether `FS_IMMUTABLE_FL` can be set and cleared in `dir`.
pub fn probe_immutable(dir: &Path) -> bool {
    let p = dir.join(".probe-immutable.tmp");
    let ok = fs::write(&p, b"x").is_ok()
        && sys::set_immutable(&p, true).is_ok()
        && sys::set_immutable(&p, false).is_ok();
    let _ = sys::set_immutable(&p, false);
    let _ = fs::remove_file(&p);
    ok
}

impl TreeDriver {
    /// The `reflink` driver on the pool at `layout`; fails if FICLONE does not work there.
    pub fn reflink(layout: Layout) -> Result<Self> {
        probe_reflink(layout.root()).map_err(|e| StorageError::DriverUnavailable {
            driver: "reflink",
            path: layout.root().to_path_buf(),
            reason: format!("the filesystem does not support FICLONE ({e})"),
        })?;
        Ok(Self::new(layout, FileCopy::Reflink))
    }

    /// The `copy` driver on the pool at `layout` (works on any filesystem).
    pub fn copy(layout: Layout) -> Self {
        Self::new(layout, FileCopy::Copy)
    }

    fn new(layout: Layout, mode: FileCopy) -> Self {
        let reflink = mode == FileCopy::Reflink;
        let info = DriverInfo {
            kind: if reflink {
                DriverKind::Reflink
            } else {
                DriverKind::Copy
            },
            thin_clone: reflink,
            instant_snapshot: false,
            atomic_snapshot: false,
            enforced_read_only: probe_immutable(layout.root()),
            async_reclaim: false,
            accounting: if reflink {
                Accounting::Fiemap
            } else {
                Accounting::Allocated
            },
        };
        Self { layout, info, mode }
    }

    /// Clones `src` into a fresh `.tmp` sibling of `dst`, marks it immutable
    /// if asked, and returns the tmp path with a guard that removes it.
    fn build_tmp(
        &self,
        src: &Path,
        dst: &Path,
        tag: &str,
        immutable: bool,
        revert: &mut Revert,
    ) -> Result<PathBuf> {
        let tmp = Layout::tmp_sibling(dst, tag);
        if fs::symlink_metadata(&tmp).is_ok() {
            tree::remove_tree(&tmp, true)?;
        }
        let t = tmp.clone();
        revert.add("remove temporary tree", move || {
            let _ = tree::remove_tree(&t, true);
        });
        tree::clone_tree(src, &tmp, self.mode)?;
        if immutable && self.info.enforced_read_only {
            tree::set_tree_immutable(&tmp, true, false)?;
        }
        Ok(tmp)
    }

    fn remove_dataset(&self, path: &Path, clear: bool) -> Result<()> {
        let gone = Layout::tmp_sibling(path, "destroy");
        if clear {
            let _ = sys::set_immutable(path, false);
        }
        sys::rename_noreplace(path, &gone).ctx("move aside for destroy", path)?;
        tree::remove_tree(&gone, clear)
    }
}

impl StorageDriver for TreeDriver {
    fn info(&self) -> &DriverInfo {
        &self.info
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn create_volume(&self, v: &VolumeId) -> Result<()> {
        let p = self.layout.volume(v);
        fs::create_dir(&p).ctx("create volume directory", &p)
    }

    fn create_snapshot(&self, v: &VolumeId, s: &SnapshotId) -> Result<()> {
        let dir = self.layout.snapshots_dir(v);
        fs::create_dir_all(&dir).ctx("create snapshot directory", &dir)?;
        let dst = self.layout.snapshot(v, s);
        let mut revert = Revert::new();
        let tmp = self.build_tmp(&self.layout.volume(v), &dst, "create", true, &mut revert)?;
        sys::rename_noreplace(&tmp, &dst).ctx("rename snapshot into place", &dst)?;
        let d = dst.clone();
        revert.add("remove snapshot", move || {
            let _ = tree::remove_tree(&d, true);
        });
        if self.info.enforced_read_only {
            sys::set_immutable(&dst, true).ctx("set immutable flag", &dst)?;
        }
        revert.success();
        Ok(())
    }

    fn create_clone(&self, from: &SnapshotRef, v: &VolumeId) -> Result<()> {
        let dst = self.layout.volume(v);
        let mut revert = Revert::new();
        let tmp = self.build_tmp(
            &self.layout.snapshot_ref(from),
            &dst,
            "create",
            false,
            &mut revert,
        )?;
        sys::rename_noreplace(&tmp, &dst).ctx("rename clone into place", &dst)?;
        revert.success();
        Ok(())
    }

    fn restore_volume(&self, v: &VolumeId, from: &SnapshotRef) -> Result<()> {
        let dst = self.layout.volume(v);
        let mut revert = Revert::new();
        let tmp = self.build_tmp(
            &self.layout.snapshot_ref(from),
            &dst,
            "restore",
            false,
            &mut revert,
        )?;
        sys::exchange(&tmp, &dst).ctx("swap restored tree into place", &dst)?;
        revert.success();
        // `tmp` now holds the old contents; a failure here only leaves a `.tmp` to sweep.
        if let Err(e) = tree::remove_tree(&tmp, true) {
            tracing::warn!(error = %e, "could not remove the replaced volume contents; the next open sweeps them");
        }
        Ok(())
    }

    fn destroy_volume(&self, v: &VolumeId) -> Result<()> {
        self.remove_dataset(&self.layout.volume(v), false)
    }

    fn destroy_snapshot(&self, s: &SnapshotRef) -> Result<()> {
        self.remove_dataset(&self.layout.snapshot_ref(s), true)
    }

    fn remove_path(&self, path: &Path) -> Result<()> {
        let _ = sys::set_immutable(path, false);
        tree::remove_tree(path, true)
    }

    fn move_path(&self, from: &Path, to: &Path) -> Result<()> {
        let was = sys::set_immutable(from, false).unwrap_or(false);
        sys::rename_noreplace(from, to).ctx("move", from)?;
        if was {
            sys::set_immutable(to, true).ctx("set immutable flag", to)?;
        }
        Ok(())
    }

    fn volume_usage(&self, v: &VolumeId) -> Result<Usage> {
        self.usage(&self.layout.volume(v))
    }

    fn snapshot_usage(&self, s: &SnapshotRef) -> Result<Usage> {
        self.usage(&self.layout.snapshot_ref(s))
    }

    fn space(&self) -> Result<PoolSpace> {
        let s = sys::fs_space(self.layout.root()).ctx("statvfs", self.layout.root())?;
        Ok(PoolSpace {
            size: s.size,
            used: s.used,
            free: s.avail,
            reclaiming: 0,
        })
    }
}

impl TreeDriver {
    fn usage(&self, p: &Path) -> Result<Usage> {
        match self.mode {
            FileCopy::Reflink => {
                let (exclusive, shared) = tree::fiemap_tree(p)?;
                Ok(Usage { exclusive, shared })
            }
            FileCopy::Copy => Ok(Usage {
                exclusive: tree::allocated_tree(p)?,
                shared: 0,
            }),
        }
    }
}
