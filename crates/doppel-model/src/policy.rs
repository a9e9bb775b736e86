//! Policies: schedules and retention applied to dSources and VDBs, and
//! what the scheduler did with them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// When something runs: a cron expression (5 fields, or 6 with seconds
/// first) in the policy's time zone, or a fixed interval (`15m`, `6h`,
/// `1d`) counted from 1970-01-01 UTC, so its slots do not move when the
/// engine restarts. Exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

/// A dSource's sync schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapSync {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// How late after its slot a sync may still start (`4h`); a slot the
    /// engine reaches later is skipped and the next slot is waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The plugin's snapshot parameters for scheduled syncs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
}

impl SnapSync {
    pub fn schedule(&self) -> Schedule {
        Schedule {
            cron: self.cron.clone(),
            every: self.every.clone(),
        }
    }
}

/// Which snapshots to keep: the newest `keep_last`, and/or those younger
/// than `max_age` (`7d`). With both, a snapshot either rule keeps is kept.
/// Snapshots something needs (a VDB's current timeflow, a child VDB, a
/// bookmark) are kept whatever the rules say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// `POST /api/v1/policies` and `PUT /api/v1/policies/{policy}` (which
/// replaces every section).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub name: String,
    /// An IANA time zone (`Europe/Paris`) for cron expressions; UTC if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapsync: Option<SnapSync>,
    /// VDB snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vdb_snapshot: Option<Schedule>,
    /// VDB refreshes from the parent's latest snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// An object a policy is applied to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppliedTo {
    /// `DSOURCE-<n>` or `VDB-<n>`.
    pub object: String,
    pub name: String,
    /// An override's sections win over the object's base policy.
    #[serde(rename = "override")]
    pub is_override: bool,
    pub applied_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    /// `POLICY-<n>`.
    pub reference: String,
    #[serde(flatten)]
    pub spec: PolicySpec,
    pub applied_to: Vec<AppliedTo>,
    pub created_at: String,
}

/// `POST /api/v1/policies/{policy}/apply`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplyPolicy {
    /// Objects to apply it to (`dsource:tree`, `vdb:dev`, `DSOURCE-1`);
    /// none: enforce its retention on the objects it is applied to.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Apply as the objects' override rather than their base policy.
    #[serde(default, rename = "override")]
    pub is_override: bool,
    /// Change nothing; say what retention would delete.
    #[serde(default)]
    pub dry_run: bool,
}

/// A snapshot retention deletes (or would).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionVictim {
    pub snapshot: String,
    /// The dSource or VDB (`DSOURCE-<n>`, `VDB-<n>`).
    pub object: String,
    pub created_at: String,
    /// What deleting it frees, by the pool.
    pub unique_bytes: Option<u64>,
}

/// What `apply` did, or would do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplyOutcome {
    pub policy: String,
    pub dry_run: bool,
    /// The objects it is now applied to (or would be).
    pub objects: Vec<String>,
    /// What retention deletes (dry run: would delete).
    pub deletes: Vec<RetentionVictim>,
    /// The bytes those snapshots hold alone (at least what deleting frees).
    pub bytes_freed: u64,
    /// The retention jobs started (none in a dry run).
    pub jobs: Vec<String>,
}

/// One scheduled slot of one object: run, or skipped, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRun {
    pub object: String,
    /// `snapsync`, `vdb_snapshot`, `refresh`, `retention`, `expiry`,
    /// `expiry_warning` or `bookmark_expiry`.
    pub kind: String,
    pub policy: Option<String>,
    /// The slot's time (UTC).
    pub slot: String,
    /// `started`, `skipped`; `warned` (an expiry warning), `deleted` (an
    /// expired bookmark).
    pub outcome: String,
    pub job: Option<String>,
    pub reason: Option<String>,
    pub at: String,
}

/// What one scheduling pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchedulerPass {
    pub now: String,
    pub runs: Vec<ScheduleRun>,
}

/// `POST /api/v1/test-clock`: only on an engine started with `--test-clock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetTestClock {
    /// RFC 3339.
    pub now: String,
}

/// A name on a snapshot, usable wherever a snapshot is (`tree@NAME`,
/// `rewind --to NAME`), which pins it against retention until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bookmark {
    /// `BOOKMARK-<n>`.
    pub reference: String,
    /// Unique within its dSource or VDB.
    pub name: String,
    /// `SNAPSHOT-<n>`.
    pub snapshot: String,
    /// The dSource or VDB (`DSOURCE-<n>`, `VDB-<n>`).
    pub object: String,
    /// Its name.
    pub object_name: String,
    /// After this (RFC 3339, UTC) it no longer pins and is removed.
    pub expires_at: Option<String>,
    /// Whether it has expired (by the engine's clock) and awaits removal.
    pub expired: bool,
    pub created_at: String,
}

/// `POST /api/v1/bookmarks`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddBookmark {
    pub name: String,
    /// `SNAPSHOT-<n>`; or a dSource or VDB for its latest snapshot; or
    /// `DATASET@SNAPSHOT-<n>`.
    pub snapshot: String,
    /// RFC 3339. At most one of `expires_at` and `expires_in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// A duration from now (`7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// A VDB's deletion protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Protection {
    /// RFC 3339; none: until unprotected.
    pub until: Option<String>,
}

/// `POST /api/v1/vdbs/{vdb}/protection` (none of the two: until unprotected).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProtectVdb {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// A duration from now (`1d`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "for")]
    pub for_: Option<String>,
}

/// `PUT /api/v1/vdbs/{vdb}/expiry`: exactly one of the two.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExpireVdb {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A duration from now (`2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}
