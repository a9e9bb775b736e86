//! Confinement of plugin workers.
//!
//! Every worker runs under bubblewrap (`bwrap`, started as root without a
//! user namespace) in its own mount, PID, network, IPC, UTS and cgroup
//! namespaces, then drops to an unprivileged uid/gid of its plugin with
//! util-linux `setpriv` (no groups, no capabilities, an empty bounding set,
//! no new privileges) before Python starts; a seccomp filter refuses new
//! user namespaces. What it sees:
//!
//! - `/usr` (and the `/bin`, `/lib*` links), the worker Python's prefixes
//!   at their own paths, all read-only;
//! - its plugin's extracted code at `/plugin` and the worker script at
//!   `/doppel/doppel_worker.py`, read-only;
//! - its scratch directory at `/scratch` (HOME and TMPDIR), writable, and a
//!   small tmpfs `/tmp`;
//! - a minimal `/dev` and the `/proc` of its own PID namespace;
//! - no network at all (only its own loopback): hosts are reached through
//!   library callbacks, which the engine answers over the pipes.
//!
//! Resource limits come from a cgroup per worker where the cgroup file
//! system is writable (v1 `memory`/`pids`/`cpu` hierarchies or a v2 tree),
//! and from rlimits in any case (address space, processes of the plugin's
//! uid, file size, open files, no core dumps).
//!
//! When a worker ends every process it left dies: its PID namespace's init
//! is killed with it (bwrap's `--die-with-parent`, and the engine's own
//! `PR_SET_PDEATHSIG` on bwrap), and what is left in its cgroup is killed
//! before the cgroup is removed.

use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The uids (and gids) plugins run as: a plugin's is derived from its id.
/// The range is the one systemd leaves for dynamic users, so no account of
/// the machine owns these.
pub const UID_FIRST: u32 = 61184;
pub const UID_LAST: u32 = 65519;

/// Where the plugin's code appears inside the sandbox (the worker's `--root`).
pub const SANDBOX_ROOT: &str = "/plugin";
/// Where the plugin's scratch directory appears inside the sandbox.
pub const SANDBOX_SCRATCH: &str = "/scratch";
/// Where the worker script appears inside the sandbox.
pub const SANDBOX_SCRIPT: &str = "/doppel/doppel_worker.py";

/// How workers are confined (`doppel serve --plugin-sandbox`, `--plugin-memory`...).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Off runs workers unconfined, as the engine's user (an escape hatch).
    pub enabled: bool,
    /// Bytes of memory one worker may use with everything it starts.
    pub memory: u64,
    /// Processes and threads one worker may run (its cgroup), and the
    /// plugin's uid may run in all (rlimit).
    pub max_processes: u64,
    /// The largest file a worker may write.
    pub max_file_size: u64,
    pub max_open_files: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            enabled: true,
            memory: 2 << 30,
            max_processes: 256,
            max_file_size: 1 << 30,
            max_open_files: 1024,
        }
    }
}

/// Why a worker could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("the plugin sandbox needs bubblewrap (`bwrap`), which is not on PATH: install the Debian package `bubblewrap` (scripts/setup.sh does), or start the engine with --plugin-sandbox off to run plugins unconfined")]
    BwrapMissing,
    #[error("the plugin sandbox needs `setpriv` from util-linux under /usr, which is not on PATH: install the Debian package `util-linux`")]
    SetprivMissing,
    #[error("cannot find the installation of the worker Python {python}: {reason}")]
    Runtime { python: String, reason: String },
    #[error("cannot prepare the plugin sandbox: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// The uid (and gid) a plugin runs as. Two plugins may share one; they
/// still cannot see each other's files or processes (mount and PID
/// namespaces), only their process rlimit is shared.
pub fn plugin_uid(plugin_id: &str) -> u32 {
    // FNV-1a: the same on every run and build, unlike the std hashers.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in plugin_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    UID_FIRST + (h % u64::from(UID_LAST - UID_FIRST + 1)) as u32
}

/// The environment of every worker: nothing of the engine's.
fn base_env(home: &Path) -> Vec<(&'static str, OsString)> {
    vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME", home.into()),
        ("TMPDIR", home.into()),
        ("LANG", "C.UTF-8".into()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONNOUSERSITE", "1".into()),
    ]
}

/// Looks `name` up in `path` like a shell would (names with a slash are
/// taken as they are).
fn which(name: &Path, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return std::path::absolute(name).ok().filter(|p| p.exists());
    }
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What all sandboxed workers of one engine share, found once.
#[derive(Debug)]
pub struct Sandbox {
    config: SandboxConfig,
    bwrap: PathBuf,
    setpriv: PathBuf,
    /// The worker Python, absolute; visible at this path inside.
    python: PathBuf,
    /// Directories made (mode 0755) before the binds, so the plugin's uid
    /// can walk to its runtime even where the host's parents are private
    /// (bwrap makes missing parents 0700).
    dirs: Vec<PathBuf>,
    /// Read-only binds (host source, path inside) of the Python runtime.
    runtime: Vec<(PathBuf, PathBuf)>,
    /// Top-level links and directories besides `/usr` (`/bin`, `/lib`...).
    top: Vec<TopLevel>,
}

#[derive(Debug)]
enum TopLevel {
    Link { name: PathBuf, target: PathBuf },
    Dir(PathBuf),
}

impl Sandbox {
    /// Finds bwrap, setpriv and the Python installation `python` needs.
    pub async fn prepare(config: SandboxConfig, python: &Path) -> Result<Sandbox, SandboxError> {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        Self::prepare_in(config, python, &path).await
    }

    /// [`Sandbox::prepare`] with the tools looked up in `path`.
    async fn prepare_in(
        config: SandboxConfig,
        python: &Path,
        path: &std::ffi::OsStr,
    ) -> Result<Sandbox, SandboxError> {
        let bwrap = which(Path::new("bwrap"), path).ok_or(SandboxError::BwrapMissing)?;
        let setpriv = which(Path::new("setpriv"), path)
            .and_then(|p| p.canonicalize().ok())
            .filter(|p| p.starts_with("/usr"))
            .ok_or(SandboxError::SetprivMissing)?;
        let runtime_err = |reason: String| SandboxError::Runtime {
            python: python.display().to_string(),
            reason,
        };
        let python = which(python, path).ok_or_else(|| runtime_err("not found".into()))?;
        // Started by the real path of its directory: inside, only real
        // paths of the runtime's tree are bound in full, and a wrapper that
        // finds its interpreter from its own place (the 2.7 runtime's) must
        // find it there. The file itself stays as named: a venv's python is
        // a link whose place names the venv.
        let python = match (python.parent().map(Path::canonicalize), python.file_name()) {
            (Some(Ok(dir)), Some(name)) => dir.join(name),
            _ => python,
        };
        let out = tokio::process::Command::new(&python)
            .env_clear()
            // -E -s rather than -I, which CPython 2.7 lacks; it has no
            // base_prefix either (no venvs of the 3.x kind).
            .args([
                "-E",
                "-s",
                "-c",
                "import json, os, sys\nb = getattr(sys, 'base_prefix', sys.prefix)\nbe = getattr(sys, 'base_exec_prefix', sys.exec_prefix)\nprint(json.dumps([sys.prefix, b, sys.exec_prefix, be, os.path.realpath(sys.executable)]))",
            ])
            .output()
            .await
            .map_err(|e| runtime_err(e.to_string()))?;
        if !out.status.success() {
            return Err(runtime_err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let found: Vec<PathBuf> = serde_json::from_slice(&out.stdout)
            .map_err(|e| runtime_err(format!("unexpected answer: {e}")))?;
        let mut wanted: Vec<PathBuf> = found.clone();
        wanted.extend(python.parent().map(Path::to_owned));
        wanted.extend(found.last().and_then(|p| p.parent()).map(Path::to_owned));
        let (dirs, runtime) = runtime_binds(&wanted);
        let mut top = Vec::new();
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(name);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&host) {
                        top.push(TopLevel::Link { name: host, target });
                    }
                }
                Ok(m) if m.is_dir() => top.push(TopLevel::Dir(host)),
                _ => {}
            }
        }
        Ok(Sandbox {
            config,
            bwrap,
            setpriv,
            python,
            dirs,
            runtime,
            top,
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }
}

/// Which host directories to bind where so that `paths` resolve inside as
/// outside: each at its own path and at its real path (a venv reached
/// through a symlink, an interpreter behind one). `/usr` is bound whole.
fn runtime_binds(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, PathBuf)>) {
    let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
    for p in paths.iter().filter(|p| p.is_absolute()) {
        let Ok(real) = p.canonicalize() else { continue };
        for dest in [p.clone(), real.clone()] {
            if !dest.starts_with("/usr") && dest != Path::new("/") {
                binds.push((real.clone(), dest));
            }
        }
    }
    binds.sort_by(|a, b| a.1.cmp(&b.1));
    binds.dedup_by(|a, b| a.1 == b.1);
    let mut kept: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (src, dest) in binds {
        // Already visible through a bind of a parent showing the same tree.
        let covered = kept
            .iter()
            .any(|(s, d)| dest.strip_prefix(d).is_ok_and(|rest| s.join(rest) == src));
        if !covered {
            kept.push((src, dest));
        }
    }
    let mut dirs: Vec<PathBuf> = kept
        .iter()
        .flat_map(|(_, d)| {
            d.ancestors()
                .skip(1)
                .map(Path::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|a| a != Path::new("/") && !a.starts_with("/usr"))
        .filter(|a| !kept.iter().any(|(_, d)| a.starts_with(d)))
        .collect();
    dirs.sort();
    dirs.dedup();
    (dirs, kept)
}

/// Everything one worker is started from.
#[derive(Debug)]
pub(crate) struct WorkerLaunch<'a> {
    pub plugin_id: &'a str,
    pub python: &'a Path,
    pub script: &'a Path,
    pub root: &'a Path,
    pub scratch: &'a Path,
    pub entry_point: &'a str,
}

/// A worker's command, ready to spawn, and the cgroup it will join.
pub(crate) struct Prepared {
    pub cmd: tokio::process::Command,
    pub cgroup: Option<Cgroup>,
    /// What the child inherits (the seccomp filter): kept open until it is spawned.
    pub inherited: Option<std::os::fd::OwnedFd>,
}

/// Builds the command of one worker: confined by `sandbox`, or unconfined
/// (but with a clean environment) without one.
pub(crate) fn worker_command(
    launch: &WorkerLaunch<'_>,
    sandbox: Option<&Sandbox>,
) -> Result<Prepared, SandboxError> {
    std::fs::create_dir_all(launch.scratch)
        .map_err(io_err(format!("creating {}", launch.scratch.display())))?;
    let Some(sb) = sandbox else {
        let mut cmd = tokio::process::Command::new(launch.python);
        cmd.arg("-u")
            .arg(launch.script)
            .arg("--root")
            .arg(launch.root)
            .arg("--entry-point")
            .arg(launch.entry_point)
            .current_dir(launch.root)
            .env_clear()
            .envs(base_env(launch.scratch));
        set_pre_exec(&mut cmd, Vec::new(), Vec::new(), None);
        return Ok(Prepared {
            cmd,
            cgroup: None,
            inherited: None,
        });
    };
    let uid = plugin_uid(launch.plugin_id);
    std::os::unix::fs::chown(launch.scratch, Some(uid), Some(uid)).map_err(io_err(format!(
        "handing {} to uid {uid}",
        launch.scratch.display()
    )))?;
    std::fs::set_permissions(launch.scratch, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("restricting {}", launch.scratch.display())))?;
    // The plugin's uid reads its code through the bind: the code becomes
    // that uid's (its modes stay private, so no other user can read it), and
    // the worker script, the engine's own public code, readable by all.
    hand_over(launch.root, uid)?;
    make_readable(launch.script)?;

    let c = &sb.config;
    let mut args: Vec<OsString> = Vec::new();
    let mut a = |parts: &[&std::ffi::OsStr]| args.extend(parts.iter().map(|p| p.to_os_string()));
    a(&[
        "--unshare-pid".as_ref(),
        "--unshare-net".as_ref(),
        "--unshare-ipc".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-cgroup-try".as_ref(),
        "--die-with-parent".as_ref(),
        "--new-session".as_ref(),
        "--hostname".as_ref(),
        "doppel-plugin".as_ref(),
        "--ro-bind".as_ref(),
        "/usr".as_ref(),
        "/usr".as_ref(),
    ]);
    // The private /tmp comes before the runtime's binds: a runtime that
    // lives under /tmp (a checkout there) is then bound inside it, not hidden.
    let tmp_size = (c.memory / 4).clamp(16 << 20, 256 << 20).to_string();
    a(&[
        "--size".as_ref(),
        tmp_size.as_ref(),
        "--perms".as_ref(),
        "1777".as_ref(),
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
    ]);
    for t in &sb.top {
        match t {
            TopLevel::Link { name, target } => {
                a(&["--symlink".as_ref(), target.as_os_str(), name.as_os_str()])
            }
            TopLevel::Dir(d) => a(&["--ro-bind".as_ref(), d.as_os_str(), d.as_os_str()]),
        }
    }
    for d in sb
        .dirs
        .iter()
        .map(PathBuf::as_path)
        .filter(|d| *d != Path::new("/tmp"))
        .chain([Path::new("/doppel"), Path::new("/etc")])
    {
        a(&[
            "--perms".as_ref(),
            "0755".as_ref(),
            "--dir".as_ref(),
            d.as_os_str(),
        ]);
    }
    for (src, dest) in &sb.runtime {
        a(&["--ro-bind".as_ref(), src.as_os_str(), dest.as_os_str()]);
    }
    for f in ["/etc/ld.so.cache", "/etc/localtime"] {
        a(&["--ro-bind-try".as_ref(), f.as_ref(), f.as_ref()]);
    }
    a(&[
        "--ro-bind".as_ref(),
        launch.script.as_os_str(),
        SANDBOX_SCRIPT.as_ref(),
        "--ro-bind".as_ref(),
        launch.root.as_os_str(),
        SANDBOX_ROOT.as_ref(),
        "--bind".as_ref(),
        launch.scratch.as_os_str(),
        SANDBOX_SCRATCH.as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--chdir".as_ref(),
        SANDBOX_ROOT.as_ref(),
    ]);
    let seccomp = seccomp_fd()?;
    let seccomp_arg = seccomp.as_ref().map(|fd| fd.as_raw_fd().to_string());
    if let Some(fd) = &seccomp_arg {
        a(&["--seccomp".as_ref(), fd.as_ref()]);
    }
    a(&[
        // Only for setpriv to drop to the plugin's uid; gone after that.
        "--cap-add".as_ref(),
        "CAP_SETUID".as_ref(),
        "--cap-add".as_ref(),
        "CAP_SETGID".as_ref(),
        "--cap-add".as_ref(),
        "CAP_SETPCAP".as_ref(),
        "--".as_ref(),
        sb.setpriv.as_os_str(),
    ]);
    let ids = uid.to_string();
    a(&[
        "--reuid".as_ref(),
        ids.as_ref(),
        "--regid".as_ref(),
        ids.as_ref(),
        "--clear-groups".as_ref(),
        "--no-new-privs".as_ref(),
        "--inh-caps=-all".as_ref(),
        "--bounding-set=-all".as_ref(),
        "--".as_ref(),
        sb.python.as_os_str(),
        "-u".as_ref(),
        SANDBOX_SCRIPT.as_ref(),
        "--root".as_ref(),
        SANDBOX_ROOT.as_ref(),
        "--entry-point".as_ref(),
        launch.entry_point.as_ref(),
    ]);
    let mut cmd = tokio::process::Command::new(&sb.bwrap);
    cmd.args(args)
        .env_clear()
        .envs(base_env(Path::new(SANDBOX_SCRATCH)))
        .current_dir("/");

    let cgroup = cgroup_root().and_then(|r| r.create(c));
    let procs = cgroup.as_ref().map(Cgroup::procs_files).unwrap_or_default();
    let limits = rlimits(c);
    set_pre_exec(
        &mut cmd,
        procs,
        limits,
        seccomp.as_ref().map(|fd| fd.as_raw_fd()),
    );
    Ok(Prepared {
        cmd,
        cgroup,
        inherited: seccomp,
    })
}

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// The rlimits of a sandboxed worker, never above what the engine has
/// (only a lower limit can be set without privileges).
fn rlimits(c: &SandboxConfig) -> Vec<(Resource, libc::rlim_t)> {
    let wanted: [(Resource, u64); 5] = [
        // Per process: an allocation beyond it is a MemoryError in Python
        // rather than the cgroup's OOM kill of the whole worker.
        (libc::RLIMIT_AS, c.memory),
        // Per uid, across the plugin's workers (the cgroup counts per worker).
        (libc::RLIMIT_NPROC, c.max_processes),
        (libc::RLIMIT_FSIZE, c.max_file_size),
        (libc::RLIMIT_NOFILE, c.max_open_files),
        (libc::RLIMIT_CORE, 0),
    ];
    wanted
        .into_iter()
        .map(|(res, want)| {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit(2) fills the struct it is given.
            let hard = if unsafe { libc::getrlimit(res, &mut cur) } == 0 {
                cur.rlim_max
            } else {
                libc::RLIM_INFINITY
            };
            (res, (want as libc::rlim_t).min(hard))
        })
        .collect()
}

fn set_pre_exec(
    cmd: &mut tokio::process::Command,
    procs: Vec<CString>,
    limits: Vec<(Resource, libc::rlim_t)>,
    inherit: Option<std::os::fd::RawFd>,
) {
    // SAFETY: between fork and exec only async-signal-safe calls run here
    // (open, write, close, setrlimit, prctl) on data built before the fork.
    // Joining the cgroup before exec means nothing the worker starts can
    // escape it; the death signal means a worker never outlives the engine.
    unsafe {
        cmd.pre_exec(move || {
            // Close-on-exec in the engine, so no other child gets it;
            // inherited by this one only.
            if let Some(fd) = inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for path in &procs {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process.
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(e);
                }
            }
            for &(res, lim) in &limits {
                let rl = libc::rlimit {
                    rlim_cur: lim,
                    rlim_max: lim,
                };
                if libc::setrlimit(res, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Adds read (and, for directories, search) permission for others.
/// Gives a tree to `uid` (owner and group), unless its top is theirs
/// already: extracted once per install, it is walked once.
fn hand_over(root: &Path, uid: u32) -> Result<(), SandboxError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::symlink_metadata(root).map_err(io_err(format!("reading {}", root.display())))?;
    if meta.uid() == uid {
        return Ok(());
    }
    let mut todo = vec![root.to_owned()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&path).map_err(io_err(format!("reading {}", path.display())))?
            {
                let entry = entry.map_err(io_err(format!("reading {}", path.display())))?;
                todo.push(entry.path());
            }
        }
        // The top last, so that a walk cut short is done again next time.
        if path != root {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))
                .map_err(io_err(format!("handing {} to uid {uid}", path.display())))?;
        }
    }
    std::os::unix::fs::lchown(root, Some(uid), Some(uid))
        .map_err(io_err(format!("handing {} to uid {uid}", root.display())))
}

fn make_readable(path: &Path) -> Result<(), SandboxError> {
    let meta =
        std::fs::symlink_metadata(path).map_err(io_err(format!("reading {}", path.display())))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let want = if meta.is_dir() {
        mode | 0o055
    } else {
        mode | 0o044
    };
    if want != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))
            .map_err(io_err(format!("making {} readable", path.display())))?;
    }
    if meta.is_dir() {
        for entry in
            std::fs::read_dir(path).map_err(io_err(format!("reading {}", path.display())))?
        {
            let entry = entry.map_err(io_err(format!("reading {}", path.display())))?;
            make_readable(&entry.path())?;
        }
    }
    Ok(())
}

// ---- seccomp ----

/// A seccomp filter (classic BPF, x86_64) that refuses new user
/// namespaces: the one thing an unprivileged process can still do to gain
/// capabilities (in a namespace of its own, but with much more of the
/// kernel to reach). `clone3` is refused with ENOSYS, so libc falls back to
/// `clone`, whose flags the filter can see; other architectures' and x32
/// system calls are refused.
#[cfg(target_arch = "x86_64")]
fn seccomp_program() -> Vec<libc::sock_filter> {
    const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // Offsets in struct seccomp_data: nr 0, arch 4, args[0] (low half) 16.
    vec![
        /* 0 */ op(LD_ABS, 0, 0, 4),
        /* 1 */ op(JEQ, 0, 7, AUDIT_ARCH_X86_64),
        /* 2 */ op(LD_ABS, 0, 0, 0),
        /* 3 */ op(JGE, 5, 0, X32_SYSCALL_BIT),
        /* 4 */ op(JEQ, 5, 0, libc::SYS_clone3 as u32),
        /* 5 */ op(JEQ, 1, 0, libc::SYS_unshare as u32),
        /* 6 */ op(JEQ, 0, 4, libc::SYS_clone as u32),
        /* 7 */ op(LD_ABS, 0, 0, 16),
        /* 8 */ op(JSET, 0, 2, libc::CLONE_NEWUSER as u32),
        /* 9 */ op(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        /* 10 */ op(RET, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        /* 11 */ op(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(not(target_arch = "x86_64"))]
fn seccomp_program() -> Vec<libc::sock_filter> {
    Vec::new()
}

/// The filter in a memory file for `bwrap --seccomp FD`: one per worker,
/// as bwrap reads it to the end.
fn seccomp_fd() -> Result<Option<std::os::fd::OwnedFd>, SandboxError> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let program = seccomp_program();
    if program.is_empty() {
        return Ok(None);
    }
    // SAFETY: plain system call; a valid fd is owned by the OwnedFd below.
    let fd = unsafe { libc::memfd_create(c"doppel-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io_err("making the seccomp filter")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let bytes: Vec<u8> = program
        .iter()
        .flat_map(|f| {
            let mut b = Vec::with_capacity(8);
            b.extend_from_slice(&f.code.to_ne_bytes());
            b.push(f.jt);
            b.push(f.jf);
            b.extend_from_slice(&f.k.to_ne_bytes());
            b
        })
        .collect();
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes)
        .map_err(io_err("writing the seccomp filter"))?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(io_err("writing the seccomp filter"))?;
    Ok(Some(file.into()))
}

// ---- cgroups ----

/// Where worker cgroups are made: one directory per controller hierarchy
/// (v1) or one directory in the unified tree (v2).
#[derive(Debug)]
pub(crate) struct CgroupRoot {
    v2: bool,
    /// (controller, `.../doppel`) pairs; for v2 a single entry.
    bases: Vec<(&'static str, PathBuf)>,
}

const CGROUP_FS: &str = "/sys/fs/cgroup";
const CGROUP_DIR: &str = "doppel";

static CGROUP_ROOT: OnceLock<Option<CgroupRoot>> = OnceLock::new();
static CGROUP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Found once per engine; without a usable one, a single warning.
fn cgroup_root() -> Option<&'static CgroupRoot> {
    CGROUP_ROOT
        .get_or_init(|| {
            let root = CgroupRoot::detect(Path::new(CGROUP_FS));
            match &root {
                Some(r) => {
                    r.sweep();
                    tracing::debug!(?r, "plugin workers get a cgroup each");
                }
                None => tracing::warn!(
                    "no writable cgroup hierarchy with a memory controller under {CGROUP_FS}: plugin workers are limited by rlimits only (per process, not for all a worker starts)"
                ),
            }
            root
        })
        .as_ref()
}

impl CgroupRoot {
    fn detect(fs: &Path) -> Option<CgroupRoot> {
        if let Ok(controllers) = std::fs::read_to_string(fs.join("cgroup.controllers")) {
            let enable: Vec<String> = ["memory", "pids", "cpu"]
                .into_iter()
                .filter(|c| controllers.split_whitespace().any(|x| x == *c))
                .map(|c| format!("+{c}"))
                .collect();
            if !enable.iter().any(|c| c == "+memory") {
                return None;
            }
            let base = fs.join(CGROUP_DIR);
            let line = enable.join(" ");
            // The root may hold processes and still delegate; ours holds none.
            std::fs::write(fs.join("cgroup.subtree_control"), &line).ok()?;
            std::fs::create_dir_all(&base).ok()?;
            std::fs::write(base.join("cgroup.subtree_control"), &line).ok()?;
            return Some(CgroupRoot {
                v2: true,
                bases: vec![("unified", base)],
            });
        }
        let mut bases = Vec::new();
        for ctl in ["memory", "pids", "cpu"] {
            let hier = fs.join(ctl);
            if !hier.join("cgroup.procs").exists() {
                continue;
            }
            let base = hier.join(CGROUP_DIR);
            if std::fs::create_dir_all(&base).is_ok() {
                bases.push((ctl, base));
            }
        }
        if !bases.iter().any(|(c, _)| *c == "memory") {
            return None;
        }
        Some(CgroupRoot { v2: false, bases })
    }

    /// Removes the cgroups of engines that are gone (a crash leaves them).
    /// Names carry the engine's pid, so engines side by side keep theirs.
    fn sweep(&self) {
        for (_, base) in &self.bases {
            let Ok(entries) = std::fs::read_dir(base) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = name
                    .strip_prefix('w')
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    Cgroup {
                        dirs: vec![e.path()],
                        v2: self.v2,
                    }
                    .remove();
                }
            }
        }
    }

    fn create(&self, c: &SandboxConfig) -> Option<Cgroup> {
        let name = format!(
            "w{}-{}",
            std::process::id(),
            CGROUP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut cg = Cgroup {
            dirs: Vec::new(),
            v2: self.v2,
        };
        let result = (|| -> std::io::Result<()> {
            for (ctl, base) in &self.bases {
                let dir = base.join(&name);
                std::fs::create_dir(&dir)?;
                cg.dirs.push(dir.clone());
                let set = |file: &str, value: String| std::fs::write(dir.join(file), value);
                let memory = c.memory.to_string();
                match (self.v2, *ctl) {
                    (true, _) => {
                        set("memory.max", memory)?;
                        let _ = set("memory.swap.max", "0".into());
                        let _ = set("pids.max", c.max_processes.to_string());
                        // Half the default weight: the engine comes first.
                        let _ = set("cpu.weight", "50".into());
                    }
                    (false, "memory") => {
                        set("memory.limit_in_bytes", memory.clone())?;
                        // Only where swap accounting is on.
                        let _ = set("memory.memsw.limit_in_bytes", memory);
                    }
                    (false, "pids") => set("pids.max", c.max_processes.to_string())?,
                    (false, "cpu") => set("cpu.shares", "512".into())?,
                    _ => {}
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Some(cg),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a cgroup for a plugin worker; it runs with rlimits only");
                None
            }
        }
    }
}

/// One worker's cgroup: killed and removed when dropped.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Cgroup {
    fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").as_os_str().as_bytes()).ok())
            .collect()
    }

    /// The directories, one per hierarchy (tests read the limits there).
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Kills every process left in the cgroup.
    fn kill_all(&self) {
        if self.v2 {
            if let Some(d) = self.dirs.first() {
                if std::fs::write(d.join("cgroup.kill"), "1").is_ok() {
                    return;
                }
            }
        }
        // Without cgroup.kill: signal each listed process, again while
        // forks race the listing.
        for _ in 0..10 {
            let mut any = false;
            for d in &self.dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    // SAFETY: kill(2) of a process in the worker's own cgroup.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            if !any {
                break;
            }
        }
    }

    /// Removes the directories; a killed process leaves its cgroup only once
    /// it is reaped, so removal is retried for a while in the background.
    fn remove(&mut self) {
        self.kill_all();
        let dirs = std::mem::take(&mut self.dirs);
        let left: Vec<PathBuf> = dirs
            .into_iter()
            .filter(|d| std::fs::remove_dir(d).is_err() && d.exists())
            .collect();
        if left.is_empty() {
            return;
        }
        let v2 = self.v2;
        std::thread::spawn(move || {
            let mut left = left;
            for _ in 0..250 {
                std::thread::sleep(Duration::from_millis(20));
                Cgroup {
                    dirs: left.clone(),
                    v2,
                }
                .kill_all();
                left.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
                if left.is_empty() {
                    return;
                }
            }
            tracing::warn!(dirs = ?left, "plugin worker cgroups could not be removed");
        });
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.dirs.is_empty() {
            self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_stay_in_the_dynamic_range_and_are_stable() {
        for id in [
            "",
            "a",
            "68223316-40de-41af-88fe-a4bfc90a840f",
            "x".repeat(500).as_str(),
        ] {
            let uid = plugin_uid(id);
            assert!((UID_FIRST..=UID_LAST).contains(&uid), "{id}: {uid}");
            assert_eq!(uid, plugin_uid(id));
        }
        assert_ne!(plugin_uid("plugin-a"), plugin_uid("plugin-b"));
    }

    #[tokio::test]
    async fn without_bwrap_the_error_names_the_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = Sandbox::prepare_in(
            SandboxConfig::default(),
            Path::new("python3"),
            empty.path().as_os_str(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SandboxError::BwrapMissing), "{err}");
        assert!(err.to_string().contains("`bubblewrap`"), "{err}");
    }

    /// The files a v2 tree gets (plain files here: the kernel's side is
    /// what the end-to-end tests see on a real hierarchy).
    #[test]
    fn a_v2_tree_gets_controllers_delegated_and_limits_per_worker() {
        let fs = tempfile::tempdir().unwrap();
        std::fs::write(
            fs.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let root = CgroupRoot::detect(fs.path()).expect("a v2 tree with memory");
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&fs.path().join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(
            read(&fs.path().join("doppel/cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        let config = SandboxConfig {
            memory: 123 << 20,
            max_processes: 77,
            ..Default::default()
        };
        let mut cg = root.create(&config).expect("a worker cgroup");
        let dir = cg.dirs()[0].clone();
        assert!(
            dir.starts_with(fs.path().join("doppel")),
            "{}",
            dir.display()
        );
        assert_eq!(read(&dir.join("memory.max")), (123u64 << 20).to_string());
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "77");
        assert_eq!(
            cg.procs_files(),
            [CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap()]
        );
        // A real cgroup directory empties itself; this one is emptied here.
        std::fs::remove_dir_all(&dir).unwrap();
        cg.remove();
        assert!(!dir.exists());
    }

    #[test]
    fn without_a_memory_controller_there_is_no_cgroup_root() {
        let fs = tempfile::tempdir().unwrap();
        // A v2 mount without controllers, as beside a v1 hierarchy.
        std::fs::write(fs.path().join("cgroup.controllers"), "\n").unwrap();
        assert!(CgroupRoot::detect(fs.path()).is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(CgroupRoot::detect(empty.path()).is_none());
    }

    #[test]
    fn runtime_binds_cover_symlinked_venvs_and_private_parents() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("private/pyenv/3.11");
        let venv = t.path().join("shared/venv");
        std::fs::create_dir_all(base.join("bin")).unwrap();
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::os::unix::fs::symlink(t.path().join("shared"), t.path().join("link")).unwrap();
        let via_link = t.path().join("link/venv");
        let (dirs, binds) = runtime_binds(&[
            via_link.clone(),
            base.clone(),
            via_link.join("bin"),
            base.join("bin"),
        ]);
        let real_venv = venv.canonicalize().unwrap();
        let real_base = base.canonicalize().unwrap();
        assert!(
            binds.contains(&(real_venv.clone(), via_link.clone())),
            "{binds:?}"
        );
        assert!(
            binds.contains(&(real_venv.clone(), real_venv.clone())),
            "{binds:?}"
        );
        assert!(
            binds.contains(&(real_base.clone(), real_base.clone())),
            "{binds:?}"
        );
        // bin directories are inside binds already.
        assert_eq!(binds.len(), 3 + usize::from(base != real_base), "{binds:?}");
        assert!(dirs.contains(&t.path().join("link")), "{dirs:?}");
        assert!(dirs
            .iter()
            .all(|d| !binds.iter().any(|(_, b)| d.starts_with(b))));
    }
}
