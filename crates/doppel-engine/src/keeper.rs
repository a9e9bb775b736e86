//! Mount keepers: the processes that serve remote mounts, so that a mount
//! outlives the engine process (a crash, `kill -9`, an upgrade restart).
//!
//! A keeper is the engine's own binary run as `doppel mount-keeper
//! <socket>`, in its own session (not killed with the engine). It reads
//! what to serve, credentials and pinned host key included, as one JSON
//! line on its standard input (never the command line or the environment),
//! binds its unix socket (mode 0600 in a 0700 directory of the data
//! directory), says `ready`, then opens its own SSH connection, runs sshfs
//! on the host and serves the dataset over SFTP until the session ends.
//! Then it tells whoever watches and exits: a keeper lives exactly as long
//! as the mount it serves.
//!
//! The engine stays the one that decides: it watches each keeper over the
//! socket (the watch ends when the session does, so the watcher mounts it
//! again), adopts the keepers it finds at start-up, stops those whose mount
//! record is gone, and unmounts on the host itself (sshfs then exits, which
//! ends the keeper). A keeper whose socket file disappears (its data
//! directory removed) ends too, so none outlives the data it serves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use doppel_remote::{Connection, Credentials, DuplexExit, HostKey, HostKeyPolicy};

/// What a keeper serves and how it reaches the host.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeeperSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub private_key: Option<String>,
    pub passphrase: Option<String>,
    /// The pinned host key, OpenSSH format.
    pub host_key: String,
    pub root: PathBuf,
    pub mount_path: String,
    /// The remote command that runs sshfs in passive mode.
    pub command: String,
    pub read_only: bool,
    pub owner: Option<(u32, u32)>,
    pub label: String,
    /// The pool's reserve: writes that would eat into it are refused.
    /// Keepers started by an engine that predates it serve without one.
    #[serde(default)]
    pub keep_free: u64,
}

impl KeeperSpec {
    pub(crate) fn set_credentials(&mut self, c: &Credentials) {
        match c {
            Credentials::Password(p) => self.password = Some(p.clone()),
            Credentials::KeyPair {
                private_key_pem,
                passphrase,
            } => {
                self.private_key = Some(private_key_pem.clone());
                self.passphrase = passphrase.clone();
            }
        }
    }

    fn credentials(&self) -> Credentials {
        match &self.private_key {
            Some(k) => Credentials::KeyPair {
                private_key_pem: k.clone(),
                passphrase: self.passphrase.clone(),
            },
            None => Credentials::Password(self.password.clone().unwrap_or_default()),
        }
    }
}

/// A keeper's first answer to a watch: what it serves.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct Hello {
    pub pid: u32,
    pub mount_path: String,
    pub root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Ended {
    exit_code: Option<i32>,
    stderr: String,
}

/// How long a keeper may take to bind its socket after it starts.
const READY: Duration = Duration::from_secs(10);
/// How often a keeper checks that its socket file is still there.
const SOCKET_CHECK: Duration = Duration::from_secs(1);

/// How a mount is served: read-only or not, who owns what the host
/// creates, and the free space writes must leave in the pool.
pub(crate) fn serve_options(
    read_only: bool,
    owner: Option<(u32, u32)>,
    keep_free: u64,
) -> doppel_sftp::ServeOptions {
    doppel_sftp::ServeOptions {
        read_only,
        new_file_owner: owner.map(|(uid, gid)| doppel_sftp::Owner { uid, gid }),
        keep_free,
        ..Default::default()
    }
}

/// Serves one mount over an exec channel until the session ends.
pub(crate) async fn serve(
    conn: &Connection,
    command: &str,
    root: PathBuf,
    options: doppel_sftp::ServeOptions,
    label: String,
) -> Result<JoinHandle<DuplexExit>, doppel_remote::Error> {
    let exec = conn.exec_duplex(command).await?;
    let (stream, waiter) = exec.into_parts();
    Ok(tokio::spawn(async move {
        let (reader, writer) = tokio::io::split(stream);
        match doppel_sftp::serve_sftp(&root, options, reader, writer).await {
            Ok(stats) => tracing::info!(mount = %label, ?stats, "sftp session ended"),
            Err(e) => tracing::warn!(mount = %label, error = %e, "sftp session failed"),
        }
        let exit = waiter.wait().await;
        tracing::info!(mount = %label, exit = ?exit.exit_code, stderr = %exit.stderr.trim(), "sshfs ended");
        exit
    }))
}

/// Errors of starting or reaching a keeper, as text for the mount's error.
pub(crate) type KeeperResult<T> = Result<T, String>;

/// Starts a keeper for `spec` at `socket`; returns once it listens.
pub(crate) async fn spawn(program: &Path, socket: &Path, spec: &KeeperSpec) -> KeeperResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let log_path = socket.with_extension("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("mount-keeper")
        .arg(socket)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .env_remove("DOPPEL_ADMIN_PASSWORD")
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork
    // and exec. Its own session: the keeper must not die with the engine's
    // process group or terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the mount keeper {}: {e}", program.display()))?;
    let mut stdin = child.stdin.take().ok_or("keeper stdin")?;
    let mut line = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let written = stdin.write_all(&line).await;
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().ok_or("keeper stdout")?);
    // Reaped by this engine while it runs; by init after.
    let reaper = tokio::spawn(async move { child.wait().await });
    let mut ready = String::new();
    let read = tokio::time::timeout(READY, stdout.read_line(&mut ready)).await;
    if written.is_ok() && matches!(read, Ok(Ok(_))) && ready.trim() == "ready" {
        return Ok(());
    }
    let exited = if reaper.is_finished() {
        match reaper.await {
            Ok(Ok(s)) => format!(" ({s})"),
            _ => String::new(),
        }
    } else {
        String::new()
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(3).collect();
    Err(format!(
        "the mount keeper did not start{exited}: {}",
        tail.into_iter().rev().collect::<Vec<_>>().join("; ")
    ))
}

/// Watches the keeper at `socket`: what it serves, and a task that ends
/// with the session (or when the keeper is gone).
pub(crate) async fn watch(socket: &Path) -> KeeperResult<(Hello, JoinHandle<DuplexExit>)> {
    let stream = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(socket))
        .await
        .map_err(|_| "the keeper does not answer".to_owned())?
        .map_err(|e| format!("no keeper at {}: {e}", socket.display()))?;
    let (r, mut w) = stream.into_split();
    w.write_all(b"{\"op\":\"watch\"}\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(r).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .map_err(|_| "the keeper does not answer".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("the keeper ended")?;
    let hello: Hello =
        serde_json::from_str(&first).map_err(|e| format!("keeper said {first:?}: {e}"))?;
    let task = tokio::spawn(async move {
        let _keep_writer = w;
        match lines.next_line().await {
            Ok(Some(l)) => match serde_json::from_str::<Ended>(&l) {
                Ok(e) => DuplexExit {
                    exit_code: e.exit_code,
                    stderr: e.stderr,
                },
                Err(_) => DuplexExit {
                    exit_code: None,
                    stderr: format!("the mount keeper said {l:?}"),
                },
            },
            _ => DuplexExit {
                exit_code: None,
                stderr: "the mount keeper ended".into(),
            },
        }
    });
    Ok((hello, task))
}

/// Tells the keeper at `socket` to stop (ending its session); true if one
/// answered.
pub(crate) async fn stop(socket: &Path) -> bool {
    let done = async {
        let mut s = UnixStream::connect(socket).await.ok()?;
        s.write_all(b"{\"op\":\"stop\"}\n").await.ok()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.ok()?;
        Some(())
    };
    let answered = tokio::time::timeout(Duration::from_secs(10), done)
        .await
        .ok()
        .flatten()
        .is_some();
    let _ = std::fs::remove_file(socket);
    answered
}

/// `doppel mount-keeper <socket>`: runs one keeper until its mount ends.
pub fn main(socket: PathBuf) -> std::process::ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("mount keeper: cannot read what to serve: {e}");
        return std::process::ExitCode::from(2);
    }
    let spec: KeeperSpec = match serde_json::from_str(&line) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mount keeper: what to serve is not valid: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mount keeper: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keep(&socket, spec)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mount keeper {}: {e}", socket.display());
            std::process::ExitCode::FAILURE
        }
    }
}

fn say(what: &str) {
    let t = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    eprintln!("{t} mount keeper {}: {what}", std::process::id());
}

async fn keep(socket: &Path, spec: KeeperSpec) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| format!("cannot listen: {e}"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict the socket: {e}"))?;
    let inode = std::fs::metadata(socket).map(|m| m.ino()).ok();
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = out.write_all(b"ready\n").and_then(|()| out.flush());
    }
    say(&format!("serving {} for {}", spec.mount_path, spec.label));
    let hello = Hello {
        pid: std::process::id(),
        mount_path: spec.mount_path.clone(),
        root: spec.root.clone(),
    };
    let (ended_tx, ended_rx) = tokio::sync::watch::channel::<Option<DuplexExit>>(None);
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);

    let session = tokio::spawn(async move {
        let key = HostKey::from_openssh(&spec.host_key).map_err(|e| e.to_string());
        let conn = match key {
            Ok(key) => Connection::connect(
                &spec.host,
                spec.port,
                &spec.user,
                &spec.credentials(),
                &HostKeyPolicy::Pinned(key),
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                return DuplexExit {
                    exit_code: None,
                    stderr: e,
                }
            }
        };
        match serve(
            &conn,
            &spec.command,
            spec.root,
            serve_options(spec.read_only, spec.owner, spec.keep_free),
            spec.label,
        )
        .await
        {
            Ok(task) => task.await.unwrap_or(DuplexExit {
                exit_code: None,
                stderr: "the session task failed".into(),
            }),
            Err(e) => DuplexExit {
                exit_code: None,
                stderr: e.to_string(),
            },
        }
    });
    let session_abort = session.abort_handle();
    let mut session = session;
    let mut check = tokio::time::interval(SOCKET_CHECK);
    let mut clients = tokio::task::JoinSet::new();
    let exit = loop {
        tokio::select! {
            done = &mut session => {
                break done.unwrap_or(DuplexExit { exit_code: None, stderr: "the session task failed".into() });
            }
            Some(()) = stop_rx.recv() => {
                session_abort.abort();
                break DuplexExit { exit_code: None, stderr: "stopped by the engine".into() };
            }
            _ = check.tick() => {
                let now = std::fs::metadata(socket).map(|m| m.ino()).ok();
                if now.is_none() || now != inode {
                    session_abort.abort();
                    say("its socket is gone (data directory removed): stopping");
                    return Ok(());
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let hello = hello.clone();
                let mut ended = ended_rx.clone();
                let stop_tx = stop_tx.clone();
                clients.spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut req = String::new();
                    let mut r = BufReader::new(r);
                    if r.read_line(&mut req).await.is_err() {
                        return;
                    }
                    if req.contains("\"stop\"") {
                        let _ = stop_tx.send(()).await;
                        let _ = w.write_all(b"{\"stopped\":true}\n").await;
                        return;
                    }
                    let Ok(mut first) = serde_json::to_vec(&hello) else { return };
                    first.push(b'\n');
                    if w.write_all(&first).await.is_err() {
                        return;
                    }
                    let exit = loop {
                        if let Some(e) = ended.borrow().clone() {
                            break e;
                        }
                        if ended.changed().await.is_err() {
                            return;
                        }
                    };
                    let Ok(mut last) = serde_json::to_vec(&Ended { exit_code: exit.exit_code, stderr: exit.stderr }) else { return };
                    last.push(b'\n');
                    let _ = w.write_all(&last).await;
                });
            }
        }
    };
    say(&format!(
        "session ended (exit {:?}): {}",
        exit.exit_code,
        exit.stderr.trim()
    ));
    // Watchers learn how it ended before the socket goes.
    let _ = ended_tx.send(Some(exit));
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    if std::fs::metadata(socket).map(|m| m.ino()).ok() == inode {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}
