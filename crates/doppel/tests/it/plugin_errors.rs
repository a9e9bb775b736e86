//! How plugin failures reach the user, and what the engine refuses to install.

use std::path::Path;
use std::time::Duration;

use doppel_client::ClientError;
use doppel_model::{ApiError, ErrorCode};
use serde_json::{json, Value};

use crate::support::*;

const ALL_OPS: &str = "doppel-all-ops-staged";

fn status_request(behavior: &str) -> Value {
    json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
           "source_config": {"parameters": pdo(json!({"name": "sc"}))},
           "virtual_source": virtual_source(json!({"behavior": behavior, "mountPath": "/mnt/v"}))})
}

fn api_error(r: Result<Value, ClientError>) -> ApiError {
    match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn plugin_exceptions_map_to_their_error_kinds() {
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let c = engine.client();

    let e = api_error(c.invoke(
        ALL_OPS,
        "virtual.status",
        status_request("user_error"),
        None,
    ));
    assert_eq!(e.code, ErrorCode::PluginUserError);
    assert_eq!(e.message, "requested user error");
    assert_eq!(e.action.as_deref(), Some("Set behavior to ok."));
    assert_eq!(e.output.as_deref(), Some("details from the plugin"));

    let e = api_error(c.invoke(
        ALL_OPS,
        "virtual.status",
        status_request("runtime_error"),
        None,
    ));
    assert_eq!(e.code, ErrorCode::PluginFailed);
    assert!(
        e.message.starts_with("plugin runtime error:"),
        "{}",
        e.message
    );
    assert!(
        e.output.unwrap_or_default().contains("Traceback")
            || e.message.contains("IncorrectReturnType"),
        "no call stack kept"
    );

    let e = api_error(c.invoke(ALL_OPS, "virtual.start", status_request("uncaught"), None));
    assert_eq!(e.code, ErrorCode::PluginFailed);
    assert_eq!(e.message, "the plugin raised ValueError: boom");
    assert!(
        e.output.unwrap_or_default().contains("ValueError"),
        "the call stack is kept for the log"
    );

    let e = api_error(c.invoke(ALL_OPS, "virtual.stop", status_request("exit"), None));
    assert_eq!(e.code, ErrorCode::PluginFailed);
    assert!(e.message.contains("SystemExit"), "{}", e.message);

    // The same worker keeps serving after plugin-level errors.
    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );

    // The CLI prints the user error's parts apart and exits 6.
    let req = status_request("user_error").to_string();
    let out = engine.cli(&[
        "plugin",
        "invoke",
        ALL_OPS,
        "virtual.status",
        "--request",
        &req,
    ]);
    let stderr = out.fails(6);
    assert!(
        stderr.contains("error[plugin_user_error]: requested user error"),
        "{stderr}"
    );
    assert!(stderr.contains("action: Set behavior to ok."), "{stderr}");

    // Errors land in the plugin's error stream with their stack.
    let errors = engine
        .cli(&["plugin", "logs", ALL_OPS, "--level", "error"])
        .ok()
        .to_owned();
    assert!(
        errors.contains("requested user error") && errors.contains("ValueError: boom"),
        "{errors}"
    );
}

#[test]
fn a_hanging_or_crashing_worker_is_killed_and_replaced() {
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let c = engine.client();
    c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
        .unwrap();
    let pid1 = c.plugin_worker(ALL_OPS).unwrap()["pid"].as_u64().unwrap();

    let e = api_error(c.invoke(ALL_OPS, "virtual.status", status_request("hang"), Some(1.5)));
    assert_eq!(e.code, ErrorCode::PluginTimeout);
    assert!(
        e.message
            .contains("virtual.status did not finish within its deadline of 1.5s"),
        "{}",
        e.message
    );
    assert!(
        !Path::new(&format!("/proc/{pid1}")).exists() || is_zombie(pid1),
        "the hung worker {pid1} still runs"
    );
    assert!(
        c.plugin_worker(ALL_OPS).unwrap()["pid"].is_null(),
        "no worker should run after a kill"
    );

    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );
    let pid2 = c.plugin_worker(ALL_OPS).unwrap()["pid"].as_u64().unwrap();
    assert_ne!(pid1, pid2);

    let e = api_error(c.invoke(ALL_OPS, "virtual.status", status_request("crash"), None));
    assert_eq!(e.code, ErrorCode::PluginFailed);
    assert!(
        e.message
            .contains("worker died during virtual.status (killed by signal 9)"),
        "{}",
        e.message
    );
    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );
    assert!(
        engine.client().health().is_ok(),
        "the engine must survive its workers"
    );
}

fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn while_one_worker_hangs_others_serve_and_killing_it_fails_only_its_call() {
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let c = engine.client();
    c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
        .unwrap();
    let pid = c.plugin_worker(ALL_OPS).unwrap()["pid"].as_u64().unwrap();

    let client = engine.client();
    let call = std::thread::spawn(move || {
        client.invoke(ALL_OPS, "virtual.start", status_request("hang"), Some(60.0))
    });
    // Wait until the plugin is inside the operation (it logs its name first).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !engine
        .cli(&["plugin", "logs", ALL_OPS])
        .ok()
        .contains("op virtual.start")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the hanging call never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another call of the same plugin does not wait for the hanging one: a
    // second worker serves it.
    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );
    assert!(!call.is_finished(), "the hanging call ended early");
    let pids = c.plugin_worker(ALL_OPS).unwrap()["pids"].clone();
    assert_eq!(pids.as_array().map(Vec::len), Some(2), "{pids}");
    let other = pids
        .as_array()
        .unwrap()
        .iter()
        .find(|p| **p != pid)
        .cloned()
        .unwrap_or_else(|| panic!("{pid} not in {pids}"));
    // SAFETY: kill(2) of the worker process the engine started for this test.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let e = api_error(call.join().unwrap());
    assert_eq!(e.code, ErrorCode::PluginFailed);
    assert!(
        e.message
            .contains("worker died during virtual.start (killed by signal 9)"),
        "{}",
        e.message
    );
    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );
    assert_eq!(
        c.plugin_worker(ALL_OPS).unwrap()["pids"],
        json!([other]),
        "the killed worker is gone, the other serves"
    );
}

#[test]
fn library_callbacks_get_actionable_errors_and_logs_fan_out_by_level() {
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let c = engine.client();
    c.invoke(ALL_OPS, "virtual.start", status_request("lib_calls"), None)
        .unwrap();
    let info = engine
        .cli(&["plugin", "logs", ALL_OPS, "--level", "info"])
        .ok()
        .to_owned();
    // The connection names an environment that does not exist: the plugin
    // gets actionable errors it can catch, and carries on.
    for lib in ["run_bash", "run_expect"] {
        assert!(
            info.contains(&format!(
                "lib {lib} error 1 no environment UNIX_HOST_ENVIRONMENT-3"
            )),
            "{lib}:\n{info}"
        );
    }
    assert!(
        info.contains("lib run_sync error 1 run_sync copies into the dataset being synced"),
        "{info}"
    );
    assert!(
        info.contains("lib run_powershell error 1 run_powershell needs a Windows host"),
        "{info}"
    );
    assert!(
        info.contains(
            "lib retrieve_credentials ok PasswordCredentials username=dbuser password=<6 chars>"
        ),
        "{info}"
    );
    assert!(info.contains("lib upgrade_password error 1 upgrade_password is only allowed while a plugin upgrade runs"), "{info}");
    assert!(!info.contains("dbpass"), "a credential reached the log");

    c.invoke(ALL_OPS, "virtual.stop", status_request("log_levels"), None)
        .unwrap();
    let read = |level: &str| {
        engine
            .cli(&["plugin", "logs", ALL_OPS, "--level", level])
            .ok()
            .to_owned()
    };
    let (debug, info, error) = (read("debug"), read("info"), read("error"));
    assert!(
        debug.contains("level debug virtual.stop") && !info.contains("level debug virtual.stop")
    );
    assert!(info.contains("level info virtual.stop") && !error.contains("level info virtual.stop"));
    assert!(
        error.contains("level warning virtual.stop") && error.contains("level error virtual.stop")
    );
    // Output written with print() and to fd 1 lands in the debug stream, never in the protocol.
    assert!(
        debug.contains("print from virtual.stop") && debug.contains("fd 1 write from virtual.stop"),
        "{debug}"
    );
    assert!(debug.contains("stderr from virtual.stop"));
    let tail = engine
        .cli(&[
            "plugin", "logs", ALL_OPS, "--level", "debug", "--tail", "2", "-o", "json",
        ])
        .json();
    assert_eq!(tail["lines"].as_array().unwrap().len(), 2);
}

/// Writes a tampered copy of an artifact and returns its path.
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

#[test]
fn bad_artifacts_are_refused_with_a_clear_message_and_nothing_is_stored() {
    let engine = Engine::start();
    let good = build_plugin("all-ops-staged");
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.json");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_json = dir.path().join("notjson.json");
    std::fs::write(&not_json, b"PK\x03\x04 this is not json").unwrap();
    use base64::Engine as _;
    let not_zip = tampered(dir.path(), "notzip.json", &good, |v| {
        v["sourceCode"] = json!(
            base64::engine::general_purpose::STANDARD.encode(b"definitely not a zip archive")
        );
    });
    let bad_schema = tampered(dir.path(), "schema.json", &good, |v| {
        v["virtualSourceDefinition"]["parameters"]["properties"]["recordSizeInKB"]["type"] =
            json!("string");
        v["snapshotSchema"]["type"] = json!(42);
    });
    let explodes = tampered(dir.path(), "explodes.json", &good, |v| {
        v["entryPoint"] = json!("explodes:plugin")
    });
    let nothing = tampered(dir.path(), "nothing.json", &good, |v| {
        v["entryPoint"] = json!("plugin_runner:nothing_here")
    });
    let py27 = tampered(dir.path(), "py27.json", &good, |v| {
        v["language"] = json!("PYTHON38");
        v["hostTypes"] = json!(["WINDOWS"]);
    });

    let cases: &[(&Path, &str)] = &[
        (&truncated, "not valid JSON"),
        (&not_json, "not valid JSON"),
        (&not_zip, "sourceCode is not a zip archive"),
        (&bad_schema, "recordSizeInKB"),
        (&explodes, "RuntimeError: explodes on import"),
        (&nothing, "nothing_here"),
        (&py27, "PYTHON38"),
    ];
    for (file, needle) in cases {
        let out = engine.cli(&["plugin", "install", file.to_str().unwrap()]);
        let stderr = out.fails(3);
        assert!(
            stderr.contains(needle),
            "{}: expected {needle:?} in:\n{stderr}",
            file.display()
        );
    }
    let out = engine.cli(&["plugin", "install", bad_schema.to_str().unwrap()]);
    assert!(
        out.stderr.contains("snapshotSchema"),
        "every violation is listed:\n{}",
        out.stderr
    );
    let out = engine.cli(&["plugin", "install", py27.to_str().unwrap()]);
    assert!(
        out.stderr.contains("WINDOWS") && out.stderr.contains("supported"),
        "{}",
        out.stderr
    );

    assert_eq!(
        engine.cli(&["plugin", "list", "-o", "json"]).json(),
        json!([])
    );
    let plugins_dir = engine.data_dir.path().join("plugins");
    let left: Vec<_> = std::fs::read_dir(&plugins_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "refused installs left files behind: {left:?}"
    );
}

#[test]
fn an_upgrade_needs_a_higher_build_number() {
    let engine = Engine::start();
    let v1 = build_plugin("all-ops-staged");
    let v2 = build_plugin_with("all-ops-staged", "build-1.1", |src| {
        let cfg = src.join("plugin_config.yml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("buildNumber: 1.0.0", "buildNumber: 1.1.0");
        std::fs::write(cfg, text).unwrap();
    });
    engine.install(&v1);
    let c = engine.client();
    c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
        .unwrap();
    let old_pid = c.plugin_worker(ALL_OPS).unwrap()["pid"].as_u64().unwrap();

    let up = engine.install(&v2);
    assert_eq!(up["build_number"], "1.1");
    assert!(
        c.plugin_worker(ALL_OPS).unwrap()["pid"].is_null(),
        "the old version's worker {old_pid} must stop"
    );
    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );

    for older in [&v1, &v2] {
        let out = engine.cli(&["plugin", "install", older.to_str().unwrap()]);
        assert!(out.fails(5).contains("is not newer"), "{}", out.stderr);
    }
    let list = engine.cli(&["plugin", "list", "-o", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["build_number"], "1.1");
    let code_dirs: Vec<_> = std::fs::read_dir(
        engine
            .data_dir
            .path()
            .join("plugins")
            .join(list[0]["id"].as_str().unwrap()),
    )
    .unwrap()
    .flatten()
    .map(|e| e.file_name().to_string_lossy().into_owned())
    .filter(|n| n.starts_with("build-"))
    .collect();
    assert_eq!(
        code_dirs,
        vec!["build-1.1".to_owned()],
        "the old build's code must be removed"
    );
}

#[test]
fn extra_workers_stop_when_idle_and_one_stays_warm() {
    let engine = Engine::start_with(&["--plugin-worker-idle", "0.5"]);
    engine.install(&build_plugin("all-ops-staged"));
    // Calls that arrive together on a cold plugin each start a worker.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let c = engine.client();
            std::thread::spawn(move || {
                c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().unwrap().unwrap()["status"], "ACTIVE");
    }
    let c = engine.client();
    let busy = c.plugin_worker(ALL_OPS).unwrap()["pids"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        busy.len() >= 2,
        "parallel calls should have started several workers: {busy:?}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let warm = loop {
        let pids = c.plugin_worker(ALL_OPS).unwrap()["pids"]
            .as_array()
            .unwrap()
            .clone();
        if pids.len() == 1 {
            break pids[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "idle workers were not stopped: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(busy.contains(&warm), "{warm} was not one of {busy:?}");
    // A worker leaves the list when its stop begins; it is given a moment
    // to exit on its own before it is killed, so its process may outlive
    // the list entry briefly, but not the deadline.
    for pid in busy.iter().filter(|p| **p != warm) {
        let pid = pid.as_u64().unwrap();
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "worker {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The warm worker serves the next call without a start.
    assert_eq!(
        c.invoke(ALL_OPS, "virtual.status", status_request("ok"), None)
            .unwrap()["status"],
        "ACTIVE"
    );
    assert_eq!(c.plugin_worker(ALL_OPS).unwrap()["pids"], json!([warm]));
}
