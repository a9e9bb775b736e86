//! Vocabulary types of the Doppel engine, in the words of the design: plugins,
//! environments, dSources, VDBs, snapshots, jobs.
//!
//! Architecture invariant: this crate does no I/O and depends on no other
//! Doppel crate; every other crate may depend on it.

pub mod dataset;
pub mod environment;
pub mod error;
pub mod job;
pub mod plugin;
pub mod policy;
pub mod user;
pub mod webhook;

pub use dataset::{
    CreateEmptyVdb, DSource, ExportSnapshot, LinkDSource, Mount, MountRequest, ProvisionVdb,
    Snapshot, Vdb,
};
pub use environment::{
    AddEnvironment, AddEnvironmentUser, AddSourceConfig, Environment, EnvironmentUser, Repository,
    SourceConfig, UserCredentials,
};
pub use error::{ApiError, ErrorCode};
pub use job::{EventLevel, Job, JobEvent, JobFilter, JobState};
pub use plugin::{PluginKind, PluginLogLevel, PluginLogLine, PluginSummary};
pub use policy::{
    AddBookmark, AppliedTo, ApplyOutcome, ApplyPolicy, Bookmark, ExpireVdb, Policy, PolicySpec,
    ProtectVdb, Protection, Retention, RetentionVictim, Schedule, ScheduleRun, SchedulerPass,
    SetTestClock, SnapSync,
};
pub use user::{
    AddUser, ApiUser, Grant, GrantRequest, LoginRequest, LoginResponse, Right, Role, SetRole,
};
pub use webhook::{AddWebhook, Webhook, WebhookDelivery, WebhookEvent, EVENT_KINDS};
