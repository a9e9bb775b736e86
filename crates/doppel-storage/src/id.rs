//! Stable ids of pool datasets. Volumes and snapshots are named on disk by
//! these ids only (never by user-facing names): lowercase `[a-z0-9-]`,
//! 1 to 64 characters, not starting with `-`. Names containing any other
//! character (such as the `.` of `.tmp` temporaries) can thus never collide
//! with a dataset.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 64;

fn validate(kind: &'static str, s: &str) -> Result<()> {
    let bad = |reason| {
        Err(StorageError::InvalidId {
            kind,
            value: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return bad("it is empty");
    }
    if s.len() > MAX_ID_LEN {
        return bad("it is longer than 64 characters");
    }
    if s.starts_with('-') {
        return bad("it starts with '-'");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("only lowercase letters, digits and '-' are allowed");
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                validate($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as text (also its on-disk name).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = StorageError;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = StorageError;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// Id of a writable dataset (a dSource's or a VDB's data).
    VolumeId,
    "volume"
);
id_type!(
    /// Id of a read-only snapshot, unique within its volume.
    SnapshotId,
    "snapshot"
);

/// A snapshot, addressed by its volume and its own id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The volume the snapshot was taken of.
    pub volume: VolumeId,
    /// The snapshot's id.
    pub snapshot: SnapshotId,
}

impl SnapshotRef {
    /// Pairs a volume and a snapshot id.
    pub fn new(volume: VolumeId, snapshot: SnapshotId) -> Self {
        Self { volume, snapshot }
    }
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.volume, self.snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["a", "vdb-1", "0", "x".repeat(64).as_str()] {
            assert!(VolumeId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "a.tmp",
            "a/b",
            "..",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            let e = VolumeId::new(bad).unwrap_err();
            assert!(
                matches!(e, StorageError::InvalidId { kind: "volume", .. }),
                "{bad}: {e}"
            );
        }
        assert!(SnapshotId::new("S1")
            .unwrap_err()
            .to_string()
            .contains("lowercase"));
    }
}
