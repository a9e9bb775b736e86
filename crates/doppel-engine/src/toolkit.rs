//! What the engine puts into each environment's toolkit directory, besides
//! the scratch space: the tools published plugins expect the platform to
//! provide. Today that is `jq`, which plugins reach through the
//! `DLPX_BIN_JQ` variable of every `run_bash` (Delphix's own toolkit ships
//! one, so plugins do not depend on the host having it).
//!
//! The engine's own `jq` is copied with the libraries it links beyond the C
//! library (the host needs a compatible glibc, as for any Linux binary),
//! behind a wrapper that points the loader at them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use doppel_remote::{Connection, ExecRequest};

/// The variable `run_bash` and `run_expect` get, naming the toolkit's jq.
pub(crate) const JQ_VARIABLE: &str = "DLPX_BIN_JQ";

/// Where the wrapper sits in a toolkit directory.
pub(crate) fn jq_path(toolkit: &str) -> String {
    format!("{}/bin/jq", toolkit.trim_end_matches('/'))
}

/// One file of the bundle: its place under the toolkit and its bytes.
struct File {
    relative: String,
    bytes: Vec<u8>,
}

/// The jq bundle, read once from the engine's machine, or why there is none.
fn bundle() -> &'static Result<Vec<File>, String> {
    static BUNDLE: OnceLock<Result<Vec<File>, String>> = OnceLock::new();
    BUNDLE.get_or_init(read_bundle)
}

fn read_bundle() -> Result<Vec<File>, String> {
    let jq = find_on_path("jq").ok_or("the engine's machine has no jq on its PATH")?;
    let mut files = vec![File {
        relative: "lib/jq/jq".into(),
        bytes: std::fs::read(&jq).map_err(|e| format!("reading {}: {e}", jq.display()))?,
    }];
    for lib in linked_libraries(&jq)? {
        let name = lib
            .file_name()
            .ok_or("a library path without a name")?
            .to_string_lossy()
            .into_owned();
        files.push(File {
            relative: format!("lib/jq/{name}"),
            bytes: std::fs::read(&lib).map_err(|e| format!("reading {}: {e}", lib.display()))?,
        });
    }
    files.push(File {
        relative: "bin/jq".into(),
        bytes: b"#!/bin/sh\n\
                 # jq as the Doppel engine provides it, with the libraries it links.\n\
                 here=$(cd \"$(dirname \"$0\")/../lib/jq\" && pwd) || exit 127\n\
                 LD_LIBRARY_PATH=\"$here${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\" exec \"$here/jq\" \"$@\"\n"
            .to_vec(),
    });
    Ok(files)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/bin".into(), "/bin".into()])
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The shared libraries `binary` links, as `ldd` resolves them, except the
/// C library's own (every host has its own, and it must be that one).
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    if !out.status.success() {
        // A static binary: nothing to carry along.
        return Ok(Vec::new());
    }
    const GLIBC: [&str; 7] = [
        "libc.so",
        "libm.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "ld-linux",
        "linux-vdso",
    ];
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("=>").map(|(_, r)| r.trim()))
        .filter_map(|r| r.split_whitespace().next())
        .filter(|p| p.starts_with('/'))
        .filter(|p| {
            !GLIBC
                .iter()
                .any(|g| p.rsplit('/').next().unwrap_or("").starts_with(g))
        })
        .map(PathBuf::from)
        .collect())
}

/// Copies the bundle into `toolkit` on the host (replacing what an older
/// engine put there); returns what went wrong as a message for the job.
pub(crate) async fn install(conn: &Connection, toolkit: &str) -> Result<(), String> {
    let files = bundle().as_ref().map_err(Clone::clone)?;
    let toolkit = toolkit.trim_end_matches('/');
    for f in files {
        let path = format!("{toolkit}/{}", f.relative);
        // Written aside and renamed, so a plugin never runs half a file.
        let script = "set -e; mkdir -p \"$(dirname \"$DEST\")\"; cat > \"$DEST.tmp\"; \
                      chmod 0755 \"$DEST.tmp\"; mv -f \"$DEST.tmp\" \"$DEST\"";
        let out = conn
            .exec(
                &ExecRequest::new(script)
                    .var("DEST", &path)
                    .stdin(f.bytes.clone()),
            )
            .await
            .map_err(|e| format!("copying {path}: {e}"))?;
        if out.exit_code != 0 {
            return Err(format!("copying {path}: {}", out.stderr_str().trim()));
        }
    }
    let check = conn
        .exec(&ExecRequest::new("\"$JQ\" -n 1").var("JQ", jq_path(toolkit)))
        .await
        .map_err(|e| format!("checking jq: {e}"))?;
    if check.exit_code != 0 || check.stdout_str().trim() != "1" {
        return Err(format!(
            "the toolkit's jq does not run on this host: {}",
            check.stderr_str().trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_carries_jq_its_libraries_and_a_wrapper_but_not_glibc() {
        let files = match bundle() {
            Ok(f) => f,
            Err(e) => panic!("scripts/setup.sh installs jq: {e}"),
        };
        let names: Vec<&str> = files.iter().map(|f| f.relative.as_str()).collect();
        assert!(
            names.contains(&"lib/jq/jq") && names.contains(&"bin/jq"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("libc.so")), "{names:?}");
    }
}
