//! The `btrfs` driver (the default): every volume is a subvolume, every
//! snapshot a read-only snapshot subvolume, every clone a writable snapshot
//! of a snapshot. All through the kernel ioctls (see [`ioctl`]); no CLI
//! output is parsed.
//!
//! Snapshot and clone are atomic and take constant time whatever the size.
//! Restore snapshots the source into `<volume>.restore.tmp` and swaps it with
//! the volume by `renameat2(RENAME_EXCHANGE)`, so the volume path always
//! holds a whole old or whole new tree.
//!
//! **Space.** Quotas are enabled when the pool is opened: simple quotas
//! where the kernel has them (6.7+) unless full qgroups are asked for, see
//! [`QuotaMode`]. Per-dataset usage comes from the qgroup info items, read by
//! tree search after a `syncfs` (qgroups are updated at transaction commit).
//!
//! **Reclaiming.** Destroying a subvolume returns at once; the cleaner thread
//! frees its extents later. Deleted-but-uncleaned subvolumes are the orphan
//! items of the root tree (key `ORPHAN_OBJECTID, ORPHAN_ITEM, <subvol id>`);
//! `reclaiming` is the sum of their qgroups' exclusive bytes. Under simple
//! quotas this is an upper bound (extents still shared with a snapshot or a
//! clone stay charged to the deleted subvolume but are not freed).

pub mod ioctl;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::driver::{Accounting, DriverInfo, DriverKind, PoolSpace, StorageDriver, Usage};
use crate::error::{IoContext, Result, StorageError};
use crate::id::{SnapshotId, SnapshotRef, VolumeId};
use crate::layout::Layout;
use crate::pool::Notice;
use crate::revert::Revert;
use crate::sys;
use crate::tree;

const ROOT_TREE: u64 = 1;
const QUOTA_TREE: u64 = 8;
const ORPHAN_OBJECTID: u64 = (-5i64) as u64;
const ORPHAN_ITEM_KEY: u32 = 48;
const QGROUP_STATUS_KEY: u32 = 240;
const QGROUP_INFO_KEY: u32 = 242;
const QGROUP_STATUS_FLAG_SIMPLE_MODE: u64 = 1 << 3;
const FIRST_FREE_OBJECTID: u64 = 256;

/// Which btrfs quota accounting to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaMode {
    /// Simple quotas where the kernel supports them, else full qgroups.
    /// Simple quotas cost nothing on snapshot and delete, but only say what
    /// each dataset wrote itself (see [`Accounting::BtrfsSimpleQuota`]).
    #[default]
    Auto,
    /// Simple quotas or fail.
    Simple,
    /// Full qgroups: exact exclusive/shared figures; more work for the kernel
    /// on every delete.
    Full,
}

/// The btrfs driver.
#[derive(Debug)]
pub struct BtrfsDriver {
    layout: Layout,
    info: DriverInfo,
    qgroups: bool,
}

fn open_dir(p: &Path) -> Result<File> {
    File::open(p).ctx("open directory", p)
}

fn name_of(p: &Path) -> &OsStr {
    p.file_name().expect("dataset path has a name")
}

fn parent_of(p: &Path) -> &Path {
    p.parent().expect("dataset path has a parent")
}

impl BtrfsDriver {
    /// Opens the driver on a pool root that is on btrfs; probes subvolume
    /// rights and enables quotas if they are off. Notices tell what was done.
    pub fn open(layout: Layout, quota: QuotaMode) -> Result<(Self, Vec<Notice>)> {
        let root = layout.root().to_path_buf();
        let unavailable = |reason: String| StorageError::DriverUnavailable {
            driver: "btrfs",
            path: root.clone(),
            reason,
        };
        match sys::is_btrfs(&root) {
            Ok(true) => {}
            Ok(false) => {
                return Err(unavailable(
                    "the directory is not on a btrfs filesystem".into(),
                ))
            }
            Err(e) => return Err(StorageError::io("statfs", &root, e)),
        }
        let dir = open_dir(&root)?;
        let probe = OsStr::new(".probe-subvol.tmp");
        if root.join(probe).exists() {
            let _ = ioctl::snap_destroy(&dir, probe);
        }
        ioctl::subvol_create(&dir, probe)
            .and_then(|()| ioctl::snap_destroy(&dir, probe))
            .map_err(|e| {
                unavailable(format!(
                    "cannot create and delete subvolumes here ({e}); run as root"
                ))
            })?;

        let mut notices = Vec::new();
        let (qgroups, accounting) = match enable_quota(&dir, quota) {
            Ok((acc, msg)) => {
                if let Some(m) = msg {
                    notices.push(Notice::info(m));
                }
                (true, acc)
            }
            Err(e) => {
                if quota == QuotaMode::Simple {
                    return Err(unavailable(format!("cannot enable simple quotas: {e}")));
                }
                notices.push(Notice::warning(format!(
                    "btrfs quotas could not be enabled ({e}); per-dataset usage is measured with FIEMAP instead"
                )));
                (false, Accounting::Fiemap)
            }
        };
        let info = DriverInfo {
            kind: DriverKind::Btrfs,
            thin_clone: true,
            instant_snapshot: true,
            atomic_snapshot: true,
            enforced_read_only: true,
            async_reclaim: true,
            accounting,
        };
        Ok((
            Self {
                layout,
                info,
                qgroups,
            },
            notices,
        ))
    }

    fn qgroup(&self, f: &File, id: u64) -> Result<Option<(u64, u64)>> {
        let items = ioctl::tree_search(
            f,
            QUOTA_TREE,
            (0, QGROUP_INFO_KEY, id),
            (0, QGROUP_INFO_KEY, id),
        )
        .ctx("read qgroup info", self.layout.root())?;
        Ok(items
            .first()
            .map(|i| (ioctl::le64(&i.data, 8), ioctl::le64(&i.data, 24))))
    }

    fn usage(&self, p: &Path) -> Result<Usage> {
        if !self.qgroups {
            let (exclusive, shared) = tree::fiemap_tree(p)?;
            return Ok(Usage { exclusive, shared });
        }
        let f = open_dir(p)?;
        sys::syncfs(&f).ctx("syncfs", p)?;
        let id = ioctl::subvol_id(&f).ctx("look up subvolume id", p)?;
        let (rfer, excl) = self.qgroup(&f, id)?.unwrap_or((0, 0));
        Ok(match self.info.accounting {
            Accounting::BtrfsQgroups => Usage {
                exclusive: excl,
                shared: rfer.saturating_sub(excl),
            },
            _ => Usage {
                exclusive: excl,
                shared: 0,
            },
        })
    }

    fn pending_deletions(&self, f: &File) -> Result<Vec<u64>> {
        let items = ioctl::tree_search(
            f,
            ROOT_TREE,
            (ORPHAN_OBJECTID, ORPHAN_ITEM_KEY, 0),
            (ORPHAN_OBJECTID, ORPHAN_ITEM_KEY, u64::MAX),
        )
        .ctx("list deleted subvolumes", self.layout.root())?;
        Ok(items.into_iter().map(|i| i.offset).collect())
    }

    fn destroy(&self, p: &Path) -> Result<()> {
        let parent = open_dir(parent_of(p))?;
        ioctl::snap_destroy(&parent, name_of(p)).ctx("destroy subvolume", p)
    }

    fn snapshot(&self, src: &Path, dst: &Path, flags: u64) -> Result<()> {
        let s = open_dir(src)?;
        let parent = open_dir(parent_of(dst))?;
        ioctl::snap_create(&parent, name_of(dst), &s, flags).ctx("create snapshot", dst)
    }
}

/// Reads the quota status; enables quotas if off. Returns the accounting in force.
fn enable_quota(dir: &File, mode: QuotaMode) -> std::io::Result<(Accounting, Option<String>)> {
    let status = |dir: &File| -> std::io::Result<Option<u64>> {
        match ioctl::tree_search(
            dir,
            QUOTA_TREE,
            (0, QGROUP_STATUS_KEY, 0),
            (0, QGROUP_STATUS_KEY, 0),
        ) {
            Ok(items) => Ok(items.first().map(|i| ioctl::le64(&i.data, 16))),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let acc = |flags: u64| {
        if flags & QGROUP_STATUS_FLAG_SIMPLE_MODE != 0 {
            Accounting::BtrfsSimpleQuota
        } else {
            Accounting::BtrfsQgroups
        }
    };
    if let Some(flags) = status(dir)? {
        return Ok((acc(flags), None));
    }
    let msg = match mode {
        QuotaMode::Auto | QuotaMode::Simple => {
            match ioctl::quota_ctl(dir, ioctl::QUOTA_CTL_ENABLE_SIMPLE_QUOTA) {
                Ok(()) => "enabled btrfs simple quotas on the pool".to_string(),
                Err(e) if mode == QuotaMode::Auto => {
                    ioctl::quota_ctl(dir, ioctl::QUOTA_CTL_ENABLE)?;
                    let _ = ioctl::quota_rescan_wait(dir);
                    format!(
                        "simple quotas unavailable ({e}); enabled full btrfs qgroups on the pool"
                    )
                }
                Err(e) => return Err(e),
            }
        }
        QuotaMode::Full => {
            ioctl::quota_ctl(dir, ioctl::QUOTA_CTL_ENABLE)?;
            let _ = ioctl::quota_rescan_wait(dir);
            "enabled btrfs qgroups on the pool".to_string()
        }
    };
    let flags = status(dir)?.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
    Ok((acc(flags), Some(msg)))
}

impl StorageDriver for BtrfsDriver {
    fn info(&self) -> &DriverInfo {
        &self.info
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn create_volume(&self, v: &VolumeId) -> Result<()> {
        let p = self.layout.volume(v);
        let parent = open_dir(parent_of(&p))?;
        ioctl::subvol_create(&parent, name_of(&p)).ctx("create subvolume", &p)
    }

    fn create_snapshot(&self, v: &VolumeId, s: &SnapshotId) -> Result<()> {
        let dir = self.layout.snapshots_dir(v);
        fs::create_dir_all(&dir).ctx("create snapshot directory", &dir)?;
        self.snapshot(
            &self.layout.volume(v),
            &self.layout.snapshot(v, s),
            ioctl::SUBVOL_RDONLY,
        )
    }

    fn create_clone(&self, from: &SnapshotRef, v: &VolumeId) -> Result<()> {
        self.snapshot(&self.layout.snapshot_ref(from), &self.layout.volume(v), 0)
    }

    fn restore_volume(&self, v: &VolumeId, from: &SnapshotRef) -> Result<()> {
        let dst = self.layout.volume(v);
        let tmp = Layout::tmp_sibling(&dst, "restore");
        if tmp.exists() {
            self.destroy(&tmp)?;
        }
        self.snapshot(&self.layout.snapshot_ref(from), &tmp, 0)?;
        let mut revert = Revert::new();
        let parent = parent_of(&tmp).to_path_buf();
        let name = name_of(&tmp).to_os_string();
        revert.add("destroy restore temporary", move || {
            if let Ok(d) = File::open(&parent) {
                let _ = ioctl::snap_destroy(&d, &name);
            }
        });
        sys::exchange(&tmp, &dst).ctx("swap restored subvolume into place", &dst)?;
        revert.success();
        if let Err(e) = self.destroy(&tmp) {
            tracing::warn!(error = %e, "could not destroy the replaced subvolume; the next open sweeps it");
        }
        Ok(())
    }

    fn destroy_volume(&self, v: &VolumeId) -> Result<()> {
        self.destroy(&self.layout.volume(v))
    }

    fn destroy_snapshot(&self, s: &SnapshotRef) -> Result<()> {
        self.destroy(&self.layout.snapshot_ref(s))?;
        // Drop the volume's snapshot directory once empty (ignore "not empty").
        let _ = fs::remove_dir(self.layout.snapshots_dir(&s.volume));
        Ok(())
    }

    fn remove_path(&self, path: &Path) -> Result<()> {
        let md = fs::symlink_metadata(path).ctx("stat", path)?;
        if md.is_dir() && md.ino() == FIRST_FREE_OBJECTID {
            self.destroy(path)
        } else {
            tree::remove_tree(path, true)
        }
    }

    fn volume_usage(&self, v: &VolumeId) -> Result<Usage> {
        self.usage(&self.layout.volume(v))
    }

    fn snapshot_usage(&self, s: &SnapshotRef) -> Result<Usage> {
        self.usage(&self.layout.snapshot_ref(s))
    }

    fn space(&self) -> Result<PoolSpace> {
        let root = self.layout.root();
        let s = sys::fs_space(root).ctx("statvfs", root)?;
        let mut reclaiming = 0;
        if self.qgroups {
            let f = open_dir(root)?;
            for id in self.pending_deletions(&f)? {
                reclaiming += self.qgroup(&f, id)?.map(|q| q.1).unwrap_or(0);
            }
        }
        Ok(PoolSpace {
            size: s.size,
            used: s.used,
            free: s.avail,
            reclaiming,
        })
    }

    fn wait_reclaimed(&self) -> Result<()> {
        let root = self.layout.root();
        let f = open_dir(root)?;
        // Poll the orphan items; BTRFS_IOC_SYNC commits and wakes the cleaner,
        // which otherwise only runs at the periodic commit (30 s by default).
        for _ in 0..3000 {
            ioctl::sync(&f).ctx("sync", root)?;
            if self.pending_deletions(&f)?.is_empty() {
                // The cleaner may have finished after that commit: the
                // extents it freed stay pinned, not free, until the next.
                ioctl::sync(&f).ctx("sync", root)?;
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(StorageError::io(
            "wait for deleted subvolumes",
            root,
            std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
        ))
    }

    fn move_path(&self, from: &Path, to: &Path) -> Result<()> {
        match sys::rename_noreplace(from, to) {
            Ok(()) => Ok(()),
            // A read-only subvolume cannot change parent directory: snapshot it
            // (read-only) at the new place and destroy the old one.
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
                if to.exists() {
                    return Err(StorageError::io(
                        "move",
                        to,
                        std::io::Error::from_raw_os_error(libc::EEXIST),
                    ));
                }
                self.snapshot(from, to, ioctl::SUBVOL_RDONLY)?;
                self.destroy(from)
            }
            Err(e) => Err(StorageError::io("move", from, e)),
        }
    }
}
