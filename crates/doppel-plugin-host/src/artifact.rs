//! Reading and checking a `dvp build` artifact.json (contract §1.1, §1.2, §5)
//! and extracting its `sourceCode` into a directory a worker can load.
//!
//! Every problem with an artifact is collected before answering, so a plugin
//! author fixes them all in one round instead of one per upload.

use std::collections::HashSet;
use std::io::{Cursor, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use doppel_model::PluginKind;
use serde_json::Value;

use crate::operations::{self, Operation};

/// Host types we can serve.
pub const SUPPORTED_HOST_TYPES: &[&str] = &["UNIX"];

/// The Python a plugin's bundle was compiled for (artifact.json `language`):
/// each SDK generation has one, and its worker runs on that interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// dvp 5.x.
    Python311,
    /// dvp 0.3 to 3.x: the plugins most users have.
    Python27,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Python311, Language::Python27];

    /// Parses artifact.json's `language`, saying what to do about one this
    /// engine cannot run.
    pub fn parse(s: &str) -> Result<Language, String> {
        match s {
            "PYTHON311" => Ok(Language::Python311),
            "PYTHON27" => Ok(Language::Python27),
            // dvp 4.x: no CPython 3.8 can be provided for its bytecode.
            "PYTHON38" => Err(
                "language \"PYTHON38\" (dvp 4.x) is not supported: this engine has no CPython 3.8; \
                 rebuild the plugin for PYTHON311 with dvp 5.x (set `language: PYTHON311` in \
                 plugin_config.yml and run `dvp build`)"
                    .into(),
            ),
            other => Err(format!(
                "language {other:?} is not supported; this engine runs PYTHON311 (dvp 5.x) and \
                 PYTHON27 (dvp 0.3 to 3.x) plugins"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python311 => "PYTHON311",
            Language::Python27 => "PYTHON27",
        }
    }

    /// The interpreter's name, for messages.
    pub fn python(self) -> &'static str {
        match self {
            Language::Python311 => "CPython 3.11",
            Language::Python27 => "CPython 2.7",
        }
    }

    /// The first bytes of every `.pyc` that interpreter loads.
    pub fn bytecode_magic(self) -> [u8; 4] {
        match self {
            Language::Python311 => [0xa7, 0x0d, 0x0d, 0x0a],
            Language::Python27 => [0x03, 0xf3, 0x0d, 0x0a],
        }
    }

    /// The newest plugin API (`buildApi` major.minor) its SDKs built
    /// against: a newer one would be a plugin whose messages or operations
    /// we do not know. Every published SDK from dvp 0.3.0 on speaks 1.x;
    /// the last 2.7 SDK (dvp 3.1.0) speaks 1.5.
    fn max_build_api(self) -> (u64, u64) {
        match self {
            Language::Python311 => (1, 11),
            Language::Python27 => (1, 5),
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an artifact may hold. An artifact comes from a user over the network
/// and is inflated on the engine's disk, so everything it declares is
/// bounded before it is believed, and what it really holds is counted while
/// it is inflated. `dvp build` artifacts are a few MiB holding a few hundred
/// files, so each limit leaves a wide margin for real plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of artifact.json itself (base64 makes the zip 3/4 of it).
    pub artifact_bytes: usize,
    /// Entries in the zip: each costs a few hundred bytes of memory as soon
    /// as the archive is opened, so this is checked before opening it.
    pub entries: usize,
    /// Uncompressed bytes of one entry (the largest real one, protobuf's
    /// native module, is about 1 MiB).
    pub entry_bytes: u64,
    /// Uncompressed bytes of all entries together: what an install may
    /// write to disk.
    pub total_bytes: u64,
    /// Components of an entry's path; deep nesting costs a directory each.
    pub depth: usize,
    /// Bytes of an entry's whole path.
    pub path_bytes: usize,
    /// Bytes of one component of a path (Linux's NAME_MAX).
    pub name_bytes: usize,
}

/// The limits `Artifact::parse` and `Artifact::extract_source` apply.
///
/// There is no limit on the compression ratio: the size limits already bound
/// what a zip bomb can cost, and a ratio limit would refuse honest files
/// that compress well (zeroed data, generated tables).
pub const LIMITS: Limits = Limits {
    artifact_bytes: 64 * MIB as usize,
    entries: 20_000,
    entry_bytes: 64 * MIB,
    total_bytes: 256 * MIB,
    depth: 32,
    path_bytes: 1024,
    name_bytes: 255,
};

const MIB: u64 = 1024 * 1024;

/// The largest artifact.json the API accepts (`LIMITS.artifact_bytes`).
pub const MAX_ARTIFACT_BYTES: usize = LIMITS.artifact_bytes;

/// `n` bytes as a person reads them.
fn human(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// Why an artifact was refused. Nothing is stored when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "the artifact is not valid JSON ({0}); upload the artifact.json that `dvp build` wrote"
    )]
    NotJson(String),
    #[error("the artifact is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("sourceCode is not a zip archive ({0}); the artifact may be truncated or edited")]
    NotZip(String),
    #[error("sourceCode holds an unsafe path {0:?} ({1}), refusing to extract it")]
    UnsafePath(String, &'static str),
    #[error("sourceCode holds {file}, compiled for another Python (magic {magic}); a {language} plugin must hold {} bytecode (magic {}); rebuild it with `dvp build`", .language.python(), hex(&.language.bytecode_magic()))]
    WrongBytecode {
        file: String,
        magic: String,
        language: Language,
    },
    /// The artifact or one of its entries breaks a limit of `LIMITS`.
    #[error("{what}: the limit is {limit}")]
    Limit {
        /// Which limit, with its value, e.g. "64 MiB per entry".
        limit: String,
        /// What broke it, naming the entry when one is at fault.
        what: String,
    },
    #[error("sourceCode entry {entry:?} is a {kind}; an artifact may hold only regular files and directories")]
    SpecialEntry { entry: String, kind: &'static str },
    #[error("sourceCode entry {entry:?} clashes with entry {other:?} ({why})")]
    Clash {
        entry: String,
        other: String,
        why: &'static str,
    },
    #[error("sourceCode entry {entry:?} cannot be read ({reason}); the artifact may be truncated or edited")]
    Corrupt { entry: String, reason: String },
    /// Writing a checked entry failed on the engine's side (disk full, ...).
    /// The message names the entry only: the engine's paths are not the
    /// client's business.
    #[error("cannot write sourceCode entry {entry:?}: {source}")]
    Extract {
        entry: String,
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// Each separate problem, for the API's `details`.
    pub fn details(&self) -> Vec<String> {
        match self {
            ArtifactError::Invalid(v) => v.clone(),
            _ => Vec::new(),
        }
    }
}

/// A normalised build number: dotted numbers with trailing zeros removed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BuildNumber(Vec<u64>);

impl BuildNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        for p in s.split('.') {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "buildNumber {s:?} must be dotted numbers like 1.2.3"
                ));
            }
            parts.push(
                p.parse::<u64>()
                    .map_err(|_| format!("buildNumber {s:?} has a part too large"))?,
            );
        }
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        if parts.iter().all(|&p| p == 0) {
            return Err(format!("buildNumber {s:?} must not be all zeros"));
        }
        Ok(BuildNumber(parts))
    }
}

impl std::fmt::Display for BuildNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        f.write_str(&s.join("."))
    }
}

/// A checked artifact: the fields the engine uses, plus the whole JSON
/// without `sourceCode` (schemas, manifest) for later use.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub id: String,
    pub name: String,
    pub external_version: Option<String>,
    pub build_number: BuildNumber,
    pub kind: PluginKind,
    pub language: Language,
    pub host_types: Vec<String>,
    pub entry_point: String,
    pub manifest: Value,
    pub migration_ids: Vec<String>,
    /// artifact.json with `sourceCode` removed.
    pub definition: Value,
    source_code: Vec<u8>,
}

impl Artifact {
    /// Parses and checks artifact.json bytes. Returns every violation found.
    pub fn parse(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        if bytes.len() > LIMITS.artifact_bytes {
            return Err(ArtifactError::Limit {
                limit: format!("{} per artifact", human(LIMITS.artifact_bytes as u64)),
                what: format!("the artifact is {} bytes", bytes.len()),
            });
        }
        let mut v: Value =
            serde_json::from_slice(bytes).map_err(|e| ArtifactError::NotJson(e.to_string()))?;
        let obj = v.as_object_mut().ok_or_else(|| {
            ArtifactError::Invalid(vec!["the artifact must be a JSON object".into()])
        })?;
        let source_b64 = obj.remove("sourceCode");
        let definition = Value::Object(obj.clone());
        let mut errs = Vec::new();

        let s = |key: &str, errs: &mut Vec<String>| -> String {
            match definition.get(key) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(_) => {
                    errs.push(format!("{key} must be a non-empty string"));
                    String::new()
                }
                None => {
                    errs.push(format!("{key} is missing"));
                    String::new()
                }
            }
        };

        let ty = s("type", &mut errs);
        if !ty.is_empty() && ty != "Plugin" {
            errs.push(format!("type must be \"Plugin\", not {ty:?}"));
        }
        let id = s("pluginId", &mut errs);
        if !id.is_empty() && uuid::Uuid::parse_str(&id).is_err() {
            errs.push(format!("pluginId {id:?} is not a UUID"));
        }
        let name = s("name", &mut errs);
        let language_raw = s("language", &mut errs);
        let language = if language_raw.is_empty() {
            None
        } else {
            Language::parse(&language_raw)
                .map_err(|e| errs.push(e))
                .ok()
        };
        let entry_point = s("entryPoint", &mut errs);
        if !entry_point.is_empty() && !valid_entry_point(&entry_point) {
            errs.push(format!(
                "entryPoint {entry_point:?} must look like \"package.module:object\""
            ));
        }
        let build_raw = s("buildNumber", &mut errs);
        let build_number = if build_raw.is_empty() {
            None
        } else {
            BuildNumber::parse(&build_raw)
                .map_err(|e| errs.push(e))
                .ok()
        };
        let external_version = definition
            .get("externalVersion")
            .and_then(|v| v.as_str())
            .map(str::to_owned);

        let host_types: Vec<String> = match definition.get("hostTypes") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => {
                errs.push("hostTypes must be a list such as [\"UNIX\"]".into());
                Vec::new()
            }
        };
        if host_types.len() != 1 || !SUPPORTED_HOST_TYPES.contains(&host_types[0].as_str()) {
            if !host_types.is_empty() {
                errs.push(format!(
                    "hostTypes {host_types:?} is not supported; supported: {SUPPORTED_HOST_TYPES:?}"
                ));
            } else if definition.get("hostTypes").is_some() {
                errs.push("hostTypes must name exactly one host type".into());
            }
        }

        // An unknown language already failed; its API range is moot.
        check_api_version(
            &definition,
            "buildApi",
            Some(language.unwrap_or(Language::Python311).max_build_api()),
            &mut errs,
        );
        check_api_version(&definition, "engineApi", None, &mut errs);

        let kind = match definition
            .pointer("/linkedSourceDefinition/type")
            .and_then(|v| v.as_str())
        {
            Some("PluginLinkedStagedSourceDefinition") => Some(PluginKind::Staged),
            Some("PluginLinkedDirectSourceDefinition") => Some(PluginKind::Direct),
            Some(other) => {
                errs.push(format!(
                    "linkedSourceDefinition.type {other:?} must be PluginLinkedStagedSourceDefinition or PluginLinkedDirectSourceDefinition"
                ));
                None
            }
            None => {
                errs.push("linkedSourceDefinition.type is missing".into());
                None
            }
        };
        for (key, ty) in [
            ("virtualSourceDefinition", "PluginVirtualSourceDefinition"),
            (
                "snapshotParametersDefinition",
                "PluginSnapshotParametersDefinition",
            ),
            ("discoveryDefinition", "PluginDiscoveryDefinition"),
        ] {
            match definition
                .get(key)
                .and_then(|d| d.get("type"))
                .and_then(|t| t.as_str())
            {
                Some(t) if t == ty => {}
                Some(t) => errs.push(format!("{key}.type must be {ty:?}, not {t:?}")),
                None => errs.push(format!("{key} is missing or has no type")),
            }
        }
        if let Some(v2p) = definition.get("virtualToPhysicalDefinition") {
            if v2p.get("type").and_then(|t| t.as_str()) != Some("PluginVirtualToPhysicalDefinition")
            {
                errs.push("virtualToPhysicalDefinition.type must be \"PluginVirtualToPhysicalDefinition\"".into());
            }
        }

        let manifest = definition.get("manifest").cloned().unwrap_or(Value::Null);
        let migration_ids = check_manifest(&manifest, &mut errs);

        if let Err(schema_errs) = crate::schema::check_plugin_schemas(&definition) {
            errs.extend(schema_errs.violations().iter().map(|v| v.to_string()));
        }

        let source_code = match source_b64 {
            Some(Value::String(b)) => {
                match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        errs.push(format!("sourceCode is not valid base64 ({e})"));
                        Vec::new()
                    }
                }
            }
            Some(_) => {
                errs.push("sourceCode must be a base64 string".into());
                Vec::new()
            }
            None => {
                errs.push("sourceCode is missing".into());
                Vec::new()
            }
        };

        if !errs.is_empty() {
            return Err(ArtifactError::Invalid(errs));
        }
        // Open the zip and check what it declares now, so a corrupt or
        // hostile archive is refused before anything is written.
        check_zip(&source_code, &LIMITS)?;
        Ok(Artifact {
            id: id.to_ascii_lowercase(),
            name,
            external_version,
            build_number: build_number.expect("checked above"),
            kind: kind.expect("checked above"),
            language: language.expect("checked above"),
            host_types,
            entry_point,
            manifest,
            migration_ids,
            definition,
            source_code,
        })
    }

    /// `group.method` of every operation the manifest says is implemented.
    pub fn implemented_operations(&self) -> Vec<String> {
        operations::ALL
            .iter()
            .filter(|op| op.manifest_flag.is_some() && op.implemented_by(&self.manifest, self.kind))
            .map(Operation::name)
            .collect()
    }

    /// Extracts `sourceCode` into `dir` (which must not exist yet), refusing
    /// paths that would land outside it, anything but files and
    /// directories, entries larger than `LIMITS` allow (counted as they
    /// inflate, whatever they declare) and bytecode for another Python.
    pub fn extract_source(&self, dir: &Path) -> Result<(), ArtifactError> {
        extract_zip(&self.source_code, dir, &LIMITS, self.language)
    }
}

/// One zip entry as checked: where it goes and what it is.
struct CheckedEntry {
    rel: PathBuf,
    is_dir: bool,
}

/// The number of entries the end-of-central-directory record declares, read
/// without opening the archive: opening it parses every central header into
/// memory, so a hostile count must be refused first. `None` when there is no
/// such record (opening the archive then says what is wrong).
fn declared_entries(zip: &[u8]) -> Option<u64> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const ZIP64_LOCATOR: &[u8] = b"PK\x06\x07";
    const ZIP64_EOCD: &[u8] = b"PK\x06\x06";
    // The record is 22 bytes plus a comment of at most 64 KiB, at the end.
    let from = zip.len().saturating_sub(22 + u16::MAX as usize);
    let at = (from..=zip.len().checked_sub(22)?)
        .rev()
        .find(|&i| &zip[i..i + 4] == EOCD)?;
    let u16_at = |i: usize| u16::from_le_bytes([zip[i], zip[i + 1]]);
    let count = u16_at(at + 10);
    if count != u16::MAX {
        return Some(count.into());
    }
    // Zip64: the locator sits just before the record and points at the
    // zip64 record, whose entry count is a u64 at offset 32.
    let loc = at.checked_sub(20)?;
    if &zip[loc..loc + 4] != ZIP64_LOCATOR {
        return Some(count.into());
    }
    let off = u64::from_le_bytes(zip[loc + 8..loc + 16].try_into().ok()?) as usize;
    let rec = zip.get(off..off.checked_add(40)?)?;
    if &rec[..4] != ZIP64_EOCD {
        return Some(count.into());
    }
    Some(u64::from_le_bytes(rec[32..40].try_into().ok()?))
}

fn too_many_entries(n: u64, limits: &Limits) -> ArtifactError {
    ArtifactError::Limit {
        limit: format!("{} entries", limits.entries),
        what: format!("sourceCode holds {n} entries"),
    }
}

type Archive<'a> = zip::ZipArchive<Cursor<&'a [u8]>>;

/// Opens the archive and checks every entry's header against `limits`
/// without inflating anything. Returns the entries in archive order.
fn check_zip<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(Archive<'a>, Vec<CheckedEntry>), ArtifactError> {
    if let Some(n) = declared_entries(bytes) {
        if n > limits.entries as u64 {
            return Err(too_many_entries(n, limits));
        }
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
    if zip.len() > limits.entries {
        return Err(too_many_entries(zip.len() as u64, limits));
    }
    let mut entries = Vec::with_capacity(zip.len());
    let mut files: HashSet<PathBuf> = HashSet::new();
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    // Which entry first made each path, to name it in a clash.
    let mut first: std::collections::HashMap<PathBuf, String> = Default::default();
    let mut declared_total: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
        let name = entry.name().to_owned();
        let rel = entry_path(&name, limits)?;
        if let Some(mode) = entry.unix_mode() {
            let kind = match mode & S_IFMT {
                0 | S_IFREG | S_IFDIR => None,
                S_IFLNK => Some("symbolic link"),
                S_IFIFO => Some("named pipe"),
                S_IFCHR => Some("character device"),
                S_IFBLK => Some("block device"),
                S_IFSOCK => Some("socket"),
                _ => Some("file of unknown type"),
            };
            if let Some(kind) = kind {
                return Err(ArtifactError::SpecialEntry { entry: name, kind });
            }
        }
        let is_dir = entry.is_dir();
        if entry.encrypted() {
            return Err(ArtifactError::Corrupt {
                entry: name,
                reason: "it is encrypted".into(),
            });
        }
        let size = entry.size();
        if size > limits.entry_bytes {
            return Err(ArtifactError::Limit {
                limit: format!("{} per entry", human(limits.entry_bytes)),
                what: format!("sourceCode entry {name:?} declares {size} bytes uncompressed"),
            });
        }
        declared_total = declared_total.saturating_add(size);
        if declared_total > limits.total_bytes {
            return Err(ArtifactError::Limit {
                limit: format!("{} in all", human(limits.total_bytes)),
                what: format!(
                    "sourceCode's entries declare more than {} uncompressed (at entry {name:?})",
                    human(limits.total_bytes)
                ),
            });
        }
        // A path is a file or a directory, once: a file where another entry
        // needs a directory (or the other way round) cannot be extracted.
        let clash = |other: &Path, why| ArtifactError::Clash {
            entry: name.clone(),
            other: first
                .get(other)
                .cloned()
                .unwrap_or_else(|| other.display().to_string()),
            why,
        };
        for parent in rel.ancestors().skip(1) {
            if parent.as_os_str().is_empty() {
                break;
            }
            if files.contains(parent) {
                return Err(clash(parent, "a file cannot hold entries"));
            }
        }
        if files.contains(&rel) {
            return Err(clash(&rel, "the same path twice"));
        }
        if !is_dir && dirs.contains(&rel) {
            return Err(clash(&rel, "a directory of that name exists"));
        }
        for parent in rel.ancestors().skip(usize::from(!is_dir)) {
            if parent.as_os_str().is_empty() {
                break;
            }
            if dirs.insert(parent.to_owned()) {
                first.insert(parent.to_owned(), name.clone());
            }
        }
        if !is_dir {
            files.insert(rel.clone());
            first.insert(rel.clone(), name.clone());
        }
        entries.push(CheckedEntry { rel, is_dir });
    }
    Ok((zip, entries))
}

// File types in the high bits of a zip entry's Unix mode (<sys/stat.h>).
const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;

/// The relative path an entry extracts to: plain names only (no `..`, no
/// root, no NUL), within the depth and length limits.
fn entry_path(name: &str, limits: &Limits) -> Result<PathBuf, ArtifactError> {
    let unsafe_path = |why| ArtifactError::UnsafePath(name.to_owned(), why);
    if name.len() > limits.path_bytes {
        return Err(ArtifactError::Limit {
            limit: format!("{} bytes per path", limits.path_bytes),
            what: format!(
                "sourceCode entry {:?}... has a path of {} bytes",
                name.chars().take(64).collect::<String>(),
                name.len()
            ),
        });
    }
    if name.contains('\0') {
        return Err(unsafe_path("a NUL byte"));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(part) => {
                if part.len() > limits.name_bytes {
                    return Err(ArtifactError::Limit {
                        limit: format!("{} bytes per name", limits.name_bytes),
                        what: format!(
                            "sourceCode entry {name:?} has a name of {} bytes",
                            part.len()
                        ),
                    });
                }
                rel.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_path("a parent directory")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("an absolute path"))
            }
        }
    }
    let depth = rel.components().count();
    if depth == 0 {
        return Err(unsafe_path("an empty path"));
    }
    if depth > limits.depth {
        return Err(ArtifactError::Limit {
            limit: format!("{} levels of directories", limits.depth),
            what: format!("sourceCode entry {name:?} is {depth} levels deep"),
        });
    }
    Ok(rel)
}

/// Checks `bytes` (a zip) and extracts it into `dir`. Sizes are counted as
/// entries inflate: a header that lies about its size gains nothing.
fn extract_zip(
    bytes: &[u8],
    dir: &Path,
    limits: &Limits,
    language: Language,
) -> Result<(), ArtifactError> {
    let (mut zip, entries) = check_zip(bytes, limits)?;
    let write_err = |entry: &str| {
        let entry = entry.to_owned();
        move |source| ArtifactError::Extract { entry, source }
    };
    private_dir(dir).map_err(write_err("."))?;
    let mut total: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    for (i, checked) in entries.iter().enumerate() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
        let name = entry.name().to_owned();
        let out = dir.join(&checked.rel);
        if checked.is_dir {
            private_dir(&out).map_err(write_err(&name))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            private_dir(parent).map_err(write_err(&name))?;
        }
        // At most one byte past the limit is read: enough to know it broke.
        let allowed = limits.entry_bytes.min(limits.total_bytes - total);
        let mut limited = (&mut entry).take(allowed + 1);
        // create_new: never follows or overwrites what is already there.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .map_err(write_err(&name))?
        };
        let mut written: u64 = 0;
        let is_pyc = out.extension().is_some_and(|e| e == "pyc");
        let mut head: Vec<u8> = Vec::with_capacity(4);
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ArtifactError::Corrupt {
                        entry: name,
                        reason: e.to_string(),
                    })
                }
            };
            if is_pyc && head.len() < 4 {
                head.extend(buf[..n].iter().take(4 - head.len()));
                check_bytecode(&checked.rel, &head, language)?;
            }
            written += n as u64;
            if written > allowed {
                return Err(if allowed == limits.entry_bytes {
                    ArtifactError::Limit {
                        limit: format!("{} per entry", human(limits.entry_bytes)),
                        what: format!(
                            "sourceCode entry {name:?} inflates to more than {}",
                            human(limits.entry_bytes)
                        ),
                    }
                } else {
                    ArtifactError::Limit {
                        limit: format!("{} in all", human(limits.total_bytes)),
                        what: format!(
                            "sourceCode's entries inflate to more than {} (at entry {name:?})",
                            human(limits.total_bytes)
                        ),
                    }
                });
            }
            file.write_all(&buf[..n]).map_err(write_err(&name))?;
        }
        total += written;
    }
    Ok(())
}

/// Refuses a `.pyc` whose first bytes are not the magic of the
/// artifact's language.
fn check_bytecode(rel: &Path, head: &[u8], language: Language) -> Result<(), ArtifactError> {
    if head.len() >= 4 && head[..4] != language.bytecode_magic() {
        return Err(ArtifactError::WrongBytecode {
            file: rel.display().to_string(),
            magic: hex(&head[..4]),
            language,
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Plugin code lives in the engine's data directory, which only the
/// engine's user may read (the worker runs as that user).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn valid_entry_point(s: &str) -> bool {
    let Some((module, object)) = s.split_once(':') else {
        return false;
    };
    let ident = |x: &str| {
        !x.is_empty()
            && x.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
            && x.chars().all(|c| c.is_alphanumeric() || c == '_')
    };
    !object.contains(':') && module.split('.').all(ident) && ident(object)
}

fn check_api_version(def: &Value, key: &str, max: Option<(u64, u64)>, errs: &mut Vec<String>) {
    let Some(v) = def.get(key) else {
        errs.push(format!("{key} is missing"));
        return;
    };
    let num = |k: &str| v.get(k).and_then(|x| x.as_u64());
    match (num("major"), num("minor"), num("micro")) {
        (Some(major), Some(minor), Some(_)) => {
            if let Some((max_major, max_minor)) = max {
                if (major, minor) > (max_major, max_minor) || major != max_major {
                    errs.push(format!(
                        "{key} {major}.{minor} is not supported; this engine speaks plugin API {max_major}.x up to {max_major}.{max_minor}"
                    ));
                }
            }
        }
        _ => errs.push(format!("{key} must have integer major, minor and micro")),
    }
}

/// Checks the manifest's flags and returns the migration ids, normalised and
/// numerically sorted.
fn check_manifest(manifest: &Value, errs: &mut Vec<String>) -> Vec<String> {
    let Some(m) = manifest.as_object() else {
        errs.push("manifest is missing".into());
        return Vec::new();
    };
    if m.get("type").and_then(|t| t.as_str()) != Some("PluginManifest") {
        errs.push("manifest.type must be \"PluginManifest\"".into());
    }
    for (k, v) in m {
        if k.starts_with("has") && !v.is_boolean() {
            errs.push(format!("manifest.{k} must be true or false"));
        }
    }
    let mut ids: Vec<(Vec<u64>, String)> = Vec::new();
    if let Some(list) = m.get("migrationIdList") {
        match list.as_array() {
            Some(a) => {
                for x in a {
                    match x.as_str().map(BuildNumber::parse) {
                        Some(Ok(b)) => ids.push((b.0.clone(), b.to_string())),
                        _ => errs.push(format!(
                            "manifest.migrationIdList entry {x} is not a dotted number"
                        )),
                    }
                }
            }
            None => errs.push("manifest.migrationIdList must be a list".into()),
        }
    }
    ids.sort();
    ids.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_numbers_normalise_and_compare_numerically() {
        assert_eq!(
            BuildNumber::parse("2.0.10.0").unwrap().to_string(),
            "2.0.10"
        );
        assert!(BuildNumber::parse("2.0.10").unwrap() > BuildNumber::parse("2.0.9").unwrap());
        assert!(BuildNumber::parse("1.10").unwrap() > BuildNumber::parse("1.9.9").unwrap());
        assert_eq!(
            BuildNumber::parse("1.0").unwrap(),
            BuildNumber::parse("1").unwrap()
        );
        assert!(BuildNumber::parse("0.0").is_err());
        assert!(BuildNumber::parse("1.x").is_err());
        assert!(BuildNumber::parse("").is_err());
    }

    #[test]
    fn entry_points() {
        assert!(valid_entry_point("plugin_runner:plugin"));
        assert!(valid_entry_point("pkg.sub.mod:obj"));
        assert!(!valid_entry_point("plugin_runner"));
        assert!(!valid_entry_point("a:b:c"));
        assert!(!valid_entry_point("a.:b"));
        assert!(!valid_entry_point(":b"));
    }

    #[test]
    fn not_json_and_not_object_are_refused() {
        assert!(matches!(
            Artifact::parse(b"{\"type\": \"Plu"),
            Err(ArtifactError::NotJson(_))
        ));
        assert!(matches!(
            Artifact::parse(b"[1]"),
            Err(ArtifactError::Invalid(_))
        ));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = serde_json::json!({
            "type": "Plugin", "pluginId": "not-a-uuid", "name": "x", "language": "PYTHON38",
            "hostTypes": ["WINDOWS"], "entryPoint": "nocolon", "buildNumber": "0.0",
            "buildApi": {"major": 1, "minor": 99, "micro": 0}, "engineApi": {"major": 1, "minor": 11, "micro": 51},
            "sourceCode": "!!!",
            "linkedSourceDefinition": {"type": "Weird"},
        });
        let Err(ArtifactError::Invalid(errs)) = Artifact::parse(bad.to_string().as_bytes()) else {
            panic!()
        };
        let all = errs.join("\n");
        for needle in [
            "pluginId",
            "PYTHON38",
            "WINDOWS",
            "entryPoint",
            "all zeros",
            "buildApi 1.99",
            "base64",
            "Weird",
            "manifest is missing",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
    }

    /// Small limits, so tests stay small.
    const TINY: Limits = Limits {
        artifact_bytes: 1 << 20,
        entries: 8,
        entry_bytes: 1000,
        total_bytes: 1500,
        depth: 4,
        path_bytes: 64,
        name_bytes: 16,
    };

    fn zip_of(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        build(&mut w);
        w.finish().unwrap().into_inner()
    }

    fn opts() -> zip::write::SimpleFileOptions {
        zip::write::SimpleFileOptions::default()
    }

    fn file(w: &mut zip::ZipWriter<Cursor<Vec<u8>>>, name: &str, data: &[u8]) {
        w.start_file(name, opts()).unwrap();
        w.write_all(data).unwrap();
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    /// A stored entry whose local and central (zip64) headers both declare
    /// `declared` bytes while it holds `data`.
    fn zip_declaring(name: &str, data: &[u8], declared: u64) -> Vec<u8> {
        let mut extra = Vec::new();
        extra.extend(1u16.to_le_bytes());
        extra.extend(16u16.to_le_bytes());
        extra.extend(declared.to_le_bytes());
        extra.extend((data.len() as u64).to_le_bytes());
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend((3u16 << 8 | 45).to_le_bytes());
            }
            for v in [45u16, 0, 0, 0, 0x21] {
                h.extend(v.to_le_bytes());
            }
            h.extend(crc32(data).to_le_bytes());
            h.extend(u32::MAX.to_le_bytes());
            h.extend(u32::MAX.to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend((extra.len() as u16).to_le_bytes());
            if central {
                for v in [0u16, 0, 0] {
                    h.extend(v.to_le_bytes());
                }
                h.extend((0o100644u32 << 16).to_le_bytes());
                h.extend(0u32.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h.extend(&extra);
            h
        };
        let mut z = header(0x0403_4b50, false);
        z.extend(data);
        let cd_start = z.len();
        z.extend(header(0x0201_4b50, true));
        let cd_len = z.len() - cd_start;
        z.extend(0x0605_4b50u32.to_le_bytes());
        for v in [0u16, 0, 1, 1] {
            z.extend(v.to_le_bytes());
        }
        z.extend((cd_len as u32).to_le_bytes());
        z.extend((cd_start as u32).to_le_bytes());
        z.extend(0u16.to_le_bytes());
        z
    }

    fn limit_message(r: Result<(), ArtifactError>) -> String {
        match r {
            Err(e @ ArtifactError::Limit { .. }) => e.to_string(),
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_before_any_allocation() {
        let z = zip_declaring("big.bin", b"hello", 1 << 45);
        let dir = tempfile::tempdir().unwrap();
        let msg = limit_message(extract_zip(
            &z,
            &dir.path().join("x"),
            &LIMITS,
            Language::Python311,
        ));
        assert!(msg.contains("\"big.bin\""), "{msg}");
        assert!(msg.contains("35184372088832"), "{msg}");
        assert!(msg.contains("64 MiB per entry"), "{msg}");
        assert!(!dir.path().join("x").exists(), "nothing is written");
    }

    #[test]
    fn sizes_are_counted_while_inflating_whatever_the_headers_say() {
        // 10 kB of zeros, declared as 10 bytes in both headers.
        let mut z = zip_of(|w| file(w, "zeros.bin", &[0u8; 10_000]));
        let patch = |z: &mut Vec<u8>, sig: &[u8], at: usize| {
            let i = z.windows(4).position(|x| x == sig).unwrap();
            z[i + at..i + at + 4].copy_from_slice(&10u32.to_le_bytes());
        };
        patch(&mut z, b"PK\x03\x04", 22);
        patch(&mut z, b"PK\x01\x02", 24);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        let msg = limit_message(extract_zip(&z, &out, &TINY, Language::Python311));
        assert!(
            msg.contains("\"zeros.bin\" inflates to more than 1000 bytes"),
            "{msg}"
        );
        let written = std::fs::metadata(out.join("zeros.bin")).unwrap().len();
        assert!(written <= 1000, "wrote {written} bytes");

        // Each entry within its limit, together over the total.
        let z = zip_of(|w| {
            file(w, "a", &[1u8; 900]);
            file(w, "b", &[2u8; 900]);
        });
        let msg = limit_message(check_zip(&z, &TINY).map(|_| ()));
        assert!(
            msg.contains("1500 bytes in all") && msg.contains("\"b\""),
            "{msg}"
        );
    }

    #[test]
    fn entry_count_path_depth_and_name_length_are_limited() {
        let many = zip_of(|w| {
            for i in 0..9 {
                file(w, &format!("f{i}"), b"x");
            }
        });
        assert_eq!(declared_entries(&many), Some(9));
        let msg = limit_message(check_zip(&many, &TINY).map(|_| ()));
        assert!(
            msg.contains("9 entries") && msg.contains("8 entries"),
            "{msg}"
        );

        let deep = zip_of(|w| file(w, "a/b/c/d/e", b"x"));
        let msg = limit_message(check_zip(&deep, &TINY).map(|_| ()));
        assert!(
            msg.contains("5 levels deep") && msg.contains("\"a/b/c/d/e\""),
            "{msg}"
        );

        let long_name = zip_of(|w| file(w, &"n".repeat(17), b"x"));
        let msg = limit_message(check_zip(&long_name, &TINY).map(|_| ()));
        assert!(msg.contains("16 bytes per name"), "{msg}");

        let long_path = zip_of(|w| file(w, &["abcdefghijklmno"; 5].join("/"), b"x"));
        let msg = limit_message(check_zip(&long_path, &TINY).map(|_| ()));
        assert!(msg.contains("64 bytes per path"), "{msg}");
    }

    #[test]
    fn symlinks_and_files_through_them_are_refused_without_engine_paths() {
        let z = zip_of(|w| {
            w.add_symlink("lib", "/etc", opts()).unwrap();
            file(w, "lib/passwd", b"root::0:0::/:/bin/sh\n");
        });
        let dir = tempfile::tempdir().unwrap();
        let err = extract_zip(&z, &dir.path().join("x"), &LIMITS, Language::Python311).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ArtifactError::SpecialEntry {
                    kind: "symbolic link",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(msg.contains("\"lib\""), "{msg}");
        assert!(!msg.contains(&*dir.path().to_string_lossy()), "{msg}");
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn clashing_and_escaping_paths_are_refused() {
        let through_file = zip_of(|w| {
            file(w, "a", b"x");
            file(w, "a/b", b"y");
        });
        let err = check_zip(&through_file, &LIMITS).map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, ArtifactError::Clash { entry, other, .. } if entry == "a/b" && other == "a"),
            "{err:?}"
        );
        let file_over_dir = zip_of(|w| {
            file(w, "d/x", b"x");
            file(w, "d", b"y");
        });
        assert!(matches!(
            check_zip(&file_over_dir, &LIMITS).map(|_| ()),
            Err(ArtifactError::Clash { .. })
        ));
        for bad in ["../up", "a/../../up", "/abs"] {
            let z = zip_of(|w| file(w, bad, b"x"));
            let err = check_zip(&z, &LIMITS).map(|_| ()).unwrap_err();
            assert!(
                matches!(err, ArtifactError::UnsafePath(..)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn an_honest_archive_extracts_and_foreign_bytecode_is_refused() {
        let z = zip_of(|w| {
            w.add_directory("pkg/", opts()).unwrap();
            file(w, "pkg/__init__.pyc", &[0xa7, 0x0d, 0x0d, 0x0a, 1, 2]);
            file(w, "pkg/data.txt", b"hello");
        });
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        extract_zip(&z, &out, &LIMITS, Language::Python311).unwrap();
        assert_eq!(std::fs::read(out.join("pkg/data.txt")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(out.join("pkg/__init__.pyc")).unwrap().len(),
            6
        );

        let z = zip_of(|w| file(w, "old.pyc", &[0x55, 0x0d, 0x0d, 0x0a, 0]));
        let err = extract_zip(&z, &dir.path().join("y"), &LIMITS, Language::Python311).unwrap_err();
        assert!(
            matches!(err, ArtifactError::WrongBytecode { .. }),
            "{err:?}"
        );
        // Each language's own magic, and only its own.
        let py27 = zip_of(|w| file(w, "pkg/m.pyc", &[0x03, 0xf3, 0x0d, 0x0a, 9]));
        extract_zip(&py27, &dir.path().join("z"), &LIMITS, Language::Python27).unwrap();
        let err =
            extract_zip(&py27, &dir.path().join("w"), &LIMITS, Language::Python311).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pkg/m.pyc")
                && msg.contains("03 f3 0d 0a")
                && msg.contains("CPython 3.11"),
            "{msg}"
        );
        let err = extract_zip(&z, &dir.path().join("v"), &LIMITS, Language::Python27).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("PYTHON27") && msg.contains("CPython 2.7") && msg.contains("55 0d 0d 0a"),
            "{msg}"
        );
    }

    #[test]
    fn languages_per_sdk_generation() {
        assert_eq!(Language::parse("PYTHON27"), Ok(Language::Python27));
        assert_eq!(Language::parse("PYTHON311"), Ok(Language::Python311));
        let py38 = Language::parse("PYTHON38").unwrap_err();
        assert!(
            py38.contains("PYTHON311") && py38.contains("dvp build"),
            "{py38}"
        );
        let other = Language::parse("PYTHON36").unwrap_err();
        assert!(
            other.contains("PYTHON36") && other.contains("PYTHON27"),
            "{other}"
        );
    }

    #[test]
    fn an_artifact_over_the_size_limit_is_refused_before_parsing() {
        let big = vec![b' '; LIMITS.artifact_bytes + 1];
        let msg = match Artifact::parse(&big) {
            Err(e @ ArtifactError::Limit { .. }) => e.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(msg.contains("64 MiB per artifact"), "{msg}");
    }
}
