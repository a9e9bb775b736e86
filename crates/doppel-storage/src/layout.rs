//! The one authority on where things live inside a pool root:
//!
//! ```text
//! <root>/.doppel-pool                 marker file: format version and driver name
//! <root>/volumes/<volume>             writable datasets
//! <root>/snapshots/<volume>/<snap>    read-only snapshots of <volume>
//! <root>/quarantine/<name>            orphans moved aside by reconcile
//! ```
//!
//! Every temporary is a sibling of its final path with a suffix ending in
//! `.tmp` (ids never contain `.`, so a temporary can never be mistaken for a
//! dataset). Temporaries are swept when the pool is opened.

use std::path::{Path, PathBuf};

use crate::id::{SnapshotId, SnapshotRef, VolumeId};

/// Name of the marker file at the pool root.
pub const MARKER: &str = ".doppel-pool";
/// Directory of volumes.
pub const VOLUMES: &str = "volumes";
/// Directory of snapshots.
pub const SNAPSHOTS: &str = "snapshots";
/// Directory of quarantined orphans.
pub const QUARANTINE: &str = "quarantine";
/// Suffix every temporary ends with.
pub const TMP_SUFFIX: &str = ".tmp";

/// On-disk paths of one pool.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Layout of the pool rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The pool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The marker file.
    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }

    /// Directory holding all volumes.
    pub fn volumes_dir(&self) -> PathBuf {
        self.root.join(VOLUMES)
    }

    /// Directory holding all snapshot directories.
    pub fn snapshots_root(&self) -> PathBuf {
        self.root.join(SNAPSHOTS)
    }

    /// Quarantine directory.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join(QUARANTINE)
    }

    /// Path of a volume.
    pub fn volume(&self, v: &VolumeId) -> PathBuf {
        self.volumes_dir().join(v.as_str())
    }

    /// Directory holding the snapshots of a volume.
    pub fn snapshots_dir(&self, v: &VolumeId) -> PathBuf {
        self.snapshots_root().join(v.as_str())
    }

    /// Path of a snapshot.
    pub fn snapshot(&self, v: &VolumeId, s: &SnapshotId) -> PathBuf {
        self.snapshots_dir(v).join(s.as_str())
    }

    /// Path of a snapshot given by reference.
    pub fn snapshot_ref(&self, s: &SnapshotRef) -> PathBuf {
        self.snapshot(&s.volume, &s.snapshot)
    }

    /// A temporary sibling of `final_path`, with `tag` (e.g. `restore`) and the `.tmp` suffix.
    pub fn tmp_sibling(final_path: &Path, tag: &str) -> PathBuf {
        let mut name = final_path
            .file_name()
            .expect("dataset path has a name")
            .to_os_string();
        name.push(format!(".{tag}{TMP_SUFFIX}"));
        final_path.with_file_name(name)
    }

    /// Whether a directory entry name is a temporary.
    pub fn is_tmp_name(name: &str) -> bool {
        name.ends_with(TMP_SUFFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let l = Layout::new("/p");
        let v = VolumeId::new("v1").unwrap();
        let s = SnapshotId::new("s1").unwrap();
        assert_eq!(l.volume(&v), Path::new("/p/volumes/v1"));
        assert_eq!(l.snapshot(&v, &s), Path::new("/p/snapshots/v1/s1"));
        let t = Layout::tmp_sibling(&l.volume(&v), "restore");
        assert_eq!(t, Path::new("/p/volumes/v1.restore.tmp"));
        assert!(Layout::is_tmp_name("v1.restore.tmp"));
        assert!(VolumeId::new("v1.restore.tmp").is_err());
    }
}
