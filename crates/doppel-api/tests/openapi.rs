//! The OpenAPI document: the checked-in copy matches what the code
//! generates, and every `/api/v1` route is documented.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

/// `docs/openapi.json` is what the code generates. `DOPPEL_BLESS=1`
/// rewrites it.
#[test]
fn checked_in_document_is_up_to_date() {
    let generated = doppel_api::openapi_json();
    let path = checked_in();
    if std::env::var_os("DOPPEL_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != generated {
        let first = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b);
        let at = first
            .map(|n| format!(" (first difference at line {})", n + 1))
            .unwrap_or_default();
        panic!(
            "docs/openapi.json is out of date{at}: run `cargo run -p doppel -- openapi > docs/openapi.json` \
             (or `DOPPEL_BLESS=1 cargo test -p doppel-api --test openapi`)"
        );
    }
}

/// The (method, path) pairs of the document.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value = serde_json::from_str(&doppel_api::openapi_json()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// The (method, path) pairs the router is built from, read from the API
/// crate's sources: every `#[utoipa::path(method, path = "...")]`, and any
/// plain axum `.route("/api/v1...")` (which would bypass the document).
fn in_sources() -> (BTreeSet<(String, String)>, Vec<String>) {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut annotated = BTreeSet::new();
    let mut plain = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("#[utoipa::path(") {
            let rest = &text[i + "#[utoipa::path(".len()..];
            let method = rest.split(',').next().unwrap().trim().to_owned();
            let p = rest
                .split("path = \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            annotated.insert((method, p));
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains(".route(\"/api/v1") || line.contains(".route(&format!(\"/api/v1") {
                plain.push(format!(
                    "{}:{}: {}",
                    path.file_name().unwrap().to_string_lossy(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    (annotated, plain)
}

#[test]
fn every_route_is_documented() {
    let (annotated, plain) = in_sources();
    assert!(
        plain.is_empty(),
        "/api/v1 routes added with a plain `.route(...)` are missing from the OpenAPI document; \
         annotate the handler with #[utoipa::path] and add it with `.routes(routes!(handler))`:\n{}",
        plain.join("\n")
    );
    let documented = documented();
    let missing: Vec<_> = annotated.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "annotated handlers not registered with `.routes(routes!(...))`: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&annotated).collect();
    assert!(
        extra.is_empty(),
        "documented paths without a handler: {extra:?}"
    );
    assert!(
        documented.len() >= 50,
        "only {} operations documented",
        documented.len()
    );
    assert!(documented.contains(&("get".into(), "/api/v1/jobs/{job}/stream".into())));
}

/// Every documented type resolves: no dangling `$ref`.
#[test]
fn every_reference_resolves() {
    let text = doppel_api::openapi_json();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let marker = "\"#/components/schemas/";
    for (i, _) in text.match_indices(marker) {
        let name = text[i + marker.len()..].split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
}
