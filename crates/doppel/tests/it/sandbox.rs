//! The worker sandbox against the hostile test plugin (tests/plugins/README.md):
//! each attempt to reach the engine's files, environment, network or
//! processes fails, limits hold, and nothing a plugin starts outlives its
//! worker.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use doppel_client::ClientError;
use doppel_model::ErrorCode;
use serde_json::{json, Value};

use crate::support::*;

const HOSTILE: &str = "doppel-hostile";
const HOSTILE_ID: &str = "ea0edde9-e789-47e2-bd42-2f4f9af48316";

/// What the plugin's sandbox environment may hold (see `sandbox.rs`).
const ALLOWED_ENV: &[&str] = &[
    "HOME",
    "LANG",
    "PATH",
    "PWD",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONNOUSERSITE",
    "TMPDIR",
];

/// Removes what an attack could have left on the machine, even when the
/// test fails: files it wrote and processes it left.
struct Leftovers {
    marker: String,
}

impl Leftovers {
    fn new() -> Leftovers {
        Leftovers {
            marker: format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        [&self.marker as &str, "import"]
            .iter()
            .flat_map(|m| {
                [
                    PathBuf::from(format!("/etc/doppel-hostile-{m}")),
                    PathBuf::from(format!("/doppel-hostile-{m}")),
                ]
            })
            .collect()
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for f in self.files() {
            let _ = std::fs::remove_file(f);
        }
        for pid in marked_processes(&self.marker) {
            // SAFETY: kill(2) of a process this test's plugin started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Pids whose command line carries `marker`, from the whole machine's /proc.
fn marked_processes(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (up to a generous deadline, never asserting a duration) until no
/// process carries `marker`.
fn wait_until_gone(marker: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = marked_processes(marker);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes {left:?} of the plugin are still alive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request(params: Value) -> Value {
    json!({
        "direct_source": {"connection": conn("UNIX_HOST_ENVIRONMENT-1", "source"),
                          "linked_source": {"guid": "h-1", "parameters": pdo(params)}},
        "repository": {"parameters": pdo(json!({"name": "r"}))},
        "source_config": {"parameters": pdo(json!({"name": "sc"}))},
        "snapshot_parameters": {"parameters": {"json": "null"}},
    })
}

fn attack(engine: &Engine, params: Value, deadline: Option<f64>) -> Result<Value, ClientError> {
    engine
        .client()
        .invoke(
            HOSTILE,
            "linked.direct_post_snapshot",
            request(params),
            deadline,
        )
        .map(|v| {
            let report = params_of(&v["snapshot"])["report"].clone();
            serde_json::from_str(report.as_str().unwrap_or("null")).unwrap()
        })
}

fn engine_port(engine: &Engine) -> u16 {
    engine.url.rsplit(':').next().unwrap().parse().unwrap()
}

fn engine_rss_kib(engine: &Engine) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", engine.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn assert_denied(what: &str, outcome: &Value) {
    let s = outcome.as_str().unwrap_or_default();
    assert!(s.starts_with("error: "), "{what} was allowed: {outcome}");
}

/// The checks both the import-time and the operation's probes must pass.
fn assert_confined(when: &str, probe: &Value, with_data_dir: bool) {
    let uid = probe["uid"].as_u64().unwrap();
    assert!(
        (61184..=65519).contains(&uid),
        "{when}: the plugin runs as uid {uid}"
    );
    assert_eq!(probe["gid"], probe["uid"], "{when}");
    assert_eq!(probe["groups"], json!([]), "{when}");
    let none = "0000000000000000";
    assert_eq!(
        probe["status"],
        json!({"CapEff": none, "CapPrm": none, "CapBnd": none, "CapAmb": none,
               "NoNewPrivs": "1", "Seccomp": "2"}),
        "{when}: privileges"
    );
    let reads = probe["read"].as_object().unwrap();
    let mut expected = vec![
        "shadow",
        "proc1_environ",
        "parent_environ",
        "relative_secrets_key",
    ];
    if with_data_dir {
        expected.extend([
            "data:secrets.key",
            "data:metadata.db",
            "data:test-admin-password",
        ]);
    }
    for k in expected {
        assert_denied(&format!("{when}: reading {k}"), &reads[k]);
    }
    for var in probe["environ"].as_array().unwrap() {
        let var = var.as_str().unwrap();
        assert!(
            ALLOWED_ENV.contains(&var),
            "{when}: the plugin sees the variable {var}"
        );
    }
    for k in ["etc", "root", "code"] {
        assert_denied(&format!("{when}: writing {k}"), &probe["write"][k]);
    }
    for k in ["scratch", "tmp"] {
        let w = probe["write"][k].as_str().unwrap_or_default();
        assert!(w.starts_with("ok"), "{when}: writing {k} failed: {w}");
    }
    if with_data_dir {
        assert_denied(
            &format!("{when}: connecting to the engine"),
            &probe["connect"]["engine"],
        );
    }
    assert_denied(
        &format!("{when}: connecting to port 22"),
        &probe["connect"]["ssh"],
    );
    assert_eq!(
        probe["user_namespace"], "error: EPERM",
        "{when}: the plugin can make a user namespace"
    );
    // What ordinary plugins do still works under the filter.
    assert_eq!(probe["thread"], "ok: ran", "{when}");
    assert_eq!(probe["subprocess"], "ok: 0", "{when}");
    assert_eq!(
        probe["engine_processes"],
        json!([]),
        "{when}: the plugin sees the engine's processes"
    );
}

#[test]
fn a_hostile_plugin_reaches_nothing_outside_its_sandbox() {
    let leftovers = Leftovers::new();
    let marker = leftovers.marker.clone();
    let engine = Engine::start_with(&["--plugin-memory", "1GiB"]);
    let summary = engine.install(&build_plugin("hostile"));
    let data = engine.data_dir.path();
    let build = summary["build_number"].as_str().unwrap();
    let code_dir = data.join(format!("plugins/{HOSTILE_ID}/build-{build}"));
    let scratch = data.join(format!("plugins/{HOSTILE_ID}/scratch"));

    let report = attack(
        &engine,
        json!({"attack": "probe", "dataDir": data.to_str().unwrap(),
               "enginePort": engine_port(&engine), "marker": marker}),
        None,
    )
    .unwrap();
    assert_confined("at import", &report["import"], false);
    assert_confined("in an operation", &report["op"], true);

    // Nothing landed outside the scratch directory, which is the plugin's.
    for f in leftovers.files() {
        assert!(!f.exists(), "the plugin wrote {}", f.display());
    }
    let written: Vec<_> = std::fs::read_dir(&code_dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("doppel-hostile")
        })
        .map(|e| e.path())
        .collect();
    assert!(written.is_empty(), "the plugin wrote {written:?}");
    let own = scratch.join(format!("doppel-hostile-{marker}"));
    let meta = std::fs::metadata(&own)
        .unwrap_or_else(|e| panic!("{} (the scratch write): {e}", own.display()));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(u64::from(meta.uid()), report["op"]["uid"].as_u64().unwrap());

    // Memory: a 10 GiB allocation fails inside the plugin, the worker and
    // the engine carry on.
    let report = attack(&engine, json!({"attack": "memory"}), None).unwrap();
    assert_eq!(report["memory"], "error: MemoryError", "{report}");
    // Where cgroups are writable the worker also has one with the limit.
    let pid = engine.client().plugin_worker(HOSTILE).unwrap()["pid"]
        .as_u64()
        .unwrap();
    if Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        assert_eq!(
            memory_cgroup_limit(pid),
            Some(1 << 30),
            "the worker's memory cgroup limit"
        );
    } else {
        eprintln!("no cgroup v1 memory hierarchy here: its limit is not checked");
    }

    // A double-forked setsid child lives while its worker does (so this
    // test can see it), and dies with the worker on plugin delete.
    let report = attack(
        &engine,
        json!({"attack": "leave_child", "marker": marker}),
        None,
    )
    .unwrap();
    assert_eq!(report["child"], "ok: left a child", "{report}");
    assert!(
        !marked_processes(&marker).is_empty(),
        "the plugin's child did not start"
    );
    engine.cli(&["plugin", "delete", HOSTILE]).ok();
    wait_until_gone(&marker, "after plugin delete");
    assert!(
        !data.join(format!("plugins/{HOSTILE_ID}")).exists(),
        "the plugin's directory (scratch included) outlived its delete"
    );
}

/// The memory limit of `pid`'s cgroup v1 `memory` hierarchy, where there is one.
fn memory_cgroup_limit(pid: u64) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctl.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_owned())
    })?;
    let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
    std::fs::read_to_string(dir.join("memory.limit_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn what_a_plugin_leaves_dies_with_its_worker_on_deadline_and_engine_crash() {
    let leftovers = Leftovers::new();
    let marker = leftovers.marker.clone();
    let mut engine = Engine::start();
    engine.install(&build_plugin("hostile"));

    let err = attack(
        &engine,
        json!({"attack": "leave_child_and_hang", "marker": marker}),
        Some(3.0),
    )
    .unwrap_err();
    let ClientError::Api(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.code, ErrorCode::PluginTimeout, "{}", e.message);
    wait_until_gone(&marker, "after the deadline kill");

    let report = attack(
        &engine,
        json!({"attack": "leave_child", "marker": marker}),
        None,
    )
    .unwrap();
    assert_eq!(report["child"], "ok: left a child", "{report}");
    assert!(!marked_processes(&marker).is_empty());
    engine.crash_and_restart();
    wait_until_gone(&marker, "after the engine was killed");

    let report = attack(
        &engine,
        json!({"attack": "leave_child", "marker": marker}),
        None,
    )
    .unwrap();
    assert_eq!(report["child"], "ok: left a child", "{report}");
    assert!(!marked_processes(&marker).is_empty());
    engine.restart();
    wait_until_gone(&marker, "after the engine stopped");
}

fn plugin_log_text(engine: &Engine) -> (u64, String) {
    let dir = engine
        .data_dir
        .path()
        .join(format!("plugins/{HOSTILE_ID}/logs"));
    let mut size = 0;
    let mut text = String::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        size += e.metadata().unwrap().len();
        if e.file_name() == "debug.log" {
            text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
        }
    }
    (size, text)
}

#[test]
fn floods_from_a_plugin_are_cut_and_never_buffered_whole() {
    let engine = Engine::start();
    engine.install(&build_plugin("hostile"));
    // What the engine uses before any flood, to compare with.
    let before = engine_rss_kib(&engine);

    // 1 GiB as one line and 1 GiB of lines on the worker's stderr: the
    // call succeeds, the plugin log stays small and says what it dropped.
    let report = attack(&engine, json!({"attack": "flood_output"}), None).unwrap();
    assert_eq!(report["flood"], "ok: flooded", "{report}");
    let (size, log) = plugin_log_text(&engine);
    assert!(size < 8 << 20, "the plugin logs grew to {size} bytes");
    assert!(
        log.contains("[truncated 1073725440 bytes]"),
        "no marker for the cut 1 GiB line"
    );
    assert!(
        log.contains("stderr limit of 1 MiB"),
        "no marker for the dropped stderr"
    );

    // A 64 MiB log message (cut by the worker) and a 1 MiB one written
    // straight onto the protocol stream (cut by the engine).
    let report = attack(&engine, json!({"attack": "huge_logs"}), None).unwrap();
    assert_eq!(report["logs"], "ok: logged", "{report}");
    let (_, log) = plugin_log_text(&engine);
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 80 << 10, "a log line of {longest} bytes");
    assert!(
        log.lines()
            .any(|l| l.contains("LLLL") && l.contains("[truncated")),
        "the SDK log message was not cut with a marker"
    );
    assert!(
        log.lines().any(|l| l.contains("RRRR")
            && l.ends_with(&format!("[truncated {} bytes]", (1 << 20) - (64 << 10)))),
        "the raw log message was not cut with a marker"
    );

    // 1 GiB on the protocol stream without a newline: the worker is killed
    // once the line passes the limit, the call fails saying so.
    let err = attack(&engine, json!({"attack": "flood_protocol"}), None).unwrap_err();
    let ClientError::Api(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.code, ErrorCode::PluginFailed, "{}", e.message);
    assert!(e.message.contains("8 MiB"), "{}", e.message);

    engine.client().health().unwrap();
    let after = engine_rss_kib(&engine);
    assert!(
        after < before + 256 * 1024,
        "the engine grew from {before} KiB to {after} KiB"
    );
    // The next call gets a fresh worker.
    let report = attack(&engine, json!({"attack": "memory"}), None).unwrap();
    assert_eq!(report["memory"], "error: MemoryError", "{report}");
}

#[test]
fn without_the_sandbox_the_engine_says_so_and_plugins_still_run() {
    // Not the hostile plugin: unconfined, it would write into /etc.
    let engine = Engine::start_with(&["--plugin-sandbox", "off"]);
    engine.install(&build_plugin("all-ops-staged"));
    let status = engine
        .client()
        .invoke(
            "doppel-all-ops-staged",
            "virtual.status",
            json!({"repository": {"parameters": pdo(json!({"name": "r"}))},
                   "source_config": {"parameters": pdo(json!({"name": "sc"}))},
                   "virtual_source": virtual_source(json!({"behavior": "ok", "mountPath": "/mnt/v"}))}),
            None,
        )
        .unwrap();
    assert_eq!(status["status"], "ACTIVE");
    assert!(
        engine.log().contains("PLUGIN SANDBOX OFF"),
        "no warning in the engine log"
    );
}
