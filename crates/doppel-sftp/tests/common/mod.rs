//! Test and benchmark helpers: a real sshfs in passive mode connected to a
//! server over pipes, and a minimal raw SFTP client.
#![allow(dead_code)]

pub mod client;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use doppel_sftp::{serve_sftp, ServeOptions, SessionStats, SftpError};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

pub fn is_fuse_mount(p: &Path) -> bool {
    match nix::sys::statfs::statfs(p) {
        // f_type is not i64 on every target.
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => s.filesystem_type().0 as i64 == FUSE_SUPER_MAGIC,
        Err(_) => false,
    }
}

pub fn tools_available() -> bool {
    Path::new("/dev/fuse").exists()
        && std::process::Command::new("sshfs")
            .arg("--version")
            .output()
            .is_ok()
        && std::process::Command::new("fusermount3")
            .arg("--version")
            .output()
            .is_ok()
}

/// Which SFTP server answers sshfs.
pub enum Server {
    Doppel(ServeOptions),
    /// OpenSSH's own sftp-server (unconfined), the reference implementation.
    OpenSsh,
}

/// An sshfs mount whose Drop unmounts (lazily if need be) and reaps sshfs.
pub struct Mount {
    pub root: PathBuf,
    pub mnt: PathBuf,
    rt: Option<Runtime>,
    sshfs: Option<tokio::process::Child>,
    sftp_server: Option<tokio::process::Child>,
    server: Option<JoinHandle<Result<SessionStats, SftpError>>>,
    mounted: bool,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

impl Mount {
    /// Mount `root` on `mnt` through sshfs; `opts` are extra sshfs `-o`
    /// options appended after `passive`.
    pub fn new(server: Server, root: &Path, mnt: &Path, opts: &str) -> Mount {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut o = String::from("passive");
        if !opts.is_empty() {
            o.push(',');
            o.push_str(opts);
        }
        let mut m = Mount {
            root: root.to_path_buf(),
            mnt: mnt.to_path_buf(),
            rt: None,
            sshfs: None,
            sftp_server: None,
            server: None,
            mounted: false,
        };
        let _g = rt.enter();
        match server {
            Server::Doppel(sopts) => {
                let mut child = tokio::process::Command::new("sshfs")
                    .args(["-f", "-o", &o, ":/"])
                    .arg(mnt)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("spawn sshfs");
                let r = child.stdout.take().unwrap();
                let w = child.stdin.take().unwrap();
                let root = root.to_path_buf();
                m.server = Some(rt.spawn(async move { serve_sftp(&root, sopts, r, w).await }));
                m.sshfs = Some(child);
            }
            Server::OpenSsh => {
                let (to_server_r, to_server_w) = pipe();
                let (to_client_r, to_client_w) = pipe();
                let srv = tokio::process::Command::new("/usr/lib/openssh/sftp-server")
                    .stdin(Stdio::from(to_server_r))
                    .stdout(Stdio::from(to_client_w))
                    .spawn()
                    .expect("spawn sftp-server");
                let mut remote = std::ffi::OsString::from(":");
                remote.push(root.as_os_str());
                let child = tokio::process::Command::new("sshfs")
                    .args(["-f", "-o", &o])
                    .arg(remote)
                    .arg(mnt)
                    .stdin(Stdio::from(to_client_r))
                    .stdout(Stdio::from(to_server_w))
                    .spawn()
                    .expect("spawn sshfs");
                m.sshfs = Some(child);
                m.sftp_server = Some(srv);
            }
        }
        drop(_g);
        m.rt = Some(rt);
        let start = Instant::now();
        while !is_fuse_mount(mnt) {
            if let Some(Ok(Some(st))) = m.sshfs.as_mut().map(|c| c.try_wait()) {
                panic!("sshfs exited before mounting: {st}");
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("sshfs did not mount {} in time", mnt.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        m.mounted = true;
        m
    }

    fn unmount(&mut self) -> Option<Result<SessionStats, SftpError>> {
        if self.mounted {
            let ok = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = std::process::Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(&self.mnt)
                    .status();
            }
            self.mounted = false;
        }
        let rt = self.rt.take()?;
        let mut result = None;
        rt.block_on(async {
            for child in [self.sshfs.take(), self.sftp_server.take()]
                .into_iter()
                .flatten()
            {
                let mut child = child;
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            if let Some(h) = self.server.take() {
                if let Ok(r) = tokio::time::timeout(Duration::from_secs(10), h).await {
                    result = r.ok();
                }
            }
        });
        rt.shutdown_timeout(Duration::from_secs(1));
        result
    }

    /// Unmount and return the server's result (Doppel servers only).
    pub fn finish(mut self) -> Option<Result<SessionStats, SftpError>> {
        self.unmount()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// A scratch layout: `outer/` holding `root/` (served) and `mnt/`, so that
/// tests can check nothing appears beside the root.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub outer: PathBuf,
    pub root: PathBuf,
    pub mnt: PathBuf,
}

pub fn scratch() -> Scratch {
    scratch_in(None)
}

pub fn scratch_in(base: Option<&Path>) -> Scratch {
    let dir = match base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let outer = dir.path().to_path_buf();
    let root = outer.join("root");
    let mnt = outer.join("mnt");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    Scratch {
        dir,
        outer,
        root,
        mnt,
    }
}

/// FNV-1a over a file's bytes.
pub fn checksum(p: &Path) -> (u64, u64) {
    use std::io::Read;
    let mut f = std::fs::File::open(p).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        for b in &buf[..k] {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        n += k as u64;
    }
    (h, n)
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
