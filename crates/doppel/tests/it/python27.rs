//! PYTHON27 plugins (dvp 0.3 to 3.x), built with the real dvp 3.1.0 and run
//! unmodified on the engine's CPython 2.7 workers, confined like 3.11 ones.

use std::path::Path;

use base64::Engine as _;
use doppel_client::ClientError;
use doppel_model::{ApiError, ErrorCode};
use serde_json::{json, Value};

use crate::support::*;

const PY27: &str = "doppel-py27-staged";

fn api_error(r: Result<Value, ClientError>) -> ApiError {
    match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn linked(behavior: &str) -> Value {
    json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
           "source_config": {"parameters": pdo(json!({"name": "sc"}))},
           "staged_source": staged_source(json!({"behavior": behavior, "mountPath": "/mnt/s"}))})
}

fn virtual_req(behavior: &str) -> Value {
    json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
           "source_config": {"parameters": pdo(json!({"name": "sc"}))},
           "virtual_source": virtual_source(json!({"behavior": behavior, "mountPath": "/mnt/v"}))})
}

#[test]
fn a_python27_plugin_installs_shows_its_language_and_runs_its_operations() {
    let engine = Engine::start();
    let installed = engine.install(&build_plugin27("py27-staged"));
    assert_eq!(installed["language"], "PYTHON27");
    assert_eq!(installed["name"], PY27);
    let table = engine.cli(&["plugin", "list"]);
    assert!(table.ok().contains("PYTHON27"), "{}", table.stdout);
    let shown = engine.cli(&["plugin", "show", PY27]);
    assert!(shown.ok().contains("PYTHON27"), "{}", shown.stdout);
    // dvp 3.1.0 knows no source size, V2P or cleanup: never offered.
    let ops = installed["operations"].to_string();
    for absent in ["source_size", "source_to_physical", "virtual.cleanup"] {
        assert!(!ops.contains(absent), "{absent} in {ops}");
    }
    let c = engine.client();

    let repos = c
        .invoke(
            PY27,
            "discovery.repository",
            json!({"source_connection": conn("UNIX_HOST_ENVIRONMENT-7", "e")}),
            None,
        )
        .unwrap();
    assert_eq!(
        params_of(&repos["repositories"][0]),
        json!({"name": "py27-repo-UNIX_HOST_ENVIRONMENT-7"}),
        "{repos}"
    );

    // The older SDK answers with the single staged mount.
    let spec = c
        .invoke(
            PY27,
            "linked.mount_specification",
            json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
                   "staged_source": staged_source(json!({"mountPath": "/mnt/s"}))}),
            None,
        )
        .unwrap();
    assert_eq!(spec["staged_mount"]["mount_path"], "/mnt/s", "{spec}");

    let mut req = linked("ok");
    req["snapshot_parameters"] = json!({"parameters": pdo(json!({"resync": false}))});
    let snap = c
        .invoke(PY27, "linked.staged_post_snapshot", req, None)
        .unwrap();
    let meta = params_of(&snap["snapshot"]);
    assert_eq!(
        meta,
        json!({"operation": "linked.post_snapshot", "guid": "ls-guid-1", "resync": false}),
        "{snap}"
    );

    let vspec = c
        .invoke(
            PY27,
            "virtual.mount_specification",
            json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
                   "virtual_source": virtual_source(json!({"mountPath": "/mnt/v"}))}),
            None,
        )
        .unwrap();
    assert_eq!(vspec["mounts"][0]["mount_path"], "/mnt/v", "{vspec}");
    assert_eq!(vspec["ownership_spec"]["uid"], 1000, "{vspec}");
    let status = c
        .invoke(PY27, "virtual.status", virtual_req("ok"), None)
        .unwrap();
    assert_eq!(status["status"], "ACTIVE", "{status}");
    engine.cli(&["plugin", "delete", PY27]).ok();
}

#[test]
fn python27_errors_map_like_python311_ones_non_ascii_text_included() {
    let engine = Engine::start();
    engine.install(&build_plugin27("py27-staged"));
    let c = engine.client();

    let e = api_error(c.invoke(PY27, "virtual.status", virtual_req("user_error"), None));
    assert_eq!(e.code, ErrorCode::PluginUserError);
    assert_eq!(
        e.message,
        "requested user error: donn\u{e9}es \u{e9}chou\u{e9}es"
    );
    assert_eq!(e.action.as_deref(), Some("Set behavior to ok."));

    let e = api_error(c.invoke(PY27, "virtual.status", virtual_req("uncaught"), None));
    assert!(
        e.message.contains("ValueError") && e.message.contains("boom"),
        "{e:?}"
    );

    let e = api_error(c.invoke(PY27, "virtual.status", virtual_req("crash"), None));
    assert!(
        e.message
            .contains("worker died during virtual.status (killed by signal 9)"),
        "{e:?}"
    );
    // A fresh 2.7 worker takes the next call.
    let status = c
        .invoke(PY27, "virtual.status", virtual_req("ok"), None)
        .unwrap();
    assert_eq!(status["status"], "ACTIVE");
}

fn tampered(
    dir: &Path,
    name: &str,
    artifact: &Path,
    edit: impl FnOnce(&mut Value),
) -> std::path::PathBuf {
    let mut v: Value = serde_json::from_slice(&std::fs::read(artifact).unwrap()).unwrap();
    edit(&mut v);
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

/// Rewrites every `.pyc` of the artifact's sourceCode with `edit`.
fn with_pyc(v: &mut Value, edit: impl Fn(&mut Vec<u8>)) {
    use std::io::{Read, Write};
    let b64 = base64::engine::general_purpose::STANDARD;
    let zip_bytes = b64.decode(v["sourceCode"].as_str().unwrap()).unwrap();
    let mut zin = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let name = f.name().to_owned();
        if f.is_dir() {
            out.add_directory(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            continue;
        }
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        if name.ends_with(".pyc") {
            edit(&mut data);
        }
        out.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(&data).unwrap();
    }
    v["sourceCode"] = json!(b64.encode(out.finish().unwrap().into_inner()));
}

#[test]
fn python38_and_broken_python27_bytecode_are_refused_and_nothing_is_stored() {
    let engine = Engine::start();
    let good = build_plugin27("py27-staged");
    let dir = tempfile::tempdir().unwrap();
    let py38 = tampered(dir.path(), "py38.json", &good, |v| {
        v["language"] = json!("PYTHON38")
    });
    // 3.11 magic in a 2.7 artifact: refused while extracting.
    let magic = tampered(dir.path(), "magic.json", &good, |v| {
        with_pyc(v, |d| d[..4].copy_from_slice(&[0xa7, 0x0d, 0x0d, 0x0a]))
    });
    // The right magic, garbage after it: refused when the code loads.
    let garbage = tampered(dir.path(), "garbage.json", &good, |v| {
        with_pyc(v, |d| {
            for b in d.iter_mut().skip(8) {
                *b = 0xff;
            }
        })
    });
    let cases: &[(&Path, &[&str])] = &[
        (&py38, &["PYTHON38", "rebuild", "PYTHON311"]),
        (&magic, &["a7 0d 0d 0a", "PYTHON27", "CPython 2.7"]),
        (&garbage, &["cannot be loaded"]),
    ];
    for (file, needles) in cases {
        let out = engine.cli(&["plugin", "install", file.to_str().unwrap()]);
        let stderr = out.fails(3);
        for n in *needles {
            assert!(stderr.contains(n), "{n} not in: {stderr}");
        }
        assert_eq!(
            engine.cli(&["plugin", "list", "-o", "json"]).json(),
            json!([])
        );
    }
    let plugins = engine.data_dir.path().join("plugins");
    let left: Vec<_> = std::fs::read_dir(&plugins)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left behind in the plugin directory: {left:?}"
    );
}
