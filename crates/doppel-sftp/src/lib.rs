//! Doppel's confined SFTP server.
//!
//! To mount an engine dataset on a remote host, the engine runs
//! `sshfs -o passive` on that host through an SSH exec channel; sshfs then
//! speaks SFTP over the channel and the engine answers with [`serve_sftp`],
//! confined to the dataset's directory. See the crate README for the
//! confinement guarantee and how it is enforced.

mod root;
mod session;
mod wire;

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;

pub use wire::{MAX_IO, MAX_PACKET};

/// Owner given to files, directories and symlinks the client creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// How one session is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Refuse every request that would change the tree (open for writing,
    /// setstat, remove, rename, mkdir, symlink, link...) with
    /// SSH_FX_PERMISSION_DENIED.
    pub read_only: bool,
    /// The server usually runs as root; without this, what the client creates
    /// belongs to the server's user. With it, newly created objects are
    /// chowned to this owner (e.g. the host's environment user).
    pub new_file_owner: Option<Owner>,
    /// Maximum number of open file and directory handles.
    pub max_handles: usize,
    /// Free bytes the served filesystem must keep (the pool's reserve). A
    /// WRITE that would eat into them is refused with SSH_FX_FAILURE (SFTP
    /// v3 has no "no space" code: sshfs hands the writer EPERM), and
    /// statvfs answers with them counted as used, so `df` on the host shows
    /// what can really be written. 0 turns the guard off.
    pub keep_free: u64,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            read_only: false,
            new_file_owner: None,
            max_handles: 4096,
            keep_free: 0,
        }
    }
}

/// Counters of one finished session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Requests answered (including INIT).
    pub requests: u64,
    /// Requests answered with a status other than OK or EOF.
    pub errors: u64,
    /// File bytes sent to the client (READ).
    pub bytes_read: u64,
    /// File bytes written for the client (WRITE).
    pub bytes_written: u64,
    /// WRITEs refused because they would have eaten into `keep_free`.
    pub writes_refused: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("cannot open the served directory {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("SFTP transport: {0}")]
    Io(#[from] std::io::Error),
    #[error("SFTP protocol violation: {0}")]
    Protocol(String),
    #[error("SFTP worker failed: {0}")]
    Worker(String),
}

/// Requests (and replies) queued between transport and worker. With 32 KiB
/// writes this is a few MiB in flight, enough to keep the pipe busy.
const QUEUE: usize = 256;

/// Serve one SFTP (version 3) session over `reader`/`writer` until the
/// client closes its side, confined to the directory `root`: the client's
/// "/" is `root`, and nothing outside it can be reached.
///
/// Requests are read and replies written concurrently with the file work, so
/// a client may pipeline any number of requests; they are executed in
/// arrival order on a blocking thread.
pub async fn serve_sftp<R, W>(
    root: &Path,
    options: ServeOptions,
    reader: R,
    writer: W,
) -> Result<SessionStats, SftpError>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let confined = root::Root::open(root).map_err(|source| SftpError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    // Requests and replies travel in batches: everything the client has
    // already sent is handed over at once, so that a pipelined burst costs
    // one wake-up of the worker rather than one per request.
    let (req_tx, mut req_rx) = mpsc::channel::<Vec<Vec<u8>>>(QUEUE);
    let (resp_tx, mut resp_rx) = mpsc::channel::<Vec<Vec<u8>>>(QUEUE);

    let worker = tokio::task::spawn_blocking(move || {
        let mut s = session::Session::new(confined, options);
        'outer: while let Some(mut batch) = req_rx.blocking_recv() {
            loop {
                let replies: Vec<Vec<u8>> = batch.iter().filter_map(|p| s.handle(p)).collect();
                if !replies.is_empty() && resp_tx.blocking_send(replies).is_err() {
                    break 'outer;
                }
                match req_rx.try_recv() {
                    Ok(b) => batch = b,
                    Err(_) => break,
                }
            }
        }
        s.stats
    });

    let read = async move {
        let mut r = BufReader::with_capacity(4 * MAX_PACKET, reader);
        loop {
            let mut batch = Vec::new();
            // Wait for one packet, then take every complete packet that is
            // already buffered.
            loop {
                let mut len = [0u8; 4];
                if batch.is_empty() {
                    if r.read(&mut len[..1]).await? == 0 {
                        return Ok::<(), SftpError>(());
                    }
                    r.read_exact(&mut len[1..]).await?;
                } else {
                    let buf = r.buffer();
                    if buf.len() < 4 {
                        break;
                    }
                    let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + n || batch.len() >= 64 {
                        break;
                    }
                    r.read_exact(&mut len).await?;
                }
                let len = u32::from_be_bytes(len) as usize;
                if len == 0 || len > MAX_PACKET + 1024 {
                    return Err(SftpError::Protocol(format!("bad packet length {len}")));
                }
                let mut pkt = vec![0u8; len];
                r.read_exact(&mut pkt).await?;
                batch.push(pkt);
            }
            if req_tx.send(batch).await.is_err() {
                return Ok(());
            }
        }
    };

    let write = async move {
        let mut w = BufWriter::with_capacity(MAX_PACKET, writer);
        let res: std::io::Result<()> = async {
            while let Some(batch) = resp_rx.recv().await {
                for v in batch {
                    w.write_all(&v).await?;
                }
                while let Ok(batch) = resp_rx.try_recv() {
                    for v in batch {
                        w.write_all(&v).await?;
                    }
                }
                w.flush().await?;
            }
            w.shutdown().await
        }
        .await;
        match res {
            // The client went away: the session is over, not failed.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(SftpError::from),
        }
    };

    let transport = tokio::try_join!(read, write);
    let stats = worker.await.map_err(|e| SftpError::Worker(e.to_string()))?;
    transport?;
    tracing::debug!(?stats, "sftp session ended");
    Ok(stats)
}
