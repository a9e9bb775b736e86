//! The one authority on where things live in the data directory, and on
//! who may read it: everything the engine makes there is its user's only
//! (directories 0700, files 0600), because the directory holds the secrets
//! key, the metadata (sealed credentials, token digests), plugin logs and
//! the TLS key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::EngineError;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes what is missing and takes group and other permissions off what
    /// an older version made (0755 directories, 0644 files).
    pub fn create(&self) -> Result<(), EngineError> {
        for dir in [self.root.clone(), self.plugins_dir(), self.runtime_dir()] {
            create_private_dir(&dir)
                .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        }
        self.tighten()
    }

    /// Every file and directory in the data directory loses its group and
    /// other permission bits. The pool is tightened at its top only: below
    /// it are datasets holding the hosts' own files, whose modes are theirs
    /// (the engine serves them to hosts itself, nobody reads them through
    /// this directory). Symbolic links are neither changed nor followed.
    /// The secrets key is left as it is: one readable by others may have
    /// leaked, and opening it refuses it with that message.
    pub fn tighten(&self) -> Result<(), EngineError> {
        let pool = self.pool_dir();
        let key = self.secrets_key();
        // The worker script is the engine's own code (the bytes in the
        // binary), bound read-only into every plugin sandbox, whose users
        // must read it; the data directory's top keeps others from it.
        let script = self.worker_script();
        let mut todo = vec![self.root.clone()];
        let mut changed = Vec::new();
        while let Some(path) = todo.pop() {
            if path == key || path == script {
                continue;
            }
            if tighten_path(&path)? {
                changed.push(path.clone());
            }
            if path == pool || !path.is_dir() || path.is_symlink() {
                continue;
            }
            let entries = std::fs::read_dir(&path)
                .map_err(EngineError::io(format!("reading {}", path.display())))?;
            for entry in entries {
                let entry =
                    entry.map_err(EngineError::io(format!("reading {}", path.display())))?;
                todo.push(entry.path());
            }
        }
        if !changed.is_empty() {
            let some: Vec<_> = changed
                .iter()
                .take(5)
                .map(|p| p.display().to_string())
                .collect();
            tracing::warn!(
                count = changed.len(),
                first = ?some,
                data_dir = %self.root.display(),
                "files and directories in the data directory were readable by other users; now only by the engine's"
            );
        }
        Ok(())
    }

    /// Where the storage pool lives (a mount point for the embedded pool).
    pub fn pool_dir(&self) -> PathBuf {
        doppel_storage::default_pool_dir(&self.root)
    }

    /// The certificate the API serves over TLS when none is configured,
    /// made at the first start that needs it.
    pub fn tls_cert(&self) -> PathBuf {
        self.root.join("tls-cert.pem")
    }

    /// The private key of [`Layout::tls_cert`] (mode 0600).
    pub fn tls_key(&self) -> PathBuf {
        self.root.join("tls-key.pem")
    }

    pub fn metadata_db(&self) -> PathBuf {
        self.root.join("metadata.db")
    }

    /// The key that encrypts secrets in the metadata store (mode 0600).
    pub fn secrets_key(&self) -> PathBuf {
        self.root.join("secrets.key")
    }

    /// The generated password of the first `admin` user (mode 0600), when
    /// none was given at first start.
    pub fn admin_password_file(&self) -> PathBuf {
        self.root.join("admin-password")
    }

    /// The sockets (0600, in this 0700 directory) and logs of mount keepers.
    pub fn mounts_dir(&self) -> PathBuf {
        self.root.join("mounts")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }

    pub fn worker_script(&self) -> PathBuf {
        self.runtime_dir().join("doppel_worker.py")
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// Everything of one plugin: its versions' code and its logs.
    pub fn plugin_dir(&self, plugin_id: &str) -> PathBuf {
        self.plugins_dir().join(plugin_id)
    }

    /// The extracted code of one plugin version.
    pub fn plugin_code_dir(&self, plugin_id: &str, build_number: &str) -> PathBuf {
        self.plugin_dir(plugin_id)
            .join(format!("build-{build_number}"))
    }

    /// The plugin's private writable directory (its workers' HOME and
    /// TMPDIR); removed with the plugin.
    pub fn plugin_scratch_dir(&self, plugin_id: &str) -> PathBuf {
        self.plugin_dir(plugin_id).join("scratch")
    }

    pub fn plugin_log_dir(&self, plugin_id: &str) -> PathBuf {
        self.plugin_dir(plugin_id).join("logs")
    }

    /// A scratch directory for an install in progress; `.tmp` names are
    /// swept at start-up.
    pub fn plugin_staging_dir(&self, plugin_id: &str) -> PathBuf {
        self.plugin_dir(plugin_id)
            .join(format!("install-{}.tmp", uuid::Uuid::new_v4()))
    }
}

/// `mkdir -p` whose new directories are 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `data` to `path`, readable by the engine's user only, also when
/// the file existed with a wider mode.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(data)
}

/// Takes group and other permission bits off one path (not through a
/// symbolic link); says whether it had any.
pub fn tighten_path(path: &Path) -> Result<bool, EngineError> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(EngineError::io(format!("reading {}", path.display())))?;
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() || mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o077)).map_err(
        EngineError::io(format!("restricting {} to its owner", path.display())),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_old_data_directory_is_tightened_but_not_the_pools_content() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        let layout = Layout::new(&root);
        for d in [
            root.clone(),
            root.join("plugins/p/logs"),
            layout.pool_dir().join("ds"),
        ] {
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for f in [
            layout.metadata_db(),
            root.join("plugins/p/logs/info.log"),
            layout.pool_dir().join("ds/f"),
        ] {
            std::fs::write(&f, b"x").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::write(layout.secrets_key(), [0u8; 32]).unwrap();
        std::fs::set_permissions(layout.secrets_key(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        layout.create().unwrap();

        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("plugins/p/logs")), 0o700);
        assert_eq!(mode(&root.join("runtime")), 0o700);
        assert_eq!(mode(&layout.metadata_db()), 0o600);
        assert_eq!(mode(&root.join("plugins/p/logs/info.log")), 0o600);
        assert_eq!(mode(&layout.pool_dir()), 0o700);
        // Datasets and what a symbolic link points to are not the data directory's.
        assert_eq!(mode(&layout.pool_dir().join("ds")), 0o755);
        assert_eq!(mode(&layout.pool_dir().join("ds/f")), 0o644);
        assert_eq!(mode(&outside), 0o644);
        // A readable key may have leaked: opening it says so (see secrets).
        assert_eq!(mode(&layout.secrets_key()), 0o644);
    }

    #[test]
    fn write_private_narrows_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, b"old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"new").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
    }
}
