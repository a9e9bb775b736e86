//! Reading and checking a `dvp build` artifact.json (contract §1.1, §1.2, §5)
//! and extracting its `sourceCode` into a directory a worker can load.
//!
//! Every problem with an artifact is collected before answering, so a plugin
//! author fixes them all in one round instead of one per upload.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use doppel_model::PluginKind;
use serde_json::Value;

use crate::operations::{self, Operation};

/// The only language a 5.x SDK produces, and the only one we can run.
pub const SUPPORTED_LANGUAGE: &str = "PYTHON311";
/// Host types we can serve.
pub const SUPPORTED_HOST_TYPES: &[&str] = &["UNIX"];
/// CPython 3.11's bytecode magic number.
const PYC_MAGIC_311: [u8; 4] = [0xa7, 0x0d, 0x0d, 0x0a];
/// Plugins built against a newer proto API than this may call operations we
/// do not know.
const MAX_BUILD_API: (u64, u64) = (1, 11);

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
    #[error("sourceCode holds an unsafe path {0:?}, refusing to extract it")]
    UnsafePath(String),
    #[error("sourceCode holds {file}, compiled for another Python (magic {magic}); this engine runs CPython 3.11 bytecode")]
    WrongBytecode { file: String, magic: String },
    #[error("cannot extract sourceCode into {path}: {source}")]
    Extract {
        path: PathBuf,
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
    pub language: String,
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
        let language = s("language", &mut errs);
        if !language.is_empty() && language != SUPPORTED_LANGUAGE {
            errs.push(format!(
                "language {language:?} is not supported; this engine runs {SUPPORTED_LANGUAGE} plugins (built with dvp 5.x)"
            ));
        }
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

        check_api_version(&definition, "buildApi", Some(MAX_BUILD_API), &mut errs);
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
        // Open the zip now so a corrupt archive is refused before anything is stored.
        zip::ZipArchive::new(Cursor::new(&source_code))
            .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
        Ok(Artifact {
            id: id.to_ascii_lowercase(),
            name,
            external_version,
            build_number: build_number.expect("checked above"),
            kind: kind.expect("checked above"),
            language,
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
    /// paths that would land outside it and bytecode for another Python.
    pub fn extract_source(&self, dir: &Path) -> Result<(), ArtifactError> {
        let mut zip = zip::ZipArchive::new(Cursor::new(&self.source_code))
            .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactError::Extract { path, source }
        };
        private_dir(dir).map_err(io(dir))?;
        for i in 0..zip.len() {
            let mut entry = zip
                .by_index(i)
                .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
            let rel = entry
                .enclosed_name()
                .ok_or_else(|| ArtifactError::UnsafePath(entry.name().to_owned()))?;
            let out = dir.join(&rel);
            if entry.is_dir() {
                private_dir(&out).map_err(io(&out))?;
                continue;
            }
            if let Some(parent) = out.parent() {
                private_dir(parent).map_err(io(parent))?;
            }
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| ArtifactError::NotZip(e.to_string()))?;
            if out.extension().is_some_and(|e| e == "pyc")
                && data.len() >= 4
                && data[..4] != PYC_MAGIC_311
            {
                return Err(ArtifactError::WrongBytecode {
                    file: rel.display().to_string(),
                    magic: data[..4]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                });
            }
            {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&out)
                    .map_err(io(&out))?;
                f.write_all(&data).map_err(io(&out))?;
            }
        }
        Ok(())
    }
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
            "type": "Plugin", "pluginId": "not-a-uuid", "name": "x", "language": "PYTHON27",
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
            "PYTHON27",
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
}
