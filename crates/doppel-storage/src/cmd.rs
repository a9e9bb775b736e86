//! The only place this crate runs other programs (mkfs.btrfs, mount,
//! umount, losetup), and only for the embedded default pool. Errors keep the
//! argv, the exit status and stderr.

use std::process::{Command, Stdio};

use crate::error::{Result, StorageError};

/// Runs `argv` to completion; returns its stdout, or a
/// [`StorageError::Command`] if it could not start or exited non-zero.
pub fn run(argv: &[&str]) -> Result<String> {
    let owned: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    tracing::debug!(argv = ?owned, "running");
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| StorageError::Command {
            argv: owned.clone(),
            status: format!("could not start: {e}"),
            stderr: String::new(),
        })?;
    if !out.status.success() {
        return Err(StorageError::Command {
            argv: owned,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `prog` is found in `PATH` (or the sbin directories, which a
/// non-login root shell may lack).
pub fn find_program(prog: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(Into::into),
        )
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}
