//! The data directory is the engine user's only: every file and directory
//! in it is without group and other permissions, after real activity and
//! after a start on a directory an older version left readable.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::*;

/// Everything under `root` with a group or other permission bit, with its
/// mode. The pool is looked at, but not into: the datasets in it are the
/// hosts' files, served to them by the engine, and keep their modes.
fn readable_by_others(root: &Path) -> Vec<(PathBuf, u32)> {
    let pool = root.join("pool");
    let mut found = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            continue;
        }
        // The worker script is public code every plugin sandbox reads (the
        // 0700 data directory keeps other users from reaching it).
        if mode & 0o077 != 0 && !p.ends_with("runtime/doppel_worker.py") {
            found.push((p.clone(), mode));
        }
        if meta.is_dir() && p != pool {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
    // A few are enough to say what is wrong.
    found.truncate(12);
    found
}

/// Everything under `root` but the secrets key and the pool's content,
/// made readable by all, as an older version left it.
fn loosen(root: &Path) {
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() || p == root.join("secrets.key") {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let wider = if meta.is_dir() {
            mode | 0o055
        } else {
            mode | 0o044
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(wider)).unwrap();
        if meta.is_dir() && p != root.join("pool") {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
    }
}

#[test]
fn nothing_in_the_data_directory_is_readable_by_other_users() {
    // TLS, so its key is among the files.
    let mut engine = Engine::start_tls(&[]);
    let root = engine.data_dir.path().to_owned();
    let warning = "readable by other users";
    // Activity: a login, a plugin installed and called (its code and logs).
    let config = tempfile::tempdir().unwrap();
    engine
        .cli_as(
            &["login", "--user", "admin"],
            None,
            Some(config.path()),
            Some(&format!("{ADMIN_PASSWORD}\n")),
        )
        .ok();
    engine.install(&template_artifact());
    let request =
        json!({"source_connection": conn("UNIX_HOST_ENVIRONMENT-1", "source")}).to_string();
    engine
        .cli(&[
            "plugin",
            "invoke",
            "template",
            "discovery.repository",
            "--request",
            &request,
        ])
        .ok();
    for name in [
        "metadata.db",
        "metadata.db-wal",
        "secrets.key",
        "tls-key.pem",
        "plugins",
        "pool",
    ] {
        assert!(root.join(name).exists(), "{name} is made: the walk sees it");
    }
    let plugin_logs = std::fs::read_dir(root.join("plugins"))
        .unwrap()
        .any(|d| d.unwrap().path().join("logs/info.log").exists());
    assert!(plugin_logs, "a plugin log is made: the walk sees it");
    assert_eq!(readable_by_others(&root), vec![]);

    // A data directory an older version left readable is tightened at start.
    loosen(&root);
    assert!(!readable_by_others(&root).is_empty());
    engine.restart();
    assert_eq!(readable_by_others(&root), vec![]);
    assert!(
        engine.log().contains(warning),
        "the start says so: {}",
        engine.log()
    );
    engine.cli(&["plugin", "list"]).ok();
}
