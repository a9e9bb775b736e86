//! Test fixtures: real filesystems on loop files the test creates, each
//! cleaned up by a Drop guard (lazy unmount if busy, then `losetup -d`).
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn sh(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{argv:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{argv:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Loop devices backing `img`.
pub fn loop_devices(img: &Path) -> Vec<String> {
    sh(&["losetup", "-j", img.to_str().unwrap()])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_owned))
        .collect()
}

/// Unmounts `mnt` (lazily if busy) and detaches the loop devices of `img`.
pub fn teardown(mnt: &Path, img: &Path) {
    let m = mnt.to_str().unwrap();
    let mounted = || sh(&["mountpoint", "-q", m]).is_ok();
    while mounted() {
        if sh(&["umount", m]).is_err() && sh(&["umount", "-l", m]).is_err() {
            break;
        }
    }
    for dev in loop_devices(img) {
        let _ = sh(&["losetup", "-d", &dev]);
    }
}

/// A scratch filesystem: btrfs or XFS on a loop file, tmpfs, or a plain directory.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    img: Option<PathBuf>,
    mounted: bool,
}

impl Scratch {
    pub fn loop_fs_sized(mkfs: &[&str], size: u64) -> Scratch {
        Self::loop_fs(mkfs, size)
    }

    fn loop_fs(mkfs: &[&str], size: u64) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("doppel-storage-test")
            .tempdir()
            .unwrap();
        let img = dir.path().join("fs.img");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let mut argv = mkfs.to_vec();
        argv.push(img.to_str().unwrap());
        sh(&argv).unwrap();
        let mut s = Scratch {
            dir,
            mnt,
            img: Some(img),
            mounted: false,
        };
        sh(&[
            "mount",
            "-o",
            "loop",
            s.img.as_ref().unwrap().to_str().unwrap(),
            s.mnt.to_str().unwrap(),
        ])
        .unwrap();
        s.mounted = true;
        s
    }

    pub fn btrfs() -> Scratch {
        Self::loop_fs(&["mkfs.btrfs", "-q"], 1 << 30)
    }

    pub fn xfs() -> Scratch {
        Self::loop_fs(&["mkfs.xfs", "-q", "-m", "reflink=1"], 1 << 30)
    }

    pub fn tmpfs(size: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("doppel-storage-test")
            .tempdir()
            .unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        sh(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            mnt.to_str().unwrap(),
        ])
        .unwrap();
        Scratch {
            dir,
            mnt,
            img: None,
            mounted: true,
        }
    }

    pub fn plain() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("doppel-storage-test")
            .tempdir()
            .unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Scratch {
            dir,
            mnt,
            img: None,
            mounted: false,
        }
    }

    /// The pool root inside the scratch filesystem.
    pub fn pool_root(&self) -> PathBuf {
        self.mnt.join("pool")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Immutable snapshots would stop TempDir from deleting a plain dir.
        let _ = sh(&["chattr", "-R", "-i", self.mnt.to_str().unwrap()]);
        if self.mounted {
            let img = self
                .img
                .clone()
                .unwrap_or_else(|| self.dir.path().join("none"));
            teardown(&self.mnt, &img);
        }
    }
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes `len` bytes of noise to `p` and fsyncs.
pub fn write_noise(p: &Path, len: usize, seed: u64) {
    let mut f = fs::File::create(p).unwrap();
    f.write_all(&noise(len, seed)).unwrap();
    f.sync_all().unwrap();
}
