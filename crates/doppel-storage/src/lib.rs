//! Doppel's copy-on-write storage pool: driver trait with btrfs, reflink and copy drivers.
