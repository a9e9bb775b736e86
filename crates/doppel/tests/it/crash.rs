//! The engine killed in the middle of a link and of a provision: at the
//! next start the jobs are failed and nothing half-made is left.

use std::time::{Duration, Instant};

use doppel_testworld::World;
use serde_json::json;

use crate::support::*;

const ALL_OPS: &str = "doppel-all-ops-staged";

/// Plugin workers of the engine whose data directory is `data`.
fn worker_pids(data: &std::path::Path) -> Vec<u32> {
    // Unconfined the worker's --root is under the data directory; confined
    // the bwrap processes that carry it bind it there (`--ro-bind <code> /plugin`).
    let pattern = format!("{}/plugins/", data.display());
    let out = std::process::Command::new("pgrep")
        .args(["-f", &pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_crash_mid_link_and_mid_provision_leaves_nothing_half_made() {
    let world = World::new(&["host"]);
    let host = world.host("host");
    host.mkdir("/srv/stage", "delphix");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, host.user("delphix").password.as_deref().unwrap()).unwrap();

    let mut engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    engine.add_env(
        "host",
        host,
        "delphix",
        "--password-file",
        pw.to_str().unwrap(),
    );
    let configs = engine.cli(&["sourceconfig", "list", "-o", "json"]).json();
    let (sc1, sc2) = (
        configs[0]["reference"].as_str().unwrap().to_owned(),
        configs[1]["reference"].as_str().unwrap().to_owned(),
    );
    let link = |name: &str, sc: &str, behavior: &str| {
        let params =
            json!({"behavior": behavior, "mountPath": format!("/srv/stage/{name}")}).to_string();
        engine
            .cli(&[
                "dsource",
                "link",
                "--name",
                name,
                "--sourceconfig",
                sc,
                "--staging-env",
                "host",
                "--params",
                &params,
                "--no-wait",
                "-o",
                "json",
            ])
            .json()
    };
    let good = link("good", &sc1, "ok");
    engine
        .cli(&["job", "wait", good["id"].as_str().unwrap()])
        .ok();

    // Three jobs that will be inside a plugin operation when the engine
    // dies: a link, and two provisions from the same snapshot, which run
    // together (different objects, each call in its own plugin worker).
    let stuck_link = link("stuck", &sc2, "hang");
    let provision = |name: &str| {
        let params =
            json!({"behavior": "hang", "mountPath": format!("/srv/stage/{name}")}).to_string();
        engine
            .cli(&[
                "vdb",
                "provision",
                "--name",
                name,
                "--from",
                "good",
                "--env",
                "host",
                "--params",
                &params,
                "--no-wait",
                "-o",
                "json",
            ])
            .json()
    };
    let stuck_vdb = provision("stuckvdb");
    let stuck_vdb2 = provision("stuckvdb2");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // All hang inside the plugin at once: the link with its dataset
        // made, the provisions with their clones and records.
        let log = engine.cli(&["plugin", "logs", ALL_OPS]).ok().to_owned();
        let linking = log.contains(&format!(
            "{}|linked.mount_specification] op linked.mount_specification",
            stuck_link["id"].as_str().unwrap()
        ));
        let provisioning = [&stuck_vdb, &stuck_vdb2]
            .iter()
            .all(|j| log.contains(&format!("{}|virtual.", j["id"].as_str().unwrap())))
            && engine
                .cli(&["vdb", "list", "-o", "json"])
                .json()
                .as_array()
                .is_some_and(|v| v.len() == 2);
        if linking && provisioning {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs never got under way:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let workers_before = worker_pids(engine.data_dir.path());
    assert!(
        workers_before.len() >= 3,
        "one worker per hanging call: {workers_before:?}"
    );
    assert_eq!(
        engine
            .cli(&["dsource", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2,
        "the half-made dSource exists before the crash"
    );

    engine.crash_and_restart();

    // The plugin workers died with the engine.
    std::thread::sleep(Duration::from_millis(300));
    for pid in &workers_before {
        assert!(
            !worker_pids(engine.data_dir.path()).contains(pid),
            "worker {pid} outlived the engine"
        );
    }
    for job in [&stuck_link, &stuck_vdb, &stuck_vdb2] {
        let j = engine
            .cli(&["job", "show", job["id"].as_str().unwrap(), "-o", "json"])
            .json();
        assert_eq!(j["state"], "failed", "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .unwrap()
                .contains("interrupted"),
            "{j}"
        );
    }
    // Reconciliation runs in the background after the start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let dsources = engine.cli(&["dsource", "list", "-o", "json"]).json();
        let vdbs = engine.cli(&["vdb", "list", "-o", "json"]).json();
        if dsources.as_array().unwrap().len() == 1 && vdbs.as_array().unwrap().is_empty() {
            assert_eq!(dsources[0]["name"], "good");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "half-made objects stayed: {dsources} {vdbs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pool = engine.cli(&["pool", "status", "-o", "json"]).json();
    assert_eq!(
        pool["volumes"], 1,
        "only the good dSource's dataset is left: {pool}"
    );
    let mounts = engine.cli(&["mount", "list", "-o", "json"]).json();
    assert_eq!(mounts.as_array().unwrap().len(), 1, "{mounts}");
    assert_eq!(mounts[0]["mount_path"], "/srv/stage/good");
    // The good dSource's staging mount was re-established and works.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host
        .sh_output("delphix", "mountpoint -q /srv/stage/good")
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the staging mount did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    engine.cli(&["dsource", "sync", "good"]).ok();
    // show asks the plugin: the all-ops plugin's status and size (8 KiB records by default).
    let shown = engine
        .cli(&["dsource", "show", "good", "-o", "json"])
        .json();
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert_eq!(shown["size_bytes"], 8192, "{shown}");
    assert_eq!(
        shown["staging_mount"],
        format!(
            "{}:/srv/stage/good",
            shown["staging_environment"].as_str().unwrap()
        )
    );

    // A plugin UserError mid-provision: the job fails with the plugin's
    // message and action, and no clone, mount or record is left.
    let before = engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"].clone();
    let failed = engine.cli(&[
        "vdb",
        "provision",
        "--name",
        "refused",
        "--from",
        "good",
        "--env",
        "host",
        "--params",
        r#"{"behavior": "user_error", "mountPath": "/srv/stage/refused"}"#,
    ]);
    let stderr = failed.fails(6);
    assert!(
        stderr.contains("requested user error") && stderr.contains("action: Set behavior to ok."),
        "{stderr}"
    );
    assert_eq!(engine.cli(&["vdb", "list", "-o", "json"]).json(), json!([]));
    assert_eq!(
        engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"],
        before
    );
    assert_eq!(
        engine
            .cli(&["mount", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An empty VDB: mounted where the plugin says, initialized by the plugin.
    let empty = engine
        .cli(&[
            "vdb",
            "create-empty",
            "--name",
            "empty",
            "--plugin",
            ALL_OPS,
            "--env",
            "host",
            "--params",
            r#"{"behavior": "ok", "mountPath": "/srv/stage/empty"}"#,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(empty["source_config"]["origin"], "initialize", "{empty}");
    assert!(host
        .sh_output("delphix", "mountpoint -q /srv/stage/empty")
        .status
        .success());
    host.sh("delphix", "echo fresh > /srv/stage/empty/new.txt");
    let refresh = engine.cli(&["vdb", "refresh", "empty"]);
    assert!(
        refresh.fails(5).contains("created empty"),
        "{}",
        refresh.stderr
    );
    engine.cli(&["vdb", "snapshot", "empty"]).ok();
    engine.cli(&["vdb", "delete", "empty"]).ok();
    engine.cli(&["dsource", "delete", "good"]).ok();
    assert_eq!(
        engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"],
        0
    );
}

/// A loop on a host that reads a file through a mount every 20 ms and
/// logs whether it could, with the time; killed (by its pid) on drop.
struct Probe<'a> {
    host: &'a doppel_testworld::Host,
    pid: String,
    log: String,
}

impl<'a> Probe<'a> {
    fn start(host: &'a doppel_testworld::Host, user: &str, file: &str) -> Probe<'a> {
        let log = format!("/tmp/probe-{}.log", std::process::id());
        let pid = host.sh(
            user,
            &format!(
                "setsid sh -c 'while :; do if cat {file} >/dev/null 2>&1; then s=ok; else s=fail; fi; \
                 echo \"$s $(date +%s%N)\"; sleep 0.02; done' >{log} 2>&1 </dev/null & echo $!"
            ),
        );
        Probe {
            host,
            pid: pid.trim().to_owned(),
            log,
        }
    }

    /// The longest time, in ms, the file could not be read: from the first
    /// failed read of a run to the next good one (or the last read).
    fn longest_gap_ms(&self) -> f64 {
        let log = String::from_utf8(self.host.read_file(&self.log).unwrap_or_default()).unwrap();
        let (mut longest, mut since) = (0u64, None);
        let mut last = 0u64;
        for line in log.lines() {
            let Some((state, t)) = line.split_once(' ') else {
                continue;
            };
            let Ok(t) = t.parse::<u64>() else { continue };
            last = t;
            match (state, since) {
                ("fail", None) => since = Some(t),
                ("ok", Some(s)) => {
                    longest = longest.max(t - s);
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(s) = since {
            longest = longest.max(last - s);
        }
        longest as f64 / 1e6
    }

    fn reads(&self) -> usize {
        String::from_utf8_lossy(&self.host.read_file(&self.log).unwrap_or_default())
            .lines()
            .count()
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        let _ = self.host.command(&["kill", &self.pid]);
    }
}

/// Waits until `file` reads through its mount again; returns whether it did.
fn readable(host: &doppel_testworld::Host, user: &str, file: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if host
            .sh_output(user, &format!("cat {file}"))
            .status
            .success()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn mounts_stay_served_while_the_engine_is_killed_and_nothing_lands_on_a_hosts_disk() {
    // The engine runs inside host "local" (its own machine: a bind mount);
    // host "remote" gets an sshfs mount served by a keeper.
    let binary_dir = std::path::Path::new(env!("CARGO_BIN_EXE_doppel"))
        .parent()
        .unwrap()
        .to_owned();
    let world = World::builder()
        .host("local")
        .host("remote")
        .expose(workspace_root())
        .expose(binary_dir)
        .expose(python().parent().unwrap().to_owned())
        .expose(env!("CARGO_TARGET_TMPDIR"))
        .build();
    let (local, remote) = (world.host("local"), world.host("remote"));
    let secrets = tempfile::tempdir().unwrap();
    let mut engine = Engine::start_in_namespace_of(local, POOL_ON_THE_MACHINES_DISK);
    engine.install(&build_plugin("all-ops-staged"));
    for (name, host) in [("local", local), ("remote", remote)] {
        host.mkdir("/srv/stage", "delphix");
        let pw = secrets.path().join(name);
        std::fs::write(&pw, host.user("delphix").password.as_deref().unwrap()).unwrap();
        engine.add_env(
            name,
            host,
            "delphix",
            "--password-file",
            pw.to_str().unwrap(),
        );
    }
    let sc = engine.cli(&["sourceconfig", "list", "-o", "json"]).json()[0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    // A staging dataset on the engine's own machine, a VDB on the remote host.
    let params = json!({"mountPath": "/srv/stage/l"}).to_string();
    let args = [
        "--sourceconfig",
        &sc,
        "--staging-env",
        "local",
        "--params",
        &params,
    ];
    let mut link = vec!["dsource", "link", "--name", "l"];
    link.extend(args);
    engine.cli(&link).ok();
    let params = json!({"mountPath": "/srv/stage/v"}).to_string();
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "v",
            "--from",
            "l",
            "--env",
            "remote",
            "--params",
            &params,
        ])
        .ok();
    let mounts = engine.cli(&["mount", "list", "-o", "json"]).json();
    let mount_of = |path: &str| {
        mounts
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mount_path"] == path)
            .unwrap_or_else(|| panic!("no mount at {path}: {mounts}"))
            .clone()
    };
    let (ml, mv) = (mount_of("/srv/stage/l"), mount_of("/srv/stage/v"));
    assert_eq!(ml["kind"], "bind");
    assert_eq!(mv["kind"], "sshfs");
    let dl = dataset_dir(engine.data_dir.path(), ml["volume"].as_str().unwrap());
    let dv = dataset_dir(engine.data_dir.path(), mv["volume"].as_str().unwrap());
    // (host, mount path, dataset)
    let sites = [(local, "/srv/stage/l", &dl), (remote, "/srv/stage/v", &dv)];
    for (host, path, _) in sites {
        host.sh("delphix", &format!("echo probe > {path}/probe.txt"));
    }
    assert_eq!(
        engine.keeper_pids().len(),
        1,
        "one keeper serves the remote mount"
    );
    let keeper = engine.keeper_pids()[0];

    let probes: Vec<Probe> = sites
        .iter()
        .map(|(h, p, _)| Probe::start(h, "delphix", &format!("{p}/probe.txt")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // kill -9 of the engine; while it is down, the hosts' users (and root)
    // write through the mounts.
    let down = Instant::now();
    engine.kill();
    let mut writes = Vec::new();
    for (host, path, dataset) in sites {
        for user in ["delphix", "root"] {
            let name = format!("gap-{user}.txt");
            let ok = host
                .sh_output(user, &format!("echo written > {path}/{name}"))
                .status
                .success();
            writes.push((host, path, dataset, user, name, ok));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    engine.relaunch();
    let restarted = down.elapsed();
    for (host, path, _) in sites {
        assert!(
            readable(host, "delphix", &format!("{path}/probe.txt")),
            "{path} not served after the restart:\n{}",
            engine.log()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        engine.keeper_pids(),
        vec![keeper],
        "the keeper was adopted, not replaced:\n{}",
        engine.log()
    );
    for ((host, path, _), probe) in sites.iter().zip(&probes) {
        eprintln!(
            "{} {path}: engine down and back in {:.0} ms; files unreachable for {:.0} ms at most ({} reads)",
            host.name(),
            restarted.as_secs_f64() * 1000.0,
            probe.longest_gap_ms(),
            probe.reads()
        );
    }
    for (host, path, dataset, user, name, ok) in &writes {
        eprintln!(
            "{} {path}: a write as {user} while the engine was down {}",
            host.name(),
            if *ok { "succeeded" } else { "failed" }
        );
        assert_eq!(
            dataset.join(name).exists(),
            *ok,
            "{path}/{name} as {user}: a write that succeeded must be in the dataset, one that failed must not"
        );
    }
    assert!(
        writes.iter().filter(|w| w.3 == "delphix").all(|w| w.5),
        "the mounting user's writes succeed: the mounts stayed up"
    );

    // The keeper dies too (a lost mount with no engine to notice): the
    // remote mount point is a closed door, then the engine brings it back.
    engine.kill();
    let down = Instant::now();
    let _ = local.command(&["kill", "-KILL", &keeper.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while remote
        .sh_output("delphix", "mountpoint -q /srv/stage/v")
        .status
        .success()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lost = remote.sh_output("delphix", "echo lost > /srv/stage/v/lost.txt");
    assert!(
        !lost.status.success(),
        "a write under the lost mount succeeded"
    );
    eprintln!(
        "remote /srv/stage/v lost: the write failed: {}",
        String::from_utf8_lossy(&lost.stderr).trim()
    );
    engine.relaunch();
    assert!(readable(remote, "delphix", "/srv/stage/v/probe.txt"));
    eprintln!(
        "remote /srv/stage/v: keeper and engine killed, served again {:.0} ms later",
        down.elapsed().as_secs_f64() * 1000.0
    );
    assert!(!dv.join("lost.txt").exists());
    drop(probes);

    // The objects' deletion removes the mounts; nothing is under the mount
    // points (they are gone, or empty).
    engine.cli(&["vdb", "delete", "v"]).ok();
    engine.cli(&["dsource", "delete", "l"]).ok();
    for (host, path, _) in sites {
        let left = host.sh(
            "root",
            &format!("mountpoint -q {path} && echo mounted; ls -A {path} 2>/dev/null; true"),
        );
        assert_eq!(left, "", "{path} on {}", host.name());
    }
    assert!(engine.keeper_pids().is_empty(), "no keeper is left");
}
