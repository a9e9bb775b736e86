//! The driver trait: datasets on disk only (no metadata store, no hosts, no
//! plugins). Callers branch on the capabilities in [`DriverInfo`], never on
//! driver names. Optional operations default to
//! [`StorageError::NotSupported`].
//!
//! Drivers are called by [`crate::Pool`], which validates preconditions
//! (existence, free-space reserve) first; a driver only does the on-disk
//! work, all paths coming from [`Layout`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{IoContext, Result, StorageError};
use crate::id::{SnapshotId, SnapshotRef, VolumeId};
use crate::layout::Layout;

/// Which driver a pool uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// btrfs subvolumes and snapshots (the default).
    Btrfs,
    /// Directory trees cloned file by file with FICLONE (XFS, btrfs).
    Reflink,
    /// Directory trees copied byte by byte (any filesystem).
    Copy,
}

impl DriverKind {
    /// The driver's name, as stored in the pool marker.
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Btrfs => "btrfs",
            DriverKind::Reflink => "reflink",
            DriverKind::Copy => "copy",
        }
    }

    /// Parses a driver name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "btrfs" => Some(DriverKind::Btrfs),
            "reflink" => Some(DriverKind::Reflink),
            "copy" => Some(DriverKind::Copy),
            _ => None,
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Capabilities of a driver, as data.
#[derive(Clone, Debug, Serialize)]
pub struct DriverInfo {
    /// Which driver.
    pub kind: DriverKind,
    /// A clone shares the snapshot's blocks: it costs almost nothing until written.
    pub thin_clone: bool,
    /// Snapshot and clone take a time independent of the dataset's size.
    pub instant_snapshot: bool,
    /// A snapshot captures one instant of the whole dataset; when false,
    /// writers must be quiesced while a snapshot is taken.
    pub atomic_snapshot: bool,
    /// Snapshots are read-only by the filesystem's guarantee (not only by convention).
    pub enforced_read_only: bool,
    /// Space is freed in the background after a destroy (see `reclaiming`).
    pub async_reclaim: bool,
    /// How per-dataset usage is measured.
    pub accounting: Accounting,
}

/// How [`Usage`] figures are obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accounting {
    /// btrfs full quota groups: `exclusive` is what destroying the dataset
    /// frees; `shared` is referenced minus exclusive.
    BtrfsQgroups,
    /// btrfs simple quotas: `exclusive` is the bytes this dataset itself
    /// wrote that are still allocated (extents are charged to the dataset
    /// that first wrote them, so a fresh snapshot or clone is ~0 and its
    /// origin keeps the charge for shared data); `shared` is not known (0).
    BtrfsSimpleQuota,
    /// FIEMAP over every file: extents flagged shared vs not.
    Fiemap,
    /// Allocated blocks of every file; nothing is shared.
    Allocated,
}

/// Space used by one dataset, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Bytes only this dataset holds.
    pub exclusive: u64,
    /// Bytes it shares with other datasets.
    pub shared: u64,
}

/// Space of the whole pool, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolSpace {
    /// Size of the filesystem.
    pub size: u64,
    /// Used now.
    pub used: u64,
    /// Free for new data.
    pub free: u64,
    /// Bytes still being reclaimed in the background after destroys.
    pub reclaiming: u64,
}

/// A storage driver. See the module docs for the division of work with [`crate::Pool`].
pub trait StorageDriver: Send + Sync + fmt::Debug {
    /// Capabilities.
    fn info(&self) -> &DriverInfo;

    /// Paths of the pool this driver serves.
    fn layout(&self) -> &Layout;

    /// Creates an empty writable volume at `layout().volume(v)`.
    fn create_volume(&self, v: &VolumeId) -> Result<()>;

    /// Takes a read-only snapshot of volume `v` at `layout().snapshot(v, s)`.
    fn create_snapshot(&self, v: &VolumeId, s: &SnapshotId) -> Result<()>;

    /// Creates writable volume `v` from snapshot `from`.
    fn create_clone(&self, from: &SnapshotRef, v: &VolumeId) -> Result<()>;

    /// Replaces the contents of existing volume `v` by those of snapshot
    /// `from` (its own: rewind; another volume's: refresh). Atomic: the volume
    /// path shows either the old or the new contents, never a mix.
    fn restore_volume(&self, v: &VolumeId, from: &SnapshotRef) -> Result<()>;

    /// Destroys volume `v` (which has no snapshots left).
    fn destroy_volume(&self, v: &VolumeId) -> Result<()>;

    /// Destroys a snapshot.
    fn destroy_snapshot(&self, s: &SnapshotRef) -> Result<()>;

    /// Removes any dataset-shaped leftover at `path` (a temporary or a quarantined orphan).
    fn remove_path(&self, path: &Path) -> Result<()>;

    /// Moves the dataset at `from` to `to` (same filesystem; `to` must not exist).
    fn move_path(&self, from: &Path, to: &Path) -> Result<()> {
        crate::sys::rename_noreplace(from, to).ctx("move", from)
    }

    /// Space used by a volume.
    fn volume_usage(&self, v: &VolumeId) -> Result<Usage>;

    /// Space used by a snapshot.
    fn snapshot_usage(&self, s: &SnapshotRef) -> Result<Usage>;

    /// Space of the whole pool.
    fn space(&self) -> Result<PoolSpace>;

    /// Bytes the operation that copies the dataset at `src` would write
    /// (0 for thin drivers); used by the reserve check.
    fn estimate_copy_cost(&self, src: &Path) -> Result<u64> {
        if self.info().thin_clone {
            Ok(0)
        } else {
            crate::tree::allocated_tree(src)
        }
    }

    /// Limits a volume's size (optional).
    fn set_quota(&self, _v: &VolumeId, _bytes: Option<u64>) -> Result<()> {
        Err(StorageError::NotSupported {
            op: "set_quota",
            driver: self.info().kind.name(),
        })
    }

    /// Waits until destroyed datasets' space has been reclaimed (optional).
    fn wait_reclaimed(&self) -> Result<()> {
        Err(StorageError::NotSupported {
            op: "wait_reclaimed",
            driver: self.info().kind.name(),
        })
    }

    /// Path of a volume.
    fn volume_path(&self, v: &VolumeId) -> PathBuf {
        self.layout().volume(v)
    }

    /// Path of a snapshot.
    fn snapshot_path(&self, s: &SnapshotRef) -> PathBuf {
        self.layout().snapshot_ref(s)
    }

    /// Volumes present on disk, sorted.
    fn list_volumes(&self) -> Result<Vec<VolumeId>> {
        Ok(list_ids(&self.layout().volumes_dir())?
            .into_iter()
            .filter_map(|n| VolumeId::new(n).ok())
            .collect())
    }

    /// Snapshots of a volume present on disk, sorted.
    fn list_snapshots(&self, v: &VolumeId) -> Result<Vec<SnapshotId>> {
        Ok(list_ids(&self.layout().snapshots_dir(v))?
            .into_iter()
            .filter_map(|n| SnapshotId::new(n).ok())
            .collect())
    }
}

/// Names in `dir` (sorted; a missing dir is empty).
pub(crate) fn list_ids(dir: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io("read directory", dir, e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.ctx("read directory", dir)?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_owned());
        }
    }
    out.sort();
    Ok(out)
}
