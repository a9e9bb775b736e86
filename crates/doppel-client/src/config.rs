//! The client's saved login: `$XDG_CONFIG_HOME/doppel/config.json` (or
//! `~/.config/doppel/config.json`), mode 0600, holding the engine URL and
//! the token `doppel login` got, and how that engine's TLS certificate was
//! trusted then (a CA file or a pinned fingerprint), so later commands need
//! no flag. `DOPPEL_TOKEN` overrides the token.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// The engine the token is for.
    pub url: Option<String>,
    pub token: Option<String>,
    /// Who logged in, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The CA file (absolute path) trusted for `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// The certificate fingerprint pinned for `url` (`SHA256:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

/// Where the configuration lives, if a home can be found.
pub fn path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("doppel").join("config.json"))
}

impl Config {
    /// The saved configuration; empty when there is none or it is unreadable.
    pub fn load() -> Config {
        path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the configuration readable by its owner only.
    pub fn save(&self) -> std::io::Result<PathBuf> {
        let path = path().ok_or_else(|| {
            std::io::Error::other("no home directory (set HOME or XDG_CONFIG_HOME)")
        })?;
        let dir = path.parent().expect("has a parent");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(
            serde_json::to_string_pretty(self)
                .expect("serialisable")
                .as_bytes(),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    fn is_for(&self, url: &str) -> bool {
        self.url.as_deref().map(|u| u.trim_end_matches('/')) == Some(url.trim_end_matches('/'))
    }

    /// The trust saved for `url` by `doppel login`, where `given` (flags or
    /// environment) says nothing.
    pub fn trust_for(&self, url: &str, given: crate::tls::Trust) -> crate::tls::Trust {
        if given != crate::tls::Trust::default() || !self.is_for(url) {
            return given;
        }
        crate::tls::Trust {
            ca_cert: self.ca_cert.clone(),
            fingerprint: self
                .tls_fingerprint
                .as_deref()
                .and_then(|f| crate::tls::Fingerprint::parse(f).ok()),
        }
    }

    /// The token to use for `url`: `DOPPEL_TOKEN`, else the saved one when it
    /// was saved for that same URL.
    pub fn token_for(&self, url: &str) -> Option<String> {
        if let Some(t) = std::env::var("DOPPEL_TOKEN").ok().filter(|t| !t.is_empty()) {
            return Some(t);
        }
        if self.is_for(url) {
            self.token.clone()
        } else {
            None
        }
    }
}
