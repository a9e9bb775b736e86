//! Doppel's SSH layer: how the engine reaches hosts.
//!
//! What you get:
//! - [`Connection`]: one authenticated SSH connection (password or key
//!   pair), with the host key pinned ([`HostKeyPolicy`], [`HostKey`]).
//!   Clones share the connection; each command opens its own channel.
//! - [`Connection::exec`] / [`Connection::run_bash`] /
//!   [`Connection::run_expect`]: the plugin contract's library calls, with
//!   variables passed on the channel's stdin (never on the command line, never
//!   logged), output capped and the cap reported ([`ExecOutput::truncated`]).
//! - [`Connection::run_sync`]: rsync from the host into a local directory,
//!   over the same connection ([`SyncRequest`]).
//! - [`Pool`]: warm connections reused across calls.
//! - [`Error`]: typed failures (unreachable, banner timeout, host key
//!   mismatch, auth failure, bash missing...), each naming `user@host:port`.
//!
//! ```no_run
//! # async fn demo() -> doppel_remote::Result<()> {
//! use doppel_remote::{Connection, Credentials, ExecRequest, HostKeyPolicy};
//! let creds = Credentials::Password("secret".into());
//! let first = Connection::connect("127.0.0.2", 22, "delphix", &creds, &HostKeyPolicy::AcceptFirst).await?;
//! let pin = HostKeyPolicy::Pinned(first.host_key().clone()); // store first.host_key().openssh()
//! let conn = Connection::connect("127.0.0.2", 22, "delphix", &creds, &pin).await?;
//! let out = conn.exec(&ExecRequest::new("echo $GREETING").var("GREETING", "hi")).await?;
//! assert_eq!(out.stdout, b"hi\n");
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
// Errors carry their context (target, argv, stderr) by value; they are the
// cold path, so their size does not matter.
#![allow(clippy::result_large_err)]

mod connection;
mod duplex;
mod error;
mod exec;
mod pool;
mod sync;

pub use connection::{ConnectOptions, Connection, Credentials, HostKey, HostKeyPolicy, Login};
pub use duplex::{DuplexExec, DuplexExit, DuplexWait};
pub use error::{AuthMethod, Error, Result, Target};
pub use exec::{ExecOutput, ExecRequest, DEFAULT_OUTPUT_CAP_BYTES};
pub use pool::Pool;
pub use sync::{SyncOutput, SyncRequest};
