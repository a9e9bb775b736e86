//! The one authority on where things live in the data directory.

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

    pub fn create(&self) -> Result<(), EngineError> {
        for dir in [self.root.clone(), self.plugins_dir(), self.runtime_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(EngineError::io(format!("creating {}", dir.display())))?;
        }
        Ok(())
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
