//! Test support: plugins built by the real `dvp build`, and a real
//! `doppel serve` process per test, driven through the CLI and the client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};

use doppel_client::Client;
use serde_json::{json, Value};

// Plugins are built with the real `dvp build` by the shared test support.
#[allow(unused_imports)]
pub use doppel_testworld::plugins::{
    build_plugin, build_plugin27, build_plugin27_with, build_plugin_with, dvp, python, python27,
    template_artifact, workspace_root,
};

/// The `admin` password every test engine starts with.
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A running `doppel serve` with its own data directory; stopped on drop,
/// and its pool unmounted. Started with a known admin password; `cli` and
/// `client` use an admin token.
pub struct Engine {
    child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    pub url: String,
    /// An API token of `admin`.
    pub token: String,
    extra: Vec<String>,
    /// The sshd pid of a fake host whose mount namespace the engine runs in.
    namespace_of: Option<u32>,
    /// The address `--listen` gets (its port is picked at each launch).
    listen_ip: String,
    /// The engine serves TLS with the certificate it made itself; `cli` and
    /// `client` trust it as a CA (`--ca-cert`).
    tls: bool,
    /// The CA to trust instead, for an engine given its certificate.
    ca: Option<std::path::PathBuf>,
}

/// A TCP port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A world of one host, `local`, that can be the engine's own machine (see
/// [`Engine::start_in_namespace_of`]): the engine's binary, the worker
/// Python, the checkout and the data directories (under the target's
/// temporary directory) are visible in it, and so is each of `extra`.
pub fn own_machine_world(extra: &[&std::path::Path]) -> doppel_testworld::World {
    let binary_dir = std::path::Path::new(env!("CARGO_BIN_EXE_doppel"))
        .parent()
        .unwrap()
        .to_owned();
    let python_dir = doppel_testworld::plugins::python()
        .parent()
        .unwrap()
        .to_owned();
    let mut builder = doppel_testworld::World::builder()
        .host("local")
        .expose(doppel_testworld::plugins::workspace_root())
        .expose(binary_dir)
        .expose(python_dir)
        .expose(env!("CARGO_TARGET_TMPDIR"));
    for path in extra {
        builder = builder.expose(*path);
    }
    builder.build()
}

/// Flags for an engine whose pool is a directory on the test machine's own
/// disk (the copy driver needs no loop device in a host's namespace). That
/// disk is shared with everything else on the machine, so its usage says
/// nothing about the test: the capacity thresholds are raised to the top so
/// that only a truly full disk refuses work.
pub const POOL_ON_THE_MACHINES_DISK: &[&str] = &[
    "--pool-driver",
    "copy",
    "--pool-warn-percent",
    "99.9",
    "--pool-refuse-percent",
    "100",
];

impl Engine {
    pub fn start() -> Engine {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Engine {
        Self::start_listening("127.0.0.1", false, extra)
    }

    /// An engine serving TLS with the self-signed certificate it makes.
    pub fn start_tls(extra: &[&str]) -> Engine {
        let mut with_tls = vec!["--tls", "on"];
        with_tls.extend_from_slice(extra);
        Self::start_listening("127.0.0.1", true, &with_tls)
    }

    /// An engine listening on `ip`; `tls` says whether it will serve TLS
    /// (with its self-signed certificate).
    pub fn start_listening(ip: &str, tls: bool, extra: &[&str]) -> Engine {
        Self::start_trusting(ip, tls, None, extra)
    }

    /// An engine serving TLS with a certificate from `ca` (given in `extra`).
    pub fn start_with_ca(ca: &Path, extra: &[&str]) -> Engine {
        Self::start_trusting("127.0.0.1", true, Some(ca.to_owned()), extra)
    }

    fn start_trusting(
        ip: &str,
        tls: bool,
        ca: Option<std::path::PathBuf>,
        extra: &[&str],
    ) -> Engine {
        let mut engine = Engine {
            child: None,
            data_dir: tempfile::tempdir().unwrap(),
            url: String::new(),
            token: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            namespace_of: None,
            listen_ip: ip.to_owned(),
            tls,
            ca,
        };
        engine.launch();
        engine
    }

    /// What `cli` and `client` trust as a CA when the engine serves TLS:
    /// the certificate it made, or the CA of the one it was given.
    pub fn ca_cert(&self) -> Option<std::path::PathBuf> {
        match &self.ca {
            Some(ca) => Some(ca.clone()),
            None => self.tls.then(|| self.data_dir.path().join("tls-cert.pem")),
        }
    }

    fn trust(&self) -> doppel_client::tls::Trust {
        doppel_client::tls::Trust {
            ca_cert: self.ca_cert(),
            fingerprint: None,
        }
    }

    /// An engine running inside `host`'s mount namespace, so that host is
    /// the engine's own machine (its data directory lies outside the
    /// host's private directories).
    pub fn start_in_namespace_of(host: &doppel_testworld::Host, extra: &[&str]) -> Engine {
        let mut engine = Engine {
            child: None,
            data_dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
            url: String::new(),
            token: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            namespace_of: Some(host.sshd_pid()),
            listen_ip: "127.0.0.1".into(),
            tls: false,
            ca: None,
        };
        engine.launch();
        engine
    }

    fn launch(&mut self) {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let port = free_port();
        let scheme = if self.tls { "https" } else { "http" };
        self.url = format!("{scheme}://127.0.0.1:{port}");
        // Private like everything in the data directory, which tests check.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.data_dir.path().join("engine.log"))
            .unwrap();
        let password_file = self.data_dir.path().join("test-admin-password");
        std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut command = match self.namespace_of {
            // nsenter execs the engine, so the child's pid is the engine's.
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args([
                    "-t",
                    &pid.to_string(),
                    "-m",
                    "--",
                    env!("CARGO_BIN_EXE_doppel"),
                ]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_doppel")),
        };
        let child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--listen")
            .arg(format!("{}:{port}", self.listen_ip))
            // Small pools: tests make many engines at once (a benchmark
            // may ask for a bigger one).
            .args(if self.extra.iter().any(|a| a == "--pool-size") {
                &[][..]
            } else {
                &["--pool-size", "2GiB"][..]
            })
            .args(if self.extra.iter().any(|a| a == "--pool-reserve") {
                &[][..]
            } else {
                &["--pool-reserve", "64MiB"][..]
            })
            .arg("--admin-password-file")
            .arg(&password_file)
            .args(&self.extra)
            .env("DOPPEL_PYTHON", python())
            .env("DOPPEL_PYTHON27", python27())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // With TLS the certificate exists once the engine made it.
            let client = Client::with_trust(&self.url, None, &self.trust()).ok();
            if let Some(client) = client.filter(|c| c.health().is_ok()) {
                let login = client.login("admin", ADMIN_PASSWORD);
                self.token = login
                    .unwrap_or_else(|e| panic!("cannot log in as admin: {e}\n{}", self.log()))
                    .token;
                return;
            }
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("doppel serve exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "doppel serve did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the engine at once (SIGKILL, as a crash would) and starts it
    /// again on the same data.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch();
    }

    /// Kills the engine at once (SIGKILL) and leaves it down; `relaunch`
    /// starts it again on the same data.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the engine again after `kill`.
    pub fn relaunch(&mut self) {
        assert!(self.child.is_none(), "the engine is running");
        self.launch();
    }

    /// The pids of the mount keepers of this engine (they serve remote
    /// mounts from their own processes and outlive the engine).
    pub fn keeper_pids(&self) -> Vec<u32> {
        let pattern = format!("mount-keeper {}/", self.data_dir.path().display());
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Stops every mount keeper of this engine: a test leaves none behind.
    fn stop_keepers(&self) {
        use std::io::{Read, Write};
        let dir = self.data_dir.path().join("mounts");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "sock") {
                continue;
            }
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.write_all(b"{\"op\":\"stop\"}\n");
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        // A keeper that did not answer is killed by its pid.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.keeper_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.keeper_pids() {
            // SAFETY: plain kill(2) of a keeper this test's engine started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }

    /// Stops the engine (SIGTERM, then SIGKILL) and starts it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) of our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The engine's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the engine runs").id()
    }

    /// Whether the engine process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("engine.log")).unwrap_or_default()
    }

    /// A client with an admin token.
    pub fn client(&self) -> Client {
        Client::with_trust(&self.url, Some(self.token.clone()), &self.trust()).unwrap()
    }

    /// Runs `doppel <args>` against this engine as admin.
    pub fn cli(&self, args: &[&str]) -> Cli {
        self.cli_as(args, Some(&self.token), None, None)
    }

    /// Runs `doppel <args>` with this token (none: no DOPPEL_TOKEN), this
    /// configuration directory (none: an empty one) and this standard input.
    pub fn cli_as(
        &self,
        args: &[&str],
        token: Option<&str>,
        config_home: Option<&Path>,
        stdin: Option<&str>,
    ) -> Cli {
        self.cli_trusting(args, token, config_home, stdin, true)
    }

    /// [`Engine::cli_as`]; with `trust_ca` false the engine's certificate is
    /// not passed (DOPPEL_CA_CERT), so `args` say how to trust it, if at all.
    pub fn cli_trusting(
        &self,
        args: &[&str],
        token: Option<&str>,
        config_home: Option<&Path>,
        stdin: Option<&str>,
        trust_ca: bool,
    ) -> Cli {
        let empty = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doppel"));
        cmd.args(args)
            .env("DOPPEL_URL", &self.url)
            .env_remove("DOPPEL_TOKEN")
            .env_remove("DOPPEL_CA_CERT")
            .env_remove("DOPPEL_TLS_FINGERPRINT")
            .env("XDG_CONFIG_HOME", config_home.unwrap_or(empty.path()))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("DOPPEL_TOKEN", t);
        }
        if let Some(ca) = self.ca_cert().filter(|_| trust_ca) {
            cmd.env("DOPPEL_CA_CERT", ca);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            // A command refused on its command line exits before reading
            // its input: a broken pipe here is that, not a test failure.
            let written = child.stdin.take().unwrap().write_all(input.as_bytes());
            if let Err(e) = written {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
            }
        }
        let out = child.wait_with_output().unwrap();
        Cli {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Adds `host` as the environment `name` through the CLI, logging in as
    /// `user` with `flag` (`--password-file` or `--key-file`) naming `secret`.
    pub fn add_env(
        &self,
        name: &str,
        host: &doppel_testworld::Host,
        user: &str,
        flag: &str,
        secret: &str,
    ) {
        self.cli(&[
            "env",
            "add",
            "--name",
            name,
            "--host",
            &host.address().to_string(),
            "--port",
            &host.port().to_string(),
            "--user",
            user,
            flag,
            secret,
        ])
        .ok();
    }

    /// Adds `host` as the environment `name`, logging in as `delphix` with
    /// the password (in a file that goes when the call returns).
    pub fn add_env_with_password(&self, name: &str, host: &doppel_testworld::Host) {
        let dir = tempfile::tempdir().unwrap();
        let password = secret_file(
            dir.path(),
            "password",
            host.user("delphix").password.as_deref().unwrap(),
        );
        self.add_env(name, host, "delphix", "--password-file", &password);
    }

    /// Installs an artifact through the CLI and returns the plugin's summary.
    pub fn install(&self, artifact: &Path) -> Value {
        self.cli(&[
            "plugin",
            "install",
            artifact.to_str().unwrap(),
            "-o",
            "json",
        ])
        .json()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
        self.stop_keepers();
        // The engine leaves its pool mounted for the next start; tests do not.
        let pool = self.data_dir.path().join("pool");
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .map(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(pool.to_str().unwrap()))
            })
            .unwrap_or(false);
        if mounted {
            let ok = Command::new("umount")
                .arg(&pool)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&pool).status();
            }
        }
    }
}

#[derive(Debug)]
pub struct Cli {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    args: Vec<String>,
}

impl Cli {
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "doppel {:?} failed:\n{}\n{}",
            self.args, self.stdout, self.stderr
        );
        &self.stdout
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// Asserts a failure with this exit code and returns stderr.
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "doppel {:?}: expected exit {code}:\n{}\n{}",
            self.args, self.stdout, self.stderr
        );
        &self.stderr
    }
}

// ---- request builders (proto JSON, field names as in the contract) ----

pub fn pdo(v: Value) -> Value {
    json!({ "json": v.to_string() })
}

pub fn conn(env_ref: &str, env_name: &str) -> Value {
    json!({
        "environment": {"name": env_name, "reference": env_ref,
            "host": {"name": "host1", "reference": "UNIX_HOST-1", "binary_path": "/opt/toolkit", "scratch_path": "/var/scratch"}},
        "user": {"name": "delphix", "reference": "HOST_USER-1"}
    })
}

pub fn mount(env_ref: &str, path: &str) -> Value {
    json!({"remote_environment": {"name": "env", "reference": env_ref,
        "host": {"name": "host1", "reference": "UNIX_HOST-1", "binary_path": "/opt/toolkit", "scratch_path": "/var/scratch"}},
        "mount_path": path})
}

pub fn staged_source(params: Value) -> Value {
    json!({
        "linked_source": {"guid": "ls-guid-1", "parameters": pdo(params)},
        "source_connection": conn("UNIX_HOST_ENVIRONMENT-1", "source"),
        "staged_connection": conn("UNIX_HOST_ENVIRONMENT-2", "staging"),
        "staged_mount": mount("UNIX_HOST_ENVIRONMENT-2", "/mnt/staging/ls1"),
    })
}

pub fn virtual_source(params: Value) -> Value {
    json!({
        "guid": "vs-guid-1",
        "connection": conn("UNIX_HOST_ENVIRONMENT-3", "target"),
        "parameters": pdo(params),
        "mounts": [mount("UNIX_HOST_ENVIRONMENT-3", "/mnt/vdb1")],
    })
}

pub fn params_of(v: &Value) -> Value {
    serde_json::from_str(v["parameters"]["json"].as_str().unwrap_or("null")).unwrap()
}

/// The operations (as the staged test plugins log them) that every staged
/// plugin can have in dvp 3.x; later SDKs add source size, V2P and
/// cleanup.
pub const DVP3_STAGED_OPERATIONS: [&str; 19] = [
    "discovery.repository",
    "discovery.source_config",
    "linked.pre_snapshot",
    "linked.post_snapshot",
    "linked.start_staging",
    "linked.stop_staging",
    "linked.status",
    "linked.worker",
    "linked.mount_specification",
    "virtual.configure",
    "virtual.unconfigure",
    "virtual.reconfigure",
    "virtual.start",
    "virtual.stop",
    "virtual.pre_snapshot",
    "virtual.post_snapshot",
    "virtual.status",
    "virtual.mount_specification",
    "virtual.initialize",
];

/// The repository `repo1` (valid for both staged test plugins).
pub fn repo() -> Value {
    json!({"parameters": pdo(json!({"name": "repo1"}))})
}

/// The source config `sc1`; `running: false` makes a status INACTIVE.
pub fn source_config(running: bool) -> Value {
    json!({"parameters": pdo(json!({"name": "sc1", "path": "/data/sc1", "running": running}))})
}

/// A dSource snapshot's metadata as the staged test plugins make it.
pub fn snapshot() -> Value {
    json!({"parameters": pdo(json!({"operation": "linked.post_snapshot", "sourceConfigName": "sc1"}))})
}

/// A V2P target on `UNIX_HOST_ENVIRONMENT-4`.
pub fn physical() -> Value {
    json!({"guid": "ps-1", "connection": conn("UNIX_HOST_ENVIRONMENT-4", "restore"), "target_directory": "/restore/here",
           "parameters": pdo(json!({"targetName": "copy"}))})
}

pub fn linked_ok() -> Value {
    json!({"behavior": "ok"})
}

pub fn virtual_ok() -> Value {
    json!({"behavior": "ok", "mountPath": "/mnt/vdb1"})
}

/// Discovery's request, on `UNIX_HOST_ENVIRONMENT-1` (`source`).
pub fn discovery_request() -> Value {
    json!({"source_connection": conn("UNIX_HOST_ENVIRONMENT-1", "source")})
}

/// Source config discovery's request: [`discovery_request`] and `repo1`.
pub fn source_config_discovery_request() -> Value {
    let mut req = discovery_request();
    req["repository"] = repo();
    req
}

/// The request of a staged operation about `sc1` (start/stop staging,
/// status, worker...).
pub fn staged_request(staged: &Value, running: bool) -> Value {
    json!({"repository": repo(), "source_config": source_config(running), "staged_source": staged})
}

/// A staged pre or post snapshot's request with these snapshot parameters.
pub fn sync_request(staged: &Value, snapshot_parameters: &Value) -> Value {
    let mut req = staged_request(staged, true);
    req["snapshot_parameters"] = snapshot_parameters.clone();
    req
}

/// The request of a virtual operation about `sc1` (start, stop, status...).
pub fn virtual_request(virtual_source: &Value, running: bool) -> Value {
    json!({"repository": repo(), "source_config": source_config(running), "virtual_source": virtual_source})
}

/// Invokes `op` of `plugin` and returns its result; a failure fails the test.
pub fn invoke_ok(client: &Client, plugin: &str, op: &str, request: Value) -> Value {
    client
        .invoke(plugin, op, request, None)
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

/// The snapshot parameters of a policy sync (JSON `null`) and of a resync.
pub fn policy_sync() -> Value {
    json!({"parameters": {"json": "null"}})
}

pub fn resync_params() -> Value {
    json!({"parameters": pdo(json!({"resync": true}))})
}

/// [`conn`] as the staged test plugins' `recv` lines show a connection.
pub fn conn_seen(env_ref: &str, env_name: &str) -> Value {
    json!({"environment": env_ref, "environment_name": env_name, "host": "UNIX_HOST-1",
           "binary_path": "/opt/toolkit", "scratch_path": "/var/scratch",
           "user": "HOST_USER-1", "user_name": "delphix"})
}

/// The lines of one of a plugin's log streams (`info`, `debug`...), as
/// many as the engine keeps on one page.
pub fn plugin_log(engine: &Engine, plugin: &str, level: &str) -> String {
    engine
        .cli(&[
            "plugin", "logs", plugin, "--level", level, "--tail", "10000",
        ])
        .ok()
        .to_owned()
}

/// The operations a staged test plugin logged (`op <group>.<operation>`),
/// in the order they were called.
pub fn operations_called(engine: &Engine, plugin: &str) -> Vec<String> {
    plugin_log(engine, plugin, "info")
        .lines()
        .filter_map(|l| l.split_once("] op ").map(|(_, op)| op.to_owned()))
        .collect()
}

/// Every call a staged test plugin logged with what it received (its
/// `recv <op> <json>` debug lines), oldest first.
pub fn received_all(engine: &Engine, plugin: &str) -> Vec<(String, Value)> {
    plugin_log(engine, plugin, "debug")
        .lines()
        .filter_map(|l| l.split_once("] recv "))
        .map(|(_, rest)| {
            let (op, json) = rest.split_once(' ').unwrap();
            let value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
            (op.to_owned(), value)
        })
        .collect()
}

/// What a staged test plugin received in each call of `op`, oldest first.
pub fn received(engine: &Engine, plugin: &str, op: &str) -> Vec<Value> {
    received_all(engine, plugin)
        .into_iter()
        .filter(|(o, _)| o == op)
        .map(|(_, v)| v)
        .collect()
}

/// What the last call of `op` received.
pub fn last_received(engine: &Engine, plugin: &str, op: &str) -> Value {
    received(engine, plugin, op)
        .pop()
        .unwrap_or_else(|| panic!("{plugin} logged no recv {op}"))
}

/// The directory of a dataset in the engine's pool.
pub fn dataset_dir(data: &std::path::Path, volume: &str) -> std::path::PathBuf {
    let mut todo = vec![data.join("pool")];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name() == volume && dir.ends_with("volumes") {
                    return e.path();
                }
                todo.push(e.path());
            }
        }
    }
    panic!("no dataset {volume} under {}", data.display());
}

/// Adds an API user with `role` (password `<name>-password`) and returns its token.
pub fn add_user(engine: &Engine, name: &str, role: &str) -> String {
    engine
        .cli_as(
            &["user", "add", name, "--role", role],
            Some(&engine.token),
            None,
            Some(&format!("{name}-password\n")),
        )
        .ok();
    doppel_client::Client::new(&engine.url)
        .login(name, &format!("{name}-password"))
        .unwrap()
        .token
}

/// Writes `text` to `dir/name` (a password or key file for the CLI).
pub fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

/// The staging host's alice may ssh to the source host's alice.
pub fn trust_ssh(from: &doppel_testworld::Host, to: &doppel_testworld::Host) {
    to.mkdir("/home/alice/.ssh", "alice");
    to.put_file(
        "/home/alice/.ssh/authorized_keys",
        format!("{}\n", from.user("alice").public_key.clone().unwrap()).as_bytes(),
        "alice",
    );
    from.mkdir("/home/alice/.ssh", "alice");
    from.put_file(
        "/home/alice/.ssh/id_ed25519",
        from.user("alice")
            .private_key_pem
            .clone()
            .unwrap()
            .as_bytes(),
        "alice",
    );
    for (h, f) in [(to, "authorized_keys"), (from, "id_ed25519")] {
        h.command(&["chmod", "700", "/home/alice/.ssh"]);
        h.command(&["chmod", "600", &format!("/home/alice/.ssh/{f}")]);
    }
}

/// The directory tutorial's environments: `source` and `target` added as
/// `delphix` with its password, `staging` as `alice` with her key (which
/// the source's alice trusts), then the source config `tree` for
/// `/srv/data/tree` on the source; returns its reference.
pub fn add_directory_envs(
    engine: &Engine,
    source: &doppel_testworld::Host,
    staging: &doppel_testworld::Host,
    target: &doppel_testworld::Host,
) -> String {
    trust_ssh(staging, source);
    let secrets = tempfile::tempdir().unwrap();
    let key = secret_file(
        secrets.path(),
        "alice-key",
        staging.user("alice").private_key_pem.as_deref().unwrap(),
    );
    engine.add_env_with_password("source", source);
    engine.add_env("staging", staging, "alice", "--key-file", &key);
    engine.add_env_with_password("target", target);
    let repo = engine
        .cli(&["repository", "list", "--env", "source", "-o", "json"])
        .json()[0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    engine
        .cli(&[
            "sourceconfig",
            "add",
            "--env",
            "source",
            "--repository",
            &repo,
            "--params",
            r#"{"name": "tree", "path": "/srv/data/tree"}"#,
            "-o",
            "json",
        ])
        .json()["reference"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---- webhook receivers ----

/// The secret test webhooks sign with.
pub const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

/// One POST as the receiver read it.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }

    /// Checks `X-Doppel-Signature` with HMAC-SHA256 computed here.
    pub fn assert_signed_with(&self, secret: &str) {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(self.header("x-doppel-signature"), format!("sha256={hex}"));
    }
}

/// How a receiver answers the n-th try (from 1) of one delivery; None:
/// it reads the request and never answers.
pub type Script = fn(usize) -> Option<u16>;

/// A small HTTP/1.1 server on 127.0.0.1 recording every request; each
/// connection on a thread of its own, answered with `Connection: close`.
pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(script: Script) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Received>>> = Default::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, script, &s));
            }
        });
        Receiver { url, seen }
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (a bounded while) until `done` holds for what was received.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.seen();
            if done(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < until,
                "{what}: not received; got {:#?}",
                seen.iter().map(Received::event).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(conn: TcpStream, script: Script, seen: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut headers = HashMap::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("POST /hook "), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let delivery = headers.get("x-doppel-delivery").cloned();
    let try_no = {
        let mut s = seen.lock().unwrap();
        s.push(Received { headers, body });
        s.iter()
            .filter(|r| r.headers.get("x-doppel-delivery") == delivery.as_ref())
            .count()
    };
    match script(try_no) {
        Some(status) => {
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
        // Holds the connection open, answering nothing, until the engine
        // gives up or the test ends.
        None => std::thread::sleep(Duration::from_secs(120)),
    }
}

/// Adds a webhook through the CLI taking `events` (all when empty), the
/// secret ([`WEBHOOK_SECRET`]) in a file.
pub fn add_webhook(engine: &Engine, name: &str, url: &str, events: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "secret", WEBHOOK_SECRET);
    let mut args = vec!["webhook", "add", name, url, "--secret-file", &secret];
    for e in events {
        args.extend(["--event", e]);
    }
    args.extend(["-o", "json"]);
    engine.cli(&args).json()
}
