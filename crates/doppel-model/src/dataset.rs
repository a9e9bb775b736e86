//! Datasets: dSources and VDBs, their snapshots, and where they are mounted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /api/v1/dsources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkDSource {
    pub name: String,
    /// `SOURCE_CONFIG-<n>`.
    pub source_config: String,
    /// Staged plugins: the environment where the dataset is mounted and filled.
    pub staging_environment: Option<String>,
    /// The staging environment's user (default: its primary user).
    pub staging_user: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    /// Hook scripts by point (`pre-sync`, `post-sync`, ...), set before the first sync.
    #[serde(default)]
    pub hooks: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DSource {
    pub reference: String,
    pub name: String,
    pub plugin: String,
    pub source_config: String,
    pub staging_environment: Option<String>,
    /// Where the dataset is mounted on the staging host (`ENV:path`), while enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_mount: Option<String>,
    /// With secrets redacted.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    pub dataset: String,
    /// Disabled objects keep their data but are unmounted and not synced.
    pub enabled: bool,
    pub snapshots: usize,
    pub latest_snapshot: Option<String>,
    /// The plugin's status (ACTIVE or INACTIVE), in `show` only, when the plugin has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The source's size in bytes by the plugin, in `show` only, when the plugin tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Snapshot {
    pub reference: String,
    pub dataset: String,
    /// The snapshot's id in the pool.
    pub pool_snapshot: String,
    pub timeflow: String,
    pub created_at: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
    /// Bytes only this snapshot holds (what deleting it would free).
    pub unique_bytes: Option<u64>,
    /// Why retention keeps it (`VDB dev's current timeflow`, `bookmark
    /// before-migration`, `newest 2 (retention of keep-2 POLICY-1)`, ...),
    /// by the same reasoning retention deletes with; empty: the next
    /// retention pass deletes it.
    #[serde(default)]
    pub kept_because: Vec<String>,
}

/// `POST /api/v1/vdbs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProvisionVdb {
    pub name: String,
    /// A dSource or VDB (name or reference).
    pub from: String,
    /// One of its snapshots, `SNAPSHOT-<n>` or a bookmark name (default:
    /// the latest).
    pub snapshot: Option<String>,
    /// Target environment.
    pub environment: String,
    pub user: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    /// Hook scripts by point (`configure-clone`, `pre-refresh`, ...), set before configure.
    #[serde(default)]
    pub hooks: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vdb {
    pub reference: String,
    pub name: String,
    pub plugin: String,
    pub environment: String,
    pub parent_dataset: String,
    pub dataset: String,
    /// Disabled objects keep their data but are unmounted and not synced.
    pub enabled: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub source_config: Option<Value>,
    pub timeflows: usize,
    pub snapshots: usize,
    /// Deletion protection: none may delete the VDB while it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<crate::Protection>,
    /// When the scheduler deletes the VDB (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `SNAPSHOT-<n>` its current timeflow starts at: the parent's snapshot
    /// it was provisioned or refreshed from, or its own after a rewind (none
    /// once that snapshot is deleted).
    #[serde(default)]
    pub parent_snapshot: Option<String>,
}

/// What to mount where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRequest {
    /// Environment reference or name.
    pub environment: String,
    /// The user that runs sshfs (default: the primary user).
    pub user: Option<String>,
    /// Pool volume id.
    pub volume: String,
    /// Part of the volume to mount (a mount specification's shared path).
    #[serde(default)]
    pub subdirectory: String,
    /// Absolute path on the host.
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
    /// Owner of the dataset's top directory and of what the host creates
    /// (default: the mounting user's uid and gid on the host).
    pub owner: Option<(u32, u32)>,
}

/// A recorded mount, as shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Mount {
    pub id: i64,
    pub environment: String,
    pub user: String,
    pub volume: String,
    pub subdirectory: String,
    pub mount_path: String,
    pub kind: String,
    pub read_only: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Whether the mount is in place right now (a remote mount's SFTP
    /// session runs; a bind mount exists). One that was lost is
    /// re-established within seconds once its host can be reached.
    pub active: bool,
}

/// `POST /api/v1/empty-vdbs`: a VDB that starts with no data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateEmptyVdb {
    pub name: String,
    /// Plugin id or name.
    pub plugin: String,
    /// Target environment.
    pub environment: String,
    pub user: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub parameters: Value,
    /// Hook scripts by point, set before initialize.
    #[serde(default)]
    pub hooks: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/exports`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExportSnapshot {
    /// `SNAPSHOT-<n>` of a dSource or VDB, or `DATASET@BOOKMARK`.
    pub snapshot: String,
    /// The environment that receives the copy.
    pub environment: String,
    pub user: Option<String>,
    /// Absolute directory on that host.
    pub target_directory: String,
    /// V2P parameters (the plugin's virtualToPhysicalDefinition).
    #[serde(default = "empty_object")]
    pub parameters: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}
