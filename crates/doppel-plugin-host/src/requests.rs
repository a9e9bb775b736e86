//! The typed seam between the engine and plugin operations: the engine
//! describes what an operation is about ([`Request`]: connection,
//! repository, source config, the linked, virtual or physical source with
//! its mounts, snapshot, snapshot parameters), this module builds the
//! operation's request message from it, and reads results back ([`Reply`]).
//!
//! The message of each operation takes only its own fields (the worker's
//! `ParseDict` refuses unknown ones), so one `Request` per object serves
//! all of that object's operations. What differs between SDK generations
//! (PYTHON27 plugins of dvp 0.3 to 3.x against PYTHON311 ones) is decided
//! here and nowhere else: see [`Generation`].

use serde_json::{json, Map, Value};

use crate::artifact::Language;
use crate::error::InvokeError;
use crate::operations::Op;

/// A host as plugins see it (`RemoteHost`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteHost {
    pub name: String,
    pub reference: String,
    pub binary_path: String,
    pub scratch_path: String,
}

/// An environment as plugins see it (`RemoteEnvironment`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteEnvironment {
    pub name: String,
    pub reference: String,
    pub host: RemoteHost,
}

/// An environment user as plugins see it (`RemoteUser`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteUser {
    pub name: String,
    pub reference: String,
}

/// Where a plugin's `run_bash` and friends run (`RemoteConnection`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteConnection {
    pub environment: RemoteEnvironment,
    pub user: RemoteUser,
}

/// A dataset mounted on a host, as a request describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mount {
    pub environment: RemoteEnvironment,
    pub mount_path: String,
    /// The subdirectory of the dataset mounted there; None: its top.
    pub shared_path: Option<String>,
}

/// A staged dSource (`StagedLinkedSource`).
#[derive(Debug, Clone, PartialEq)]
pub struct StagedSource {
    pub guid: String,
    pub parameters: Value,
    pub source_connection: RemoteConnection,
    pub staged_connection: RemoteConnection,
    /// The staging mount, once there is one.
    pub mount: Option<Mount>,
}

/// A direct dSource (`DirectLinkedSource`).
#[derive(Debug, Clone, PartialEq)]
pub struct DirectSource {
    pub guid: String,
    pub parameters: Value,
    pub connection: RemoteConnection,
}

/// A VDB (`VirtualSource`).
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualSource {
    pub guid: String,
    pub parameters: Value,
    pub connection: RemoteConnection,
    pub mounts: Vec<Mount>,
}

/// The target of a V2P (`PhysicalSource`).
#[derive(Debug, Clone, PartialEq)]
pub struct PhysicalSource {
    pub guid: String,
    pub connection: RemoteConnection,
    pub target_directory: String,
    pub parameters: Value,
}

/// What an operation works on: a dSource of either kind or a VDB.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Boxed: two connections and a mount make it the largest by far.
    Staged(Box<StagedSource>),
    Direct(DirectSource),
    Virtual(VirtualSource),
}

/// Everything an operation may be about; each operation's message takes
/// the fields it has (see [`fields`]). A field the message needs and the
/// request lacks is an engine bug, reported as such before any call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The connection discovery runs on (`source_connection`).
    pub connection: Option<RemoteConnection>,
    pub repository: Option<Value>,
    pub source_config: Option<Value>,
    pub source: Option<Source>,
    /// The metadata of the snapshot the operation is about.
    pub snapshot: Option<Value>,
    /// A sync's snapshot parameters: `Some(Value::Null)` is a policy sync.
    pub snapshot_parameters: Option<Value>,
    pub physical_source: Option<PhysicalSource>,
    /// Unconfigure only: whether the VDB is being deleted.
    pub delete_flag: Option<bool>,
}

/// One top-level field of an operation's request message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    SourceConnection,
    Repository,
    SourceConfig,
    StagedSource,
    DirectSource,
    VirtualSource,
    Snapshot,
    SnapshotParameters,
    PhysicalSource,
    DeleteFlag,
}

/// The fields of `op`'s request message (`platform_pb2`), in the order
/// the engine has always sent them. Upgrades take a message the plugin
/// upgrade builds itself: no fields here.
pub fn fields(op: Op) -> &'static [Field] {
    use Field::*;
    match op {
        Op::DiscoveryRepository => &[SourceConnection],
        Op::DiscoverySourceConfig => &[SourceConnection, Repository],
        Op::DirectPreSnapshot | Op::DirectPostSnapshot => {
            &[Repository, SourceConfig, SnapshotParameters, DirectSource]
        }
        Op::StagedPreSnapshot | Op::StagedPostSnapshot => {
            &[Repository, SourceConfig, SnapshotParameters, StagedSource]
        }
        Op::DirectSourceSize => &[Repository, SourceConfig, DirectSource],
        Op::StartStaging
        | Op::StopStaging
        | Op::StagedStatus
        | Op::StagedWorker
        | Op::StagedSourceSize => &[Repository, SourceConfig, StagedSource],
        Op::StagedMountSpecification => &[Repository, StagedSource],
        Op::DirectPreSourceToPhysical | Op::DirectSourceToPhysical => &[
            Repository,
            SourceConfig,
            DirectSource,
            Snapshot,
            PhysicalSource,
        ],
        Op::StagedPreSourceToPhysical | Op::StagedSourceToPhysical => &[
            Repository,
            SourceConfig,
            StagedSource,
            Snapshot,
            PhysicalSource,
        ],
        Op::VirtualPreSourceToPhysical | Op::VirtualSourceToPhysical => &[
            Repository,
            SourceConfig,
            VirtualSource,
            Snapshot,
            PhysicalSource,
        ],
        Op::Configure => &[Repository, Snapshot, VirtualSource],
        Op::Reconfigure => &[Repository, Snapshot, SourceConfig, VirtualSource],
        Op::Unconfigure => &[Repository, SourceConfig, VirtualSource, DeleteFlag],
        Op::Initialize | Op::VirtualMountSpecification => &[Repository, VirtualSource],
        Op::Cleanup
        | Op::Start
        | Op::Stop
        | Op::VirtualPreSnapshot
        | Op::VirtualPostSnapshot
        | Op::VirtualStatus
        | Op::VirtualSourceSize => &[Repository, SourceConfig, VirtualSource],
        Op::UpgradeRepository
        | Op::UpgradeSourceConfig
        | Op::UpgradeLinkedSource
        | Op::UpgradeVirtualSource
        | Op::UpgradeSnapshot => &[],
    }
}

/// The SDK generation a plugin was built with, from its language: the one
/// place that knows how older plugins' messages differ.
///
/// - PYTHON27 (dvp 0.3 to 3.x, buildApi up to 1.5): a staged mount
///   specification answers with the single `staged_mount` (no `mounts`
///   list); operations added later are absent from the manifest (read as
///   false when the artifact is parsed, so they are never called).
/// - PYTHON311 (dvp 5.x, buildApi 1.11): `mounts` may carry the staged
///   mount; `staged_mount` is still read first when the plugin sets it.
///
/// Request shapes that differ (such as the snapshot parameters a policy
/// sync sends) belong in [`Request::message`], which is given the
/// generation for that reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    Python27,
    Python311,
}

impl From<Language> for Generation {
    fn from(l: Language) -> Self {
        match l {
            Language::Python27 => Generation::Python27,
            Language::Python311 => Generation::Python311,
        }
    }
}

/// A plugin-defined object as messages carry it (`{"json": "..."}`).
fn pdo(v: &Value) -> Value {
    json!({"json": v.to_string()})
}

fn host_json(h: &RemoteHost) -> Value {
    json!({"name": h.name, "reference": h.reference, "binary_path": h.binary_path, "scratch_path": h.scratch_path})
}

fn environment_json(e: &RemoteEnvironment) -> Value {
    json!({"name": e.name, "reference": e.reference, "host": host_json(&e.host)})
}

fn connection_json(c: &RemoteConnection) -> Value {
    json!({"environment": environment_json(&c.environment),
           "user": {"name": c.user.name, "reference": c.user.reference}})
}

fn mount_json(m: &Mount) -> Value {
    let mut v =
        json!({"remote_environment": environment_json(&m.environment), "mount_path": m.mount_path});
    if let Some(shared) = m.shared_path.as_deref().filter(|s| !s.is_empty()) {
        v["shared_path"] = json!(shared);
    }
    v
}

fn source_json(field: Field, source: &Source) -> Option<Value> {
    match (field, source) {
        (Field::StagedSource, Source::Staged(s)) => {
            let mut v = json!({
                "linked_source": {"guid": s.guid, "parameters": pdo(&s.parameters)},
                "source_connection": connection_json(&s.source_connection),
                "staged_connection": connection_json(&s.staged_connection),
            });
            if let Some(m) = &s.mount {
                v["staged_mount"] = mount_json(m);
            }
            Some(v)
        }
        (Field::DirectSource, Source::Direct(d)) => Some(json!({
            "connection": connection_json(&d.connection),
            "linked_source": {"guid": d.guid, "parameters": pdo(&d.parameters)},
        })),
        (Field::VirtualSource, Source::Virtual(v)) => Some(json!({
            "guid": v.guid,
            "connection": connection_json(&v.connection),
            "parameters": pdo(&v.parameters),
            "mounts": v.mounts.iter().map(mount_json).collect::<Vec<_>>(),
        })),
        _ => None,
    }
}

impl Request {
    /// `op`'s request message as proto JSON, for a plugin of `generation`.
    pub fn message(&self, op: Op, _generation: Generation) -> Result<Value, InvokeError> {
        let mut out = Map::new();
        for &field in fields(op) {
            let (key, value) = match field {
                Field::SourceConnection => (
                    "source_connection",
                    self.connection.as_ref().map(connection_json),
                ),
                Field::Repository => (
                    "repository",
                    self.repository.as_ref().map(|r| json!({"parameters": pdo(r)})),
                ),
                Field::SourceConfig => (
                    "source_config",
                    self.source_config
                        .as_ref()
                        .map(|c| json!({"parameters": pdo(c)})),
                ),
                Field::StagedSource => (
                    "staged_source",
                    self.source.as_ref().and_then(|s| source_json(field, s)),
                ),
                Field::DirectSource => (
                    "direct_source",
                    self.source.as_ref().and_then(|s| source_json(field, s)),
                ),
                Field::VirtualSource => (
                    "virtual_source",
                    self.source.as_ref().and_then(|s| source_json(field, s)),
                ),
                Field::Snapshot => (
                    "snapshot",
                    self.snapshot.as_ref().map(|m| json!({"parameters": pdo(m)})),
                ),
                Field::SnapshotParameters => (
                    "snapshot_parameters",
                    self.snapshot_parameters
                        .as_ref()
                        .map(|p| json!({"parameters": pdo(p)})),
                ),
                Field::PhysicalSource => (
                    "physical_source",
                    self.physical_source.as_ref().map(|p| {
                        json!({"guid": p.guid, "connection": connection_json(&p.connection),
                               "target_directory": p.target_directory, "parameters": pdo(&p.parameters)})
                    }),
                ),
                // proto JSON accepts the json_name of `delete_flag`.
                Field::DeleteFlag => ("deleteFlag", self.delete_flag.map(Value::Bool)),
            };
            let value = value.ok_or_else(|| {
                InvokeError::Protocol(format!(
                    "the engine built {} without its {key}",
                    op.spec().request_type
                ))
            })?;
            out.insert(key.to_owned(), value);
        }
        Ok(Value::Object(out))
    }
}

/// Where the plugin wants a dataset mounted (a mount specification).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountSpecification {
    pub mounts: Vec<Mount>,
    /// `ownership_spec`: uid and gid for the mount's top.
    pub owner: Option<(u32, u32)>,
}

/// A plugin-defined object in a result that is not JSON.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotJson(String);

/// What an operation returned (its `return_value`), read for the engine.
#[derive(Debug, Clone)]
pub struct Reply {
    value: Value,
    generation: Generation,
}

/// The snapshot parameters of a sync the user gave none for. Published
/// plugins read `snapshot_parameters.resync` unguarded, so a plugin whose
/// snapshot parameters schema has `resync` gets `{"resync": <resync>}`,
/// never null; one without it gets null (the SDK's "no parameters").
pub fn default_snapshot_parameters(plugin_definition: &Value, resync: bool) -> Value {
    if plugin_definition
        .pointer("/snapshotParametersDefinition/schema/properties/resync")
        .is_some()
    {
        json!({ "resync": resync })
    } else {
        Value::Null
    }
}

/// One upgrade migration run over every stored object of one kind: the
/// objects' JSON texts by reference, the object type the SDK names
/// (`repository`, `sourceConfig`, ...) and the new build's migration ids
/// to run, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct UpgradeRequest<'a> {
    pub object_type: &'a str,
    pub pre_upgrade_parameters: &'a std::collections::BTreeMap<String, String>,
    pub migration_ids: &'a [String],
}

impl UpgradeRequest<'_> {
    /// The `UpgradeRequest` message of `platform_pb2`.
    pub fn message(&self) -> Value {
        json!({
            "pre_upgrade_parameters": self.pre_upgrade_parameters,
            "type": self.object_type,
            "migration_ids": self.migration_ids,
        })
    }

    /// The migrated JSON texts by reference, from an upgrade's result.
    pub fn post_upgrade_parameters(
        reply: &Value,
    ) -> Result<std::collections::BTreeMap<String, String>, serde_json::Error> {
        serde_json::from_value(reply["post_upgrade_parameters"].clone())
    }
}

fn mount_from(m: &Value) -> Mount {
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Mount {
        environment: RemoteEnvironment {
            name: s(m, "/remote_environment/name"),
            reference: s(m, "/remote_environment/reference"),
            host: RemoteHost {
                name: s(m, "/remote_environment/host/name"),
                reference: s(m, "/remote_environment/host/reference"),
                binary_path: s(m, "/remote_environment/host/binary_path"),
                scratch_path: s(m, "/remote_environment/host/scratch_path"),
            },
        },
        mount_path: s(m, "/mount_path"),
        shared_path: m["shared_path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
    }
}

/// A plugin-defined object's JSON text, parsed; None when it is absent.
fn parsed(v: Option<&Value>) -> Option<Result<Value, NotJson>> {
    let text = v?.as_str()?;
    Some(serde_json::from_str(text).map_err(|e| NotJson(e.to_string())))
}

impl Reply {
    pub fn new(value: Value, generation: Generation) -> Self {
        Reply { value, generation }
    }

    /// The `return_value` as proto JSON.
    pub fn raw(&self) -> &Value {
        &self.value
    }

    fn owner(&self) -> Option<(u32, u32)> {
        self.value
            .get("ownership_spec")
            .and_then(|o| Some((o["uid"].as_u64()? as u32, o["gid"].as_u64()? as u32)))
    }

    /// A VDB's mount specification: every entry of `mounts`.
    pub fn virtual_mounts(&self) -> MountSpecification {
        MountSpecification {
            mounts: self.value["mounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(mount_from)
                .collect(),
            owner: self.owner(),
        }
    }

    /// A staged dSource's mount specification: its one staging mount, if
    /// the plugin gave one.
    pub fn staged_mount(&self) -> MountSpecification {
        let single = self
            .value
            .get("staged_mount")
            .filter(|m| m.get("mount_path").is_some());
        let mount = match self.generation {
            Generation::Python27 => single,
            Generation::Python311 => single.or_else(|| self.value["mounts"].get(0)),
        };
        MountSpecification {
            mounts: mount.map(mount_from).into_iter().collect(),
            owner: self.owner(),
        }
    }

    /// The metadata of a post_snapshot's `snapshot`.
    pub fn snapshot_metadata(&self) -> Option<Result<Value, NotJson>> {
        parsed(self.value.pointer("/snapshot/parameters/json"))
    }

    /// The `source_config` of configure, reconfigure or initialize.
    pub fn source_config(&self) -> Option<Result<Value, NotJson>> {
        parsed(self.value.pointer("/source_config/parameters/json"))
    }

    /// A status answer's `status` (`ACTIVE`, `INACTIVE`), if set.
    pub fn status(&self) -> Option<&str> {
        self.value["status"].as_str()
    }

    /// A source size answer's `database_size` in bytes.
    pub fn database_size(&self) -> Option<u64> {
        // uint64 travels as a string in proto JSON.
        let size = &self.value["database_size"];
        size.as_str().and_then(|s| s.parse().ok()).or(size.as_u64())
    }

    /// The parameters of each discovered object under `key`
    /// (`repositories`, `source_configs`); a missing one is `null`.
    fn discovered(&self, key: &str) -> Vec<Result<Value, NotJson>> {
        self.value[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| parsed(o.pointer("/parameters/json")).unwrap_or(Ok(Value::Null)))
            .collect()
    }

    /// Repository discovery's repositories.
    pub fn repositories(&self) -> Vec<Result<Value, NotJson>> {
        self.discovered("repositories")
    }

    /// Source config discovery's source configs.
    pub fn source_configs(&self) -> Vec<Result<Value, NotJson>> {
        self.discovered("source_configs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(n: &str) -> RemoteConnection {
        RemoteConnection {
            environment: RemoteEnvironment {
                name: n.into(),
                reference: format!("UNIX_HOST_ENVIRONMENT-{n}"),
                host: RemoteHost {
                    name: "h".into(),
                    reference: "UNIX_HOST-1".into(),
                    binary_path: "/tk".into(),
                    scratch_path: "/s".into(),
                },
            },
            user: RemoteUser {
                name: "u".into(),
                reference: "HOST_USER-1".into(),
            },
        }
    }

    fn staged() -> Request {
        Request {
            repository: Some(json!({"r": 1})),
            source_config: Some(json!({"path": "/d"})),
            source: Some(Source::Staged(Box::new(StagedSource {
                guid: "DSOURCE-1".into(),
                parameters: json!({}),
                source_connection: conn("1"),
                staged_connection: conn("2"),
                mount: None,
            }))),
            snapshot_parameters: Some(Value::Null),
            ..Default::default()
        }
    }

    #[test]
    fn each_message_takes_only_its_fields() {
        let r = staged();
        let m = r
            .message(Op::StagedMountSpecification, Generation::Python311)
            .unwrap();
        let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["repository", "staged_source"]);
        let m = r
            .message(Op::StagedPreSnapshot, Generation::Python311)
            .unwrap();
        assert_eq!(
            m["snapshot_parameters"],
            json!({"parameters": {"json": "null"}})
        );
        assert_eq!(
            m["source_config"]["parameters"]["json"],
            "{\"path\":\"/d\"}"
        );
        assert!(m["staged_source"].get("staged_mount").is_none());
    }

    #[test]
    fn a_missing_input_is_refused_naming_it() {
        let err = staged()
            .message(Op::Configure, Generation::Python311)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("ConfigureRequest without its snapshot"),
            "{err}"
        );
        let err = staged()
            .message(Op::DirectPreSnapshot, Generation::Python311)
            .unwrap_err();
        assert!(err.to_string().contains("direct_source"), "{err}");
    }

    #[test]
    fn each_operation_has_its_message_fields() {
        for o in crate::operations::ALL {
            let f = fields(o.id);
            assert_eq!(
                f.is_empty(),
                o.group == "upgrade",
                "{} has fields {f:?}",
                o.name()
            );
        }
    }

    #[test]
    fn older_plugins_give_the_single_staged_mount() {
        let list =
            json!({"mounts": [{"remote_environment": {"reference": "E-1"}, "mount_path": "/m"}]});
        assert_eq!(
            Reply::new(list.clone(), Generation::Python311)
                .staged_mount()
                .mounts[0]
                .mount_path,
            "/m"
        );
        assert!(Reply::new(list, Generation::Python27)
            .staged_mount()
            .mounts
            .is_empty());
        let single = json!({"staged_mount": {"remote_environment": {"reference": "E-1"}, "mount_path": "/s"},
                            "ownership_spec": {"uid": 5, "gid": 6}});
        for g in [Generation::Python27, Generation::Python311] {
            let spec = Reply::new(single.clone(), g).staged_mount();
            assert_eq!(spec.mounts[0].mount_path, "/s");
            assert_eq!(spec.owner, Some((5, 6)));
        }
    }

    #[test]
    fn results_are_read_with_their_proto_json_types() {
        let r = Reply::new(
            json!({"database_size": "12", "snapshot": {"parameters": {"json": "{\"a\":1}"}},
                   "source_config": {"parameters": {"json": "nope"}}}),
            Generation::Python311,
        );
        assert_eq!(r.database_size(), Some(12));
        assert_eq!(r.snapshot_metadata().unwrap().unwrap(), json!({"a": 1}));
        assert!(r.source_config().unwrap().is_err());
        assert!(r.status().is_none());
    }

    #[test]
    fn a_plain_sync_says_resync_false_where_the_schema_has_it() {
        let with = json!({"snapshotParametersDefinition": {"schema": {
            "type": "object", "properties": {"resync": {"type": "boolean"}}}}});
        assert_eq!(
            default_snapshot_parameters(&with, false),
            json!({"resync": false})
        );
        assert_eq!(
            default_snapshot_parameters(&with, true),
            json!({"resync": true})
        );
        assert_eq!(default_snapshot_parameters(&json!({}), false), Value::Null);
    }

    #[test]
    fn an_upgrade_message_carries_texts_type_and_ids_and_its_reply_is_read_back() {
        let before = std::collections::BTreeMap::from([(
            "REPOSITORY-1".to_owned(),
            r#"{"a": 1}"#.to_owned(),
        )]);
        let ids = vec!["2020.1.1".to_owned()];
        let m = UpgradeRequest {
            object_type: "REPOSITORY",
            pre_upgrade_parameters: &before,
            migration_ids: &ids,
        }
        .message();
        assert_eq!(m["pre_upgrade_parameters"]["REPOSITORY-1"], r#"{"a": 1}"#);
        assert_eq!(m["type"], "REPOSITORY");
        assert_eq!(m["migration_ids"], json!(["2020.1.1"]));
        let back = UpgradeRequest::post_upgrade_parameters(
            &json!({"post_upgrade_parameters": {"REPOSITORY-1": "{}"}}),
        )
        .unwrap();
        assert_eq!(back["REPOSITORY-1"], "{}");
        assert!(
            UpgradeRequest::post_upgrade_parameters(&json!({"post_upgrade_parameters": [1]}))
                .is_err()
        );
    }
}
