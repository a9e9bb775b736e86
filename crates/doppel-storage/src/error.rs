//! Errors of the storage pool: one enum, each variant carrying what a user
//! needs to act on it (the op, the id, the path, the errno text, or for
//! shelled-out programs the argv, exit status and stderr).

use std::path::PathBuf;

use crate::id::{SnapshotId, VolumeId};

/// Result alias of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in the storage pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An id did not pass validation (`[a-z0-9-]`, 1..=64 chars, no leading `-`).
    #[error("invalid {kind} id {value:?}: {reason}")]
    InvalidId {
        /// `volume` or `snapshot`.
        kind: &'static str,
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The named volume does not exist in the pool.
    #[error("volume {0} does not exist in the pool")]
    VolumeNotFound(VolumeId),
    /// The named snapshot does not exist in the pool.
    #[error("snapshot {snapshot} of volume {volume} does not exist in the pool")]
    SnapshotNotFound {
        /// Volume the snapshot belongs to.
        volume: VolumeId,
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// A volume with this id already exists.
    #[error("volume {0} already exists in the pool")]
    VolumeExists(VolumeId),
    /// A snapshot with this id already exists for the volume.
    #[error("snapshot {snapshot} of volume {volume} already exists in the pool")]
    SnapshotExists {
        /// Volume the snapshot belongs to.
        volume: VolumeId,
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// A volume cannot be destroyed while it still has snapshots.
    #[error("volume {volume} still has {} snapshot(s) ({}); destroy them first", snapshots.len(), join(snapshots))]
    HasSnapshots {
        /// The volume.
        volume: VolumeId,
        /// Its remaining snapshots.
        snapshots: Vec<SnapshotId>,
    },
    /// The driver does not implement this optional operation.
    #[error("{op} is not supported by the {driver} storage driver")]
    NotSupported {
        /// The operation.
        op: &'static str,
        /// The driver's name.
        driver: &'static str,
    },
    /// Refused because the operation would eat into the free-space reserve.
    #[error("{}", insufficient_space(op, path, *free, *needed, *reserve))]
    InsufficientSpace {
        /// The refused operation.
        op: &'static str,
        /// The pool (or data directory) checked.
        path: PathBuf,
        /// Free bytes at the time of the check.
        free: u64,
        /// Estimated bytes the operation would write.
        needed: u64,
        /// Configured reserve.
        reserve: u64,
    },
    /// A system call on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (e.g. `create subvolume`).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error (its text includes the errno).
        #[source]
        source: std::io::Error,
    },
    /// A program the pool shells out to (mkfs, mount, losetup) failed.
    #[error("command `{}` failed ({status}): {}", argv.join(" "), stderr.trim())]
    Command {
        /// The full argv.
        argv: Vec<String>,
        /// Exit status, or why it could not be started.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// A path that should hold a pool holds something else; nothing was changed.
    #[error("{} is not a Doppel storage pool ({reason}); refusing to touch it", path.display())]
    NotAPool {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pool was created by another driver than the one asked for.
    #[error("the pool at {} was created by the {found} driver, but the {wanted} driver was asked for", path.display())]
    DriverMismatch {
        /// Pool root.
        path: PathBuf,
        /// Driver named by the pool's marker file.
        found: String,
        /// Driver asked for.
        wanted: &'static str,
    },
    /// A driver cannot work on this filesystem or with these privileges.
    #[error("the {driver} storage driver cannot be used at {}: {reason}", path.display())]
    DriverUnavailable {
        /// Driver's name.
        driver: &'static str,
        /// Pool root.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn join(s: &[SnapshotId]) -> String {
    s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

impl StorageError {
    /// Builds an [`StorageError::Io`] from an op, a path and an OS error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno of an [`StorageError::Io`], if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            StorageError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds `op` and `path` context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| StorageError::io(op, path, e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| StorageError::io(op, path, std::io::Error::from_raw_os_error(e as i32)))
    }
}

/// The words of [`StorageError::InsufficientSpace`]: an operation that
/// writes next to nothing (a thin snapshot or clone) is refused because the
/// pool is already at its reserve, and saying it "needs about 0 bytes"
/// would only confuse.
fn insufficient_space(
    op: &str,
    path: &std::path::Path,
    free: u64,
    needed: u64,
    reserve: u64,
) -> String {
    let path = path.display();
    if needed == 0 {
        format!(
            "{op} refused: the pool at {path} has {free} bytes free, which is not above the {reserve} bytes \
             kept in reserve; free space (delete VDBs, snapshots or dSources) or lower the reserve"
        )
    } else {
        format!(
            "{op} refused: the pool at {path} has {free} bytes free, the operation needs about {needed} bytes \
             and {reserve} bytes are kept in reserve (free space must stay above needed + reserve); \
             free space or lower the reserve"
        )
    }
}
