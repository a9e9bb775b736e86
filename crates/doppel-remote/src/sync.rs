//! `run_sync`: rsync from the connection's host into a local directory,
//! with the authenticated, pinned connection as rsync's transport.
//!
//! Local `rsync` is started with `-e` naming a tiny `sh` bridge. rsync runs
//! the bridge with the remote command as arguments; the bridge writes those
//! arguments (NUL-separated, count first) to an inherited descriptor (fd 4),
//! then copies its stdin to, and its stdout from, an inherited socket (fd 3)
//! with `cat`.
//! This side reads the arguments, opens an exec channel running the same
//! command line `ssh` would have sent, and splices the socket and the
//! channel. No second SSH login, no password on disk, no extra binary.
//!
//! Changes are found by size and mtime to the nanosecond
//! (`--modify-window=-1`), not by checksum.
//!
//! Semantics: the local directory becomes a mirror of the source
//! (`rsync -a --delete`, with `--delete-excluded`): files gone from the source
//! and excluded paths are removed locally. Symbolic links are copied as
//! links, except the `sym_links_to_follow`, whose targets are copied (one
//! extra rsync pass each, source `link/` for a directory).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::exec::sh_quote;

/// What to copy, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    /// Absolute directory on the host.
    pub source_directory: String,
    /// Local directory to fill (created if missing).
    pub destination: PathBuf,
    /// Paths to skip: relative to the source, or absolute under it.
    pub exclude_paths: Vec<String>,
    /// Symbolic links whose target content is copied instead of the link:
    /// relative to the source, or absolute under it.
    pub sym_links_to_follow: Vec<String>,
}

/// Statistics of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutput {
    /// rsync passes run (1 + one per followed link).
    pub passes: usize,
    /// rsync's `--stats`-less stdout (itemized changes), for the job log.
    pub log: String,
}

/// The `-e` program. rsync keeps its own copies of fds 3 and 4, so EOF on
/// them tells this side nothing: the bridge sends its argument count first.
/// The foreground `cat` copies the socket to rsync; when this side shuts
/// the socket down (the remote command ended), the bridge kills the other
/// `cat` and exits, so rsync sees its transport end as it would with ssh.
const BRIDGE: &str = "sh -c 'printf \"%s\\0\" \"$#\" \"$@\" >&4; exec 4>&- 5<&0; \
                      cat <&5 >&3 & c=$!; cat <&3; kill $c 2>/dev/null; exit 0' doppel-rsh";

impl Connection {
    /// Copies `request.source_directory` from the host into
    /// `request.destination` (a mirror, see the module docs).
    pub async fn run_sync(&self, request: &SyncRequest) -> Result<SyncOutput> {
        let source = request.source_directory.trim_end_matches('/');
        if !request.source_directory.starts_with('/') {
            return Err(self.bad_path(
                &request.source_directory,
                "the source directory must be absolute",
            ));
        }
        let excludes = request
            .exclude_paths
            .iter()
            .map(|p| self.relative(source, p))
            .collect::<Result<Vec<_>>>()?;
        let follows = request
            .sym_links_to_follow
            .iter()
            .map(|p| self.relative(source, p))
            .collect::<Result<Vec<_>>>()?;
        tokio::fs::create_dir_all(&request.destination)
            .await
            .map_err(|e| Error::LocalCommand {
                target: (*self.target).clone(),
                argv: vec!["mkdir".into(), request.destination.display().to_string()],
                status: "failed".into(),
                stderr: e.to_string(),
            })?;

        let mut log = String::new();
        // Pass 1: everything but the followed links (hidden on the sender,
        // protected on the receiver so pass 2's copies survive).
        let mut args: Vec<String> = vec!["--delete".into(), "--delete-excluded".into()];
        for e in &excludes {
            args.push(format!("--exclude=/{}", escape_pattern(e)));
        }
        for f in &follows {
            args.push(format!("--filter=-s /{}", escape_pattern(f)));
            args.push(format!("--filter=P /{}", escape_pattern(f)));
        }
        args.push(format!("doppel:{source}/"));
        args.push(format!("{}/", request.destination.display()));
        log.push_str(&self.rsync(&args).await?);

        // Pass 2: each followed link, as its target's content.
        for f in &follows {
            let remote = format!("{source}/{f}");
            let is_dir = self
                .exec_raw(&format!("test -d {}", sh_quote(&remote)), &[], 1024)
                .await?
                .exit_code
                == 0;
            let local = request.destination.join(f);
            let mut args: Vec<String> = vec!["--delete".into(), "--delete-excluded".into()];
            for e in &excludes {
                if let Some(rest) = e.strip_prefix(&format!("{f}/")) {
                    args.push(format!("--exclude=/{}", escape_pattern(rest)));
                }
            }
            if is_dir {
                args.push(format!("doppel:{remote}/"));
                args.push(format!("{}/", local.display()));
            } else {
                args.push("--copy-links".into());
                args.push(format!("doppel:{remote}"));
                args.push(local.display().to_string());
            }
            if let Some(parent) = local.parent() {
                let _ = tokio::fs::create_dir_all(parent).await;
            }
            // A link copied earlier as a link would be written through.
            if let Ok(meta) = tokio::fs::symlink_metadata(&local).await {
                if meta.file_type().is_symlink() {
                    let _ = tokio::fs::remove_file(&local).await;
                }
            }
            log.push_str(&self.rsync(&args).await?);
        }
        Ok(SyncOutput {
            passes: 1 + follows.len(),
            log,
        })
    }

    fn bad_path(&self, path: &str, reason: &str) -> Error {
        Error::InvalidSyncPath {
            target: (*self.target).clone(),
            path: path.into(),
            reason: reason.into(),
        }
    }

    fn relative(&self, source: &str, path: &str) -> Result<String> {
        let rel = if path.starts_with('/') {
            match Path::new(path).strip_prefix(source) {
                Ok(rel) => rel.to_string_lossy().into_owned(),
                Err(_) => return Err(self.bad_path(path, "not under the source directory")),
            }
        } else {
            path.to_string()
        };
        let rel = rel.trim_end_matches('/').to_string();
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(self.bad_path(path, "empty, or contains '..' or '//'"));
        }
        Ok(rel)
    }

    /// Runs one local rsync whose remote side runs over this connection.
    async fn rsync(&self, extra: &[String]) -> Result<String> {
        let mut argv: Vec<String> = vec![
            "rsync".into(),
            "-a".into(),
            "--numeric-ids".into(),
            // Compare mtimes to the nanosecond: a same-size change within
            // the same second as the last sync must not be missed.
            "--modify-window=-1".into(),
            "--itemize-changes".into(),
            "-e".into(),
            BRIDGE.into(),
        ];
        argv.extend(extra.iter().cloned());
        let fail = |status: String, stderr: String| Error::LocalCommand {
            target: (*self.target).clone(),
            argv: argv.clone(),
            status,
            stderr,
        };

        let (data_ours, data_theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| fail("socketpair failed".into(), e.to_string()))?;
        let (argv_ours, argv_theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| fail("socketpair failed".into(), e.to_string()))?;
        // High, close-on-exec copies, so dup2 to 3 and 4 in the child never
        // clobbers one with the other.
        let data_fd =
            dup_high(&data_theirs).map_err(|e| fail("dup failed".into(), e.to_string()))?;
        let argv_fd =
            dup_high(&argv_theirs).map_err(|e| fail("dup failed".into(), e.to_string()))?;
        drop((data_theirs, argv_theirs));

        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let (d, a) = (data_fd.as_raw_fd(), argv_fd.as_raw_fd());
        // SAFETY: only async-signal-safe dup2 calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(d, 3) < 0 || libc::dup2(a, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail("spawn failed".into(), e.to_string()))?;
        drop((data_fd, argv_fd));

        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let read_out = async {
            let mut s = Vec::new();
            let _ = stdout.read_to_end(&mut s).await;
            s
        };
        let read_err = async {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s).await;
            s
        };
        let bridge = self.bridge(data_ours, argv_ours);
        let (out, err, remote, status) = tokio::join!(read_out, read_err, bridge, child.wait());
        let status = status.map_err(|e| fail("wait failed".into(), e.to_string()))?;
        let mut stderr_text = String::from_utf8_lossy(&err).into_owned();
        let remote_ok = match &remote {
            Ok((code, remote_err)) => {
                if !remote_err.is_empty() {
                    stderr_text.push_str(&format!(
                        "\nremote: {}",
                        String::from_utf8_lossy(remote_err)
                    ));
                }
                *code == 0
            }
            Err(e) => {
                stderr_text.push_str(&format!("\nremote: {e}"));
                false
            }
        };
        if !status.success() || !remote_ok {
            let remote_status = match &remote {
                Ok((code, _)) => format!("remote exit {code}"),
                Err(_) => "remote side failed".into(),
            };
            return Err(fail(
                format!("{status}, {remote_status}"),
                stderr_text.trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Serves one bridge: reads the remote command from `argv_sock`, runs it
    /// on an exec channel, splices it with `data_sock`. Returns the remote
    /// exit code and stderr.
    async fn bridge(
        &self,
        data_sock: std::os::unix::net::UnixStream,
        argv_sock: std::os::unix::net::UnixStream,
    ) -> Result<(i32, Vec<u8>)> {
        let io =
            |what: &str, e: std::io::Error| self.exec_error_pub("rsync", format!("{what}: {e}"));
        argv_sock
            .set_nonblocking(true)
            .map_err(|e| io("argv socket", e))?;
        data_sock
            .set_nonblocking(true)
            .map_err(|e| io("data socket", e))?;
        let mut argv_sock =
            tokio::net::UnixStream::from_std(argv_sock).map_err(|e| io("argv socket", e))?;
        let data_sock =
            tokio::net::UnixStream::from_std(data_sock).map_err(|e| io("data socket", e))?;
        // The argument count, then that many arguments, NUL-terminated. The
        // local rsync may also die first (bad arguments): then EOF comes
        // when it exits, since it holds the only other copy.
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let mut args: Vec<String> = loop {
            let fields: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            // `split` yields a trailing empty field after the last NUL.
            let complete = fields.len().saturating_sub(1);
            if complete >= 1 {
                let count: usize = String::from_utf8_lossy(fields[0]).parse().unwrap_or(0);
                if complete > count {
                    break fields[1..=count]
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                }
            }
            let n = argv_sock
                .read(&mut buf)
                .await
                .map_err(|e| io("reading rsync's remote command", e))?;
            if n == 0 {
                // rsync failed before starting its transport.
                return Ok((0, Vec::new()));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        // [-l user] host command...
        if args.first().map(String::as_str) == Some("-l") {
            args.drain(..2.min(args.len()));
        }
        if args.is_empty() {
            return Err(self.exec_error_pub("rsync", "the bridge sent no command".into()));
        }
        args.remove(0);
        let command = args.join(" ");
        tracing::debug!(target = %self.target, %command, "rsync remote side");

        let (stream, waiter) = self.exec_duplex(&command).await?.into_parts();
        let (mut remote_out, mut remote_in) = tokio::io::split(stream);
        let (mut sock_read, mut sock_write) = data_sock.into_split();
        let upstream = async {
            let _ = tokio::io::copy(&mut sock_read, &mut remote_in).await;
            let _ = remote_in.shutdown().await;
        };
        let downstream = async {
            let _ = tokio::io::copy(&mut remote_out, &mut sock_write).await;
            let _ = sock_write.shutdown().await;
        };
        // The local side never sends EOF (rsync holds a copy of the socket):
        // the remote command's end is the end of the transfer.
        tokio::pin!(upstream);
        tokio::pin!(downstream);
        tokio::select! {
            () = &mut downstream => {}
            () = &mut upstream => downstream.await,
        }
        let exit = waiter.wait().await;
        Ok((exit.exit_code.unwrap_or(255), exit.stderr.into_bytes()))
    }

    fn exec_error_pub(&self, command: &str, reason: String) -> Error {
        Error::Exec {
            target: (*self.target).clone(),
            command: command.to_string(),
            reason,
        }
    }
}

/// rsync filter patterns treat `*?[` specially; escape them.
fn escape_pattern(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

fn dup_high(fd: &impl AsRawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid descriptor; the result is a
    // new descriptor that we own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
