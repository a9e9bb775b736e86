//! Doppel's copy-on-write storage pool: one driver trait
//! ([`StorageDriver`]) with the `btrfs` (default), `reflink` and `copy`
//! drivers, and the [`Pool`] on top that owns the on-disk [`layout`],
//! validates requests, enforces the free-space reserve, reports
//! [`PoolStatus`] and reconciles the disk with the metadata store's ids.
//!
//! This crate knows datasets on disk only: it never touches the metadata
//! store, and knows nothing of plugins, hosts or jobs. The engine calls it
//! from blocking threads.
//!
//! Start with [`open_default_pool`] (what the server calls) or [`Pool::open`].

pub mod btrfs;
mod cmd;
pub mod driver;
pub mod embedded;
pub mod error;
pub mod id;
pub mod layout;
pub mod pool;
pub mod revert;
pub mod sys;
pub mod tree;
pub mod treedriver;

pub use btrfs::QuotaMode;
pub use driver::{Accounting, DriverInfo, DriverKind, PoolSpace, StorageDriver, Usage};
pub use embedded::{default_pool_dir, default_pool_image, open_default_pool, unmount_default_pool};
pub use error::{Result, StorageError};
pub use id::{SnapshotId, SnapshotRef, VolumeId};
pub use layout::Layout;
pub use pool::{
    KnownSet, Notice, NoticeLevel, Pool, PoolOptions, PoolStatus, Quarantined, ReconcileReport,
    DEFAULT_POOL_SIZE, DEFAULT_RESERVE,
};
