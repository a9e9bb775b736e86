//! A remote command whose stdin and stdout are one local byte stream, for
//! protocols spoken over an exec channel (sshfs in passive mode speaks SFTP
//! on its stdin/stdout, and the engine serves it from this side).

use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// Buffer of the in-process pipe between the caller and the channel.
const PIPE_BYTES: usize = 1024 * 1024;
/// Stderr kept for error messages.
const STDERR_CAP: usize = 64 * 1024;

/// A running remote command wired to a local stream.
pub struct DuplexExec {
    /// Read: the command's stdout. Write: its stdin. Shut down to send EOF.
    pub stream: DuplexStream,
    done: JoinHandle<(Option<i32>, Vec<u8>)>,
}

/// How a duplex command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplexExit {
    /// None when the channel closed without an exit status (connection lost).
    pub exit_code: Option<i32>,
    /// What the command wrote on stderr (the first 64 KiB).
    pub stderr: String,
}

impl DuplexExec {
    /// Waits for the command to end.
    pub async fn wait(self) -> DuplexExit {
        let (exit_code, stderr) = self.done.await.unwrap_or((None, Vec::new()));
        DuplexExit {
            exit_code,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Splits into the stream and a handle that waits for the end.
    pub fn into_parts(self) -> (DuplexStream, DuplexWait) {
        (self.stream, DuplexWait { done: self.done })
    }
}

/// The end of a [`DuplexExec`] whose stream was taken.
pub struct DuplexWait {
    done: JoinHandle<(Option<i32>, Vec<u8>)>,
}

impl DuplexWait {
    /// Waits for the command to end.
    pub async fn wait(self) -> DuplexExit {
        let (exit_code, stderr) = self.done.await.unwrap_or((None, Vec::new()));
        DuplexExit {
            exit_code,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Whether the command has ended.
    pub fn is_finished(&self) -> bool {
        self.done.is_finished()
    }
}

impl Connection {
    /// Starts `command` (run by the user's login shell, as sshd runs it) with
    /// its stdin and stdout spliced to the returned stream.
    pub async fn exec_duplex(&self, command: &str) -> Result<DuplexExec> {
        let exec_error = |reason: String| Error::Exec {
            target: self.target().clone(),
            command: command.to_owned(),
            reason,
        };
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| exec_error(format!("cannot open a channel: {e}")))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(|e| exec_error(format!("exec request failed: {e}")))?;
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let (mut from_caller, mut to_caller) = tokio::io::split(theirs);
        let (mut reader, writer) = channel.split();
        let done = tokio::spawn(async move {
            let upstream = async {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match from_caller.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if writer.data_bytes(buf[..n].to_vec()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = writer.eof().await;
            };
            let downstream = async {
                let mut code = None;
                let mut stderr = Vec::new();
                while let Some(msg) = reader.wait().await {
                    match msg {
                        // A caller gone away ends the stream.
                        ChannelMsg::Data { data } if to_caller.write_all(&data).await.is_err() => {
                            break
                        }
                        ChannelMsg::ExtendedData { data, .. } if stderr.len() < STDERR_CAP => {
                            stderr.extend_from_slice(
                                &data[..data.len().min(STDERR_CAP - stderr.len())],
                            );
                        }
                        ChannelMsg::Eof => {
                            let _ = to_caller.shutdown().await;
                        }
                        ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status as i32),
                        ChannelMsg::ExitSignal { .. } => code = Some(255),
                        ChannelMsg::Close => break,
                        _ => {}
                    }
                }
                let _ = to_caller.shutdown().await;
                (code, stderr)
            };
            tokio::pin!(upstream);
            tokio::pin!(downstream);
            tokio::select! {
                r = &mut downstream => r,
                () = &mut upstream => downstream.await,
            }
        });
        Ok(DuplexExec { stream: ours, done })
    }
}
