//! Plugin schema checks, parameter validation and secret redaction.
//!
//! A Delphix plugin artifact carries seven JSON schemas (linked, virtual and
//! V2P parameters, snapshot, snapshot parameters, repository and source
//! config). This module owns everything the plugin host does with them:
//!
//! * **Install-time checks** ([`check_plugin_schemas`]): every schema must be
//!   a valid draft-07 schema (unknown keywords allowed, as `dvp build` does);
//!   `recordSizeInKB` in the linked and virtual schemas must be an integer;
//!   the discovery definition's identity and name fields must exist and name
//!   properties of their schemas; `format: reference` needs a known
//!   `referenceType`; every schema must compile. All violations are returned
//!   at once, each naming the artifact field (dotted path, e.g.
//!   `linkedSourceDefinition.parameters.properties.recordSizeInKB.type`).
//! * **Parameter validation** ([`ParameterSchema`]): draft-07 plus the SDK's
//!   formats (`unixpath`, `password`, `reference` + `referenceType`) and the
//!   Delphix credential-supplier `$ref`s, which are resolved from a built-in
//!   local definition ([`DELPHIX_API_URI`]); nothing is ever fetched from the
//!   network. Every violation is reported at once with its instance path (a
//!   JSON pointer such as `/dbUser/password`; the root is the empty string),
//!   the property's `prettyName` (falling back to the property name) and a
//!   reason. `dxFormProperties.validationMessages` overrides the reason per
//!   keyword. Reasons are written here and **never contain the instance
//!   value**, so secrets cannot leak through error messages.
//! * **Secrets** ([`redact_secrets`], [`secret_paths`]): values whose schema
//!   says `format: password` (including `password`/`privateKey` inside
//!   credential suppliers) are found and masked before anything is logged or
//!   returned.
//!
//! Decisions worth knowing:
//! * `unixpath` means an **absolute** Unix path: non-empty, starting with `/`,
//!   no NUL byte. Plugins use it for mount points and install directories,
//!   which are meaningless relative to an unknown working directory.
//! * `reference` only checks the shape (`UNIX_HOST_ENVIRONMENT-<n>`,
//!   `HOST_USER-<n>`). Whether the object exists, and whether a `HOST_USER`
//!   belongs to the environment named by `matches`, is the engine's job: use
//!   [`ParameterSchema::references`] to get every reference in a value.
//! * `passwordCredentialsSupplier` accepts `NamedPasswordCredential` and the
//!   two vault credentials, `keyCredentialsSupplier` accepts
//!   `NamedKeyPairCredential` and the vault credentials, and
//!   `credentialsSupplier` accepts all four (inferred from the names; the
//!   contract only lists the four shapes).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, LazyLock};

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::{LazyLocation, Location};
use jsonschema::{Draft, Keyword, Retrieve, Uri, ValidationError, Validator};
use serde_json::{json, Map, Value};

/// Base URI of the Delphix platform API definitions that plugin schemas may
/// `$ref` (e.g. `https://delphix.com/platform/api#/definitions/credentialsSupplier`).
pub const DELPHIX_API_URI: &str = "https://delphix.com/platform/api";

/// What secret values are replaced with by [`redact_secrets`].
pub const REDACTED: &str = "********";

/// Maximum number of schema hops (`$ref`, `allOf`, ...) followed without
/// descending into the instance; guards against reference cycles.
const MAX_HOPS: usize = 16;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem found in a plugin's schemas at install time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRuleViolation {
    /// Dotted path of the offending artifact field, e.g.
    /// `discoveryDefinition.repositoryNameField`.
    pub field: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for SchemaRuleViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// All problems found by [`check_plugin_schemas`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin schemas are invalid ({} problem(s)): {}", .violations.len(), join(.violations))]
pub struct SchemaRuleErrors {
    /// Every violation, in artifact order.
    pub violations: Vec<SchemaRuleViolation>,
}

impl SchemaRuleErrors {
    /// Every violation, in artifact order.
    pub fn violations(&self) -> &[SchemaRuleViolation] {
        &self.violations
    }
}

/// One problem found in user-supplied parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterViolation {
    /// JSON pointer to the offending value (`/dbUser/password`); the empty
    /// string for the whole document.
    pub path: String,
    /// The property's `prettyName`, else its name (`tags[1]` for an array
    /// element), else `parameters` for the whole document.
    pub pretty_name: String,
    /// Why the value is rejected; never contains the value itself.
    pub reason: String,
}

impl fmt::Display for ParameterViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{} ({}): {}", self.pretty_name, path, self.reason)
    }
}

/// All problems found by [`ParameterSchema::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid parameters ({} problem(s)): {}", .violations.len(), join(.violations))]
pub struct ParameterErrors {
    /// Every violation, sorted by path (stable within a path).
    pub violations: Vec<ParameterViolation>,
}

impl ParameterErrors {
    /// Every violation, sorted by path.
    pub fn violations(&self) -> &[ParameterViolation] {
        &self.violations
    }
}

/// A parameter schema that cannot be compiled (bad regex, unresolvable
/// `$ref`, not a draft-07 schema, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schema cannot be compiled: {message}")]
pub struct SchemaCompileError {
    /// What the compiler said (schema text only, no user data).
    pub message: String,
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------
// Built-in Delphix definitions
// ---------------------------------------------------------------------------

fn credential_definitions() -> Value {
    fn supplier(types: &[&str]) -> Value {
        let branches: Vec<Value> = types
            .iter()
            .map(|t| {
                json!({
                    "if": {"properties": {"type": {"const": t}}, "required": ["type"]},
                    "then": {"$ref": format!("#/definitions/{t}")}
                })
            })
            .collect();
        json!({
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string", "enum": types}},
            "allOf": branches
        })
    }
    let secret_type = json!({"type": "string", "enum": ["any", "password", "keyPair"]});
    json!({
        "definitions": {
            "credentialsSupplier": supplier(&[
                "NamedPasswordCredential",
                "NamedKeyPairCredential",
                "CyberArkVaultCredential",
                "HashiCorpVaultCredential"
            ]),
            "passwordCredentialsSupplier": supplier(&[
                "NamedPasswordCredential",
                "CyberArkVaultCredential",
                "HashiCorpVaultCredential"
            ]),
            "keyCredentialsSupplier": supplier(&[
                "NamedKeyPairCredential",
                "CyberArkVaultCredential",
                "HashiCorpVaultCredential"
            ]),
            "NamedPasswordCredential": {
                "type": "object",
                "required": ["password"],
                "properties": {
                    "username": {"type": "string"},
                    "password": {"type": "string", "format": "password"}
                }
            },
            "NamedKeyPairCredential": {
                "type": "object",
                "required": ["privateKey"],
                "properties": {
                    "username": {"type": "string"},
                    "privateKey": {"type": "string", "format": "password"},
                    "publicKey": {"type": "string"}
                }
            },
            "CyberArkVaultCredential": {
                "type": "object",
                "required": ["vault", "queryString", "expectedSecretType"],
                "properties": {
                    "vault": {"type": "string"},
                    "queryString": {"type": "string"},
                    "expectedSecretType": secret_type
                }
            },
            "HashiCorpVaultCredential": {
                "type": "object",
                "required": ["vault", "engine", "path", "usernameKey", "secretKey", "expectedSecretType"],
                "properties": {
                    "vault": {"type": "string"},
                    "engine": {"type": "string"},
                    "path": {"type": "string"},
                    "usernameKey": {"type": "string"},
                    "secretKey": {"type": "string"},
                    "expectedSecretType": secret_type
                }
            }
        }
    })
}

/// The local stand-in for `https://delphix.com/platform/api`.
static DELPHIX_DEFINITIONS: LazyLock<Value> = LazyLock::new(credential_definitions);

/// Refuses every external schema retrieval: the host never goes to the
/// network (or the file system) to resolve a `$ref`.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "external schema reference {} is not supported",
            uri.as_str()
        )
        .into())
    }
}

// ---------------------------------------------------------------------------
// SDK formats and the referenceType keyword
// ---------------------------------------------------------------------------

/// `format: unixpath`: a non-empty absolute path without NUL bytes.
pub fn is_unix_path(s: &str) -> bool {
    s.starts_with('/') && !s.contains('\0')
}

/// The object kinds a `format: reference` property can point to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferenceType {
    /// `UNIX_HOST_ENVIRONMENT-<n>`
    UnixHostEnvironment,
    /// `HOST_USER-<n>`
    HostUser,
}

impl ReferenceType {
    /// Parses a schema's `referenceType`.
    pub fn from_schema(name: &str) -> Option<Self> {
        match name {
            "UNIX_HOST_ENVIRONMENT" => Some(Self::UnixHostEnvironment),
            "HOST_USER" => Some(Self::HostUser),
            _ => None,
        }
    }

    /// The `referenceType` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnixHostEnvironment => "UNIX_HOST_ENVIRONMENT",
            Self::HostUser => "HOST_USER",
        }
    }

    /// Whether `s` has the shape `<TYPE>-<digits>`.
    pub fn matches(self, s: &str) -> bool {
        s.strip_prefix(self.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    fn reason(self) -> &'static str {
        match self {
            Self::UnixHostEnvironment => {
                "must be a Unix host environment reference (UNIX_HOST_ENVIRONMENT-<number>)"
            }
            Self::HostUser => "must be a host user reference (HOST_USER-<number>)",
        }
    }
}

struct ReferenceKeyword {
    location: Location,
    kind: ReferenceType,
}

impl Keyword for ReferenceKeyword {
    fn validate<'i>(
        &self,
        instance: &'i Value,
        location: &LazyLocation,
    ) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(
                self.location.clone(),
                location.into(),
                instance,
                self.kind.reason(),
            ))
        }
    }

    fn is_valid(&self, instance: &Value) -> bool {
        instance.as_str().is_none_or(|s| self.kind.matches(s))
    }
}

struct NoopKeyword;

impl Keyword for NoopKeyword {
    fn validate<'i>(&self, _: &'i Value, _: &LazyLocation) -> Result<(), ValidationError<'i>> {
        Ok(())
    }
    fn is_valid(&self, _: &Value) -> bool {
        true
    }
}

// The signature is the one `jsonschema::ValidationOptions::with_keyword` wants.
#[allow(clippy::result_large_err)]
fn reference_keyword<'a>(
    parent: &'a Map<String, Value>,
    value: &'a Value,
    location: Location,
) -> Result<Box<dyn Keyword>, ValidationError<'a>> {
    let is_reference = parent.get("format").and_then(Value::as_str) == Some("reference");
    match value.as_str().and_then(ReferenceType::from_schema) {
        // Unknown reference types are reported by `check_plugin_schemas`.
        Some(kind) if is_reference => Ok(Box::new(ReferenceKeyword { location, kind })),
        _ => Ok(Box::new(NoopKeyword)),
    }
}

fn compile(schema: &Value) -> Result<Validator, SchemaCompileError> {
    let definitions = Draft::Draft7.create_resource(DELPHIX_DEFINITIONS.clone());
    jsonschema::options()
        .with_draft(Draft::Draft7)
        .with_retriever(NoRetrieval)
        .with_resource(DELPHIX_API_URI, definitions)
        .should_validate_formats(true)
        .with_format("unixpath", is_unix_path)
        .with_format("password", |_: &str| true)
        .with_format("reference", |_: &str| true)
        .with_keyword("referenceType", reference_keyword)
        .build(schema)
        .map_err(|e| SchemaCompileError {
            message: e.to_string(),
        })
}

// ---------------------------------------------------------------------------
// Schema navigation helpers
// ---------------------------------------------------------------------------

fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn unescape_segment(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn pointer_segments(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        Vec::new()
    } else {
        pointer
            .strip_prefix('/')
            .unwrap_or(pointer)
            .split('/')
            .map(unescape_segment)
            .collect()
    }
}

fn to_pointer(segments: &[String]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", escape_segment(s)))
        .collect()
}

/// Resolves a `$ref` found in a document whose root is `doc`. Returns the
/// new document root and the target. Handles local (`#/...`) refs and the
/// Delphix API refs; anything else is not followed.
fn resolve_ref<'s>(doc: &'s Value, reference: &str) -> Option<(&'s Value, &'s Value)> {
    let (root, fragment): (&'s Value, &str) = if let Some(f) = reference.strip_prefix('#') {
        (doc, f)
    } else if let Some(rest) = reference.strip_prefix(DELPHIX_API_URI) {
        let definitions: &'static Value = &DELPHIX_DEFINITIONS;
        (definitions, rest.strip_prefix('#').unwrap_or(rest))
    } else {
        return None;
    };
    root.pointer(fragment).map(|target| (root, target))
}

/// Visits every schema node that applies to each part of `value` (following
/// `properties`, `patternProperties`, `additionalProperties`, `items`,
/// `additionalItems`, `$ref`, `allOf`/`anyOf`/`oneOf`, `then`/`else`).
/// Branches are visited whether or not they match, which is the safe choice
/// for finding secrets.
fn walk<'s, 'v>(
    doc: &'s Value,
    schema: &'s Value,
    value: &'v Value,
    path: &mut Vec<String>,
    hops: usize,
    f: &mut dyn FnMut(&'s Value, &'v Value, &[String]),
) {
    let Some(node) = schema.as_object() else {
        return;
    };
    if hops > MAX_HOPS {
        return;
    }
    f(schema, value, path);
    if let Some((new_doc, target)) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| resolve_ref(doc, r))
    {
        walk(new_doc, target, value, path, hops + 1, f);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            walk(doc, branch, value, path, hops + 1, f);
        }
    }
    for key in ["then", "else"] {
        if let Some(branch) = node.get(key) {
            walk(doc, branch, value, path, hops + 1, f);
        }
    }
    match value {
        Value::Object(members) => {
            let properties = node.get("properties").and_then(Value::as_object);
            let patterns: Vec<(regex::Regex, &'s Value)> = node
                .get("patternProperties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(p, s)| regex::Regex::new(p).ok().map(|r| (r, s)))
                .collect();
            let additional = node.get("additionalProperties");
            for (key, member) in members {
                path.push(key.clone());
                let mut matched = false;
                if let Some(sub) = properties.and_then(|p| p.get(key)) {
                    matched = true;
                    walk(doc, sub, member, path, 0, f);
                }
                for (re, sub) in &patterns {
                    if re.is_match(key) {
                        matched = true;
                        walk(doc, sub, member, path, 0, f);
                    }
                }
                if let (false, Some(sub)) = (matched, additional) {
                    walk(doc, sub, member, path, 0, f);
                }
                path.pop();
            }
        }
        Value::Array(elements) => {
            let (positional, rest): (&[Value], Option<&'s Value>) = match node.get("items") {
                Some(Value::Array(list)) => (list.as_slice(), node.get("additionalItems")),
                Some(items) => (&[], Some(items)),
                None => (&[], None),
            };
            for (i, element) in elements.iter().enumerate() {
                let sub = positional.get(i).or(rest);
                if let Some(sub) = sub {
                    path.push(i.to_string());
                    walk(doc, sub, element, path, 0, f);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn is_password(schema: &Value) -> bool {
    schema.get("format").and_then(Value::as_str) == Some("password")
}

/// JSON pointers of every value in `value` whose schema says
/// `format: password` (including `password`/`privateKey` of Delphix
/// credential suppliers), sorted and without duplicates.
pub fn secret_paths(schema: &Value, value: &Value) -> Vec<String> {
    let mut found = BTreeSet::new();
    walk(
        schema,
        schema,
        value,
        &mut Vec::new(),
        0,
        &mut |node, _, path| {
            if is_password(node) {
                found.insert(to_pointer(path));
            }
        },
    );
    found.into_iter().collect()
}

/// A copy of `value` with every secret (see [`secret_paths`]) replaced by
/// [`REDACTED`]. Nulls are left alone (there is nothing to hide).
pub fn redact_secrets(schema: &Value, value: &Value) -> Value {
    let mut out = value.clone();
    for pointer in secret_paths(schema, value) {
        if let Some(slot) = out.pointer_mut(&pointer) {
            if !slot.is_null() {
                *slot = Value::String(REDACTED.to_owned());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Parameter validation
// ---------------------------------------------------------------------------

/// A `format: reference` value found in user parameters, for the engine to
/// check that the object exists (and, for `HOST_USER`, that it belongs to
/// the environment named by `matches`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceField {
    /// JSON pointer of the value.
    pub path: String,
    /// The schema's `referenceType` (as written, even if unknown).
    pub reference_type: String,
    /// The referenced object, e.g. `HOST_USER-3`.
    pub reference: String,
    /// The schema's `matches`: the name of the sibling environment property.
    pub matches: Option<String>,
}

/// A compiled parameter schema: build once with [`ParameterSchema::new`],
/// then [`validate`](ParameterSchema::validate) any number of values, from
/// any thread.
#[derive(Debug, Clone)]
pub struct ParameterSchema {
    schema: Arc<Value>,
    validator: Arc<Validator>,
}

impl ParameterSchema {
    /// Compiles `schema` as draft-07 with the SDK formats and the built-in
    /// Delphix definitions.
    pub fn new(schema: &Value) -> Result<Self, SchemaCompileError> {
        let validator = compile(schema)?;
        Ok(Self {
            schema: Arc::new(schema.clone()),
            validator: Arc::new(validator),
        })
    }

    /// The schema this was compiled from.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Checks `value`, reporting every violation at once.
    pub fn validate(&self, value: &Value) -> Result<(), ParameterErrors> {
        let mut violations = Vec::new();
        for error in self.validator.iter_errors(value) {
            self.describe(&error, &mut violations);
        }
        if violations.is_empty() {
            return Ok(());
        }
        violations.sort_by(|a, b| a.path.cmp(&b.path));
        violations.dedup();
        Err(ParameterErrors { violations })
    }

    /// See [`secret_paths`].
    pub fn secret_paths(&self, value: &Value) -> Vec<String> {
        secret_paths(&self.schema, value)
    }

    /// See [`redact_secrets`].
    pub fn redact(&self, value: &Value) -> Value {
        redact_secrets(&self.schema, value)
    }

    /// Every `format: reference` string in `value` (sorted by path), for
    /// the engine's existence check.
    pub fn references(&self, value: &Value) -> Vec<ReferenceField> {
        let mut found = Vec::new();
        walk(
            &self.schema,
            &self.schema,
            value,
            &mut Vec::new(),
            0,
            &mut |node, v, path| {
                if node.get("format").and_then(Value::as_str) != Some("reference") {
                    return;
                }
                let (Some(reference), Some(reference_type)) = (
                    v.as_str(),
                    node.get("referenceType").and_then(Value::as_str),
                ) else {
                    return;
                };
                found.push(ReferenceField {
                    path: to_pointer(path),
                    reference_type: reference_type.to_owned(),
                    reference: reference.to_owned(),
                    matches: node
                        .get("matches")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            },
        );
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found.dedup();
        found
    }

    /// The schema nodes passed through on the way to the failing keyword,
    /// since the last step into a property or array element (outermost
    /// first). The last entry holds the keyword.
    fn keyword_chain(&self, schema_path: &str) -> Vec<&Value> {
        let segments = pointer_segments(schema_path);
        let mut doc: &Value = &self.schema;
        let mut cur: &Value = &self.schema;
        let mut chain = vec![cur];
        // Set after a keyword whose value is a map or list of schemas; the
        // next segment then picks one of them.
        let mut container: Option<Container> = None;
        let n = segments.len().saturating_sub(1);
        for seg in &segments[..n] {
            let next = if seg == "$ref" && container.is_none() {
                match cur
                    .get("$ref")
                    .and_then(Value::as_str)
                    .and_then(|r| resolve_ref(doc, r))
                {
                    Some((d, target)) => {
                        doc = d;
                        target
                    }
                    None => return chain,
                }
            } else {
                let step = match cur {
                    Value::Object(m) => m.get(seg.as_str()),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                match step {
                    Some(v) => v,
                    None => return chain,
                }
            };
            match container.take() {
                Some(Container::Descend) => chain = vec![next],
                Some(Container::Branch) => chain.push(next),
                None => match seg.as_str() {
                    "properties" | "patternProperties" => container = Some(Container::Descend),
                    "items" if next.is_array() => container = Some(Container::Descend),
                    "definitions" | "dependencies" | "allOf" | "anyOf" | "oneOf" => {
                        container = Some(Container::Branch)
                    }
                    "items" | "additionalProperties" | "additionalItems" => chain = vec![next],
                    _ => chain.push(next),
                },
            }
            cur = next;
        }
        chain
    }

    fn describe(&self, error: &ValidationError<'_>, out: &mut Vec<ParameterViolation>) {
        let schema_path = error.schema_path.as_str();
        let keyword = pointer_segments(schema_path).pop().unwrap_or_default();
        let chain = self.keyword_chain(schema_path);
        let instance = pointer_segments(error.instance_path.as_str());
        let pretty = chain
            .iter()
            .rev()
            .find_map(|n| n.get("prettyName").and_then(Value::as_str))
            .map(str::to_owned)
            .unwrap_or_else(|| fallback_name(&instance));
        let custom = |keyword: &str, nodes: &[&Value]| -> Option<String> {
            nodes.iter().rev().find_map(|n| {
                n.pointer("/dxFormProperties/validationMessages")
                    .and_then(|m| m.get(keyword))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
        };
        let push =
            |out: &mut Vec<ParameterViolation>, segs: &[String], pretty: String, reason: String| {
                out.push(ParameterViolation {
                    path: to_pointer(segs),
                    pretty_name: pretty,
                    reason,
                });
            };
        match &error.kind {
            ValidationErrorKind::Required { property } => {
                let name = property
                    .as_str()
                    .map_or_else(|| property.to_string(), str::to_owned);
                let mut segs = instance.clone();
                segs.push(name.clone());
                let child = chain.iter().rev().find_map(|n| {
                    let sub = n.get("properties")?.get(&name)?;
                    Some(
                        match sub
                            .get("$ref")
                            .and_then(Value::as_str)
                            .and_then(|r| resolve_ref(&self.schema, r))
                        {
                            Some((_, target)) => vec![sub, target],
                            None => vec![sub],
                        },
                    )
                });
                let child = child.unwrap_or_default();
                let pretty = child
                    .iter()
                    .find_map(|n| n.get("prettyName").and_then(Value::as_str))
                    .map_or(name, str::to_owned);
                let reason = custom("required", &child).unwrap_or_else(|| "is required".to_owned());
                push(out, &segs, pretty, reason);
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    let mut segs = instance.clone();
                    segs.push(name.clone());
                    let reason = custom("additionalProperties", &chain)
                        .unwrap_or_else(|| "is not an allowed property".to_owned());
                    push(out, &segs, name.clone(), reason);
                }
            }
            kind => {
                let mut lookup = vec![keyword.as_str()];
                if keyword == "referenceType" {
                    lookup.push("format");
                }
                let reason = lookup
                    .iter()
                    .find_map(|k| custom(k, &chain))
                    .unwrap_or_else(|| reason_for(kind));
                push(out, &instance, pretty, reason);
            }
        }
    }
}

/// See [`ParameterSchema::keyword_chain`].
#[derive(Clone, Copy)]
enum Container {
    /// `properties`, `patternProperties`, `items: [...]`: the next schema
    /// applies to a member or element of the instance.
    Descend,
    /// `allOf`, `definitions`, ...: the next schema applies to the same instance.
    Branch,
}

fn fallback_name(instance: &[String]) -> String {
    match instance {
        [] => "parameters".to_owned(),
        [.., parent, last] if last.parse::<usize>().is_ok() => format!("{parent}[{last}]"),
        [.., last] => last.clone(),
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn type_phrase(t: jsonschema::JsonType) -> &'static str {
    use jsonschema::JsonType as T;
    match t {
        T::Array => "an array",
        T::Boolean => "a boolean",
        T::Integer => "an integer",
        T::Null => "null",
        T::Number => "a number",
        T::Object => "an object",
        T::String => "a string",
    }
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// A reason for `kind` that never mentions the instance value.
fn reason_for(kind: &ValidationErrorKind) -> String {
    use ValidationErrorKind as K;
    match kind {
        K::Type {
            kind: TypeKind::Single(t),
        } => format!("must be {}", type_phrase(*t)),
        K::Type {
            kind: TypeKind::Multiple(set),
        } => {
            let names: Vec<&str> = set.iter().map(type_phrase).collect();
            format!("must be one of: {}", names.join(", "))
        }
        K::Enum { options } => match options.as_array() {
            Some(list) => {
                format!(
                    "must be one of: {}",
                    list.iter().map(render).collect::<Vec<_>>().join(", ")
                )
            }
            None => format!("must be one of: {}", render(options)),
        },
        K::Constant { expected_value } => format!("must be {}", render(expected_value)),
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::MultipleOf { multiple_of } => format!("must be a multiple of {multiple_of}"),
        K::MinLength { limit } => format!("must be at least {} long", plural(*limit, "character")),
        K::MaxLength { limit } => format!("must be at most {} long", plural(*limit, "character")),
        K::MinItems { limit } => format!("must have at least {}", plural(*limit, "item")),
        K::MaxItems { limit } => format!("must have at most {}", plural(*limit, "item")),
        K::AdditionalItems { limit } => {
            format!("must have at most {}", plural(*limit as u64, "item"))
        }
        K::MinProperties { limit } => format!("must have at least {}", plural(*limit, "property")),
        K::MaxProperties { limit } => format!("must have at most {}", plural(*limit, "property")),
        K::Pattern { pattern } => format!("must match the pattern {pattern}"),
        K::Format { format } => match format.as_str() {
            "unixpath" => "must be an absolute Unix path".to_owned(),
            other => format!("must be a valid {other}"),
        },
        K::UniqueItems => "must not contain duplicate items".to_owned(),
        K::Contains => "must contain at least one matching item".to_owned(),
        K::AnyOf { .. } => "must match at least one of the allowed forms".to_owned(),
        K::OneOfNotValid { .. } => "must match exactly one of the allowed forms".to_owned(),
        K::OneOfMultipleValid { .. } => "matches more than one of the allowed forms".to_owned(),
        K::Not { .. } => "is not allowed here".to_owned(),
        K::FalseSchema => "is not allowed".to_owned(),
        K::PropertyNames { .. } => "has a property name that is not allowed".to_owned(),
        K::Required { .. } => "is required".to_owned(),
        K::AdditionalProperties { .. } | K::UnevaluatedProperties { .. } => {
            "has properties that are not allowed".to_owned()
        }
        K::UnevaluatedItems { .. } => "has items that are not allowed".to_owned(),
        K::ContentEncoding { content_encoding } => format!("must be {content_encoding}-encoded"),
        K::ContentMediaType { content_media_type } => {
            format!("must be {content_media_type} content")
        }
        K::FromUtf8 { .. } => "must decode to UTF-8 text".to_owned(),
        K::BacktrackLimitExceeded { .. } => "could not be checked against its pattern".to_owned(),
        K::Referencing(_) => {
            "could not be checked: a schema reference cannot be resolved".to_owned()
        }
        K::Custom { message } => message.clone(),
    }
}

// ---------------------------------------------------------------------------
// Install-time checks
// ---------------------------------------------------------------------------

/// The artifact's schemas: (dotted field path, JSON pointer into the
/// artifact, whether the `recordSizeInKB` rule applies).
const SCHEMA_FIELDS: [(&str, &str, bool); 7] = [
    (
        "linkedSourceDefinition.parameters",
        "/linkedSourceDefinition/parameters",
        true,
    ),
    (
        "virtualSourceDefinition.parameters",
        "/virtualSourceDefinition/parameters",
        true,
    ),
    (
        "virtualToPhysicalDefinition.parameters",
        "/virtualToPhysicalDefinition/parameters",
        false,
    ),
    ("snapshotSchema", "/snapshotSchema", false),
    (
        "snapshotParametersDefinition.schema",
        "/snapshotParametersDefinition/schema",
        false,
    ),
    (
        "discoveryDefinition.repositorySchema",
        "/discoveryDefinition/repositorySchema",
        false,
    ),
    (
        "discoveryDefinition.sourceConfigSchema",
        "/discoveryDefinition/sourceConfigSchema",
        false,
    ),
];

fn dotted(base: &str, pointer: &str) -> String {
    let mut out = base.to_owned();
    for seg in pointer_segments(pointer) {
        out.push('.');
        out.push_str(&seg);
    }
    out
}

/// Checks every schema of a `dvp build` artifact (see the module docs) and
/// returns all violations at once.
pub fn check_plugin_schemas(artifact: &Value) -> Result<(), SchemaRuleErrors> {
    let mut violations = Vec::new();
    let mut add =
        |field: String, reason: String| violations.push(SchemaRuleViolation { field, reason });

    for (field, pointer, record_size_rule) in SCHEMA_FIELDS {
        let Some(schema) = artifact.pointer(pointer) else {
            // SDKs before dvp 4 had no V2P: no definition means none.
            if pointer.starts_with("/virtualToPhysicalDefinition/")
                && artifact.get("virtualToPhysicalDefinition").is_none()
            {
                continue;
            }
            add(field.to_owned(), "is missing".to_owned());
            continue;
        };
        let meta_errors: Vec<_> = jsonschema::draft7::meta::VALIDATOR
            .iter_errors(schema)
            .collect();
        for e in &meta_errors {
            add(
                dotted(field, e.instance_path.as_str()),
                format!("is not a valid draft-07 schema: {e}"),
            );
        }
        if !meta_errors.is_empty() {
            continue;
        }
        if record_size_rule {
            if let Some(prop) = schema.pointer("/properties/recordSizeInKB") {
                if prop.get("type") != Some(&json!("integer")) {
                    add(
                        format!("{field}.properties.recordSizeInKB.type"),
                        "must be \"integer\"".to_owned(),
                    );
                }
            }
        }
        check_references(schema, &mut Vec::new(), &mut |at, reason| {
            add(dotted(field, &at), reason)
        });
        if let Err(e) = compile(schema) {
            add(
                field.to_owned(),
                format!("cannot be compiled: {}", e.message),
            );
        }
    }

    for kind in ["repository", "sourceConfig"] {
        let schema_field = format!("discoveryDefinition.{kind}Schema");
        let properties = artifact
            .pointer(&format!("/discoveryDefinition/{kind}Schema/properties"))
            .and_then(Value::as_object);
        let known = |name: &str| properties.is_some_and(|p| p.contains_key(name));

        let ids_field = format!("discoveryDefinition.{kind}IdentityFields");
        match artifact.pointer(&format!("/discoveryDefinition/{kind}IdentityFields")) {
            None => add(ids_field, "is missing".to_owned()),
            Some(Value::Array(ids)) => {
                for (i, id) in ids.iter().enumerate() {
                    match id.as_str() {
                        Some(name) if known(name) => {}
                        Some(name) => add(
                            format!("{ids_field}.{i}"),
                            format!("names \"{name}\", which is not in {schema_field}.properties"),
                        ),
                        None => add(
                            format!("{ids_field}.{i}"),
                            "must be a property name (string)".to_owned(),
                        ),
                    }
                }
            }
            Some(_) => add(ids_field, "must be an array of property names".to_owned()),
        }

        let name_field = format!("discoveryDefinition.{kind}NameField");
        match artifact.pointer(&format!("/discoveryDefinition/{kind}NameField")) {
            None => add(name_field, "is missing".to_owned()),
            Some(Value::String(name)) if known(name) => {}
            Some(Value::String(name)) => add(
                name_field,
                format!("names \"{name}\", which is not in {schema_field}.properties"),
            ),
            Some(_) => add(name_field, "must be a property name (string)".to_owned()),
        }
    }

    if violations.is_empty() {
        Ok(())
    } else {
        Err(SchemaRuleErrors { violations })
    }
}

/// Reports `format: reference` nodes without a known `referenceType`.
/// Skips keywords whose values are data, not schemas.
fn check_references(node: &Value, at: &mut Vec<String>, report: &mut dyn FnMut(String, String)) {
    match node {
        Value::Object(map) => {
            if map.get("format").and_then(Value::as_str) == Some("reference") {
                match map.get("referenceType") {
                    None => report(
                        to_pointer(at),
                        "has format \"reference\" but no referenceType".to_owned(),
                    ),
                    Some(t) if t.as_str().and_then(ReferenceType::from_schema).is_none() => {
                        let mut p = at.clone();
                        p.push("referenceType".to_owned());
                        report(
                            to_pointer(&p),
                            "must be UNIX_HOST_ENVIRONMENT or HOST_USER".to_owned(),
                        );
                    }
                    Some(_) => {}
                }
            }
            for (key, child) in map {
                if matches!(key.as_str(), "enum" | "const" | "default" | "examples") {
                    continue;
                }
                at.push(key.clone());
                check_references(child, at, report);
                at.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                at.push(i.to_string());
                check_references(child, at, report);
                at.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
