//! [`Pool`]: the storage pool the engine uses. It owns the layout (see
//! [`crate::layout`]), picks and opens the driver, validates every request
//! before the driver touches the disk (unknown ids, existing names,
//! snapshots left on a volume), enforces the free-space reserve, sweeps
//! `.tmp` leftovers at open, reports [`PoolStatus`], and reconciles the disk
//! with the ids the metadata store knows.
//!
//! Calls are blocking; the engine runs them on blocking threads and
//! serializes operations per volume (two operations on different volumes
//! may run at once).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::btrfs::{BtrfsDriver, QuotaMode};
use crate::driver::{list_ids, Accounting, DriverInfo, DriverKind, StorageDriver, Usage};
use crate::error::{IoContext, Result, StorageError};
use crate::id::{SnapshotId, SnapshotRef, VolumeId};
use crate::layout::Layout;
use crate::sys;
use crate::treedriver::{probe_reflink, TreeDriver};

/// Format version written to the marker file.
pub const POOL_FORMAT: u32 = 1;
/// Default size of the embedded pool's sparse loop file: 20 GiB.
pub const DEFAULT_POOL_SIZE: u64 = 20 << 30;
/// Default free-space reserve: 1 GiB.
pub const DEFAULT_RESERVE: u64 = 1 << 30;

/// How loud a [`Notice`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeLevel {
    /// For the record.
    Info,
    /// The user should know and probably act (e.g. a slow fallback driver).
    Warning,
}

/// Something the pool wants the user to know (printed by `doppel pool status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// Level.
    pub level: NoticeLevel,
    /// Text for humans.
    pub message: String,
}

impl Notice {
    /// An informational notice.
    pub fn info(m: impl Into<String>) -> Self {
        Self {
            level: NoticeLevel::Info,
            message: m.into(),
        }
    }
    /// A warning.
    pub fn warning(m: impl Into<String>) -> Self {
        Self {
            level: NoticeLevel::Warning,
            message: m.into(),
        }
    }
}

/// Options of a pool.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Size of the embedded pool's sparse loop file (only used when one is created).
    pub size: u64,
    /// Free bytes kept in reserve: write operations that would leave less are refused.
    pub reserve: u64,
    /// btrfs quota accounting.
    pub quota: QuotaMode,
    /// Force a driver; `None` picks the best one the filesystem allows
    /// (or the one the pool's marker names).
    pub driver: Option<DriverKind>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            size: DEFAULT_POOL_SIZE,
            reserve: DEFAULT_RESERVE,
            quota: QuotaMode::Auto,
            driver: None,
        }
    }
}

/// What `doppel pool status` prints.
#[derive(Clone, Debug, Serialize)]
pub struct PoolStatus {
    /// Pool root.
    pub root: PathBuf,
    /// Driver in use.
    pub driver: DriverKind,
    /// Clones are thin.
    pub thin_clone: bool,
    /// Snapshots and clones take constant time.
    pub instant_snapshot: bool,
    /// Snapshots are atomic.
    pub atomic_snapshot: bool,
    /// Snapshots are read-only by filesystem guarantee.
    pub enforced_read_only: bool,
    /// How per-dataset usage is measured.
    pub accounting: Accounting,
    /// Size of the pool's filesystem, bytes.
    pub size: u64,
    /// Used, bytes.
    pub used: u64,
    /// Free, bytes.
    pub free: u64,
    /// Bytes still being freed in the background after destroys.
    pub reclaiming: u64,
    /// Configured reserve, bytes.
    pub reserve: u64,
    /// Number of volumes.
    pub volumes: usize,
    /// Number of snapshots.
    pub snapshots: usize,
    /// Notices (fallback drivers, swept leftovers, ...).
    pub notices: Vec<Notice>,
}

/// The volume and snapshot ids the metadata store knows (input of [`Pool::reconcile`]).
#[derive(Clone, Debug, Default)]
pub struct KnownSet {
    /// Known volumes.
    pub volumes: BTreeSet<VolumeId>,
    /// Known snapshots.
    pub snapshots: BTreeSet<SnapshotRef>,
}

/// An orphan dataset and where reconcile moved it.
#[derive(Clone, Debug, Serialize)]
pub struct Quarantined<T> {
    /// The orphan.
    pub id: T,
    /// Its new path in the quarantine area.
    pub moved_to: PathBuf,
}

/// Result of [`Pool::reconcile`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReconcileReport {
    /// Volumes on disk no record knows, moved to quarantine.
    pub orphan_volumes: Vec<Quarantined<VolumeId>>,
    /// Snapshots on disk no record knows, moved to quarantine.
    pub orphan_snapshots: Vec<Quarantined<SnapshotRef>>,
    /// Known volumes whose dataset is gone.
    pub missing_volumes: Vec<VolumeId>,
    /// Known snapshots whose dataset is gone.
    pub missing_snapshots: Vec<SnapshotRef>,
    /// `.tmp` leftovers deleted.
    pub removed_temporaries: Vec<PathBuf>,
    /// Entries that are neither datasets nor temporaries, left alone.
    pub unexpected: Vec<PathBuf>,
    /// Steps that failed (the rest of the reconcile went on).
    pub errors: Vec<String>,
}

impl ReconcileReport {
    /// Whether disk and records agreed (nothing found, nothing failed).
    pub fn is_clean(&self) -> bool {
        self.orphan_volumes.is_empty()
            && self.orphan_snapshots.is_empty()
            && self.missing_volumes.is_empty()
            && self.missing_snapshots.is_empty()
            && self.removed_temporaries.is_empty()
            && self.unexpected.is_empty()
            && self.errors.is_empty()
    }
}

/// A storage pool: a driver over a root directory with the [`Layout`].
#[derive(Debug)]
pub struct Pool {
    layout: Layout,
    driver: Box<dyn StorageDriver>,
    reserve: AtomicU64,
    notices: Vec<Notice>,
}

fn read_marker(layout: &Layout) -> Result<Option<String>> {
    let m = layout.marker();
    match fs::read_to_string(&m) {
        Ok(s) => {
            let mut lines = s.lines();
            if lines.next().map(|l| l.starts_with("doppel-pool ")) != Some(true) {
                return Err(StorageError::NotAPool {
                    path: layout.root().into(),
                    reason: "the marker file is not Doppel's".into(),
                });
            }
            let driver = lines
                .find_map(|l| l.strip_prefix("driver="))
                .unwrap_or("")
                .to_owned();
            Ok(Some(driver))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read pool marker", m, e)),
    }
}

/// Picks the best driver that works at `root`.
fn open_driver(
    layout: &Layout,
    kind: Option<DriverKind>,
    opts: &PoolOptions,
) -> Result<(Box<dyn StorageDriver>, Vec<Notice>)> {
    let root = layout.root();
    let mut notices = Vec::new();
    let kind = match kind {
        Some(k) => k,
        None => {
            if sys::is_btrfs(root).ctx("statfs", root)? && sys::is_root() {
                DriverKind::Btrfs
            } else if probe_reflink(root).is_ok() {
                DriverKind::Reflink
            } else {
                DriverKind::Copy
            }
        }
    };
    let driver: Box<dyn StorageDriver> = match kind {
        DriverKind::Btrfs => {
            let (d, n) = BtrfsDriver::open(layout.clone(), opts.quota)?;
            notices.extend(n);
            Box::new(d)
        }
        DriverKind::Reflink => Box::new(TreeDriver::reflink(layout.clone())?),
        DriverKind::Copy => Box::new(TreeDriver::copy(layout.clone())),
    };
    let info = driver.info();
    if kind == DriverKind::Copy {
        notices.push(Notice::warning(
            "the copy driver is in use: snapshots and clones are full copies, neither thin nor instant, and snapshots \
             are not atomic; put the pool on btrfs (or XFS with reflink) for real copy-on-write",
        ));
    } else if kind == DriverKind::Reflink {
        notices.push(Notice::warning(
            "the reflink driver is in use: clones are thin, but snapshot and clone time grow with the number of files \
             and snapshots are not atomic; btrfs is the default driver",
        ));
    }
    if !info.enforced_read_only {
        notices.push(Notice::warning(
            "snapshots are read-only by convention only: the immutable flag is unavailable here",
        ));
    }
    Ok((driver, notices))
}

impl Pool {
    /// Opens (initializing if empty or missing) the pool at `root`.
    ///
    /// The driver is the one the marker names, else `opts.driver`, else the
    /// best the filesystem allows (btrfs as root on btrfs, reflink where
    /// FICLONE works, copy). A non-empty directory without the marker is
    /// refused with [`StorageError::NotAPool`] and left untouched.
    /// Leftover `.tmp` entries are swept (listed in the notices).
    pub fn open(root: impl Into<PathBuf>, opts: &PoolOptions) -> Result<Pool> {
        let layout = Layout::new(root);
        let root = layout.root().to_path_buf();
        match fs::symlink_metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(StorageError::NotAPool {
                    path: root,
                    reason: "it is not a directory".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&root).ctx("create pool directory", &root)?
            }
            Err(e) => return Err(StorageError::io("stat", root, e)),
        }
        let marker = read_marker(&layout)?;
        let kind = match &marker {
            Some(name) => {
                let found = DriverKind::from_name(name).ok_or_else(|| StorageError::NotAPool {
                    path: root.clone(),
                    reason: format!("the marker names an unknown driver {name:?}"),
                })?;
                if let Some(w) = opts.driver.filter(|w| *w != found) {
                    return Err(StorageError::DriverMismatch {
                        path: root,
                        found: name.clone(),
                        wanted: w.name(),
                    });
                }
                Some(found)
            }
            None => {
                let mut entries = fs::read_dir(&root).ctx("read directory", &root)?;
                if let Some(e) = entries.next() {
                    let e = e.ctx("read directory", &root)?;
                    return Err(StorageError::NotAPool {
                        path: root,
                        reason: format!(
                            "the directory is not empty (it holds {:?}) and has no {} marker",
                            e.file_name(),
                            crate::layout::MARKER
                        ),
                    });
                }
                opts.driver
            }
        };
        let (driver, mut notices) = open_driver(&layout, kind, opts)?;
        for d in [
            layout.volumes_dir(),
            layout.snapshots_root(),
            layout.quarantine_dir(),
        ] {
            fs::create_dir_all(&d).ctx("create pool directory", &d)?;
        }
        if marker.is_none() {
            let tmp = Layout::tmp_sibling(&layout.marker(), "new");
            let text = format!("doppel-pool {POOL_FORMAT}\ndriver={}\n", driver.info().kind);
            fs::write(&tmp, text).ctx("write pool marker", &tmp)?;
            fs::rename(&tmp, layout.marker()).ctx("write pool marker", &layout.marker())?;
            notices.push(Notice::info(format!(
                "created a {} pool at {}",
                driver.info().kind,
                root.display()
            )));
        }
        let pool = Pool {
            layout,
            driver,
            reserve: AtomicU64::new(opts.reserve),
            notices,
        };
        let mut report = ReconcileReport::default();
        pool.sweep_temporaries(&mut report);
        let mut pool = pool;
        for p in &report.removed_temporaries {
            pool.notices.push(Notice::info(format!(
                "removed leftover temporary {}",
                p.display()
            )));
        }
        for e in &report.errors {
            pool.notices.push(Notice::warning(e.clone()));
        }
        Ok(pool)
    }

    /// The driver's capabilities.
    pub fn info(&self) -> &DriverInfo {
        self.driver.info()
    }

    /// The pool root.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The pool's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Notices collected when the pool was opened.
    pub fn notices(&self) -> &[Notice] {
        &self.notices
    }

    /// Adds a notice shown in every [`PoolStatus`].
    pub fn add_notice(&mut self, n: Notice) {
        if !self.notices.contains(&n) {
            self.notices.push(n);
        }
    }

    /// Changes the free-space reserve.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// The free-space reserve.
    pub fn reserve(&self) -> u64 {
        self.reserve.load(Ordering::Relaxed)
    }

    /// Refuses `op` if it would leave less than the reserve free.
    fn check_space(&self, op: &'static str, needed: u64) -> Result<()> {
        // Data the hosts wrote may still sit in the page cache, which the
        // free figure does not count yet: flushed first, the figure (and the
        // refusal that quotes it) is true. The snapshot or clone that follows
        // would flush it anyway.
        let root = self.root();
        let dir = std::fs::File::open(root).ctx("open", root)?;
        crate::sys::syncfs(&dir).ctx("syncfs", root)?;
        let free = self.driver.space()?.free;
        let reserve = self.reserve();
        if free < needed.saturating_add(reserve) {
            return Err(StorageError::InsufficientSpace {
                op,
                path: self.root().into(),
                free,
                needed,
                reserve,
            });
        }
        Ok(())
    }

    fn exists(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok()
    }

    fn need_volume(&self, v: &VolumeId) -> Result<PathBuf> {
        let p = self.layout.volume(v);
        if Self::exists(&p) {
            Ok(p)
        } else {
            Err(StorageError::VolumeNotFound(v.clone()))
        }
    }

    fn need_snapshot(&self, s: &SnapshotRef) -> Result<PathBuf> {
        let p = self.layout.snapshot_ref(s);
        if Self::exists(&p) {
            Ok(p)
        } else {
            Err(StorageError::SnapshotNotFound {
                volume: s.volume.clone(),
                snapshot: s.snapshot.clone(),
            })
        }
    }

    fn need_no_volume(&self, v: &VolumeId) -> Result<PathBuf> {
        let p = self.layout.volume(v);
        if Self::exists(&p) {
            Err(StorageError::VolumeExists(v.clone()))
        } else {
            Ok(p)
        }
    }

    /// Creates an empty writable volume; returns its path.
    pub fn create_volume(&self, v: &VolumeId) -> Result<PathBuf> {
        let p = self.need_no_volume(v)?;
        self.check_space("create volume", 0)?;
        self.driver.create_volume(v)?;
        tracing::info!(volume = %v, "created volume");
        Ok(p)
    }

    /// Takes a read-only snapshot of a volume; returns its path.
    pub fn create_snapshot(&self, v: &VolumeId, s: &SnapshotId) -> Result<PathBuf> {
        let src = self.need_volume(v)?;
        let p = self.layout.snapshot(v, s);
        if Self::exists(&p) {
            return Err(StorageError::SnapshotExists {
                volume: v.clone(),
                snapshot: s.clone(),
            });
        }
        self.check_space("create snapshot", self.driver.estimate_copy_cost(&src)?)?;
        self.driver.create_snapshot(v, s)?;
        tracing::info!(volume = %v, snapshot = %s, "created snapshot");
        Ok(p)
    }

    /// Creates writable volume `v` from a snapshot; returns its path.
    pub fn create_clone(&self, from: &SnapshotRef, v: &VolumeId) -> Result<PathBuf> {
        let src = self.need_snapshot(from)?;
        let p = self.need_no_volume(v)?;
        self.check_space("create clone", self.driver.estimate_copy_cost(&src)?)?;
        self.driver.create_clone(from, v)?;
        tracing::info!(volume = %v, from = %from, "created clone");
        Ok(p)
    }

    /// Re-points existing volume `v` to a snapshot (rewind to its own, or
    /// refresh from another volume's). The volume's previous contents are discarded.
    pub fn restore_volume(&self, v: &VolumeId, from: &SnapshotRef) -> Result<()> {
        self.need_volume(v)?;
        let src = self.need_snapshot(from)?;
        self.check_space("restore volume", self.driver.estimate_copy_cost(&src)?)?;
        self.driver.restore_volume(v, from)?;
        tracing::info!(volume = %v, from = %from, "restored volume");
        Ok(())
    }

    /// Destroys a volume; refused while it has snapshots.
    pub fn destroy_volume(&self, v: &VolumeId) -> Result<()> {
        self.need_volume(v)?;
        let snaps = self.list_snapshots(v)?;
        if !snaps.is_empty() {
            return Err(StorageError::HasSnapshots {
                volume: v.clone(),
                snapshots: snaps,
            });
        }
        self.driver.destroy_volume(v)?;
        let _ = fs::remove_dir(self.layout.snapshots_dir(v));
        tracing::info!(volume = %v, "destroyed volume");
        Ok(())
    }

    /// Destroys a snapshot (clones made from it are independent and stay).
    pub fn destroy_snapshot(&self, s: &SnapshotRef) -> Result<()> {
        self.need_snapshot(s)?;
        self.driver.destroy_snapshot(s)?;
        let _ = fs::remove_dir(self.layout.snapshots_dir(&s.volume));
        tracing::info!(snapshot = %s, "destroyed snapshot");
        Ok(())
    }

    /// Volumes on disk.
    pub fn list_volumes(&self) -> Result<Vec<VolumeId>> {
        self.driver.list_volumes()
    }

    /// Snapshots of one volume on disk.
    pub fn list_snapshots(&self, v: &VolumeId) -> Result<Vec<SnapshotId>> {
        self.driver.list_snapshots(v)
    }

    /// All snapshots on disk (including those whose volume was destroyed).
    pub fn list_all_snapshots(&self) -> Result<Vec<SnapshotRef>> {
        let mut out = Vec::new();
        for name in list_ids(&self.layout.snapshots_root())? {
            if let Ok(v) = VolumeId::new(name) {
                for s in self.driver.list_snapshots(&v)? {
                    out.push(SnapshotRef::new(v.clone(), s));
                }
            }
        }
        Ok(out)
    }

    /// Path of a volume (whether or not it exists).
    pub fn volume_path(&self, v: &VolumeId) -> PathBuf {
        self.driver.volume_path(v)
    }

    /// Path of a snapshot (whether or not it exists).
    pub fn snapshot_path(&self, s: &SnapshotRef) -> PathBuf {
        self.driver.snapshot_path(s)
    }

    /// Space used by a volume.
    pub fn volume_usage(&self, v: &VolumeId) -> Result<Usage> {
        self.need_volume(v)?;
        self.driver.volume_usage(v)
    }

    /// Space used by a snapshot.
    pub fn snapshot_usage(&self, s: &SnapshotRef) -> Result<Usage> {
        self.need_snapshot(s)?;
        self.driver.snapshot_usage(s)
    }

    /// Waits until destroyed datasets' space is back (btrfs); a no-op where
    /// destroy is synchronous.
    pub fn wait_reclaimed(&self) -> Result<()> {
        if !self.info().async_reclaim {
            return Ok(());
        }
        self.driver.wait_reclaimed()
    }

    /// Limits a volume's size, where the driver supports it.
    pub fn set_quota(&self, v: &VolumeId, bytes: Option<u64>) -> Result<()> {
        self.need_volume(v)?;
        self.driver.set_quota(v, bytes)
    }

    /// Size, use and free space of the pool's filesystem now.
    pub fn space(&self) -> Result<crate::driver::PoolSpace> {
        self.driver.space()
    }

    /// Status of the pool.
    pub fn status(&self) -> Result<PoolStatus> {
        let info = self.info();
        let sp = self.driver.space()?;
        let mut notices = self.notices.clone();
        let reserve = self.reserve();
        if sp.free < reserve {
            notices.push(Notice::warning(format!(
                "free space ({} bytes) is below the reserve ({} bytes): new volumes, snapshots and clones are refused",
                sp.free, reserve
            )));
        }
        Ok(PoolStatus {
            root: self.root().into(),
            driver: info.kind,
            thin_clone: info.thin_clone,
            instant_snapshot: info.instant_snapshot,
            atomic_snapshot: info.atomic_snapshot,
            enforced_read_only: info.enforced_read_only,
            accounting: info.accounting,
            size: sp.size,
            used: sp.used,
            free: sp.free,
            reclaiming: sp.reclaiming,
            reserve,
            volumes: self.list_volumes()?.len(),
            snapshots: self.list_all_snapshots()?.len(),
            notices,
        })
    }

    /// Deletes every `.tmp` entry of the layout.
    fn sweep_temporaries(&self, report: &mut ReconcileReport) {
        let mut dirs = vec![
            self.root().to_path_buf(),
            self.layout.volumes_dir(),
            self.layout.snapshots_root(),
        ];
        if let Ok(names) = list_ids(&self.layout.snapshots_root()) {
            dirs.extend(
                names
                    .iter()
                    .filter(|n| VolumeId::new(n.as_str()).is_ok())
                    .map(|n| self.layout.snapshots_root().join(n)),
            );
        }
        for dir in dirs {
            let Ok(names) = list_ids(&dir) else { continue };
            for n in names.into_iter().filter(|n| Layout::is_tmp_name(n)) {
                let p = dir.join(&n);
                match self.driver.remove_path(&p) {
                    Ok(()) => report.removed_temporaries.push(p),
                    Err(e) => report
                        .errors
                        .push(format!("could not remove leftover {}: {e}", p.display())),
                }
            }
        }
    }

    fn quarantine(&self, from: &Path, name: String) -> Result<PathBuf> {
        let q = self.layout.quarantine_dir();
        fs::create_dir_all(&q).ctx("create quarantine directory", &q)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for n in 0.. {
            let to = q.join(if n == 0 {
                format!("{name}.{secs}")
            } else {
                format!("{name}.{secs}.{n}")
            });
            if Self::exists(&to) {
                continue;
            }
            self.driver.move_path(from, &to)?;
            return Ok(to);
        }
        unreachable!()
    }

    /// Brings the disk in line with the metadata store after a crash:
    /// deletes `.tmp` leftovers, moves datasets that `known` does not name
    /// into the quarantine area (never deleting them), and reports known ids
    /// whose dataset is gone. Nothing `known` names is ever touched.
    pub fn reconcile(&self, known: &KnownSet) -> ReconcileReport {
        let mut r = ReconcileReport::default();
        self.sweep_temporaries(&mut r);
        // Volumes.
        let vdir = self.layout.volumes_dir();
        let mut on_disk_vols = BTreeSet::new();
        for n in list_ids(&vdir).unwrap_or_else(|e| {
            r.errors.push(e.to_string());
            Vec::new()
        }) {
            let p = vdir.join(&n);
            match VolumeId::new(n.as_str()) {
                Ok(v) if known.volumes.contains(&v) => {
                    on_disk_vols.insert(v);
                }
                Ok(v) => match self.quarantine(&p, format!("volume.{v}")) {
                    Ok(to) => r.orphan_volumes.push(Quarantined {
                        id: v,
                        moved_to: to,
                    }),
                    Err(e) => r
                        .errors
                        .push(format!("could not quarantine orphan volume {v}: {e}")),
                },
                Err(_) if Layout::is_tmp_name(&n) => {}
                Err(_) => r.unexpected.push(p),
            }
        }
        r.missing_volumes = known
            .volumes
            .iter()
            .filter(|v| !on_disk_vols.contains(*v))
            .cloned()
            .collect();
        // Snapshots.
        let sroot = self.layout.snapshots_root();
        let mut on_disk_snaps = BTreeSet::new();
        for vn in list_ids(&sroot).unwrap_or_default() {
            let vp = sroot.join(&vn);
            let Ok(v) = VolumeId::new(vn.as_str()) else {
                if !Layout::is_tmp_name(&vn) {
                    r.unexpected.push(vp);
                }
                continue;
            };
            for sn in list_ids(&vp).unwrap_or_default() {
                let p = vp.join(&sn);
                match SnapshotId::new(sn.as_str()) {
                    Ok(s) => {
                        let sref = SnapshotRef::new(v.clone(), s);
                        if known.snapshots.contains(&sref) {
                            on_disk_snaps.insert(sref);
                        } else {
                            match self.quarantine(
                                &p,
                                format!("snapshot.{}.{}", sref.volume, sref.snapshot),
                            ) {
                                Ok(to) => r.orphan_snapshots.push(Quarantined {
                                    id: sref,
                                    moved_to: to,
                                }),
                                Err(e) => r.errors.push(format!(
                                    "could not quarantine orphan snapshot {sref}: {e}"
                                )),
                            }
                        }
                    }
                    Err(_) if Layout::is_tmp_name(&sn) => {}
                    Err(_) => r.unexpected.push(p),
                }
            }
            let _ = fs::remove_dir(&vp);
        }
        r.missing_snapshots = known
            .snapshots
            .iter()
            .filter(|s| !on_disk_snaps.contains(*s))
            .cloned()
            .collect();
        if !r.is_clean() {
            tracing::warn!(report = ?r, "pool reconcile found differences");
        }
        r
    }

    /// Entries of the quarantine area.
    pub fn list_quarantine(&self) -> Result<Vec<PathBuf>> {
        let q = self.layout.quarantine_dir();
        Ok(list_ids(&q)?.into_iter().map(|n| q.join(n)).collect())
    }

    /// Permanently deletes one quarantined entry (a name from [`Pool::list_quarantine`]).
    pub fn purge_quarantined(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(StorageError::io(
                "purge quarantined",
                name,
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let p = self.layout.quarantine_dir().join(name);
        if !Self::exists(&p) {
            return Err(StorageError::io(
                "purge quarantined",
                p,
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        self.driver.remove_path(&p)
    }
}
