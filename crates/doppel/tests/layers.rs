//! The crates depend on each other in one direction only (ARCHITECTURE.md,
//! "Code map"). A new dependency against it fails here, so the map and the
//! manifests cannot drift apart silently.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each crate and the Doppel crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "doppel",
        &[
            "doppel-api",
            "doppel-engine",
            "doppel-client",
            "doppel-model",
        ],
    ),
    ("doppel-api", &["doppel-engine", "doppel-model"]),
    (
        "doppel-engine",
        &[
            "doppel-store",
            "doppel-storage",
            "doppel-plugin-host",
            "doppel-remote",
            "doppel-sftp",
            "doppel-model",
        ],
    ),
    ("doppel-store", &["doppel-model"]),
    ("doppel-storage", &["doppel-model"]),
    ("doppel-plugin-host", &["doppel-model"]),
    ("doppel-remote", &["doppel-model"]),
    ("doppel-sftp", &["doppel-model"]),
    ("doppel-client", &["doppel-model"]),
    ("doppel-model", &[]),
    ("doppel-testworld", &[]),
];

/// Layers, bottom first: a test may use crates below its own, never above.
fn layer(name: &str) -> usize {
    match name {
        "doppel-model" => 0,
        "doppel-store" | "doppel-storage" | "doppel-plugin-host" | "doppel-remote"
        | "doppel-sftp" | "doppel-client" => 1,
        "doppel-engine" => 2,
        "doppel-api" => 3,
        "doppel" => 4,
        other => panic!("{other} is not in the layer table; add it here and to ARCHITECTURE.md"),
    }
}

/// The Doppel crates a manifest names, by section (`dependencies`,
/// `dev-dependencies`, `build-dependencies`, target-specific ones folded in).
fn doppel_dependencies(manifest: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header.rsplit('.').next().unwrap_or(header).to_owned();
            continue;
        }
        if !section.ends_with("dependencies") {
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let name = key.trim().trim_end_matches(".workspace").trim_matches('"');
        if name.starts_with("doppel") {
            out.entry(section.clone())
                .or_default()
                .insert(name.to_owned());
        }
    }
    out
}

#[test]
fn crates_depend_only_in_the_documented_direction() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(c, deps)| (*c, deps.iter().copied().collect()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(crates).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = text
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name = ")
                    .map(|n| n.trim_matches('"').to_owned())
            })
            .unwrap();
        let Some(ok) = allowed.get(name.as_str()) else {
            wrong.push(format!("{name} is not in the allowed table"));
            continue;
        };
        seen.insert(name.clone());
        for (section, deps) in doppel_dependencies(&text) {
            for dep in deps {
                let fine = match section.as_str() {
                    "dev-dependencies" => {
                        dep == "doppel-testworld"
                            || (name != "doppel-testworld" && layer(&dep) < layer(&name))
                    }
                    _ => ok.contains(dep.as_str()),
                };
                if !fine {
                    wrong.push(format!("{name} has {dep} in [{section}]"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the documented direction: {wrong:#?}"
    );
    assert_eq!(
        seen.len(),
        ALLOWED.len(),
        "crates missing from the workspace: {seen:?}"
    );
}

#[test]
fn the_parser_sees_every_form_of_dependency() {
    let deps = doppel_dependencies(
        "[package]\nname = \"x\"\n[dependencies]\ndoppel-model.workspace = true\ndoppel-store = { path = \"../s\" }\nserde = \"1\"\n[target.'cfg(unix)'.dependencies]\ndoppel-api = \"0\"\n[dev-dependencies]\ndoppel-testworld = { workspace = true }\n",
    );
    assert_eq!(
        deps["dependencies"],
        ["doppel-api", "doppel-model", "doppel-store"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        deps["dev-dependencies"],
        ["doppel-testworld".to_owned()].into()
    );
}
