//! A world of fake SSH hosts on one machine, for Doppel's tests.
//!
//! Each [`Host`] is a real `sshd` listening on its own loopback address
//! (`127.0.0.N`, port 22 when free), started inside its own mount namespace
//! (`unshare -m --propagation private`). Inside that namespace a tmpfs backs
//! the host's `/home`, `/srv`, `/tmp`, `/var/tmp` and `/run`, and private
//! copies of `/etc/passwd`, `/etc/shadow` and `/etc/group` add the test users.
//! So nothing a test puts on a host is visible to the engine (the test
//! process) or to another host, and the machine's real `/etc` is never
//! touched.
//!
//! ```no_run
//! let world = doppel_testworld::World::builder().host("source").host("target").build();
//! let source = world.host("source");
//! source.put_file("/srv/data/a.txt", b"hello", "delphix");
//! let user = source.user("delphix");
//! println!("ssh {}@{} -p {} (password {:?})", user.name, source.address(), source.port(), user.password);
//! ```
//!
//! Users on every host (uids from 20001):
//! - `delphix`: password [`DELPHIX_PASSWORD`], shell bash;
//! - `alice`: a per-host ed25519 key pair (no password), shell bash.
//!
//! Each host's users can use FUSE (a private `/dev/fuse`, mode 0666), so
//! engine storage can be mounted there with sshfs.
//!
//! A host built with [`WorldBuilder::host_without_bash`] hides `bash` (a
//! `/dev/null` bind mount over it inside the namespace) and gives its users
//! `/bin/sh` as login shell.
//!
//! Teardown: dropping a [`Host`] (or the [`World`]) kills every process in the
//! host's mount namespace (which frees its tmpfs) and removes its temporary
//! directory, also when the test panics. Hosts left behind by a test process
//! that was killed are swept by the next process that takes their address.
//!
//! Everything here needs root, `sshd`, `ssh-keygen`, `openssl`, `unshare`,
//! `nsenter` and `runuser`. Failures panic with the command, its status and
//! its stderr: this is test support, not engine code.

#![deny(missing_docs)]

pub mod plugins;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The password of the `delphix` user on every fake host.
pub const DELPHIX_PASSWORD: &str = "d3lphix pass'word\"$";

/// Home directories on a fake host live under this directory.
pub const HOME_ROOT: &str = "/home";
/// A world-writable directory on every fake host, meant for a host's data.
pub const DATA_DIR: &str = "/srv/data";
/// A directory owned by `delphix` on every fake host, for the toolkit.
pub const TOOLKIT_DIR: &str = "/var/tmp/doppel/toolkit";
/// A world-writable scratch directory on every fake host.
pub const SCRATCH_DIR: &str = "/var/tmp/doppel/scratch";

const FIRST_UID: u32 = 20001;
const LOCK_DIR_NAME: &str = "doppel-testworld-addresses";
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// One OS account on a fake host.
#[derive(Debug, Clone)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Numeric user id (the primary group has the same id).
    pub uid: u32,
    /// Home directory, as seen on the host.
    pub home: PathBuf,
    /// Login shell.
    pub shell: String,
    /// Password, for users that log in with one.
    pub password: Option<String>,
    /// Private key file readable by the test process, for key users.
    pub private_key_path: Option<PathBuf>,
    /// The same private key, OpenSSH PEM text.
    pub private_key_pem: Option<String>,
    /// The public key line (`ssh-ed25519 AAAA... comment`).
    pub public_key: Option<String>,
}

/// Options for one host of a world.
#[derive(Debug, Clone)]
struct HostSpec {
    name: String,
    without_bash: bool,
    /// Paths of the machine that stay visible inside the host even where
    /// its private directories (/tmp, /var/tmp, /home, /srv, /run) hide them.
    exposed: Vec<PathBuf>,
}

/// Builds a [`World`].
#[derive(Debug, Default)]
pub struct WorldBuilder {
    hosts: Vec<HostSpec>,
    exposed: Vec<PathBuf>,
}

impl WorldBuilder {
    /// Adds a normal host.
    pub fn host(mut self, name: &str) -> Self {
        self.hosts.push(HostSpec {
            name: name.to_string(),
            without_bash: false,
            exposed: Vec::new(),
        });
        self
    }

    /// Adds a host on which `bash` does not exist and users log in with `/bin/sh`.
    pub fn host_without_bash(mut self, name: &str) -> Self {
        self.hosts.push(HostSpec {
            name: name.to_string(),
            without_bash: true,
            exposed: Vec::new(),
        });
        self
    }

    /// Keeps `path` of the machine visible at the same place inside every
    /// host, even under a directory the host makes private (e.g. a build
    /// directory under /tmp that an engine run inside a host must reach).
    pub fn expose(mut self, path: impl Into<PathBuf>) -> Self {
        self.exposed.push(path.into());
        self
    }

    /// Starts every host (each waits until its SSH banner is served).
    pub fn build(self) -> World {
        let exposed = self.exposed;
        let hosts = self
            .hosts
            .into_iter()
            .map(|mut spec| {
                spec.exposed = exposed.clone();
                Host::start(&spec)
            })
            .collect();
        World { hosts }
    }
}

/// A set of fake hosts, torn down on drop.
#[derive(Debug)]
pub struct World {
    hosts: Vec<Host>,
}

impl World {
    /// A builder to name the hosts.
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// A world with these normal hosts.
    pub fn new(names: &[&str]) -> World {
        names
            .iter()
            .fold(World::builder(), |b, n| b.host(n))
            .build()
    }

    /// The host with this name; panics if there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host named {name:?} in this world"))
    }

    /// Mutable access to a host (to change its host key).
    pub fn host_mut(&mut self, name: &str) -> &mut Host {
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host named {name:?} in this world"))
    }

    /// All hosts, in the order they were declared.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }
}

/// A loopback address reserved for this process (nothing listens on it unless
/// the holder does). Useful to test "host unreachable" without sending
/// traffic anywhere but loopback.
#[derive(Debug)]
pub struct ReservedAddress {
    address: Ipv4Addr,
    port: u16,
    lock: File,
}

impl ReservedAddress {
    /// Reserves a free `127.0.0.N` (N >= 2) and a port free on it.
    pub fn new() -> ReservedAddress {
        reserve_address()
    }

    /// The address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// A port on which nothing listens at reservation time.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `address:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.address, self.port))
    }

    fn record(&mut self, content: &str) {
        // Record what runs on the address so a later process can sweep it if
        // this one dies without dropping its hosts.
        let _ = self.lock.set_len(0);
        let _ = self.lock.seek(SeekFrom::Start(0));
        let _ = self.lock.write_all(content.as_bytes());
    }
}

impl Default for ReservedAddress {
    fn default() -> Self {
        Self::new()
    }
}

/// One fake host: an `sshd` in its own mount namespace on its own address.
#[derive(Debug)]
pub struct Host {
    name: String,
    reserved: ReservedAddress,
    dir: tempfile::TempDir,
    sshd: Option<Child>,
    sshd_pid: u32,
    mnt_ns: String,
    /// An open handle on the host's mount namespace: while it is held, the
    /// namespace's inode number cannot be given to a new namespace, so the
    /// teardown's kill-by-namespace can never hit another host's processes.
    ns_handle: Option<fs::File>,
    host_key_fingerprint: String,
    host_public_key: String,
    users: Vec<User>,
    without_bash: bool,
}

impl Host {
    fn start(spec: &HostSpec) -> Host {
        let reserved = reserve_address();
        let dir = tempfile::Builder::new()
            .prefix(&format!("doppel-host-{}-", sanitize(&spec.name)))
            .tempdir()
            .expect("create a temporary directory for a fake host");
        let root = dir.path();
        for sub in ["sshd", "client", "fs"] {
            fs::create_dir(root.join(sub)).expect("create host directories");
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod host dir");
        fs::set_permissions(root.join("client"), fs::Permissions::from_mode(0o700))
            .expect("chmod client dir");

        let host_key = root.join("sshd/ssh_host_ed25519_key");
        keygen(&host_key, &format!("doppel-testworld host {}", spec.name));
        let host_public_key = read_string(&host_key.with_extension("pub"))
            .trim()
            .to_string();
        let host_key_fingerprint = fingerprint(&host_key.with_extension("pub"));

        let shell = if spec.without_bash {
            "/bin/sh"
        } else {
            "/bin/bash"
        };
        let alice_key = root.join("client/alice_ed25519");
        keygen(&alice_key, &format!("alice@{}", spec.name));
        let users = vec![
            User {
                name: "delphix".into(),
                uid: FIRST_UID,
                home: Path::new(HOME_ROOT).join("delphix"),
                shell: shell.into(),
                password: Some(DELPHIX_PASSWORD.into()),
                private_key_path: None,
                private_key_pem: None,
                public_key: None,
            },
            User {
                name: "alice".into(),
                uid: FIRST_UID + 1,
                home: Path::new(HOME_ROOT).join("alice"),
                shell: shell.into(),
                password: None,
                private_key_pem: Some(read_string(&alice_key)),
                public_key: Some(
                    read_string(&alice_key.with_extension("pub"))
                        .trim()
                        .to_string(),
                ),
                private_key_path: Some(alice_key),
            },
        ];
        write_account_files(&root.join("sshd"), &users);
        for user in &users {
            if let Some(key) = &user.public_key {
                fs::write(
                    root.join(format!("sshd/{}.authorized_keys", user.name)),
                    format!("{key}\n"),
                )
                .expect("write authorized_keys");
            }
        }
        fs::write(root.join("sshd/sshd_config"), sshd_config(&reserved, root))
            .expect("write sshd_config");
        fs::write(
            root.join("sshd/setup.sh"),
            setup_script(root, &users, spec.without_bash, &spec.exposed),
        )
        .expect("write setup script");

        let log = File::create(root.join("sshd.log")).expect("create sshd log");
        let sshd = Command::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh"])
            .arg(root.join("sshd/setup.sh"))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn unshare for a fake host");
        let sshd_pid = sshd.id();
        let mut host = Host {
            name: spec.name.clone(),
            reserved,
            dir,
            sshd: Some(sshd),
            sshd_pid,
            mnt_ns: String::new(),
            ns_handle: None,
            host_key_fingerprint,
            host_public_key,
            users,
            without_bash: spec.without_bash,
        };
        host.wait_ready();
        host.mnt_ns = fs::read_link(format!("/proc/{sshd_pid}/ns/mnt"))
            .expect("read the host's mount namespace")
            .to_string_lossy()
            .into_owned();
        host.ns_handle = Some(
            fs::File::open(format!("/proc/{sshd_pid}/ns/mnt"))
                .expect("hold the host's mount namespace"),
        );
        let record = format!("{} {}\n", sshd_pid, host.mnt_ns);
        host.reserved.record(&record);
        host
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.sshd.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "fake host {} exited during start ({status}); log:\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            if banner_ready(self.reserved.socket_addr()) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "fake host {} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The name given in the builder.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback address sshd listens on.
    pub fn address(&self) -> Ipv4Addr {
        self.reserved.address
    }

    /// The TCP port sshd listens on.
    pub fn port(&self) -> u16 {
        self.reserved.port
    }

    /// `address:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        self.reserved.socket_addr()
    }

    /// The host key's fingerprint, `SHA256:<base64>` as `ssh-keygen -l` prints it.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// The host's public key line (`ssh-ed25519 AAAA... comment`).
    pub fn host_public_key(&self) -> &str {
        &self.host_public_key
    }

    /// All users of this host.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The user with this name; panics if there is none.
    pub fn user(&self, name: &str) -> &User {
        self.users
            .iter()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no user {name:?} on host {}", self.name))
    }

    /// Whether this host hides `bash`.
    pub fn without_bash(&self) -> bool {
        self.without_bash
    }

    /// The process id of the host's sshd (its mount namespace is the host's).
    pub fn sshd_pid(&self) -> u32 {
        self.sshd_pid
    }

    /// The host's mount namespace, as `readlink /proc/<pid>/ns/mnt` prints it.
    pub fn mount_namespace(&self) -> &str {
        &self.mnt_ns
    }

    /// sshd's log so far (useful in assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Runs a program as root inside the host's mount namespace and returns
    /// its output, whatever its exit status.
    pub fn command(&self, argv: &[&str]) -> Output {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.sshd_pid.to_string())
            .args(["-m", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn nsenter for {argv:?}: {e}"));
        out
    }

    /// Runs `sh -c script` inside the host as `user` (`"root"` for root),
    /// panics unless it exits 0, and returns its stdout.
    pub fn sh(&self, user: &str, script: &str) -> String {
        let out = self.sh_output(user, script);
        if !out.status.success() {
            panic!(
                "on host {} as {user}: `{script}` failed ({}); stderr:\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Host::sh`], without checking the exit status.
    pub fn sh_output(&self, user: &str, script: &str) -> Output {
        if user == "root" {
            self.command(&["/bin/sh", "-c", script])
        } else {
            self.command(&["runuser", "-u", user, "--", "/bin/sh", "-c", script])
        }
    }

    /// Writes a file on the host (parents created, owned by `owner`).
    pub fn put_file(&self, path: &str, contents: &[u8], owner: &str) {
        let local = self.local_path(path);
        let (uid, gid) = self.ids(owner);
        if let Some(parent) = local.parent() {
            self.create_dirs(parent, uid, gid);
        }
        fs::write(&local, contents)
            .unwrap_or_else(|e| panic!("write {path} on {}: {e}", self.name));
        std::os::unix::fs::lchown(&local, Some(uid), Some(gid)).expect("chown file on host");
    }

    /// Creates a directory and its parents on the host, owned by `owner`.
    pub fn mkdir(&self, path: &str, owner: &str) {
        let (uid, gid) = self.ids(owner);
        self.create_dirs(&self.local_path(path), uid, gid);
    }

    /// Creates a symbolic link on the host.
    pub fn symlink(&self, target: &str, path: &str, owner: &str) {
        let local = self.local_path(path);
        let (uid, gid) = self.ids(owner);
        if let Some(parent) = local.parent() {
            self.create_dirs(parent, uid, gid);
        }
        std::os::unix::fs::symlink(target, &local)
            .unwrap_or_else(|e| panic!("symlink {path} on {}: {e}", self.name));
        std::os::unix::fs::lchown(&local, Some(uid), Some(gid)).expect("chown symlink on host");
    }

    /// Reads a file on the host; `None` if it does not exist.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        match fs::read(self.local_path(path)) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("read {path} on {}: {e}", self.name),
        }
    }

    /// Whether a path exists on the host (symbolic links not followed).
    pub fn exists(&self, path: &str) -> bool {
        fs::symlink_metadata(self.local_path(path)).is_ok()
    }

    /// Gives the host a new host key (sshd re-reads it on SIGHUP) and waits
    /// until it serves again. Returns the new fingerprint.
    pub fn regenerate_host_key(&mut self) -> String {
        let key = self.dir.path().join("sshd/ssh_host_ed25519_key");
        fs::remove_file(&key).expect("remove old host key");
        fs::remove_file(key.with_extension("pub")).expect("remove old host public key");
        keygen(&key, &format!("doppel-testworld host {} (new)", self.name));
        self.host_public_key = read_string(&key.with_extension("pub")).trim().to_string();
        self.host_key_fingerprint = fingerprint(&key.with_extension("pub"));
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.sshd_pid as libc::pid_t, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP sshd of {}", self.name);
        // sshd closes its listener and re-executes itself: wait until the
        // banner is served by a process that has re-read the key.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            // The listener may still be the old one for a moment; a
            // connection that shows the new key proves the restart.
            if banner_ready(self.socket_addr())
                && scan_host_key(self.socket_addr()).as_deref()
                    == Some(self.host_public_key_base64())
            {
                return self.host_key_fingerprint.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "fake host {} did not restart with its new key; log:\n{}",
                    self.name,
                    self.log()
                );
            }
        }
    }

    fn host_public_key_base64(&self) -> &str {
        self.host_public_key.split_whitespace().nth(1).unwrap_or("")
    }

    fn local_path(&self, path: &str) -> PathBuf {
        assert!(
            path.starts_with('/'),
            "host paths are absolute, got {path:?}"
        );
        // /proc/<pid>/root resolves paths in the process's mount namespace.
        PathBuf::from(format!("/proc/{}/root{}", self.sshd_pid, path))
    }

    fn ids(&self, owner: &str) -> (u32, u32) {
        if owner == "root" {
            (0, 0)
        } else {
            let u = self.user(owner);
            (u.uid, u.uid)
        }
    }

    fn create_dirs(&self, local: &Path, uid: u32, gid: u32) {
        if local.exists() {
            return;
        }
        if let Some(parent) = local.parent() {
            self.create_dirs(parent, uid, gid);
        }
        fs::create_dir(local)
            .unwrap_or_else(|e| panic!("mkdir {} on {}: {e}", local.display(), self.name));
        std::os::unix::fs::lchown(local, Some(uid), Some(gid)).expect("chown dir on host");
    }

    fn teardown(&mut self) {
        // Stop the listener first so no new session starts, then everything
        // else that lives in the namespace (sessions, nsenter'd commands).
        if let Some(mut child) = self.sshd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.mnt_ns.is_empty() {
            kill_namespace(&self.mnt_ns);
        }
        // Gone cleanly: nothing for a later process to sweep on this address.
        self.reserved.record("");
        self.ns_handle.take();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn reserve_address() -> ReservedAddress {
    let lock_dir = std::env::temp_dir().join(LOCK_DIR_NAME);
    fs::create_dir_all(&lock_dir).expect("create the address lock directory");
    // Start at a pseudo-random offset so parallel test binaries rarely
    // contend for the same lock.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id() as usize).wrapping_mul(7919) ^ nanos as usize;
    for i in 0..253 {
        let n = 2 + (start + i) % 253;
        let address = Ipv4Addr::new(127, 0, 0, n as u8);
        let path = lock_dir.join(format!("{address}.lock"));
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .expect("open an address lock file");
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        let mut previous = String::new();
        let _ = lock.read_to_string(&mut previous);
        sweep_stale(&previous);
        for port in [22u16, 10022] {
            if TcpListener::bind((address, port)).is_ok() {
                return ReservedAddress {
                    address,
                    port,
                    lock,
                };
            }
        }
        // Lock released when `lock` drops.
    }
    panic!("no free loopback address 127.0.0.2-254 for a fake host");
}

/// Kills what a dead test process left on an address: the lock file names
/// the sshd pid and its mount namespace; both must still match.
fn sweep_stale(record: &str) {
    let mut parts = record.split_whitespace();
    let (Some(pid), Some(ns)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
        return;
    };
    if link.to_string_lossy() == ns {
        kill_namespace(ns);
    }
}

fn kill_namespace(ns: &str) {
    let own = fs::read_link("/proc/self/ns/mnt")
        .map(|l| l.to_string_lossy().into_owned())
        .ok();
    if own.as_deref() == Some(ns) {
        return; // never kill our own namespace
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut found = false;
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(link) = fs::read_link(entry.path().join("ns/mnt")) else {
                continue;
            };
            if link.to_string_lossy() == ns {
                // Zombies keep their link only until reaped; skip them.
                let state = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                if state
                    .rsplit(')')
                    .next()
                    .map(|s| s.trim_start().starts_with('Z'))
                    .unwrap_or(false)
                {
                    continue;
                }
                found = true;
                // SAFETY: kill(2) with a pid read from /proc.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !found || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// True when something at `addr` sends an SSH banner line.
fn banner_ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    &buf == b"SSH-2.0-"
}

/// The base64 host key the server at `addr` presents (via `ssh-keyscan`).
fn scan_host_key(addr: SocketAddr) -> Option<String> {
    let out = Command::new("ssh-keyscan")
        .args(["-T", "2", "-t", "ed25519", "-p"])
        .arg(addr.port().to_string())
        .arg(addr.ip().to_string())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string)
}

fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn keygen(path: &Path, comment: &str) {
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    );
}

fn fingerprint(public_key: &Path) -> String {
    let out = run_checked(
        Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(public_key),
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints a fingerprint")
        .to_string()
}

fn read_string(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn password_hash(password: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("openssl passwd");
    assert!(
        out.status.success(),
        "openssl passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Private copies of the account files: the machine's own entries plus the
/// test users (any machine entry with the same name is dropped).
fn write_account_files(dir: &Path, users: &[User]) {
    let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let keep = |text: String| -> String {
        text.lines()
            .filter(|l| !names.contains(&l.split(':').next().unwrap_or("")))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let mut passwd = keep(fs::read_to_string("/etc/passwd").expect("read /etc/passwd"));
    let mut shadow = keep(fs::read_to_string("/etc/shadow").unwrap_or_default());
    let mut group = keep(fs::read_to_string("/etc/group").expect("read /etc/group"));
    for u in users {
        passwd.push_str(&format!(
            "{n}:x:{id}:{id}:Doppel test user:{home}:{shell}\n",
            n = u.name,
            id = u.uid,
            home = u.home.display(),
            shell = u.shell
        ));
        // "*" (not "!"): no password, but not a locked account, so key logins work.
        let hash = u
            .password
            .as_deref()
            .map(password_hash)
            .unwrap_or_else(|| "*".into());
        shadow.push_str(&format!("{}:{hash}:19000:0:99999:7:::\n", u.name));
        group.push_str(&format!("{n}:x:{id}:\n", n = u.name, id = u.uid));
    }
    fs::write(dir.join("passwd"), passwd).expect("write passwd copy");
    fs::write(dir.join("group"), group).expect("write group copy");
    fs::write(dir.join("shadow"), shadow).expect("write shadow copy");
    fs::set_permissions(dir.join("shadow"), fs::Permissions::from_mode(0o600))
        .expect("chmod shadow");
}

fn sshd_config(reserved: &ReservedAddress, root: &Path) -> String {
    let root = root.display();
    format!(
        "ListenAddress {addr}:{port}\n\
         HostKey {root}/sshd/ssh_host_ed25519_key\n\
         PidFile none\n\
         UsePAM no\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin no\n\
         StrictModes no\n\
         AuthorizedKeysFile {root}/sshd/%u.authorized_keys .ssh/authorized_keys\n\
         Subsystem sftp internal-sftp\n\
         MaxSessions 1000\n\
         MaxStartups 100:30:300\n\
         MaxAuthTries 20\n\
         LoginGraceTime 30\n\
         UseDNS no\n\
         PrintMotd no\n\
         LogLevel VERBOSE\n",
        addr = reserved.address,
        port = reserved.port,
    )
}

/// The script run by `unshare` inside the new mount namespace; it ends by
/// exec'ing sshd, so the spawned pid is sshd's.
fn setup_script(
    root_path: &Path,
    users: &[User],
    without_bash: bool,
    exposed: &[PathBuf],
) -> String {
    let root = root_path.display();
    let mut s = String::new();
    s.push_str("set -eu\n");
    s.push_str(&format!("cd '{root}'\n"));
    s.push_str("mount -t tmpfs -o mode=0755 doppel-host fs\n");
    s.push_str("mkdir -p fs/home fs/srv/data fs/tmp fs/var_tmp/doppel/toolkit fs/var_tmp/doppel/scratch fs/run/sshd\n");
    s.push_str("chmod 1777 fs/tmp fs/var_tmp fs/srv/data fs/var_tmp/doppel/scratch\n");
    for u in users {
        s.push_str(&format!(
            "mkdir -p fs/home/{n} && chown {id}:{id} fs/home/{n} && chmod 0755 fs/home/{n}\n",
            n = u.name,
            id = u.uid
        ));
    }
    s.push_str(&format!(
        "chown {FIRST_UID}:{FIRST_UID} fs/var_tmp/doppel/toolkit\n"
    ));
    // Exposed paths under a private directory are bound into its private
    // copy first; the recursive binds below carry them along.
    for path in exposed {
        for (dir, backing) in [
            ("/home", "fs/home"),
            ("/srv", "fs/srv"),
            ("/run", "fs/run"),
            ("/tmp", "fs/tmp"),
            ("/var/tmp", "fs/var_tmp"),
        ] {
            if let Ok(rel) = path.strip_prefix(dir) {
                let inside = Path::new(backing).join(rel);
                s.push_str(&format!(
                    "mkdir -p '{0}' && mount --bind '{1}' '{0}'\n",
                    inside.display(),
                    path.display()
                ));
            }
        }
    }
    s.push_str("mount --rbind fs/home /home\n");
    s.push_str("mount --rbind fs/srv /srv\n");
    s.push_str("mount --rbind fs/run /run\n");
    s.push_str("mount --bind sshd/passwd /etc/passwd\n");
    s.push_str("mount --bind sshd/shadow /etc/shadow\n");
    s.push_str("mount --bind sshd/group /etc/group\n");
    if without_bash {
        s.push_str("mount --bind /dev/null \"$(readlink -f /bin/bash)\"\n");
    }
    // FUSE for the host's users (sshfs mounts of engine storage), as Debian's
    // udev rule gives it: a private 0666 node, whatever the machine's is.
    s.push_str("mknod -m 0666 fs/run/fuse c 10 229 && mount --bind /run/fuse /dev/fuse\n");
    // A private /tmp (or /var/tmp) may hide this host's own directory: bind
    // its sshd part into the private copy first (mount canonicalizes paths,
    // so this cannot be done once the directory is hidden).
    for (dir, backing) in [("/tmp", "fs/tmp"), ("/var/tmp", "fs/var_tmp")] {
        if let Ok(rel) = root_path.strip_prefix(dir) {
            let inside = Path::new(backing).join(rel).join("sshd");
            s.push_str(&format!(
                "mkdir -p '{0}' && mount --bind sshd '{0}'\n",
                inside.display()
            ));
        }
    }
    s.push_str("mount --rbind fs/var_tmp /var/tmp\n");
    s.push_str("mount --rbind fs/tmp /tmp\n");
    s.push_str(&format!(
        "exec /usr/sbin/sshd -D -e -f '{root}/sshd/sshd_config'\n"
    ));
    s
}
