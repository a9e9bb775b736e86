//! PYTHON27 plugins (dvp 0.3 to 3.x), built with the real dvp 3.1.0 and run
//! unmodified on the engine's CPython 2.7 workers, confined like 3.11 ones.

use std::path::Path;

use base64::Engine as _;
use doppel_client::ClientError;
use doppel_model::{ApiError, ErrorCode};
use doppel_testworld::{plugins, World};
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

/// A mount as py27-staged's `recv` lines show it. The 2.7 SDK turns an
/// unset proto string into "", never None.
fn mount_seen(env_ref: &str, path: &str) -> Value {
    json!({"environment": env_ref, "mount_path": path, "shared_path": ""})
}

/// Operations of the contract that dvp 3.1.0 does not have: its manifest
/// cannot declare them, so they are refused before any worker is asked.
const NOT_IN_DVP3: [&str; 7] = [
    "linked.staged_source_size",
    "linked.staged_pre_source_to_physical",
    "linked.staged_source_to_physical",
    "virtual.virtual_source_size",
    "virtual.virtual_pre_source_to_physical",
    "virtual.virtual_source_to_physical",
    "virtual.cleanup",
];

#[test]
fn every_operation_of_the_python27_plugin_gets_the_request_in_the_shape_its_sdk_parses() {
    let engine = Engine::start();
    engine.install(&build_plugin27("py27-staged"));
    let c = engine.client();
    let call = |op: &str, req: Value| invoke_ok(&c, PY27, op, req);
    let seen = |op: &str| last_received(&engine, PY27, op);
    let ss = staged_source(linked_ok());
    let vs = virtual_source(virtual_ok());
    let source = conn_seen("UNIX_HOST_ENVIRONMENT-1", "source");
    let repo_seen = json!({"name": "repo1"});
    let sc_seen = json!({"name": "sc1", "path": "/data/sc1", "running": true});
    let snap_seen = json!({"operation": "linked.post_snapshot", "sourceConfigName": "sc1"});
    // The behavior's default is filled in by the generated class.
    let staged_seen = json!({
        "guid": "ls-guid-1",
        "parameters": {"behavior": "ok"},
        "source_connection": source,
        "staged_connection": conn_seen("UNIX_HOST_ENVIRONMENT-2", "staging"),
        "mount": mount_seen("UNIX_HOST_ENVIRONMENT-2", "/mnt/staging/ls1"),
    });
    let virtual_seen = json!({
        "guid": "vs-guid-1",
        "parameters": {"behavior": "ok", "mountPath": "/mnt/vdb1"},
        "connection": conn_seen("UNIX_HOST_ENVIRONMENT-3", "target"),
        "mounts": [mount_seen("UNIX_HOST_ENVIRONMENT-3", "/mnt/vdb1")],
    });

    let out = call("discovery.repository", discovery_request());
    assert_eq!(
        params_of(&out["repositories"][0])["name"],
        "py27-repo-UNIX_HOST_ENVIRONMENT-1"
    );
    assert_eq!(
        seen("discovery.repository"),
        json!({"source_connection": source})
    );
    let out = call("discovery.source_config", source_config_discovery_request());
    assert_eq!(params_of(&out["source_configs"][0])["name"], "repo1-config");
    assert_eq!(
        seen("discovery.source_config"),
        json!({"source_connection": source, "repository": repo_seen})
    );

    // Snapshot parameters: null (a policy sync) stays None, a resync's and
    // a plain sync's reach the plugin as sent, `{}` gets the schema default.
    let plain = json!({"parameters": pdo(json!({"resync": false}))});
    let empty = json!({"parameters": pdo(json!({}))});
    for (params, expected) in [
        (policy_sync(), Value::Null),
        (resync_params(), json!({"resync": true})),
        (plain, json!({"resync": false})),
        (empty, json!({"resync": false})),
    ] {
        assert_eq!(
            call("linked.staged_pre_snapshot", sync_request(&ss, &params)),
            json!({})
        );
        let snap = call("linked.staged_post_snapshot", sync_request(&ss, &params));
        assert_eq!(params_of(&snap["snapshot"])["resync"], expected["resync"]);
        for op in ["linked.pre_snapshot", "linked.post_snapshot"] {
            assert_eq!(
                seen(op),
                json!({"staged_source": staged_seen, "repository": repo_seen,
                       "source_config": sc_seen, "snapshot_parameters": expected}),
                "{op} with {params}"
            );
        }
    }

    for (op, logged) in [
        ("linked.start_staging", "linked.start_staging"),
        ("linked.stop_staging", "linked.stop_staging"),
        ("linked.worker", "linked.worker"),
    ] {
        assert_eq!(call(op, staged_request(&ss, true)), json!({}), "{op}");
        assert_eq!(
            seen(logged),
            json!({"staged_source": staged_seen, "repository": repo_seen, "source_config": sc_seen}),
            "{op}"
        );
    }
    assert_eq!(
        call("linked.status", staged_request(&ss, true))["status"],
        "ACTIVE"
    );
    assert_eq!(
        call("linked.status", staged_request(&ss, false))["status"],
        "INACTIVE"
    );
    assert_eq!(seen("linked.status")["source_config"]["running"], false);

    // Before the first mount there is no staged mount: the 2.7 SDK still
    // makes one, all empty.
    let mut unmounted = ss.clone();
    unmounted.as_object_mut().unwrap().remove("staged_mount");
    let spec = call(
        "linked.mount_specification",
        json!({"repository": repo(), "staged_source": unmounted}),
    );
    assert_eq!(spec["staged_mount"]["mount_path"], "/mnt/staging/ls-guid-1");
    assert!(spec.get("mounts").is_none(), "{spec}");
    let mut staged_unmounted = staged_seen.clone();
    staged_unmounted["mount"] = json!({"environment": "", "mount_path": "", "shared_path": ""});
    assert_eq!(
        seen("linked.mount_specification"),
        json!({"staged_source": staged_unmounted, "repository": repo_seen})
    );

    let configured = call(
        "virtual.configure",
        json!({"repository": repo(), "snapshot": snapshot(), "virtual_source": vs}),
    );
    assert_eq!(
        params_of(&configured["source_config"]),
        json!({"name": "vdb-vs-guid-1", "path": "/mnt/vdb1", "origin": "configure"})
    );
    assert_eq!(
        seen("virtual.configure"),
        json!({"virtual_source": virtual_seen, "repository": repo_seen, "snapshot": snap_seen})
    );
    let mut unconf = virtual_request(&vs, true);
    unconf["deleteFlag"] = json!(true);
    assert_eq!(call("virtual.unconfigure", unconf), json!({}));
    let around_vdb =
        json!({"virtual_source": virtual_seen, "repository": repo_seen, "source_config": sc_seen});
    assert_eq!(seen("virtual.unconfigure"), around_vdb);
    let mut reconf = virtual_request(&vs, true);
    reconf["snapshot"] = snapshot();
    let reconfigured = call("virtual.reconfigure", reconf);
    assert_eq!(params_of(&reconfigured["source_config"]), sc_seen);
    assert_eq!(
        seen("virtual.reconfigure"),
        json!({"virtual_source": virtual_seen, "repository": repo_seen,
               "source_config": sc_seen, "snapshot": snap_seen})
    );
    for op in ["virtual.start", "virtual.stop", "virtual.pre_snapshot"] {
        assert_eq!(call(op, virtual_request(&vs, true)), json!({}), "{op}");
        assert_eq!(seen(op), around_vdb, "{op}");
    }
    let snap = call("virtual.post_snapshot", virtual_request(&vs, true));
    assert_eq!(
        params_of(&snap["snapshot"]),
        json!({"operation": "virtual.post_snapshot", "guid": "vs-guid-1"})
    );
    assert_eq!(
        call("virtual.status", virtual_request(&vs, false))["status"],
        "INACTIVE"
    );
    assert_eq!(seen("virtual.status")["source_config"]["running"], false);
    let vspec = call(
        "virtual.mount_specification",
        json!({"repository": repo(), "virtual_source": vs}),
    );
    assert_eq!(vspec["mounts"][0]["mount_path"], "/mnt/vdb1", "{vspec}");
    assert_eq!(
        seen("virtual.mount_specification"),
        json!({"virtual_source": virtual_seen, "repository": repo_seen})
    );
    // dvp 3.1.0 has initialize (empty VDBs), unlike source size, V2P and cleanup.
    let init = call(
        "virtual.initialize",
        json!({"repository": repo(), "virtual_source": vs}),
    );
    assert_eq!(params_of(&init["source_config"])["origin"], "initialize");
    assert_eq!(
        seen("virtual.initialize"),
        json!({"virtual_source": virtual_seen, "repository": repo_seen})
    );

    // Every operation above ran, each logged once per call.
    let called = operations_called(&engine, PY27);
    for op in DVP3_STAGED_OPERATIONS {
        assert!(called.iter().any(|c| c == op), "{op} not in {called:?}");
    }
    assert_eq!(called.len(), 26, "{called:?}");

    for op in NOT_IN_DVP3 {
        let refused = engine.cli(&["plugin", "invoke", PY27, op]);
        let stderr = refused.fails(3);
        assert!(
            stderr.contains(&format!("{PY27} does not implement {op}")),
            "{op}: {stderr}"
        );
    }
    assert_eq!(operations_called(&engine, PY27), called);
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

const DIRECTORY_ID: &str = "113a040e-d04c-4923-a2ee-03e730339ac7";

/// Edits a file of a plugin copy in place.
fn edit(file: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(file).unwrap();
    std::fs::write(file, edit(text)).unwrap();
}

/// The directory example as an older release would have shipped it: built
/// for PYTHON27 by dvp 3.1.0 (no V2P schema, which that SDK lacks), build
/// 0.9.0, whose linked source called the SSH port `port`.
fn directory27() -> std::path::PathBuf {
    plugins::build_example_with("directory", "py27-port", plugins::Sdk::Dvp3, |src| {
        edit(&src.join("plugin_config.yml"), |t| {
            t.replace("language: PYTHON311", "language: PYTHON27")
                .replace("buildNumber: 1.0.0", "buildNumber: 0.9.0")
        });
        let schema = src.join("schema.json");
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&schema).unwrap()).unwrap();
        v.as_object_mut()
            .unwrap()
            .remove("virtualToPhysicalDefinition");
        let props = v["linkedSourceDefinition"]["properties"]
            .as_object_mut()
            .unwrap();
        let port = props.remove("sshPort").unwrap();
        props.insert("port".into(), port);
        std::fs::write(&schema, v.to_string()).unwrap();
        edit(&src.join("src/plugin_runner.py"), |t| {
            t.replace("params.ssh_port", "params.port")
        });
    })
}

/// The example as it is (PYTHON311, build 1.0.0), plus the migration that
/// renames 0.9.0's `port` to `sshPort`.
fn directory311_migrating() -> std::path::PathBuf {
    plugins::build_example_with("directory", "port-migration", plugins::Sdk::Dvp5, |src| {
        edit(&src.join("src/plugin_runner.py"), |t| {
            t + r#"

@plugin.upgrade.linked_source("1.0")
def port_is_ssh_port(old_linked_source):
    new = dict(old_linked_source)
    if "port" in new:
        new["sshPort"] = new.pop("port")
    return new
"#
        });
    })
}

#[test]
fn the_directory_plugin_built_for_python27_runs_its_lifecycle_and_upgrades_to_its_python311_build()
{
    let world = World::new(&["source", "staging", "target"]);
    let (source, staging, target) = (
        world.host("source"),
        world.host("staging"),
        world.host("target"),
    );
    source.mkdir("/srv/data/tree", "alice");
    source.put_file(
        "/srv/data/tree/hello.txt",
        "caf\u{e9} 1\n".as_bytes(),
        "alice",
    );
    target.mkdir("/srv/vdbs", "delphix");
    source.mkdir("/srv/restore", "delphix");
    let engine = Engine::start();
    let installed = engine.install(&directory27());
    assert_eq!(installed["language"], "PYTHON27", "{installed}");
    let sc = add_directory_envs(&engine, source, staging, target);
    // Each toolkit carries the jq that plugins reach through DLPX_BIN_JQ.
    assert_eq!(
        target.sh("delphix", "~/.doppel/toolkit/bin/jq -n 1+1"),
        "2\n"
    );
    let params = json!({"sourceHost": source.address().to_string(), "sourceUser": "alice", "port": source.port()}).to_string();
    let linked = engine
        .cli(&[
            "dsource",
            "link",
            "--sourceconfig",
            &sc,
            "--staging-env",
            "staging",
            "--params",
            &params,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(linked["snapshots"], 1, "{linked}");
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "dev",
            "--from",
            "tree",
            "--env",
            "target",
            "--params",
            r#"{"mountPath": "/srv/vdbs/dev"}"#,
        ])
        .ok();
    let cat = || target.sh("delphix", "cat /srv/vdbs/dev/hello.txt");
    assert_eq!(cat(), "caf\u{e9} 1\n");

    // A plain sync sends the snapshot parameters {"resync": false} (never
    // null, which this plugin, like published ones, takes for a policy sync).
    source.put_file("/srv/data/tree/hello.txt", b"version 2\n", "alice");
    engine.cli(&["dsource", "sync", "tree"]).ok();
    let logs = engine.cli(&[
        "plugin",
        "logs",
        "directory",
        "--level",
        "info",
        "--tail",
        "200",
    ]);
    let logs = logs.ok();
    assert!(logs.contains("resync of /srv/data/tree"), "{logs}");
    assert!(
        logs.lines().any(|l| l.ends_with("sync of /srv/data/tree")) && !logs.contains("(policy)"),
        "{logs}"
    );
    engine.cli(&["vdb", "refresh", "dev"]).ok();
    assert_eq!(cat(), "version 2\n");
    engine.cli(&["vdb", "snapshot", "dev"]).ok();
    let vdb_snapshot = engine
        .cli(&["snapshot", "list", "--dataset", "dev", "-o", "json"])
        .json()
        .as_array()
        .unwrap()
        .last()
        .unwrap()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    target.sh("delphix", "echo scribbled > /srv/vdbs/dev/hello.txt");
    engine
        .cli(&["vdb", "rewind", "dev", "--to", &vdb_snapshot])
        .ok();
    assert_eq!(cat(), "version 2\n");

    // dvp 3.1.0 has no V2P: refused before anything starts.
    let v2p = [
        "vdb",
        "export",
        "dev",
        "--env",
        "source",
        "--target",
        "/srv/restore/dev",
    ];
    let refused = engine.cli(&v2p);
    let stderr = refused.fails(5);
    assert!(
        stderr.contains("has no V2P") && stderr.contains("PYTHON27"),
        "{stderr}"
    );
    assert!(!source.exists("/srv/restore/dev"));

    // An upgrade whose build lacks the migration would leave the dSource's
    // `port` invalid for the new schema: refused, nothing changed.
    let out = engine.cli(&[
        "plugin",
        "install",
        plugins::build_example("directory").to_str().unwrap(),
    ]);
    let stderr = out.fails(3);
    assert!(
        stderr.contains("DSOURCE-1") && stderr.contains("port"),
        "{stderr}"
    );
    let shown = engine
        .cli(&["plugin", "show", DIRECTORY_ID, "-o", "json"])
        .json();
    assert_eq!(
        (shown["language"].as_str(), shown["build_number"].as_str()),
        (Some("PYTHON27"), Some("0.9")),
        "{shown}"
    );

    // With its migration the 3.11 build takes over the 2.7 build's objects.
    let upgraded = engine.install(&directory311_migrating());
    assert_eq!(upgraded["language"], "PYTHON311", "{upgraded}");
    let ds = engine
        .cli(&["dsource", "show", "tree", "-o", "json"])
        .json();
    assert_eq!(ds["parameters"]["sshPort"], source.port(), "{ds}");
    assert!(ds["parameters"].get("port").is_none(), "{ds}");
    source.put_file("/srv/data/tree/hello.txt", b"version 3\n", "alice");
    engine.cli(&["dsource", "sync", "tree"]).ok();
    engine.cli(&["vdb", "refresh", "dev"]).ok();
    assert_eq!(cat(), "version 3\n");
    engine.cli(&["vdb", "snapshot", "dev"]).ok();
    engine.cli(&v2p).ok();
    assert_eq!(
        source.sh("delphix", "cat /srv/restore/dev/hello.txt"),
        "version 3\n"
    );

    engine.cli(&["vdb", "delete", "dev"]).ok();
    engine.cli(&["dsource", "delete", "tree"]).ok();
    assert_eq!(
        engine.cli(&["mount", "list", "-o", "json"]).json(),
        json!([])
    );
}

const ALL_OPS: &str = "doppel-all-ops-staged";

/// The operations (as the test plugins log them) that only the 3.11 SDK
/// has: dropped from all-ops-staged's sequence before comparing.
const ONLY_IN_PYTHON311: [&str; 7] = [
    "linked.source_size",
    "linked.pre_source_to_physical",
    "linked.source_to_physical",
    "virtual.source_size",
    "virtual.pre_source_to_physical",
    "virtual.source_to_physical",
    "virtual.cleanup",
];

/// One engine workflow over a dSource `name` of the plugin `plugin_id`
/// (its first discovered source config) and its VDB `<name>-vdb`, all on
/// the environment `host`: link, show, sync, resync, disable and enable the
/// dSource, provision and snapshot the VDB, sync again so that a refresh
/// has a newer snapshot, refresh, snapshot, rewind to that snapshot, stop,
/// start, disable and enable the VDB, delete both; then create an empty
/// VDB and delete it.
fn lifecycle(engine: &Engine, plugin_id: &str, name: &str) {
    let configs = engine.cli(&["sourceconfig", "list", "-o", "json"]).json();
    let sc = configs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["plugin"] == plugin_id)
        .unwrap_or_else(|| panic!("no source config of {plugin_id}: {configs}"))["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked_params =
        json!({"behavior": "ok", "mountPath": format!("/srv/stage/{name}")}).to_string();
    let vdb = format!("{name}-vdb");
    let vdb_params =
        json!({"behavior": "ok", "mountPath": format!("/srv/vdbs/{name}")}).to_string();
    let empty = format!("{name}-empty");
    let empty_params =
        json!({"behavior": "ok", "mountPath": format!("/srv/vdbs/{empty}")}).to_string();
    let steps: [&[&str]; 10] = [
        &[
            "dsource",
            "link",
            "--name",
            name,
            "--sourceconfig",
            &sc,
            "--staging-env",
            "host",
            "--params",
            &linked_params,
        ],
        // Shows the plugin's status (and, where there is one, its size).
        &["dsource", "show", name],
        &["dsource", "sync", name],
        &["dsource", "resync", name],
        &["dsource", "disable", name],
        &["dsource", "enable", name],
        &[
            "vdb",
            "provision",
            "--name",
            &vdb,
            "--from",
            name,
            "--env",
            "host",
            "--params",
            &vdb_params,
        ],
        &["vdb", "snapshot", &vdb],
        &["dsource", "sync", name],
        &["vdb", "refresh", &vdb],
    ];
    for step in steps {
        engine.cli(step).ok();
    }
    engine.cli(&["vdb", "snapshot", &vdb]).ok();
    let snapshots = engine
        .cli(&["snapshot", "list", "--dataset", &vdb, "-o", "json"])
        .json();
    let latest = snapshots.as_array().unwrap().last().unwrap()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    for step in [
        ["vdb", "rewind", &vdb, "--to", &latest].as_slice(),
        &["vdb", "stop", &vdb],
        &["vdb", "start", &vdb],
        &["vdb", "disable", &vdb],
        &["vdb", "enable", &vdb],
        &["vdb", "delete", &vdb],
        &["dsource", "delete", name],
        &[
            "vdb",
            "create-empty",
            "--name",
            &empty,
            "--plugin",
            plugin_id,
            "--env",
            "host",
            "--params",
            &empty_params,
        ],
        &["vdb", "delete", &empty],
    ] {
        engine.cli(step).ok();
    }
}

/// What a workflow's call handed a staged test plugin, without what the
/// two plugins differ in by design (names, references, the fields of their
/// own objects): which arguments it got, whether the staging mount was
/// set, how many mounts the VDB had, the snapshot parameters, and whose
/// snapshot it was about.
fn outline(received: &Value) -> Value {
    json!({
        "arguments": received.as_object().unwrap().keys().collect::<Vec<_>>(),
        "staged_mount": received
            .pointer("/staged_source/mount/mount_path")
            .map(|p| p != ""),
        "virtual_mounts": received
            .pointer("/virtual_source/mounts")
            .map(|m| m.as_array().unwrap().len()),
        "snapshot_parameters": received.get("snapshot_parameters"),
        "snapshot": received.pointer("/snapshot/operation"),
    })
}

#[test]
fn one_workflow_calls_the_same_operations_of_a_python27_and_a_python311_plugin() {
    let world = World::new(&["host"]);
    let host = world.host("host");
    host.mkdir("/srv/stage", "delphix");
    host.mkdir("/srv/vdbs", "delphix");
    let engine = Engine::start();
    let new = engine.install(&build_plugin("all-ops-staged"));
    let old = engine.install(&build_plugin27("py27-staged"));
    // Discovery runs through both plugins.
    engine.add_env_with_password("host", host);
    lifecycle(&engine, new["id"].as_str().unwrap(), "tree311");
    lifecycle(&engine, old["id"].as_str().unwrap(), "tree27");
    assert_eq!(
        engine.cli(&["mount", "list", "-o", "json"]).json(),
        json!([])
    );

    let called_new = operations_called(&engine, ALL_OPS);
    assert!(
        called_new.iter().any(|o| o == "virtual.cleanup"),
        "deleting the 3.11 VDB calls cleanup: {called_new:?}"
    );
    let common = |called: Vec<String>| -> Vec<String> {
        called
            .into_iter()
            .filter(|o| !ONLY_IN_PYTHON311.contains(&o.as_str()))
            .collect()
    };
    let (new_ops, old_ops) = (common(called_new), common(operations_called(&engine, PY27)));
    assert_eq!(new_ops, old_ops, "PYTHON311 (left) and PYTHON27 (right)");
    for op in [
        "discovery.repository",
        "discovery.source_config",
        "linked.mount_specification",
        "linked.start_staging",
        "linked.pre_snapshot",
        "linked.post_snapshot",
        "linked.stop_staging",
        "linked.status",
        "virtual.mount_specification",
        "virtual.configure",
        "virtual.pre_snapshot",
        "virtual.post_snapshot",
        "virtual.unconfigure",
        "virtual.reconfigure",
        "virtual.stop",
        "virtual.start",
        "virtual.status",
        "virtual.initialize",
    ] {
        assert!(new_ops.iter().any(|o| o == op), "{op} in {new_ops:?}");
    }

    // Each call got the same arguments in both languages, mounted alike.
    let outlines = |plugin: &str| -> Vec<(String, Value)> {
        received_all(&engine, plugin)
            .into_iter()
            .filter(|(op, _)| !ONLY_IN_PYTHON311.contains(&op.as_str()))
            .map(|(op, r)| (op, outline(&r)))
            .collect()
    };
    let new_outlines = outlines(ALL_OPS);
    assert_eq!(new_outlines.len(), new_ops.len());
    assert_eq!(
        new_outlines,
        outlines(PY27),
        "PYTHON311 (left) and PYTHON27 (right)"
    );

    // Each sync got snapshot parameters, never null: the link's first sync
    // and the resync {"resync": true}, the plain syncs {"resync": false}.
    let resyncs = |plugin: &str| -> Vec<Value> {
        received(&engine, plugin, "linked.pre_snapshot")
            .into_iter()
            .map(|r| r["snapshot_parameters"].clone())
            .collect()
    };
    let (t, f) = (json!({"resync": true}), json!({"resync": false}));
    assert_eq!(
        resyncs(ALL_OPS),
        vec![t.clone(), f.clone(), t.clone(), f.clone()]
    );
    assert_eq!(resyncs(PY27), resyncs(ALL_OPS));
}
