//! Every plugin operation of the contract (§2.3), as data: which wrapper
//! method it is, which request message it takes, which manifest flag says
//! the plugin implements it, and how long it may take.
//!
//! The rest of the engine names operations only through [`Operation`], so a
//! typo in a method name cannot reach a worker.

use doppel_model::PluginKind;
use serde::Serialize;

/// How long an operation may run before its worker is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineClass {
    /// Questions that should answer at once: mount specifications, status, sizes.
    Short,
    /// Discovery, configure, start/stop and other bounded work.
    Normal,
    /// Data movement: pre/post snapshot, source-to-physical.
    Long,
}

/// Which kind of dSource an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    Any,
    Only(PluginKind),
}

/// An operation of the contract, named so that a typo cannot compile; its
/// data is [`Op::spec`]. Variants are in the order of [`ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    DiscoveryRepository,
    DiscoverySourceConfig,
    DirectPreSnapshot,
    DirectPostSnapshot,
    DirectSourceSize,
    DirectPreSourceToPhysical,
    DirectSourceToPhysical,
    StagedPreSnapshot,
    StagedPostSnapshot,
    StartStaging,
    StopStaging,
    StagedStatus,
    StagedWorker,
    StagedMountSpecification,
    StagedSourceSize,
    StagedPreSourceToPhysical,
    StagedSourceToPhysical,
    Configure,
    Unconfigure,
    Reconfigure,
    Cleanup,
    Start,
    Stop,
    VirtualPreSnapshot,
    VirtualPostSnapshot,
    VirtualStatus,
    Initialize,
    VirtualMountSpecification,
    VirtualSourceSize,
    VirtualPreSourceToPhysical,
    VirtualSourceToPhysical,
    UpgradeRepository,
    UpgradeSourceConfig,
    UpgradeLinkedSource,
    UpgradeVirtualSource,
    UpgradeSnapshot,
}

impl Op {
    /// The operation's entry in [`ALL`].
    pub fn spec(self) -> &'static Operation {
        &ALL[self as usize]
    }

    /// `group.method`, the name users and logs see.
    pub fn name(self) -> String {
        self.spec().name()
    }
}

/// One operation a plugin may implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    pub id: Op,
    /// `discovery`, `linked`, `virtual` or `upgrade`.
    pub group: &'static str,
    /// The wrapper method is `_internal_<method>`.
    pub method: &'static str,
    /// The `platform_pb2` request message.
    pub request_type: &'static str,
    /// The `manifest` flag that says the plugin implements it; `None` for
    /// operations every plugin object has (upgrades).
    pub manifest_flag: Option<&'static str>,
    pub deadline: DeadlineClass,
    pub applies: Applies,
}

impl Operation {
    /// `group.method`, the name users and logs see.
    pub fn name(&self) -> String {
        format!("{}.{}", self.group, self.method)
    }

    /// Looks an operation up by its `group.method` name.
    pub fn find(name: &str) -> Option<&'static Operation> {
        let (group, method) = name.split_once('.')?;
        ALL.iter()
            .find(|op| op.group == group && op.method == method)
    }

    /// Whether a plugin with this manifest implements the operation.
    pub fn implemented_by(&self, manifest: &serde_json::Value, kind: PluginKind) -> bool {
        if let Applies::Only(k) = self.applies {
            if k != kind {
                return false;
            }
        }
        match self.manifest_flag {
            None => true,
            Some(flag) => manifest
                .get(flag)
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        }
    }
}

const fn op(
    id: Op,
    group: &'static str,
    method: &'static str,
    request_type: &'static str,
    manifest_flag: Option<&'static str>,
    deadline: DeadlineClass,
    applies: Applies,
) -> Operation {
    Operation {
        id,
        group,
        method,
        request_type,
        manifest_flag,
        deadline,
        applies,
    }
}

use Applies::{Any, Only};
use DeadlineClass::{Long, Normal, Short};
const STAGED: Applies = Only(PluginKind::Staged);
const DIRECT: Applies = Only(PluginKind::Direct);

/// The whole contract, in the order of §2.3.
pub const ALL: &[Operation] = &[
    op(
        Op::DiscoveryRepository,
        "discovery",
        "repository",
        "RepositoryDiscoveryRequest",
        Some("hasRepositoryDiscovery"),
        Normal,
        Any,
    ),
    op(
        Op::DiscoverySourceConfig,
        "discovery",
        "source_config",
        "SourceConfigDiscoveryRequest",
        Some("hasSourceConfigDiscovery"),
        Normal,
        Any,
    ),
    op(
        Op::DirectPreSnapshot,
        "linked",
        "direct_pre_snapshot",
        "DirectPreSnapshotRequest",
        Some("hasLinkedPreSnapshot"),
        Long,
        DIRECT,
    ),
    op(
        Op::DirectPostSnapshot,
        "linked",
        "direct_post_snapshot",
        "DirectPostSnapshotRequest",
        Some("hasLinkedPostSnapshot"),
        Long,
        DIRECT,
    ),
    op(
        Op::DirectSourceSize,
        "linked",
        "direct_source_size",
        "DirectSourceSizeRequest",
        Some("hasLinkedSourceSize"),
        Short,
        DIRECT,
    ),
    op(
        Op::DirectPreSourceToPhysical,
        "linked",
        "direct_pre_source_to_physical",
        "DirectPreSourceToPhysicalRequest",
        Some("hasLinkedPreSourceToPhysical"),
        Long,
        DIRECT,
    ),
    op(
        Op::DirectSourceToPhysical,
        "linked",
        "direct_source_to_physical",
        "DirectSourceToPhysicalRequest",
        Some("hasLinkedSourceToPhysical"),
        Long,
        DIRECT,
    ),
    op(
        Op::StagedPreSnapshot,
        "linked",
        "staged_pre_snapshot",
        "StagedPreSnapshotRequest",
        Some("hasLinkedPreSnapshot"),
        Long,
        STAGED,
    ),
    op(
        Op::StagedPostSnapshot,
        "linked",
        "staged_post_snapshot",
        "StagedPostSnapshotRequest",
        Some("hasLinkedPostSnapshot"),
        Long,
        STAGED,
    ),
    op(
        Op::StartStaging,
        "linked",
        "start_staging",
        "StartStagingRequest",
        Some("hasLinkedStartStaging"),
        Normal,
        STAGED,
    ),
    op(
        Op::StopStaging,
        "linked",
        "stop_staging",
        "StopStagingRequest",
        Some("hasLinkedStopStaging"),
        Normal,
        STAGED,
    ),
    op(
        Op::StagedStatus,
        "linked",
        "status",
        "StagedStatusRequest",
        Some("hasLinkedStatus"),
        Short,
        STAGED,
    ),
    op(
        Op::StagedWorker,
        "linked",
        "worker",
        "StagedWorkerRequest",
        Some("hasLinkedWorker"),
        Normal,
        STAGED,
    ),
    op(
        Op::StagedMountSpecification,
        "linked",
        "mount_specification",
        "StagedMountSpecRequest",
        Some("hasLinkedMountSpecification"),
        Short,
        STAGED,
    ),
    op(
        Op::StagedSourceSize,
        "linked",
        "staged_source_size",
        "StagedSourceSizeRequest",
        Some("hasLinkedSourceSize"),
        Short,
        STAGED,
    ),
    op(
        Op::StagedPreSourceToPhysical,
        "linked",
        "staged_pre_source_to_physical",
        "StagedPreSourceToPhysicalRequest",
        Some("hasLinkedPreSourceToPhysical"),
        Long,
        STAGED,
    ),
    op(
        Op::StagedSourceToPhysical,
        "linked",
        "staged_source_to_physical",
        "StagedSourceToPhysicalRequest",
        Some("hasLinkedSourceToPhysical"),
        Long,
        STAGED,
    ),
    op(
        Op::Configure,
        "virtual",
        "configure",
        "ConfigureRequest",
        Some("hasVirtualConfigure"),
        Normal,
        Any,
    ),
    op(
        Op::Unconfigure,
        "virtual",
        "unconfigure",
        "UnconfigureRequest",
        Some("hasVirtualUnconfigure"),
        Normal,
        Any,
    ),
    op(
        Op::Reconfigure,
        "virtual",
        "reconfigure",
        "ReconfigureRequest",
        Some("hasVirtualReconfigure"),
        Normal,
        Any,
    ),
    op(
        Op::Cleanup,
        "virtual",
        "cleanup",
        "VirtualCleanupRequest",
        Some("hasVirtualCleanup"),
        Normal,
        Any,
    ),
    op(
        Op::Start,
        "virtual",
        "start",
        "StartRequest",
        Some("hasVirtualStart"),
        Normal,
        Any,
    ),
    op(
        Op::Stop,
        "virtual",
        "stop",
        "StopRequest",
        Some("hasVirtualStop"),
        Normal,
        Any,
    ),
    op(
        Op::VirtualPreSnapshot,
        "virtual",
        "pre_snapshot",
        "VirtualPreSnapshotRequest",
        Some("hasVirtualPreSnapshot"),
        Long,
        Any,
    ),
    op(
        Op::VirtualPostSnapshot,
        "virtual",
        "post_snapshot",
        "VirtualPostSnapshotRequest",
        Some("hasVirtualPostSnapshot"),
        Long,
        Any,
    ),
    op(
        Op::VirtualStatus,
        "virtual",
        "status",
        "VirtualStatusRequest",
        Some("hasVirtualStatus"),
        Short,
        Any,
    ),
    op(
        Op::Initialize,
        "virtual",
        "initialize",
        "InitializeRequest",
        Some("hasInitialize"),
        Normal,
        Any,
    ),
    op(
        Op::VirtualMountSpecification,
        "virtual",
        "mount_specification",
        "VirtualMountSpecRequest",
        Some("hasVirtualMountSpecification"),
        Short,
        Any,
    ),
    op(
        Op::VirtualSourceSize,
        "virtual",
        "virtual_source_size",
        "VirtualSourceSizeRequest",
        Some("hasVirtualSourceSize"),
        Short,
        Any,
    ),
    op(
        Op::VirtualPreSourceToPhysical,
        "virtual",
        "virtual_pre_source_to_physical",
        "VirtualPreSourceToPhysicalRequest",
        Some("hasVirtualPreSourceToPhysical"),
        Long,
        Any,
    ),
    op(
        Op::VirtualSourceToPhysical,
        "virtual",
        "virtual_source_to_physical",
        "VirtualSourceToPhysicalRequest",
        Some("hasVirtualSourceToPhysical"),
        Long,
        Any,
    ),
    op(
        Op::UpgradeRepository,
        "upgrade",
        "repository",
        "UpgradeRequest",
        None,
        Normal,
        Any,
    ),
    op(
        Op::UpgradeSourceConfig,
        "upgrade",
        "source_config",
        "UpgradeRequest",
        None,
        Normal,
        Any,
    ),
    op(
        Op::UpgradeLinkedSource,
        "upgrade",
        "linked_source",
        "UpgradeRequest",
        None,
        Normal,
        Any,
    ),
    op(
        Op::UpgradeVirtualSource,
        "upgrade",
        "virtual_source",
        "UpgradeRequest",
        None,
        Normal,
        Any,
    ),
    op(
        Op::UpgradeSnapshot,
        "upgrade",
        "snapshot",
        "UpgradeRequest",
        None,
        Normal,
        Any,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker's own `OPERATIONS` table, read from the embedded script:
    /// (group, method, request type) for each entry.
    fn worker_table() -> std::collections::BTreeSet<(String, String, String)> {
        let script = crate::host::WORKER_SCRIPT;
        let start = script
            .find("\nOPERATIONS = {\n")
            .expect("the worker defines OPERATIONS");
        let body = &script[start + "\nOPERATIONS = {\n".len()..];
        let body = &body[..body.find("\n}\n").expect("OPERATIONS ends")];
        let unquote = |t: &str| t.trim().trim_end_matches(',').trim_matches('"').to_owned();
        let mut group = String::new();
        let mut out = std::collections::BTreeSet::new();
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(g) = line.strip_suffix(": {") {
                group = unquote(g);
            } else if let Some((method, request)) = line.split_once(':') {
                out.insert((group.clone(), unquote(method), unquote(request)));
            } else {
                assert!(
                    line.starts_with('}'),
                    "unexpected line in OPERATIONS: {line}"
                );
            }
        }
        out
    }

    #[test]
    fn the_worker_accepts_exactly_these_operations() {
        let ours: std::collections::BTreeSet<_> = ALL
            .iter()
            .map(|o| {
                (
                    o.group.to_owned(),
                    o.method.to_owned(),
                    o.request_type.to_owned(),
                )
            })
            .collect();
        let worker = worker_table();
        assert!(
            worker.len() > 20,
            "parsed too little of OPERATIONS: {worker:?}"
        );
        let only_ours: Vec<_> = ours.difference(&worker).collect();
        let only_worker: Vec<_> = worker.difference(&ours).collect();
        assert!(
            only_ours.is_empty() && only_worker.is_empty(),
            "operations.rs and doppel_worker.py disagree; only in Rust: {only_ours:?}; only in the worker: {only_worker:?}"
        );
    }

    #[test]
    fn each_op_is_its_own_entry() {
        for (i, o) in ALL.iter().enumerate() {
            assert_eq!(o.id as usize, i, "{} is out of place", o.name());
            assert_eq!(o.id.spec(), o);
        }
        assert_eq!(
            Op::StagedMountSpecification.name(),
            "linked.mount_specification"
        );
        assert_eq!(Op::UpgradeSnapshot as usize + 1, ALL.len());
    }

    #[test]
    fn names_are_unique_and_found() {
        let mut names: Vec<String> = ALL.iter().map(|o| o.name()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(
            Operation::find("linked.staged_pre_snapshot")
                .unwrap()
                .request_type,
            "StagedPreSnapshotRequest"
        );
        assert!(Operation::find("linked.nope").is_none());
        assert!(Operation::find("nodot").is_none());
    }

    #[test]
    fn kind_and_manifest_decide_implementation() {
        let manifest = serde_json::json!({"hasLinkedPreSnapshot": true, "hasVirtualStatus": false});
        let staged_pre = Operation::find("linked.staged_pre_snapshot").unwrap();
        assert!(staged_pre.implemented_by(&manifest, PluginKind::Staged));
        assert!(!staged_pre.implemented_by(&manifest, PluginKind::Direct));
        assert!(!Operation::find("virtual.status")
            .unwrap()
            .implemented_by(&manifest, PluginKind::Staged));
        assert!(Operation::find("upgrade.snapshot")
            .unwrap()
            .implemented_by(&manifest, PluginKind::Direct));
    }
}
