//! What the engine knows about an installed plugin.

use serde::{Deserialize, Serialize};

/// How a plugin's dSources ingest data (from `linkedSourceDefinition.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginKind {
    /// The plugin copies data onto a staging mount of engine storage.
    Staged,
    /// The engine pulls the data itself (`run_sync`).
    Direct,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Staged => "STAGED",
            PluginKind::Direct => "DIRECT",
        }
    }
}

/// One installed plugin version, as shown by `doppel plugin list/show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginSummary {
    /// The artifact's `pluginId` (a UUID); stable across versions.
    pub id: String,
    pub name: String,
    /// Normalised build number (trailing `.0` parts removed).
    pub build_number: String,
    pub external_version: Option<String>,
    pub kind: PluginKind,
    pub language: String,
    pub host_types: Vec<String>,
    pub entry_point: String,
    /// Operations the manifest says the plugin implements, as `group.method`.
    pub operations: Vec<String>,
    /// Platform migration ids, numerically sorted.
    pub migration_ids: Vec<String>,
    /// RFC 3339 time of installation.
    pub installed_at: String,
}

/// Severity of a plugin log line; each plugin has one stream per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PluginLogLevel {
    Debug,
    Info,
    Error,
}

impl PluginLogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginLogLevel::Debug => "debug",
            PluginLogLevel::Info => "info",
            PluginLogLevel::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A line of a plugin's log as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PluginLogLine {
    pub line: String,
}
