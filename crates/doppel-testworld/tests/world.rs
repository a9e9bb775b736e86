//! Tests of the fake-host harness itself, with the real `ssh` client.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use doppel_testworld::{Host, World, DATA_DIR, DELPHIX_PASSWORD};

/// `ssh` with the host key pinned through a known_hosts file (strict checking).
fn ssh(host: &Host, user: &str, extra: &[&str], command: &str) -> Command {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let name = if host.port() == 22 {
        host.address().to_string()
    } else {
        format!("[{}]:{}", host.address(), host.port())
    };
    fs::write(&known, format!("{name} {}\n", host.host_public_key())).unwrap();
    let mut cmd = Command::new("ssh");
    // ssh keeps the first value of an option: the caller's come first.
    cmd.args(extra)
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .arg("-p")
        .arg(host.port().to_string())
        .arg(format!("{user}@{}", host.address()))
        .arg(command);
    // Keep the directory alive as long as the command's arguments need it.
    std::mem::forget(dir);
    cmd
}

fn key_ssh(host: &Host, user: &str, command: &str) -> Output {
    let key = host.user(user).private_key_path.clone().unwrap();
    let key = key.to_str().unwrap();
    ssh(
        host,
        user,
        &["-i", key, "-o", "IdentitiesOnly=yes"],
        command,
    )
    .output()
    .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn key_login_runs_as_the_user_in_its_home_in_the_hosts_namespace() {
    let world = World::new(&["a"]);
    let a = world.host("a");
    let out = stdout(&key_ssh(
        a,
        "alice",
        "id -un; pwd; readlink /proc/self/ns/mnt; echo $SHELL",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "alice");
    assert_eq!(lines[1], "/home/alice");
    assert_eq!(lines[2], a.mount_namespace());
    assert_ne!(
        lines[2],
        fs::read_link("/proc/self/ns/mnt")
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert_eq!(lines[3], "/bin/bash");
    assert!(a.host_key_fingerprint().starts_with("SHA256:"));
}

#[test]
fn password_login_works_and_a_wrong_password_does_not() {
    let world = World::new(&["a"]);
    let a = world.host("a");
    // Drive the real ssh client's password prompt with expect.
    let script = r#"
set timeout 10
set pw $env(PW)
spawn {*}$argv
expect {
  -re "assword:" { send -- "$pw\r"; exp_continue }
  eof
}
catch wait result
exit [lindex $result 3]
"#;
    let run = |pw: &str| {
        let cmd = ssh(
            a,
            "delphix",
            &[
                "-o",
                "BatchMode=no",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "NumberOfPasswordPrompts=1",
            ],
            "id -un",
        );
        let argv: Vec<String> = std::iter::once(cmd.get_program().to_string_lossy().into_owned())
            .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), script).unwrap();
        Command::new("expect")
            .arg("-f")
            .arg(file.path())
            .arg("--")
            .args(&argv)
            .env("PW", pw)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let good = run(DELPHIX_PASSWORD);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("delphix"));
    let bad = run("not the password");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stdout).contains("Permission denied"));
}

#[test]
fn data_on_one_host_is_invisible_to_the_engine_and_to_other_hosts() {
    let world = World::new(&["a", "b"]);
    let (a, b) = (world.host("a"), world.host("b"));
    assert_ne!(a.address(), b.address());
    let path = format!("{DATA_DIR}/only-on-a-{}", std::process::id());
    a.put_file(&path, b"secret", "delphix");
    assert_eq!(a.read_file(&path).unwrap(), b"secret");
    assert!(
        !Path::new(&path).exists(),
        "the engine's namespace must not see host data"
    );
    assert!(!b.exists(&path));
    assert_eq!(
        stdout(&key_ssh(a, "alice", &format!("cat {path}"))),
        "secret"
    );
    assert!(!key_ssh(b, "alice", &format!("cat {path}")).status.success());
    // Home directories are private too.
    a.put_file("/home/alice/note", b"n", "alice");
    assert!(!b.exists("/home/alice/note"));
    assert!(!Path::new("/home/alice/note").exists());
    // And so is /tmp.
    a.sh("alice", "echo x > /tmp/doppel-testworld-private");
    assert!(!Path::new("/tmp/doppel-testworld-private").exists());
    assert!(!b.exists("/tmp/doppel-testworld-private"));
    // The machine's real account files are untouched.
    assert!(!fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains("Doppel test user"));
}

#[test]
fn a_host_without_bash_has_no_bash() {
    let world = World::builder().host_without_bash("nobash").build();
    let h = world.host("nobash");
    let out = key_ssh(h, "alice", "command -v bash; echo rc=$?; echo $0");
    let text = stdout(&out);
    assert!(text.contains("rc=127") || text.contains("rc=1"), "{text}");
}

#[test]
fn drop_kills_everything_in_the_namespace() {
    let world = World::new(&["a"]);
    let a = world.host("a");
    let ns = a.mount_namespace().to_string();
    let sshd = a.sshd_pid();
    // A session that would outlive its connection.
    let out = stdout(&key_ssh(
        a,
        "alice",
        "nohup sleep 600 >/dev/null 2>&1 & echo $!",
    ));
    let sleeper: u32 = out.trim().parse().unwrap();
    // The sleeper's pid is in the engine's pid namespace too (no pid ns).
    assert_eq!(
        fs::read_link(format!("/proc/{sleeper}/ns/mnt"))
            .unwrap()
            .to_str()
            .unwrap(),
        ns
    );
    drop(world);
    assert!(
        !Path::new(&format!("/proc/{sshd}")).exists()
            || fs::read_link(format!("/proc/{sshd}/ns/mnt"))
                .map(|l| l.to_string_lossy() != ns)
                .unwrap_or(true)
    );
    assert!(fs::read_link(format!("/proc/{sleeper}/ns/mnt"))
        .map(|l| l.to_string_lossy() != ns)
        .unwrap_or(true));
}

#[test]
fn a_new_host_key_is_served_after_regeneration() {
    let mut world = World::new(&["a"]);
    let old = world.host("a").host_key_fingerprint().to_string();
    let new = world.host_mut("a").regenerate_host_key();
    assert_ne!(old, new);
    let a = world.host("a");
    assert_eq!(stdout(&key_ssh(a, "alice", "echo ok")).trim(), "ok");
}

#[test]
fn many_hosts_get_distinct_addresses() {
    let world = World::new(&["h1", "h2", "h3"]);
    let mut addrs: Vec<_> = world.hosts().iter().map(|h| h.socket_addr()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3);
}
